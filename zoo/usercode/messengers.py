"""The Pyro messengers a wrapped user function runs under, and the call that sets them up.

:func:`call_owned` runs the user's model or guide as its wrapper's: every ``param`` message is
answered with the wrapper's own tensor (:class:`OwnParameters`), and tensors the function makes
itself (``torch.zeros(2)``) are made on the wrapper's device.
"""
from __future__ import annotations

import contextlib
import warnings
import weakref
from typing import Callable, Iterable, Optional

import torch
from pyro.poutine.messenger import Messenger
from torch.distributions import constraints
from torch.distributions.transforms import identity_transform

from zoo.core.errors import ZooError
from zoo.usercode.params import UserParameters, parameter_at

__all__ = ["OwnParameters", "ObservationColumns", "call_owned"]

#: Pyro's warning for ``pyro.module`` on a network whose parameters do not require grad (a refit freezes them).
_FROZEN_WARNING = ".*was not registered in the param store because requires_grad=False.*"


class OwnParameters(Messenger):
    """Answer every ``param`` message with the wrapper's own tensor (constrained as declared); on the
    trial run (:attr:`~zoo.usercode.params.UserParameters.adopting`) adopt a site not seen before."""

    def __init__(self, owner: UserParameters):
        super().__init__()
        self.owner = owner

    def _pyro_param(self, msg):
        owner = self.owner
        name = msg["name"]
        if name not in owner.param_sites:
            if not owner.adopting:
                raise ZooError(f"{owner.display_name} made the parameter {name!r} after it was wrapped (it did not "
                               f"occur on the trial run); create every pyro.param on every call")
            init = msg["args"][1] if len(msg["args"]) > 1 else None
            owner.adopt_parameter(name, init, msg["kwargs"].get("constraint", constraints.real))
        own_name, constraint = owner.param_sites[name]
        unconstrained = parameter_at(owner, own_name)
        transform = torch.distributions.transform_to(constraint)
        value = unconstrained if transform is identity_transform else transform(unconstrained)
        value.unconstrained = weakref.ref(unconstrained)
        msg["value"] = value
        msg["done"] = True


class ObservationColumns(Messenger):
    """Tag each observed site with the columns of x it holds (``infer["zoo_columns"]``), read at the
    trial run (:class:`~zoo.usercode.trace.ObservedSite`), so that :mod:`zoo.core.weights` can
    assemble E[x | z] from several sites."""

    def __init__(self, observed: Iterable):
        super().__init__()
        self.columns = {o.name: o.columns for o in observed}

    def _pyro_sample(self, msg):
        columns = self.columns.get(msg["name"])
        if columns is not None:
            msg["infer"] = {**(msg["infer"] or {}), "zoo_columns": columns}


def call_owned(owner: UserParameters, fn: Callable, x, idx, N, messenger: Optional[Messenger] = None):
    """``fn(x, idx=idx, N=N)`` as ``owner``'s: under ``messenger`` (default :class:`OwnParameters`),
    with tensors it makes on the owner's device, and, out of training, without Pyro's warning about
    ``pyro.module`` on a frozen network (a refit freezes the model's).

    On the CPU nothing is set: torch's device mode, which sees every op, is paid for on a GPU only."""
    device = owner.device
    messenger = OwnParameters(owner) if messenger is None else messenger
    with messenger, (torch.device(device) if device.type != "cpu" else contextlib.nullcontext()):
        if owner.training:
            return fn(x, idx=idx, N=int(N))
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=_FROZEN_WARNING)
            return fn(x, idx=idx, N=int(N))
