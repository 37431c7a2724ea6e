"""A run folder in other people's hands: it is data (nothing it names runs, a checkpoint must be its own),
a blown-up step never replaces the last good checkpoint, one process writes it at a time, and every
stop (a full disk, a failing user model, SIGINT, SIGTERM) is one line that tells the truth."""
import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
import torch

from zoo.cli import main
from zoo.training.checkpoint import load_checkpoint

sys.path.insert(0, str(Path(__file__).parent))
from user_models import USER_FILE      # noqa: E402  (tests/user_models.py)

QUICK = ["--dataset", "digits", "--eval-samples", "10", "--iwae-k", "5", "--no-progress", "--seed", "0"]
SMALL = QUICK + ["--latent-dim", "2", "--hidden", "32"]          # a small vae
ENV = dict(os.environ, OMP_NUM_THREADS="1")


def run_cli(args, capsys):
    args = [str(a) for a in args]
    code = main(args + ([] if "--no-progress" in args else ["--no-progress"]))
    out, err = capsys.readouterr()
    return code, out, err


def one_line(code, err, exit_code=2):
    lines = err.strip().splitlines()
    return code == exit_code and len(lines) == 1 and lines[0].startswith("pyro-zoo: ")


def snapshot(folder: Path):
    """Every file's bytes and mtime (but the writer lock's): what 'changed nothing' means."""
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(folder.iterdir())
            if p.is_file() and p.name != ".pyro-zoo.lock"}


@pytest.fixture(scope="module")
def vae_run(tmp_path_factory):
    """A trained 2-epoch vae run folder (copy it before changing it)."""
    out = tmp_path_factory.mktemp("runs") / "vae"
    assert main(["train", "vae", "--epochs", "2", "--out", str(out)] + SMALL) == 0
    return out


def copy_run(run: Path, where: Path) -> Path:
    shutil.copytree(run, where)
    return where


# -- checkpoints that are not this run's --------------------------------------------------------------
def _not_checkpoints(tmp_path):
    junk = tmp_path / "junk.zip"
    with zipfile.ZipFile(junk, "w") as z:
        z.writestr("archive/data.pkl", b"\x80\x02junk")
        z.writestr("archive/other", os.urandom(64))
    listed = tmp_path / "list.pt"
    torch.save([torch.zeros(2), 1], listed)
    return {"text": b"hello", "random bytes": bytes(range(256)) * 4, "zip with junk": junk.read_bytes(),
            "a list": listed.read_bytes()}


@pytest.mark.parametrize("what", ["text", "random bytes", "zip with junk", "a list"])
def test_a_file_that_is_not_a_checkpoint_is_one_line_for_every_reader(vae_run, tmp_path, capsys, what):
    """'hello' in checkpoint.pt ended eval and train --resume in `KeyError: 101` from the weights-only unpickler."""
    run = copy_run(vae_run, tmp_path / "run")
    (run / "checkpoint.pt").write_bytes(_not_checkpoints(tmp_path)[what])
    before = snapshot(run)
    for command in (["eval", run], ["train", "--resume", run, "--epochs", "3"], ["eval", run, "--gaps"],
                    ["gradients", "vae", "--objectives", "elbo", "--checkpoint", run, "--out", tmp_path / "g"]):
        code, _, err = run_cli(command, capsys)
        assert one_line(code, err) and "checkpoint" in err, (command, err)
    assert snapshot(run) == before and not (tmp_path / "g").exists()


@pytest.mark.parametrize("call", ["a method", "a function of a blocked module"])
def test_a_checkpoint_holding_pickled_code_is_refused_and_not_run(vae_run, tmp_path, capsys, call):
    """A call to os.system (a module torch blocks) was reported as a corrupt file: torch 2.14 words that refusal
    "unsupported GLOBAL posix.system whose module posix is blocked". Both kinds say the file holds code."""
    run = copy_run(vae_run, tmp_path / "run")
    marker = tmp_path / "ran"
    state = load_checkpoint(run / "checkpoint.pt")
    state["history"] = [_Pickled(str(marker)) if call == "a method" else _System(f"touch {marker}")]
    torch.save(state, run / "checkpoint.pt")
    code, _, err = run_cli(["eval", run], capsys)
    assert one_line(code, err) and "never runs code" in err, err
    assert not marker.exists()


class _System:
    """Unpickling this (weights_only=False) would run a shell command."""

    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


