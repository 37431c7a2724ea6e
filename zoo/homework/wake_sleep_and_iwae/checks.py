"""The graded checks of homework 4 (wake-sleep, reweighted wake-sleep, the importance-weighted bound), run in the
grader's process.

Each check is ``check(sub, ctx)``: it fails with a one-line ``AssertionError`` and passes returning a one-line
summary. Every problem is drawn from ``ctx.seed`` (secret per grade unless the instructor fixes ``--seed``) through
the public constructors of :mod:`zoo.homework.wake_sleep_and_iwae.problem`; the references are computed here, from
enumeration and closed forms, never from the submission, which returns only its draws, values and trained weights
(:mod:`zoo.homework.wake_sleep_and_iwae.probes`). What each one certifies:

- ``log_probabilities``: ``log_joint`` and ``log_recognition`` are the Bernoulli log-probabilities, to float32
  rounding, also at logits of order 1e3. Deterministic.
- ``wake_phase``, ``sleep_phase``, ``reweighted_wake_sleep``: 600 gradient draws of the surrogate, each from a seed
  of its own (some replayed in a fresh worker), are unbiased for the exact expected update, summed over all 2^K
  latents (wake), all 2^(K+D) dreams (sleep) or all 2^(K S) tuples of particles (RWS), in theta and in phi
  separately (the phase that must not move a parameter must have no gradient there), with the exact total
  variance of the estimator at the number of particles asked for.
- ``sleep_kl_direction``: on an explaining-away posterior, a recognition network trained from the minimiser of
  KL(q || p) by SGD on the student's sleep surrogate ends at the minimiser of KL(p || q).
- ``iwae_bound_values``: at the exact posterior every draw of the bound is log p(x) (and log p(x) - 1000 when the
  log joint is shifted by -1000: a log-mean-exp computed stably); elsewhere its mean is the closed-form ELBO at
  K = 1 (with the exact variance of one particle), the grader's high-precision L_K at K = 8 and 64, and within
  chi^2 / K of log p(x) at K = 1024.
- ``iwae_gradient``: 1600 reparameterised gradient draws at K = 5 are unbiased for grad L_K, against the grader's
  own estimate from 100,000 draws (two-sample tests along directions, and Hotelling's T^2 in each parameter
  tensor's coordinates, whose errors count both samples).
- ``digits_comparison``: the student's ``train`` fits wake-sleep, RWS and IWAE to the binarized 8x8 digits;
  the grader loads the returned weights and computes the test log-likelihood itself (exactly for the Helmholtz
  machines, by importance sampling with 500 particles for the VAE); each must reach :data:`DIGITS_TARGET`.

False alarms: each statistical check's tests share :data:`~zoo.homework.base.DESIGN_RATE` (Bonferroni), a quarter
of the 1e-4 per check that ``zoo/homework/INSTRUCTORS.md`` states, each threshold from the estimator's own variance
at the number of draws taken (the exact variance where it is known). The two training checks are by margin,
measured by ``benchmarks/homework_seed_sweep.py``.
"""
from __future__ import annotations

import math

import torch

from zoo.homework.base import (DESIGN_RATE, assert_replayed, assert_total_variance, draw_seeds, expect_tensor)
from zoo.homework.wake_sleep_and_iwae.problem import (GaussianVAE, HelmholtzMachine, fit_recognition, forward_kl,
                                                      log_joint, log_recognition, machine_state, make_gaussian_problem,
                                                      make_kl_problem, make_sbn_problem, reverse_kl,
                                                      sbn_log_likelihood, vae_log_likelihood)
from zoo.testing import assert_close, assert_unbiased, sigmas_for_rate

__all__ = ["check_log_probabilities", "check_wake_phase", "check_sleep_phase", "check_sleep_kl_direction",
           "check_reweighted_wake_sleep", "check_iwae_bound_values", "check_iwae_gradient",
           "check_digits_comparison"]

