"""Every reference Pyro model through ``pyro-zoo compare FILE.py:NAME --guides all --objectives all``.

The seven models of benchmarks/pyro_models/, each on a dataset it fits:

======================  =============================================  ===========
label                   model (file:NAME)                              dataset
======================  =============================================  ===========
vae                     Pyro's VAE example (vae.py:VAE)                digits
ss_vae_m2               SS-VAE M2 as written (ss_vae_m2.py:m2)         digits
gmm                     Pyro's GMM tutorial (gmm.py:gmm)               digits-gray
sparse_gamma_def        sparse gamma DEF (sparse_gamma_def.py)         digits
bayesian_regression     Bayesian regression (bayesian_regression.py)   synthetic
dmm                     DMM, per-step emissions (dmm.py:dmm)           digits
bayesian_decoder_vae    VAE with a Bayesian decoder                    digits
======================  =============================================  ===========

For each, :func:`zoo.experiments.compare.compare` trains and scores every (guide, objective) cell the
registry says fits (the others are skipped and listed with the registry's reason), all with the same
seed and a small budget: --epochs epochs of batch 100 at lr 1e-3, then the test split's fixed subset of
--eval-limit data scored with --eval-samples importance samples; a per-datum (meanfield) guide is refitted
to those data for at most --refit-epochs epochs. The figures are a smoke test of the grid at that budget,
not converged results. Models with global latents (GMM, sparse gamma DEF, regression, Bayesian decoder) are
also run with the delta global guide (``--global-guide delta``, MAP) where --global-guides says so.

On the trained GMM and regression cells the independent checks of benchmarks/reference_checks.py run:
GMM, the harness's enumerated log p(x_n | theta_hat) against the K assignments summed by hand at the
checkpoint's theta_hat (and its IS estimate, a lower bound, below it); regression, the data-set ELBO
against the closed-form evidence (a bound) and, for the Normal global guide, against evidence - KL(q ||
posterior) in closed form within Monte Carlo error, and log p(y_n | f_n, theta_hat) against the Gaussian
density by hand.

    OMP_NUM_THREADS=1 python benchmarks/pyro_models_grid.py

writes benchmarks/results/pyro_models_grid.json and .md. A cell that fails with an error (not a registry
refusal) is recorded with its error and the grid goes on.
"""
from __future__ import annotations

import argparse
import math
import sys
import time
import traceback
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

from common import RESULTS, provenance, run_script, write_result  # noqa: E402

MODELS_DIR = Path(__file__).resolve().parent / "pyro_models"
#: label -> (file:NAME, dataset, has global latents)
MODELS = {
    "vae": ("vae.py:VAE", "digits", False),
    "ss_vae_m2": ("ss_vae_m2.py:m2", "digits", False),
    "gmm": ("gmm.py:gmm", "digits-gray", True),
    "sparse_gamma_def": ("sparse_gamma_def.py:sparse_gamma_def", "digits", True),
    "bayesian_regression": ("bayesian_regression.py:bayesian_regression", "synthetic", True),
    "dmm": ("dmm.py:dmm", "digits", False),
    "bayesian_decoder_vae": ("bayesian_decoder_vae.py:bayesian_decoder_vae", "digits", True),
}
CHECKED = {"gmm", "bayesian_regression"}
FIGURES = ("elbo", "iwae_bound", "log_likelihood", "log_likelihood_se", "exact_log_likelihood", "data_elbo",
           "train_seconds", "eval_seconds")


def spec_of(label: str) -> str:
    return str(MODELS_DIR / MODELS[label][0])


