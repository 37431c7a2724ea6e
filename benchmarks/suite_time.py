"""What the README's test command costs: its wall time and CPU-seconds, run as a contributor runs it.

The command is read from the README's Quickstart (the part after ``pip install ".[dev]" &&``), so the time the
README states is the time of the command it shows; ``tests/test_readme.py`` checks the README against this
file. That command spreads the tests over the cores (pytest-xdist's ``-n auto``, at most 4 workers, from the dev
extra). It runs once, in a fresh process, in the caller's environment without ``OMP_NUM_THREADS`` (what a
contributor who sets nothing runs), from the repository root, and then again in one process (``-n 0``). Run it
on an idle machine: the 1-minute load average before and after each run is recorded beside the times.

Usage::

    python benchmarks/suite_time.py            # writes benchmarks/results/suite_time.{json,md}
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import RESULTS, ROOT, readme_command, timed_run, write_result  # noqa: E402


def timed(argv: list) -> dict:
    """One run of ``argv`` from the repository root without ``OMP_NUM_THREADS``, with the load around it."""
    load_before = os.getloadavg()[0]
    row = timed_run(argv, ROOT)
    return {"command": row["command"], "wall_seconds": round(row["wall_seconds"], 1),
            "cpu_seconds": round(row["cpu_seconds"], 1), "summary": row["last_line"].strip("= "),
            "load_before": load_before, "load_after": os.getloadavg()[0]}


def main() -> None:
    argv = readme_command('pip install ".[dev]"')
    row = timed(argv)                                   # the README's command, on the cores (pytest-xdist)
    serial = timed(argv + ["-n", "0"])                  # the same in one process
    path = write_result("suite_time", {"protocol": "the README's test command once, in a fresh process from the "
                                       "repository root, without OMP_NUM_THREADS, then the same in one process "
                                       "(-n 0); CPU-seconds = user + system time of the finished child and its "
                                       "children (getrusage)", **row, "serial": serial,
                                       "logical_cores": os.cpu_count()})
    (RESULTS / "suite_time.md").write_text(
        "| command | wall seconds | CPU-seconds | result | load before / after |\n|---|---|---|---|---|\n"
        + "".join(f"| `{r['command']}` | {r['wall_seconds']} | {r['cpu_seconds']} | {r['summary']} | "
                  f"{r['load_before']:.2f} / {r['load_after']:.2f} |\n" for r in (row, serial)))
    print(f"{row['command']}: {row['wall_seconds']} s wall, {row['cpu_seconds']} CPU-s ({row['summary']}); "
          f"in one process: {serial['wall_seconds']} s wall, {serial['cpu_seconds']} CPU-s; wrote {path}")


if __name__ == "__main__":
    main()
