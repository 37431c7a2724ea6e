"""Where a per-datum guide's test-time refit starts, and at what step size: epochs, CPU time and the ELBO reached.

A ``meanfield`` run has no posterior for held-out data, so its evaluation refits a fresh per-datum guide to them,
model fixed (:func:`zoo.training.refit.refit_local_guide`). This script trains such runs on the embedded digits
(``pyro-zoo train MODEL --guide meanfield --objective OBJ --dataset digits --epochs 20``, the quickstart's budget)
and refits each one from two settings, over ``--seeds`` seeds of the refit:

- ``before``: the rows started at training's standard deviation 0.1, Adam at lr 0.02, the ELBO monitored after every
  epoch (the zoo's earlier refit);
- ``now``: rows at :attr:`guides.meanfield.MeanField.refit_init_scale` (0.3, by ``refit_start``), lr
  :data:`zoo.training.refit.REFIT_LR` (0.04), the ELBO monitored after every
  :data:`zoo.training.refit.MONITOR_EVERY`-th epoch, as ``pyro-zoo train`` / ``eval`` refit now.

The settings differ in all three at once: the file says what the refit gained, not which change gained it.

Each refit runs to its own convergence criterion. Its ELBO is then scored the same way for every setting: 256 draws
per datum from one fixed seed on the 270 test data. One torch thread (the quickstart's models train on one). Per
run, one warm-up refit is not recorded, and the two settings alternate which goes first from seed to seed.

    python benchmarks/refit_start.py --seeds 3
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import pyro  # noqa: E402
import torch  # noqa: E402
from common import fail, run_script, write_result  # noqa: E402

from guides.meanfield import MeanField  # noqa: E402
from zoo.core.weights import per_datum_log_weights  # noqa: E402
from zoo.experiments.run import prepare  # noqa: E402
from zoo.experiments.run_folder import load_run, load_weights  # noqa: E402
from zoo.training.refit import MONITOR_EVERY, REFIT_LR, REFIT_WINDOW, RefitSchedule, refit_local_guide  # noqa: E402

RUNS = {"vae-elbo": ("vae", "elbo"), "vae-iwae": ("vae", "iwae"), "vae-tracemeanfield": ("vae", "tracemeanfield"),
        "hvae-elbo": ("hvae", "elbo"), "ppca-elbo": ("ppca", "elbo"), "fa-elbo": ("fa", "elbo")}
#: (rows' starting standard deviation, Adam's lr, epochs between ELBO estimates); "now" starts the rows by
#: MeanField.refit_start, as evaluations do
SETTINGS = {"before": (0.1, 0.02, 1), "now": (MeanField.refit_init_scale, REFIT_LR, MONITOR_EVERY)}
SCORE_PARTICLES, SCORE_SEED = 256, 7


def train(name: str, out: Path) -> Path:
    model, objective = RUNS[name]
    folder = out / name
    subprocess.run([sys.executable, "-m", "zoo", "train", model, "--guide", "meanfield", "--objective", objective,
                    "--dataset", "digits", "--epochs", "20", "--out", str(folder)], check=True,
                   stdout=subprocess.DEVNULL)
    return folder


def refit_once(run, x, setting: str, seed: int) -> dict:
    """One refit of a fresh guide in ``setting``, timed, and its ELBO scored the common way."""
    scale, lr, every = SETTINGS[setting]
    n = x.shape[0]
    guide = MeanField(run.model, num_data=n, init_scale=scale)
    guide.adopt_globals(run.guide)
    if setting == "now":
        guide.refit_start()                    # the same start, by the method the evaluations call
    t = time.process_time()
    result = refit_local_guide(run.model, guide, x, RefitSchedule(lr=lr, monitor_every=every), seed=seed)
    cpu = time.process_time() - t
    with torch.no_grad(), torch.random.fork_rng():
        pyro.set_rng_seed(SCORE_SEED)
        elbo = per_datum_log_weights(run.model, guide, x, idx=torch.arange(n), N=n,
                                     num_particles=SCORE_PARTICLES).log_w.mean(0).mean().item()
    return {"seed": seed, "epochs": result.epochs, "converged": result.converged, "cpu_seconds": round(cpu, 2),
            "elbo": elbo}


def refits(folder: Path, seeds: int) -> dict:
    """Both settings' refits of one run: a warm-up refit first, not recorded (the first refit of a process pays for
    its kernels' first calls), then for each seed both settings, in alternating order."""
    state, config = load_run(folder)
    run = prepare(config)
    load_weights(run.model, run.guide, state, folder / "checkpoint.pt")
    x = run.data.split(config.eval_split)            # the whole test split: the runs set no --eval-limit
    refit_once(run, x, "now", seeds)            # the warm-up, at a seed no recorded refit uses
    rows = {setting: [] for setting in SETTINGS}
    for seed in range(seeds):
        order = list(SETTINGS) if seed % 2 == 0 else list(SETTINGS)[::-1]
        for setting in order:
            row = refit_once(run, x, setting, seed)
            rows[setting].append(row)
            print(f"{folder.name} {setting} seed {seed}: {row['epochs']} epochs, {row['cpu_seconds']:.2f} CPU-s, "
                  f"ELBO {row['elbo']:.4f}", flush=True)
    summary = {s: {"mean_epochs": statistics.mean(r["epochs"] for r in rs),
                   "mean_cpu_seconds": statistics.mean(r["cpu_seconds"] for r in rs),
                   "mean_elbo": statistics.mean(r["elbo"] for r in rs)} for s, rs in rows.items()}
    return {"refits": rows, "summary": summary,
            "epochs_now_over_before": summary["now"]["mean_epochs"] / summary["before"]["mean_epochs"],
            "cpu_now_over_before": summary["now"]["mean_cpu_seconds"] / summary["before"]["mean_cpu_seconds"],
            "elbo_now_minus_before": summary["now"]["mean_elbo"] - summary["before"]["mean_elbo"]}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, default=3, help="refit seeds per run and setting")
    p.add_argument("--runs", default=",".join(RUNS), help=f"comma-separated, of {', '.join(RUNS)}")
    p.add_argument("--name", default="refit_start", help="the result file's name in benchmarks/results")
    args = p.parse_args(argv)
    names = [r for r in args.runs.split(",") if r]
    unknown = [r for r in names if r not in RUNS]
    if unknown or not names:
        fail(f"unknown run {unknown[0]!r}; pick from {', '.join(RUNS)}" if unknown else "--runs names no run")
    if args.seeds < 1:
        fail(f"--seeds must be at least 1, got {args.seeds}")
    torch.set_num_threads(1)
    result = {"protocol": " ".join(" ".join(__doc__.split("\n\n")[1:5]).split()),
              "settings": {k: {"init_scale": s, "lr": lr, "monitor_every": every, "window": REFIT_WINDOW}
                           for k, (s, lr, every) in SETTINGS.items()},
              "score": f"mean per-datum ELBO from {SCORE_PARTICLES} draws per datum, seed {SCORE_SEED}, test split",
              "threads": 1, "runs": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            result["runs"][name] = refits(train(name, Path(tmp)), args.seeds)
    write_result(args.name, result)


if __name__ == "__main__":
    run_script(main)
