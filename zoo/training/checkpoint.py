"""Checkpoints: atomic to write, safe to load (``weights_only=True``), complete to resume.

A checkpoint holds the run's config, the model and guide ``state_dict``, the
optimizer state, the epoch and step, the training history and every RNG state
(torch, CUDA, numpy, python). It is written to a temporary file in the same
folder, fsynced, then renamed over the old one, so a crash at any moment leaves
either the old or the new checkpoint, never half of one.
"""
from __future__ import annotations

import os
import pickle
import random
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Dict

import numpy as np
import torch

from zoo.core.errors import ZooError

__all__ = ["atomic_write_bytes", "atomic_write_text", "save_checkpoint", "load_checkpoint",
           "rng_state", "set_rng_state"]


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)               # mkstemp makes 0600; give results the usual mode
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        dir_fd = os.open(path.parent, os.O_RDONLY)      # make the rename itself durable
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def rng_state() -> Dict[str, Any]:
    mt, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"torch": torch.get_rng_state(),
             "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                       "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
             "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: Path, **state) -> None:
    """Write ``state`` (tensors, dicts, lists, numbers, strings) atomically to ``path``."""
    import io
    buf = io.BytesIO()
    torch.save(state, buf)
    atomic_write_bytes(path, buf.getvalue())


def load_checkpoint(path: Path, map_location="cpu") -> Dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint`; no pickled code is executed."""
    path = Path(path)
    if not path.is_file():
        raise ZooError(f"no checkpoint at {path}; train a run there first")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except (RuntimeError, EOFError, zipfile.BadZipFile, pickle.UnpicklingError, ValueError, OSError) as e:
        raise ZooError(f"checkpoint {path} is corrupt or truncated ({type(e).__name__}); "
                       f"delete it and train again") from None
    if not isinstance(state, dict) or not {"config", "model", "guide"} <= set(state):
        raise ZooError(f"{path} is not a pyro-zoo checkpoint (it lacks config/model/guide)")
    return state
