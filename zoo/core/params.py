"""Module-local parameters announced to Pyro: :func:`register_module`.

A zoo model or guide is a plain ``nn.Module`` whose ``forward`` calls
``register_module(name, self)`` once; every trainable parameter then appears in the
trace as a Pyro ``param`` site carrying the module's own tensor.
"""
from __future__ import annotations

import weakref

import torch
from pyro.params.param_store import param_with_module_name
from pyro.poutine.runtime import effectful
from torch import nn
from torch.distributions import constraints

__all__ = ["register_module", "forget_parameters"]

def _own_value(name, value, *args, **kwargs):
    """What a ``param`` message returns when no handler changes it: the module's own tensor."""
    return value


#: One ``param`` message; made once, not per call (``effectful`` wraps a function anew each time).
_param_message = effectful(_own_value, type="param")


#: module -> (name, [(site name, parameter), ...]), so that a training step does not walk the
#: module tree and rebuild the site names on every model and guide call (Python time per step).
_PARAM_SITES: "weakref.WeakKeyDictionary[nn.Module, tuple]" = weakref.WeakKeyDictionary()


#: Above zero while a pass of :class:`zoo.objectives.lean.LeanTrace_ELBO` runs with no Pyro handler outside it: no
#: one reads the ``param`` sites then, so :func:`register_module` does not emit them (about 3 us each per call).
quiet = 0


#: Bumped by :func:`forget_parameters`: caches keyed on parameter objects (:mod:`zoo.objectives.capture`) compare it.
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
    new parameter anywhere, or moving a zoo model or guide (``.to``), clears the cache. Inside a
    lean ELBO pass that no handler watches (:data:`quiet`), nothing is emitted.
    """
    if quiet:
        return module
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
