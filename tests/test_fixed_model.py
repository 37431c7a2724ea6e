"""--fixed-model RUN|NAME: a trained model held fixed, bit for bit, while only a guide trains against it (train,
compare, gradients); a guide that shares the model's networks, or a run of another model, is refused in one line
before any folder is made."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from zoo.cli import main

SMALL = ["--dataset", "digits", "--latent-dim", "2", "--hidden", "16", "--eval-samples", "3", "--eval-limit", "20",
         "--no-progress"]


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    out = tmp_path_factory.mktemp("fixed") / "base"
    assert main(["train", "vae", "--epochs", "2", "--out", str(out), *SMALL]) == 0
    return out


def _tensors(folder: Path, part: str) -> dict:
    return torch.load(folder / "checkpoint.pt", weights_only=True)[part]


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_train_holds_the_model_bit_identical_and_trains_the_guide(base, tmp_path):
    """The model, its options and the data set are the fixed run's (none given here); after 3 epochs the model's
    tensors equal the fixed run's exactly, the guide's moved from their initialization, and the training loss fell."""
    out = tmp_path / "iaf"
    assert main(["train", "--fixed-model", str(base), "--guide", "iaf", "--epochs", "3", "--eval-samples", "3",
                 "--eval-limit", "20", "--out", str(out), "--no-progress"]) == 0
    assert _same(_tensors(out, "model"), _tensors(base, "model"))
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    assert state["config"]["fixed_model"] == str(base.absolute()) and state["config"]["model_options"]["latent_dim"] == 2
    history = state["history"]
    assert history[-1]["loss"] < history[0]["loss"]
    # the optimizer holds the guide's parameters alone
    n_guide = sum(1 for _ in _tensors(out, "guide"))
    assert sum(len(g["params"]) for g in state["optimizer"]["param_groups"]) <= n_guide


def test_a_resumed_fixed_model_run_stays_fixed(base, tmp_path):
    out = tmp_path / "amortized"
    assert main(["train", "--fixed-model", str(base), "--epochs", "1", "--eval-samples", "3", "--eval-limit", "20",
                 "--out", str(out), "--no-progress"]) == 0
    assert main(["train", "--resume", str(out), "--epochs", "2", "--no-progress"]) == 0
    assert _same(_tensors(out, "model"), _tensors(base, "model"))
    assert len(torch.load(out / "checkpoint.pt", weights_only=True)["history"]) == 2


def test_compare_trains_every_cell_against_one_model(base, tmp_path):
    out = tmp_path / "grid"
    assert main(["compare", "--fixed-model", str(base), "--guides", "amortized,iaf", "--objectives", "elbo,iwae",
                 "--epochs", "1", "--eval-samples", "3", "--eval-limit", "20", "--out", str(out),
                 "--no-progress"]) == 0
    cells = sorted(p.parent for p in out.rglob("checkpoint.pt"))
    assert len(cells) == 4
    for cell in cells:
        assert _same(_tensors(cell, "model"), _tensors(base, "model")), cell


def test_gradients_measures_at_the_fixed_models_tensors(base, tmp_path):
    from zoo.experiments.config import RunConfig
    from zoo.experiments.prepare import prepare
    config = RunConfig.make(model="vae", dataset="digits", latent_dim=2, hidden=[16], fixed_model=str(base))
    run = prepare(config, freeze_fixed=False)
    assert _same(run.model.state_dict(), _tensors(base, "model"))
    assert all(p.requires_grad for p in run.model.parameters())
    assert not any(p.requires_grad for p in prepare(config).model.parameters())
    assert main(["gradients", "--objectives", "elbo", "--particles", "1", "--repeats", "3", "--fixed-model", str(base),
                 "--out", str(tmp_path / "g"), "--no-progress"]) == 0          # the model is the fixed run's


@pytest.mark.parametrize("args,message", [
    (["--latent-dim", "3"], "model option latent_dim = 2, not 3"),
    (["--dataset", "digits17", "--likelihood", "categorical"], "is a run of dataset 'digits', not 'digits17'"),
])
def test_another_model_is_refused_in_one_line(base, tmp_path, capsys, args, message):
    out = tmp_path / "refused"
    assert main(["train", "vae", "--fixed-model", str(base), "--epochs", "1", "--out", str(out), "--no-progress",
                 *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0] and not out.exists()


def test_a_guide_sharing_the_models_networks_is_refused(tmp_path, capsys):
    """The ladder guide's top-down pass is the model's p(z_l | z_l+1): it cannot train against a frozen model."""
    hvae = tmp_path / "hvae"
    assert main(["train", "hvae", "--epochs", "1", "--dataset", "digits", "--eval-samples", "2", "--eval-limit", "10",
                 "--out", str(hvae), "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["train", "--fixed-model", str(hvae), "--guide", "ladder", "--epochs", "1", "--out",
                 str(tmp_path / "ladder"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot be trained against a fixed model" in err[0]
    assert not (tmp_path / "ladder").exists()


def test_no_run_there_is_refused(tmp_path, capsys):
    assert main(["train", "--fixed-model", str(tmp_path / "nothing"), "--out", str(tmp_path / "o")]) == 2
    assert "no trained run there" in capsys.readouterr().err


def test_the_fixed_run_is_recorded_and_kept_on_resume(base, tmp_path):
    """fixed_model is not a setting a resume may change: the record says which model the guide was trained on."""
    from zoo.experiments.config import resumable_changes, RunConfig
    assert "fixed_model" not in resumable_changes(RunConfig())["run"]
    out = tmp_path / "rec"
    assert main(["train", "--fixed-model", str(base), "--epochs", "1", "--eval-samples", "3", "--eval-limit", "20",
                 "--out", str(out), "--no-progress"]) == 0
    assert json.loads((out / "config.json").read_text())["fixed_model"] == str(base.absolute())


def test_a_vampprior_keeps_the_prior_it_was_trained_with(tmp_path):
    """A VampPrior's p(z) is the mixture of q(z | u_k) over its pseudo-inputs: the model computes with a guide. Held
    fixed, its prior computes with a frozen copy of the guide it was trained with, so training a new guide moves
    neither the model's tensors nor its prior's density: log p(z) at fixed z is the same before and after."""
    from zoo.experiments.trained import open_trained
    base = tmp_path / "vamp"
    assert main(["train", "vae", "--prior", "vampprior", "--prior-components", "5", "--epochs", "1", "--out", str(base),
                 *SMALL]) == 0
    z = torch.randn(7, 2)
    before = open_trained(base).model
    out = tmp_path / "new-guide"
    assert main(["train", "--fixed-model", str(base), "--epochs", "2", "--eval-samples", "3", "--eval-limit", "20",
                 "--lr", "1e-2", "--out", str(out), "--no-progress"]) == 0
    after = open_trained(out)
    assert _same(_tensors(out, "model"), _tensors(base, "model"))
    assert not _same(_tensors(out, "guide"), _tensors(base, "guide"))        # the new guide trained
    with torch.no_grad():
        assert torch.equal(before.prior().log_prob(z), after.model.prior().log_prob(z))


def test_the_grids_gaps_on_a_fixed_ppca_equal_their_closed_form(tmp_path):
    """pPCA's log p(x) and posterior are closed form: on a fixed pPCA the grid's shared reference equals the model's
    log p(x) on the same data, and each guide's gap log p(x) − ELBO equals the mean KL(q(z | x) ‖ p(z | x)) computed
    in closed form from the trained guide's Gaussian q (within the ELBO's Monte Carlo error)."""
    from torch.distributions import MultivariateNormal, kl_divergence
    from zoo.experiments.trained import open_trained
    base = tmp_path / "ppca"
    assert main(["train", "ppca", "--dataset", "digits", "--latent-dim", "2", "--epochs", "3", "--eval-samples", "3",
                 "--eval-limit", "30", "--out", str(base), "--no-progress"]) == 0
    grid = tmp_path / "grid"
    assert main(["compare", "--fixed-model", str(base), "--guides", "amortized,iaf", "--objectives", "elbo",
                 "--epochs", "2", "--eval-samples", "2000", "--eval-limit", "30", "--out", str(grid),
                 "--no-progress"]) == 0
    gaps = json.loads((grid / "fixed_gaps.json").read_text())
    run = open_trained(base)
    x, _ = run.evaluation_data()
    with torch.no_grad():
        assert gaps["log_likelihood"] == pytest.approx(run.model.log_marginal(x).mean().item(), abs=1e-4)
        cell = open_trained(next(p.parent for p in grid.rglob("checkpoint.pt") if "amortized" in str(p)))
        q = cell.guide.marginal_posterior("z", x)
        q = MultivariateNormal(q.mean, scale_tril=torch.diag_embed(q.stddev))
        kl = kl_divergence(q, run.model.posterior(x)["z"]).mean().item()
    amortized = gaps["cells"]["amortized/elbo"]
    assert kl > 0.05 and amortized["gap"] == pytest.approx(kl, abs=0.02)
    assert gaps["cells"]["iaf/elbo"]["gap"] > 0
    assert "One model held fixed" in (grid / "compare.md").read_text()


def test_a_guide_with_nothing_to_train_is_refused(tmp_path, capsys):
    base = tmp_path / "ppca"
    assert main(["train", "ppca", "--dataset", "digits", "--latent-dim", "2", "--epochs", "1", "--eval-samples", "3",
                 "--eval-limit", "10", "--out", str(base), "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["train", "--fixed-model", str(base), "--guide", "exact", "--out", str(tmp_path / "e")]) == 2
    assert "nothing is left to train" in capsys.readouterr().err and not (tmp_path / "e").exists()


def test_a_run_notices_that_its_fixed_model_changed(tmp_path, capsys):
    """A run records the SHA-256 of the fixed weights it trained against: once they change (the fixed run trained on),
    evaluating or resuming it is refused in one line instead of scoring another model; and the fixed run's own folder
    is never the guide's --out."""
    base = tmp_path / "base"
    assert main(["train", "vae", "--epochs", "1", "--out", str(base), *SMALL]) == 0
    out = tmp_path / "guide"
    assert main(["train", "--fixed-model", str(base), "--epochs", "1", "--eval-samples", "3", "--eval-limit", "20",
                 "--out", str(out), "--no-progress"]) == 0
    assert json.loads((out / "config.json").read_text())["fixed_model_sha256"]
    assert main(["eval", str(out), "--eval-samples", "3", "--eval-limit", "20", "--force", "--no-progress"]) == 0
    assert main(["train", "--resume", str(base), "--epochs", "2", "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["eval", str(out), "--eval-samples", "3", "--eval-limit", "20", "--force", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "changed since this run was trained against it" in err[0]
    assert main(["train", "--fixed-model", str(base), "--epochs", "1", "--out", str(base), "--force",
                 "--no-progress"]) == 2
    assert "the fixed model's own folder" in capsys.readouterr().err


def test_a_per_datum_guide_against_a_fixed_vampprior_keeps_its_prior_through_evaluation(tmp_path):
    """The evaluation's refit of a per-datum guide must not rebind a fixed VampPrior's prior to the refitted rows."""
    base = tmp_path / "vamp"
    assert main(["train", "vae", "--prior", "vampprior", "--prior-components", "5", "--epochs", "1", "--out", str(base),
                 *SMALL]) == 0
    out = tmp_path / "mf"
    assert main(["train", "--fixed-model", str(base), "--guide", "meanfield", "--epochs", "1", "--eval-samples", "3",
                 "--eval-limit", "20", "--out", str(out), "--no-progress"]) == 0
    assert (out / "results.json").is_file() and _same(_tensors(out, "model"), _tensors(base, "model"))


def test_paired_intervals_across_seeds_are_the_seed_means_of_per_datum_differences(tmp_path):
    """fixed_model_gaps on made-up per-datum files with a known reference: each cell's per-seed gaps, its seed SE,
    and its difference from the best cell paired per seed, with Student's interval (t_{0.975, 2} = 4.303)."""
    from zoo.evaluation.fixed_gaps import fixed_gaps_markdown, fixed_model_gaps
    rng = np.random.default_rng(0)
    n, reference = 40, rng.normal(-90, 5, 40)
    offsets = {"a": [1.0, 1.2, 0.9], "b": [2.0, 2.5, 1.6]}
    cells = {}
    for label, per_seed in offsets.items():
        cells[label] = {}
        for s, offset in enumerate(per_seed):
            folder = tmp_path / f"{label}{s}"
            folder.mkdir()
            elbo = reference - offset - rng.normal(0, 0.3, n)
            np.savez(folder / "per_datum.npz", elbo=elbo, log_likelihood=elbo + 0.5, exact_log_likelihood=reference)
            cells[label][s] = folder
    gaps = fixed_model_gaps(tmp_path, cells, "test", None)
    assert gaps["reference"] == "its exact value" and gaps["best"] == "a"
    by_hand = {label: np.array([(reference - np.load(f / "per_datum.npz")["elbo"]).mean() for f in folders.values()])
               for label, folders in cells.items()}
    b = gaps["cells"]["b"]
    assert b["gap"] == pytest.approx(by_hand["b"].mean()) and gaps["cells"]["a"]["vs_best"] is None
    assert b["gap_seed_se"] == pytest.approx(by_hand["b"].std(ddof=1) / np.sqrt(3))
    d = by_hand["b"] - by_hand["a"]
    se = d.std(ddof=1) / np.sqrt(3)
    assert b["vs_best"]["over"] == "seeds" and b["vs_best"]["units"] == 3
    assert b["vs_best"]["difference"] == pytest.approx(d.mean())
    assert b["vs_best"]["ci95"] == pytest.approx([d.mean() - 4.303 * se, d.mean() + 4.303 * se], abs=2e-3)
    assert "vs best" in fixed_gaps_markdown(gaps) and "over 3 seeds" in fixed_gaps_markdown(gaps)


def test_cells_that_ran_different_seeds_are_paired_on_the_seeds_both_ran(tmp_path):
    """Review: a cell whose seed 1 had no per-datum file (seeds {0, 2, 3}) was paired with the best cell's {0, 1, 2}
    by position, seed 2 against seed 1 and so on: a true difference of 1.00 nats came out 4.33 [-2.84, 11.50]. Seeds
    are paired by name, on those both ran."""
    from zoo.evaluation.fixed_gaps import fixed_model_gaps
    n, reference = 30, np.full(30, -90.0)
    seed_effect = {0: 0.0, 1: 5.0, 2: -3.0, 3: 8.0}                # what each seed's training does to every cell
    cells = {}
    for label, extra, seeds in (("a", 0.0, (0, 1, 2)), ("b", 1.0, (0, 2, 3))):
        cells[label] = {}
        for seed in seeds:
            folder = tmp_path / f"{label}{seed}"
            folder.mkdir()
            elbo = reference - 2.0 - seed_effect[seed] - extra + 0.01 * np.arange(n) * (seed + 1)
            np.savez(folder / "per_datum.npz", elbo=elbo, log_likelihood=elbo + 0.5, exact_log_likelihood=reference)
            cells[label][seed] = folder
    vs = fixed_model_gaps(tmp_path, cells, "test", None)["cells"]["b"]["vs_best"]
    assert vs["seeds"] == [0, 2] and vs["over"] == "seeds" and vs["units"] == 2
    assert vs["difference"] == pytest.approx(1.0)


@pytest.mark.parametrize("text", ["{not json", "[1, 2, 3]", '{"log_likelihood": [-90.0, -91.0]}',
                                  '{"log_likelihood": [-90.0, -91.0, NaN]}', '{"log_likelihood": [-90.0, -91.0, 1e308]}',
                                  '{"log_likelihood": [-90.0, -91.0, ' + "9" * 400 + "]}",
                                  '{"log_likelihood": [-90.0, -91.0, ' + "9" * 5000 + "]}",
                                  '{"log_likelihood": [-90.0, -91.0, true]}'])
def test_a_trained_model_s_per_datum_reference_that_is_not_what_its_ais_json_says_is_refused_in_one_line(tmp_path,
                                                                                                     text):
    """The committed per-datum AIS is untrusted input. Review: a 400-digit integer raised OverflowError, 1e308 passed
    as a log p(x), and malformed JSON fell back to another reference without a word while a wrong length was
    refused; each is now one line saying what to do."""
    from zoo.core.errors import ZooError
    from zoo.evaluation.fixed_gaps import _fixed_reference
    (tmp_path / "ais.json").write_text(json.dumps({"split": "test", "config": {"eval_limit": None}, "num_data": 3,
                                                   "weights_sha256": "abc"}))
    (tmp_path / "ais_per_datum.json").write_text('{"log_likelihood": [-90.0, -91.0, -92.5]}')
    assert _fixed_reference(tmp_path, "test", None, 3, "abc").tolist() == [-90.0, -91.0, -92.5]
    assert _fixed_reference(tmp_path, "test", None, 3, "another") is None           # other weights: not this file's
    (tmp_path / "ais_per_datum.json").write_text(text)
    with pytest.raises(ZooError) as e:
        _fixed_reference(tmp_path, "test", None, 3, "abc")
    assert "\n" not in str(e.value) and "score the model again" in str(e.value)


@pytest.mark.parametrize("bdmc_gap,trusted", [(None, False), (3.0, False), (0.1, True)])
def test_a_grid_says_when_its_ais_reference_is_not_yet_trusted(tmp_path, bdmc_gap, trusted):
    """Review: a grid on a fixed model used its AIS as log p(x) whatever BDMC and the replicas said of it, and called
    each gap the KL to the posterior; against an AIS nothing bounds, a gap is a lower bound, and the table says so."""
    from zoo.evaluation.fixed_gaps import fixed_gaps_markdown, fixed_model_gaps
    fixed, n = tmp_path / "fixed", 4
    fixed.mkdir()
    (fixed / "ais.json").write_text(json.dumps({"split": "test", "config": {"eval_limit": None}, "num_data": n,
                                                "weights_sha256": "abc", "log_likelihood": -90.0,
                                                "log_likelihood_se": 0.1, "num_temperatures": 100,
                                                "frac_flagged": 0.0}))
    (fixed / "ais_per_datum.json").write_text(json.dumps({"log_likelihood": [-90.0] * n}))
    if bdmc_gap is not None:
        (fixed / "bdmc.json").write_text(json.dumps({"rows": [{"gap": bdmc_gap, "num_temperatures": 100}]}))
    cells = {}
    for label in ("a", "b"):
        folder = tmp_path / label
        folder.mkdir()
        np.savez(folder / "per_datum.npz", elbo=np.full(n, -95.0), log_likelihood=np.full(n, -91.0))
        cells[label] = {0: folder}
    gaps = fixed_model_gaps(fixed, cells, "test", None, "abc")
    assert gaps["reference"].startswith("AIS of the fixed model")
    assert ("not yet trusted" in gaps["reference"]) != trusted
    assert ("each gap is a lower bound" in fixed_gaps_markdown(gaps)) != trusted
