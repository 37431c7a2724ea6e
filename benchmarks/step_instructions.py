"""The fixed cost per step counted in CPU instructions: the ``step_overhead.py --small`` loops under callgrind.

On a shared VM the wall-clock figures of ``step_overhead.py --small`` move by a tenth or more between runs (the
hand-written step itself took from 850 to 1,500 µs on one machine in one day), so a goal such as "the zoo's overhead
at most half of Pyro's" can be met or missed by noise. Instructions executed do not depend on the neighbours: each
loop runs in its own process under valgrind's callgrind, with counting off until the loop is warmed up (one round:
imports, the first validated step, allocator and caches filled), on for exactly one round of ``--steps`` steps, and
the process then ends without its interpreter's teardown. Python's cyclic garbage collector is run and switched off
before the counted round: a collection's cost depends on the whole heap (hundreds of thousands of objects after
importing torch), not on the step, and one full collection falling in a round or not moved a loop's count by a
third. The loops, the model, the data and the optimizer are ``step_overhead.py --small``'s (:class:`SmallLoops`);
the overhead of a loop is its instructions per step minus the hand-written loop's::

    python benchmarks/step_instructions.py --steps 300 --name step_instructions_small

Instructions are not time: a cache miss or a branch mispredicted costs cycles the count does not show, and
different code retires instructions at different rates. The count tells
which of two loops does more work, exactly and repeatably; the wall-clock benchmark tells what a user waits. Needs
valgrind (``callgrind_control`` included); takes some minutes (each process starts about 50 times slower under it),
and counts ``--jobs`` loops at once.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import fail, run_script, write_result  # noqa: E402

LOOPS = ("hand-written", "Pyro Trace_ELBO", "Pyro Trace_ELBO, validation off", "zoo.fit")
BATCHES = (1, 32)


def child(name: str, B: int, steps: int, threads: int, ready: str) -> None:
    """Run inside callgrind: warm the loop up, then wait for counting to be switched on, run one round, and end."""
    import gc

    import torch
    from step_overhead import SmallLoops

    from zoo.core.process import map_torch_constants
    map_torch_constants()
    torch.set_num_threads(threads)
    loop = SmallLoops(compiled=False).loops(B, steps)[name]
    loop()                                       # warm-up round, not counted
    gc.collect()
    gc.disable()
    Path(ready).touch()
    while not Path(ready + ".go").exists():      # the parent switches counting on, then writes .go
        time.sleep(0.05)
    loop()
    sys.stdout.flush()
    os._exit(0)                                  # no teardown in the count


def _last_line(text: str) -> str:
    """The last non-empty line of a child's output (its error), so that a failure stays one line."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else "no output"


def count(name: str, B: int, steps: int, threads: int) -> int:
    """Instructions of one round of ``steps`` steps of loop ``name`` at batch ``B``, in a fresh process."""
    with tempfile.TemporaryDirectory() as tmp:
        ready = os.path.join(tmp, "ready")
        command = ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={tmp}/callgrind.out",
                   sys.executable, __file__, "--child", name, "--batch", str(B), "--steps", str(steps),
                   "--threads", str(threads), "--ready", ready]
        with open(os.path.join(tmp, "log"), "w+") as log:
            process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
            while not os.path.exists(ready):
                if process.poll() is not None:
                    log.seek(0)
                    fail(f"the {name!r} loop ended before its counted round: {_last_line(log.read())}")
                time.sleep(0.5)
            subprocess.run(["callgrind_control", "--instr=on", str(process.pid)], check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            Path(ready + ".go").touch()
            process.wait()
            log.seek(0)
            text = log.read()
        found = re.search(r"Collected : (\d+)", text)
        if process.returncode != 0 or not found:
            fail(f"callgrind gave no count for the {name!r} loop (exit {process.returncode}): {_last_line(text)}")
        return int(found.group(1))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=300, help="steps in the counted round of each loop")
    p.add_argument("--threads", type=int, default=1, help="torch threads in every loop (default 1)")
    p.add_argument("--name", default="step_instructions_small", help="result file name")
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 1,
                   help="loops counted at once, each in its own process (default: the logical cores)")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--batch", type=int, default=1, help=argparse.SUPPRESS)
    p.add_argument("--ready", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.steps < 1:
        fail(f"--steps must be at least 1, got {args.steps}")
    if args.threads < 1:
        fail(f"--threads must be at least 1, got {args.threads}")
    if args.jobs < 1:
        fail(f"--jobs must be at least 1, got {args.jobs}")
    if args.child is not None:
        return child(args.child, args.batch, args.steps, args.threads, args.ready)
    for tool in ("valgrind", "callgrind_control"):
        if shutil.which(tool) is None:
            fail(f"{tool} is not installed: install valgrind (e.g. apt-get install valgrind) to count instructions")
    version = subprocess.run(["valgrind", "--version"], capture_output=True, text=True).stdout.strip()
    result = {"model": "vae, 2 latents, 16 hidden units, amortized guide, digits (64 pixels)",
              "objective": "Trace_ELBO, K=1", "optimizer": "make_optimizer (fused Adam) for every loop",
              "counted_steps": args.steps, "threads": args.threads, "valgrind": version, "batches": {}}
    runs = [(name, B) for B in BATCHES for name in LOOPS]
    with ThreadPoolExecutor(args.jobs) as pool:        # counts do not depend on what runs beside them
        counts = dict(zip(runs, pool.map(lambda run: count(*run, args.steps, args.threads), runs)))
    for B in BATCHES:
        per_step = {name: counts[name, B] / args.steps for name in LOOPS}
        for name, n in per_step.items():
            print(f"batch {B}: {name}: {n / 1e6:.3f} M instructions/step", flush=True)
        overhead = {k: v - per_step["hand-written"] for k, v in per_step.items() if k != "hand-written"}
        result["batches"][str(B)] = {
            "instructions_per_step": per_step, "overhead_instructions_per_step": overhead,
            "zoo_overhead_over_pyro": overhead["zoo.fit"] / overhead["Pyro Trace_ELBO"],
            "zoo_overhead_over_pyro_validation_off": overhead["zoo.fit"] / overhead["Pyro Trace_ELBO, validation off"]}
    write_result(args.name, result)


if __name__ == "__main__":
    run_script(main)
