"""The graded checks of homework 1 (the Bernoulli VAE by SVI), run in the grader's process.

Each check is ``check(sub, ctx)``: it builds its own networks (the starter's :class:`Decoder` and
:class:`Encoder`, with weights drawn from ``ctx.seed``, a secret per grade unless the instructor
fixes ``--seed``), sends their weights and its inputs to the worker, gets values back (a Pyro
trace's sample sites, Monte Carlo draws and gradients, trained weights; see
:mod:`zoo.homework.bernoulli_vae.probes`), validates them and decides with its own code. It fails
with a one-line ``AssertionError``. What each one certifies:

- ``kl_closed_form``: ``kl_normal`` = KL(N(mu, diag sigma^2) || N(0, I)), against torch's
  ``kl_divergence`` of the two Normals in float64, to float32 rounding (deterministic: a Monte Carlo estimate's
  5 standard errors would let a KL off by 0.1 pass).
- ``model_matches_story``: the trace of ``model`` is p(z) p_theta(x|z): z ~ N(0, I) with event
  shape (z_dim,), x ~ Bernoulli(logits = decoder(z)) observed, both in the plate "data" of size N
  subsampled to idx (so scaled by N / B), and the decoder registered with ``pyro.module``.
- ``amortized_guide``: the trace of ``amortized_guide`` is N(mu_phi(x), diag exp(log sigma_phi(x))^2)
  from the encoder at this x, reparameterized, in the same plate, the encoder registered.
- ``meanfield_guide``: ``meanfield_guide`` keeps one row of parameters per datum ([N, z_dim]) and
  datum n gets row n whatever minibatch it is in.
- ``reconstruction_unbiased``: ``reconstruction`` and its gradient with respect to every encoder
  and decoder parameter are unbiased for the exact E_q[log p_theta(x|z)] and its gradient, which a
  40 x 40 Gauss-Hermite quadrature gives for a 2-d latent (``zoo.testing.assert_unbiased``).
- ``elbo_lower_bound``: on a 4-pixel model with a 2-d latent, where log p(x) = log E_p(z) p(x|z)
  is exact by quadrature, ``elbo`` matches the exact ELBO and lies below log p(x), for three encoders: z-tests
  whose standard error is the exact one of 200 particles (by quadrature), not one estimated from 10 draws.
- ``train_amortized``: the worker runs SVI (Pyro's ``TraceMeanField_ELBO``, the KL in closed form)
  on the student's ``model`` and ``amortized_guide`` over the binarized 8x8 digits and returns the
  trained weights; the grader loads them into its own networks and computes the test ELBO with
  the zoo's harness on *its own* model and guide (:class:`_ReferenceVAE`): it must reach
  :data:`ELBO_TARGET`. A number the submission reports counts for nothing. The weights are kept
  (``ctx.cache``) for the next check, across a worker restart.
- ``amortization_gap`` (hidden): the worker fits the student's per-datum guide to the test digits
  under their model with that decoder frozen and returns q(z_n) = N(loc_n, scale_n^2); the
  per-datum ELBO, computed here, must reach at least the amortized one minus :data:`GAP_SLACK`;
  the output reports the amortization gap ELBO(per-datum) - ELBO(amortized).

False alarms: each check's statistical tests share :data:`~zoo.homework.base.DESIGN_RATE` (Bonferroni), a quarter of
the 1e-4 per check that ``zoo/homework/INSTRUCTORS.md`` states; the trace checks and the KL are deterministic; the
two training checks' margins (the target ELBO, the gap's slack) are measured over 1000 trainings by
``benchmarks/homework_seed_sweep.py``.
"""
from __future__ import annotations

import math

import numpy as np
import pyro
import pyro.distributions as dist
import torch
from torch import nn

from zoo.homework.base import (DESIGN_RATE, assert_elbo_draws, assert_replayed, assert_total_variance, draw_seeds, expect_number,
                               expect_tensor)
