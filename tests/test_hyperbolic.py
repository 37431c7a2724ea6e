"""Hyperbolic space and the wrapped normal (zoo.core.hyperbolic) against exact answers.

- the exponential and logarithmic maps invert each other (float64): tangent vectors up to length 12 to 1e-9, and
  points at Poincare radius 1 - 1e-5 (up to distance 16 from the base point) to 1e-8 in Poincare coordinates;
  parallel transport keeps tangent vectors tangent and their length;
- the wrapped normal's density integrates to 1 over H^1 and H^2 (quadrature in geodesic polar coordinates,
  volume sinh(r)^(n-1) dr dtheta), and its samples have the expectations that quadrature of that density gives;
- rsample's gradients (in the location's tangent parameter and in the scale) are finite differences of the
  same draws (common random numbers: the sampler is a smooth map of Gaussian noise, with no rejection);
- the gyroplane layer's units are Mathieu et al.'s Poincare-ball formula (Mobius sums at 50 digits with mpmath, also
  at radius 1 - 1e-6), and |asinh(<z, n>_L)| is the distance from z to the gyroplane found by search along it.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from zoo.core.hyperbolic import (Gyroplane, WrappedNormal, distance, exp_map, exp_origin, from_poincare, log_map, log_origin,
                                 lorentz_inner, parallel_transport, to_poincare)

Z = 4.5


def _within(samples, truth):
    mean, se = samples.mean().item(), samples.std().item() / math.sqrt(samples.numel())
    assert abs(mean - truth) <= Z * se, f"mean {mean:.6g} vs exact {truth:.6g}: {abs(mean - truth) / se:.1f} SE"


def _tangent_at(mu, g):
    """A random tangent vector at mu: the transport of (0, w) from the origin."""
    w = torch.randn(mu.shape[:-1] + (mu.shape[-1] - 1,), generator=g, dtype=torch.float64)
    o = torch.zeros_like(mu)
    o[..., 0] = 1
    return parallel_transport(o, mu, torch.cat([torch.zeros_like(w[..., :1]), w], -1))


@pytest.mark.parametrize("n", [1, 2, 5])
def test_exp_and_log_invert_each_other_out_to_the_poincare_boundary(n):
    g = torch.Generator().manual_seed(n)
    mu = exp_origin(torch.randn(200, n, generator=g, dtype=torch.float64))
    u = _tangent_at(mu, g)
    lengths = torch.linspace(1e-6, 12.0, 200, dtype=torch.float64).unsqueeze(-1)
    u = u / torch.sqrt(lorentz_inner(u, u)).unsqueeze(-1) * lengths
    z = exp_map(mu, u)
    # on H^n: <z, z>_L = -1, to the rounding of z_0^2 (up to 1e12 here)
    assert ((lorentz_inner(z, z) + 1).abs() <= 1e-14 * z[:, 0] ** 2).all()
    assert torch.allclose(distance(mu, z), lengths.squeeze(-1), rtol=1e-9, atol=1e-9)
    back = log_map(mu, z)
    assert torch.allclose(back, u, rtol=1e-9, atol=1e-9 * lengths.max().item())
    # points given in the Poincare ball at radius 1 - 1e-5: log then exp returns them
    p = torch.randn(200, n, generator=g, dtype=torch.float64)
    p = p / p.norm(dim=-1, keepdim=True) * (1 - 1e-5)
    z = from_poincare(p)
    again = exp_map(mu, log_map(mu, z))
    assert torch.allclose(to_poincare(again), p, rtol=0, atol=1e-8)          # the issue asks for 1e-5
    assert torch.allclose(log_origin(exp_origin(p)), p, atol=1e-12)


def test_parallel_transport_keeps_vectors_tangent_and_their_length():
    g = torch.Generator().manual_seed(0)
    mu = exp_origin(torch.randn(50, 3, generator=g, dtype=torch.float64))
    nu = exp_origin(3 * torch.randn(50, 3, generator=g, dtype=torch.float64))
    u = _tangent_at(mu, g)
    moved = parallel_transport(mu, nu, u)
    scale = moved.abs().amax(-1) * nu.abs().amax(-1)                  # the size of the terms that cancel
    assert (lorentz_inner(moved, nu).abs() <= 1e-11 * scale).all()
    assert ((lorentz_inner(moved, moved) - lorentz_inner(u, u)).abs() <= 1e-11 * scale).all()
    back = parallel_transport(nu, mu, moved)
    assert ((back - u).abs().amax(-1) <= 1e-11 * scale).all()


def _polar_grid(n_r=800, n_theta=512, r_max=13.0):
    """Points of H^2 in geodesic polar coordinates around the origin, with the volume element sinh(r) dr dtheta
    (Gauss-Legendre in r, the periodic trapezoid rule in theta)."""
    x, w = np.polynomial.legendre.leggauss(n_r)
    r = torch.as_tensor((x + 1) * r_max / 2)
    wr = torch.as_tensor(w * r_max / 2)
    theta = torch.arange(n_theta, dtype=torch.float64) * (2 * math.pi / n_theta)
    z = torch.stack([torch.cosh(r)[:, None].expand(-1, n_theta), torch.sinh(r)[:, None] * torch.cos(theta),
                     torch.sinh(r)[:, None] * torch.sin(theta)], -1)
    vol = (wr * torch.sinh(r))[:, None] * (2 * math.pi / n_theta)
    return z.reshape(-1, 3), vol.expand(-1, n_theta).reshape(-1)


@pytest.mark.parametrize("where", [(0.0, 0.0), (0.8, -0.4), (2.0, 1.0)])
@pytest.mark.parametrize("scale", [(0.3, 0.3), (1.0, 0.5)])
def test_wrapped_normal_on_h2_integrates_to_one_and_its_samples_have_its_expectations(where, scale):
    q = WrappedNormal(exp_origin(torch.tensor(where, dtype=torch.float64)), torch.tensor(scale, dtype=torch.float64))
    z, vol = _polar_grid()
    density = q.log_prob(z).exp() * vol
    assert density.sum().item() == pytest.approx(1.0, abs=1e-7)
    torch.manual_seed(0)
    draws = q.rsample((20000,))
    for f in (lambda z: z[..., 1], lambda z: z[..., 2], lambda z: torch.tanh(z[..., 1] - z[..., 2])):
        _within(f(draws), (f(z) * density).sum().item())


@pytest.mark.parametrize("mu", [0.0, 1.5])
def test_wrapped_normal_on_h1_integrates_to_one(mu):
    """H^1 is the hyperbola (cosh t, sinh t), t in R, at unit speed: p integrates against dt."""
    q = WrappedNormal(exp_origin(torch.tensor([mu], dtype=torch.float64)), torch.tensor([0.7], dtype=torch.float64))
    x, w = np.polynomial.legendre.leggauss(2000)
    t = torch.as_tensor(x * 12)
    z = torch.stack([torch.cosh(t), torch.sinh(t)], -1)
    assert (q.log_prob(z).exp() * torch.as_tensor(w * 12)).sum().item() == pytest.approx(1.0, abs=1e-10)
    # in 1-D the wrapped normal is the Normal N(mu, 0.7^2) in the arc-length coordinate
    expected = torch.distributions.Normal(mu, 0.7).log_prob(t)
    assert torch.allclose(q.log_prob(z), expected, atol=1e-9)


def test_rsample_gradients_are_finite_differences_of_the_same_draws():
    n, h = 3, 1e-6
    base = torch.tensor([0.4, -0.3, 0.9], dtype=torch.float64)
    scale = torch.tensor([0.5, 0.2, 0.8], dtype=torch.float64)
    f = lambda z: torch.sin(z[..., 1]) + z[..., 0] * z[..., 3]    # noqa: E731

    def draws(b, s):
        torch.manual_seed(5)
        return WrappedNormal(exp_origin(b), s).rsample((500,))

    b, s = base.clone().requires_grad_(), scale.clone().requires_grad_()
    gb, gs = torch.autograd.grad(f(draws(b, s)).sum(), (b, s))
    for i in range(n):
        e = torch.zeros(n, dtype=torch.float64)
        e[i] = h
        fd_b = (f(draws(base + e, scale)).sum() - f(draws(base - e, scale)).sum()) / (2 * h)
        fd_s = (f(draws(base, scale + e)).sum() - f(draws(base, scale - e)).sum()) / (2 * h)
        assert gb[i].item() == pytest.approx(fd_b.item(), rel=1e-6, abs=1e-6)
        assert gs[i].item() == pytest.approx(fd_s.item(), rel=1e-6, abs=1e-6)


def _mobius_add(x, y):
    """x (+) y in the Poincare ball (curvature -1), for mpmath vectors."""
    xy, xx, yy = sum(a * b for a, b in zip(x, y)), sum(a * a for a in x), sum(b * b for b in y)
    den = 1 + 2 * xy + xx * yy
    return [((1 + 2 * xy + yy) * a + (1 - xx) * b) / den for a, b in zip(x, y)]


def _gyroplane_unit(z_ball, p, a):
    """Mathieu et al.'s eq. 11 at 50 digits: lambda_p |a| asinh(2 <(-p) (+) z, a> / ((1 - |(-p) (+) z|^2) |a|))."""
    import mpmath
    mpmath.mp.dps = 50
    z_ball, p, a = ([mpmath.mpf(float(v)) for v in u] for u in (z_ball, p, a))
    w = _mobius_add([-v for v in p], z_ball)
    norm_a = mpmath.sqrt(sum(v * v for v in a))
    lam = 2 / (1 - sum(v * v for v in p))
    inner = sum(u * v for u, v in zip(w, a))
    return float(lam * norm_a * mpmath.asinh(2 * inner / ((1 - sum(v * v for v in w)) * norm_a)))