_PROBES = "zoo.homework.wake_sleep_and_iwae.probes"
NUM_SAMPLES = 4                 # particles (wake) and dreams (sleep) of each gradient draw
RWS_SAMPLES = 3                 # particles of reweighted wake-sleep: 16^3 tuples to enumerate
DRAWS = 600                     # gradient draws of each phase
VARIANCE_SLACK = 1.15           # a variance within 15% of the exact one is not a bug
IWAE_K, IWAE_DRAWS = 5, 1600       # 400 missed the sample's scale detached at 1 seed in 15 (where L_5 is flat in e)
#: The KL-direction training: SGD on the sleep surrogate from the KL(q || p) minimiser.
SLEEP_STEPS, SLEEP_DREAMS, SLEEP_LR = 300, 1000, 1.0
#: How much of the gap between the two minimisers' KL(p || q) a trained q may keep.
KL_SHARE = 0.1
#: The digits comparison: latents of each model, training steps, and the test log-likelihood each must reach
#: (nats per 64-pixel digit; independent pixels fitted to the training digits reach -25.0).
DIGITS_LATENTS, DIGITS_STEPS, DIGITS_TARGET = 10, 400, -22.5
METHODS = ("wake_sleep", "rws", "iwae")


def _problem_seed(ctx, offset: int) -> int:
    return (ctx.seed + offset) % 2 ** 31


class _Draws:
    """The student's gradient draws of one check, each computed in the worker from its own seed: :meth:`get` asks
    for them (validated ``[n, P]``), :meth:`replayed` restarts the worker and asks again for a few of each request,
    which must come back the same (a draw that depends on more than its seed fails before anything is certified)."""

    def __init__(self, sub):
        self.sub, self.requests = sub, []

    def get(self, probe: str, args, num: int, width: int, what: str):
        seeds = draw_seeds(num)
        draws = expect_tensor(self.sub.probe(f"{_PROBES}:{probe}", *args, seeds), what, (num, width))
        self.requests.append((probe, args, seeds, draws, what))
        return draws

    def replayed(self) -> None:
        assert_replayed(self.sub, [(self._asker(probe, args, what, draws.shape[1]), seeds, draws, what)
                                   for probe, args, seeds, draws, what in self.requests])

    def _asker(self, probe, args, what, width):
        return lambda seeds: expect_tensor(self.sub.probe(f"{_PROBES}:{probe}", *args, seeds), f"{what}, replayed",
                                           (len(seeds), width))


def _rows(draws):
    rows = iter(draws)
    return lambda: next(rows)


def _seed() -> int:
    return int(torch.randint(0, 2 ** 31 - 1, ()))


def _unbiased(draws, exact, rate: float, what: str) -> str:
    """The draws' mean is ``exact`` (:func:`zoo.testing.assert_unbiased`, 11 directions together at ``rate``)."""
    try:
        return assert_unbiased(_rows(draws), exact, num_samples=len(draws), sigmas=sigmas_for_rate(rate),
                               seed=_seed())
    except AssertionError as e:
        raise AssertionError(f"{what}: {e}") from None


# -- 1. the log-probabilities ----------------------------------------------------------------------------------
def check_log_probabilities(sub, ctx):
    """log_joint(machine, x, h) and log_recognition(machine, h, x), h [5, 3, 4], x [3, 6]: the Bernoulli
    log-probabilities summed over the units, shape [5, 3], to float32 rounding, and at logits of order 1e3."""
    machine = HelmholtzMachine(4, 6)
    with torch.no_grad():
        for p in machine.parameters():
            p.copy_(torch.randn_like(p))
    x = torch.bernoulli(torch.full((3, 6), 0.5))
    h = torch.bernoulli(torch.full((5, 3, 4), 0.5))
    summaries = []
    for scale in (1.0, 1000.0):
        state = {k: scale * v for k, v in machine_state(machine).items()}
        reply = sub.probe(f"{_PROBES}:log_probabilities", state, x, h)
        if not isinstance(reply, dict) or set(reply) != {"log_joint", "log_recognition"}:
            raise AssertionError("the log-probabilities came back malformed")
        scaled = HelmholtzMachine(4, 6)
        scaled.load_state_dict(state)
        where = "" if scale == 1.0 else " at logits of order 1e3 (log(sigmoid) computed naively?)"
        with torch.no_grad():
            for name, expected in (("log_joint", log_joint(scaled, x, h)),
                                   ("log_recognition", log_recognition(scaled, h, x))):
                got = expect_tensor(reply[name], f"{name}(machine, h [5, 3, 4], x [3, 6]){where}", (5, 3))
                summaries.append(assert_close(got, expected.double(), atol=1e-4, rtol=1e-5, what=f"{name}{where}"))
    return f"{summaries[0]}; {summaries[1]}; exact at logits of order 1e3"