class _Pickled:
    """Unpickling this (weights_only=False) would create a file."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (Path(self.path).touch, ())


def test_a_ppca_checkpoint_in_a_vae_run_is_refused_and_changes_nothing(vae_run, tmp_path, capsys):
    """eval overwrote the vae's results.json with ppca results, and --resume rewrote its config.json to ppca."""
    ppca = tmp_path / "ppca"
    assert main(["train", "ppca", "--guide", "exact", "--epochs", "1", "--out", str(ppca)] + QUICK + ["--latent-dim", "2"]) == 0
    run = copy_run(vae_run, tmp_path / "vae")
    shutil.copy(ppca / "checkpoint.pt", run / "checkpoint.pt")
    before = snapshot(run)
    for command in (["eval", run], ["train", "--resume", run, "--epochs", "3"], ["eval", run, "--gaps"]):
        code, _, err = run_cli(command, capsys)
        assert one_line(code, err) and "not this run's checkpoint" in err and "'ppca'" in err, err
    assert snapshot(run) == before


def _bad_config_json(run: Path, what: str) -> None:
    config = run / "config.json"
    if what == "nested 100,000 deep":
        config.write_text("[" * 100_000 + "]" * 100_000)
    elif what == "claiming another model":
        config.write_text(json.dumps({**json.loads(config.read_text()), "model": "ppca"}))
    else:
        config.unlink()
        os.mkfifo(config)


@pytest.mark.parametrize("what", ["nested 100,000 deep", "claiming another model", "a FIFO"])
def test_a_config_json_that_is_no_run_config_is_one_line_naming_it(vae_run, tmp_path, capsys, what):
    """config.json nested 100,000 deep was a RecursionError traceback; one claiming ppca (with the vae's
    options) was blamed on a flag nobody gave ('--hidden is not an option of ppca'); a FIFO was 'no config.json'."""
    run = copy_run(vae_run, tmp_path / "run")
    _bad_config_json(run, what)
    before = snapshot(run)
    for command in (["eval", run], ["train", "--resume", run, "--epochs", "3"]):
        code, _, err = run_cli(command, capsys)
        assert one_line(code, err) and f"{run / 'config.json'}" in err and "--hidden" not in err, err
    assert snapshot(run) == before


@pytest.mark.skipif(not Path("/dev/zero").exists(), reason="needs /dev/zero")
@pytest.mark.parametrize("what", ["a link to /dev/zero", "a FIFO"])
def test_a_checkpoint_that_is_not_a_regular_file_is_refused_as_such(vae_run, tmp_path, capsys, what):
    """Reading a FIFO waits for a writer and /dev/zero never ends: both are refused unread, and the message
    says what the file is (it said 'no checkpoint at ...' about a file that is there)."""
    run = copy_run(vae_run, tmp_path / "run")
    (run / "checkpoint.pt").unlink()
    if what == "a FIFO":
        os.mkfifo(run / "checkpoint.pt")
    else:
        (run / "checkpoint.pt").symlink_to("/dev/zero")
    code, _, err = run_cli(["eval", run], capsys)
    assert one_line(code, err) and "not a regular file" in err, err


def test_a_checkpoint_with_other_shapes_is_refused_naming_the_option(vae_run, tmp_path, capsys):
    other = tmp_path / "other"
    assert main(["train", "vae", "--epochs", "1", "--out", str(other)] + QUICK + ["--latent-dim", "3", "--hidden", "32"]) == 0
    run = copy_run(vae_run, tmp_path / "vae")
    shutil.copy(other / "checkpoint.pt", run / "checkpoint.pt")
    before = snapshot(run)
    code, _, err = run_cli(["eval", run], capsys)
    assert one_line(code, err) and "latent_dim" in err and "3" in err, err
    assert snapshot(run) == before


# -- model files a run folder names ------------------------------------------------------------------
def _planted_run(tmp_path, capsys, monkeypatch):
    """A run folder that carries its own model.py, which writes a marker file when imported."""
    run = tmp_path / "run"
    run.mkdir()
    marker = tmp_path / "marker"
    source = f"open({str(marker)!r}, 'w').write('ran')\n" + USER_FILE
    (run / "model.py").write_text(source)
    monkeypatch.chdir(run)
    code, _, err = run_cli(["train", "model.py:my_vae", "--epochs", "1", "--out", "."] + QUICK, capsys)
    assert code == 0, err
    config = json.loads((run / "config.json").read_text())
    assert config["model"] == f"{run.resolve() / 'model.py'}:my_vae"           # recorded by its absolute path
    assert len(config["model_options"]["source_sha256"]) == 64
    marker.unlink()
    return run, marker, source


