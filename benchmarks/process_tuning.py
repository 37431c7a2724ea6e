"""What each of the command line's two process settings buys (``zoo/cli_process.py``), each alone and both, in fresh
processes, alternating, one thread:

- ``none``: ``PYRO_ZOO_PROCESS_TUNING=0``, the process as Python and PyTorch leave it;
- ``map``: torch's read-only constants mapped in (``zoo.core.process.map_torch_constants``);
- ``keep``: freed memory kept in glibc's heap (``zoo.cli_process.keep_freed_memory``);
- ``both``: ``zoo.cli_process.tune_process()``, what ``pyro-zoo`` runs before a command.

In each process: ATen's softplus at a training step's [100, 784] (best of 400 calls: what the mapping changes on
processors whose vectorised math makes masked loads, ``zoo/core/process.py``), and an evaluation chunk's 64 MiB
tensor allocated, filled and freed (median of 20 cycles after 10, with the page faults of one cycle: what keeping
freed memory changes). ``benchmarks/kernel_state.py`` measures the mapping on the compiled Bernoulli kernel too.

    python benchmarks/process_tuning.py              # writes benchmarks/results/process_tuning.json
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import run_script, write_result  # noqa: E402

PROBE = """
import json, resource, statistics, sys, time, torch
import torch.nn.functional as F
from zoo.cli_process import keep_freed_memory, tune_process
from zoo.core.process import map_torch_constants
torch.set_num_threads(1)
state = sys.argv[1]
done = {"none": tune_process, "map": map_torch_constants, "keep": keep_freed_memory, "both": tune_process}[state]()
step = torch.randn(100, 784) * 3
softplus = []
for _ in range(400):
    t0 = time.perf_counter()
    F.softplus(step)
    softplus.append(time.perf_counter() - t0)
def cycle():                              # an evaluation chunk's logits: allocated, written, freed
    t = torch.empty(1 << 24)
    t.fill_(1.0)
    del t
for _ in range(10):                       # glibc settles its heap over the first few
    cycle()
cycles, faults = [], resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    t0 = time.perf_counter()
    cycle()
    cycles.append(time.perf_counter() - t0)
faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults) / 20
print(json.dumps({"did": done, "softplus_ms": 1e3 * min(softplus), "chunk_ms": 1e3 * statistics.median(cycles),
                  "chunk_page_faults": faults}))
"""

STATES = ("none", "map", "keep", "both")


def probe(state: str) -> dict:
    env = {**os.environ, "PYRO_ZOO_PROCESS_TUNING": "0" if state == "none" else "1"}
    for name in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES"):
        env.pop(name, None)                     # glibc's defaults, which keep_freed_memory would otherwise leave alone
    done = subprocess.run([sys.executable, "-c", PROBE, state], capture_output=True, text=True, check=True, env=env,
                          cwd=Path(__file__).resolve().parent.parent)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--processes", type=int, default=3, help="fresh processes per state, alternating (default 3)")
    p.add_argument("--name", default="process_tuning")
    args = p.parse_args(argv)
    runs = {state: [] for state in STATES}
    for _ in range(args.processes):
        for state in STATES:
            runs[state].append(probe(state))
            print(state, runs[state][-1], flush=True)
    figures = ("softplus_ms", "chunk_ms", "chunk_page_faults")
    median = {s: {f: statistics.median(r[f] for r in runs[s]) for f in figures} for s in STATES}
    path = write_result(args.name, {
        "what": "each state in fresh processes, alternating, one thread: 'none' PYRO_ZOO_PROCESS_TUNING=0, 'map' "
                "zoo.core.process.map_torch_constants(), 'keep' zoo.cli_process.keep_freed_memory(), 'both' "
                "zoo.cli_process.tune_process(); softplus_ms: ATen's F.softplus at [100, 784], best of 400 calls; "
                "chunk_ms: a 64 MiB float tensor allocated, filled and freed, median of 20 cycles after 10; "
                "chunk_page_faults: minor page faults per cycle",
        "processes": runs, "median": median,
        "softplus_none_over_map": median["none"]["softplus_ms"] / median["map"]["softplus_ms"],
        "chunk_none_over_keep": median["none"]["chunk_ms"] / median["keep"]["chunk_ms"]})
    print(f"wrote {path}")


if __name__ == "__main__":
    run_script(main)
