"""What a grid takes into its tables, and how it stops (issue 50, items 2, 9, 10 and 15).

A finished cell's results.json is the cell's own (sealed as it was written, its config the cell's) and the
grid's plan cannot change; a result that is not is one line, exit 2, and nothing is rewritten. A stop of a grid
of a user's model file says a resume command that works; Ctrl-C of ``--workers`` is one line; ``--engine ray
--address`` with no cluster there is one line and leaves no folder.
"""
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from zoo.cli import main

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["--dataset", "digits", "--latent-dim", "2", "--hidden", "16", "--epochs", "2", "--eval-samples", "20",
         "--iwae-k", "4", "--deterministic", "--no-progress"]
GRID = ["compare", "vae", "--guides", "amortized,iaf", "--objectives", "elbo"] + SMALL


def one_line(code, err, text, exit_code=2):
    lines = err.strip().splitlines()
    return code == exit_code and len(lines) == 1 and text in lines[0]


@pytest.fixture(scope="module")
def finished_grid(tmp_path_factory):
    out = tmp_path_factory.mktemp("checks") / "grid"
    assert main(GRID + ["--out", str(out)]) == 0
    return out


def grid_copy(finished_grid, tmp_path):
    out = tmp_path / "grid"
    shutil.copytree(finished_grid, out)
    return out


def outputs(out: Path):
    """The grid's own files, byte for byte: a refusal must leave them as they were."""
    return {name: (out / name).read_bytes() for name in ("grid.json", "compare.json", "compare.md")}


def edit_results(path: Path, **changes):
    result = json.loads(path.read_text())
    result.update(changes)
    path.write_text(json.dumps(result, indent=2))          # json writes float("nan") as NaN


@pytest.mark.parametrize("changes,why", [
    ({"log_likelihood": -1.0}, "it was edited"),             # a figure made better by hand
    ({"elbo": float("nan")}, "it was edited"),              # NaN: once a traceback after rewriting compare.json
    ({"elbo": "-30"}, "it was edited"),                     # a word where a number belongs
])
def test_a_hand_edited_cell_result_is_refused_and_nothing_is_rewritten(finished_grid, tmp_path, capsys, changes, why):
    out = grid_copy(finished_grid, tmp_path)
    before = outputs(out)
    edit_results(out / "amortized-elbo" / "results.json", **changes)
    code = main(["compare", "--resume", str(out), "--no-progress"])
    err = capsys.readouterr().err
    assert one_line(code, err, "amortized-elbo/results.json is not the results 'pyro-zoo' wrote"), err
    assert why in err and "pyro-zoo eval" in err
    assert outputs(out) == before


def test_a_result_without_a_seal_is_refused(finished_grid, tmp_path, capsys):
    out = grid_copy(finished_grid, tmp_path)
    path = out / "iaf-elbo" / "results.json"
    result = json.loads(path.read_text())
    del result["content_sha256"]
    path.write_text(json.dumps(result))
    code = main(["compare", "--resume", str(out), "--no-progress"])
    assert one_line(code, capsys.readouterr().err, "it has no content_sha256")


def test_swapped_cell_results_are_refused_and_nothing_is_rewritten(finished_grid, tmp_path, capsys):
    """Each cell's results.json is whole and sealed, but in the other cell's folder: its config is not the cell's."""
    out = grid_copy(finished_grid, tmp_path)
    before = outputs(out)
    a, b = out / "amortized-elbo" / "results.json", out / "iaf-elbo" / "results.json"
    text_a, text_b = a.read_text(), b.read_text()
    a.write_text(text_b)
    b.write_text(text_a)
    code = main(["compare", "--resume", str(out), "--no-progress"])
    err = capsys.readouterr().err
    assert one_line(code, err, "amortized-elbo/results.json holds the results of another run (guide 'iaf'"), err
    assert outputs(out) == before


def test_a_raised_epochs_in_the_plan_is_refused_and_nothing_is_rewritten(finished_grid, tmp_path, capsys):
    out = grid_copy(finished_grid, tmp_path)
    plan = json.loads((out / "grid.json").read_text())
    plan["base"]["epochs"] = 5
    (out / "grid.json").write_text(json.dumps(plan, indent=2))
    before = outputs(out)
    code = main(["compare", "--resume", str(out), "--no-progress"])
    err = capsys.readouterr().err
    assert one_line(code, err, "results.json holds the results of another run (epochs 2, this cell's is 5)"), err
    assert outputs(out) == before


def test_any_other_change_of_the_plan_is_refused(finished_grid, tmp_path, capsys):
    """A plan edited where no finished cell shows it (a third guide) is seen by grid.json's seal."""
    out = grid_copy(finished_grid, tmp_path)
    plan = json.loads((out / "grid.json").read_text())
    plan["guides"].append("meanfield")
    (out / "grid.json").write_text(json.dumps(plan, indent=2))
    before = outputs(out)
    code = main(["compare", "--resume", str(out), "--no-progress"])
    err = capsys.readouterr().err
    assert one_line(code, err, "grid.json was edited since the grid was started"), err
    assert outputs(out) == before and not (out / "meanfield-elbo").exists()


