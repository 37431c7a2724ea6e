"""The model contract that makes guides and objectives interchangeable.

Every zoo model is a :class:`ZooModel`. It promises four things:

1. **Latent declaration.** ``model.latents`` lists its latent sample sites
   (:class:`LatentSite`: name, event shape, support, parents), in the order the model samples them. Guide
   families read this list to build themselves, and refuse models whose latents they cannot handle.
   ``model.observed_parents`` names the latents each observation depends on directly (by default the
   latents no latent names as a parent); with the parents it is the model's graph, whose faithful
   inverse (:func:`posterior_order`) structured guides follow.
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
from typing import ClassVar, Dict, Mapping, NamedTuple, Optional, Sequence, Tuple

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

__all__ = ["LatentSite", "FORMS", "ViewSite", "ZooModel", "Borrowed", "DecoderState", "check_data", "SUPPORTS", "children_of",
           "posterior_order",
           # re-exported: what a model file needs besides the classes above
           "data_plate", "register_module", "MAX_PLATE_NESTING"]


#: The latent supports the contract knows about.
SUPPORTS = ("real", "binary", "categorical", "sphere", "hyperbolic")

#: How a discrete site holds its value (:attr:`LatentSite.form`): ``"block"`` the zoo's own vector form
#: (``Bernoulli(...).to_event(1)``, event ``(K,)``; ``OneHotCategorical(...).to_event(1)``, event
#: ``(n, K)``; also every real site), ``"bit"`` one ``Bernoulli`` with event ``()``, ``"one_hot"`` one
#: ``OneHotCategorical`` with event ``(K,)``, ``"index"`` one ``Categorical`` with event ``()`` and
#: integer values 0..K-1.
FORMS = ("block", "bit", "one_hot", "index")

#: Where a latent lives: one value per datum (inside the data plate), or one for the whole data set.
SCOPES = ("local", "global")


@dataclass(frozen=True)
class LatentSite:
    """One latent sample site of a model, as guides see it.

    Arguments:
        name: the Pyro sample-site name.
        event_shape: shape of one datum's value, e.g. ``(50,)``; for a
            categorical latent ``(n_variables, num_classes)`` in one-hot form.
        support: ``"real"``, ``"binary"``, ``"categorical"``, ``"sphere"`` (unit vectors in R^d, event ``(d,)``) or
            ``"hyperbolic"`` (points of H^d in Lorentz coordinates, event ``(d + 1,)``).
        num_classes: K for categorical latents, else ``None``.
        parents: the latent sites this one is conditioned on in the model (``z1``'s parents
            are ``("z2",)`` in ``z2 -> z1 -> x``); structured guides invert them
            (:func:`posterior_order`).
        form: how the model's site holds a value (:data:`FORMS`): ``"block"`` (the default, and the
            only form of real sites), or Pyro's usual one-variable discrete sites ``"bit"``
            (``Bernoulli``, event ``()``), ``"one_hot"`` (``OneHotCategorical``, event ``(K,)``) and
            ``"index"`` (``Categorical``, event ``()``, integer values). Every guide samples a
            distribution of exactly this event shape and support, so the model's code gets the values
            it was written for (an index it can use as ``locs[z]``).
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
        family: for a ``"sphere"`` or ``"hyperbolic"`` site, its latent family's name
            (:data:`zoo.core.latents.LATENT_FAMILIES`: ``"vmf"``, ``"power-spherical"``, ``"wrapped-normal"``), which
            says what prior and posterior it has; ``None`` otherwise.
    """

    name: str
    event_shape: Tuple[int, ...]
    support: str = "real"
    num_classes: Optional[int] = None
    parents: Tuple[str, ...] = ()
    form: str = "block"
    scope: str = field(default="local", repr=False)
    constraint: constraints.Constraint = field(default=constraints.real, repr=False)
    plates: Tuple[Tuple[str, int, int], ...] = field(default=(), repr=False)
    event_dim: Optional[int] = field(default=None, repr=False)
    family: Optional[str] = field(default=None, repr=False)

    def __post_init__(self):
        if self.support not in SUPPORTS:
            raise ValueError(f"support must be one of {SUPPORTS}, got {self.support!r}")
        manifold = self.support in ("sphere", "hyperbolic")
        if manifold != (self.family is not None):
            raise ValueError("a sphere or hyperbolic site names its latent family (zoo.core.latents: vmf, "
                             "power-spherical, wrapped-normal), and only such a site does")
        if manifold and (len(self.event_shape) != 1 or self.event_shape[0] < 2):
            raise ValueError(f"a {self.support} site's value is a vector of at least 2 coordinates, got event shape "
                             f"{tuple(self.event_shape)}")
        expected = {"block": None, "bit": ("binary", ()), "one_hot": ("categorical", (self.num_classes,)),
                    "index": ("categorical", ())}
        if self.form not in FORMS:
            raise ValueError(f"form must be one of {FORMS}, got {self.form!r}")
        if expected[self.form] is not None and (self.support, tuple(self.event_shape)) != expected[self.form]:
            raise ValueError(f"a {self.form!r} site is {expected[self.form][0]} with event shape "
                             f"{expected[self.form][1]}, got {self.support} with {tuple(self.event_shape)}")
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
    def logits_shape(self) -> Tuple[int, ...]:
        """Shape of one datum's logits of a discrete site: the event shape, but ``(K,)`` for an index."""
        return (self.num_classes,) if self.form == "index" else tuple(self.event_shape)

    @property
    def num_logits(self) -> int:
        """How many logits parameterize one datum's discrete q (K for an index site, else ``numel``)."""
        return self.num_classes if self.form == "index" else self.numel

    @property
    def value_size(self) -> int:
        """Width of one datum's value as a feature vector (:meth:`features`): an index is one-hot, K wide."""
        return self.num_classes if self.form == "index" else self.numel

    def features(self, value: torch.Tensor) -> torch.Tensor:
        """One datum's value ``[..., *event_shape]`` as floats ``[..., value_size]``, what an encoder reads
        and the harness averages: an index becomes its one-hot vector (a relaxed one, already ``[..., K]``
        from the relaxed guide in training, stays as it is); other forms are flattened."""
        if self.form == "index":
            if not torch.is_floating_point(value):
                return torch.nn.functional.one_hot(value.long(), self.num_classes).to(torch.get_default_dtype())
            return value
        return value.reshape(value.shape[:value.dim() - len(self.event_shape)] + (self.numel,))

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
            return self.num_classes ** (self.event_shape[0] if self.form == "block" else 1)
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



