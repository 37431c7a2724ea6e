"""Data-parallel SVI with torchrun and the gloo backend, on CPU, 2 processes."""
import json
import os
import subprocess
import sys

import pytest
import torch

from user_models import USER_FILE                 # tests/user_models.py

COMMON = ["--dataset", "synthetic", "--epochs", "5", "--lr", "0.05", "--eval-samples", "10", "--iwae-k", "5",
          "--no-progress", "--seed", "1"]
ENV = dict(os.environ, OMP_NUM_THREADS="1")


def free_port() -> str:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return str(s.getsockname()[1])


def torchrun(args, out, nproc=2):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc), "--master_addr", "127.0.0.1", "--master_port", free_port(),
           "-m", "zoo", "train"] + args + ["--out", str(out)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=ENV)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads((out / "results.json").read_text())


def single(args, out):
    r = subprocess.run([sys.executable, "-m", "zoo", "train"] + args + ["--out", str(out)], capture_output=True,
                       text=True, timeout=300, env=ENV)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads((out / "results.json").read_text())


@pytest.mark.slow
def test_two_ranks_follow_the_single_process_trajectory_exactly_when_gradients_are_exact(tmp_path):
    """pPCA with the exact guide has a zero-variance gradient, so 2 ranks x batch 1000 must follow one process
    with batch 2000 step for step: losses within 1e-5 relative, parameters within 1e-5."""
    model = ["ppca", "--guide", "exact", "--objective", "elbo"] + COMMON
    a = single(model + ["--batch-size", "2000"], tmp_path / "single")
    b = torchrun(model + ["--batch-size", "1000"], tmp_path / "ddp")
    for x, y in zip(a["history"], b["history"]):
        assert y["loss"] == pytest.approx(x["loss"], rel=1e-5)
    sa = torch.load(tmp_path / "single" / "checkpoint.pt", weights_only=True)["model"]
    sb = torch.load(tmp_path / "ddp" / "checkpoint.pt", weights_only=True)["model"]
    assert all(torch.allclose(sa[k], sb[k], atol=1e-5) for k in sa)


@pytest.mark.slow
def test_per_datum_guide_trains_under_ddp_like_one_process(tmp_path):
    """meanfield tables with minibatches, 2 ranks x 100 against 1 x 200 (same global batch and steps). The runs are
    stochastic, so the tolerance is stated against the spread of single-process runs: every epoch's DDP loss lies
    within 2% + 3 x (the gap between two single-process seeds) of the single-process loss."""
    model = ["ppca", "--guide", "meanfield", "--objective", "elbo"] + COMMON + ["--lr", "0.01"]
    a = single(model + ["--batch-size", "200"], tmp_path / "single")
    a2 = single(model + ["--batch-size", "200", "--seed", "2"], tmp_path / "single2")
    b = torchrun(model + ["--batch-size", "100"], tmp_path / "ddp")
    assert len(b["history"]) == 5 and b["history"][-1]["loss"] < b["history"][0]["loss"]
    for x, x2, y in zip(a["history"], a2["history"], b["history"]):
        assert abs(y["loss"] - x["loss"]) <= 0.02 * abs(x["loss"]) + 3 * abs(x2["loss"] - x["loss"])


@pytest.mark.slow
def test_distributed_refuses_objectives_without_one_differentiable_loss(tmp_path):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1", "--master_port", free_port(), "-m", "zoo",
           "train", "ppca", "--objective", "tracegraph", "--dataset", "synthetic", "--out", str(tmp_path / "o")]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=ENV)
    assert r.returncode != 0 and "one differentiable loss" in r.stderr


def test_distributed_flag_without_torchrun_is_a_clear_error(tmp_path, capsys):
    from zoo.cli import main
    assert main(["train", "ppca", "--dataset", "synthetic", "--distributed", "--out", str(tmp_path / "o")]) == 2
    assert "torchrun" in capsys.readouterr().err and not (tmp_path / "o").exists()


@pytest.mark.slow
def test_a_user_pyro_model_trains_data_parallel(tmp_path):
    """FILE.py:NAME under torchrun: each rank imports the user's file, DDP averages the gradients of the
    networks the wrapped function registers, and the loss falls epoch after epoch."""
    source = tmp_path / "my_models.py"
    source.write_text(USER_FILE)
    args = [f"{source}:my_vae", "--dataset", "digits", "--epochs", "3", "--eval-samples", "10", "--iwae-k", "5",
            "--no-progress", "--seed", "1", "--batch-size", "100", "--lr", "0.01"]
    b = torchrun(args + ["--distributed"], tmp_path / "ddp")
    losses = [h["loss"] for h in b["history"]]
    assert len(losses) == 3 and losses[-1] < losses[0]
