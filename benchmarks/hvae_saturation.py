"""Diagnostic: why the two-layer hvae with tanh units trains so much worse than with gated units.

Trains ``hvae`` at Burda et al.'s sizes (z2 (50) -> 100 -> 100 -> z1 (100) -> 200 -> 200 -> x) with the
structured guide q(z1 | x) q(z2 | z1, x), the standard prior and the ELBO, on the first --num-train static
binarized MNIST training images (Adam 1e-3, batch 100, seed 0), once with tanh units (``--activation tanh``,
Burda et al.'s) and once with gated units (``--activation gated``, which cannot saturate); ``--variants`` adds
the two mixtures, tanh in the model with a gated encoder (``--guide-activation gated``) and the reverse, which
tell whether the encoder's or the generative networks' units make the difference.

After each epoch it records, on a fixed random subset of 1000 test images: the KL of each layer
(E_q[log q(z_l | .) - log p(z_l | z_{l+1})]), its active units (Cov_x E_q[z_u | x] > 0.01), and, for each
network with tanh units, the fraction of its unit activations at |h| > 0.99 over the scoring passes, where
tanh passes less than 2% of its gradient (saturated units).

    OMP_NUM_THREADS=1 python benchmarks/hvae_saturation.py --data-dir ../shared/data --epochs 60 --name hvae_saturation_60
    OMP_NUM_THREADS=1 python benchmarks/hvae_saturation.py --data-dir ../shared/data --epochs 60 \
        --variants tanh-model-gated-encoder,gated-model-tanh-encoder --name hvae_saturation_60_mixed
"""
from __future__ import annotations

import argparse
import sys
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from torch import nn  # noqa: E402

from common import RESULTS, provenance, run_script, write_result  # noqa: E402

SATURATED = 0.99          # |tanh| above this: derivative 1 - h^2 < 0.02

#: variant -> (the model's activation: decoder and transition; the encoder's activation)
VARIANTS = {"tanh": ("tanh", "tanh"), "gated": ("gated", "gated"),
            "tanh-model-gated-encoder": ("tanh", "gated"), "gated-model-tanh-encoder": ("gated", "tanh")}


@contextmanager
def saturation(networks: dict):
    """Count, for each named network, how many of its tanh activations are saturated while the block runs.
    Yields a dict that maps each network with tanh units to its saturated fraction when the block ends."""
    counts = {name: [0, 0] for name, net in networks.items() if any(isinstance(m, nn.Tanh) for m in net.modules())}
    hooks = []

    def count(name):
        def hook(_module, _inputs, h):
            counts[name][0] += int((h.abs() > SATURATED).sum())
            counts[name][1] += h.numel()
        return hook

    for name in counts:
        hooks += [m.register_forward_hook(count(name)) for m in networks[name].modules() if isinstance(m, nn.Tanh)]
    fractions = {}
    try:
        yield fractions
    finally:
        for h in hooks:
            h.remove()
        fractions.update({name: s / n for name, (s, n) in counts.items() if n})


def main(argv=None):
    import zoo
    from zoo.core.errors import ZooError
    from zoo.data import load_dataset
    from zoo.experiments.trained import fixed_subset
    from zoo.registry import build_guide, build_model

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--num-train", type=int, default=50000)
    p.add_argument("--variants", default="tanh,gated", help=f"comma-separated, from {', '.join(VARIANTS)}")
    p.add_argument("--name", default="hvae_saturation", help="result file name in benchmarks/results")
    args = p.parse_args(argv)
    if args.epochs < 1 or args.num_train < 100:
        raise ZooError("--epochs must be at least 1 and --num-train at least 100 (one minibatch)")
    variants = [v for v in args.variants.split(",") if v]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown or not variants:
        raise ZooError(f"unknown variant {unknown[0] if unknown else args.variants!r}; choose from {', '.join(VARIANTS)}")
    torch.set_num_threads(1)
    data = load_dataset("binarized_mnist", args.data_dir)
    x = data.train[:args.num_train]
    probe = fixed_subset(data.test, 1000)

    rows = []
    for variant in variants:
        model_activation, encoder_activation = VARIANTS[variant]
        torch.manual_seed(0)
        model = build_model("hvae", x.shape[1], activation=model_activation)
        guide = build_guide("amortized", model, structured=True, activation=encoder_activation)
        networks = {"encoder trunk x → h": guide.trunk, "encoder head h, z1 → z2": guide.heads["z2"],
                    "encoder head h → z1": guide.heads["z1"], "transition z2 → z1": model.transitions[0],
                    "decoder z1 → x": model.decoder}
        for epoch in range(args.epochs):
            history = zoo.fit(model, guide, zoo.build_objective("elbo"), x, epochs=1, batch_size=100, lr=1e-3,
                              progress=False, seed=epoch)
            with torch.random.fork_rng(), saturation(networks) as saturated:
                torch.manual_seed(0)
                scored = zoo.evaluate(model, guide, probe, num_samples=1, iwae_k=1, psis=False)
            rows.append({"activation": variant, "epoch": epoch + 1, "train_loss": history[-1]["loss"],
                         "kl_per_site": scored["kl_per_site"], "active_units_per_site": scored["active_units_per_site"],
                         "saturated_fraction": dict(saturated)})
            print(f"{variant} epoch {epoch + 1}: loss {history[-1]['loss']:.1f}, KL {scored['kl_per_site']}, "
                  f"AU {scored['active_units_per_site']}, saturated {saturated}", flush=True)
    write_result(args.name, {"num_train": args.num_train, "epochs": args.epochs, "probe": "1000 test images, "
                             "fixed random subset (seed 0)", "saturation_threshold": SATURATED, "rows": rows})
    prov = provenance()
    nets = list(dict.fromkeys(n for r in rows for n in r["saturated_fraction"]))
    md = ["# The two-layer hvae with tanh and with gated units: saturation and inactive layers", "",
          f"Command: `{prov['command']}`  ", f"Commit: `{prov['git_commit']}`  ",
          f"Hardware: {prov['cpu']} (1 torch thread)", "",
          __doc__.split("\n\n")[1].replace("\n", " ") + " " + __doc__.split("\n\n")[2].replace("\n", " "), "",
          "| units | epoch | train −ELBO | KL z2 | KL z1 | active z2 | active z1 | "
          + " | ".join(f"saturated: {n}" for n in nets) + " |",
          "|---|---|---|---|---|---|---|" + "---|" * len(nets)]
    for r in rows:
        sat = [f"{r['saturated_fraction'][n]:.1%}" if n in r["saturated_fraction"] else "– (no tanh)" for n in nets]
        md.append(f"| {r['activation']} | {r['epoch']} | {r['train_loss']:.1f} | {r['kl_per_site']['z2']:.2f} | "
                  f"{r['kl_per_site']['z1']:.2f} | {r['active_units_per_site']['z2']} | "
                  f"{r['active_units_per_site']['z1']} | " + " | ".join(sat) + " |")
    (RESULTS / f"{args.name}.md").write_text("\n".join(md) + "\n")


if __name__ == "__main__":
    run_script(main)
