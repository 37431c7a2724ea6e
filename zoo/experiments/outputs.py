"""Output folders: checked before anything is written, created on demand, JSON-ready values."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from zoo.core.errors import ZooError

__all__ = ["check_out_dir", "make_out_dir", "json_ready"]


def check_out_dir(out: Path, force: bool, resume: bool) -> None:
    if out.exists() and not out.is_dir():
        raise ZooError(f"--out {out} exists and is not a folder; choose another path")
    if out.exists() and (out / "results.json").exists() and not (force or resume):
        raise ZooError(f"{out} already holds results; pass --force to overwrite or choose another --out")
    probe = out if out.exists() else next((p for p in out.parents if p.exists()), Path("."))
    if not probe.is_dir():
        raise ZooError(f"cannot create --out {out}: {probe} is a file; choose another path")
    if not os.access(probe, os.W_OK):
        raise ZooError(f"cannot write to {probe}; choose a writable --out")


def make_out_dir(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ZooError(f"cannot create --out {out} ({e.strerror}); choose a writable path") from None


def json_ready(obj):
    if isinstance(obj, dict):
        return {k: json_ready(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_ready(v) for v in obj]
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    return obj