def test_a_run_folder_never_imports_the_model_file_it_names(tmp_path, capsys, monkeypatch):
    """`cd run && pyro-zoo eval .` ran the folder's own model.py."""
    run, marker, _ = _planted_run(tmp_path, capsys, monkeypatch)
    before = snapshot(run)
    for command in (["eval", "."], ["train", "--resume", ".", "--epochs", "2"], ["eval", ".", "--gaps"],
                    ["gradients", "vae", "--objectives", "elbo", "--checkpoint", ".", "--out", tmp_path / "g"]):
        code, _, err = run_cli(command, capsys)
        assert one_line(code, err) and "never imports" in err and "FILE.py:my_vae" in err, (command, err)
        assert not marker.exists(), command
    assert snapshot(run) == before


def test_a_named_model_file_is_checked_before_it_is_imported(tmp_path, capsys, monkeypatch):
    run, marker, source = _planted_run(tmp_path, capsys, monkeypatch)
    (run / "model.py").write_text(source + "\n# changed\n")
    for command in (["eval", ".", "--model", "model.py:my_vae"],
                    ["train", "model.py:my_vae", "--resume", ".", "--epochs", "2"],
                    ["gradients", "model.py:my_vae", "--objectives", "elbo", "--checkpoint", ".", "--out",
                     tmp_path / "g"]):
        code, _, err = run_cli(command, capsys)
        assert one_line(code, err) and "changed since this run was made" in err, (command, err)
        assert not marker.exists(), command
    (run / "model.py").write_text(source)
    code, _, err = run_cli(["eval", ".", "--model", "model.py:my_vae"], capsys)
    assert code == 0, err
    code, _, err = run_cli(["train", "model.py:my_vae", "--resume", ".", "--epochs", "2"], capsys)
    assert code == 0, err
    assert json.loads((run / "results.json").read_text())["epochs_trained"] == 2


# -- a blown-up step ----------------------------------------------------------------------------------
def test_a_blown_up_step_never_replaces_the_good_checkpoint(vae_run, tmp_path, capsys):
    """`train --resume good2 --epochs 4 --lr 1e39 --checkpoint-every 1` wrote inf into every parameter of the
    checkpoint its message called intact, and the advised resume with --lr 1e-3 crashed."""
    good = copy_run(vae_run, tmp_path / "good2")
    before = snapshot(good)
    code, _, err = run_cli(["train", "--resume", good, "--epochs", "4", "--lr", "1e39", "--checkpoint-every", "1"],
                           capsys)
    assert one_line(code, err) and "non-finite" in err and "(epoch 2) holds the last good state" in err, err
    assert snapshot(good) == before                     # not one byte of the good run changed
    state = load_checkpoint(good / "checkpoint.pt")
    assert all(torch.isfinite(v).all() for part in ("model", "guide") for v in state[part].values())
    code, _, err = run_cli(["train", "--resume", good, "--epochs", "4", "--lr", "1e-3"], capsys)
    assert code == 0, err
    assert json.loads((good / "results.json").read_text())["epochs_trained"] == 4


def test_a_checkpoint_holding_inf_is_refused_in_one_line(vae_run, tmp_path, capsys):
    """What the old loop wrote after a blown-up step: resuming it 'with a lower --lr' as advised was a traceback."""
    run = copy_run(vae_run, tmp_path / "run")
    state = load_checkpoint(run / "checkpoint.pt")
    state["model"] = {k: torch.full_like(v, float("inf")) if v.is_floating_point() else v
                      for k, v in state["model"].items()}
    torch.save(state, run / "checkpoint.pt")
    before = snapshot(run)
    for command in (["eval", run], ["train", "--resume", run, "--epochs", "4", "--lr", "1e-3"]):
        code, _, err = run_cli(command, capsys)
        assert one_line(code, err) and "holds NaN or inf" in err, err
    assert snapshot(run) == before


def test_a_checkpoint_declaring_a_huge_tensor_is_refused_by_its_shape_in_one_line(vae_run, tmp_path, capsys):
    """A tensor saved as one number expanded to 10^6 x 10^6 (a few bytes on disk): eval and resume checked it for NaN
    before its shape and tried to allocate 4 TB, a traceback (a few GB less would have been the OOM killer). The
    shape is checked first, so the file is refused in one line, whatever size it declares."""
    run = copy_run(vae_run, tmp_path / "run")
    state = load_checkpoint(run / "checkpoint.pt")
    first = next(k for k, v in state["model"].items() if v.is_floating_point())
    state["model"][first] = torch.zeros(1).expand(10 ** 6, 10 ** 6)
    torch.save(state, run / "checkpoint.pt")
    assert (run / "checkpoint.pt").stat().st_size < 10 ** 7
    before = snapshot(run)
    for command in (["eval", run], ["train", "--resume", run, "--epochs", "4"]):
        code, _, err = run_cli(command, capsys)
        assert one_line(code, err) and "does not fit" in err and "1000000, 1000000" in err, err
    assert snapshot(run) == before


