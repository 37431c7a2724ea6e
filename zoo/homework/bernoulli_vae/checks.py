"""The graded checks of homework 1 (the Bernoulli VAE by SVI).

Each check is called as ``check(submission)`` in the grader's worker (seeded, Pyro's param store
cleared) and fails with a one-line ``AssertionError``. Every check builds its own networks
(:class:`Decoder`, :class:`Encoder`, the same interface as the starter's), so a check depends only
on the functions it names. What each one certifies:

- ``kl_closed_form``: ``kl_normal`` = KL(N(mu, diag sigma^2) || N(0, I)) against a Monte Carlo
  estimate E_q[log q(z) - log p(z)] with 40 000 draws per row (within 5 standard errors).
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
  is exact by quadrature, ``elbo`` matches the exact ELBO and lies below log p(x)
  (``zoo.testing.assert_close``, ``zoo.testing.assert_lower_bound``), for three encoders.
- ``train_amortized``: SVI (Pyro's ``TraceMeanField_ELBO``, the KL in closed form) on the student's
  ``model`` and ``amortized_guide`` over the binarized 8x8 digits; the test ELBO, computed by the
  zoo's harness on the student's model wrapped with ``zoo.from_pyro``, reaches :data:`ELBO_TARGET`.
- ``amortization_gap`` (hidden): the per-datum guide, fitted by SVI to the test digits with that
  decoder frozen, reaches at least the amortized test ELBO minus :data:`GAP_SLACK`; the output
  reports the amortization gap ELBO(per-datum) - ELBO(amortized).
"""
from __future__ import annotations

import math
from typing import Tuple

import numpy as np
import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import torch
from torch import nn

#: The test ELBO (nats per 64-pixel digit) the amortized VAE must reach.
ELBO_TARGET = -23.5
#: How far below the amortized test ELBO the per-datum guide may end (nats per datum).
GAP_SLACK = 1.0
#: Training of the graded run: epochs of minibatches of 100 on the 1257 training digits.
EPOCHS, BATCH, LR, Z_DIM, HIDDEN = 15, 100, 2e-2, 2, 64


class Decoder(nn.Module):
    """f_theta: z -> logits (the starter's interface: ``z_dim``, ``x_dim`` attributes)."""

    def __init__(self, z_dim: int, x_dim: int, hidden: int = HIDDEN):
        super().__init__()
        self.z_dim, self.x_dim = z_dim, x_dim
        self.net = nn.Sequential(nn.Linear(z_dim, hidden), nn.Tanh(), nn.Linear(hidden, x_dim))

    def forward(self, z):
        return self.net(z)


class Encoder(nn.Module):
    """x -> (mu, log sigma) (the starter's interface)."""

    def __init__(self, x_dim: int, z_dim: int, hidden: int = HIDDEN):
        super().__init__()
        self.z_dim, self.x_dim = z_dim, x_dim
        self.net = nn.Sequential(nn.Linear(x_dim, hidden), nn.Tanh())
        self.mu, self.log_sigma = nn.Linear(hidden, z_dim), nn.Linear(hidden, z_dim)

    def forward(self, x):
        h = self.net(x)
        return self.mu(h), self.log_sigma(h)


def _tensor(value, what: str, shape: Tuple[int, ...]) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise AssertionError(f"{what} returned a {type(value).__name__}, expected a tensor of shape {shape}")
    if tuple(value.shape) != tuple(shape):
        raise AssertionError(f"{what} returned shape {tuple(value.shape)}, expected {tuple(shape)}")
    if not torch.isfinite(value).all():
        raise AssertionError(f"{what} returned nan or inf")
    return value


# -- 1. the closed-form KL ---------------------------------------------------------------------
def check_kl_closed_form(sub) -> str:
    from zoo.testing import assert_close
    B, J, S = 16, 3, 40_000
    mu = 1.5 * torch.randn(B, J)
    log_sigma = torch.empty(B, J).uniform_(-1.5, 1.0)
    kl = _tensor(sub.kl_normal(mu, log_sigma), "kl_normal(mu, log_sigma) with mu, log_sigma of shape [16, 3]", (B,))
    q = dist.Normal(mu, log_sigma.exp()).to_event(1)
    p = dist.Normal(torch.zeros(J), 1.0).to_event(1)
    z = q.sample((S,))
    log_ratio = (q.log_prob(z) - p.log_prob(z)).double()               # [S, B]
    mc, se = log_ratio.mean(0), log_ratio.std(0) / math.sqrt(S)
    return assert_close(kl.detach(), mc, atol=float(5 * se.max()), rtol=0.0,
                        what="kl_normal against Monte Carlo E_q[log q - log p]")


