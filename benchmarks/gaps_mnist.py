"""Inference suboptimality of a VAE on static binarized MNIST: the approximation and the amortization gap
(Cremer, Li & Duvenaud 2018), through ``pyro-zoo eval DIR --gaps`` (:mod:`zoo.experiments.gaps`).

The run is the 784-200-200-50 VAE with the amortized Gaussian encoder trained with the ELBO (Adam lr 1e-3,
batch 100, seed 0, --epochs epochs); the script trains it into --run when that folder holds no checkpoint,
as ``python -m zoo train vae --guide amortized --objective elbo --dataset binarized_mnist --epochs 30 --seed 0
--out RUN`` does. Then, with the model fixed: q* = a per-datum diagonal Gaussian (Cremer et al.'s FFG)
started at the encoder's output and refitted to convergence (the criterion of zoo.training.refit:
relative gain of the common-random-numbers ELBO below --refit-tol over 10 epochs, after two plateaus
that each cut Adam's step and double the particles; at most --refit-epochs epochs); ELBO[q*], ELBO[q_amortized] and the IS log p(x) from K =
--eval-samples samples per datum of each guide (log p(x) from the better proposal), on a fixed random
subset (seed 0) of --eval-limit test images (all 10,000 without it).

    python benchmarks/gaps_mnist.py --data-dir ../shared/data --run runs/gaps_mnist/vae --epochs 30 \
        --eval-limit 1000 --eval-samples 1000
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import RESULTS, provenance, run_script, write_result  # noqa: E402

from zoo.evaluation.gaps import gaps_markdown  # noqa: E402
from zoo.experiments.config import RunConfig  # noqa: E402
from zoo.experiments.gaps import gaps_run  # noqa: E402
from zoo.experiments.trained import Invocation  # noqa: E402
from zoo.experiments.run import train_run  # noqa: E402


def main(argv=None):
    import argparse
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--run", default="runs/gaps_mnist/vae", help="the trained run folder (trained here if empty)")
    p.add_argument("--epochs", type=int, default=30, help="training epochs when --run holds no checkpoint")
    p.add_argument("--eval-samples", type=int, default=1000)
    p.add_argument("--eval-limit", type=int, default=None)
    p.add_argument("--refit-tol", type=float, default=None)
    p.add_argument("--refit-epochs", type=int, default=None)
    p.add_argument("--device", default="auto")
    p.add_argument("--name", default="gaps_mnist", help="result file name in benchmarks/results")
    args = p.parse_args(argv)
    run = Path(args.run)
    if not (run / "checkpoint.pt").is_file():
        config = RunConfig.make(model="vae", guide="amortized", objective="elbo", dataset="binarized_mnist",
                                data_dir=args.data_dir, epochs=args.epochs, batch_size=100, lr=1e-3, seed=0,
                                device=args.device, eval_samples=100, eval_limit=1000)
        train_run(config, run, progress=False)
    summary = gaps_run(run, Invocation({"eval_samples": args.eval_samples, "eval_limit": args.eval_limit,
                                        "refit_tol": args.refit_tol, "refit_epochs": args.refit_epochs,
                                        "device": args.device, "data_dir": args.data_dir}))
    summary["epochs_trained"] = len(__import__("torch").load(run / "checkpoint.pt", weights_only=True)["history"])
    write_result(args.name, summary)
    prov = provenance()
    md = [f"# Inference gaps of the VAE (amortized, elbo, {summary['epochs_trained']} epochs) on static binarized "
          f"MNIST", "", f"Command: `{prov['command']}`  ", f"Commit: `{prov['git_commit']}`  ",
          f"Hardware: {prov['cpu']} ({prov['cpu_threads']} torch threads, {prov['logical_cores']} cores), "
          f"GPU: {prov['gpu']}", "", f"Protocol: {' '.join(__doc__.split(chr(10) + chr(10))[1].split())}", "",
          gaps_markdown(summary)]
    (RESULTS / f"{args.name}.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    run_script(main)
