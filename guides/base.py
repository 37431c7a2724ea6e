"""What every guide family shares: how it reads a model's latent declaration.

A guide family is a :class:`ZooGuide` subclass. It is built from a model (and the
number of data, for per-datum families), it samples every latent site the model
declares inside the same ``"data"`` plate as the model, and it refuses, with a
:class:`~zoo.core.errors.ZooError` that names what it supports, any model whose latents
it cannot represent. Guides never look at a model's internals beyond
``model.latents``, ``model.x_dim`` and, for the oracle ``exact`` guide,
``model.posterior``.

Raw parameters become distributions in one place, :func:`site_distribution`:

- real:        ``N(loc, softplus(s)^2)`` per unit, from ``2 * numel`` numbers; for a site with a
  support ``constraint`` (positive, simplex, ...) the Normal lives on the unconstrained space and
  is pushed through ``biject_to(constraint)`` (:func:`constrain`);
- binary:      ``Bernoulli(logits)`` per bit, from ``numel`` logits (a score-function site);
- categorical: ``OneHotCategorical(logits)`` per variable, from ``N * K`` logits;
- sphere, hyperbolic: the site's latent family's posterior (vMF or Power Spherical from ``d + 1`` numbers, the
  wrapped normal from ``2 d``; :mod:`zoo.core.latents`).

Discrete sites take the model site's own form (:attr:`~zoo.core.contract.LatentSite.form`): the
zoo's vector forms are :class:`~zoo.core.distributions.JointDiscrete` (an enumerable
``.to_event(1)``), and Pyro's one-variable sites are Pyro's own ``Bernoulli`` (event ``()``),
``OneHotCategorical`` (event ``(K,)``) and ``Categorical`` (an integer, from K logits), so the
value the model's code receives is one it was written for, and the ``enum`` objective (Pyro's
TraceEnum_ELBO) can sum over every one of them exactly.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Dict, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
import pyro.distributions as dist
from pyro.poutine.runtime import get_plates
from torch import nn
from torch.distributions import Bernoulli, OneHotCategorical, biject_to

from zoo.objectives.baselines import BASELINE_KEY, SiteBaseline
from zoo.core.distributions import JointDiscrete, ShapedIndependent
from zoo.core.errors import ZooError
from zoo.core.contract import LatentSite, ZooModel
from zoo.core.latents import LATENT_FAMILIES, MANIFOLDS
from zoo.core.params import forget_parameters
from zoo.core.components import Options, option
from zoo.core.nn import ACTIVATIONS

__all__ = ["ZooGuide", "raw_size", "site_distribution", "discrete_distribution", "constrain", "BASELINES",
           "BaselineOptions", "EncoderOptions"]

BASELINES = ("none", "decaying", "neural")


@dataclass
class BaselineOptions(Options):
    """Options of a guide family that can carry score-function baselines."""

    baseline: Optional[str] = option(None, "score-function baseline for discrete sites under tracegraph: none, "
                                     "decaying or neural (NVIL) (default none)", choices=BASELINES, checkpoint="shape")


@dataclass
class EncoderOptions(Options):
    """Options of an amortized family: the encoder's hidden sizes and nonlinearity, and whether it is structured."""

    test_options: ClassVar[dict] = {"hidden": (16,)}

    hidden: Optional[Tuple[int, ...]] = option(None, "encoder hidden sizes, from x (default: mirror the decoder)",
                                               cli={"flag": "guide-hidden"}, minimum=1, checkpoint="shape")
    structured: bool = option(False, "condition each latent on what the posterior couples it with (a faithful "
                              "inverse of the model's graph): q(z1|x) q(z2|z1,x) for z2 -> z1 -> x, q(y|x) q(z|x,y) "
                              "for M2, instead of mean-field q(z1|x) q(z2|x)", checkpoint="shape")
    activation: Optional[str] = option(None, "encoder nonlinearity: tanh, relu, gated or linear (default: the model's "
                                       "--activation, else tanh)", cli={"flag": "guide-activation"}, choices=ACTIVATIONS,
                                       checkpoint="shape")


def raw_size(site: LatentSite) -> int:
    """How many unconstrained numbers parameterize one datum's q for ``site``."""
    if site.support in MANIFOLDS:
        family = LATENT_FAMILIES[site.family]
        return family.raw_size(family.dim_of(site.numel))
    return 2 * site.unconstrained_numel if site.support == "real" else site.num_logits


def constrain(site: LatentSite, base: dist.TorchDistribution) -> dist.TorchDistribution:
    """q of a real site from ``base``, a distribution on its unconstrained space: ``base`` itself for a
    real-valued site, else ``base`` pushed through ``biject_to(site.constraint)`` (a Gamma latent's guide
    is a log-Normal, a Dirichlet's a logistic-Normal on the simplex), as Pyro's ``AutoNormal`` does;
    log q then carries the transform's log-Jacobian."""
    if not site.constrained:
        return base
    return dist.TransformedDistribution(base, [biject_to(site.constraint)])


