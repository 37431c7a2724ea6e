"""What the README's Quickstart costs: the CPU-seconds and wall seconds of its main command, and of
``pyro-zoo --help`` and ``pyro-zoo list``, each in a fresh process in an empty folder, run three ways: as a user
runs them (the caller's environment without ``OMP_NUM_THREADS``: the zoo picks the threads,
``zoo.training.threads``), with ``OMP_NUM_THREADS`` set to the machine's cores (PyTorch's own default, what
the zoo used before it picked), and with ``OMP_NUM_THREADS=1``.

CPU-seconds (user + system, from ``getrusage`` of the finished child) are what a run costs on a shared
machine, where wall time is not meaningful. The main command is read from the README itself (the part after
``pip install . &&``), so the figure the README states is the figure of the command it shows;
``tests/test_readme.py`` checks the README against this file (the first protocol's row).

Usage::

    python benchmarks/quickstart_cost.py            # writes benchmarks/results/quickstart_cost.{json,md}
    python benchmarks/quickstart_cost.py --name quickstart_cost_rerun   # a re-measurement beside the README's file
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import RESULTS, readme_command, timed_run, write_result  # noqa: E402


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--name", default="quickstart_cost", help="result file name in benchmarks/results (the README's "
                   "figure is checked against quickstart_cost)")
    name = p.parse_args(argv).name
    command = readme_command("pip install .")
    cores = os.cpu_count() or 1
    rows = []
    for threads, how in ((None, "as a user runs it (no thread setting)"),
                         (cores, f"OMP_NUM_THREADS={cores} (PyTorch's default)"), (1, "OMP_NUM_THREADS=1")):
        for argv in (["pyro-zoo", "--help"], ["pyro-zoo", "list"], command):
            with tempfile.TemporaryDirectory() as cwd:          # a fresh folder each: the grid starts anew
                run = timed_run(argv, cwd, threads)
                rows.append({"command": run["command"], "threads": how, "cpu_seconds": run["cpu_seconds"],
                             "wall_seconds": run["wall_seconds"], "notices": run["notices"],
                             **({"quickstart": True} if argv is command and threads is None else {})})
    quick = next(r for r in rows if r.get("quickstart"))     # the figure the README states: as a user runs it
    path = write_result(name, {"protocol": "each command once in a fresh process in an empty folder, "
                                            "first in the caller's environment without OMP_NUM_THREADS (as a user "
                                            f"runs it), then with OMP_NUM_THREADS={cores} (PyTorch's default) and "
                                            "with OMP_NUM_THREADS=1; CPU-seconds = user + system time of the "
                                            "finished child (getrusage)", "rows": rows,
                                            "quickstart_cpu_seconds": quick["cpu_seconds"],
                                            "quickstart_wall_seconds": quick["wall_seconds"]})
    table = ("| command | threads | CPU-seconds | wall seconds |\n|---|---|---|---|\n"
             + "".join(f"| `{r['command']}` | {r['threads']} | {r['cpu_seconds']:.2f} | {r['wall_seconds']:.2f} |\n"
                       for r in rows))
    notes = quick["notices"]
    table += ("\nWhat the main command told the user as a user runs it: "
              + ("; ".join(f"`{n}`" for n in notes) if notes else "nothing about its settings") + ".\n")
    (RESULTS / f"{name}.md").write_text(table)
    print(table + f"\nwrote {path}")


if __name__ == "__main__":
    main()
