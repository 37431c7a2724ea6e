"""``FILE.py:NAME``: how the command line names a user's model or guide in a file.

A spec names the file and the name of the callable in it. A run records its spec with the
file made absolute (:func:`absolute_spec`, applied where a :class:`~zoo.experiments.config.RunConfig`
is made), so the run never depends on the folder it was started from.

Example::

    >>> is_file_spec("my_models.py:my_vae"), is_file_spec("vae")
    (True, False)
    >>> spec_label("runs/my_models.py:my_vae"), spec_label("amortized")
    ('my_vae', 'amortized')
"""
from __future__ import annotations

from pathlib import Path
from typing import Tuple

from zoo.core.errors import ZooError

__all__ = ["FILE_KINDS", "is_file_spec", "split_spec", "spec_label", "absolute_spec"]

#: What NAME in a ``FILE.py:NAME`` of each kind must be.
FILE_KINDS = {"model": "a Pyro model function, or a factory def NAME(x_dim) that returns one",
              "guide": "a Pyro guide function guide(x, idx=None, N=None), or a factory def NAME(model) that "
                       "returns one"}


def is_file_spec(spec) -> bool:
    """Whether a model or guide name is a ``FILE.py:NAME`` spec (or a bare ``FILE.py``, refused with a hint)."""
    return isinstance(spec, str) and (spec.endswith(".py") or ".py:" in spec)


def split_spec(spec: str, kind: str = "model") -> Tuple[Path, str]:
    """The file and the NAME of a ``FILE.py:NAME`` spec of ``kind`` ("model" or "guide"); one line if it is not one."""
    path, _, attr = spec.rpartition(":")
    if not path.endswith(".py"):
        raise ZooError(f"{kind} {spec!r}: name the {kind} in the file too, FILE.py:NAME ({FILE_KINDS[kind]})")
    if not attr.isidentifier():
        raise ZooError(f"{kind} {spec!r}: {attr!r} is not a Python name; give FILE.py:NAME")
    return Path(path), attr


def spec_label(spec: str) -> str:
    """A name fit for folder names: a registry name as it is, ``FILE.py:NAME`` as ``NAME``."""
    return spec.rpartition(":")[2] if is_file_spec(spec) else spec


def absolute_spec(spec: str, kind: str = "model") -> str:
    """``FILE.py:NAME`` with FILE made absolute (any other name as it is): what a run records."""
    if not is_file_spec(spec):
        return spec
    path, attr = split_spec(spec, kind)
    return f"{path.resolve()}:{attr}"
