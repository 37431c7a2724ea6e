"""`pyro-zoo eval RUN --estimator ais|bdmc` from the command line: the files it writes, what it records, its refusals,
and per_datum.npz without NaN k-hats."""
import json
import shutil

import numpy as np
import pytest

from clitools import run_cli, stopped_at
from zoo.cli import main

RUN = ["--dataset", "digits", "--latent-dim", "2", "--hidden", "16", "--epochs", "1", "--eval-samples", "20",
       "--iwae-k", "5", "--eval-limit", "20", "--no-progress", "--seed", "0"]
AIS = ["--estimator", "ais", "--temperatures", "4,8", "--chains", "4", "--leapfrog", "2", "--eval-limit", "12",
       "--no-progress"]



@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("ais") / "run"
    assert main(["train", "vae", "--out", str(out), *RUN]) == 0
    return out


def test_ais_writes_its_table_and_leaves_the_importance_sampling_results_alone(tmp_path, trained, capsys):
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    before = (run / "results.json").read_bytes()
    code, out, err = run_cli(["eval", run, *AIS], capsys)
    assert code == 0, err
    summary = json.loads((run / "ais.json").read_text())
    assert [row["num_temperatures"] for row in summary["rows"]] == [4, 8]
    assert summary["num_temperatures"] == 8 and summary["num_data"] == 12 and summary["num_chains"] == 4
    assert len(summary["acceptance_per_temperature"]) == 7 and len(summary["step_size_per_temperature"]) == 7
    assert all(0 <= a <= 1 for a in summary["acceptance_per_temperature"])
    per_datum = np.load(run / "ais_per_datum.npz")
    assert per_datum["log_likelihood"].shape == (12,) and np.isfinite(per_datum["log_likelihood_se"]).all()
    assert "| 8 |" in (run / "ais.md").read_text() and "| 8 |" in out
    assert (run / "results.json").read_bytes() == before
    assert summary["precondition"] == "transport" and summary["transported"] == ["z"]
    assert "in the guide's reparameterization (z)" in out


@pytest.mark.parametrize("precondition, says", [("diagonal", "in the guide's whitened coordinates"),
                                                ("none", "leapfrog steps, step sizes")])
def test_ais_and_bdmc_move_in_the_coordinates_asked_for_and_say_so(tmp_path, trained, capsys, precondition, says):
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    code, out, err = run_cli(["eval", run, *AIS, "--ais-precondition", precondition], capsys)
    assert code == 0, err
    assert json.loads((run / "ais.json").read_text())["precondition"] == precondition and says in out
    code, out, err = run_cli(["eval", run, "--estimator", "bdmc", "--temperatures", "4", "--chains", "2",
                              "--leapfrog", "2", "--bdmc-data", "4", "--no-progress", "--ais-precondition",
                              precondition], capsys)
    assert code == 0, err
    assert json.loads((run / "bdmc.json").read_text())["settings"]["precondition"] == precondition
    code, _, err = run_cli(["eval", run, *AIS, "--ais-precondition", "sideways"], capsys)
    assert code == 2 and "--ais-precondition" in err
    code, _, err = run_cli(["eval", run, *AIS, "--ais-path", "prior", "--ais-precondition", precondition], capsys)
    assert code == 2 and "--ais-precondition sets the coordinates" in err and len(err.strip().splitlines()) == 1


def test_a_weaker_ais_evaluation_is_refused_and_bad_options_get_one_line(tmp_path, trained, capsys):
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    assert run_cli(["eval", run, *AIS], capsys)[0] == 0
    stored = (run / "ais.json").read_bytes()
    code, _, err = run_cli(["eval", run, "--estimator", "ais", "--temperatures", "4", "--chains", "4", "--leapfrog",
                            "2", "--eval-limit", "12", "--no-progress"], capsys)
    assert code == 2 and "T = 4 temperatures, not 8" in err and len(err.strip().splitlines()) == 1
    for bad, says in ((["--chains", "0"], "num_chains"), (["--temperatures", "0"], "--temperatures"),
                      (["--eval-samples", "5"], "--eval-samples"), (["--leapfrog", "0"], "leapfrog_steps")):
        code, _, err = run_cli(["eval", run, "--estimator", "ais", "--no-progress", *bad], capsys)
        assert code == 2 and says in err and len(err.strip().splitlines()) == 1, err
    assert (run / "ais.json").read_bytes() == stored


