"""Learned priors p(z) for the top latent layer of a VAE: a model option, ``--prior``.

Four priors, each a module whose call returns a Pyro distribution over one datum's z
(batch shape ``()``, event shape ``(D,)``) with an **exact** log-density, so the harness's
importance-sampled log p(x) stays exact in its prior term:

``standard``
    p(z) = N(z; 0, I).
``mog``
    A mixture of K Gaussians with learned weights, means and diagonal scales,
    p(z) = sum_k pi_k N(z; mu_k, diag(sigma_k^2)).
``vampprior``
    The "variational mixture of posteriors" of Tomczak & Welling (2018): the encoder's
    aggregate posterior over K learned pseudo-inputs u_k,

        p(z) = 1/K sum_k q_phi(z | u_k).

    The components are computed with the guide's own encoder, which the model borrows
    (``borrows_guide``, :class:`~zoo.core.contract.Borrowed`): nothing is owned twice, and the
    ``dreg`` estimator, which needs disjoint model and guide parameters, is refused. The guide
    must be amortized with Normal sites (``amortized``, mean-field or ``--structured``); a
    per-datum guide has no encoder to evaluate at u_k and is refused. For a site that a
    structured guide conditions on its children (z2 in q(z1 | x) q(z2 | z1, x)), the k-th
    component is q(z2 | E_q[z1 | u_k], u_k): the guide evaluated at the pseudo-input with its
    children at their means, which keeps every component a diagonal Gaussian and the
    log-density exact. (Tomczak & Welling's hierarchical VampPrior uses q(z2 | u_k) of their
    top-down encoder, where z2 reads x alone; with the mean-field amortized guide, ours is that.)
    Pseudo-inputs are hardtanh(0, 1) of free parameters initialized N(0.05, 0.01^2), as in
    their code. Use units that cannot saturate (``--activation gated``, their networks, or relu):
    a tanh encoder saturates into a constant map under this prior, and the posterior collapses
    (:mod:`zoo.core.nn`; ``tests/test_priors.py`` shows it on the digits).
``flow``
    A masked autoregressive flow (MAF, Papamakarios et al. 2017) on N(0, I): eps = T(z) with
    T a stack of affine autoregressive maps (``pyro.distributions.transforms.affine_autoregressive``)
    and reversing permutations, log p(z) = log N(T(z); 0, I) + log |det dT/dz|. The density
    is one pass of each network; sampling inverts them (D passes), needed only for ``sample``.

Mixture log-densities are a log-sum-exp over the components, evaluated with one matrix
product (:class:`DiagonalNormalMixture`), so K = 500 pseudo-inputs stay affordable.

References:
    J. M. Tomczak and M. Welling, "VAE with a VampPrior", AISTATS 2018,
    https://arxiv.org/abs/1705.07120.
    G. Papamakarios, T. Pavlakou and I. Murray, "Masked Autoregressive Flow for Density
    Estimation", NeurIPS 2017, https://arxiv.org/abs/1705.07057.

Example::

    >>> import torch
    >>> from zoo.core.contract import LatentSite
    >>> p = build_prior("mog", LatentSite("z", (2,)), components=3)
    >>> p().log_prob(torch.zeros(5, 2)).shape
    torch.Size([5])
"""
from __future__ import annotations

import math
import functools
from dataclasses import dataclass
from typing import Callable, Optional

import pyro.distributions as dist
import torch
import torch.nn.functional as F
from pyro.distributions.transforms import Permute, affine_autoregressive
from torch import nn
from torch.distributions import constraints

from zoo.core.contract import Borrowed, LatentSite
from zoo.core.distributions import ShapedIndependent, StandardNormal, is_capturing
from zoo.core.errors import ZooError
from zoo.core.latents import FamilyPrior
from zoo.core.modes import held_generation
from zoo.core.params import register_module
from zoo.core.components import Options, OptionError, option

