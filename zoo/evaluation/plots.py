"""Plots written by runs: training curves, image grids, latent scatter, comparison bars.

matplotlib (no display needed, and the process's backend is left alone) and torchvision are imported
when the first plot is drawn, not with this module: every command imports it through :mod:`zoo.experiments`, and those two (torchvision
pulls in ``torch._dynamo``) were most of ``pyro-zoo list``'s start-up time.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple

import torch

from zoo.core.errors import ZooError
from zoo.training.checkpoint import atomic_write_bytes


class _Figures:
    """The few ``pyplot`` calls the plots make, on :class:`matplotlib.figure.Figure` objects instead.

    No ``pyplot`` and no ``matplotlib.use``: drawing never selects or changes the process's backend,
    so a notebook that calls the CLI in-process (``zoo.cli.main``) keeps showing its own figures,
    and no display is needed. matplotlib is imported on first use.
    """

    def figure(self, figsize=None, dpi=None):
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        fig = Figure(figsize=figsize, dpi=dpi)
        FigureCanvasAgg(fig)                # this figure draws with Agg; the process's backend is untouched
        return fig

    def subplots(self, nrows: int = 1, ncols: int = 1, figsize=None):
        fig = self.figure(figsize=figsize)
        return fig, fig.subplots(nrows, ncols)

    def close(self, fig) -> None:
        """Nothing to do: a Figure not made by pyplot is freed with its last reference."""

    @property
    def rcParams(self):
        import matplotlib
        return matplotlib.rcParams


plt = _Figures()

__all__ = ["training_curves", "training_curves_figure", "history_png", "thumbnail_figure", "bound_label", "run_title",
           "refit_note", "image_grid", "reconstruction_grid", "latent_scatter", "compare_plot", "zoom_range"]


def _save(fig, path: Path) -> None:
    import io
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    atomic_write_bytes(Path(path), buf.getvalue())


def bound_label(config: Optional[Dict]) -> str:
    """The training bound of a run's objective, negated as the papers print it: ``−ELBO`` for the ELBO family
    (whatever its gradient estimator), ``−IWAE bound (k=5)`` for IWAE, DReG, VIMCO and reweighted wake-sleep
    (whose model objective it is), ``−Rényi bound (α=0.5, k=5)``; ``−training bound`` where it is unknown."""
    config = config or {}
    options = config.get("objective_options") or {}
    try:
        from zoo.objectives import objective_capabilities, preset_of
        bound, _ = preset_of(config["objective"], options.get("estimator"))
        k = options.get("particles") or objective_capabilities(config["objective"],
                                                               options.get("estimator")).default_particles
    except (KeyError, TypeError, ValueError, ZooError):
        return "−training bound"
    if bound in ("iwae", "rws"):
        return f"−IWAE bound (k={k})"
    if bound == "renyi":
        return f"−Rényi bound (α={options.get('alpha', 0.0):g}, k={k})"
    return "−ELBO" if bound == "elbo" else f"−{bound} bound"


def run_title(config: Optional[Dict]) -> str:
    """``model · guide · objective`` of a run (a file's component by its NAME)."""
    config = config or {}
    names = [str(config.get(k, "?")).rpartition(":")[2] for k in ("model", "guide", "objective")]
    return " · ".join(names)


def _curves(history: Sequence[Dict]):
    """(epochs, the training bound negated, [(epoch, validation −ELBO)]) from a run's history, the papers' sign."""
    steps = [h for h in history if isinstance(h, dict) and isinstance(h.get("loss"), (int, float)) and "epoch" in h]
    valid = [(h["epoch"], -h["valid_elbo"]) for h in steps if isinstance(h.get("valid_elbo"), (int, float))]
    return [h["epoch"] for h in steps], [h["loss"] for h in steps], valid


def _scale_y(ax, values: Sequence[float]) -> None:
    """Every point in view (no curve's top clipped): a log axis, labelled in plain numbers, where the first
    epochs sit far above the rest (positive values spanning a factor over 1.5), so they do not flatten it."""
    from matplotlib.ticker import NullFormatter, ScalarFormatter
    lo, hi = min(values), max(values)
    if lo > 0 and hi / lo > 1.5:
        ax.set_yscale("log")
        ax.set_ylim(lo / 1.08, hi * 1.08)
        ticks = sorted({float(f"{v:.2g}") for v in (lo, (lo * hi) ** 0.5, hi)})
        ax.set_yticks(ticks)
        ax.yaxis.set_major_formatter(ScalarFormatter())
        ax.yaxis.set_minor_formatter(NullFormatter())
    else:
        pad = 0.06 * (hi - lo) or 0.5
        ax.set_ylim(lo - pad, hi + pad)


def _integer_epochs(ax) -> None:
    from matplotlib.ticker import MaxNLocator
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, nbins=6))


