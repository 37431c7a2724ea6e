"""The graded checks of assignment 2 (gradient estimators for discrete latents), run in the grader's process.

Each check is ``check(sub, ctx)``: it fails with a one-line ``AssertionError`` and passes returning a
one-line summary. The problems are drawn from ``ctx.seed`` (a secret per grade unless the
instructor fixes ``--seed``): the SBN of :func:`~zoo.homework.discrete_estimators.problem.make_problem`
at a seed derived from it. The reference values come from exact enumeration over that problem and
from closed forms, computed here, never from the submission; the worker only returns the
student's samples and gradients (:mod:`zoo.homework.discrete_estimators.probes`), which are
validated and then certified here.

A probe runs beside the student's code, which can replace what it calls, so its draws are taken only after a
few of them, replayed from their own seeds in a fresh worker, come back the same (:class:`_Draws`). The
estimators are certified as Monte Carlo estimators: unbiased, with the exact variance of S independent
particles (:meth:`~zoo.homework.discrete_estimators.problem.Problem.exact_variance`), and unbiased on a problem
of 60 latents that no enumeration finishes (:func:`~zoo.homework.discrete_estimators.problem.make_large_problem`).
"""
from __future__ import annotations

import math

import torch
from torch.distributions import Bernoulli

from zoo.homework.base import assert_replayed, assert_total_variance, expect_tensor
from zoo.homework.discrete_estimators.problem import NUM_DATA, make_large_problem, make_problem
from zoo.testing import assert_close, assert_unbiased, assert_variance_order, two_sided_threshold

__all__ = ["check_log_q", "check_reinforce_unbiased", "check_reinforce_loo_unbiased", "check_variance_order",
           "check_unbiased_on_a_new_problem", "check_gumbel_softmax_distribution", "check_relaxation_converges",
           "check_straight_through"]

NUM_PARTICLES = 4
GUMBEL_LOGITS = (1.0, -0.5, 0.3, -1.2)          # four classes: the Gumbel-max argmax law shows its sign
VARIANCE_SLACK = 1.15                           # a variance within 15% of the exact one is not a bug
LARGE_SAMPLES = 300                             # draws on the problem too large to enumerate
ORDER = (("REINFORCE", "reinforce"), ("REINFORCE+LOO", "reinforce_loo"))      # variance_order, high to low
_PROBES = "zoo.homework.discrete_estimators.probes"


def _problem_seed(ctx, offset: int = 0) -> int:
    return (ctx.seed + offset) % 2 ** 31


def _shared_problem_seed(ctx) -> int:
    """The SBN the two unbiasedness checks and ``variance_order`` share (the first of them to run draws it), so
    that ``variance_order`` orders the draws they already took and replayed."""
    return ctx.cache.setdefault("problem_seed", _problem_seed(ctx))


def _seed() -> int:
    """A seed for a certifier's own draws, taken from torch's global RNG (which the grader seeds per check)."""
    return int(torch.randint(0, 2 ** 31 - 1, ()))


class _Draws:
    """The student's gradient draws of one check, each computed in the worker from its own seed.

    :meth:`get` asks for ``num_samples`` draws ``[n, P]`` (validated); :meth:`replayed` restarts the worker and
    asks again for a few of every request's draws, alone and in another order: a draw that depends on more than
    its seed and the problem (the other draws, what the process did before) comes back different, and the check
    fails before anything is certified. The probe runs beside the student's code, which can replace what it
    calls; this is what makes its draws the student's estimator's, i.i.d., whatever computed them."""

    def __init__(self, sub):
        self.sub, self.requests = sub, []

    def get(self, function: str, problem_seed: int, num_particles: int, num_samples: int, large: bool = False,
            offsets=None):
        seeds = [_seed() for _ in range(num_samples)]
        width = sum(p.numel() for p in (make_large_problem(problem_seed) if large else make_problem(problem_seed)).params)
        what = f"the gradient of {function}(logits, f, {num_particles})" + (" on the 60-latent problem" * large)
        if offsets is not None:
            what += " with f shifted by a constant per datum"
        draws = expect_tensor(_probe_draws(self.sub, function, problem_seed, num_particles, seeds, large, offsets),
                              what, (num_samples, width))
        self.requests.append((function, problem_seed, num_particles, seeds, large, offsets, draws, what))
        return draws

    def replayed(self) -> None:
        assert_replayed(self.sub, [(self._asker(function, problem_seed, num_particles, large, offsets, what,
                                                draws.shape[1]), seeds, draws, what)
                                   for function, problem_seed, num_particles, seeds, large, offsets, draws, what
                                   in self.requests])

    def _asker(self, function, problem_seed, num_particles, large, offsets, what, width):
        return lambda seeds: expect_tensor(_probe_draws(self.sub, function, problem_seed, num_particles, seeds, large,
                                                        offsets), f"{what}, replayed", (len(seeds), width))