# -- 2-4. the phases, against enumeration ------------------------------------------------------------------------
def _phase(sub, ctx, function: str, offset: int, num_samples: int, exact_name: str, hint: str) -> str:
    """The student's ``function``'s gradient draws: unbiased in theta and in phi for the exact expected update,
    with its exact total variance; three tests at a third of :data:`~zoo.homework.base.DESIGN_RATE` each."""
    rate = DESIGN_RATE / 3
    seed = _problem_seed(ctx, offset)
    problem = make_sbn_problem(seed)
    args = "machine, S" if function == "sleep_surrogate" else "machine, x, S"
    what = f"the gradient of {function}({args}) at S = {num_samples}"
    draws = _Draws(sub)
    samples = draws.get("phase_gradients", (function, seed, num_samples), DRAWS, problem.num_params, what)
    draws.replayed()
    exact, variance = getattr(problem, exact_name)(num_samples)
    G = problem.num_generative
    theta = _unbiased(samples[:, :G], exact[:G].detach(), rate, f"{what}, in theta = (a, W, c){hint}")
    phi = _unbiased(samples[:, G:], exact[G:].detach(), rate, f"{what}, in phi = (R, b){hint}")
    spread = assert_total_variance(samples, variance, what, slack=VARIANCE_SLACK, sigmas=sigmas_for_rate(rate),
                                   hint=f": does it use S = {num_samples} independent samples, averaged?")
    return f"theta: {theta}; phi: {phi}; {spread} ({DRAWS} draws)"


def check_wake_phase(sub, ctx):
    """The wake phase's update, E_{h ~ q(h|x)}[grad_theta log p(x, h)] summed over the data, and nothing in phi."""
    return _phase(sub, ctx, "wake_surrogate", 1, NUM_SAMPLES, "exact_wake",
                  " (h ~ q(h | x) without gradient, log p(x, h) averaged over them; no gradient in phi)")


def check_sleep_phase(sub, ctx):
    """The sleep phase's update, E_{(h, x) ~ p}[grad_phi log q(h | x)], and nothing in theta."""
    return _phase(sub, ctx, "sleep_surrogate", 2, NUM_SAMPLES, "exact_sleep",
                  " (dreams h ~ p(h), x ~ p(x | h) without gradient, log q(h | x) on them; no gradient in theta)")


def check_reweighted_wake_sleep(sub, ctx):
    """RWS's update, sum_s w~_s [grad_theta log p(x, h_s) + grad_phi log q(h_s | x)] with self-normalised weights,
    against its exact mean and variance over all tuples of S = 3 particles."""
    return _phase(sub, ctx, "rws_surrogate", 3, RWS_SAMPLES, "exact_rws",
                  " (w~ = softmax(log p - log q) over the particles, held fixed)")


