"""Output folders: checked before anything is written, created on demand, JSON-ready values; an evaluation
that would replace a stronger one is refused (:func:`refuse_weaker_evaluation`)."""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Mapping, Optional

import numpy as np

from zoo.core.errors import ZooError
from zoo.core.files import read_json

__all__ = ["check_out_dir", "make_out_dir", "json_ready", "estimator_settings", "refuse_weaker_evaluation",
           "refuse_weaker", "stored_count"]


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


def stored_count(value, what: str, path: Path):
    """A count read back from a stored results file (K, the number of data, of temperatures): a whole number
    written as ``40``, ``40.0`` or ``"40"``; ``None`` where the file has none. Anything else (a fraction, a word,
    a negative or non-finite number, a boolean) is refused, so that a hand-edited file cannot make the strength
    rule pass by writing its figures in another form."""
    if value is None:
        return None
    number = None
    if isinstance(value, bool):
        number = None
    elif isinstance(value, int):
        number = value
    elif isinstance(value, float) and np.isfinite(value) and value == int(value):
        number = int(value)
    elif isinstance(value, str):
        try:
            parsed = float(value.strip())
        except ValueError:
            parsed = None
        if parsed is not None and np.isfinite(parsed) and parsed == int(parsed):
            number = int(parsed)
    if number is None or number < 0:
        raise ZooError(f"{path} gives {what} as {str(value)[:40]!r}, not a whole number, so this evaluation cannot be "
                       f"compared with it; pass --force to replace it, or evaluate a copy of the run folder")
    return number


def refuse_weaker(path: Path, strengths: Mapping[str, tuple], settings: Mapping, force: bool,
                  stored_settings=None, held_format: Optional[str] = None, stored=None) -> None:
    """Refuse (one line, exit 2, nothing touched) to replace the results file ``path`` by a weaker evaluation.

    ``strengths`` maps a stored key to ``(this evaluation's count, how to say it)``: the stored one is stronger
    where its count is larger (more importance samples, more data, more temperatures or chains). ``settings``
    are what the figures estimate, compared with ``stored_settings(old)`` (default: the stored file's own keys
    of the same names): a difference means another estimate, not the same one better estimated. ``force``
    replaces it anyway. ``stored(old)`` reads the stored file into one flat mapping where its file keeps the
    counts and settings elsewhere (``bdmc.json`` keeps them under ``settings``). A file that cannot be read as JSON
    holds nothing to keep; one whose counts are not whole numbers is refused (:func:`stored_count`)."""
    path = Path(path)
    if force or not path.is_file():
        return
    try:
        old = read_json(path, path.name)
    except ZooError:
        return
    if not isinstance(old, dict):
        return
    if stored is not None:
        old = stored(old)
    reasons, held = [], {}
    for key, (new, says) in strengths.items():
        stored = held[key] = stored_count(old.get(key), key, path)
        if stored is not None:
            if new < stored:
                reasons.append(f"{says.format(new)}, not {stored}")
    old_settings = stored_settings(old) if stored_settings is not None else {k: old.get(k) for k in settings}
    reasons += [f"{name} {settings[name]}, not {old_settings.get(name)}" for name in settings
                if name in old_settings and settings[name] != old_settings.get(name)]
    if reasons:
        what = (held_format.format(**held) if held_format is not None
                else ", ".join(f"{k} {v}" for k, v in held.items() if v is not None))
        raise ZooError(f"{path} holds a stronger or different evaluation{f' ({what})' if what else ''} than this one "
                       f"({'; '.join(reasons)}); pass --force to replace it, or evaluate a copy of the run folder")


def refuse_weaker_evaluation(out: Path, config: Mapping, num_samples: int, num_data: int, force: bool,
                             name: str = "results.json") -> None:
    """Refuse (one line, exit 2, nothing touched) to replace ``out/results.json`` (or ``out/gaps.json``: ``name``)
    by a weaker evaluation (:func:`refuse_weaker`).

    The stored one is *stronger* when it used more importance samples K per datum, or more data (a larger
    ``--eval-limit`` subset, or the whole split), or *another* estimator or proposal (another split, IWAE-k, or
    refit of a per-datum guide's proposal: :func:`estimator_settings`), since its figures are then not the same figures
    better estimated. So ``pyro-zoo eval RUN --eval-samples 10 --eval-limit 20`` cannot silently overwrite an
    evaluation at K = 1000 on the whole test split (and leave ``compare.md`` disagreeing with it); an
    evaluation at least as strong in every way (more K, as many data, the same estimator) replaces it.
    """
    def stored_settings(old):
        old_config = old.get("config") if isinstance(old.get("config"), dict) else {}
        settings = estimator_settings(old_config)
        if not old.get("refit"):            # an amortized guide is not refit: its refit settings change nothing
            settings = {k: v for k, v in settings.items() if not k.startswith("refit_")}
        return settings
    path = Path(out) / name
    refuse_weaker(path, {"num_samples": (num_samples, "K = {} importance samples"),
                         "num_data": (num_data, "{} data")},
                  estimator_settings(config), force, stored_settings, held_format="K = {num_samples} on {num_data} data")
