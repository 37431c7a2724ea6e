"""The graded checks of assignment 2 (gradient estimators for discrete latents), run in the grader's process.

Each check is ``check(sub, ctx)``: it fails with a one-line ``AssertionError`` and passes returning a
one-line summary. The problems are drawn from ``ctx.seed`` (a secret per grade unless the
instructor fixes ``--seed``): the SBN of :func:`~zoo.homework.discrete_estimators.problem.make_problem`
at a seed derived from it. The reference values come from exact enumeration over that problem and
from closed forms, computed here, never from the submission; the worker only returns the
student's samples and gradients (:mod:`zoo.homework.discrete_estimators.probes`), which are
validated and then certified here.
"""
from __future__ import annotations

import math

import torch
from torch.distributions import Bernoulli

from zoo.homework.base import expect_tensor
from zoo.homework.discrete_estimators.problem import make_problem
from zoo.testing import assert_close, assert_unbiased, assert_variance_order, two_sided_threshold

__all__ = ["check_log_q", "check_reinforce_unbiased", "check_reinforce_loo_unbiased", "check_variance_order",
           "check_unbiased_on_a_new_problem", "check_gumbel_softmax_distribution", "check_relaxation_converges",
           "check_straight_through"]

NUM_PARTICLES = 4
GUMBEL_LOGITS = (1.0, -0.5, 0.3, -1.2)          # four classes: the Gumbel-max argmax law shows its sign
_PROBES = "zoo.homework.discrete_estimators.probes"


def _problem_seed(ctx, offset: int = 0) -> int:
    return (ctx.seed + offset) % 2 ** 31


def _draws(sub, function: str, problem_seed: int, num_particles: int, num_samples: int):
    """The student's ``num_samples`` gradient estimates [n, 46], validated, as a callable for the certifiers."""
    draws = expect_tensor(sub.probe(f"{_PROBES}:gradient_draws", function, problem_seed, num_particles, num_samples),
                          f"the gradient of {function}(logits, f, {num_particles})", (num_samples, 46))
    rows = iter(draws)
    return lambda: next(rows)


def _seed() -> int:
    """A seed for a certifier's own draws, taken from torch's global RNG (which the grader seeds per check)."""
    return int(torch.randint(0, 2 ** 31 - 1, ()))


def check_log_q(sub, ctx):
    """log q(z) for z [S, B, K] is the sum over the K latents of the Bernoulli log-probabilities, shape [S, B]."""
    logits = torch.randn(3, 4)
    z = torch.bernoulli(torch.full((5, 3, 4), 0.5))
    expected = Bernoulli(logits=logits).log_prob(z).sum(-1)
    got = expect_tensor(sub.call("log_q", logits, z), "log_q(logits [3, 4], z [5, 3, 4])", (5, 3))
    summary = assert_close(got, expected, atol=1e-5, what="log_q(logits, z)")
    # at logits of order 1e3, log(sigmoid(l)) computed naively is log(0) = -inf; the closed form is finite
    large = 1000.0 * logits
    got = expect_tensor(sub.call("log_q", large, z), "log_q at logits of order 1e3 (log(sigmoid) computed naively?)",
                        (5, 3))
    assert_close(got, Bernoulli(logits=large).log_prob(z).sum(-1), rtol=1e-5, atol=1e-3,
                 what="log_q(logits, z) at logits of order 1e3")
    return f"{summary}; exact at logits of order 1e3"


def check_reinforce_unbiased(sub, ctx):
    """REINFORCE's gradient in (theta, phi) is unbiased for the exactly enumerated ELBO gradient."""
    seed = _problem_seed(ctx)
    estimate = _draws(sub, "reinforce", seed, NUM_PARTICLES, 600)
    return assert_unbiased(estimate, make_problem(seed).exact_gradient(), num_samples=600, seed=_seed())


def check_reinforce_loo_unbiased(sub, ctx):
    """REINFORCE with the leave-one-out baseline is unbiased for the exactly enumerated ELBO gradient."""
    seed = _problem_seed(ctx)
    estimate = _draws(sub, "reinforce_loo", seed, NUM_PARTICLES, 600)
    return assert_unbiased(estimate, make_problem(seed).exact_gradient(), num_samples=600, seed=_seed())


