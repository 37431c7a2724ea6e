"""Homework 5: expressive VAEs, richer posteriors and priors (CSE599i, "Expressive VAEs").

Students write one inverse autoregressive flow step (Kingma et al. 2016: MADE's masks, the gated shift-and-scale
update and its log-determinant), the VampPrior's log-density (Tomczak & Welling 2018), the Monte Carlo ELBO of a
guide with IAF steps under either prior, the fit of the IAF steps, and Burda et al.'s active units; then measure,
on fixed VAEs the kit trains on the 8x8 digits (with N(0, I) and with a VampPrior), what the IAF guide buys against
the factorised one and what the VampPrior buys against N(0, I). See
``handout.md`` for the task and ``checks.py`` for what is graded.
"""
from zoo.homework import register
from zoo.homework.base import Assignment, Check

_CHECKS = "zoo.homework.expressive_posteriors.checks"

# Time limits are CPU seconds of the worker (a busy machine does not count against them), many times what each
# check takes with the reference solution; a submission that sleeps is stopped by the wall-clock backstop.

ASSIGNMENT = register(Assignment(
    name="expressive_posteriors",
    title="Homework 5: expressive VAEs (IAF, the VampPrior, what they buy)",
    package=__name__,
    # the reference grade in calibrate() units: see benchmarks/results/homework_grade.md (`homework_grade.py --seeds
    # 0,1,2`: 246, 238 and 248, 13.2 to 13.8 s, with vamp_prior_buys; 175 before it was measured was too tight)
    reference_time=250.0,
    checks=(
        Check("made_masks", 10, "made_masks are MADE's masks: hidden unit k sees input d when m(k) >= d, output i sees k when i > m(k)",
              f"{_CHECKS}:check_made_masks", timeout=20),
        Check("autoregressive", 10, "autoregressive_net's output i is unchanged when inputs i..D change; (m, s) are the masked net's",
              f"{_CHECKS}:check_autoregressive", timeout=20),
        Check("iaf_step", 15, "iaf_step is the gated update; log_det = log|det| of autograd's Jacobian; gradients flow through sigma and m",
              f"{_CHECKS}:check_iaf_step", timeout=20),
        Check("vamp_prior", 15, "vamp_prior_log_prob is the uniform mixture's log-density, finite far away, and integrates to 1 in 2-d",
              f"{_CHECKS}:check_vamp_prior", timeout=20),
        Check("elbo_estimator", 15, "elbo with IAF steps and a VampPrior matches the exact ELBO, is below log p(x), varies as S particles",
              f"{_CHECKS}:check_elbo_estimator", timeout=30),
        Check("active_units", 10, "active_units: Cov_x(E_q[u|x]) per unit and the count above 0.01, exact",
              f"{_CHECKS}:check_active_units", timeout=20),
        Check("iaf_closes_the_gap", 15, "fit_iaf on the fixed digits model: the IAF guide's gap to log p(x) is at most the factorised one's",
              f"{_CHECKS}:check_iaf_closes_the_gap", timeout=60),
        Check("vamp_prior_buys", 10, "elbo under the VampPrior of the digits model the kit trained with one matches the exact ELBO; both models compared",
              f"{_CHECKS}:check_vamp_prior_buys", timeout=30),
    ),
))
