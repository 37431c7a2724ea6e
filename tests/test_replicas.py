"""Per-datum reliability from agreement between independent replicas (zoo/evaluation/replicas.py).

The mathematics checked:

- Cochran's Q = sum_r (l_r - l_bar)^2 / s_r^2 (l_bar the precision-weighted mean) is chi-square with R - 1 degrees
  of freedom when every replica is normal about one value with its stated SE, whatever the SEs: flagging Q above
  the 1 - alpha quantile has the false-alarm rate alpha per datum; one replica off by 5 of its SEs is flagged most
  of the time (the noncentral chi-square's power).
- The pooled estimate is log (1/R) sum_r Z^_r, with the larger of the within- and between-replica SEs.
- On a posterior with two modes, AIS from a one-mode guide sits several SEs low on the data whose second mode holds
  mass, with a healthy ESS (today's rule passes it); replicas from the guide and from the prior disagree there, and
  the flag says so.
- With the exact posterior as the guide (pPCA), replicas agree and almost nothing is flagged.
- The chains' own evidence: chains ending in different discrete states that never switched are flagged, chains
  that all end in one state are not.
"""
import math
import sys
from pathlib import Path

import pyro
import pytest
import torch

import zoo
from zoo.evaluation.ais import AISResult, AnnealedImportanceSampling
from zoo.evaluation.replicas import (Replica, WidenedGuide, _ais_problems, agreement_threshold, chi2_quantile,
                                     cochran_q, judge, pool, reason_array, Replication, replicated_ais,
                                     replicated_importance_sampling)

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import calibration_exam as exam  # noqa: E402


def test_the_chi_square_quantiles_are_the_tables():
    assert chi2_quantile(0.95, 1) == pytest.approx(3.8415, abs=1e-3)
    assert chi2_quantile(0.99, 3) == pytest.approx(11.3449, abs=1e-3)
    assert chi2_quantile(0.999, 7) == pytest.approx(24.3219, abs=1e-3)


@pytest.mark.parametrize("R", [2, 4, 8])
def test_cochran_q_has_its_nominal_false_alarm_rate_on_replicas_drawn_from_their_stated_normal(R):
    """SEs spread over a factor of 25 between replicas and data: the flag rate at alpha = 1% is 1% within four
    binomial standard errors over 40,000 data."""
    g = torch.Generator().manual_seed(R)
    n, alpha = 40_000, 0.01
    se = 0.02 + 0.48 * torch.rand(R, n, generator=g, dtype=torch.float64)
    log_z = -3.0 + se * torch.randn(R, n, generator=g, dtype=torch.float64)
    rate = (cochran_q(log_z, se, tolerance=0.0) > chi2_quantile(1 - alpha, R - 1)).double().mean().item()
    assert abs(rate - alpha) < 4 * math.sqrt(alpha * (1 - alpha) / n), rate


@pytest.mark.slow
def test_with_ses_estimated_from_few_draws_welch_s_threshold_keeps_the_rate_and_chi_square_s_does_not():
    """Each s_r^2 = sigma_r^2 chi^2_nu / nu, as a variance estimated from nu + 1 normal draws (nu = 7: AIS's 8 chains):
    against chi^2_3, Q flags far more than 1 %; against Welch's threshold, 1 % within 0.4 points."""
    g = torch.Generator().manual_seed(11)
    R, n, nu, alpha = 4, 20_000, 7, 0.01
    sigma = 0.05 + 0.3 * torch.rand(R, n, generator=g, dtype=torch.float64)
    log_z = sigma * torch.randn(R, n, generator=g, dtype=torch.float64)
    chi2 = torch.distributions.Chi2(torch.tensor(float(nu), dtype=torch.float64)).sample((R, n))
    se = sigma * (chi2 / nu).sqrt()
    q = cochran_q(log_z, se, tolerance=0.0)
    naive = (q > chi2_quantile(1 - alpha, R - 1)).double().mean().item()
    welch = (q > agreement_threshold(se, torch.full((R, n), float(nu)), alpha, tolerance=0.0)).double().mean().item()
    assert naive > 3 * alpha, naive
    assert abs(welch - alpha) < 0.004, welch


