"""``pyro-zoo eval RUN --estimator smc``: sequential Monte Carlo (:mod:`zoo.evaluation.smc`) of a trained run's
log p(x) on its evaluation split.

It writes ``smc.json``, ``smc.md`` and ``smc_per_datum.npz`` beside the run's ``results.json``, as one group, and
leaves the other results as they are. The folder is read and locked as ``--estimator ais`` reads and locks it
(:func:`~zoo.experiments.annealed.ais_run`, whose run it opens the same way), and a weaker evaluation (fewer data,
particles or replicas, or another path or number of leapfrog steps) does not replace a stronger one without
``--force``. Sizes the machine cannot hold are refused in one line before any work (:mod:`zoo.core.memory`).

**Runs from two starts.** One SMC run's copies (``--smc-replicas``) all start where its path says, so a mode that
no particle of that start reaches is missed by every copy alike, and their spread, its SE, does not see it: over 50
seeds of a two-mode model with exact log p(x), one run from a guide that settled on one mode called 81 % of the data
precise while its intervals covered the truth 27 % of the time (``benchmarks/results/smc_starts_exact.json``). So by
default the command makes ``replicas`` = 2 whole runs, the first from ``--ais-path``'s start and the second from the
other (the guide, the prior, in turn: :data:`~zoo.evaluation.replicas.SMC_STARTS`), each with a seed of its own, and
judges them as AIS's replicas are judged (:func:`~zoo.evaluation.replicas.judge`): the headline is their pooled
estimate, and a datum is called reliable only where they agree within their SEs and each passes its own checks. On
that model the two starts flag the missed mode and cover the truth 99 % of the time. ``--replicas 1`` is one run,
judged by its own copies alone; the first run of any ``replicas`` is that run, bit for bit.

Like AIS it is resumable: each minibatch draws from a seed of its own, its figures are kept in
``smc_partial.npz`` (written atomically, under a name per run) as soon as it is done, and the same command run again
after a stop takes them if the weights, data, settings and seed are the same (a hash of all of them is stored with
them), giving the figures of a run without a stop, bit for bit; a run's figures do not depend on how many runs
there are, so a command with more or fewer runs takes those of the runs both have. The file is removed once
``smc.json`` is written.
"""
from __future__ import annotations

import io
import math
import json
import re
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
import torch

from zoo.core.seeds import stream_seed
from zoo.core.errors import ZooError
from zoo.core.files import open_regular
from zoo.core.memory import FLOAT_BYTES, refuse_oversized
from zoo.data.headers import read_npz_arrays
from zoo.evaluation.ais import coordinates_text
from zoo.evaluation.replicas import SMC_STARTS, check_replicas, judge, smc_replica
from zoo.evaluation.smc import FIELDS, SequentialMonteCarlo
from zoo.core.seeds import REPLICA_STRIDE
from zoo.experiments.annealed import pooled_row
from zoo.experiments.progress import figures_digest, log_p_bound, resume_key, summed_for_annealing
from zoo.experiments.outputs import json_ready, refuse_weaker
from zoo.experiments.run import evaluation_guide, results_kept_on_stop
from zoo.experiments.trained import Invocation
from zoo.experiments.run_folder import writer_lock
from zoo.training.checkpoint import atomic_write_bytes, written_together
from zoo.usercode.errors import user_code_errors

__all__ = ["smc_run", "smc_markdown", "smc_starts", "PARTIAL", "FILES", "DEFAULT_SMC_RUNS"]

#: the minibatches of an SMC evaluation finished so far (module docstring)
PARTIAL = "smc_partial.npz"
#: what a finished evaluation writes, as one group
FILES = ("smc.json", "smc.md", "smc_per_datum.npz")
#: whole SMC runs per datum by default: one from each of the two starts (module docstring)
DEFAULT_SMC_RUNS = 2
#: float32 numbers each particle state holds at least: its likelihood terms (one per data dimension), b, g and
#: their gradients, the HMC momentum and the proposal (a lower bound for :func:`refuse_oversized`)
_TERMS_PER_STATE = 4