# -- 5. the sleep phase's KL direction ---------------------------------------------------------------------------
def check_sleep_kl_direction(sub, ctx):
    """On the explaining-away toy (:func:`~zoo.homework.wake_sleep_and_iwae.problem.make_kl_problem`) the grader finds
    the recognition network that minimises E_p(x) KL(q(h|x) || p(h|x)) (a mode of the anti-correlated posterior) and
    the one that minimises E_p(x) KL(p(h|x) || q(h|x)) (its marginals); the worker trains q from the first by
    300 steps of SGD on the student's sleep surrogate (1000 dreams a step, the second half's average kept). The
    trained q must have closed at least 90% of the gap in KL(p || q) between the two. By margin: a correct sleep
    phase closes 99% (``benchmarks/homework_seed_sweep.py``)."""
    seed = _problem_seed(ctx, 4)
    machine = make_kl_problem(seed)
    sign = 1.0 if torch.rand(()) < 0.5 else -1.0
    start_R = torch.tensor([[4.0 * sign], [-4.0 * sign]], dtype=torch.float64)
    R_rev, b_rev = fit_recognition(machine, reverse_kl, start_R, torch.zeros(2, dtype=torch.float64))
    R_fwd, b_fwd = fit_recognition(machine, forward_kl, R_rev, b_rev)
    at_rev, at_fwd = float(forward_kl(machine, R_rev, b_rev)), float(forward_kl(machine, R_fwd, b_fwd))
    gap = at_rev - at_fwd
    reply = sub.probe(f"{_PROBES}:train_sleep", seed, R_rev.float(), b_rev.float(), SLEEP_STEPS, SLEEP_DREAMS,
                      SLEEP_LR)
    if not isinstance(reply, dict) or set(reply) != {"R", "b"}:
        raise AssertionError("the trained recognition network came back malformed")
    R = expect_tensor(reply["R"], "the trained recognition weights R", (2, 1))
    b = expect_tensor(reply["b"], "the trained recognition biases b", (2,))
    with torch.no_grad():
        trained, reverse = float(forward_kl(machine, R, b)), float(reverse_kl(machine, R, b))
    closed = (at_rev - trained) / gap
    summary = (f"KL(p || q) {at_rev:.4f} at the KL(q || p) minimiser, {at_fwd:.4f} at the KL(p || q) minimiser, "
               f"{trained:.4f} after the sleep phase ({closed:.0%} of the gap closed; KL(q || p) {reverse:.4f})")
    if not math.isfinite(trained) or closed < 1 - KL_SHARE:
        raise AssertionError(f"{summary}: a sleep phase fits q to dreams (h, x) ~ p, which minimises "
                             f"KL(p(h|x) || q(h|x)); is h drawn from q instead, or is the update's sign flipped?")
    return summary


# -- 6-7. the importance-weighted bound -----------------------------------------------------------------------------
def _bound_values(sub, seed, K, repeats, at_posterior, offset, B):
    what = (f"iwae_bound(log_joint{' - 1000' if offset else ''}, loc, log_scale, {K}) on {repeats * B} data"
            + (" with q the exact posterior" if at_posterior else ""))
    values = sub.probe(f"{_PROBES}:iwae_values", seed, K, repeats, at_posterior, offset)
    if isinstance(values, torch.Tensor) and values.dim() == 1:
        raise AssertionError(f"{what} returned shape ({values.shape[0]},), expected ({repeats * B},)")
    return expect_tensor(values, what, (repeats, B))


def _one_particle_variance(problem) -> torch.Tensor:
    """Var_q[log w] per datum, in closed form: with z = l + t eps, log w - log p(x) = const - eps . (l - m) t / v
    + eps^2 (1 - t^2 / v) / 2 per coordinate (m, v the posterior's mean and variance), so the variance is
    sum_j ((l - m)_j t_j / v_j)^2 + (1 - t_j^2 / v_j)^2 / 2."""
    mean, var = problem.posterior()
    loc, log_scale = problem.guide()
    t2 = torch.exp(2 * log_scale)
    return (((loc - mean) ** 2 * t2 / var ** 2) + 0.5 * (1 - t2 / var) ** 2).sum(-1).detach()