def test_an_untouched_finished_grid_resumes_to_the_same_tables(finished_grid, tmp_path):
    out = grid_copy(finished_grid, tmp_path)
    before = json.loads((out / "compare.json").read_text())
    assert main(["compare", "--resume", str(out), "--no-progress"]) == 0
    assert json.loads((out / "compare.json").read_text()) == before


MODEL_FILE = '''
import pyro, pyro.distributions as dist, torch
from torch import nn

def small_vae(x_dim, z_dim=2):
    decoder = nn.Linear(z_dim, x_dim)
    def model(x, idx=None, N=None):
        pyro.module("decoder", decoder)
        with pyro.plate("data", N, subsample=idx):
            z = pyro.sample("z", dist.Normal(torch.zeros(z_dim), 1.0).to_event(1))
            pyro.sample("x", dist.Bernoulli(logits=decoder(z)).to_event(1), obs=x)
    return model
'''


def test_the_stop_message_of_a_user_model_grid_names_a_resume_command_that_works(tmp_path, capsys, monkeypatch):
    """Stopped after its first cell, a grid of FILE.py:NAME says how to finish it, and that command (model file
    included: a grid folder never imports one the user did not name) finishes it."""
    from zoo.experiments import engines
    (tmp_path / "models.py").write_text(MODEL_FILE)
    monkeypatch.chdir(tmp_path)
    real, calls = engines.run_cell, []

    def stop_at_the_second(job, *args, **kwargs):
        calls.append(job.label)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(job, *args, **kwargs)
    monkeypatch.setattr(engines, "run_cell", stop_at_the_second)
    out = tmp_path / "my grid"
    code = main(["compare", "models.py:small_vae", "--guides", "amortized", "--objectives", "elbo,iwae",
                 "--out", str(out)] + SMALL[:2] + SMALL[6:])
    err = capsys.readouterr().err
    assert code == 130 and len(err.strip().splitlines()) == 1, err
    command = err.split("finish it with: ")[1].strip()
    monkeypatch.setattr(engines, "run_cell", real)
    argv = shlex.split(command)
    assert argv[:2] == ["pyro-zoo", "compare"]
    assert main(argv[1:]) == 0, capsys.readouterr().err
    assert len(json.loads((out / "compare.json").read_text())) == 2


