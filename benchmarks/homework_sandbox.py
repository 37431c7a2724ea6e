"""Grading time per submission in the bubblewrap sandbox, on an idle machine and at load 20.

For each assignment (default: all installed), grades the reference solution (``zoo/homework/solutions/``)
with the hidden checks on, in the sandbox (``zoo.homework.sandbox``, one worker, one torch thread), first
as the machine is, then with ``--load`` busy-loop processes running (each in its own session, like separate
jobs). Records per grade the wall seconds, the score, the grade's time budget and the load average. The
issue's targets: the reference scores full marks at load 20; a grade takes under 3 minutes on 2 cores.

    OMP_NUM_THREADS=1 python benchmarks/homework_sandbox.py --load 20
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import RESULTS, run_script, write_result  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--assignments", default=None, help="comma-separated assignments (default: all installed)")
    p.add_argument("--load", type=int, default=20, help="busy-loop processes for the loaded grades (default 20)")
    p.add_argument("--seed", type=int, default=0, help="the grader's seed (default 0)")
    p.add_argument("--name", default="homework_sandbox", help="result file name (default homework_sandbox)")
    args = p.parse_args(argv)
    from zoo.core.errors import ZooError
    from zoo.homework import ASSIGNMENTS, get_assignment
    from zoo.homework.grader import BUDGET_FACTOR, calibrate, grade
    from zoo.homework.kit import solution_path
    from zoo.homework.sandbox import refusal
    if refusal() is not None:
        raise ZooError(f"no sandbox here: {refusal()}")
    if args.load < 0:
        raise ZooError(f"--load must be >= 0, got {args.load}")
    assignments = [get_assignment(n) for n in (args.assignments.split(",") if args.assignments else ASSIGNMENTS)]
    rows = []
    for load in (0, args.load):
        hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"], start_new_session=True)
                for _ in range(load)]
        try:
            time.sleep(1.0 if load else 0.0)
            for hw in assignments:
                budget = BUDGET_FACTOR * hw.reference_time * calibrate() if hw.reference_time else None
                start = time.perf_counter()
                result = grade(hw, solution_path(hw), hidden=True, seed=args.seed, threads=1)
                wall = time.perf_counter() - start
                rows.append({"assignment": hw.name, "busy_processes": load, "seconds": round(wall, 1),
                             "score": result.score, "max_score": result.max_score,
                             "budget_seconds": round(budget, 1) if budget else None,
                             "load_average": [round(x, 2) for x in os.getloadavg()],
                             "failed": [f"{c.name}: {c.message}" for c in result.checks if not c.passed]})
                print(f"{hw.name} with {load} busy processes: {result.score:g}/{result.max_score:g} in {wall:.1f} s",
                      flush=True)
        finally:
            for hog in hogs:
                hog.kill()
                hog.wait()
    path = write_result(args.name, {"omp_num_threads": os.environ.get("OMP_NUM_THREADS"), "seed": args.seed,
                                    "rows": rows})
    md = ["# The homework autograder in its sandbox: time per submission, idle and loaded", "",
          f"Command: `{' '.join(['python', 'benchmarks/homework_sandbox.py'] + (argv or sys.argv[1:]))}` "
          f"(result: `{path.name}`, with the git commit and hardware). Reference solutions, hidden checks on, "
          f"one worker in a bubblewrap sandbox, one torch thread, {os.cpu_count()} logical cores.", "",
          "| assignment | busy processes | score | seconds | budget (s) | load average |", "|---|---|---|---|---|---|"]
    for r in rows:
        md.append(f"| {r['assignment']} | {r['busy_processes']} | {r['score']:g} / {r['max_score']:g} "
                  f"| {r['seconds']:.1f} | {r['budget_seconds']} | {r['load_average'][0]} |")
    (RESULTS / f"{args.name}.md").write_text("\n".join(md) + "\n")


if __name__ == "__main__":
    run_script(main)
