"""Epoch time of the zoo's SVI loop against a hand-written PyTorch loop computing the same ELBO.

Both train the same 784-200-200-50 VAE (amortized Gaussian encoder, Bernoulli decoder)
with the single-particle ELBO

    loss = -(N/B) * sum_b [ log p(x_b | z_b) + log p(z_b) - log q(z_b | x_b) ],   z_b ~ q(z | x_b)

and Adam, on the same minibatch order, in the same process. Epochs alternate
(zoo, zoo --jit, hand, hand with the zoo's optimizer), the order rotated every round, so drifts
in machine load hit all; the ratio is median(zoo) / median(hand).

With ``--model hvae`` both train the two-layer hierarchical VAE (``zoo.models.hvae``, Burda et al.'s sizes:
z2 (50) -> 100 -> 100 -> z1 (100) -> 200 -> 200 -> x) with the structured guide q(z1 | x) q(z2 | z1, x); the hand-written loss is then
log p(x | z1) + log p(z1 | z2) + log p(z2) - log q(z1 | x) - log q(z2 | z1, x) on the same networks.

With ``--objective iwae --particles K`` both compute the per-datum IWAE bound instead (the
zoo's ``IWAEBound``; by hand, ``logsumexp`` over K reparameterized samples per datum), the
quality benchmark's objective: K times the network work per step against the same Python
overhead per step.

Three zoo loops: ``zoo`` is ``fit`` with the eager Pyro step, ``zoo_jit`` the same with ``--jit``
(:class:`zoo.objectives.jit.JitObjective`; results before 2026-11-25's change traced the step with
``torch.jit.trace`` and replayed it; since then ``--jit`` is ``--compile``'s capture, falling back where it cannot),
and ``zoo_compiled`` with ``--compile`` (:class:`zoo.objectives.compiled.CompiledObjective`: the loss and its
backward pass captured as one graph and compiled by ``torch.compile``, CUDA graphs on a GPU; left out on a
CPU without a C++ compiler).
With ``--numpyro`` three more loops train the same VAE in NumPyro (``benchmarks/numpyro_vae.py``: ``Trace_ELBO``
with ``svi.update`` compiled by ``jax.jit``, the peer a speed-conscious user picks), as its users run it:
``numpyro`` reads the loss every step, ``numpyro_async`` does not (JAX dispatches ahead; one block per epoch), and
``numpyro_scan`` is ``svi.run(progress_bar=False)``'s compiled ``lax.scan``; interleaved with the others in the
same rounds. Beside each loop's epoch time the result gives its achieved GFLOP/s (the VAE's
multiply-adds counted from its linear layers: 2 per multiply-add forward, twice that backward) and the machine's
measured float32 matmul rate (``torch.mm`` of 1024 x 1024 matrices, at the benchmark's threads).
Two hand-written loops: ``hand`` uses ``torch.optim.Adam(params, lr)``, what a PyTorch user
writes (the ratio the issue targets), and ``hand_fused`` uses the zoo's optimizer
(``make_optimizer``: fused Adam). The zoo gains on the first only through its faster optimizer
default; the second ratio isolates what Pyro's tracing and the zoo's loop cost.

    python benchmarks/speed.py --dataset binarized_mnist --data-dir ../shared/data --rounds 3
    python benchmarks/speed.py --data-dir ../shared/data --rounds 60 --segment 5000
    python benchmarks/speed.py --data-dir ../shared/data --rounds 5 --objective iwae --particles 50 --name speed_cpu_iwae50
    python benchmarks/speed.py --data-dir ../shared/data --model hvae --rounds 20 --segment 5000 --name speed_cpu_hvae
    python benchmarks/speed.py --data-dir ../shared/data --device cuda --rounds 20 --name speed_cuda
    python benchmarks/speed.py --data-dir ../shared/data --rounds 20 --segment 5000 --numpyro --name speed_cpu_numpyro
"""
from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import pyro  # noqa: E402
from common import run_script, write_result  # noqa: E402

