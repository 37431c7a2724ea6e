"""The ``pyro-zoo`` command line: list, train, eval, compare.

Every user mistake ends in one line on stderr, ``pyro-zoo: error: ...``, and exit code 2.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from pathlib import Path
from typing import List, Optional

from zoo.core.errors import ZooError

EPILOG = "Run 'pyro-zoo list' for the models, guides, objectives and datasets, and which combinations are valid."


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line and exit code 2."""

    def error(self, message):
        raise ZooError(f"{message} (see '{self.prog} --help')")


def _ints(text: str) -> List[int]:
    try:
        return [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def _names(text: str) -> List[str]:
    names = [t.strip() for t in text.split(",") if t.strip()]
    if not names:
        raise argparse.ArgumentTypeError("expected at least one name")
    return names


def _add_run_options(p: argparse.ArgumentParser, particles: bool = True) -> None:
    g = p.add_argument_group("data and model")
    g.add_argument("--dataset", default=None, help="dataset name (default: digits)")
    g.add_argument("--data-dir", default=None,
                   help="folder (or .npz) holding binarized MNIST; default $PYRO_ZOO_DATA or ~/.cache/pyro-zoo")
    g.add_argument("--latent-dim", type=int, default=None, help="number of latent units")
    g.add_argument("--hidden", type=_ints, default=None, help="decoder hidden sizes, e.g. 200,200")
    g.add_argument("--likelihood", choices=("bernoulli", "gaussian"), default=None,
                   help="VAE likelihood (default: bernoulli for binary data, else gaussian)")
    g.add_argument("--layers", type=_ints, default=None, help="sbn stochastic layer sizes, bottom to top (default 200)")
    g.add_argument("--num-variables", type=int, default=None, help="categorical_vae: number of categorical latents (20)")
    g.add_argument("--num-classes", type=int, default=None, help="categorical_vae: classes per latent (10)")
    g.add_argument("--guide-hidden", type=_ints, default=None, help="encoder hidden sizes (default: mirror decoder)")
    g.add_argument("--flows", type=int, default=None, help="number of IAF steps for the iaf guide (default 2)")
    g.add_argument("--baseline", choices=("none", "decaying", "neural"), default=None,
                   help="score-function baseline for discrete sites under tracegraph (default none)")
    g.add_argument("--temperature", type=float, default=None, help="relaxed guide: initial temperature (1.0)")
    g.add_argument("--temperature-min", type=float, default=None, help="relaxed guide: annealing floor (0.5)")
    g.add_argument("--anneal-rate", type=float, default=None,
                   help="relaxed guide: r in tau = max(tau_min, tau_0 exp(-r step)) (default 0)")
    g.add_argument("--straight-through", action="store_true", default=None,
                   help="relaxed guide: hard samples forward, soft gradients backward")
    t = p.add_argument_group("training")
    if particles:
        t.add_argument("--particles", type=int, default=None, help="K particles per datum (default: 1; 5 for iwae/renyi)")
    t.add_argument("--alpha", type=float, default=None, help="Renyi order for renyi / renyi_pyro (default 0)")
    t.add_argument("--insomnia", type=float, default=None,
                   help="rws: weight of wake-phi against sleep-phi for the guide (default 1)")
    t.add_argument("--epochs", type=int, default=None, help="training epochs (default 20)")
    t.add_argument("--batch-size", type=int, default=None, help="minibatch size (default 100)")
    t.add_argument("--lr", type=float, default=None, help="Adam learning rate (default 1e-3)")
    t.add_argument("--seed", type=int, default=None, help="random seed (default 0)")
    t.add_argument("--device", default=None, help="auto (default), cpu or cuda; cuda without a GPU is an error")
    t.add_argument("--checkpoint-every", type=int, default=None,
                   help="also checkpoint every N steps (default: after every epoch only)")
    t.add_argument("--clip-grad", type=float, default=None, help="clip the global gradient norm to this value")
    t.add_argument("--lr-decay", type=float, default=None, help="multiply the learning rate by this after each epoch")
    t.add_argument("--kl-warmup", type=int, default=None, metavar="EPOCHS",
                   help="KL annealing: weight the latent terms by beta rising linearly to 1 over EPOCHS epochs")
    t.add_argument("--adam-betas", type=float, nargs=2, default=None, metavar=("B1", "B2"),
                   help="Adam's betas (default 0.9 0.999)")
    t.add_argument("--adam-eps", type=float, default=None, help="Adam's epsilon (default 1e-8)")
    t.add_argument("--weight-decay", type=float, default=None,
                   help="decoupled weight decay (AdamW): shrink every parameter by lr * this each step (default: none)")
    t.add_argument("--jit", action="store_true", default=None,
                   help="trace the training step once with torch.jit.trace and replay it: the same estimator with "
                        "less Python per step (all objectives but dreg, rws_pyro and renyi_pyro)")
    t.add_argument("--keep-best", action="store_true", default=None,
                   help="evaluate the epoch with the best validation ELBO (saved as OUT/best.pt), not the last")
    t.add_argument("--tensorboard", action="store_true", default=None,
                   help="log losses, gradient norms, bounds and sample grids to OUT/tensorboard")
    t.add_argument("--distributed", action="store_true", default=None,
                   help="data-parallel training under torchrun (automatic when torchrun starts several ranks)")
    t.add_argument("--deterministic", action="store_true", default=None,
                   help="use torch's deterministic algorithms (see README: reproducibility)")
    e = p.add_argument_group("evaluation")
    e.add_argument("--eval-samples", type=int, default=None, help="importance samples K per datum (default 1000)")
    e.add_argument("--iwae-k", type=int, default=None, help="k of the reported IWAE-k bound (default 50)")
    e.add_argument("--eval-limit", type=int, default=None, help="evaluate on a fixed random subset of N data of the split (default: all)")
    e.add_argument("--refit-epochs", type=int, default=None,
                   help="epochs to fit a per-datum guide to the test data (default: max(--epochs, 50))")
    p.add_argument("--force", action="store_true", help="overwrite existing results in --out")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


RUN_FIELDS = ("dataset", "data_dir", "latent_dim", "hidden", "likelihood", "layers", "num_variables", "num_classes",
              "guide_hidden", "flows", "baseline", "temperature", "temperature_min", "anneal_rate",
              "straight_through", "particles", "alpha", "insomnia", "epochs", "batch_size", "lr", "seed", "device", "eval_samples", "iwae_k", "eval_limit", "refit_epochs", "checkpoint_every", "clip_grad",
              "lr_decay", "kl_warmup", "adam_betas", "adam_eps", "weight_decay", "jit", "keep_best", "deterministic", "distributed", "tensorboard")


def _config_from_args(args, base=None):
    from zoo.experiments.config import RunConfig
    config = base or RunConfig()
    given = {f: getattr(args, f) for f in RUN_FIELDS if getattr(args, f, None) is not None}
    if isinstance(given.get("particles"), list):
        del given["particles"]
    return dataclasses.replace(config, **given)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="pyro-zoo", description="Latent-variable models × guides × SVI objectives, "
                     "one evaluation harness.", epilog=EPILOG)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    sub.add_parser("list", help="models, guides, objectives, datasets and valid combinations")

    p = sub.add_parser("train", help="train one model/guide/objective and evaluate it")
    p.add_argument("model", nargs="?", help="model name (see 'pyro-zoo list')")
    p.add_argument("--guide", default=None, help="guide family (default: amortized)")
    p.add_argument("--objective", default=None, help="objective (default: elbo)")
    p.add_argument("--out", default=None, help="output folder (default: runs/MODEL-GUIDE-OBJECTIVE)")
    p.add_argument("--resume", default=None, metavar="DIR", help="continue the run in DIR from its checkpoint")
    _add_run_options(p)

    p = sub.add_parser("eval", help="re-evaluate a trained run folder")
    p.add_argument("dir", help="a run folder written by 'pyro-zoo train'")
    p.add_argument("--eval-samples", type=int, default=None)
    p.add_argument("--iwae-k", type=int, default=None)
    p.add_argument("--eval-limit", type=int, default=None)
    p.add_argument("--device", default=None)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--no-progress", action="store_true")

    p = sub.add_parser("compare", help="train and evaluate a grid of guides × objectives")
    p.add_argument("model", help="model name")
    p.add_argument("--guides", type=_names, required=True, help="comma-separated guide families")
    p.add_argument("--objectives", type=_names, required=True, help="comma-separated objectives")
    p.add_argument("--out", default=None, help="output folder (default: runs/compare-MODEL)")
    _add_run_options(p)

    p = sub.add_parser("gradients", help="bias, variance and SNR of gradient estimators at fixed parameters")
    p.add_argument("model", help="model name")
    p.add_argument("--guide", default="amortized", help="guide family (default: amortized)")
    p.add_argument("--objectives", type=_names, required=True, help="comma-separated objectives")
    p.add_argument("--particles", type=_ints, default=[1, 5, 50], dest="particles_list",
                   help="comma-separated K values (default 1,5,50)")
    p.add_argument("--repeats", type=int, default=100, help="gradient estimates per setting (default 100)")
    p.add_argument("--checkpoint", default=None, help="a run folder (or checkpoint.pt) to take parameters from")
    p.add_argument("--out", default=None, help="output folder (default: runs/gradients-MODEL-GUIDE)")
    _add_run_options(p, particles=False)
    return parser