@pytest.mark.slow
def test_ctrl_c_of_a_grid_with_workers_is_one_line(tmp_path):
    """Ctrl-C reaches the whole process group, the workers included (one of three idle: two cells): the grid stops
    at once in one line (exit 130), no worker prints a traceback, and each cell keeps its last checkpoint."""
    out = tmp_path / "grid"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    grid = subprocess.Popen([sys.executable, "-m", "zoo", "compare", "vae", "--guides", "amortized,iaf",
                             "--objectives", "elbo", "--workers", "3", "--out", str(out)]
                            + SMALL[:-4] + ["--epochs", "500", "--no-progress"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True)          # its own process group, as a terminal's job
    try:
        while len(list(out.glob("*/checkpoint.pt"))) < 2:     # the event: both cells have trained an epoch
            if grid.poll() is not None:
                pytest.fail(f"the grid ended before the event: {grid.stderr.read()[-2000:]}")
            os.sched_yield()
        os.killpg(grid.pid, signal.SIGINT)             # what Ctrl-C in a terminal does
        _, err = grid.communicate(timeout=300)
    finally:
        if grid.poll() is None:
            os.killpg(grid.pid, signal.SIGKILL)
            grid.wait()
    lines = err.strip().splitlines()
    assert grid.returncode == 130 and len(lines) == 1, err
    assert "stopped by SIGINT" in lines[0] and "pyro-zoo compare --resume" in lines[0]
    assert not list(out.glob("*/results.json"))          # 500 epochs: stopped, not waited for


def spawned_workers(pid: int):
    """The pids of the spawned worker processes of process ``pid`` (Linux's /proc)."""
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [c for c in children if b"spawn_main" in _cmdline(c)]


def _cmdline(pid) -> bytes:
    """Process ``pid``'s command line, empty if it has ended since it was listed (a short-lived helper process)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError):
        return b""


def ignores_sigint(pid) -> bool:
    mask = next(line for line in Path(f"/proc/{pid}/status").read_text().splitlines() if line.startswith("SigIgn:"))
    return bool(int(mask.split()[1], 16) >> (signal.SIGINT - 1) & 1)


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="reads the processes from Linux's /proc")
def test_ctrl_c_while_the_workers_start_is_one_line(tmp_path):
    """The workers are born ignoring SIGINT, so a Ctrl-C while they still import torch prints no traceback of
    theirs: the grid alone stops, in one line (exit 130)."""
    out = tmp_path / "grid"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    grid = subprocess.Popen([sys.executable, "-m", "zoo", "compare", "vae", "--guides", "amortized,iaf",
                             "--objectives", "elbo", "--workers", "2", "--out", str(out)]
                            + SMALL[:-4] + ["--epochs", "500", "--no-progress"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True)
    try:
        # the event: both workers exist and the grid handles SIGINT again (it ignores it while starting them)
        while len(spawned_workers(grid.pid)) < 2 or ignores_sigint(grid.pid):
            if grid.poll() is not None:
                pytest.fail(f"the grid ended before the event: {grid.stderr.read()[-2000:]}")
            os.sched_yield()
        workers = spawned_workers(grid.pid)
        born_ignoring = [ignores_sigint(w) for w in workers]
        os.killpg(grid.pid, signal.SIGINT)
        _, err = grid.communicate(timeout=300)
    finally:
        if grid.poll() is None:
            os.killpg(grid.pid, signal.SIGKILL)
            grid.wait()
    lines = err.strip().splitlines()
    assert grid.returncode == 130 and len(lines) == 1 and "stopped by SIGINT" in lines[0], err
    assert born_ignoring == [True, True]


def alive(pid) -> bool:
    """Whether any thread of process ``pid`` is running (not ended, not a zombie). Every thread counts: a worker
    ends by ``os._exit`` from a helper thread, and its main thread can be a zombie already while another thread
    still exits, holding the process's files (the cell's lock) a moment longer (seen once in CI)."""
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except (FileNotFoundError, ProcessLookupError):
        return False
    for task in tasks:
        try:
            if (task / "stat").read_text().rsplit(")", 1)[1].split()[0] not in ("Z", "X"):
                return True
        except (FileNotFoundError, ProcessLookupError):
            pass
    return False


def lock_is_free(lock: Path) -> bool:
    """Whether this process can take the cell's lock ``lock`` now (and release it at once)."""
    import fcntl
    with open(lock, "rb") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        fcntl.flock(f, fcntl.LOCK_UN)
    return True


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="reads the processes from Linux's /proc")
def test_the_workers_of_a_sigkilled_grid_end_with_it(tmp_path):
    """SIGKILL of a grid with --workers (kill -9 of its pid, the OOM killer) left its workers training their cells
    for ever, each holding its cell's lock, so 'compare --resume' was refused ("another pyro-zoo process is
    writing") until the user found and killed them (found by benchmarks/fault_injection.py). A worker now ends
    when its grid is gone, and the cells' locks are free for the resume."""
    import time
    out = tmp_path / "grid"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    grid = subprocess.Popen([sys.executable, "-m", "zoo", "compare", "vae", "--guides", "amortized,iaf",
                             "--objectives", "elbo", "--workers", "2", "--out", str(out)]
                            + SMALL[:-4] + ["--epochs", "500", "--no-progress"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True)
    try:
        while len(list(out.glob("*/checkpoint.pt"))) < 2:     # the event: both workers train a cell
            if grid.poll() is not None:
                pytest.fail(f"the grid ended before the event: {grid.stderr.read()[-2000:]}")
            time.sleep(0.01)
        workers = spawned_workers(grid.pid)
        os.kill(grid.pid, signal.SIGKILL)                   # the grid alone, not its process group
        grid.wait()
        deadline = time.time() + 30
        while any(alive(w) for w in workers) and time.time() < deadline:
            time.sleep(0.05)
        left = [w for w in workers if alive(w)]
    finally:
        try:
            os.killpg(grid.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    assert len(workers) == 2 and not left, f"workers {left} still running 30 s after their grid was killed"
    locks = list(out.glob("*/.pyro-zoo.lock"))
    while not all(lock_is_free(lock) for lock in locks) and time.time() < deadline:
        time.sleep(0.05)       # the kernel frees an ended process's files as its last thread exits
    held = [lock.parent.name for lock in locks if not lock_is_free(lock)]
    assert len(locks) == 2 and not held, f"the cells {held} are still locked 30 s after their grid was killed"


def closed_port() -> int:
    """A TCP port on this machine with nothing listening on it (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("scheme", ["", "ray://"])
def test_a_ray_address_with_no_cluster_is_one_line_and_leaves_no_folder(tmp_path, capsys, scheme):
    pytest.importorskip("ray")
    out = tmp_path / "grid"
    address = f"{scheme}127.0.0.1:{closed_port()}"
    code = main(GRID + ["--out", str(out), "--engine", "ray", "--address", address])
    err = capsys.readouterr().err
    assert one_line(code, err, f"no Ray cluster answers at --address {address}"), err
    assert not out.exists()


def test_a_grid_made_without_seeds_or_latents_takes_its_base_seed():
    """Review: Grid(seeds=None) raised TypeError where compare(seeds=None) was valid; seeds and latents are
    deduplicated where the grid is made."""
    from zoo.experiments.compare import Grid
    from zoo.experiments.config import RunConfig
    grid = Grid("vae", ["amortized"], ["elbo"], RunConfig(model="vae", dataset="digits", seed=3), seeds=None,
                latents=None)
    assert grid.seeds == [3] and grid.latents == []
    assert Grid("vae", ["amortized"], ["elbo"], RunConfig(model="vae"), seeds=[1, 1, 2]).seeds == [1, 2]