def test_bdmc_writes_both_bounds_for_each_number_of_temperatures(tmp_path, trained, capsys):
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    code, out, err = run_cli(["eval", run, "--estimator", "bdmc", "--temperatures", "3,12", "--chains", "3",
                              "--leapfrog", "2", "--bdmc-data", "6", "--no-progress"], capsys)
    assert code == 0, err
    summary = json.loads((run / "bdmc.json").read_text())
    assert [r["num_temperatures"] for r in summary["rows"]] == [3, 12] and summary["num_data"] == 6
    for row in summary["rows"]:
        assert row["gap"] == pytest.approx(row["upper"] - row["lower"])
    assert "upper (reverse AIS)" in out


def test_per_datum_npz_holds_a_k_hat_or_a_reason_never_nan(trained):
    per_datum = np.load(trained / "per_datum.npz")
    khat, reason = per_datum["psis_khat"], per_datum["psis_khat_reason"]
    assert not np.isnan(khat).any()
    assert ((reason == "") == np.isfinite(khat)).all()
    assert per_datum["log_likelihood_se_reliable"].dtype == bool
    results = json.loads((trained / "results.json").read_text())
    assert 0.0 <= results["log_likelihood_se_reliable"] <= 1.0


def test_a_k_hat_that_cannot_be_fitted_is_inf_with_its_reason_not_nan(tmp_path):
    """Binary latents give few distinct importance weights: PSIS cannot fit a tail there, and per_datum.npz
    stored NaN. It holds +inf with the reason instead (this run has such data; the VAE run above need not)."""
    out = tmp_path / "sbn"
    assert main(["train", "sbn", "--layers", "3", "--objective", "rloo", "--dataset", "digits", "--epochs", "1",
                 "--eval-samples", "20", "--iwae-k", "5", "--eval-limit", "30", "--no-progress", "--seed", "0",
                 "--out", str(out)]) == 0
    per_datum = np.load(out / "per_datum.npz")
    khat, reason = per_datum["psis_khat"], per_datum["psis_khat_reason"]
    assert not np.isnan(khat).any()
    assert (reason != "").any(), "no datum without a fitted k-hat: the case this test is for did not occur"
    assert (np.isinf(khat) == (reason != "")).all()
    assert set(reason[reason != ""]) <= {"few distinct weights", "degenerate tail"}


def test_gaps_can_take_log_p_from_ais_and_say_so(tmp_path, trained, capsys):
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    code, out, err = run_cli(["eval", run, "--gaps", "--estimator", "ais", "--temperatures", "6", "--chains", "3",
                              "--leapfrog", "2", "--eval-limit", "8", "--refit-epochs", "2", "--no-progress"], capsys)
    assert code == 0, err
    gaps = json.loads((run / "gaps.json").read_text())
    assert gaps["log_likelihood_proposal"].startswith("AIS from q*, T 6, 3 chains")
    assert "log p(x) (AIS from q*" in out
    # an IS reference does not silently replace the AIS one
    code, _, err = run_cli(["eval", run, "--gaps", "--eval-limit", "8", "--refit-epochs", "2", "--no-progress"], capsys)
    assert code == 2 and "reference is, not ais" in err


def test_a_stopped_ais_resumes_from_its_finished_minibatches_to_the_figures_of_a_run_without_a_stop(
        tmp_path, trained, capsys, monkeypatch):
    """AIS on a thousand images runs for an hour; a stop lost all of it. Stopped (here: a KeyboardInterrupt, as
    SIGINT raises, in the third of four minibatches), the command keeps the two finished ones and says so in one
    line; run again, it runs only the other two and writes what a run without a stop writes, bit for bit."""
    from zoo.evaluation.ais import AnnealedImportanceSampling
    args = ["--estimator", "ais", "--temperatures", "4", "--chains", "4", "--leapfrog", "2", "--eval-limit", "12",
            "--ais-batch-size", "3", "--no-progress"]
    whole = tmp_path / "whole"
    shutil.copytree(trained, whole)
    assert run_cli(["eval", whole, *args], capsys)[0] == 0

    run = tmp_path / "run"
    shutil.copytree(trained, run)
    minibatch, calls = AnnealedImportanceSampling.minibatch, []

    def stopped_in_the_third(self, *a, **k):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return minibatch(self, *a, **k)
    monkeypatch.setattr(AnnealedImportanceSampling, "minibatch", stopped_in_the_third)
    code, _, err = run_cli(["eval", run, *args], capsys)
    assert code == 130 and "2 finished AIS minibatches are kept" in err and len(err.strip().splitlines()) == 1, err
    assert (run / "ais_partial.npz").is_file() and not (run / "ais.json").exists()

    calls.clear()
    monkeypatch.setattr(AnnealedImportanceSampling, "minibatch", lambda self, *a, **k: (calls.append(1),
                                                                                        minibatch(self, *a, **k))[1])
    assert run_cli(["eval", run, *args], capsys)[0] == 0
    # the default 4 replicas have 4 minibatches each: the first replica's other 2 and the other replicas' 12 run
    assert len(calls) == 14 and not (run / "ais_partial.npz").exists()
    resumed, uninterrupted = np.load(run / "ais_per_datum.npz"), np.load(whole / "ais_per_datum.npz")
    for name in uninterrupted.files:
        assert np.array_equal(resumed[name], uninterrupted[name]), name