def refit_note(summary: Optional[Dict]) -> Optional[str]:
    """Why a per-datum guide's test −ELBO sits far below its training bound: the test data get their own
    q(z_n), refit to convergence with the model fixed, while in training each q(z_n) took one step an epoch."""
    refit = (summary or {}).get("refit")
    if not isinstance(refit, dict) or not isinstance((summary or {}).get("elbo"), (int, float)):
        return None
    guide = str((summary.get("config") or {}).get("guide", "per-datum")).rpartition(":")[2]
    return (f"Test −ELBO {-summary['elbo']:.2f} (×): the {guide} guide has one q(z_n) per datum, so after training it "
            f"is refit to the {summary.get('num_data', '?')} test data ({refit.get('epochs')} epochs, model fixed) "
            f"before it is scored. In training each q(z_n) took one step per epoch, only when its datum was in the "
            f"minibatch, so the training bound lags far behind the refit's.")


def training_curves(history: Sequence[Dict], path: Path, summary: Optional[Dict] = None) -> None:
    """Save :func:`training_curves_figure` to ``path`` (the run folder's training_curves.png)."""
    _save(training_curves_figure(history, summary), path)


def training_curves_figure(history: Sequence[Dict], summary: Optional[Dict] = None):
    """The training bound (labelled by its objective, :func:`bound_label`) and the validation −ELBO per epoch
    (nats per datum, lower is better), titled with the run, integer epoch ticks, every point in view; for a
    per-datum guide, the test −ELBO after its refit, and a note saying why it sits below the training bound
    (:func:`refit_note`). ``summary`` is the run's results.json."""
    config = (summary or {}).get("config")
    fig, ax = plt.subplots(figsize=(5.6, 3.4))
    epochs, bound, valid = _curves(history)
    ax.plot(epochs, bound, label=f"training {bound_label(config)}")
    if valid:
        ax.plot(*zip(*valid), label="validation −ELBO")
    values = bound + [v for _, v in valid]
    note = refit_note(summary)
    if note and epochs:
        test = -summary["elbo"]
        ax.plot([epochs[-1]], [test], "x", color="black", markersize=8, mew=2, label="test −ELBO after the refit")
        values.append(test)
    if values:
        _scale_y(ax, values)
    _integer_epochs(ax)
    ax.set_xlabel("epoch")
    ax.set_ylabel("nats per datum (lower is better)")
    ax.set_title(f"{run_title(config)}: training" if config else "training", fontsize=10)
    ax.legend(fontsize=8, frameon=False)
    ax.grid(alpha=0.3)
    if note:
        import textwrap
        fig.text(0.01, -0.02, textwrap.fill(note, 95), fontsize=8, va="top", ha="left")
    return fig


#: the leaderboard thumbnails: the size the page shows them at, in CSS pixels (96 to the inch, so 8-point type is
#: 8 points there), their smallest font, and how many image pixels they have per CSS pixel (sharp on a
#: high-density screen, and twice the size when a click opens them full size)
THUMBNAIL_PIXELS, THUMBNAIL_DPI, THUMBNAIL_FONT, THUMBNAIL_SCALE = (300, 210), 96, 8, 2


def history_png(history: Sequence[Dict], config: Optional[Dict] = None, title: Optional[str] = None) -> bytes:
    """A thumbnail (:data:`THUMBNAIL_PIXELS`) of a run's training for the leaderboard, from the ``history`` of its result
    file: the training bound, labelled by its objective (:func:`bound_label`), and the validation −ELBO per
    epoch, nats per datum, titled ``title`` (default: the run's ``config``); every point in view and no type
    under 8 points.
    The PNG carries no date or version, so the same history gives the same bytes."""
    import io
    fig = thumbnail_figure(history, config, title)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=THUMBNAIL_DPI * THUMBNAIL_SCALE, metadata={"Software": None})
    plt.close(fig)
    return buf.getvalue()