def site_distribution(site: LatentSite, raw: torch.Tensor) -> dist.TorchDistribution:
    """q for one site from its raw parameters ``[..., raw_size(site)]``; batch shape ``raw.shape[:-1]``."""
    batch = raw.shape[:-1]
    if site.support == "real":
        loc, s = raw.chunk(2, dim=-1)
        shape = batch + site.unconstrained_shape
        scale = F.softplus(s) + 1e-5
        if loc.shape != shape:                         # a vector site's already are: no view in the graph
            loc, scale = loc.reshape(shape), scale.reshape(shape)
        q = dist.Normal(loc, scale)
        if site.unconstrained_shape:                   # the datum's event dims; a plate's broadcast won't copy it
            q = ShapedIndependent(q, len(site.unconstrained_shape))
        return constrain(site, q)
    if site.support in MANIFOLDS:
        return LATENT_FAMILIES[site.family].posterior(raw)
    return discrete_distribution(site, raw.reshape(batch + site.logits_shape))


def discrete_distribution(site: LatentSite, logits: torch.Tensor) -> dist.TorchDistribution:
    """q for one discrete site from its logits ``[..., *site.logits_shape]``, in the site's own form."""
    if site.form == "bit":
        return dist.Bernoulli(logits=logits)
    if site.form == "one_hot":
        return dist.OneHotCategorical(logits=logits)
    if site.form == "index":
        return dist.Categorical(logits=logits)
    if site.support == "binary":
        return JointDiscrete(Bernoulli(logits=logits))
    return JointDiscrete(OneHotCategorical(logits=logits))