def children_of(site: LatentSite, latents: Sequence[LatentSite]) -> Tuple[LatentSite, ...]:
    """The latents that name ``site`` as a parent, in declaration order."""
    return tuple(s for s in latents if site.name in s.parents)


def posterior_order(latents: Sequence[LatentSite], observed_parents: Optional[Sequence[Sequence[str]]] = None
                    ) -> Tuple[Tuple[LatentSite, Tuple[LatentSite, ...]], ...]:
    """A faithful inverse of the model's graph: the order a structured guide samples the latents in, and
    what each one's q reads besides x.

    The model factors as p(x, z) = prod_i p(z_i | pa(z_i)) prod_o p(x_o | pa(x_o)). Its posterior
    p(z | x) couples more than the prior's parents: two latents that are parents of one observed child
    (co-parents, as y and z in M2's p(x | y, z)) are independent a priori and dependent given x
    ("explaining away"). A guide q(z | x) = prod_i q(z_i | C_i, x) can equal p(z | x) only if every
    C_i holds what p(z_i | z_(sampled before i), x) depends on. The sets C_i come from simulating
    variable elimination on the moral graph (NaMI, Webb et al. 2018, Algorithm 1):

    1. **Moralize.** Link every latent to its latent parents, and the parents of each child (latent or
       observed) to one another. Observed sites are conditioned on everywhere, so they are not nodes.
    2. **Eliminate** the latents one at a time, taking from the frontier (the latents whose parents
       have all been eliminated, so the inverse runs against the model's arrows). Eliminating v gives
       p(v | N(v), x), with N(v) its current neighbours, which become C_v; then link N(v) pairwise
       (the *fill-in* edges, the factor that summing v out leaves behind) and drop v.
    3. The guide samples in the **reverse** of the elimination order, so each C_v is sampled before v.

    Every elimination order gives an exact factorization of p(z | x) (variable elimination is exact);
    NaMI's frontier rule makes the inverse *minimal* among those that sample observations-up. Where the
    frontier offers several latents, real ones are eliminated first (so discrete ones are sampled first:
    M2 gets q(y | x) q(z | x, y), the form in which ``enum`` sums y out beside a reparameterized z),
    then the one that adds the fewest fill-in edges (NaMI's min-fill heuristic), then declaration order.

    A chain z2 -> z1 -> x gives q(z1 | x) q(z2 | z1, x), each site conditioned on its children
    (:func:`children_of`); beyond chains the posterior couples more: co-parents and fill-in edges.

    Why not ``pyro.infer.inspect.get_dependencies(...)["posterior_dependencies"]``, which cites the same
    paper: it reverses the edges and moralizes but adds no fill-in edges, which a faithful inverse needs.
    For a -> b, a -> c -> d, with b and d parents of x, it conditions b on d and x only, while b and c stay
    dependent given (d, x) through a. It also orders by the model's sampling order, so M2 written as
    Pyro's example writes it (z before y) would get q(z | x) q(y | x, z).

    Arguments:
        latents: the model's latent sites (``parents`` as declared).
        observed_parents: for each observed site (and ``pyro.factor`` term), the latents it depends on
            directly. Default: one observation ``x`` whose parents are the latents that no latent names
            as a parent (the bottom layer of a hierarchy).

    Returns:
        ``((site, conditioning sites), ...)`` in the order the guide samples them; each conditioning
        tuple is in declaration order.

    References:
        S. Webb, A. Golinski, R. Zinkov, N. Siddharth, T. Rainforth, Y. W. Teh, F. Wood, "Faithful
        Inversion of Generative Models for Effective Amortized Inference", NeurIPS 2018,
        https://arxiv.org/abs/1712.00287. A. Stuhlmüller, J. Taylor, N. Goodman, "Learning Stochastic
        Inverses", NeurIPS 2013. D. Koller, N. Friedman, "Probabilistic Graphical Models" (2009), 9.3-9.4.

    Example::

        >>> y = LatentSite("y", (1, 10), "categorical", num_classes=10)
        >>> z = LatentSite("z", (2,))                        # M2: y and z both parents of x
        >>> [(s.name, [c.name for c in given]) for s, given in posterior_order((z, y), [("y", "z")])]
        [('y', []), ('z', ['y'])]
        >>> chain = (LatentSite("z2", (3,)), LatentSite("z1", (4,), parents=("z2",)))
        >>> [(s.name, [c.name for c in given]) for s, given in posterior_order(chain)]
        [('z1', []), ('z2', ['z1'])]
    """
    _check_parents(latents)
    by_name = {s.name: s for s in latents}
    rank = {s.name: i for i, s in enumerate(latents)}
    if observed_parents is None:
        observed_parents = [tuple(s.name for s in latents if not children_of(s, latents))]
    families = [tuple(s.parents) + (s.name,) for s in latents]
    for parents in observed_parents:
        unknown = [p for p in parents if p not in by_name]
        if unknown:
            raise ZooError(f"an observation declares parents {unknown} that are not latent sites of the model")
        families.append(tuple(parents))
    neighbours = {s.name: set() for s in latents}
    for family in families:                       # moralize: each family (a child with its parents) is a clique
        for a in family:
            neighbours[a].update(b for b in family if b != a)

    def fill_in(v):
        around = sorted(neighbours[v])
        return sum(1 for i, a in enumerate(around) for b in around[i + 1:] if b not in neighbours[a])

    eliminated, structure = set(), []
    while len(eliminated) < len(latents):
        frontier = [s for s in latents if s.name not in eliminated and set(s.parents) - {s.name} <= eliminated]
        v = min(frontier, key=lambda s: (s.support != "real", fill_in(s.name), rank[s.name])).name
        given = neighbours.pop(v)
        for a in given:
            neighbours[a].discard(v)
            neighbours[a].update(b for b in given if b != a)
        eliminated.add(v)
        structure.append((by_name[v], tuple(by_name[c] for c in sorted(given, key=rank.get))))
    return tuple(reversed(structure))