def test_a_whole_batch_blow_up_is_one_line_and_leaves_no_folder(tmp_path, capsys):
    """--batch-size = the training set with --lr 1e39 left a traceback and a lone config.json."""
    out = tmp_path / "run"
    code, _, err = run_cli(["train", "vae", "--batch-size", "1257", "--lr", "1e39", "--epochs", "2", "--out", out]
                           + SMALL, capsys)
    assert one_line(code, err) and "non-finite" in err and "no checkpoint had been written" in err, err
    assert not out.exists()


NAN_AT = '''
CALLS, STEPS = [0], []
def my_vae(x_dim, z_dim=2):
    decoder = nn.Sequential(nn.Linear(z_dim, 16), nn.Tanh(), nn.Linear(16, x_dim))
    def model(x, idx=None, N=None):
        pyro.module("decoder", decoder)
        CALLS[0] += 1
        with pyro.plate("data", N, subsample=idx):
            z = pyro.sample("z", dist.Normal(torch.zeros(z_dim), 1.0).to_event(1))
            logits = decoder(z)
            {action}
            pyro.sample("x", dist.Bernoulli(logits=logits).to_event(1), obs=x)
    return model
'''


def _model_file(tmp_path, action):
    path = tmp_path / "my_models.py"
    path.write_text("import pyro, pyro.distributions as dist, torch\nfrom torch import nn\n"
                    + NAN_AT.format(action=action))
    return path


def test_a_nan_loss_is_one_line_on_stderr_without_pyros_warning(tmp_path, capsys):
    """Pyro's two-line warn_if_nan preceded every non-finite-loss error."""
    path = _model_file(tmp_path, "logits = logits * float('nan') if CALLS[0] == 30 else logits")
    code, _, err = run_cli(["train", f"{path}:my_vae", "--epochs", "2", "--batch-size", "100", "--out",
                            tmp_path / "run"] + QUICK, capsys)
    assert one_line(code, err) and "non-finite loss nan" in err, err


def test_a_user_model_raising_in_epoch_3_names_its_file_and_line(tmp_path, capsys):
    """The same error at the trial run was one line with file and line; in epoch 3 it was a traceback."""
    # a step of 500 data: steps 1 and 2 of each epoch (1257 = 500 + 500 + 257), so the 5th is epoch 3, step 1 or 2
    path = _model_file(tmp_path, "STEPS.extend([1] if x is not None and x.shape[0] == 500 else []); "
                                 "assert len(STEPS) < 5, 'the decoder ran out of patience'")
    out = tmp_path / "run"
    code, _, err = run_cli(["train", f"{path}:my_vae", "--epochs", "4", "--batch-size", "500", "--out", out]
                           + QUICK, capsys)
    assert one_line(code, err) and "failed at epoch 3, step " in err, err
    line = next(i for i, text in enumerate(path.read_text().splitlines(), 1) if "assert len(STEPS)" in text)
    assert f"(my_models.py, line {line}): AssertionError: the decoder ran out of patience; fix the model there" in err
    assert load_checkpoint(out / "checkpoint.pt")["epoch"] == 2           # the epochs before it are kept


# -- a full disk --------------------------------------------------------------------------------------
def _full_disk_after(monkeypatch, good_writes: int):
    """os.fsync fails with ENOSPC after ``good_writes`` files were written (as on a full disk)."""
    real, files = os.fsync, []

    def fsync(fd):
        import stat
        if stat.S_ISREG(os.fstat(fd).st_mode):
            files.append(fd)
            if len(files) > good_writes:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(fd)
    monkeypatch.setattr(os, "fsync", fsync)


@pytest.mark.parametrize("good_writes,failing", [(0, "config.json"), (1, "checkpoint.pt")])
def test_a_full_disk_is_one_line_and_leaves_no_files(tmp_path, capsys, monkeypatch, good_writes, failing):
    out = tmp_path / "run"
    _full_disk_after(monkeypatch, good_writes)
    code, _, err = run_cli(["train", "vae", "--epochs", "1", "--out", out] + SMALL, capsys)
    assert one_line(code, err) and f"no space left on device writing {out / failing}; free space" in err, err
    assert not out.exists()


