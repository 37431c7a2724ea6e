"""The graded checks of homework 5 (expressive VAEs: IAF, the VampPrior, what they buy), run in the grader's process.

Each check is ``check(sub, ctx)``: it builds its own networks (the starter's :class:`AutoregressiveNet`,
:class:`Encoder` and :class:`Decoder`, weights drawn from ``ctx.seed``, a secret per grade unless the instructor fixes
``--seed``), sends their weights and its inputs to the worker, gets values back
(:mod:`zoo.homework.expressive_posteriors.probes`), validates them and decides with its own code
(:mod:`zoo.homework.expressive_posteriors.problem`: the exact IAF step, the mixture, quadratures). What each certifies:

- ``made_masks``: the two MADE masks for random hidden degrees, entry by entry (deterministic).
- ``autoregressive``: output i of ``autoregressive_net`` does not move when the inputs i..D do (each i perturbed in
  turn), and (m, s) are the masked network's, to float32 rounding (deterministic).
- ``iaf_step``: z' = sigma z + (1 - sigma) m; log_det = log |det dz'/dz| of the Jacobian that
  ``torch.autograd.functional.jacobian`` computes for the grader's own step on random inputs; and the Jacobian of the
  student's step by autograd through their code is that one (a scale or shift detached from z changes its entries
  below the diagonal, not the values) (deterministic).
- ``vamp_prior``: ``vamp_prior_log_prob`` equals the log-density of torch's ``MixtureSameFamily`` of the K Gaussians
  with weights 1/K on random pseudo-inputs, also at points 25 scales away from every component (where a density
  underflows and only a logsumexp stays finite), on batches of any leading shape; and in 2-d it integrates to 1 (a
  grid rule, accurate to 1e-8 for Gaussians of scale >= 1 grid step) (deterministic).
- ``elbo_estimator``: on a 4-pixel model with a 2-d latent, for no flow, two IAF steps, and one step with a
  VampPrior, ``elbo``'s draws vary as ``num_particles`` independent particles do, their mean is the exact ELBO
  (quadrature over z_0 through the flow) and lies below the exact log p(x) (quadrature over the prior): z-tests at
  :data:`~zoo.homework.base.DESIGN_RATE` (Bonferroni over the 15 data), as in homework 1.
- ``active_units``: the variances over the data of the encoder's means and the count above the threshold, against
  the exact ones, on an encoder whose units' variances the grader sets on both sides of 0.01 (none within a
  factor 3 of it) with posterior scales near 1; then on the fixed digits model (deterministic).
- ``iaf_closes_the_gap``: the student's ``fit_iaf`` fits two IAF steps to 200 test digits under the fixed digits
  model (:func:`~zoo.homework.expressive_posteriors.problem.fixed_model`); with the returned weights the grader
  computes each datum's ELBO of the IAF guide and of the factorised guide exactly (quadrature over z_0), and, for the
  report, their gaps to log p(x) (importance-sampled, 2000 draws): the IAF guide's gap must be smaller than the
  factorised one's by more than z standard errors of the mean difference over the digits (z one-sided at
  ``DESIGN_RATE``). The flows start 0.37 to 0.39 nats/digit worse than the factorised guide, so a fit that does not
  train, or trains the wrong way, fails.
- ``vamp_prior_buys``: on the digits VAE the kit trained with a VampPrior of 25 pseudo-inputs
  (:func:`~zoo.homework.expressive_posteriors.problem.fixed_vamp_model`), ``elbo`` with those pseudo-inputs at 100
  test digits (20 particles, 5 draws) averages to the exact ELBO (quadrature): one z-test at ``DESIGN_RATE`` with the
  exact standard error. The output compares the two fixed models with the grader's own figures: ELBO, log p(x) by
  importance sampling, the gap, the active units.

False alarms: the deterministic checks have none; ``elbo_estimator``'s tests share ``DESIGN_RATE``, and so does
``vamp_prior_buys``'s one test. The fit is a
training run: its test's threshold comes from ``DESIGN_RATE``, but whether a correct fit clears it depends on the
fit's gain: the reference's fits at the sweep's first 30 seeds end 0.111 to 0.139 nats/digit better than the
factorised guide, 8.4 to 9.9 standard errors, where 4.06 are needed; ``benchmarks/homework_seed_sweep.py`` measures
that margin over more seeds.
"""
from __future__ import annotations

import functools
import math

import torch

