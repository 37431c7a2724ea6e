"""The compiled Bernoulli kernel's speed in a fresh process, before and after one call of ``torch.lgamma``.

Observed on the 2-core machine of 2026-11-26: the evaluation's compiled kernel (``zoo.core.kernels.bernoulli_log_prob``,
a softplus per logit summed over the pixels) ran about 4x slower in a process that had never called ``torch.lgamma``
than in one that had, on the same tensors, with the same generated code, at 1 or 2 threads. Setting flush-to-zero
(``torch.set_flush_denormal``), calling libm's ``lgammaf``/``lgamma`` through ctypes, or other ATen functions (exp,
log1p, tanh, digamma, erf, large parallel adds) changed nothing; one ``torch.lgamma`` of one element did, for the
rest of the process. The defensive proposal's Student-t log-density calls ``torch.lgamma`` before every chunk's
kernel, so ``pyro-zoo eval`` with the default proposal ran in the fast state and ``--eval-proposal guide`` in the slow
one. The mechanism is not established; this script measures the effect, each state in its own fresh process, so
that it can be checked on another machine before anything is built on it.

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
from zoo.core.kernels import bernoulli_log_prob
torch.manual_seed(0)
x = (torch.rand(100, 784) < 0.13).float()
logits = torch.randn(213, 100, 784) * 6 - 8
if sys.argv[1] == "lgamma":
    torch.lgamma(torch.ones(1))
with torch.no_grad():
    bernoulli_log_prob(logits, x)                       # compiles (or loads) the kernel
    times = []
    for _ in range(int(sys.argv[2])):
        t0 = time.perf_counter()
        bernoulli_log_prob(logits, x)
        times.append(time.perf_counter() - t0)
print(json.dumps({"ms": [1e3 * t for t in times], "threads": torch.get_num_threads()}))
"""


def probe(state: str, repeats: int) -> dict:
    done = subprocess.run([sys.executable, "-c", PROBE, state, str(repeats)], capture_output=True, text=True,
                          check=True, cwd=Path(__file__).resolve().parent.parent)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--processes", type=int, default=3, help="fresh processes per state, alternating")
    p.add_argument("--repeats", type=int, default=5, help="timed kernel calls per process")
    p.add_argument("--name", default="kernel_state")
    args = p.parse_args(argv)
    runs = {"fresh": [], "after_lgamma": []}
    for _ in range(args.processes):
        for state, key in (("fresh", "fresh"), ("lgamma", "after_lgamma")):
            out = probe(state, args.repeats)
            runs[key].append(statistics.median(out["ms"]))
            print(f"{key}: {runs[key][-1]:.1f} ms per chunk ({out['threads']} threads)", flush=True)
    fresh, after = statistics.median(runs["fresh"]), statistics.median(runs["after_lgamma"])
    path = write_result(args.name, {
        "what": "zoo.core.kernels.bernoulli_log_prob on a [213, 100, 784] chunk, ms per call, median of each fresh "
                "process's calls; 'after_lgamma' called torch.lgamma(torch.ones(1)) once first",
        "ms_per_chunk": runs, "median_fresh_ms": fresh, "median_after_lgamma_ms": after,
        "fresh_over_after_lgamma": fresh / after})
    print(f"fresh {fresh:.1f} ms, after one torch.lgamma {after:.1f} ms ({fresh / after:.2f}x); wrote {path}")


if __name__ == "__main__":
    run_script(main)
