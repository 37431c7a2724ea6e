"""The model contract that makes guides and objectives interchangeable.

Every zoo model is a :class:`ZooModel`. It promises four things:

1. **Latent declaration.** ``model.latents`` lists its latent sample sites
   (:class:`LatentSite`: name, event shape, support), in the order the model samples them. Guide families read this
   list to build themselves, and refuse models whose latents they cannot handle.
2. **A subsampled data plate.** ``model.model(x, idx, N)`` puts every latent and
   the observation ``"x"`` inside ``pyro.plate("data", N, subsample=idx)``
   (:func:`data_plate`), so minibatch ELBOs are scaled by N/B and per-datum guides
   can index their parameter tables with ``idx``. Every latent is *local* (one per
   datum); global parameters are point estimates learned by maximum likelihood
   through :func:`register_module` (Pyro `param` messages). This is what lets the per-datum
   importance weights of :mod:`zoo.importance` be formed for any model.
3. **Exact quantities where tractable.** ``log_marginal(x)`` and
   ``posterior(x)`` return ``None`` unless the model overrides them.
4. **Generation.** ``sample(n)`` draws new data from the model.

Validation of user data (shape, finiteness, binary values under a Bernoulli
likelihood) lives here too, so every entry point gives the same clear error.
"""
from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Dict, Optional, Sequence, Tuple

import pyro
import pyro.poutine as poutine
import torch
from pyro.params.param_store import param_with_module_name
from pyro.poutine.runtime import effectful
from torch import nn
from torch.distributions import constraints

from zoo.errors import ZooError

__all__ = ["LatentSite", "ZooModel", "data_plate", "register_module", "forget_parameters", "MAX_PLATE_NESTING",
           "SUPPORTS"]

#: Every zoo model nests exactly one plate (``"data"``, dim -1). Particle plates
#: used by vectorized objectives go to the left of it.
MAX_PLATE_NESTING = 1

#: The latent supports the contract knows about.
SUPPORTS = ("real", "binary", "categorical")


@dataclass(frozen=True)
class LatentSite:
    """One latent sample site of a model, as guides see it.

    Arguments:
        name: the Pyro sample-site name.
        event_shape: shape of one datum's value, e.g. ``(50,)``; for a
            categorical latent ``(n_variables, num_classes)`` in one-hot form.
        support: ``"real"``, ``"binary"`` or ``"categorical"``.
        num_classes: K for categorical latents, else ``None``.
    """

    name: str
    event_shape: Tuple[int, ...]
    support: str = "real"
    num_classes: Optional[int] = None

    def __post_init__(self):
        if self.support not in SUPPORTS:
            raise ValueError(f"support must be one of {SUPPORTS}, got {self.support!r}")

    @property
    def numel(self) -> int:
        n = 1
        for s in self.event_shape:
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


def data_plate(x: Optional[torch.Tensor], idx: Optional[torch.Tensor] = None,
               N: Optional[int] = None, device=None) -> pyro.plate:
    """The ``"data"`` plate of the contract, subsampled by ``idx`` out of ``N``.

    ``x`` is the minibatch (``None`` when generating ``N`` new data). With ``idx``
    given, Pyro scales every site inside the plate by ``N / len(idx)``.
    """
    if x is None:
        if N is None:
            raise ValueError("give either data x or the number of data N to generate")
        return pyro.plate("data", N, dim=-1, device=device)
    B = x.shape[0]
    if idx is None:
        if N is not None and N != B:
            raise ValueError(f"a minibatch of {B} out of N={N} needs its indices idx")
        return pyro.plate("data", B, dim=-1, device=x.device)
    return pyro.plate("data", N if N is not None else B, subsample=idx, dim=-1)


def _own_value(name, value, *args, **kwargs):
    """What a ``param`` message returns when no handler changes it: the module's own tensor."""
    return value


#: One ``param`` message; made once, not per call (``effectful`` wraps a function anew each time).
_param_message = effectful(_own_value, type="param")