__all__ = ["PRIORS", "PriorOptions", "LearnedPrior", "DiagonalNormalMixture", "build_prior", "StandardPrior",
           "MixturePrior", "VampPrior", "FlowPrior", "PriorMixin", "PriorPart", "prior_part", "STANDARD_PRIOR"]

PRIORS = ("standard", "mog", "vampprior", "flow")

#: K when --prior-components is not given
DEFAULT_COMPONENTS = {"mog": 10, "vampprior": 500}


@dataclass
class PriorOptions(Options):
    """The prior options of a model with a learned prior on its top latent layer."""

    prior: str = option("standard", "prior on the top latent layer: standard N(0, I), mog (mixture of Gaussians), "
                        "vampprior (Tomczak & Welling 2018) or flow (MAF)", choices=PRIORS, checkpoint="shape")
    prior_components: Optional[int] = option(None, "K, components of a mog (default 10) or pseudo-inputs of a "
                                             "vampprior (default 500)", minimum=1, checkpoint="shape")
    prior_flows: int = option(2, "autoregressive steps of a flow prior", minimum=1, checkpoint="shape")

    def validate(self) -> None:
        super().validate()
        if self.prior_components is not None and self.prior not in DEFAULT_COMPONENTS:
            raise OptionError("prior_components", f"sets the components of a mog or vampprior prior, not of "
                              f"prior {self.prior!r}: drop it, or use prior mog or vampprior")


class DiagonalNormalMixture(dist.TorchDistribution):
    """p(z) = sum_k softmax(logits)_k N(z; loc_k, diag(scale_k^2)), exact log-density.

    ``log_prob`` forms every component's log-density at once from the expansion
    sum_d (z_d - mu_kd)^2 / s_kd^2 = z^2 . (1/s_k^2) - 2 z . (mu_k / s_k^2) + sum_d mu_kd^2 / s_kd^2,
    two matrix products instead of a ``[..., K, D]`` tensor, then a log-sum-exp over k.

    The expansion cancels: near a narrow component (z_d ~ mu_kd, s_kd ~ 0.01) its three terms are each
    ~1e4 per unit and their difference is O(1), which float32 gets wrong by tenths of a nat over 40 units.
    So the log-density is formed in float64 and returned in the value's dtype; its error is then that
    of rounding the result (``tests/test_priors.py`` checks narrow components in float32).

    Arguments:
        logits: ``[K]`` unnormalized log mixture weights.
        loc, scale: ``[K, D]`` component means and standard deviations.
    """

    arg_constraints = {"logits": constraints.real_vector, "loc": constraints.real,
                       "scale": constraints.positive}
    support = constraints.real_vector
    has_rsample = False

    def __init__(self, logits: torch.Tensor, loc: torch.Tensor, scale: torch.Tensor, batch_shape=torch.Size(),
                 validate_args=None):
        self.logits, self.loc, self.scale = logits, loc, scale
        super().__init__(torch.Size(batch_shape), loc.shape[-1:], validate_args=validate_args)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        z, loc, scale = value.double(), self.loc.double(), self.scale.double()   # float64: see the docstring
        precision = scale.pow(-2)                                               # [K, D]
        quadratic = (z.pow(2) @ precision.T - 2 * z @ (loc * precision).T
                     + (loc.pow(2) * precision).sum(-1))                          # [..., K]
        log_norm = -scale.log().sum(-1) - 0.5 * loc.shape[-1] * math.log(2 * math.pi)
        log_p = torch.logsumexp(F.log_softmax(self.logits.double(), -1) + log_norm - 0.5 * quadratic, dim=-1)
        log_p = log_p.to(value.dtype)
        return log_p.expand(torch.broadcast_shapes(log_p.shape, self.batch_shape))

    def sample(self, sample_shape=torch.Size()) -> torch.Tensor:
        shape = torch.Size(sample_shape) + self.batch_shape
        with torch.no_grad():
            k = torch.distributions.Categorical(logits=self.logits).sample(shape)
            return self.loc[k] + self.scale[k] * torch.randn(k.shape + self.loc.shape[-1:], dtype=self.loc.dtype,
                                                              device=self.loc.device)

    @property
    def mean(self) -> torch.Tensor:
        mean = (F.softmax(self.logits, -1).unsqueeze(-1) * self.loc).sum(-2)
        return mean.expand(self.batch_shape + mean.shape)

    def expand(self, batch_shape, _instance=None):
        return DiagonalNormalMixture(self.logits, self.loc, self.scale, batch_shape)


