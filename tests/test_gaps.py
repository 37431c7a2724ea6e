"""The inference-suboptimality split (Cremer et al. 2018) and the converging per-datum refit.

On pPCA everything is Gaussian: the posterior is N(m, Sigma) with precision Lambda = Sigma^-1, the best
mean-field Gaussian is N(m, diag(1 / Lambda_ii)), and its approximation gap is
KL(q* || p(z | x)) = 0.5 (sum_i log Lambda_ii - log det Lambda) per datum.
"""
import json
from dataclasses import replace

import pyro
import pyro.poutine as poutine
import pytest
import torch

from zoo.cli import main
from zoo.core.errors import ZooError
from zoo.core.weights import per_datum_log_weights
from zoo.evaluation.gaps import FROM_ENCODER, inference_gaps, local_guide, same_family
from zoo.evaluation.harness import evaluate
from zoo.models import PPCA
from zoo.objectives import build_objective
from zoo.registry import build_guide, build_model
from zoo.training.loop import fit
from zoo.training.refit import RefitSchedule, refit_local_guide


def _ppca(n=100):
    """A 3-D pPCA in 6-D with correlated posterior coordinates, and n data drawn from it."""
    torch.manual_seed(0)
    model = PPCA(x_dim=6, latent_dim=3)
    with torch.no_grad():
        model.W.copy_(torch.randn(6, 3))
        model.log_noise_scale.fill_(-0.5)
    pyro.set_rng_seed(1)
    x = poutine.trace(model.model).get_trace(None, N=n).nodes["x"]["value"].detach()
    return model, x


def _closed_form(model, x):
    posterior = model.posterior(x)["z"]
    precision = torch.linalg.inv(posterior.covariance_matrix[0].double())
    kl = 0.5 * (torch.log(torch.diagonal(precision)).sum() - torch.logdet(precision))
    return posterior.loc, 1.0 / torch.diagonal(precision), kl.item()


def test_refit_of_meanfield_on_ppca_reaches_the_optimal_mean_field_gaussian_and_stops_on_its_criterion():
    """Started from zeros, the refit stops on its criterion before the cap, at q* ~ N(m, diag(1 / Lambda_ii)):
    every variance within 10% of 1 / Lambda_ii, the means within 0.05 of m on average (posterior sds are
    0.2-0.6), and the ELBO within 0.02 nats of the closed-form optimum log p(x) - KL (IS-free: pPCA's
    exact log p(x), the ELBO from 2000 samples per datum)."""
    model, x = _ppca()
    loc, variance, kl = _closed_form(model, x)
    guide = build_guide("meanfield", model, num_data=x.shape[0])
    result = refit_local_guide(model, guide, x, RefitSchedule(tol=1e-5, max_epochs=3000))
    assert result.converged and result.epochs < 3000
    assert (guide.z_loc.detach() - loc.detach()).abs().mean() < 0.05
    fitted = torch.exp(2 * guide.z_log_scale.detach()).double()
    assert torch.allclose(fitted, variance.expand_as(fitted), rtol=0.1)
    optimum = model.log_marginal(x).mean().item() - kl
    assert abs(evaluate(model, guide, x, num_samples=2000, psis=False)["elbo"] - optimum) < 0.02


def test_an_evaluations_refit_starts_at_refit_start_and_reaches_the_optimum_at_its_defaults(monkeypatch):
    """An evaluation's fresh per-datum guide starts where ``refit_start`` puts it (loc 0, sd 0.3, not training's
    0.1), and from there the refit at its default tolerance and step size reaches the closed-form optimal mean-field
    Gaussian of pPCA: variances within 10%, ELBO within 0.02 nats of log p(x) - KL."""
    import math
    import zoo.experiments.run as run_module
    from guides.meanfield import MeanField
    model, x = _ppca()
    _, variance, kl = _closed_form(model, x)
    started = {}

    def recording(model, guide, x, *args, **kwargs):
        started["loc"], started["log_scale"] = guide.z_loc.detach().clone(), guide.z_log_scale.detach().clone()
        return refit_local_guide(model, guide, x, *args, **kwargs)

    monkeypatch.setattr(run_module, "refit_local_guide", recording)
    trained = build_guide("meanfield", model, num_data=400)
    from zoo.experiments.config import RunConfig
    cfg = RunConfig(model="ppca", guide="meanfield", objective="elbo", dataset="synthetic")
    run = run_module.Prepared(cfg, None, model, trained, None, torch.device("cpu"))
    guide, result = run_module.evaluation_guide(run, x, progress=False)
    assert torch.equal(started["loc"], torch.zeros_like(started["loc"]))
    assert torch.allclose(started["log_scale"], torch.full_like(started["log_scale"], math.log(0.3)))
    assert MeanField.refit_init_scale == 0.3 and result.converged
    fitted = torch.exp(2 * guide.z_log_scale.detach()).double()
    assert torch.allclose(fitted, variance.expand_as(fitted), rtol=0.1)
    optimum = model.log_marginal(x).mean().item() - kl
    assert abs(evaluate(model, guide, x, num_samples=2000, psis=False)["elbo"] - optimum) < 0.02