def _refuse_oversized(smc: SequentialMonteCarlo, x_eval: torch.Tensor, device) -> None:
    """Refuse, in one line, particles x replicas x batch that the device cannot hold."""
    batch = min(smc.batch_size, x_eval.shape[0])
    width = int(np.prod(x_eval.shape[1:])) if x_eval.dim() > 1 else 1
    nbytes = batch * smc.num_replicas * smc.num_particles * (width + _TERMS_PER_STATE) * FLOAT_BYTES
    refuse_oversized("smc_particles", None, nbytes, f"the {smc.num_particles} particles x {smc.num_replicas} "
                     f"replicas x {batch} data of one SMC minibatch", device,
                     advice="use fewer particles or replicas, or a smaller --ais-batch-size",
                     value=smc.num_particles)


def _unfit_figures(figures: Dict[str, np.ndarray], length: int, replicas: int, bound: float) -> Optional[str]:
    """Why a kept minibatch of ``length`` data cannot be one that SMC with ``replicas`` replicas computed, or
    ``None``: per-datum vectors of its exact length, finite and in their ranges, the estimate the replicas' own."""
    for name in ("log_likelihood", "se", "steps", "resamples"):
        array = figures[name]
        if array.dtype.kind != "f" or array.shape != (length,) or not np.isfinite(array).all():
            return f"{name} is not {length} finite numbers"
    acceptance, forced, each = figures["acceptance"], figures["forced"], figures["replicas"]
    if acceptance.dtype.kind != "f" or acceptance.shape != (length,) or np.isinf(acceptance).any() \
            or (acceptance < 0).any() or (acceptance > 1).any():
        return "an acceptance rate outside [0, 1] (or NaN where nothing moved)"
    if forced.dtype != np.bool_ or forced.shape != (length,):
        return f"forced is not {length} booleans"
    if each.dtype.kind != "f" or each.shape != (replicas, length) or not np.isfinite(each).all():
        return f"replicas is not [{replicas}, {length}] finite numbers"
    if (figures["log_likelihood"] > bound).any():
        return f"a log p(x) above {bound:g}"
    if (figures["se"] < 0).any() or (figures["steps"] < 1).any() or (figures["resamples"] < 0).any():
        return "an SE below 0, fewer than one temperature, or resamplings below 0"
    pooled = torch.logsumexp(torch.from_numpy(each).double(), 0) - math.log(replicas)
    if not np.allclose(pooled.numpy(), figures["log_likelihood"], rtol=1e-5, atol=1e-4):
        return "an estimate that is not the mean of its replicas"
    return None


