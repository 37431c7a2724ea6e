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

False alarms: each check's statistical tests share its rate :data:`~zoo.homework.base.DESIGN_RATE` (a quarter of the
1e-4 per check that ``zoo/homework/INSTRUCTORS.md`` states; Bonferroni), each test's threshold coming from the
estimator's own variance at the number of draws it takes: z-tests of means and of log-variances, exact binomial
tails for counts. ``log_q`` and ``straight_through`` are deterministic. ``benchmarks/homework_seed_sweep.py``
measures the rates over 1000 seeds.
"""
from __future__ import annotations

import math

import torch
from torch.distributions import Bernoulli

from zoo.homework.base import DESIGN_RATE, assert_replayed, assert_total_variance, expect_tensor
from zoo.homework.discrete_estimators.problem import NUM_DATA, make_large_problem, make_problem
from zoo.testing import assert_close, assert_unbiased, sigmas_for_rate

__all__ = ["check_log_q", "check_reinforce_unbiased", "check_reinforce_loo_unbiased", "check_variance_order",
           "check_unbiased_on_a_new_problem", "check_gumbel_softmax_distribution", "check_relaxation_converges",
           "check_straight_through"]

NUM_PARTICLES = 4
GUMBEL_LOGITS = (1.0, -0.5, 0.3, -1.2)          # four classes: the Gumbel-max argmax law shows its sign
VARIANCE_SLACK = 1.15                           # a variance within 15% of the exact one is not a bug
LARGE_SAMPLES = 300                             # draws on the problem too large to enumerate
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


def _assert_variance(draws, exact: float, what: str, rate: float) -> str:
    return assert_total_variance(draws, exact, what, slack=VARIANCE_SLACK, sigmas=sigmas_for_rate(rate),
                                 hint=": does it use num_particles independent particles, and is its baseline "
                                      "1/(S-1) sum over the other particles j != s?")


def _large_unbiased(draws, function: str, problem_seed: int, rate: float) -> str:
    """Unbiased on the 60-latent problem, whose 2^60 configurations no estimator can enumerate."""
    exact = make_large_problem(problem_seed).exact_gradient()
    get = draws.get(function, problem_seed, NUM_PARTICLES, LARGE_SAMPLES, large=True)
    return assert_unbiased(_rows(get), exact, num_samples=LARGE_SAMPLES, sigmas=sigmas_for_rate(rate), seed=_seed())


def _unbiased(draws, exact, rate: float) -> str:
    """The draws' mean is ``exact`` (:func:`zoo.testing.assert_unbiased`, its 11 directions together at ``rate``)."""
    return assert_unbiased(_rows(draws), exact, num_samples=len(draws), sigmas=sigmas_for_rate(rate), seed=_seed())



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
    variance of S = 4 independent particles, and unbiased on a problem too large to enumerate. Three tests, each at
    a third of :data:`~zoo.homework.base.DESIGN_RATE`."""
    rate = DESIGN_RATE / 3
    seed = _shared_problem_seed(ctx)
    problem = make_problem(seed)
    draws = _Draws(sub)
    samples = draws.get("reinforce", seed, NUM_PARTICLES, 600)
    large = _large_unbiased(draws, "reinforce", seed, rate)
    draws.replayed()
    ctx.cache["reinforce", seed] = samples
    unbiased = _unbiased(samples, problem.exact_gradient(), rate)
    variance = _assert_variance(samples, problem.exact_variance("reinforce", NUM_PARTICLES),
                                f"reinforce(logits, f, {NUM_PARTICLES})", rate)
    return f"{unbiased}; {variance}; on 60 latents: {large}"


def check_reinforce_loo_unbiased(sub, ctx):
    """REINFORCE with the leave-one-out baseline is unbiased for the exactly enumerated ELBO gradient, with the
    exact variance at S = 4 and at S = 2 (where a baseline divided by S instead of S - 1 shows most), and
    unbiased on a problem too large to enumerate. Four tests, each at a quarter of
    :data:`~zoo.homework.base.DESIGN_RATE`."""
    rate = DESIGN_RATE / 4
    seed = _shared_problem_seed(ctx)
    problem = make_problem(seed)
    draws = _Draws(sub)
    samples = draws.get("reinforce_loo", seed, NUM_PARTICLES, 600)
    # f + c_b, a constant per datum: the ELBO's gradient and a leave-one-out estimator's draws stay the same (its
    # baseline moves with f), but a baseline divided by S instead of S - 1 leaves c_b / S in the signal, and one
    # taken over the other data leaves c_b minus theirs: their variance grows with c^2
    offsets = 30.0 * torch.randn(NUM_DATA)
    pairs = draws.get("reinforce_loo", seed, 2, 400, offsets=offsets)
    large = _large_unbiased(draws, "reinforce_loo", seed, rate)
    draws.replayed()
    ctx.cache["reinforce_loo", seed] = samples
    unbiased = _unbiased(samples, problem.exact_gradient(), rate)
    variance = _assert_variance(samples, problem.exact_variance("reinforce_loo", NUM_PARTICLES),
                                f"reinforce_loo(logits, f, {NUM_PARTICLES})", rate)
    _assert_variance(pairs, problem.exact_variance("reinforce_loo", 2),
                     "reinforce_loo(logits, f + c, 2), f shifted by a constant c_b per datum", rate)
    return f"{unbiased}; {variance}, and at S = 2 with f shifted per datum; on 60 latents: {large}"


def check_unbiased_on_a_new_problem(sub, ctx):
    """Both score-function estimators stay unbiased on another SBN, with 3 particles (two tests, each at half of
    :data:`~zoo.homework.base.DESIGN_RATE`)."""
    seed = _problem_seed(ctx, 1)
    exact = make_problem(seed).exact_gradient()
    draws = _Draws(sub)
    samples = {name: draws.get(name, seed, 3, 400) for name in ("reinforce", "reinforce_loo")}
    draws.replayed()
    return "; ".join(_unbiased(samples[name], exact, DESIGN_RATE / 2) for name in ("reinforce", "reinforce_loo"))


def _variance_and_error(draws):
    """(the draws' total variance, the standard error of its logarithm from their fourth moments)."""
    n = draws.shape[0]
    flat = draws.double().reshape(n, -1)
    squares = ((flat - flat.mean(0)) ** 2).sum(1) * n / (n - 1)
    variance = float(squares.mean())
    return variance, float(squares.std()) / math.sqrt(n) / max(variance, 1e-300)


def check_variance_order(sub, ctx):
    """The leave-one-out baseline lowers the variance of REINFORCE (same S = 4 particles) by the factor it should:
    the ratio of the two estimators' total variances is the exact one, Var(REINFORCE) / Var(REINFORCE + LOO) from
    :meth:`~zoo.homework.discrete_estimators.problem.Problem.exact_variance` (2.9 to 9.4 on these problems), within
    15%, by a two-sided z-test of the log ratio, and so is the variance of each coordinate of reinforce_loo's
    gradient against its exact one (:func:`_worst_coordinate`, Bonferroni over the coordinates), the two tests at
    half of :data:`~zoo.homework.base.DESIGN_RATE` each. A lower variance got
    otherwise (more particles than asked for, the exact gradient with no noise, a baseline that sees f(z_s)) is not
    the baseline's reduction and fails. It orders the draws that the unbiasedness checks took and replayed when they
    ran (600 of each), else draws and replays 300."""
    seed = _shared_problem_seed(ctx)
    problem = make_problem(seed)
    draws = _Draws(sub)
    estimators = {function: ctx.cache.get((function, seed)) for function in ("reinforce", "reinforce_loo")}
    for function in estimators:
        if estimators[function] is None:
            estimators[function] = draws.get(function, seed, NUM_PARTICLES, 300)
    if draws.requests:
        draws.replayed()
    n = min(len(d) for d in estimators.values())
    (v_plain, e_plain), (v_loo, e_loo) = (_variance_and_error(estimators[f][:n]) for f in ("reinforce", "reinforce_loo"))
    exact = problem.exact_variance("reinforce", NUM_PARTICLES) / problem.exact_variance("reinforce_loo", NUM_PARTICLES)
    if not v_loo > 0:
        raise AssertionError(f"reinforce_loo's draws do not vary (REINFORCE's variance {v_plain:.3g}): the baseline "
                             f"lowers the variance by a factor of {exact:.3g}, it does not remove it")
    ratio = v_plain / v_loo
    z = (abs(math.log(ratio / exact)) - math.log(VARIANCE_SLACK)) / max(math.hypot(e_plain, e_loo), 1e-12)
    threshold = sigmas_for_rate(DESIGN_RATE / 2)        # two tests: the total, and the coordinates together
    if z > threshold:
        raise AssertionError(f"the baseline lowers the variance of REINFORCE ({v_plain:.3g}) to {v_loo:.3g}, a factor "
                             f"of {ratio:.3g}, where the leave-one-out baseline at S = {NUM_PARTICLES} gives "
                             f"{exact:.3g} ({z:.1f} standard errors beyond 15%, {n} draws each): same S, and the "
                             f"baseline 1/(S-1) sum over the other particles?")
    worst, z = _worst_coordinate(estimators["reinforce_loo"][:n], problem.exact_variances("reinforce_loo", NUM_PARTICLES))
    if z > sigmas_for_rate(DESIGN_RATE / 2 / estimators["reinforce_loo"].shape[1]):
        raise AssertionError(f"reinforce_loo's variance of gradient coordinate {worst} is {z:.1f} standard errors "
                             f"beyond 15% of the leave-one-out baseline's at S = {NUM_PARTICLES} ({n} draws), though "
                             f"the total's ratio {ratio:.3g} is near {exact:.3g}: more particles, or another baseline?")
    return (f"variance REINFORCE {v_plain:.3g} > REINFORCE+LOO {v_loo:.3g}: ratio {ratio:.3g}, exact {exact:.3g}, "
            f"each coordinate's as the baseline's ({n} draws each)")


def _worst_coordinate(draws, exact_variances):
    """(the coordinate, its z) whose sample variance is furthest beyond :data:`VARIANCE_SLACK` of its exact one, in
    standard errors of its logarithm (from the fourth moments). A REINFORCE with 4S particles has a total variance
    that the leave-one-out baseline's can match, but not coordinate by coordinate: the baseline leaves the variance of
    the coordinates that f's own gradient carries as it is (ratio 1) and lowers others up to 11-fold, where more
    particles divide every one by 4. Coordinates of no exact variance are left out."""
    n = draws.shape[0]
    flat = draws.double().reshape(n, -1)
    squares = (flat - flat.mean(0)) ** 2 * n / (n - 1)
    variance = squares.mean(0)
    error = squares.std(0) / math.sqrt(n) / variance.clamp_min(1e-300)
    exact = exact_variances.double()
    z = (torch.log(variance.clamp_min(1e-300) / exact.clamp_min(1e-300)).abs() - math.log(VARIANCE_SLACK)) \
        / error.clamp_min(1e-12)
    z = torch.where(exact > 1e-12 * float(exact.max()), z, torch.full_like(z, -math.inf))
    worst = int(z.argmax())
    return worst, float(z[worst])


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


def _ks_critical(n: int, rate: float) -> float:
    """The Kolmogorov-Smirnov distance a sample of n exceeds with probability ``rate`` under the null:
    P(sqrt(n) D > lambda) <= 2 exp(-2 lambda^2) (Dvoretzky-Kiefer-Wolfowitz, Massart's constant), so
    lambda = sqrt(log(2 / rate) / 2)."""
    return math.sqrt(math.log(2.0 / rate) / 2.0) / math.sqrt(n)


def _binomial_tail(count: int, n: int, p: float) -> float:
    """The exact two-sided tail of a count: 2 min(P(X <= count), P(X >= count)) for X ~ Binomial(n, p), capped at 1.
    Exact, so a test of counts at rate r fails a correct sampler with probability at most r, however skewed the
    count (a normal approximation is not, 4 standard errors out)."""
    k = torch.arange(n + 1, dtype=torch.float64)
    log_pmf = torch.distributions.Binomial(n, probs=torch.tensor(p, dtype=torch.float64)).log_prob(k)
    below = float(torch.logsumexp(log_pmf[:count + 1], 0).exp())
    above = float(torch.logsumexp(log_pmf[count:], 0).exp())
    return min(1.0, 2.0 * min(below, above))


def check_gumbel_softmax_distribution(sub, ctx):
    """Gumbel-softmax samples have the Concrete law: P(argmax = c) = softmax(logits)_c at any tau, and
    tau log(y_a / y_b) - (l_a - l_b) is standard logistic (a difference of two Gumbels), out to its tails. Eleven
    tests share :data:`~zoo.homework.base.DESIGN_RATE`: the argmax count of each of 4 classes at 2 tau (exact
    binomial tails), a Kolmogorov-Smirnov test at each tau (Massart's bound), the tail count (exact binomial)."""
    logits = torch.tensor(GUMBEL_LOGITS)
    probs = torch.softmax(logits.double(), -1)
    n = 4000
    rate = DESIGN_RATE / (2 * (probs.numel() + 1) + 1)
    ks_critical = _ks_critical(n, rate)
    for tau in (0.5, 2.0):
        y = _simplex_samples(sub, logits, tau, n)
        counts = torch.bincount(y.argmax(-1), minlength=probs.numel())
        tails = [_binomial_tail(int(counts[c]), n, float(probs[c])) for c in range(probs.numel())]
        worst = min(range(probs.numel()), key=tails.__getitem__)
        if tails[worst] < rate:
            raise AssertionError(f"at tau={tau}, argmax = {worst} in {int(counts[worst]) / n:.3f} of the samples, but "
                                 f"softmax(logits)[{worst}] = {float(probs[worst]):.3f} (probability {tails[worst]:.2g} "
                                 f"for a correct sampler): check the sign of the Gumbel noise")
        pivot = tau * (torch.log(y[:, 0]) - torch.log(y[:, 1])) - (logits[0] - logits[1]).double()
        ks = _ks_logistic(pivot[torch.isfinite(pivot)])
        if ks > ks_critical:
            raise AssertionError(f"at tau={tau}, tau*log(y0/y1) - (l0 - l1) is not standard logistic "
                                 f"(Kolmogorov-Smirnov {ks:.3f} > {ks_critical:.3f}): check where tau enters")
    tails = _assert_logistic_tails(sub, logits, rate)
    return (f"argmax law and logistic log-ratio match the Concrete distribution at tau = 0.5 and 2 ({n} samples); "
            f"{tails}")


TAIL = 6.0                                      # P(|logistic| > 6) = 2 sigmoid(-6) = 0.5%
TAIL_SAMPLES = 20000


def _assert_logistic_tails(sub, logits, rate: float) -> str:
    """The log-ratio's tails: P(|g_0 - g_1| > 6) = 2 sigmoid(-6) for two independent Gumbels. A uniform clamped
    away from 0 and 1 (at 1e-2: g in [-1.53, 4.6]) leaves the Kolmogorov-Smirnov test (a 1% change of the CDF)
    but empties these tails."""
    tau = 2.0                                   # log y stays finite in float32 far out in the tails
    y = _simplex_samples(sub, logits, tau, TAIL_SAMPLES)
    pivot = tau * (torch.log(y[:, 0].double()) - torch.log(y[:, 1].double())) - float(logits[0] - logits[1])
    expected = 2.0 * float(torch.sigmoid(torch.tensor(-TAIL, dtype=torch.float64)))
    count = int((pivot.abs() > TAIL).sum())
    tail = _binomial_tail(count, TAIL_SAMPLES, expected)
    if tail < rate:
        raise AssertionError(f"at tau={tau}, |tau*log(y0/y1) - (l0 - l1)| > {TAIL:g} in {count} of {TAIL_SAMPLES} "
                             f"samples, expected {TAIL_SAMPLES * expected:.0f} (probability {tail:.2g} for a correct "
                             f"sampler): the Gumbel noise's tails are cut (is u clamped far from 0 and 1?)")
    return f"tails |log-ratio| > {TAIL:g}: {count} of {TAIL_SAMPLES} (expected {TAIL_SAMPLES * expected:.0f})"


#: The temperature at which the relaxed ELBO is compared with the exact one: its bias there is of order tau (below
#: 0.01 nats on these problems, a fifth of the standard error of 4000 samples), where at tau = 0.02 it was up to
#: 0.05, a standard error, and the comparison's false alarms depended on the problem drawn.
COLD_TAU = 0.001


def _near_one_hot(y) -> int:
    """How many samples have a coordinate within 0.01 of 1."""
    return int((y.max(-1).values > 0.99).sum())


def check_relaxation_converges(sub, ctx):
    """As tau -> 0, Gumbel-softmax samples become one-hot and the relaxed ELBO E f(y_tau) of the SBN becomes the
    exact ELBO (binary units relaxed as two classes, logits (phi, 0)): at tau = 0.001 at least 98% of 2000 samples
    are within 0.01 of a one-hot vector (a correct sampler: 99.8%) and at tau = 1 at most half are (a correct
    sampler: 1%), counts whose chance of a false alarm is below 1e-20; and at tau = 0.001 the mean of f(y) over 4000
    samples is the exact ELBO, by a two-sided z-test at :data:`~zoo.homework.base.DESIGN_RATE` (the relaxation's
    bias at that tau is a fifth of the standard error)."""
    logits = torch.tensor(GUMBEL_LOGITS)
    cold = _near_one_hot(_simplex_samples(sub, logits, COLD_TAU, 2000)) / 2000
    if cold < 0.98:
        raise AssertionError(f"at tau={COLD_TAU:g} only {cold:.1%} of the samples are within 0.01 of a one-hot "
                             f"vector (expected >= 98%)")
    hot = _near_one_hot(_simplex_samples(sub, logits, 1.0, 2000)) / 2000
    if hot > 0.5:
        raise AssertionError(f"at tau=1, {hot:.1%} of the samples are within 0.01 of a one-hot vector (a Concrete "
                             f"sample at tau = 1 is one-hot 1% of the time): does the sample use tau?")
    problem = make_problem(_problem_seed(ctx))
    exact = float(problem.exact_elbo().detach())
    n = 4000
    gaps = []
    with torch.no_grad():
        two_class = torch.stack([problem.logits, torch.zeros_like(problem.logits)], -1)      # [B, K, 2]
        for tau in (1.0, COLD_TAU):
            y = expect_tensor(sub.call("gumbel_softmax", two_class.expand(n, *two_class.shape), tau),
                              f"gumbel_softmax(logits [{n}, 3, 4, 2], tau={tau:g})", (n, *two_class.shape),
                              finite=False).float()
            values = problem.f(y[..., 0]).sum(-1).double()
            if not torch.isfinite(values).all():
                raise AssertionError(f"the relaxed ELBO at tau={tau:g} is nan or inf")
            gaps.append((float(values.mean()) - exact, float(values.std()) / math.sqrt(n)))
    (gap_hot, _), (gap_cold, stderr_cold) = gaps
    threshold = sigmas_for_rate(DESIGN_RATE)
    if abs(gap_cold) > threshold * stderr_cold:
        raise AssertionError(f"at tau={COLD_TAU:g} the relaxed ELBO is {exact + gap_cold:.4f}, off the exact "
                             f"{exact:.4f} by {gap_cold:.3g} ({abs(gap_cold) / stderr_cold:.1f} standard errors, "
                             f"threshold {threshold:.2f})")
    return (f"one-hot within 0.01 for {cold:.1%} at tau={COLD_TAU:g} ({hot:.1%} at tau=1); relaxed ELBO gap "
            f"{gap_hot:.3g} at tau=1, {gap_cold:.3g} +- {stderr_cold:.2g} at tau={COLD_TAU:g} (exact {exact:.4f})")


def check_straight_through(sub, ctx):
    """Straight-through: the forward value is the one-hot argmax of y_soft (to float rounding, so that every
    algebraic form passes, e.g. y_hard + y_soft - y_soft.detach()), and the gradient is y_soft's. Deterministic: the
    argmax is taken of the float32 y_soft the submission got, so a near tie cannot tell them apart."""
    tau = 0.7
    logits, w = torch.randn(6, 4), torch.randn(6, 4)
    reply = sub.probe(f"{_PROBES}:straight_through", logits, tau, w)
    if not isinstance(reply, dict) or set(reply) != {"value", "requires_grad", "gradient"}:
        raise AssertionError("the straight-through probe returned something else than its value and gradient")
    y = expect_tensor(reply["value"], "straight_through(y_soft [6, 4])", (6, 4))
    soft = torch.softmax(logits / tau, -1)             # the y_soft the probe gave, in float32: the same argmax
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