def test_ais_progress_of_another_evaluation_is_set_aside_not_taken(tmp_path, trained, capsys):
    """Kept minibatches of other settings (here another number of chains), or a file that is not one, are never
    mixed into the figures: the run says so and starts afresh."""
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    whole = tmp_path / "whole"
    shutil.copytree(trained, whole)
    args = ["--estimator", "ais", "--temperatures", "4", "--leapfrog", "2", "--eval-limit", "6", "--no-progress"]
    assert run_cli(["eval", whole, *args, "--chains", "4"], capsys)[0] == 0
    from zoo.experiments.annealed import _keep
    _keep(run / "ais_partial.npz", json.dumps({"sha256": "another"}), {4: {0: {
        k: __import__("torch").zeros(6) for k in ("log_likelihood", "se", "ess", "acceptance", "acceptance_sum",
                                                  "step_sizes")}}})
    code, _, err = run_cli(["eval", run, *args, "--chains", "4"], capsys)
    assert code == 0 and "AIS progress of another evaluation" in err
    assert np.array_equal(np.load(run / "ais_per_datum.npz")["log_likelihood"],
                          np.load(whole / "ais_per_datum.npz")["log_likelihood"])
    (run / "ais_partial.npz").write_bytes(b"not an npz")
    code, _, err = run_cli(["eval", run, *args, "--chains", "4", "--force"], capsys)
    assert code == 0 and "starting AIS afresh" in err, err


RESUMED = ["--estimator", "ais", "--temperatures", "4", "--chains", "4", "--leapfrog", "2", "--eval-limit", "12",
           "--ais-batch-size", "3", "--no-progress"]


@pytest.fixture(scope="module")
def stopped_ais(trained, tmp_path_factory):
    """A run's AIS without a stop (``whole``), and the same AIS stopped in its third of four minibatches
    (``stopped``: two minibatches kept in ais_partial.npz)."""
    from zoo.evaluation.ais import AnnealedImportanceSampling
    root = tmp_path_factory.mktemp("stopped_ais")
    whole, stopped = root / "whole", root / "stopped"
    shutil.copytree(trained, whole)
    shutil.copytree(trained, stopped)
    assert main([str(a) for a in ["eval", whole, *RESUMED]]) == 0
    with stopped_at(AnnealedImportanceSampling, 3):
        assert main([str(a) for a in ["eval", stopped, *RESUMED]]) == 130
    assert (stopped / "ais_partial.npz").is_file()
    return whole, stopped


@pytest.mark.slow
@pytest.mark.parametrize("edit, digest_rewritten", [
    (lambda a: np.zeros_like(a), False), (lambda a: a + 1e6, False),
    (lambda a: a + 1e6, True), (lambda a: a[:2], True),
    (lambda a: np.concatenate([a, a]), True), (lambda a: np.where(np.arange(a.size) == 1, np.nan, a), True),
    (lambda a: np.stack([a, a]), True)],
    ids=["zero", "plus-1e6", "plus-1e6-new-digest", "short", "long", "nan", "two-d"])
