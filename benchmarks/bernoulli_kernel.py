"""The Bernoulli score of one evaluation chunk: torch's, the eager sum, and the compiled kernel (zoo/core/kernels.py).

A chunk of the IS harness on MNIST: K = 214 draws x 100 images x 784 pixels of logits, scored against the images
and summed over pixels, outside autograd, at the default threads. Each way is timed as the median of --repeats calls
after one warm-up call (which also compiles the kernels), all ways interleaved in every round, with torch's
constants mapped in as the command line maps them (``zoo.core.process``), on two kinds of logits:

- ``4 randn``: 4 x N(0, 1), the range of an untrained decoder;
- ``decoder``: the headline VAE's decoder (``benchmarks/checkpoints/vae-mnist-elbo``) on draws from its N(0, I)
  prior, whose background pixels sit far below zero (half below -13), where SLEEF's ``log1p`` is ten times slower.

Beside the kernel, the same kernel with torch's softplus, log1p(e^l), which is what it computed before
(``zoo.core.kernels._kernel_bernoulli`` says why it no longer does). And with autograd, at AIS's batch of 16 chains
x 100 images: the likelihood's score and gradient (forward and backward) by torch's path and by the kernel's.

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

from zoo.core import distributions, kernels  # noqa: E402
from zoo.core.process import map_torch_constants  # noqa: E402


CHECKPOINT = Path(__file__).resolve().parent / "checkpoints" / "vae-mnist-elbo" / "checkpoint.pt"
SHAPE = (214, 100, 784)
#: AIS's batch: 16 chains for each of 100 images
GRAD_DRAWS = 16
FUSED_GRAD_ON, FUSED_GRAD_OFF = distributions.FUSED_GRAD_MIN_ELEMENTS, 1 << 62


def torch_score(logits, x):
    lb, xb = torch.broadcast_tensors(logits, x)
    return -F.binary_cross_entropy_with_logits(lb, xb, reduction="none").sum(-1)


def decoder_logits() -> torch.Tensor:
    """The headline VAE's logits for SHAPE[0] x SHAPE[1] draws from its prior (weights only, no data needed)."""
    from zoo.registry import build_model
    state = torch.load(CHECKPOINT, map_location="cpu", weights_only=True)
    model = build_model("vae", SHAPE[2])
    model.load_state_dict(state["model"])
    with torch.no_grad():
        return model.decoder(torch.randn(*SHAPE[:2], model.latent_dim))


def gradient_ms(inputs: dict, x: torch.Tensor, repeats: int) -> dict:
    """Median ms of the score and its gradient (forward and backward) at AIS's batch of chains, torch's way (the
    likelihood's path below FUSED_GRAD_MIN_ELEMENTS) and the compiled kernel's (_BernoulliScore), interleaved."""
    from zoo.core.distributions import IndependentBernoulli
    ways = {"torch (binary_cross_entropy_with_logits)": FUSED_GRAD_OFF, "compiled kernel": FUSED_GRAD_ON}
    leaves = {kind: logits.clone().requires_grad_(True) for kind, logits in inputs.items()}
    times = {(kind, name): [] for kind in inputs for name in ways}

    def once(kind, name):
        distributions.FUSED_GRAD_MIN_ELEMENTS = ways[name]
        leaves[kind].grad = None
        IndependentBernoulli(leaves[kind]).log_prob(x).sum().backward()

    try:
        for cell in times:                                                  # warm-up (compiles)
            once(*cell)
        for _ in range(repeats):
            for cell in times:
                t0 = time.perf_counter()
                once(*cell)
                times[cell].append(time.perf_counter() - t0)
    finally:
        distributions.FUSED_GRAD_MIN_ELEMENTS = FUSED_GRAD_ON
    return {kind: {name: statistics.median(times[kind, name]) * 1e3 for name in ways} for kind in inputs}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--name", default="bernoulli_kernel", help="result file name in benchmarks/results")
    args = p.parse_args(argv)
    if args.repeats < 1:
        fail("--repeats must be at least 1")
    if kernels.cpu_compiler() is None:
        fail("no C++ compiler (g++, c++, clang++ or $CXX) to build the kernel with: install one")
    if not CHECKPOINT.is_file():
        fail(f"no checkpoint at {CHECKPOINT}: run from a checkout of pyro-zoo")
    map_torch_constants()                       # as the command line does (zoo.core.process)
    torch.manual_seed(0)
    inputs = {"4 randn": 4 * torch.randn(*SHAPE), "decoder": decoder_logits()}
    x = torch.bernoulli(torch.full(SHAPE[1:], 0.3))
    with_torch_softplus = torch.compile(kernels._eager_bernoulli)
    ways = {"torch (binary_cross_entropy_with_logits)": torch_score,
            "eager sum (x l - softplus(l))": kernels._eager_bernoulli,
            "kernel with torch's softplus, log1p(e^l)": with_torch_softplus,
            "compiled kernel": kernels.bernoulli_log_prob}
    cells = [(kind, name) for kind in inputs for name in ways]
    times = {cell: [] for cell in cells}
    with torch.no_grad():
        reference = {kind: torch_score(logits.double(), x.double()) for kind, logits in inputs.items()}
        error = {cell: (ways[cell[1]](inputs[cell[0]], x) - reference[cell[0]]).abs().max().item()   # warm-up
                 for cell in cells}
        for _ in range(args.repeats):
            for kind, name in cells:
                t0 = time.perf_counter()
                ways[name](inputs[kind], x)
                times[kind, name].append(time.perf_counter() - t0)
    ms = {kind: {name: statistics.median(times[kind, name]) * 1e3 for name in ways} for kind in inputs}
    grad_ms = gradient_ms({kind: logits[:GRAD_DRAWS] for kind, logits in inputs.items()}, x, args.repeats)
    quantiles = torch.tensor([0.1, 0.5, 0.9])
    path = write_result(args.name, {
        "shape": list(SHAPE), "threads": torch.get_num_threads(),
        "logit_quantiles_10_50_90": {kind: torch.quantile(l.flatten()[::97], quantiles).tolist()
                                     for kind, l in inputs.items()},
        "median_ms": ms, "gradient_shape": [GRAD_DRAWS, *SHAPE[1:]], "gradient_median_ms": grad_ms,
        "speedup_over_torch": {kind: {name: row["torch (binary_cross_entropy_with_logits)"] / v
                                      for name, v in row.items()} for kind, row in ms.items()},
        "max_abs_difference_from_float64": {kind: {name: error[kind, name] for name in ways} for kind in inputs},
        "all_seconds": {kind: {name: times[kind, name] for name in ways} for kind in inputs}})
    for kind, row in ms.items():
        for name, value in row.items():
            print(f"{kind}, {name}: {value:.1f} ms ({row['torch (binary_cross_entropy_with_logits)'] / value:.2f}x torch's)")
    for kind, row in grad_ms.items():
        print(f"{kind}, with its gradient, {GRAD_DRAWS} x {SHAPE[1]} x {SHAPE[2]}: " +
              ", ".join(f"{name} {value:.2f} ms" for name, value in row.items()))
    print(f"wrote {path}")


if __name__ == "__main__":
    run_script(main)