def _kept_minibatches(path: Path, key: str, num_data: int, batch_size: int, replicas: int,
                      bound: float, runs: int = 1) -> Dict[int, Dict[int, Dict]]:
    """{run: {first index: figures}} of ``smc_partial.npz`` where its key is ``key`` and its digest that of its figures;
    else nothing (and a line on stderr saying why it was set aside). Read as untrusted data, as AIS's progress is
    (``zoo.experiments.annealed``): no pickle, headers checked first, and each minibatch taken
    only if SMC can have computed it (:func:`_unfit_figures`); the others are run again."""
    if not path.is_file():
        return {}
    try:
        with open_regular(path, "file of SMC progress") as f:
            arrays = read_npz_arrays(f, path)
    except ZooError as e:
        print(f"pyro-zoo: {e}; starting SMC afresh", file=sys.stderr)
        return {}
    stored = arrays.pop("key", None)
    if stored is None or stored.dtype != np.uint8 or stored.ndim != 1 or stored.tobytes() != key.encode():
        print(f"pyro-zoo: {path} holds SMC progress of another evaluation (other weights, data or settings); "
              f"starting afresh", file=sys.stderr)
        return {}
    digest = arrays.pop("digest", None)
    if digest is None or digest.dtype != np.uint8 or not np.array_equal(digest, figures_digest(key, arrays)):
        print(f"pyro-zoo: {path}'s figures are not those SMC kept there (edited or damaged since); starting SMC "
              f"afresh", file=sys.stderr)
        return {}
    found: Dict[tuple, Dict] = {}
    for name, array in arrays.items():
        # the first run's minibatches are b<first index>_<field>, as one run keeps them; the r-th's r<r>b<...>
        match = re.fullmatch(r"(?:r(\d+))?b(\d+)_(\w+)", name)
        if match is not None and match.group(3) in FIELDS:
            run = int(match.group(1) or 0)
            found.setdefault((run, int(match.group(2))), {})[match.group(3)] = array
    kept: Dict[int, Dict[int, Dict]] = {}
    unfit = []
    for (run, start), figures in found.items():
        if not 0 <= run < runs or start % batch_size or start >= num_data or set(figures) != set(FIELDS):
            continue
        why = _unfit_figures(figures, min(batch_size, num_data - start), replicas, bound)
        if why is not None:
            unfit.append(why)
            continue
        kept.setdefault(run, {})[start] = {k: torch.from_numpy(v) for k, v in figures.items()}
    if unfit:
        print(f"pyro-zoo: {len(unfit)} minibatches kept in {path} hold figures SMC cannot have computed "
              f"({unfit[0]}); running them again", file=sys.stderr)
    return kept


def _keep(path: Path, key: str, kept: Dict[int, Dict[int, Dict]]) -> None:
    arrays = {}
    for run, batches in kept.items():
        for start, figures in batches.items():
            arrays.update({f"{f'r{run}' if run else ''}b{start}_{k}": v.numpy() for k, v in figures.items()})
    buf = io.BytesIO()
    np.savez(buf, key=np.frombuffer(key.encode(), dtype=np.uint8), digest=figures_digest(key, arrays), **arrays)
    atomic_write_bytes(path, buf.getvalue())


def smc_starts(path: str, runs: int) -> List[str]:
    """The starts of ``runs`` whole SMC runs whose first starts where ``path`` says (the guide or the prior), the
    others in turn from :data:`~zoo.evaluation.replicas.SMC_STARTS`."""
    order = SMC_STARTS if path == SMC_STARTS[0] else tuple(reversed(SMC_STARTS))
    return [order[r % len(order)] for r in range(runs)]