from zoo.homework.base import (DESIGN_RATE, assert_elbo_draws, assert_replayed, draw_seeds, expect_number,
                               expect_sequence, expect_tensor)
from zoo.homework.expressive_posteriors import problem
from zoo.homework.expressive_posteriors.starter import AutoregressiveNet, Decoder, Encoder

_PROBES = "zoo.homework.expressive_posteriors.probes"
#: The fit of ``iaf_closes_the_gap``: digits, IAF steps, Adam steps, learning rate, particles.
FIT_DIGITS, FIT_FLOWS, FIT_STEPS, FIT_LR, FIT_PARTICLES = 200, 2, 400, 1e-2, 4
#: Importance samples of the report's log p(x).
IS_SAMPLES = 2000


def _degrees(hidden: int, dim: int) -> torch.Tensor:
    """Random hidden degrees in 1..dim-1, each degree at least once."""
    degrees = torch.randint(1, dim, (hidden,))
    degrees[:dim - 1] = torch.arange(1, dim)
    return degrees[torch.randperm(hidden)]


def _net(dim: int, context_dim: int, hidden: int, gain: float = 1.0) -> AutoregressiveNet:
    """An :class:`AutoregressiveNet` with random hidden degrees and weights (``gain`` times PyTorch's initialisation)."""
    net = AutoregressiveNet(dim, context_dim, hidden)
    with torch.no_grad():
        net.hidden_degrees.copy_(_degrees(hidden, dim))
        for p in net.parameters():
            p.mul_(gain)
    return net


# -- 1. the masks ------------------------------------------------------------------------------------------------
def check_made_masks(sub, ctx) -> str:
    """made_masks(hidden_degrees, dim) is MADE's pair of masks, entry by entry, for three random sizes."""
    for dim, hidden in ((2, 5), (int(torch.randint(4, 7, ())), 11), (7, 16)):
        degrees = _degrees(hidden, dim)
        what = f"made_masks(hidden_degrees, dim={dim}) with {hidden} hidden degrees {degrees.tolist()}"
        mask_in, mask_out = expect_sequence(sub.call("made_masks", degrees, dim), what, 2)
        exact_in, exact_out = problem.exact_masks(degrees, dim)
        mask_in = expect_tensor(mask_in, f"{what}: mask_in", (hidden, dim))
        mask_out = expect_tensor(mask_out, f"{what}: mask_out", (dim, hidden))
        for got, exact, name, rule in ((mask_in, exact_in, "mask_in", "hidden unit k sees input d when m(k) >= d"),
                                       (mask_out, exact_out, "mask_out", "output i sees hidden unit k when i > m(k)")):
            wrong = (got != exact).nonzero()
            if len(wrong):
                r, c = wrong[0].tolist()
                raise AssertionError(f"{what}: {name}[{r}, {c}] is {float(got[r, c]):g}, MADE's is "
                                     f"{float(exact[r, c]):g} ({rule}; degrees count from 1)")
    return "both masks are MADE's (output i sees the inputs before i only)"


# -- 2. the autoregressive network ---------------------------------------------------------------------------------
def check_autoregressive(sub, ctx) -> str:
    """Output i of autoregressive_net unchanged when inputs i..D change; (m, s) are the masked network's."""
    dim, context_dim, hidden, B = 5, 3, 12, 4
    net = _net(dim, context_dim, hidden, gain=2.0)
    z, h = torch.randn(B, dim), torch.randn(B, context_dim)
    # row block i: z with the inputs i..D (1-based) redrawn; outputs 1..i must stay as they are
    rows = [z] + [torch.cat([z[:, :i], torch.randn(B, dim - i)], 1) for i in range(dim)]
    zz, hh = torch.cat(rows), h.repeat(dim + 1, 1)
    what = "autoregressive_net(net, z, h)"
    m, s = expect_sequence(sub.probe(f"{_PROBES}:autoregressive_outputs", net.state_dict(), dim, context_dim, hidden,
                                     zz, hh), what, 2)
    m = expect_tensor(m, f"{what}: m", (len(zz), dim))
    s = expect_tensor(s, f"{what}: s", (len(zz), dim))
    base_m, base_s = m[:B], s[:B]
    for i in range(dim):
        block = slice(B * (i + 1), B * (i + 2))
        for out, base, name in ((m, base_m, "m"), (s, base_s, "s")):
            moved = (out[block, :i + 1] - base[:, :i + 1]).abs().amax(0)
            if float(moved.max()) > 1e-5:
                j = int(moved.argmax())
                raise AssertionError(f"{what}: output {name}_{j + 1} changes (by {float(moved[j]):.3g}) when only "
                                     f"z_{i + 1}..z_{dim} change; output i may depend on z_1..z_(i-1) only")
    _, _, exact_m, exact_s = problem.exact_step(net, zz.double(), hh.double())
    from zoo.testing import assert_close
    try:
        assert_close(m, exact_m, atol=1e-4, rtol=1e-4, what="m")
        assert_close(s, exact_s, atol=1e-4, rtol=1e-4, what="s")
    except AssertionError as e:
        raise AssertionError(f"{what} is not the masked network tanh(masked inner(z) + context(h)) -> masked shift, "
                             f"scale: {e}") from None
    return "output i depends on z_1..z_(i-1) only (each input perturbed); m, s are the masked network's"