class LearnedPrior(nn.Module):
    """A prior on one latent site. Calling it returns p(z) (batch shape ``()``, event ``(D,)``).

    Class attributes:
        borrows_guide: the prior computes with the model's guide (VampPrior), bound by :meth:`bind_guide`.
    """

    borrows_guide = False

    def __init__(self, site: LatentSite):
        super().__init__()
        if len(site.event_shape) != 1 or site.support != "real":
            raise ZooError(f"a learned prior needs a real latent with a 1-D event shape, not {site.name!r}")
        self.site = site
        self.dim = site.event_shape[0]

    def check_guide(self, guide: nn.Module) -> None:
        """Raise :class:`ZooError` unless this prior can compute with ``guide``."""

    def bind_guide(self, guide: nn.Module) -> None:
        pass


class StandardPrior(LearnedPrior):
    """p(z) = N(0, I)."""

    def __init__(self, site: LatentSite):
        super().__init__(site)
        self.register_buffer("loc", torch.zeros(self.dim), persistent=False)   # checkpoints hold no constant
        self.register_buffer("scale", torch.ones(self.dim), persistent=False)

    def forward(self):
        """N(0, I), scored in fewer operations (``StandardNormal``). One object while the buffers are the same tensors
        (a move to another device or dtype makes new ones) and Pyro's argument validation is as it was (an expansion
        keeps the setting it was made with), so that each step's plate finds its expansion to the minibatch made
        (``ShapedIndependent``). A step being captured as a graph gets one made afresh from the buffers it reads
        (``zoo.core.distributions.capturing``), so the graph records it from its inputs."""
        if is_capturing():
            return ShapedIndependent(StandardNormal(self.loc, self.scale), 1)
        validate = torch.distributions.Distribution._validate_args
        made = self.__dict__.get("_made")
        if made is None or made[0] is not self.loc or made[1] is not self.scale or made[2] != validate:
            prior = ShapedIndependent(StandardNormal(self.loc, self.scale), 1)
            made = self.__dict__["_made"] = (self.loc, self.scale, validate, prior)
        return made[3]


class MixturePrior(LearnedPrior):
    """p(z) = sum_k pi_k N(z; mu_k, diag(sigma_k^2)) with learned pi, mu, sigma (K components).

    The means start as draws from N(0, I) and the scales at 1, so the initial prior is a
    spread-out version of the standard one.
    """

    def __init__(self, site: LatentSite, components: int = 10):
        super().__init__(site)
        if components < 1:
            raise ZooError(f"a mixture prior needs at least one component, got {components}")
        self.logits = nn.Parameter(torch.zeros(components))
        self.loc = nn.Parameter(torch.randn(components, self.dim))
        self.raw_scale = nn.Parameter(torch.full((components, self.dim), math.log(math.e - 1)))   # softplus = 1

    def forward(self):
        return DiagonalNormalMixture(self.logits, self.loc, F.softplus(self.raw_scale) + 1e-5)