def run_model(label: str, global_guide, args, out_root: Path) -> dict:
    """compare(..., --guides all --objectives all) for one model (and global guide): its cells, skips, errors."""
    from zoo.data import load_dataset
    from zoo.experiments.compare import Execution, Grid, cell_name, checked_cells, compare
    from zoo.experiments.config import RunConfig
    from zoo.experiments.run import train_run
    from zoo.core.errors import ZooError

    spec, dataset, _ = MODELS[label]
    settings = dict(model=spec_of(label), dataset=dataset, epochs=args.epochs, batch_size=100, lr=1e-3, seed=0,
                    eval_samples=args.eval_samples, iwae_k=args.iwae_k, eval_limit=args.eval_limit,
                    refit_epochs=args.refit_epochs, data_dir=args.data_dir)
    base = RunConfig.make(**settings)
    guide_options = {"global_guide": global_guide} if global_guide else None
    name = label + (f"-{global_guide}" if global_guide else "")
    out = out_root / name
    t0 = time.perf_counter()
    data = load_dataset(dataset, args.data_dir)
    cells, skipped = checked_cells(base.model, ["all"], ["all"], base, data, guide_options=guide_options)
    errors, rows = [], []
    try:
        rows = compare(Grid(base.model, ["all"], ["all"], base, guide_options=guide_options), out, force=True,
                       execution=Execution(progress=False))
    except (ZooError, RuntimeError, ValueError) as e:       # find which cells fail, and keep the others' figures
        print(f"{name}: compare stopped ({type(e).__name__}: {e}); running its cells one by one", flush=True)
        for cfg in cells:
            try:
                rows.append(train_run(cfg, out / cell_name(cfg), force=True, progress=False, data=data))
            except Exception as cell_error:                  # noqa: BLE001 - recorded, the grid goes on
                errors.append({"cell": cell_name(cfg), "error": f"{type(cell_error).__name__}: {cell_error}",
                               "where": traceback.format_exc().strip().splitlines()[-3:]})
    seconds = time.perf_counter() - t0
    records = []
    for r in rows:
        cfg = r["config"]
        cell = cell_name(SimpleNamespace(guide=cfg["guide"], objective=cfg["objective"],
                                         objective_options=cfg["objective_options"]))
        record = {"label": cell, "cell": cell, "guide": cfg["guide"], "objective": cfg["objective"],
                  "estimator": cfg["objective_options"].get("estimator"), **{k: r.get(k) for k in FIGURES}}
        if label in CHECKED:
            record["check"] = independent_check(label, out / cell, r)
        records.append(record)
    print(f"{name}: {len(records)} cells trained, {len(skipped)} skipped, {len(errors)} errors, {seconds:.0f} s",
          flush=True)
    checks = [r["check"]["passed"] for r in records if "check" in r]
    return {"label": name, "model": label, "file": f"benchmarks/pyro_models/{spec}", "dataset": dataset,
            "global_guide": global_guide or ("normal" if MODELS[label][2] else None),
            "cells": records, "skipped": [{"cell": c, "reason": why} for c, why in skipped], "errors": errors,
            "num_cells": len(cells), "num_trained": len(records), "num_skipped": len(skipped),
            "num_errors": len(errors), "num_checks": len(checks), "num_checks_passed": sum(checks),
            "seconds": seconds}


def independent_check(label: str, folder: Path, result: dict) -> dict:
    """benchmarks/reference_checks.py on a trained cell, with what it asserts: ``passed``."""
    from reference_checks import gmm_check, regression_check, trained_run
    model, guide, x = trained_run(folder, spec_of(label))
    if label == "gmm":
        c = gmm_check(model, guide, x, result)
        c["passed"] = bool(abs(c["exact_log_likelihood_harness"] - c["log_likelihood_by_hand"]) < 1e-3
                           and c["log_likelihood_difference"] < 4 * c["log_likelihood_se"] + 1e-4)
        return c
    c = regression_check(model, guide, x, result)
    ok = abs(c["log_likelihood_difference"]) < 1e-4
    if "kl" in c:                                   # Normal q(w, b): a bound, equal to evidence - KL
        ok = ok and c["bound_holds"] and abs(c["elbo_difference"]) < 4 * c["elbo_mc_se"]
    else:                                           # delta: the MAP objective log p(y, theta_hat), by hand
        ok = ok and abs(c["map_difference"]) < 1e-3 * max(1.0, abs(c["map_objective_by_hand"]))
    c["passed"] = bool(ok)
    return c