# -- 3. the IAF step and its log-determinant -------------------------------------------------------------------------
def check_iaf_step(sub, ctx) -> str:
    """z' of iaf_step is the gated update; log_det is log|det| of autograd's Jacobian of the exact step; the Jacobian
    of the student's step (autograd through their code) is the exact one."""
    dim, context_dim, hidden, B = 4, 3, 10, 6
    net = _net(dim, context_dim, hidden, gain=2.0)
    z, h = torch.randn(B, dim, dtype=torch.float64), torch.randn(B, context_dim, dtype=torch.float64)
    what = "iaf_step(net, z, h)"
    reply = sub.probe(f"{_PROBES}:iaf_step_jacobian", net.state_dict(), dim, context_dim, hidden, z, h)
    if isinstance(reply, dict) and set(reply) == {"value"}:
        z_new, log_det = expect_sequence(reply["value"], what, 2)
        expect_tensor(z_new, f"{what}: z'", (B, dim))
        expect_tensor(log_det, f"{what}: log_det", (B,))
    if not isinstance(reply, dict) or set(reply) != {"z_new", "log_det", "jacobian"}:
        raise AssertionError(f"{what} came back malformed")
    z_new = expect_tensor(reply["z_new"], f"{what}: z'", (B, dim))
    log_det = expect_tensor(reply["log_det"], f"{what}: log_det", (B,))
    jacobian = expect_tensor(reply["jacobian"], f"the Jacobian of {what}", (B, dim, dim))
    exact_z, _, _, _ = problem.exact_step(net, z, h)
    off = float((z_new - exact_z).abs().max())
    if off > 1e-6:
        raise AssertionError(f"{what}: z' differs from sigma * z + (1 - sigma) * m, sigma = sigmoid(s), by {off:.3g}")
    exact_jacobian = torch.stack([torch.autograd.functional.jacobian(
        lambda zb, b=b: problem.exact_step(net, zb, h[b])[0], z[b]) for b in range(B)])
    sign, logabsdet = torch.linalg.slogdet(exact_jacobian)
    log_det_off = float((log_det - logabsdet).abs().max())
    if log_det_off > 1e-6:
        b = int((log_det - logabsdet).abs().argmax())
        raise AssertionError(f"{what}: log_det {float(log_det[b]):.6g} is not log |det dz'/dz| = "
                             f"{float(logabsdet[b]):.6g} (autograd's Jacobian of the step; it is sum_i log sigma_i)")
    off = float((jacobian - exact_jacobian).abs().max())
    if off > 1e-6:
        b, i, j = _where(jacobian - exact_jacobian)
        raise AssertionError(f"{what}: dz'_{i + 1}/dz_{j + 1} by autograd through your step is "
                             f"{float(jacobian[b, i, j]):.4g}, the exact one {float(exact_jacobian[b, i, j]):.4g}: is "
                             f"sigma or m detached from z (the gradient must flow through both)?")
    return (f"z' is the gated update; log_det = log|det J| (autograd's Jacobian) within {log_det_off:.1g}; the Jacobian "
            f"through your code is the exact one within {off:.1g}")


def _where(diff: torch.Tensor):
    """The (b, i, j) of the largest |entry| of ``diff`` [B, D, D]."""
    flat = int(diff.abs().reshape(-1).argmax())
    B, D, _ = diff.shape
    return flat // (D * D), (flat // D) % D, flat % D


