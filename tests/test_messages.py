"""Refusals that named the wrong cause, or said nothing, now say what is wrong and what to do (issue 50, item 12).

Each case was found by a new user: a finite 1e300 reported as "NaN or infinite", "syntax error at line None", a
factory returning None reported as a wrong type, "Known check of bernoulli_vaes", a result file's ``runs`` that is
not a list rendered as no results, ``--data-dir`` silently ignored for the built-in digits, ``--hidden ,``
accepted as no hidden layer, a grid cell without its checkpoint stopping ``compare --resume`` with advice that
cannot work, a model file's extra ``poutine.scale``, a ``dim=-2`` data plate beside a plate of features and
``subsample_size`` each refused for another cause, and one reason repeated once per cell of a grid (that one in
``tests/test_combinations.py``). Every case runs the real CLI, ``zoo.cli.main``, where the issue showed a command.
"""
import json
import shutil

import numpy as np
import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import pytest
import torch

from zoo.cli import main
from zoo.core.errors import ZooError
from zoo.models.pyro_model import from_pyro


def refused(capsys, argv, *mentions):
    """Run ``pyro-zoo ARGV``: exit 2 and exactly one stderr line, the zoo's error, mentioning each of ``mentions``."""
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pyro-zoo: error: "), err
    for text in mentions:
        assert text in lines[0], lines[0]
    return lines[0]


@pytest.mark.parametrize("suffix", [".csv", ".npy"])
def test_a_finite_value_beyond_float32_is_named_as_such_not_as_nan(tmp_path, capsys, suffix):
    """1e300 is finite in the file's float64 and inf in the zoo's float32: it was reported as "NaN or infinite"."""
    a = np.random.RandomState(0).rand(60, 4)
    a[5, 2] = 1e300
    path = tmp_path / f"big{suffix}"
    if suffix == ".csv":
        np.savetxt(path, a, delimiter=",", header="a,b,c,d", comments="")
    else:
        np.save(path, a)
    line = refused(capsys, ["train", "ppca", "--dataset", path, "--batch-size", "10", "--out", tmp_path / "run"],
                   "holds 1e+300 at row 5, column 2, beyond float32's range", "rescale the data")
    assert "NaN" not in line and not (tmp_path / "run").exists()


def test_a_model_file_with_a_null_byte_is_not_a_syntax_error_at_line_none(tmp_path, capsys):
    path = tmp_path / "nul.py"
    path.write_bytes(b"import pyro\ndef make(x_dim):\n    return 1\x00\n")
    line = refused(capsys, ["train", f"{path}:make", "--out", tmp_path / "run"],
                   "is not Python source text (source code string cannot contain null bytes)", "UTF-8 .py file")
    assert "None" not in line


FACTORIES = '''
import pyro, pyro.distributions as dist, torch

def make(x_dim):
    def model(x, idx=None, N=None):
        with pyro.plate("data", N, subsample=idx):
            z = pyro.sample("z", dist.Normal(torch.zeros(2), 1.0).to_event(1))
            pyro.sample("x", dist.Bernoulli(logits=torch.zeros(x_dim)).to_event(1), obs=x)

def make_guide(model):
    def guide(x, idx=None, N=None):
        with pyro.plate("data", N, subsample=idx):
            pyro.sample("z", dist.Normal(torch.zeros(2), 1.0).to_event(1))
'''


def test_a_factory_that_returns_none_is_told_to_return_what_it_builds(tmp_path, capsys):
    """A factory without ``return model`` was refused as "needs a Pyro model function or factory, got NoneType"
    (and a guide factory's as "make_guide is a NoneType"), as if the user had given the wrong thing."""
    path = tmp_path / "factories.py"
    path.write_text(FACTORIES)
    line = refused(capsys, ["train", f"{path}:make", "--out", tmp_path / "run"],
                   "make(x_dim) is a factory", "returned None", "'return model'")
    assert "NoneType" not in line
    line = refused(capsys, ["train", "vae", "--guide", f"{path}:make_guide", "--out", tmp_path / "run"],
                   "make_guide(model) is a factory", "returned None", "'return guide'")
    assert "NoneType" not in line


def test_an_unknown_check_of_an_assignment_is_worded_as_checks_of_it(tmp_path, capsys):
    line = refused(capsys, ["homework", "bundle", "bernoulli_vae", tmp_path / "hw.zip", "--points", "nosuch=3"],
                   "unknown check 'nosuch' of bernoulli_vae.", "Known checks of bernoulli_vae: ")
    assert "bernoulli_vaes" not in line and not (tmp_path / "hw.zip").exists()


def test_a_result_file_whose_runs_is_not_a_list_is_refused_not_rendered_as_no_results(tmp_path, capsys):
    results = tmp_path / "results"
    results.mkdir()
    (results / "bench.json").write_text(json.dumps({"provenance": {"command": "python x.py"}, "runs": "notalist"}))
    refused(capsys, ["report", results], "bench.json: runs is a JSON string, expected a JSON list of runs")
    assert sorted(p.name for p in results.iterdir()) == ["bench.json"]