from zoo.core.process import map_torch_constants  # noqa: E402
from zoo.data import load_dataset  # noqa: E402
from zoo.registry import build_guide, build_model, build_objective  # noqa: E402
from zoo.experiments.config import resolve_device  # noqa: E402
from zoo.training.loop import epoch_order, fit
from zoo.training.optimizer import make_optimizer  # noqa: E402
from zoo.training.threads import step_flop  # noqa: E402
from zoo.objectives.compiled import check_compilable  # noqa: E402
from zoo.core.errors import ZooError  # noqa: E402


def hand_loss(xb, guide, model, N, particles=None):
    """The minibatch's negative ELBO written directly in PyTorch, using the same networks; with
    ``particles`` K, the negative per-datum IWAE bound (Burda et al. 2016) instead."""
    _, raw = guide.encode(xb)
    loc, s = raw["z"].chunk(2, dim=-1)
    scale = F.softplus(s) + 1e-5                 # the amortized guide's parameterization
    shape = loc.shape if particles is None else (particles,) + loc.shape
    z = loc + scale * torch.randn(shape, dtype=loc.dtype, device=loc.device)
    logits = model.decoder(z)
    log_px = -F.binary_cross_entropy_with_logits(logits, xb.expand_as(logits), reduction="none").sum(-1)
    log_pz = (-0.5 * z.pow(2) - 0.5 * math.log(2 * math.pi)).sum(-1)      # log N(z; 0, I)
    log_q = torch.distributions.Normal(loc, scale).log_prob(z).sum(-1)
    log_w = log_px + log_pz - log_q
    if particles is not None:                    # [K, B] -> [B]: log (1/K) sum_k w_kb
        log_w = torch.logsumexp(log_w, dim=0) - math.log(particles)
    return -(N / xb.shape[0]) * log_w.sum()


def hand_loss_hvae(xb, guide, model, N, particles=None):
    """The same for the two-layer hvae and its structured guide: z1 ~ q(z1 | x), z2 ~ q(z2 | z1, x),
    log w = log p(x | z1) + log p(z1 | z2) + log N(z2; 0, I) - log q(z1 | x) - log q(z2 | z1, x)."""
    h = guide.trunk(xb)
    loc1, s1 = guide.heads["z1"](h).chunk(2, dim=-1)
    scale1 = F.softplus(s1) + 1e-5
    shape = loc1.shape if particles is None else (particles,) + loc1.shape
    z1 = loc1 + scale1 * torch.randn(shape, dtype=loc1.dtype, device=loc1.device)
    loc2, s2 = guide.heads["z2"](torch.cat([h.expand(z1.shape[:-1] + h.shape[-1:]), z1], -1)).chunk(2, dim=-1)
    scale2 = F.softplus(s2) + 1e-5
    z2 = loc2 + scale2 * torch.randn(loc2.shape, dtype=loc2.dtype, device=loc2.device)
    loc_p1, s_p1 = model.transitions[0](z2).chunk(2, dim=-1)
    logits = model.decoder(z1)
    log_px = -F.binary_cross_entropy_with_logits(logits, xb.expand_as(logits), reduction="none").sum(-1)
    log_pz = ((-0.5 * z2.pow(2) - 0.5 * math.log(2 * math.pi)).sum(-1)
              + torch.distributions.Normal(loc_p1, F.softplus(s_p1) + 1e-5).log_prob(z1).sum(-1))
    log_q = (torch.distributions.Normal(loc1, scale1).log_prob(z1).sum(-1)
             + torch.distributions.Normal(loc2, scale2).log_prob(z2).sum(-1))
    log_w = log_px + log_pz - log_q
    if particles is not None:
        log_w = torch.logsumexp(log_w, dim=0) - math.log(particles)
    return -(N / xb.shape[0]) * log_w.sum()