def smc_run(out: Path, smc: SequentialMonteCarlo, invocation: Optional[Invocation] = None,
            sum_discrete: str = "auto", replicas: int = DEFAULT_SMC_RUNS) -> Dict:
    """SMC estimates of log p(x) on the run's evaluation split (its fixed subset where ``invocation`` changes
    ``eval_limit``) with the sampler ``smc``, as ``replicas`` whole runs from the starts of :func:`smc_starts`
    judged together where there are two or more (module docstring); writes :data:`FILES` and returns the summary."""
    out = Path(out)
    invocation = invocation or Invocation()
    check_replicas(replicas)
    if not out.is_dir():
        raise ZooError(f"no run folder at {out}; train one there first ('pyro-zoo train ... --out {out}')")
    with results_kept_on_stop(out), writer_lock(out):
        # the weights its results score (the best epoch's under --keep-best), as IS and AIS open it
        run, progress = invocation.open(out), invocation.progress
        x_eval, _ = run.evaluation_data()
        _refuse_oversized(smc, x_eval, run.device)
        # more moves per temperature, and more leapfrog steps (and local discrete moves) per move, make a stronger
        # SMC of the same figure, as more particles and more runs do; a file from before the runs held one
        settings = {"path": smc.path, "target_ess": smc.target_ess, "split": run.config.eval_split}
        refuse_weaker(out / "smc.json", {"num_data": (x_eval.shape[0], "{} data"),
                                         "num_particles": (smc.num_particles, "{} particles"),
                                         "num_moves": (smc.num_moves, "{} moves"),
                                         "leapfrog_steps": (smc.leapfrog_steps, "{} leapfrog steps"),
                                         "num_replicas": (smc.num_replicas, "{} copies per run (--smc-replicas)"),
                                         "runs": (replicas, "{} whole runs (--replicas)")}, settings,
                      invocation.force,
                      stored=lambda old: {**old, "runs": 1 if old.get("runs") is None else old["runs"]})
        x_eval = x_eval.to(run.device)
        guide, refit = evaluation_guide(run, x_eval, progress)
        summing = summed_for_annealing(run, guide, x_eval, sum_discrete)
        model, guide = summing.model, summing.guide
        seed = stream_seed(run.config.seed, "smc")
        # a run's figures depend on its index alone (its start and seed), not on how many runs there are: minibatches
        # kept by an evaluation of fewer or more runs are taken for the runs both have
        key = resume_key(run, guide, x_eval, [], smc, seed, summed=summing.summed)
        kept = _kept_minibatches(out / PARTIAL, key, x_eval.shape[0], smc.batch_size, smc.num_replicas,
                                 log_p_bound(run.model), replicas)
        resumed = sum(len(batches) for batches in kept.values())
        if resumed and progress:
            print(f"SMC: resuming, {resumed} minibatches kept in {out / PARTIAL}", flush=True)
        starts = smc_starts(smc.path, replicas)
        t0 = time.perf_counter()
        found, results = [], []
        try:
            with user_code_errors(run.model.display_name, "in evaluation"):
                for r, start in enumerate(starts):
                    where = f" (run {r + 1} of {replicas}, from the {start})" if replicas > 1 else ""
                    done = ((lambda n, where=where: print(f"SMC{where}: {n}/{x_eval.shape[0]} data", flush=True))
                            if progress else None)

                    def keep(first_index, figures, r=r):
                        kept.setdefault(r, {})[first_index] = figures
                        _keep(out / PARTIAL, key, kept)
                    replica, result = smc_replica(smc, model, guide, x_eval, start, seed + REPLICA_STRIDE * r,
                                                  progress=done, done=dict(kept.get(r, {})), on_batch=keep)
                    found.append(replica)
                    results.append(result)
        except KeyboardInterrupt as e:
            count = sum(len(batches) for batches in kept.values())
            if count:
                e.zoo_note = (f"{out}'s results are as they were, and {count} finished SMC minibatches are kept in "
                              f"{out / PARTIAL}: run the same command again to resume")
            raise
        transported = []
        if "guide" in starts and smc.precondition == "transport":        # the guide's run, first or not
            from zoo.evaluation.ais import AnnealedImportanceSampling
            transported = AnnealedImportanceSampling(batch_size=smc.batch_size, path="guide").transported_sites(
                model, guide, x_eval, x_eval.shape[0])
        row, per_datum = results[0].summary(), results[0].per_datum()
        if replicas > 1:
            row, per_datum = pooled_row(row, per_datum, judge(found))
            # beside the pooled figure, the share of data that any run found forced or without a precise SE (each
            # such datum is flagged, with the run's reason)
            row["frac_forced"] = torch.stack([r.forced for r in results]).any(0).double().mean().item()
            row["frac_se_unreliable"] = (~torch.stack([r.se_reliable for r in results]).all(0)).double().mean().item()
        summary = {"config": run.config.to_json(), "device": str(run.device), "split": run.config.eval_split,
                   **row, "runs": replicas, "starts": starts, "transported": transported,
                   # each run's own start and coordinates (the first run's are also the top level's)
                   "per_run": [{"start": start, "path": r.settings.get("path"), "from": r.settings.get("start"),
                                "precondition": r.settings.get("precondition")} for start, r in zip(starts, results)],
                   "seconds": time.perf_counter() - t0, **summing.record(),
                   "refit": refit.to_json() if refit is not None else None}
        buf = io.BytesIO()
        np.savez(buf, **{k: (v.numpy() if torch.is_tensor(v) else v) for k, v in per_datum.items()})
        with written_together(out) as files:        # one group, smc.json last: all replaced or none
            files.write_bytes(out / "smc_per_datum.npz", buf.getvalue())
            files.write_text(out / "smc.md", smc_markdown(summary))
            files.write_text(out / "smc.json", json.dumps(json_ready(summary), indent=2))
        (out / PARTIAL).unlink(missing_ok=True)
        return summary