def test_one_replica_five_of_its_ses_off_is_flagged_most_of_the_time():
    """Noncentrality 5^2 (1 - 1/R) = 18.75 for R = 4 equal SEs: P(chi2_3(18.75) > 11.34) is about 0.88."""
    g = torch.Generator().manual_seed(0)
    n = 20_000
    se = torch.full((4, n), 0.1, dtype=torch.float64)
    log_z = se * torch.randn(4, n, generator=g, dtype=torch.float64)
    log_z[1] -= 0.5
    power = (cochran_q(log_z, se, tolerance=0.0) > chi2_quantile(0.99, 3)).double().mean().item()
    assert 0.84 < power < 0.92, power


def test_the_pooled_estimate_is_the_log_mean_of_the_replicas_z_with_the_larger_se():
    log_z = torch.tensor([[0.0, -1.0], [0.0, -1.0 + math.log(3.0)]], dtype=torch.float64)
    se = torch.tensor([[0.1, 0.01], [0.1, 0.01]], dtype=torch.float64)
    pooled, pooled_se = pool(log_z, se)
    assert pooled[0].item() == pytest.approx(0.0)
    assert pooled[1].item() == pytest.approx(-1.0 + math.log(2.0))
    assert pooled_se[0].item() == pytest.approx(0.1 / math.sqrt(2))            # agree: the within-replica SE
    # Z^ = (1, 3) e^-1: mean 2, sd sqrt(2), between = sqrt(2) / (sqrt(2) * 2) = 0.5, times t_1 / z = 12.71 / 1.96
    assert pooled_se[1].item() == pytest.approx(0.5 * 12.7062 / 1.96, rel=1e-3)


def test_every_flag_says_why_and_a_replica_s_own_problem_flags_the_datum():
    same = torch.tensor([-2.0, -2.0, -2.0])
    se = torch.tensor([0.05, 0.05, 0.05])
    replicas = [Replica("guide", 0, same, se, ["", "ESS 1.2 < 1.6", ""]),
                Replica("prior", 1, torch.tensor([-2.0, -2.0, -1.0]), se)]
    verdict = judge(replicas)
    assert verdict.reliable.tolist() == [True, False, False]
    assert verdict.reasons[1] == "guide: ESS 1.2 < 1.6"
    assert verdict.reasons[2].startswith("replicas disagree (Q 198.0 > 6.6")
    assert reason_array(verdict.reasons).dtype.kind == "U"
    assert verdict.summary()["frac_flagged"] == pytest.approx(2 / 3)


def _result(switch_rate, final_states, ess=8.0, acceptance=float("nan")):
    n = 1
    return AISResult(torch.zeros(n), torch.full((n,), 0.1), torch.full((n,), ess), torch.ones(n), [], [],
                     {"num_chains": 16}, torch.full((n,), acceptance), torch.full((n,), switch_rate),
                     torch.full((n,), final_states))


def test_stuck_chains_in_different_discrete_states_are_flagged_and_agreeing_ones_are_not():
    assert _ais_problems(_result(0.0, 2.0), "guide") == ["discrete states never switched"]
    assert _ais_problems(_result(0.004, 3.0), "guide") == ["discrete states switched in 0.4% of moves"]
    assert _ais_problems(_result(0.0, 1.0), "guide") == [""]             # a concentrated posterior
    assert _ais_problems(_result(0.5, 2.0, acceptance=0.02), "guide") == ["acceptance 0.02"]
    assert _ais_problems(_result(0.5, 2.0, ess=1.2), "guide") == ["ESS 1.20 < 2"]


@pytest.mark.parametrize("chains,ess,reliable", [(8, 1.0, False), (8, 1.9, False), (8, 2.0, True), (4, 1.05, False),
                                                 (40, 3.9, False), (40, 4.0, True)])
def test_one_chain_carrying_the_weight_is_never_a_precision_however_few_the_chains(chains, ess, reliable):
    """The ESS floor was a tenth of the chains alone: with 10 chains or fewer that is at most 1, which every ESS
    meets, so 8 chains whose weight sat on one (ESS 1.0, every datum of the committed SBN's AIS) passed as precise."""
    result = AISResult(torch.zeros(1), torch.full((1,), 0.1), torch.full((1,), ess), torch.ones(1), [], [],
                       {"num_chains": chains})
    assert result.se_reliable.tolist() == [reliable]
    assert result.summary()["frac_se_unreliable"] == (0.0 if reliable else 1.0)
    assert (_ais_problems(result, "guide") == [""]) == reliable


