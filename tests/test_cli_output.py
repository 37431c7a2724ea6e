"""What the command line shows a person: readable, labelled image grids, plots whose legends sit off the
data, progress during the slow stages, and warnings and notes that say which run of a grid they are about."""
import os
import subprocess
import sys
from pathlib import Path

import matplotlib
import pytest
from PIL import Image

from zoo.cli import main
from zoo.evaluation import plots

TINY = ["--epochs", "1", "--eval-samples", "5", "--iwae-k", "5", "--latent-dim", "2", "--seed", "0"]


def run_cli(args, capsys):
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "vae"
    assert main(["train", "vae", "--out", str(out), "--no-progress"] + TINY) == 0
    return out


def _has_title_strip(path: Path) -> bool:
    """The top rows of the picture are a white strip with dark text on it (a title), not the grey padding
    of a bare make_grid."""
    image = Image.open(path).convert("L")
    strip = [image.getpixel((x, y)) for y in range(0, 18) for x in range(image.width)]
    return sum(p > 240 for p in strip) > 0.6 * len(strip) and sum(p < 100 for p in strip) > 20


def test_sample_and_reconstruction_grids_are_readable_and_labelled(digits_run):
    """8x8 digits are drawn big enough to see (the grid at least 400 px wide, upscaled nearest), each grid
    under a title, and the reconstructions in their own titled panel below the originals."""
    samples = Image.open(digits_run / "samples.png")
    recon = Image.open(digits_run / "reconstructions.png")
    assert samples.width >= 400 and samples.height >= 400
    assert recon.width >= 400 and recon.height >= 150
    assert _has_title_strip(digits_run / "samples.png") and _has_title_strip(digits_run / "reconstructions.png")
    # the second title ("reconstruction"): a white strip with text in the middle of the picture
    image = recon.convert("L")
    rows = [[image.getpixel((x, y)) for x in range(image.width)] for y in range(image.height)]
    white = [y for y, row in enumerate(rows) if sum(p > 240 for p in row) > 0.5 * image.width]
    assert any(image.height * 0.3 < y < image.height * 0.7 for y in white)


def _captured_figure(monkeypatch, draw):
    figures = []
    monkeypatch.setattr(plots, "_save", lambda fig, path: figures.append(fig))
    draw()
    (fig,) = figures
    fig.canvas.draw()
    return fig


def _row(guide, objective, elbo):
    return {"config": {"model": "vae", "guide": guide, "objective": objective}, "elbo": elbo,
            "iwae_bound": elbo + 1, "log_likelihood": elbo + 1.5, "log_likelihood_se": 0.1}


def test_compare_plot_zooms_past_an_outlier_with_se_bars_and_the_baseline_marked(monkeypatch):
    """A dot plot per figure with ± SE error bars across seeds, the baseline marked, and a zoom on the cells the
    comparison is about: meanfield at 60 nats does not flatten amortized and iaf 0.05 apart."""
    rows = [dict(_row(g, o, elbo + 0.02 * s), config={"model": "vae", "guide": g, "objective": o, "seed": s})
            for g, o, elbo in (("meanfield", "elbo", -60.0), ("amortized", "elbo", -26.29), ("amortized", "iwae", -26.2),
                               ("iaf", "elbo", -26.34)) for s in range(3)]
    fig = _captured_figure(monkeypatch, lambda: plots.compare_plot(rows, Path("unused.png"), baseline="amortized/elbo"))
    ax = fig.axes[0]
    assert "vae" in fig._suptitle.get_text() and "mean ± SE over 3 seeds" in fig._suptitle.get_text()
    assert "lower is better" in ax.get_xlabel()
    left, right = ax.get_xlim()
    assert left > 26.0 and right < 27.0                       # zoomed on the cells within 0.2 nats
    assert any(t.get_text() == "59.98" for t in ax.texts)     # the outlier: an arrow at the edge, with its value
    assert "amortized/elbo (baseline)" in [t.get_text() for t in ax.get_yticklabels()]
    assert len(ax.containers) == 3                            # an error bar for each cell on the axis


def test_gradient_plot_legend_is_off_the_axes_and_objectives_have_their_own_markers(monkeypatch):
    rows = [{"objective": o, "group": g, "particles": k, "variance": v * k ** -0.5, "snr": 1 + k}
            for o, v in (("elbo", 1.0), ("tracemeanfield", 1.0), ("iwae", 2.0)) for g in ("model", "guide")
            for k in (1, 5, 50)]
    fig = _captured_figure(monkeypatch, lambda: plots.gradient_plot(rows, Path("unused.png")))
    renderer = fig.canvas.get_renderer()
    legend = fig.axes[1].get_legend().get_window_extent(renderer)
    for ax in fig.axes:
        assert not legend.overlaps(ax.get_window_extent(renderer))
        assert [t.get_text() for t in ax.get_xticklabels()] == ["1", "5", "50"]
    lines = fig.axes[0].get_lines()
    markers = {line.get_label().split()[0]: line.get_marker() for line in lines}
    assert len(set(markers.values())) == 3
    # equal values (elbo and tracemeanfield here) do not lie exactly on each other
    xs = {line.get_label(): tuple(line.get_xdata()) for line in lines}
    assert xs["elbo (model)"] != xs["tracemeanfield (model)"]
    assert matplotlib.get_backend().lower() == "agg"


