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
(a hash of all of them is stored with them), and only if they are still the figures that were kept (a SHA-256 of
them is stored too) and figures AIS can have computed (per-datum vectors of the minibatch's length, finite, in
range); otherwise they are set aside, with one line that says so, and computed again. The file is
removed once ``ais.json`` is written.
"""
from __future__ import annotations

import dataclasses
import io
import json
import re
import sys
import time
from pathlib import Path
from typing import Dict, Optional, Sequence

import numpy as np
import torch

from zoo.core.seeds import REPLICA_STRIDE, stream_seed
from zoo.core.errors import ZooError
from zoo.core.files import open_regular
from zoo.core.memory import refuse_oversized_annealing
from zoo.data.headers import read_npz_arrays
from zoo.evaluation.ais import MIXING_FIELDS, AnnealedImportanceSampling, coordinates_text
from zoo.evaluation.bdmc import bdmc_markdown, bidirectional_monte_carlo
from zoo.evaluation.replicas import ais_replica, ais_starts, check_replicas, judge, reason_array
from zoo.experiments.outputs import json_ready, refuse_weaker
from zoo.experiments.progress import figures_digest, log_p_bound, resume_key, summed_for_annealing
from zoo.experiments.run import evaluation_guide, results_kept_on_stop
from zoo.experiments.run_folder import writer_lock
from zoo.experiments.trained import Invocation
from zoo.rules import check_bdmc
from zoo.training.checkpoint import atomic_write_bytes, written_together
from zoo.usercode.errors import user_code_errors

__all__ = ["ais_run", "bdmc_run", "ais_markdown", "pooled_row", "DEFAULT_TEMPERATURES", "DEFAULT_BDMC_TEMPERATURES", "PARTIAL"]

#: the minibatches of an AIS evaluation finished so far, kept so that a stopped run resumes (module docstring)
PARTIAL = "ais_partial.npz"
_FIELDS = ("log_likelihood", "se", "ess", "acceptance", "acceptance_sum", "step_sizes") + MIXING_FIELDS

DEFAULT_TEMPERATURES = (500,)
DEFAULT_BDMC_TEMPERATURES = (100, 200, 400)


def _temperatures(values: Optional[Sequence[int]], default: Sequence[int]) -> list:
    values = list(default if not values else values)
    if any(isinstance(t, bool) or not isinstance(t, int) or t < 1 for t in values):
        raise ZooError(f"--temperatures takes whole numbers >= 1, got {','.join(str(t) for t in values)}")
    return sorted(set(values))


def _unfit_figures(figures: Dict[str, np.ndarray], length: int, T: int, chains: int, bound: float) -> Optional[str]:
    """Why a kept minibatch of ``length`` data cannot be one that AIS at ``T`` temperatures with ``chains`` chains
    computed, or ``None``: the figures are per-datum vectors of its exact length, finite and in their ranges."""
    for name in ("log_likelihood", "se", "ess", "acceptance"):
        array = figures[name]
        if array.dtype.kind != "f" or array.shape != (length,) or not np.isfinite(array).all():
            return f"{name} is not {length} finite numbers"
    for name in MIXING_FIELDS:                 # NaN where a figure does not apply (no discrete site, no HMC)
        array = figures[name]
        if array.dtype.kind != "f" or array.shape != (length,) or np.isinf(array).any() or (array < 0).any():
            return f"{name} is not {length} numbers >= 0 (or NaN)"
    if (figures["log_likelihood"] > bound).any():
        return f"a log p(x) above {bound:g}"
    if (figures["se"] < 0).any() or (figures["ess"] < 0).any() or (figures["ess"] > chains * (1 + 1e-6)).any():
        return f"an SE below 0 or an ESS outside [0, {chains}]"
    if (figures["acceptance"] < 0).any() or (figures["acceptance"] > 1).any():
        return "an acceptance rate outside [0, 1]"
    sums, steps = figures["acceptance_sum"], figures["step_sizes"]
    if (sums.dtype.kind != "f" or sums.ndim != 1 or sums.shape[0] not in (0, T - 1) or not np.isfinite(sums).all()
            or (sums < 0).any() or (sums > length * chains * (1 + 1e-6)).any()):
        return "acceptance sums that are not one per temperature"
    if steps.dtype.kind != "f" or not (steps.size == 0 or steps.shape == (T + 1, length)) \
            or not np.isfinite(steps).all() or (steps < 0).any():
        return f"step sizes that are not [{T + 1}, {length}] finite numbers"
    return None


def _kept_minibatches(path: Path, key: str, num_data: int, batch_size: int, temperatures: Sequence[int],
                      chains: int, bound: float) -> Dict:
    """{slot: {first index: figures}} of ``ais_partial.npz`` (a slot is T, or (T, replica) past the first replica)
    where its key is ``key`` and its digest that of its figures; else nothing (and a line on stderr saying why it
    was set aside). The file is read as untrusted data: no pickle, headers checked first, and each minibatch taken
    only if AIS can have computed it (its length, its figures finite and in range); the others are run again."""
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
    digest = arrays.pop("digest", None)
    if digest is None or digest.dtype != np.uint8 or not np.array_equal(digest, figures_digest(key, arrays)):
        print(f"pyro-zoo: {path}'s figures are not those AIS kept there (edited or damaged since); starting AIS "
              f"afresh", file=sys.stderr)
        return {}
    found: Dict = {}
    for name, array in arrays.items():
        match = re.fullmatch(r"T(\d+)(?:r(\d+))?_(\d+)_(\w+)", name)
        if match is None or match.group(4) not in _FIELDS:
            continue
        slot = int(match.group(1)) if match.group(2) is None else (int(match.group(1)), int(match.group(2)))
        found.setdefault(slot, {}).setdefault(int(match.group(3)), {})[match.group(4)] = array
    kept: Dict = {}
    unfit = []
    for slot, batches in found.items():
        T = slot if isinstance(slot, int) else slot[0]
        for start, figures in batches.items():
            if T not in temperatures or start % batch_size or start >= num_data or set(figures) != set(_FIELDS):
                continue
            why = _unfit_figures(figures, min(batch_size, num_data - start), T, chains, bound)
            if why is not None:
                unfit.append(why)
                continue
            kept.setdefault(slot, {})[start] = {k: torch.from_numpy(v) for k, v in figures.items()}
    if unfit:
        print(f"pyro-zoo: {len(unfit)} minibatches kept in {path} hold figures AIS cannot have computed "
              f"({unfit[0]}); running them again", file=sys.stderr)
    return kept


def _keep(path: Path, key: str, kept: Dict) -> None:
    arrays = {}
    for slot, batches in kept.items():
        name = f"T{slot}" if isinstance(slot, int) else f"T{slot[0]}r{slot[1]}"     # (T, replica) past the first
        for start, figures in batches.items():
            arrays.update({f"{name}_{start}_{k}": v.numpy() for k, v in figures.items()})
    buf = io.BytesIO()
    np.savez(buf, key=np.frombuffer(key.encode(), dtype=np.uint8), digest=figures_digest(key, arrays), **arrays)
    atomic_write_bytes(path, buf.getvalue())


def ais_run(out: Path, sampler: AnnealedImportanceSampling, temperatures: Optional[Sequence[int]] = None,
            invocation: Optional[Invocation] = None, replicas: int = 1, sum_discrete: str = "auto") -> Dict:
    """AIS estimates of log p(x) on the run's evaluation split (its fixed subset where ``invocation`` changes
    ``eval_limit``) with ``sampler`` (its chains, leapfrog steps, path, batch size and preconditioner) at each number
    of ``temperatures``; writes ``ais.{json,md}`` and ``ais_per_datum.npz`` (the largest T's per-datum figures) and
    returns the summary.

    With ``replicas`` R > 1 each T runs R independent replicas from different starts and seeds
    (:mod:`zoo.evaluation.replicas`; the first is the run R = 1 makes, bit for bit): the headline is their pooled
    estimate, and each datum is called reliable only where they agree and their chains and weights pass their
    checks; ``ais_per_datum.npz`` holds the flags and a reason per datum, the summary the share flagged.

    With ``sum_discrete`` "auto" the model's local discrete latents are summed out exactly where it allows
    (:mod:`zoo.evaluation.summed`) and the chains move the real latents alone; the summary says which, or why none."""
    out = Path(out)
    invocation = invocation or Invocation()
    temperatures = _temperatures(temperatures, DEFAULT_TEMPERATURES)
    check_replicas(replicas)
    base, progress = sampler, invocation.progress
    if not out.is_dir():
        raise ZooError(f"no run folder at {out}; train one there first ('pyro-zoo train ... --out {out}')")
    with results_kept_on_stop(out), writer_lock(out):       # a stop once the lock is held says the results are kept
        # the weights its results score (the best epoch's under --keep-best), so AIS estimates the same model as IS
        run = invocation.open(out)
        x_eval, _ = run.evaluation_data()
        refuse_oversized_annealing(max(temperatures), base.num_chains, min(base.batch_size, x_eval.shape[0]),
                                   run.data.x_dim, run.device)
        # more leapfrog steps (and local discrete moves) per transition make a stronger sampler of the same figure
        # local moves on or off is another sampler; a file without the switch is read as the default, on
        settings = {"path": base.path, "split": run.config.eval_split, "local_moves": base.local_moves,
                    "guide_moves": base.guide_moves}
        refuse_weaker(out / "ais.json", {"num_data": (x_eval.shape[0], "{} data"),
                                         "num_chains": (base.num_chains, "{} chains"),
                                         "num_temperatures": (max(temperatures), "T = {} temperatures"),
                                         "leapfrog_steps": (base.leapfrog_steps, "{} leapfrog steps"),
                                         "replicas": (replicas, "{} replicas")},
                      settings, invocation.force,
                      stored_settings=lambda old: {k: old.get(k, {"local_moves": True, "guide_moves": False}.get(k))
                                                   for k in settings})
        x_eval = x_eval.to(run.device)
        guide, refit = evaluation_guide(run, x_eval, progress)
        summing = summed_for_annealing(run, guide, x_eval, sum_discrete)
        model, guide = summing.model, summing.guide
        seed = stream_seed(run.config.seed, "ais")
        key = resume_key(run, guide, x_eval, temperatures, base, seed, replicas, summing.summed)
        kept = _kept_minibatches(out / PARTIAL, key, x_eval.shape[0], base.batch_size, temperatures,
                                 base.num_chains, log_p_bound(run.model))
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
                    for r, start in enumerate(ais_starts(base.path, replicas)):
                        slot = T if r == 0 else (T, r)

                        def keep(first_index, figures, slot=slot):
                            kept.setdefault(slot, {})[first_index] = figures
                            _keep(out / PARTIAL, key, kept)
                        replica, result = ais_replica(sampler, model, guide, x_eval, start, seed + REPLICA_STRIDE * r,
                                                      progress=done, done=kept.get(slot), on_batch=keep)
                        found.append(replica)
                        first = first or result
                    row, per_datum = {**first.summary(), "seconds": time.perf_counter() - t0}, first.per_datum()
                    if replicas > 1:
                        row, per_datum = pooled_row(row, per_datum, judge(found))
                    rows.append(row)
        except KeyboardInterrupt as e:
            count = sum(len(batches) for batches in kept.values())
            if count:
                e.zoo_note = (f"{out}'s results are as they were, and {count} finished AIS minibatches are kept in "
                              f"{out / PARTIAL}: run the same command again to resume")
            raise
        summary = {"config": run.config.to_json(), "device": str(run.device), "split": run.config.eval_split,
                   "weights_sha256": run.weights_sha256(), **{k: v for k, v in rows[-1].items()}, "rows": rows,
                   **summing.record(), "refit": refit.to_json() if refit is not None else None}
        buf = io.BytesIO()
        np.savez(buf, **{k: (v.numpy() if torch.is_tensor(v) else v) for k, v in per_datum.items()})
        with written_together(out) as files:        # ais.json last: the group is whole once it is in place
            files.write_bytes(out / "ais_per_datum.npz", buf.getvalue())
            files.write_text(out / "ais.md", ais_markdown(summary))
            files.write_text(out / "ais.json", json.dumps(json_ready(summary), indent=2))
        (out / PARTIAL).unlink(missing_ok=True)
        return summary


def pooled_row(row: Dict, per_datum: Dict, verdict) -> tuple:
    """The row and per-datum columns of the first replica with the replicas' pooled estimate as the headline, and
    their verdict per datum (:mod:`zoo.evaluation.replicas`)."""
    n = verdict.log_likelihood.shape[0]
    summary = verdict.summary()
    # the first replica's own warning is its alone, not the pooled SE's: each replica's problems are among the
    # verdict's reasons, and the pooled figure is judged by the share flagged
    first = {k: row[k] for k in ("log_likelihood", "log_likelihood_se", "frac_se_unreliable", "se_warning") if k in row}
    row = {**{k: v for k, v in row.items() if k != "se_warning"}, "replicas": len(verdict.replicas),
           "reliability": summary,
           "log_likelihood": summary["pooled_log_likelihood"], "log_likelihood_se": summary["pooled_log_likelihood_se"],
           "log_likelihood_data_se": (verdict.log_likelihood.std() / n ** 0.5).item() if n > 1 else None,
           "nll": -summary["pooled_log_likelihood"], "frac_flagged": summary["frac_flagged"], "first_replica": first}
    per_datum = {**{f"first_replica_{k}": v for k, v in per_datum.items()},
                 "log_likelihood": verdict.log_likelihood, "log_likelihood_se": verdict.log_likelihood_se,
                 **{k: v for k, v in verdict.per_datum().items() if not k.startswith("pooled_")},
                 "reasons": reason_array(verdict.reasons)}
    return row, per_datum


def bdmc_run(out: Path, sampler: AnnealedImportanceSampling, temperatures: Optional[Sequence[int]] = None,
             invocation: Optional[Invocation] = None, num_data: int = 100) -> Dict:
    """BDMC on ``num_data`` data simulated from the trained model with ``sampler`` at each number of
    ``temperatures``; writes ``bdmc.{json,md}`` and returns the summary."""
    out = Path(out)
    invocation = invocation or Invocation()
    temperatures = _temperatures(temperatures, DEFAULT_BDMC_TEMPERATURES)
    if isinstance(num_data, bool) or not isinstance(num_data, int) or num_data < 1:
        raise ZooError(f"--bdmc-data takes a whole number >= 1 of data to simulate, got {num_data}")
    base = sampler
    if not out.is_dir():
        raise ZooError(f"no run folder at {out}; train one there first ('pyro-zoo train ... --out {out}')")
    with results_kept_on_stop(out), writer_lock(out):       # a stop once the lock is held says the results are kept
        run = invocation.open(out)
        check_bdmc(run.model, run.guide, base.path)
        refuse_oversized_annealing(max(temperatures), base.num_chains, min(base.batch_size, num_data), run.data.x_dim,
                                   run.device, simulated=num_data)
        refuse_weaker(out / "bdmc.json", {"num_data": (num_data, "{} simulated data"),
                                          "num_chains": (base.num_chains, "{} chains"),
                                          "num_temperatures": (max(temperatures), "T = {} temperatures"),
                                          "leapfrog_steps": (base.leapfrog_steps, "{} leapfrog steps")},
                      {"path": base.path}, invocation.force,
                      stored=_bdmc_stored)
        t0 = time.perf_counter()
        with user_code_errors(run.model.display_name, "in evaluation"):
            rows = bidirectional_monte_carlo(run.model, run.guide, base, num_data=num_data, temperatures=temperatures,
                                             seed=stream_seed(run.config.seed, "bdmc"),
                                             progress=(lambda s: print(s, flush=True)) if invocation.progress
                                             else None)
        for row in rows:
            row.pop("per_datum")
        summary = {"config": run.config.to_json(), "device": str(run.device), "num_data": num_data,
                   "settings": {**base.settings(), "num_temperatures": temperatures}, "rows": rows,
                   "gap": rows[-1]["gap"], "seconds": time.perf_counter() - t0}
        with written_together(out) as files:
            files.write_text(out / "bdmc.md", bdmc_markdown(summary))
            files.write_text(out / "bdmc.json", json.dumps(json_ready(summary), indent=2))
        return summary


def _bdmc_stored(old: Dict) -> Dict:
    """``bdmc.json`` as the strength rule reads it: the sampler's settings are kept under ``settings``, and its
    numbers of temperatures as a list, whose largest is the strength."""
    settings = old.get("settings") if isinstance(old.get("settings"), dict) else {}
    flat = {**settings, "num_data": old.get("num_data")}
    temperatures = settings.get("num_temperatures")
    if isinstance(temperatures, list) and temperatures and all(isinstance(t, int) and not isinstance(t, bool)
                                                               for t in temperatures):
        flat["num_temperatures"] = max(temperatures)
    return flat


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
        # one run: its chains' own warning; replicas pooled: data flagged by their agreement or their own checks
        flagged = row.get("reliability") and row["reliability"]["frac_flagged"] > 0
        flag = " ⚠" if row.get("se_warning") or flagged else ""
        lines.append(f"| {row['num_temperatures']} | {row['log_likelihood']:.3f} | {row['log_likelihood_se']:.4f}{flag} "
                     f"| {'-' if data_se is None else f'{data_se:.3f}'} | {row['ess_mean']:.1f} | "
                     f"{row['acceptance_mean']:.2f} | {row['seconds']:.0f} |")
    lines += ["", "Nats per datum. AIS is a stochastic lower bound on log p(x); its SE is the spread of the chains "
              "and says nothing of the bias left at a finite T: the estimate rising as T doubles shows that bias, "
              "and `--estimator bdmc` bounds it from above on simulated data."]
    if summary.get("summed_out"):
        lines += ["", f"Discrete latents {summary['summed_out_note']} (zoo.evaluation.summed): the chains move the real "
                      "latents alone."]
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
