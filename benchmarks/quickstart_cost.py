"""What the README's Quickstart costs: the CPU-seconds and wall seconds of its main command, and of
``pyro-zoo --help`` and ``pyro-zoo list``, each in a fresh process, run as a user runs them (the caller's
environment: no thread setting) and again with ``OMP_NUM_THREADS=1``.

CPU-seconds (user + system, from ``getrusage`` of the finished child) are what a single-threaded run costs
on any idle core, and they stay meaningful on a shared machine, where wall time does not. The main command
is read from the README itself (the part after ``pip install . &&``), so the figure the README states is
the figure of the command it shows; ``tests/test_readme.py`` checks the README against this file.

Usage::

    python benchmarks/quickstart_cost.py            # writes benchmarks/results/quickstart_cost.{json,md}
"""
from __future__ import annotations

import os
import re
import resource
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import RESULTS, write_result  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def main_command() -> list:
    """The Quickstart's main command without its install step, as an argument list."""
    section = (ROOT / "README.md").read_text().split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    first = re.search(r"^    (pip install \. && .+)$", section, re.M).group(1)
    return shlex.split(first.split("&&", 1)[1])


def cost(argv: list, cwd: str, threads: Optional[int]) -> dict:
    """User + system CPU-seconds and wall seconds of ``argv`` run to completion in a fresh process (exit 0
    required), with ``OMP_NUM_THREADS=threads``, or with the caller's environment where ``threads`` is None
    (``OMP_NUM_THREADS`` removed: what a user who sets nothing runs), and the process's stderr notices."""
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    env.update({"MPLBACKEND": "Agg", **({"OMP_NUM_THREADS": str(threads)} if threads else {})})
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed: {done.stderr.strip().splitlines()[-1:]}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {"cpu_seconds": round((after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), 2),
            "wall_seconds": round(wall, 2),
            "notices": [line for line in done.stderr.splitlines() if line.startswith("pyro-zoo:")]}


def main() -> None:
    command = main_command()
    rows = []
    for threads, how in ((None, "as a user runs it (no thread setting)"), (1, "OMP_NUM_THREADS=1")):
        for argv in (["pyro-zoo", "--help"], ["pyro-zoo", "list"], command):
            with tempfile.TemporaryDirectory() as cwd:          # a fresh folder each: the grid starts anew
                rows.append({"command": " ".join(argv), "threads": how, **cost(argv, cwd, threads),
                             **({"quickstart": True} if argv is command else {})})
    quick = next(r for r in rows if r.get("quickstart"))     # the figure the README states: as a user runs it
    path = write_result("quickstart_cost", {"protocol": "each command once in a fresh process in an empty folder, "
                                            "first in the caller's environment without OMP_NUM_THREADS (as a user "
                                            "runs it), then with OMP_NUM_THREADS=1; CPU-seconds = user + system "
                                            "time of the finished child (getrusage)", "rows": rows,
                                            "quickstart_cpu_seconds": quick["cpu_seconds"],
                                            "quickstart_wall_seconds": quick["wall_seconds"]})
    table = ("| command | threads | CPU-seconds | wall seconds |\n|---|---|---|---|\n"
             + "".join(f"| `{r['command']}` | {r['threads']} | {r['cpu_seconds']:.2f} | {r['wall_seconds']:.2f} |\n"
                       for r in rows))
    (RESULTS / "quickstart_cost.md").write_text(table)
    print(table + f"\nwrote {path}")


if __name__ == "__main__":
    main()
