"""Is training a guide against a fixed model as fast per step as training model and guide together?

Both through the command a user types, alternating in the same process order round by round (so a drift of the
machine's speed falls on both alike): ``pyro-zoo train MODEL --compile`` (joint) and ``pyro-zoo train
--fixed-model FIXED --compile`` (the guide alone, the model's gradients off), each for ``--epochs`` epochs on the
fixed model's data; an epoch's time is the training loop's own (``history[].seconds``), and the first epoch of each
run, which pays the compilation, is left out.

    python benchmarks/fixed_model_speed.py --fixed vae-mnist-elbo --data-dir ../shared/data --epochs 3 --rounds 3
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import fail, run_script, write_result  # noqa: E402


def _epochs(folder: Path) -> list:
    history = json.loads((folder / "results.json").read_text())["history"]
    return [float(h["seconds"]) for h in history[1:]]


def main(argv=None) -> None:
    from zoo.cli import main as zoo
    from zoo.core.catalogue import is_trained_name, trained_folder
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--fixed", default="vae-mnist-elbo")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--mode", default="--compile", choices=("--compile", "--jit", "eager"))
    p.add_argument("--out", default="runs/fixed_model_speed")
    p.add_argument("--name", default="fixed_model_speed")
    args = p.parse_args(argv)
    if args.epochs < 2:
        fail("--epochs must be 2 or more (the first epoch, which compiles, is left out)")
    folder = trained_folder(args.fixed) if is_trained_name(args.fixed) else Path(args.fixed)
    stored = json.loads((folder / "config.json").read_text())
    data = ["--data-dir", args.data_dir] if args.data_dir else []
    mode = [] if args.mode == "eager" else [args.mode]
    common = ["--epochs", args.epochs, "--eval-samples", 1, "--eval-limit", 10, "--batch-size", stored["batch_size"],
              *mode, *data, "--no-progress"]
    joint_cmd = ["train", stored["model"], "--dataset", stored["dataset"],
                 *[x for k, v in stored["model_options"].items() for x in _flag(k, v)]]
    times = {"joint": [], "fixed": []}
    for r in range(args.rounds):
        for kind in (("joint", "fixed") if r % 2 == 0 else ("fixed", "joint")):
            out = Path(args.out) / f"{kind}-{r}"
            shutil.rmtree(out, ignore_errors=True)
            argv = joint_cmd if kind == "joint" else ["train", "--fixed-model", str(folder)]
            if zoo([str(a) for a in [*argv, *common, "--out", out]]) != 0:
                fail(f"the {kind} run of round {r} failed")
            times[kind] += _epochs(out)
    joint, fixed = statistics.median(times["joint"]), statistics.median(times["fixed"])
    result = {"fixed_model": args.fixed, "mode": args.mode, "epoch_seconds": times,
              "median_joint": joint, "median_fixed": fixed, "ratio_fixed_to_joint": fixed / joint}
    path = write_result(args.name, result)
    print(f"median epoch: joint {joint:.2f} s, fixed model {fixed:.2f} s ({fixed / joint:.2f}x); wrote {path}")


def _flag(name: str, value) -> list:
    flag = "--" + name.replace("_", "-")
    if isinstance(value, bool):
        return [flag] if value else []
    if isinstance(value, (list, tuple)):
        return [flag, *value]
    return [flag, value]


if __name__ == "__main__":
    run_script(main)
