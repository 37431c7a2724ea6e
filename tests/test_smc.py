"""Sequential Monte Carlo with adaptive tempering (zoo.evaluation.smc) against exact log-likelihoods.

Each model here has log p(x) in closed form or by enumeration: pPCA's closed form, three binary latents summed
out (zoo/exact_models.py), and a two-mode posterior whose marginal is a mixture of two Gaussians in closed form
(and by quadrature, checked here). The SMC estimate is log (1/R) sum_r Z^_r over R independent replicas, its
standard error their spread (the delta method); the tests check it against the truth in units of that SE, and
check the parts (the conditional ESS, the bisection, systematic resampling) against their textbook definitions.
"""
import json
import math
import shutil

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch

import zoo
from zoo import exact_models as E
from clitools import run_cli, stopped_at
from zoo.cli import main
from zoo.core.errors import ZooError
from zoo.evaluation.ais import AnnealedImportanceSampling
from zoo.evaluation.smc import SequentialMonteCarlo, conditional_ess, next_temperatures, systematic_resample


def _z_of_mean(result, exact):
    """(mean error, its z-score) of the average over data of a result against the exact values."""
    error = (result.log_likelihood - exact.double()).mean().item()
    se = (result.log_likelihood_se.pow(2).sum().sqrt() / exact.shape[0]).item()
    return error, error / se


# --- the parts ----------------------------------------------------------------------------------------------
def test_the_conditional_ess_is_the_textbook_formula_and_one_for_equal_increments():
    torch.manual_seed(0)
    log_W = torch.log_softmax(torch.randn(50, 3, dtype=torch.float64), 0)
    log_inc = torch.randn(50, 3, dtype=torch.float64)
    W, w = log_W.exp(), log_inc.exp()
    assert torch.allclose(conditional_ess(log_W, log_inc), (W * w).sum(0) ** 2 / (W * w ** 2).sum(0))
    assert torch.allclose(conditional_ess(log_W, torch.full_like(log_inc, 2.5)), torch.ones(3, dtype=torch.float64))


def test_the_next_temperature_keeps_the_target_conditional_ess_and_goes_to_one_when_it_can():
    """Per datum: CESS(delta g) equals the target at the chosen step (bisection), a datum whose whole remaining
    step keeps it goes to beta = 1, and a datum already at 1 stays there."""
    torch.manual_seed(1)
    N = 200
    g = torch.randn(N, 4, dtype=torch.float64) * torch.tensor([30.0, 30.0, 0.01, 5.0], dtype=torch.float64)
    beta = torch.tensor([0.0, 0.5, 0.2, 1.0], dtype=torch.float64)
    log_W = torch.full((N, 4), -math.log(N), dtype=torch.float64)
    new = next_temperatures(beta, log_W, g, 0.5)
    cess = conditional_ess(log_W, (new - beta) * g)
    assert torch.allclose(cess[:2], torch.full((2,), 0.5, dtype=torch.float64), atol=1e-6), cess
    assert bool((new[:2] > beta[:2]).all() and (new[:2] < 1).all())
    assert new[2] == 1.0 and new[3] == 1.0


def test_systematic_resampling_copies_each_particle_floor_or_ceil_of_n_w_times():
    torch.manual_seed(2)
    N, B = 64, 5
    log_W = torch.log_softmax(3 * torch.randn(N, B, dtype=torch.float64), 0)
    ancestors = systematic_resample(log_W)
    assert ancestors.shape == (N, B)
    for b in range(B):
        counts = torch.bincount(ancestors[:, b], minlength=N).double()
        expected = N * log_W[:, b].exp()
        assert bool((counts >= expected.floor() - 1e-9).all() and (counts <= expected.ceil() + 1e-9).all())


@pytest.mark.parametrize("options, message", [
    ({"num_particles": 0}, "num_particles"), ({"num_replicas": 1}, "num_replicas"),
    ({"target_ess": 1.0}, "target_ess"), ({"resample_threshold": 0}, "resample_threshold"),
    ({"path": "posterior"}, "path"), ({"precondition": "full"}, "precondition"),
    ({"initial_step_size": float("nan")}, "initial_step_size"), ({"num_moves": 1.5}, "num_moves")])