# -- 4. the VampPrior ------------------------------------------------------------------------------------------------
def _vamp_encoder(x_dim: int, z_dim: int, hidden: int) -> Encoder:
    """A random encoder whose Gaussians have scales in about [0.4, 2.5] and means spread over about [-6, 6]."""
    encoder = Encoder(x_dim, z_dim, hidden)
    with torch.no_grad():
        encoder.mu.weight.mul_(6.0)
        encoder.log_sigma.weight.mul_(0.5)
        encoder.log_sigma.bias.uniform_(-0.4, 0.4)
    return encoder


def check_vamp_prior(sub, ctx) -> str:
    """vamp_prior_log_prob is the log-density of the uniform mixture of the encoder's Gaussians at the pseudo-inputs
    (torch's MixtureSameFamily), near and far from them, for any leading shape; in 2-d it integrates to 1."""
    x_dim, hidden, K = 5, 8, 4
    what = "vamp_prior_log_prob(z, encoder, pseudo_inputs)"
    encoder = _vamp_encoder(x_dim, 3, hidden)
    pseudo = torch.rand(K, x_dim)
    near = torch.randn(2, 5, 3) * 2.0
    with torch.no_grad():
        mu, log_sigma = encoder(pseudo)
    # 25 scales beyond every component: each log q(z | u_k) is below -300, whose exp is 0 in float32
    radius = float(mu.norm(dim=-1).max() + 25 * log_sigma.exp().max())
    far = torch.randn(1, 5, 3)
    far = radius * far / far.norm(dim=-1, keepdim=True)
    z = torch.cat([near, far])                                          # [3, 5, 3]: any leading shape
    got = expect_tensor(sub.probe(f"{_PROBES}:vamp_log_prob", encoder.state_dict(), x_dim, 3, hidden, z, pseudo),
                        f"{what} with z of shape [3, 5, 3] and {K} pseudo-inputs", (3, 5), finite=False)
    exact = problem.exact_vamp_log_prob(z, encoder, pseudo)
    if not torch.isfinite(got[:2]).all():
        raise AssertionError(f"{what} is nan or inf at points near the pseudo-inputs' Gaussians")
    if not torch.isfinite(got[2]).all():
        raise AssertionError(f"{what} is -inf or nan at points far from every pseudo-input (log p(z) about "
                             f"{float(exact[2].max()):.0f} there): the densities underflow; use torch.logsumexp of the "
                             f"log-densities")
    off = (got - exact).abs() / (1e-3 + 1e-5 * exact.abs())
    if float(off.max()) > 1:
        index = tuple(int(k) for k in (off == off.max()).nonzero()[0])
        raise AssertionError(f"{what} is not the log-density of the mixture (1/K) sum_k N(z; mu(u_k), sigma(u_k)^2): at "
                             f"z{list(index)} {float(got[index]):.6g} vs {float(exact[index]):.6g}")
    # in 2-d: the density integrates to 1 (a grid rule, spectrally accurate for Gaussians of scale >= 8 steps)
    encoder = _vamp_encoder(x_dim, 2, hidden)
    pseudo = torch.rand(K, x_dim)
    with torch.no_grad():
        mu, log_sigma = encoder(pseudo)
    sigma = log_sigma.exp()
    low, high = float((mu - 9 * sigma).min()), float((mu + 9 * sigma).max())
    # the rectangle rule on a Gaussian of scale sigma with step h errs by about 2 exp(-2 pi^2 sigma^2 / h^2) per axis:
    # below 1e-8 at h = sigma, and the step here is at most a third of the smallest scale (or the grid has 400^2 points)
    n = min(400, math.ceil((high - low) / (float(sigma.min()) / 3)) + 1)
    step = (high - low) / (n - 1)
    axis = torch.linspace(low, high, n)
    grid = torch.stack(torch.meshgrid(axis, axis, indexing="ij"), -1).reshape(-1, 2)
    log_p = expect_tensor(sub.probe(f"{_PROBES}:vamp_log_prob", encoder.state_dict(), x_dim, 2, hidden, grid, pseudo),
                          f"{what} on a 2-d grid", (n * n,), finite=False)
    mass = float(torch.nan_to_num(log_p.exp(), nan=0.0).sum() * step ** 2)
    if abs(mass - 1.0) > 1e-3:
        raise AssertionError(f"{what} does not integrate to 1 over z in 2-d: its density's integral is {mass:.4g} "
                             f"(a mixture's weights 1/K sum to 1: log p = logsumexp_k log q(z|u_k) - log K)")
    return f"the uniform mixture of the K Gaussians, finite far from them; integrates to {mass:.6f} in 2-d"


