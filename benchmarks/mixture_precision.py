"""How far off was the VampPrior's log-density in float32, and what did it do to the IS log p(x)?

Until commit d1131c0 the mixture log-density (:class:`zoo.models.priors.DiagonalNormalMixture`) was formed in
the value's dtype from the expansion sum_d (z_d - mu_kd)^2 / s_kd^2 = z^2 . s_k^-2 - 2 z . mu_k s_k^-2 +
mu_k^2 . s_k^-2, which cancels in float32 near narrow components. It is now formed in float64. This script
measures the difference on a trained VampPrior VAE, so that the VampPrior NLLs scored before the change can
be read with the right error bar.

It trains Tomczak & Welling's one-layer VAE (z = 40, gated 300-300, 500 pseudo-inputs; the
``vae_vampprior_gated`` run of ``expressive_mnist.py``) for --epochs epochs (Adam --lr, batch 100, KL warm-up
over --kl-warmup epochs, seed 0) on static binarized MNIST, then draws --samples z ~ q(z | x) for each of
--eval-limit test images (a fixed random subset, seed 0) and computes log p(z) three ways:

- ``float32 expansion``: the former formula, in float32 (written out below);
- ``reference``: the float64 log-sum-exp over components of sum_d log N(z_d; mu_kd, s_kd), one component at
  a time (no expansion);
- ``current``: ``DiagonalNormalMixture.log_prob`` as it is now, on float32 inputs.

Reported: the error of each against the reference (mean, mean |.|, max |.| over all samples), and its effect
on the importance-sampled log p(x) per image, log (1/K) sum_k w_k with log w recomputed with the former
prior term, against the current one (mean and max |.| over images). The component scales s_kd are summarized
too: the cancellation grows as (mu/s)^2.

    OMP_NUM_THREADS=2 python benchmarks/mixture_precision.py --data-dir ../shared/data --epochs 10
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from common import fail, run_script, write_result  # noqa: E402
from expressive_mnist import TOMCZAK  # noqa: E402


def float32_expansion(prior, z: torch.Tensor) -> torch.Tensor:
    """The mixture log-density as it was formed before d1131c0: the expansion, in z's dtype."""
    precision = prior.scale.pow(-2)
    quadratic = (z.pow(2) @ precision.T - 2 * z @ (prior.loc * precision).T + (prior.loc.pow(2) * precision).sum(-1))
    log_norm = -prior.scale.log().sum(-1) - 0.5 * prior.loc.shape[-1] * math.log(2 * math.pi)
    return torch.logsumexp(F.log_softmax(prior.logits, -1) + log_norm - 0.5 * quadratic, dim=-1)


def reference(prior, z: torch.Tensor, chunk: int = 2048) -> torch.Tensor:
    """float64, every component's density summed directly (no expansion), ``chunk`` values at a time."""
    loc, scale, log_pi = prior.loc.double(), prior.scale.double(), F.log_softmax(prior.logits.double(), -1)
    flat = z.double().reshape(-1, z.shape[-1])
    out = []
    for part in flat.split(chunk):
        per_component = torch.distributions.Normal(loc, scale).log_prob(part[:, None, :]).sum(-1)   # [n, K]
        out.append(torch.logsumexp(log_pi + per_component, -1))
    return torch.cat(out).reshape(z.shape[:-1])


def _summary(error: torch.Tensor) -> dict:
    return {"mean": error.mean().item(), "mean_abs": error.abs().mean().item(), "max_abs": error.abs().max().item()}


def main(argv=None):
    import zoo
    from zoo.core.weights import per_datum_log_weights
    from zoo.data import load_dataset
    from zoo.evaluation.harness import evaluation_mode
    from zoo.experiments.trained import fixed_subset_rows
    from zoo.registry import build_guide, build_model

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--kl-warmup", type=int, default=5)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--eval-limit", type=int, default=500)
    p.add_argument("--samples", type=int, default=200)
    p.add_argument("--name", default="mixture_precision")
    args = p.parse_args(argv)
    if args.epochs < 1 or args.eval_limit < 1 or args.samples < 1:
        fail("--epochs, --eval-limit and --samples must be at least 1")
    data = load_dataset("binarized_mnist", args.data_dir)
    torch.manual_seed(0)
    model = build_model("vae", data.x_dim, prior="vampprior", **TOMCZAK)
    guide = build_guide("amortized", model)
    t0 = time.perf_counter()
    zoo.fit(model, guide, zoo.build_objective("elbo"), data.train, epochs=args.epochs, batch_size=100, lr=args.lr,
            kl_warmup=args.kl_warmup or None, progress=False)
    train_seconds = time.perf_counter() - t0

    x = data.test[fixed_subset_rows(data.test.shape[0], args.eval_limit)]
    errors = {"float32_expansion": [], "current": []}
    is_shift = []
    torch.manual_seed(1)
    with torch.no_grad(), evaluation_mode(model, guide):
        prior = model.prior()
        for rows in torch.arange(x.shape[0]).split(50):
            weights = per_datum_log_weights(model, guide, x[rows], idx=rows, N=x.shape[0], num_particles=args.samples)
            z = weights.latents["z"]                                                  # [K, b, 40]
            exact = reference(prior, z)
            former, current = float32_expansion(prior, z.float()), prior.log_prob(z.float())
            errors["float32_expansion"].append((former.double() - exact).flatten())
            errors["current"].append((current.double() - exact).flatten())
            log_w = weights.log_w.double()
            log_w_former = log_w - current.double() + former.double()
            is_shift.append(torch.logsumexp(log_w_former, 0) - torch.logsumexp(log_w, 0))
    scales = prior.scale.detach().double().flatten()
    shift = torch.cat(is_shift)
    result = {
        "epochs": args.epochs, "kl_warmup": args.kl_warmup, "lr": args.lr, "train_seconds": train_seconds,
        "eval_limit": x.shape[0], "samples": args.samples,
        "log_prior_error": {k: _summary(torch.cat(v)) for k, v in errors.items()},
        "is_log_likelihood_shift": {"mean": shift.mean().item(), "max_abs": shift.abs().max().item()},
        "component_scales": {"min": scales.min().item(), "median": scales.median().item(),
                             "fraction_below_0.1": (scales < 0.1).double().mean().item()},
    }
    write_result(args.name, result)
    e, s = result["log_prior_error"], result["is_log_likelihood_shift"]
    lines = [f"# {args.name}", "",
             f"VampPrior VAE (z = 40, gated 300-300, 500 pseudo-inputs) after {args.epochs} epochs; "
             f"{x.shape[0]} test images, {args.samples} samples of q(z | x) each.", "",
             "| log p(z) | mean error | mean abs error | max abs error |", "|---|---|---|---|"]
    lines += [f"| {k.replace('_', ' ')} | {v['mean']:.2e} | {v['mean_abs']:.2e} | {v['max_abs']:.2e} |"
              for k, v in e.items()]
    lines += ["", f"IS log p(x) with the former prior term minus with the current one: mean {s['mean']:.2e}, "
              f"max abs {s['max_abs']:.2e} nats per image.", "",
              f"Component scales: min {result['component_scales']['min']:.3g}, median "
              f"{result['component_scales']['median']:.3g}, "
              f"{result['component_scales']['fraction_below_0.1']:.1%} below 0.1."]
    (Path(__file__).resolve().parent / "results" / f"{args.name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    run_script(main)
