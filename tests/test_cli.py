"""The command line, end to end, and its one-line errors for bad input."""
import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from clitools import run_cli
from zoo.cli import main

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--epochs", "2", "--eval-samples", "40", "--iwae-k", "8", "--no-progress", "--seed", "0"]



def test_console_script_and_module_entry_points(tmp_path):
    for cmd in (["pyro-zoo", "list"], [sys.executable, "-m", "zoo", "list"]):
        r = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=120)
        assert r.returncode == 0, r.stderr
        assert "valid combinations" in r.stdout and "iwae" in r.stdout and "vae    × exact" in r.stdout


def test_a_closed_pipe_ends_the_listing_quietly(tmp_path):
    """`pyro-zoo list | head -1`: the reader stops early; no BrokenPipeError traceback."""
    for reader, shown in (("head -1", "models:\n"), ("true", "")):   # `true` closes the pipe without reading
        r = subprocess.run(f"'{sys.executable}' -m zoo list | {reader}", shell=True, capture_output=True,
                           text=True, cwd=tmp_path, timeout=120)
        assert r.stdout == shown
        assert "Traceback" not in r.stderr and "BrokenPipe" not in r.stderr, r.stderr


def test_train_then_eval_a_ppca_run(tmp_path, capsys):
    out = tmp_path / "run"
    code, stdout, err = run_cli(["train", "ppca", "--guide", "exact", "--objective", "elbo", "--dataset",
                                 "synthetic", "--batch-size", "200", "--lr", "0.02", "--out", str(out)] + TINY, capsys)
    assert code == 0, err
    results = json.loads((out / "results.json").read_text())
    assert results["elbo"] == pytest.approx(results["exact_log_likelihood"], abs=1e-3)
    assert len(results["history"]) == 2 and "| ppca | exact | elbo |" in stdout
    for name in ("config.json", "checkpoint.pt", "results.md", "per_datum.npz", "training_curves.png",
                 "latent_scatter.png"):
        assert (out / name).is_file(), name
    code, stdout, err = run_cli(["eval", str(out), "--eval-samples", "80", "--no-progress"], capsys)
    assert code == 0, err
    assert json.loads((out / "results.json").read_text())["num_samples"] == 80


def test_discrete_compare_reports_the_true_discrete_bounds(tmp_path, capsys):
    """A small SBN: score function with a neural baseline, exact enumeration and the relaxed guide, one grid;
    every row carries the exact log p(x) by enumeration."""
    out = tmp_path / "cmp"
    code, stdout, err = run_cli(["compare", "sbn", "--layers", "8", "--guides", "amortized",
                                 "--objectives", "tracegraph,enum,rws", "--dataset", "digits", "--out", str(out)]
                                + TINY, capsys)
    assert code == 0, err
    code, stdout, err = run_cli(["train", "sbn", "--layers", "8", "--guide", "relaxed", "--objective", "iwae",
                                 "--anneal-rate", "0.01", "--dataset", "digits", "--out", str(tmp_path / "relaxed")]
                                + TINY, capsys)
    assert code == 0, err
    rows = json.loads((out / "compare.json").read_text()) + [json.loads((tmp_path / "relaxed" / "results.json").read_text())]
    for r in rows:
        assert r["exact_log_likelihood"] is not None
        assert r["elbo"] <= r["exact_log_likelihood"] + 1e-3
        assert r["log_likelihood"] <= r["exact_log_likelihood"] + 3 * r["log_likelihood_se"] + 1e-3


