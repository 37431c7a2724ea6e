"""A user's parameters as the wrapper's own: :class:`UserParameters` and :func:`claim_parameters`.

A user's Pyro function makes its parameters with ``pyro.param("w", init, constraint=...)`` and
``pyro.module("encoder", encoder)``. The zoo keeps none of them in Pyro's global param store (where
the first tensor stored under a name wins, so a second model built from the same code would share
the first one's values): each becomes a parameter of the ``nn.Module`` that wraps the function
(:class:`~zoo.models.pyro_model.PyroModel`, :class:`~guides.user.UserGuide`), so its optimizer,
``state_dict``, checkpoints and ``.to(device)`` see it. A model and a guide follow one rule, here.
"""
from __future__ import annotations

import gc
import weakref
from typing import Dict, Sequence, Tuple

import torch
from torch import nn
from torch.distributions import constraints

from zoo.core.errors import ZooError

__all__ = ["UserParameters", "OWNER_MARKS", "claim_parameters", "parameter_at"]

#: The attribute of a parameter that names (weakly) the zoo model or guide owning it: two never share one.
OWNER_MARKS = {"model": "_pyro_zoo_owner", "guide": "_pyro_zoo_guide_owner"}


class UserParameters:
    """Mixin of the ``nn.Module`` wrapping a user's Pyro function: its ``param`` sites as the module's own.

    ``pyro.param`` sites become ``nn.Parameter`` values holding the *unconstrained* value (each
    call gets ``transform_to(constraint)`` of it, as from Pyro); ``pyro.module`` on a network the
    wrapper already holds names that network's own tensors. New sites are adopted on the trial run
    only (:attr:`adopting`); one that appears later is refused, since the optimizer would not see it.

    Attributes:
        params: ``pyro.param`` values (unconstrained) and adopted ``pyro.module`` parameters.
        param_sites: each param site's own tensor (its name in the module) and constraint.
        adopting: whether a param site not seen before becomes a parameter (the trial run).
    """

    def init_parameter_sites(self) -> None:
        """Start with no param sites (called in ``__init__``, where ``params`` takes its place in the module).

        An empty buffer, out of the state dict, goes wherever ``.to(device)`` sends the module, so a model or guide
        of fixed constants (no parameters at all) has a device too: the tensors its function makes
        (``torch.zeros(1)``) are made there (:func:`~zoo.usercode.messengers.call_owned`)."""
        self.register_buffer("device_anchor", torch.zeros(0), persistent=False)
        self.params = nn.ParameterDict()
        self.param_sites: Dict[str, Tuple[str, constraints.Constraint]] = {}
        self.adopting = False

    def adopt_parameter(self, site: str, init, constraint: constraints.Constraint) -> None:
        """Make the tensor a ``param`` site starts from one of this module's parameters."""
        if callable(init) and not torch.is_tensor(init):
            init = init()
        if init is None:
            raise ZooError(f"pyro.param({site!r}) has no initial value in {self.display_name}; give one, e.g. "
                           f"pyro.param({site!r}, torch.zeros(3)) (the zoo does not read Pyro's global param store)")
        if not torch.is_tensor(init):
            init = torch.as_tensor(init, dtype=torch.get_default_dtype())
        owned = {id(p): n for n, p in self.named_parameters()}
        if isinstance(init, nn.Parameter) and constraint is constraints.real:
            if id(init) in owned:                          # a network of ours: pyro.module on it
                self.param_sites[site] = (owned[id(init)], constraint)
                return
            value = init                                   # pyro.module on a network we did not find
        else:
            unconstrained = torch.distributions.transform_to(constraint).inv(init.detach())
            value = nn.Parameter(unconstrained.detach().clone().to(self.device))
        key = site.replace("$$$", "__").replace(".", "_")
        while key in self.params:
            key += "_"
        self.params[key] = value
        self.param_sites[site] = (f"params.{key}", constraint)


def claim_parameters(owner: nn.Module, kind: str, message: str, others: Sequence[str] = ("model",)) -> None:
    """Mark every parameter of ``owner`` (a zoo ``kind``, "model" or "guide") as its own, after refusing
    any parameter that a live zoo component of one of the kinds ``others`` already holds (``message``
    is formatted with that kind's word).

    Parameters belong to one zoo model or guide: the user's function holds its networks in a closure,
    so two wrappers of the same networks would silently train and score each other's weights."""
    for p in owner.parameters():
        for other_kind in others:
            attribute = OWNER_MARKS[other_kind]
            other = getattr(p, attribute, lambda: None)()
            if other is not None and other is not owner:
                del other
                gc.collect()                               # a dropped owner may only wait for the collector
                if getattr(p, attribute)() is not None:
                    raise ZooError(message.format(other_kind))
    for p in owner.parameters():
        setattr(p, OWNER_MARKS[kind], weakref.ref(owner))


def parameter_at(module: nn.Module, path: str) -> torch.Tensor:
    """``module.get_parameter(path)`` read off the registries: a ``PyroModule``'s attribute access
    inside a Pyro handler is itself a ``param`` message, which would come back here without end."""
    *names, leaf = path.split(".")
    for name in names:
        module = module._modules[name]
    return module._parameters[leaf]
