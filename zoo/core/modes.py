"""Modules switched to eval mode for a block, and back; their parameters held fixed for a block, and back."""
from __future__ import annotations

from contextlib import contextmanager

__all__ = ["evaluation_mode", "frozen_parameters", "held_fixed", "held_generation"]

#: how deep in frozen_parameters blocks this process is, and a count of their entries and exits
_HELD = {"depth": 0, "generation": 0}


@contextmanager
def evaluation_mode(*modules):
    """Put modules in eval mode (a relaxed guide then samples hard discrete values)."""
    modes = [m.training for m in modules]
    for m in modules:
        m.eval()
    try:
        yield
    finally:
        for m, mode in zip(modules, modes):
            m.train(mode)


@contextmanager
def frozen_parameters(*modules):
    """Hold the modules' parameters fixed for the block: none requires a gradient, so nothing computed from them
    records a graph (an estimator that differentiates with respect to the latents alone, AIS's HMC, then builds
    and walks a smaller one, and a part may keep what it computes from them alone: the VampPrior's components).
    Each parameter that required a gradient requires one again afterwards."""
    params = {id(p): p for m in modules for p in m.parameters() if p.requires_grad}
    for p in params.values():
        p.requires_grad_(False)
    _HELD["depth"] += 1
    _HELD["generation"] += 1
    try:
        yield
    finally:
        _HELD["depth"] -= 1
        _HELD["generation"] += 1
        for p in params.values():
            p.requires_grad_(True)


def held_generation():
    """Inside a :func:`frozen_parameters` block, a number that changes each time such a block is entered or left: what
    a part may keep a value computed from parameters under (the VampPrior's components), since nothing trains them
    in the block; ``None`` outside one, where an optimizer may change a parameter without a trace a part could
    read (a fused Adam step leaves a tensor's version and storage as they were)."""
    return _HELD["generation"] if _HELD["depth"] else None


@contextmanager
def held_fixed(model, guide):
    """A trained model and guide as an estimator of log p(x) holds them: in eval mode, their parameters frozen
    (:func:`frozen_parameters`; a guide that is a plain callable has none to freeze)."""
    modules = [m for m in (model, guide) if hasattr(m, "parameters") and hasattr(m, "train")]
    with evaluation_mode(*modules), frozen_parameters(*modules):
        yield
