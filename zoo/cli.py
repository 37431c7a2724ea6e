"""The ``pyro-zoo`` command line: list, train, eval, compare, gradients, compress, report, docs, homework, grade.

Every user mistake ends in one line on stderr, ``pyro-zoo: error: ...``, and exit code 2.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from pathlib import Path
from typing import List, Optional

from zoo.core.errors import ZooError


class _Flags:
    """:mod:`zoo.flags`, imported on first use: it loads torch, and :func:`main` handles SIGINT/SIGTERM first."""

    def __getattr__(self, name):
        from zoo import flags as module
        return getattr(module, name)


flags = _Flags()

MODEL_HELP = ("model name (see 'pyro-zoo list'), or your own Pyro model as FILE.py:NAME (a model function "
              "model(x, idx=None, N=None), or a factory NAME(x_dim) returning one; see zoo.from_pyro)")
GUIDE_HELP = ("guide family (see 'pyro-zoo list'), or your own Pyro guide as FILE.py:NAME (a guide function "
              "guide(x, idx=None, N=None), or a factory NAME(model) returning one; see zoo.from_pyro_guide)")
OBJECTIVES_HELP = "comma-separated objectives: registered names, or BOUND:ESTIMATOR for any valid pair (iwae:dreg)"
EPILOG = "Run 'pyro-zoo list' for the models, guides, objectives and datasets, and which combinations are valid."


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line and exit code 2."""

    def error(self, message):
        raise ZooError(f"{message} (see '{self.prog} --help')")



