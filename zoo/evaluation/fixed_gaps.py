"""Each guide's distance from log p(x) on one model held fixed: the table of a compare grid run with ``--fixed-model``.

With the model fixed, every cell of the grid scores the same log p(x_n); what differs is the guide. So the figure
that compares guides is, per datum, the gap

    gap_n = log p(x_n) − ELBO_n(q) = KL(q(z | x_n) ‖ p(z | x_n))   (≥ 0),

against **one** reference of log p(x_n) shared by all cells (Cremer, Li & Duvenaud 2018, their Table 1):

- the exact log p(x_n), where the model has one in closed form or by enumeration (the harness's
  ``exact_log_likelihood``, the same in every cell, since the model is);
- else the fixed run's own AIS (its ``ais_per_datum.npz``, as a trained model's card has it) where it scored the
  grid's evaluation data (the same split, the same fixed subset);
- else, per datum, the largest importance-sampled log p(x_n) of the grid's cells: each is a stochastic lower bound,
  so their maximum is the tightest the grid holds (slightly high by the noise of a maximum; the table says which
  reference it used).

A cell's gap is the mean over data ± its standard error over data (a paired figure: every cell is scored on the same
data, against the same reference), and its IS shortfall is reference − its own importance-sampled log p(x): how far
that cell's guide, as a proposal, falls short.

**Across seeds.** Trained at several seeds (``compare --seeds``: the same minibatch order per seed in every cell),
a cell's gap also has the spread of its training: ``gap_seed_se`` = sd_s(G_s) / sqrt(S) of its per-seed gaps G_s.
And each cell is compared with the cell of the smallest gap, **paired**: per seed s, D_s = mean_n (gap_{cell,s,n} −
gap_{best,s,n}) on the same data against the same reference, so the data's own spread cancels; the difference is
mean_s D_s with Student's 95 % interval over the S seeds (S - 1 degrees of freedom). With one seed the pairing is
over the data alone (the interval then says nothing of another training run).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from zoo.core.errors import ZooError
from zoo.core.files import open_regular, read_json
from zoo.data.headers import read_npz_arrays

__all__ = ["fixed_model_gaps", "fixed_gaps_markdown"]


def _arrays(path: Path, names: Sequence[str], n: Optional[int]) -> Dict[str, np.ndarray]:
    """The 1-D float arrays ``names`` of the untrusted ``path`` (n entries each where ``n`` is given), finite and within
    :data:`MAX_LOG_P` of zero (each is a per-datum log-density or bound)."""
    with open_regular(path, "per-datum file") as f:
        arrays = read_npz_arrays(f, path, keep=lambda name: name in names)
    out = {}
    for name in names:
        a = arrays.get(name)
        if a is None or a.ndim != 1 or a.dtype.kind != "f" or (n is not None and a.shape[0] != n) \
                or not np.isfinite(a).all() or (np.abs(a) > MAX_LOG_P).any():
            raise ZooError(f"{path}: {name!r} is not {n if n is not None else 'the'} finite per-datum values within "
                           f"{MAX_LOG_P:.0e} nats of zero; re-evaluate the run that wrote it")
        out[name] = a.astype(np.float64)
    return out


def _has_member(path: Path, name: str) -> bool:
    import zipfile
    try:
        with zipfile.ZipFile(path) as archive:
            return f"{name}.npy" in archive.namelist()
    except (OSError, zipfile.BadZipFile):
        return False


#: no evaluation computes a log p(x) per datum further from zero than this (a 784-pixel image: tens to hundreds)
MAX_LOG_P = 1e6


def _plausible(value) -> bool:
    """A number that can be a per-datum log p(x): finite, within :data:`MAX_LOG_P` of zero (an integer of 400 digits
    is neither, and float() of it raises)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(float(value)) and abs(float(value)) <= MAX_LOG_P
    except OverflowError:
        return False


