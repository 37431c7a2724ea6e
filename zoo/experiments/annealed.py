"""``pyro-zoo eval RUN --estimator ais`` and ``--estimator bdmc``: annealed importance sampling of a trained run's
log p(x) on its evaluation split, and bidirectional Monte Carlo on data simulated from it.

Each writes its own files beside the run's ``results.json`` (the importance-sampling figures), which it leaves
as they are: ``ais.json``, ``ais.md`` and ``ais_per_datum.npz``; ``bdmc.json`` and ``bdmc.md``. The folder is
read as data and locked as ``eval`` does (:func:`~zoo.experiments.run.evaluate_run`), the files are written as
one group, and a weaker evaluation (fewer data, chains or temperatures, or another path) does not replace a
stronger one without ``--force``. With several numbers of temperatures (``--temperatures 100,200,400``) AIS runs
at each, on the same data, and its table shows how the estimate moves as T doubles; the headline figure is the
largest T's.

AIS on a thousand images runs for an hour, so it is resumable: after each minibatch its figures are kept in
``ais_partial.npz`` (written atomically), each minibatch draws from a seed of its own, and the same command run
again after a stop (Ctrl-C, SIGKILL, a power cut) takes the minibatches kept there and runs only the others. The
result is that of a run without a stop, bit for bit. Kept minibatches are taken only if they were computed with
the same weights (the model's and guide's tensors, after any refit), the same data, the same settings and seed
(a hash of all of them is stored with them); otherwise they are set aside and the run starts afresh. The file is
removed once ``ais.json`` is written.
"""
from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import re
import sys
import time
from pathlib import Path
from typing import Dict, Optional, Sequence

import numpy as np
import torch

from zoo.core.errors import ZooError
from zoo.core.files import open_regular
from zoo.data.headers import read_npz_arrays
from zoo.evaluation.ais import MIXING_FIELDS, AnnealedImportanceSampling, coordinates_text
from zoo.evaluation.bdmc import bdmc_markdown, bidirectional_monte_carlo
from zoo.evaluation.replicas import ais_replica, ais_starts, judge, reason_array
from zoo.experiments.outputs import json_ready, refuse_weaker
from zoo.experiments.run import evaluation_guide, results_kept_on_stop
from zoo.experiments.run_folder import writer_lock
from zoo.experiments.trained import open_trained
from zoo.rules import check_bdmc
from zoo.training.checkpoint import atomic_write_bytes, atomic_write_text, signals_deferred
from zoo.usercode.errors import user_code_errors

__all__ = ["ais_run", "bdmc_run", "ais_markdown", "DEFAULT_TEMPERATURES", "DEFAULT_BDMC_TEMPERATURES", "PARTIAL"]

#: the minibatches of an AIS evaluation finished so far, kept so that a stopped run resumes (module docstring)
PARTIAL = "ais_partial.npz"
_FIELDS = ("log_likelihood", "se", "ess", "acceptance", "acceptance_sum", "step_sizes") + MIXING_FIELDS

DEFAULT_TEMPERATURES = (500,)
DEFAULT_BDMC_TEMPERATURES = (100, 200, 400)


def _sampler(chains: int, leapfrog: int, path: str, batch_size: int, precondition: str) -> AnnealedImportanceSampling:
    return AnnealedImportanceSampling(num_chains=chains, leapfrog_steps=leapfrog, path=path, batch_size=batch_size,
                                      precondition=precondition)


def _temperatures(values: Optional[Sequence[int]], default: Sequence[int]) -> list:
    values = list(default if not values else values)
    if any(isinstance(t, bool) or not isinstance(t, int) or t < 1 for t in values):
        raise ZooError(f"--temperatures takes whole numbers >= 1, got {','.join(str(t) for t in values)}")
    return sorted(set(values))


