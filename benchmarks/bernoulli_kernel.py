"""The Bernoulli score of one evaluation chunk: torch's, the eager sum, and the compiled kernel (zoo/core/kernels.py).

A chunk of the IS harness on MNIST: K = 214 draws x 100 images x 784 pixels of logits, scored against the images
and summed over pixels, outside autograd, at the default threads. Each way is timed as the median of --repeats calls
after one warm-up call (which also compiles the kernel), the three interleaved in every round.

    python benchmarks/bernoulli_kernel.py            # writes benchmarks/results/bernoulli_kernel.json
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import fail, run_script, write_result  # noqa: E402

from zoo.core import kernels  # noqa: E402


def torch_score(logits, x):
    lb, xb = torch.broadcast_tensors(logits, x)
    return -F.binary_cross_entropy_with_logits(lb, xb, reduction="none").sum(-1)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--name", default="bernoulli_kernel", help="result file name in benchmarks/results")
    args = p.parse_args(argv)
    if args.repeats < 1:
        fail("--repeats must be at least 1")
    if kernels.cpu_compiler() is None:
        fail("no C++ compiler (g++, c++, clang++ or $CXX) to build the kernel with: install one")
    torch.manual_seed(0)
    logits = 4 * torch.randn(214, 100, 784)
    x = torch.bernoulli(torch.full((100, 784), 0.3))
    ways = {"torch (binary_cross_entropy_with_logits)": lambda: torch_score(logits, x),
            "eager sum (x l - softplus(l))": lambda: kernels._eager_bernoulli(logits, x),
            "compiled kernel": lambda: kernels.bernoulli_log_prob(logits, x)}
    times = {name: [] for name in ways}
    with torch.no_grad():
        reference = torch_score(logits, x)
        error = {name: (fn() - reference).abs().max().item() for name, fn in ways.items()}   # warm-up, compiles
        for _ in range(args.repeats):
            for name, fn in ways.items():
                t0 = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t0)
    ms = {name: statistics.median(t) * 1e3 for name, t in times.items()}
    base = ms["torch (binary_cross_entropy_with_logits)"]
    path = write_result(args.name, {"shape": [214, 100, 784], "threads": torch.get_num_threads(),
                                    "median_ms": ms, "speedup_over_torch": {k: base / v for k, v in ms.items()},
                                    "max_abs_difference_from_torch": error, "all_seconds": times})
    for name, value in ms.items():
        print(f"{name}: {value:.1f} ms ({base / value:.2f}x torch's)")
    print(f"wrote {path}")


if __name__ == "__main__":
    run_script(main)