def test_refit_start_puts_every_row_at_loc_zero_and_the_refit_scale():
    import math
    from guides.meanfield import MeanField
    model, _ = _ppca(n=10)
    guide = build_guide("meanfield", model, num_data=10)
    with torch.no_grad():
        guide.z_loc.normal_()
        guide.z_log_scale.normal_()
    guide.refit_start()
    assert torch.equal(guide.z_loc, torch.zeros_like(guide.z_loc))
    assert torch.allclose(guide.z_log_scale, torch.full_like(guide.z_log_scale, math.log(MeanField.refit_init_scale)))


def test_the_refits_monitor_draws_the_same_numbers_every_time_and_leaves_the_callers_stream_alone():
    from zoo.training.refit import _Monitor
    model, x = _ppca(n=30)
    guide = build_guide("meanfield", model, num_data=30)
    monitor = _Monitor(model, guide, x, [torch.arange(30)], particles=4)
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    first = monitor()
    assert torch.equal(torch.rand(3), expected)               # the caller's stream goes on as if it had not run
    second = monitor()                                        # after the caller drew: the same numbers again
    assert torch.equal(first, second)
    with torch.no_grad():
        guide.z_loc.add_(0.1)
    assert not torch.equal(monitor(), first)                 # the same numbers, another q: another value


def test_the_refit_monitors_every_second_epoch_and_refuses_a_spacing_that_does_not_divide_its_window():
    model, x = _ppca(n=30)
    guide = build_guide("meanfield", model, num_data=30)
    result = refit_local_guide(model, guide, x, RefitSchedule(max_epochs=15, tol=1e-12))
    assert not result.converged and result.epochs == 15
    assert len(result.monitor) == 1 + 7 + 1 and result.monitor_every == 2     # the start, epochs 2..14, the last
    assert result.to_json()["monitor_every"] == 2
    with pytest.raises(ZooError, match="monitor_every must be a positive divisor of its window"):
        refit_local_guide(model, guide, x, RefitSchedule(max_epochs=5, monitor_every=3))


def test_the_gaps_refit_from_the_encoder_keeps_the_earlier_step_size():
    from zoo.training.refit import REFIT_LR, REFIT_LR_FROM_ENCODER
    model, x = _ppca(n=20)
    guide = build_guide("amortized", model, hidden=(8,))
    gaps = inference_gaps(model, guide, x, num_samples=20, schedule=replace(FROM_ENCODER, max_epochs=4))
    assert gaps["refit"]["lr"] == REFIT_LR_FROM_ENCODER == 0.02 and REFIT_LR == 0.04


def test_ppca_gaps_match_the_closed_form_and_add_up():
    """The approximation gap of a mean-field Gaussian on pPCA is the closed-form KL (0.376 nats here) within
    0.03 nats;
    the amortization gap of a barely trained encoder is positive; log p(x) is the exact one; the
    amortized ELBO agrees with the harness's independent estimate within 4 Monte Carlo se; the gaps
    add up to log p(x) - ELBO[q_amortized]."""
    model, x = _ppca()
    _, _, kl = _closed_form(model, x)
    guide = build_guide("amortized", model, hidden=(16,))
    gaps = inference_gaps(model, guide, x, num_samples=400, schedule=replace(FROM_ENCODER, tol=1e-5, max_epochs=3000))
    assert gaps["log_likelihood_proposal"] == "exact"
    assert gaps["log_likelihood"] == pytest.approx(model.log_marginal(x).mean().item(), abs=1e-4)
    assert gaps["approximation_gap"] == pytest.approx(kl, abs=0.03)
    assert gaps["amortization_gap"] > 3 * gaps["amortization_gap_se"]
    assert gaps["refit"]["converged"]
    assert gaps["approximation_gap"] + gaps["amortization_gap"] == pytest.approx(gaps["total_gap"], abs=1e-9)
    assert gaps["total_gap"] == pytest.approx(gaps["log_likelihood"] - gaps["elbo_amortized"], abs=1e-9)
    harness = evaluate(model, guide, x, num_samples=400, psis=False)
    # two independent estimates from 400 samples per datum each: the harness's has the same Monte Carlo se
    se = 2 ** 0.5 * gaps["elbo_amortized_se"]
    assert abs(harness["elbo"] - gaps["elbo_amortized"]) < 4 * se + 1e-3


def test_gaps_of_a_vampprior_run_keep_the_prior_on_the_trained_encoder(digits):
    """A VampPrior computes with the amortized encoder; q* (per-datum) is built beside it, not bound in its place:
    the prior's density is unchanged by building q*, the refit runs, and both gaps are non-negative within
    4 Monte Carlo se."""
    torch.manual_seed(0)
    model = build_model("vae", digits.x_dim, latent_dim=3, hidden=(16,), prior="vampprior", prior_components=5,
                        activation="gated")
    guide = build_guide("amortized", model)
    fit(model, guide, build_objective("elbo"), digits.train[:200], epochs=3, batch_size=50, lr=1e-2, progress=False)
    z = torch.randn(7, 3)
    before = model.prior().log_prob(z)
    x = digits.test[:30]
    local = local_guide(guide, model, x)
    assert model.guide is guide and torch.equal(model.prior().log_prob(z), before)
    gaps = inference_gaps(model, guide, x, num_samples=100, schedule=replace(FROM_ENCODER, max_epochs=300))
    assert model.guide is guide
    for key in ("approximation_gap", "amortization_gap"):
        assert gaps[key] > -4 * gaps[f"{key}_se"] - 1e-3, (key, gaps[key], gaps[f"{key}_se"])
    assert local.family == "meanfield"