# -- 5. the ELBO estimator with flows and a VampPrior -------------------------------------------------------------------
def _tiny(D: int = 4, hidden: int = 6):
    """Small float64 networks (a 2-d latent, so quadrature is exact), drawn from torch's RNG (the check's seed)."""
    decoder, encoder = Decoder(2, D, hidden).double(), Encoder(D, 2, hidden).double()
    with torch.no_grad():
        encoder.log_sigma.bias.fill_(-0.7)
    return decoder, encoder


def _exact_log_px(decoder, encoder, x, pseudo_inputs=None, n: int = 60) -> torch.Tensor:
    """log p(x) per datum by Gauss-Hermite quadrature over the prior: N(0, I), or each Gaussian of the VampPrior."""
    u, w = problem.gauss_hermite_2d(n)
    if pseudo_inputs is None:
        centres, scales = torch.zeros(1, 2, dtype=torch.float64), torch.ones(1, 2, dtype=torch.float64)
    else:
        with torch.no_grad():
            centres, log_scales = encoder(pseudo_inputs)
        scales = log_scales.exp()
    terms = []
    with torch.no_grad():
        for centre, scale in zip(centres, scales):
            z = centre + scale * u                                                  # [K, 2]
            log_px_z = torch.distributions.Bernoulli(logits=decoder(z)).log_prob(x.unsqueeze(1)).sum(-1)   # [B, K]
            terms.append(torch.logsumexp(log_px_z + w.log(), -1))
    return torch.logsumexp(torch.stack(terms), 0) - math.log(len(terms))


def check_elbo_estimator(sub, ctx) -> str:
    """elbo(decoder, encoder, x, 200, flows, pseudo_inputs): for no flow, two IAF steps, and one step with a VampPrior,
    10 draws per datum of 5 data. Its spread is that of 200 independent particles (the mean over the 5 data of
    var / (one particle's variance / 200) is chi-square(45) / 45 for a correct estimator: it fails above 4,
    probability below 1e-17, or below 0.25, below 1e-7); its mean is the exact ELBO by quadrature over z_0 through
    the flow, and lies below the exact log p(x): z-tests whose standard error is the exact one (one particle's
    variance by quadrature, over 200 particles and 10 draws), or the draws' own if larger, two-sided at
    :data:`~zoo.homework.base.DESIGN_RATE` over the 15 data (a mean above log p(x) by that threshold is above the
    exact ELBO by more, so the bound adds no false alarm)."""
    from zoo.testing import sigmas_for_rate
    x = torch.bernoulli(torch.full((5, 4), 0.5, dtype=torch.float64))
    x[0] = 0.0
    particles, num_draws, flow_hidden = 200, 10, 8
    u, w = problem.gauss_hermite_2d()
    cases, requests = [], []
    for label, num_flows, K in (("no flow, p(z) = N(0, I)", 0, 0), ("two IAF steps, p(z) = N(0, I)", 2, 0),
                                ("one IAF step, a VampPrior of 3 pseudo-inputs", 1, 3)):
        decoder, encoder = _tiny()
        flows = [_net(2, 4, flow_hidden, gain=1.5).double() for _ in range(num_flows)]
        pseudo = torch.rand(K, 4, dtype=torch.float64) if K else None
        what = f"elbo(decoder, encoder, x, num_particles={particles}, flows, pseudo_inputs) ({label})"
        values = problem.elbo_integrand(decoder, encoder, x, u, flows, pseudo)       # [K, B]
        exact_elbo = w @ values
        one = w @ (values - exact_elbo) ** 2
        log_px = _exact_log_px(decoder, encoder, x, pseudo)
        states = [f.state_dict() for f in flows]

        def ask(seeds, decoder=decoder, encoder=encoder, states=states, pseudo=pseudo, what=what):
            return expect_tensor(sub.probe(f"{_PROBES}:elbo_draws", (decoder.state_dict(), encoder.state_dict(), 6),
                                           (states, flow_hidden), pseudo, x, particles, seeds), what,
                                 (len(seeds), x.shape[0]))
        seeds = draw_seeds(num_draws)
        draws = ask(seeds)
        requests.append((ask, seeds, draws, what))
        cases.append((what, draws, log_px, exact_elbo, one))
    assert_replayed(sub, requests)              # one fresh worker for the three cases' draws
    threshold = sigmas_for_rate(DESIGN_RATE / (3 * x.shape[0]))
    gaps = [assert_elbo_draws(what, draws, log_px, exact_elbo, one, particles, threshold,
                              "elbo must be the Monte Carlo average of num_particles fresh particles")
            for what, draws, log_px, exact_elbo, one in cases]
    return f"ELBO matches the quadrature and lies below log p(x) (mean gaps {', '.join(f'{g:.3f}' for g in gaps)})"


