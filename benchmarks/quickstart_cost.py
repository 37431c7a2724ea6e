"""What the README's Quickstart costs: the CPU-seconds and wall seconds of its main command, and of
``pyro-zoo --help`` and ``pyro-zoo list``, each in a fresh process in an empty folder, run three ways: as a user
runs them (the caller's environment without ``OMP_NUM_THREADS``: the zoo picks the threads,
``zoo.training.threads``), with ``OMP_NUM_THREADS`` set to the machine's cores (PyTorch's own default, what
the zoo used before it picked), and with ``OMP_NUM_THREADS=1``.

CPU-seconds (user + system, from ``getrusage`` of the finished child) are what a run costs on a shared
machine, where wall time is not meaningful. A virtual machine's CPU-seconds for the same work drift by several
percent within minutes, so the commands run in ``--repeats`` rounds (three by default), each round every command
under every setting, and the README's figure is the median of the rounds as a user runs it. The main command is read from the README itself (the part after
``pip install . &&``), so the figure the README states is the figure of the command it shows;
``tests/test_readme.py`` checks the README against this file (the first protocol's row).

Usage::

    python benchmarks/quickstart_cost.py            # writes benchmarks/results/quickstart_cost.{json,md}
    python benchmarks/quickstart_cost.py --repeats 5
    python benchmarks/quickstart_cost.py --name quickstart_cost_rerun   # a re-measurement beside the README's file
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import RESULTS, fail, readme_command, run_script, timed_run, write_result  # noqa: E402


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--name", default="quickstart_cost", help="result file name in benchmarks/results (the README's "
                   "figure is checked against quickstart_cost)")
    p.add_argument("--repeats", type=int, default=3, help="rounds of every command under every setting (default 3); "
                   "the README's figure is the median of the rounds as a user runs it")
    args = p.parse_args(argv)
    if args.repeats < 1:
        fail(f"--repeats must be at least 1, got {args.repeats}")
    command = readme_command("pip install .")
    cores = os.cpu_count() or 1
    rows = []
    for round_ in range(1, args.repeats + 1):
        for threads, how in ((None, "as a user runs it (no thread setting)"),
                             (cores, f"OMP_NUM_THREADS={cores} (PyTorch's default)"), (1, "OMP_NUM_THREADS=1")):
            for argv in (["pyro-zoo", "--help"], ["pyro-zoo", "list"], command):
                with tempfile.TemporaryDirectory() as cwd:          # a fresh folder each: the grid starts anew
                    run = timed_run(argv, cwd, threads)
                    rows.append({"round": round_, "command": run["command"], "threads": how,
                                 "cpu_seconds": run["cpu_seconds"], "wall_seconds": run["wall_seconds"],
                                 "notices": run["notices"],
                                 **({"quickstart": True} if argv is command and threads is None else {})})
    quick = [r for r in rows if r.get("quickstart")]            # the figure the README states: as a user runs it
    cpu = sorted(r["cpu_seconds"] for r in quick)
    path = write_result(args.name, {
        "protocol": f"{args.repeats} round(s), each running every command once in a fresh process in an empty "
                    "folder, first in the caller's environment without OMP_NUM_THREADS (as a user runs it), then "
                    f"with OMP_NUM_THREADS={cores} (PyTorch's default) and with OMP_NUM_THREADS=1; CPU-seconds = "
                    "user + system time of the finished child (getrusage); the Quickstart's figure is the median "
                    "over the rounds as a user runs it",
        "repeats": args.repeats, "rows": rows,
        "quickstart_cpu_seconds": round(statistics.median(cpu), 2),
        "quickstart_cpu_seconds_min": cpu[0], "quickstart_cpu_seconds_max": cpu[-1],
        # the median of the wall seconds, taken on its own (it may come from another round than the CPU median)
        "quickstart_wall_seconds": round(statistics.median(r["wall_seconds"] for r in quick), 2)})
    table = ("| round | command | threads | CPU-seconds | wall seconds |\n|---|---|---|---|---|\n"
             + "".join(f"| {r['round']} | `{r['command']}` | {r['threads']} | {r['cpu_seconds']:.2f} | "
                       f"{r['wall_seconds']:.2f} |\n" for r in rows))
    table += (f"\nThe Quickstart as a user runs it, over {args.repeats} round(s): median "
              f"{statistics.median(cpu):.2f} CPU-seconds (min {cpu[0]:.2f}, max {cpu[-1]:.2f}).\n")
    notes = quick[0]["notices"]
    table += ("\nWhat the main command told the user as a user runs it: "
              + ("; ".join(f"`{n}`" for n in notes) if notes else "nothing about its settings") + ".\n")
    (RESULTS / f"{args.name}.md").write_text(table)
    print(table + f"\nwrote {path}")


if __name__ == "__main__":
    run_script(main)