def check_iwae_bound_values(sub, ctx):
    """The bound's values. Deterministic: with q the exact posterior every w_k = p(x), so every draw is log p(x) at
    K = 1, and log p(x) - 1000 at K = 5 with the log joint shifted by -1000 (logsumexp minus log K; a mean of the
    weights, a missing log K, or exp(log w) underflowing fail). Statistical (13 tests sharing
    :data:`~zoo.homework.base.DESIGN_RATE`), with a q that is not the posterior: at K = 1 the mean of 4000 draws is
    the closed-form ELBO (the exact standard error) and their variance the exact one of one particle; at K = 8 and
    64 the mean is the grader's own L_K (a two-sample test against 20,000 draws); at K = 1024 it is log p(x) within
    chi^2(p || q) / K (twice the bound's first-order gap) and the standard errors."""
    seed = _problem_seed(ctx, 5)
    problem = make_gaussian_problem(seed)
    B = problem.x.shape[0]
    log_px = problem.log_marginal().detach()
    for K, offset in ((1, 0.0), (5, -1000.0)):
        values = _bound_values(sub, seed, K, 20, True, offset, B)
        assert_close(values, (log_px + offset).expand_as(values), atol=2e-3, rtol=0.0,
                     what=f"the bound at the exact posterior (every w_k = p(x)), K = {K}"
                          + (", the log joint shifted by -1000" if offset else ""))
    rate = DESIGN_RATE / 13
    sigmas = sigmas_for_rate(rate)
    elbo = problem.elbo().detach()
    values = _bound_values(sub, seed, 1, 4000, False, 0.0, B)
    variance = _one_particle_variance(problem)
    z = (values.mean(0) - elbo) / (variance / values.shape[0]).sqrt()
    worst = int(z.abs().argmax())
    if abs(float(z[worst])) > sigmas:
        raise AssertionError(f"at K = 1 the bound's mean is {float(values.mean(0)[worst]):.4f} for datum {worst}, the "
                             f"ELBO is {float(elbo[worst]):.4f} ({float(z[worst]):.1f} standard errors): at K = 1 "
                             f"log (1/K) sum_k w_k is log w_1")
    assert_total_variance(values, float(variance.sum()), "the bound at K = 1", slack=VARIANCE_SLACK, sigmas=sigmas,
                          hint=": one particle z = loc + exp(log_scale) eps per datum?")
    means = {1: values.mean(0)}
    for K, draws, reference_draws in ((8, 2000, 20000), (64, 1000, 10000)):
        values = _bound_values(sub, seed, K, draws, False, 0.0, B)
        reference = problem.iwae_values(K, reference_draws)
        error = (values.var(0) / draws + reference.var(0) / reference_draws).sqrt()
        z = (values.mean(0) - reference.mean(0)) / error
        worst = int(z.abs().argmax())
        if abs(float(z[worst])) > sigmas:
            raise AssertionError(f"at K = {K} the bound's mean is {float(values.mean(0)[worst]):.4f} for datum {worst}, "
                                 f"L_K is {float(reference.mean(0)[worst]):.4f} ({float(z[worst]):.1f} standard errors; "
                                 f"ELBO {float(elbo[worst]):.4f}, log p(x) {float(log_px[worst]):.4f}): L_K = "
                                 f"E[logsumexp_k log w_k - log K] grows with K toward log p(x)")
        means[K] = values.mean(0)
    K = 1024
    values = _bound_values(sub, seed, K, 200, False, 0.0, B)
    allowed = problem.chi_square().detach() / K
    error = values.std(0) / math.sqrt(values.shape[0])
    below = (log_px - values.mean(0)) / error
    above = (log_px - allowed - values.mean(0)) / error
    if float(-below.min()) > sigmas or float(above.max()) > sigmas:
        b = int(torch.maximum(-below, above).argmax())
        raise AssertionError(f"at K = {K} the bound's mean is {float(values.mean(0)[b]):.4f} for datum {b}, log p(x) "
                             f"is {float(log_px[b]):.4f} (allowed gap {float(allowed[b]):.4f}, standard error "
                             f"{float(error[b]):.4f}): L_K converges to log p(x) from below")
    means[K] = values.mean(0)
    path = ", ".join(f"{float(means[k][0]):.3f}" for k in (1, 8, 64, 1024))
    return (f"w = p(x) at the posterior; datum 0: L_1, L_8, L_64, L_1024 = {path} -> log p(x) "
            f"{float(log_px[0]):.3f} (ELBO {float(elbo[0]):.3f})")