@pytest.mark.parametrize("n", [2, 5])
def test_gyroplane_units_are_the_poincare_ball_formula_to_the_boundary(n):
    torch.manual_seed(n)
    layer = Gyroplane(n, 4).double()
    with torch.no_grad():
        layer.offset.mul_(0).add_(torch.randn(4, n, dtype=torch.float64))      # offsets well away from the origin
    direction = torch.nn.functional.normalize(torch.randn(6, n, dtype=torch.float64), dim=-1)
    radius = torch.tensor([0.0, 0.3, 0.9, 0.999, 1 - 1e-5, 1 - 1e-6], dtype=torch.float64)
    ball = direction * radius[:, None]
    z = from_poincare(ball)
    # from_poincare rounds near the boundary: compare with the ball point the layer is actually handed
    ball = to_poincare(z)
    got = layer(z)
    p, a = layer.offsets().detach(), layer.normal.detach()
    for i in range(z.shape[0]):
        for k in range(4):
            want = _gyroplane_unit(ball[i].tolist(), p[k].tolist(), a[k].tolist())
            assert got[i, k].item() == pytest.approx(want, rel=1e-7, abs=1e-9), (i, k)


def test_gyroplane_distance_is_the_distance_to_the_plane_found_by_search_along_it():
    """In H^2 the gyroplane through p with normal a is the geodesic {p (+) s a_perp : -1 < s < 1} (left cancellation:
    (-p) (+) (p (+) v) = v); the smallest distance from z to a fine grid of its points is |asinh(<z, n>_L)|."""
    torch.manual_seed(3)
    layer = Gyroplane(2, 3).double()
    with torch.no_grad():
        layer.offset.copy_(torch.randn(3, 2, dtype=torch.float64))
    p, a = layer.offsets().detach(), layer.normal.detach()
    n = layer.plane_normals().detach()
    z = exp_origin(2.0 * torch.randn(5, 2, dtype=torch.float64))
    s = torch.tanh(torch.linspace(-18.0, 18.0, 400_001, dtype=torch.float64))
    for k in range(3):
        perp = torch.stack([-a[k, 1], a[k, 0]]) / a[k].norm()
        v = s[:, None] * perp                                                    # points of the ball with <v, a> = 0
        pv = p[k].expand_as(v)
        xy, xx, yy = (pv * v).sum(-1, keepdim=True), (pv * pv).sum(-1, keepdim=True), (v * v).sum(-1, keepdim=True)
        on_plane = from_poincare(((1 + 2 * xy + yy) * pv + (1 - xx) * v) / (1 + 2 * xy + xx * yy))
        for i in range(z.shape[0]):
            nearest = distance(z[i].expand_as(on_plane), on_plane).min()
            exact = torch.asinh(lorentz_inner(z[i], n[k])).abs()
            assert nearest.item() == pytest.approx(exact.item(), abs=1e-6)


