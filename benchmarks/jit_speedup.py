"""Training-step time with and without ``--jit`` (zoo.objectives.jit) for the configurations the MNIST benchmarks train.

Each configuration is one model, guide and objective as in ``quality_mnist.py`` and
``discrete_mnist.py``, trained by ``zoo.fit`` on binarized MNIST with batch 100 and the zoo's
Adam. The eager and the ``--jit`` loop alternate in blocks of --block steps on the same
model (so both see the same parameters), for --rounds rounds after one warm-up round (which
also holds the one-off trace); the figure is the median time per step, Adam included, and the
speed-up the median of the per-round ratios.

    python benchmarks/jit_speedup.py --data-dir ../shared/data --rounds 4
"""
from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import pyro  # noqa: E402
import torch  # noqa: E402
from common import run_script, write_result  # noqa: E402

from zoo.data import load_dataset  # noqa: E402
from zoo.registry import build_guide, build_model, build_objective  # noqa: E402
from zoo.training.loop import fit
from zoo.training.optimizer import make_optimizer  # noqa: E402

#: label -> (model, model options, guide, guide options, objective, particles)
CONFIGS = {
    "vae-elbo": ("vae", {}, "amortized", {}, "elbo", 1),
    "vae-iwae-k5": ("vae", {}, "amortized", {}, "iwae", 5),
    "sbn200-reinforce": ("sbn", {"layers": (200,)}, "amortized", {}, "elbo", 1),
    "sbn200-nvil": ("sbn", {"layers": (200,)}, "amortized", {"baseline": "neural"}, "tracegraph", 1),
    "sbn200-vimco-k5": ("sbn", {"layers": (200,)}, "amortized", {}, "vimco", 5),
    "sbn200-gumbel": ("sbn", {"layers": (200,)}, "relaxed", {"anneal_rate": 1e-4}, "tracemeanfield", 1),
    "cat20x10-nvil": ("categorical_vae", {}, "amortized", {"baseline": "neural"}, "tracegraph", 1),
    "cat20x10-gumbel": ("categorical_vae", {}, "relaxed", {"anneal_rate": 1e-4}, "tracemeanfield", 1),
}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--block", type=int, default=100, help="steps per timed block (default 100)")
    p.add_argument("--runs", default=",".join(CONFIGS), help="configurations, comma-separated (default: all)")
    p.add_argument("--name", default="jit_speedup")
    args = p.parse_args(argv)
    labels = args.runs.split(",")
    unknown = [label for label in labels if label not in CONFIGS]
    if unknown:
        p.error(f"unknown configuration {unknown[0]!r}; choose from {', '.join(CONFIGS)}")
    x = load_dataset("binarized_mnist", args.data_dir).train
    B = 100
    rows = {}
    for label in labels:
        model_name, model_kw, guide_name, guide_kw, objective, particles = CONFIGS[label]
        pyro.set_rng_seed(0)
        model = build_model(model_name, x.shape[1], **model_kw)
        guide = build_guide(guide_name, model, **guide_kw)
        loops = {jit: (build_objective(objective, particles, jit=jit), make_optimizer(model, guide, 1e-4))
                 for jit in (False, True)}
        times = {False: [], True: []}
        for r in range(args.rounds + 1):
            block = x[(r * args.block * B) % (x.shape[0] - args.block * B):][:args.block * B]
            for jit in ((False, True) if r % 2 else (True, False)):
                objective_, optimizer = loops[jit]
                seconds = fit(model, guide, objective_, block, epochs=1, batch_size=B, lr=1e-4, seed=r,
                              progress=False, optimizer=optimizer)[-1]["seconds"]
                if r > 0:
                    times[jit].append(seconds / args.block * 1000)
        eager, jit = statistics.median(times[False]), statistics.median(times[True])
        speedup = statistics.median(e / j for e, j in zip(times[False], times[True]))
        rows[label] = {"objective": objective, "particles": particles, "guide": guide_name,
                       "eager_ms_per_step": eager, "jit_ms_per_step": jit, "speedup": speedup,
                       "all_ms_per_step": {"eager": times[False], "jit": times[True]}}
        print(f"{label}: eager {eager:.2f} ms/step, --jit {jit:.2f} ms/step, speed-up {speedup:.2f}x", flush=True)
    path = write_result(args.name, {"batch_size": B, "block_steps": args.block, "rounds": args.rounds,
                                    "threads": torch.get_num_threads(), "runs": rows})
    write_markdown(path)


def write_markdown(path: Path) -> None:
    """``<name>.md`` next to the JSON result: the command, commit, hardware and the table."""
    import json
    result = json.loads(path.read_text())
    prov = result["provenance"]
    lines = ["# Training step with and without `--jit`", "",
             f"Command: `{prov['command']}`  ", f"Commit: `{prov['git_commit']}`  ",
             f"Hardware: {prov['cpu']} ({result['threads']} torch threads, {prov['logical_cores']} cores), "
             f"GPU: {prov['gpu']}", "",
             "Binarized MNIST, batch 100, `zoo.fit` with the zoo's Adam; median ms per step over "
             f"{result['rounds']} rounds of {result['block_steps']} steps, the two loops alternating on the same "
             "model; speed-up = median of the per-round ratios.", "",
             "| configuration | objective | eager ms/step | `--jit` ms/step | speed-up |", "|---|---|---|---|---|"]
    lines += [f"| {label} | {r['objective']}{' k=' + str(r['particles']) if r['particles'] > 1 else ''} | "
              f"{r['eager_ms_per_step']:.2f} | {r['jit_ms_per_step']:.2f} | {r['speedup']:.2f}× |"
              for label, r in result["runs"].items()]
    path.with_suffix(".md").write_text("\n".join(lines) + "\n")

if __name__ == "__main__":
    run_script(main)