#: the Gaussian problem's parameter tensors, in the order of its ``params`` and of the flat gradient
PARAMETERS = ("W", "mu", "log_sigma", "A", "d", "e")


#: eigenvalues of a tensor's gradient covariance below this share of its largest are rounding (1e-12 and less where
#: the draws are confined to a subspace; the smallest real ones are 1e-3), left out of Hotelling's test
RANK_TOLERANCE = 1e-8


def check_iwae_gradient(sub, ctx):
    """The reparameterised gradient of sum_b L_K(x_b) at K = 5 in (W, mu, log sigma, A, d, e): 1600 draws, each from
    its own seed (some replayed in a fresh worker), against the grader's mean of 100 batches of 1000 of its own
    draws. The difference of the two means is tested along 10 random directions, the all-ones direction and the
    reference gradient's direction within each parameter tensor (two-sample z-tests whose standard error counts both
    samples), and within each parameter tensor in all its coordinates at once (Hotelling's T^2, the Wald statistic
    of the difference under both samples' covariances, against its F law at the student's draws): a bias
    orthogonal to a tensor's mean gradient is found there. The 23 tests share
    :data:`~zoo.homework.base.DESIGN_RATE`."""
    from scipy.stats import f as f_law
    seed = _problem_seed(ctx, 6)
    problem = make_gaussian_problem(seed)
    sizes = [p.numel() for p in problem.params]
    width = sum(sizes)
    what = f"the gradient of iwae_bound(log_joint, loc, log_scale, {IWAE_K}) summed over the data"
    draws = _Draws(sub)
    samples = draws.get("iwae_gradients", (seed, IWAE_K), IWAE_DRAWS, width, what)
    draws.replayed()
    reference = problem.iwae_gradients(IWAE_K, 100, 1000).detach()
    tests = 11 + 2 * len(PARAMETERS)
    rate = DESIGN_RATE / tests
    directions = torch.randn(10, width, dtype=torch.float64)
    mean = reference.mean(0)
    # each parameter tensor's own gradient direction: a term missing from one tensor (the sample's scale detached
    # drops the pathwise part of log_scale's) is a bias of its full size there, and a small share of theta's or phi's
    blocks, starts = torch.zeros(len(PARAMETERS), width, dtype=torch.float64), [0]
    for k, size in enumerate(sizes):
        starts.append(starts[-1] + size)
        blocks[k, starts[k]:starts[k + 1]] = mean[starts[k]:starts[k + 1]]
    directions = torch.cat([directions, torch.ones(1, width, dtype=torch.float64), blocks])
    directions = directions / directions.norm(dim=1, keepdim=True).clamp_min(1e-300)
    names = ([f"random direction {k}" for k in range(10)] + ["the all-ones direction"]
             + [f"{name}'s gradient direction" for name in PARAMETERS])
    a, r = samples @ directions.T, reference @ directions.T
    error = (a.var(0) / a.shape[0] + r.var(0) / r.shape[0]).sqrt()
    z = (a.mean(0) - r.mean(0)) / error.clamp_min(1e-300)
    threshold = sigmas_for_rate(rate)
    worst = int(z.abs().argmax())
    hint = "z = loc + exp(log_scale) eps keeps the gradient in loc and log_scale"
    if abs(float(z[worst])) > threshold:
        raise AssertionError(f"{what} is biased along {names[worst]}: {float(a.mean(0)[worst]):.4g} against the "
                             f"reference {float(r.mean(0)[worst]):.4g} ({float(z[worst]):.1f} standard errors, threshold "
                             f"{threshold:.2f}): {hint}")
    # Hotelling's T^2 in each tensor's coordinates: (n - 1) p / (n - p) F(p, n - p) at the student's n draws (the
    # reference's covariance of its mean is 1/60 of theirs, so theirs is the covariance estimated)
    n = samples.shape[0]
    for k, name in enumerate(PARAMETERS):
        cols = slice(starts[k], starts[k + 1])
        delta = samples[:, cols].mean(0) - reference[:, cols].mean(0)
        cov = (torch.atleast_2d(torch.cov(samples[:, cols].T)) / n
               + torch.atleast_2d(torch.cov(reference[:, cols].T)) / reference.shape[0])
        # within the span the draws vary in: mu's gradient moves only along W's columns (the rest of its covariance
        # is rounding, 1e-12 of the top and less, where a float32 mean would be thousands of "standard errors" off)
        values, vectors = torch.linalg.eigh(cov)
        kept = values > RANK_TOLERANCE * values.max().clamp_min(1e-300)
        p = int(kept.sum())
        if p == 0:                                   # neither sample varies in this tensor: the z-tests judged it
            continue
        t2 = float(((vectors[:, kept].T @ delta) ** 2 / values[kept]).sum())
        limit = (n - 1) * p / (n - p) * float(f_law.isf(rate, p, n - p))
        if not t2 <= limit:
            raise AssertionError(f"{what} is biased in {name}'s coordinates: Hotelling's T^2 = {t2:.1f} in the {p} "
                                 f"directions its draws vary in, against the reference (threshold {limit:.1f}, an F "
                                 f"law at {n} draws): {hint}")
    return (f"unbiased for grad L_{IWAE_K} along {len(names)} directions (largest |z| {abs(float(z[worst])):.2f} < "
            f"{threshold:.2f}) and in each parameter tensor's coordinates (Hotelling's T^2); {IWAE_DRAWS} draws "
            f"against 100,000")