def test_a_resume_whose_checkpoint_cannot_be_written_leaves_the_config_as_it_was(vae_run, tmp_path, capsys,
                                                                                   monkeypatch):
    """`train --resume RUN --epochs 3` on a nearly full disk wrote config.json (now saying 3 epochs) and then failed
    to write the checkpoint: the folder said epochs it never trained (found by benchmarks/fault_injection.py with
    16 KiB free). The config is renamed into place only with its checkpoint, so the folder is as it was."""
    run = copy_run(vae_run, tmp_path / "run")
    before = snapshot(run)
    _full_disk_after(monkeypatch, 1)            # the staged config.json is written, the checkpoint is not
    code, _, err = run_cli(["train", "--resume", run, "--epochs", "3"], capsys)
    assert one_line(code, err) and "no space left on device writing" in err, err
    assert snapshot(run) == before
    assert not [p.name for p in run.iterdir() if p.name.startswith(".config")]


KILLED_AFTER_CHECKPOINT = """
import os, signal, sys
import zoo.experiments.run as run
real = run.save_checkpoint

def save(path, **state):
    real(path, **state)                      # the checkpoint is renamed into place: SIGKILL before anything else
    if path.name == "checkpoint.pt" and state.get("epoch") == int(sys.argv[1]):
        os.kill(os.getpid(), signal.SIGKILL)
run.save_checkpoint = save
from zoo.cli import main
sys.exit(main(sys.argv[2:]))
"""


