"""The thread count a run picks when nobody chose one (zoo.training.threads, issue 54 item 4)."""
import os
import subprocess
import sys

import pytest
import torch

import zoo.training.threads as threads
from zoo.registry import build_guide, build_model

CPU = torch.device("cpu")


@pytest.fixture
def fresh(monkeypatch):
    """No OMP_NUM_THREADS, 2 threads to start from, nothing said or chosen yet in this process."""
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(threads, "_SAID", False)
    monkeypatch.setattr(threads, "_CALLER_CHOSE", False)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def vae(x_dim, hidden=200):
    model = build_model("vae", x_dim, hidden=hidden)
    return model, build_guide("amortized", model)


def test_the_step_count_is_the_linear_layers_multiply_adds_six_times_the_batch():
    model, guide = vae(64, hidden=32)
    layers = [(50, 32), (32, 64)] + [(64, 32), (32, 2 * 50)]     # decoder z -> h -> x, encoder x -> h -> (loc, scale)
    macs = sum(i * o for i, o in layers)
    assert threads.step_flop(model, guide, 100) == 6 * macs * 100
    conv = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.Linear(4, 4))
    assert threads.step_flop(conv, guide, 100) is None
    assert threads.step_flop(torch.nn.Module(), torch.nn.Module(), 100) is None      # no linear layer: unknown


def test_a_small_run_takes_one_thread_says_so_once_and_gives_the_threads_back(fresh):
    model, guide = vae(64)
    said = []
    for _ in range(2):
        with threads.run_threads(model, guide, 100, CPU, say=said.append):
            assert torch.get_num_threads() == 1
        assert torch.get_num_threads() == 2
    assert len(said) == 1 and "1 CPU thread of 2" in said[0] and "OMP_NUM_THREADS" in said[0]


@pytest.mark.parametrize("why", ["environment", "engine", "large step", "gpu"])
def test_threads_somebody_chose_or_a_large_step_are_left_alone(fresh, monkeypatch, why):
    model, guide = vae(784 if why == "large step" else 64)
    device = CPU
    if why == "environment":
        monkeypatch.setenv("OMP_NUM_THREADS", "2")
    elif why == "engine":
        threads.chosen_by_caller()
    elif why == "gpu":
        device = torch.device("cuda")
    said = []
    with threads.run_threads(model, guide, 100, device, say=said.append):
        assert torch.get_num_threads() == 2
    assert not said


@pytest.mark.slow
def test_the_cli_says_it_once_for_a_grid_of_small_runs(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    done = subprocess.run([sys.executable, "-m", "zoo", "compare", "vae", "--guides", "amortized", "--objectives",
                           "elbo,iwae", "--dataset", "digits", "--epochs", "1", "--eval-samples", "5", "--iwae-k", "2",
                           "--latent-dim", "2", "--hidden", "16", "--no-progress", "--out", str(tmp_path / "grid")],
                          env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    notes = [line for line in (done.stdout + done.stderr).splitlines() if "CPU thread" in line]
    if os.cpu_count() == 1:
        assert notes == []                          # one thread already: nothing to pick
    else:
        assert len(notes) == 1 and "set OMP_NUM_THREADS=N to choose" in notes[0], notes