from zoo.homework.bernoulli_vae.starter import Decoder, Encoder

#: The test ELBO (nats per 64-pixel digit) the amortized VAE must reach.
ELBO_TARGET = -23.5
#: How far below the amortized test ELBO the per-datum guide may end (nats per datum).
GAP_SLACK = 1.0
#: Training of the graded run: epochs of minibatches of 100 on the 1257 training digits.
EPOCHS, BATCH, LR, Z_DIM, HIDDEN = 15, 100, 2e-2, 2, 64
_PROBES = "zoo.homework.bernoulli_vae.probes"


# -- 1. the closed-form KL ---------------------------------------------------------------------
def check_kl_closed_form(sub, ctx) -> str:
    """kl_normal(mu, log_sigma) [B] is KL(N(mu, diag sigma^2) || N(0, I)), summed over the last dimension: compared
    with torch's own ``kl_divergence`` of the two Normals in float64 (another implementation of the closed form),
    to float32 rounding. Deterministic."""
    from zoo.testing import assert_close
    B, J = 16, 3
    mu = 1.5 * torch.randn(B, J)
    log_sigma = torch.empty(B, J).uniform_(-1.5, 1.0)
    kl = expect_tensor(sub.call("kl_normal", mu, log_sigma),
                       "kl_normal(mu, log_sigma) with mu, log_sigma of shape [16, 3]", (B,))
    exact = torch.distributions.kl_divergence(torch.distributions.Normal(mu.double(), log_sigma.double().exp()),
                                              torch.distributions.Normal(0.0, 1.0)).sum(-1)
    return assert_close(kl, exact, atol=1e-4, rtol=1e-5, what="kl_normal")


# -- 2. the model --------------------------------------------------------------------------------
def _sites(reply, what: str):
    if not isinstance(reply, dict) or not isinstance(reply.get("sites"), dict) or \
            not isinstance(reply.get("registered"), list):
        raise AssertionError(f"the trace of {what} came back malformed")
    return reply["sites"], reply["registered"]


def _site(sites, name: str, what: str):
    site = sites.get(name)
    keys = {"observed", "value", "log_prob", "plate", "scale", "has_rsample", "requires_grad"}
    if site is None:
        raise AssertionError(f"{what} has no sample site {name!r} (it has {sorted(sites)})")
    if not isinstance(site, dict) or set(site) != keys or not isinstance(site["log_prob"], list):
        raise AssertionError(f"the summary of site {name!r} of {what} came back malformed")
    return site


def _log_prob(site, k: int, name: str, what: str, B: int, expected, meaning: str, event: str):
    got = site["log_prob"][k] if k < len(site["log_prob"]) else None
    if got is None:
        raise AssertionError(f"{what}: {meaning} could not be evaluated at a point of shape [B, ...]")
    got = expect_tensor(got, f"{what}: {meaning}", finite=False)
    if tuple(got.shape) != (B,):
        raise AssertionError(f"{what}: {meaning} has shape {tuple(got.shape)}, expected [B] = [{B}] "
                             f"(declare the {event} as an event: .to_event(1))")
    if not torch.allclose(got, expected.double(), atol=1e-4):
        return float((got - expected.double()).abs().max())
    return None


def _check_plate(site, name: str, what: str, N: int, B: int) -> None:
    if site["plate"] is None:
        raise AssertionError(f"{what}: site {name!r} is not inside pyro.plate('data', N, subsample=idx)")
    if site["plate"] != N:
        raise AssertionError(f"{what}: the plate 'data' has size {site['plate']}, expected N = {N} "
                             f"(pyro.plate('data', N, subsample=idx))")
    scale = expect_number(site["scale"], f"{what}: the scale of site {name!r}")
    if not math.isclose(scale, N / B, rel_tol=1e-6):
        raise AssertionError(f"{what}: site {name!r} is scaled by {scale:g}, expected N / B = "
                             f"{N / B:g} (subsample the plate with idx so the minibatch stands for all N data)")


