"""Plots written by runs: training curves, image grids, latent scatter, comparison bars."""
from __future__ import annotations

from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from torchvision.utils import make_grid, save_image  # noqa: E402

from zoo.training.checkpoint import atomic_write_bytes  # noqa: E402

__all__ = ["training_curves", "history_png", "image_grid", "latent_scatter", "compare_plot"]


def _save(fig, path: Path) -> None:
    import io
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    atomic_write_bytes(Path(path), buf.getvalue())


def training_curves(history: Sequence[Dict], path: Path) -> None:
    """The training objective and the validation ELBO per epoch (nats per datum)."""
    fig, ax = plt.subplots(figsize=(5, 3.2))
    epochs = [h["epoch"] for h in history]
    ax.plot(epochs, [-h["loss"] for h in history], label="training bound")
    valid = [(h["epoch"], h["valid_elbo"]) for h in history if h.get("valid_elbo") is not None]
    if valid:
        ax.plot(*zip(*valid), label="validation ELBO")
    ax.set_xlabel("epoch")
    ax.set_ylabel("nats per datum")
    ax.legend()
    ax.grid(alpha=0.3)
    _save(fig, path)


def history_png(history: Sequence[Dict]) -> bytes:
    """A thumbnail (about 260x170 px) of a run's training for the leaderboard: the training bound and the
    validation −ELBO per epoch, nats per datum, from the ``history`` of its result file. The PNG carries no
    date or version, so the same history gives the same bytes."""
    import io
    fig, ax = plt.subplots(figsize=(3.2, 2.1))
    epochs = [h["epoch"] for h in history if isinstance(h, dict) and "loss" in h]
    ax.plot(epochs, [h["loss"] for h in history if isinstance(h, dict) and "loss" in h], lw=1, label="training")
    valid = [(h["epoch"], -h["valid_elbo"]) for h in history
             if isinstance(h, dict) and isinstance(h.get("valid_elbo"), (int, float))]
    if valid:
        ax.plot(*zip(*valid), lw=1, label="validation")
    values = sorted([v for _, v in valid] + [h["loss"] for h in history if isinstance(h, dict) and "loss" in h])
    if len(values) > 4:                 # the first epochs' losses would squash the curve to a line
        lo, hi = values[0], values[int(0.9 * (len(values) - 1))]
        ax.set_ylim(lo - 0.05 * (hi - lo + 1), hi + 0.3 * (hi - lo + 1))
    ax.set_xlabel("epoch", fontsize=7)
    ax.set_ylabel("−ELBO, nats", fontsize=7)
    ax.tick_params(labelsize=6)
    ax.legend(fontsize=6, frameon=False)
    ax.grid(alpha=0.3)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    return buf.getvalue()


def image_grid(x: torch.Tensor, image_shape: Tuple[int, int], path: Path, nrow: int = 8) -> None:
    """Save rows of ``x`` ``[n, H*W]`` as a grid with torchvision's make_grid/save_image."""
    images = x.detach().float().cpu().clamp(0, 1).reshape(-1, 1, *image_shape)
    grid = make_grid(images, nrow=nrow, padding=1, pad_value=0.5)
    import io
    buf = io.BytesIO()
    save_image(grid, buf, format="png")
    atomic_write_bytes(Path(path), buf.getvalue())


def latent_scatter(z: torch.Tensor, labels: Optional[torch.Tensor], path: Path) -> None:
    """Scatter of the 2-D posterior means E_q[z | x], coloured by label when known."""
    fig, ax = plt.subplots(figsize=(4.5, 4))
    z = z.detach().cpu()
    if labels is None:
        ax.scatter(z[:, 0], z[:, 1], s=6)
    else:
        sc = ax.scatter(z[:, 0], z[:, 1], s=6, c=labels.cpu(), cmap="tab10")
        fig.colorbar(sc, ax=ax, label="label")
    ax.set_xlabel("E[z_1 | x]")
    ax.set_ylabel("E[z_2 | x]")
    _save(fig, path)


def compare_plot(rows: Sequence[Dict], path: Path) -> None:
    """Bars of ELBO, IWAE-k and IS log p(x) per (guide, objective) cell."""
    labels = [f"{r['config']['guide']}\n{r['config']['objective']}" for r in rows]
    width = 0.27
    fig, ax = plt.subplots(figsize=(max(5, 1.1 * len(rows)), 3.6))
    for j, (key, name) in enumerate([("elbo", "ELBO"), ("iwae_bound", "IWAE-k"), ("log_likelihood", "log p(x) IS")]):
        xs = [i + (j - 1) * width for i in range(len(rows))]
        err = [r["log_likelihood_se"] for r in rows] if key == "log_likelihood" else None
        ax.bar(xs, [r[key] for r in rows], width, yerr=err, label=name)
    lo = min(min(r["elbo"], r["log_likelihood"]) for r in rows)
    hi = max(r["log_likelihood"] for r in rows)
    ax.set_ylim(lo - 0.1 * (hi - lo + 1), hi + 0.1 * (hi - lo + 1))
    ax.set_xticks(range(len(rows)))
    ax.set_xticklabels(labels, fontsize=8)
    ax.set_ylabel("nats per datum (higher is better)")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    _save(fig, path)


def gradient_plot(rows: Sequence[Dict], path: Path) -> None:
    """Gradient variance and SNR against the number of particles, per objective and parameter group."""
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    keys = sorted({(r["objective"], r["group"]) for r in rows})
    for objective, group in keys:
        sel = sorted((r for r in rows if r["objective"] == objective and r["group"] == group), key=lambda r: r["particles"])
        ks = [r["particles"] for r in sel]
        style = "-" if group == "model" else "--"
        for ax, key in zip(axes, ("variance", "snr")):
            ax.plot(ks, [r[key] for r in sel], style, marker="o", label=f"{objective} ({group})")
    for ax, title in zip(axes, ("mean per-coordinate variance", "mean |E g| / sd(g)")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("particles K")
        ax.set_title(title, fontsize=9)
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=7)
    _save(fig, path)