def hand_epoch(x, guide, model, optimizer, order, batch_size, particles=None, loss_fn=hand_loss):
    """One epoch of the ELBO (or IWAE bound) written directly in PyTorch, using the same networks."""
    N = x.shape[0]
    for start in range(0, N, batch_size):
        xb = x[order[start:start + batch_size]]
        loss = loss_fn(xb, guide, model, N, particles)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        loss.item()                      # the zoo loop reads the loss every step too


def matmul_gflops(device, n: int = 1024, repeats: int = 20) -> float:
    """The machine's float32 matmul rate at the current threads: the best of ``repeats`` n x n products."""
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    best = math.inf
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        a @ b
        sync(device)
        best = min(best, time.perf_counter() - t0)
    return 2 * n ** 3 / best / 1e9


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def main(argv=None):
    # every loop runs with torch's constants mapped in, as ``pyro-zoo`` and ``fit`` run (zoo.core.process): a plain
    # PyTorch process gets that state only by accident, and the first loop to run would otherwise set it for the rest
    map_torch_constants()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="binarized_mnist")
    p.add_argument("--model", choices=("vae", "hvae"), default="vae",
                   help="vae: 784-200-200-50 with the amortized guide (default); hvae: the two-layer hvae with the "
                        "structured guide")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--segment", type=int, default=None,
                   help="time each loop on a segment of this many training data (the segments cycling through the "
                        "training set) instead of a whole epoch, and scale to an epoch: more, shorter rounds, so "
                        "the loops alternate more often and drifts in machine load cancel better (default: whole epochs)")
    p.add_argument("--objective", choices=("elbo", "iwae"), default="elbo",
                   help="elbo: Trace_ELBO with one particle (default); iwae: the per-datum IWAE bound")
    p.add_argument("--particles", type=int, default=None, help="K for --objective iwae (default 50)")
    p.add_argument("--numpyro", action="store_true",
                   help="add NumPyro's Trace_ELBO with a jax.jit-compiled svi.update as a loop (the vae and elbo, on "
                        "--device's CPU or GPU; needs pip install '.[bench]')")
    p.add_argument("--name", default=None, help="result file name (default speed_<device>)")
    args = p.parse_args(argv)
    if args.numpyro and (args.model != "vae" or args.objective != "elbo"):
        p.error("--numpyro runs the vae with the elbo: drop --model and --objective")
    if args.particles is not None and args.objective == "elbo":
        p.error("--particles goes with --objective iwae (the ELBO here has one particle)")
    particles = None if args.objective == "elbo" else (args.particles or 50)

    device = resolve_device(args.device)
    data = load_dataset(args.dataset, args.data_dir)
    x = data.train.to(device)
    pyro.set_rng_seed(0)
    model = build_model(args.model, data.x_dim).to(device)
    guide = build_guide("amortized", model, **({"structured": True} if args.model == "hvae" else {})).to(device)
    objectives = {"zoo": build_objective(args.objective, particles or 1),
                  "zoo_jit": build_objective(args.objective, particles or 1, jit=True)}
    try:
        check_compilable(device)
        objectives["zoo_compiled"] = build_objective(args.objective, particles or 1, compile=True)
    except ZooError as e:
        print(f"no zoo_compiled loop: {e}", flush=True)
    zoo_opts = {name: make_optimizer(model, guide, 1e-3) for name in objectives}
    hand_opts = {"hand": torch.optim.Adam(list(model.parameters()) + list(guide.parameters()), lr=1e-3),
                 "hand_fused": make_optimizer(model, guide, 1e-3)}

    num_data = x.shape[0]
    segment = min(args.segment or num_data, num_data)
    segments = [x[i:i + segment] for i in range(0, num_data - segment + 1, segment)]
    times = {**{name: [] for name in objectives}, "hand": [], "hand_fused": []}
    if args.numpyro:
        try:
            from numpyro_vae import LOOPS as NUMPYRO_LOOPS, NumPyroVAE
        except ImportError as e:
            raise SystemExit(f"speed.py: error: --numpyro needs JAX and NumPyro ({e}); run: pip install '.[bench]'") from None
        import jax
        numpyro_vae = NumPyroVAE(segment, args.batch_size)
        # JAX places arrays on its default device: the GPU where jax's CUDA plugin finds one, else the CPU
        jax_device = jax.devices()[0]
        if (jax_device.platform == "gpu") != (device.type == "cuda"):
            raise SystemExit(f"speed.py: error: JAX runs on {jax_device} while the torch loops run on {device}; "
                             "install JAX for the same device (jax[cuda] for a GPU)")
        np_segments = [jax.device_put(s.cpu().numpy(), jax_device) for s in segments]   # on JAX's device, untimed
        times.update({name: [] for name in NUMPYRO_LOOPS})
    loops = list(times)
    for r in range(args.rounds + 1):          # round 0 is warm-up (the --jit trace, the compilation), not recorded
        xs = segments[r % len(segments)]
        for which in loops[r % len(loops):] + loops[:r % len(loops)]:     # rotated: no loop always runs first
            sync(device)
            t0 = time.perf_counter()
            if which in objectives:
                # the epoch loop's own clock (fit's one-off data validation is not part of an epoch)
                history = fit(model, guide, objectives[which], xs, epochs=1, batch_size=args.batch_size, lr=1e-3,
                              seed=r, progress=False, optimizer=zoo_opts[which])
                sync(device)
                seconds = history[-1]["seconds"]
            elif which.startswith("numpyro"):
                numpyro_vae.run(which, np_segments[r % len(segments)], epoch_order(xs.shape[0], r, 0).numpy())
                seconds = time.perf_counter() - t0
            else:
                hand_epoch(xs, guide, model, hand_opts[which], epoch_order(xs.shape[0], r, 0).to(device),
                           args.batch_size, particles, hand_loss_hvae if args.model == "hvae" else hand_loss)
                sync(device)
                seconds = time.perf_counter() - t0
            seconds *= num_data / xs.shape[0]           # per epoch of all the training data
            if r > 0:
                times[which].append(seconds)
            print(f"round {r} {which}: {seconds:.2f} s", flush=True)
    zoo_s, jit_s, hand_s, fused_s = (statistics.median(times[k]) for k in ("zoo", "zoo_jit", "hand", "hand_fused"))
    result = {"dataset": args.dataset, "num_data": num_data, "batch_size": args.batch_size,
              "timed_unit": "epoch" if segment == num_data else f"{segment} data ({segment // args.batch_size} "
                                                                  f"steps), scaled to an epoch of {num_data}",
              "device": str(device), "threads": torch.get_num_threads(),
              "architecture": ("784-200-200-50 tanh VAE, Adam" if args.model == "vae" else
                               "two-layer hvae 50-100-100-100-200-200-784, structured amortized guide q(z1|x) q(z2|z1,x), Adam"),
              "model": args.model,
              "objective": "Trace_ELBO, K=1" if particles is None else f"per-datum IWAE bound, K={particles}",
              "optimizers": {**{name: "make_optimizer (fused Adam)" for name in objectives},
                             "hand": "torch.optim.Adam defaults", "hand_fused": "make_optimizer (fused Adam)"},
              "loops": {"zoo": "zoo.fit, eager Pyro step", "zoo_jit": "zoo.fit with --jit (zoo.objectives.jit.JitObjective, the torch.compile capture)",
                        "zoo_compiled": "zoo.fit with --compile (zoo.objectives.compiled.CompiledObjective)",
                        "hand": "hand-written PyTorch", "hand_fused": "hand-written PyTorch, the zoo's optimizer"},
              "epoch_seconds": times, "median_zoo_s": zoo_s, "median_zoo_jit_s": jit_s, "median_hand_s": hand_s,
              "median_hand_fused_s": fused_s, "ratio_zoo_over_hand": zoo_s / hand_s,
              "ratio_zoo_over_hand_same_optimizer": zoo_s / fused_s,
              "ratio_zoo_jit_over_hand": jit_s / hand_s, "ratio_zoo_jit_over_hand_same_optimizer": jit_s / fused_s}
    # paired per round (the loops of a round run back to back): robust to slow drifts in machine load
    for name, (a, b) in {"zoo_over_hand": ("zoo", "hand"), "same_optimizer": ("zoo", "hand_fused"),
                         "zoo_jit_over_hand": ("zoo_jit", "hand"),
                         "zoo_jit_same_optimizer": ("zoo_jit", "hand_fused")}.items():
        result[f"median_round_ratio_{name}"] = statistics.median(u / v for u, v in zip(times[a], times[b]))
    if "zoo_compiled" in times:
        comp_s = statistics.median(times["zoo_compiled"])
        result.update({"median_zoo_compiled_s": comp_s, "ratio_zoo_compiled_over_hand": comp_s / hand_s,
                       "ratio_zoo_compiled_over_hand_same_optimizer": comp_s / fused_s})
        for name, b in (("zoo_compiled_over_hand", "hand"), ("zoo_compiled_same_optimizer", "hand_fused")):
            result[f"median_round_ratio_{name}"] = statistics.median(
                u / v for u, v in zip(times["zoo_compiled"], times[b]))
    if args.model == "vae" and particles is None:
        flops = step_flop(model, guide, 1) * num_data      # 6 FLOPs per multiply-add
        result.update({"flops_per_epoch": flops, "matmul_gflops": matmul_gflops(device),
                       "achieved_gflops": {k: flops / statistics.median(v) / 1e9 for k, v in times.items()}})
    if "numpyro" in times:
        import jax
        import numpyro
        np_s = statistics.median(times["numpyro"])
        result["loops"].update({name: f"{text} (benchmarks/numpyro_vae.py)" for name, text in NUMPYRO_LOOPS.items()})
        result["optimizers"].update({name: "numpyro.optim.Adam" for name in NUMPYRO_LOOPS})
        result.update({"numpyro": numpyro.__version__, "jax": jax.__version__, "jax_device": str(jax.devices()[0]),
                       "median_numpyro_s": np_s, "ratio_numpyro_over_hand": np_s / hand_s})
        fastest = min(NUMPYRO_LOOPS, key=lambda name: statistics.median(times[name]))
        result["fastest_numpyro_loop"] = fastest
        for peer in NUMPYRO_LOOPS:
            result[f"median_{peer}_s"] = statistics.median(times[peer])
            for name in objectives:
                result[f"median_round_ratio_{name}_over_{peer}"] = statistics.median(
                    u / v for u, v in zip(times[name], times[peer]))
    path = write_result(args.name or f"speed_{device.type}", result)
    print(f"hand-written {hand_s:.2f} s/epoch; zoo {zoo_s:.2f} s/epoch (ratio {zoo_s / hand_s:.3f}); zoo --jit "
          f"{jit_s:.2f} s/epoch (ratio {jit_s / hand_s:.3f}); hand-written with the zoo's optimizer {fused_s:.2f} "
          f"s/epoch (zoo {zoo_s / fused_s:.3f}, zoo --jit {jit_s / fused_s:.3f})"
          + (f"; zoo --compile {result['median_zoo_compiled_s']:.2f} s/epoch (ratio "
             f"{result['ratio_zoo_compiled_over_hand']:.3f}, same optimizer "
             f"{result['ratio_zoo_compiled_over_hand_same_optimizer']:.3f})" if "zoo_compiled" in times else "")
          + (f"; numpyro {result['median_numpyro_s']:.2f} s/epoch (ratio {result['ratio_numpyro_over_hand']:.3f})"
             if "numpyro" in times else "")
          + f"; wrote {path}")


if __name__ == "__main__":
    run_script(main)
