"""Homework 3: probabilistic PCA three ways (Tomczak, intro to deep generative modelling).

Students fit pPCA by the closed-form maximum likelihood of Tipping & Bishop, by EM, and by SVI
with two Pyro guides (a per-datum one containing the exact posterior, and an amortized linear
encoder), and write the exact posterior. Everything has a closed form, so every answer is
checked against one. See ``handout.md`` for the task and ``checks.py`` for what is graded.
"""
from zoo.homework import register
from zoo.homework.base import Assignment, Check

_CHECKS = "zoo.homework.ppca_three_ways.checks"

ASSIGNMENT = register(Assignment(
    name="ppca_three_ways",
    title="Homework 3: probabilistic PCA three ways (closed form, EM, SVI)",
    package=__name__,
    reference_time=150.0,  # the reference grade in calibrate() units: see benchmarks/results/homework_grade.md
    checks=(
        Check("ml_closed_form", 4, "ml_solution: mu, sigma^2 and W W^T match Tipping & Bishop's closed form",
              f"{_CHECKS}:check_ml_closed_form", timeout=30),
        Check("ml_matches_sklearn", 2, "the ML log-likelihood equals scikit-learn's PCA(2).score (and is not below)",
              f"{_CHECKS}:check_ml_matches_sklearn", timeout=30),
        Check("log_likelihood", 2, "log_likelihood is the average log N(x; mu, W W^T + sigma^2 I)",
              f"{_CHECKS}:check_log_likelihood", timeout=30),
        Check("posterior", 3, "posterior: means M^-1 W^T (x - mu) and covariance sigma^2 M^-1",
              f"{_CHECKS}:check_posterior", timeout=30),
        Check("em_update", 3, "em_step's W_new and sigma2_new are the closed-form updates from random starts",
              f"{_CHECKS}:check_em_update", timeout=30),
        Check("em_monotone", 3, "60 of em_step's steps from a random start are EM's and never lower the log-likelihood",
              f"{_CHECKS}:check_em_monotone", timeout=30),
        Check("em_converges", 2, "EM (each step EM's) reaches the maximum likelihood within 1e-4 nats/datum in 60 steps",
              f"{_CHECKS}:check_em_converges", timeout=30),
        Check("svi_minibatch_scale", 2, "each minibatch ELBO is N/B times its data's log p(x_n) (exact guide): unbiased",
              f"{_CHECKS}:check_svi_minibatch_scale", timeout=60),
        Check("svi_exact_guide", 2, "SVI's ELBO (model and trained per-datum guide) within 0.5 nats/datum of the ML",
              f"{_CHECKS}:check_svi_exact_guide", timeout=120),
        Check("svi_amortized_guide", 2, "SVI's ELBO (model and trained amortized guide) within 0.5 nats/datum of the ML",
              f"{_CHECKS}:check_svi_amortized_guide", timeout=120),
        Check("em_on_other_data", 2, "EM is EM, monotone and converges on other data (D = 8, q = 3), 60 steps",
              f"{_CHECKS}:check_em_on_other_data", timeout=60, hidden=True),
    ),
))