def test_ais_records_how_its_chains_moved():
    """Binary latents only: no HMC (NaN acceptance); Gibbs moves switch states at beta >= 1/2 in some chains."""
    from zoo import exact_models as E
    x = E.binary_latent_data(6)
    model = zoo.from_pyro(E.binary_latent_model, 6)
    guide = zoo.build_guide("amortized", model)
    pyro.set_rng_seed(0)
    result = AnnealedImportanceSampling(num_temperatures=10, num_chains=8).estimate(model, guide, x)
    assert torch.isnan(result.hmc_acceptance).all()
    assert ((result.switch_rate >= 0) & (result.switch_rate <= 1)).all() and result.switch_rate.max() > 0
    assert ((result.final_states >= 1) & (result.final_states <= 8)).all()


def _branch_one_guide(x, idx=None, N=None):
    """q(z | x) = the posterior of the first branch alone, N((a.(x - c1) / s^2) / P, 1 / P), P = 1 + |a|^2 / s^2: one
    of the two modes, as an ELBO-trained Gaussian guide settles on."""
    p = exam.TWO
    precision = 1 + p["a"].pow(2).sum() / p["s"] ** 2
    mean = ((x - p["c1"]) @ p["a"] / p["s"] ** 2 / precision).unsqueeze(-1)
    with pyro.plate("data", N, subsample=idx):
        pyro.sample("z", pyro.distributions.Normal(mean, precision ** -0.5).to_event(1))


@pytest.mark.slow
def test_on_two_modes_replicas_from_guide_and_prior_flag_the_data_ais_from_the_guide_gets_wrong():
    """AIS from the first branch's posterior misses the second mode. Among the data it puts more than 3 SE below
    the exact log p(x) (quadrature), today's ESS rule passes most; the four replicas (guide, prior, widened guide,
    prior) flag most of them as disagreeing (Welch's threshold with the 7 degrees of freedom of 8 chains' SEs costs
    power), and the pooled estimate of each one they do not flag is within 3 pooled SEs of the truth."""
    torch.set_num_threads(1)
    model = zoo.from_pyro(exam.two_mode, 2)
    x = exam.two_mode_data(40, seed=3)
    exact = exam.two_mode_log_marginal(x)
    sampler = AnnealedImportanceSampling(num_temperatures=50, num_chains=8, leapfrog_steps=4, batch_size=40)
    verdict = replicated_ais(sampler, model, _branch_one_guide, x, Replication(4, seed=5))
    guide_run = verdict.replicas[0]
    far = (guide_run.log_likelihood - exact) / guide_run.se < -3
    assert far.sum() >= 8, "the guide's AIS should miss the second mode on many data"
    assert guide_run.alone[far].double().mean() > 0.5              # today's rule calls most of them reliable
    flagged = ~verdict.reliable[far]
    assert flagged.double().mean() >= 0.6, [verdict.reasons[i] for i in torch.nonzero(far).flatten().tolist()]
    # each flag says why: the replicas disagree, or a replica's weights sit on one chain (an ESS below 2)
    assert all("replicas disagree" in verdict.reasons[i] or "ESS" in verdict.reasons[i]
               for i in torch.nonzero(far & ~verdict.reliable).flatten())
    passed = far & verdict.reliable
    z = (verdict.log_likelihood - exact) / verdict.log_likelihood_se
    assert (z[passed].abs() < 3).all(), z[passed]


@pytest.mark.slow
def test_with_the_exact_posterior_as_guide_replicas_agree_on_ppca(synthetic):
    """pPCA at its ML solution with the exact posterior as guide: AIS from the guide has every weight p(x), from the
    prior and the widened guide it anneals to it; the four replicas agree and at most 5 % of 40 data are flagged,
    and the pooled estimate is within 0.05 nats of the closed form on every datum."""
    torch.set_num_threads(1)
    model = zoo.build_model("ppca", synthetic.x_dim)
    model.set_ml_solution(synthetic.train)
    guide = zoo.build_guide("exact", model)
    x = synthetic.test[:40]
    sampler = AnnealedImportanceSampling(num_temperatures=200, num_chains=8, leapfrog_steps=4, batch_size=40)
    verdict = replicated_ais(sampler, model, guide, x, Replication(4, seed=1))
    assert (~verdict.reliable).double().mean() <= 0.05, [r for r in verdict.reasons if r]
    z = (verdict.log_likelihood - model.log_marginal(x).detach().double()) / verdict.log_likelihood_se
    assert (z[verdict.reliable].abs() < 3).all(), z