def test_resume_continues_the_run(tmp_path, capsys):
    out = tmp_path / "run"
    base = ["--dataset", "digits", "--latent-dim", "2", "--hidden", "16", "--eval-samples", "20", "--no-progress"]
    assert run_cli(["train", "vae", "--epochs", "1", "--out", str(out)] + base, capsys)[0] == 0
    first = json.loads((out / "results.json").read_text())["train_seconds"]
    code, _, err = run_cli(["train", "--resume", str(out), "--epochs", "3", "--no-progress"], capsys)
    assert code == 0, err
    results = json.loads((out / "results.json").read_text())
    history = results["history"]
    assert [h["epoch"] for h in history] == [1, 2, 3]
    # the training time is the whole run's: the epoch trained before the resume counts (it was left out)
    assert results["train_seconds"] >= sum(h["seconds"] for h in history) and history[0]["seconds"] <= first
    code, _, err = run_cli(["train", "vae", "--guide", "iaf", "--resume", str(out)], capsys)
    assert code == 2 and "guide='amortized'" in err


def test_resume_reads_the_run_folder_once(tmp_path, capsys, monkeypatch):
    """`train --resume` reads the checkpoint once: the CLI builds the config from it and training uses
    what was read (it was read twice, once in the CLI and again under the folder's lock)."""
    import zoo.experiments.run_folder as run_folder
    out = tmp_path / "run"
    base = ["--dataset", "digits", "--latent-dim", "2", "--hidden", "16", "--eval-samples", "20", "--no-progress"]
    assert run_cli(["train", "vae", "--epochs", "1", "--out", str(out)] + base, capsys)[0] == 0
    reads = []
    real = run_folder.load_checkpoint
    monkeypatch.setattr(run_folder, "load_checkpoint", lambda path, *a, **k: reads.append(path) or real(path, *a, **k))
    code, _, err = run_cli(["train", "--resume", str(out), "--epochs", "2", "--no-progress"], capsys)
    assert code == 0, err
    assert reads == [out / "checkpoint.pt"]


def test_a_checkpoint_rewritten_after_it_was_read_is_not_resumed(tmp_path, capsys):
    """What `train --resume` read is checked to be unchanged once the folder is locked: a checkpoint
    another process rewrote in between is refused in one line, and left as it is."""
    from zoo.experiments.run import train_run
    from zoo.experiments.run_folder import open_run
    from zoo.core.errors import ZooError
    out = tmp_path / "run"
    base = ["--dataset", "digits", "--latent-dim", "2", "--hidden", "16", "--eval-samples", "20", "--no-progress"]
    assert run_cli(["train", "vae", "--epochs", "1", "--out", str(out)] + base, capsys)[0] == 0
    loaded = open_run(out)
    ckpt = out / "checkpoint.pt"
    data = ckpt.read_bytes()
    ckpt.write_bytes(data + b"")                    # a rewrite: a new mtime (and, with atomic writes, inode)
    os.utime(ckpt, ns=(loaded.stamp[2] + 10**9, loaded.stamp[2] + 10**9))
    config = dataclasses.replace(loaded.config, epochs=2)
    with pytest.raises(ZooError, match="changed while it was being resumed"):
        train_run(config, out, resume=loaded, progress=False)
    assert ckpt.read_bytes() == data


def test_a_bound_with_an_estimator_trains_exactly_as_its_preset(tmp_path, capsys):
    """`--objective iwae --estimator dreg` is `--objective dreg`: the same losses, bounds and log p(x)."""
    base = ["vae", "--dataset", "digits", "--latent-dim", "2", "--hidden", "16", "--particles", "3"] + TINY
    results = []
    for objective in (["--objective", "dreg"], ["--objective", "iwae", "--estimator", "dreg"]):
        out = tmp_path / "-".join(objective)
        code, stdout, err = run_cli(["train"] + base + objective + ["--out", str(out)], capsys)
        assert code == 0, err
        results.append(json.loads((out / "results.json").read_text()))
    assert "| vae | amortized | iwae (dreg) | 3 |" in stdout
    dreg, spelled_out = results
    assert [h["loss"] for h in dreg["history"]] == [h["loss"] for h in spelled_out["history"]]
    for key in ("elbo", "iwae_bound", "log_likelihood"):
        assert dreg[key] == spelled_out[key], key


