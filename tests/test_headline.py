"""The README's headline rows stand on committed weights a reader can evaluate again.

Each row of ``report.json``'s ``headline`` comes from a ``headline_LABEL.json`` written by
``benchmarks/ais_mnist.py --train``, which names the checkpoint folder it exported under ``benchmarks/checkpoints/``.
Here: every such folder is there, is within the 60 MB the repository allows for checkpoints, holds the run the
result describes (the same model, guide, objective, options and epochs), and its tensors are exactly the
parameters of the model and guide that config builds. Where binarized MNIST is on this machine
(``PYRO_ZOO_DATA`` or ``../shared/data``), the README's re-derivation command evaluates a copy of it.
"""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import zoo
from zoo.experiments.run_folder import load_weights
from zoo.training.checkpoint import load_checkpoint

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
CHECKPOINTS = ROOT / "benchmarks" / "checkpoints"
MAX_BYTES = 60 * 2 ** 20
MNIST_DIM = 784


def headline_rows():
    """(label, the result's run row, the checkpoint folder it names) for every headline row with a checkpoint."""
    rows = []
    for name, label in json.loads((RESULTS / "report.json").read_text())["headline"]:
        result = json.loads((RESULTS / name).read_text())
        if "checkpoint" in result:
            run = next(r for r in result["runs"] if r.get("label") == label)
            rows.append((label, run, ROOT / result["checkpoint"]))
    return rows


ROWS = headline_rows()


def test_every_headline_row_names_a_committed_checkpoint_and_all_fit_in_30_mb():
    assert ROWS, "no headline row names its checkpoint (benchmarks/ais_mnist.py --train writes them)"
    for label, _, folder in ROWS:
        assert (folder / "checkpoint.pt").is_file() and (folder / "config.json").is_file(), label
    total = sum(f.stat().st_size for f in CHECKPOINTS.rglob("*") if f.is_file())
    assert total <= MAX_BYTES, f"benchmarks/checkpoints holds {total / 2 ** 20:.1f} MB, over 60 MB"


@pytest.mark.parametrize("label,run,folder", ROWS, ids=[r[0] for r in ROWS])
def test_the_checkpoint_is_the_run_of_its_row_and_loads_into_the_model_it_names(label, run, folder):
    state = load_checkpoint(folder / "checkpoint.pt")          # the zoo's reader: tensors only, no pickled code
    config = json.loads((folder / "config.json").read_text())
    assert state["config"] == config
    for key in ("model", "guide", "objective", "dataset", "model_options", "guide_options", "objective_options"):
        assert config[key] == run["config"][key], (label, key)
    # a --keep-best run is exported as its best epoch; the row was scored from that epoch's weights
    assert state["epoch"] == (run["best_epoch"] or run["epochs_trained"]) == len(state["history"])
    model = zoo.registry.build_model(config["model"], MNIST_DIM, **config["model_options"])
    guide = zoo.registry.build_guide(config["guide"], model, **config["guide_options"])
    load_weights(model, guide, state, folder / "checkpoint.pt")   # every tensor named and shaped as the run's


def _mnist_dir():
    for candidate in (os.environ.get("PYRO_ZOO_DATA"), ROOT.parent / "shared" / "data"):
        if candidate and (Path(candidate) / "binarized_mnist.npz").is_file():
            return Path(candidate)
    return None


@pytest.mark.skipif(_mnist_dir() is None, reason="needs binarized MNIST (PYRO_ZOO_DATA or ../shared/data)")
@pytest.mark.parametrize("label,run,folder", ROWS, ids=[r[0] for r in ROWS])
@pytest.mark.slow
def test_the_readmes_rederivation_command_evaluates_a_copy(label, run, folder, tmp_path):
    copy = tmp_path / label
    shutil.copytree(folder, copy)
    done = subprocess.run([sys.executable, "-m", "zoo", "eval", str(copy), "--eval-samples", "10", "--eval-limit", "20",
                           "--data-dir", str(_mnist_dir()), "--no-progress"], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads((copy / "results.json").read_text())
    assert result["num_data"] == 20 and result["epochs_trained"] == (run["best_epoch"] or run["epochs_trained"])
    assert (folder / "checkpoint.pt").read_bytes() == (copy / "checkpoint.pt").read_bytes()   # eval kept the weights