# -- 6. active units -----------------------------------------------------------------------------------------------------
#: The variances over the data of the units' means the check sets: none within a factor 3 of the threshold 0.01, and
#: two inactive units whose standard deviation is above it.
_UNIT_VARIANCES = (1e-5, 3e-4, 2e-3, 0.04, 0.3, 1.5)


def _expect_units(reply, what: str, J: int):
    count, variances = expect_sequence(reply, what, 2)
    if isinstance(count, bool) or not isinstance(count, (int, float, torch.Tensor)):
        raise AssertionError(f"{what}: the count is a {type(count).__name__}, expected a number")
    return expect_number(count, f"{what}: the count"), expect_tensor(variances, f"{what}: the variances", (J,))


def check_active_units(sub, ctx) -> str:
    """active_units(encoder, x, 0.01): the variance over the data of each unit's posterior mean and the count above
    0.01, against the exact ones, on an encoder whose units the grader scales; then on the fixed digits model."""
    x_dim, J, hidden, N = 6, len(_UNIT_VARIANCES), 10, 300
    encoder = Encoder(x_dim, J, hidden)
    x = torch.bernoulli(torch.full((N, x_dim), 0.5))
    with torch.no_grad():
        encoder.log_sigma.weight.mul_(0.05)
        encoder.log_sigma.bias.zero_()                                 # posterior scales near 1
        targets = torch.tensor(_UNIT_VARIANCES)[torch.randperm(J)]
        scale = (targets / encoder(x)[0].var(0)).sqrt()
        encoder.mu.weight.mul_(scale.unsqueeze(1))
        encoder.mu.bias.mul_(scale)
        exact = encoder(x)[0].double().var(0)
    what = "active_units(encoder, x, threshold=0.01)"
    count, variances = _expect_units(sub.probe(f"{_PROBES}:active_units_of", encoder.state_dict(), x_dim, J, hidden, x,
                                               0.01), what, J)
    off = (variances - exact).abs() / exact
    if float(off.max()) > 1.0 / (N - 1) + 1e-3:                    # the 1/N or the 1/(N-1) variance
        j = int(off.argmax())
        raise AssertionError(f"{what}: unit {j}'s variance is {float(variances[j]):.4g}, the variance over the data of "
                             f"its posterior mean mu_{j}(x) is {float(exact[j]):.4g} (Cov_x(E_q[u|x]): of the means, "
                             f"not of samples of z)")
    exact_count = int((exact > 0.01).sum())
    if count != exact_count:
        raise AssertionError(f"{what} counts {count:g} active units, the exact count is {exact_count} (variances "
                             f"{', '.join(f'{v:.2g}' for v in exact.tolist())}; a unit is active when its variance, "
                             f"not its standard deviation, exceeds the threshold)")
    decoder, fixed = problem.fixed_model()
    _, x_test = problem.digits()
    with torch.no_grad():
        exact = fixed(x_test)[0].double().var(0)
    count, variances = _expect_units(sub.probe(f"{_PROBES}:active_units_of", fixed.state_dict(), 64, 2, fixed.net[0].out_features,
                                               x_test, 0.01), f"{what} on the digits model", 2)
    if count != int((exact > 0.01).sum()) or float(((variances - exact).abs() / exact).max()) > 1.0 / (len(x_test) - 1) + 1e-3:
        raise AssertionError(f"{what} on the fixed digits model: {count:g} active units, variances "
                             f"{variances.tolist()}, where the exact ones are {exact.tolist()}")
    return (f"{exact_count} of {J} units active, as exact; the fixed digits model: {count:g} of 2 active (variances "
            f"{', '.join(f'{v:.3g}' for v in exact.tolist())})")