def _resume_key(run, guide, x_eval, temperatures, sampler: AnnealedImportanceSampling, seed: int,
                replicas: int = 1) -> str:
    """What kept minibatches must have been computed with to be taken: a hash of the model's and guide's tensors
    (the guide after any refit) and of the evaluation data, every setting of the sampler, the Ts and the seed."""
    digest = hashlib.sha256()
    for module in (run.model, guide):
        for name, tensor in sorted(module.state_dict().items()):
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    digest.update(x_eval.detach().cpu().contiguous().numpy().tobytes())
    return json.dumps({"sha256": digest.hexdigest(), "temperatures": list(temperatures), "seed": seed,
                       **({"replicas": replicas} if replicas > 1 else {}),
                       "batch_size": sampler.batch_size, "device": str(run.device), **sampler.settings()},
                      sort_keys=True)


def _kept_minibatches(path: Path, key: str) -> Dict[int, Dict[int, Dict]]:
    """{T: {first index: figures}} of ``ais_partial.npz`` where its key is ``key``; else nothing (and a line on
    stderr saying why it was set aside). The file is read as untrusted data: no pickle, headers checked first."""
    if not path.is_file():
        return {}
    try:
        with open_regular(path, "file of AIS progress") as f:
            arrays = read_npz_arrays(f, path)
    except ZooError as e:
        print(f"pyro-zoo: {e}; starting AIS afresh", file=sys.stderr)
        return {}
    stored = arrays.pop("key", None)           # the key's UTF-8 bytes: the checked reader takes numbers only
    if stored is None or stored.dtype != np.uint8 or stored.ndim != 1 or stored.tobytes() != key.encode():
        print(f"pyro-zoo: {path} holds AIS progress of another evaluation (other weights, data or settings); "
              f"starting afresh", file=sys.stderr)
        return {}
    kept: Dict[int, Dict[int, Dict]] = {}
    for name, array in arrays.items():
        match = re.fullmatch(r"T(\d+)(?:r(\d+))?_(\d+)_(\w+)", name)
        if match is None or match.group(4) not in _FIELDS:
            continue
        slot = int(match.group(1)) if match.group(2) is None else (int(match.group(1)), int(match.group(2)))
        kept.setdefault(slot, {}).setdefault(int(match.group(3)), {})[match.group(4)] = torch.from_numpy(array)
    return {T: {start: figures for start, figures in batches.items() if set(figures) == set(_FIELDS)}
            for T, batches in kept.items()}


def _keep(path: Path, key: str, kept: Dict[int, Dict[int, Dict]]) -> None:
    arrays = {"key": np.frombuffer(key.encode(), dtype=np.uint8)}
    for slot, batches in kept.items():
        name = f"T{slot}" if isinstance(slot, int) else f"T{slot[0]}r{slot[1]}"     # (T, replica) past the first
        for start, figures in batches.items():
            arrays.update({f"{name}_{start}_{k}": v.numpy() for k, v in figures.items()})
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    atomic_write_bytes(path, buf.getvalue())