def test_gyroplane_gradients_are_finite_differences():
    torch.manual_seed(0)
    layer = Gyroplane(3, 2).double()
    z = exp_origin(torch.randn(4, 3, dtype=torch.float64)).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda z, a, b: _with(layer, a, b)(z), (z, layer.normal.detach().clone()
                                    .requires_grad_(True), layer.offset.detach().clone().requires_grad_(True)))


def _with(layer, normal, offset):
    clone = Gyroplane(layer.in_features, layer.out_features).double()
    del clone.normal, clone.offset
    clone.normal, clone.offset = normal, offset
    return clone


def test_the_vae_with_a_gyroplane_decoder_scores_x_by_the_layer_on_z_itself():
    import pyro
    import pyro.distributions as dist
    from zoo.core.latents import LatentLayer
    from zoo.models.vae import VAE
    torch.manual_seed(0)
    model = VAE(12, LatentLayer.named("wrapped-normal", 2), hidden=(8,), latent_decoder="gyroplane")
    assert isinstance(model.decoder[0], Gyroplane) and model.decoder[0].in_features == 2
    x = torch.bernoulli(torch.full((5, 12), 0.4))
    trace = pyro.poutine.trace(model.model).get_trace(x)
    z = trace.nodes["z"]["value"]
    want = dist.Bernoulli(logits=model.decoder(z)).to_event(1).log_prob(x)
    assert torch.allclose(trace.nodes["x"]["fn"].log_prob(x), want)


@pytest.mark.parametrize("flags, says", [(["--latent-decoder", "gyroplane"], "add --latent wrapped-normal"),
                                         (["--latent", "wrapped-normal", "--latent-decoder", "gyroplane",
                                           "--activation", "gated"], "another --activation")])
def test_a_gyroplane_decoder_without_a_hyperbolic_latent_or_an_mlp_is_refused_in_one_line(flags, says, tmp_path,
                                                                                          capsys):
    from zoo.cli import main
    assert main(["train", "vae", "--epochs", "1", "--out", str(tmp_path / "run"), *flags]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and says in err and "--latent-decoder" in err
    assert not (tmp_path / "run").exists()
