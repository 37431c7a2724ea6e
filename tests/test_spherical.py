"""The hyperspherical distributions (zoo.core.spherical) against exact answers.

- moments: E[mu^T z] = A_d(kappa) = I_(d/2)(kappa) / I_(d/2-1)(kappa) for the vMF (and E[z_j^2] = A_d / kappa along
  any direction orthogonal to mu), and kappa / (d - 1 + kappa) for the Power Spherical, for d = 3, 10, 50 and
  kappa from 1 to 1000, within 4.5 standard errors of the sample mean;
- gradients: the vMF's rsample gradient of E[exp(c^T z)] = C_d(kappa) / C_d(|kappa mu + c|) against that closed
  form's derivative (in kappa and in the direction); the vMF's per-sample implicit gradient dw/dkappa against
  finite differences of the inverse CDF at a common uniform (the CDF by scipy's quadrature); the Power
  Spherical's rsample gradient against finite differences under common random numbers and against
  d/dkappa E[mu^T z] = (d-1) / (d-1+kappa)^2;
- normalisation: the density integrates to 1 over S^1 and S^2 (quadrature), and matches scipy's vMF density;
- entropy and the KL to the uniform: against Monte Carlo of -log q and log q - log u.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import integrate, optimize, special, stats
from torch.distributions import kl_divergence

from zoo.core.spherical import (HypersphericalUniform, PowerSpherical, VonMisesFisher, _wood_cosine,
                                log_bessel_ive, log_sphere_area, vmf_mean_cosine)

Z = 4.5       # the tolerance, in standard errors of the quantity tested


def _unit(d, seed=0):
    g = torch.Generator().manual_seed(seed)
    v = torch.randn(d, generator=g, dtype=torch.float64)
    return v / v.norm()


def _orthogonal(mu, seed=1):
    g = torch.Generator().manual_seed(seed)
    v = torch.randn(mu.shape, generator=g, dtype=torch.float64)
    v = v - (v @ mu) * mu
    return v / v.norm()


def _within(samples, truth, z=Z):
    mean, se = samples.mean().item(), samples.std().item() / math.sqrt(samples.numel())
    assert abs(mean - truth) <= z * se + 1e-12, f"mean {mean:.8g} vs exact {truth:.8g}: {abs(mean - truth) / se:.1f} SE"


def _draws(family, d, kappa, n=20000):
    """A unit mean direction in R^d and n draws of ``family`` around it (seeded by d and kappa)."""
    torch.manual_seed(d + int(kappa))
    mu = _unit(d)
    return mu, family(mu, torch.tensor(kappa, dtype=torch.float64)).sample((n,))


@pytest.mark.parametrize("d", [3, 10, 50])
@pytest.mark.parametrize("kappa", [1.0, 10.0, 100.0, 1000.0])
def test_vmf_sampler_has_the_bessel_ratio_as_its_mean_cosine(d, kappa):
    mu, z = _draws(VonMisesFisher, d, kappa)
    a = vmf_mean_cosine(d, torch.tensor(kappa, dtype=torch.float64)).item()
    assert torch.allclose(z.norm(dim=-1), torch.ones(len(z), dtype=torch.float64), atol=1e-12)
    _within(z @ mu, a)
    _within((z @ _orthogonal(mu)) ** 2, a / kappa)         # the tangent part: (1 - E[w^2]) / (d - 1) = A / kappa


def test_a_sampler_that_skips_the_rejection_step_fails_the_moment_test():
    """The moment test above can fail: Wood's proposal alone (every draw accepted) is off by about 20 SE (the test asks for 10)."""
    d, kappa, n = 10, torch.tensor(10.0, dtype=torch.float64), 20000
    torch.manual_seed(0)
    m1 = d - 1.0
    b = m1 / (2 * kappa + torch.sqrt(4 * kappa ** 2 + m1 ** 2))
    eps = torch.distributions.Beta(m1 / 2, m1 / 2).sample((n,)).double()
    proposal = (1 - (1 + b) * eps) / (1 - (1 - b) * eps)
    a = vmf_mean_cosine(d, kappa).item()
    assert abs(proposal.mean().item() - a) > 10 * proposal.std().item() / math.sqrt(n)
    torch.manual_seed(0)
    _within(_wood_cosine(kappa.expand(n), d), a)


