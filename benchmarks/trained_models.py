"""The zoo's trained models: train each by its recipe, export its weights, score it, and write its model card.

A trained model is a folder under ``benchmarks/checkpoints/`` named for it (:mod:`zoo.core.catalogue` says what it
holds). This script makes one, in steps that each resume where the last stopped (across short GPU leases too):

``train NAME``
    trains the run of :data:`RECIPES` into ``--runs-dir/NAME`` through ``pyro-zoo train`` (each stage resumes the
    run from its checkpoint with the next learning rate; a stage the folder already holds is not trained again);
``export NAME``
    copies its config and its weights (the model's and guide's tensors and the history, no optimizer state; a
    ``--keep-best`` run as its best epoch) into ``benchmarks/checkpoints/NAME/``;
``score NAME``
    the card's figures, through the commands a user types: ``pyro-zoo eval NAME --estimator ais --eval-limit 1000``
    (AIS on the fixed 1,000-image subset of the test split) and ``--estimator bdmc`` (BDMC's gap on data simulated
    from the model), in the working copy ``--runs-dir/NAME-score``; their ``ais.json``/``bdmc.json`` (and ``.md``) are
    copied beside the weights, and ``benchmarks/results/trained_models.json`` collects every model's figures with
    the command, commit and hardware;
``card NAME|all``
    renders each ``README.md`` (the card a person reads) from ``card.json`` and the result files;
    ``--check`` fails where a card is not what its files give;
``pending``
    names the recipes not yet committed (what ``benchmarks/gpu_checklist.sh``'s ``trained`` stage trains on across
    leases).

    python benchmarks/trained_models.py train vae-mnist-iwae --data-dir ../shared/data
    python benchmarks/trained_models.py export vae-mnist-iwae
    python benchmarks/trained_models.py score vae-mnist-iwae --data-dir ../shared/data
    python benchmarks/trained_models.py card all
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import fail, provenance, run_script, write_result, RESULTS  # noqa: E402

CHECKPOINTS = Path(__file__).resolve().parent / "checkpoints"

#: NAME -> (model, training stages (epochs reached, lr, lr decay per epoch), the flags of every stage). The two
#: headline models were trained by benchmarks/ais_mnist.py's recipes, which these repeat.
RECIPES = {
    "vae-mnist-elbo": ("vae", [(150, "1e-3", "1.0"), (500, "1e-3", "0.99"), (700, "1e-4", "0.995")],
                       ["--kl-warmup", "100"]),
    "vae-mnist-iwae": ("vae", [(150, "1e-3", "1.0"), (500, "1e-3", "0.99")],
                       ["--objective", "iwae", "--particles", "5"]),
    "vae-vampprior-mnist-elbo": ("vae", [(250, "1e-3", "1.0")],
                                 ["--prior", "vampprior", "--prior-components", "500", "--activation", "gated",
                                  "--kl-warmup", "100", "--keep-best", "--patience", "50"]),
    "hvae-mnist-elbo": ("hvae", [(150, "1e-3", "1.0")],
                        ["--activation", "gated", "--structured", "--kl-warmup", "15", "--keep-best"]),
    "hvae-vampprior-mnist-elbo": ("hvae", [(150, "1e-3", "1.0")],
                                  ["--activation", "gated", "--prior", "vampprior", "--prior-components", "500",
                                   "--structured", "--kl-warmup", "15", "--keep-best"]),
    "hvae-ladder-mnist-elbo": ("hvae", [(150, "1e-3", "1.0")],
                               ["--guide", "ladder", "--activation", "gated", "--kl-warmup", "15", "--keep-best"]),
    "vae-vmf-mnist-elbo": ("vae", [(100, "1e-3", "1.0")], ["--latent", "vmf", "--latent-dim", "20"]),
    "vae-wrapped-normal-mnist-elbo": ("vae", [(100, "1e-3", "1.0")],
                                      ["--latent", "wrapped-normal", "--latent-dim", "20"]),
    "sbn-mnist-rloo": ("sbn", [(300, "1e-3", "1.0")], ["--objective", "rloo", "--particles", "4",
                                                       "--weight-decay", "1e-4", "--keep-best"]),
    "categorical-vae-mnist-gumbel": ("categorical_vae", [(500, "1e-3", "1.0")],
                                     ["--guide", "relaxed", "--objective", "tracemeanfield", "--keep-best"]),
    "draw-mnist-elbo": ("draw", [(25, "1e-3", "1.0")], ["--guide", "recurrent", "--objective", "tracemeanfield"]),
}
#: what a weights-only checkpoint keeps of the one training wrote
KEPT = ("config", "model", "guide", "history", "epoch")


def _cli(argv) -> None:
    from zoo.cli import main as zoo
    code = zoo([str(a) for a in argv])
    if code:
        fail(f"pyro-zoo {' '.join(str(a) for a in argv)} exited with {code}")


def train(name: str, args) -> Path:
    if name not in RECIPES:
        fail(f"no recipe for {name!r}; known: {', '.join(RECIPES)}")
    model, stages, flags = RECIPES[name]
    run = Path(args.runs_dir) / name
    for epochs, lr, decay in stages:
        results = run / "results.json"
        done = json.loads(results.read_text()).get("epochs_trained") if results.is_file() else None
        if done is not None and done >= epochs:
            continue
        where = ["--resume", run] if (run / "checkpoint.pt").is_file() else [model, "--out", run, *flags]
        t0 = time.perf_counter()
        _cli(["train", *where, "--dataset", "binarized_mnist", "--epochs", epochs, "--lr", lr, "--lr-decay", decay,
              "--eval-samples", "100", "--data-dir", args.data_dir, "--no-progress"])
        print(f"{name}: trained to epoch {epochs} in {time.perf_counter() - t0:.0f} s", flush=True)
    return run


def export(name: str, args) -> Path:
    import torch
    from zoo.training.checkpoint import load_checkpoint
    source, target = Path(args.runs_dir) / name, CHECKPOINTS / name
    state = load_checkpoint(source / "checkpoint.pt")
    config = json.loads((source / "config.json").read_text())
    kept = {k: state[k] for k in KEPT if k in state}
    if config.get("keep_best"):                 # exported as the run of its best epoch, keep_best off
        best = load_checkpoint(source / "best.pt")
        epoch = int(best["epoch"])
        config = {**config, "keep_best": False, "patience": None}
        kept.update(model=best["model"], guide=best["guide"], epoch=epoch, history=list(state["history"])[:epoch])
    kept["config"] = config
    target.mkdir(parents=True, exist_ok=True)
    torch.save(kept, target / "checkpoint.pt")
    (target / "config.json").write_text(json.dumps(config, indent=2))
    print(f"{name}: exported epoch {kept['epoch']} to {target} "
          f"({(target / 'checkpoint.pt').stat().st_size / 2 ** 20:.1f} MB)", flush=True)
    return target


def _done(path: Path, **settings) -> bool:
    """Does the result file ``path`` of an earlier ``score`` (another lease's) hold these settings already?"""
    if not path.is_file():
        return False
    result = json.loads(path.read_text())
    return all(result.get(k) == v for k, v in settings.items())


def score(name: str, args) -> dict:
    from zoo.core.catalogue import card_figures
    work = Path(args.runs_dir) / f"{name}-score"
    data = ["--data-dir", args.data_dir, "--no-progress", "--out", work]
    timings = {}
    ais_done = _done(work / "ais.json", num_data=args.limit, num_chains=args.chains,
                     num_temperatures=max(int(t) for t in args.temperatures.split(",")))
    if not ais_done:
        t0 = time.perf_counter()
        _cli(["eval", name, "--estimator", "ais", "--eval-limit", args.limit, "--temperatures", args.temperatures,
              "--chains", args.chains, *data])
        timings["ais_seconds"] = time.perf_counter() - t0
    if args.bdmc_data and not _done(work / "bdmc.json", num_data=args.bdmc_data):
        t0 = time.perf_counter()
        _cli(["eval", name, "--estimator", "bdmc", "--bdmc-data", args.bdmc_data, "--temperatures",
              args.bdmc_temperatures, "--chains", args.chains, *data])
        timings["bdmc_seconds"] = time.perf_counter() - t0
    for f in ("ais.json", "ais.md", "ais_per_datum.npz", "bdmc.json", "bdmc.md"):
        if (work / f).is_file():
            shutil.copyfile(work / f, CHECKPOINTS / name / f)
    figures = {**card_figures(CHECKPOINTS / name), **timings}
    path = RESULTS / "trained_models.json"
    rows = json.loads(path.read_text()).get("models", {}) if path.is_file() else {}
    rows[name] = {**rows.get(name, {}), **figures, "provenance": provenance()}
    write_result("trained_models", {"models": dict(sorted(rows.items()))})
    card(name, args)
    return figures


def card(name: str, args) -> None:
    from zoo.core.catalogue import card_markdown, trained_names
    names = trained_names() if name == "all" else [name]
    stale = []
    for n in names:
        text = card_markdown(CHECKPOINTS / n)
        path = CHECKPOINTS / n / "README.md"
        if args.check:
            if not path.is_file() or path.read_text() != text:
                stale.append(n)
        else:
            path.write_text(text)
            print(f"wrote {path}")
    if stale:
        fail(f"model cards not as their files give them: {', '.join(stale)}; run "
             f"'python benchmarks/trained_models.py card all'")


def pending(name: str, args) -> None:
    """Print the recipes not yet committed as trained models, one line (what the GPU checklist trains on)."""
    print(" ".join(n for n in RECIPES if not (CHECKPOINTS / n / "card.json").is_file()))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("step", choices=("train", "export", "score", "card", "pending"))
    p.add_argument("name", nargs="?", default="all", help="a trained model's name (RECIPES), or 'all' for card")
    p.add_argument("--data-dir", default="../shared/data")
    p.add_argument("--runs-dir", default="runs/trained")
    p.add_argument("--limit", type=int, default=1000, help="score: the fixed test subset's size (default 1000)")
    p.add_argument("--temperatures", default="500", help="score: AIS's numbers of temperatures (default 500)")
    p.add_argument("--chains", type=int, default=16, help="score: chains per datum (default 16)")
    p.add_argument("--bdmc-data", type=int, default=100, help="score: BDMC's simulated data (0: no BDMC)")
    p.add_argument("--bdmc-temperatures", default="100,200,400")
    p.add_argument("--check", action="store_true", help="card: write nothing, fail where a card is stale")
    args = p.parse_args()
    {"train": train, "export": export, "score": score, "card": card, "pending": pending}[args.step](args.name, args)


if __name__ == "__main__":
    run_script(main)