def cmd_list(args) -> None:
    from zoo.registry import DATASETS, GUIDES, MODELS, OBJECTIVES, compatibility
    def section(title, table, describe):
        print(f"{title}:")
        for name, spec in table.items():
            print(f"  {name:<16} {describe(spec)}")
        print()
    section("models", MODELS, lambda s: s.description + (f"  [options: {', '.join(s.options)}]" if s.options else ""))
    section("guides", GUIDES, lambda s: s.description)
    from zoo.training.jit import JIT_OBJECTIVES
    section("objectives", OBJECTIVES, lambda s: s.description + ("  [--jit]" if s.name in JIT_OBJECTIVES else ""))
    section("datasets", DATASETS, lambda s: s.description)
    rows = compatibility()
    objectives = list(OBJECTIVES)
    print("valid combinations (model × guide: objectives; '-' = invalid):")
    for m in MODELS:
        for g in GUIDES:
            ok = [o for (mm, gg, o, why) in rows if mm == m and gg == g and why is None]
            if ok:
                print(f"  {m:<6} × {g:<10} {', '.join(ok) if len(ok) < len(objectives) else 'all objectives'}")
            else:
                why = next(w for (mm, gg, o, w) in rows if mm == m and gg == g)
                print(f"  {m:<6} × {g:<10} -  ({why.split(';')[0]})")