def _check_registered(registered, module: nn.Module, what: str, role: str) -> None:
    missing = [n for n, _ in module.named_parameters() if n not in registered]
    if missing:
        raise AssertionError(f"{what} does not register the {role}'s parameters ({missing[0]}, ...): "
                             f"call pyro.module({role!r}, {role}) so that SVI trains them")


def check_model(sub, ctx) -> str:
    D, J, N, B = 6, 2, 20, 5
    decoder = Decoder(J, D, hidden=8)
    x = torch.bernoulli(torch.full((B, D), 0.4))
    idx = torch.randperm(N)[:B].sort().values
    probe = torch.randn(B, J) * 2.0
    what = "model(decoder, x, idx, N)"
    sites, registered = _sites(sub.probe(f"{_PROBES}:trace_sites", "model", "decoder", J, 8,
                                         decoder.state_dict(), (x, idx, N), {"z": [probe]}), what)
    z_site, x_site = _site(sites, "z", what), _site(sites, "x", what)
    if z_site["observed"]:
        raise AssertionError(f"{what}: 'z' is observed; it is the latent")
    if not x_site["observed"] or not torch.equal(expect_tensor(x_site["value"], f"{what}: x", finite=False),
                                                 x.double()):
        raise AssertionError(f"{what}: 'x' must be observed, obs=x")
    z = expect_tensor(z_site["value"], f"{what}: z")
    if tuple(z.shape) != (B, J):
        raise AssertionError(f"{what}: z has shape {tuple(z.shape)}, expected [B, z_dim] = [{B}, {J}]")
    z = z.float()
    prior = dist.Normal(torch.zeros(J), 1.0).to_event(1)
    for k, point in enumerate((z, probe)):
        off = _log_prob(z_site, k, "z", what, B, prior.log_prob(point), "log p(z)", "z_dim dimensions")
        if off is not None:
            raise AssertionError(f"{what}: p(z) is not N(0, I): log p(z) differs from the standard normal's by "
                                 f"{off:.3g}")
    with torch.no_grad():
        likelihood = dist.Bernoulli(logits=decoder(z)).to_event(1).log_prob(x)
    off = _log_prob(x_site, 0, "x", what, B, likelihood, "log p(x|z)", "pixels")
    if off is not None:
        raise AssertionError(f"{what}: p(x|z) is not Bernoulli(logits=decoder(z)): log p(x|z) is off by "
                             f"{off:.3g} (the decoder returns logits)")
    for name, site in (("z", z_site), ("x", x_site)):
        _check_plate(site, name, what, N, B)
    _check_registered(registered, decoder, what, "decoder")
    return "p(z) = N(0, I), p(x|z) = Bernoulli(logits = f(z)), scaled by N / B"


# -- 3. the guides -------------------------------------------------------------------------------
def check_amortized_guide(sub, ctx) -> str:
    D, J, N, B = 6, 3, 20, 4
    encoder = Encoder(D, J, hidden=8)
    x = torch.bernoulli(torch.full((B, D), 0.5))
    x[0] = 0.0
    x[1] = 1.0
    idx = torch.randperm(N)[:B].sort().values
    with torch.no_grad():
        mu, log_sigma = encoder(x)
    probe = mu + torch.randn(B, J)
    what = "amortized_guide(encoder, x, idx, N)"
    sites, registered = _sites(sub.probe(f"{_PROBES}:trace_sites", "amortized_guide", "encoder", J, 8,
                                         encoder.state_dict(), (x, idx, N), {"z": [probe]}), what)
    site = _site(sites, "z", what)
    z = expect_tensor(site["value"], f"{what}: z")
    if tuple(z.shape) != (B, J):
        raise AssertionError(f"{what}: z has shape {tuple(z.shape)}, expected [B, z_dim] = [{B}, {J}]")
    q = dist.Normal(mu, log_sigma.exp()).to_event(1)
    for k, point in enumerate((z.float(), probe)):
        off = _log_prob(site, k, "z", what, B, q.log_prob(point), "log q(z|x)", "z_dim dimensions")
        if off is not None:
            raise AssertionError(f"{what}: q(z|x) is not N(mu(x), diag exp(log_sigma(x))^2) from encoder(x): "
                                 f"log q differs by {off:.3g}")
    if site["has_rsample"] is not True or site["requires_grad"] is not True:
        raise AssertionError(f"{what}: z is not reparameterized (no gradient flows from z to the encoder)")
    _check_plate(site, "z", what, N, B)
    _check_registered(registered, encoder, what, "encoder")
    return "q(z|x) = N(mu(x), diag sigma(x)^2), reparameterized, scaled by N / B"