def test_options_are_refused_in_one_line_naming_the_option(options, message):
    with pytest.raises(ZooError, match=message):
        SequentialMonteCarlo(**options)


def test_a_replica_carrying_most_of_the_estimate_or_a_forced_schedule_makes_the_se_no_precision():
    """Where one replica's Z^_r is more than half the sum of R's, the SE from R numbers is not a precision; nor where
    a replica reached max_steps before beta = 1. Both are flagged per datum, and the summary says why."""
    from zoo.evaluation.smc import SMCResult
    replicas = torch.tensor([[-3.0, -3.0, -3.0], [-3.1, -3.0, -3.0], [-2.9, 0.0, -3.0], [-3.0, -3.0, -3.0]],
                            dtype=torch.float64)
    ll, se = replicas.exp().mean(0).log(), torch.full((3,), 0.1, dtype=torch.float64)
    ones = torch.ones(3, dtype=torch.float64)
    result = SMCResult(ll, se, replicas, ones, ones, ones, torch.tensor([False, False, True]), {"num_replicas": 4})
    assert result.se_reliable.tolist() == [True, False, False]
    assert "not a precision" in result.summary()["se_warning"]


# --- exact answers ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("path", ["guide", "prior"])
def test_smc_reaches_the_ppca_closed_form_within_three_se(synthetic, path):
    """From an untrained guide (a poor start) or the prior, the average SMC estimate over 20 data is within 3 of
    its replicas' SEs of pPCA's closed form log N(x; mu, W W^T + sigma^2 I), and within 0.1 nats."""
    model = zoo.build_model("ppca", synthetic.x_dim)
    model.set_ml_solution(synthetic.train)
    guide = zoo.build_guide("amortized", model, hidden=(8,))
    x = synthetic.test[:20]
    pyro.set_rng_seed(3)
    result = SequentialMonteCarlo(num_particles=32, num_replicas=4, path=path).estimate(model, guide, x)
    error, z = _z_of_mean(result, model.log_marginal(x))
    assert abs(z) < 3 and abs(error) < 0.1, f"SMC ({path}) is off by {error:.4f} nats, {z:.1f} SE"
    assert bool((result.steps >= 1).all()) and result.steps.max() > 1 and result.replicas.shape == (4, 20)
    Z = result.replicas.exp()                   # the estimate is log mean_r Z_r, its SE sd_r(Z_r) / (sqrt(R) mean_r Z_r)
    assert torch.allclose(result.log_likelihood, Z.mean(0).log())
    assert torch.allclose(result.log_likelihood_se, Z.std(0) / 2 / Z.mean(0))
    assert 0.3 < result.summary()["acceptance_mean"] <= 1.0


def test_smc_on_binary_latents_matches_enumeration():
    """Discrete latents move by AIS's independent MH and Gibbs kernels at each datum's own beta: SMC over the 8
    states of three Bernoulli latents is within 3 SE (and 0.05 nats) of the enumerated log p(x)."""
    x = E.binary_latent_data(30)
    model = zoo.from_pyro(E.binary_latent_model, 6)
    guide = zoo.build_guide("amortized", model, hidden=(8,))
    pyro.set_rng_seed(4)
    result = SequentialMonteCarlo(num_particles=32, num_replicas=4).estimate(model, guide, x)
    error, z = _z_of_mean(result, E.binary_latent_log_marginal(x))
    assert abs(z) < 3 and abs(error) < 0.05, f"SMC is off by {error:.4f} nats, {z:.1f} SE"
    assert bool(torch.isnan(result.acceptance).all())          # no real site: no HMC move to count
    assert result.steps.max() > 1 and result.resamples.max() > 0   # the discrete kernels ran at beta < 1



# --- a two-mode posterior, and a guide that covers one mode -----------------------------------------------------
TWO_A, TWO_S = 2.0, 0.4
#: the share of the guide's mass on the far side of z = 0, the other mode's basin
TWO_GUIDE_SHARE = 0.03