def thumbnail_figure(history: Sequence[Dict], config: Optional[Dict] = None, title: Optional[str] = None):
    """The figure of :func:`history_png` (its axes are ``fig.axes[0]``)."""
    fig = plt.figure(figsize=(THUMBNAIL_PIXELS[0] / THUMBNAIL_DPI, THUMBNAIL_PIXELS[1] / THUMBNAIL_DPI),
                     dpi=THUMBNAIL_DPI)
    fig.set_layout_engine("constrained")        # a fixed size, every label inside it
    ax = fig.subplots()
    epochs, bound, valid = _curves(history)
    ax.plot(epochs, bound, lw=1.2, label=f"training {bound_label(config)}")
    if valid:
        ax.plot(*zip(*valid), lw=1.2, label="validation −ELBO")
    values = bound + [v for _, v in valid]
    if values:
        _scale_y(ax, values)
    _integer_epochs(ax)
    ax.set_title(title or (run_title(config) if config else "training"), fontsize=THUMBNAIL_FONT + 1)
    ax.set_xlabel("epoch", fontsize=THUMBNAIL_FONT)
    ax.set_ylabel("nats (lower is better)", fontsize=THUMBNAIL_FONT)
    ax.tick_params(labelsize=THUMBNAIL_FONT)
    ax.legend(fontsize=THUMBNAIL_FONT, frameon=False, loc="upper right")
    ax.grid(alpha=0.3)
    return fig


#: the narrowest a grid of images is drawn, in screen pixels: an 8x8 digit is upscaled (nearest, so the
#: pixels stay square and sharp) until the grid is about this wide
GRID_MIN_WIDTH = 480