def check_meanfield_guide(sub, ctx) -> str:
    D, J, N = 5, 3, 10
    x_all = torch.bernoulli(torch.full((N, D), 0.5))
    what = "meanfield_guide(z_dim, x, idx, N)"
    order = torch.randperm(N)
    first, idx_a, idx_b = order[:3], order[3:6], torch.stack([order[5], order[6]])   # idx_a[2] == idx_b[0]
    probe = torch.randn(J)
    reply = sub.probe(f"{_PROBES}:meanfield_rows", J, x_all, N, first, idx_a, idx_b, probe)
    if not isinstance(reply, dict) or set(reply) != {"first", "param_shapes", "log_q_a", "log_q_b"}:
        raise AssertionError(f"the trace of {what} came back malformed")
    site = _site({"z": reply["first"]}, "z", what)
    z = expect_tensor(site["value"], f"{what}: z")
    if tuple(z.shape) != (3, J):
        raise AssertionError(f"{what}: z has shape {tuple(z.shape)}, expected [B, z_dim] = [3, {J}]")
    shapes = reply["param_shapes"]
    if not isinstance(shapes, list) or not any(isinstance(s, list) and s[:1] == [N] for s in shapes):
        raise AssertionError(f"{what}: no pyro.param with one row per datum (shape [N, z_dim]); the per-datum "
                             f"guide has free parameters for each of the N data")
    if site["has_rsample"] is not True or site["requires_grad"] is not True:
        raise AssertionError(f"{what}: z is not reparameterized on the per-datum parameters")
    _check_plate(site, "z", what, N, 3)
    qa = expect_tensor(reply["log_q_a"], f"{what}: log q", (3,))
    qb = expect_tensor(reply["log_q_b"], f"{what}: log q", (2,))
    if not torch.allclose(qa[2], qb[0], atol=1e-5):
        raise AssertionError(f"{what}: datum {int(idx_a[2])} gets a different q in two minibatches; index the "
                             f"per-datum parameters by idx (q_loc[idx]), not by position in the minibatch")
    if torch.allclose(qa[0], qa[1], atol=1e-6) or torch.allclose(qa[1], qb[1], atol=1e-6):
        raise AssertionError(f"{what}: different data share one q; each datum needs its own row of parameters")
    return "one row of parameters per datum, indexed by idx"


# -- 4. the reparameterized reconstruction term --------------------------------------------------
def _gauss_hermite_2d(n: int = 40):
    """Nodes [n*n, 2] and weights [n*n] with sum_k w_k f(u_k) ~= E_{u ~ N(0, I_2)} f(u)."""
    t, w = np.polynomial.hermite_e.hermegauss(n)
    w = w / w.sum()
    u = torch.tensor(np.stack(np.meshgrid(t, t, indexing="ij"), -1).reshape(-1, 2), dtype=torch.float64)
    weights = torch.tensor(np.outer(w, w).reshape(-1), dtype=torch.float64)
    return u, weights


def _exact_reconstruction(decoder, mu, log_sigma, x):
    """E_{z ~ N(mu, sigma^2)} log p(x|z) per datum by quadrature (differentiable in mu, sigma, theta)."""
    u, w = _gauss_hermite_2d()
    z = mu.unsqueeze(0) + log_sigma.exp().unsqueeze(0) * u.unsqueeze(1)          # [K, B, 2]
    log_px = dist.Bernoulli(logits=decoder(z)).log_prob(x).sum(-1)               # [K, B]
    return (w.unsqueeze(1) * log_px).sum(0)


