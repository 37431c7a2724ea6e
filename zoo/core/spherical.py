"""Distributions on the unit hypersphere S^(d-1) = {z in R^d : |z| = 1}, for latents on the sphere.

Three Pyro distributions, each with ``rsample``, ``log_prob`` and ``entropy``, and a KL to the uniform
registered with ``torch.distributions.kl`` (so ``TraceMeanField_ELBO`` uses it analytically):

:class:`HypersphericalUniform`
    The uniform prior, density 1 / |S^(d-1)| with |S^(d-1)| = 2 pi^(d/2) / Gamma(d/2).

:class:`VonMisesFisher` (Davidson et al. 2018, S-VAE), mean direction mu and concentration kappa::

    p(z; mu, kappa) = C_d(kappa) exp(kappa mu^T z),
    C_d(kappa) = kappa^(d/2-1) / ((2 pi)^(d/2) I_(d/2-1)(kappa)),
    E[mu^T z] = A_d(kappa) = I_(d/2)(kappa) / I_(d/2-1)(kappa),
    H = -kappa A_d(kappa) - log C_d(kappa).

    **Sampling.** z = H_mu (w, sqrt(1 - w^2) v): v uniform on S^(d-2), H_mu the Householder reflection
    taking e_1 to mu, and the cosine w = mu^T z from its marginal density
    p(w) ∝ exp(kappa w) (1 - w^2)^((d-3)/2) on [-1, 1] by Wood's (1994) rejection sampler, in float64,
    with b computed in the form that does not cancel at large kappa. A sampler that returns the
    *proposal* when its loop stops early, or that keeps an already-accepted draw's place for a
    rejected one, is biased for d > 3; the tests check E[mu^T z] against A_d(kappa) for d = 3, 10, 50
    and kappa from 1 to 1000.

    **Gradients.** The direction's gradient flows through the reflection. The rejection sampler is
    not differentiable in kappa, so w carries an *implicit reparameterization* gradient (Figurnov,
    Mohamed & Mnih 2018): with F(w; kappa) the CDF of the cosine,
    dw/dkappa = -(dF/dkappa)(w; kappa) / p(w; kappa), and since d p(t)/dkappa = (t - A_d) p(t),

        dw/dkappa = sin(theta_w) / f(theta_w) * integral_0^theta_w (cos(theta) - A_d) f(theta) dtheta,
        f(theta) = exp(kappa cos theta) sin(theta)^(d-2),     w = cos(theta_w),

    the integral in the angle, where it is smooth for every d >= 2, taken by Gauss-Legendre quadrature
    (128 nodes) on the side of theta_w that holds less mass (the two sides are equal and opposite).
    This is exact up to quadrature error (the tests compare the gradient of E[mu^T z] with the closed
    form dA_d/dkappa = 1 - A_d^2 - (d-1) A_d / kappa, and with finite differences under common random
    numbers); the S-VAE code's reparameterized rejection sampler drops its correction term instead.

    The Bessel functions come from ``scipy.special.ive`` in float64 (on the CPU: one value per datum),
    wrapped in an autograd function with d/dkappa log I_nu(kappa) = I_(nu+1)(kappa)/I_nu(kappa) + nu/kappa.

:class:`PowerSpherical` (De Cao & Aziz 2020), the well-behaved alternative::

    p(z; mu, kappa) = C(kappa, d) (1 + mu^T z)^kappa,
    C(kappa, d)^-1 = 2^(a+b) pi^b Gamma(a) / Gamma(a+b),   a = (d-1)/2 + kappa,  b = (d-1)/2,
    (1 + mu^T z) / 2 ~ Beta(a, b),   E[mu^T z] = kappa / (d - 1 + kappa),
    H = -log C(kappa, d) - kappa (log 2 + psi(a) - psi(a+b)).

    The cosine is an affine map of a Beta draw, so ``rsample`` is exact reparameterization with no
    rejection and no special functions beyond lgamma and digamma: it runs on any device.

References:
    T. R. Davidson, L. Falorsi, N. De Cao, T. Kipf and J. M. Tomczak, "Hyperspherical Variational
    Auto-Encoders", UAI 2018, https://arxiv.org/abs/1804.00891.
    N. De Cao and W. Aziz, "The Power Spherical distribution", ICML 2020 INNF+ workshop,
    https://arxiv.org/abs/2006.04437.
    A. T. A. Wood, "Simulation of the von Mises Fisher distribution", Communications in Statistics -
    Simulation and Computation 23(1), 1994.
    M. Figurnov, S. Mohamed and A. Mnih, "Implicit Reparameterization Gradients", NeurIPS 2018,
    https://arxiv.org/abs/1805.08498.

Example::

    >>> import torch
    >>> q = PowerSpherical(torch.tensor([0.0, 0.0, 1.0]), torch.tensor(10.0))
    >>> z = q.rsample((4,))
    >>> z.shape, bool(torch.allclose(z.norm(dim=-1), torch.ones(4), atol=1e-5))
    (torch.Size([4, 3]), True)
    >>> torch.distributions.kl_divergence(q, HypersphericalUniform(3)).shape
    torch.Size([])
"""
from __future__ import annotations