# -- 7. what the IAF buys on the fixed model -------------------------------------------------------------------------------
def _fit_start(x_dim: int):
    """The flows the fit starts from: Kingma et al.'s gate bias (sigma = sigmoid(2)), small shift and scale weights."""
    flows = []
    for _ in range(FIT_FLOWS):
        net = _net(2, x_dim, 32)
        with torch.no_grad():
            net.scale.weight.mul_(0.01)
            net.scale.bias.fill_(2.0)
            net.shift.weight.mul_(0.01)
            net.context.weight.mul_(0.1)
        flows.append(net)
    return flows


def _load_flows(reply, start):
    if not isinstance(reply, list) or len(reply) != len(start):
        raise AssertionError(f"the fitted flows came back malformed (expected {len(start)} dicts of parameters)")
    flows = []
    for k, (state, net) in enumerate(zip(reply, start)):
        expected = dict(net.named_parameters())
        if not isinstance(state, dict) or set(state) != set(expected):
            raise AssertionError(f"the fitted flow {k}'s parameters came back malformed")
        fitted = AutoregressiveNet(net.dim, net.context_dim, net.hidden)
        fitted.hidden_degrees.copy_(net.hidden_degrees)             # the grader's degrees, whatever came back
        with torch.no_grad():
            for name, p in fitted.named_parameters():
                p.copy_(expect_tensor(state[name], f"the fitted flow {k}'s {name}", tuple(expected[name].shape)).float())
        flows.append(fitted)
    return flows


def check_iaf_closes_the_gap(sub, ctx) -> str:
    """fit_iaf on 200 test digits under the fixed model; then, with the grader's exact ELBOs, the IAF guide's gap to
    log p(x) is smaller than the factorised guide's by more than z standard errors of the mean difference over the
    digits (z one-sided at DESIGN_RATE)."""
    from statistics import NormalDist
    decoder, encoder = problem.fixed_model()
    _, x_test = problem.digits()
    x = x_test[torch.randperm(len(x_test))[:FIT_DIGITS]]
    start = _fit_start(x.shape[1])
    reply = sub.probe(f"{_PROBES}:fit_flows", (decoder.state_dict(), encoder.state_dict(), decoder.net[0].out_features),
                      ([f.state_dict() for f in start], 32), x, (FIT_STEPS, FIT_LR, FIT_PARTICLES))
    flows = _load_flows(reply, start)
    factorised = problem.exact_elbo(decoder, encoder, x)
    iaf = problem.exact_elbo(decoder, encoder, x, flows)
    gain = iaf - factorised                                        # = gap(factorised) - gap(IAF), per digit
    mean, stderr = float(gain.mean()), float(gain.std()) / math.sqrt(len(gain))
    if not (math.isfinite(mean) and math.isfinite(stderr)):
        raise AssertionError("the ELBO of the IAF guide with the fitted flows is nan or inf (weights that overflow?)")
    z = NormalDist().inv_cdf(1.0 - DESIGN_RATE)
    log_px, log_px_se = problem.importance_log_px(decoder, encoder, x, IS_SAMPLES,
                                                  generator=torch.Generator().manual_seed(ctx.seed % 2 ** 31))
    gap_f, gap_i = float((log_px - factorised).mean()), float((log_px - iaf).mean())
    report = (f"gap to log p(x) ({float(log_px.mean()):.3f} +- {float(log_px_se.pow(2).sum().sqrt()) / len(x):.3f} "
              f"nats/digit by IS): factorised {gap_f:.3f}, IAF {gap_i:.3f}; the IAF buys {mean:.3f} +- {stderr:.3f} "
              f"nats/digit of ELBO")
    if mean < z * stderr:
        raise AssertionError(f"after fit_iaf the IAF guide's gap is not smaller than the factorised guide's: {report} "
                             f"({mean / stderr:.1f} standard errors, needed {z:.2f}); does fit_iaf maximize the ELBO of "
                             f"the flows, and does elbo subtract their log-determinants from log q?")
    return report


# -- 8. what the VampPrior buys on the digits ----------------------------------------------------------------------------
#: The test digits, particles and draws of ``vamp_prior_buys``.
VAMP_DIGITS, VAMP_PARTICLES, VAMP_DRAWS = 100, 20, 5


