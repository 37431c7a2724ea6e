"""Learned priors and two stochastic layers on static binarized MNIST: test NLL through the zoo's own
train/evaluate path.

Runs (each at the same budget of --epochs epochs):

- ``vae_standard`` / ``vae_vampprior``: our 784-200-200-50 VAE (Burda et al.'s one-layer architecture, z = 50,
  not Tomczak & Welling's z = 40 with gated 300-300 layers) with the N(0, I) prior and with a VampPrior of
  --components pseudo-inputs (default 500), the amortized encoder, the ELBO;
- ``hvae_standard`` / ``hvae_vampprior``: the two-layer ``hvae`` (stochastic 100 and 50, deterministic 200 and
  100, Burda et al.) with the structured guide q(z1 | x) q(z2 | z1, x), the ELBO, standard prior and VampPrior
  on z2;
- ``hvae_iwae5``: the same hvae trained with the IWAE bound, k = 5.

References: Tomczak & Welling (2018), static binarization: VAE 88.56, VAE + VampPrior 85.57, HVAE + VampPrior
83.19 (their architecture, warm-up 100 epochs, up to 2000 epochs with early stopping). Burda et al. (2016),
two stochastic layers, on *dynamic* binarization (so not directly comparable with static figures): VAE 86.76,
IWAE k=5 85.54.

Protocol: Adam (lr --lr, default 1e-3), batch 100, seed 0, --epochs epochs for every run (no early stopping,
no warm-up unless --kl-warmup), one torch thread per process. Test NLL = -log (1/K) sum_k w_k with K =
--eval-samples importance samples from the trained guide, on all 10,000 test images (or --eval-limit n, a fixed
random subset). The harness also reports the KL and active units of each latent site (z1, z2).

    OMP_NUM_THREADS=1 python benchmarks/expressive_mnist.py --data-dir ../shared/data --epochs 10 \
        --runs vae_standard,vae_vampprior --name expressive_mnist_vae
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import grid_parser, run_grid, run_script  # noqa: E402

from zoo.experiments.config import RunConfig  # noqa: E402

#: label -> (model options, guide options, objective, particles, reference NLL or None)
RUNS = {
    "vae_standard": ("vae", {}, {}, "elbo", 1, 88.56),
    "vae_vampprior": ("vae", {"prior": "vampprior"}, {}, "elbo", 1, 85.57),
    "hvae_standard": ("hvae", {}, {"structured": True}, "elbo", 1, 86.76),
    "hvae_vampprior": ("hvae", {"prior": "vampprior"}, {"structured": True}, "elbo", 1, 83.19),
    "hvae_iwae5": ("hvae", {}, {"structured": True}, "iwae", 5, 85.54),
}


def main(argv=None):
    import torch
    p = grid_parser(__doc__, "runs/expressive_mnist", eval_samples=5000, eval_limit=None)
    p.add_argument("--epochs", type=int, default=10, help="training epochs of every run (default 10)")
    p.add_argument("--runs", default=",".join(RUNS), help=f"comma-separated, from {', '.join(RUNS)} (default all)")
    p.add_argument("--components", type=int, default=500, help="VampPrior pseudo-inputs (default 500)")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--kl-warmup", type=int, default=None, metavar="EPOCHS")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--name", default="expressive_mnist", help="result file name in benchmarks/results")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    chosen = [r for r in args.runs.split(",") if r]
    unknown = [r for r in chosen if r not in RUNS]
    if unknown:
        p.error(f"unknown run {unknown[0]!r}; choose from {', '.join(RUNS)}")

    runs = []
    for label in chosen:
        model, model_options, guide_options, objective, particles, reference = RUNS[label]
        if model_options.get("prior") == "vampprior":
            model_options = {**model_options, "prior_components": args.components}
        config = RunConfig.make(model=model, guide="amortized", objective=objective, particles=particles,
                                dataset="binarized_mnist", data_dir=args.data_dir, epochs=args.epochs, batch_size=100,
                                lr=args.lr, seed=0, device=args.device, eval_samples=args.eval_samples,
                                eval_limit=args.eval_limit, iwae_k=50, kl_warmup=args.kl_warmup,
                                **model_options, **guide_options)
        runs.append((label, config, reference))
    run_grid(args.name, "Learned priors and hierarchical VAEs on static binarized MNIST: test NLL", runs,
             Path(args.out), __doc__.split("Protocol:")[1].split("\n\n")[0].strip().replace("\n", " "),
             evaluate_only=args.evaluate_only, resume=args.resume,
             reference_label="reference NLL (see notes)")


if __name__ == "__main__":
    run_script(main)