@pytest.mark.slow
def test_compare_writes_table_json_and_plot(tmp_path, capsys):
    out = tmp_path / "cmp"
    code, stdout, err = run_cli(["compare", "vae", "--guides", "amortized,iaf", "--objectives", "elbo,iwae",
                                 "--dataset", "digits", "--latent-dim", "2", "--hidden", "16", "--out", str(out)]
                                + TINY, capsys)
    assert code == 0, err
    rows = json.loads((out / "compare.json").read_text())
    assert [(r["config"]["guide"], r["config"]["objective"]) for r in rows] == [
        ("amortized", "elbo"), ("amortized", "iwae"), ("iaf", "elbo"), ("iaf", "iwae")]
    assert all(r["config"]["seed"] == 0 and r["num_samples"] == 40 for r in rows)
    for name in ("compare.md", "compare.png", "amortized-iwae/samples.png", "iaf-elbo/reconstructions.png",
                 "iaf-elbo/latent_scatter.png"):
        assert (out / name).is_file(), name
    for cell in ("amortized/elbo (baseline)", "amortized/iwae", "iaf/elbo", "iaf/iwae"):
        assert f"| {cell} | 1 |" in stdout         # one seed: its figures, and no interval
    assert "one seed: no interval" in stdout


def one_line_error(code, out, err):
    lines = err.strip().splitlines()
    return code == 2 and len(lines) == 1 and lines[0].startswith("pyro-zoo: error:")


