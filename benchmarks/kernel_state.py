"""PyTorch's vectorised math in a fresh process, after ``zoo.core.process.map_torch_constants``, and after one ``torch.lgamma``.

Observed on the 2-core AMD EPYC VM of 2026-11-26: the evaluation's compiled Bernoulli kernel
(``zoo.core.kernels.bernoulli_log_prob``, a softplus per logit summed over the pixels) and ATen's own softplus,
log1p and binary cross-entropy ran five to six times slower in a fresh process than after one ``torch.lgamma`` of one
element.
The cause (``perf record``; :mod:`zoo.core.process`): SLEEF's AVX-512 functions in ``libtorch_cpu.so`` make masked
loads of constants whose mask is all zeros, from read-only pages the process has never touched, and each such load
takes a microcode assist, on every call. ``torch.lgamma`` happens to read a constant on that page; mapping the
library's read-only pages in (``map_torch_constants``, which ``pyro-zoo``, ``fit`` and ``evaluate`` call) does it
on purpose. This script measures the three states, each in its own fresh process, alternating, one thread:

- ``bernoulli``: the compiled kernel on a [213, 100, 784] chunk of logits, as the evaluation scores it;
- ``softplus``, ``bce``: ATen's ``F.softplus`` and ``F.binary_cross_entropy_with_logits`` at a training step's
  [100, 784].

    python benchmarks/kernel_state.py                # writes benchmarks/results/kernel_state.json
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import run_script, write_result  # noqa: E402

#: one fresh process: a [K, B, D] chunk of logits as the evaluation scores it (K = 213 draws, B = 100 MNIST images)
PROBE = """
import json, sys, time, torch
import torch.nn.functional as F
from zoo.core.kernels import bernoulli_log_prob
torch.set_num_threads(1)
torch.manual_seed(0)
x = (torch.rand(100, 784) < 0.13).float()
chunk = torch.randn(213, 100, 784) * 6 - 8
step = torch.randn(100, 784) * 3
if sys.argv[1] == "lgamma":
    torch.lgamma(torch.ones(1))
if sys.argv[1] == "map":
    from zoo.core.process import map_torch_constants
    map_torch_constants()
ops = {"bernoulli": lambda: bernoulli_log_prob(chunk, x), "softplus": lambda: F.softplus(step),
       "bce": lambda: F.binary_cross_entropy_with_logits(step, x, reduction="none")}
out = {}
with torch.no_grad():
    for name, op in ops.items():
        op()                                            # compiles (or loads) the kernel
        times = []
        for _ in range(int(sys.argv[2]) * (1 if name == "bernoulli" else 40)):
            t0 = time.perf_counter()
            op()
            times.append(time.perf_counter() - t0)
        out[name] = 1e3 * min(times)
print(json.dumps(out))
"""


def probe(state: str, repeats: int) -> dict:
    done = subprocess.run([sys.executable, "-c", PROBE, state, str(repeats)], capture_output=True, text=True,
                          check=True, cwd=Path(__file__).resolve().parent.parent)
    return json.loads(done.stdout.strip().splitlines()[-1])


STATES = ("fresh", "map", "lgamma")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--processes", type=int, default=3, help="fresh processes per state, alternating")
    p.add_argument("--repeats", type=int, default=5, help="timed kernel calls per process (40x that of the small ops)")
    p.add_argument("--name", default="kernel_state")
    args = p.parse_args(argv)
    runs = {state: [] for state in STATES}
    for _ in range(args.processes):
        for state in STATES:
            runs[state].append(probe(state, args.repeats))
            print(state, {k: round(v, 3) for k, v in runs[state][-1].items()}, flush=True)
    ops = list(runs["fresh"][0])
    median = {state: {op: statistics.median(r[op] for r in runs[state]) for op in ops} for state in STATES}
    path = write_result(args.name, {
        "what": "ms per call, best of each fresh process's calls, one thread; 'map' called "
                "zoo.core.process.map_torch_constants() first, 'lgamma' torch.lgamma(torch.ones(1)); bernoulli: "
                "zoo.core.kernels.bernoulli_log_prob on a [213, 100, 784] chunk; softplus, bce: ATen's at [100, 784]",
        "ms": runs, "median_ms": median,
        "fresh_over_map": {op: median["fresh"][op] / median["map"][op] for op in ops},
        "lgamma_over_map": {op: median["lgamma"][op] / median["map"][op] for op in ops},
        # the figures the results page has quoted since the effect was found
        "median_fresh_ms": median["fresh"]["bernoulli"], "median_after_lgamma_ms": median["lgamma"]["bernoulli"],
        "median_after_map_ms": median["map"]["bernoulli"]})
    print(f"fresh/map: {path}")


if __name__ == "__main__":
    run_script(main)
