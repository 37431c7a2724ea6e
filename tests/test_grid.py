"""Grids at several seeds (``pyro-zoo compare --seeds``): pairing, resuming after SIGKILL, one grid per folder,
and the engines (serial, ``--workers``, Ray) giving the same tables."""
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from zoo.cli import main
from zoo.evaluation.compare_tables import compare_markdown

GRID = ["compare", "vae", "--guides", "amortized,iaf", "--objectives", "elbo,iwae", "--seeds", "0,1",
        "--dataset", "digits", "--latent-dim", "2", "--hidden", "16", "--epochs", "2", "--eval-samples", "20",
        "--iwae-k", "4", "--deterministic", "--no-progress"]


def without_timings(value):
    """A compare.json value with every wall-clock figure left out: the one thing two runs of a grid differ in."""
    if isinstance(value, dict):
        return {k: without_timings(v) for k, v in value.items() if "seconds" not in k}
    if isinstance(value, list):
        return [without_timings(v) for v in value]
    return value


def tables(out: Path):
    rows = json.loads((out / "compare.json").read_text())
    return without_timings(rows), compare_markdown(rows, timings=False)


@pytest.fixture(scope="module")
def serial_grid(tmp_path_factory):
    out = tmp_path_factory.mktemp("grids") / "serial"
    assert main(GRID + ["--out", str(out)]) == 0
    return out


@pytest.mark.slow
def test_every_cell_at_every_seed_is_kept_and_summarized(serial_grid):
    rows = json.loads((serial_grid / "compare.json").read_text())
    assert [(r["cell"], r["config"]["seed"]) for r in rows] == [
        (c, s) for c in ("amortized/elbo", "amortized/iwae", "iaf/elbo", "iaf/iwae") for s in (0, 1)]
    for r in rows:
        folder = serial_grid / f"{r['cell'].replace('/', '-')}-seed{r['config']['seed']}"
        assert json.loads((folder / "results.json").read_text())["elbo"] == r["elbo"]
    md = (serial_grid / "compare.md").read_text()
    assert "amortized/elbo (baseline) | 2 |" in md and "95% t-interval" in md and "lower is better" in md
    assert "k̂>0.7" in md and "Legend" in md
    assert (serial_grid / "compare.png").is_file()


def test_cells_at_one_seed_see_the_same_minibatches_and_seeds_differ(tmp_path, monkeypatch):
    """Pairing: at seed s every cell draws the same minibatch permutations (on the same data splits), so the
    per-seed difference between two cells is not confounded by data order; two seeds draw different ones."""
    from zoo.experiments import engines
    from zoo.training import loop
    seen, current = {}, []
    real_order, real_cell = loop.epoch_order, engines.run_cell

    def order(num_data, seed, epoch):
        perm = real_order(num_data, seed, epoch)
        seen.setdefault(current[-1], []).append(perm.tolist())
        return perm

    def cell(job, *args, **kwargs):
        current.append((job.config.guide, job.config.objective, job.config.seed))
        return real_cell(job, *args, **kwargs)
    monkeypatch.setattr(loop, "epoch_order", order)
    monkeypatch.setattr(engines, "run_cell", cell)
    assert main(GRID[:3] + ["meanfield,amortized", "--objectives", "elbo"] + GRID[6:] + ["--out", str(tmp_path / "g"),
                                                                                        "--refit-epochs", "5"]) == 0
    assert len(seen) == 4
    for seed in (0, 1):
        assert seen["meanfield", "elbo", seed] == seen["amortized", "elbo", seed]
    assert seen["amortized", "elbo", 0] != seen["amortized", "elbo", 1]


BLOCKING_GRID = textwrap.dedent("""
    import sys, threading
    from pathlib import Path
    import zoo.experiments.run as run
    real = run.save_checkpoint

    def save(path, **state):
        real(path, **state)
        if Path(path).parent.name == "amortized-iwae-seed0" and state.get("epoch") == 1:
            Path(sys.argv[1]).write_text("checkpointed")
            threading.Event().wait()         # mid-cell: hold here until the test kills the grid
    run.save_checkpoint = save
    from zoo.cli import main
    sys.exit(main(sys.argv[2:]))
""")


KILLED_WHILE_PLOTTING = textwrap.dedent("""
    import os, signal, sys
    from zoo.evaluation import plots
    real = plots.latent_scatter

    def latent_scatter(z, labels, path):
        real(z, labels, path)                # the plot's temporary file is written, not yet renamed
        os.kill(os.getpid(), signal.SIGKILL)
    plots.latent_scatter = latent_scatter
    from zoo.cli import main
    sys.exit(main(sys.argv[1:]))
""")


