"""IWAE against DReG-IWAE (k = 50) on static binarized MNIST, through the same harness.

Both train the 784-200-200-50 VAE from the same initialization and seed with the same budget
(Adam lr 1e-3, batch 100); then the test NLL (IS, K = --eval-samples on a fixed random subset of
--eval-limit test images) and the encoder-gradient SNR of each run's own estimator at its
final parameters (--repeats gradient estimates on one minibatch of 100). Tucker et al. (2019)
report that DReG improves IWAE training; this records what we find at this budget.

    python benchmarks/dreg_mnist.py --data-dir ../shared/data --epochs 3 --eval-samples 1000 --eval-limit 500
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import RESULTS, grid_parser, run_grid, run_script  # noqa: E402

from zoo.training.checkpoint import load_checkpoint  # noqa: E402
from zoo.evaluation.gradients import GradientStudy, diagnose  # noqa: E402
from zoo.experiments.config import RunConfig
from zoo.experiments.run import prepare  # noqa: E402


def main(argv=None):
    p = grid_parser(__doc__, "runs/dreg_mnist", eval_samples=1000, eval_limit=500)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--repeats", type=int, default=20)
    args = p.parse_args(argv)
    runs = [(name, RunConfig.make(model="vae", guide="amortized", objective=name, particles=50, dataset="binarized_mnist",
                             data_dir=args.data_dir, epochs=args.epochs, batch_size=100, lr=1e-3, seed=0,
                             device=args.device, eval_samples=args.eval_samples, eval_limit=args.eval_limit,
                             iwae_k=50), None) for name in ("iwae", "dreg")]
    rows = run_grid("dreg_mnist", "IWAE vs DReG-IWAE (k = 50) on static binarized MNIST", runs, Path(args.out),
                    __doc__.split("\n\n")[1].replace("\n", " "), evaluate_only=args.evaluate_only,
                    resume=args.resume)
    lines = ["", f"## Encoder-gradient SNR at each run's final parameters ({args.repeats} estimates, K = 50, "
             "minibatch of 100)", "", "| run | group | variance | SNR |", "|---|---|---|---|"]
    for (name, config, _), _row in zip(runs, rows):
        run = prepare(config)
        state = load_checkpoint(Path(args.out) / name / "checkpoint.pt")
        run.model.load_state_dict(state["model"])
        run.guide.load_state_dict(state["guide"])
        result = diagnose(run.model, run.guide, run.data.train[:100].to(run.device), [name], [50], args.repeats,
                          GradientStudy(reference=False))
        for r in result["rows"]:
            lines.append(f"| {name} | {r['group']} | {r['variance']:.4g} | {r['snr']:.4f} |")
    with open(RESULTS / "dreg_mnist.md", "a") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    run_script(main)