def test_ais_progress_edited_since_it_was_kept_is_set_aside_and_computed_again(
        tmp_path, stopped_ais, capsys, edit, digest_rewritten):
    """Kept minibatches are untrusted input: an edit of their figures (one minibatch's log p(x) set to 0 or
    raised by 1e6, cut short, doubled, a NaN, made 2-D) is seen, whether the file's digest was left as it was
    (the figures no longer match it) or written anew to match (then they are figures AIS cannot have computed:
    a log-probability of binary pixels above 0, a minibatch of 3 data with 2 or 6 figures). The run says so in
    one line, computes that minibatch again, and ends with the figures of a run without a stop, bit for bit."""
    from zoo.data.headers import read_npz_arrays
    from zoo.experiments.annealed import _keep
    whole, stopped = stopped_ais
    run = tmp_path / "run"
    shutil.copytree(stopped, run)
    arrays = read_npz_arrays(str(run / "ais_partial.npz"), run / "ais_partial.npz")
    arrays["T4_3_log_likelihood"] = edit(arrays["T4_3_log_likelihood"])
    if digest_rewritten:
        key = arrays.pop("key").tobytes().decode()
        arrays.pop("digest", None)
        kept = {}
        for name, array in arrays.items():
            _, start, field = name.split("_", 2)
            kept.setdefault(4, {}).setdefault(int(start), {})[field] = __import__("torch").from_numpy(array)
        _keep(run / "ais_partial.npz", key, kept)
    else:
        np.savez(run / "ais_partial.npz", **arrays)
    code, _, err = run_cli(["eval", run, *RESUMED], capsys)
    assert code == 0, err
    assert len(err.strip().splitlines()) == 1 and ("AIS cannot have computed" in err or "edited or damaged" in err)
    assert not (run / "ais_partial.npz").exists()
    resumed, uninterrupted = np.load(run / "ais_per_datum.npz"), np.load(whole / "ais_per_datum.npz")
    for name in uninterrupted.files:
        assert np.array_equal(resumed[name], uninterrupted[name]), name
    assert json.loads((run / "ais.json").read_text())["num_data"] == 12


def test_bdmc_runs_again_as_strong_or_stronger_and_refuses_a_weaker_or_bad_one_in_one_line(tmp_path, trained, capsys):
    """The strength rule reads bdmc.json where BDMC keeps its settings (under ``settings``): the same command
    again and a stronger one (more simulated data, more leapfrog steps) run; fewer data or leapfrog steps are
    refused as weaker; a bad --bdmc-data is refused as a bad value, before the stored file is read."""
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    bdmc = ["eval", run, "--estimator", "bdmc", "--temperatures", "3", "--chains", "2", "--leapfrog", "2",
            "--no-progress"]
    assert run_cli([*bdmc, "--bdmc-data", "4"], capsys)[0] == 0
    code, _, err = run_cli([*bdmc, "--bdmc-data", "4"], capsys)
    assert code == 0, err
    code, _, err = run_cli([*bdmc, "--bdmc-data", "8"], capsys)
    assert code == 0, err
    code, _, err = run_cli([*bdmc, "--bdmc-data", "4"], capsys)
    assert code == 2 and "4 simulated data, not 8" in err and "not None" not in err, err
    code, _, err = run_cli([*bdmc[:-3], "--leapfrog", "3", "--no-progress", "--bdmc-data", "8"], capsys)
    assert code == 0, err
    stored = (run / "bdmc.json").read_bytes()
    code, _, err = run_cli([*bdmc, "--bdmc-data", "8"], capsys)
    assert code == 2 and "2 leapfrog steps, not 3" in err, err
    code, _, err = run_cli([*bdmc, "--bdmc-data", "-1"], capsys)
    assert code == 2 and "--bdmc-data takes a whole number >= 1" in err and len(err.strip().splitlines()) == 1, err
    assert (run / "bdmc.json").read_bytes() == stored


@pytest.mark.parametrize("options, named", [
    (["--estimator", "ais", "--temperatures", 10 ** 12], "--temperatures 1000000000000"),
    (["--estimator", "ais", "--chains", 10 ** 10], "--chains 10000000000"),
    (["--estimator", "bdmc", "--temperatures", 10 ** 12], "--temperatures 1000000000000"),
    (["--estimator", "bdmc", "--chains", 10 ** 10], "--chains 10000000000"),
    (["--estimator", "bdmc", "--bdmc-data", 10 ** 13], "--bdmc-data 10000000000000")])
def test_ais_and_bdmc_sizes_beyond_memory_are_refused_in_one_line_before_any_chain_runs(trained, capsys, options,
                                                                                        named):
    """T temperatures keep an acceptance rate per transition, chain and datum; C chains score D likelihood terms
    each; BDMC simulates N x D values: sizes beyond any machine ended in a traceback from the allocator."""
    before = {p.name: p.read_bytes() for p in trained.iterdir() if p.is_file() and p.name != ".pyro-zoo.lock"}
    code, _, err = run_cli(["eval", trained, *options, "--no-progress"], capsys)
    assert code == 2 and named in err and "asks for at least" in err and len(err.strip().splitlines()) == 1, err
    assert {p.name: p.read_bytes() for p in trained.iterdir() if p.is_file() and p.name != ".pyro-zoo.lock"} == before