# -- 2. the model --------------------------------------------------------------------------------
def _trace(fn, *args):
    return poutine.trace(fn).get_trace(*args)


def _site(trace, name: str, what: str):
    if name not in trace.nodes or trace.nodes[name]["type"] != "sample":
        sites = [n for n, s in trace.nodes.items() if s["type"] == "sample"]
        raise AssertionError(f"{what} has no sample site {name!r} (it has {sites})")
    return trace.nodes[name]


def _check_plate(site, name: str, what: str, N: int, B: int) -> None:
    frames = [f for f in site["cond_indep_stack"] if f.name == "data"]
    if not frames:
        raise AssertionError(f"{what}: site {name!r} is not inside pyro.plate('data', N, subsample=idx)")
    full_size = getattr(frames[0], "full_size", None) or frames[0].size
    if full_size != N:
        raise AssertionError(f"{what}: the plate 'data' has size {full_size}, expected N = {N} "
                             f"(pyro.plate('data', N, subsample=idx))")
    if not math.isclose(float(site["scale"]), N / B, rel_tol=1e-6):
        raise AssertionError(f"{what}: site {name!r} is scaled by {float(site['scale']):g}, expected N / B = "
                             f"{N / B:g} (subsample the plate with idx so the minibatch stands for all N data)")


def _params(trace, module: nn.Module, what: str, role: str) -> None:
    names = {id(s["value"]) for s in trace.nodes.values() if s["type"] == "param"}
    missing = [n for n, p in module.named_parameters() if id(p) not in names]
    if missing:
        raise AssertionError(f"{what} does not register the {role}'s parameters ({missing[0]}, ...): "
                             f"call pyro.module({role!r}, {role}) so that SVI trains them")


def check_model(sub) -> str:
    D, J, N = 6, 2, 20
    decoder = Decoder(J, D, hidden=8)
    x = torch.bernoulli(torch.full((5, D), 0.4))
    idx = torch.tensor([3, 7, 8, 12, 19])
    trace = _trace(sub.model, decoder, x, idx, N)
    what = "model(decoder, x, idx, N)"
    z_site, x_site = _site(trace, "z", what), _site(trace, "x", what)
    if z_site["is_observed"]:
        raise AssertionError(f"{what}: 'z' is observed; it is the latent")
    if not x_site["is_observed"] or not torch.equal(x_site["value"], x):
        raise AssertionError(f"{what}: 'x' must be observed, obs=x")
    z = z_site["value"]
    if tuple(z.shape) != (5, J):
        raise AssertionError(f"{what}: z has shape {tuple(z.shape)}, expected [B, z_dim] = [5, {J}]")
    prior = dist.Normal(torch.zeros(J), 1.0).to_event(1)
    for probe in (z, torch.randn(5, J) * 2.0):
        got = z_site["fn"].log_prob(probe)
        if tuple(got.shape) != (5,):
            raise AssertionError(f"{what}: log p(z) has shape {tuple(got.shape)}, expected [B] = [5] "
                                 f"(declare the z_dim dimensions as an event: .to_event(1))")
        if not torch.allclose(got, prior.log_prob(probe), atol=1e-4):
            raise AssertionError(f"{what}: p(z) is not N(0, I): log p(z) differs from the standard normal's by "
                                 f"{float((got - prior.log_prob(probe)).abs().max()):.3g}")
    likelihood = dist.Bernoulli(logits=decoder(z)).to_event(1)
    got = x_site["fn"].log_prob(x)
    if tuple(got.shape) != (5,):
        raise AssertionError(f"{what}: log p(x|z) has shape {tuple(got.shape)}, expected [B] = [5] "
                             f"(declare the pixels as an event: .to_event(1))")
    if not torch.allclose(got, likelihood.log_prob(x), atol=1e-4):
        raise AssertionError(f"{what}: p(x|z) is not Bernoulli(logits=decoder(z)): log p(x|z) is off by "
                             f"{float((got - likelihood.log_prob(x)).abs().max()):.3g} (the decoder returns logits)")
    for name, site in (("z", z_site), ("x", x_site)):
        _check_plate(site, name, what, N, 5)
    _params(trace, decoder, what, "decoder")
    return "p(z) = N(0, I), p(x|z) = Bernoulli(logits = f(z)), scaled by N / B"


