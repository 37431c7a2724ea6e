"""Hyperbolic space in the Lorentz (hyperboloid) model, and the wrapped normal on it, for hyperbolic latents.

The hyperboloid H^n = {z in R^(n+1) : <z, z>_L = -1, z_0 > 0}, with the Lorentz inner product
<x, y>_L = -x_0 y_0 + sum_i x_i y_i, its origin mu_0 = (1, 0, ..., 0), and the geodesic distance
d(x, y) = arccosh(-<x, y>_L). The maps, for a point mu and a tangent vector u at mu (<mu, u>_L = 0)::

    exp_mu(u) = cosh(|u|_L) mu + sinh(|u|_L) u / |u|_L,              |u|_L = sqrt(<u, u>_L)
    log_mu(z) = arccosh(a) / sqrt(a^2 - 1) (z - a mu),                 a = -<mu, z>_L
    PT_{mu -> nu}(u) = u + <nu - a mu, u>_L / (a + 1) (mu + nu),        a = -<mu, nu>_L   (parallel transport)

:class:`WrappedNormal` (Nagano et al. 2019): draw v ~ N(0, diag(sigma^2)) in R^n, read (0, v) as a tangent vector
at mu_0, transport it to mu and map it onto H^n::

    z = exp_mu(PT_{mu_0 -> mu}((0, v))),
    log p(z) = log N(v; 0, diag(sigma^2)) - (n - 1) log(sinh(r) / r),   r = |v| = d(mu, z),

the second term the log-Jacobian of the exponential map (the volume of hyperbolic space grows as sinh^(n-1) r).
``log_prob`` inverts the construction: v = PT_{mu -> mu_0}(log_mu(z)) without its first coordinate.
The density is with respect to the hyperboloid's Riemannian volume; the zoo's hyperbolic prior is the wrapped
normal at mu_0 with sigma = 1, so log p(x, z) - log q(z | x) is a ratio of densities on the same measure.

**Numerics.** Points are kept in float64 inside the maps (cosh and sinh of a distance of 12 are 1e5, and
1 + <z, z>_L cancels in float32); arccosh(a) for a near 1 is computed as log1p(s + sqrt(s (s + 2))) with
s = a - 1, and sinh(r)/r by its series near 0. The maps invert each other to 1e-9 for tangent vectors up to
length 12, and to 1e-8 in Poincare coordinates for points at Poincare radius 1 - 1e-5, up to distance 16 from
the base point (``tests/test_hyperbolic.py``). Values handed in as float32 carry float32's rounding: at distance
r from the origin a coordinate is about e^r / 2, so keep latents well inside the ball (they are, under the prior).
:func:`to_poincare` gives the Poincare-ball coordinates z_(1:) / (1 + z_0) (for pictures).

References:
    Y. Nagano, S. Yamaguchi, Y. Fujita and M. Koyama, "A Wrapped Normal Distribution on Hyperbolic Space for
    Gradient-Based Learning", ICML 2019, https://arxiv.org/abs/1902.02992.
    E. Mathieu, C. Le Lan, C. J. Maddison, R. Tomioka and Y. W. Teh, "Continuous Hierarchical Representations
    with Poincare Variational Auto-Encoders", NeurIPS 2019, https://arxiv.org/abs/1901.06033.

Example::

    >>> import torch
    >>> q = WrappedNormal(exp_origin(torch.tensor([0.5, -0.2])), torch.tensor([0.3, 0.3]))
    >>> z = q.rsample((4,))
    >>> z.shape, bool(torch.allclose(lorentz_inner(z, z), -torch.ones(4), atol=1e-5))
    (torch.Size([4, 3]), True)
"""
from __future__ import annotations

import math

import torch
from pyro.distributions import TorchDistribution, constraints
from torch import nn
from torch.distributions import Transform

__all__ = ["WrappedNormal", "Gyroplane", "OriginChart", "lorentz_inner", "exp_map", "log_map", "parallel_transport", "exp_origin",
           "log_origin", "to_poincare", "from_poincare", "distance", "project"]


