"""What the README's test command costs: its wall time and CPU-seconds, run as a contributor runs it.

The command is read from the README's Quickstart (the part after ``pip install ".[dev]" &&``), so the time the
README states is the time of the command it shows; ``tests/test_readme.py`` checks the README against this
file. It runs once, in a fresh process, in the caller's environment without ``OMP_NUM_THREADS`` (what a
contributor who sets nothing runs), from the repository root, and then again with ``-n auto`` (pytest-xdist,
in the dev extra: one worker per core). Run it on an idle machine: the 1-minute load
average before and after is recorded beside the times.

Usage::

    python benchmarks/suite_time.py            # writes benchmarks/results/suite_time.{json,md}
"""
from __future__ import annotations

import os
import re
import resource
import shlex
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import RESULTS, write_result  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def test_command() -> list:
    """The Quickstart's test command without its install step, as an argument list."""
    section = (ROOT / "README.md").read_text().split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    line = re.search(r'^    (pip install "\.\[dev\]" && .+)$', section, re.M).group(1)
    return shlex.split(line.split("&&", 1)[1])


def timed(argv: list) -> dict:
    """One run of ``argv`` from the repository root without ``OMP_NUM_THREADS``: wall and CPU-seconds."""
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    load_before = os.getloadavg()[0]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    summary = (done.stdout.strip().splitlines() or [""])[-1]
    if done.returncode != 0:
        failed = [line for line in done.stdout.splitlines() if line.startswith(("FAILED", "ERROR"))]
        raise SystemExit("\n".join(failed + [f"suite_time.py: {' '.join(argv)} failed ({summary}); fix the suite "
                                               f"first"]))
    return {"command": " ".join(argv), "wall_seconds": round(wall, 1),
            "cpu_seconds": round((after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), 1),
            "summary": summary.strip("= "), "load_before": load_before, "load_after": os.getloadavg()[0]}


def main() -> None:
    argv = test_command()
    row = timed(argv)                                   # the README's command, serial
    parallel = timed(argv + ["-n", "auto"])             # the same on every core (pytest-xdist, the dev extra)
    path = write_result("suite_time", {"protocol": "the README's test command once, in a fresh process from the "
                                       "repository root, without OMP_NUM_THREADS, then the same with -n auto "
                                       "(pytest-xdist); CPU-seconds = user + system time of the finished child and "
                                       "its children (getrusage)", **row, "parallel": parallel,
                                       "logical_cores": os.cpu_count()})
    (RESULTS / "suite_time.md").write_text(
        "| command | wall seconds | CPU-seconds | result | load before / after |\n|---|---|---|---|---|\n"
        + "".join(f"| `{r['command']}` | {r['wall_seconds']} | {r['cpu_seconds']} | {r['summary']} | "
                  f"{r['load_before']:.2f} / {r['load_after']:.2f} |\n" for r in (row, parallel)))
    print(f"{row['command']}: {row['wall_seconds']} s wall, {row['cpu_seconds']} CPU-s ({row['summary']}); "
          f"with -n auto: {parallel['wall_seconds']} s wall, {parallel['cpu_seconds']} CPU-s; wrote {path}")


if __name__ == "__main__":
    main()
