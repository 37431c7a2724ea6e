"""`pyro-zoo eval` never silently replaces a stronger evaluation: fewer importance samples K, fewer data, or
another estimator is refused in one line (exit 2, the folder untouched) unless --force; a stronger one
replaces it."""
import json
import shutil

import pytest

from zoo.cli import main

RUN = ["--dataset", "digits", "--latent-dim", "2", "--hidden", "16", "--epochs", "1", "--eval-samples", "20",
       "--iwae-k", "5", "--eval-limit", "40", "--no-progress", "--seed", "0"]


def run_cli(args, capsys):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def snapshot(folder):
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file() and p.name != ".pyro-zoo.lock"}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("strength") / "run"
    assert main(["train", "vae", "--out", str(out), *RUN]) == 0
    return out


@pytest.mark.parametrize("weaker, says", [
    (["--eval-samples", "10"], "K = 10 importance samples, not 20"),
    (["--eval-limit", "20"], "20 data, not 40"),
    (["--eval-samples", "10", "--eval-limit", "20"], "K = 10 importance samples, not 20; 20 data, not 40"),
    (["--eval-samples", "40", "--iwae-k", "10"], "iwae_k 10, not 5"),                  # another estimator
    (["--eval-samples", "40", "--eval-proposal", "guide"], "eval_proposal guide, not defensive"),  # another proposal
])
def test_a_weaker_or_different_evaluation_is_refused_in_one_line_and_touches_nothing(trained, capsys, weaker, says):
    before = snapshot(trained)
    code, out, err = run_cli(["eval", trained, "--no-progress", *weaker], capsys)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("pyro-zoo: error: "), err
    assert says in err and "--force" in err and "K = 20 on 40 data" in err
    assert snapshot(trained) == before


def test_a_stronger_evaluation_replaces_it_and_force_replaces_anything(tmp_path, trained, capsys):
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    code, _, err = run_cli(["eval", run, "--no-progress", "--eval-samples", "30"], capsys)
    assert code == 0, err
    assert json.loads((run / "results.json").read_text())["num_samples"] == 30
    code, _, err = run_cli(["eval", run, "--no-progress", "--eval-samples", "30"], capsys)     # the same again
    assert code == 0, err
    code, _, err = run_cli(["eval", run, "--no-progress"], capsys)          # the training config's K = 20 < 30
    assert code == 2 and "K = 20 importance samples, not 30" in err
    code, _, err = run_cli(["eval", run, "--no-progress", "--eval-samples", "10", "--eval-limit", "20", "--force"],
                           capsys)
    assert code == 0, err
    results = json.loads((run / "results.json").read_text())
    assert (results["num_samples"], results["num_data"]) == (10, 20)


def test_a_meanfield_runs_refit_is_part_of_its_estimator(tmp_path, capsys):
    """A per-datum guide is refit to the test data before it is scored: the refit is its proposal, so another
    --refit-epochs is another evaluation; for an amortized run (no refit) it changes nothing and is allowed."""
    run = tmp_path / "mf"
    assert main(["train", "vae", "--guide", "meanfield", "--out", str(run), "--refit-epochs", "2", *RUN]) == 0
    capsys.readouterr()
    code, _, err = run_cli(["eval", run, "--no-progress", "--refit-epochs", "3"], capsys)
    assert code == 2 and "refit_epochs 3, not 2" in err


@pytest.mark.parametrize("stored, refused_with", [(20.0, "K = 10 importance samples, not 20"),
                                                  ("20", "K = 10 importance samples, not 20"),
                                                  ("twenty", "not a whole number"),
                                                  (20.5, "not a whole number"),
                                                  (True, "not a whole number")])
def test_a_stored_k_written_in_another_form_still_counts_and_an_unreadable_one_fails_closed(tmp_path, trained, capsys,
                                                                                           stored, refused_with):
    """K stored as 20.0 or "20" (a hand-edited results.json) is the same K = 20; one that is not a whole number
    cannot be compared, and the rule refuses rather than letting any evaluation through."""
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    results = json.loads((run / "results.json").read_text())
    results["num_samples"] = stored
    (run / "results.json").write_text(json.dumps(results))
    before = snapshot(run)
    code, _, err = run_cli(["eval", run, "--no-progress", "--eval-samples", "10"], capsys)
    assert code == 2 and refused_with in err and "--force" in err and len(err.strip().splitlines()) == 1, err
    assert snapshot(run) == before


def test_gaps_follow_the_same_rule(tmp_path, trained, capsys):
    """eval --gaps writes gaps.json: a weaker gaps evaluation does not replace a stronger one without --force."""
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    code, _, err = run_cli(["eval", run, "--gaps", "--no-progress", "--eval-samples", "20", "--eval-limit", "10",
                            "--refit-epochs", "3"], capsys)
    assert code == 0, err
    before = snapshot(run)
    code, _, err = run_cli(["eval", run, "--gaps", "--no-progress", "--eval-samples", "10", "--eval-limit", "10",
                            "--refit-epochs", "3"], capsys)
    assert code == 2 and "gaps.json" in err and "K = 10 importance samples, not 20" in err, err
    assert snapshot(run) == before
