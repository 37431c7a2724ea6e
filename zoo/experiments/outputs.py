"""Output folders: checked before anything is written, created on demand, JSON-ready values; an evaluation
that would replace a stronger one is refused (:func:`refuse_weaker_evaluation`)."""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Mapping

import numpy as np

from zoo.core.errors import ZooError
from zoo.core.files import read_json

__all__ = ["check_out_dir", "make_out_dir", "json_ready", "estimator_settings", "refuse_weaker_evaluation"]


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


#: the evaluation settings that only make an evaluation stronger when they grow: K, and the subset of data
STRENGTH_SETTINGS = ("eval_samples", "eval_limit")


def estimator_settings(config: Mapping) -> dict:
    """A run config's evaluation settings other than K and the subset (RunConfig's ``evaluation`` group: the
    split, the IWAE-k, a per-datum guide's refit, and any setting added to the group later): what the figures
    estimate and with which proposal. Two evaluations that differ in one of them estimate different things."""
    from zoo.experiments.config import RunConfig
    fields = [f for f in dataclasses.fields(RunConfig) if isinstance(f.metadata.get("cli"), dict)
              and f.metadata["cli"].get("group") == "evaluation" and f.name not in STRENGTH_SETTINGS]
    return {f.name: config.get(f.name, f.default) for f in fields}


def refuse_weaker_evaluation(out: Path, config: Mapping, num_samples: int, num_data: int, force: bool) -> None:
    """Refuse (one line, exit 2, nothing touched) to replace ``out/results.json`` by a weaker evaluation.

    The stored one is *stronger* when it used more importance samples K per datum, or more data (a larger
    ``--eval-limit`` subset, or the whole split), or *another* estimator or proposal (another split, IWAE-k, or
    refit of a per-datum guide's proposal: :func:`estimator_settings`), since its figures are then not the same figures
    better estimated. So ``pyro-zoo eval RUN --eval-samples 10 --eval-limit 20`` cannot silently overwrite an
    evaluation at K = 1000 on the whole test split (and leave ``compare.md`` disagreeing with it); an
    evaluation at least as strong in every way (more K, as many data, the same estimator) replaces it.
    ``force`` replaces it anyway. A ``results.json`` that cannot be read holds nothing to keep.
    """
    path = Path(out) / "results.json"
    if force or not path.is_file():
        return
    try:
        old = read_json(path, "results.json")
    except ZooError:
        return
    if not isinstance(old, dict):
        return
    old_config = old.get("config") if isinstance(old.get("config"), dict) else {}
    old_k, old_n = old.get("num_samples"), old.get("num_data")
    reasons = []
    if isinstance(old_k, int) and num_samples < old_k:
        reasons.append(f"K = {num_samples} importance samples, not {old_k}")
    if isinstance(old_n, int) and num_data < old_n:
        reasons.append(f"{num_data} data, not {old_n}")
    new_settings, old_settings = estimator_settings(config), estimator_settings(old_config)
    refit = bool(old.get("refit"))          # an amortized guide is not refit: its refit settings change nothing
    reasons += [f"{name} {new_settings[name]}, not {old_settings[name]}" for name in new_settings
                if new_settings[name] != old_settings[name] and (refit or not name.startswith("refit_"))]
    if reasons:
        raise ZooError(f"{path} holds a stronger or different evaluation (K = {old_k} on {old_n} data) than this one "
                       f"({'; '.join(reasons)}); pass --force to replace it, or evaluate a copy of the run folder")
