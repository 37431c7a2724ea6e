"""Lossless compression with bits-back ANS (``pyro-zoo compress``) against the −ELBO and generic coders.

Two trained VAEs code their whole test split through ``zoo.experiments.compress.compress_run``: each
split is encoded, written, read back, decoded and checked bit-exact, and the achieved bits/dim (of the
code's words, and of the whole file, its header included) is set beside the test −ELBO in bits/dim on
the same images (the rate bits-back promises; Townsend et al. 2019 come within 1%), beside gzip, bz2,
lzma and PNG on the same images, with the encode and decode throughput (images per second, one process;
set the threads with OMP_NUM_THREADS).

- ``digits17``: the 8x8 digits at their 17 levels with a per-pixel Categorical decoder (Tomczak's
  intro_dgm setting), trained here for ``--digits-epochs`` unless ``--digits-run`` names a run folder.
- ``binarized_mnist``: the 784-200-200-50 VAE of ``quality_mnist_elbo_warmup700.json`` (test NLL 88.64,
  Burda et al.'s VAE 88.71), trained here in that run's stages (:data:`MNIST_STAGES`: 150 epochs at 1e-3
  with KL warm-up over 100, resumed with x0.99 per epoch to 500, resumed at 1e-4 with x0.995 to 700; about
  45 minutes on one thread) unless ``--mnist-run`` names a run folder, and scored with 100 importance
  samples (only its model and guide are used for coding).

A run folder that already holds a ``checkpoint.pt`` of the requested length is reused, not retrained.

Usage::

    python benchmarks/compression.py --data-dir ../shared/data                 # both, as recorded
    python benchmarks/compression.py --skip-mnist --digits-epochs 5 --limit 20 --name compression_smoke
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import RESULTS, write_result  # noqa: E402
from zoo.cli import main as zoo  # noqa: E402
from zoo.experiments.compress import compress_run, compression_markdown  # noqa: E402

MNIST_FLAGS = ["--kl-warmup", "100", "--eval-samples", "100"]
#: (epochs reached, lr, lr decay per epoch) of each stage; each later stage resumes the run with a new step size
#: (Adam's moments kept), as ``quality_mnist.py --resume`` did for the 88.6-nat VAE.
MNIST_STAGES = [(150, "1e-3", "1.0"), (500, "1e-3", "0.99"), (700, "1e-4", "0.995")]
DIGITS_FLAGS = ["--likelihood", "categorical", "--latent-dim", "8", "--hidden", "200,200", "--lr-decay", "0.995",
                "--eval-samples", "1000"]


def epochs_of(out: Path):
    """How many epochs the run in ``out`` has trained (None where it has no results yet)."""
    config = out / "results.json"
    return json.loads(config.read_text()).get("epochs_trained") if config.exists() else None


def trained(out: Path, epochs: int, args) -> Path:
    """The run folder ``out``, trained for ``epochs`` unless its checkpoint already has them."""
    if epochs_of(out) == epochs:
        return out
    flags = ["--resume", str(out)] if (out / "checkpoint.pt").exists() else ["--out", str(out)]
    if zoo(["train", "vae", *args, "--epochs", str(epochs), "--no-progress", *flags]) != 0:
        raise SystemExit(f"training {out} failed")
    return out


def trained_in_stages(out: Path, stages, args) -> Path:
    """The run folder ``out`` trained through ``stages`` ((epochs, lr, decay), each resuming the last)."""
    for epochs, lr, decay in stages:
        done = epochs_of(out)
        if done is not None and done >= epochs:
            continue
        trained(out, epochs, [*args, "--lr", lr, "--lr-decay", decay])
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--digits-run", default=None, help="a trained digits17 run folder (else one is trained)")
    p.add_argument("--digits-epochs", type=int, default=300)
    p.add_argument("--mnist-run", default=None, help="a trained binarized-MNIST VAE run folder (else one is trained)")
    p.add_argument("--skip-mnist", action="store_true", help="the 17-level digits only")
    p.add_argument("--data-dir", default=os.environ.get("PYRO_ZOO_DATA"))
    p.add_argument("--runs", default="runs/compression", help="where the trained run folders go")
    p.add_argument("--limit", type=int, default=None, help="code a fixed subset of the test split (a smoke test)")
    p.add_argument("--latent-bits", type=int, default=12)
    p.add_argument("--name", default="compression")
    args = p.parse_args()

    runs = Path(args.runs)
    digits = Path(args.digits_run) if args.digits_run else trained(
        runs / "digits17-categorical", args.digits_epochs, ["--dataset", "digits17", *DIGITS_FLAGS])
    folders = [("digits17", digits)]
    if not args.skip_mnist:
        data = ["--data-dir", args.data_dir] if args.data_dir else []
        mnist = Path(args.mnist_run) if args.mnist_run else trained_in_stages(
            runs / "mnist-vae-staged", MNIST_STAGES, ["--dataset", "binarized_mnist", *data, *MNIST_FLAGS])
        folders.append(("binarized_mnist", mnist))

    rows = []
    for label, folder in folders:
        result = compress_run(folder, split="test", limit=args.limit, out=runs / f"{label}-test.pzbb",
                              latent_bits=args.latent_bits)
        config = json.loads((folder / "config.json").read_text())
        result.update(label=label, epochs=json.loads((folder / "results.json").read_text()).get("epochs_trained"),
                      train_config=config, within_1_percent=abs(result["bits_per_dim"] / result["neg_elbo_bits_per_dim"]
                                                              - 1) <= 0.01,
                      below_every_baseline=all(result["bits_per_dim"] < v
                                               for v in result["baselines_bits_per_dim"].values()))
        rows.append(result)
        print(compression_markdown([result]), flush=True)
    markdown = ("Bits-back ANS (BB-ANS) against the test −ELBO and generic coders, bits per dimension (lower is "
                "better):\n\n" + compression_markdown(rows))
    path = write_result(args.name, {"protocol": "each run's whole test split (or --limit rows, a fixed subset) coded "
                                    "by pyro-zoo compress: encoded, written, read back, decoded and checked "
                                    "bit-exact; -ELBO on the same images; gzip/bz2/lzma at their strongest settings "
                                    "on the pixel bytes (binary: packed), PNG of all images tiled in one file",
                                    "rows": rows})
    (RESULTS / f"{args.name}.md").write_text(markdown)
    print(f"wrote {path} and {path.with_suffix('.md')}")


if __name__ == "__main__":
    main()
