"""The graded checks of assignment 2 (gradient estimators for discrete latents).

Each check is called as ``check(submission)`` by the grader; it fails with a one-line
``AssertionError`` and passes returning a one-line summary. The reference values come from
:mod:`~zoo.homework.discrete_estimators.problem` (exact enumeration) and from closed forms,
never from the submission. The checks draw from torch's global RNG, which the grader seeds
before each check (``--seed``), so a grade is reproducible; the tests grade the reference
over several seeds.
"""
from __future__ import annotations

import math

import torch
from torch.distributions import Bernoulli

from zoo.homework.discrete_estimators.problem import make_problem
from zoo.testing import assert_close, assert_unbiased, assert_variance_order, gradient_of, two_sided_threshold

__all__ = ["check_log_q", "check_reinforce_unbiased", "check_reinforce_loo_unbiased", "check_variance_order",
           "check_unbiased_on_a_new_problem", "check_gumbel_softmax_distribution", "check_relaxation_converges",
           "check_straight_through"]

NUM_PARTICLES = 4
GUMBEL_LOGITS = (1.0, -0.5, 0.3, -1.2)          # four classes: the Gumbel-max argmax law shows its sign


def _estimator(problem, surrogate, num_particles):
    return lambda: gradient_of(lambda: surrogate(problem.logits, problem.f, num_particles), problem.params)


def _seed() -> int:
    """A seed for a certifier's own draws, taken from torch's global RNG (which the grader seeds)."""
    return int(torch.randint(0, 2 ** 31 - 1, ()))


def check_log_q(sub):
    """log q(z) for z [S, B, K] is the sum over the K latents of the Bernoulli log-probabilities, shape [S, B]."""
    logits = torch.randn(3, 4)
    z = torch.bernoulli(torch.full((5, 3, 4), 0.5))
    expected = Bernoulli(logits=logits).log_prob(z).sum(-1)
    return assert_close(sub.log_q(logits, z), expected, atol=1e-5, what="log_q(logits, z)")


def check_reinforce_unbiased(sub):
    """REINFORCE's gradient in (theta, phi) is unbiased for the exactly enumerated ELBO gradient."""
    problem = make_problem()
    return assert_unbiased(_estimator(problem, sub.reinforce, NUM_PARTICLES), problem.exact_gradient(),
                           num_samples=600, seed=_seed())


def check_reinforce_loo_unbiased(sub):
    """REINFORCE with the leave-one-out baseline is unbiased for the exactly enumerated ELBO gradient."""
    problem = make_problem()
    return assert_unbiased(_estimator(problem, sub.reinforce_loo, NUM_PARTICLES), problem.exact_gradient(),
                           num_samples=600, seed=_seed())


def check_unbiased_on_a_new_problem(sub):
    """Both score-function estimators stay unbiased on another SBN, with 3 particles."""
    problem = make_problem(seed=1)
    exact = problem.exact_gradient()
    out = [assert_unbiased(_estimator(problem, fn, 3), exact, num_samples=400, sigmas=3.3, seed=_seed())
           for k, fn in enumerate((sub.reinforce, sub.reinforce_loo))]
    return "; ".join(out)


def check_variance_order(sub):
    """The leave-one-out baseline lowers the variance of REINFORCE (same number of particles)."""
    problem = make_problem()
    estimators = {"REINFORCE": _estimator(problem, sub.reinforce, NUM_PARTICLES),
                  "REINFORCE+LOO": _estimator(problem, sub.reinforce_loo, NUM_PARTICLES)}
    return assert_variance_order(estimators, ["REINFORCE", "REINFORCE+LOO"], num_samples=300, min_ratio=1.5,
                                 seed=_seed())


def _simplex_samples(sub, logits, tau, n):
    y = sub.gumbel_softmax(logits.expand(n, -1), tau)
    if not isinstance(y, torch.Tensor) or tuple(y.shape) != (n, logits.shape[-1]):
        shape = tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
        raise AssertionError(f"gumbel_softmax(logits [{n}, {logits.shape[-1]}], tau) returned {shape}, "
                             f"expected the same shape")
    y = y.detach().double()
    if not torch.isfinite(y).all() or (y < 0).any() or ((y.sum(-1) - 1).abs() > 1e-4).any():
        raise AssertionError(f"gumbel_softmax at tau={tau} returned points off the simplex (negative, nan, or "
                             f"rows not summing to 1)")
    return y


def _ks_logistic(pivot):
    """Kolmogorov-Smirnov distance of a sample to the standard logistic CDF sigmoid(t)."""
    t, _ = pivot.sort()
    n = t.numel()
    cdf = torch.sigmoid(t)
    upper = torch.arange(1, n + 1, dtype=t.dtype) / n - cdf
    lower = cdf - torch.arange(0, n, dtype=t.dtype) / n
    return float(torch.maximum(upper, lower).max())


