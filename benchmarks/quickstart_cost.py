"""What the README's Quickstart costs: the CPU-seconds of its main command, and of ``pyro-zoo --help`` and
``pyro-zoo list``, each in a fresh process with ``OMP_NUM_THREADS=1``.

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
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import RESULTS, write_result  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def main_command() -> list:
    """The Quickstart's main command without its install step, as an argument list."""
    section = (ROOT / "README.md").read_text().split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    first = re.search(r"^    (pip install \. && .+)$", section, re.M).group(1)
    return shlex.split(first.split("&&", 1)[1])


def cpu_seconds(argv: list, cwd: str) -> float:
    """User + system CPU-seconds of ``argv`` run to completion in a fresh process (exit 0 required)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    env = dict(os.environ, OMP_NUM_THREADS="1", MPLBACKEND="Agg")
    done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed: {done.stderr.strip().splitlines()[-1:]}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return round((after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), 2)


def main() -> None:
    command = main_command()
    with tempfile.TemporaryDirectory() as cwd:
        rows = [{"command": "pyro-zoo --help", "cpu_seconds": cpu_seconds(["pyro-zoo", "--help"], cwd)},
                {"command": "pyro-zoo list", "cpu_seconds": cpu_seconds(["pyro-zoo", "list"], cwd)},
                {"command": " ".join(command), "cpu_seconds": cpu_seconds(command, cwd), "quickstart": True}]
    path = write_result("quickstart_cost", {"protocol": "each command once in a fresh process with "
                                            "OMP_NUM_THREADS=1 in an empty folder; CPU-seconds = user + system "
                                            "time of the finished child (getrusage)", "rows": rows})
    table = "| command | CPU-seconds |\n|---|---|\n" + "".join(f"| `{r['command']}` | {r['cpu_seconds']:.2f} |\n"
                                                          for r in rows)
    (RESULTS / "quickstart_cost.md").write_text(table)
    print(table + f"\nwrote {path}")


if __name__ == "__main__":
    main()
