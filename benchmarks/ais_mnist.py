"""Importance sampling against annealed importance sampling on static binarized MNIST, checked by BDMC.

For a trained run (by default the committed headline checkpoints under ``benchmarks/checkpoints/``), on a copy of
its folder under ``--out``, through the command a user types:

1. ``pyro-zoo eval RUN --eval-samples K --eval-limit N``: the importance-sampling log p(x) (K = 5000, the papers'
   protocol), its SE and the PSIS k-hats, on a fixed random subset of N test images;
2. ``pyro-zoo eval RUN --estimator ais --temperatures T1,T2,... --eval-limit N``: AIS on the same images at each
   number of temperatures (the table of the estimate as T doubles);
3. ``pyro-zoo eval RUN --estimator bdmc --bdmc-data M --temperatures ...``: BDMC on M images simulated from the
   model, the gap between forward and reverse AIS at each T.

The result file holds each run's IS summary with its AIS rows (``ais``) and BDMC rows (``bdmc``) beside it, so
``pyro-zoo report`` shows IS and AIS side by side and derives the row's verdict from their agreement
(:func:`zoo.evaluation.reliability.agreement_verdict`).

``--train`` first trains each run by its recipe (:data:`RECIPES`, the commands behind the README's headline rows:
the 88.6-nat VAE in the stages of ``quality_mnist_elbo_warmup700``, the gated two-layer HVAE with a VampPrior of
``expressive_mnist_hvae_vampprior_gated``) into ``--runs-dir``, unless that folder already holds the trained run, and
exports it. ``--export`` writes a run's weights (model and guide tensors, the training history, no optimizer state)
and config to ``benchmarks/checkpoints/FOLDER/``, the folder the README's re-derivation command reads.

``--headline`` (implied by ``--train``) writes ``headline_LABEL.json``, the README's row, from the committed
checkpoint alone: the README's re-derivation command, ``pyro-zoo eval`` of a copy at K = 5000 on all 10,000 test
images, with the AIS and IS of the subset beside it (where ``--limit`` covers the whole test split at the same K,
as on a GPU, that IS is already the headline's and is not run twice). So every README figure is one a reader gets again from the
committed weights, whether or not the training folder still exists.

    python benchmarks/ais_mnist.py --data-dir ../shared/data --runs hvae --train           # train, export, score
    python benchmarks/ais_mnist.py --data-dir ../shared/data --runs elbo --headline        # score the committed one
    python benchmarks/ais_mnist.py --data-dir ../shared/data --runs elbo --export runs/headline/elbo

``--folders LABEL=RUN_FOLDER,...`` scores other trained runs the same way (the latent families' rows, whose latents on
the sphere and in hyperbolic space AIS moves through a chart), without a headline; ``--bdmc-data 0`` leaves out BDMC:

    python benchmarks/ais_mnist.py --data-dir ../shared/data --name ais_latent_families_mnist --limit 200 \
        --is-samples 1000 --temperatures 50,100 --chains 8 --bdmc-data 0 \
        --folders gaussian-d20=runs/sphere_latents_mnist/gaussian-d20,vmf-d20=runs/sphere_latents_mnist/vmf-d20,\
wrapped-normal-d20=runs/sphere_latents_mnist/wrapped-normal-d20

The hamiltonian guide has no marginal density; AIS from the guide starts at its q_0, before the leapfrog steps
(``ais.json``'s ``start``), so its runs are scored beside those of the guides it is compared with
(``--ais-path prior`` anneals every run of the file from the prior instead):

    python benchmarks/ais_mnist.py --data-dir ../shared/data --name ais_hvi_hvae_mnist --limit 200 --is-samples 1000 \
        --temperatures 100,400 --chains 8 --bdmc-data 50 --bdmc-temperatures 100,400 --bdmc-chains 4 \
        --folders hvae_standard=RUNS/hvae_standard,hvae_unstructured=RUNS/hvae_unstructured,hvae_hvi8=RUNS/hvae_hvi8
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import fail, run_script, write_result, zoo_cli, RESULTS  # noqa: E402
from zoo.evaluation.ais import COORDINATES  # noqa: E402
from zoo.training.checkpoint import load_checkpoint  # noqa: E402

CHECKPOINTS = Path(__file__).resolve().parent / "checkpoints"
#: the headline runs this benchmark knows: label -> checkpoint folder under benchmarks/checkpoints
RUNS = {"elbo": "vae-mnist-elbo", "hvae": "hvae-vampprior-mnist-elbo"}
#: label -> (model, training stages (epochs reached, lr, lr decay per epoch; each later stage resumes the run with
#: a new step size, Adam's moments kept), the flags of every stage). Both are Burda et al.'s sizes.
RECIPES = {
    # 784-200-200-50 tanh VAE, Bernoulli pixels: quality_mnist_elbo_warmup700 (test NLL 88.64, -ELBO 93.61)
    "elbo": ("vae", [(150, "1e-3", "1.0"), (500, "1e-3", "0.99"), (700, "1e-4", "0.995")], ["--kl-warmup", "100"]),
    # z 100-50, gated 200-200 / 100-100, VampPrior (500 pseudo-inputs) on z2, structured guide q(z1|x) q(z2|z1,x),
    # the epoch of best validation ELBO: expressive_mnist_hvae_vampprior_gated (test NLL 86.31)
    "hvae": ("hvae", [(150, "1e-3", "1.0")], ["--activation", "gated", "--prior", "vampprior", "--prior-components",
                                               "500", "--structured", "--kl-warmup", "15", "--keep-best"]),
}
#: what a weights-only checkpoint keeps of the one training wrote
KEPT = ("config", "model", "guide", "history", "epoch")


def export(source: Path, label: str) -> Path:
    """Copy the run in ``source`` to ``benchmarks/checkpoints/<folder>/``: its config and its checkpoint without
    the optimizer's moments, the scheduler and the random state (about a third of the size). A run trained with
    ``--keep-best`` is exported as the run of its best epoch: that epoch's weights and history, ``keep_best`` off
    (the weights are already the chosen ones), so ``pyro-zoo eval`` of the export scores what the run scored."""
    target = CHECKPOINTS / RUNS[label]
    state = load_checkpoint(source / "checkpoint.pt")
    config = json.loads((source / "config.json").read_text())
    kept = {k: state[k] for k in KEPT if k in state}
    if config.get("keep_best"):
        best = load_checkpoint(source / "best.pt")
        epoch = int(best["epoch"])
        config = {**config, "keep_best": False}
        kept.update(config=config, model=best["model"], guide=best["guide"], epoch=epoch,
                    history=list(state["history"])[:epoch])
        if kept["history"][-1].get("valid_elbo") != best.get("valid_elbo"):
            fail(f"{source / 'best.pt'} is not epoch {epoch} of {source / 'checkpoint.pt'}'s history")
    target.mkdir(parents=True, exist_ok=True)
    torch.save(kept, target / "checkpoint.pt")
    (target / "config.json").write_text(json.dumps(config, indent=2))
    return target


def train(label: str, args) -> Path:
    """The run folder ``--runs-dir/LABEL`` trained by :data:`RECIPES` (each stage scored with K = 100 only; the
    K = 5000 figure is :func:`rederive`'s, of the export); a stage the folder already holds is not trained again."""
    model, stages, flags = RECIPES[label]
    run = Path(args.runs_dir) / label
    data = ["--data-dir", args.data_dir, "--no-progress"]
    for epochs, lr, decay in stages:
        results = run / "results.json"
        done = json.loads(results.read_text()).get("epochs_trained") if results.is_file() else None
        if done is not None and done >= epochs:
            continue
        where = ["--resume", run] if (run / "checkpoint.pt").is_file() else [model, "--out", run]
        t0 = time.perf_counter()
        zoo_cli(["train", *where, "--dataset", "binarized_mnist", "--epochs", epochs, "--lr", lr, "--lr-decay", decay,
                 "--eval-samples", "100", *flags, *data], check=True)
        print(f"{label}: trained to epoch {epochs} in {time.perf_counter() - t0:.0f} s", flush=True)
    return run


def rederive(label: str, args) -> Path:
    """The README's re-derivation command on a copy of the committed checkpoint: ``pyro-zoo eval COPY
    --eval-samples 5000`` on all test images (``--runs-dir/LABEL-headline``; the figures of ``headline_LABEL.json``)."""
    run = Path(args.runs_dir) / f"{label}-headline"
    if run.exists():
        shutil.rmtree(run)
    shutil.copytree(CHECKPOINTS / RUNS[label], run)
    t0 = time.perf_counter()
    zoo_cli(["eval", run, "--eval-samples", args.headline_samples, "--data-dir", args.data_dir, "--no-progress",
             *(["--eval-limit", args.headline_limit] if args.headline_limit else [])], check=True)
    print(f"{label}: scored the committed checkpoint on all test images in {time.perf_counter() - t0:.0f} s",
          flush=True)
    return run


def write_headline(label: str, run: Path, measured: dict) -> Path:
    """``headline_LABEL.json``, the README's row: the committed checkpoint's IS on all test images (:func:`rederive`)
    with the AIS of ``measured`` beside it, and IS of AIS's images (``ais.is_same_images``), so the
    verdict compares the two estimators on the same images (:mod:`zoo.evaluation.reliability`)."""
    results = {k: v for k, v in json.loads((run / "results.json").read_text()).items() if k != "history"}
    is_same = {k: measured[k] for k in ("log_likelihood", "log_likelihood_se", "num_data", "num_samples",
                                        "psis_khat_frac_over_0_7")}
    return write_result(f"headline_{label}", {
        "protocol": "the README's headline row: the committed checkpoint (trained by RECIPES[label] of "
                    "benchmarks/ais_mnist.py) scored by pyro-zoo eval, IS (defensive proposal) K = 5000 on all 10,000 "
                    "test images; AIS and IS of a fixed random subset beside it, and BDMC on data simulated from the "
                    "model (ais_mnist_LABEL.json)",
        "checkpoint": f"benchmarks/checkpoints/{RUNS[label]}",
        "runs": [{**results, "label": label, "ais": {**measured["ais"], "is_same_images": is_same},
                  "bdmc": measured["bdmc"]}]})


def test_size(data_dir) -> int:
    """How many images the test split holds (10,000 for binarized MNIST)."""
    from zoo.data import load_dataset
    return load_dataset("binarized_mnist", data_dir).test.shape[0]


def measure(label: str, args) -> dict:
    source = Path(args.folders[label]) if label in args.folders else CHECKPOINTS / RUNS[label]
    if not (source / "checkpoint.pt").is_file():
        fail(f"no checkpoint at {source}; export one first (--export RUN_FOLDER)" if label not in args.folders
             else f"no checkpoint at {source}: --folders names trained run folders")
    run = Path(args.out) / label
    if run.exists():
        shutil.rmtree(run)
    shutil.copytree(source, run)
    common = ["--data-dir", args.data_dir, "--no-progress"]
    precondition = ["--ais-precondition", args.precondition] if args.ais_path == "guide" else []
    timings = {}
    t0 = time.perf_counter()
    # --force: the copy may hold the run's own evaluation (another K, other data), which this one replaces
    zoo_cli(["eval", run, "--eval-samples", args.is_samples, "--eval-limit", args.limit, "--force", *common], check=True)
    timings["is_seconds"] = time.perf_counter() - t0
    temperatures = ",".join(str(t) for t in args.temperatures)
    t0 = time.perf_counter()
    zoo_cli(["eval", run, "--estimator", "ais", "--temperatures", temperatures, "--chains", args.chains,
             "--leapfrog", args.leapfrog, "--eval-limit", args.limit, "--ais-batch-size", args.ais_batch_size,
             "--ais-path", args.ais_path, *precondition, *common], check=True)
    timings["ais_seconds"] = time.perf_counter() - t0
    bdmc = None
    if args.bdmc_data:
        t0 = time.perf_counter()
        zoo_cli(["eval", run, "--estimator", "bdmc", "--temperatures", ",".join(str(t) for t in args.bdmc_temperatures),
                 "--chains", args.bdmc_chains, "--leapfrog", args.leapfrog, "--bdmc-data", args.bdmc_data,
                 "--ais-batch-size", args.ais_batch_size, "--ais-path", args.ais_path, *precondition, *common], check=True)
        timings["bdmc_seconds"] = time.perf_counter() - t0
        bdmc = json.loads((run / "bdmc.json").read_text())
    results = json.loads((run / "results.json").read_text())
    results.pop("history", None)
    ais = json.loads((run / "ais.json").read_text())
    checkpoint = str(args.folders[label]) if label in args.folders else f"benchmarks/checkpoints/{RUNS[label]}"
    return {**results, "label": label, "checkpoint": checkpoint,
            "ais": {k: ais[k] for k in ("num_data", "num_chains", "path", "start", "schedule", "leapfrog_steps", "pilot_chains",
                                        "rows") if k in ais},
            "bdmc": {k: bdmc[k] for k in ("num_data", "settings", "rows")} if bdmc else None, **timings}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", required=True, help="folder (or .npz) holding binarized MNIST")
    p.add_argument("--runs", default="elbo", help=f"comma-separated labels from {', '.join(RUNS)}")
    p.add_argument("--train", action="store_true",
                   help="first train each run by its recipe into --runs-dir (unless there) and export it; "
                        "implies --headline")
    p.add_argument("--headline", action="store_true",
                   help="write headline_LABEL.json (the README's row) from a K = 5000 eval of the committed checkpoint "
                        "on all test images, beside this run's AIS")
    p.add_argument("--headline-samples", type=int, default=5000, help="K of the headline row's IS (the papers': 5000)")
    p.add_argument("--headline-limit", type=int, default=None,
                   help="score only this many test images for the headline row (a smoke test; the row is all of them)")
    p.add_argument("--runs-dir", default="runs/headline", help="where --train puts the trained run folders")
    p.add_argument("--export", default=None, metavar="RUN_FOLDER",
                   help="first write this trained run's weights and config to benchmarks/checkpoints (one label)")
    p.add_argument("--limit", type=int, default=1000, help="test images (a fixed random subset, seed 0)")
    p.add_argument("--is-samples", type=int, default=5000)
    p.add_argument("--temperatures", type=lambda s: [int(t) for t in s.split(",")], default=[50, 100, 200])
    p.add_argument("--chains", type=int, default=8)
    p.add_argument("--leapfrog", type=int, default=5)
    p.add_argument("--precondition", choices=("transport", "diagonal", "none"), default="transport",
                   help="pyro-zoo eval's --ais-precondition: the coordinates HMC moves in on the guide's path "
                        "(default: the guide's own reparameterization)")
    p.add_argument("--ais-path", choices=("guide", "prior"), default="guide",
                   help="AIS's initial distribution, pyro-zoo eval's --ais-path: the guide (default; the hamiltonian "
                        "guide's q_0) or the prior")
    p.add_argument("--ais-batch-size", type=int, default=100,
                   help="data per AIS tensor program, pyro-zoo eval's --ais-batch-size (a GPU takes thousands)")
    p.add_argument("--bdmc-data", type=int, default=100)
    p.add_argument("--bdmc-temperatures", type=lambda s: [int(t) for t in s.split(",")], default=[50, 100, 200, 400])
    p.add_argument("--bdmc-chains", type=int, default=4)
    p.add_argument("--folders", default=None, metavar="LABEL=RUN_FOLDER,...",
                   help="score these trained run folders instead of the headline checkpoints (no headline)")
    p.add_argument("--out", default="runs/ais_mnist")
    p.add_argument("--name", default="ais_mnist")
    args = p.parse_args(argv)
    items = [item for item in (args.folders or "").split(",") if item]
    malformed = [item for item in items if "=" not in item or not item.split("=", 1)[0] or not item.split("=", 1)[1]]
    if malformed:
        fail(f"--folders takes LABEL=RUN_FOLDER entries, comma-separated; got {malformed[0]!r}")
    args.folders = dict(item.split("=", 1) for item in items)
    if args.folders:
        if args.train or args.headline or args.export:
            fail("--folders scores trained run folders: --train, --headline and --export are for the headline runs")
        labels = list(args.folders)
    else:
        labels = [r for r in args.runs.split(",") if r]
        if not labels or any(r not in RUNS for r in labels):
            fail(f"--runs takes labels from {', '.join(RUNS)}, got {args.runs!r}")
    if args.train:
        for label in labels:
            print(f"wrote {export(train(label, args), label)}")
    elif args.export:
        if len(labels) != 1:
            fail("--export writes one run: name one label in --runs")
        print(f"wrote {export(Path(args.export), labels[0])}")
    runs = [measure(label, args) for label in labels]
    settings = {k: getattr(args, k) for k in ("limit", "is_samples", "temperatures", "chains", "leapfrog", "ais_path",
                                              "precondition", "ais_batch_size", "bdmc_data", "bdmc_temperatures",
                                              "bdmc_chains")}
    coordinates = COORDINATES[args.precondition] if args.ais_path == "guide" else ""
    path = write_result(args.name, {"protocol": f"IS (defensive proposal) and AIS ({args.ais_path} path, sigmoid "
                                                f"schedule, HMC{coordinates} with pilot-adapted frozen step sizes) on "
                                                f"the same fixed "
                                                f"random subset of the test split; BDMC on data simulated from the model",
                                    "settings": settings, "runs": runs})
    (RESULTS / f"{args.name}.md").write_text(markdown(json.loads(path.read_text())))
    print(f"wrote {path} and {RESULTS / (args.name + '.md')}")
    if args.train or args.headline:
        for label in labels:
            row = next(r for r in runs if r["label"] == label)
            # IS of every test image at the headline's K already measured: that is the headline's eval, not redone
            covered = (not args.headline_limit and args.is_samples == args.headline_samples
                       and row["num_data"] == test_size(args.data_dir))
            print(f"wrote {write_headline(label, Path(args.out) / label if covered else rederive(label, args), row)}")


def markdown(data: dict) -> str:
    prov = data["provenance"]
    checked = ", checked by BDMC" if any(run.get("bdmc") for run in data["runs"]) else ""
    lines = [f"# IS against AIS on binarized MNIST{checked}", "",
             f"Command: `{prov['command']}`  ", f"Commit: `{prov['git_commit']}`  ",
             f"Hardware: {prov['cpu']}, {prov['cpu_threads']} threads, GPU: {prov['gpu'] or 'none'}", ""]
    for run in data["runs"]:
        lines += [f"## `{run['label']}` ({run['checkpoint']})", "",
                  f"IS, K = {run['num_samples']}, on {run['num_data']} test images: log p(x) "
                  f"{run['log_likelihood']:.3f} ± {run['log_likelihood_se']:.4f} (chains: none; data se "
                  f"{run['log_likelihood_data_se']:.3f}); k̂ > 0.7 for {run['psis_khat_frac_over_0_7']:.1%} of images; "
                  f"{run['is_seconds']:.0f} s.", "",
                  f"AIS from {run['ais'].get('start') or 'the ' + run['ais'].get('path', 'guide')}:", "",
                  "| AIS T | log p(x) | SE (chains) | AIS − IS | ESS mean | acceptance | seconds |",
                  "|---|---|---|---|---|---|---|"]
        for row in run["ais"]["rows"]:
            lines.append(f"| {row['num_temperatures']} | {row['log_likelihood']:.3f} | {row['log_likelihood_se']:.4f} | "
                         f"{row['log_likelihood'] - run['log_likelihood']:+.3f} | {row['ess_mean']:.1f} | "
                         f"{row['acceptance_mean']:.2f} | {row['seconds']:.0f} |")
        if not run.get("bdmc"):
            lines.append("")
            continue
        lines += ["", f"BDMC on {run['bdmc']['num_data']} simulated images ({run['bdmc']['settings']['num_chains']} "
                      f"chains):", "", "| T | lower | upper | gap | largest gap |", "|---|---|---|---|---|"]
        for row in run["bdmc"]["rows"]:
            lines.append(f"| {row['num_temperatures']} | {row['lower']:.3f} | {row['upper']:.3f} | {row['gap']:.3f} | "
                         f"{row['gap_max']:.3f} |")
        lines.append("")
    lines.append("Nats per image (log p(x), higher is better). AIS and IS are both stochastic lower bounds; BDMC's "
                 "gap bounds the error of AIS at that T on data from the model.")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    run_script(main)
