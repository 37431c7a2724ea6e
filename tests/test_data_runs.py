"""Runs on a user's own data file: a CSV of counts trains a Poisson model file from the CLI, the data's kind is
checked against each observed column's likelihood before anything is written, covariates reach a model that
declares ``covariates=``, and ``eval`` / ``--resume`` refuse a data file whose SHA-256 changed."""
import json
from pathlib import Path

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch

from zoo.cli import main
from zoo.core.errors import ZooError
from zoo.data import load_dataset
from zoo.models.pyro_model import from_pyro
from zoo.rules import DataFacts, check_data_kind

ROOT = Path(__file__).resolve().parents[1]
POISSON = f"{ROOT / 'examples' / 'count_models.py'}:poisson_pca"
REGRESSION = f"{ROOT / 'examples' / 'count_models.py'}:poisson_regression"
TINY = ["--epochs", "2", "--batch-size", "40", "--eval-samples", "10", "--iwae-k", "4", "--no-progress"]


def run_cli(args, capsys):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(code, err) -> str:
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("pyro-zoo: error:"), err
    return lines[0]


@pytest.fixture
def counts_csv(tmp_path):
    """A user's CSV of counts: 200 rows of 4 Poisson counts with a header."""
    rng = np.random.RandomState(0)
    rate = np.exp(rng.normal(size=(200, 1)) @ rng.normal(size=(1, 4)) * 0.5 + 1.0)
    path = tmp_path / "counts.csv"
    path.write_text("a,b,c,d\n" + "".join(",".join(map(str, row)) + "\n" for row in rng.poisson(rate)))
    return path


def test_a_csv_of_counts_trains_a_poisson_model_file_from_the_cli(tmp_path, counts_csv, capsys):
    """The issue's Done line: `pyro-zoo train user_model.py:model --dataset counts.csv`; the run records the
    file's path, shape and SHA-256, and eval / --resume refuse the file once it changed."""
    out = tmp_path / "run"
    code, stdout, err = run_cli(["train", POISSON, "--dataset", counts_csv, "--out", out] + TINY, capsys)
    assert code == 0, err
    config = json.loads((out / "config.json").read_text())
    import hashlib
    assert config["dataset"] == str(counts_csv) and config["data_source"]["shape"] == [200, 4]
    assert (config["data_source"]["split"], config["data_source"]["split_seed"]) == ([0.1, 0.1], 0)
    assert config["data_source"]["sha256"] == hashlib.sha256(counts_csv.read_bytes()).hexdigest()
    results = json.loads((out / "results.json").read_text())
    assert np.isfinite(results["elbo"]) and results["elbo"] < 0
    code, _, err = run_cli(["eval", out, "--model", POISSON, "--eval-samples", "10", "--no-progress"], capsys)
    assert code == 0, err
    counts_csv.write_text(counts_csv.read_text() + "1,2,3,4\n")
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    for args in (["eval", out, "--model", POISSON, "--no-progress"],
                 ["train", POISSON, "--resume", out, "--epochs", "3", "--no-progress"]):
        line = one_line_error(*run_cli(args, capsys)[::2])
        assert "counts.csv changed since this run was made" in line and "shape [201, 4], was [200, 4]" in line
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before


@pytest.mark.parametrize("args,expected", [
    (["vae", "--likelihood", "bernoulli"], "column 0 holds 3: a Bernoulli likelihood needs 0/1; binarize"),
    (["vae", "--covariates", "a"], "VAE does not: drop --covariates"),
    (["vae", "--split", "0.5,0.5"], "--split takes the valid and test fractions"),
    (["vae", "--levels", "3"], "is not one of 3 levels 0..2"),
])
def test_a_run_the_data_cannot_serve_is_one_line_and_writes_nothing(tmp_path, counts_csv, capsys, args, expected):
    out = tmp_path / "run"
    line = one_line_error(*run_cli(["train", *args, "--dataset", counts_csv, "--out", out] + TINY, capsys)[::2])
    assert expected in line and not out.exists()


def test_list_checks_a_run_on_a_data_file_as_train_does(counts_csv, capsys):
    code, stdout, err = run_cli(["list", "vae", "--dataset", counts_csv, "--likelihood", "bernoulli", "--guide",
                                 "amortized", "--objective", "elbo"], capsys)
    assert code == 0 and stdout.startswith("invalid:") and "a Bernoulli likelihood needs 0/1" in stdout, err
    code, stdout, err = run_cli(["list", POISSON, "--dataset", counts_csv, "--guide", "amortized", "--objective",
                                 "elbo"], capsys)
    assert code == 0 and stdout.startswith("valid:"), stdout + err


def test_a_bad_data_file_from_the_cli_is_one_line_and_writes_nothing(tmp_path, capsys):
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n" + "1,2\n" * 20 + "3\n")
    out = tmp_path / "run"
    line = one_line_error(*run_cli(["train", POISSON, "--dataset", bad, "--out", out] + TINY, capsys)[::2])
    assert "line 22 has 1 fields, the header 2" in line and not out.exists()