def build_parser() -> argparse.ArgumentParser:
    """The parser; every option flag is generated from the registry and RunConfig (:mod:`zoo.flags`)."""
    parser = _Parser(prog="pyro-zoo", description="Latent-variable models × guides × SVI objectives, "
                     "one evaluation harness.", epilog=EPILOG)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("list", help="models, guides, objectives, datasets and valid combinations; with a model "
                       "and train's options, the runs train accepts")
    p.add_argument("model", nargs="?", help=MODEL_HELP + "; with it, list checks each run of it (every guide and "
                   "objective, or those named) with the options given, as 'pyro-zoo train' does before it trains")
    p.add_argument("--guide", default=None, help=GUIDE_HELP + " (default: every registered guide family)")
    p.add_argument("--objective", default=None, help="objective (default: every registered objective)")
    flags.add_run_flags(p)
    flags.add_component_flags(p)

    p = sub.add_parser("train", help="train one model/guide/objective and evaluate it")
    p.add_argument("model", nargs="?", help=MODEL_HELP)
    p.add_argument("--guide", default=None, help=GUIDE_HELP + " (default: amortized)")
    p.add_argument("--objective", default=None, help="objective (default: elbo)")
    p.add_argument("--out", default=None, help="output folder (default: runs/MODEL-GUIDE-OBJECTIVE)")
    p.add_argument("--resume", default=None, metavar="DIR", help="continue the run in DIR from its checkpoint")
    _add_common(p)

    p = sub.add_parser("eval", help="re-evaluate a trained run folder, or a trained model by name")
    p.add_argument("dir", help="a run folder written by 'pyro-zoo train', or a trained model's name ('pyro-zoo list' "
                   "names them), evaluated in a copy (--out)")
    p.add_argument("--out", default=None, metavar="DIR", help="with a trained model's name: the run folder to evaluate "
                   "it in, a new one or one made so before (default runs/NAME)")
    p.add_argument("--gaps", action="store_true",
                   help="the inference-suboptimality split (Cremer et al. 2018) of an amortized run: refit a per-datum "
                        "guide of the same family to convergence on the evaluation data and report log p(x), "
                        "ELBO[q*], ELBO[q amortized], the approximation and the amortization gap (DIR/gaps.json, .md)")
    flags.add_run_flags(p, only=("eval_samples", "iwae_k", "eval_proposal", "eval_limit", "refit_epochs", "refit_tol",
                                 "device", "data_dir"))
    p.add_argument("--model", default=None, metavar="FILE.py:NAME",
                   help="the model file of a run trained on one: a run folder's files are never imported, so name it "
                        "here; it must be the file the run was made with (same SHA-256)")
    p.add_argument("--guide", default=None, metavar="FILE.py:NAME",
                   help="the guide file of a run trained on one, named as --model is (same SHA-256)")
    p.add_argument("--force", action="store_true", help="replace the run's results even by a weaker evaluation "
                   "(fewer samples K, fewer data, or another estimator; without it such an evaluation is refused)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    ais = p.add_argument_group("annealed importance sampling (zoo.evaluation.ais, zoo.evaluation.bdmc)")
    ais.add_argument("--estimator", choices=("is", "ais", "bdmc", "smc"), default="is",
                     help="is: importance sampling, results.json (default); ais: annealed importance sampling of the "
                          "evaluation data, ais.json beside it (with --gaps: AIS from the refitted q* is the gaps' "
                          "log p(x)); bdmc: forward and reverse AIS on data simulated from the model, bounding "
                          "log p(x) from both sides, bdmc.json; smc: sequential Monte Carlo with adaptive tempering "
                          "and resampling, its SE from independent replicas, smc.json (it takes --leapfrog, --ais-path, "
                          "--ais-precondition and --ais-batch-size too)")
    ais.add_argument("--temperatures", type=flags.ints, default=None, metavar="T[,T...]",
                     help="AIS: numbers of temperatures, each run on the same data (default 500); BDMC: the Ts whose "
                          "gaps are shown (default 100,200,400)")
    ais.add_argument("--chains", type=int, default=None, help="AIS chains per datum (default 16)")
    ais.add_argument("--leapfrog", type=int, default=None, help="HMC leapfrog steps per transition, and rounds of local moves of a discrete site too large for Gibbs (default 10)")
    ais.add_argument("--ais-path", choices=("guide", "prior"), default=None,
                     help="where the annealing starts: the guide q(z|x) (default) or the prior p(z); SMC: where its first run "
                          "starts (the second starts from the other)")
    ais.add_argument("--ais-precondition", choices=("transport", "diagonal", "none"), default=None,
                     help="the coordinates HMC moves in on the guide's path: the guide's own reparameterization "
                          "(transport, default), its per-datum mean and scale (diagonal), or the latents' own "
                          "unconstrained ones (none)")
    ais.add_argument("--ais-guide-moves", action="store_true", default=None,
                     help="AIS and BDMC: at every temperature also propose the whole state from the guide, accepted by "
                          "Metropolis-Hastings (always done where the model has discrete latents): chains that HMC "
                          "cannot move out of a part of the space the posterior barely weighs jump where the guide "
                          "puts mass; about a third more time, and a guide that can score a state")
    ais.add_argument("--ais-batch-size", type=int, default=None, help="data per AIS tensor program (default 100)")
    ais.add_argument("--bdmc-data", type=int, default=None, help="BDMC: data simulated from the model (default 100)")
    ais.add_argument("--replicas", type=int, default=None,
                     help="independent replicas per datum from different starts and seeds; a datum is called "
                          "reliable only where they agree and each passes its own checks, each flag with its reason. "
                          "AIS: from the guide, the prior, the widened guide, the prior; the estimate is theirs "
                          "pooled, flags in ais_per_datum.npz (default 4; 1: one run, judged by its weights' ESS "
                          "alone). IS: from the guide, the prior, the defensive mixture, the prior, the widened guide, "
                          "each with K = --eval-samples; results.json's 'replicas' and per_datum.npz's replicas_* "
                          "beside the usual figures (default 1: the harness alone). SMC: whole runs, from --ais-path's "
                          "start and then the other's, each with --smc-replicas copies; pooled, flags in "
                          "smc_per_datum.npz (default 2; 1: one run, judged by its copies alone)")
    ais.add_argument("--sum-discrete", choices=("auto", "off"), default="auto",
                     help="AIS and SMC: sum the model's local discrete latents out exactly where it allows (Pyro's "
                          "parallel enumeration; the forward algorithm on a chain under pyro.markov) and anneal the "
                          "real latents alone (auto, default; the result says what was summed, or why nothing was), "
                          "or sample them as latents (off)")
    smc = p.add_argument_group("sequential Monte Carlo (zoo.evaluation.smc)")
    smc.add_argument("--smc-particles", type=int, default=None, metavar="N",
                     help=f"SMC: particles per datum and copy (default {SMC_DEFAULTS['num_particles']})")
    smc.add_argument("--smc-replicas", type=int, default=None, metavar="R",
                     help=f"SMC: independent copies per datum within one run, from its start, whose spread is its SE "
                          f"(default {SMC_DEFAULTS['num_replicas']}; --replicas sets the runs from different starts)")
    smc.add_argument("--smc-target-ess", type=float, default=None, metavar="F",
                     help=f"SMC: the conditional ESS, a fraction of the particles, each temperature is chosen to keep "
                          f"(default {SMC_DEFAULTS['target_ess']}; nearer 1: more temperatures)")
    smc.add_argument("--smc-moves", type=int, default=None, metavar="M",
                     help=f"SMC: MCMC moves per temperature (default {SMC_DEFAULTS['num_moves']})")

    p = sub.add_parser("compare", help="train and evaluate a grid of guides × objectives at one or more seeds")
    p.add_argument("model", nargs="?", help=MODEL_HELP)
    p.add_argument("--guides", type=flags.names, help="comma-separated guide families and your "
                   "own Pyro guides as FILE.py:NAME, or 'all': every family that fits the model")
    p.add_argument("--objectives", type=flags.names, help=OBJECTIVES_HELP + ", or 'all': every "
                   "registered objective that fits (with --guides all, the grid 'pyro-zoo list' calls valid; "
                   "the cells that do not fit are skipped and listed in compare.md)")
    p.add_argument("--out", default=None, help="output folder (default: runs/compare-MODEL)")
    p.add_argument("--seeds", type=flags.ints, default=None, help="comma-separated seeds: every cell trains at "
                   "each (paired: the same minibatch order per seed); compare.md gives mean ± SE and paired CIs")
    p.add_argument("--repeats", type=int, default=None, metavar="N", help="seeds 0..N-1 (as --seeds)")
    p.add_argument("--latents", type=flags.names, default=None, help="comma-separated latent families, e.g. "
                   "gaussian,vmf,wrapped-normal: the grid once per family (each cell's --latent), side by side")
    p.add_argument("--baseline-cell", default=None, metavar="GUIDE/OBJECTIVE", help="the cell the paired "
                   "differences are taken from (default: the first; LATENT/GUIDE/OBJECTIVE with --latents)")
    p.add_argument("--resume", default=None, metavar="OUT", help="finish the grid in OUT: keep its finished cells, "
                   "resume interrupted ones from their checkpoints, train missing ones")
    p.add_argument("--workers", type=int, default=1, metavar="N", help="train N cells at once on this machine, "
                   "each with cores // N threads (default 1)")
    p.add_argument("--engine", default="serial", choices=("serial", "ray"), help="where cells train: here "
                   "(serial, or --workers), or as Ray tasks (pip install \"pyro-zoo[ray]\")")
    p.add_argument("--address", default=None, metavar="auto|ray://HOST:PORT", help="the Ray cluster to join "
                   "(default: a local Ray instance)")
    _add_common(p)

    p = sub.add_parser("gradients", help="bias, variance and SNR of gradient estimators at fixed parameters")
    p.add_argument("model", nargs="?", help=MODEL_HELP + " (with --fixed-model or --checkpoint: that run's)")
    p.add_argument("--guide", default=None, help=GUIDE_HELP + " (default: --checkpoint's run's, else amortized)")
    p.add_argument("--objectives", type=flags.names, required=True, help=OBJECTIVES_HELP)
    p.add_argument("--particles", type=flags.ints, default=[1, 5, 50], dest="particles_list",
                   help="comma-separated K values (default 1,5,50)")
    p.add_argument("--repeats", type=int, default=100, help="gradient estimates per setting (default 100)")
    p.add_argument("--checkpoint", default=None, help="a run folder (or checkpoint.pt), or a trained model's name, "
                   "to take parameters from")
    p.add_argument("--out", default=None, help="output folder (default: runs/gradients-MODEL-GUIDE)")
    _add_common(p, exclude=("particles",))

    p = sub.add_parser("compress", help="lossless compression of a split with a trained run: bits-back ANS "
                       "(BB-ANS), decoded and checked bit-exact, beside the -ELBO, gzip, bz2, lzma and PNG")
    p.add_argument("dir", help="a run folder written by 'pyro-zoo train' (discrete data: a Bernoulli or k-level "
                   "likelihood, an amortized guide), or a trained model's name, coded in its copy runs/NAME")
    p.add_argument("--split", choices=("train", "valid", "test"), default="test", help="the split to code (default test)")
    p.add_argument("--limit", type=int, default=None, help="code a fixed random subset of this many rows")
    p.add_argument("--out", default=None, help="the code file (default: DIR/compressed-SPLIT.pzbb; with --decode: "
                   "an .npy file for the decoded rows): a new file or one this command wrote, never another file")
    p.add_argument("--latent-bits", type=int, default=12, help="b: 2^b bins of equal prior mass per real latent "
                   "unit (default 12)")
    p.add_argument("--decode", default=None, metavar="FILE", help="decode FILE with the run and verify it instead")
    p.add_argument("--model", default=None, metavar="FILE.py:NAME", help="the model file of a run trained on one")
    p.add_argument("--guide", default=None, metavar="FILE.py:NAME", help="the guide file of a run trained on one")
    p.add_argument("--data-dir", default=None, help="where the run's data set is, where not where it was trained "
                   "(default: the folder the run was trained with, where that path exists from the current "
                   "directory; else $PYRO_ZOO_DATA)")

    p = sub.add_parser("report", help="render the leaderboard (LEADERBOARD.md, best run per model, guide and "
                       "objective, with training plots) and the archive of every run (README.md) from result files")
    p.add_argument("dir", help="a folder of *.json result files (e.g. benchmarks/results), or of your own run "
                   "folders from 'pyro-zoo train' / 'compare'; its README.template.md and report.json (data: "
                   "published figures, headline runs, tables; zoo.evaluation.report_config), if any, shape the pages")
    p.add_argument("--out", default=None, help="where to write: the archive page PAGE.md, or a folder (its "
                   "README.md); the leaderboard and its plots go beside it (default: DIR/README.md for a folder of "
                   "result files; reports/NAME/ in the current directory for your own run folders, never into them)")
    p.add_argument("--readme", default=None, help="the README whose results block to rewrite (default: the "
                   "nearest README.md above DIR with a results block)")
    p.add_argument("--check", action="store_true",
                   help="write nothing; fail if the files differ from what would be written")
    p = sub.add_parser("docs", help="build the documentation site offline (from a source checkout; warnings are "
                       "errors); the full tutorials take many minutes: --setting ci is the small, fast build CI runs")
    p.add_argument("--out", default=None, help="output folder (default: docs/_build/html)")
    p.add_argument("--setting", choices=("ci", "full"), default="full",
                   help="the tutorials' setting: full (the lectures' figures, minutes of CPU per tutorial; default) "
                   "or ci (small and fast, what CI runs: --setting ci)")
    p.add_argument("--verbose", action="store_true", help="Sphinx's progress messages too")

    _add_homework(sub)
    return parser


def _add_homework(sub) -> None:
    """``homework list | init | solution | bundle`` and ``grade``; the logic is in :mod:`zoo.homework`."""
    p = sub.add_parser("homework", help="the homework kit: assignments, student folders, Gradescope bundles")
    hw = p.add_subparsers(dest="homework_command", required=True, parser_class=_Parser)
    hw.add_parser("list", help="the assignments, their points and checks")
    q = hw.add_parser("init", help="write a student's folder: handout.md, starter.py, selfcheck.py")
    q.add_argument("assignment", help="an assignment (see 'pyro-zoo homework list')")
    q.add_argument("dir", help="a new or empty folder")
    q = hw.add_parser("solution", help="write the instructor's reference solution.py (from a source checkout)")
    q.add_argument("assignment", help="an assignment (see 'pyro-zoo homework list')")
    q.add_argument("dir", help="a new or empty folder (not the students' folder)")
    q = hw.add_parser("bundle", help="write the Gradescope autograder zip (setup.sh, run_autograder, the frozen zoo)")
    q.add_argument("assignment", help="an assignment (see 'pyro-zoo homework list')")
    q.add_argument("zip", help="the zip to write, e.g. hw1-autograder.zip")
    _add_grading_flags(q)

    p = sub.add_parser("grade", help="grade a submission: a table of checks with points and reasons")
    p.add_argument("assignment", help="an assignment (see 'pyro-zoo homework list')")
    p.add_argument("submission", help="the student's .py file, or a folder holding one (Gradescope's "
                   "/autograder/submission)")
    p.add_argument("--json", default=None, metavar="FILE", help="also write the result as JSON (pyro-zoo's schema)")
    p.add_argument("--gradescope", action="store_true", help="write Gradescope's autograder results.json")
    p.add_argument("--results", default="results.json", metavar="FILE",
                   help="where --gradescope writes (default results.json; on Gradescope "
                        "/autograder/results/results.json)")
    p.add_argument("--seed", type=int, default=None,
                   help="the seed the checks' inputs are drawn from, to regrade reproducibly (default: a secret "
                        "one per grade, recorded in --json)")
    p.add_argument("--as-user", default=None, metavar="USER",
                   help="run the submission as this unprivileged user (needs root; the Gradescope bundle does)")
    p.add_argument("--unsafe-no-sandbox", action="store_true",
                   help="grade without the bubblewrap sandbox where none can be made (the submission then runs as "
                        "you, beside your files; see zoo/homework/INSTRUCTORS.md)")
    p.add_argument("--only", type=flags.names, default=None, help="comma-separated checks to run (default all)")
    _add_grading_flags(p)


def _add_grading_flags(p) -> None:
    p.add_argument("--hidden", action="store_true", help="run the hidden checks too (Gradescope: after_published)")
    p.add_argument("--points", type=_points, default=None, metavar="CHECK=P,...",
                   help="change checks' points, e.g. --points train_amortized=30,kl_closed_form=10")
    p.add_argument("--timeout-scale", type=float, default=1.0,
                   help="multiply every check's time limit (a slow grading machine; default 1)")


def _points(text: str):
    points = {}
    for item in text.split(","):
        name, sep, value = item.partition("=")
        try:
            points[name.strip()] = float(value)
        except ValueError:
            sep = ""
        if not sep or not name.strip():
            raise argparse.ArgumentTypeError(f"expected CHECK=POINTS,..., got {item!r}")
    return points


def _add_common(p: argparse.ArgumentParser, exclude=()) -> None:
    flags.add_run_flags(p)
    flags.add_component_flags(p, exclude=exclude)
    p.add_argument("--force", action="store_true", help="overwrite existing results in --out")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def _fixed_run(args):
    """The stored config of ``--fixed-model RUN|NAME``'s run, read as data (None without the flag): the model, its
    options and the data set of a run trained against it are that run's."""
    given = flags.given_run_settings(args).get("fixed_model")
    if given is None:
        return None
    from zoo.core.catalogue import is_trained_name, trained_folder
    from zoo.core.files import read_json
    from zoo.experiments.run_folder import read_stored_config
    from zoo.usercode.specs import is_file_spec
    folder = trained_folder(given) if is_trained_name(given) else Path(given)
    if not (folder / "config.json").is_file():
        raise ZooError(f"--fixed-model {given}: no trained run there (no config.json); give a run folder or a trained "
                       f"model's name ('pyro-zoo list' names them)")
    stored = read_json(folder / "config.json", "run config", fix="restore it or train the run again")
    model_file = args.model if getattr(args, "model", None) and is_file_spec(args.model) else None
    return read_stored_config(stored, str(folder / "config.json"), model_file, how="--model FILE.py:NAME")


def _inherited(stored, model: Optional[str], settings: dict, model_options: dict, args=None):
    """``(model, settings, model options)`` of a run's stored config where the command line leaves them out: its
    model and options, data set, split and data folder (an absolute one only: a relative one named the trainer's
    current folder). Where no model is named, the model options ``args`` gives are read as the stored model's (they
    were dropped). A clash (another model, other shapes) is refused when the weights load."""
    inherited = {key: getattr(stored, key) for key in ("dataset", "split", "split_seed", "levels", "covariates")
                 if getattr(stored, key) is not None}
    if stored.data_dir and Path(stored.data_dir).is_absolute():
        inherited["data_dir"] = stored.data_dir
    if not model and args is not None:
        model_options = {**flags.given_options(args, "model", [stored.model]), **model_options}
    return model or stored.model, {**inherited, **settings}, {**stored.model_options, **model_options}


def _with_fixed(args, model: Optional[str], settings: dict, model_options: dict):
    """``(model, settings, model options)`` with what ``--fixed-model`` decides filled in: its run's model, model
    options, data set, split and data folder (an absolute one: a relative one named the trainer's current folder,
    so ``--data-dir`` or ``$PYRO_ZOO_DATA`` says where the data are) where the command line leaves them out (a
    clash is refused when it loads)."""
    fixed = _fixed_run(args)
    if fixed is None:
        return model, settings, model_options
    return _inherited(fixed, model, settings, model_options, args)


def _config(args, model: str, guide: str, objective: str, base=None):
    """A RunConfig from the command line (over ``base``, a resumed run's stored config)."""
    from zoo.experiments.config import RunConfig
    from zoo.rules import check_data_dir
    settings = flags.given_run_settings(args)
    given_model_options = flags.given_options(args, "model", [model]) if model else {}
    if base is None:
        model, settings, given_model_options = _with_fixed(args, model, settings, given_model_options)
        if not model:
            raise ZooError("name a model, e.g. 'pyro-zoo train vae --guide amortized' (see 'pyro-zoo list'), or a "
                           "trained one to hold fixed with --fixed-model NAME")
    check_data_dir(settings.get("dataset") or (base.dataset if base else RunConfig.dataset), settings.get("data_dir"))
    options = {f"{kind}_options": {**(getattr(base, f"{kind}_options") if base else {}),
                                   **(given_model_options if kind == "model" else flags.given_options(args, kind, [name]))}
               for kind, name in (("model", model), ("guide", guide), ("objective", objective))}
    if base is None:
        return RunConfig(model=model, guide=guide, objective=objective, **settings, **options)
    return dataclasses.replace(base, model=model, guide=guide, objective=objective, **settings, **options)


def model_label(model: str) -> str:
    """The model's name in default folder names: ``FILE.py:NAME`` gives ``NAME``."""
    from zoo.usercode.specs import spec_label
    return spec_label(model)


def cmd_list(args) -> None:
    if args.model:
        _list_runs(args)
        return
    list_registry()
    print()
    from zoo.core.catalogue import catalogue_text     # read afresh: the folder of weights changes without the code
    sys.stdout.write(catalogue_text())


def list_registry() -> None:
    """A bare ``list``'s sections that only the code decides: components, valid combinations, rules."""
    from zoo.registry import DATASETS, GUIDES, MODELS, OBJECTIVES
    from zoo.rules import compatibility, rules_text

    def section(title, table, describe):
        print(f"{title}:")
        for name, component in table.items():
            print(f"  {name:<16} {describe(component)}")
        print()

    def with_options(kind):
        def describe(c):
            opts = flags.component_summary(kind, c.name)
            return c.description + (f"  [{opts}]" if opts else "")
        return describe
    section("models", MODELS, with_options("model"))
    section("guides", GUIDES, with_options("guide"))
    _list_objectives(OBJECTIVES, with_options("objective"))
    section("datasets", DATASETS, lambda c: c.description)
    rows = compatibility()
    objectives = list(OBJECTIVES)
    print("valid combinations at the default options, for any data (model × guide: objectives; '-' = invalid);")
    print("'pyro-zoo list MODEL [--guide G] [--objective O] [train's options]' checks runs on their data as train does:")
    for m in MODELS:
        for g in GUIDES:
            ok = [o for (mm, gg, o, why) in rows if mm == m and gg == g and why is None]
            if ok:
                print(f"  {m:<6} × {g:<10} {', '.join(ok) if len(ok) < len(objectives) else 'all objectives'}")
            else:
                why = next(w for (mm, gg, o, w) in rows if mm == m and gg == g)
                print(f"  {m:<6} × {g:<10} -  ({why.split(';')[0]})")
    print()
    print("rules each command checks besides the combinations (zoo.rules.RULES), in the words it refuses a run with:")
    print(rules_text())


def run_verdict(args, model: str, guide: str, objective: str, data) -> Optional[str]:
    """What ``pyro-zoo train MODEL --guide GUIDE --objective OBJECTIVE`` with the flags of ``args`` says before it
    trains, on ``data`` (the run's dataset): ``None`` if it accepts the run, else its one-line error."""
    from zoo.experiments.config import resolve_device
    from zoo.rules import verdict
    try:
        config = _config(args, model, guide, objective)
        error = verdict(config, data, resolve_device(config.device))
    except ZooError as e:
        error = e
    return None if error is None else flags.translate(error)


def _list_runs(args) -> None:
    """``pyro-zoo list MODEL ...``: which runs of MODEL train accepts with the options given (:func:`run_verdict`)."""
    from zoo.data import FILE_OPTIONS, load_dataset
    from zoo.experiments.config import RunConfig
    from zoo.registry import GUIDES, OBJECTIVES
    from zoo.rules import check_data_dir
    settings = flags.given_run_settings(args)
    dataset = settings.get("dataset", RunConfig.__dataclass_fields__["dataset"].default)
    check_data_dir(dataset, settings.get("data_dir"))
    data = load_dataset(dataset, settings.get("data_dir"), **{k: settings.get(k) for k in FILE_OPTIONS})
    guides = [args.guide] if args.guide else list(GUIDES)
    objectives = [args.objective] if args.objective else list(OBJECTIVES)
    verdicts = {(g, o): run_verdict(args, args.model, g, o, data) for g in guides for o in objectives}
    if len(verdicts) == 1:
        (g, o), error = next(iter(verdicts.items()))
        run = f"{args.model} × {g} × {o} on dataset {dataset!r}"
        print(f"valid: train accepts {run}" if error is None else f"invalid: {run}: {error}")
        return
    print(f"runs of {args.model} on dataset {dataset!r} with the options given (guide: the objectives train accepts; "
          f"'-' = none); name --guide and --objective for the reason a run is refused:")
    for g in guides:
        ok = [o for o in objectives if verdicts[g, o] is None]
        if ok:
            print(f"  {g:<10} {', '.join(ok) if len(ok) < len(objectives) else 'all objectives'}")
        else:
            print(f"  {g:<10} -  ({verdicts[g, objectives[0]]})")


def _list_objectives(objectives, describe) -> None:
    """Bounds with their --estimator choices and what each needs; then the presets, one pair each."""
    from zoo.objectives import bounds, preset_of
    print("objectives: a bound and its gradient estimator (--objective BOUND --estimator NAME)")
    named = {preset_of(n): n for n in objectives if objectives[n].capability("preset") is not None}
    for bound in bounds():
        print(f"  {bound:<16} {describe(objectives[bound])}")
        for name, caps in objectives[bound].capability("estimators").items():
            notes = [text for flag, text in (
                (name == objectives[bound].capability("default_estimator"), "default"),
                ((bound, name) in named, f"preset {named.get((bound, name))!r}"),
                (caps.needs_reparam, "reparameterizable guide"), (caps.needs_enumeration, "small discrete latents"),
                (caps.needs_bernoulli_latents and caps.structured_bernoulli_layers, "binary latents, a pair per layer "
                 "where the guide is structured"),
                (caps.needs_bernoulli_latents and caps.several_bernoulli_layers and not caps.structured_bernoulli_layers,
                 "binary latents, q of each layer from x alone"),
                (caps.needs_bernoulli_latents and not caps.several_bernoulli_layers, "one layer of binary latents"),
                (caps.needs_categorical_latents, "one layer of categorical latents"),
                (not (caps.needs_reparam or caps.needs_enumeration or caps.needs_bernoulli_latents
                      or caps.needs_categorical_latents), "any latents"),
                (caps.needs_normal_guide, "Normal guide sites"), (caps.min_particles > 1, f"K >= {caps.min_particles}"),
                (caps.jit, "--jit"), (caps.ddp, "--distributed")) if flag]
            print(f"    --estimator {name:<12} {caps.description}  [{', '.join(notes)}]")
    print("presets (a bound with its estimator fixed; each takes its bound's options but --estimator):")
    for name in objectives:
        if objectives[name].capability("preset") is not None:
            bound, estimator = preset_of(name)
            print(f"  {name:<16} = --objective {bound} --estimator {estimator}")
    print()


def cmd_train(args) -> None:
    from zoo.experiments.run import train_run
    if args.resume:
        from zoo.experiments.run_folder import open_run
        from zoo.usercode.specs import is_file_spec
        out = Path(args.resume)
        if args.out and Path(args.out) != out:
            raise ZooError("give the run folder once: --resume DIR (not also a different --out)")
        model_file = args.model if is_file_spec(args.model) else None
        guide_file = args.guide if is_file_spec(args.guide) else None
        loaded = open_run(out, model_file, how=f"pyro-zoo train FILE.py:NAME --resume {out}",
                          guide_file=guide_file, guide_how=f"pyro-zoo train --guide FILE.py:NAME --resume {out}")
        stored = loaded.config
        config = _config(args, stored.model if model_file or not args.model else args.model,
                         args.guide or stored.guide, args.objective or stored.objective, base=stored)
        summary = train_run(config, out, resume=loaded, progress=not args.no_progress)
    else:
        config = _config(args, args.model, args.guide or "amortized", args.objective or "elbo")
        out = Path(args.out or f"runs/{model_label(config.model)}-{model_label(config.guide)}-{config.objective}")
        summary = train_run(config, out, force=args.force, progress=not args.no_progress)
    if summary.get("rank") == "worker":         # a non-zero rank under torchrun: rank 0 reports
        return
    _print_summary([summary], out)


def _run_folder(spec: str, out: Optional[str] = None) -> Path:
    """The run folder a command that writes into one works in: ``spec`` itself, or for a trained model's name
    (:mod:`zoo.core.catalogue`) its working copy ``out`` (default runs/NAME), so the committed weights stay as
    they are. A working copy this call makes is recorded in :data:`_MADE_COPIES` (see :func:`_undo_fresh_copies`)."""
    from zoo.core.catalogue import is_trained_name, neither_folder_nor_name, working_copy
    if not is_trained_name(spec):
        if not os.path.lexists(spec) and os.sep not in spec:     # a bare word: a name mistyped, most likely
            raise neither_folder_nor_name(spec)
        if out is not None:
            raise ZooError(f"--out names the folder to evaluate a trained model in; {spec} is a run folder, evaluated "
                           f"in place: leave out --out")
        return Path(spec)
    target = Path(out or f"runs/{spec}")
    top = target                            # the highest folder of the path that this call will make
    while not os.path.lexists(top.parent) and top.parent != top:
        top = top.parent
    fresh = not os.path.lexists(target)
    folder = working_copy(spec, target)
    if fresh:
        _MADE_COPIES.append((folder, top))
    return folder


#: the working copies of trained models this command made, each with the highest folder it made for it
_MADE_COPIES: List[tuple] = []
#: what a working copy holds before its command writes anything of its own (the writer's lock comes and goes)
_COPY_ONLY = {"config.json", "checkpoint.pt", ".pyro-zoo.lock"}


def _undo_fresh_copies() -> None:
    """After a command failed: remove each working copy it made that still holds only the copied config and
    weights, and the folders made to hold it, so a refused command leaves no folder behind. A copy holding anything
    the command wrote (AIS's kept batches, to resume from) is left as it is."""
    import shutil
    while _MADE_COPIES:
        folder, top = _MADE_COPIES.pop()
        try:
            if folder.is_dir() and not folder.is_symlink() and {p.name for p in folder.iterdir()} <= _COPY_ONLY:
                shutil.rmtree(folder)
                while folder != top:            # and the folders made to hold it, each only where empty
                    folder = folder.parent
                    folder.rmdir()
        except OSError:
            pass


#: the defaults of eval's AIS and BDMC flags, filled in once a flag is known to be one the estimator uses
ANNEALING_DEFAULTS = {"chains": 16, "leapfrog": 10, "ais_path": "guide", "ais_batch_size": 100, "bdmc_data": 100}


def _annealing_flags(args) -> None:
    """Refuse, in one line, AIS and BDMC flags that the chosen estimator would ignore (--chains with the default
    --estimator is: its figures would not be what the command line says); then fill in the defaults."""
    names = ("temperatures", "chains", "leapfrog", "ais_path", "ais_precondition", "ais_guide_moves", "ais_batch_size",
             "bdmc_data")
    unused = {"is": names, "ais": ("bdmc_data",), "bdmc": (),
              "smc": ("temperatures", "chains", "ais_guide_moves", "bdmc_data")}[args.estimator]
    ignored = [n for n in unused if getattr(args, n) is not None]
    if ignored:
        flags_text = ", ".join("--" + n.replace("_", "-") for n in ignored)
        hint = ("add --estimator ais or bdmc" if args.estimator == "is" else "use --estimator bdmc for simulated data")
        raise ZooError(f"--estimator {args.estimator}{' (the default)' if args.estimator == 'is' else ''} does not use "
                       f"{flags_text}; leave {'them' if len(ignored) > 1 else 'it'} out, or {hint}")
    if args.replicas is not None and (args.estimator == "bdmc" or args.gaps):
        raise ZooError(f"--replicas sets IS's, AIS's and SMC's independent replicas; "
                       f"{'--gaps' if args.gaps else '--estimator bdmc'} takes none: leave it out")
    for name, value in ANNEALING_DEFAULTS.items():
        if getattr(args, name) is None:
            setattr(args, name, value)


def cmd_eval(args) -> None:
    from zoo.experiments.run import evaluate_run
    _annealing_flags(args)                  # refused before a trained model's working copy is made
    args.dir = str(_run_folder(args.dir, args.out))
    if args.gaps:
        from zoo.evaluation.gaps import gaps_markdown
        from zoo.experiments.gaps import gaps_run
        if args.estimator in ("bdmc", "smc"):
            raise ZooError(f"--gaps takes log p(x) from IS (default) or --estimator ais; run --estimator "
                           f"{args.estimator} on its own (without --gaps)")
        reference = None
        if args.estimator == "ais":
            from zoo.evaluation.ais import AnnealedImportanceSampling
            temperatures = args.temperatures or [500]
            if len(temperatures) != 1:
                raise ZooError("--gaps --estimator ais takes one number of temperatures (--temperatures T)")
            reference = AnnealedImportanceSampling(num_temperatures=temperatures[0], num_chains=args.chains,
                                                   leapfrog_steps=args.leapfrog, path=args.ais_path,
                                                   precondition=_precondition(args),
                                                   batch_size=args.ais_batch_size)
        summary = gaps_run(Path(args.dir), _invocation(args, flags.given_run_settings(args)), reference=reference)
        print(gaps_markdown(summary))
        print(f"wrote {', '.join(str(Path(args.dir) / f) for f in ('gaps.json', 'gaps.md', 'gaps_per_datum.npz'))}")
        return
    given_smc = [f for f in _SMC_FLAGS if getattr(args, f) is not None]
    if given_smc and args.estimator != "smc":
        raise ZooError(f"{', '.join('--' + f.replace('_', '-') for f in given_smc)} set sequential Monte Carlo; add "
                       f"--estimator smc, or leave them out")
    if args.estimator == "smc":
        _eval_smc(args)
        return
    if args.estimator != "is":
        _eval_annealed(args)
        return
    summary = evaluate_run(Path(args.dir), _invocation(args, flags.given_run_settings(args)),
                           replicas=1 if args.replicas is None else args.replicas)
    _print_summary([summary], Path(args.dir))
    if summary.get("replicas"):
        r = summary["replicas"]
        print(f"{r['replicas']} importance-sampling replicas (from {', '.join(r['starts'])}): pooled log p(x) "
              f"{r['pooled_log_likelihood']:.3f} ± {r['pooled_log_likelihood_se']:.3f}; {r['frac_flagged']:.1%} of "
              f"data flagged ({', '.join(f'{k} {v}' for k, v in r['flag_counts'].items()) or 'none'}); reasons per "
              f"datum in per_datum.npz (replicas_reasons)")


def _precondition(args) -> str:
    """``--ais-precondition``, which only the guide's path takes (default: the transport map)."""
    if args.ais_precondition is not None and args.ais_path != "guide":
        raise ZooError("--ais-precondition sets the coordinates of the chains on the guide's path; from the prior "
                       "they move in the latents' own: leave it out, or use --ais-path guide")
    return args.ais_precondition or "transport"


#: the flags of ``eval --estimator smc`` and the sampler's options they set
_SMC_FLAGS = {"smc_particles": "num_particles", "smc_replicas": "num_replicas", "smc_target_ess": "target_ess",
              "smc_moves": "num_moves"}
#: the sampler's defaults, as --help shows them (zoo.evaluation.smc.SequentialMonteCarlo)
SMC_DEFAULTS = {"num_particles": 64, "num_replicas": 4, "target_ess": 0.5, "num_moves": 2}


def _eval_smc(args) -> None:
    """``eval --estimator smc`` (zoo.experiments.sequential)."""
    from zoo.evaluation.smc import SequentialMonteCarlo
    from zoo.experiments.sequential import DEFAULT_SMC_RUNS, FILES, smc_markdown, smc_run
    settings = flags.given_run_settings(args)
    ignored = sorted(k for k in settings if k not in ("eval_limit", "device", "data_dir"))
    if ignored:
        raise ZooError(f"--estimator smc does not use {', '.join('--' + k.replace('_', '-') for k in ignored)}"
                       f"; leave them out (they set the importance-sampling evaluation)")
    if args.temperatures:
        raise ZooError("--estimator smc chooses its temperatures itself (adaptive tempering): leave out --temperatures, "
                       "and set --smc-target-ess for more or fewer")
    options = {option: getattr(args, flag) for flag, option in _SMC_FLAGS.items() if getattr(args, flag) is not None}
    smc = SequentialMonteCarlo(**{**SMC_DEFAULTS, **options}, leapfrog_steps=args.leapfrog, path=args.ais_path,
                               precondition=_precondition(args), batch_size=args.ais_batch_size)
    out = Path(args.dir)
    summary = smc_run(out, smc, _invocation(args, settings), sum_discrete=args.sum_discrete,
                      replicas=DEFAULT_SMC_RUNS if args.replicas is None else args.replicas)
    print(smc_markdown(summary))
    print(f"wrote {', '.join(str(out / f) for f in FILES)}")


def _invocation(args, settings: dict):
    """The :class:`~zoo.experiments.trained.Invocation` of an ``eval`` on a run folder: the run's settings it
    changes, the user's model and guide files, progress and ``--force``."""
    from zoo.experiments.trained import Invocation
    return Invocation(settings, model_file=args.model, guide_file=args.guide, progress=not args.no_progress,
                      force=args.force)


def _eval_annealed(args) -> None:
    """``eval --estimator ais|bdmc`` (zoo.experiments.annealed)."""
    from zoo.evaluation.ais import AnnealedImportanceSampling
    from zoo.experiments.annealed import ais_markdown, ais_run, bdmc_run
    from zoo.evaluation.bdmc import bdmc_markdown
    settings = flags.given_run_settings(args)
    ignored = sorted(k for k in settings if k not in ("eval_limit", "device", "data_dir"))
    if ignored:
        raise ZooError(f"--estimator {args.estimator} does not use {', '.join('--' + k.replace('_', '-') for k in ignored)}"
                       f"; leave them out (they set the importance-sampling evaluation)")
    # the sampler checks its options before any work
    sampler = AnnealedImportanceSampling(num_chains=args.chains, leapfrog_steps=args.leapfrog, path=args.ais_path,
                                         batch_size=args.ais_batch_size, precondition=_precondition(args),
                                         guide_moves=bool(args.ais_guide_moves))
    out = Path(args.dir)
    if args.estimator == "ais":
        summary = ais_run(out, sampler, args.temperatures, _invocation(args, settings),
                          replicas=4 if args.replicas is None else args.replicas, sum_discrete=args.sum_discrete)
        print(ais_markdown(summary))
        print(f"wrote {', '.join(str(out / f) for f in ('ais.json', 'ais.md', 'ais_per_datum.npz'))}")
        return
    if "eval_limit" in settings:
        raise ZooError("--estimator bdmc simulates its data (--bdmc-data N); leave out --eval-limit")
    if args.sum_discrete != "auto":
        raise ZooError("--estimator bdmc samples every latent (its reverse chains start at the simulated ones); leave "
                       "out --sum-discrete")
    summary = bdmc_run(out, sampler, args.temperatures, _invocation(args, settings), num_data=args.bdmc_data)
    print(bdmc_markdown(summary))
    print(f"wrote {out / 'bdmc.json'}, {out / 'bdmc.md'}")


def cmd_compare(args) -> None:
    from zoo.experiments.compare import Execution, Grid, compare, resume_compare
    from zoo.experiments.config import RunConfig
    execution = Execution(args.engine, args.workers, args.address, progress=not args.no_progress)
    if args.address and args.engine != "ray":
        raise ZooError("--address is the Ray cluster's: give it with --engine ray")
    if args.resume:
        given = [f"--{k.replace('_', '-')}" for k in ("guides", "objectives", "latents", "seeds", "repeats", "baseline_cell",
                                                          "out")
                 if getattr(args, k) is not None] + [f"--{k.replace('_', '-')}" for k in flags.given_run_settings(args)]
        if given or args.force:
            raise ZooError(f"--resume finishes the grid as OUT/grid.json records it; drop {', '.join(given or ['--force'])} "
                           f"(only --workers, --engine, --address and a model file may be given)")
        out = Path(args.resume)
        rows = resume_compare(out, model_file=args.model, execution=execution)
    else:
        model, settings, model_options = _with_fixed(
            args, args.model, flags.given_run_settings(args),
            flags.given_options(args, "model", [args.model]) if args.model else {})
        if not (model and args.guides and args.objectives):
            raise ZooError("name a model (or --fixed-model RUN|NAME), --guides and --objectives (e.g. 'pyro-zoo compare "
                           "vae --guides amortized,iaf --objectives elbo,iwae'), or finish a grid with --resume OUT")
        args.model = model
        seeds = _grid_seeds(args)
        from zoo.rules import check_data_dir
        check_data_dir(settings.get("dataset", RunConfig.dataset), settings.get("data_dir"))
        base = RunConfig(model=args.model, **settings, model_options=model_options)
        out = Path(args.out or f"runs/compare-{model_label(args.model)}")
        grid = Grid(args.model, args.guides, args.objectives, base, seeds or [], args.baseline_cell,
                    flags.given_options(args, "guide", args.guides),
                    flags.given_options(args, "objective", args.objectives), args.latents or [])
        rows = compare(grid, out, force=args.force, execution=execution)
    _print_compare(rows, out)


def _grid_seeds(args):
    """The seeds of a grid: --seeds, --repeats N (0..N-1) or --seed (one); only one of them."""
    seed = flags.given_run_settings(args).get("seed")
    named = [f for f, v in (("--seeds", args.seeds), ("--repeats", args.repeats), ("--seed", seed)) if v is not None]
    if len(named) > 1:
        raise ZooError(f"give one of {' and '.join(named)}: --seeds 0,1,2, --repeats 3 (seeds 0..2) or --seed S")
    if args.repeats is not None:
        if args.repeats < 1:
            raise ZooError(f"--repeats must be 1 or more, got {args.repeats}")
        return list(range(args.repeats))
    if args.seeds is not None and any(s < 0 or s > 2 ** 31 - 1 for s in args.seeds):
        raise ZooError("--seeds are seeds from 0 to 2147483647")
    return args.seeds


def _print_compare(rows, out: Path) -> None:
    from zoo.core.files import read_text
    from zoo.evaluation.tables import run_warnings
    print(read_text(out / "compare.md", "grid table"), end="")        # what the grid wrote, notes and all
    seeded = len({r["config"]["seed"] for r in rows}) > 1
    for r in rows:                      # each line names its cell (and seed)
        where = f"{model_label(r['config']['model'])}/{r['cell']}" + (f" seed {r['config']['seed']}" if seeded else "")
        if r.get("note"):
            print(f"note: {where}: {r['note']}")
        for warning in run_warnings(r):     # an unreliable NLL, a collapsed model
            print(f"warning: {where}: {warning}")
    print(f"wrote {', '.join(str(out / f) for f in ('compare.md', 'compare.json', 'compare.png'))}")


def _print_summary(rows, out: Path, files=("results.json", "results.md")) -> None:
    """The table of results.md (the papers' NLL convention, k-hat verdict, legend), then each run's note and
    warnings (an unreliable NLL, a collapsed model: zoo.evaluation.tables.run_warnings) on lines of their own."""
    from zoo.evaluation.tables import results_markdown, run_warnings
    print(results_markdown(rows, warnings=False))
    for r in rows:                      # in a grid, each line names its cell
        c = r["config"]
        estimator = (c.get("objective_options") or {}).get("estimator")
        cell = (f"{model_label(c['model'])}/{model_label(c['guide'])}/{c['objective']}" + (f":{estimator}" if estimator else "")
                + ": ") if len(rows) > 1 else ""
        if r.get("note"):
            print(f"note: {cell}{r['note']}")
        for warning in run_warnings(r):
            print(f"warning: {cell}{warning}")
    print(f"wrote {', '.join(str(out / f) for f in files)}")


def cmd_gradients(args) -> None:
    from zoo.evaluation.tables import gradients_markdown
    from zoo.experiments.gradients import GradientsPlan, checkpoint_for, gradients_run
    from zoo.experiments.config import RunConfig
    from zoo.core.catalogue import is_trained_name, trained_folder
    if args.checkpoint and is_trained_name(args.checkpoint):     # read, never written: the committed folder itself
        args.checkpoint = str(trained_folder(args.checkpoint))
    from zoo.rules import check_data_dir
    model, settings, model_options = _with_fixed(args, args.model, flags.given_run_settings(args),
                                                 flags.given_options(args, "model", [args.model]) if args.model else {})
    if args.checkpoint:     # read as data; a run's model file is checked against its SHA-256 before it is imported
        _, stored = checkpoint_for(args.checkpoint, model or "", args.guide)
        model, settings, model_options = _inherited(stored, model, settings, model_options, args)
        args.guide = args.guide or stored.guide
    args.guide = args.guide or "amortized"
    if not model:
        raise ZooError("name a model, e.g. 'pyro-zoo gradients vae --objectives elbo,stl', or a trained one to hold "
                       "fixed with --fixed-model NAME, or a run to measure at with --checkpoint RUN|NAME")
    args.model = model
    check_data_dir(settings.get("dataset", RunConfig.dataset), settings.get("data_dir"))
    config = RunConfig(model=args.model, guide=args.guide, objective=args.objectives[0], **settings,
                       model_options=model_options, guide_options=flags.given_options(args, "guide", [args.guide]))
    out = Path(args.out or f"runs/gradients-{model_label(args.model)}-{model_label(args.guide)}")
    plan = GradientsPlan(args.model, args.guide, args.objectives, args.particles_list, args.repeats, config,
                         checkpoint=args.checkpoint,
                         objective_options=flags.given_options(args, "objective", args.objectives))
    result = gradients_run(plan, out, force=args.force, progress=not args.no_progress)
    print(gradients_markdown(result))
    print(f"wrote {out / 'gradients.md'}, {out / 'gradients.json'}, {out / 'gradients.png'}")


def cmd_compress(args) -> None:
    from zoo.experiments.compress import compress_run, compression_markdown, decode_file
    args.dir = str(_run_folder(args.dir))
    if args.limit is not None and args.limit < 1:
        raise ZooError(f"--limit must be at least 1, got {args.limit}")
    from zoo.experiments.trained import Invocation
    how = Invocation({"data_dir": args.data_dir}, model_file=args.model, guide_file=args.guide)
    if args.decode:
        r = decode_file(Path(args.dir), Path(args.decode), out=args.out, invocation=how)
        print(f"decoded {r['num_data']} rows of {r['x_dim']} from {r['file']}: checksums verified"
              + (f"; wrote {r['out']}" if r["out"] else ""))
        return
    r = compress_run(Path(args.dir), split=args.split, limit=args.limit, out=args.out, latent_bits=args.latent_bits,
                     invocation=how)
    print(compression_markdown([r]))
    print(f"wrote {r['file']} ({r['file_bits'] // 8} bytes: {r['header_bits'] // 8} of header, {r['bits'] // 8} of "
          f"code); decoded it back bit-exactly")


def cmd_report(args) -> None:
    from zoo.evaluation.reports import report
    files = report(Path(args.dir), out=args.out, readme=args.readme, check=args.check)
    print(f"{'up to date' if args.check else 'wrote'}: {', '.join(str(f) for f in files)}")


def cmd_docs(args) -> None:
    from zoo.docs import build
    print(f"wrote {build(args.out, setting=args.setting, quiet=not args.verbose)}")


def cmd_homework(args) -> None:
    from zoo.homework import kit
    if args.homework_command == "list":
        print(kit.list_text())
    elif args.homework_command == "init":
        files = kit.init_student_folder(args.assignment, args.dir)
        print(f"wrote {', '.join(f.name for f in files)} to {args.dir}")
    elif args.homework_command == "solution":
        files = kit.write_solution(args.assignment, args.dir)
        print(f"wrote {', '.join(f.name for f in files)} to {args.dir}")
    else:
        path = kit.make_bundle(args.assignment, args.zip, hidden=args.hidden, points=args.points,
                               timeout_scale=args.timeout_scale)
        print(f"wrote {path}: upload it on Gradescope's Configure Autograder page")


def cmd_grade(args) -> None:
    from zoo.homework import get_assignment
    from zoo.homework.grader import (WorkerSettings, check_output_file, find_submission, grade, with_points,
                                     write_results)
    hw = with_points(get_assignment(args.assignment), args.points)
    find_submission(args.submission)
    outputs = [Path(f) for f in ([args.json] if args.json else []) + ([args.results] if args.gradescope else [])]
    if len(outputs) == 2 and outputs[0].resolve() == outputs[1].resolve():
        raise ZooError("--json and --gradescope --results name the same file; give two files")
    for out in outputs:
        check_output_file(out)                  # refused before grading, not after
    result = grade(hw, args.submission, hidden=args.hidden, seed=args.seed, timeout_scale=args.timeout_scale,
                   only=args.only, worker=WorkerSettings(as_user=args.as_user, sandbox=not args.unsafe_no_sandbox))
    print(result.table())
    if args.json:
        write_results(args.json, result.to_json())
    if args.gradescope:
        write_results(args.results, result.to_gradescope())


COMMANDS = {"list": cmd_list, "train": cmd_train, "eval": cmd_eval, "compare": cmd_compare, "gradients": cmd_gradients,
            "compress": cmd_compress, "report": cmd_report, "docs": cmd_docs, "homework": cmd_homework, "grade": cmd_grade}


#: the commands whose --out names what they write (a run folder, or compress's code file)
_WRITERS = ("train", "eval", "compare", "gradients", "compress")


def _refuse_writing_the_catalogue(args) -> None:
    """A command's ``--out`` inside the folder of trained models is refused before anything is made: the committed
    weights' folder is read, never written (a run folder named by its path there is refused by its lock)."""
    out = getattr(args, "out", None)
    if args.command in _WRITERS and out:
        from zoo.core.catalogue import refuse_inside_catalogue
        refuse_inside_catalogue(Path(out), "the code file" if args.command == "compress" else "a folder")


def main(argv: Optional[List[str]] = None) -> int:
    import signal
    from zoo.cli_process import tune_process
    from zoo.training.interrupts import exit_code, handle_stop_signals, stopped_message
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    handle_stop_signals()                  # SIGINT and SIGTERM stop in one line (zoo.training.interrupts)
    done = False
    try:
        tune_process()                     # unless PYRO_ZOO_PROCESS_TUNING=0 (zoo.cli_process); imports torch
        args = build_parser().parse_args(argv)
        _refuse_writing_the_catalogue(args)
        COMMANDS[args.command](args)
        done = True
    except ZooError as e:
        print(f"pyro-zoo: error: {flags.translate(e)}", file=sys.stderr)
        return ZooError.exit_code
    except KeyboardInterrupt as e:
        print(f"pyro-zoo: {stopped_message(e)}", file=sys.stderr)
        return exit_code(e)
    except BrokenPipeError:
        # the reader closed the pipe (`pyro-zoo list | head`): stop quietly, as Unix tools do;
        # point stdout at devnull so that the interpreter's final flush does not raise again
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    finally:
        if done:
            _MADE_COPIES.clear()
        else:                                   # a refused or failed command leaves no working copy it made
            _undo_fresh_copies()
        for s, handler in previous.items():     # in-process callers (tests) keep their own handlers
            if handler is not None and signal.getsignal(s) is not handler:
                signal.signal(s, handler)
    return 0


if __name__ == "__main__":
    sys.exit(main())
