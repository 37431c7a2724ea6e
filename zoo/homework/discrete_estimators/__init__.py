"""Homework 2: gradient estimators for discrete latents (CENG796, CS294 lecture 3b).

Students write the score-function (REINFORCE) estimator, REINFORCE with a leave-one-out
baseline, Gumbel-softmax (the Concrete relaxation) and straight-through, on a sigmoid belief
net small enough (2^4 latent configurations) that the exact ELBO gradient is a finite sum.
See ``handout.md`` for the task and ``checks.py`` for what is graded.
"""
from zoo.homework import register
from zoo.homework.base import Assignment, Check

_CHECKS = "zoo.homework.discrete_estimators.checks"

ASSIGNMENT = register(Assignment(
    name="discrete_estimators",
    title="Homework 2: gradient estimators for discrete latents",
    package=__name__,
    reference_time=200.0,  # the reference grade in calibrate() units: see benchmarks/results/homework_grade.md
    checks=(
        Check("log_q", 2, "log_q sums the Bernoulli log-probabilities over the latents: [S, B]",
              f"{_CHECKS}:check_log_q", timeout=30),
        Check("reinforce_unbiased", 4, "REINFORCE is unbiased (11 directions), varies as S = 4 particles, unbiased on 60 latents",
              f"{_CHECKS}:check_reinforce_unbiased", timeout=60),
        Check("reinforce_loo_unbiased", 4, "REINFORCE + leave-one-out is unbiased, with its exact variance at S = 4 and 2, and on 60 latents",
              f"{_CHECKS}:check_reinforce_loo_unbiased", timeout=60),
        Check("variance_order", 3, "the baseline lowers REINFORCE's variance by the exact factor at S = 4 (within 15%)",
              f"{_CHECKS}:check_variance_order", timeout=60),
        Check("gumbel_softmax_distribution", 3, "Gumbel-softmax samples follow the Concrete law at tau = 0.5 and 2",
              f"{_CHECKS}:check_gumbel_softmax_distribution", timeout=30),
        Check("relaxation_converges", 2, "one-hot at tau = 0.001, not at tau = 1; the relaxed ELBO at tau = 0.001 is the exact one",
              f"{_CHECKS}:check_relaxation_converges", timeout=30),
        Check("straight_through", 2, "straight-through is one-hot forward (to 1e-6), the soft gradient backward",
              f"{_CHECKS}:check_straight_through", timeout=30),
        Check("unbiased_on_a_new_problem", 2, "both score-function estimators are unbiased on another SBN, 3 particles",
              f"{_CHECKS}:check_unbiased_on_a_new_problem", timeout=60, hidden=True),
    ),
))