class ZooGuide(nn.Module):
    """Base class of guide families.

    A plain ``nn.Module`` whose ``forward`` registers every parameter once with
    ``register_module(name, self)`` (see :func:`zoo.core.params.register_module` for why not
    ``pyro.module``, and :class:`~zoo.core.contract.ZooModel` for why not ``PyroModule``).

    The class attributes are the family's capabilities, read by the registry and the training loop. The hooks
    the loop and the evaluation call are :meth:`training_model`, :meth:`on_step`, :meth:`epoch_record`, :meth:`adopt_globals` and
    :meth:`refit_start` (where the evaluation of a per-datum guide starts the fresh guide it refits to the test data).

    Class attributes:
        family: the registry name.
        supports: latent supports this family can represent.
        amortized: ``False`` for per-datum (non-amortized) guides, whose parameters
            are tables indexed by ``idx``; such a guide must be refitted on new data.
        enumerable: its discrete sites can be summed exactly by the ``enum`` objective.
        normal_sites: every site is a Normal whose density can be evaluated at detached
            parameters (what the path-derivative estimators stl and dreg need).
        borrows_model: the guide computes with the model's own modules (the exact posterior),
            held as a :class:`~zoo.core.contract.Borrowed`; estimators that need disjoint model
            and guide parameters (dreg) refuse it.
        relaxes_model: while training, the objective sees :meth:`training_model` rather than the
            model itself (the relaxed guide's Concrete view of discrete sites).
        lr_multiplier: the Adam step of the guide's local parameters relative to the model's (the
            global guide q(theta) steps as the model does: :func:`zoo.training.optimizer.make_optimizer`).
        supports_globals: the family samples a model's global latents with the one
            :class:`~guides.globals.GlobalGuide` (``global_guide``: ``normal`` or ``delta``), outside the
            data plate and before its local sites (:meth:`sample_globals`); its own machinery sees only
            the local ``self.sites``.
        encodes_views: for a model with ``views``, :meth:`given` gives q(z | x_S) for any subset S
            of them (the product of experts), which the harness's conditional likelihoods use.
        has_density: log q(z | x) can be evaluated at any z, and differentiated at a fixed z. ``False`` for a
            guide whose sites carry a density only at their own draw (the hamiltonian guide's augmented term):
            score-function and wake-sleep estimators, closed-form KLs, AIS from the guide, the amortization gap
            and compression refuse it.

    Hooks the training loop calls (the defaults do nothing): :meth:`training_model`,
    :meth:`on_step` and :meth:`epoch_record`.

    What a family's options must fit (a global guide for global latents, a baseline for discrete ones)
    is checked by :func:`zoo.rules.check_guide_options`, which :func:`zoo.registry.build_guide` asks.

    Arguments:
        baseline: variance reduction for score-function (discrete) sites under
            ``tracegraph``: ``"none"``, ``"decaying"`` (a running average c of the per-datum
            learning signal) or ``"neural"`` (NVIL: c plus a network b(x)); see :mod:`zoo.objectives.baselines`.
            The baselines are part of the guide's ``state_dict``, so checkpoints carry them.
    """

    family: str = ""
    supports: Sequence[str] = ("real",)
    amortized: bool = True
    enumerable: bool = False
    normal_sites: bool = True
    borrows_model: bool = False
    relaxes_model: bool = False
    lr_multiplier: float = 1.0
    encodes_views: bool = False
    supports_globals: bool = True
    has_density: bool = True

    def __init__(self, model: ZooModel, num_data: Optional[int] = None, baseline: Optional[str] = None,
                 global_guide: Optional[str] = None):
        super().__init__()
        self.check(model)
        self.x_dim = model.x_dim
        self.sites = tuple(model.latents)
        global_sites = tuple(model.global_latents)
        if global_sites:
            from guides.globals import GlobalGuide, prior_initial_values
            self.globals = GlobalGuide(global_sites, global_guide or "normal",
                                       initial=prior_initial_values(model, global_sites))
        self.num_data = num_data
        self.baseline = baseline or "none"
        if self.baseline != "none":
            self.baselines = nn.ModuleDict({s.name: SiteBaseline(self.x_dim, neural=self.baseline == "neural")
                                            for s in self.sites if s.support in ("binary", "categorical")})

    def _apply(self, *args, **kwargs):
        out = super()._apply(*args, **kwargs)
        forget_parameters()               # a conversion may have replaced parameter objects
        return out

    @classmethod
    def check(cls, model: ZooModel) -> None:
        """Raise :class:`ZooError` if this family cannot represent ``model``'s latents."""
        global_sites = tuple(model.global_latents)
        if global_sites and not cls.supports_globals:
            raise ZooError(f"the {cls.family!r} guide has no global part, but {model.display_name} has global "
                           f"latents ({', '.join(repr(s.name) for s in global_sites)}, outside the data plate); "
                           f"pick a guide that guides them (meanfield, amortized, iaf)")
        bad = [s for s in model.latents if s.support not in cls.supports]
        if bad:
            desc = ", ".join(f"{s.name!r} ({s.support})" for s in bad)
            raise ZooError(f"the {cls.family!r} guide supports {'/'.join(cls.supports)} latents only, "
                           f"but {model.display_name} has {desc}; pick a guide that supports them "
                           f"(see 'pyro-zoo list')")

    @classmethod
    def is_reparameterized(cls, model: ZooModel) -> bool:
        """Whether every sample this family draws for ``model`` is reparameterizable."""
        return all(s.support == "real" or s.support in MANIFOLDS for s in model.latents)

    @property
    def global_guide(self):
        """The :class:`~guides.globals.GlobalGuide` of the model's global latents, or ``None``."""
        return self._modules.get("globals")

    def sample_globals(self) -> Dict[str, torch.Tensor]:
        """Sample the model's global latents theta ~ q(theta), outside any plate (every family's
        ``forward`` calls it first); ``{}`` for a model without any."""
        return self.globals() if self.global_guide is not None else {}

    def adopt_globals(self, other: "ZooGuide") -> None:
        """Take ``other``'s global guide (a fresh per-datum guide refitted to new data keeps the trained
        q(theta): the global posterior belongs to the training data, like the model's parameters)."""
        if self.global_guide is not None and other.global_guide is not None:
            self.globals.load_state_dict(other.globals.state_dict())

    def refit_start(self) -> None:
        """Put the per-datum rows where a test-time refit (:func:`zoo.training.refit.refit_local_guide`) of a fresh
        guide starts them; nothing for a family without per-datum rows."""

    def marginal_posterior(self, name: str, x: torch.Tensor):
        """q(name | x) from x alone, batch shape ``x.shape[:-1]``: what a VampPrior (a mixture of the guide's
        posteriors at pseudo-inputs) is made of. A family that has it for some sites gives it (amortized: every site,
        the structured guide's children at their means; ladder: the top layer); others do not."""
        raise NotImplementedError(f"the {self.family!r} guide gives no q(z | x) from x alone")

    @property
    def has_marginal_posterior(self) -> bool:
        """Whether :meth:`marginal_posterior` is implemented."""
        return type(self).marginal_posterior is not ZooGuide.marginal_posterior

    def training_model(self, model: ZooModel):
        """The model as the training objective sees it (the model itself unless ``relaxes_model``)."""
        return model

    def on_step(self, step: int) -> None:
        """Called before SVI step ``step`` (global, from 0): schedules such as temperature annealing."""

    def epoch_record(self) -> Dict[str, float]:
        """Values of the guide's own state to record in each epoch's history row (e.g. a temperature)."""
        return {}

    def infer_for(self, site: LatentSite, x) -> Dict:
        """The ``infer`` dict of a sample site: its baseline for :class:`~zoo.objectives.baselines.BaselineTraceGraph_ELBO`."""
        if site.support not in ("binary", "categorical") or self.baseline == "none":
            return {}
        # b(x) must come in the site's batch shape, particles included.
        particles = [f.size for f in sorted(get_plates(), key=lambda f: f.dim) if f.dim is not None and f.dim < -1]
        x_in = x.expand(*particles, *x.shape) if particles else x
        return {BASELINE_KEY: {"module": self.baselines[site.name], "input": x_in}}
