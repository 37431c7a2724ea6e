"""The model contract that makes guides and objectives interchangeable.

Every zoo model is a :class:`ZooModel`. It promises four things:

1. **Latent declaration.** ``model.latents`` lists its latent sample sites
   (:class:`LatentSite`: name, event shape, support), in the order the model samples them. Guide families read this
   list to build themselves, and refuse models whose latents they cannot handle.
2. **A subsampled data plate.** ``model.model(x, idx, N)`` puts every latent and
   the observation ``"x"`` inside ``pyro.plate("data", N, subsample=idx)``
   (:func:`data_plate`), so minibatch ELBOs are scaled by N/B and per-datum guides
   can index their parameter tables with ``idx``. Every latent of ``model.latents`` is
   *local* (one per datum). A model may also have **global latents** (``model.global_latents``,
   sites with ``scope="global"``: Bayesian weights, mixture locations), sampled outside the data
   plate, one value theta for the whole data set; every guide family gives them one global guide
   (:mod:`guides.globals`) and gives its own local machinery only ``model.latents``. Parameters
   are point estimates learned by maximum likelihood through :func:`register_module` (Pyro
   `param` messages). This is what lets the per-datum importance weights of
   :mod:`zoo.core.weights` be formed for any model (given theta, for a model with globals).
3. **Exact quantities where tractable.** ``log_marginal(x)`` and
   ``posterior(x)`` return ``None`` unless the model overrides them.
4. **Generation.** ``sample(n)`` draws new data from the model.
5. **Declared sharing.** A model that uses modules owned by its guide (a VampPrior is the
   encoder's aggregate posterior) says so with ``borrows_guide`` and receives the guide through
   :meth:`ZooModel.bind_guide`, held in a :class:`Borrowed` reference; a guide that reads the
   model (the exact posterior) says so with ``borrows_model``. Nothing is owned twice (each
   parameter is in one ``state_dict`` and one optimizer group), and estimators that need
   disjoint model and guide parameters (``dreg``) are refused from these declarations.
6. **Views (multimodal models only).** ``model.views`` lists the parts of one datum that have
   their own likelihood (:class:`~zoo.core.views.ViewSite`: name, columns of ``x``, likelihood),
   empty for an ordinary model. A model with views accepts ``views=`` (a subset of their names)
   in ``model.model`` and then scores only those views, log p(x_S | z); its observation ``"x"``
   is a :class:`~zoo.core.views.ViewsLikelihood`. Guides that encode any subset of views (the
   product of experts) and the harness's conditional log-likelihoods read this declaration only.

Validation of user data (shape, finiteness, binary values under a Bernoulli
likelihood) lives here too, so every entry point gives the same clear error.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Optional, Sequence, Tuple

import pyro.poutine as poutine
import torch
from torch import nn
from torch.distributions import biject_to, constraints

from zoo.core.distributions import ENUMERATION_LIMIT
from zoo.core.enumeration import enumerated_log_marginal
from zoo.core.errors import ZooError
from zoo.core.params import forget_parameters, register_module
from zoo.core.plates import MAX_PLATE_NESTING, data_plate
from zoo.core.views import ViewSite

__all__ = ["LatentSite", "ViewSite", "ZooModel", "Borrowed", "check_data", "SUPPORTS", "guide_order", "children_of",
           # re-exported: what a model file needs besides the classes above
           "data_plate", "register_module", "MAX_PLATE_NESTING"]


#: The latent supports the contract knows about.
SUPPORTS = ("real", "binary", "categorical")

#: Where a latent lives: one value per datum (inside the data plate), or one for the whole data set.
SCOPES = ("local", "global")


@dataclass(frozen=True)
class LatentSite:
    """One latent sample site of a model, as guides see it.

    Arguments:
        name: the Pyro sample-site name.
        event_shape: shape of one datum's value, e.g. ``(50,)``; for a
            categorical latent ``(n_variables, num_classes)`` in one-hot form.
        support: ``"real"``, ``"binary"`` or ``"categorical"``.
        num_classes: K for categorical latents, else ``None``.
        parents: the latent sites of the same scope this one is conditioned on in the model
            (``z1``'s parents are ``("z2",)`` in ``z2 -> z1 -> x``); structured guides follow them.
        scope: ``"local"`` (one value per datum, inside the data plate; ``event_shape`` is one
            datum's) or ``"global"`` (one value for the whole data set, outside the data plate;
            ``event_shape`` is its whole shape, the dimensions of any plate of its own included).
        constraint: for a real site, the support of its values (a torch constraint:
            ``constraints.positive`` for a Gamma, ``simplex`` for a Dirichlet; default ``real``).
            Guides sample a Normal on the unconstrained space, of shape :attr:`unconstrained_shape`,
            pushed through ``biject_to(constraint)``, as Pyro's ``AutoNormal`` does.
        plates: a global site's own plates, ``(name, size, dim)`` each (the GMM's ``("components", K, -1)``);
            its guide samples inside the same plates, as Pyro's ``AutoNormal`` does, so model and guide
            sites have the same batch and event dimensions.
        event_dim: how many rightmost dimensions of a global site's shape are its distribution's event
            (the rest are batch dimensions, its plates'); ``None``: all of them.
    """

    name: str
    event_shape: Tuple[int, ...]
    support: str = "real"
    num_classes: Optional[int] = None
    parents: Tuple[str, ...] = ()
    scope: str = field(default="local", repr=False)
    constraint: constraints.Constraint = field(default=constraints.real, repr=False)
    plates: Tuple[Tuple[str, int, int], ...] = field(default=(), repr=False)
    event_dim: Optional[int] = field(default=None, repr=False)

    def __post_init__(self):
        if self.support not in SUPPORTS:
            raise ValueError(f"support must be one of {SUPPORTS}, got {self.support!r}")
        if self.scope not in SCOPES:
            raise ValueError(f"scope must be one of {SCOPES}, got {self.scope!r}")
        if self.constraint is not constraints.real and self.support != "real":
            raise ValueError(f"a constraint applies to real sites only, not to {self.support!r} site {self.name!r}")

    @property
    def constrained(self) -> bool:
        """Whether the site's values live on a constrained support (a guide transforms its Normal)."""
        return self.constraint is not constraints.real

    @property
    def unconstrained_shape(self) -> Tuple[int, ...]:
        """The shape of the site's value on the unconstrained space (a K-simplex has K - 1 free numbers)."""
        if not self.constrained:
            return tuple(self.event_shape)
        return tuple(int(s) for s in biject_to(self.constraint).inverse_shape(torch.Size(self.event_shape)))

    @property
    def numel(self) -> int:
        n = 1
        for s in self.event_shape:
            n *= s
        return n

    @property
    def unconstrained_numel(self) -> int:
        n = 1
        for s in self.unconstrained_shape:
            n *= s
        return n

    @property
    def num_configurations(self) -> Optional[int]:
        """How many values one datum's latent can take (``None`` for real latents)."""
        if self.support == "binary":
            return 2 ** self.numel
        if self.support == "categorical":
            return self.num_classes ** self.event_shape[0]
        return None


class Borrowed:
    """A reference to a module that another component owns.

    A model that computes with its guide's encoder (VampPrior), or a guide that computes with
    its model (the exact posterior), holds the other in a ``Borrowed``. Not being an
    ``nn.Module``, it is not a submodule: the borrowed parameters stay out of the borrower's
    ``parameters()`` and ``state_dict`` (no parameter is optimized or checkpointed twice), and
    they move with their owner. Call it like the module, or use :attr:`module`.

    Example::

        >>> from torch import nn
        >>> owner = nn.Linear(2, 1)
        >>> class User(nn.Module):
        ...     def __init__(self, other):
        ...         super().__init__()
        ...         self.other = Borrowed(other)
        >>> len(list(User(owner).parameters())), User(owner).other.module is owner
        (0, True)
    """

    __slots__ = ("module",)

    def __init__(self, module: nn.Module):
        self.module = module

    def __call__(self, *args, **kwargs):
        return self.module(*args, **kwargs)


def guide_order(latents: Sequence[LatentSite]) -> Tuple[LatentSite, ...]:
    """The latents in the order a structured guide samples them: every site after its model children.

    The model samples parents first (``z2`` then ``z1`` in ``z2 -> z1 -> x``); its posterior is
    best factored the other way, bottom-up, ``q(z1 | x) q(z2 | z1, x)``, since each site's
    children carry the evidence about it. This is the reverse of a topological order of the
    model's latents (``parents`` as declared).

    Example::

        >>> sites = (LatentSite("z2", (3,)), LatentSite("z1", (4,), parents=("z2",)))
        >>> [s.name for s in guide_order(sites)]
        ['z1', 'z2']
    """
    names = {s.name for s in latents}
    for s in latents:
        unknown = [p for p in s.parents if p not in names]
        if unknown:
            raise ZooError(f"latent {s.name!r} declares parents {unknown} that are not latent sites of the model")
    done, order = set(), []
    pending = list(latents)
    while pending:                    # a site goes once all its children (sites naming it a parent) are placed
        ready = [s for s in pending if all(c.name in done for c in pending + order
                                           if s.name in c.parents and c.name != s.name)]
        if not ready:
            raise ZooError(f"the latents' declared parents form a cycle among {[s.name for s in pending]}")
        for s in ready:
            done.add(s.name)
            order.append(s)
            pending.remove(s)
    return tuple(order)


def children_of(site: LatentSite, latents: Sequence[LatentSite]) -> Tuple[LatentSite, ...]:
    """The latents that name ``site`` as a parent, in declaration order."""
    return tuple(s for s in latents if site.name in s.parents)


class ZooModel(nn.Module):
    """Base class of zoo models. Subclasses define ``latents`` and ``model``.

    A plain ``nn.Module``, not a ``PyroModule``: ``model`` registers all of its parameters
    with one :func:`register_module` call. A ``PyroModule`` would emit a second ``param``
    message for every parameter of each sub-module it touches, which doubled Pyro's
    per-step bookkeeping (``benchmarks/step_overhead.py``) and bought nothing here.

    Class attributes:
        likelihood: ``"bernoulli"`` or ``"gaussian"``; decides which data are valid.
        borrows_guide: the model computes with its guide (e.g. a VampPrior's pseudo-input
            posteriors), which it receives through :meth:`bind_guide`; may be a property that
            depends on the model's options.
    """

    likelihood: str = "gaussian"
    borrows_guide: bool = False

    def __init__(self, x_dim: int):
        super().__init__()
        self.x_dim = int(x_dim)

    # -- the contract ------------------------------------------------------------
    @property
    def latents(self) -> Sequence[LatentSite]:
        raise NotImplementedError

    def model(self, x: Optional[torch.Tensor] = None, idx: Optional[torch.Tensor] = None,
              N: Optional[int] = None):
        raise NotImplementedError

    @property
    def global_latents(self) -> Sequence[LatentSite]:
        """The latents outside the data plate (``scope="global"``), in model order; none by default."""
        return ()

    @property
    def views(self) -> Tuple[ViewSite, ...]:
        """The views of one datum, each with its own likelihood (multimodal models); empty otherwise."""
        return ()

    def forward(self, x=None, idx=None, N=None):
        return self.model(x, idx=idx, N=N)

    def _apply(self, *args, **kwargs):
        out = super()._apply(*args, **kwargs)
        forget_parameters()               # a conversion may have replaced parameter objects
        return out

    def bind_guide(self, guide: nn.Module) -> None:
        """Give a model that ``borrows_guide`` the guide it computes with (a no-op otherwise).

        :func:`zoo.registry.build_guide` calls it. A model that borrows checks here that the guide
        has what it needs (:meth:`check_guide`) and keeps it as :attr:`guide`, a :class:`Borrowed`.
        """
        if self.borrows_guide:
            self.check_guide(guide)
            self._guide = Borrowed(guide)

    def check_guide(self, guide: nn.Module) -> None:
        """Raise :class:`ZooError` unless a model that ``borrows_guide`` can compute with ``guide``."""

    @property
    def guide(self) -> nn.Module:
        """The guide bound by :meth:`bind_guide` (models that ``borrows_guide`` only)."""
        bound = self.__dict__.get("_guide")
        if bound is None:
            raise ZooError(f"{self.display_name} computes with its guide, and none is bound: build the guide with "
                           f"zoo.build_guide(name, model), or call model.bind_guide(guide)")
        return bound.module

    def log_marginal(self, x: torch.Tensor) -> Optional[torch.Tensor]:
        """Exact log p(x) per datum, shape ``[B]``; ``None`` where intractable.

        Models with only discrete latents get it by exact enumeration of the joint
        latent space when that has at most ``ENUMERATION_LIMIT`` configurations.
        """
        if self.is_enumerable:
            return enumerated_log_marginal(self, x)
        return None

    @property
    def num_configurations(self) -> Optional[int]:
        """Size of one datum's joint latent space, ``None`` if any latent is real."""
        total = 1
        for s in self.latents:
            if s.num_configurations is None:
                return None
            total *= s.num_configurations
        return total

    @property
    def is_enumerable(self) -> bool:
        if self.global_latents:           # log p(x) integrates over theta too: no per-datum enumeration gives it
            return False
        n = self.num_configurations
        return n is not None and n <= ENUMERATION_LIMIT

    def posterior(self, x: torch.Tensor) -> Optional[Dict[str, torch.distributions.Distribution]]:
        """Exact p(z | x) per latent site (batch shape ``[B]``); ``None`` where intractable."""
        return None

    @property
    def has_log_marginal(self) -> bool:
        return type(self).log_marginal is not ZooModel.log_marginal or self.is_enumerable

    @property
    def has_posterior(self) -> bool:
        return type(self).posterior is not ZooModel.posterior

    @property
    def display_name(self) -> str:
        """The model's name in messages (the class name unless a variant says otherwise)."""
        return type(self).__name__

    @property
    def device(self) -> torch.device:
        for t in list(self.parameters()) + list(self.buffers()):
            return t.device
        return torch.device("cpu")

    @torch.no_grad()
    def sample(self, n: int, mean: bool = True) -> torch.Tensor:
        """Draw ``n`` new data: z from the prior, then x | z.

        With ``mean=True`` return E[x | z] (pixel probabilities for a Bernoulli
        decoder), which is what sample grids conventionally show.
        """
        trace = poutine.trace(self.model).get_trace(None, N=n)
        site = trace.nodes["x"]
        return site["fn"].mean if mean else site["value"]

    # -- validation of user data -----------------------------------------------------
    def validate_data(self, x: torch.Tensor, what: str = "data") -> None:
        """Raise :class:`ZooError` unless ``x`` is a finite ``[N, x_dim]`` float array
        that this model's likelihood can score."""
        check_data(x, self.x_dim, binary=self.likelihood == "bernoulli", what=what,
                   model_name=self.display_name)


def check_data(x, x_dim: Optional[int], binary: bool, what: str = "data",
               model_name: str = "the model") -> None:
    """The data checks shared by loaders and models (one clear error each)."""
    if not isinstance(x, torch.Tensor):
        raise ZooError(f"{what} must be a torch tensor, got {type(x).__name__}")
    if x.dim() != 2:
        raise ZooError(f"{what} must be a 2-D array [num_data, num_features], got shape "
                       f"{tuple(x.shape)}; flatten images to one row per datum")
    if x.shape[0] == 0:
        raise ZooError(f"{what} is empty (0 rows); give at least one datum")
    if x_dim is not None and x.shape[1] != x_dim:
        raise ZooError(f"{what} has {x.shape[1]} features but {model_name} expects {x_dim}; "
                       f"build the model with x_dim={x.shape[1]} or use matching data")
    if not torch.is_floating_point(x):
        raise ZooError(f"{what} has dtype {x.dtype}; convert it to float32 first")
    if not torch.isfinite(x).all():
        raise ZooError(f"{what} contains NaN or infinite values; clean or impute them first")
    if binary and not ((x == 0) | (x == 1)).all():
        raise ZooError(f"{what} has values other than 0 and 1, but {model_name} uses a Bernoulli "
                       f"likelihood; binarize the data or use a Gaussian likelihood")
