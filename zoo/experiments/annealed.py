"""``pyro-zoo eval RUN --estimator ais`` and ``--estimator bdmc``: annealed importance sampling of a trained run's
log p(x) on its evaluation split, and bidirectional Monte Carlo on data simulated from it.

Each writes its own files beside the run's ``results.json`` (the importance-sampling figures), which it leaves
as they are: ``ais.json``, ``ais.md`` and ``ais_per_datum.npz``; ``bdmc.json`` and ``bdmc.md``. The folder is
read as data and locked as ``eval`` does (:func:`~zoo.experiments.run.evaluate_run`), the files are written as
one group, and a weaker evaluation (fewer data, chains or temperatures, or another path) does not replace a
stronger one without ``--force``. With several numbers of temperatures (``--temperatures 100,200,400``) AIS runs
at each, on the same data, and its table shows how the estimate moves as T doubles; the headline figure is the
largest T's.
"""
from __future__ import annotations

import dataclasses
import io
import json
import time
from pathlib import Path
from typing import Dict, Optional, Sequence

import numpy as np
import pyro

from zoo.core.errors import ZooError
from zoo.evaluation.ais import AnnealedImportanceSampling
from zoo.evaluation.bdmc import bdmc_markdown, bidirectional_monte_carlo
from zoo.experiments.outputs import json_ready, refuse_weaker
from zoo.experiments.run import _eval_subset, evaluation_guide, prepare, results_kept_on_stop
from zoo.experiments.run_folder import load_run, load_weights, writer_lock
from zoo.rules import check_bdmc
from zoo.training.checkpoint import atomic_write_bytes, atomic_write_text, signals_deferred
from zoo.usercode.errors import user_code_errors

__all__ = ["ais_run", "bdmc_run", "ais_markdown", "DEFAULT_TEMPERATURES", "DEFAULT_BDMC_TEMPERATURES"]

DEFAULT_TEMPERATURES = (500,)
DEFAULT_BDMC_TEMPERATURES = (100, 200, 400)


def _opened(out: Path, model_file, guide_file, device, data_dir, eval_limit):
    """The run in ``out`` prepared with its weights, and its evaluation data."""
    state, config = load_run(out, model_file, guide_file=guide_file)
    changes = {"device": device, "data_dir": data_dir, "eval_limit": eval_limit}
    config = dataclasses.replace(config, **{k: v for k, v in changes.items() if v is not None})
    run = prepare(config)
    load_weights(run.model, run.guide, state, out / "checkpoint.pt")
    return run


def _sampler(chains: int, leapfrog: int, path: str, batch_size: int) -> AnnealedImportanceSampling:
    return AnnealedImportanceSampling(num_chains=chains, leapfrog_steps=leapfrog, path=path, batch_size=batch_size)


def _temperatures(values: Optional[Sequence[int]], default: Sequence[int]) -> list:
    values = list(default if not values else values)
    if any(isinstance(t, bool) or not isinstance(t, int) or t < 1 for t in values):
        raise ZooError(f"--temperatures takes whole numbers >= 1, got {','.join(str(t) for t in values)}")
    return sorted(set(values))


def ais_run(out: Path, temperatures: Optional[Sequence[int]] = None, chains: int = 16, leapfrog: int = 10,
            path: str = "guide", batch_size: int = 100, eval_limit: Optional[int] = None,
            device: Optional[str] = None, data_dir: Optional[str] = None, progress: bool = True,
            model_file: Optional[str] = None, guide_file: Optional[str] = None, force: bool = False) -> Dict:
    """AIS estimates of log p(x) on the run's evaluation split at each number of temperatures; writes
    ``ais.{json,md}`` and ``ais_per_datum.npz`` (the largest T's per-datum figures) and returns the summary."""
    out = Path(out)
    temperatures = _temperatures(temperatures, DEFAULT_TEMPERATURES)
    base = _sampler(chains, leapfrog, path, batch_size)             # checks the options before any work
    if not out.is_dir():
        raise ZooError(f"no run folder at {out}; train one there first ('pyro-zoo train ... --out {out}')")
    with results_kept_on_stop(out), writer_lock(out):       # a stop once the lock is held says the results are kept
        run = _opened(out, model_file, guide_file, device, data_dir, eval_limit)
        x_eval, _ = _eval_subset(run.data, run.config)
        settings = {"path": path, "leapfrog_steps": leapfrog, "split": run.config.eval_split}
        refuse_weaker(out / "ais.json", {"num_data": (x_eval.shape[0], "{} data"),
                                         "num_chains": (chains, "{} chains"),
                                         "num_temperatures": (max(temperatures), "T = {} temperatures")},
                      settings, force)
        x_eval = x_eval.to(run.device)
        guide, refit = evaluation_guide(run, x_eval, progress)
        rows, per_datum = [], None
        with user_code_errors(run.model.display_name, "in evaluation"):
            for T in temperatures:
                pyro.set_rng_seed(run.config.seed + 23456)
                t0 = time.perf_counter()
                done = (lambda n, T=T: print(f"AIS T={T}: {n}/{x_eval.shape[0]} data", flush=True)) if progress \
                    else None
                result = dataclasses.replace(base, num_temperatures=T).estimate(run.model, guide, x_eval, done)
                rows.append({**result.summary(), "seconds": time.perf_counter() - t0})
                per_datum = result.per_datum()
        summary = {"config": run.config.to_json(), "device": str(run.device), "split": run.config.eval_split,
                   **{k: v for k, v in rows[-1].items()}, "rows": rows,
                   "refit": refit.to_json() if refit is not None else None}
        buf = io.BytesIO()
        np.savez(buf, **{k: v.numpy() for k, v in per_datum.items()})
        with signals_deferred():
            atomic_write_text(out / "ais.json", json.dumps(json_ready(summary), indent=2))
            atomic_write_text(out / "ais.md", ais_markdown(summary))
            atomic_write_bytes(out / "ais_per_datum.npz", buf.getvalue())
        return summary


