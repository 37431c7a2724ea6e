"""What ``--compile`` and ``--jit`` cost before they pay: the capture and compilation of the training step, cold and
warm, as a user meets them.

``pyro-zoo train vae --epochs 1`` runs in a fresh process three times per mode, each with the same new
``TORCHINDUCTOR_CACHE_DIR``: first with the cache empty (a user's first run), then twice more (later runs of the same
shapes, which Inductor's on-disk cache serves). A run says how long each capture took, once per batch shape
(:mod:`zoo.objectives.compiled`); this script reads those notes and the run's wall and CPU seconds, beside the same
command eagerly. What the cache cannot save is the capture itself (``make_fx`` records the step again in every
process) and the start of the compiler; what it saves is Inductor's code generation and the C++ build.

    python benchmarks/compile_time.py                                   # the digits (default threads)
    python benchmarks/compile_time.py --dataset binarized_mnist --data-dir ../shared/data --name compile_time_mnist
"""
from __future__ import annotations

import argparse
import re
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import RESULTS, fail, run_script, timed_run, write_result  # noqa: E402

#: the note a run prints per batch shape (zoo.objectives.compiled)
NOTE = re.compile(r"note: (captured and compiled|captured \(\w+\)) the training step in ([0-9.]+) s")


def one_run(mode: str, args, cache: str) -> dict:
    with tempfile.TemporaryDirectory() as cwd:
        argv = [sys.executable, "-m", "zoo", "train", "vae", "--dataset", args.dataset, "--epochs", "1",
                "--eval-samples", "10", "--eval-limit", "100", "--no-progress", "--out", str(Path(cwd) / "run"),
                *(["--data-dir", str(Path(args.data_dir).resolve())] if args.data_dir else []), *([mode] if mode != "eager" else [])]
        run = timed_run(argv, cwd, env={"TORCHINDUCTOR_CACHE_DIR": cache})
    captures = [float(m.group(2)) for line in run["notices"] for m in [NOTE.search(line)] if m]
    if mode != "eager" and not captures:
        fail(f"{mode}: the run printed no capture note; notes were {run['notices']}")
    return {"wall_seconds": run["wall_seconds"], "cpu_seconds": run["cpu_seconds"], "capture_seconds": captures,
            "capture_seconds_total": round(sum(captures), 2)}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="digits")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--warm-runs", type=int, default=2, help="runs after the first, on the filled cache (default 2)")
    p.add_argument("--name", default="compile_time")
    args = p.parse_args(argv)
    if args.warm_runs < 1:
        fail("--warm-runs must be at least 1: the point is the run after the first")
    modes = {}
    for mode in ("eager", "--compile", "--jit"):
        with tempfile.TemporaryDirectory() as cache:
            runs = [one_run(mode, args, cache) for _ in range(1 + args.warm_runs)]
        cold, warm = runs[0], runs[1:]
        modes[mode] = {"cold": cold, "warm": warm,
                       "cold_capture_seconds": cold["capture_seconds_total"],
                       "warm_capture_seconds": statistics.median(r["capture_seconds_total"] for r in warm),
                       "cold_wall_seconds": cold["wall_seconds"],
                       "warm_wall_seconds": statistics.median(r["wall_seconds"] for r in warm)}
        print(f"{mode}: cold {cold['wall_seconds']:.1f} s wall (captures {cold['capture_seconds']}), warm "
              f"{modes[mode]['warm_wall_seconds']:.1f} s (captures {[r['capture_seconds'] for r in warm]})", flush=True)
    eager = modes["eager"]["warm_wall_seconds"]
    for mode in ("--compile", "--jit"):
        modes[mode]["warm_wall_over_eager"] = modes[mode]["warm_wall_seconds"] / eager
        modes[mode]["cold_wall_over_eager"] = modes[mode]["cold_wall_seconds"] / eager
    command = f"pyro-zoo train vae --dataset {args.dataset} --epochs 1 --eval-samples 10 --eval-limit 100 [MODE]"
    path = write_result(args.name, {
        "protocol": "each mode in fresh processes sharing one new TORCHINDUCTOR_CACHE_DIR: the first run on the empty "
                    "cache (cold), then --warm-runs more (warm, median); capture seconds from the run's own notes, "
                    "summed over its batch shapes; wall and CPU seconds of the whole command",
        "command": command, "modes": modes})
    lines = [f"Command: `{command}`", "", "| mode | capture, cold (s) | capture, warm (s) | run, cold (s) | "
             "run, warm (s) | warm run / eager run |", "|---|---|---|---|---|---|"]
    for mode, m in modes.items():
        lines.append(f"| {mode} | {m['cold_capture_seconds']:.1f} | {m['warm_capture_seconds']:.1f} | "
                     f"{m['cold_wall_seconds']:.1f} | {m['warm_wall_seconds']:.1f} | "
                     f"{m.get('warm_wall_over_eager', 1.0):.2f}× |")
    (RESULTS / f"{args.name}.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    run_script(main)