@pytest.mark.parametrize("d", [3, 10, 50])
@pytest.mark.parametrize("kappa", [1.0, 10.0, 100.0, 1000.0])
def test_power_spherical_sampler_has_its_beta_moments(d, kappa):
    mu, z = _draws(PowerSpherical, d, kappa)
    a, b = (d - 1) / 2 + kappa, (d - 1) / 2
    t1, t2 = a / (a + b), a * (a + 1) / ((a + b) * (a + b + 1))          # E[t], E[t^2], t ~ Beta(a, b)
    _within(z @ mu, 2 * t1 - 1)
    _within((z @ mu) ** 2, 4 * t2 - 4 * t1 + 1)
    assert abs((2 * t1 - 1) - kappa / (d - 1 + kappa)) < 1e-12


def _log_c(d, k):
    nu = d / 2 - 1
    return nu * torch.log(k) - d / 2 * math.log(2 * math.pi) - (log_bessel_ive(nu, k) + k)


@pytest.mark.parametrize("d,kappa", [(2, 5.0), (3, 100.0), (10, 10.0), (10, 100.0), (50, 1.0), (50, 300.0)])
def test_vmf_rsample_gradient_is_the_gradient_of_the_closed_form_expectation(d, kappa):
    """E[exp(c^T z)] = C_d(kappa) / C_d(|kappa mu + c|); its gradient in kappa and in the direction's parameter
    v (mu = v / |v|) is matched by the mean of the per-sample rsample gradients."""
    n = 40000
    v = _unit(d, 5) + 0.3 * _unit(d, 6)
    c = 1.5 * _orthogonal(v / v.norm(), 7) + 0.5 * _unit(d, 8)
    k = torch.tensor(kappa, dtype=torch.float64, requires_grad=True)
    vv = v.clone().requires_grad_()
    exact = torch.exp(_log_c(d, k) - _log_c(d, (k * vv / vv.norm() + c).norm()))
    g_k, g_v = torch.autograd.grad(exact, (k, vv))

    ks = torch.full((n,), kappa, dtype=torch.float64, requires_grad=True)
    vs = v.expand(n, d).clone().requires_grad_()
    torch.manual_seed(d)
    z = VonMisesFisher(vs / vs.norm(dim=-1, keepdim=True), ks).rsample()
    per_k, per_v = torch.autograd.grad(torch.exp(z @ c).sum(), (ks, vs))
    _within(per_k, g_k.item())
    for i in range(min(d, 3)):
        _within(per_v[:, i], g_v[i].item())


def _cosine_cdf(w, kappa, d):
    """P(mu^T z <= w) under vMF, by adaptive quadrature in the angle: int_theta_w^pi f / int_0^pi f, with
    f(theta) = exp(kappa (cos theta - 1)) sin(theta)^(d-2)."""
    f = lambda t: math.exp(kappa * (math.cos(t) - 1.0)) * math.sin(t) ** (d - 2)   # noqa: E731
    peak = min(math.pi, 12 / math.sqrt(kappa) + math.sqrt((d - 2) / kappa))
    total = integrate.quad(f, 0, math.pi, points=[peak], epsabs=0, epsrel=1e-13, limit=400)[0]
    theta = math.acos(min(1.0, max(-1.0, w)))
    tail = integrate.quad(f, theta, math.pi, epsabs=0, epsrel=1e-13, limit=400)[0]
    return tail / total


def _inverse_cosine_cdf(u, kappa, d):
    return optimize.brentq(lambda w: _cosine_cdf(w, kappa, d) - u, -1.0, 1.0, xtol=1e-15, rtol=1e-15)


@pytest.mark.parametrize("d", [2, 3, 10, 50])
@pytest.mark.parametrize("kappa", [1.0, 30.0, 1000.0])
def test_vmf_implicit_gradient_is_the_finite_difference_of_the_inverse_cdf_at_a_common_uniform(d, kappa):
    """dw/dkappa at each sampled cosine w equals (F^-1(u; kappa + h) - F^-1(u; kappa - h)) / 2h with u = F(w; kappa)."""
    from zoo.core.spherical import _implicit_cosine_grad
    torch.manual_seed(d)
    k = torch.tensor(kappa, dtype=torch.float64)
    w = _wood_cosine(k.expand(4), d)
    grad = _implicit_cosine_grad(w, k.expand(4), d)
    h = 1e-4 * kappa
    for wi, gi in zip(w.tolist(), grad.tolist()):
        u = _cosine_cdf(wi, kappa, d)
        fd = (_inverse_cosine_cdf(u, kappa + h, d) - _inverse_cosine_cdf(u, kappa - h, d)) / (2 * h)
        assert gi == pytest.approx(fd, rel=2e-4, abs=1e-9 / kappa), (wi, u)


