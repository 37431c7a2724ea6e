"""Evaluation at the FLOP limit: importance-sampled and annealed log p(x) on binarized MNIST.

The 784-200-200-50 VAE behind the README's headline row (``benchmarks/checkpoints/vae-mnist-elbo``) is evaluated
as a user evaluates it, and each figure is set beside what the machine allows:

- **IS**: ``pyro-zoo eval RUN --eval-samples K --eval-limit N`` in a fresh process (start-up, data loading and
  the PSIS diagnostics included), at PyTorch's default threads, wall-clock. Its FLOPs are counted from the
  networks' linear layers, 2 per multiply-add: the decoder once per importance sample, the encoder once per datum
  and chunk of samples (``max_elements`` of the harness). The **FLOP limit** is those FLOPs at the machine's
  measured float32 matmul rate (the best of 20 products of 1024 x 1024 matrices): no evaluation on this
  machine does the matrix products faster. The rest of an evaluation (a softplus per pixel and sample, the
  draws, the log-densities) is work the count leaves out.
- **The floor**: one chunk of IS draws as the harness makes it (213 draws of 100 images), in process. The decoder's
  three matrix products alone, into outputs already allocated, are what no evaluation can beat at these shapes
  (products with an inner dimension of 50 or 200 run below the 1024 x 1024 rate). The compiled Bernoulli score
  alone, on the chunk's logits already computed, is the per-pixel work no Bernoulli evaluation can skip: an ``exp``
  and a ``log1p`` per logit (the softplus), which no matrix unit does: with the products at the limit, the score
  alone puts a chunk that much above it. The decoder as the model calls it followed by the score is the product,
  bias and tanh work done the way an evaluation does it. Each as a multiple of the chunk's FLOP limit.
- **AIS**: :class:`zoo.evaluation.ais.AnnealedImportanceSampling` in process (no start-up) on N' images, at the
  settings of ``--ais-leapfrog`` etc. Its cost per image per temperature is set beside **one gradient
  evaluation**: log f(z) = log q(z | x) + beta (log p(x, z) - log q(z | x)) and its gradient with respect to z
  for the same C chains of an image, written by hand in PyTorch on the same networks and the same batch of
  B x C states (forward and backward). An HMC transition with L leapfrog steps needs L of them; the pilot run
  that sets the step sizes (``pilot_chains`` chains over the same schedule) adds pilot_chains / C of that.

    python benchmarks/eval_throughput.py --data-dir ../shared/data                        # the committed figures
    python benchmarks/eval_throughput.py --data-dir ../shared/data --limit 500 --ais-limit 100 --name smoke
"""
from __future__ import annotations

import argparse
import math
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import RESULTS, fail, run_script, timed_run, write_result  # noqa: E402
from speed import matmul_gflops  # noqa: E402

from zoo.evaluation.ais import AnnealedImportanceSampling  # noqa: E402
from zoo.experiments.run import prepare  # noqa: E402
from zoo.experiments.run_folder import load_run, load_weights  # noqa: E402

CHECKPOINT = Path(__file__).resolve().parent / "checkpoints" / "vae-mnist-elbo"
#: the harness's default chunk bound (zoo.evaluation.harness.EvaluationSettings.max_elements) and data per minibatch
MAX_ELEMENTS, EVAL_BATCH = 1 << 24, 100


def linear_macs(module: torch.nn.Module) -> int:
    return sum(m.in_features * m.out_features for m in module.modules() if isinstance(m, torch.nn.Linear))