def _exact_particle_variance(decoder, mu, log_sigma, x):
    """Var_{z ~ N(mu, sigma^2)} log p(x|z) per datum by quadrature: the variance of one particle."""
    u, w = _gauss_hermite_2d()
    z = mu.unsqueeze(0) + log_sigma.exp().unsqueeze(0) * u.unsqueeze(1)          # [K, B, 2]
    log_px = dist.Bernoulli(logits=decoder(z)).log_prob(x).sum(-1)               # [K, B]
    mean = (w.unsqueeze(1) * log_px).sum(0)
    return (w.unsqueeze(1) * (log_px - mean) ** 2).sum(0)


def _tiny(D: int = 4, hidden: int = 6):
    """Small float64 networks (a 2-d latent, so quadrature is exact), drawn from torch's RNG (the check's seed)."""
    decoder, encoder = Decoder(2, D, hidden).double(), Encoder(D, 2, hidden).double()
    with torch.no_grad():
        encoder.log_sigma.bias.fill_(-0.7)
    return decoder, encoder


def check_reconstruction_unbiased(sub, ctx) -> str:
    """reconstruction(decoder, encoder, x, 3) and its gradient in every decoder and encoder parameter are unbiased
    for the exact E_q[log p(x|z)] and its gradient (a 40 x 40 Gauss-Hermite quadrature), with the variance of 3
    independent particles, from 400 draws: two tests, each at half of :data:`~zoo.homework.base.DESIGN_RATE`."""
    from zoo.testing import assert_unbiased, gradient_of, sigmas_for_rate
    decoder, encoder = _tiny()
    x = torch.bernoulli(torch.full((4, 4), 0.5, dtype=torch.float64))
    params = list(decoder.parameters()) + list(encoder.parameters())
    with torch.no_grad():
        exact_value = _exact_reconstruction(decoder, *encoder(x), x)
    exact_grad = gradient_of(lambda: _exact_reconstruction(decoder, *encoder(x), x).sum(), params)
    what = "reconstruction(decoder, encoder, x, num_particles=3)"
    n = 400

    def ask(seeds, decoder_state=None, label=what):
        """The draws of ``seeds``, values and gradients side by side [len(seeds), B + P]."""
        state = decoder.state_dict() if decoder_state is None else decoder_state
        reply = sub.probe(f"{_PROBES}:reconstruction_draws", state, encoder.state_dict(), 6, x, 3, seeds)
        if isinstance(reply, dict) and set(reply) == {"value"}:
            expect_tensor(reply["value"], label, (4,))
        if not isinstance(reply, dict) or set(reply) != {"values", "gradients"}:
            raise AssertionError(f"the draws of {label} came back malformed")
        return torch.cat([expect_tensor(reply["values"], label, (len(seeds), 4)),
                          expect_tensor(reply["gradients"], f"the gradient of {label}",
                                        (len(seeds), exact_grad.numel()))], 1)

    seeds = draw_seeds(n)
    draws = ask(seeds)
    assert_replayed(sub, [(ask, seeds, draws, what)])
    values = draws[:, :4]
    rows = iter(draws)
    rate = DESIGN_RATE / 3                      # three tests: the mean (11 directions), each block's and the variance
    blocks = _assert_blocks_unbiased(draws[:, 4:], exact_grad, [p.numel() for p in params], what,
                                     sigmas_for_rate(rate / len(params)))
    try:
        summary = assert_unbiased(lambda: next(rows), torch.cat([exact_value, exact_grad]), num_samples=n,
                                  sigmas=sigmas_for_rate(rate), seed=ctx.seed % 2 ** 31)
    except AssertionError as e:
        raise AssertionError(f"{what} or its gradient is biased against the exact quadrature: {e}") from None
    with torch.no_grad():                       # S = 3 independent particles: a third of one particle's variance
        exact_variance = float(_exact_particle_variance(decoder, *encoder(x), x).sum()) / 3
    variance = assert_total_variance(values, exact_variance, what, sigmas=sigmas_for_rate(rate),
                                     hint=": does it average num_particles independent particles?")
    # large logits (the decoder's weights x 1000): log(sigmoid(l)) computed naively is log(0) = -inf there,
    # Bernoulli(logits=l).log_prob (a softplus) is finite
    large = {name: 1000.0 * value for name, value in decoder.state_dict().items()}
    ask(draw_seeds(2), large, f"{what} at logits of order 1e3 (log(sigmoid(l)) computed naively?)")
    return f"{summary}; {blocks}; {variance}; finite at logits of order 1e3"