@pytest.mark.slow
def test_a_grid_killed_while_a_cell_writes_its_plots_resumes_to_every_file_of_the_cell(tmp_path):
    """SIGKILL after a cell's results.json was written, while its plots were (the last of its files), left a cell that
    `compare --resume` took as finished: it kept the plot's temporary file for ever and never drew the plot (found
    by benchmarks/fault_injection.py). results.json is now written last, so such a cell resumes and ends whole."""
    out, script = tmp_path / "grid", tmp_path / "killed_while_plotting.py"
    script.write_text(KILLED_WHILE_PLOTTING)
    grid = ["compare", "vae", "--guides", "amortized", "--objectives", "elbo", "--dataset", "digits", "--latent-dim",
            "2", "--hidden", "16", "--epochs", "1", "--eval-samples", "5", "--iwae-k", "4", "--no-progress"]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    killed = subprocess.run([sys.executable, str(script), *grid, "--out", str(out)], capture_output=True, text=True,
                            env=env, timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    cell = out / "amortized-elbo"
    assert (cell / "checkpoint.pt").is_file() and not (cell / "latent_scatter.png").exists()
    assert main(["compare", "--resume", str(out), "--no-progress"]) == 0
    assert (cell / "latent_scatter.png").is_file() and (cell / "results.json").is_file()
    assert not [p.name for p in cell.iterdir() if p.name.startswith(".") and p.name != ".pyro-zoo.lock"]


@pytest.mark.slow
def test_a_grid_killed_mid_cell_resumes_to_the_same_tables_and_a_second_grid_is_refused(tmp_path, serial_grid):
    out, marker = tmp_path / "killed", tmp_path / "marker"
    script = tmp_path / "blocking_grid.py"
    script.write_text(BLOCKING_GRID)
    grid = subprocess.Popen([sys.executable, str(script), str(marker)] + GRID + ["--out", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        while not marker.exists():                  # the event: the third cell has written its first checkpoint
            if grid.poll() is not None:
                pytest.fail(f"the grid ended before the event: {grid.stderr.read()[-2000:]}")
            os.sched_yield()
        second = subprocess.run([sys.executable, "-m", "zoo"] + GRID + ["--out", str(out), "--force"],
                                capture_output=True, text=True)
        lines = second.stderr.strip().splitlines()
        assert second.returncode == 2 and len(lines) == 1 and "another pyro-zoo process" in lines[0], second.stderr
    finally:
        os.kill(grid.pid, signal.SIGKILL)
        grid.wait()
    cell = out / "amortized-iwae-seed0"
    assert (cell / "checkpoint.pt").is_file() and not (cell / "results.json").exists()
    assert (out / "amortized-elbo-seed1" / "results.json").is_file() and not (out / "iaf-elbo-seed0").exists()
    assert main(["compare", "--resume", str(out), "--no-progress"]) == 0
    assert tables(out) == tables(serial_grid)          # --deterministic: bit-identical per-cell figures
    assert main(["compare", "--resume", str(out), "--no-progress"]) == 0     # all finished: nothing retrains
    assert tables(out) == tables(serial_grid)


def test_a_finished_cell_that_is_not_the_grids_is_refused_on_resume(tmp_path, serial_grid, capsys):
    import shutil
    out = tmp_path / "copy"
    shutil.copytree(serial_grid, out)
    plan = json.loads((out / "grid.json").read_text())
    plan["base"]["batch_size"] = 50
    (out / "grid.json").write_text(json.dumps(plan))
    assert main(["compare", "--resume", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is not this grid's cell" in err[0] and "batch_size" in err[0]


@pytest.mark.slow
def test_workers_give_the_same_tables_as_the_serial_grid(tmp_path, serial_grid):
    out = tmp_path / "workers"
    assert main(GRID + ["--out", str(out), "--workers", "2"]) == 0
    assert tables(out) == tables(serial_grid)


@pytest.mark.slow
def test_ray_gives_the_same_tables_as_the_serial_grid(tmp_path, serial_grid):
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        out = tmp_path / "ray"
        assert main(GRID + ["--out", str(out), "--engine", "ray"]) == 0
    finally:
        ray.shutdown()
    assert tables(out) == tables(serial_grid)


def one_line(code, err, text):
    lines = err.strip().splitlines()
    return code == 2 and len(lines) == 1 and lines[0].startswith("pyro-zoo: error:") and text in lines[0]


@pytest.mark.parametrize("extra,text", [
    (["--baseline-cell", "iaf/rws"], "--baseline-cell 'iaf/rws' is not a cell of the grid"),
    (["--repeats", "3"], "give one of --seeds and --repeats"),
    (["--address", "auto"], "--address is the Ray cluster's"),
])
def test_bad_grid_flags_are_one_line_and_write_nothing(tmp_path, capsys, extra, text):
    out = tmp_path / "nothing"
    code = main(GRID + ["--out", str(out)] + extra)
    assert one_line(code, capsys.readouterr().err, text)
    assert not out.exists()


def test_ray_missing_is_one_line_naming_the_extra(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)           # import ray raises ImportError
    code = main(GRID + ["--out", str(tmp_path / "g"), "--engine", "ray"])
    assert one_line(code, capsys.readouterr().err, 'pip install "pyro-zoo[ray]"')


def test_resume_of_a_folder_without_a_grid_is_one_line(tmp_path, capsys):
    code = main(["compare", "--resume", str(tmp_path)])
    assert one_line(code, capsys.readouterr().err, "grid.json is missing")


def test_report_pools_a_grids_seeds_into_one_leaderboard_row(tmp_path, serial_grid, capsys):
    import shutil
    runs = tmp_path / "runs"
    shutil.copytree(serial_grid, runs / "grid")
    assert main(["report", str(runs), "--out", str(tmp_path / "README.md")]) == 0
    board = (tmp_path / "LEADERBOARD.md").read_text()
    rows = [line for line in board.splitlines() if line.startswith("| vae · ")]
    assert len(rows) == 4 and all("(2 seeds)" in r for r in rows)
