"""Latents on the sphere against Gaussian latents at the same budget: the S-VAE comparison (issue 52, item 1).

Davidson et al. (2018) report the hyperspherical VAE (vMF posterior, uniform prior on S^(d-1)) ahead of the
Gaussian one at low latent dimension d and behind it at high d on MNIST; De Cao & Aziz (2020) report the Power
Spherical posterior as good as the vMF there, without its rejection sampler. This script trains the zoo's VAE with
each latent family (``--latent gaussian | vmf | power-spherical``) at d = 2, 5, 10, 20 and the same budget, and
scores each run through the same harness: test -ELBO and the importance-sampled NLL (K = --eval-samples; for the
sphere the defensive proposal mixes in the uniform on the sphere), so the crossover, if any, shows in one table.

Protocol: the VAE of Burda et al. (784-200-200-d, tanh; the encoder mirrors it), Bernoulli likelihood, the
amortized guide, the ELBO (Trace_ELBO, one sample), Adam lr 1e-3, batch 100, seed 0, --epochs epochs, scored on
--eval-limit test images. d is the ambient dimension of the sphere: d = 2 is the circle S^1. The guide's
concentration is softplus(.) + 1, as in Davidson et al.'s code. The papers train to convergence with early
stopping (Davidson et al.: up to 1000 epochs, their own smaller MLPs, dynamically binarized MNIST); the figures
here are at the stated CPU budget, on static binarization, and are not the papers' setting.

    python benchmarks/sphere_latents.py --dataset digits --epochs 100 --eval-samples 1000
    python benchmarks/sphere_latents.py --data-dir ../shared/data --epochs 50 --eval-samples 1000 --eval-limit 1000 \\
        --name sphere_latents_mnist --out runs/sphere_latents_mnist
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import fail, grid_parser, run_grid, run_script  # noqa: E402

from zoo.experiments.config import RunConfig  # noqa: E402

FAMILIES = ("gaussian", "vmf", "power-spherical")
DIMS = (2, 5, 10, 20)


def main(argv=None):
    p = grid_parser(__doc__, "runs/sphere_latents", eval_samples=1000, eval_limit=None)
    p.add_argument("--dataset", default="binarized_mnist", choices=("binarized_mnist", "digits"))
    p.add_argument("--epochs", type=int, default=50)
    p.add_argument("--dims", default=",".join(map(str, DIMS)), help="latent dimensions d, comma-separated")
    p.add_argument("--families", default=",".join(FAMILIES), help="latent families, comma-separated")
    p.add_argument("--name", default="sphere_latents", help="result file name in benchmarks/results")
    args = p.parse_args(argv)
    families = args.families.split(",")
    unknown = set(families) - set(FAMILIES)
    if unknown:
        fail(f"unknown latent famil{'ies' if len(unknown) > 1 else 'y'} {', '.join(repr(u) for u in sorted(unknown))}; "
             f"choose from {', '.join(FAMILIES)}")
    try:
        dims = [int(d) for d in args.dims.split(",")]
    except ValueError:
        fail(f"--dims takes whole numbers separated by commas, got {args.dims!r}")
    if any(d < 2 for d in dims):
        fail("--dims: a sphere needs d >= 2 (d = 2 is the circle)")
    if args.epochs < 1:
        fail("--epochs must be at least 1")

    common = dict(model="vae", dataset=args.dataset, data_dir=args.data_dir, epochs=args.epochs, batch_size=100,
                  seed=0, device=args.device, eval_samples=args.eval_samples, eval_limit=args.eval_limit, iwae_k=50,
                  guide="amortized", objective="elbo", lr=1e-3)
    runs = [(f"{family}-d{d}", RunConfig.make(latent=family, latent_dim=d, **common), None)
            for d in dims for family in families]
    run_grid(args.name, f"Latents on the sphere against Gaussian latents ({args.dataset})", runs, Path(args.out),
             __doc__.split("Protocol:")[1].split("\n\n")[0].strip().replace("\n", " "),
             evaluate_only=args.evaluate_only, resume=args.resume)


if __name__ == "__main__":
    run_script(main)
