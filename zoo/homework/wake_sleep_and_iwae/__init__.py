"""Homework 4: wake-sleep, reweighted wake-sleep and the importance-weighted bound (CS294-158 lecture 3b).

Students write the Helmholtz machine's wake and sleep phases for a sigmoid belief net with a recognition network,
reweighted wake-sleep (Bornschein & Bengio 2015), the importance-weighted bound with its reparameterised gradient
(Burda et al. 2016), and a training loop that compares the three on the binarized 8x8 digits. The sigmoid belief net
is small enough (2^4 latents, 2^6 pixels) that every expected update is a finite sum, and the Gaussian model of the
bound is linear, so log p(x) is a closed form. See ``handout.md`` for the task and ``checks.py`` for what is graded.
"""
from zoo.homework import register
from zoo.homework.base import Assignment, Check

_CHECKS = "zoo.homework.wake_sleep_and_iwae.checks"

ASSIGNMENT = register(Assignment(
    name="wake_sleep_and_iwae",
    title="Homework 4: wake-sleep, reweighted wake-sleep and the importance-weighted bound",
    package=__name__,
    # the reference grade in calibrate() units: see benchmarks/results/homework_grade.md (`homework_grade.py --seeds
    # 0,1,2`: 283, 270 and 271, 15.2 to 16.1 s; 254 to 302 at load average 5.9 before)
    reference_time=310.0,
    checks=(
        Check("log_probabilities", 2, "log_joint and log_recognition are the Bernoulli log-probabilities: [S, B]",
              f"{_CHECKS}:check_log_probabilities", timeout=20),
        Check("wake_phase", 4, "the wake update E_q[grad_theta log p(x, h)] is unbiased (enumeration), none in phi, exact variance",
              f"{_CHECKS}:check_wake_phase", timeout=40),
        Check("sleep_phase", 4, "the sleep update E_p[grad_phi log q(h | x)] on dreams is unbiased, none in theta, exact variance",
              f"{_CHECKS}:check_sleep_phase", timeout=40),
        Check("sleep_kl_direction", 3, "a q trained by the sleep phase minimises KL(p || q), not KL(q || p)",
              f"{_CHECKS}:check_sleep_kl_direction", timeout=40),
        Check("reweighted_wake_sleep", 4, "RWS's self-normalised update is unbiased for its exact mean over all tuples, exact variance",
              f"{_CHECKS}:check_reweighted_wake_sleep", timeout=40),
        Check("iwae_bound_values", 4, "L_K = logsumexp - log K: log p(x) at the posterior, the ELBO at K = 1, rising to log p(x)",
              f"{_CHECKS}:check_iwae_bound_values", timeout=40),
        Check("iwae_gradient", 4, "the reparameterised gradient of L_5 is unbiased (against 100,000 draws)",
              f"{_CHECKS}:check_iwae_gradient", timeout=40),
        Check("digits_comparison", 5, "wake-sleep, RWS and IWAE trained on the digits reach the target test log-likelihood",
              f"{_CHECKS}:check_digits_comparison", timeout=60),
    ),
))
