"""Grading time per submission in the bubblewrap sandbox, on an idle machine and at load 20.

For each assignment (default: all installed), grades the reference solution (``zoo/homework/solutions/``)
with the hidden checks on, in the sandbox (``zoo.homework.sandbox``, one worker, one torch thread), first
as the machine is, then with ``--load`` busy-loop processes running (each in its own session, like separate
jobs). Records per grade the wall seconds, the score, the grade's time budget and the load average. The
issue's targets: the reference scores full marks at load 20; a grade takes under 3 minutes on 2 cores.

With ``--class-size N`` it then grades a class folder of N submissions to ``--class-assignment`` at the same
load, each by its own ``pyro-zoo grade`` process, one after the other, as an instructor grades a class in one
environment and one folder: honest students of varied skill (the reference and some of the assignment's
mutants, repeated) and the attackers of issue 42 (:data:`ATTACKS`). It records every submission's seconds and
score, and checks that each honest one scores what it scores graded alone in a folder of its own, that no
``torch.py`` is left in the folder and no ``.pth`` file in site-packages, and that the benchmark itself (which
the attackers look for in ``/proc``) survives.

    OMP_NUM_THREADS=1 python benchmarks/homework_sandbox.py --load 20 --class-size 30

The class costs about 30 grades and the alone grades of its honest members: at load 20, over an hour on 2 cores.
The recorded results split it: the reference grades idle and at load 20, and the class on an idle machine::

    OMP_NUM_THREADS=1 python benchmarks/homework_sandbox.py --load 20
    OMP_NUM_THREADS=1 python benchmarks/homework_sandbox.py --load 0 --class-size 30 --name homework_sandbox_class
"""
from __future__ import annotations

import argparse
import json
import os
import site
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import RESULTS, run_script, write_result  # noqa: E402


PTH = "zz_pyrozoo_benchmark_attack.pth"
#: The attackers of issue 42, each appended to the reference solution (so that, escaped, it would score full).
ATTACKS = {
    "torch_shadow": """
from pathlib import Path as _Path
(_Path(__file__).parent / "torch.py").write_text("raise ImportError('sabotaged by a classmate')\\n")
""",
    "pth": f"""
import site as _site
from pathlib import Path as _Path
for _folder in _site.getsitepackages():
    try:
        (_Path(_folder) / "{PTH}").write_text("import sys\\n")
    except OSError:
        pass
""",
    "results_rewriter": """
import json as _json, os as _os, time as _time
from pathlib import Path as _Path
_targets = []
for _pid in filter(str.isdigit, _os.listdir("/proc")):
    try:
        _argv = _Path(f"/proc/{_pid}/cmdline").read_bytes().split(b"\\0")
    except OSError:
        continue
    if b"--json" in _argv:
        _targets.append(_argv[_argv.index(b"--json") + 1].decode())
if _targets and _os.fork() == 0:
    _os.setsid()
    if _os.fork() == 0:
        for _ in range(600):
            _time.sleep(0.5)
            for _t in _targets:
                try:
                    _Path(_t).write_text(_json.dumps({"score": 1000.0}))
                except OSError:
                    pass
    _os._exit(0)
""",
    "killer": """
import os as _os, signal as _signal
from pathlib import Path as _Path
for _pid in filter(str.isdigit, _os.listdir("/proc")):
    try:
        if b"homework_sandbox.py" in _Path(f"/proc/{_pid}/cmdline").read_bytes() and int(_pid) != _os.getpid():
            _os.kill(int(_pid), _signal.SIGKILL)
    except OSError:
        pass
""",
}