class VampPrior(LearnedPrior):
    """p(z) = 1/K sum_k q_phi(z | u_k): the guide's encoder at K learned pseudo-inputs u_k.

    Arguments:
        site: the latent site the prior is on (the model's top layer).
        x_dim: dimension of a pseudo-input (the data's).
        components: K, the number of pseudo-inputs (default 500, Tomczak & Welling).
    """

    borrows_guide = True

    def __init__(self, site: LatentSite, x_dim: int, components: int = 500):
        super().__init__(site)
        if components < 1:
            raise ZooError(f"a VampPrior needs at least one pseudo-input, got {components}")
        self.raw_pseudo_inputs = nn.Parameter(0.05 + 0.01 * torch.randn(components, x_dim))
        self._guide: Optional[Borrowed] = None

    @property
    def pseudo_inputs(self) -> torch.Tensor:
        """u_k, ``[K, x_dim]``, in [0, 1] like the (binarized) data the encoder reads."""
        return F.hardtanh(self.raw_pseudo_inputs, 0.0, 1.0)

    def check_guide(self, guide: nn.Module) -> None:
        family = getattr(guide, "family", type(guide).__name__)
        if not getattr(guide, "amortized", False) or not getattr(guide, "has_marginal_posterior", False):
            raise ZooError(f"prior 'vampprior' is the encoder's q(z | u) at learned pseudo-inputs, and the {family!r} "
                           f"guide has no amortized encoder; use --guide amortized (optionally --structured), or "
                           f"another prior")
        if not getattr(guide, "normal_sites", False):
            raise ZooError(f"prior 'vampprior' needs q(z | u_k) to be a Gaussian with a closed-form density, and the "
                           f"{family!r} guide's is a flow; use --guide amortized (optionally --structured), or "
                           f"another prior")

    def bind_guide(self, guide: nn.Module) -> None:
        self._guide = Borrowed(guide)

    def components(self, u: torch.Tensor):
        """q(site | u) for each row of ``u``: the guide's Normal, with the site's children (in a
        structured guide) at their means E_q[z_child | u]."""
        if self._guide is None:
            raise ZooError("the VampPrior has no guide bound: build the guide with zoo.build_guide(name, model)")
        return self._guide.module.marginal_posterior(self.site.name, u)

    def forward(self):
        guide = self._guide.module if self._guide is not None else None
        loc, scale = self._kept_components() if guide is not None else (None, None)
        if loc is None:
            q = self.components(self.pseudo_inputs).base_dist      # Normal, batch [K, D]
            loc, scale = q.loc, q.scale
        register_module(getattr(guide, "module_name", "encoder"), guide)    # the borrowed encoder's parameters
        K = loc.shape[0]
        return DiagonalNormalMixture(torch.zeros(K, dtype=loc.dtype, device=loc.device), loc, scale)

    def _kept_components(self):
        """The components' (loc, scale) computed once while nothing can change them: in eval mode, inside a
        :func:`zoo.core.modes.frozen_parameters` block (AIS, BDMC, SMC and IS hold the model so), and for as long as
        the pseudo-inputs and every parameter of the encoder are the same tensors at the same version and storage
        (``load_state_dict`` or an in-place update inside the block is seen). Outside such a block nothing is kept:
        a fused optimizer step changes a parameter without moving its version. The K pseudo-inputs through the
        encoder were a third of AIS's time on the HVAE + VampPrior model, recomputed at every leapfrog step.
        ``(None, None)`` where they must be computed afresh."""
        generation = held_generation()
        if self.training or generation is None or is_capturing():
            return None, None
        params = [self.raw_pseudo_inputs, *self._guide.module.parameters()]
        if torch.is_grad_enabled() and any(p.requires_grad for p in params):
            return None, None
        versions = [(p._version, p.data_ptr(), p.dtype, p.device) for p in params]
        kept = self.__dict__.get("_kept")
        if (kept is None or kept[0] != generation or len(kept[1]) != len(params)
                or any(a is not b for a, b in zip(kept[1], params)) or kept[2] != versions):
            with torch.no_grad():
                q = self.components(self.pseudo_inputs).base_dist
            kept = self.__dict__["_kept"] = (generation, params, versions, q.loc, q.scale)
        return kept[3], kept[4]