@pytest.mark.parametrize("d", [3, 10, 50])
@pytest.mark.parametrize("kappa", [1.0, 10.0, 100.0])
def test_power_spherical_rsample_gradient_matches_finite_differences_with_common_random_numbers(d, kappa):
    """Each sample's rsample gradient of f(z) = exp(1.5 a^T z) against (f(z(kappa + h)) - f(z(kappa - h))) / 2h,
    where z(kappa') is the same sample's uniform u = I_t(a, b) (the Beta's CDF at its draw t) and tangent direction
    v pushed through kappa''s inverse CDF (scipy's betaincinv); and the mean cosine's gradient against its closed
    form d/dkappa kappa / (d - 1 + kappa) = (d - 1) / (d - 1 + kappa)^2.

    The common random number is the inverse CDF's uniform, not the seed: torch draws a Beta from two Gammas by
    Marsaglia and Tsang's rejection sampler, and differencing a rejection sampler under a fixed seed misses
    the acceptance step's dependence on kappa (it is biased, as the vMF's rejection sampler would be)."""
    from zoo.core.spherical import householder
    n, h = 4000, 1e-5 * kappa
    mu, a_dir = _unit(d, 2), _unit(d, 3)
    f = lambda z: torch.exp(1.5 * (z @ a_dir))   # noqa: E731
    ks = torch.full((n,), kappa, dtype=torch.float64, requires_grad=True)
    torch.manual_seed(11)
    z = PowerSpherical(mu, ks).rsample()
    g_f, g_w = (torch.autograd.grad(y.sum(), ks, retain_graph=True)[0] for y in (f(z), z @ mu))

    a, b = (d - 1) / 2 + kappa, (d - 1) / 2
    w = (z @ mu).detach()
    y = householder(mu.expand(n, d), z.detach())           # the reflection is its own inverse: y = (w, side * v)
    v = y / y[:, 1:].norm(dim=-1, keepdim=True)
    v[:, 0] = 0.0
    u = special.betainc(a, b, ((w + 1) / 2).numpy())

    def f_at(k):
        w_k = torch.as_tensor(2 * special.betaincinv(k + b, b, u) - 1)
        y_k = torch.cat([w_k[:, None], torch.sqrt((1 - w_k) * (1 + w_k))[:, None] * v[:, 1:]], -1)
        return f(householder(mu.expand(n, d), y_k))

    fd = (f_at(kappa + h) - f_at(kappa - h)) / (2 * h)
    # torch's Beta gradient (torch._dirichlet_grad) is an approximation of the inverse CDF's derivative, good to
    # about 1e-3 relative (measured here against betaincinv: at worst 1e-3, median 1e-4 to 1e-9)
    assert torch.allclose(g_f, fd, rtol=5e-3, atol=1e-9 * fd.abs().max().item())
    assert abs(g_f.mean() - fd.mean()).item() <= 2e-3 * fd.abs().mean().item()
    _within(g_w, (d - 1) / (d - 1 + kappa) ** 2)


@pytest.mark.parametrize("family", [VonMisesFisher, PowerSpherical])
@pytest.mark.parametrize("kappa", [0.5, 5.0, 50.0, 500.0])
def test_density_integrates_to_one_on_the_circle_and_the_sphere(family, kappa):
    k = torch.tensor(kappa, dtype=torch.float64)
    # S^1: the periodic trapezoid rule, spectrally accurate
    phi = torch.arange(20000, dtype=torch.float64) * (2 * math.pi / 20000)
    circle = torch.stack([torch.cos(phi), torch.sin(phi)], -1)
    q = family(_unit(2, 4), k)
    assert (q.log_prob(circle).exp().sum() * (2 * math.pi / 20000)).item() == pytest.approx(1.0, abs=1e-6)
    # S^2 in spherical coordinates around an axis that is not mu: Gauss-Legendre in cos(theta), trapezoid in phi
    t, wt = (torch.as_tensor(x) for x in np.polynomial.legendre.leggauss(1500))
    phi = torch.arange(1500, dtype=torch.float64) * (2 * math.pi / 1500)
    s = torch.sqrt(1 - t ** 2)
    sphere = torch.stack([s[:, None] * torch.cos(phi), s[:, None] * torch.sin(phi), t[:, None].expand(-1, 1500)], -1)
    q = family(_unit(3, 4), k)
    mass = (q.log_prob(sphere).exp() * wt[:, None]).sum() * (2 * math.pi / 1500)
    assert mass.item() == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("d", [3, 10, 50])