def two_mode(x, idx=None, N=None):
    """z ~ N(0, 1), x | z ~ 1/2 N(a z, s^2) + 1/2 N(-a z, s^2): for |x| well above s, p(z | x) has two modes of
    equal mass at z = +-a x / (a^2 + s^2), each s / sqrt(a^2 + s^2) wide; p(x) = N(x; 0, a^2 + s^2)."""
    with pyro.plate("data", N, subsample=idx):
        z = pyro.sample("z", dist.Normal(torch.zeros(1), 1.0).to_event(1))
        locs = torch.stack([TWO_A * z, -TWO_A * z], -1)
        mix = dist.MixtureSameFamily(dist.Categorical(torch.ones(2) / 2), dist.Normal(locs, TWO_S))
        pyro.sample("x", mix.to_event(1), obs=x)


def one_mode_guide(x, idx=None, N=None):
    """A Normal at the mode z = a x / (a^2 + s^2), wide enough that TWO_GUIDE_SHARE of it lies past z = 0."""
    m = TWO_A * x / (TWO_A ** 2 + TWO_S ** 2)
    quantile = -dist.Normal(0.0, 1.0).icdf(torch.tensor(TWO_GUIDE_SHARE))
    with pyro.plate("data", N, subsample=idx):
        pyro.sample("z", dist.Normal(m, m.abs() / quantile + 0.05).to_event(1))


def two_mode_log_marginal(x: torch.Tensor) -> torch.Tensor:
    return dist.Normal(0.0, math.sqrt(TWO_A ** 2 + TWO_S ** 2)).log_prob(x.double()[:, 0])


TWO_X = torch.tensor([-3.0, -2.5, -2.0, -1.5, 1.5, 2.0, 2.5, 3.0]).unsqueeze(-1)


def test_the_two_mode_marginal_is_the_quadrature_of_the_model():
    """The closed form N(x; 0, a^2 + s^2) against a trapezoid over z on [-12, 12] of the model's own log p(x, z)."""
    z = torch.linspace(-12, 12, 24001, dtype=torch.float64)
    x = TWO_X.double()[:, 0]
    log_prior = dist.Normal(0.0, 1.0).log_prob(z)
    log_lik = torch.logsumexp(torch.stack([dist.Normal(TWO_A * z, TWO_S).log_prob(x[:, None]),
                                           dist.Normal(-TWO_A * z, TWO_S).log_prob(x[:, None])]), 0) - math.log(2)
    quadrature = torch.trapezoid((log_prior + log_lik).exp(), z, dim=-1).log()
    assert torch.allclose(quadrature, two_mode_log_marginal(TWO_X), atol=1e-8)


@pytest.mark.slow
def test_smc_recovers_the_mode_the_guide_misses_where_ais_from_the_same_guide_does_not():
    """Eight data, each with two modes of equal mass; the guide sits on one, with 3 % of its mass past z = 0. AIS
    from it (T = 400, 16 chains, 5 leapfrog steps: 40,000 gradient evaluations per datum with its pilot) starts
    16 x 3 % ~ 0.5 chains per datum in the other basin, and its chains cannot cross once the barrier has risen. Run
    on the eight data four times over (32 runs, so the count does not hang on one draw), 7 to 17 of the 32 are more
    than 3 of its own SEs below the truth over seeds 0-11 (measured with the integrator of zoo/core/leapfrog.py); the
    test asks for at least 4. On the eight data alone that count ranged 1-6, too few runs to assert on. SMC from the same guide (256 particles x 8
    replicas, one move of 5 leapfrog steps per temperature, conditional ESS 0.98: about 160,000 gradient
    evaluations per datum, in a third of AIS's time here, since its ~16 temperatures are one tensor program each)
    copies the particles that reach the second basin while its share of f_beta grows: its average is within 3 SE
    of the exact one, and at most one datum is beyond 3 of its replicas' SEs. (At 1 % SMC too misses some data:
    a mode needs particles to reach it; benchmarks/smc_exact.py runs both at equal budgets.)"""
    model = zoo.from_pyro(two_mode, 1)
    exact = two_mode_log_marginal(TWO_X)
    pyro.set_rng_seed(0)
    smc = SequentialMonteCarlo(num_particles=256, num_replicas=8, num_moves=1, target_ess=0.98).estimate(
        model, one_mode_guide, TWO_X)
    z_smc = (smc.log_likelihood - exact) / smc.log_likelihood_se
    error, z = _z_of_mean(smc, exact)
    assert abs(z) < 3 and int((z_smc.abs() > 3).sum()) <= 1, f"SMC: {error:.3f} nats, {z:.1f} SE; per datum {z_smc}"
    pyro.set_rng_seed(0)
    ais = AnnealedImportanceSampling(num_temperatures=400, num_chains=16, leapfrog_steps=5).estimate(
        model, one_mode_guide, TWO_X.repeat(4, 1))
    z_ais = (ais.log_likelihood - exact.repeat(4)) / ais.log_likelihood_se
    assert int((z_ais < -3).sum()) >= 4, f"AIS: per datum {z_ais}"


