"""What compare.md and results.json tell a reader (issue 50, items 4 and 16).

- A guide family's step multiplier (mean-field's 10x) applies to its local tables, not to q(theta), and a grid on
  a model whose latents are all global says that its guide and objective columns cannot differ.
- The default baseline is a cell whose NLL is reliable (or compare.md says why none is); a collapsed cell is named
  in compare.md; the likelihood is named in results.json and compare.md, and counts under a Gaussian density are
  said in one line; ``train --no-progress`` says each long phase in a line.
"""
import json

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch

import zoo
from zoo.cli import main
from zoo.evaluation.compare_tables import compare_markdown
from zoo.training.optimizer import make_optimizer

D = 3


def shift(x_dim):
    """mu global, z_n local: x_n ~ N(mu + z_n, 0.5^2)."""
    def model(x, idx=None, N=None):
        mu = pyro.sample("mu", dist.Normal(torch.zeros(x_dim), 2.0).to_event(1))
        with pyro.plate("data", N, subsample=idx):
            z = pyro.sample("z", dist.Normal(torch.zeros(x_dim), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(mu + z, 0.5).to_event(1), obs=x)
    return model


def step_sizes(guide_name, model, lr=1e-3):
    """{"global": the Adam step of q(theta)'s parameters, "local": of the rest of the guide's} (sets of values)."""
    guide = zoo.build_guide(guide_name, model, num_data=20)
    optimizer = make_optimizer(model, guide, lr)
    global_ids = {id(p) for p in guide.global_guide.parameters()}
    steps = {"global": set(), "local": set()}
    for group in optimizer.param_groups:
        for p in group["params"]:
            if any(p is q for q in guide.parameters()):
                steps["global" if id(p) in global_ids else "local"].add(group["lr"])
    return steps


def test_the_mean_field_multiplier_steps_the_local_tables_and_not_q_theta():
    """The per-datum tables of mean-field take 10x the step (one gradient per epoch each); q(theta) is shared,
    like an amortized encoder, and takes --lr in every family, so a guide column does not measure a step size."""
    model = zoo.from_pyro(shift, D)
    assert step_sizes("meanfield", model) == {"global": {1e-3}, "local": {1e-2}}
    assert step_sizes("amortized", model) == {"global": {1e-3}, "local": {1e-3}}


MEAN_ONLY = '''
import pyro, pyro.distributions as dist, torch

def mean_only(x_dim):
    """x_n ~ N(mu, I), mu ~ N(0, 2^2 I): the only latent is global."""
    def model(x, idx=None, N=None):
        mu = pyro.sample("mu", dist.Normal(torch.zeros(x_dim), 2.0).to_event(1))
        with pyro.plate("data", N, subsample=idx):
            pyro.sample("x", dist.Normal(mu, 1.0).to_event(1), obs=x)
    return model
'''


@pytest.mark.slow
def test_a_grid_on_a_model_with_global_latents_only_says_its_columns_cannot_differ(tmp_path, capsys):
    (tmp_path / "models.py").write_text(MEAN_ONLY)
    rows = 1.5 + np.random.default_rng(0).standard_normal((200, D))
    np.savetxt(tmp_path / "data.csv", rows, delimiter=",", header="a,b,c", comments="")
    out = tmp_path / "grid"
    code = main(["compare", f"{tmp_path / 'models.py'}:mean_only", "--guides", "meanfield,amortized",
                 "--objectives", "elbo,iwae", "--dataset", str(tmp_path / "data.csv"), "--epochs", "2",
                 "--eval-samples", "8", "--iwae-k", "2", "--no-progress", "--out", str(out)])
    stdout, err = capsys.readouterr()
    assert code == 0, err
    md = (out / "compare.md").read_text()
    assert "Note: mean_only's latents (mu) are all global, and the guide families differ only" in md
    assert "Note: mean_only has no local latents, so every objective is the ELBO of q(θ) (mu)" in md
    assert "likelihood Normal" in md and "Note: mean_only has no local latents" in stdout
    assert all(json.loads((f / "results.json").read_text())["likelihood"] == "Normal" for f in out.iterdir()
               if (f / "results.json").is_file())


def _row(cell, seed, nll, khat=0.0, active=2, units=2):
    guide, objective = cell.split("/")
    return {"cell": cell, "config": {"model": "vae", "guide": guide, "objective": objective, "seed": seed},
            "elbo": -nll - 1, "log_likelihood": -nll, "log_likelihood_se": 0.01, "log_likelihood_data_se": 0.5,
            "elbo_gap": 1.0, "active_units": active, "num_latent_units": units, "psis_khat_frac_over_0_7": khat,
            "epoch_seconds": 1.0, "split": "test", "num_data": 270, "num_samples": 100, "likelihood": "Bernoulli"}


def test_the_default_baseline_is_the_first_cell_whose_nll_is_reliable():
    """The quickstart's first cell (meanfield) has k-hat > 0.7 on most data: a baseline there would mark every
    paired NLL row; the first reliable cell is taken instead, and compare.md says so."""
    rows = [_row("meanfield/elbo", s, 40.0, khat=0.8) for s in (0, 1)] + [
        _row("amortized/elbo", s, 35.0 + s) for s in (0, 1)] + [_row("iaf/elbo", s, 34.0 + s) for s in (0, 1)]
    md = compare_markdown(rows)
    assert "| amortized/elbo (baseline) |" in md and "## Paired differences from the baseline amortized/elbo" in md
    assert "The baseline is amortized/elbo, the first cell whose importance-sampled NLL is reliable" in md
    iaf = next(line for line in md.splitlines() if line.startswith("| iaf/elbo |"))
    assert "⚠" not in iaf                                       # a reliable cell against a reliable baseline
    assert "likelihood Bernoulli" in md
    assert "| amortized/elbo (baseline) |" in compare_markdown(rows, baseline="amortized/elbo")
    assert "| meanfield/elbo (baseline) |" in compare_markdown(rows, baseline="meanfield/elbo")


def test_without_a_reliable_cell_compare_md_says_why_the_baseline_is_the_first():
    rows = [_row(c, s, 40.0, khat=0.8) for c in ("meanfield/elbo", "amortized/elbo") for s in (0, 1)]
    md = compare_markdown(rows)
    assert "| meanfield/elbo (baseline) |" in md and "No cell's importance-sampled NLL is reliable" in md


def test_a_collapsed_cell_is_named_in_compare_md():
    """0 of 50 active units: the cell's figures are a model that ignores its latents, said beside the tables."""
    rows = [_row("amortized/elbo", 0, 35.0, active=0, units=50), _row("iaf/elbo", 0, 34.0, active=12, units=50)]
    md = compare_markdown(rows)
    section = md.split("## Collapsed cells")[1].split("##")[0]
    assert "- amortized/elbo: posterior collapse: 0 of 50 latent units are active" in section
    assert "iaf/elbo" not in section


def test_counts_under_a_gaussian_density_are_said_and_the_likelihood_is_named(tmp_path, capsys):
    """A CSV of counts given to the VAE, whose likelihood defaults to a Gaussian density for data that are not 0/1:
    one warning line before training, the likelihood in results.json and the note beside the results; under
    --no-progress each long phase (training, evaluation) still has its line."""
    counts = np.random.default_rng(0).poisson(3.0, size=(150, 6))
    np.savetxt(tmp_path / "counts.csv", counts, fmt="%d", delimiter=",")
    out = tmp_path / "run"
    code = main(["train", "vae", "--dataset", str(tmp_path / "counts.csv"), "--latent-dim", "2", "--hidden", "8",
                 "--epochs", "1", "--eval-samples", "4", "--iwae-k", "2", "--no-progress", "--out", str(out)])
    stdout, err = capsys.readouterr()
    assert code == 0, err
    lines = stdout.splitlines()
    warning = [line for line in lines if line.startswith("warning: ") and "holds counts" in line]
    assert len(warning) == 1 and "Gaussian density over reals" in warning[0]
    assert any(line.startswith(f"training {out}: epochs 1 to 1") for line in lines)
    assert any(line.startswith(f"evaluating {out}: log p(x) by importance sampling, K = 4") for line in lines)
    result = json.loads((out / "results.json").read_text())
    assert result["likelihood"] == "Gaussian" and "holds counts" in result["note"]


def test_binary_data_under_a_bernoulli_likelihood_get_no_warning(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["train", "vae", "--dataset", "digits", "--likelihood", "bernoulli", "--latent-dim", "2", "--hidden",
                 "8", "--epochs", "1", "--eval-samples", "4", "--iwae-k", "2", "--no-progress", "--out", str(out)])
    stdout, err = capsys.readouterr()
    assert code == 0, err
    assert "warning:" not in stdout and json.loads((out / "results.json").read_text())["likelihood"] == "Bernoulli"