# -- 3. the guides -------------------------------------------------------------------------------
def check_amortized_guide(sub) -> str:
    D, J, N = 6, 3, 20
    encoder = Encoder(D, J, hidden=8)
    x = torch.bernoulli(torch.full((4, D), 0.5))
    x[0] = 0.0
    x[1] = 1.0
    idx = torch.tensor([0, 5, 9, 11])
    what = "amortized_guide(encoder, x, idx, N)"
    trace = _trace(sub.amortized_guide, encoder, x, idx, N)
    site = _site(trace, "z", what)
    z = site["value"]
    if tuple(z.shape) != (4, J):
        raise AssertionError(f"{what}: z has shape {tuple(z.shape)}, expected [B, z_dim] = [4, {J}]")
    mu, log_sigma = encoder(x)
    q = dist.Normal(mu, log_sigma.exp()).to_event(1)
    for probe in (z, mu + torch.randn(4, J)):
        got = site["fn"].log_prob(probe)
        if tuple(got.shape) != (4,):
            raise AssertionError(f"{what}: log q(z|x) has shape {tuple(got.shape)}, expected [B] = [4] "
                                 f"(.to_event(1))")
        if not torch.allclose(got, q.log_prob(probe), atol=1e-4):
            raise AssertionError(f"{what}: q(z|x) is not N(mu(x), diag exp(log_sigma(x))^2) from encoder(x): "
                                 f"log q differs by {float((got - q.log_prob(probe)).abs().max()):.3g}")
    if not site["fn"].has_rsample or not z.requires_grad:
        raise AssertionError(f"{what}: z is not reparameterized (no gradient flows from z to the encoder)")
    _check_plate(site, "z", what, N, 4)
    _params(trace, encoder, what, "encoder")
    return "q(z|x) = N(mu(x), diag sigma(x)^2), reparameterized, scaled by N / B"


def check_meanfield_guide(sub) -> str:
    D, J, N = 5, 3, 10
    x_all = torch.bernoulli(torch.full((N, D), 0.5))
    what = "meanfield_guide(z_dim, x, idx, N)"

    def run(idx):
        trace = _trace(sub.meanfield_guide, J, x_all[idx], idx, N)
        return trace, _site(trace, "z", what)

    trace, site = run(torch.tensor([1, 4, 6]))
    z = site["value"]
    if tuple(z.shape) != (3, J):
        raise AssertionError(f"{what}: z has shape {tuple(z.shape)}, expected [B, z_dim] = [3, {J}]")
    per_datum = [s["value"] for s in trace.nodes.values() if s["type"] == "param" and s["value"].shape[:1] == (N,)]
    if not per_datum:
        raise AssertionError(f"{what}: no pyro.param with one row per datum (shape [N, z_dim]); the per-datum "
                             f"guide has free parameters for each of the N data")
    if not site["fn"].has_rsample or not z.requires_grad:
        raise AssertionError(f"{what}: z is not reparameterized on the per-datum parameters")
    _check_plate(site, "z", what, N, 3)
    with torch.no_grad():                        # distinct rows, so each datum's q can be told apart
        for value in per_datum:
            unconstrained = getattr(value, "unconstrained", None)
            target = unconstrained() if callable(unconstrained) else value
            target.copy_(target + 0.5 * torch.randn_like(target))
    _, a = run(torch.tensor([2, 7, 5]))
    _, b = run(torch.tensor([5, 0]))
    probe = torch.randn(J)
    qa = a["fn"].log_prob(probe.expand(3, J))
    qb = b["fn"].log_prob(probe.expand(2, J))
    if not torch.allclose(qa[2], qb[0], atol=1e-5):
        raise AssertionError(f"{what}: datum 5 gets a different q in two minibatches; index the per-datum "
                             f"parameters by idx (q_loc[idx]), not by position in the minibatch")
    if torch.allclose(qa[0], qa[1], atol=1e-6) or torch.allclose(qa[1], qb[1], atol=1e-6):
        raise AssertionError(f"{what}: different data share one q; each datum needs its own row of parameters")
    return f"one row of parameters per datum ({len(per_datum)} param(s) of shape [N, ...]), indexed by idx"


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