def _check_parents(latents: Sequence[LatentSite]) -> None:
    """Raise :class:`ZooError` if a latent names a parent that is no latent, or the parents form a cycle."""
    names = {s.name for s in latents}
    for s in latents:
        unknown = [p for p in s.parents if p not in names]
        if unknown:
            raise ZooError(f"latent {s.name!r} declares parents {unknown} that are not latent sites of the model")
    placed, pending = set(), list(latents)
    while pending:
        ready = [s for s in pending if set(s.parents) - {s.name} <= placed]
        if not ready:
            raise ZooError(f"the latents' declared parents form a cycle among {[s.name for s in pending]}")
        placed.update(s.name for s in ready)
        pending = [s for s in pending if s not in ready]


class DecoderState(NamedTuple):
    """Where a model that writes x over steps (DRAW) stands after its latents so far (:meth:`ZooModel.decoder_step`):
    ``h``, the decoder's recurrent state ``[..., H]``, what it has said so far (a guide's attention reads it); ``c``,
    the recurrent cell's memory ``[..., H]`` (an LSTM's); ``canvas``, the decoder's output so far ``[..., x_dim]``,
    from which the likelihood reads p(x | the latents so far)."""

    h: torch.Tensor
    c: torch.Tensor
    canvas: torch.Tensor