@pytest.mark.slow
@pytest.mark.parametrize("resume", [False, True], ids=["new-run", "resumed-run"])
def test_a_run_killed_just_after_a_checkpoint_resumes(vae_run, tmp_path, resume):
    """SIGKILL right after a checkpoint's rename: a new run's folder already holds its config.json (it is written
    first), and a resumed run's holds the old config.json beside a checkpoint that differs from it only in
    epochs, which a resume accepts. Either way `train --resume` finishes the run (the staged config of 65961e2
    left a new run's checkpoint without any config.json, found by tests/test_grid.py's killed grid)."""
    script = tmp_path / "killed.py"
    script.write_text(KILLED_AFTER_CHECKPOINT)
    if resume:
        out, args, epoch = copy_run(vae_run, tmp_path / "run"), ["train", "--resume"], 3
        args += [str(out), "--epochs", "4", "--no-progress"]
    else:
        out, epoch = tmp_path / "run", 1
        args = ["train", "vae", "--epochs", "2", "--out", str(out), "--no-progress"] + SMALL
    killed = subprocess.run([sys.executable, str(script), str(epoch)] + args, env=ENV, capture_output=True, text=True)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert (out / "config.json").is_file() and load_checkpoint(out / "checkpoint.pt")["epoch"] == epoch
    resumed = subprocess.run([sys.executable, "-m", "zoo", "train", "--resume", str(out), "--no-progress"],
                             env=ENV, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert load_checkpoint(out / "checkpoint.pt")["epoch"] == (4 if resume else 2)
    assert json.loads((out / "config.json").read_text())["epochs"] == (4 if resume else 2)


def test_a_full_disk_while_writing_results_keeps_the_old_ones(vae_run, tmp_path, capsys, monkeypatch):
    run = copy_run(vae_run, tmp_path / "run")
    before = snapshot(run)
    _full_disk_after(monkeypatch, 0)
    code, _, err = run_cli(["eval", run], capsys)
    # the first file of the group (results.json is its last, so that a run holds it only once the rest is written)
    assert one_line(code, err) and f"no space left on device writing {run / 'per_datum.npz'}" in err, err
    assert snapshot(run) == before


@pytest.mark.parametrize("good_writes", [1, 3, 6])
def test_a_full_disk_part_way_through_an_evaluation_s_files_replaces_none_of_them(vae_run, tmp_path, capsys,
                                                                                   monkeypatch, good_writes):
    """`eval RUN --force` with a little space left replaced per_datum.npz, then failed on a plot: the folder held
    the new per-datum figures beside the old results.json. A command's files are one group (written_together):
    the disk fills after the first file, a plot, or results.md, and every file is as it was, with no temporary
    file left beside them."""
    run = copy_run(vae_run, tmp_path / "run")
    before = snapshot(run)
    _full_disk_after(monkeypatch, good_writes)
    code, _, err = run_cli(["eval", run, "--eval-samples", "6", "--eval-limit", "20", "--force"], capsys)
    assert one_line(code, err) and "no space left on device writing" in err, err
    assert snapshot(run) == before


def test_a_group_whose_rename_fails_half_way_puts_back_the_files_renamed_before_it(tmp_path, monkeypatch):
    """The renames of a group can fail too (a folder that cannot grow): the files renamed before the failing one
    get their old contents back, a file that had none is removed, and no temporary file is left."""
    from zoo.core.errors import ZooError
    from zoo.training.checkpoint import written_together
    (tmp_path / "a.txt").write_text("old a")
    (tmp_path / "c.txt").write_text("old c")
    real, renames = os.replace, []

    def replace(src, dst):
        renames.append(dst)
        if len(renames) == 3:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(src, dst)
    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(ZooError, match="no space left on device writing .*c.txt"):
        with written_together(tmp_path) as files:
            files.write_text(tmp_path / "a.txt", "new a")
            files.write_text(tmp_path / "b.txt", "new b")
            files.write_text(tmp_path / "c.txt", "new c")
    assert {p.name: p.read_text() for p in tmp_path.iterdir()} == {"a.txt": "old a", "c.txt": "old c"}


def _disk_full(monkeypatch):
    """Every write to a regular file fails with ENOSPC, as on a full disk: os.write, os.pwrite (the writer
    lock's pid) and os.fsync (the atomic writes); an empty file can still be made."""
    import stat
    import tempfile
    tempfile.gettempdir()                  # found before the disk fills (torch looks for it when it loads a part)

    def refuse(fd):
        if stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    for name in ("write", "pwrite", "fsync"):
        real = getattr(os, name)
        monkeypatch.setattr(os, name, lambda fd, *args, real=real: refuse(fd) or real(fd, *args))


def test_a_full_disk_is_one_line_for_every_writer_and_changes_nothing(vae_run, tmp_path, capsys, monkeypatch):
    """On a full disk every writer but train stopped in a traceback from the lock file's pid (os.pwrite: ENOSPC).
    Each now stops in one line naming the file it could not write, before anything else is written: the run
    folder is as it was, and a folder the command would have made is not left behind."""
    pytest.importorskip("constriction")
    run = copy_run(vae_run, tmp_path / "run")
    before = snapshot(run)
    _disk_full(monkeypatch)
    commands = {"eval": ["eval", run], "eval --gaps": ["eval", run, "--gaps"],
                "eval --estimator ais": ["eval", run, "--estimator", "ais", "--eval-limit", "2"],
                "compress": ["compress", run, "--limit", "2"],
                "gradients": ["gradients", "vae", "--objectives", "elbo", "--particles", "1", "--repeats", "2", "--checkpoint", run,
                              "--out", tmp_path / "new-gradients", "--latent-dim", "2", "--hidden", "32", "--batch-size", "5"],
                "compare": ["compare", "vae", "--guides", "amortized", "--objectives", "elbo", "--epochs", "1",
                            "--out", tmp_path / "new-grid"] + SMALL,
                "train": ["train", "vae", "--epochs", "1", "--out", tmp_path / "new-run"] + SMALL,
                "report": ["report", run, "--out", tmp_path / "new-report"]}      # left new-report/plots/
    for what, command in commands.items():
        args = command if what in ("compress", "report") else command + ["--no-progress"]
        code = main([str(a) for a in args])
        _, err = capsys.readouterr()
        assert one_line(code, err) and "no space left on device writing" in err and "; free space" in err, (what, err)
        assert snapshot(run) == before, what
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


@pytest.mark.parametrize("fault", ["full disk", "read-only folder"])
def test_report_on_a_full_disk_or_a_read_only_folder_is_one_line_and_leaves_no_folder(vae_run, tmp_path, capsys,
                                                                                       monkeypatch, fault):
    """`report RUN --out PAGES` on a read-only folder stopped in a traceback from making PAGES (found by
    benchmarks/fault_injection.py), and on a full disk it left the empty folders it had made. Either is one line
    now, and the folders the report made are removed again."""
    run = copy_run(vae_run, tmp_path / "run")
    before = snapshot(run)
    if fault == "full disk":
        _disk_full(monkeypatch)
    else:
        def read_only(path, *args, **kwargs):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
        monkeypatch.setattr(os, "mkdir", read_only)
    code = main(["report", str(run), "--out", str(tmp_path / "pages" / "of-run")])
    err = capsys.readouterr().err
    assert one_line(code, err) and str(tmp_path / "pages") in err, err
    assert snapshot(run) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


# -- what a resume may change --------------------------------------------------------------------------
def test_resume_with_fewer_epochs_than_trained_is_refused(vae_run, tmp_path, capsys):
    """`--resume --epochs 1` on a 2-epoch run recorded "epochs 1". --epochs is the total, as Lightning's max_epochs."""
    run = copy_run(vae_run, tmp_path / "run")
    before = snapshot(run)
    code, _, err = run_cli(["train", "--resume", run, "--epochs", "1"], capsys)
    assert one_line(code, err) and "already trained 2 epochs" in err and "--epochs 3 or more" in err, err
    assert snapshot(run) == before
    code, out, err = run_cli(["train", "--resume", run, "--epochs", "2"], capsys)     # the same total: evaluates
    assert code == 0, err
    assert "epochs 3 to 2" not in out and f"{run} has trained its 2 epochs: no epoch to train" in out, out
    assert json.loads((run / "results.json").read_text())["config"]["epochs"] == 2


def test_structured_on_a_model_with_one_latent_is_refused(tmp_path, capsys):
    """--structured was silently a no-op on the vae (one latent: nothing to condition on)."""
    out = tmp_path / "run"
    code, _, err = run_cli(["train", "vae", "--structured", "--out", out] + SMALL, capsys)
    assert one_line(code, err) and "--structured" in err and "would change nothing" in err, err
    assert not out.exists()


# -- one writer, and stopping -----------------------------------------------------------------------------
def _zoo(*args, **kwargs):
    return subprocess.Popen([sys.executable, "-m", "zoo", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=ENV, **kwargs)


def _wait_for(path: Path, proc, timeout=600):
    deadline = time.time() + timeout
    while not path.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.time() < deadline
        time.sleep(0.02)


@pytest.mark.slow
def test_one_run_folder_one_writer_and_a_killed_writer_blocks_nobody(tmp_path):
    """Two `pyro-zoo train ... --out same` both exited 0 and both wrote same/results.json."""
    same = tmp_path / "same"
    first = _zoo("train", "vae", "--epochs", "100000", "--out", same, *SMALL)
    try:
        _wait_for(same / "checkpoint.pt", first)            # the first holds the lock from before its first checkpoint
        others = [_zoo("train", "vae", "--epochs", "1", "--out", same, *SMALL), _zoo("eval", same, "--no-progress")]
        for other in others:
            out, err = other.communicate(timeout=120)
            assert one_line(other.returncode, err) and "another pyro-zoo process" in err, err
            assert out == "" and not (same / "results.json").exists()
    finally:
        first.kill()                                        # SIGKILL: the kernel releases the lock
        first.communicate()
    assert (same / ".pyro-zoo.lock").exists()               # the stale lock file is left behind ...
    after = subprocess.run([sys.executable, "-m", "zoo", "eval", str(same), "--eval-samples", "2", "--iwae-k", "1",
                            "--no-progress"], capture_output=True,
                           text=True, env=ENV, timeout=300)
    assert after.returncode == 0, after.stderr              # ... and blocks nobody


KILLED_WRITE = """
import os, signal, sys
from pathlib import Path
from zoo.training import checkpoint
os.fsync = lambda fd: os.kill(os.getpid(), signal.SIGKILL)      # killed after the bytes, before the rename
checkpoint.save_checkpoint(Path(sys.argv[1]), config={}, model={}, guide={})
"""


def test_a_writer_killed_mid_checkpoint_leaves_a_temp_file_the_next_run_removes(vae_run, tmp_path, capsys):
    """A SIGKILL while a checkpoint was written left `.checkpoint.pt.*.tmp` beside it, and no later run removed it.
    The next writer to lock the folder (here a resume) removes the zoo's own temporary files there, and no other."""
    run = copy_run(vae_run, tmp_path / "run")
    killed = subprocess.run([sys.executable, "-c", KILLED_WRITE, str(run / "checkpoint.pt")], env=ENV, timeout=120)
    assert killed.returncode == -signal.SIGKILL
    stale = list(run.glob(".checkpoint.pt.*.tmp"))
    assert len(stale) == 1 and stale[0].stat().st_size > 0
    stale.append(run / ".samples.partial.png")                      # a plot's (atomic_path), also killed mid-write
    stale[-1].write_bytes(b"half a plot")
    stale.append(run / ".compressed-test.pzbb.k3j2h1g0.tmp")         # compress's default code file, killed mid-write
    stale[-1].write_bytes(b"PZBB half a code")
    others = [run / ".checkpoint.pt.my-notes.tmp", run / "notes.tmp", run / ".data.csv.abcdefgh.tmp",
              tmp_path / ".checkpoint.pt.abcdefgh.tmp"]           # not the zoo's, or not in the run folder
    for path in others:
        path.write_text("keep me")
    code, _, err = run_cli(["train", "--resume", run, "--epochs", "2"], capsys)
    assert code == 0, err
    assert not any(p.exists() for p in stale) and all(p.read_text() == "keep me" for p in others)
    assert load_checkpoint(run / "checkpoint.pt")["epoch"] == load_checkpoint(vae_run / "checkpoint.pt")["epoch"]


@pytest.mark.parametrize("kind", ["symlink", "hardlink", "fifo"])
def test_a_lock_file_that_is_not_the_zoos_own_touches_nothing_outside_the_folder(vae_run, tmp_path, capsys, kind):
    """A run folder from someone else whose `.pyro-zoo.lock` was a symbolic link to a file outside it: `eval` took
    the lock through the link and truncated that file to its pid, exit 0. A link, a hard link or a FIFO in the
    lock's place is now refused in one line, and the file it names keeps its bytes."""
    run = copy_run(vae_run, tmp_path / "run")
    victim = tmp_path / "outside" / "victim.txt"
    victim.parent.mkdir()
    victim.write_text("precious data\n")
    lock = run / ".pyro-zoo.lock"
    lock.unlink(missing_ok=True)
    if kind == "symlink":
        lock.symlink_to(victim)
    elif kind == "hardlink":
        os.link(victim, lock)
    else:
        os.mkfifo(lock)
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file() and p != lock}
    code, _, err = run_cli(["eval", run, "--eval-samples", "2", "--iwae-k", "1", "--no-progress"], capsys)
    assert one_line(code, err) and ".pyro-zoo.lock" in err and "remove it" in err, err
    assert victim.read_text() == "precious data\n"
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file() and p != lock} == before