def _assert_blocks_unbiased(gradients, exact_grad, sizes, what: str, sigmas: float) -> str:
    """The mean of the gradient draws along each parameter tensor's exact gradient (a unit vector in that tensor's
    coordinates, zero elsewhere) is that gradient's norm: a z-test per tensor at ``sigmas`` (Bonferroni over the
    tensors). A term missing from one tensor's gradient (the scale of the reparameterized sample detached leaves the
    log sigma head's expected gradient 0) is a bias of that tensor's full norm along its direction, where a random
    direction of the 11 sees about 1/sqrt(P) of it."""
    worst, worst_name = 0.0, ""
    start = 0
    for index, size in enumerate(sizes):
        block = slice(start, start + size)
        start += size
        norm = float(exact_grad[block].norm())
        if norm < 1e-12:
            continue
        projection = (gradients[:, block] - exact_grad[block]) @ (exact_grad[block] / norm)
        error = float(projection.std()) / math.sqrt(len(projection))
        z = float(projection.mean()) / max(error, 1e-12 * norm)
        if abs(z) > abs(worst):
            worst, worst_name = z, f"parameter tensor {index}"
        if abs(z) > sigmas:
            raise AssertionError(f"the gradient of {what} is biased along the exact gradient of its {worst_name}: "
                                 f"mean {float(projection.mean()) + norm:.4g} where it is {norm:.4g} ({z:+.1f} "
                                 f"standard errors, threshold {sigmas:.2f}): is every path to the parameters kept "
                                 f"(the reparameterized sample's scale not detached)?")
    return f"each parameter tensor's exact gradient direction within {abs(worst):.2f} of {sigmas:.2f} standard errors"


# -- 5. the ELBO is a lower bound ----------------------------------------------------------------
def _elbo_asker(sub, decoder_state, encoder_state, x, what: str):
    """``ask(seeds)``: the student's ELBO draws [len(seeds), B] of these networks, one per seed (validated)."""
    return lambda seeds: expect_tensor(sub.probe(f"{_PROBES}:elbo_draws", decoder_state, encoder_state, 6, x, 200,
                                                 seeds), what, (len(seeds), x.shape[0]))