def ais_run(out: Path, temperatures: Optional[Sequence[int]] = None, chains: int = 16, leapfrog: int = 10,
            path: str = "guide", batch_size: int = 100, eval_limit: Optional[int] = None,
            precondition: str = "transport", device: Optional[str] = None, data_dir: Optional[str] = None,
            progress: bool = True, model_file: Optional[str] = None, guide_file: Optional[str] = None,
            force: bool = False, replicas: int = 1) -> Dict:
    """AIS estimates of log p(x) on the run's evaluation split at each number of temperatures; writes
    ``ais.{json,md}`` and ``ais_per_datum.npz`` (the largest T's per-datum figures) and returns the summary.

    With ``replicas`` R > 1 each T runs R independent replicas from different starts and seeds
    (:mod:`zoo.evaluation.replicas`; the first is the run R = 1 makes, bit for bit): the headline is their pooled
    estimate, and each datum is called reliable only where they agree and their chains and weights pass their
    checks; ``ais_per_datum.npz`` holds the flags and a reason per datum, the summary the share flagged."""
    out = Path(out)
    temperatures = _temperatures(temperatures, DEFAULT_TEMPERATURES)
    if isinstance(replicas, bool) or not isinstance(replicas, int) or replicas < 1:
        raise ZooError(f"--replicas takes a whole number >= 1, got {replicas!r}")
    base = _sampler(chains, leapfrog, path, batch_size, precondition)   # checks the options before any work
    if not out.is_dir():
        raise ZooError(f"no run folder at {out}; train one there first ('pyro-zoo train ... --out {out}')")
    with results_kept_on_stop(out), writer_lock(out):       # a stop once the lock is held says the results are kept
        # the weights its results score (the best epoch's under --keep-best), so AIS estimates the same model as IS
        run = open_trained(out, {"device": device, "data_dir": data_dir, "eval_limit": eval_limit},
                           model_file=model_file, guide_file=guide_file)
        x_eval, _ = run.evaluation_data()
        settings = {"path": path, "leapfrog_steps": leapfrog, "split": run.config.eval_split}
        refuse_weaker(out / "ais.json", {"num_data": (x_eval.shape[0], "{} data"),
                                         "num_chains": (chains, "{} chains"),
                                         "num_temperatures": (max(temperatures), "T = {} temperatures"),
                                         "replicas": (replicas, "{} replicas")},
                      settings, force)
        x_eval = x_eval.to(run.device)
        guide, refit = evaluation_guide(run, x_eval, progress)
        seed = run.config.seed + 23456
        key = _resume_key(run, guide, x_eval, temperatures, base, seed, replicas)
        kept = _kept_minibatches(out / PARTIAL, key)
        resumed = sum(len(batches) for batches in kept.values())
        if resumed and progress:
            print(f"AIS: resuming, {resumed} minibatches kept in {out / PARTIAL}", flush=True)
        rows, per_datum = [], None
        try:
            with user_code_errors(run.model.display_name, "in evaluation"):
                for T in temperatures:
                    t0 = time.perf_counter()
                    done = ((lambda n, T=T: print(f"AIS T={T}: {n}/{x_eval.shape[0]} data", flush=True)) if progress
                            else None)

                    sampler, found, first = dataclasses.replace(base, num_temperatures=T), [], None
                    for r, start in enumerate(ais_starts(path, replicas)):
                        slot = T if r == 0 else (T, r)

                        def keep(first_index, figures, slot=slot):
                            kept.setdefault(slot, {})[first_index] = figures
                            _keep(out / PARTIAL, key, kept)
                        replica, result = ais_replica(sampler, run.model, guide, x_eval, start, seed + 1009 * r,
                                                      progress=done, done=kept.get(slot), on_batch=keep)
                        found.append(replica)
                        first = first or result
                    row, per_datum = {**first.summary(), "seconds": time.perf_counter() - t0}, first.per_datum()
                    if replicas > 1:
                        row, per_datum = _pooled(row, per_datum, judge(found))
                    rows.append(row)
        except KeyboardInterrupt as e:
            count = sum(len(batches) for batches in kept.values())
            if count:
                e.zoo_note = (f"{out}'s results are as they were, and {count} finished AIS minibatches are kept in "
                              f"{out / PARTIAL}: run the same command again to resume")
            raise
        summary = {"config": run.config.to_json(), "device": str(run.device), "split": run.config.eval_split,
                   **{k: v for k, v in rows[-1].items()}, "rows": rows,
                   "refit": refit.to_json() if refit is not None else None}
        buf = io.BytesIO()
        np.savez(buf, **{k: (v.numpy() if torch.is_tensor(v) else v) for k, v in per_datum.items()})
        with signals_deferred():
            atomic_write_text(out / "ais.json", json.dumps(json_ready(summary), indent=2))
            atomic_write_text(out / "ais.md", ais_markdown(summary))
            atomic_write_bytes(out / "ais_per_datum.npz", buf.getvalue())
            (out / PARTIAL).unlink(missing_ok=True)
        return summary