def _tiny(seed: int, D: int = 4, hidden: int = 6):
    torch.manual_seed(seed)
    decoder, encoder = Decoder(2, D, hidden).double(), Encoder(D, 2, hidden).double()
    with torch.no_grad():
        encoder.log_sigma.bias.fill_(-0.7)
    return decoder, encoder


def check_reconstruction_unbiased(sub) -> str:
    from zoo.testing import assert_unbiased, gradient_of
    decoder, encoder = _tiny(1)
    x = torch.tensor([[1, 0, 1, 1], [0, 0, 1, 0], [1, 1, 1, 1], [0, 1, 0, 0]], dtype=torch.float64)
    params = list(decoder.parameters()) + list(encoder.parameters())
    mu, log_sigma = encoder(x)
    exact_value = _exact_reconstruction(decoder, mu, log_sigma, x).detach()
    exact_grad = gradient_of(lambda: _exact_reconstruction(decoder, *encoder(x), x).sum(), params)
    what = "reconstruction(decoder, encoder, x, num_particles=3)"
    _tensor(sub.reconstruction(decoder, encoder, x, 3), what, (4,))

    def estimate():
        value = []
        grad = gradient_of(lambda: value.append(sub.reconstruction(decoder, encoder, x, 3)) or value[0].sum(),
                           params)
        return [value[0].detach(), grad]

    try:
        summary = assert_unbiased(estimate, [exact_value, exact_grad], num_samples=400, seed=0)
    except AssertionError as e:
        raise AssertionError(f"{what} or its gradient is biased against the exact quadrature: {e}") from None
    return summary


# -- 5. the ELBO is a lower bound ----------------------------------------------------------------
def check_elbo_lower_bound(sub) -> str:
    from zoo.testing import assert_close, assert_lower_bound
    x = torch.tensor([[1, 0, 1, 1], [0, 0, 1, 0], [1, 1, 1, 1], [0, 1, 0, 0], [0, 0, 0, 0]], dtype=torch.float64)
    what = "elbo(decoder, encoder, x, num_particles=200)"
    gaps = []
    for seed in (2, 3, 4):
        decoder, encoder = _tiny(seed)
        with torch.no_grad():
            u, w = _gauss_hermite_2d()
            log_px_z = dist.Bernoulli(logits=decoder(u)).log_prob(x.unsqueeze(1)).sum(-1)     # [B, K]
            log_px = torch.logsumexp(log_px_z + w.log(), -1)                                   # exact log p(x)
            mu, log_sigma = encoder(x)
            kl = torch.distributions.kl_divergence(dist.Normal(mu, log_sigma.exp()), dist.Normal(0.0, 1.0)).sum(-1)
            exact_elbo = _exact_reconstruction(decoder, mu, log_sigma, x) - kl
            draws = torch.stack([_tensor(sub.elbo(decoder, encoder, x, 200), what, (5,)).detach()
                                 for _ in range(10)])
        mean, se = draws.mean(0), draws.std(0) / math.sqrt(draws.shape[0])
        assert_lower_bound(mean, log_px, stderr=se, sigmas=4.0, what=f"{what} (encoder {seed - 1} of 3)")
        assert_close(mean, exact_elbo, atol=float(5 * se.max()) + 1e-6, rtol=0.0,
                     what=f"{what} against the exact ELBO by quadrature (encoder {seed - 1} of 3)")
        gaps.append(float((log_px - exact_elbo).mean()))
    return f"ELBO matches the quadrature and lies below log p(x) (mean gaps {', '.join(f'{g:.3f}' for g in gaps)})"


