"""The training plots a person reads: the leaderboard's thumbnails and a run's training_curves.png are titled,
in readable type (8 points or more at the size shown), with every point of the curves in view, the training
bound named by its objective, integer epochs, and the refit of a per-datum guide explained."""
import struct

import pytest

from zoo.evaluation import plots

IWAE = {"model": "vae", "guide": "amortized", "objective": "iwae", "objective_options": {"particles": 5}}


def history(epochs=7, first=540.0):
    """A training whose first epoch sits far above the rest, as a fresh model's does."""
    return [{"epoch": e, "loss": first if e == 1 else 100.0 - e, "valid_elbo": -(104.0 - e)}
            for e in range(1, epochs + 1)]


def texts(fig):
    """Every piece of type on the figure (titles, labels, ticks, legend, notes) that holds text."""
    from matplotlib.text import Text
    fig.canvas.draw()
    return [t for t in fig.findobj(Text) if t.get_text().strip() and t.get_visible()]


def in_view(ax, values):
    lo, hi = ax.get_ylim()
    return all(lo <= v <= hi for v in values)


def test_a_thumbnail_is_titled_readable_unclipped_and_names_its_bound():
    fig = plots.thumbnail_figure(history(), IWAE, title="vae · amortized · iwae")
    ax = fig.axes[0]
    assert ax.get_title() == "vae · amortized · iwae"
    assert min(t.get_fontsize() for t in texts(fig)) >= plots.THUMBNAIL_FONT >= 8
    assert in_view(ax, [540.0, 93.0, 97.0])                       # the first epoch's top is not clipped
    labels = [line.get_label() for line in ax.get_lines()]
    assert labels[0] == "training −IWAE bound (k=5)" and "validation −ELBO" in labels
    assert "−ELBO" not in labels[0]


def test_the_thumbnail_png_has_the_size_the_leaderboard_shows_it_at_twice_over():
    """The leaderboard shows it THUMBNAIL_PIXELS wide (8-point type at 96 CSS pixels to the inch), from a PNG of
    twice the pixels, which a click opens full size."""
    png = plots.history_png(history(), IWAE)
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and plots.THUMBNAIL_DPI == 96
    assert struct.unpack(">II", png[16:24]) == tuple(2 * n for n in plots.THUMBNAIL_PIXELS)


@pytest.mark.parametrize("config, label", [
    ({"objective": "elbo"}, "−ELBO"), ({"objective": "tracegraph"}, "−ELBO"), ({"objective": "dreg"}, "−IWAE bound (k=5)"),
    ({"objective": "rws", "objective_options": {"particles": 10}}, "−IWAE bound (k=10)"),
    ({"objective": "renyi", "objective_options": {"alpha": 0.5, "particles": 5}}, "−Rényi bound (α=0.5, k=5)"),
    ({"objective": "no_such_objective"}, "−training bound"),
])
def test_the_training_bound_is_named_by_its_objective(config, label):
    assert plots.bound_label(config) == label


def test_training_curves_have_a_title_and_integer_epochs():
    fig = plots.training_curves_figure(history(epochs=5), {"config": IWAE, "elbo": -96.0})
    ax = fig.axes[0]
    assert ax.get_title() == "vae · amortized · iwae: training"
    lo, hi = ax.get_xlim()
    ticks = [t for t in ax.get_xticks() if lo <= t <= hi]
    assert ticks and all(float(t).is_integer() for t in ticks)
    assert in_view(ax, [540.0, 95.0])
    assert not any("refit" in t.get_text() for t in texts(fig))      # an amortized guide is not refit


def test_a_meanfield_runs_training_curves_explain_the_refit():
    """A meanfield run's training −ELBO (72) sits far above its test −ELBO (24): the test data's q(z_n) were refit
    to convergence after training. The plot marks the test figure and says so."""
    summary = {"config": {"model": "vae", "guide": "meanfield", "objective": "elbo"}, "elbo": -24.0,
               "num_data": 270, "refit": {"epochs": 250, "converged": True}}
    fig = plots.training_curves_figure([{"epoch": e, "loss": 80.0 - e} for e in range(1, 9)], summary)
    ax = fig.axes[0]
    assert "test −ELBO after the refit" in [line.get_label() for line in ax.get_lines()]
    assert in_view(ax, [24.0, 79.0])
    note = " ".join(t.get_text() for t in texts(fig)).replace("\n", " ")
    assert "refit to the 270 test data (250 epochs, model fixed)" in note and "one step per epoch" in note
    assert min(t.get_fontsize() for t in texts(fig)) >= 8