import math
from typing import Tuple

import numpy as np
import torch
from pyro.distributions import TorchDistribution, constraints
from torch.autograd.function import once_differentiable
from torch.distributions import Beta, Transform, register_kl

__all__ = ["StereographicChart", "HypersphericalUniform", "VonMisesFisher", "PowerSpherical", "log_bessel_ive", "bessel_ratio",
           "vmf_mean_cosine", "log_sphere_area", "householder"]

#: Gauss-Legendre nodes and weights on [-1, 1] for the implicit gradient's integral.
_NODES, _WEIGHTS = np.polynomial.legendre.leggauss(128)


def log_sphere_area(d: int) -> float:
    """log |S^(d-1)|, the surface area of the unit sphere in R^d: log(2 pi^(d/2) / Gamma(d/2))."""
    return math.log(2.0) + 0.5 * d * math.log(math.pi) - math.lgamma(0.5 * d)


def _ive_numpy(nu: float, kappa: np.ndarray) -> np.ndarray:
    """log ive(nu, kappa) = log I_nu(kappa) - kappa in float64, with the small-kappa series where ive underflows."""
    from scipy import special           # here, not at import: SciPy's start-up is paid by the runs that use it
    kappa = np.asarray(kappa, dtype=np.float64)
    flat = kappa.reshape(-1)
    value = special.ive(nu, flat)
    with np.errstate(divide="ignore"):
        out = np.log(value)
    tiny = ~(value > 0)
    if tiny.any():      # I_nu(k) ~ (k/2)^nu / Gamma(nu + 1) as k -> 0
        k = flat[tiny]
        out[tiny] = nu * np.log(k / 2.0) - math.lgamma(nu + 1.0) - k
    return out.reshape(kappa.shape)


def _ratio_numpy(nu: float, kappa: np.ndarray) -> np.ndarray:
    """I_(nu+1)(kappa) / I_nu(kappa) in float64."""
    return np.exp(_ive_numpy(nu + 1.0, kappa) - _ive_numpy(nu, kappa))


