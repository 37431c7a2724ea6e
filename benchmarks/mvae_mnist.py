"""The multimodal VAE (Wu & Goodman 2018) with the product-of-experts guide: conditional log-likelihoods
of one view given the other, through the zoo's own train/evaluate path.

Two runs:

- ``mnist_halves``: static binarized MNIST as two views, the top and the bottom 14 rows of pixels
  (392 Bernoulli pixels each). Reported on all 10,000 test images: the joint NLL -log p(x_top, x_bottom)
  (IS with the full product of experts q(z | x_top, x_bottom)), and log p(bottom | top) and
  log p(top | bottom) (IS with the single-view posterior as proposal).
- ``digits_labels``: the 8x8 digits (64 Bernoulli pixels) and their label (categorical), 270 test
  digits: log p(label | image), the accuracy of argmax p(label | image), log p(image | label).

Protocol: ``mvae`` (z = --latent-dim, each view's decoder a tanh MLP --hidden) with the ``poe`` guide (one
Gaussian expert per view, mirroring the decoders, and the prior expert), the ``elbo`` objective on Wu &
Goodman's sub-sampled objective ELBO(x1, x2) + ELBO(x1) + ELBO(x2), KL warm-up over the first
--kl-warmup epochs (the product of experts collapses without it; see guides/poe.py), Adam lr --lr,
batch 100, seed 0, CPU. The conditional log-likelihood log p(x_u | x_v) is log p^(x_u, x_v) - log p^(x_v),
the joint IS estimate (K samples from q(z | x_u, x_v)) minus the single view's (K samples from
q(z | x_v)); "SNIS" is the self-normalized estimate with q(z | x_v) alone (zoo.evaluation.harness); K is
--eval-samples (MNIST) and --digits-eval-samples (digits).

    OMP_NUM_THREADS=1 python benchmarks/mvae_mnist.py --data-dir /work/shared/data --runs mnist_halves \
        --mnist-epochs 15 --eval-samples 150 --name mvae_mnist_halves
    OMP_NUM_THREADS=1 python benchmarks/mvae_mnist.py --runs digits_labels --digits-epochs 100 --lr 3e-3 \
        --digits-eval-samples 5000 --name mvae_digits_labels

The MNIST run continued to 30 epochs (same warm-up, same data order) and scored with K = 500, from a
copy of the 15-epoch run folder::

    cp -r runs/mvae_mnist/mnist_halves runs/mvae_mnist30/
    OMP_NUM_THREADS=1 python benchmarks/mvae_mnist.py --data-dir /work/shared/data --runs mnist_halves \
        --mnist-epochs 30 --kl-warmup 7 --resume --out runs/mvae_mnist30 --eval-samples 500 \
        --name mvae_mnist_halves_30ep

(K = 150 and 500 on MNIST are what two shared CPU cores allowed in the time; --eval-samples raises it.)
Runs trained before the harness reported both estimators were re-scored with the same command plus
``--evaluate-only``.
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import fail, grid_parser, run_grid, run_script  # noqa: E402

import torch  # noqa: E402

from zoo.experiments.config import RunConfig  # noqa: E402

RUNS = ("mnist_halves", "digits_labels")


def main(argv=None):
    p = grid_parser(__doc__, "runs/mvae_mnist", eval_samples=500, eval_limit=None)
    p.add_argument("--mnist-epochs", type=int, default=10)
    p.add_argument("--digits-epochs", type=int, default=100)
    p.add_argument("--kl-warmup", type=int, default=None, metavar="EPOCHS",
                   help="KL warm-up epochs (default: half of each run's epochs)")
    p.add_argument("--digits-eval-samples", type=int, default=5000)
    p.add_argument("--latent-dim", type=int, default=20)
    p.add_argument("--hidden", type=int, nargs="+", default=[200, 200])
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--runs", default=",".join(RUNS), help="comma-separated, of " + ", ".join(RUNS))
    p.add_argument("--name", default="mvae_mnist", help="result file name in benchmarks/results")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    settings = {"mnist_halves": (args.mnist_epochs, args.eval_samples, args.eval_limit),
                "digits_labels": (args.digits_epochs, args.digits_eval_samples, None)}
    runs = []
    for name in args.runs.split(","):
        if name not in settings:
            fail(f"unknown run {name!r}; use {', '.join(RUNS)}")
        epochs, samples, limit = settings[name]
        warmup = args.kl_warmup if args.kl_warmup is not None else max(1, epochs // 2)
        config = RunConfig.make(model="mvae", guide="poe", objective="elbo", dataset=name, data_dir=args.data_dir,
                                epochs=epochs, kl_warmup=min(warmup, epochs), batch_size=100, lr=args.lr, seed=0,
                                device=args.device, eval_samples=samples, eval_limit=limit, iwae_k=50,
                                latent_dim=args.latent_dim, hidden=args.hidden)
        runs.append((name, config, None))
    run_grid(args.name, "Multimodal VAE, product-of-experts guide: joint and conditional log-likelihoods", runs,
             Path(args.out), __doc__.split("Protocol:")[1].split("\n\n")[0].strip().replace("\n", " "),
             evaluate_only=args.evaluate_only, resume=args.resume)


if __name__ == "__main__":
    run_script(main)