BAD = {
    "unknown model": (["train", "vea"], "Did you mean 'vae'"),
    "flows on a discrete guide": (["train", "sbn", "--flows", "2"], "--flows applies to the 'iaf' guide only"),
    "unknown guide": (["train", "vae", "--guide", "amortised"], "Did you mean 'amortized'"),
    "unknown objective": (["train", "vae", "--objective", "iwea"], "Did you mean 'iwae'"),
    "unknown dataset": (["train", "vae", "--dataset", "digit"], "Did you mean 'digits'"),
    "incompatible guide": (["train", "vae", "--guide", "exact"], "closed-form posterior"),
    "non-binary under Bernoulli": (["train", "vae", "--dataset", "digits-gray", "--likelihood", "bernoulli"],
                                   "column 1 holds 0.125: a Bernoulli likelihood needs 0/1"),
    "zero epochs": (["train", "vae", "--epochs", "0"], "--epochs must be a positive"),
    "negative lr": (["train", "vae", "--lr", "-1"], "--lr must be positive"),
    "zero particles": (["train", "vae", "--particles", "0"], "--particles must be a positive"),
    "batch too large": (["train", "vae", "--batch-size", "5000"], "larger than the 1257 training data"),
    "flows on a non-flow guide": (["train", "vae", "--flows", "3"], "applies to the 'iaf' guide only"),
    "bad option type": (["train", "vae", "--epochs", "many"], "invalid int value"),
    "unknown grid entry": (["compare", "vae", "--guides", "amortized,flow", "--objectives", "elbo"], "unknown guide 'flow'"),
    "option the model lacks": (["train", "ppca", "--hidden", "10"],
                               "models only, not 'ppca'"),      # the list of models with --hidden grows
    "iaf on binary latents": (["train", "sbn", "--guide", "iaf"], "supports real latents only"),
    "relaxed on factor analysis": (["train", "fa", "--guide", "relaxed", "--dataset", "synthetic"],
                                   "relaxes discrete latents, and FA has none"),
    "zero temperature": (["train", "sbn", "--guide", "relaxed", "--temperature", "0"], "--temperature must be positive"),
    "negative anneal rate": (["train", "sbn", "--guide", "relaxed", "--anneal-rate", "-1"], "--anneal-rate must be >= 0"),
    "enum too large": (["train", "sbn", "--objective", "enum"], "1.61e+60 latent configurations"),
    "analytic KL with a score-function guide": (["train", "categorical_vae", "--objective", "tracemeanfield"],
                                                 "needs a reparameterizable guide"),
    "baseline without tracegraph": (["train", "sbn", "--baseline", "neural"], "tracegraph objective only"),
    "zero warm-up": (["train", "vae", "--kl-warmup", "0"], "--kl-warmup must be a positive integer"),
    "warm-up without a KL": (["train", "sbn", "--objective", "rws", "--kl-warmup", "5"],
                             "--kl-warmup weights the latent terms"),
    "Adam beta of 1": (["train", "vae", "--adam-betas", "0.9", "1"], "--adam-betas takes two numbers in [0, 1)"),
    "negative weight decay": (["train", "vae", "--weight-decay", "-0.1"], "--weight-decay must be zero or positive"),
    "zero Adam epsilon": (["train", "vae", "--adam-eps", "0"], "--adam-eps must be positive"),
    "--jit on a two-surrogate objective": (["train", "vae", "--objective", "dreg", "--jit"],
                                      "'dreg' is not one of them"),
    "--jit with --distributed": (["train", "vae", "--jit", "--distributed"], "a distributed step is DDP's: drop it"),
    "one particle for a leave-one-out baseline": (["train", "sbn", "--objective", "rloo", "--particles", "1"],
                                                  "pass --particles 2 or more"),
    "insomnia out of range": (["train", "sbn", "--objective", "rws", "--insomnia", "2"], "--insomnia must be in [0, 1]"),
    "sleep phase with a per-datum guide": (["train", "sbn", "--guide", "meanfield", "--objective", "rws_pyro",
                                            "--insomnia", "0"], "needs an amortized guide"),
    "one particle for Pyro's wake-sleep": (["train", "sbn", "--objective", "rws_pyro", "--particles", "1"],
                                           "estimator 'pyro' needs at least 2 particles"),
    "an estimator of another bound": (["train", "vae", "--objective", "elbo", "--estimator", "dreg", "--epochs", "1"],
                                      "--estimator 'dreg' is not one of the elbo bound's estimators: auto, analytic_kl, "
                                      "tracegraph, reinforce, rloo, stl, enum, arm, disarm, arsm, rebar, relax (dreg is an estimator of iwae)"),
    "no groups for miwae": (["train", "vae", "--objective", "miwae", "--outer", "0"],
                            "--outer must be a positive integer, got 0"),
    "a ciwae weight outside [0, 1]": (["train", "vae", "--objective", "ciwae", "--ciwae-beta", "2"],
                                      "--ciwae-beta must be from 0.0 to 1.0, got 2.0"),
    "disarm on real latents": (["train", "vae", "--objective", "disarm"],
                               "objective 'disarm' takes layers of binary latents"),
    "an estimator for a preset": (["train", "vae", "--objective", "dreg", "--estimator", "vimco"],
                                  "--estimator applies to the 'elbo', 'iwae', 'renyi', 'miwae', 'ciwae', 'piwae', 'tvo', 'rws' "
                                  "objectives only, not 'dreg'"),
    "a path-derivative estimator of a discrete bound": (["train", "sbn", "--objective", "iwae", "--estimator", "dreg"],
                                                         "'iwae' with estimator 'dreg' needs a reparameterizable guide"),
    "--jit on a two-surrogate estimator": (["train", "vae", "--objective", "iwae", "--estimator", "dreg", "--jit"],
                                           "'iwae' with estimator 'dreg' is not one of them"),
    "--alpha on a bound without an order": (["train", "vae", "--objective", "iwae", "--alpha", "0.5"],
                                            "--alpha applies to the 'renyi', 'renyi_pyro' objectives only, not 'iwae'"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_is_one_line_exit_2_and_writes_nothing(case, tmp_path, capsys):
    args, match = BAD[case]
    out = tmp_path / "out"
    code, stdout, err = run_cli(args + ["--out", str(out), "--no-progress"], capsys)
    assert one_line_error(code, stdout, err), err
    assert match in err
    assert not out.exists()


def test_missing_dataset(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PYRO_ZOO_OFFLINE", "1")
    code, out, err = run_cli(["train", "vae", "--dataset", "binarized_mnist", "--data-dir", str(tmp_path / "none"),
                              "--out", str(tmp_path / "out")], capsys)
    assert one_line_error(code, out, err) and "put binarized_mnist.npz" in err
    assert not (tmp_path / "out").exists()


def test_corrupt_data_file(tmp_path, capsys):
    (tmp_path / "binarized_mnist.npz").write_bytes(b"PK\x03\x04 definitely not a zip archive")
    code, out, err = run_cli(["train", "vae", "--dataset", "binarized_mnist", "--data-dir", str(tmp_path),
                              "--out", str(tmp_path / "out")], capsys)
    assert one_line_error(code, out, err) and "corrupt" in err


def test_corrupt_and_foreign_checkpoints(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "checkpoint.pt").write_bytes(b"\x00" * 100)
    code, out, err = run_cli(["eval", str(run)], capsys)
    assert one_line_error(code, out, err) and "corrupt or truncated" in err
    torch.save({"hello": torch.zeros(2)}, run / "checkpoint.pt")
    code, out, err = run_cli(["eval", str(run)], capsys)
    assert one_line_error(code, out, err) and "not a pyro-zoo checkpoint" in err


def test_existing_results_need_force(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "results.json").write_text("{}")
    code, stdout, err = run_cli(["train", "vae", "--out", str(out)], capsys)
    assert one_line_error(code, stdout, err) and "--force" in err
    assert (out / "results.json").read_text() == "{}"


def test_out_path_under_a_file(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    code, stdout, err = run_cli(["train", "vae", "--out", str(tmp_path / "file" / "run")], capsys)
    assert one_line_error(code, stdout, err) and "is a file" in err


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_cuda_without_a_gpu_is_an_error_not_a_fallback(tmp_path, capsys):
    code, stdout, err = run_cli(["train", "vae", "--device", "cuda", "--out", str(tmp_path / "o")], capsys)
    assert one_line_error(code, stdout, err) and "no CUDA GPU" in err


def test_list_says_which_latents_each_estimator_takes_as_the_rules_do(capsys):
    """`pyro-zoo list` described rloo and vimco "for discrete latents" and called them valid for vae × amortized
    (they are: say "also"). Each estimator's line says which latents it takes, from its declared needs, and
    "any latents" is what the rules say for a model with real latents (vae) and one with binary ones (sbn)."""
    from zoo.objectives import bounds, preset_of
    from zoo.registry import OBJECTIVES
    from zoo.rules import compatibility
    assert main(["list"]) == 0
    lines, bound, notes = capsys.readouterr().out.splitlines(), None, {}
    for line in lines[lines.index("objectives: a bound and its gradient estimator (--objective BOUND --estimator "
                                  "NAME)") + 1:]:
        if line.startswith("presets"):
            break
        if line.startswith("    --estimator "):
            notes[bound, line.split()[1]] = line
        else:
            bound = line.split()[0]
    valid = {(m, g, o) for m, g, o, why in compatibility() if why is None}
    for (bound, name), line in notes.items():
        caps = OBJECTIVES[bound].capability("estimators")[name]
        any_latents = not (caps.needs_reparam or caps.needs_enumeration or caps.needs_bernoulli_latents
                           or caps.needs_categorical_latents)
        assert ("any latents" in line) == any_latents, line
        named = [o for o in OBJECTIVES if preset_of(o) == (bound, name)]
        if any_latents and named:
            assert {("vae", "amortized", named[0]), ("sbn", "amortized", named[0])} <= valid, line
    assert {b for b, _ in notes} == set(bounds()) and sum("any latents" in line for line in notes.values()) >= 5
    for bound, name in (("elbo", "rloo"), ("iwae", "vimco")):
        assert "for discrete latents and also continuous ones" in notes[bound, name]