def test_the_widened_guide_keeps_its_location_and_multiplies_its_scale():
    model = zoo.from_pyro(exam.two_mode, 2)
    from guides.user import as_zoo_guide
    guide = as_zoo_guide(_branch_one_guide, model)
    x = exam.two_mode_data(3, seed=0)
    node = pyro.poutine.trace(WidenedGuide(guide, 3.0)).get_trace(x).nodes["z"]
    base = pyro.poutine.trace(guide).get_trace(x).nodes["z"]
    assert torch.allclose(node["fn"].mean, base["fn"].mean)
    assert torch.allclose(node["fn"].stddev, 3.0 * base["fn"].stddev)


def test_the_exam_runs_quick_on_one_model_and_writes_its_table(tmp_path, monkeypatch):
    import common
    monkeypatch.setattr(common, "RESULTS", tmp_path)
    monkeypatch.setattr(exam, "RESULTS", tmp_path)
    rows = exam.main(["--quick", "--models", "two_mode", "--estimators", "is", "--name", "exam_test"])
    assert rows[0]["model"] == "two_mode" and rows[0]["intervals"] == 6
    table = (tmp_path / "exam_test.md").read_text()
    assert "| two_mode | is |" in table and "Commit:" in table


def test_on_two_modes_importance_sampling_replicas_flag_what_the_guide_alone_gets_wrong():
    """IS with the first branch's posterior as proposal (K = 200) misses the second mode and sits more than 3 SE
    low on many data; the four replicas (guide, prior, defensive mixture, prior) flag at least 80 % of those, more
    than today's PSIS verdict on the guide alone does, and the pooled estimate of each one they pass is within 3
    pooled SEs of the truth."""
    torch.set_num_threads(1)
    model = zoo.from_pyro(exam.two_mode, 2)
    x = exam.two_mode_data(40, seed=4)
    exact = exam.two_mode_log_marginal(x)
    verdict = replicated_importance_sampling(model, _branch_one_guide, x, num_samples=200, replication=Replication(seed=2))
    guide_run = verdict.replicas[0]
    far = (guide_run.log_likelihood - exact) / guide_run.se < -3
    assert far.sum() >= 8
    flagged = (~verdict.reliable[far]).double().mean()
    assert flagged >= 0.8 and flagged > (~guide_run.alone[far]).double().mean()
    z = (verdict.log_likelihood - exact) / verdict.log_likelihood_se
    assert (z[far & verdict.reliable].abs() < 3).all(), z[far & verdict.reliable]


@pytest.mark.slow
def test_eval_with_replicas_records_each_datum_s_flag_and_reason_and_the_share_flagged(tmp_path, capsys):
    """`eval --estimator ais --replicas 3`: ais.json's headline is the replicas' pooled estimate with the share of
    data flagged; ais_per_datum.npz holds, per datum, the replicas' estimates, Q and its threshold, the flag, and a
    reason exactly where the flag is down (strings, read without pickle)."""
    import json

    import numpy as np

    from zoo.cli import main
    run = tmp_path / "run"
    assert main(["train", "vae", "--out", str(run), "--dataset", "digits", "--latent-dim", "2", "--hidden", "16",
                 "--epochs", "1", "--eval-samples", "20", "--iwae-k", "5", "--eval-limit", "20", "--no-progress",
                 "--seed", "0"]) == 0
    assert main(["eval", str(run), "--estimator", "ais", "--temperatures", "4", "--chains", "4", "--leapfrog", "2",
                 "--eval-limit", "8", "--replicas", "3", "--no-progress"]) == 0
    out = capsys.readouterr().out
    summary = json.loads((run / "ais.json").read_text())
    assert summary["replicas"] == 3 and 0 <= summary["frac_flagged"] <= 1
    assert summary["reliability"]["starts"] == ["guide", "prior", "wide"]
    per_datum = np.load(run / "ais_per_datum.npz", allow_pickle=False)
    assert per_datum["replica_log_likelihood"].shape == (3, 8) and per_datum["reasons"].dtype.kind == "U"
    assert [bool(r) for r in per_datum["reasons"]] == [not ok for ok in per_datum["reliable"]]
    pooled = np.log(np.exp(per_datum["replica_log_likelihood"]).mean(0))
    assert np.allclose(per_datum["log_likelihood"], pooled)
    assert "3 replicas per datum" in out
    # the first replica's own warning is its alone, kept with its figures, not beside the pooled SE, which is marked
    # where data are flagged
    assert "se_warning" not in summary and "se_warning" not in summary["rows"][-1]
    md = (run / "ais.md").read_text()
    assert (" ⚠ |" in md) == (summary["frac_flagged"] > 0) and "their standard error is not a precision" not in md