# -- 8. the comparison on the digits ---------------------------------------------------------------------------------
def _digits():
    from zoo.data import load_digits
    data = load_digits()
    return data.train, data.test


def _load(method: str, state, num_latents: int, num_pixels: int):
    model = GaussianVAE(num_latents, num_pixels) if method == "iwae" else HelmholtzMachine(num_latents, num_pixels)
    expected = model.state_dict()
    if not isinstance(state, dict) or set(state) != set(expected):
        raise AssertionError(f"train({method!r}, ...) must return the state_dict() of a "
                             f"{type(model).__name__}({num_latents}, {num_pixels}), keys {sorted(expected)}")
    model.load_state_dict({k: expect_tensor(v, f"the trained {method} weights {k}", tuple(expected[k].shape)).float()
                           for k, v in state.items()})
    return model


def check_digits_comparison(sub, ctx):
    """The student's ``train`` on the 1257 binarized training digits (10 latents, 400 steps, seed from the grade's),
    for each method; the grader computes the test log-likelihood (270 digits) of the returned weights: the exact
    log p(x) over 2^10 latents for the two Helmholtz machines, an importance-sampled one (500 particles from the
    trained q) for the Gaussian VAE. Each must reach :data:`DIGITS_TARGET`. By margin (the sweep)."""
    x_train, x_test = _digits()
    results = {}
    for method in METHODS:
        state = sub.probe(f"{_PROBES}:train", method, x_train, DIGITS_LATENTS, DIGITS_STEPS, _seed())
        model = _load(method, state, DIGITS_LATENTS, x_train.shape[1])
        results[method] = (vae_log_likelihood(model, x_test) if method == "iwae"
                           else sbn_log_likelihood(model, x_test))
    table = ", ".join(f"{m} {v:.2f}" for m, v in results.items())
    short = [m for m, v in results.items() if not v >= DIGITS_TARGET]
    if short:
        raise AssertionError(f"test log-likelihood (nats per digit) {table}: {', '.join(short)} below the target "
                             f"{DIGITS_TARGET:g} after {DIGITS_STEPS} steps")
    return f"test log-likelihood (nats per digit): {table} (target {DIGITS_TARGET:g})"