def _wait_for_lock(run: Path, proc):
    """Until ``proc`` holds the run's writer lock: the lock file then holds its pid (run_folder.writer_lock)."""
    lock = run / ".pyro-zoo.lock"
    while not (lock.is_file() and lock.read_text().strip() == str(proc.pid)):
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.02)


def test_sigint_during_eval_stops_it_and_keeps_the_results(vae_run, tmp_path):
    """Ctrl-C to an eval started as a script's background job (SIGINT ignored at start) ran on and rewrote
    the results. Sent once eval holds the run's lock, however long a busy machine takes to get there."""
    run = copy_run(vae_run, tmp_path / "run")
    before = snapshot(run)
    proc = _zoo("eval", run, "--eval-samples", "3000", "--no-progress",
                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    _wait_for_lock(run, proc)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=300)
    assert one_line(proc.returncode, err, exit_code=130) and "stopped by SIGINT" in err, err
    assert "results are as they were" in err, err
    assert snapshot(run) == before


@pytest.mark.slow
def test_sigterm_stops_training_in_one_line_and_keeps_the_last_checkpoint(tmp_path):
    out = tmp_path / "run"
    proc = _zoo("train", "vae", "--epochs", "100000", "--out", out, *SMALL)
    _wait_for(out / "checkpoint.pt", proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=300)
    assert one_line(proc.returncode, err, exit_code=143) and "stopped by SIGTERM" in err, err
    assert "holds the last good state" in err and f"--resume {out}" in err, err
    state = load_checkpoint(out / "checkpoint.pt")
    assert state["epoch"] >= 1 and not (out / "results.json").exists()
    assert not [p.name for p in out.iterdir() if p.name.endswith((".tmp", ".partial.png"))]