def _pooled(row: Dict, per_datum: Dict, verdict) -> tuple:
    """The row and per-datum columns of the first replica with the replicas' pooled estimate as the headline, and
    their verdict per datum (:mod:`zoo.evaluation.replicas`)."""
    n = verdict.log_likelihood.shape[0]
    summary = verdict.summary()
    row = {**row, "replicas": len(verdict.replicas), "reliability": summary,
           "log_likelihood": summary["pooled_log_likelihood"], "log_likelihood_se": summary["pooled_log_likelihood_se"],
           "log_likelihood_data_se": (verdict.log_likelihood.std() / n ** 0.5).item() if n > 1 else None,
           "nll": -summary["pooled_log_likelihood"], "frac_flagged": summary["frac_flagged"],
           "first_replica": {k: row[k] for k in ("log_likelihood", "log_likelihood_se", "frac_se_unreliable")}}
    per_datum = {**{f"first_replica_{k}": v for k, v in per_datum.items()},
                 "log_likelihood": verdict.log_likelihood, "log_likelihood_se": verdict.log_likelihood_se,
                 **{k: v for k, v in verdict.per_datum().items() if not k.startswith("pooled_")},
                 "reasons": reason_array(verdict.reasons)}
    return row, per_datum


def bdmc_run(out: Path, temperatures: Optional[Sequence[int]] = None, chains: int = 16, leapfrog: int = 10,
             path: str = "guide", batch_size: int = 100, num_data: int = 100, precondition: str = "transport",
             device: Optional[str] = None,
             data_dir: Optional[str] = None, progress: bool = True, model_file: Optional[str] = None,
             guide_file: Optional[str] = None, force: bool = False) -> Dict:
    """BDMC on ``num_data`` data simulated from the trained model at each number of temperatures; writes
    ``bdmc.{json,md}`` and returns the summary."""
    out = Path(out)
    temperatures = _temperatures(temperatures, DEFAULT_BDMC_TEMPERATURES)
    base = _sampler(chains, leapfrog, path, batch_size, precondition)
    if not out.is_dir():
        raise ZooError(f"no run folder at {out}; train one there first ('pyro-zoo train ... --out {out}')")
    with results_kept_on_stop(out), writer_lock(out):       # a stop once the lock is held says the results are kept
        run = open_trained(out, {"device": device, "data_dir": data_dir}, model_file=model_file, guide_file=guide_file)
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
    start = f", from {summary['start']}" if summary.get("start") else ""
    coordinates = coordinates_text(summary.get("precondition"), summary.get("transported"))
    lines = [f"AIS on {summary['num_data']} {summary['split']} data ({summary['num_chains']} chains per datum, path "
             f"{summary['path']}{start}, {summary['schedule']} schedule, {summary['leapfrog_steps']} leapfrog steps"
             f"{coordinates}, step sizes from a pilot run of {summary['pilot_chains']} chains, frozen).", "",
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
    last = summary["rows"][-1]
    if last.get("reliability"):
        reliability = last["reliability"]
        counts = ", ".join(f"{k} {v}" for k, v in reliability["flag_counts"].items()) or "none"
        lines += ["", f"{reliability['replicas']} replicas per datum (from {', '.join(reliability['starts'])}), "
                  f"pooled: log p(x) and its SE are theirs; {reliability['frac_flagged']:.1%} of data flagged "
                  f"(the replicas disagree, or a replica's chains or weights fail their checks: {counts}); each "
                  f"datum's reason is in ais_per_datum.npz (`reasons`)."]
    warnings = [row["se_warning"] for row in summary["rows"] if row.get("se_warning")]
    if warnings:
        lines += ["", f"⚠ {warnings[-1]}"]
    return "\n".join(lines) + "\n"