@pytest.mark.slow
def test_ais_with_guide_moves_keeps_the_mode_the_guide_misses():
    """The same AIS from the same one-mode guide (T = 400, 16 chains, 5 leapfrog steps, 32 runs) with guide moves:
    at every temperature a proposal from the defensive mixture of the guide and the prior (zoo.evaluation.ais),
    which puts chains in the other basin at low beta and keeps those there by the Metropolis correction. Measured over
    seeds 0-3: no datum beyond 3 of its SEs (7 to 17 of 32 without the moves), the average within 0.4 SE of the
    exact one; the test asks for at most 2 and 3 SE."""
    model = zoo.from_pyro(two_mode, 1)
    x = TWO_X.repeat(4, 1)
    exact = two_mode_log_marginal(x)
    pyro.set_rng_seed(0)
    ais = AnnealedImportanceSampling(num_temperatures=400, num_chains=16, leapfrog_steps=5, guide_moves=True).estimate(
        model, one_mode_guide, x)
    z_ais = (ais.log_likelihood - exact) / ais.log_likelihood_se
    error, z = _z_of_mean(ais, exact)
    assert abs(z) < 3 and int((z_ais.abs() > 3).sum()) <= 2, f"AIS: {error:.3f} nats, {z:.1f} SE; per datum {z_ais}"

# --- the command line ---------------------------------------------------------------------------------------------
RUN = ["--dataset", "digits", "--latent-dim", "2", "--hidden", "16", "--epochs", "1", "--eval-samples", "20",
       "--iwae-k", "5", "--eval-limit", "20", "--no-progress", "--seed", "0"]
SMC = ["--estimator", "smc", "--smc-particles", "8", "--smc-replicas", "2", "--leapfrog", "2", "--eval-limit", "6",
       "--no-progress"]



def _same(a: np.ndarray, b: np.ndarray) -> bool:
    """Bit for bit, NaN where NaN (the reasons per datum are strings)."""
    return np.array_equal(a, b, equal_nan=a.dtype.kind == "f")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("smc") / "run"
    assert main(["train", "vae", "--out", str(out), *RUN]) == 0
    return out