def test_the_exact_guide_has_no_gaps():
    """q = p(z | x): its per-datum family (a full-covariance Gaussian) starts at the optimum, the refit
    leaves it there and stops on its criterion, and both gaps are 0 (within 1e-3 nats)."""
    model, x = _ppca(60)
    gaps = inference_gaps(model, build_guide("exact", model), x, num_samples=50,
                          schedule=replace(FROM_ENCODER, max_epochs=500))
    assert abs(gaps["approximation_gap"]) < 1e-3 and abs(gaps["amortization_gap"]) < 1e-3
    assert gaps["refit"]["converged"] and gaps["refit"]["epochs"] < 500


@pytest.mark.parametrize("family", ["amortized", "iaf"])
def test_the_per_datum_guide_starts_at_the_encoders_output(family, digits):
    """Before the refit q* is q_amortized: the same samples give the same log-weights."""
    model = build_model("vae", digits.x_dim, latent_dim=4, hidden=(16,))
    guide = build_guide(family, model)
    x = digits.test[:20]
    local = local_guide(guide, model, x)
    idx = torch.arange(20)
    pyro.set_rng_seed(3)
    amortized = per_datum_log_weights(model, guide, x, idx=idx, N=20, num_particles=3).log_w
    pyro.set_rng_seed(3)
    per_datum = per_datum_log_weights(model, local, x, idx=idx, N=20, num_particles=3).log_w
    assert torch.allclose(amortized, per_datum, atol=1e-4)


@pytest.mark.parametrize("family", ["amortized", "iaf"])
def test_vae_gaps_are_non_negative_within_monte_carlo_error(family, digits):
    """On a briefly trained VAE both gaps are >= 0 within 3 Monte Carlo se, the IS log p(x) is above
    ELBO[q*], and ELBO[q*] >= ELBO[q_amortized]: the refit only climbs from the encoder's output."""
    model = build_model("vae", digits.x_dim, latent_dim=4, hidden=(32,))
    guide = build_guide(family, model)
    fit(model, guide, build_objective("elbo"), digits.train, epochs=3, batch_size=100, lr=3e-3, progress=False)
    gaps = inference_gaps(model, guide, digits.test[:40], num_samples=100,
                          schedule=replace(FROM_ENCODER, max_epochs=150))
    assert gaps["approximation_gap"] > -3 * gaps["approximation_gap_se"]
    assert gaps["amortization_gap"] > -3 * gaps["amortization_gap_se"]
    assert gaps["total_gap"] > 0


def test_gaps_refuse_guides_without_a_per_datum_family():
    model = build_model("sbn", 8, layers=(3, 2))
    with pytest.raises(ZooError, match="structured"):
        same_family(build_guide("amortized", model, structured=True))
    with pytest.raises(ZooError, match="fitted per datum already"):
        same_family(build_guide("meanfield", model, num_data=5))


TINY = ["--dataset", "digits", "--latent-dim", "2", "--hidden", "16", "--epochs", "1", "--eval-samples", "10",
        "--eval-limit", "30", "--no-progress"]


def test_eval_gaps_writes_the_split_and_prints_it(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "vae", "--guide", "amortized", "--out", str(out)] + TINY) == 0
    capsys.readouterr()
    code = main(["eval", str(out), "--gaps", "--eval-samples", "50", "--eval-limit", "40", "--refit-epochs", "300",
                 "--refit-tol", "1e-3", "--no-progress"])
    stdout, err = capsys.readouterr()
    assert code == 0, err
    assert "approximation gap" in stdout and "amortization gap" in stdout
    gaps = json.loads((out / "gaps.json").read_text())
    assert gaps["num_data"] == 40 and gaps["num_samples"] == 50 and gaps["refit"]["tol"] == 1e-3
    assert (out / "gaps.md").is_file() and (out / "gaps_per_datum.npz").is_file()


@pytest.mark.parametrize("setup, says", [("meanfield", "fitted per datum already"), (None, "no run folder")])
def test_eval_gaps_bad_input_is_one_line_exit_2_and_no_files(tmp_path, capsys, setup, says):
    out = tmp_path / "run"
    if setup:
        assert main(["train", "vae", "--guide", setup, "--out", str(out)] + TINY) == 0
    capsys.readouterr()
    before = sorted(p.name for p in out.iterdir()) if out.exists() else None
    code = main(["eval", str(out), "--gaps", "--no-progress"])
    _, err = capsys.readouterr()
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pyro-zoo: error:") and says in lines[0], err
    assert (sorted(p.name for p in out.iterdir()) if out.exists() else None) == before
