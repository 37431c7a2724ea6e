"""Likelihoods for pixels with k discrete intensity levels, x_i in {0, ..., k-1}.

A density on [0, 1] is not a probability for such data: its "negative log-likelihood" is a differential
entropy and can be negative. Each distribution here is a probability mass function over the k^D
images, with the support check ``integer_interval(0, k-1)``, so its log-likelihood is a code length
(nats, or bits per dimension after dividing by D ln 2). The pixel level i sits at c_i = i / (k-1) on
the [0, 1] scale of the decoder's outputs.

``categorical``
    p(x_i = j | z) = softmax(l_i(z))_j, k logits per pixel (Tomczak's intro_dgm on the 8x8 digits).
``dlogistic``
    The discretized logistic (Kingma et al. 2016; Salimans et al. 2017): the mass of a logistic with
    location mu_i(z) and scale s_i(z) over the bin [c_j - h, c_j + h], h = 1 / (2(k-1)), where the
    first bin reaches down to -inf and the last up to +inf, so the k bins cover the real line::

        P(j) = sigma((c_j + h - mu) / s) - sigma((c_j - h - mu) / s)
        log P(j) = log sigma(b) + log sigma(-a) + log(1 - exp(a - b)),   a = (c_j - h - mu)/s < b = (c_j + h - mu)/s

    The last line is exact (sigma(b) - sigma(a) = sigma(b) sigma(-a) (1 - e^(a-b))) and never subtracts two
    nearly equal probabilities, so it stays finite in the tails where PixelCNN++'s direct difference needs
    its pdf fallback; a = -inf (first bin) and b = +inf (last bin) drop out as 0 terms.
``dmol``
    A mixture of M discretized logistics per pixel (Salimans et al. 2017's PixelCNN++ likelihood, one
    channel): P(j) = sum_m pi_m P_m(j), by logsumexp.
``dequant-uniform`` and ``dequant-flow``
    A continuous density p(y | z) on the [0, 1] scale (a Gaussian with learned per-pixel scale) made a
    model of the discrete data by dequantization: y = (x + u) / k with u in [0, 1)^D. For any q(u | x),
    Jensen's inequality gives the bound reported for the discrete data (Theis et al. 2016; Ho et al. 2019)::

        log P(x | z) = log int_[0,1)^D p((x + u)/k | z) k^-D du  >=  E_q(u|x)[log p((x + u)/k | z) - log q(u | x)] - D log k

    where -D log k is the change of variables from [0, k) to [0, 1]. ``dequant-uniform``: q = U[0, 1)^D,
    log q = 0. ``dequant-flow``: q(u | x) = sigmoid(f(eps; x)), eps ~ N(0, I), f a conditional affine
    autoregressive flow on x (Flow++'s variational dequantization, with a small flow), trained with the
    model. One u is drawn per evaluation of ``log_prob``: with the latent z, u is one more latent whose
    proposal is q(u | x), so the ELBO, the IWAE bound and the importance-sampled log p(x) over (z, u)
    stay bounds on log P(x), the discrete data's log-likelihood.

References:
    D. P. Kingma, T. Salimans, R. Jozefowicz, X. Chen, I. Sutskever and M. Welling, "Improved Variational
    Inference with Inverse Autoregressive Flow", NeurIPS 2016, https://arxiv.org/abs/1606.04934.
    T. Salimans, A. Karpathy, X. Chen and D. P. Kingma, "PixelCNN++", ICLR 2017, https://arxiv.org/abs/1701.05517.
    L. Theis, A. van den Oord and M. Bethge, "A note on the evaluation of generative models", ICLR 2016,
    https://arxiv.org/abs/1511.01844.
    J. Ho, X. Chen, A. Srinivas, Y. Duan and P. Abbeel, "Flow++", ICML 2019, https://arxiv.org/abs/1902.00275.
    J. M. Tomczak, "Deep Generative Modeling", Springer 2022, and its intro_dgm code.

Example::

    >>> import torch
    >>> p = DiscretizedLogistic(torch.zeros(3), torch.ones(3), levels=4)
    >>> total = p.log_prob(torch.arange(4.).unsqueeze(-1)).exp().sum(0)     # over the 4 levels, per pixel
    >>> torch.allclose(total, torch.ones(3))
    True
"""
from __future__ import annotations