def test_compare_names_the_cell_of_each_warning_and_notes_a_flow_without_analytic_kl(tmp_path, capsys):
    """`iaf` with `tracemeanfield` has no closed-form KL (a flow): Pyro falls back to Monte Carlo, so the
    cell is plain `elbo`; the console says so, and every PSIS warning names its cell."""
    code, out, err = run_cli(["compare", "vae", "--guides", "amortized,iaf", "--objectives", "tracemeanfield",
                              "--out", str(tmp_path / "cmp"), "--no-progress"] + TINY, capsys)
    assert code == 0, err
    assert "note: vae/iaf/tracemeanfield: iaf has no closed-form KL for z" in out
    assert "note: vae/amortized" not in out
    warnings = [line for line in out.splitlines() if line.startswith("warning:")]
    assert warnings and all(line.startswith(("warning: vae/amortized/tracemeanfield: ",
                                             "warning: vae/iaf/tracemeanfield: ")) for line in warnings)


@pytest.mark.slow
def test_the_slow_stages_say_what_they_are_doing(tmp_path, capsys):
    """The per-datum refit after a meanfield run and `pyro-zoo gradients` each print a line per stage
    (nothing with --no-progress)."""
    code, out, err = run_cli(["train", "vae", "--guide", "meanfield", "--refit-epochs", "3",
                              "--out", str(tmp_path / "mf")] + TINY, capsys)
    assert code == 0, err
    assert "refitting a per-datum meanfield guide to the 270 test data" in out
    args = ["gradients", "vae", "--objectives", "elbo", "--particles", "1", "--repeats", "2", "--batch-size", "4",
            "--latent-dim", "2"]
    code, out, err = run_cli(args + ["--out", str(tmp_path / "g")], capsys)
    assert code == 0, err
    assert "gradients: reference gradients" in err and "gradients: elbo, K = 1: 2 gradient estimates" in err
    code, out, err = run_cli(args + ["--out", str(tmp_path / "g2"), "--no-progress"], capsys)
    assert code == 0, err
    assert "gradients:" not in err


def test_train_help_points_deterministic_to_a_section_that_exists(capsys):
    """`train --help` sends --deterministic to zoo/README.md's "Reproducibility", which is there."""
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert 'see zoo/README.md, "Reproducibility"' in help_text
    readme = (Path(__file__).resolve().parents[1] / "zoo" / "README.md").read_text()
    assert "\n## Reproducibility\n" in readme and "--deterministic" in readme.split("## Reproducibility")[1]


def test_homework_list_names_each_check_with_its_points(capsys):
    """INSTRUCTORS.md promises 'the assignments, their checks and points': each visible check by name."""
    from zoo.homework.kit import ASSIGNMENTS
    assert main(["homework", "list"]) == 0
    out = capsys.readouterr().out
    for hw in ASSIGNMENTS.values():
        for check in hw.checks:
            line = f"    {check.name}"
            assert (line in out) != check.hidden, check.name
            if not check.hidden:
                shown = next(s for s in out.splitlines() if s.startswith(line + " "))
                assert shown.split()[-2:] == [f"{check.points:g}", "points"]


def test_list_does_not_import_the_plotting_stack():
    """`pyro-zoo list` prints the registry: it needs torch and Pyro (the components' modules), but not
    matplotlib or torchvision, which (torchvision pulls in torch._dynamo) were about half its start-up, nor SciPy
    (the von Mises-Fisher's Bessel function imports it where it is called) or arviz."""
    import subprocess
    import sys
    code = ("import sys, contextlib, io\nfrom zoo.cli import main\n"
            "with contextlib.redirect_stdout(io.StringIO()): assert main(['list']) == 0\n"
            "print(sorted(m for m in ('matplotlib', 'torchvision', 'torch._dynamo', 'scipy', 'arviz') if m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"


@pytest.mark.slow
def test_drawing_a_plot_leaves_the_process_matplotlib_backend_alone(tmp_path):
    """plots.py called matplotlib.use("Agg") on its first draw: a notebook that ran the CLI in-process (tutorial 04's
    `pyro-zoo gradients`) lost every later inline figure."""
    code = ("import matplotlib; matplotlib.use('svg'); from zoo.evaluation import plots; "
            "plots.training_curves([{'epoch': 1, 'loss': 3.0, 'valid_elbo': -3.5}], 'c.png'); "
            "import os; print(matplotlib.get_backend(), os.path.getsize('c.png') > 0)")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                         env={**{k: v for k, v in os.environ.items() if k != "MPLBACKEND"},
                              "PYTHONPATH": str(Path(__file__).resolve().parents[1])})    # this checkout's zoo
    assert out.returncode == 0 and out.stdout.split() == ["svg", "True"], out.stderr[-2000:]