def check_unbiased_on_a_new_problem(sub, ctx):
    """Both score-function estimators stay unbiased on another SBN, with 3 particles."""
    seed = _problem_seed(ctx, 1)
    exact = make_problem(seed).exact_gradient()
    return "; ".join(assert_unbiased(_draws(sub, name, seed, 3, 400), exact, num_samples=400, sigmas=3.3,
                                     seed=_seed()) for name in ("reinforce", "reinforce_loo"))


def check_variance_order(sub, ctx):
    """The leave-one-out baseline lowers the variance of REINFORCE (same number of particles)."""
    seed = _problem_seed(ctx)
    estimators = {"REINFORCE": _draws(sub, "reinforce", seed, NUM_PARTICLES, 300),
                  "REINFORCE+LOO": _draws(sub, "reinforce_loo", seed, NUM_PARTICLES, 300)}
    return assert_variance_order(estimators, ["REINFORCE", "REINFORCE+LOO"], num_samples=300, min_ratio=1.5,
                                 seed=_seed())


def _simplex_samples(sub, logits, tau, n):
    y = expect_tensor(sub.call("gumbel_softmax", logits.expand(n, -1), tau),
                      f"gumbel_softmax(logits [{n}, {logits.shape[-1]}], tau={tau})", (n, logits.shape[-1]),
                      finite=False)
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


def check_gumbel_softmax_distribution(sub, ctx):
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


def check_relaxation_converges(sub, ctx):
    """As tau -> 0, Gumbel-softmax samples approach one-hot vectors and the relaxed ELBO E f(y_tau)
    of the SBN approaches the exact ELBO (binary units relaxed as two classes, logits (phi, 0))."""
    y = _simplex_samples(sub, torch.tensor(GUMBEL_LOGITS), 0.001, 2000)
    near_one_hot = float((y.max(-1).values > 0.99).double().mean())
    if near_one_hot < 0.98:
        raise AssertionError(f"at tau=0.001 only {near_one_hot:.1%} of the samples are within 0.01 of a one-hot "
                             f"vector (expected >= 98%)")
    problem = make_problem(_problem_seed(ctx))
    exact = float(problem.exact_elbo().detach())
    n = 4000
    gaps = []
    with torch.no_grad():
        two_class = torch.stack([problem.logits, torch.zeros_like(problem.logits)], -1)      # [B, K, 2]
        for tau in (1.0, 0.02):
            y = expect_tensor(sub.call("gumbel_softmax", two_class.expand(n, *two_class.shape), tau),
                              f"gumbel_softmax(logits [{n}, 3, 4, 2], tau={tau})", (n, *two_class.shape),
                              finite=False).float()
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


def check_straight_through(sub, ctx):
    """Straight-through: the forward value is the one-hot argmax of y_soft (to float rounding, so that every
    algebraic form passes, e.g. y_hard + y_soft - y_soft.detach()), and the gradient is y_soft's."""
    tau = 0.7
    logits, w = torch.randn(6, 4), torch.randn(6, 4)
    reply = sub.probe(f"{_PROBES}:straight_through", logits, tau, w)
    if not isinstance(reply, dict) or set(reply) != {"value", "requires_grad", "gradient"}:
        raise AssertionError("the straight-through probe returned something else than its value and gradient")
    y = expect_tensor(reply["value"], "straight_through(y_soft [6, 4])", (6, 4))
    soft = torch.softmax(logits.double() / tau, -1)
    one_hot = torch.nn.functional.one_hot(soft.argmax(-1), 4).double()
    if not torch.equal(y.argmax(-1), soft.argmax(-1)) or not torch.allclose(y, one_hot, atol=1e-6, rtol=0.0):
        raise AssertionError(f"the forward value is not the one-hot argmax of y_soft: max |y - one_hot| = "
                             f"{float((y - one_hot).abs().max()):.3g}")
    if reply["requires_grad"] is not True:
        raise AssertionError("straight_through's output carries no gradient (the backward pass must be y_soft's)")
    got = expect_tensor(reply["gradient"], "the gradient of sum(w * straight_through(y_soft))", (6, 4))
    logits = logits.double().requires_grad_()
    expected, = torch.autograd.grad((w.double() * torch.softmax(logits / tau, -1)).sum(), [logits])
    assert_close(got, expected, atol=1e-5, what="the straight-through gradient")
    return "forward one-hot (to 1e-6), backward equal to the soft sample's gradient"
