"""Wall time of one compare grid run serially, with ``--workers 2``, and as Ray tasks; and Ray's overhead per task.

The grid is ``pyro-zoo compare vae --guides meanfield,amortized,iaf --objectives elbo,iwae,tracemeanfield,renyi
--seeds 0,1,2 --dataset digits`` (12 cells x 3 seeds = 36 runs) with --epochs epochs, --eval-samples importance
samples and the per-datum guide's refit capped at --refit-epochs. It runs three times into fresh folders:

- ``serial``: one run after another in this process, torch with all the machine's cores as threads;
- ``workers``: ``--workers 2``, two spawned processes with cores // 2 threads each;
- ``ray``: ``--engine ray`` on a local Ray instance with the machine's cores (``ray.init`` is timed apart).

The three grids must give the same tables (every figure but the timings); the result records that they do.
Ray's overhead per task is the round trip of a task that does nothing (``ray.get(f.remote())``, one at a time,
after a warm-up), and the throughput of --noop-tasks such tasks submitted at once.

    OMP_NUM_THREADS= python benchmarks/grid_parallel.py                       # about 4 minutes on 2 quiet cores
    python benchmarks/grid_parallel.py --epochs 1 --guides amortized --objectives elbo --seeds 0 --name check
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import RESULTS, provenance, run_script, write_result  # noqa: E402


def _without_timings(value):
    if isinstance(value, dict):
        return {k: _without_timings(v) for k, v in value.items() if "seconds" not in k}
    if isinstance(value, list):
        return [_without_timings(v) for v in value]
    return value


def _noop():
    return None


def ray_overhead(ray, tasks: int) -> dict:
    """Seconds per task of a task that does nothing: one at a time (latency), and ``tasks`` at once (throughput)."""
    noop = ray.remote(_noop).options(num_cpus=1)
    for _ in range(5):                               # warm-up: the workers are started and the function shipped
        ray.get(noop.remote())
    t0 = time.perf_counter()
    for _ in range(tasks):
        ray.get(noop.remote())
    latency = (time.perf_counter() - t0) / tasks
    t0 = time.perf_counter()
    ray.get([noop.remote() for _ in range(tasks)])
    return {"latency_s": latency, "throughput_s_per_task": (time.perf_counter() - t0) / tasks, "tasks": tasks}


def main(argv=None):
    import torch

    from zoo.core.errors import ZooError
    from zoo.experiments.compare import Execution, Grid, compare
    from zoo.experiments.config import RunConfig
    from zoo.experiments.engines import RAY_INSTALL, threads_per_worker

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--guides", default="meanfield,amortized,iaf")
    p.add_argument("--objectives", default="elbo,iwae,tracemeanfield,renyi")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--eval-samples", type=int, default=100)
    p.add_argument("--refit-epochs", type=int, default=50)
    p.add_argument("--noop-tasks", type=int, default=200)
    p.add_argument("--name", default="grid_parallel", help="result file name in benchmarks/results")
    args = p.parse_args(argv)
    try:
        import ray
    except ImportError:
        raise ZooError(f"this benchmark times --engine ray too: {RAY_INSTALL}") from None
    guides, objectives = args.guides.split(","), args.objectives.split(",")
    seeds = [int(s) for s in args.seeds.split(",")]
    base = RunConfig(model="vae", dataset="digits", epochs=args.epochs, eval_samples=args.eval_samples,
                     refit_epochs=args.refit_epochs, device="cpu")
    cores = len(os.sched_getaffinity(0))
    root = Path(tempfile.mkdtemp(prefix="grid_parallel-"))
    rows, tables = [], {}
    try:
        for mode, execution in (("serial", Execution(progress=False)), ("workers", Execution(workers=2, progress=False)),
                                ("ray", Execution("ray", progress=False))):
            init_seconds = None
            if mode == "ray":
                t0 = time.perf_counter()
                ray.init(num_cpus=cores, include_dashboard=False, log_to_driver=False)
                init_seconds = time.perf_counter() - t0
            cpu0 = os.times()
            t0 = time.perf_counter()
            out = root / mode
            result = compare(Grid("vae", guides, objectives, base, seeds), out, execution=execution)
            wall = time.perf_counter() - t0
            cpu1 = os.times()
            tables[mode] = _without_timings(json.loads((out / "compare.json").read_text()))
            row = {"mode": mode, "jobs": len(result), "wall_s": wall, "init_s": init_seconds,
                   "threads_per_job": {"serial": torch.get_num_threads(), "workers": threads_per_worker(2),
                                       "ray": 1}[mode],
                   "cpu_s": (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)
                   + (cpu1.children_user - cpu0.children_user) + (cpu1.children_system - cpu0.children_system)}
            if mode == "ray":
                row["overhead"] = ray_overhead(ray, args.noop_tasks)
                ray.shutdown()
            rows.append(row)
            print(f"{mode}: {len(result)} runs in {wall:.1f} s", flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    same = tables["serial"] == tables["workers"] == tables["ray"]
    serial = rows[0]["wall_s"]
    for r in rows:
        r["speedup_vs_serial"] = serial / r["wall_s"]
    grid = (f"pyro-zoo compare vae --guides {args.guides} --objectives {args.objectives} --seeds {args.seeds} "
            f"--dataset digits --epochs {args.epochs} --eval-samples {args.eval_samples} "
            f"--refit-epochs {args.refit_epochs} --device cpu")
    write_result(args.name, {"grid": grid, "cores": cores, "same_tables": same, "rows": rows})
    prov = provenance()
    overhead = rows[2]["overhead"]
    md = [f"# One grid, three engines: serial, --workers 2, Ray ({len(guides) * len(objectives)} cells × "
          f"{len(seeds)} seeds)", "", f"Command: `{prov['command']}`  ", f"Commit: `{prov['git_commit']}`  ",
          f"Hardware: {prov['cpu']}, {cores} cores", "", f"Grid: `{grid}`", "",
          "| engine | runs | wall s | speed-up | threads per run | CPU s |", "|---|---|---|---|---|---|"]
    for r in rows:
        md.append(f"| {r['mode']}{' (ray.init %.1f s apart)' % r['init_s'] if r['init_s'] is not None else ''} | "
                  f"{r['jobs']} | {r['wall_s']:.1f} | {r['speedup_vs_serial']:.2f}× | {r['threads_per_job']} | "
                  f"{r['cpu_s']:.0f} |")
    md += ["", f"Same tables from all three (every figure but the timings): {'yes' if same else 'NO'}.", "",
           f"Ray's overhead per task: {overhead['latency_s'] * 1e3:.1f} ms round trip for a task that does nothing "
           f"(one at a time), {overhead['throughput_s_per_task'] * 1e3:.2f} ms per task with "
           f"{overhead['tasks']} submitted at once; a run of this grid takes seconds, so the overhead is small. "
           "CPU s counts this process and its pool workers, not Ray's worker processes."]
    Path(RESULTS / f"{args.name}.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    if not same:
        raise ZooError("the engines gave different tables")


if __name__ == "__main__":
    run_script(main)
