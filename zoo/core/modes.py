"""Modules switched to eval mode for a block, and back."""
from __future__ import annotations

from contextlib import contextmanager

__all__ = ["evaluation_mode"]


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
