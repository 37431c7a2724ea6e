"""Test log-likelihood of the 784-200-200-50 VAE on static binarized MNIST, trained with
``elbo`` (K=1) and with ``iwae`` (k=50), through the zoo's own train/evaluate path.

References (Burda et al. 2016, appendix D, after 3280 epochs): VAE 88.71 and
IWAE k=50 87.10 nats test NLL, both with IS K=5000.

Protocol: Adam (lr --lr, default 1e-3, times --lr-decay per epoch from where a run starts or resumes;
a run resumed with a new --lr restarts its step size there and keeps Adam's moments; Adam's --adam-betas and
--adam-eps, default torch's; KL annealing over the first --kl-warmup epochs, default none), batch --batch-size
(default 100), seed 0, amortized Gaussian encoder mirroring the decoder, tanh. Test NLL = -log (1/K) sum_k w_k with K = --eval-samples importance samples
from the trained encoder, on all 10,000 test images (the papers' protocol), or with --eval-limit n on a fixed random
subset (seed 0) of n, quicker but off the whole-test figure by up to a few "data se" (the per-datum NLL
has a spread of about 25 nats, so about 0.8 nats for n = 1000).

    python benchmarks/quality_mnist.py --data-dir ../shared/data --elbo-epochs 60 --iwae-epochs 8 \
        --eval-samples 5000 --eval-limit 1000
    python benchmarks/quality_mnist.py --data-dir ../shared/data --evaluate-only --eval-samples 5000 \
        --eval-limit 10000 --name quality_mnist_full_test

KL warm-up over the first 100 epochs with the baseline's schedule (150 epochs at 1e-3, then x0.99 per epoch):

    python benchmarks/quality_mnist.py --data-dir ../shared/data --elbo-epochs 150 --runs elbo --lr-decay 1.0 \
        --eval-samples 1000 --eval-limit 1000 --kl-warmup 100 --name quality_mnist_elbo_warmup --out runs/quality_mnist_warmup
    python benchmarks/quality_mnist.py --data-dir ../shared/data --elbo-epochs 500 --runs elbo --lr-decay 0.99 --resume \
        --eval-samples 5000 --eval-limit 10000 --kl-warmup 100 --name quality_mnist_elbo_warmup --out runs/quality_mnist_warmup
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import grid_parser, run_grid, run_script  # noqa: E402

from zoo.experiments.config import RunConfig  # noqa: E402

REFERENCES = {"elbo": 88.71, "iwae": 87.10}


def main(argv=None):
    p = grid_parser(__doc__, "runs/quality_mnist", eval_samples=5000, eval_limit=None)
    p.add_argument("--elbo-epochs", type=int, default=60)
    p.add_argument("--iwae-epochs", type=int, default=8)
    p.add_argument("--runs", default="elbo,iwae",
                   help="which runs to train, comma-separated (default elbo,iwae); the others are re-scored as "
                        "they are where --out holds them, and left out of the table where it does not")
    p.add_argument("--batch-size", type=int, default=100, help="minibatch size (default 100; Burda et al. used 20)")
    p.add_argument("--lr-decay", type=float, default=1.0, help="learning-rate decay per epoch (default 1: constant)")
    p.add_argument("--lr", type=float, default=1e-3,
                   help="Adam step size (default 1e-3); with --resume, the step size the continued runs restart at")
    p.add_argument("--kl-warmup", type=int, default=None, metavar="EPOCHS",
                   help="KL annealing over the first EPOCHS epochs (default: none)")
    p.add_argument("--adam-eps", type=float, default=None, help="Adam's epsilon (default 1e-8), in units of the N-scaled loss: Burda et al.'s 1e-4 "
                        "on sums over 20 images is 0.25 here")
    p.add_argument("--adam-betas", type=float, nargs=2, default=None, metavar=("B1", "B2"),
                   help="Adam's betas (default 0.9 0.999)")
    p.add_argument("--jit", action="store_true",
                   help="train with --jit (zoo.objectives.jit: the step captured once and compiled; same estimator, less Python)")
    p.add_argument("--name", default="quality_mnist", help="result file name in benchmarks/results")
    args = p.parse_args(argv)

    runs = []
    for objective, particles, epochs in (("elbo", 1, args.elbo_epochs), ("iwae", 50, args.iwae_epochs)):
        config = RunConfig.make(model="vae", guide="amortized", objective=objective, particles=particles,
                           dataset="binarized_mnist", data_dir=args.data_dir, epochs=epochs, batch_size=args.batch_size,
                           lr=args.lr, lr_decay=args.lr_decay, seed=0, device=args.device, eval_samples=args.eval_samples,
                           eval_limit=args.eval_limit, iwae_k=50, kl_warmup=args.kl_warmup,
                           adam_betas=args.adam_betas, adam_eps=args.adam_eps, jit=args.jit)
        if objective in args.runs.split(",") or args.evaluate_only or (Path(args.out) / objective).exists():
            runs.append((objective, config, REFERENCES[objective]))
    run_grid(args.name, "VAE 784-200-200-50 on static binarized MNIST: test NLL", runs, Path(args.out),
             __doc__.split("Protocol:")[1].split("\n\n")[0].strip().replace("\n", " "),
             evaluate_only=True if args.evaluate_only else set(REFERENCES) - set(args.runs.split(",")),
             resume=args.resume)


if __name__ == "__main__":
    run_script(main)
