"""Guides compared on one trained model held fixed (Cremer, Li & Duvenaud 2018, "Inference suboptimality in
variational autoencoders"), and gradient estimators measured on it (Rainforth et al. 2018), on the zoo's weights.

Every step is a command a user types, on the trained model ``--fixed`` (a name from ``pyro-zoo list`` or a run
folder):

1. ``pyro-zoo compare --fixed-model FIXED --guides G1,G2 --objectives elbo``: each guide trained from scratch against
   the fixed decoder (its parameters bit-identical in every cell); compare.md's fixed-model table gives each guide's
   gap log p(x) − ELBO against one shared reference (the fixed model's AIS on the same test subset, where its card
   has it);
2. ``pyro-zoo eval CELL --gaps``: for each cell whose family has a per-datum optimum the zoo can fit (the Gaussian
   guide), the split of that gap into the approximation gap (log p(x) − ELBO[q*], q* fitted to each datum with the
   model fixed) and the amortization gap (ELBO[q*] − ELBO[q_amortized]);
3. ``pyro-zoo gradients --checkpoint CELL``: at the trained amortized guide, each estimator's gradient
   variance and SNR for the guide's parameters (and the decoder's, which the fixed model does not train).

    python benchmarks/fixed_model_study.py --fixed vae-mnist-elbo --data-dir ../shared/data --epochs 20 \\
        --eval-limit 1000 --eval-samples 1000
"""
from __future__ import annotations

import argparse
import json
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
    p.add_argument("--guides", default="amortized,iaf")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--eval-limit", type=int, default=1000)
    p.add_argument("--eval-samples", type=int, default=1000)
    p.add_argument("--estimators", default="elbo,stl,dreg", help="gradient estimators measured at the trained guide")
    p.add_argument("--particles", default="1,10")
    p.add_argument("--repeats", type=int, default=100)
    p.add_argument("--out", default="runs/fixed_model_study")
    p.add_argument("--name", default="fixed_model_study")
    p.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="flags passed to compare (e.g. --batch-size)")
    args = p.parse_args(argv)
    out, data = Path(args.out), (["--data-dir", args.data_dir] if args.data_dir else [])
    grid = out / "grid"
    t0 = time.perf_counter()
    if (grid / "grid.json").is_file():
        code = zoo_cli(["compare", "--resume", grid, "--no-progress"])
    else:
        code = zoo_cli(["compare", "--fixed-model", args.fixed, "--guides", args.guides, "--objectives", "elbo",
                        "--epochs", args.epochs, "--eval-samples", args.eval_samples, "--eval-limit", args.eval_limit,
                        "--out", grid, "--no-progress", *data, *args.extra])
    if code:
        fail(f"the grid did not finish (exit {code})")
    seconds = {"grid": time.perf_counter() - t0}
    fixed_gaps = json.loads((grid / "fixed_gaps.json").read_text())
    cells = {json.loads((f / "results.json").read_text())["config"]["guide"]: f
             for f in sorted(p.parent for p in grid.rglob("results.json"))}
    split = {}
    for guide, folder in cells.items():
        t0 = time.perf_counter()
        kept = folder / "gaps.json"          # an earlier run's split of this very cell (the grid resumes, too)
        code = 0 if kept.is_file() and json.loads(kept.read_text()).get("num_data") == args.eval_limit else \
            zoo_cli(["eval", folder, "--gaps", "--eval-limit", args.eval_limit, "--eval-samples", args.eval_samples,
                     "--no-progress", *data])
        seconds[f"gaps_{guide}"] = time.perf_counter() - t0
        split[guide] = json.loads((folder / "gaps.json").read_text()) if code == 0 else {"refused": True}
    gradients = None
    if "amortized" in cells:
        t0 = time.perf_counter()        # the model, its data set and the guide are the cell's (--checkpoint)
        if zoo_cli(["gradients", "--checkpoint", cells["amortized"], "--objectives", args.estimators,
                    "--particles", args.particles, "--repeats", args.repeats, "--out", out / "gradients", "--force",
                    "--no-progress", *data]) != 0:
            fail("the gradients step failed (its message is above)")
        gradients = json.loads((out / "gradients" / "gradients.json").read_text())
        seconds["gradients"] = time.perf_counter() - t0
    result = {"fixed_model": args.fixed, "fixed_gaps": fixed_gaps, "gap_split": split, "gradients": gradients,
              "seconds": seconds, "settings": vars(args)}
    path = write_result_and_page(args.name, result, markdown)
    print(f"wrote {path} and {args.name}.md")


def markdown(result) -> str:
    prov, gaps = result["provenance"], result["fixed_gaps"]
    lines = [f"# Guides on one fixed model: {result['fixed_model']}", "",
             *provenance_lines(prov),
             f"log p(x) = {gaps['log_likelihood']:.2f} nats per image on {gaps['num_data']} test images, from "
             f"{gaps['reference']}; every guide trained {result['settings']['epochs']} epochs against the same "
             f"decoder.", "", "| guide | ELBO | gap log p(x) − ELBO | approximation gap | amortization gap |",
             "|---|---|---|---|---|"]
    for cell, row in sorted(gaps["cells"].items(), key=lambda kv: kv[1]["gap"]):
        guide = cell.split("/")[0]
        s = result["gap_split"].get(guide) or {}
        approx, amort = s.get("approximation_gap"), s.get("amortization_gap")
        lines.append(f"| {guide} | {row['elbo']:.2f} | {row['gap']:.2f} ± {row['gap_se']:.2f} | "
                     f"{'–' if approx is None else f'{approx:.2f}'} | {'–' if amort is None else f'{amort:.2f}'} |")
    lines += ["", "The approximation and amortization gaps are `pyro-zoo eval CELL --gaps` (its log p(x) is that "
              "command's own IS estimate); '–' where the family has no per-datum optimum the zoo fits.", ""]
    g = result.get("gradients")
    if g:
        lines += ["## Gradient estimators at the trained amortized guide", "",
                  f"`pyro-zoo gradients --checkpoint CELL`: {g['repeats']} estimates per row on a minibatch of "
                  f"{g['config']['batch_size']} training images; the guide's parameters are what a fixed-model run "
                  "trains (the decoder's, held fixed, are shown for reference).", "",
                  "| estimator | K | parameters | variance | SNR | cosine to the reference |", "|---|---|---|---|---|---|"]
        for row in g.get("rows", []):
            lines.append(f"| {row.get('objective')} | {row.get('particles')} | {row.get('group')} | "
                         f"{_f(row.get('variance'))} | {_f(row.get('snr'))} | {_f(row.get('cosine'))} |")
    return "\n".join(lines) + "\n"


def _f(v) -> str:
    return "–" if not isinstance(v, (int, float)) else f"{v:.3g}"


if __name__ == "__main__":
    run_script(main)