import math
from typing import Optional

import pyro.distributions as dist
import pyro.distributions.transforms as T
import torch
import torch.nn.functional as F
from pyro.distributions import TorchDistribution
from torch import nn
from torch.distributions import constraints

from zoo.core.errors import ZooError

__all__ = ["LEVEL_LIKELIHOODS", "DEQUANTIZED", "DiscretizedLogistic", "DiscretizedLogisticMixture",
           "Dequantized", "LevelsCategorical", "LevelsLikelihood", "levels_of", "pixel_levels_table"]

#: The ``--likelihood`` choices for data with k levels, the name and one line each.
LEVEL_LIKELIHOODS = {
    "categorical": "a categorical over the k levels per pixel",
    "dlogistic": "a discretized logistic per pixel (edge bins to +-inf)",
    "dmol": "a mixture of discretized logistics per pixel (PixelCNN++)",
    "dequant-uniform": "a Gaussian density on [0, 1], uniformly dequantized (bound on the discrete log P(x))",
    "dequant-flow": "a Gaussian density on [0, 1], dequantized by a flow q(u | x) (Flow++)",
}
DEQUANTIZED = ("dequant-uniform", "dequant-flow")

#: The smallest logistic scale on the [0, 1] scale: far below one bin at 256 levels.
MIN_SCALE = 1e-3


def _bin_edges(value: torch.Tensor, loc: torch.Tensor, scale: torch.Tensor, levels: int):
    """The standardized edges (a, b) of each value's bin, a = -inf for the first, b = +inf for the last."""
    centre = value / (levels - 1)
    half = 0.5 / (levels - 1)
    a = torch.where(value <= 0, torch.full_like(centre, -math.inf), (centre - half - loc) / scale)
    b = torch.where(value >= levels - 1, torch.full_like(centre, math.inf), (centre + half - loc) / scale)
    return a, b