def _like(values: np.ndarray, like: torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(np.asarray(values, dtype=np.float64)).to(like.device, like.dtype)


class _LogIve(torch.autograd.Function):
    @staticmethod
    def forward(ctx, kappa, nu):
        k = kappa.detach().to("cpu", torch.float64).numpy()
        ctx.nu = nu
        ctx.save_for_backward(kappa)
        return _like(_ive_numpy(nu, k), kappa)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        (kappa,) = ctx.saved_tensors
        k = kappa.detach().to("cpu", torch.float64).numpy()
        # d/dk [log I_nu(k) - k] = I_(nu+1)(k) / I_nu(k) + nu / k - 1
        d = _ratio_numpy(ctx.nu, k) + ctx.nu / k - 1.0
        return grad * _like(d, kappa), None


def log_bessel_ive(nu: float, kappa: torch.Tensor) -> torch.Tensor:
    """log(I_nu(kappa) e^-kappa), differentiable in ``kappa`` (once)."""
    return _LogIve.apply(kappa, float(nu))


def bessel_ratio(nu: float, kappa: torch.Tensor) -> torch.Tensor:
    """I_(nu+1)(kappa) / I_nu(kappa), not differentiated (a value, as in the implicit gradient)."""
    k = kappa.detach().to("cpu", torch.float64).numpy()
    return _like(_ratio_numpy(float(nu), k), kappa)


def vmf_mean_cosine(d: int, kappa: torch.Tensor) -> torch.Tensor:
    """A_d(kappa) = E[mu^T z] under vMF(mu, kappa) on S^(d-1): I_(d/2)(kappa) / I_(d/2-1)(kappa), differentiable:
    its derivative is 1 - A^2 - (d-1) A / kappa, from the Bessel recurrences."""
    return _MeanCosine.apply(kappa, int(d))


class _MeanCosine(torch.autograd.Function):
    @staticmethod
    def forward(ctx, kappa, d):
        ctx.d = d
        a = bessel_ratio(d / 2.0 - 1.0, kappa)
        ctx.save_for_backward(kappa, a)
        return a

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        kappa, a = ctx.saved_tensors
        return grad * (1.0 - a * a - (ctx.d - 1) * a / kappa), None


def householder(loc: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Reflect ``y`` (values around e_1) by the Householder map that takes e_1 to the unit vector ``loc``:
    H = I - 2 u u^T with u = (e_1 - loc) / |e_1 - loc| (the identity where loc = e_1)."""
    e1 = torch.zeros_like(loc)
    e1[..., 0] = 1.0
    u = e1 - loc
    norm = u.norm(dim=-1, keepdim=True)
    u = torch.where(norm > 1e-6, u / norm.clamp_min(1e-6), torch.zeros_like(u))
    return y - 2.0 * (y * u).sum(-1, keepdim=True) * u


def _tangent_direction(shape: Tuple[int, ...], d: int, device, dtype) -> torch.Tensor:
    """v uniform on S^(d-2), embedded orthogonal to e_1: [..., d] with a leading 0."""
    v = torch.randn(shape + (d - 1,), device=device, dtype=dtype)
    v = v / v.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    return torch.cat([torch.zeros(shape + (1,), device=device, dtype=dtype), v], dim=-1)


class StereographicChart(Transform):
    """S^(d-1) minus one point as R^(d-1), for samplers that move in a Euclidean space (AIS's HMC).

    The stereographic projection from the pole p: with y = H z, H the Householder reflection that swaps p and e_d
    (the identity for p = e_d), u = y_(1:d-1) / (1 - y_d), and back z = H (2u, |u|^2 - 1) / (|u|^2 + 1). The point -p
    is at u = 0 and p at infinity (a set of measure zero). The surface measure is (2 / (1 + |u|^2))^(d-1) du, so a
    density on the sphere (the vMF's, the uniform's) becomes one on R^(d-1) by adding
    log |det J| = (d - 1) log(2 / (1 + |u|^2)). The pole ``p`` ``[..., d]`` may differ per datum; placing it opposite
    the posterior's mass keeps the chains near u = 0, where the map is close to an isometry (up to a factor 2).
    """

    domain = constraints.real_vector
    codomain = constraints.sphere
    bijective = True

    def __init__(self, pole: torch.Tensor, cache_size: int = 0):
        super().__init__(cache_size=cache_size)
        self.pole = pole / pole.norm(dim=-1, keepdim=True)
        e_d = torch.zeros_like(self.pole)
        e_d[..., -1] = 1.0
        v = e_d - self.pole
        self._v = v
        self._vv = (v * v).sum(-1, keepdim=True)

    def __eq__(self, other):
        return isinstance(other, StereographicChart) and other.pole.shape == self.pole.shape \
            and bool((other.pole == self.pole).all())

    def _reflect(self, y):
        vv = self._vv
        safe = torch.where(vv > 1e-12, vv, torch.ones_like(vv))
        reflected = y - 2.0 * self._v * (self._v * y).sum(-1, keepdim=True) / safe
        return torch.where(vv > 1e-12, reflected, y)

    def _call(self, u):
        sq = (u * u).sum(-1, keepdim=True)
        return self._reflect(torch.cat([2.0 * u, sq - 1.0], -1) / (sq + 1.0))

    def _inverse(self, z):
        y = self._reflect(z)
        return y[..., :-1] / (1.0 - y[..., -1:]).clamp_min(1e-12)

    def log_abs_det_jacobian(self, u, z):
        return (u.shape[-1]) * (math.log(2.0) - torch.log1p((u * u).sum(-1)))


class HypersphericalUniform(TorchDistribution):
    """The uniform distribution on S^(d-1) in R^d (batch shape ``batch_shape``, event ``(d,)``).

    Arguments:
        dim: d, the ambient dimension (d = 3 is the ordinary sphere).
        batch_shape: batch shape (default scalar).
    """

    arg_constraints = {}
    support = constraints.sphere
    has_rsample = True

    def __init__(self, dim: int, batch_shape=torch.Size(), device=None, dtype=torch.float32, validate_args=None):
        if int(dim) < 2:
            raise ValueError(f"a hypersphere needs dim >= 2 (S^1 is the circle), got {dim}")
        self.dim = int(dim)
        self._device = torch.device(device) if device is not None else torch.device("cpu")
        self._dtype = dtype
        super().__init__(torch.Size(batch_shape), torch.Size((self.dim,)), validate_args=False)

    def expand(self, batch_shape, _instance=None):
        return HypersphericalUniform(self.dim, batch_shape, self._device, self._dtype)

    def rsample(self, sample_shape=torch.Size()):
        shape = torch.Size(sample_shape) + self.batch_shape + self.event_shape
        z = torch.randn(shape, device=self._device, dtype=self._dtype)
        return z / z.norm(dim=-1, keepdim=True).clamp_min(1e-12)

    def log_prob(self, value):
        return torch.full(value.shape[:-1], -log_sphere_area(self.dim), device=value.device, dtype=value.dtype)

    def entropy(self):
        return torch.full(self.batch_shape, log_sphere_area(self.dim), device=self._device, dtype=self._dtype)

    @property
    def mean(self):
        return torch.zeros(self.batch_shape + self.event_shape, device=self._device, dtype=self._dtype)


class _Spherical(TorchDistribution):
    """What vMF and the Power Spherical share: a unit mean direction ``loc`` [..., d] and a concentration
    ``concentration`` [...] > 0, a cosine w = loc^T z drawn by the subclass, and the reflection."""

    arg_constraints = {"loc": constraints.sphere, "concentration": constraints.positive}
    support = constraints.sphere
    has_rsample = True

    def __init__(self, loc: torch.Tensor, concentration: torch.Tensor, validate_args=None):
        if loc.dim() < 1 or loc.shape[-1] < 2:
            raise ValueError(f"loc must end in the ambient dimension d >= 2, got shape {tuple(loc.shape)}")
        concentration = torch.as_tensor(concentration, dtype=loc.dtype, device=loc.device)
        batch_shape = torch.broadcast_shapes(loc.shape[:-1], concentration.shape)
        self.loc = loc.expand(batch_shape + loc.shape[-1:])
        self.concentration = concentration.expand(batch_shape)
        self.dim = loc.shape[-1]
        super().__init__(batch_shape, loc.shape[-1:], validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        batch_shape = torch.Size(batch_shape)
        return type(self)(self.loc.expand(batch_shape + self.event_shape), self.concentration.expand(batch_shape))

    def _cosine(self, shape: torch.Size) -> torch.Tensor:
        raise NotImplementedError

    def rsample(self, sample_shape=torch.Size()):
        shape = torch.Size(sample_shape) + self.batch_shape
        # the direction first, so that under a fixed seed it does not depend on how many rounds the
        # cosine's rejection sampler took (common random numbers across concentrations)
        v = _tangent_direction(tuple(shape), self.dim, self.loc.device, self.loc.dtype)
        w = self._cosine(shape)                                         # [*shape], differentiable in kappa
        side = torch.sqrt(((1.0 - w) * (1.0 + w)).clamp_min(0.0))      # no cancellation near w = 1
        e1 = torch.zeros_like(v)
        e1[..., 0] = 1.0
        y = w.unsqueeze(-1) * e1 + side.unsqueeze(-1) * v
        return householder(self.loc.expand(shape + self.event_shape), y)

    def sample(self, sample_shape=torch.Size()):
        with torch.no_grad():
            return self.rsample(sample_shape)


class VonMisesFisher(_Spherical):
    """The von Mises-Fisher distribution on S^(d-1) (see the module docstring for the equations).

    Arguments:
        loc: the mean direction mu, unit vectors [..., d].
        concentration: kappa > 0, [...] (broadcast with ``loc``'s batch shape).
    """

    @property
    def _nu(self) -> float:
        return self.dim / 2.0 - 1.0

    def log_normalizer(self) -> torch.Tensor:
        """log C_d(kappa) = (d/2 - 1) log kappa - (d/2) log 2 pi - log I_(d/2-1)(kappa)."""
        k = self.concentration
        return self._nu * torch.log(k) - 0.5 * self.dim * math.log(2 * math.pi) - (log_bessel_ive(self._nu, k) + k)

    def log_prob(self, value):
        if self._validate_args:
            self._validate_sample(value)
        return self.concentration * (self.loc * value).sum(-1) + self.log_normalizer()

    @property
    def mean(self):
        return vmf_mean_cosine(self.dim, self.concentration).unsqueeze(-1) * self.loc

    def entropy(self):
        return -self.concentration * vmf_mean_cosine(self.dim, self.concentration) - self.log_normalizer()

    def _cosine(self, shape: torch.Size) -> torch.Tensor:
        kappa = self.concentration.expand(shape)
        w = _wood_cosine(kappa.detach().to(torch.float64), self.dim)
        if not kappa.requires_grad:
            return w.to(kappa.dtype)
        dw = _implicit_cosine_grad(w, kappa.detach().to(torch.float64), self.dim)
        return w.to(kappa.dtype) + dw.to(kappa.dtype) * (kappa - kappa.detach())


def _wood_cosine(kappa: torch.Tensor, d: int) -> torch.Tensor:
    """Draw w = mu^T z under vMF(mu, kappa) on S^(d-1), for every element of ``kappa`` (float64), by Wood's
    rejection sampler: propose W = (1 - (1+b) Z) / (1 - (1-b) Z), Z ~ Beta((d-1)/2, (d-1)/2), accept when
    kappa W + (d-1) log(1 - x0 W) - c >= log U. Each element keeps drawing until its own proposal is accepted."""
    m1 = d - 1.0
    b = m1 / (2.0 * kappa + torch.sqrt(4.0 * kappa ** 2 + m1 ** 2))    # = (-2k + sqrt(4k^2 + m1^2)) / m1, stably
    x0 = (1.0 - b) / (1.0 + b)
    c = kappa * x0 + m1 * torch.log1p(-x0 * x0)
    beta = Beta(torch.full_like(kappa, m1 / 2.0), torch.full_like(kappa, m1 / 2.0))
    w = torch.empty_like(kappa)
    pending = torch.ones_like(kappa, dtype=torch.bool)
    for _ in range(1000):
        z = beta.sample()
        u = torch.rand_like(kappa)
        proposal = (1.0 - (1.0 + b) * z) / (1.0 - (1.0 - b) * z)
        accept = kappa * proposal + m1 * torch.log1p(-x0 * proposal) - c >= torch.log(u)
        take = pending & accept
        w = torch.where(take, proposal, w)
        pending = pending & ~accept
        if not bool(pending.any()):
            return w
    raise RuntimeError("the vMF rejection sampler did not accept within 1000 rounds (its acceptance rate is "
                       "above 1/2 for every kappa and d: report this with the kappa that caused it)")


def _implicit_cosine_grad(w: torch.Tensor, kappa: torch.Tensor, d: int) -> torch.Tensor:
    """dw/dkappa at fixed CDF value (the module docstring's formula), float64, elementwise over ``w``."""
    nodes = torch.as_tensor(_NODES, dtype=w.dtype, device=w.device)
    weights = torch.as_tensor(_WEIGHTS, dtype=w.dtype, device=w.device)
    a = bessel_ratio(d / 2.0 - 1.0, kappa)
    theta_w = torch.arccos(w.clamp(-1.0, 1.0))
    # the mode of the angle's density f: kappa sin^2 = (d - 2) cos
    c_mode = 2.0 * kappa / ((d - 2.0) + torch.sqrt((d - 2.0) ** 2 + 4.0 * kappa ** 2))
    theta_mode = torch.arccos(c_mode)
    head = w >= a        # less mass above w (theta < theta_w): integrate over [0, theta_w], else [theta_w, hi]
    # beyond max(theta_w, mode) + 12 / sqrt(kappa) the density is below e^-40 of its peak (it is ~ a chi
    # density of scale 1/sqrt(kappa) for large kappa; for small kappa this is the whole half-circle)
    hi = torch.minimum(torch.full_like(w, math.pi), torch.maximum(theta_w, theta_mode) + 12.0 / torch.sqrt(kappa))
    lo = torch.where(head, torch.zeros_like(w), theta_w)
    up = torch.where(head, theta_w, torch.maximum(hi, theta_w))
    half = 0.5 * (up - lo)
    theta = lo.unsqueeze(-1) + half.unsqueeze(-1) * (nodes + 1.0)            # [..., 128]
    log_sin = lambda t: torch.log(torch.sin(t).clamp_min(1e-300))  # noqa: E731
    log_f = kappa.unsqueeze(-1) * torch.cos(theta) + (d - 2.0) * log_sin(theta)
    log_f_w = kappa * w + (d - 2.0) * log_sin(theta_w)
    if d == 2:
        log_f, log_f_w = kappa.unsqueeze(-1) * torch.cos(theta), kappa * w
    ratio = torch.exp(log_f - log_f_w.unsqueeze(-1))
    integral = half * ((torch.cos(theta) - a.unsqueeze(-1)) * ratio * weights).sum(-1)
    grad = torch.sin(theta_w) * torch.where(head, integral, -integral)
    return torch.where(torch.isfinite(grad), grad, torch.zeros_like(grad))


class PowerSpherical(_Spherical):
    """The Power Spherical distribution on S^(d-1) (see the module docstring for the equations).

    Arguments:
        loc: the mean direction mu, unit vectors [..., d].
        concentration: kappa > 0, [...] (broadcast with ``loc``'s batch shape).
    """

    def _beta(self) -> Tuple[torch.Tensor, float]:
        b = (self.dim - 1) / 2.0
        return self.concentration + b, b

    def log_normalizer(self) -> torch.Tensor:
        """log C(kappa, d) = -[(a+b) log 2 + b log pi + lgamma(a) - lgamma(a+b)]."""
        a, b = self._beta()
        return -((a + b) * math.log(2.0) + b * math.log(math.pi) + torch.lgamma(a) - torch.lgamma(a + b))

    def log_prob(self, value):
        if self._validate_args:
            self._validate_sample(value)
        # the cosine is clamped to [-1, 1]: a unit vector rounded a hair past -mu (float32, near the antipode, where
        # a defensive draw from the uniform may land) has density 0 (log -inf), not log1p(-1 - eps) = NaN
        cosine = (self.loc * value).sum(-1).clamp(-1.0, 1.0)
        return self.log_normalizer() + self.concentration * torch.log1p(cosine)

    @property
    def mean(self):
        k = self.concentration
        return (k / (self.dim - 1 + k)).unsqueeze(-1) * self.loc

    def entropy(self):
        a, b = self._beta()
        return -self.log_normalizer() - self.concentration * (math.log(2.0) + torch.digamma(a) - torch.digamma(a + b))

    def _cosine(self, shape: torch.Size) -> torch.Tensor:
        a, b = self._beta()
        t = Beta(a.expand(shape), torch.full(shape, b, dtype=a.dtype, device=a.device)).rsample()
        return 2.0 * t - 1.0


@register_kl(VonMisesFisher, HypersphericalUniform)
def _kl_vmf_uniform(p, q):
    return -p.entropy() + log_sphere_area(p.dim)


@register_kl(PowerSpherical, HypersphericalUniform)
def _kl_power_spherical_uniform(p, q):
    return -p.entropy() + log_sphere_area(p.dim)