@functools.lru_cache(maxsize=1)
def _two_models_compared() -> tuple:
    """What the VampPrior buys, the grader's own figures of its two fixed models (N(0, I) and the VampPrior; no
    submission enters them): per digit, the exact ELBO, log p(x) by importance sampling and the active units, on a
    fixed set of VAMP_DIGITS test digits. The same at every grade, so computed once per process (they were 70 % of
    the check's time when recomputed at each grade's digits)."""
    decoder, encoder, pseudo = problem.fixed_vamp_model()
    _, x_test = problem.digits()
    x = x_test[torch.randperm(len(x_test), generator=torch.Generator().manual_seed(0))[:VAMP_DIGITS]].double()
    figures = []
    generator = torch.Generator().manual_seed(0)
    for label, (dec, enc, u_k) in (("N(0, I)", (*problem.fixed_model(), None)),
                                   (f"VampPrior ({len(pseudo)} pseudo-inputs)", (decoder, encoder, pseudo))):
        elbo = problem.exact_elbo(dec, enc, x, pseudo_inputs=u_k)
        log_px, _ = problem.importance_log_px(dec, enc, x, IS_SAMPLES, generator, pseudo_inputs=u_k)
        with torch.no_grad():
            variances = enc(x.float())[0].double().var(0)
        figures.append((label, float(elbo.mean()), float(log_px.mean()), int((variances > 0.01).sum())))
    return tuple(figures)


def check_vamp_prior_buys(sub, ctx) -> str:
    """elbo(decoder, encoder, x, 20, pseudo_inputs=u) on the VAE the kit trained with a VampPrior of 25 pseudo-inputs,
    at 100 test digits, 5 draws: the mean of the draws over the digits is the exact average ELBO (quadrature), a
    two-sided z-test at DESIGN_RATE whose standard error is the exact one (each digit's one-particle variance by
    quadrature, over 20 particles and 5 draws) or the draws' own if larger. The output compares the two fixed models
    (:func:`_two_models_compared`)."""
    from zoo.testing import sigmas_for_rate
    decoder, encoder, pseudo = problem.fixed_vamp_model()
    _, x_test = problem.digits()
    x = x_test[torch.randperm(len(x_test))[:VAMP_DIGITS]].double()
    u, w = problem.gauss_hermite_2d()
    values = torch.cat([problem.elbo_integrand(decoder, encoder, x[i:i + 50], u, (), pseudo) for i in range(0, len(x), 50)],
                       1)                                                          # [K, B]
    exact = w @ values
    one = w @ (values - exact) ** 2
    what = (f"elbo(decoder, encoder, x, num_particles={VAMP_PARTICLES}, pseudo_inputs=u) on the digits model trained "
            f"with a VampPrior")
    hidden = decoder.net[0].out_features

    def ask(seeds):
        return expect_tensor(sub.probe(f"{_PROBES}:elbo_draws", (decoder.state_dict(), encoder.state_dict(), hidden),
                                       ([], 32), pseudo.double(), x, VAMP_PARTICLES, seeds), what, (len(seeds), len(x)))
    seeds = draw_seeds(VAMP_DRAWS)
    draws = ask(seeds)
    assert_replayed(sub, [(ask, seeds, draws, what)])
    mean = float(draws.mean())
    exact_se = math.sqrt(float(one.sum()) / (VAMP_PARTICLES * VAMP_DRAWS)) / len(x)
    own_se = float(draws.mean(1).std()) / math.sqrt(VAMP_DRAWS)
    stderr = max(exact_se, own_se)
    threshold = sigmas_for_rate(DESIGN_RATE)
    z = (mean - float(exact.mean())) / stderr
    if abs(z) > threshold:
        raise AssertionError(f"{what}: its average over {len(x)} test digits is {mean:.4f}, the exact ELBO (quadrature) "
                             f"{float(exact.mean()):.4f}: {z:+.1f} standard errors (threshold {threshold:.2f}); is "
                             f"log p(z) the VampPrior's, logsumexp over the pseudo-inputs minus log K?")
    figures = _two_models_compared()
    (_, elbo_n, log_px_n, au_n), (label, elbo_v, log_px_v, au_v) = figures
    return (f"your ELBO {mean:.3f} (exact {float(exact.mean()):.3f}, {z:+.1f} SE); per digit, N(0, I): ELBO {elbo_n:.3f}, "
            f"log p(x) {log_px_n:.3f}, gap {log_px_n - elbo_n:.3f}, {au_n} of 2 units active; {label}: ELBO "
            f"{elbo_v:.3f}, log p(x) {log_px_v:.3f}, gap {log_px_v - elbo_v:.3f}, {au_v} of 2 active: the VampPrior "
            f"buys {log_px_v - log_px_n:+.3f} nats of log p(x)")