def is_flops(model, guide, n: int, K: int, x_dim: int) -> float:
    """FLOPs of the matrix products of IS with K samples on n data (module docstring)."""
    chunk = max(1, MAX_ELEMENTS // (EVAL_BATCH * x_dim))
    chunks = math.ceil(K / chunk)
    return 2.0 * n * (K * linear_macs(model) + chunks * linear_macs(guide))


def load(data_dir: str):
    state, config = load_run(CHECKPOINT)
    import dataclasses
    run = prepare(dataclasses.replace(config, data_dir=data_dir))
    load_weights(run.model, run.guide, state, CHECKPOINT)
    run.model.eval()
    run.guide.eval()
    return run


def gradient_seconds(run, x: torch.Tensor, chains: int, beta: float = 0.5, repeats: int = 20) -> float:
    """Median seconds of one hand-written gradient evaluation of log f_beta at B x C states (module docstring)."""
    decoder, guide = run.model.decoder, run.guide
    with torch.no_grad():
        h = guide.trunk(x)
        loc, raw = guide.heads["z"](h).chunk(2, -1)
        scale = F.softplus(raw)
        z0 = loc + scale * torch.randn((chains,) + loc.shape)

    def once():
        z = z0.clone().requires_grad_(True)
        logits = decoder(z)
        log_lik = (x * logits - F.softplus(logits)).sum(-1)
        log_prior = -0.5 * z.pow(2).sum(-1)
        log_q = (-0.5 * ((z - loc) / scale).pow(2) - scale.log()).sum(-1)
        f = log_q + beta * (log_lik + log_prior - log_q)
        return torch.autograd.grad(f.sum(), z)[0]

    once()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        once()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def measure_is(args, run, rate: float) -> dict:
    n = min(args.limit, run.data.test.shape[0])
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "run"
        shutil.copytree(CHECKPOINT, folder)
        timing = timed_run([sys.executable, "-m", "zoo", "eval", str(folder), "--eval-samples", str(args.is_samples),
                            "--eval-limit", str(n), "--data-dir", str(Path(args.data_dir).resolve()), "--no-progress", "--force"], cwd=tmp)
    flops = is_flops(run.model, run.guide, n, args.is_samples, run.data.test.shape[1])
    seconds = timing["wall_seconds"]
    return {"command": f"pyro-zoo eval RUN --eval-samples {args.is_samples} --eval-limit {n}", "num_data": n,
            "num_samples": args.is_samples, "seconds": seconds, "cpu_seconds": timing["cpu_seconds"],
            "peak_resident_mb": timing["max_child_resident_mb"],                   # the first child of this script
            "images_per_second": n / seconds, "flops": flops, "achieved_gflops": flops / seconds / 1e9,
            "flop_limit_seconds": flops / (rate * 1e9), "over_flop_limit": seconds / (flops / (rate * 1e9))}


def measure_ais(args, run, leapfrog: int, pilot_chains: int) -> dict:
    n = min(args.ais_limit, run.data.test.shape[0])
    x = run.data.test[:n]
    ais = AnnealedImportanceSampling(num_temperatures=args.temperatures, num_chains=args.chains,
                                     leapfrog_steps=leapfrog, pilot_chains=pilot_chains, batch_size=args.ais_batch)
    ais.estimate(run.model, run.guide, x[:2], seed=0)                # warm-up (allocator, lazy imports)
    t0 = time.perf_counter()
    result = ais.estimate(run.model, run.guide, x, seed=0)
    seconds = time.perf_counter() - t0
    batch = x[:args.ais_batch]
    gradient = gradient_seconds(run, batch, args.chains) / batch.shape[0]
    per_temperature = seconds / (n * args.temperatures)
    needed = leapfrog * (1 + pilot_chains / args.chains)
    return {"num_data": n, "num_temperatures": args.temperatures, "num_chains": args.chains,
            "leapfrog_steps": leapfrog, "pilot_chains": pilot_chains, "batch_size": args.ais_batch,
            "seconds": seconds, "images_per_second": n / seconds,
            "log_likelihood": float(result.log_likelihood.mean()),
            "seconds_per_image_per_temperature": per_temperature,
            "gradient_seconds_per_image": gradient,
            "gradients_per_temperature": per_temperature / gradient,
            "gradients_a_transition_needs": needed,
            "over_its_gradients": per_temperature / gradient / needed}


def measure_floor(run, rate: float, K: int, repeats: int = 9) -> dict:
    """What one chunk of IS draws costs at its least (module docstring): the decoder's three matrix products alone,
    into tensors already allocated, the compiled Bernoulli score alone on their logits, and the decoder as the model
    calls it followed by the score,
    on a chunk of the harness's shape ([chunk, 100, 50] draws), in this process, with the command line's process
    settings (zoo.cli_process). Each as a multiple of the products' FLOP limit at the measured matmul rate."""
    from zoo.cli_process import tune_process
    from zoo.core.kernels import bernoulli_log_prob
    tune_process()
    decoder = run.model.decoder
    linears = [m for m in decoder.modules() if isinstance(m, torch.nn.Linear)]
    x = run.data.test[:EVAL_BATCH]
    chunk = max(1, MAX_ELEMENTS // (EVAL_BATCH * x.shape[1]))
    z = torch.randn(chunk, EVAL_BATCH, linears[0].in_features)
    rows = z.reshape(-1, z.shape[-1])
    outs = [rows.new_empty(rows.shape[0], m.out_features) for m in linears]
    weights = [m.weight.detach().t() for m in linears]

    def products():
        h = rows
        for w, out in zip(weights, outs):
            h = torch.mm(h, w, out=out)

    def scored():
        bernoulli_log_prob(decoder(z), x)

    def score():
        bernoulli_log_prob(logits, x)

    times = {}
    with torch.no_grad():
        # the score reads the decoder's own logits: the products' outputs, without bias and tanh, are not in the
        # range a real chunk's logits are in, and the score's speed depends on that range (zoo/core/kernels.py)
        logits = decoder(z)
        for name, fn in (("products", products), ("score", score), ("decoder_and_score", scored)):
            fn()
            fn()
            spans = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                fn()
                spans.append(time.perf_counter() - t0)
            times[name] = statistics.median(spans)
    flops = 2.0 * rows.shape[0] * linear_macs(decoder)
    limit = flops / (rate * 1e9)
    return {"chunk_draws": chunk, "images": EVAL_BATCH, "flops": flops, "flop_limit_seconds": limit,
            "products_seconds": times["products"], "score_seconds": times["score"],
            "decoder_and_score_seconds": times["decoder_and_score"],
            "products_over_limit": times["products"] / limit, "score_over_limit": times["score"] / limit,
            "products_and_score_over_limit": (times["products"] + times["score"]) / limit,
            "decoder_and_score_over_limit": times["decoder_and_score"] / limit,
            "seconds_per_image_products": times["products"] * K / chunk / EVAL_BATCH,
            "seconds_per_image_decoder_and_score": times["decoder_and_score"] * K / chunk / EVAL_BATCH}


def markdown(data: dict) -> str:
    s = data["is"]
    peak = f"{s['peak_resident_mb']:.0f}" if s.get("peak_resident_mb") else "–"
    lines = ["| IS | data | K | seconds | images/s | GFLOP/s | FLOP limit (s) | × limit | peak memory (MB) |",
             "|---|---|---|---|---|---|---|---|---|",
             f"| `{s['command']}` | {s['num_data']} | {s['num_samples']} | {s['seconds']:.1f} | "
             f"{s['images_per_second']:.1f} | {s['achieved_gflops']:.0f} | {s['flop_limit_seconds']:.1f} | "
             f"{s['over_flop_limit']:.2f}× | {peak} |", "",
             "| AIS | data | T | C | L | pilot chains | seconds | images/s | s / image / temperature | "
             "gradient evaluations per temperature | a transition needs | × its gradients |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for a in data["ais"]:
        lines.append(f"| {a['label']} | {a['num_data']} | {a['num_temperatures']} | {a['num_chains']} | "
                     f"{a['leapfrog_steps']} | {a['pilot_chains']} | {a['seconds']:.1f} | {a['images_per_second']:.2f} | "
                     f"{a['seconds_per_image_per_temperature'] * 1e3:.3f} ms | {a['gradients_per_temperature']:.2f} | "
                     f"{a['gradients_a_transition_needs']:.2f} | {a['over_its_gradients']:.2f}× |")
    f = data.get("floor")
    if f:
        lines += ["", f"| one chunk of IS draws ({f['chunk_draws']} x {f['images']} images) | ms | × FLOP limit |",
                  "|---|---|---|",
                  f"| the decoder's three products alone, outputs allocated | {f['products_seconds'] * 1e3:.1f} | "
                  f"{f['products_over_limit']:.2f}× |"]
        if "score_seconds" in f:                        # files from before the score was timed alone lack it
            lines += [f"| the Bernoulli score alone, on those logits (an exp and a log1p each) | "
                      f"{f['score_seconds'] * 1e3:.1f} | {f['score_over_limit']:.2f}× |",
                      f"| the two added | "
                      f"{(f['products_seconds'] + f['score_seconds']) * 1e3:.1f} | "
                      f"{f['products_and_score_over_limit']:.2f}× |"]
        lines += [f"| the decoder as the model calls it, then the Bernoulli score | "
                  f"{f['decoder_and_score_seconds'] * 1e3:.1f} | {f['decoder_and_score_over_limit']:.2f}× |"]
    return "\n".join(lines) + "\n"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", required=True, help="folder holding binarized_mnist.npz")
    p.add_argument("--limit", type=int, default=10_000, help="test images for IS (default all 10,000)")
    p.add_argument("--is-samples", type=int, default=5000, help="K of IS (default 5000)")
    p.add_argument("--ais-limit", type=int, default=500, help="test images for AIS (default 500)")
    p.add_argument("--temperatures", type=int, default=100, help="AIS temperatures (default 100)")
    p.add_argument("--chains", type=int, default=16, help="AIS chains per image (default 16)")
    p.add_argument("--ais-batch", type=int, default=100, help="images per AIS tensor program (default 100)")
    p.add_argument("--name", default="eval_throughput", help="result file name in benchmarks/results")
    args = p.parse_args(argv)
    if min(args.limit, args.is_samples, args.ais_limit, args.temperatures, args.chains, args.ais_batch) < 1:
        fail("--limit, --is-samples, --ais-limit, --temperatures, --chains and --ais-batch must be at least 1")
    if not (CHECKPOINT / "checkpoint.pt").is_file():
        fail(f"no checkpoint at {CHECKPOINT}")
    run = load(args.data_dir)
    rate = matmul_gflops(torch.device("cpu"))
    data = {"threads": torch.get_num_threads(), "matmul_gflops": rate, "checkpoint": str(CHECKPOINT.relative_to(
        RESULTS.parent.parent)), "is": measure_is(args, run, rate), "ais": []}
    data["floor"] = measure_floor(run, rate, args.is_samples)
    print(data["floor"], flush=True)
    for label, leapfrog, pilot in (("headline settings", 5, 4), ("one leapfrog step, no pilot", 1, 0)):
        data["ais"].append({"label": label, **measure_ais(args, run, leapfrog, pilot)})
        print(data["ais"][-1], flush=True)
    path = write_result(args.name, data)
    path.with_suffix(".md").write_text(markdown(data))
    print(markdown(data))


if __name__ == "__main__":
    run_script(main)