def cmd_train(args) -> None:
    from zoo.training.checkpoint import load_checkpoint
    from zoo.experiments.config import RunConfig
    from zoo.experiments.run import train_run
    if args.resume:
        out = Path(args.resume)
        if args.out and Path(args.out) != out:
            raise ZooError("give the run folder once: --resume DIR (not also a different --out)")
        stored = RunConfig.from_json(load_checkpoint(out / "checkpoint.pt")["config"])
        identity = {k: getattr(args, k) for k in ("guide", "objective") if getattr(args, k)}
        if args.model:
            identity["model"] = args.model
        config = dataclasses.replace(_config_from_args(args, stored), **identity)
        summary = train_run(config, out, resume=True, progress=not args.no_progress)
        if summary.get("rank") == "worker":
            return
    else:
        if not args.model:
            raise ZooError("name a model, e.g. 'pyro-zoo train vae --guide amortized' (see 'pyro-zoo list')")
        config = dataclasses.replace(_config_from_args(args), model=args.model,
                                     guide=args.guide or "amortized", objective=args.objective or "elbo")
        out = Path(args.out or f"runs/{config.model}-{config.guide}-{config.objective}")
        summary = train_run(config, out, force=args.force, progress=not args.no_progress)
    if summary.get("rank") == "worker":         # a non-zero rank under torchrun: rank 0 reports
        return
    _print_summary([summary], out)


def cmd_eval(args) -> None:
    from zoo.experiments.run import evaluate_run
    summary = evaluate_run(Path(args.dir), eval_samples=args.eval_samples, iwae_k=args.iwae_k,
                           eval_limit=args.eval_limit,
                           device=args.device, data_dir=args.data_dir, progress=not args.no_progress)
    _print_summary([summary], Path(args.dir))


def cmd_compare(args) -> None:
    from zoo.experiments.compare import compare
    config = _config_from_args(args)
    out = Path(args.out or f"runs/compare-{args.model}")
    rows = compare(args.model, args.guides, args.objectives, config, out, force=args.force,
                   progress=not args.no_progress)
    _print_summary(rows, out, files=("compare.md", "compare.json", "compare.png"))


def _print_summary(rows, out: Path, files=("results.json", "results.md")) -> None:
    from zoo.evaluation.tables import results_markdown
    print(results_markdown(rows))
    warnings = [r["psis_warning"] for r in rows if r.get("psis_warning")]
    for w in warnings:
        print(f"warning: {w}")
    print(f"wrote {', '.join(str(out / f) for f in files)}")


def cmd_gradients(args) -> None:
    from zoo.evaluation.tables import gradients_markdown
    from zoo.experiments.gradients import gradients_run
    config = _config_from_args(args)
    out = Path(args.out or f"runs/gradients-{args.model}-{args.guide}")
    result = gradients_run(args.model, args.guide, args.objectives, args.particles_list, args.repeats, config, out,
                           checkpoint=args.checkpoint, force=args.force)
    print(gradients_markdown(result))
    print(f"wrote {out / 'gradients.md'}, {out / 'gradients.json'}, {out / 'gradients.png'}")


COMMANDS = {"list": cmd_list, "train": cmd_train, "eval": cmd_eval, "compare": cmd_compare, "gradients": cmd_gradients}


def main(argv: Optional[List[str]] = None) -> int:
    import warnings
    warnings.filterwarnings("ignore", message=".*ArviZ is undergoing a major refactor.*")
    try:
        args = build_parser().parse_args(argv)
        COMMANDS[args.command](args)
    except ZooError as e:
        print(f"pyro-zoo: error: {e}", file=sys.stderr)
        return ZooError.exit_code
    except KeyboardInterrupt:
        print("pyro-zoo: interrupted; the last checkpoint is intact (resume with --resume DIR)", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # the reader closed the pipe (`pyro-zoo list | head`): stop quietly, as Unix tools do;
        # point stdout at devnull so that the interpreter's final flush does not raise again
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    return 0


if __name__ == "__main__":
    sys.exit(main())