def check_elbo_lower_bound(sub, ctx) -> str:
    """elbo(decoder, encoder, x, 200) is the Monte Carlo ELBO with 200 particles: on a 4-pixel model with a 2-d
    latent, for three encoders, 10 draws per datum. Its spread is that of 200 independent particles (the mean over
    the 5 data of var / (one particle's variance / 200) is chi-square(45) / 45 for a correct estimator: it fails
    above 4, probability below 1e-17, or below 0.25, below 1e-7); its mean is the exact ELBO by quadrature and lies
    below the exact log p(x): z-tests of the 10 draws' mean whose standard error is the exact one (one particle's
    variance by quadrature, over 200 particles and 10 draws), or the draws' own if larger, two-sided at
    :data:`~zoo.homework.base.DESIGN_RATE` over the 15 data (a mean above log p(x) by that threshold is above the
    exact ELBO by more, so the bound adds no false alarm)."""
    from zoo.testing import sigmas_for_rate
    x = torch.bernoulli(torch.full((5, 4), 0.5, dtype=torch.float64))
    x[0] = 0.0
    particles, num_draws = 200, 10
    what = f"elbo(decoder, encoder, x, num_particles={particles})"
    cases, requests = [], []
    for k in range(3):
        decoder, encoder = _tiny()
        with torch.no_grad():
            u, w = _gauss_hermite_2d()
            log_px_z = dist.Bernoulli(logits=decoder(u)).log_prob(x.unsqueeze(1)).sum(-1)     # [B, K]
            log_px = torch.logsumexp(log_px_z + w.log(), -1)                                   # exact log p(x)
            mu, log_sigma = encoder(x)
            kl = torch.distributions.kl_divergence(dist.Normal(mu, log_sigma.exp()), dist.Normal(0.0, 1.0)).sum(-1)
            exact_elbo = _exact_reconstruction(decoder, mu, log_sigma, x) - kl
            one = _exact_particle_variance(decoder, mu, log_sigma, x)
        ask = _elbo_asker(sub, decoder.state_dict(), encoder.state_dict(), x, what)
        seeds = draw_seeds(num_draws)
        draws = ask(seeds)
        requests.append((ask, seeds, draws, f"{what} (encoder {k + 1} of 3)"))
        cases.append((draws, log_px, exact_elbo, one))
    assert_replayed(sub, requests)              # one fresh worker for the three encoders' draws
    threshold = sigmas_for_rate(DESIGN_RATE / (3 * x.shape[0]))
    gaps = [assert_elbo_draws(f"{what} (encoder {k + 1} of 3)", draws, log_px, exact_elbo, one, particles, threshold,
                              "elbo must be the Monte Carlo reconstruction with num_particles fresh particles per "
                              "call, minus kl_normal")
            for k, (draws, log_px, exact_elbo, one) in enumerate(cases)]
    return f"ELBO matches the quadrature and lies below log p(x) (mean gaps {', '.join(f'{g:.3f}' for g in gaps)})"


# -- 6. training on the digits -------------------------------------------------------------------
class _ReferenceVAE(nn.Module):
    """The grader's own model and amortized guide (the handout's equations) around trained networks, as one
    nn.Module for zoo.from_pyro: the test ELBO is computed with this, never with the student's code."""

    def __init__(self, decoder: Decoder, encoder: Encoder):
        super().__init__()
        self.decoder, self.encoder = decoder, encoder

    def model(self, x, idx=None, N=None):
        pyro.module("decoder", self.decoder)
        with pyro.plate("data", N, subsample=idx):
            z = pyro.sample("z", dist.Normal(torch.zeros(Z_DIM), 1.0).to_event(1))
            pyro.sample("x", dist.Bernoulli(logits=self.decoder(z)).to_event(1), obs=x)

    def guide(self, x, idx=None, N=None):
        pyro.module("encoder", self.encoder)
        mu, log_sigma = self.encoder(x)
        with pyro.plate("data", N, subsample=idx):
            pyro.sample("z", dist.Normal(mu, log_sigma.exp()).to_event(1))


class _Guide(nn.Module):
    """A guide callable for the zoo's harness (which switches modules to eval mode)."""

    def __init__(self, fn, *modules):
        super().__init__()
        self.fn, self.parts = fn, nn.ModuleList(modules)

    def forward(self, x, idx=None, N=None):
        return self.fn(x, idx, N)


def _digits():
    from zoo.data import load_digits
    data = load_digits()
    return data.train, data.test


def _load(kind: str, state, x_dim: int):
    net = Decoder(Z_DIM, x_dim) if kind == "decoder" else Encoder(x_dim, Z_DIM)
    expected = net.state_dict()
    if not isinstance(state, dict) or set(state) != set(expected):
        raise AssertionError(f"the trained {kind}'s weights came back malformed")
    net.load_state_dict({k: expect_tensor(v, f"the trained {kind}'s {k}", tuple(expected[k].shape)).float()
                         for k, v in state.items()})
    return net