def test_vmf_density_matches_scipy(d):
    mu = _unit(d)
    for kappa in (0.3, 7.0, 400.0):
        z = VonMisesFisher(mu, torch.tensor(kappa, dtype=torch.float64)).sample((50,))
        ref = stats.vonmises_fisher(mu.numpy(), kappa).logpdf(z.numpy())
        ours = VonMisesFisher(mu, torch.tensor(kappa, dtype=torch.float64)).log_prob(z).numpy()
        np.testing.assert_allclose(ours, ref, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("family", [VonMisesFisher, PowerSpherical])
@pytest.mark.parametrize("d,kappa", [(2, 3.0), (5, 20.0), (20, 2.0), (50, 200.0)])
def test_entropy_and_the_kl_to_the_uniform_match_monte_carlo(family, d, kappa):
    torch.manual_seed(d)
    q = family(_unit(d), torch.tensor(kappa, dtype=torch.float64))
    z = q.sample((20000,))
    log_q = q.log_prob(z)
    _within(-log_q, q.entropy().item())
    uniform = HypersphericalUniform(d, dtype=torch.float64)
    _within(log_q - uniform.log_prob(z), kl_divergence(q, uniform).item())


def test_the_uniform_is_uniform_on_the_sphere():
    u = HypersphericalUniform(3, batch_shape=(2,), dtype=torch.float64)
    torch.manual_seed(0)
    z = u.rsample((20000,))
    assert z.shape == (20000, 2, 3)
    assert torch.allclose(z.norm(dim=-1), torch.ones(20000, 2, dtype=torch.float64))
    assert u.log_prob(z)[0, 0].item() == pytest.approx(-math.log(4 * math.pi))
    assert log_sphere_area(2) == pytest.approx(math.log(2 * math.pi))
    for j in range(3):     # E[z_j] = 0 and E[z_j^2] = 1/3
        _within(z[:, 0, j], 0.0)
        _within(z[:, 0, j] ** 2, 1 / 3)


def test_bessel_functions_have_the_gradients_of_their_recurrences():
    for nu in (0.0, 0.5, 4.0, 24.0):
        k = torch.tensor([0.05, 1.0, 30.0, 900.0], dtype=torch.float64, requires_grad=True)
        assert torch.autograd.gradcheck(lambda x, nu=nu: log_bessel_ive(nu, x), (k,), eps=1e-6, atol=1e-7)
    for d in (2, 3, 10, 50):
        k = torch.tensor([0.05, 1.0, 30.0, 900.0], dtype=torch.float64, requires_grad=True)
        assert torch.autograd.gradcheck(lambda x, d=d: vmf_mean_cosine(d, x), (k,), eps=1e-6, atol=1e-7)
    # A_3(kappa) = coth(kappa) - 1/kappa
    k = torch.tensor([0.5, 2.0, 50.0], dtype=torch.float64)
    assert torch.allclose(vmf_mean_cosine(3, k), 1 / torch.tanh(k) - 1 / k, rtol=1e-12)


def test_power_spherical_density_at_the_antipode_is_zero_not_nan():
    """A unit vector that float32 rounds a hair past -mu (the uniform's defensive draws can land there) has density 0."""
    mu = torch.tensor([0.6, 0.8])
    q = PowerSpherical(mu, torch.tensor(3.0))
    past = -mu * (1 + 1e-7)
    assert (mu * past).sum() < -1
    assert q.log_prob(past).item() == float("-inf")
    assert torch.isfinite(q.log_prob(torch.stack([mu, torch.tensor([0.8, -0.6])]))).all()