@pytest.mark.parametrize("disposition", [signal.SIG_IGN, signal.SIG_DFL], ids=["background job", "terminal"])
def test_sigint_while_torch_and_pyro_load_stops_eval_in_one_line_and_writes_nothing(vae_run, tmp_path, disposition):
    """Ctrl-C in the seconds `pyro-zoo eval` spends loading torch and Pyro: in a background job (SIGINT ignored
    at start) it was lost, as the handlers came after those imports, and eval rewrote the results; in a terminal
    it printed Python's 50-line KeyboardInterrupt traceback. The handlers now come first (zoo.__main__)."""
    run = copy_run(vae_run, tmp_path / "run")
    before = snapshot(run)
    # -X importtime writes a line to stderr as each module finishes importing: Ctrl-C at torch's first submodule
    proc = subprocess.Popen([sys.executable, "-X", "importtime", "-m", "zoo", "eval", str(run), "--no-progress"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, disposition))
    for line in proc.stderr:
        if line.rsplit("|", 1)[-1].strip().startswith("torch."):
            break
    proc.send_signal(signal.SIGINT)
    _, rest = proc.communicate(timeout=300)
    err = [line for line in rest.splitlines() if not line.startswith("import time:")]
    assert proc.returncode == 130 and err == ["pyro-zoo: stopped by SIGINT; it stopped before writing anything"], \
        rest[-2000:]
    assert snapshot(run) == before