def _trained_vae(sub, ctx):
    """The student's VAE trained on the digits in the worker, evaluated here; kept in ``ctx.cache``."""
    if "trained" not in ctx.cache:
        import zoo
        x_train, x_test = _digits()
        reply = sub.probe(f"{_PROBES}:train_amortized", x_train, Z_DIM, HIDDEN, EPOCHS, BATCH, LR)
        if not isinstance(reply, dict) or set(reply) != {"decoder", "encoder"}:
            raise AssertionError("the trained networks came back malformed")
        decoder, encoder = _load("decoder", reply["decoder"], x_train.shape[1]), \
            _load("encoder", reply["encoder"], x_train.shape[1])
        vae = _ReferenceVAE(decoder, encoder)
        zoo_model = zoo.from_pyro(vae, x_train.shape[1], name="student_vae")
        pyro.clear_param_store()
        result = zoo.evaluate(zoo_model, _Guide(vae.guide, vae), x_test, num_samples=100, iwae_k=10, psis=False)
        ctx.cache["trained"] = (decoder, encoder, result)
    return ctx.cache["trained"]


def check_train_amortized(sub, ctx) -> str:
    _, _, result = _trained_vae(sub, ctx)
    elbo, log_px = result["elbo"], result["log_likelihood"]
    if not math.isfinite(elbo):
        raise AssertionError("the test ELBO after training is nan or inf")
    if elbo < ELBO_TARGET:
        raise AssertionError(f"after SVI ({EPOCHS} epochs on the digits) the test ELBO is {elbo:.2f} nats, "
                             f"below the target {ELBO_TARGET:g}")
    return f"test ELBO {elbo:.2f} >= {ELBO_TARGET:g} (importance-sampled log p(x) {log_px:.2f})"


@torch.no_grad()
def _elbo(decoder, loc, scale, x, num_samples: int = 100) -> float:
    """The average over the data of E_q[log p(x|z)] - KL(q || N(0, I)), q = N(loc, diag scale^2), by Monte Carlo."""
    q = dist.Normal(loc, scale)
    z = q.sample((num_samples,))
    reconstruction = dist.Bernoulli(logits=decoder(z)).log_prob(x).sum(-1).mean(0)
    kl = torch.distributions.kl_divergence(q, dist.Normal(0.0, 1.0)).sum(-1)
    return float((reconstruction - kl).mean())


def check_amortization_gap(sub, ctx) -> str:
    decoder, encoder, _ = _trained_vae(sub, ctx)
    _, x_test = _digits()
    reply = sub.probe(f"{_PROBES}:fit_meanfield", decoder.state_dict(), x_test, Z_DIM, HIDDEN, 300, 5e-2)
    if not isinstance(reply, dict) or set(reply) != {"loc", "scale"}:
        raise AssertionError("the fitted per-datum guide came back malformed")
    shape = (x_test.shape[0], Z_DIM)
    loc = expect_tensor(reply["loc"], "the per-datum guide's means", shape).float()
    scale = expect_tensor(reply["scale"], "the per-datum guide's scales", shape).float()
    if not (scale > 0).all():
        raise AssertionError("the per-datum guide's scales are not all positive")
    with torch.no_grad():
        mu, log_sigma = encoder(x_test)
    meanfield, amortized = _elbo(decoder, loc, scale, x_test), _elbo(decoder, mu, log_sigma.exp(), x_test)
    if meanfield < amortized - GAP_SLACK:
        raise AssertionError(f"the per-datum guide refitted to the test digits reaches ELBO {meanfield:.2f}, more "
                             f"than {GAP_SLACK:g} nat below the amortized guide's {amortized:.2f}")
    return (f"amortization gap: per-datum ELBO {meanfield:.2f} - amortized ELBO {amortized:.2f} = "
            f"{meanfield - amortized:.2f} nats")
