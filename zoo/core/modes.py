"""Modules switched to eval mode for a block, and back; their parameters held fixed for a block, and back."""
from __future__ import annotations

from contextlib import contextmanager

__all__ = ["evaluation_mode", "frozen_parameters", "held_fixed"]


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
    try:
        yield
    finally:
        for p in params.values():
            p.requires_grad_(True)


@contextmanager
def held_fixed(model, guide):
    """A trained model and guide as an estimator of log p(x) holds them: in eval mode, their parameters frozen
    (:func:`frozen_parameters`; a guide that is a plain callable has none to freeze)."""
    modules = [m for m in (model, guide) if hasattr(m, "parameters") and hasattr(m, "train")]
    with evaluation_mode(*modules), frozen_parameters(*modules):
        yield