# -- 6. training on the digits -------------------------------------------------------------------
class _StudentVAE(nn.Module):
    """The student's model and guide around the grader's networks, as one nn.Module for zoo.from_pyro."""

    def __init__(self, sub, x_dim: int):
        super().__init__()
        self.sub = sub
        self.decoder, self.encoder = Decoder(Z_DIM, x_dim), Encoder(x_dim, Z_DIM)

    def model(self, x, idx=None, N=None):
        return self.sub.model(self.decoder, x, idx, N)

    def guide(self, x, idx=None, N=None):
        return self.sub.amortized_guide(self.encoder, x, idx, N)


class _Guide(nn.Module):
    """A guide callable for the zoo's harness (which switches modules to eval mode)."""

    def __init__(self, fn, *modules):
        super().__init__()
        self.fn, self.parts = fn, nn.ModuleList(modules)

    def forward(self, x, idx=None, N=None):
        return self.fn(x, idx, N)


_TRAINED = {}


def _digits():
    from zoo.data import load_digits
    data = load_digits()
    return data.train, data.test


def _svi(model, guide, x, epochs: int, batch: int, lr: float) -> None:
    from pyro.infer import SVI, TraceMeanField_ELBO
    svi = SVI(model, guide, pyro.optim.Adam({"lr": lr}), TraceMeanField_ELBO())
    N = x.shape[0]
    for _ in range(epochs):
        for idx in torch.randperm(N).split(batch):
            loss = svi.step(x[idx], idx, N)
            if not math.isfinite(loss):
                raise AssertionError("the SVI loss became nan or inf during training")


def _trained_vae(sub):
    """The student's VAE trained on the digits (kept for the next check in this worker)."""
    key = id(sub)
    if key not in _TRAINED:
        import zoo
        x_train, x_test = _digits()
        vae = _StudentVAE(sub, x_train.shape[1])
        _svi(vae.model, vae.guide, x_train, EPOCHS, BATCH, LR)
        zoo_model = zoo.from_pyro(vae, x_train.shape[1], name="student_vae")
        result = zoo.evaluate(zoo_model, _Guide(vae.guide, vae), x_test, num_samples=100, iwae_k=10, psis=False)
        _TRAINED.clear()
        _TRAINED[key] = (vae, zoo_model, result)
    return _TRAINED[key]


def check_train_amortized(sub) -> str:
    vae, _, result = _trained_vae(sub)
    elbo, log_px = result["elbo"], result["log_likelihood"]
    if not math.isfinite(elbo):
        raise AssertionError("the test ELBO after training is nan or inf")
    if elbo < ELBO_TARGET:
        raise AssertionError(f"after SVI ({EPOCHS} epochs on the digits) the test ELBO is {elbo:.2f} nats, "
                             f"below the target {ELBO_TARGET:g}")
    return f"test ELBO {elbo:.2f} >= {ELBO_TARGET:g} (importance-sampled log p(x) {log_px:.2f})"


def check_amortization_gap(sub) -> str:
    import zoo
    vae, zoo_model, result = _trained_vae(sub)
    _, x_test = _digits()
    N = x_test.shape[0]
    pyro.clear_param_store()
    for p in vae.decoder.parameters():
        p.requires_grad_(False)

    def frozen_model(x, idx, N):
        return poutine.block(vae.model, hide_types=["param"])(x, idx, N)

    def guide(x, idx, N):
        return sub.meanfield_guide(Z_DIM, x, idx, N)

    _svi(frozen_model, guide, x_test, 300, N, 5e-2)
    meanfield = zoo.evaluate(zoo_model, _Guide(guide), x_test, num_samples=100, iwae_k=10, psis=False)["elbo"]
    amortized = result["elbo"]
    if not math.isfinite(meanfield) or meanfield < amortized - GAP_SLACK:
        raise AssertionError(f"the per-datum guide refitted to the test digits reaches ELBO {meanfield:.2f}, more "
                             f"than {GAP_SLACK:g} nat below the amortized guide's {amortized:.2f}")
    return (f"amortization gap: per-datum ELBO {meanfield:.2f} - amortized ELBO {amortized:.2f} = "
            f"{meanfield - amortized:.2f} nats")