def bdmc_run(out: Path, temperatures: Optional[Sequence[int]] = None, chains: int = 16, leapfrog: int = 10,
             path: str = "guide", batch_size: int = 100, num_data: int = 100, device: Optional[str] = None,
             data_dir: Optional[str] = None, progress: bool = True, model_file: Optional[str] = None,
             guide_file: Optional[str] = None, force: bool = False) -> Dict:
    """BDMC on ``num_data`` data simulated from the trained model at each number of temperatures; writes
    ``bdmc.{json,md}`` and returns the summary."""
    out = Path(out)
    temperatures = _temperatures(temperatures, DEFAULT_BDMC_TEMPERATURES)
    base = _sampler(chains, leapfrog, path, batch_size)
    if not out.is_dir():
        raise ZooError(f"no run folder at {out}; train one there first ('pyro-zoo train ... --out {out}')")
    with results_kept_on_stop(out), writer_lock(out):       # a stop once the lock is held says the results are kept
        run = _opened(out, model_file, guide_file, device, data_dir, None)
        check_bdmc(run.model, run.guide, path)
        refuse_weaker(out / "bdmc.json", {"num_data": (num_data, "{} simulated data"),
                                          "num_chains": (chains, "{} chains")},
                      {"path": path, "leapfrog_steps": leapfrog}, force)
        t0 = time.perf_counter()
        with user_code_errors(run.model.display_name, "in evaluation"):
            rows = bidirectional_monte_carlo(run.model, run.guide, base, num_data=num_data, temperatures=temperatures,
                                             seed=run.config.seed + 34567,
                                             progress=(lambda s: print(s, flush=True)) if progress else None)
        for row in rows:
            row.pop("per_datum")
        summary = {"config": run.config.to_json(), "device": str(run.device), "num_data": num_data,
                   "settings": {**base.settings(), "num_temperatures": temperatures}, "rows": rows,
                   "gap": rows[-1]["gap"], "seconds": time.perf_counter() - t0}
        with signals_deferred():
            atomic_write_text(out / "bdmc.json", json.dumps(json_ready(summary), indent=2))
            atomic_write_text(out / "bdmc.md", bdmc_markdown(summary))
        return summary


def ais_markdown(summary: Dict) -> str:
    """The AIS table of ``ais.json``: one row per number of temperatures."""
    lines = [f"AIS on {summary['num_data']} {summary['split']} data ({summary['num_chains']} chains per datum, path "
             f"{summary['path']}, {summary['schedule']} schedule, {summary['leapfrog_steps']} leapfrog steps, "
             f"step sizes from a pilot run of {summary['pilot_chains']} chains, frozen).", "",
             "| T | log p(x) | SE (chains) | SE (data) | ESS mean | acceptance | seconds |",
             "|---|---|---|---|---|---|---|"]
    for row in summary["rows"]:
        data_se = row["log_likelihood_data_se"]
        flag = " ⚠" if row.get("se_warning") else ""
        lines.append(f"| {row['num_temperatures']} | {row['log_likelihood']:.3f} | {row['log_likelihood_se']:.4f}{flag} "
                     f"| {'-' if data_se is None else f'{data_se:.3f}'} | {row['ess_mean']:.1f} | "
                     f"{row['acceptance_mean']:.2f} | {row['seconds']:.0f} |")
    lines += ["", "Nats per datum. AIS is a stochastic lower bound on log p(x); its SE is the spread of the chains "
              "and says nothing of the bias left at a finite T: the estimate rising as T doubles shows that bias, "
              "and `--estimator bdmc` bounds it from above on simulated data."]
    warnings = [row["se_warning"] for row in summary["rows"] if row.get("se_warning")]
    if warnings:
        lines += ["", f"⚠ {warnings[-1]}"]
    return "\n".join(lines) + "\n"
