"""Gradient estimators compared on one trained model held fixed, as a guide trains against it (Rainforth et al.
2018, "Tighter variational bounds are not necessarily better"; Tucker et al. 2019 for DReG): each estimator's
variance, signal-to-noise ratio and cosine to a reference gradient, for the guide's parameters, at several points
of the guide's training.

Every step is a command a user types, on the trained model ``--fixed`` (a name from ``pyro-zoo list`` or a run
folder):

1. ``pyro-zoo train --fixed-model FIXED --guide GUIDE --objective OBJECTIVE --epochs E`` for each E of
   ``--stages``, each stage resuming the last (``--resume``): the guide at E epochs against the same decoder;
2. ``pyro-zoo gradients --checkpoint STAGE --objectives ESTIMATORS --particles K``: each estimator's gradient at
   those parameters, ``--repeats`` times on one minibatch.

Continuous latents (the VAE): ``elbo`` (the reparameterized ELBO), ``stl`` (sticking the landing), ``iwae`` and
``dreg``; discrete ones (the SBN): ``elbo`` (REINFORCE), ``tracegraph`` (NVIL's baselines), ``rloo`` and ``disarm``.

    python benchmarks/fixed_model_gradients.py --fixed vae-mnist-elbo --data-dir ../shared/data
    python benchmarks/fixed_model_gradients.py --fixed sbn-mnist-rloo --estimators elbo,tracegraph,rloo,disarm \\
        --particles 1,4 --name fixed_model_gradients_sbn --data-dir ../shared/data
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

from common import fail, provenance_lines, run_script, write_result_and_page, zoo_cli  # noqa: E402


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--fixed", default="vae-mnist-elbo", help="the trained model held fixed (a name or a run folder)")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--guide", default="amortized")
    p.add_argument("--objective", default="elbo", help="what the guide trains with (default elbo)")
    p.add_argument("--stages", default="1,5,20", help="epochs of the guide's training at which gradients are measured")
    p.add_argument("--estimators", default="elbo,stl,iwae,dreg")
    p.add_argument("--particles", default="1,10")
    p.add_argument("--repeats", type=int, default=50)
    p.add_argument("--out", default="runs/fixed_model_gradients")
    p.add_argument("--name", default="fixed_model_gradients")
    p.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="flags passed to train (e.g. --batch-size)")
    args = p.parse_args(argv)
    try:
        stages = sorted({int(e) for e in args.stages.split(",")})
    except ValueError:
        fail(f"--stages takes comma-separated epochs, got {args.stages!r}")
    if not stages or stages[0] < 1:
        fail("--stages must be epochs >= 1")
    data = ["--data-dir", args.data_dir] if args.data_dir else []
    out = Path(args.out)
    run = out / "guide"
    points, seconds = [], {}
    for epochs in stages:
        t0 = time.perf_counter()
        where = (["--resume", run] if (run / "checkpoint.pt").is_file() else
                 ["--fixed-model", args.fixed, "--guide", args.guide, "--objective", args.objective, "--out", run,
                  *args.extra])
        if zoo_cli(["train", *where, "--epochs", epochs, "--eval-samples", 10, "--eval-limit", 100, "--no-progress",
                    *data]) != 0:
            fail(f"training the guide to epoch {epochs} failed (its message is above)")
        seconds[f"train_{epochs}"] = time.perf_counter() - t0
        stage = out / f"epoch-{epochs}"
        shutil.rmtree(stage, ignore_errors=True)
        shutil.copytree(run, stage)
        t0 = time.perf_counter()
        if zoo_cli(["gradients", "--checkpoint", stage, "--objectives", args.estimators, "--particles", args.particles,
                    "--repeats", args.repeats, "--out", out / f"gradients-{epochs}", "--force", "--no-progress",
                    *data]) != 0:
            fail(f"the gradients at epoch {epochs} failed (its message is above)")
        seconds[f"gradients_{epochs}"] = time.perf_counter() - t0
        g = json.loads((out / f"gradients-{epochs}" / "gradients.json").read_text())
        points.append({"epochs": epochs, "rows": [r for r in g["rows"] if r["group"] == "guide"],
                       "reference": g.get("reference"), "batch_size": g["config"]["batch_size"]})
    result = {"fixed_model": args.fixed, "guide": args.guide, "objective": args.objective, "points": points,
              "seconds": seconds, "settings": vars(args)}
    path = write_result_and_page(args.name, result, markdown)
    print(f"wrote {path} and {args.name}.md")


def markdown(result) -> str:
    prov, s = result["provenance"], result["settings"]
    lines = [f"# Gradient estimators on a fixed model as its guide trains: {result['fixed_model']}", "",
             *provenance_lines(prov),
             f"The {result['guide']} guide trained with {result['objective']} against the fixed model; at each "
             f"stage, `pyro-zoo gradients --checkpoint STAGE`: {s['repeats']} estimates per row of the gradient for "
             f"the guide's parameters on one minibatch. variance: the mean over coordinates of the estimates' variance; "
             f"SNR: |mean| / sd, averaged over coordinates; cosine: of the mean estimate to the reference, the "
             f"guide's ELBO gradient from 20 x 1000 particles (RLOO's for a score-function guide): an estimator of "
             f"another bound (iwae, dreg at K > 1) points elsewhere by design, not by bias.", "",
             "| guide epochs | estimator | K | variance | SNR | cosine to the reference |", "|---|---|---|---|---|---|"]
    for point in result["points"]:
        for row in point["rows"]:
            lines.append(f"| {point['epochs']} | {row['objective']} | {row['particles']} | {_f(row.get('variance'))} "
                         f"| {_f(row.get('snr'))} | {_f(row.get('cosine'))} |")
    return "\n".join(lines) + "\n"


def _f(v) -> str:
    return "–" if not isinstance(v, (int, float)) else f"{v:.3g}"


if __name__ == "__main__":
    run_script(main)