def test_smc_writes_its_three_files_and_leaves_the_other_results_alone(tmp_path, trained, capsys):
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    before = (run / "results.json").read_bytes()
    code, out, err = run_cli(["eval", run, *SMC], capsys)
    assert code == 0, err
    summary = json.loads((run / "smc.json").read_text())
    assert summary["estimator"] == "smc" and summary["num_data"] == 6 and summary["num_particles"] == 8
    assert summary["num_replicas"] == 2 and summary["leapfrog_steps"] == 2 and summary["transported"] == ["z"]
    assert math.isfinite(summary["log_likelihood"]) and summary["log_likelihood_se"] > 0
    # by default two whole runs, from the guide and from the prior, pooled and judged (module docstring)
    assert summary["runs"] == 2 and summary["starts"] == ["guide", "prior"]
    assert summary["reliability"]["starts"] == ["guide", "prior"] and 0 <= summary["frac_flagged"] <= 1
    per_datum = np.load(run / "smc_per_datum.npz")
    assert per_datum["log_likelihood"].shape == (6,) and per_datum["first_replica_replicas"].shape == (2, 6)
    assert per_datum["replica_log_likelihood"].shape == (2, 6) and np.isfinite(per_datum["log_likelihood_se"]).all()
    pooled = np.logaddexp(*per_datum["replica_log_likelihood"].astype(np.float64)) - np.log(2)
    assert np.allclose(per_datum["log_likelihood"], pooled, atol=1e-5)
    assert [bool(r) for r in per_datum["reasons"]] == [not ok for ok in per_datum["reliable"]]
    md = (run / "smc.md").read_text()
    assert "independent copies" in md and "2 whole SMC runs per datum (from guide, prior)" in md and "smc.json" in out
    assert "2 runs, from the guide and the prior in turn" in md
    # review: the first run's own SE warning was shown beside the pooled SE; it is the first run's, and the shares
    # beside the pooled figure count the data any run found forced or without a precise SE
    assert "se_warning" not in summary and "one replica carrying more than" not in md
    assert ("⚠" in md) == (summary["frac_flagged"] > 0)
    copies_ok = [per_datum["first_replica_se_reliable"]]
    assert summary["frac_se_unreliable"] >= 1 - np.mean(copies_ok) - 1e-12
    assert (run / "results.json").read_bytes() == before and not (run / "smc_partial.npz").exists()


def test_a_weaker_or_oversized_smc_evaluation_is_refused_in_one_line_and_the_results_kept(tmp_path, trained, capsys):
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    assert run_cli(["eval", run, *SMC], capsys)[0] == 0
    stored = (run / "smc.json").read_bytes()
    weaker = [a if a != "8" else "4" for a in SMC]
    code, _, err = run_cli(["eval", run, *weaker], capsys)
    assert code == 2 and "4 particles, not 8" in err and len(err.strip().splitlines()) == 1, err
    # review: fewer moves per temperature replaced a stored SMC; they make a weaker one, refused as such
    code, _, err = run_cli(["eval", run, *SMC, "--smc-moves", "1"], capsys)
    assert code == 2 and "1 moves, not" in err and len(err.strip().splitlines()) == 1, err
    code, _, err = run_cli(["eval", run, "--estimator", "smc", "--no-progress", "--smc-particles", 10 ** 12], capsys)
    assert code == 2 and "--smc-particles" in err and "more than the" in err and len(err.strip().splitlines()) == 1
    assert (run / "smc.json").read_bytes() == stored


def test_bad_or_foreign_smc_flags_are_refused_in_one_line(tmp_path, capsys):
    run = tmp_path / "run"           # refused before the folder is read
    for bad, says in ((["--smc-particles", "0"], "num_particles"), (["--smc-target-ess", "1.5"], "target_ess"),
                      (["--temperatures", "10"], "--temperatures"), (["--eval-samples", "5"], "--eval-samples")):
        code, _, err = run_cli(["eval", run, "--estimator", "smc", "--no-progress", *bad], capsys)
        assert code == 2 and says in err and len(err.strip().splitlines()) == 1, err


def test_smc_flags_without_smc_and_smc_with_gaps_are_refused_in_one_line(tmp_path, capsys):
    run = tmp_path / "run"
    code, _, err = run_cli(["eval", run, "--estimator", "ais", "--smc-particles", "8", "--no-progress"], capsys)
    assert code == 2 and "--estimator smc" in err and len(err.strip().splitlines()) == 1, err
    code, _, err = run_cli(["eval", run, "--gaps", "--estimator", "smc", "--no-progress"], capsys)
    assert code == 2 and "--gaps" in err and len(err.strip().splitlines()) == 1, err