def lorentz_inner(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """<x, y>_L = -x_0 y_0 + sum_i x_i y_i over the last dimension."""
    return (x[..., 1:] * y[..., 1:]).sum(-1) - x[..., 0] * y[..., 0]


def _acosh_of(a_minus_1: torch.Tensor) -> torch.Tensor:
    """arccosh(1 + s) for s >= 0, without forming 1 + s: log1p(s + sqrt(s (s + 2)))."""
    s = a_minus_1.clamp_min(0.0)
    return torch.log1p(s + torch.sqrt(s * (s + 2.0)))


def _sinhc(r: torch.Tensor) -> torch.Tensor:
    """sinh(r) / r, 1 + r^2/6 near 0."""
    small = r < 1e-4
    safe = torch.where(small, torch.ones_like(r), r)
    return torch.where(small, 1.0 + r * r / 6.0, torch.sinh(safe) / safe)


def project(z_spatial: torch.Tensor) -> torch.Tensor:
    """The point of H^n with spatial part ``z_spatial`` [..., n]: z_0 = sqrt(1 + |z_(1:)|^2)."""
    return torch.cat([torch.sqrt(1.0 + (z_spatial * z_spatial).sum(-1, keepdim=True)), z_spatial], -1)


def distance(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The geodesic distance arccosh(-<x, y>_L)."""
    return _acosh_of(-lorentz_inner(x, y) - 1.0)


def exp_map(mu: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """exp_mu(u) for a tangent vector u at mu: the point at distance |u|_L along the geodesic in u's direction."""
    norm = torch.sqrt(lorentz_inner(u, u).clamp_min(0.0)).unsqueeze(-1)
    z = torch.cosh(norm) * mu + _sinhc(norm) * u
    return project(z[..., 1:])                    # back onto H^n: the same point, without rounding drift


def log_map(mu: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """log_mu(z): the tangent vector at mu whose exponential is z."""
    a_minus_1 = -lorentz_inner(mu, z) - 1.0
    r = _acosh_of(a_minus_1).unsqueeze(-1)
    a = (a_minus_1 + 1.0).unsqueeze(-1)
    # arccosh(a) / sqrt(a^2 - 1) = r / sinh(r)
    return (z - a * mu) / _sinhc(r)


def parallel_transport(mu: torch.Tensor, nu: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """PT_{mu -> nu}(u): the tangent vector u at mu carried along the geodesic to nu."""
    a = -lorentz_inner(mu, nu)
    coeff = lorentz_inner(nu - a.unsqueeze(-1) * mu, u) / (a + 1.0)
    return u + coeff.unsqueeze(-1) * (mu + nu)


def _origin_like(x: torch.Tensor) -> torch.Tensor:
    o = torch.zeros_like(x)
    o[..., 0] = 1.0
    return o


def exp_origin(v: torch.Tensor) -> torch.Tensor:
    """exp_{mu_0}((0, v)) for v in R^n: how an encoder's Euclidean output becomes a point of H^n."""
    r = v.norm(dim=-1, keepdim=True)
    return torch.cat([torch.cosh(r), _sinhc(r) * v], -1)


def log_origin(z: torch.Tensor) -> torch.Tensor:
    """v with exp_origin(v) = z: the spatial part of log_{mu_0}(z)."""
    return log_map(_origin_like(z), z)[..., 1:]


class OriginChart(Transform):
    """H^n as R^n: z = exp_(mu_0)((0, v)), a diffeomorphism of all of R^n onto H^n (geodesic polar coordinates at the
    origin), for samplers that move in R^n (AIS's HMC). In polar coordinates the hyperbolic volume is
    sinh(r)^(n-1) dr dOmega and the Euclidean one r^(n-1) dr dOmega, so a density on H^n with respect to its volume
    (the wrapped normal's) becomes one on R^n by adding log |det J| = (n - 1) log(sinh r / r), r = |v|: the same
    term the wrapped normal's log-density subtracts."""

    domain = constraints.real_vector
    codomain = constraints.real_vector
    bijective = True

    def __eq__(self, other):
        return isinstance(other, OriginChart)

    def _call(self, v):
        return exp_origin(v)

    def _inverse(self, z):
        return log_origin(z)

    def log_abs_det_jacobian(self, v, z):
        n = v.shape[-1]
        return (n - 1) * torch.log(_sinhc(v.norm(dim=-1)))


def to_poincare(z: torch.Tensor) -> torch.Tensor:
    """The Poincare-ball coordinates z_(1:) / (1 + z_0) of a point of H^n (the unit ball of R^n)."""
    return z[..., 1:] / (1.0 + z[..., :1])


def from_poincare(p: torch.Tensor) -> torch.Tensor:
    """The point of H^n at Poincare coordinates p (|p| < 1): (1 + |p|^2, 2 p) / (1 - |p|^2)."""
    sq = (p * p).sum(-1, keepdim=True)
    return torch.cat([1.0 + sq, 2.0 * p], -1) / (1.0 - sq)


class WrappedNormal(TorchDistribution):
    """The wrapped normal on H^n (see the module docstring for the construction and the density).

    Arguments:
        loc: mu, points of H^n [..., n + 1].
        scale: sigma > 0 [..., n], the standard deviations of the tangent Gaussian at the origin.
    """

    arg_constraints = {"scale": constraints.positive}
    support = constraints.real_vector
    has_rsample = True

    def __init__(self, loc: torch.Tensor, scale: torch.Tensor, validate_args=None):
        if loc.shape[-1] != scale.shape[-1] + 1:
            raise ValueError(f"loc is a point of H^n in R^(n+1) and scale has n entries: got {tuple(loc.shape)} and "
                             f"{tuple(scale.shape)}")
        batch_shape = torch.broadcast_shapes(loc.shape[:-1], scale.shape[:-1])
        self.loc = loc.expand(batch_shape + loc.shape[-1:])
        self.scale = scale.expand(batch_shape + scale.shape[-1:])
        self.n = scale.shape[-1]
        super().__init__(batch_shape, loc.shape[-1:], validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        batch_shape = torch.Size(batch_shape)
        return WrappedNormal(self.loc.expand(batch_shape + self.event_shape),
                             self.scale.expand(batch_shape + self.scale.shape[-1:]))

    def rsample(self, sample_shape=torch.Size()):
        shape = torch.Size(sample_shape) + self.batch_shape
        dtype = self.loc.dtype
        v = torch.randn(shape + (self.n,), device=self.loc.device, dtype=dtype) * self.scale
        loc = self.loc.expand(shape + self.event_shape).double()
        u = torch.cat([torch.zeros_like(v[..., :1]), v], -1).double()
        z = exp_map(loc, parallel_transport(_origin_like(loc), loc, u))
        return z.to(dtype)

    def _tangent(self, value: torch.Tensor) -> torch.Tensor:
        """v = PT_{mu -> mu_0}(log_mu(z)) without its (zero) first coordinate, float64."""
        loc = self.loc.double()
        z = project(value.double()[..., 1:])
        loc = loc.expand(z.shape)
        return parallel_transport(loc, _origin_like(loc), log_map(loc, z))[..., 1:]

    def log_prob(self, value):
        v = self._tangent(value)
        scale = self.scale.double()
        gauss = (-0.5 * (v / scale) ** 2 - torch.log(scale) - 0.5 * math.log(2 * math.pi)).sum(-1)
        r = v.norm(dim=-1)
        return (gauss - (self.n - 1) * torch.log(_sinhc(r))).to(value.dtype)

    @property
    def mean(self):
        """The Frechet mean is mu (the distribution is symmetric about it in the tangent space)."""
        return self.loc


class Gyroplane(nn.Module):
    """The gyroplane layer of Mathieu et al. (2019), a decoder's first layer that reads z in H^n as hyperbolic geometry.

    Each of the ``out_features`` units has an offset p_k in the Poincare ball and a normal a_k in R^n; its
    gyroplane is H_k = {y : <(-p_k) (+) y, a_k> = 0} ((+) Mobius addition), the hyperbolic analogue of the affine
    hyperplane {y : <y - p_k, a_k> = 0}, and the unit reads the signed distance of z to it, scaled as Ganea et al.'s
    hyperbolic logistic regression scales it::

        f_k(z) = lambda_pk |a_k| asinh( 2 <(-p_k) (+) z, a_k> / ((1 - |(-p_k) (+) z|^2) |a_k|) ),
        lambda_p = 2 / (1 - |p|^2),

    where |asinh(.)| is the distance d(z, H_k) (Mathieu et al., eq. 11, curvature -1). Written in the Lorentz model
    it is linear in z inside the asinh, with no Mobius sum to cancel near the boundary: H_k = {y : <y, n_k>_L = 0}
    for the unit spacelike vector n_k = (lambda <p, a^>, a^ + lambda <p, a^> p), a^ = a / |a|, so
    f_k(z) = lambda_pk |a_k| asinh(<z, n_k>_L), computed in float64 (``tests/test_hyperbolic.py`` checks it against
    the Poincare-ball formula and the distance to H_k found by search along it). Where p_k = 0 the unit is
    2 |a_k| asinh(<z_(1:), a^_k>): the gyroplanes through the origin.

    The offsets are parameterised in the origin's tangent space, p_k = to_poincare(exp_origin(b_k)), b_k in R^n, so
    every b is a point of the ball; a and b start as ``nn.Linear``'s weight and bias would.

    References:
        E. Mathieu, C. Le Lan, C. J. Maddison, R. Tomioka and Y. W. Teh, "Continuous Hierarchical Representations
        with Poincare Variational Auto-Encoders", NeurIPS 2019, https://arxiv.org/abs/1901.06033 (section 3.3).
        O.-E. Ganea, G. Becigneul and T. Hofmann, "Hyperbolic Neural Networks", NeurIPS 2018,
        https://arxiv.org/abs/1805.09112.
    """

    def __init__(self, in_features: int, out_features: int):
        super().__init__()
        self.in_features, self.out_features = int(in_features), int(out_features)
        init = nn.Linear(self.in_features, self.out_features)
        self.normal = nn.Parameter(init.weight.detach().clone())                       # a_k, [out, n]
        self.offset = nn.Parameter(init.weight.detach().new_empty(self.out_features, self.in_features)
                                   .uniform_(-1.0, 1.0) * init.bias.detach().abs().max())   # b_k, [out, n]

    def offsets(self) -> torch.Tensor:
        """p_k, the offsets in the Poincare ball, [out, n], float64."""
        return to_poincare(exp_origin(self.offset.double()))

    def plane_normals(self) -> torch.Tensor:
        """n_k, the unit spacelike normals of the gyroplanes in R^(n+1), [out, n + 1], float64."""
        p, a = self.offsets(), self.normal.double()
        a_hat = a / a.norm(dim=-1, keepdim=True)
        lam = 2.0 / (1.0 - (p * p).sum(-1, keepdim=True))
        pa = lam * (p * a_hat).sum(-1, keepdim=True)
        return torch.cat([pa, a_hat + pa * p], -1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if z.shape[-1] != self.in_features + 1:
            raise ValueError(f"a gyroplane layer on H^{self.in_features} reads points with {self.in_features + 1} "
                             f"coordinates, got {z.shape[-1]}")
        n = self.plane_normals()
        p = self.offsets()
        scale = 2.0 / (1.0 - (p * p).sum(-1)) * self.normal.double().norm(dim=-1)     # lambda_pk |a_k|
        zd = z.double()
        inner = zd[..., 1:] @ n[:, 1:].T - zd[..., :1] * n[:, 0]                     # <z, n_k>_L, [..., out]
        return (scale * torch.asinh(inner)).to(z.dtype)

    def extra_repr(self) -> str:
        return f"H^{self.in_features} -> {self.out_features}"