class ZooModel(nn.Module):
    """Base class of zoo models. Subclasses define ``latents`` and ``model``.

    A plain ``nn.Module``, not a ``PyroModule``: ``model`` registers all of its parameters
    with one :func:`register_module` call. A ``PyroModule`` would emit a second ``param``
    message for every parameter of each sub-module it touches, which doubled Pyro's
    per-step bookkeeping (``benchmarks/step_overhead.py``) and bought nothing here.

    Class attributes:
        likelihood: ``"bernoulli"`` or ``"gaussian"``, or a k-level one (:mod:`zoo.core.levels`); decides
            which data are valid.
        levels: k, when the likelihood is a probability over pixel levels {0, ..., k-1} (set by a model
            with a k-level likelihood); Bernoulli pixels have 2 (:attr:`data_levels`).
        borrows_guide: the model computes with its guide (e.g. a VampPrior's pseudo-input
            posteriors), which it receives through :meth:`bind_guide`; may be a property that
            depends on the model's options.
        legacy_tensor_names: old name prefix -> new, for tensors that checkpoints of an earlier
            pyro-zoo hold under another name (:func:`zoo.experiments.run_folder.upgrade_legacy_names`).
    """

    likelihood: str = "gaussian"
    levels: Optional[int] = None
    borrows_guide: bool = False
    legacy_tensor_names: ClassVar[Mapping[str, str]] = {}

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
    def observed_parents(self) -> Optional[Tuple[Tuple[str, ...], ...]]:
        """For each observed site, the latents it depends on directly, which :func:`posterior_order` moralizes
        (co-parents of an observation are coupled in the posterior). ``None``, the default, says: the one
        observation ``x`` depends on the latents that no latent names as a parent (a hierarchy's bottom layer)."""
        return None

    def conditional_prior(self, name: str, parents: Dict[str, torch.Tensor]):
        """p(z_name | its parents), a distribution of batch shape the parents' and event shape the site's, for
        the values ``parents`` (parent name -> value). A model whose latents form a top-down hierarchy gives it
        (hvae) so that a guide can share the generative top-down pass (:mod:`guides.ladder`); by default a model
        does not, and such a guide refuses it."""
        raise NotImplementedError(f"{self.display_name} does not give p(z | parents) (conditional_prior)")

    @property
    def has_conditional_prior(self) -> bool:
        """Whether :meth:`conditional_prior` is implemented."""
        return type(self).conditional_prior is not ZooModel.conditional_prior

    def decoder_start(self) -> DecoderState:
        """The decoder's state before any latent (no batch dimensions: they broadcast), for a model that writes x
        over steps, one latent site per step (:mod:`zoo.models.draw`); a guide that reads what the decoder has
        drawn so far (:mod:`guides.recurrent`) runs the decoder alongside with it. Other models do not give it."""
        raise NotImplementedError(f"{self.display_name} does not write x over steps (decoder_start)")

    def decoder_step(self, state: DecoderState, z: torch.Tensor) -> DecoderState:
        """The decoder's state after the next latent ``z`` (the sites in :attr:`latents` order), from ``state``."""
        raise NotImplementedError(f"{self.display_name} does not write x over steps (decoder_step)")

    def decoder_mean(self, state: DecoderState) -> torch.Tensor:
        """E[x] under the likelihood read from ``state.canvas``: the image drawn so far."""
        raise NotImplementedError(f"{self.display_name} does not write x over steps (decoder_mean)")

    @property
    def has_recurrent_decoder(self) -> bool:
        """Whether :meth:`decoder_start`, :meth:`decoder_step` and :meth:`decoder_mean` are implemented."""
        return type(self).decoder_step is not ZooModel.decoder_step

    @property
    def global_latents(self) -> Sequence[LatentSite]:
        """The latents outside the data plate (``scope="global"``), in model order; none by default."""
        return ()

    @property
    def views(self) -> Tuple[ViewSite, ...]:
        """The views of one datum, each with its own likelihood (multimodal models); empty otherwise."""
        return ()

    @property
    def example_rows(self) -> Optional[torch.Tensor]:
        """Rows of data ``[n, x_dim]`` the model was built from and tried on (a model file's trial run reads
        the run's data), for what must run the model on some x before a minibatch is at hand (a guide file's
        trial run, the global guide's initial values); ``None``: any x of the right width will do."""
        return None

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

    @property
    def cannot_generate(self) -> Optional[str]:
        """Why :meth:`sample` cannot draw data (``None`` when it can, as for every built-in model)."""
        return None

    @property
    def likelihood_note(self) -> Optional[str]:
        """What the reported log p(x) is when it is not the density of all of x (a model with covariates)."""
        return None

    @torch.no_grad()
    def sample(self, n: int, mean: bool = True) -> torch.Tensor:
        """Draw ``n`` new data: z from the prior, then x | z.

        With ``mean=True`` return E[x | z] (pixel probabilities for a Bernoulli
        decoder), which is what sample grids conventionally show.
        """
        trace = poutine.trace(self.model).get_trace(None, N=n)
        site = trace.nodes["x"]
        return site["fn"].mean if mean else site["value"]

    @torch.no_grad()
    def canvas_steps(self, n: int) -> torch.Tensor:
        """For a model that writes x over steps (:attr:`has_recurrent_decoder`): ``[T, n, x_dim]``, the image drawn
        after each step, E[x | c_t], for ``n`` draws of the latents from the prior (the generation DRAW's figures
        show column by column)."""
        trace = poutine.trace(self.model).get_trace(None, N=n)
        state, frames = self.decoder_start(), []
        for site in self.latents:
            state = self.decoder_step(state, trace.nodes[site.name]["value"])
            frames.append(self.decoder_mean(state))
        return torch.stack(frames)

    # -- validation of user data -----------------------------------------------------
    @property
    def data_levels(self) -> Optional[int]:
        """k when log p(x) is a log-probability of data with k levels per value (2 for Bernoulli pixels), so it
        is a code length and has a bits/dim; ``None`` when it is a density (Gaussian)."""
        return self.levels if self.levels is not None else 2 if self.likelihood == "bernoulli" else None

    def validate_data(self, x: torch.Tensor, what: str = "data") -> None:
        """Raise :class:`ZooError` unless ``x`` is a finite ``[N, x_dim]`` float array
        that this model's likelihood can score."""
        check_data(x, self.x_dim, binary=self.likelihood == "bernoulli", what=what,
                   model_name=self.display_name, levels=self.levels)


def check_data(x, x_dim: Optional[int], binary: bool, what: str = "data",
               model_name: str = "the model", levels: Optional[int] = None) -> None:
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
    if levels is not None and not ((x == torch.round(x)) & (x >= 0) & (x <= levels - 1)).all():
        raise ZooError(f"{what} has values other than the integers 0..{levels - 1}, but {model_name}'s likelihood "
                       f"scores {levels} levels; give the data as levels (digits17), or use a Gaussian likelihood")