def _stopped_then_resumed(tmp_path, trained, capsys, args, stop_at: int, kept: int):
    """(the run stopped at SMC's ``stop_at``-th minibatch and run again, the same run without a stop, the minibatches
    the resumed command computed): the stop keeps ``kept`` minibatches and says so in one line."""
    whole = tmp_path / "whole"
    shutil.copytree(trained, whole)
    assert run_cli(["eval", whole, *args], capsys)[0] == 0
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    with stopped_at(SequentialMonteCarlo, stop_at):
        code, _, err = run_cli(["eval", run, *args], capsys)
    assert code == 130 and f"{kept} finished SMC minibatches are kept" in err and len(err.strip().splitlines()) == 1
    assert (run / "smc_partial.npz").is_file() and not (run / "smc.json").exists()
    with stopped_at(SequentialMonteCarlo, 0) as calls:              # counts the calls, stops none
        assert run_cli(["eval", run, *args], capsys)[0] == 0
    assert not (run / "smc_partial.npz").exists()
    return run, whole, calls


def test_a_stopped_smc_resumes_from_its_finished_minibatches_to_the_figures_of_a_run_without_a_stop(
        tmp_path, trained, capsys):
    """Stopped in the second of three minibatches, the command keeps the first and says so in one line; run
    again, it runs only the other two and writes what a run without a stop writes, bit for bit (one run: --replicas
    1)."""
    args = [*SMC, "--ais-batch-size", "2", "--replicas", "1"]
    run, whole, calls = _stopped_then_resumed(tmp_path, trained, capsys, args, stop_at=2, kept=1)
    assert len(calls) == 2
    resumed, uninterrupted = np.load(run / "smc_per_datum.npz"), np.load(whole / "smc_per_datum.npz")
    for name in uninterrupted.files:
        assert _same(resumed[name], uninterrupted[name]), name


@pytest.fixture(scope="module")
def stopped_smc(trained, tmp_path_factory):
    """SMC of a run without a stop (``whole``), and the same SMC stopped in the second of three minibatches
    (``stopped``: one minibatch kept in smc_partial.npz)."""
    root = tmp_path_factory.mktemp("stopped_smc")
    whole, stopped = root / "whole", root / "stopped"
    shutil.copytree(trained, whole)
    shutil.copytree(trained, stopped)
    args = [*SMC, "--ais-batch-size", "2"]
    assert main([str(a) for a in ["eval", whole, *args]]) == 0
    with stopped_at(SequentialMonteCarlo, 2):
        assert main([str(a) for a in ["eval", stopped, *args]]) == 130
    assert (stopped / "smc_partial.npz").is_file()
    return whole, stopped


@pytest.mark.parametrize("edit, digest_rewritten", [
    (lambda a: a + 1.0, False), (lambda a: a + 1e6, True), (lambda a: a[:1], True),
    (lambda a: np.where(np.arange(a.size) == 1, np.nan, a), True), (lambda a: a - 5.0, True)],
    ids=["shifted", "plus-1e6-new-digest", "short", "nan", "not-the-replicas-mean"])
def test_smc_progress_edited_since_it_was_kept_is_set_aside_and_computed_again(
        tmp_path, stopped_smc, capsys, edit, digest_rewritten):
    """Kept SMC minibatches are untrusted input, as AIS's are: a figure edited with the digest left as it was, or
    written anew to match (then a figure SMC cannot have computed: a log-probability of data with levels above 0, a
    minibatch of 2 data with 1 figure, a NaN, an estimate that is not its replicas' mean), is seen; the run says so in
    one line and ends with the figures of a run without a stop, bit for bit."""
    from zoo.data.headers import read_npz_arrays
    from zoo.experiments.sequential import _keep
    whole, stopped = stopped_smc
    run = tmp_path / "run"
    shutil.copytree(stopped, run)
    path = run / "smc_partial.npz"
    arrays = read_npz_arrays(str(path), path)
    arrays["b0_log_likelihood"] = edit(arrays["b0_log_likelihood"])
    if digest_rewritten:
        key = arrays.pop("key").tobytes().decode()
        arrays.pop("digest")
        _keep(path, key, {0: {0: {k[3:]: torch.from_numpy(v) for k, v in arrays.items()}}})
    else:
        np.savez(path, **arrays)
    code, _, err = run_cli(["eval", run, *SMC, "--ais-batch-size", "2"], capsys)
    assert code == 0, err
    assert len(err.strip().splitlines()) == 1 and ("SMC cannot have computed" in err or "edited or damaged" in err)
    resumed, uninterrupted = np.load(run / "smc_per_datum.npz"), np.load(whole / "smc_per_datum.npz")
    for name in uninterrupted.files:
        assert _same(resumed[name], uninterrupted[name]), name


