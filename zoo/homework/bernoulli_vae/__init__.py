"""Homework 1: the Bernoulli VAE by SVI (COMPSCI 688 lecture 20, HW5).

Students write the model p(z) p_theta(x|z), a per-datum mean-field guide and an amortized encoder
guide as ordinary Pyro code, the closed-form Gaussian KL and the reparameterized ELBO, and train on
the binarized 8x8 digits. See ``handout.md`` for the task and ``checks.py`` for what is graded.
"""
from zoo.homework import register
from zoo.homework.base import Assignment, Check

_CHECKS = "zoo.homework.bernoulli_vae.checks"

# Time limits are CPU seconds of the worker (a busy machine does not count against them), many times
# what each check takes with the reference solution (benchmarks/results/homework_grade.md); a
# submission that sleeps is stopped by the wall-clock backstop, 10 times the limit.

ASSIGNMENT = register(Assignment(
    name="bernoulli_vae",
    title="Homework 1: the Bernoulli VAE by SVI",
    package=__name__,
    reference_time=210.0,  # the reference grade in calibrate() units: see benchmarks/results/homework_grade.md
    checks=(
        Check("kl_closed_form", 15, "kl_normal is KL(N(mu, sigma^2) || N(0, I)) (the closed form, to float32 rounding)",
              f"{_CHECKS}:check_kl_closed_form", timeout=20),
        Check("model_matches_story", 15, "model is p(z) = N(0, I), p(x|z) = Bernoulli(logits), plate scaled N/B",
              f"{_CHECKS}:check_model", timeout=20),
        Check("amortized_guide", 10, "amortized_guide is N(mu(x), sigma(x)^2) from the encoder, reparameterized",
              f"{_CHECKS}:check_amortized_guide", timeout=20),
        Check("meanfield_guide", 10, "meanfield_guide keeps one row of parameters per datum, indexed by idx",
              f"{_CHECKS}:check_meanfield_guide", timeout=20),
        Check("reconstruction_unbiased", 15, "reconstruction and its gradient are unbiased (exact quadrature)",
              f"{_CHECKS}:check_reconstruction_unbiased", timeout=30),
        Check("elbo_lower_bound", 15, "elbo matches the exact ELBO and is below the exact log p(x) of a tiny model",
              f"{_CHECKS}:check_elbo_lower_bound", timeout=20),
        Check("train_amortized", 20, "SVI on the digits reaches the target test ELBO",
              f"{_CHECKS}:check_train_amortized", timeout=45),
        Check("amortization_gap", 10, "the per-datum guide refitted to the test digits is as good; gap reported",
              f"{_CHECKS}:check_amortization_gap", timeout=45, hidden=True),
    ),
))