class FlowPrior(LearnedPrior):
    """A MAF prior: log p(z) = log N(T(z); 0, I) + log |det dT/dz|, T = T_L o P o ... o P o T_1.

    Each T_l is ``affine_autoregressive`` (Pyro), eps_i = mu_i(z_<i) + exp(s_i(z_<i)) z_i, and P
    reverses the order of the units between steps.

    Arguments:
        site: the latent site.
        flows: L, the number of autoregressive steps.
        hidden: hidden sizes of each autoregressive network (default two layers of max(2 D, 32)).
    """

    def __init__(self, site: LatentSite, flows: int = 2, hidden=None):
        super().__init__(site)
        if flows < 1:
            raise ZooError(f"a flow prior needs at least one step, got {flows}")
        width = list(hidden) if hidden else [max(2 * self.dim, 32)] * 2
        self.steps = nn.ModuleList([affine_autoregressive(self.dim, hidden_dims=width) for _ in range(flows)])
        self.register_buffer("loc", torch.zeros(self.dim))
        self.register_buffer("reverse", torch.arange(self.dim - 1, -1, -1))

    def normalizing_transforms(self):
        """T's pieces in the order they act on z (z -> eps)."""
        pieces = []
        for k, step in enumerate(self.steps):
            if k > 0:
                pieces.append(Permute(self.reverse))
            pieces.append(step)
        return pieces

    def forward(self):
        base = dist.Normal(self.loc, 1.0).to_event(1)
        # z = T^{-1}(eps): its density needs T (one pass per step), its samples T^{-1}
        return dist.TransformedDistribution(base, [t.inv for t in reversed(self.normalizing_transforms())])


def build_prior(prior: str, site: LatentSite, x_dim: Optional[int] = None, components: Optional[int] = None,
                flows: int = 2) -> LearnedPrior:
    """The prior named ``prior`` (one of :data:`PRIORS`) on ``site``; on a sphere or hyperbolic site, its family's."""
    if site.support != "real":
        if prior != "standard":
            raise ZooError(f"prior {prior!r} is a learned prior on R^d, and {site.name!r} lives on a "
                           f"{site.support} space, whose prior is its family's own: drop --prior, or use "
                           f"--latent gaussian")
        return FamilyPrior(site)
    if prior == "standard":
        return StandardPrior(site)
    if prior == "mog":
        return MixturePrior(site, components or DEFAULT_COMPONENTS["mog"])
    if prior == "vampprior":
        if x_dim is None:
            raise ZooError("a VampPrior needs the data dimension for its pseudo-inputs")
        return VampPrior(site, x_dim, components or DEFAULT_COMPONENTS["vampprior"])
    if prior == "flow":
        return FlowPrior(site, flows)
    raise ZooError(f"unknown prior {prior!r}; use one of {', '.join(PRIORS)}")


#: A prior as a part a model takes: called with the model's top latent site and the data dimension, it builds the
#: prior module there (the family's own prior on a sphere, in hyperbolic space or on bits)
PriorPart = Callable[[LatentSite, Optional[int]], nn.Module]


def prior_part(prior: str = "standard", components: Optional[int] = None, flows: int = 2) -> PriorPart:
    """The part for ``--prior`` (one of :data:`PRIORS`) with its ``components`` or ``flows``: where the option's name
    becomes a part (:func:`build_prior` on the site the model gives it)."""
    return functools.partial(build_prior, prior, components=components, flows=flows)


#: N(0, I), or the family's own prior on a site other than R^d: a model's default
STANDARD_PRIOR: PriorPart = prior_part("standard")


class PriorMixin:
    """For a model with a learned prior ``self.prior``: its sharing with the guide is the prior's.

    ``borrows_guide`` is true exactly when the prior is a VampPrior, whose check of the guide and
    whose binding this forwards.
    """

    @property
    def borrows_guide(self) -> bool:
        return self.prior.borrows_guide

    def check_guide(self, guide) -> None:
        self.prior.check_guide(guide)

    def bind_guide(self, guide) -> None:
        super().bind_guide(guide)
        if self.borrows_guide:
            self.prior.bind_guide(guide)