def _probe_draws(sub, function, problem_seed, num_particles, seeds, large, offsets):
    return sub.probe(f"{_PROBES}:gradient_draws", function, problem_seed, num_particles, seeds, large, offsets)


def _rows(draws):
    """The draws as a callable for the certifiers, one row per call."""
    rows = iter(draws)
    return lambda: next(rows)


def _assert_variance(draws, exact: float, what: str) -> str:
    return assert_total_variance(draws, exact, what, slack=VARIANCE_SLACK,
                                 hint=": does it use num_particles independent particles, and is its baseline "
                                      "1/(S-1) sum over the other particles j != s?")


def _large_unbiased(draws, function: str, problem_seed: int) -> str:
    """Unbiased on the 60-latent problem, whose 2^60 configurations no estimator can enumerate."""
    exact = make_large_problem(problem_seed).exact_gradient()
    get = draws.get(function, problem_seed, NUM_PARTICLES, LARGE_SAMPLES, large=True)
    return assert_unbiased(_rows(get), exact, num_samples=LARGE_SAMPLES, seed=_seed())



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
    """REINFORCE's gradient in (theta, phi) is unbiased for the exactly enumerated ELBO gradient, with the
    variance of S = 4 independent particles, and unbiased on a problem too large to enumerate."""
    seed = _shared_problem_seed(ctx)
    problem = make_problem(seed)
    draws = _Draws(sub)
    samples = draws.get("reinforce", seed, NUM_PARTICLES, 600)
    large = _large_unbiased(draws, "reinforce", seed)
    draws.replayed()
    ctx.cache["reinforce", seed] = samples
    unbiased = assert_unbiased(_rows(samples), problem.exact_gradient(), num_samples=600, seed=_seed())
    variance = _assert_variance(samples, problem.exact_variance("reinforce", NUM_PARTICLES),
                                f"reinforce(logits, f, {NUM_PARTICLES})")
    return f"{unbiased}; {variance}; on 60 latents: {large}"


def check_reinforce_loo_unbiased(sub, ctx):
    """REINFORCE with the leave-one-out baseline is unbiased for the exactly enumerated ELBO gradient, with the
    exact variance at S = 4 and at S = 2 (where a baseline divided by S instead of S - 1 shows most), and
    unbiased on a problem too large to enumerate."""
    seed = _shared_problem_seed(ctx)
    problem = make_problem(seed)
    draws = _Draws(sub)
    samples = draws.get("reinforce_loo", seed, NUM_PARTICLES, 600)
    # f + c_b, a constant per datum: the ELBO's gradient and a leave-one-out estimator's draws stay the same (its
    # baseline moves with f), but a baseline divided by S instead of S - 1 leaves c_b / S in the signal, and one
    # taken over the other data leaves c_b minus theirs: their variance grows with c^2
    offsets = 30.0 * torch.randn(NUM_DATA)
    pairs = draws.get("reinforce_loo", seed, 2, 400, offsets=offsets)
    large = _large_unbiased(draws, "reinforce_loo", seed)
    draws.replayed()
    ctx.cache["reinforce_loo", seed] = samples
    unbiased = assert_unbiased(_rows(samples), problem.exact_gradient(), num_samples=600, seed=_seed())
    variance = _assert_variance(samples, problem.exact_variance("reinforce_loo", NUM_PARTICLES),
                                f"reinforce_loo(logits, f, {NUM_PARTICLES})")
    _assert_variance(pairs, problem.exact_variance("reinforce_loo", 2),
                     "reinforce_loo(logits, f + c, 2), f shifted by a constant c_b per datum")
    return f"{unbiased}; {variance}, and at S = 2 with f shifted per datum; on 60 latents: {large}"