@pytest.mark.parametrize("options, says", [
    (["--temperatures", "5"], "--estimator is (the default) does not use --temperatures"),
    (["--chains", "3", "--bdmc-data", "4"], "does not use --chains, --bdmc-data"),
    (["--estimator", "is", "--leapfrog", "3"], "does not use --leapfrog"),
    (["--gaps", "--chains", "3"], "does not use --chains"),
    (["--estimator", "ais", "--bdmc-data", "4"], "--estimator ais does not use --bdmc-data"),
    (["--ais-guide-moves"], "--estimator is (the default) does not use --ais-guide-moves"),
    (["--estimator", "smc", "--ais-guide-moves"], "--estimator smc does not use --ais-guide-moves")])
def test_annealing_flags_the_estimator_would_ignore_are_refused_in_one_line(trained, capsys, options, says):
    """`eval --estimator is` ran with --temperatures, --chains and --bdmc-data and used none of them: the
    figures it wrote were not those the command line asked for."""
    before = {p.name: p.read_bytes() for p in trained.iterdir() if p.is_file() and p.name != ".pyro-zoo.lock"}
    code, _, err = run_cli(["eval", trained, *options, "--no-progress"], capsys)
    assert code == 2 and says in err and len(err.strip().splitlines()) == 1, err
    assert {p.name: p.read_bytes() for p in trained.iterdir() if p.is_file() and p.name != ".pyro-zoo.lock"} == before


@pytest.mark.parametrize("estimator", ["ais", "bdmc"])
def test_a_full_disk_part_way_through_ais_or_bdmc_files_replaces_none_of_them(tmp_path, trained, capsys,
                                                                               monkeypatch, estimator):
    """ais.json, ais.md and ais_per_datum.npz (bdmc.json and bdmc.md) are one group: a disk that fills after the
    first of them is written leaves all of them as they were, not a new ais.json beside an old table. (AIS's
    progress file, written before the group, stays: the same command resumes from it.)"""
    import errno
    import os
    import stat
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    args = (["--estimator", "ais", "--temperatures", "3", "--chains", "2", "--leapfrog", "2", "--eval-limit", "4"]
            if estimator == "ais" else ["--estimator", "bdmc", "--temperatures", "3", "--chains", "2",
                                        "--leapfrog", "2", "--bdmc-data", "3"])
    assert run_cli(["eval", run, *args, "--no-progress"], capsys)[0] == 0
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file() and p.name != ".pyro-zoo.lock"}
    real, synced = os.fsync, []

    def fsync(fd):
        if stat.S_ISREG(os.fstat(fd).st_mode):
            synced.append(fd)
            if len(synced) > (2 if estimator == "ais" else 1):     # AIS: its progress file, then the group's first
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(fd)
    monkeypatch.setattr(os, "fsync", fsync)
    code, _, err = run_cli(["eval", run, *args, "--temperatures", "4", "--force", "--no-progress"], capsys)
    assert code == 2 and "no space left on device writing" in err and len(err.strip().splitlines()) == 1, err
    after = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file() and p.name != ".pyro-zoo.lock"}
    assert after.pop("ais_partial.npz", None) is not None or estimator == "bdmc"
    assert after == before


def test_guide_moves_are_recorded_and_are_another_sampler_a_later_run_does_not_silently_replace(tmp_path, trained,
                                                                                               capsys):
    """`--ais-guide-moves` writes guide_moves: true into ais.json (BDMC's trust rule reads it); the same command
    without it is another sampler, refused in one line unless --force, and with --force it runs and says nothing of
    guide moves."""
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    code, _, err = run_cli(["eval", run, *AIS, "--ais-guide-moves", "--replicas", "1"], capsys)
    assert code == 0, err
    assert json.loads((run / "ais.json").read_text())["guide_moves"] is True
    before = (run / "ais.json").read_bytes()
    code, _, err = run_cli(["eval", run, *AIS, "--replicas", "1"], capsys)
    assert code == 2 and "guide_moves" in err and len(err.strip().splitlines()) == 1, err
    assert (run / "ais.json").read_bytes() == before
    code, _, err = run_cli(["eval", run, *AIS, "--replicas", "1", "--force"], capsys)
    assert code == 0, err
    assert "guide_moves" not in json.loads((run / "ais.json").read_text())
