"""Diagnostic: why the VampPrior VAE trains worse than the standard one at a short budget.

Trains the 784-200-200-50 VAE for --epochs epochs on the first --num-train static binarized MNIST training
images (Adam 1e-3, batch 100, seed 0) with

- ``standard``: the N(0, I) prior;
- ``vampprior``: the VampPrior (500 pseudo-inputs) computed with the guide's own encoder, as ``--prior vampprior``;
- ``vampprior_detached``: the same, except that the prior's gradient does not reach the encoder's parameters
  (the components q(z | u_k) are computed with a frozen copy of the encoder, refreshed every step). This is
  *not* Tomczak & Welling's VampPrior; it isolates the coupling;
- ``vampprior_gated``: the VampPrior with gated units in the encoder and decoder (``--activation gated``, Tomczak
  & Welling's networks), which cannot saturate.

After each epoch it records the training loss (-ELBO per datum), the KL of q(z | x) from the prior on 500 test
images (0 when the encoder ignores x) and the fraction of the encoder trunk's tanh units at |h| > 0.99 on them
(saturated units pass no gradient).

    OMP_NUM_THREADS=1 python benchmarks/vampprior_saturation.py --data-dir ../shared/data
"""
from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

from common import RESULTS, provenance, run_script, write_result  # noqa: E402


def main(argv=None):
    import zoo
    from zoo.core.contract import Borrowed
    from zoo.data import load_dataset
    from zoo.models.priors import VampPrior
    from zoo.registry import build_guide, build_model

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--num-train", type=int, default=10000)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    data = load_dataset("binarized_mnist", args.data_dir)
    x, probe = data.train[:args.num_train], data.test[:500]

    def frozen_encoder_components(self, u, _components=VampPrior.components):
        bound = self._guide
        self._guide = Borrowed(copy.deepcopy(bound.module).requires_grad_(False))
        try:
            return _components(self, u)
        finally:
            self._guide = bound

    rows = []
    for label in ("standard", "vampprior", "vampprior_detached", "vampprior_gated"):
        torch.manual_seed(0)
        model = build_model("vae", 784, prior="standard" if label == "standard" else "vampprior",
                            activation="gated" if label.endswith("gated") else "tanh")
        guide = build_guide("amortized", model)
        if label == "vampprior_detached":
            model.prior.components = frozen_encoder_components.__get__(model.prior)
        for epoch in range(args.epochs):
            history = zoo.fit(model, guide, zoo.build_objective("elbo"), x, epochs=1, batch_size=100, lr=1e-3,
                              progress=False, seed=epoch)
            with torch.no_grad():
                saturated = None if label.endswith("gated") else (guide.trunk(probe).abs() > 0.99).float().mean().item()
            kl = zoo.evaluate(model, guide, probe, num_samples=1, iwae_k=1, psis=False)["kl"]
            rows.append({"run": label, "epoch": epoch + 1, "train_loss": history[-1]["loss"], "kl": kl,
                         "saturated_fraction": saturated})
            print(f"{label} epoch {epoch + 1}: loss {history[-1]['loss']:.1f}, KL {kl:.2f}, saturated {saturated}",
                  flush=True)
    write_result("vampprior_saturation", {"num_train": args.num_train, "epochs": args.epochs, "rows": rows})
    prov = provenance()
    md = ["# VampPrior and the shared tanh encoder: saturation and collapse, and gated units", "",
          f"Command: `{prov['command']}`  ", f"Commit: `{prov['git_commit']}`  ",
          f"Hardware: {prov['cpu']} ({prov['cpu_threads']} torch thread)", "",
          __doc__.split("\n\n")[1].replace("\n", " "), "",
          "| run | epoch | train −ELBO | test KL | saturated tanh units |", "|---|---|---|---|---|"]
    md += [f"| {r['run']} | {r['epoch']} | {r['train_loss']:.1f} | {r['kl']:.2f} | "
           f"{'– (no tanh)' if r['saturated_fraction'] is None else format(r['saturated_fraction'], '.1%')} |"
           for r in rows]
    (RESULTS / "vampprior_saturation.md").write_text("\n".join(md) + "\n")


if __name__ == "__main__":
    run_script(main)
