"""Learned priors and two stochastic layers on static binarized MNIST: test NLL through the zoo's own
train/evaluate path.

Runs (each at the same budget of --epochs epochs):

- ``vae_standard`` / ``vae_vampprior``: our 784-200-200-50 VAE (Burda et al.'s one-layer architecture, z = 50,
  not Tomczak & Welling's z = 40 with gated 300-300 layers) with the N(0, I) prior and with a VampPrior of
  --components pseudo-inputs (default 500), the amortized encoder, the ELBO;
- ``hvae_standard`` / ``hvae_vampprior``: the two-layer ``hvae`` (stochastic 100 and 50, deterministic 200 and
  100, Burda et al.) with the structured guide q(z1 | x) q(z2 | z1, x), the ELBO, standard prior and VampPrior
  on z2;
- ``hvae_iwae5``: the same hvae trained with the IWAE bound, k = 5;
- ``hvae_standard_gated`` / ``hvae_vampprior_gated``: the same hvae with gated units (``--activation gated``),
  standard prior and VampPrior on z2 (the tanh VampPrior collapses z2, as the one-layer one collapses z), and
  ``hvae_iwae5_gated`` with the IWAE bound, k = 5;
- ``hvae_ladder_gated`` / ``hvae_ladder_residual_gated``: the same gated hvae and standard prior as
  ``hvae_standard_gated``, inferred top-down by the ladder guide (``guides/ladder.py``: the Ladder VAE's
  precision-weighted merge, or NVAE's residual one) instead of bottom-up; same decoder, budget and warm-up, so the
  paired differences against ``hvae_standard_gated`` isolate the inference direction;
- ``hvae_ladder_vampprior_gated``: ``hvae_vampprior_gated`` (VampPrior on z2) inferred top-down by the ladder
  guide's precision-weighted merge, paired against ``hvae_vampprior_gated`` (bottom-up) at the same budget; its
  reference is Tomczak & Welling's HVAE + VampPrior (83.19), the nearest published model, not Sønderby's ladder;
- ``vae_hvi8``: ``vae_standard``'s VAE with the hamiltonian guide (``guides/hamiltonian.py``): the amortized Normal
  moved by 8 tempered leapfrog steps on log p(x, z), trained by the augmented ELBO; its -ELBO is that augmented
  bound, its NLL the importance-sampled one (unbiased for p(x) with the augmented weights), paired against
  ``vae_standard`` at the same budget;
- ``hvae_hvi8`` / ``hvae_unstructured``: the same on the two-layer ``hvae`` (tanh, standard prior): the hamiltonian
  guide moves (z1, z2) as one vector from a factorized amortized Normal q_0(z1 | x) q_0(z2 | x), paired against
  that q_0 alone (``hvae_unstructured``, the amortized guide without ``--structured``) and against the structured
  guide of ``hvae_standard``; the DLGM of Salimans et al. is the nearer model for 85.51;
- ``draw_t16``: DRAW (``zoo/models/draw.py``) with its recurrent guide (``guides/recurrent.py``), the paper's MNIST
  network (100 latents a step, 256-unit LSTMs, 2 x 2 read and 5 x 5 write attention) but T = 16 steps instead of
  64, trained by its own loss (``tracemeanfield``: the analytic KL of each step at the sampled past);
- ``draw_t16_noattention``: the same without attention (``--write-glimpse 0 --read-glimpse 0``), the paper's
  87.40 row;
- ``vae_standard_gated`` / ``vae_vampprior_gated``: Tomczak & Welling's one-layer VAE (z = 40, gated 784-300-300
  encoder and decoder, ``--activation gated``) with each prior. With tanh units the VampPrior's encoder saturates
  and the posterior collapses (``benchmarks/vampprior_saturation.py``); gated units do not saturate.

References: Tomczak & Welling (2018), static binarization: VAE 88.56, VAE + VampPrior 85.57, HVAE + VampPrior
83.19 (their architecture, warm-up 100 epochs, up to 2000 epochs with early stopping). Burda et al. (2016),
two stochastic layers, on *dynamic* binarization (so not directly comparable with static figures): VAE 86.76,
IWAE k=5 85.54. Sonderby et al. (2016), Ladder VAE: 81.74 on dynamically binarized MNIST (five stochastic layers
64-32-16-8-4 with 512-256-128-64-32 MLPs, batch normalization, warm-up, a fine-tuned last phase), a different
architecture and binarization: the reference for the ladder rows with the standard prior, not their expected
figure. Salimans, Kingma &
Welling (2015): DLGM with Hamiltonian variational inference, 8 leapfrog steps, 85.51 (their DLGM, dynamic
binarization, long training; the lecture's MNIST table): the reference for ``vae_hvi8``. Gregor et al. (2015): DRAW,
-log p(x) <= 80.97 (the negative variational bound, not an importance-sampled NLL) with T = 64 and attention, 87.40
without attention: the reference for ``draw_t16``.

Protocol: Adam (lr --lr, default 1e-3), batch 100, seed 0, --epochs epochs for every run (no early stopping
unless --patience, no warm-up unless --kl-warmup; with --keep-best the epoch of best validation ELBO is scored), one
torch thread per process. Test NLL = -log (1/K) sum_k w_k with K =
--eval-samples importance samples from the trained guide, on all 10,000 test images (or --eval-limit n, a fixed
random subset). The harness also reports the KL and active units of each latent site (z1, z2).

One process per run (they run side by side, one thread each), then one table with the paired differences
(the runs scored the same test images, so the difference of their per-datum NLL has a small standard error):

    OMP_NUM_THREADS=1 python benchmarks/expressive_mnist.py --data-dir ../shared/data --epochs 8 \
        --eval-samples 1000 --eval-limit 1000 --runs vae_standard --name expressive_mnist_vae_standard  # ... each run
    python benchmarks/expressive_mnist.py --collect

The VampPrior pair at the issue's protocol (all 10,000 test images, K = 5000), Tomczak & Welling's network:

    OMP_NUM_THREADS=1 python benchmarks/expressive_mnist.py --data-dir ../shared/data --epochs 250 --kl-warmup 25 \
        --lr 5e-4 --eval-samples 5000 --runs vae_standard_gated --name expressive_mnist_vae_standard_gated
    # ... and vae_vampprior_gated, then
    python benchmarks/expressive_mnist.py --collect --runs vae_standard_gated,vae_vampprior_gated \
        --name expressive_mnist_gated --run-prefix expressive_mnist

The two-layer rows at the same protocol (150 epochs, the best validation epoch scored):

    OMP_NUM_THREADS=1 python benchmarks/expressive_mnist.py --data-dir ../shared/data --epochs 150 --kl-warmup 15 \
        --lr 1e-3 --keep-best --eval-samples 5000 --runs hvae_standard --name expressive_mnist_hvae_standard
    # ... and hvae_iwae5, hvae_standard_gated, hvae_vampprior_gated, hvae_iwae5_gated, then
    python benchmarks/expressive_mnist.py --collect --runs hvae_standard,hvae_iwae5,hvae_standard_gated,\
hvae_vampprior_gated,hvae_iwae5_gated --name expressive_mnist_hvae --run-prefix expressive_mnist

Top-down against bottom-up inference at that protocol (issue 52, item 3):

    OMP_NUM_THREADS=1 python benchmarks/expressive_mnist.py --data-dir ../shared/data --epochs 150 --kl-warmup 15 \
        --lr 1e-3 --keep-best --eval-samples 5000 --runs hvae_ladder_gated --name ladder_mnist_hvae_ladder_gated
    # ... and hvae_standard_gated, hvae_ladder_residual_gated (each --name ladder_mnist_RUN), then
    python benchmarks/expressive_mnist.py --collect --runs hvae_standard_gated,hvae_ladder_gated,\
hvae_ladder_residual_gated --name ladder_mnist --run-prefix ladder_mnist

With the VampPrior on z2 (the same protocol), collected beside the bottom-up VampPrior hvae (scored in an earlier
run folder, so paired only with the runs whose per-datum scores are in --out):

    OMP_NUM_THREADS=1 python benchmarks/expressive_mnist.py --data-dir ../shared/data --epochs 150 --kl-warmup 15 \
        --lr 1e-3 --keep-best --eval-samples 5000 --runs hvae_ladder_vampprior_gated \
        --name ladder_mnist_hvae_ladder_vampprior_gated
    python benchmarks/expressive_mnist.py --collect --runs hvae_standard_gated,hvae_vampprior_gated,\
hvae_ladder_gated,hvae_ladder_vampprior_gated --name ladder_vampprior_mnist --run-prefix hvae_standard_gated=\
ladder_mnist,hvae_vampprior_gated=expressive_mnist,hvae_ladder_gated=ladder_mnist,hvae_ladder_vampprior_gated=\
ladder_mnist

The hamiltonian guide against the amortized one at a short budget (issue 52, item 4; 8 leapfrog steps cost about
17 model passes a step):

    OMP_NUM_THREADS=1 python benchmarks/expressive_mnist.py --data-dir ../shared/data --epochs 20 \
        --eval-samples 1000 --eval-limit 1000 --runs vae_hvi8 --name hvi_mnist_vae_hvi8
    # ... and vae_standard (--name hvi_mnist_vae_standard), then
    python benchmarks/expressive_mnist.py --collect --runs vae_standard,vae_hvi8 --name hvi_mnist --run-prefix hvi_mnist
    # three times the epochs: the same with --epochs 60 and --name hvi_mnist60_RUN, collected as --name hvi_mnist60
    # on the hvae: --runs hvae_hvi8, hvae_unstructured and hvae_standard, each --name hvi_hvae_mnist_RUN, then
    python benchmarks/expressive_mnist.py --collect --runs hvae_unstructured,hvae_standard,hvae_hvi8 \
        --name hvi_hvae_mnist

The amortized VAE at the hamiltonian guide's training time instead (150 epochs, about the 620 s of vae_hvi8's 20),
paired against vae_hvi8 (its folder copied into the same --out):

    OMP_NUM_THREADS=1 python benchmarks/expressive_mnist.py --data-dir ../shared/data --epochs 150 \
        --eval-samples 1000 --eval-limit 1000 --runs vae_standard --name hvi_mnist_equal_time_vae_standard \
        --out runs/hvi_equal_time
    python benchmarks/expressive_mnist.py --collect --runs vae_standard,vae_hvi8 --name hvi_mnist_equal_time \
        --run-prefix vae_standard=hvi_mnist_equal_time,vae_hvi8=hvi_mnist --out runs/hvi_equal_time

DRAW at a 2-core budget (issue 52, item 5; T = 16 steps cost about 2.5 minutes an epoch on one thread):

    OMP_NUM_THREADS=1 python benchmarks/expressive_mnist.py --data-dir ../shared/data --epochs 15 \
        --eval-samples 500 --eval-limit 1000 --runs draw_t16 --name draw_mnist_draw_t16
    OMP_NUM_THREADS=1 python benchmarks/expressive_mnist.py --data-dir ../shared/data --epochs 25 --resume \
        --eval-samples 500 --eval-limit 1000 --runs draw_t16 --name draw_mnist25_draw_t16
    python benchmarks/expressive_mnist.py --collect --runs draw_t16 --name draw_mnist --run-prefix draw_mnist25

DRAW without attention (reads x and the error image whole, writes the whole canvas; Gregor et al.'s 87.40) at the
15 epochs of ``draw_mnist_draw_t16``, on two threads (about 2.7 minutes an epoch):

    python benchmarks/expressive_mnist.py --data-dir ../shared/data --epochs 15 --threads 2 \
        --eval-samples 500 --eval-limit 1000 --runs draw_t16_noattention --name draw_mnist_draw_t16_noattention
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import RESULTS, fail, grid_parser, provenance, run_grid, run_script, write_result  # noqa: E402

from zoo.experiments.config import RunConfig  # noqa: E402

#: Tomczak & Welling's one-layer VAE: z = 40, gated 300-300 encoder and decoder
TOMCZAK = {"latent_dim": 40, "hidden": (300, 300), "activation": "gated"}

#: label -> (model, model options, guide, guide options, objective, particles, reference NLL or None)
RUNS = {
    "vae_standard": ("vae", {}, "amortized", {}, "elbo", 1, 88.56),
    "vae_vampprior": ("vae", {"prior": "vampprior"}, "amortized", {}, "elbo", 1, 85.57),
    "hvae_standard": ("hvae", {}, "amortized", {"structured": True}, "elbo", 1, 86.76),
    "hvae_vampprior": ("hvae", {"prior": "vampprior"}, "amortized", {"structured": True}, "elbo", 1, 83.19),
    "hvae_iwae5": ("hvae", {}, "amortized", {"structured": True}, "iwae", 5, 85.54),
    "hvae_standard_gated": ("hvae", {"activation": "gated"}, "amortized", {"structured": True}, "elbo", 1, None),
    "hvae_vampprior_gated": ("hvae", {"activation": "gated", "prior": "vampprior"}, "amortized", {"structured": True},
                             "elbo", 1, 83.19),
    "hvae_iwae5_gated": ("hvae", {"activation": "gated"}, "amortized", {"structured": True}, "iwae", 5, 85.54),
    "hvae_ladder_gated": ("hvae", {"activation": "gated"}, "ladder", {}, "elbo", 1, 81.74),
    "hvae_ladder_residual_gated": ("hvae", {"activation": "gated"}, "ladder", {"merge": "residual"}, "elbo", 1,
                                   81.74),
    "hvae_ladder_vampprior_gated": ("hvae", {"activation": "gated", "prior": "vampprior"}, "ladder", {}, "elbo", 1,
                                    83.19),
    "vae_hvi8": ("vae", {}, "hamiltonian", {"leapfrog_steps": 8}, "elbo", 1, 85.51),
    "hvae_unstructured": ("hvae", {}, "amortized", {}, "elbo", 1, 86.76),
    "hvae_hvi8": ("hvae", {}, "hamiltonian", {"leapfrog_steps": 8}, "elbo", 1, 85.51),
    "draw_t16": ("draw", {"steps": 16}, "recurrent", {}, "tracemeanfield", 1, 80.97),
    "draw_t16_noattention": ("draw", {"steps": 16, "write_glimpse": 0}, "recurrent", {"read_glimpse": 0},
                             "tracemeanfield", 1, 87.40),
    "vae_standard_gated": ("vae", TOMCZAK, "amortized", {}, "elbo", 1, 88.56),
    "vae_vampprior_gated": ("vae", {**TOMCZAK, "prior": "vampprior"}, "amortized", {}, "elbo", 1, 85.57),
}


def main(argv=None):
    import torch
    p = grid_parser(__doc__, "runs/expressive_mnist", eval_samples=5000, eval_limit=None)
    p.add_argument("--epochs", type=int, default=10, help="training epochs of every run (default 10)")
    p.add_argument("--runs", default=",".join(RUNS), help=f"comma-separated, from {', '.join(RUNS)} (default all)")
    p.add_argument("--components", type=int, default=500, help="VampPrior pseudo-inputs (default 500)")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--kl-warmup", type=int, default=None, metavar="EPOCHS")
    p.add_argument("--keep-best", action="store_true",
                   help="score each run's epoch with the best validation ELBO (early stopping without stopping)")
    p.add_argument("--patience", type=int, default=None, metavar="N",
                   help="early stopping: end a run once its validation ELBO has not improved for N epochs after the "
                        "warm-up, and score its best epoch (implies --keep-best); Tomczak & Welling's protocol is "
                        "--epochs 2000 --kl-warmup 100 --patience 50")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--name", default="expressive_mnist", help="result file name in benchmarks/results")
    p.add_argument("--run-prefix", default=None, help="with --collect: the runs' result files are "
                   "benchmarks/results/<run-prefix>_<run>.json (default: --name); or RUN=PREFIX,... per run "
                   "(the others: --name)")
    p.add_argument("--collect", action="store_true",
                   help="train nothing: gather the runs' results (benchmarks/results/<name>_<run>.json and their "
                        "per-datum scores in --out) into one table <name>.md with paired differences")
    args = p.parse_args(argv)
    if args.collect:
        return collect(args.name, Path(args.out), [r for r in args.runs.split(",") if r], args.run_prefix)
    torch.set_num_threads(args.threads)
    chosen = [r for r in args.runs.split(",") if r]
    unknown = [r for r in chosen if r not in RUNS]
    if unknown:
        fail(f"unknown run {unknown[0]!r}; choose from {', '.join(RUNS)}")
    if args.patience is not None and args.patience < 1:
        fail("--patience must be at least 1 epoch")

    runs = []
    for label in chosen:
        model, model_options, guide, guide_options, objective, particles, reference = RUNS[label]
        if model_options.get("prior") == "vampprior":
            model_options = {**model_options, "prior_components": args.components}
        config = RunConfig.make(model=model, guide=guide, objective=objective, particles=particles,
                                dataset="binarized_mnist", data_dir=args.data_dir, epochs=args.epochs, batch_size=100,
                                lr=args.lr, seed=0, device=args.device, eval_samples=args.eval_samples,
                                eval_limit=args.eval_limit, iwae_k=50, kl_warmup=args.kl_warmup,
                                keep_best=args.keep_best or args.patience is not None, patience=args.patience,
                                **model_options, **guide_options)
        runs.append((label, config, reference))
    run_grid(args.name, "Learned priors and hierarchical VAEs on static binarized MNIST: test NLL", runs,
             Path(args.out), __doc__.split("Protocol:")[1].split("\n\n")[0].strip().replace("\n", " "),
             evaluate_only=args.evaluate_only, resume=args.resume,
             reference_label="reference NLL (see notes)")


#: (run, against): the paired comparisons of the table
PAIRS = [("vae_vampprior", "vae_standard"), ("vae_vampprior_gated", "vae_standard_gated"),
         ("hvae_vampprior", "hvae_standard"), ("hvae_vampprior_gated", "hvae_standard_gated"),
         ("hvae_iwae5", "hvae_standard"), ("hvae_iwae5_gated", "hvae_standard_gated"),
         ("hvae_standard_gated", "hvae_standard"), ("hvae_standard", "vae_standard"),
         ("hvae_ladder_gated", "hvae_standard_gated"), ("hvae_ladder_residual_gated", "hvae_standard_gated"),
         ("hvae_ladder_residual_gated", "hvae_ladder_gated"), ("hvae_ladder_vampprior_gated", "hvae_vampprior_gated"),
         ("hvae_ladder_vampprior_gated", "hvae_ladder_gated"), ("hvae_ladder_vampprior_gated", "hvae_standard_gated"),
         ("vae_hvi8", "vae_standard"), ("hvae_hvi8", "hvae_unstructured"), ("hvae_hvi8", "hvae_standard"),
         ("hvae_standard", "hvae_unstructured")]


def collect(name: str, out_root: Path, labels, prefix=None) -> None:
    """One table of the runs found (``benchmarks/results/<prefix>_<run>.json``, ``prefix`` defaulting to ``name``),
    and the paired NLL differences of those scored on the same images."""
    import json

    import numpy as np
    from zoo.core.errors import ZooError
    rows, per_datum = {}, {}
    prefixes = dict(item.split("=", 1) for item in (prefix or "").split(",") if "=" in item)
    prefix = None if prefixes else prefix
    for label in labels:
        path = RESULTS / f"{prefixes.get(label, prefix or name)}_{label}.json"
        if path.exists():
            stored = json.loads(path.read_text())
            rows[label] = {**stored["runs"][0], "source": {k: stored["provenance"][k]
                                                           for k in ("command", "git_commit", "git_dirty", "date")}}
            scores = out_root / label / "per_datum.npz"
            if scores.exists():
                per_datum[label] = np.load(scores)["log_likelihood"]
    if not rows:
        raise ZooError(f"no results to collect: none of {RESULTS}/{prefix or name}_<run>.json exists; train the runs "
                       f"first")
    pairs = []
    for a, b in PAIRS:
        if a in per_datum and b in per_datum and per_datum[a].shape == per_datum[b].shape \
                and rows[a]["num_samples"] == rows[b]["num_samples"]:
            d = -(per_datum[a] - per_datum[b])                      # NLL(a) - NLL(b), per datum
            pairs.append({"label": f"{a}:{b}", "run": a, "against": b, "nll_difference": float(d.mean()),
                          "paired_se": float(d.std(ddof=1) / np.sqrt(d.size)), "num_data": int(d.size)})
    write_result(name, {"runs": list(rows.values()), "paired_differences": pairs})
    prov = provenance()
    first = next(iter(rows.values()))
    md = ["# Learned priors and hierarchical VAEs on static binarized MNIST: test NLL", "",
          f"Command: `{prov['command']}` (collects the runs below; each run's own command and commit are in "
          f"`{name}.json`)  ", f"Commit: `{prov['git_commit']}`  ",
          f"Hardware: {prov['cpu']} ({prov['logical_cores']} cores shared with other jobs; one torch thread per run)",
          "", f"Test images scored: {first['num_data']}, K = {first['num_samples']} importance samples. References: "
          "Tomczak & Welling 2018 (static binarization, their architecture and up to 2000 epochs): VAE 88.56, "
          "VAE + VampPrior 85.57, HVAE + VampPrior 83.19; Burda et al. 2016, two stochastic layers, on dynamic "
          "binarization (not directly comparable): VAE 86.76, IWAE k=5 85.54; Sønderby et al. 2016, Ladder VAE with five "
          "stochastic layers, batch norm and warm-up, dynamic binarization (the ladder rows' reference, not their "
          "setting): 81.74; Salimans et al. 2015, DLGM + HVI with 8 leapfrog steps (dynamic binarization): 85.51; "
          "Gregor et al. 2015, DRAW with T = 64 and attention: <= 80.97 (a bound, not an IS estimate; 87.40 without "
          "attention).", "",
          "| run | model | prior | guide | objective | lr | warm-up | epochs | test −ELBO | test NLL (IS) | ± se | "
          "± data se | reference | KL per site | AU per site | train s |", "|---" * 16 + "|"]
    for label, r in rows.items():
        cfg = r["config"]
        per_site = lambda d, f: ", ".join(f"{k} {f(v)}" for k, v in d.items())
        mo = RunConfig.from_json(cfg).resolved("model")
        if cfg["model"] == "draw":
            net = (f"T {mo.steps}, z {mo.latent_dim} a step, LSTM {mo.decoder_size}, "
                   f"{mo.write_glimpse}x{mo.write_glimpse} write")
        else:
            z = getattr(mo, "latent_dim", None) or "-".join(map(str, mo.layers))
            net = f"z {z}, {mo.activation} {'-'.join(map(str, mo.hidden))}"
        epochs = r["epochs_trained"]
        if r.get("best_epoch") is not None:
            epochs = f"{epochs} (best {r['best_epoch']})"
        reference = "–" if r["reference_nll"] is None else r["reference_nll"]
        guide = {"amortized": "bottom-up" if cfg["guide_options"].get("structured") else "amortized",
                 "ladder": f"ladder, {cfg['guide_options'].get('merge', 'precision')}",
                 "hamiltonian": f"hamiltonian, K = {cfg['guide_options'].get('leapfrog_steps', 8)}",
                 "recurrent": f"recurrent, {cfg['guide_options'].get('read_glimpse', 2)}x"
                              f"{cfg['guide_options'].get('read_glimpse', 2)} read"}.get(
            cfg["guide"], cfg["guide"])
        md.append(f"| {label} | {cfg['model']} ({net}) | {getattr(mo, 'prior', 'standard')} | {guide} | "
                  f"{cfg['objective']} (K={cfg['objective_options'].get('particles', 1)}) | {cfg['lr']:g} | "
                  f"{cfg.get('kl_warmup') or 0} | {epochs} | "
                  f"{-r['elbo']:.2f} | {r['nll']:.2f} | {r['log_likelihood_se']:.2f} | "
                  f"{r['log_likelihood_data_se']:.2f} | {reference} | "
                  f"{per_site(r['kl_per_site'], lambda v: f'{v:.1f}')} | {per_site(r['active_units_per_site'], str)} | "
                  f"{r['train_seconds'] or 0:.0f} |")
    if pairs:
        md += ["", "Paired differences on the same test images (negative: the first run is better):", "",
               "| run | against | NLL difference | ± paired se |", "|---|---|---|---|"]
        md += [f"| {p['run']} | {p['against']} | {p['nll_difference']:+.2f} | {p['paired_se']:.2f} |" for p in pairs]
    for label, r in rows.items():
        if r["config"]["model"] == "draw" and (out_root / label / "checkpoint.pt").exists():
            figure = canvas_figure(out_root / label, RESULTS / "plots" / f"{name}-{label}-canvas.png")
            md += ["", f"DRAW's canvas after each step (`{label}`, 8 samples from the prior, seed 0):", "",
                   f"![the canvas of {label} step by step](plots/{figure.name})"]
    (RESULTS / f"{name}.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


def canvas_figure(folder: Path, path: Path) -> Path:
    """The canvas of a trained DRAW run after each of its steps, for 8 draws of the latents (seed 0), as the PNG
    ``path`` (:func:`zoo.evaluation.plots.canvas_grid`)."""
    import pyro

    from zoo.evaluation.plots import canvas_grid
    from zoo.experiments.run_folder import open_run
    from zoo.registry import build_model
    run = open_run(folder)
    model = build_model(run.config.model, 784, **run.config.model_options)
    model.load_state_dict(run.state["model"])
    pyro.set_rng_seed(0)
    canvas_grid(model.canvas_steps(8), (28, 28), path)
    return path


if __name__ == "__main__":
    run_script(main)