def _grade_file(assignment: str, path: Path, out: Path, seed: int):
    """One ``pyro-zoo grade`` process: (wall seconds, score or None when it wrote no results)."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "zoo", "grade", assignment, str(path), "--hidden", "--seed", str(seed),
                    "--json", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   cwd=Path(__file__).resolve().parent.parent)
    wall = time.perf_counter() - start
    try:
        return wall, json.loads(out.read_text())["score"]
    except (OSError, ValueError, KeyError):
        return wall, None


def _grade_class(assignment: str, size: int, seed: int, load: int):
    """Grade a class folder of ``size`` submissions: its rows and whether every honest one scored as alone."""
    from zoo.homework import get_assignment
    from zoo.homework.kit import solution_path
    tests = Path(__file__).resolve().parent.parent / "tests"
    sys.path.insert(0, str(tests))
    from test_homework_assignments import MUTANTS
    reference = solution_path(get_assignment(assignment)).read_text()
    honest = {"reference": reference}
    for name, (old, new, _) in sorted(MUTANTS.get(assignment, {}).items())[:5]:
        honest[name] = reference.replace(old, new)
    roster = {}
    attackers = list(ATTACKS)
    for i in range(size):
        if i % 6 == 3 and attackers:             # attackers graded between honest classmates
            attack = attackers.pop(0)
            roster[f"s{i:02d}_{attack}"] = ("attack", reference + ATTACKS[attack])
        else:
            kind = sorted(honest)[i % len(honest)]
            roster[f"s{i:02d}_{kind}"] = (kind, honest[kind])
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        alone = {}
        for kind, source in honest.items():
            if not any(k == kind for k, _ in roster.values()):
                continue
            folder = tmp / "alone" / kind
            folder.mkdir(parents=True)
            (folder / f"{kind}.py").write_text(source)
            alone[kind] = _grade_file(assignment, folder / f"{kind}.py", tmp / f"alone-{kind}.json", seed)[1]
        folder, results = tmp / "class", tmp / "results"
        folder.mkdir()
        results.mkdir()
        for stem, (_, source) in roster.items():
            (folder / f"{stem}.py").write_text(source)
        rows = []
        for stem, (kind, _) in roster.items():
            wall, score = _grade_file(assignment, folder / f"{stem}.py", results / f"{stem}.json", seed)
            rows.append({"submission": stem, "kind": kind, "seconds": round(wall, 1), "score": score,
                         "alone": alone.get(kind), "busy_processes": load})
            print(f"  {stem}: {score} in {wall:.1f} s", flush=True)
        final = {stem: json.loads((results / f"{stem}.json").read_text()).get("score")     # after the whole class
                 if (results / f"{stem}.json").exists() else None for stem in roster}
        leftovers = [str(p) for p in [folder / "torch.py", *(Path(f) / PTH for f in site.getsitepackages())]
                     if p.exists()]
    for row in rows:
        row["score_after_class"] = final[row["submission"]]
    same = all(r["score"] == r["alone"] == r["score_after_class"] for r in rows if r["kind"] != "attack")
    return rows, same, leftovers


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--assignments", default=None, help="comma-separated assignments (default: all installed)")
    p.add_argument("--load", type=int, default=20, help="busy-loop processes for the loaded grades (default 20)")
    p.add_argument("--seed", type=int, default=0, help="the grader's seed (default 0)")
    p.add_argument("--name", default="homework_sandbox", help="result file name (default homework_sandbox)")
    p.add_argument("--class-size", type=int, default=0,
                   help="then grade a class folder of this many submissions, attackers among them (default 0: none)")
    p.add_argument("--class-assignment", default="discrete_estimators",
                   help="the assignment of the class folder (default discrete_estimators)")
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
    if args.class_size < 0:
        raise ZooError(f"--class-size must be >= 0, got {args.class_size}")
    if args.class_size:
        get_assignment(args.class_assignment)
    assignments = [get_assignment(n) for n in (args.assignments.split(",") if args.assignments else ASSIGNMENTS)]
    rows, class_rows, class_same, class_leftovers = [], [], None, []
    loads = (0, args.load) if args.load else (0,)          # --load 0: the idle grades once
    for step, load in enumerate(loads):
        hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"], start_new_session=True)
                for _ in range(load)]
        try:
            time.sleep(1.0 if load else 0.0)
            for hw in assignments:
                budget = BUDGET_FACTOR * hw.reference_time * calibrate() if hw.reference_time else None
                start = time.perf_counter()
                result = grade(hw, solution_path(hw), hidden=True, seed=args.seed)
                wall = time.perf_counter() - start
                rows.append({"assignment": hw.name, "busy_processes": load, "seconds": round(wall, 1),
                             "score": result.score, "max_score": result.max_score,
                             "budget_seconds": round(budget, 1) if budget else None,
                             "load_average": [round(x, 2) for x in os.getloadavg()],
                             "failed": [f"{c.name}: {c.message}" for c in result.checks if not c.passed]})
                print(f"{hw.name} with {load} busy processes: {result.score:g}/{result.max_score:g} in {wall:.1f} s",
                      flush=True)
            if step == len(loads) - 1 and args.class_size:
                print(f"a class of {args.class_size} on {args.class_assignment} with {load} busy processes", flush=True)
                class_rows, class_same, class_leftovers = _grade_class(args.class_assignment, args.class_size,
                                                                       args.seed, load)
        finally:
            for hog in hogs:
                hog.kill()
                hog.wait()
    path = write_result(args.name, {"omp_num_threads": os.environ.get("OMP_NUM_THREADS"), "seed": args.seed,
                                    "rows": rows, "class": {"assignment": args.class_assignment, "rows": class_rows,
                                                            "honest_score_as_alone": class_same,
                                                            "leftovers": class_leftovers}})
    md = ["# The homework autograder in its sandbox: time per submission, idle and loaded", "",
          f"Command: `{' '.join(['python', 'benchmarks/homework_sandbox.py'] + (argv or sys.argv[1:]))}` "
          f"(result: `{path.name}`, with the git commit and hardware). Reference solutions, hidden checks on, "
          f"one worker in a bubblewrap sandbox, one torch thread, {os.cpu_count()} logical cores.", "",
          "| assignment | busy processes | score | seconds | budget (s) | load average |", "|---|---|---|---|---|---|"]
    for r in rows:
        md.append(f"| {r['assignment']} | {r['busy_processes']} | {r['score']:g} / {r['max_score']:g} "
                  f"| {r['seconds']:.1f} | {r['budget_seconds']} | {r['load_average'][0]} |")
    if class_rows:
        md += ["", f"## A class folder of {len(class_rows)} submissions on {args.class_assignment}, "
                   f"{class_rows[0]['busy_processes']} busy processes", "",
               "Each graded by its own `pyro-zoo grade`, one after the other, in one folder and one environment. "
               f"Every honest submission scores as it does alone: **{'yes' if class_same else 'NO'}**; "
               f"left behind (`torch.py`, `.pth`): {', '.join(class_leftovers) or 'nothing'}. Seconds per "
               f"submission: mean {sum(r['seconds'] for r in class_rows) / len(class_rows):.1f}, "
               f"max {max(r['seconds'] for r in class_rows):.1f}.", "",
               "| submission | kind | score | alone | seconds |", "|---|---|---|---|---|"]
        md += [f"| {r['submission']} | {r['kind']} | {r['score']} | {r['alone'] if r['kind'] != 'attack' else ''} "
               f"| {r['seconds']:.1f} |" for r in class_rows]
    (RESULTS / f"{args.name}.md").write_text("\n".join(md) + "\n")


if __name__ == "__main__":
    run_script(main)