def markdown(payload: dict) -> str:
    prov = provenance()
    lines = ["# Reference Pyro models: every guide and objective that fits", "",
             f"Command: `{prov['command']}`  ", f"Commit: `{prov['git_commit']}`  ",
             f"Hardware: {prov['cpu']} ({prov['cpu_threads']} torch threads)", "", f"Protocol: {payload['protocol']}",
             "", "| model | global guide | dataset | cells trained | skipped | errors | checks passed | seconds |",
             "|---|---|---|---|---|---|---|---|"]
    for m in payload["models"]:
        checks = [c["check"]["passed"] for c in m["cells"] if "check" in c]
        lines.append(f"| {m['model']} | {m['global_guide'] or '–'} | {m['dataset']} | {m['num_trained']} | "
                     f"{m['num_skipped']} | {m['num_errors']} | "
                     f"{f'{sum(checks)}/{len(checks)}' if checks else '–'} | {m['seconds']:.0f} |")
    for m in payload["models"]:
        lines += ["", f"## {m['model']}" + (f" (global guide {m['global_guide']})" if m["global_guide"] else ""), "",
                  "| cell | ELBO | IWAE-k | log p(x) (IS) | ± se | exact | data ELBO | check |", "|---|---|---|---|---|---|---|---|"]
        for c in m["cells"]:
            lines.append(f"| {c['cell']} | {_f(c['elbo'])} | {_f(c['iwae_bound'])} | {_f(c['log_likelihood'])} | "
                         f"{_f(c['log_likelihood_se'])} | {_f(c['exact_log_likelihood'])} | {_f(c['data_elbo'])} | "
                         f"{('passed' if c['check']['passed'] else 'FAILED') if 'check' in c else '–'} |")
        for e in m["errors"]:
            lines.append(f"| {e['cell']} | error: {e['error'][:200]} | | | | | | |")
        if m["skipped"]:
            lines += ["", "Skipped (the registry's reason):", ""] + [f"- {s['cell']}: {s['reason']}" for s in m["skipped"]]
    return "\n".join(lines) + "\n"


def _f(value) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.3f}"


def main(argv=None):
    from zoo.core.errors import ZooError
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--models", default=",".join(MODELS), help=f"comma-separated, from {', '.join(MODELS)}")
    p.add_argument("--global-guides", default="normal,delta",
                   help="global guides for the models with global latents (first for all; the rest for the "
                        "checked models gmm and bayesian_regression)")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--eval-limit", type=int, default=50)
    p.add_argument("--eval-samples", type=int, default=20)
    p.add_argument("--iwae-k", type=int, default=5)
    p.add_argument("--refit-epochs", type=int, default=20)
    p.add_argument("--out", default="runs/pyro_models_grid")
    p.add_argument("--name", default="pyro_models_grid", help="result file name in benchmarks/results")
    args = p.parse_args(argv)
    models = [m for m in args.models.split(",") if m]
    unknown = [m for m in models if m not in MODELS]
    if unknown or not models:
        raise ZooError(f"unknown model {unknown[0] if unknown else args.models!r}; choose from {', '.join(MODELS)}")
    global_guides = [g for g in args.global_guides.split(",") if g]
    if not global_guides or any(g not in ("normal", "delta") for g in global_guides):
        raise ZooError(f"--global-guides takes normal and/or delta, got {args.global_guides!r}")
    if min(args.epochs, args.eval_limit, args.eval_samples, args.iwae_k, args.refit_epochs) < 1:
        raise ZooError("--epochs, --eval-limit, --eval-samples, --iwae-k and --refit-epochs must be at least 1")
    torch.set_num_threads(1)
    runs = []
    for label in models:
        if not MODELS[label][2]:
            runs.append((label, None))
        else:
            runs += [(label, g) for g in (global_guides if label in CHECKED else global_guides[:1])]
    t0 = time.perf_counter()
    results = [run_model(label, g, args, Path(args.out)) for label, g in runs]
    protocol = (f"pyro-zoo compare FILE.py:NAME --guides all --objectives all, seed 0, {args.epochs} epochs of "
                f"batch 100 at lr 1e-3 on the training split; scored on a fixed subset of {args.eval_limit} test "
                f"data with K = {args.eval_samples} importance samples (IWAE-k, k = {args.iwae_k}); per-datum "
                f"guides refitted for at most {args.refit_epochs} epochs. A smoke test of the grid at a small "
                f"budget, not converged figures.")
    payload = {"protocol": protocol, "models": results, "total_seconds": time.perf_counter() - t0,
               "num_trained": sum(m["num_trained"] for m in results),
               "num_skipped": sum(m["num_skipped"] for m in results),
               "num_errors": sum(m["num_errors"] for m in results),
               "num_checks": sum("check" in c for m in results for c in m["cells"]),
               "num_checks_passed": sum(c["check"]["passed"] for m in results for c in m["cells"] if "check" in c)}
    write_result(args.name, payload)
    (RESULTS / f"{args.name}.md").write_text(markdown(payload))
    print(f"{payload['num_trained']} cells trained, {payload['num_skipped']} skipped, {payload['num_errors']} "
          f"errors; checks passed {payload['num_checks_passed']}/{payload['num_checks']}; "
          f"{payload['total_seconds']:.0f} s", flush=True)


if __name__ == "__main__":
    run_script(main)