def _grid(x: torch.Tensor, image_shape: Tuple[int, int], nrow: int) -> torch.Tensor:
    """``x`` ``[n, H*W]`` as one ``[rows, cols]`` image (torchvision's make_grid), upscaled by an integer
    factor (nearest neighbour) to at least :data:`GRID_MIN_WIDTH` pixels wide."""
    from torchvision.utils import make_grid
    images = x.detach().float().cpu().clamp(0, 1).reshape(-1, 1, *image_shape)
    grid = make_grid(images, nrow=nrow, padding=1, pad_value=0.5)[0]
    scale = max(1, -(-GRID_MIN_WIDTH // grid.shape[1]))
    return grid.repeat_interleave(scale, 0).repeat_interleave(scale, 1)


def _draw_grids(panels: Sequence[Tuple[str, torch.Tensor]], path: Path) -> None:
    """Each (title, grid) one above the other, drawn pixel for pixel (no resampling) with its title."""
    dpi = 100
    width = max(g.shape[1] for _, g in panels)
    heights = [g.shape[0] for _, g in panels]
    title_px = 26
    fig = plt.figure(figsize=(width / dpi, (sum(heights) + title_px * len(panels)) / dpi), dpi=dpi)
    top = 1.0
    total = sum(heights) + title_px * len(panels)
    for title, grid in panels:
        h = grid.shape[0] / total
        top -= title_px / total
        ax = fig.add_axes([0, top - h, grid.shape[1] / width, h])
        ax.imshow(grid.numpy(), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        ax.set_axis_off()
        fig.text(0.01, top + 0.5 * title_px / total, title, fontsize=10, va="center")
        top -= h
    import io
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    plt.close(fig)
    atomic_write_bytes(Path(path), buf.getvalue())


def image_grid(x: torch.Tensor, image_shape: Tuple[int, int], path: Path, nrow: int = 8,
               title: str = "samples") -> None:
    """Save rows of ``x`` ``[n, H*W]`` as a titled grid, ``nrow`` images a row, upscaled to a readable size."""
    _draw_grids([(title, _grid(x, image_shape, nrow))], path)


def reconstruction_grid(original: torch.Tensor, reconstruction: torch.Tensor, image_shape: Tuple[int, int],
                        path: Path) -> None:
    """The test images (panel "original") above their reconstructions (panel "reconstruction"), image i of
    one panel at the place of image i of the other, so each reconstruction sits under the same place."""
    nrow = max(1, original.shape[0] // 2) if original.shape[0] >= 16 else original.shape[0]
    _draw_grids([("original (test images)", _grid(original, image_shape, nrow)),
                 ("reconstruction (each at the place of its original above)",
                  _grid(reconstruction, image_shape, nrow))], path)


def canvas_grid(frames: torch.Tensor, image_shape: Tuple[int, int], path: Path, columns: int = 16) -> None:
    """DRAW's figure: one generated image per row, the canvas after each step left to right (``frames``
    ``[T, n, H*W]``; at most ``columns`` steps, evenly spaced and always the last)."""
    steps = frames.shape[0]
    n = min(columns, steps)
    shown = sorted({round(i * (steps - 1) / max(n - 1, 1)) for i in range(n)})
    chosen = frames[shown].transpose(0, 1).reshape(-1, frames.shape[-1])          # row = one image's steps
    title = f"the canvas after steps {', '.join(str(t + 1) for t in shown)} of {steps} (one sample a row)" \
        if len(shown) < steps else f"the canvas after each of the {steps} steps (one sample a row)"
    _draw_grids([(title, _grid(chosen, image_shape, len(shown)))], path)


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


def zoom_range(values: Sequence[float]) -> Tuple[float, float]:
    """The x-range a panel shows: all ``values``, unless a far-off minority would flatten the rest.

    Sorted, the values split at their widest gap when that gap is wider than twice all the other gaps
    together and one side holds fewer values than the other (meanfield's three cells at 60 nats, six others
    within 0.2 of 26.3): the panel then shows the larger side, and the other is drawn at the panel's edge.
    """
    xs = sorted(values)
    gaps = [b - a for a, b in zip(xs, xs[1:])]
    if not gaps:
        return xs[0], xs[0]
    i = max(range(len(gaps)), key=gaps.__getitem__)
    low, high = xs[:i + 1], xs[i + 1:]
    if gaps[i] <= 2 * (sum(gaps) - gaps[i]) or len(low) == len(high):
        return xs[0], xs[-1]
    side = low if len(low) > len(high) else high
    return side[0], side[-1]


def compare_plot(rows: Sequence[Dict], path: Path, title: Optional[str] = None, baseline: Optional[str] = None) -> None:
    """A dot plot per figure (test −ELBO and NLL, nats per datum, lower is better): one row per cell, its
    mean over seeds with an error bar of ± one standard error across them (seaborn's ``errorbar="se"``),
    the baseline cell's mean as a dashed line, and a cell whose NLL is unreliable (PSIS k-hat) drawn hollow.
    A panel zooms on the cells the comparison is about (:func:`zoom_range`): a far-off cell sits at the
    panel's edge as an arrow with its value, so one outlier family does not flatten the differences."""
    from zoo.evaluation.compare_tables import UNRELIABLE_MARK, cell_rows, cell_summaries, default_baseline
    cells = list(cell_rows(rows))
    summaries = cell_summaries(rows)
    baseline = baseline if baseline in summaries else default_baseline(summaries)[0]     # as compare.md's
    seeds = max(len(s["seeds"]) for s in summaries.values())
    fig, axes = plt.subplots(1, 2, figsize=(9, 0.9 + 0.42 * len(cells)))
    ys = list(range(len(cells)))[::-1]                  # the first cell on top
    for ax, (key, name) in zip(axes, (("neg_elbo", "−ELBO"), ("nll", "NLL (IS)"))):
        shown = [(y, c, summaries[c][key]) for y, c in zip(ys, cells) if summaries[c][key] is not None]
        if not shown:
            ax.set_visible(False)
            continue
        base = summaries[baseline][key]
        lo, hi = zoom_range([s.mean for _, _, s in shown])
        kept = [s for _, _, s in shown if lo <= s.mean <= hi]
        lo, hi = min(s.mean - (s.se or 0.0) for s in kept), max(s.mean + (s.se or 0.0) for s in kept)
        margin = 0.15 * (hi - lo) or 0.5
        left, right = lo - margin, hi + margin
        for y, cell, s in shown:
            hollow = key == "nll" and summaries[cell]["unreliable"]
            colour = "C3" if cell == baseline else "C0"
            if s.mean < left or s.mean > right:         # off the zoomed panel: an arrow at its edge, with its value
                edge, marker, align = (left, "<", "left") if s.mean < left else (right, ">", "right")
                ax.plot([edge], [y], marker=marker, color=colour, markersize=8, clip_on=False)
                ax.annotate(f"{s.mean:.2f}", (edge, y), xytext=(0, 6), textcoords="offset points", ha=align,
                            fontsize=7, color=colour)
                continue
            ax.errorbar([s.mean], [y], xerr=[s.se] if s.se else None, fmt="o", color=colour, capsize=3,
                        markerfacecolor="white" if hollow else colour, markersize=6)
        if base is not None and left <= base.mean <= right:
            ax.axvline(base.mean, color="C3", linestyle="--", linewidth=0.8)
        ax.set_xlim(left, right)
        ax.set_xlabel(f"{name}, nats per datum (lower is better)", fontsize=8)
        ax.grid(axis="x", alpha=0.3)
        ax.tick_params(labelsize=7)
    labels = [c + (" (baseline)" if c == baseline else "") + (f" {UNRELIABLE_MARK}" if summaries[c]["unreliable"] else "")
              for c in cells]
    for i, ax in enumerate(axes):
        ax.set_yticks(ys)
        ax.set_yticklabels(labels if i == 0 else [], fontsize=8)
        ax.set_ylim(-0.6, len(cells) - 0.4)
    if title is None:
        model = rows[0]["config"]["model"] if rows else ""
        title = f"{Path(str(model).split(':')[-1]).name}: test bounds per guide and objective"
    bars = f"mean ± SE over {seeds} seeds" if seeds > 1 else "one seed: no error bars"
    fig.suptitle(f"{title}\n{bars}; dashed: the baseline; hollow {UNRELIABLE_MARK}: NLL unreliable (PSIS k̂); "
                 f"an arrow: a cell far off the zoomed axis, with its value",
                 fontsize=9, y=1.0, va="bottom")
    _save(fig, path)


_MARKERS = "osD^vP*Xh<>p"


def gradient_plot(rows: Sequence[Dict], path: Path) -> None:
    """Gradient variance and SNR against the number of particles, per objective and parameter group: log-log
    axes (both span decades), one colour and marker per objective (filled: model parameters, hollow and
    dashed: guide parameters), the ticks at the K values measured, and the legend beside the axes."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    keys = sorted({(r["objective"], r["group"]) for r in rows})
    objectives = sorted({o for o, _ in keys})
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for objective, group in keys:
        sel = sorted((r for r in rows if r["objective"] == objective and r["group"] == group), key=lambda r: r["particles"])
        i = objectives.index(objective)
        # dodged a little along the log axis, so that objectives with equal values (elbo and tracemeanfield
        # for a flow guide) sit side by side instead of one on the other; the ticks stay at the K measured
        ks = [r["particles"] * 1.06 ** (i - (len(objectives) - 1) / 2) for r in sel]
        style = dict(linestyle="-" if group == "model" else "--", marker=_MARKERS[i % len(_MARKERS)],
                     color=colors[i % len(colors)], markerfacecolor="none" if group != "model" else None,
                     markersize=6, alpha=0.85)
        for ax, key in zip(axes, ("variance", "snr")):
            ax.plot(ks, [r[key] for r in sel], label=f"{objective} ({group})", **style)
    particles = sorted({r["particles"] for r in rows})
    titles = ("mean per-coordinate variance (lower is better)", "mean |E g| / sd(g) (higher is better)")
    for ax, title in zip(axes, titles):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xticks(particles)
        ax.set_xticklabels([str(k) for k in particles], fontsize=8, rotation=45 if len(particles) > 6 else 0)
        ax.minorticks_off()
        ax.tick_params(axis="y", labelsize=8)
        ax.set_xlabel("particles K")
        ax.set_title(title, fontsize=9)
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False,
                   title="objective (parameters)", title_fontsize=7)
    fig.tight_layout()
    _save(fig, path)