@pytest.mark.parametrize("command", [["train", "vae"], ["list", "vae"], ["compare", "vae", "--guides", "amortized",
                                                                          "--objectives", "elbo"]])
def test_data_dir_for_the_built_in_digits_is_refused_not_ignored(tmp_path, capsys, command):
    out = tmp_path / "run"
    refused(capsys, [*command, "--data-dir", tmp_path, *(["--out", out] if command[0] != "list" else [])],
            f"--data-dir {tmp_path} with dataset 'digits', which is built in (the datasets read from files: "
            f"binarized_mnist", "reads nothing there would ignore it: drop --data-dir")
    assert not out.exists()


@pytest.mark.parametrize("value", [",", "", "200,,200"])
def test_a_list_of_integers_with_an_empty_item_is_refused(tmp_path, capsys, value):
    """``--hidden ,`` was read as no hidden layer at all (an affine decoder nobody asked for)."""
    refused(capsys, ["train", "vae", "--hidden", value, "--out", tmp_path / "run"],
            "argument --hidden: expected comma-separated integers (e.g. 200,200)")
    assert not (tmp_path / "run").exists()


def test_a_grid_cell_without_its_checkpoint_gets_advice_that_works(tmp_path, capsys):
    """``compare --resume`` on a finished grid whose cell lost checkpoint.pt said "train a run there first", which
    the cell's existing folder refuses; moving the folder away, as the line now says, retrains the cell."""
    out = tmp_path / "grid"
    fast = ["--epochs", "1", "--eval-samples", "4", "--iwae-k", "2", "--eval-limit", "10", "--latent-dim", "2",
            "--hidden", "8", "--no-progress"]
    assert main(["compare", "vae", "--guides", "amortized", "--objectives", "elbo", "--out", str(out), *fast]) == 0
    cell = out / "amortized-elbo"
    (cell / "checkpoint.pt").unlink()
    capsys.readouterr()
    line = refused(capsys, ["compare", "--resume", out, "--no-progress"],
                   f"{cell} holds results.json but no checkpoint.pt",
                   f"move the folder away and 'pyro-zoo compare --resume {out}' trains the cell again")
    assert "train a run there first" not in line
    shutil.move(str(cell), str(tmp_path / "moved"))
    assert main(["compare", "--resume", str(out), "--no-progress"]) == 0
    assert (cell / "checkpoint.pt").is_file() and (cell / "results.json").is_file()


# -- a model file's mistakes, each named for its own cause ---------------------------------------------------------
def _misread(kind):
    """A model with one mistake, as a user writes it."""
    def model(x, idx=None, N=None):
        if kind == "extra scale":               # a tempered likelihood: the zoo weighs terms itself
            with poutine.scale(scale=0.5), pyro.plate("data", N, subsample=idx):
                z = pyro.sample("z", dist.Normal(torch.zeros(2), 1.0).to_event(1))
                pyro.sample("x", dist.Normal(z.sum(-1, keepdim=True).expand(*z.shape[:-1], 4), 1.0).to_event(1), obs=x)
        elif kind == "features plate":          # Pyro's idiom: features at dim -1, data at dim -2
            with pyro.plate("features", 4, dim=-1), pyro.plate("data", N, subsample=idx, dim=-2):
                z = pyro.sample("z", dist.Normal(0.0, 1.0))
                pyro.sample("x", dist.Normal(z, 1.0), obs=x)
        else:                                   # subsample_size: the plate draws its own rows
            with pyro.plate("data", N, subsample_size=x.shape[0]):
                z = pyro.sample("z", dist.Normal(torch.zeros(2), 1.0).to_event(1))
                pyro.sample("x", dist.Normal(torch.zeros(4), 1.0).to_event(1), obs=x)
    return model


@pytest.mark.parametrize("kind,says,not_said", [
    ("extra scale", r"observed site 'x' is scaled by 1.17, not the data plate's N/B = 7/3: something besides the "
                    r"plate scales it \(a poutine.scale\).*drop the extra scale", "not subsampled"),
    ("features plate", r"inside plate 'features' \(dim -1\) and the data plate is at dim -2.*drop plate 'features' "
                       r"and the dim argument of pyro.plate\('data', ...\), and declare the per-datum dimensions an "
                       r"event", "the zoo's models have the 'data' plate only: declare"),
    ("subsample_size", r"data plate draws its own rows \(subsample_size subsamples at random\), not the minibatch's "
                       r"idx the zoo passes: open it as pyro.plate\('data', N, subsample=idx\)", "generating data"),
], ids=["extra scale", "features plate", "subsample_size"])
def test_a_model_file_mistake_is_refused_for_its_own_cause(kind, says, not_said):
    with pytest.raises(ZooError, match=says) as error:
        from_pyro(_misread(kind), 4)
    assert "\n" not in str(error.value) and not_said not in str(error.value)