def test_the_command_line_s_defaults_are_the_sampler_s():
    from zoo.cli import SMC_DEFAULTS
    sampler = SequentialMonteCarlo()
    assert {k: getattr(sampler, k) for k in SMC_DEFAULTS} == SMC_DEFAULTS


def test_smc_moves_a_binary_site_too_large_for_gibbs_by_local_flips_and_matches_enumeration():
    """SMC's moves are AIS's kernels: a 10-bit site (1,024 values, above gibbs_max_states) takes the local bit
    flips, and SMC is within 3 SE (and 0.1 nats) of the enumerated log p(x)."""
    model, exact, data = E.sbn_layer(latent=10, dim=24, scale=2.5, seed=3)
    x = data(30, seed=3)
    zoo_model = zoo.from_pyro(model, 24)
    guide = zoo.build_guide("amortized", zoo_model, hidden=(8,))
    pyro.set_rng_seed(4)
    result = SequentialMonteCarlo(num_particles=32, num_replicas=4).estimate(zoo_model, guide, x)
    error, z = _z_of_mean(result, exact(x))
    assert abs(z) < 3 and abs(error) < 0.1, f"SMC is off by {error:.4f} nats, {z:.1f} SE"


def test_smc_replicas_from_the_guide_and_the_prior_flag_the_mode_one_start_misses():
    """One SMC run's copies all start where its path says: from a guide settled on one of two modes, with few
    particles (32 x 4 copies, the default schedule), most data are more than 3 of its SEs below the truth and its
    own check calls them precise (found by an independent check). A second run from the prior, judged with the
    first by the replicas' agreement test (zoo.evaluation.replicas.replicated_smc), flags data where the two
    disagree; where it calls a datum reliable, the pooled estimate is within 3 pooled SEs of the closed form."""
    from zoo.evaluation.replicas import Replication, replicated_smc
    model = zoo.from_pyro(two_mode, 1)
    x = TWO_X.repeat(2, 1)
    exact = two_mode_log_marginal(x)
    missed = flagged = 0
    for seed in range(2):
        verdict = replicated_smc(SequentialMonteCarlo(num_particles=32, num_replicas=4), model, one_mode_guide, x,
                                 Replication(replicas=2, seed=seed))
        guide = verdict.replicas[0]
        assert guide.start == "guide" and verdict.replicas[1].start == "prior"
        missed += int((((guide.log_likelihood - exact) / guide.se) < -3).sum())
        flagged += int((~verdict.reliable).sum())
        z = (verdict.log_likelihood - exact) / verdict.log_likelihood_se
        assert (z[verdict.reliable].abs() <= 3).all(), (z, verdict.reasons)
    assert missed >= 8 and flagged >= 4, (missed, flagged)


def test_one_replica_is_refused_in_one_line_naming_the_agreement_test():
    """replicated_smc, replicated_ais and replicated_importance_sampling with one replica raised judge's bare
    ValueError after the run (found by review): refused before any work, in one line."""
    from zoo.evaluation.replicas import Replication, replicated_ais, replicated_importance_sampling, replicated_smc
    model = zoo.from_pyro(two_mode, 1)
    calls = [lambda: replicated_smc(SequentialMonteCarlo(num_particles=4), model, one_mode_guide, TWO_X,
                                    Replication(replicas=1)),
             lambda: replicated_ais(AnnealedImportanceSampling(num_temperatures=2), model, one_mode_guide, TWO_X,
                                    Replication(replicas=1)),
             lambda: replicated_importance_sampling(model, one_mode_guide, TWO_X, 10, Replication(replicas=1))]
    for call in calls:
        with pytest.raises(ZooError, match="at least two runs"):
            call()