def check_gumbel_softmax_distribution(sub):
    """Gumbel-softmax samples have the Concrete law: P(argmax = c) = softmax(logits)_c at any tau, and
    tau log(y_a / y_b) - (l_a - l_b) is standard logistic (a difference of two Gumbels)."""
    logits = torch.tensor(GUMBEL_LOGITS)
    probs = torch.softmax(logits.double(), -1)
    n = 4000
    tests = 2 * (probs.numel() + 1)
    threshold = two_sided_threshold(3.0, tests)
    ks_critical = 1.95 / math.sqrt(n)          # P(KS > 1.95/sqrt(n)) = 0.001 under the null
    for tau in (0.5, 2.0):
        y = _simplex_samples(sub, logits, tau, n)
        freq = torch.bincount(y.argmax(-1), minlength=probs.numel()).double() / n
        z = (freq - probs) / torch.sqrt(probs * (1 - probs) / n)
        worst = int(z.abs().argmax())
        if z[worst].abs() > threshold:
            raise AssertionError(f"at tau={tau}, argmax = {worst} in {float(freq[worst]):.3f} of the samples, but "
                                 f"softmax(logits)[{worst}] = {float(probs[worst]):.3f} ({float(z[worst]):.1f} "
                                 f"standard errors): check the sign of the Gumbel noise")
        pivot = tau * (torch.log(y[:, 0]) - torch.log(y[:, 1])) - (logits[0] - logits[1]).double()
        ks = _ks_logistic(pivot[torch.isfinite(pivot)])
        if ks > ks_critical:
            raise AssertionError(f"at tau={tau}, tau*log(y0/y1) - (l0 - l1) is not standard logistic "
                                 f"(Kolmogorov-Smirnov {ks:.3f} > {ks_critical:.3f}): check where tau enters")
    return f"argmax law and logistic log-ratio match the Concrete distribution at tau = 0.5 and 2 ({n} samples)"


def check_relaxation_converges(sub):
    """As tau -> 0, Gumbel-softmax samples approach one-hot vectors and the relaxed ELBO E f(y_tau)
    of the SBN approaches the exact ELBO (binary units relaxed as two classes, logits (phi, 0))."""
    y = _simplex_samples(sub, torch.tensor(GUMBEL_LOGITS), 0.001, 2000)
    near_one_hot = float((y.max(-1).values > 0.99).double().mean())
    if near_one_hot < 0.98:
        raise AssertionError(f"at tau=0.001 only {near_one_hot:.1%} of the samples are within 0.01 of a one-hot "
                             f"vector (expected >= 98%)")
    problem = make_problem()
    exact = float(problem.exact_elbo().detach())
    n = 4000
    gaps = []
    with torch.no_grad():
        two_class = torch.stack([problem.logits, torch.zeros_like(problem.logits)], -1)      # [B, K, 2]
        for tau in (1.0, 0.02):
            y = sub.gumbel_softmax(two_class.expand(n, *two_class.shape), tau)
            if tuple(y.shape) != (n, *two_class.shape):
                raise AssertionError(f"gumbel_softmax(logits [{n}, 3, 4, 2], tau) returned {tuple(y.shape)}")
            values = problem.f(y[..., 0]).sum(-1).double()
            if not torch.isfinite(values).all():
                raise AssertionError(f"the relaxed ELBO at tau={tau} is nan or inf")
            gaps.append((float(values.mean()) - exact, float(values.std()) / math.sqrt(n)))
    (gap_hot, _), (gap_cold, stderr_cold) = gaps
    if abs(gap_cold) > 4 * stderr_cold + 0.02:
        raise AssertionError(f"at tau=0.02 the relaxed ELBO is {exact + gap_cold:.4f}, off the exact {exact:.4f} "
                             f"by {gap_cold:.3g} ({abs(gap_cold) / stderr_cold:.1f} standard errors)")
    if abs(gap_cold) >= abs(gap_hot):
        raise AssertionError(f"the relaxed ELBO does not approach the exact one as tau falls: gap {gap_hot:.3g} at "
                             f"tau=1, {gap_cold:.3g} at tau=0.02")
    return (f"one-hot within 0.01 for {near_one_hot:.1%} at tau=0.001; relaxed ELBO gap {gap_hot:.3g} at tau=1, "
            f"{gap_cold:.3g} +- {stderr_cold:.2g} at tau=0.02 (exact {exact:.4f})")


def check_straight_through(sub):
    """Straight-through: the forward value is exactly the one-hot argmax of y_soft, and the gradient is y_soft's."""
    logits = torch.randn(6, 4, requires_grad=True)
    y_soft = torch.softmax(logits / 0.7, -1)
    y = sub.straight_through(y_soft)
    if not isinstance(y, torch.Tensor) or y.shape != y_soft.shape:
        shape = tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
        raise AssertionError(f"straight_through(y_soft [6, 4]) returned {shape}")
    one_hot = torch.nn.functional.one_hot(y_soft.argmax(-1), 4).to(y_soft.dtype)
    if not torch.equal(y.detach(), one_hot):
        raise AssertionError(f"the forward value is not the one-hot argmax of y_soft: max |y - one_hot| = "
                             f"{float((y.detach() - one_hot).abs().max()):.3g}")
    w = torch.randn(6, 4)
    if not y.requires_grad:
        raise AssertionError("straight_through's output carries no gradient (the backward pass must be y_soft's)")
    got = gradient_of(lambda: (w * y).sum(), [logits])
    expected = gradient_of(lambda: (w * torch.softmax(logits / 0.7, -1)).sum(), [logits])
    assert_close(got, expected, atol=1e-5, what="the straight-through gradient")
    return "forward exactly one-hot, backward equal to the soft sample's gradient"
