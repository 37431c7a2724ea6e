"""How long the homework autograder takes, and what the reference solutions score.

For each assignment (default: all installed), grades the reference solution (``zoo/homework/solutions/``
of this checkout) with the hidden
checks on at each seed of ``--seeds`` (one worker, one torch thread, as Gradescope's would run it)
and the untouched ``starter.py`` once. Records, per grade, the wall time and the score, and per check
its seconds and its one-line output (for homework 1 the test ELBO reached, the target, and the
amortization gap). The issue's budget: a whole grade under 3 minutes on 2 CPU cores; the kit's own:
a grade of a reference solution in 15 s on one core.

    OMP_NUM_THREADS=1 python benchmarks/homework_grade.py --seeds 0,1,2
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import RESULTS, run_script, write_result  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--assignments", default=None, help="comma-separated assignments (default: all installed)")
    p.add_argument("--seeds", default="0,1,2", help="grader seeds for the reference solution (default 0,1,2)")
    p.add_argument("--name", default="homework_grade", help="result file name (default homework_grade)")
    args = p.parse_args(argv)
    from zoo.core.errors import ZooError
    from zoo.homework import ASSIGNMENTS, get_assignment
    from zoo.homework.grader import calibrate, grade
    from zoo.homework.kit import assignment_folder, solution_path
    try:
        seeds = [int(s) for s in args.seeds.split(",")]
    except ValueError:
        raise ZooError(f"--seeds must be comma-separated integers, got {args.seeds!r}") from None
    names = args.assignments.split(",") if args.assignments else list(ASSIGNMENTS)
    assignments = [get_assignment(n) for n in names]           # unknown names refused before any grading
    rows = []
    load_at_start = [round(x, 2) for x in os.getloadavg()]      # other jobs on the machine slow every figure
    for hw in assignments:
        folder = assignment_folder(hw)
        for label, path, seed in [("solution", solution_path(hw), s) for s in seeds] + \
                                 [("starter", folder / "starter.py", seeds[0])]:
            unit = calibrate()
            start = time.perf_counter()
            result = grade(hw, path, hidden=True, seed=seed)
            wall = time.perf_counter() - start
            unit = (unit + calibrate()) / 2
            rows.append({"assignment": hw.name, "submission": label, "seed": seed, "seconds": round(wall, 2),
                         "calibrate_seconds": round(unit, 4), "reference_time": round(wall / unit, 1),
                         "score": result.score, "max_score": result.max_score,
                         "checks": [{"name": c.name, "status": c.status, "points": c.points,
                                     "seconds": round(c.seconds, 2), "message": c.message} for c in result.checks]})
            print(f"{hw.name} {label} seed {seed}: {result.score:g}/{result.max_score:g} in {wall:.1f} s", flush=True)
    path = write_result(args.name, {"omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
                                    "load_average_at_start": load_at_start, "rows": rows})
    md = ["# The homework autograder: time per grade and the reference solutions' scores", "",
          f"Command: `{' '.join(['python', 'benchmarks/homework_grade.py'] + (argv or sys.argv[1:]))}` "
          f"(result: `{path.name}`). One worker process, one torch thread, hidden checks on. "
          f"Load average of the machine at the start: {load_at_start} on {os.cpu_count()} logical cores.", "",
          "`reference_time` is the grade's seconds over `zoo.homework.grader.calibrate()`'s at the time: the unit "
          "of `Assignment.reference_time`, from which the grader's time budget is scaled.", "",
          "| assignment | submission | seed | score | seconds | reference_time |", "|---|---|---|---|---|---|"]
    for r in rows:
        md.append(f"| {r['assignment']} | {r['submission']} | {r['seed']} | {r['score']:g} / {r['max_score']:g} "
                  f"| {r['seconds']:.1f} | {r['reference_time']:.0f} |")
    md += ["", "Per check (reference solution, first seed): seconds and output", "",
           "| assignment | check | seconds | output |", "|---|---|---|---|"]
    for r in rows:
        if r["submission"] == "solution" and r["seed"] == seeds[0]:
            for c in r["checks"]:
                message = c["message"].replace("|", "\\|")          # a table cell: p(x|z) keeps its bar
                md.append(f"| {r['assignment']} | {c['name']} | {c['seconds']:.2f} | {message} |")
    (RESULTS / f"{args.name}.md").write_text("\n".join(md) + "\n")


if __name__ == "__main__":
    run_script(main)