def _fixed_reference(fixed: Path, split: str, eval_limit: Optional[int], n: int,
                     weights_sha256: Optional[str]) -> Optional[np.ndarray]:
    """The fixed run's AIS log p(x_n) where it scored these data with these weights (its ais.json says the split,
    subset, count and the SHA-256 of the weights it scored); else None, also for an unreadable file."""
    summary = fixed / "ais.json"
    as_json = fixed / "ais_per_datum.json"          # a committed trained model's (benchmarks/trained_models.py)
    if not summary.is_file() or not ((fixed / "ais_per_datum.npz").is_file() or as_json.is_file()):
        return None
    try:
        ais = read_json(summary, "AIS result")
    except ZooError:
        return None
    config = ais.get("config") if isinstance(ais, dict) else None
    if not isinstance(config, dict) or ais.get("split") != split or config.get("eval_limit") != eval_limit \
            or ais.get("num_data") != n or weights_sha256 is None or ais.get("weights_sha256") != weights_sha256:
        return None
    if not (fixed / "ais_per_datum.npz").is_file():
        # ais.json says these are the figures of these data and weights: a file that is not what it says is refused,
        # however it fails (it is never replaced by another reference without a word)
        figures = read_json(as_json, "AIS per-datum figures", fix="restore it or score the model again")
        values = figures.get("log_likelihood") if isinstance(figures, dict) else None
        if not isinstance(values, list) or len(values) != n or not all(_plausible(v) for v in values):
            raise ZooError(f"{as_json}: 'log_likelihood' is not {n} per-datum log p(x) values, each finite and within "
                           f"{MAX_LOG_P:.0e} nats of zero; restore it or score the model again")
        return np.asarray(values, dtype=np.float64)
    return _arrays(fixed / "ais_per_datum.npz", ["log_likelihood"], n)["log_likelihood"]


def fixed_model_gaps(fixed: Path, cells: Mapping[str, Mapping[int, Path]], split: str,
                     eval_limit: Optional[int], weights_sha256: Optional[str] = None) -> Dict:
    """The grid's gaps on its fixed model (module docstring): ``cells`` maps each cell's label to its run folders by
    seed, each holding the ``per_datum.npz`` its evaluation wrote; ``weights_sha256``: the fixed weights', which an AIS
    reference must have scored. A cell's figures at several seeds are averaged per datum first, so the standard error
    is over the data alone; two cells are compared on the seeds both ran, seed by seed."""
    per_cell: Dict[str, Dict[int, Dict[str, np.ndarray]]] = {
        label: {seed: _arrays(folder / "per_datum.npz", ["elbo", "log_likelihood"], None)
                for seed, folder in folders.items()} for label, folders in cells.items()}
    sizes = {a["elbo"].shape[0] for runs in per_cell.values() for a in runs.values()}
    if len(sizes) != 1:
        raise ZooError("the grid's cells scored different numbers of data, so they share no reference; evaluate them "
                       "alike ('pyro-zoo compare --resume')")
    n = sizes.pop()
    first = next(folder for folders in cells.values() for folder in folders.values()) / "per_datum.npz"
    reference, source = None, None
    if _has_member(first, "exact_log_likelihood"):
        reference, source = _arrays(first, ["exact_log_likelihood"], n)["exact_log_likelihood"], "its exact value"
    if reference is None:
        reference = _fixed_reference(Path(fixed), split, eval_limit, n, weights_sha256)
        if reference is not None:
            # the best reference there is, but an AIS whose error nothing bounds is a lower bound on log p(x): the
            # gaps measured against it are lower bounds on KL(q || posterior), and the table says so
            from zoo.core.catalogue import card_figures, untrusted
            why = untrusted(card_figures(Path(fixed)))
            source = "AIS of the fixed model" + (f" (⚠ not yet trusted: {why}; each gap is a lower bound)" if why
                                                 else "")
    if reference is None:
        source = "the largest IS estimate of the grid's cells"
        reference = np.max(np.stack([a["log_likelihood"] for runs in per_cell.values() for a in runs.values()]),
                           axis=0)
    rows, per_seed = {}, {}
    for label, runs in per_cell.items():
        per_seed[label] = {seed: reference - a["elbo"] for seed, a in runs.items()}          # seed -> [n]
        gaps = np.mean(list(per_seed[label].values()), axis=0)
        shortfall = reference - np.mean([a["log_likelihood"] for a in runs.values()], axis=0)
        seed_gaps = np.array([g.mean() for g in per_seed[label].values()])
        rows[label] = {"gap": float(gaps.mean()), "gap_se": float(gaps.std(ddof=1) / math.sqrt(gaps.size))
                       if gaps.size > 1 else None, "is_shortfall": float(shortfall.mean()),
                       "elbo": float(np.mean([a["elbo"].mean() for a in runs.values()])), "seeds": len(runs),
                       "gap_seed_se": float(seed_gaps.std(ddof=1) / math.sqrt(seed_gaps.size))
                       if seed_gaps.size > 1 else None}
    best = min(rows, key=lambda label: rows[label]["gap"])
    for label in rows:
        rows[label]["vs_best"] = None if label == best else _paired(per_seed[label], per_seed[best], best)
    return {"fixed_model": str(fixed), "reference": source, "log_likelihood": float(reference.mean()),
            "num_data": n, "cells": rows, "best": best}