def test_one_smc_run_is_the_first_run_of_two_bit_for_bit_and_says_what_it_cannot_see(tmp_path, trained, capsys):
    """--replicas 1 is the one run from --ais-path's start that the default's first run is; its page says that one
    start's SE cannot see a mode its particles never reached. A stored two-run SMC is not replaced by one run."""
    two, one = tmp_path / "two", tmp_path / "one"
    for run in (two, one):
        shutil.copytree(trained, run)
    assert run_cli(["eval", two, *SMC], capsys)[0] == 0
    assert run_cli(["eval", one, *SMC, "--replicas", "1"], capsys)[0] == 0
    pooled, alone = np.load(two / "smc_per_datum.npz"), np.load(one / "smc_per_datum.npz")
    for name in alone.files:
        assert _same(pooled[f"first_replica_{name}"], alone[name]), name
    summary = json.loads((one / "smc.json").read_text())
    assert summary["runs"] == 1 and summary["starts"] == ["guide"] and "reliability" not in summary
    assert "One run from one start" in (one / "smc.md").read_text()
    code, _, err = run_cli(["eval", two, *SMC, "--replicas", "1"], capsys)
    assert code == 2 and "1 whole runs (--replicas), not 2" in err and len(err.strip().splitlines()) == 1, err
    # from the prior first: the starts turn the other way
    assert run_cli(["eval", one, *SMC, "--ais-path", "prior", "--force"], capsys)[0] == 0
    prior_first = json.loads((one / "smc.json").read_text())
    assert prior_first["starts"] == ["prior", "guide"] and prior_first["transported"] == ["z"]
    # review: the second run's coordinates were not recorded (the top level's are the first run's)
    assert [(r["path"], r["precondition"]) for r in prior_first["per_run"]] == [("prior", "none"),
                                                                               ("guide", "transport")]


def test_a_two_run_smc_stopped_in_its_second_run_resumes_to_the_figures_of_a_run_without_a_stop(
        tmp_path, trained, capsys):
    """Stopped in the second run's second minibatch, the command keeps the first run's three minibatches and the
    second's first; run again, it runs only the other two and writes what a run without a stop writes, bit for bit."""
    args = [*SMC, "--ais-batch-size", "2"]
    run, whole, calls = _stopped_then_resumed(tmp_path, trained, capsys, args, stop_at=5, kept=4)
    assert len(calls) == 2
    resumed, uninterrupted = np.load(run / "smc_per_datum.npz"), np.load(whole / "smc_per_datum.npz")
    for name in uninterrupted.files:
        assert _same(resumed[name], uninterrupted[name]), name
    # a run's figures do not depend on how many runs there are: a one-run evaluation's kept minibatch is taken by a
    # two-run one (five left to run), and a two-run evaluation's first run by a one-run one (none left to run)
    again = tmp_path / "again"
    shutil.copytree(trained, again)
    with stopped_at(SequentialMonteCarlo, 2):
        assert run_cli(["eval", again, *args, "--replicas", "1"], capsys)[0] == 130
    with stopped_at(SequentialMonteCarlo, 0) as calls:
        assert run_cli(["eval", again, *args], capsys)[0] == 0
    assert len(calls) == 5
    resumed = np.load(again / "smc_per_datum.npz")
    assert all(_same(resumed[name], uninterrupted[name]) for name in uninterrupted.files)
    alone = tmp_path / "alone"
    shutil.copytree(trained, alone)
    assert run_cli(["eval", alone, *args, "--replicas", "1"], capsys)[0] == 0
    with stopped_at(SequentialMonteCarlo, 5):
        assert run_cli(["eval", again, *args, "--force"], capsys)[0] == 130
    with stopped_at(SequentialMonteCarlo, 0) as calls:
        assert run_cli(["eval", again, *args, "--replicas", "1", "--force"], capsys)[0] == 0
    assert len(calls) == 0
    one, reference = np.load(again / "smc_per_datum.npz"), np.load(alone / "smc_per_datum.npz")
    assert set(one.files) == set(reference.files) and all(_same(one[k], reference[k]) for k in reference.files)