def test_the_likelihood_of_each_observed_column_is_checked_against_what_it_holds(tmp_path):
    """A Poisson site needs counts, a Bernoulli 0/1, a Categorical over k levels 0..k-1; a Gaussian takes anything."""
    def model_of(make_site):
        def model(x, idx=None, N=None):
            with pyro.plate("data", N, subsample=idx):
                z = pyro.sample("z", dist.Normal(torch.zeros(2), 1.0).to_event(1))
                make_site(x, z)
        return from_pyro(model, 64)

    poisson = model_of(lambda x, z: pyro.sample("x", dist.Poisson(z.exp().sum(-1, keepdim=True).expand(
        *z.shape[:-1], 64)).to_event(1), obs=x))
    categorical17 = model_of(lambda x, z: pyro.sample("x", dist.Categorical(logits=torch.zeros(64, 17)).expand(
        [*z.shape[:-1], 64]).to_event(1), obs=x))
    categorical8 = model_of(lambda x, z: pyro.sample("x", dist.Categorical(logits=torch.zeros(64, 8)).expand(
        [*z.shape[:-1], 64]).to_event(1), obs=x))
    assert (poisson.likelihood, categorical17.observed[0].levels) == ("counts", 17)
    digits17, gray, binary = (DataFacts.of(load_dataset(n)) for n in ("digits17", "digits-gray", "digits"))
    for model in (poisson, categorical17):
        check_data_kind(model, digits17)
        check_data_kind(model, binary)
        with pytest.raises(ZooError, match=r"column \d+ holds 0\.\d+: a (Poisson|Categorical) likelihood needs"):
            check_data_kind(model, gray)
    with pytest.raises(ZooError, match="holds 16: a Categorical likelihood over 8 levels needs the integers 0..7"):
        check_data_kind(categorical8, digits17)


def regression_file(tmp_path, record=False):
    """A small from_pyro regression: y ~ N(w . c + b + u, 0.1) with a per-datum random effect u, taking its
    inputs c through ``covariates=``; with ``record`` it saves the covariates it is given."""
    path = tmp_path / "regression.py"
    path.write_text(f'''
import pyro, pyro.distributions as dist, torch
from torch import nn
SEEN = []

def regression(x_dim, covariate_dim):
    linear = nn.Linear(covariate_dim, x_dim)
    def model(x, covariates=None, idx=None, N=None):
        pyro.module("linear", linear)
        if {record}:
            SEEN.append((x, covariates))
        with pyro.plate("data", N, subsample=idx):
            u = pyro.sample("u", dist.Normal(0.0, 1.0))
            pyro.sample("y", dist.Normal(linear(covariates) + u.unsqueeze(-1), 0.1).to_event(1), obs=x)
    return model
''')
    return f"{path}:regression"


def test_covariates_reach_a_model_that_declares_them(tmp_path):
    from zoo.usercode.loading import load_user_file
    factory, _ = load_user_file(regression_file(tmp_path, record=True))
    rows = torch.tensor([[1.0, 10.0, 20.0], [2.0, 11.0, 21.0], [3.0, 12.0, 22.0]])
    model = from_pyro(factory, 3, covariate_dim=2)
    seen = factory.__globals__["SEEN"]
    seen.clear()
    model.model(rows, idx=torch.arange(3), N=3)
    x, covariates = seen[-1]
    assert torch.equal(x, rows[:, :1]) and torch.equal(covariates, rows[:, 1:])
    assert model.covariates == (1, 2) and model.cannot_generate
    with pytest.raises(ZooError, match="takes covariate_dim, and the data have no covariates"):
        from_pyro(factory, 3)


def test_a_regression_with_named_covariates_trains_from_the_cli(tmp_path, capsys):
    rng = np.random.RandomState(1)
    age, dose = rng.normal(size=120), rng.uniform(size=120)
    y = 0.5 * age - dose + 0.1 * rng.normal(size=120)
    csv = tmp_path / "reg.csv"
    csv.write_text("age,y,dose\n" + "".join(f"{a:.5f},{v:.5f},{d:.5f}\n" for a, v, d in zip(age, y, dose)))
    spec, out = regression_file(tmp_path), tmp_path / "run"
    code, stdout, err = run_cli(["train", spec, "--dataset", csv, "--covariates", "age,dose", "--out", out,
                                 "--lr", "0.01"] + TINY, capsys)
    assert code == 0, err
    assert "conditions on the covariates 1-2" in stdout
    assert json.loads((out / "config.json").read_text())["covariates"] == ["age", "dose"]
    line = one_line_error(*run_cli(["train", spec, "--dataset", csv, "--out", tmp_path / "r2"] + TINY, capsys)[::2])
    assert "takes covariate_dim, and the data have no covariates: name them with --covariates" in line