def _log_bin_mass(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """log(sigma(b) - sigma(a)) for a < b, either infinite, without cancellation (a = -inf or b = +inf make
    their terms 0: logsigmoid(+inf) = 0 and expm1(-inf) = -1)."""
    return F.logsigmoid(b) + F.logsigmoid(-a) + torch.log(-torch.expm1(a - b)).clamp(min=-1e4)


class DiscretizedLogistic(TorchDistribution):
    """A logistic on the [0, 1] scale, discretized into ``levels`` bins (module docstring), one per pixel.

    Arguments:
        loc: mu on the [0, 1] scale, any batch shape.
        scale: s > 0, broadcastable with ``loc``.
        levels: k, the number of intensity levels.
    """

    arg_constraints = {"loc": constraints.real, "scale": constraints.positive}
    has_enumerate_support = True

    def __init__(self, loc: torch.Tensor, scale: torch.Tensor, levels: int, validate_args=None):
        self.loc, self.scale = torch.broadcast_tensors(loc, scale)
        self.levels = int(levels)
        super().__init__(self.loc.shape, torch.Size(), validate_args=validate_args)

    @constraints.dependent_property(is_discrete=True, event_dim=0)
    def support(self):
        return constraints.integer_interval(0, self.levels - 1)

    def expand(self, batch_shape, _instance=None):
        batch_shape = torch.Size(batch_shape)
        return DiscretizedLogistic(self.loc.expand(batch_shape), self.scale.expand(batch_shape), self.levels,
                                   validate_args=False)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        if self._validate_args:
            self._validate_sample(value)
        a, b = _bin_edges(value, self.loc, self.scale, self.levels)
        return _log_bin_mass(a, b)

    def sample(self, sample_shape=torch.Size()):
        shape = self._extended_shape(sample_shape)
        with torch.no_grad():
            u = torch.rand(shape, dtype=self.loc.dtype, device=self.loc.device).clamp(1e-6, 1 - 1e-6)
            y = self.loc + self.scale * (torch.log(u) - torch.log1p(-u))
            return _quantize(y, self.levels)

    def enumerate_support(self, expand=True):
        return _enumerate_levels(self, expand)

    @property
    def mean(self) -> torch.Tensor:
        return _level_mean(self)


class DiscretizedLogisticMixture(TorchDistribution):
    """A mixture of M discretized logistics per pixel: P(j) = sum_m pi_m P_m(j) (PixelCNN++, one channel).

    Arguments:
        logits: mixture logits ``[..., M]``.
        loc, scale: each component's mu and s on the [0, 1] scale, ``[..., M]``.
        levels: k.
    """

    arg_constraints = {"logits": constraints.real, "loc": constraints.real, "scale": constraints.positive}
    has_enumerate_support = True

    def __init__(self, logits: torch.Tensor, loc: torch.Tensor, scale: torch.Tensor, levels: int,
                 validate_args=None):
        self.logits, self.loc, self.scale = torch.broadcast_tensors(logits, loc, scale)
        self.levels = int(levels)
        super().__init__(self.loc.shape[:-1], torch.Size(), validate_args=validate_args)

    @constraints.dependent_property(is_discrete=True, event_dim=0)
    def support(self):
        return constraints.integer_interval(0, self.levels - 1)

    def expand(self, batch_shape, _instance=None):
        shape = torch.Size(batch_shape) + self.loc.shape[-1:]
        return DiscretizedLogisticMixture(self.logits.expand(shape), self.loc.expand(shape),
                                          self.scale.expand(shape), self.levels, validate_args=False)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        if self._validate_args:
            self._validate_sample(value)
        a, b = _bin_edges(value.unsqueeze(-1), self.loc, self.scale, self.levels)
        return torch.logsumexp(self.logits.log_softmax(-1) + _log_bin_mass(a, b), dim=-1)

    def sample(self, sample_shape=torch.Size()):
        shape = self._extended_shape(sample_shape)
        with torch.no_grad():
            m = dist.Categorical(logits=self.logits).sample(sample_shape).unsqueeze(-1)
            loc = torch.gather(self.loc.expand(shape + self.loc.shape[-1:]), -1, m).squeeze(-1)
            scale = torch.gather(self.scale.expand(shape + self.loc.shape[-1:]), -1, m).squeeze(-1)
            return DiscretizedLogistic(loc, scale, self.levels).sample()

    def enumerate_support(self, expand=True):
        return _enumerate_levels(self, expand)

    @property
    def mean(self) -> torch.Tensor:
        return _level_mean(self)


class LevelsCategorical(dist.Categorical):
    """``Categorical`` over the levels 0..k-1 whose ``mean`` is E[x_i] = sum_j j p_j (torch's is NaN), for the
    reconstruction and sample plots."""

    @property
    def mean(self) -> torch.Tensor:
        return (self.probs * torch.arange(self.probs.shape[-1], dtype=self.probs.dtype,
                                          device=self.probs.device)).sum(-1)

    def expand(self, batch_shape, _instance=None):
        return LevelsCategorical(logits=self.logits.expand(torch.Size(batch_shape) + self.logits.shape[-1:]),
                                 validate_args=False)


def _level_mean(d) -> torch.Tensor:
    """E[x] = sum_j j P(j) of a distribution over the levels 0..k-1."""
    values = d.enumerate_support(expand=False)
    return (d.log_prob(values).exp() * values).sum(0)


def _quantize(y: torch.Tensor, levels: int) -> torch.Tensor:
    """The level whose bin holds y on the [0, 1] scale (the first and last bins open to +-inf)."""
    return torch.clamp(torch.round(y * (levels - 1)), 0, levels - 1)


def _enumerate_levels(d, expand: bool) -> torch.Tensor:
    values = torch.arange(d.levels, dtype=d.loc.dtype, device=d.loc.device)
    values = values.reshape((-1,) + (1,) * len(d.batch_shape))
    return values.expand((-1,) + tuple(d.batch_shape)) if expand else values


class Dequantized(TorchDistribution):
    """The dequantization bound as a distribution over images x in {0, ..., k-1}^D (module docstring).

    ``log_prob(x)`` = log p((x + u)/k | z) - log q(u | x) - D log k with one u ~ q(u | x): an unbiased
    estimate of a lower bound on log P(x | z), so with the latents it is one more sampled latent.

    Arguments:
        density: p(y | z) on the [0, 1] scale, event shape ``(D,)``.
        levels: k.
        dequantizer: ``None`` for uniform u, else a module whose ``rsample_and_log_prob(x)`` draws
            u ~ q(u | x) (reparameterized) with its log-density.
    """

    arg_constraints = {}

    def __init__(self, density, levels: int, dequantizer: Optional[nn.Module] = None, validate_args=None):
        self.density, self.levels, self.dequantizer = density, int(levels), dequantizer
        super().__init__(density.batch_shape, density.event_shape, validate_args=validate_args)

    @constraints.dependent_property(is_discrete=True, event_dim=1)
    def support(self):
        return constraints.independent(constraints.integer_interval(0, self.levels - 1), 1)

    def expand(self, batch_shape, _instance=None):
        return Dequantized(self.density.expand(batch_shape), self.levels, self.dequantizer, validate_args=False)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        if self._validate_args:
            self._validate_sample(value)
        value = value.expand(torch.broadcast_shapes(value.shape, self.batch_shape + self.event_shape))
        if self.dequantizer is None:
            u, log_q = torch.rand_like(value), value.new_zeros(value.shape[:-1])
        else:
            u, log_q = self.dequantizer.rsample_and_log_prob(value, self.levels)
        D = self.event_shape[0]
        return self.density.log_prob((value + u) / self.levels) - log_q - D * math.log(self.levels)

    def sample(self, sample_shape=torch.Size()):
        with torch.no_grad():
            y = self.density.sample(sample_shape)
            return torch.clamp(torch.floor(y * self.levels), 0, self.levels - 1)

    @property
    def mean(self):
        return self.density.mean * self.levels - 0.5


class FlowDequantizer(nn.Module):
    """q(u | x) on (0, 1)^D: u = sigmoid(f(eps; x)), eps ~ N(0, I), f a conditional affine autoregressive flow
    whose context is x on the [0, 1] scale (Flow++'s variational dequantization, with a small flow)."""

    def __init__(self, x_dim: int, hidden: int = 64):
        super().__init__()
        self.flow = T.conditional_affine_autoregressive(x_dim, context_dim=x_dim, hidden_dims=[hidden])
        self.register_buffer("zero", torch.zeros(x_dim))

    def rsample_and_log_prob(self, x: torch.Tensor, levels: int):
        base = dist.Normal(self.zero, torch.ones_like(self.zero)).to_event(1)
        q = dist.ConditionalTransformedDistribution(base, [self.flow, T.SigmoidTransform()])
        q = q.condition(x / (levels - 1))
        u = q.rsample(x.shape[:-1])
        return u, q.log_prob(u)        # the transforms cache eps -> u, so nothing is inverted


class LevelsLikelihood(nn.Module):
    """p(x | z) for k-level pixels from a decoder's output: holds the parameters that are not the decoder's
    (the dequantized Gaussian's log-scale, the dequantizing flow) and says how many outputs it reads.

    Arguments:
        kind: one of :data:`LEVEL_LIKELIHOODS`.
        x_dim: D, pixels per image.
        levels: k >= 2.
        mixtures: M, components of ``dmol``.
    """

    def __init__(self, kind: str, x_dim: int, levels: Optional[int], mixtures: int = 5):
        super().__init__()
        if kind not in LEVEL_LIKELIHOODS:
            raise ZooError(f"unknown likelihood {kind!r}; use one of {', '.join(LEVEL_LIKELIHOODS)}")
        if levels is None or int(levels) < 2:
            raise ZooError(f"the {kind} likelihood scores pixels with k discrete levels, and this model was given "
                           f"levels={levels}; use a dataset of levels (digits17) or give --levels K")
        self.kind, self.x_dim, self.levels, self.mixtures = kind, int(x_dim), int(levels), int(mixtures)
        if kind in DEQUANTIZED:
            self.log_scale = nn.Parameter(torch.full((x_dim,), -2.0))
        if kind == "dequant-flow":
            self.dequantizer = FlowDequantizer(x_dim)

    @property
    def outputs_per_pixel(self) -> int:
        """How many decoder outputs one pixel reads."""
        return {"categorical": self.levels, "dlogistic": 2, "dmol": 3 * self.mixtures}.get(self.kind, 1)

    def forward(self, out: torch.Tensor) -> TorchDistribution:
        """p(x | z) with event shape ``(D,)`` from the decoder's output ``[..., D * outputs_per_pixel]``."""
        D, k = self.x_dim, self.levels
        if self.kind in DEQUANTIZED:
            density = dist.Normal(out, torch.exp(self.log_scale)).to_event(1)
            return Dequantized(density, k, getattr(self, "dequantizer", None))
        per_pixel = out.reshape(out.shape[:-1] + (D, self.outputs_per_pixel))
        if self.kind == "categorical":
            return LevelsCategorical(logits=per_pixel).to_event(1)
        if self.kind == "dlogistic":
            loc, s = per_pixel.unbind(-1)
            return DiscretizedLogistic(loc, F.softplus(s) + MIN_SCALE, k).to_event(1)
        logits, loc, s = per_pixel.chunk(3, dim=-1)
        return DiscretizedLogisticMixture(logits, loc, F.softplus(s) + MIN_SCALE, k).to_event(1)


def levels_of(fn) -> Optional[int]:
    """k for a pixel distribution whose support is ``integer_interval(0, k-1)`` or boolean (k = 2), else ``None``."""
    support = fn.support
    while isinstance(support, constraints.independent):
        support = support.base_constraint
    if support is constraints.boolean:
        return 2
    if isinstance(support, constraints.integer_interval) and support.lower_bound == 0:
        return int(support.upper_bound) + 1
    return None


def pixel_levels_table(fn) -> torch.Tensor:
    """log p(x_i = j | z) for every pixel i and level j, ``[..., D, k]``, from a factorized pixel likelihood
    (``Independent`` of a univariate discrete distribution): its ``log_prob`` over the enumerated levels.
    The entropy coder's per-pixel categorical (:mod:`zoo.evaluation.bitsback`)."""
    base = fn
    while isinstance(base, dist.Independent) or isinstance(base, torch.distributions.Independent):
        base = base.base_dist
    k = levels_of(base)
    if k is None or base.event_shape != torch.Size() or base is fn:
        raise ZooError(f"{type(fn).__name__} is not a factorized likelihood over discrete pixel levels; the coder "
                       f"needs p(x | z) = prod_i p(x_i | z) with each p(x_i | z) over {{0, ..., k-1}}")
    values = torch.arange(k, dtype=torch.float32, device=_device(base)).reshape((k,) + (1,) * len(base.batch_shape))
    table = base.log_prob(values.expand((k,) + tuple(base.batch_shape)))
    return table.movedim(0, -1)


def _device(d) -> torch.device:
    for name in ("logits", "loc", "probs"):
        if name in d.__dict__ and torch.is_tensor(d.__dict__[name]):
            return d.__dict__[name].device
    return torch.device("cpu")