def check_unbiased_on_a_new_problem(sub, ctx):
    """Both score-function estimators stay unbiased on another SBN, with 3 particles."""
    seed = _problem_seed(ctx, 1)
    exact = make_problem(seed).exact_gradient()
    draws = _Draws(sub)
    samples = {name: draws.get(name, seed, 3, 400) for name in ("reinforce", "reinforce_loo")}
    draws.replayed()
    return "; ".join(assert_unbiased(_rows(samples[name]), exact, num_samples=400, sigmas=3.3, seed=_seed())
                     for name in ("reinforce", "reinforce_loo"))


def check_variance_order(sub, ctx):
    """The leave-one-out baseline lowers the variance of REINFORCE (same number of particles). It orders the draws
    that the unbiasedness checks took and replayed when they ran (600 of each), else draws and replays 300."""
    seed = _shared_problem_seed(ctx)
    draws = _Draws(sub)
    estimators = {name: ctx.cache.get((function, seed)) for name, function in ORDER}
    for name, function in ORDER:
        if estimators[name] is None:
            estimators[name] = draws.get(function, seed, NUM_PARTICLES, 300)
    if draws.requests:
        draws.replayed()
    n = min(len(d) for d in estimators.values())
    return assert_variance_order({name: _rows(d[:n]) for name, d in estimators.items()}, [name for name, _ in ORDER],
                                 num_samples=n, min_ratio=1.5, seed=_seed())


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
    tests = 2 * (probs.numel() + 1) + 1          # the argmax law and the log-ratio at two tau, the tails
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
    tails = _assert_logistic_tails(sub, logits, threshold)
    return (f"argmax law and logistic log-ratio match the Concrete distribution at tau = 0.5 and 2 ({n} samples); "
            f"{tails}")


TAIL = 6.0                                      # P(|logistic| > 6) = 2 sigmoid(-6) = 0.5%
TAIL_SAMPLES = 20000


def _assert_logistic_tails(sub, logits, threshold: float) -> str:
    """The log-ratio's tails: P(|g_0 - g_1| > 6) = 2 sigmoid(-6) for two independent Gumbels. A uniform clamped
    away from 0 and 1 (at 1e-2: g in [-1.53, 4.6]) leaves the Kolmogorov-Smirnov test (a 1% change of the CDF)
    but empties these tails."""
    tau = 2.0                                   # log y stays finite in float32 far out in the tails
    y = _simplex_samples(sub, logits, tau, TAIL_SAMPLES)
    pivot = tau * (torch.log(y[:, 0].double()) - torch.log(y[:, 1].double())) - float(logits[0] - logits[1])
    expected = 2.0 * float(torch.sigmoid(torch.tensor(-TAIL, dtype=torch.float64)))
    count = int((pivot.abs() > TAIL).sum())
    z = (count - TAIL_SAMPLES * expected) / math.sqrt(TAIL_SAMPLES * expected * (1 - expected))
    if abs(z) > threshold:
        raise AssertionError(f"at tau={tau}, |tau*log(y0/y1) - (l0 - l1)| > {TAIL:g} in {count} of {TAIL_SAMPLES} "
                             f"samples, expected {TAIL_SAMPLES * expected:.0f} ({z:.1f} standard errors): the Gumbel "
                             f"noise's tails are cut (is u clamped far from 0 and 1?)")
    return f"tails |log-ratio| > {TAIL:g}: {count} of {TAIL_SAMPLES} (expected {TAIL_SAMPLES * expected:.0f})"


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