def _paired(cell: Mapping[int, np.ndarray], best: Mapping[int, np.ndarray], best_label: str) -> Optional[Dict]:
    """The cell's gap minus the best cell's, paired by seed and datum on the seeds both ran (module docstring): mean,
    SE and Student's 95 % interval over those seeds (over the data where they share one); None where they share
    none."""
    from zoo.evaluation.replicas import t_quantile
    common = sorted(set(cell) & set(best))
    if not common:
        return None
    differences = np.stack([cell[seed] - best[seed] for seed in common])          # [S, n]
    seeds = len(common)
    units = differences.mean(1) if seeds > 1 else differences[0]
    if units.size < 2:
        return None
    mean, se = float(units.mean()), float(units.std(ddof=1) / math.sqrt(units.size))
    half = t_quantile(0.975, units.size - 1) * se
    return {"cell": best_label, "difference": mean, "se": se, "ci95": [mean - half, mean + half],
            "over": "seeds" if seeds > 1 else "data", "units": int(units.size), "seeds": common}


def _number(v: Optional[float]) -> str:
    return "–" if v is None else f"{v:.2f}"


def fixed_gaps_markdown(gaps: Mapping) -> str:
    """The section of compare.md for a grid on a fixed model."""
    lines = [f"## One model held fixed: {gaps['fixed_model']}", "",
             f"Every cell trained its guide against this model (its parameters bit-identical in every cell), so the "
             f"cells differ by their guides alone. log p(x) = {gaps['log_likelihood']:.2f} nats per datum on the "
             f"{gaps['num_data']} data, from {gaps['reference']}. gap: log p(x) − ELBO, the mean KL(q ‖ p(z | x)) "
             f"± its standard error over the data; IS shortfall: log p(x) minus the cell's own importance-sampled "
             f"estimate; ± seeds: the standard error of the gap over training seeds; vs best: the gap minus that of "
             f"the best cell, paired per seed on the same data, with its 95 % interval over seeds (over data where "
             f"one seed ran).", "",
             "| cell | seeds | ELBO | gap (KL to the posterior) | ± seeds | vs best (95 % interval) | IS shortfall |",
             "|---|---|---|---|---|---|---|"]
    ordered: List[Tuple[str, Mapping]] = sorted(gaps["cells"].items(), key=lambda kv: kv[1]["gap"])
    for label, row in ordered:
        gap = f"{row['gap']:.2f}" + (f" ± {row['gap_se']:.2f}" if row["gap_se"] is not None else "")
        paired = row.get("vs_best")
        vs = "–" if not paired else (f"{paired['difference']:+.2f} [{paired['ci95'][0]:+.2f}, "
                                      f"{paired['ci95'][1]:+.2f}] over {paired['units']} {paired['over']}")
        lines.append(f"| {label} | {row['seeds']} | {row['elbo']:.2f} | {gap} | {_number(row.get('gap_seed_se'))} | "
                     f"{vs} | {_number(row['is_shortfall'])} |")
    return "\n".join(lines) + "\n"