def smc_markdown(summary: Dict) -> str:
    """The SMC table of ``smc.json``."""
    start = f", from {summary['start']}" if summary.get("start") else ""
    coordinates = coordinates_text(summary.get("precondition"), summary.get("transported"))
    data_se = summary["log_likelihood_data_se"]
    acceptance = summary.get("acceptance_mean")
    # one run: its copies' own warning; runs pooled: data flagged by the runs' agreement or their own checks
    flagged = summary.get("reliability") and summary["reliability"]["frac_flagged"] > 0
    flag = " ⚠" if summary.get("se_warning") or flagged else ""
    if summary.get("reliability"):
        start = f", from the {' and the '.join(dict.fromkeys(summary['starts']))} in turn"
        where = f"{summary['runs']} runs"
    else:
        where = f"path {summary['path']}"
    lines = [f"SMC on {summary['num_data']} {summary['split']} data ({summary['num_particles']} particles x "
             f"{summary['num_replicas']} independent copies per datum and run, {where}{start}; adaptive "
             f"tempering at conditional ESS {summary['target_ess']:g}, systematic resampling below ESS "
             f"{summary['resample_threshold']:g}, {summary['num_moves']} moves per temperature of "
             f"{summary['leapfrog_steps']} leapfrog steps{coordinates}).", "",
             f"| log p(x) | SE ({'runs pooled' if summary.get('reliability') else 'copies'}) | SE (data) | "
             "temperatures (mean, max) | resamplings | acceptance | seconds |",
             "|---|---|---|---|---|---|---|",
             f"| {summary['log_likelihood']:.3f} | {summary['log_likelihood_se']:.4f}{flag} | "
             f"{'-' if data_se is None else f'{data_se:.3f}'} | {summary['steps_mean']:.1f}, {summary['steps_max']:.0f} "
             f"| {summary['resamples_mean']:.1f} | {'-' if acceptance is None else f'{acceptance:.2f}'} | "
             f"{summary['seconds']:.0f} |", "",
             "Nats per datum. A run's SE is the spread of its copies' estimates (each a whole SMC from the run's "
             "start), which counts the resampling's noise; it says nothing of a mode that no particle of that start "
             "reached." + (" The temperatures, resamplings and acceptance are the first run's."
                           if summary.get("reliability") else "")]
    if summary.get("summed_out"):
        lines += ["", f"Discrete latents {summary['summed_out_note']} (zoo.evaluation.summed): the particles hold the "
                      "real latents alone."]
    reliability = summary.get("reliability")
    if reliability:
        counts = ", ".join(f"{k} {v}" for k, v in reliability["flag_counts"].items()) or "none"
        first = summary["first_replica"]
        lines += ["", f"{reliability['replicas']} whole SMC runs per datum (from {', '.join(reliability['starts'])}), "
                      f"pooled: log p(x) and its SE are theirs (the first run alone: {first['log_likelihood']:.3f} ± "
                      f"{first['log_likelihood_se']:.4f}); {reliability['frac_flagged']:.1%} of data flagged (the runs "
                      f"disagree, or a run's own checks fail: {counts}); each datum's reason is in smc_per_datum.npz "
                      f"(`reasons`)."]
    elif summary.get("runs") == 1:
        lines += ["", "One run from one start: a mode its particles never reached is missed by all its copies alike "
                      "and its SE does not show it; the default, two runs from the guide and the prior, flags it."]
    if summary.get("se_warning"):
        lines += ["", f"⚠ {summary['se_warning']}"]
    return "\n".join(lines) + "\n"