#: module -> (name, [(site name, parameter), ...]), so that a training step does not walk the
#: module tree and rebuild the site names on every model and guide call (Python time per step).
_PARAM_SITES: "weakref.WeakKeyDictionary[nn.Module, tuple]" = weakref.WeakKeyDictionary()


#: Bumped by :func:`forget_parameters`: caches keyed on parameter objects (:mod:`zoo.jit`) compare it.
parameter_generation = 0


def forget_parameters(*_args) -> None:
    """Drop the cached parameter lists of :func:`register_module`; called whenever any module
    registers a parameter (a global torch hook) and after a zoo model or guide moves (``_apply``)."""
    global parameter_generation
    parameter_generation += 1
    _PARAM_SITES.clear()


torch.nn.modules.module.register_module_parameter_registration_hook(forget_parameters)


def register_module(name: str, module: nn.Module) -> nn.Module:
    """Announce every trainable parameter of ``module`` to Pyro, as ``pyro.module`` would.

    Why not ``pyro.module``: it routes each parameter through Pyro's *global* ``ParamStore``,
    where the first tensor stored under a name wins, even with ``module_local_params`` on.
    A second model built in the same process (a compare grid, a test session) would then
    see the first model's tensors in its trace's ``param`` sites, and anything that reads
    them (the ``dreg`` estimator, ``pyro.infer.SVI``'s parameter collection) would act on
    the wrong parameters. This emits the same ``param`` messages that ``PyroModule``
    emits in module-local mode: each carries the module's own tensor and never touches
    the store. Names are ``name$$$param_name``, as with ``pyro.module``. Each tensor is its
    own unconstrained value (``value.unconstrained()``, as ``pyro.param`` sets it), so Pyro's
    ``SVI`` with a ``pyro.optim`` optimizer trains zoo models too. Parameters with
    ``requires_grad`` off (a frozen model) are not announced.

    The list of (site name, parameter) is built once per module and cached; registering a
    new parameter anywhere, or moving a zoo model or guide (``.to``), clears the cache.
    """
    cached = _PARAM_SITES.get(module)
    if cached is None or cached[0] != name:
        sites = []
        for param_name, value in module.named_parameters():
            value.unconstrained = weakref.ref(value)
            sites.append((param_with_module_name(name, param_name), value))
        cached = _PARAM_SITES[module] = (name, sites)
    for full_name, value in cached[1]:
        if value.requires_grad:
            _param_message(full_name, value, constraint=constraints.real, name=full_name)
    return module


class ZooModel(nn.Module):
    """Base class of zoo models. Subclasses define ``latents`` and ``model``.

    A plain ``nn.Module``, not a ``PyroModule``: ``model`` registers all of its parameters
    with one :func:`register_module` call. A ``PyroModule`` would emit a second ``param``
    message for every parameter of each sub-module it touches, which doubled Pyro's
    per-step bookkeeping (``benchmarks/step_overhead.py``) and bought nothing here.

    Class attributes:
        likelihood: ``"bernoulli"`` or ``"gaussian"``; decides which data are valid.
    """

    likelihood: str = "gaussian"

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

    def forward(self, x=None, idx=None, N=None):
        return self.model(x, idx=idx, N=N)

    def _apply(self, *args, **kwargs):
        out = super()._apply(*args, **kwargs)
        forget_parameters()               # a conversion may have replaced parameter objects
        return out

    def log_marginal(self, x: torch.Tensor) -> Optional[torch.Tensor]:
        """Exact log p(x) per datum, shape ``[B]``; ``None`` where intractable.

        Models with only discrete latents get it by exact enumeration of the joint
        latent space when that has at most ``ENUMERATION_LIMIT`` configurations.
        """
        if self.is_enumerable:
            from zoo.enumeration import enumerated_log_marginal
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
        from zoo.distributions import ENUMERATION_LIMIT
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