def test_eval_with_replicas_by_importance_sampling_and_the_flags_each_estimator_refuses(tmp_path, capsys):
    """`eval --replicas 3` (IS): results.json keeps the harness's figures and adds the replicas' pooled estimate and
    share flagged; per_datum.npz holds each datum's replicas, flag and reason (strings, read without pickle), the
    pooled estimate the log-mean of the replicas' Z. --replicas sets SMC's replicas too, and is refused in one line
    where it would be ignored (BDMC, --gaps) or said twice (with --smc-replicas)."""
    import json

    import numpy as np

    from zoo.cli import main
    run = tmp_path / "run"
    assert main(["train", "vae", "--out", str(run), "--dataset", "digits", "--latent-dim", "2", "--hidden", "16",
                 "--epochs", "1", "--eval-samples", "20", "--iwae-k", "5", "--eval-limit", "20", "--no-progress",
                 "--seed", "0"]) == 0
    alone = json.loads((run / "results.json").read_text())
    capsys.readouterr()
    assert main(["eval", str(run), "--eval-samples", "20", "--replicas", "3", "--no-progress"]) == 0
    out = capsys.readouterr().out
    summary = json.loads((run / "results.json").read_text())
    assert summary["log_likelihood"] == alone["log_likelihood"]          # the harness's figures, as they were
    assert summary["replicas"]["starts"] == ["guide", "prior", "defensive"]
    assert 0 <= summary["replicas"]["frac_flagged"] <= 1 and "3 importance-sampling replicas" in out
    per_datum = np.load(run / "per_datum.npz", allow_pickle=False)
    assert per_datum["replicas_replica_log_likelihood"].shape == (3, 20)
    assert [bool(r) for r in per_datum["replicas_reasons"]] == [not ok for ok in per_datum["replicas_reliable"]]
    pooled = np.log(np.exp(per_datum["replicas_replica_log_likelihood"].astype(np.float64)).mean(0))
    assert np.allclose(per_datum["replicas_pooled_log_likelihood"], pooled, atol=1e-4)
    for args, says in ((["--estimator", "bdmc", "--replicas", "2"], "--estimator bdmc takes none"),
                       (["--gaps", "--replicas", "2"], "--gaps takes none"),
                       # review: 10^11 AIS replicas built a list that long and was killed for memory
                       (["--estimator", "ais", "--replicas", "100000000000"], "from 1 to 64, got 100000000000"),
                       (["--replicas", "65"], "from 1 to 64"), (["--replicas", "0"], "from 1 to 64"),
                       (["--estimator", "smc", "--smc-replicas", "1"], "from 2 to 64 (the standard error"),
                       (["--estimator", "smc", "--replicas", "0"], "--replicas takes a whole number from 1 to 64")):
        assert main(["eval", str(run), *args, "--no-progress"]) == 2
        err = capsys.readouterr().err
        assert says in err and len(err.strip().splitlines()) == 1, err
    # SMC's --replicas are whole runs from different starts (as AIS's are), --smc-replicas the copies within one
    assert main(["eval", str(run), "--estimator", "smc", "--replicas", "3", "--smc-replicas", "2", "--smc-particles",
                 "8", "--leapfrog", "2", "--eval-limit", "4", "--no-progress"]) == 0
    smc = json.loads((run / "smc.json").read_text())
    assert smc["num_replicas"] == 2 and smc["runs"] == 3 and smc["starts"] == ["guide", "prior", "guide"]
