"""Reference Pyro models against independent computations (benchmarks/reference_checks.py, by hand).

GMM (Pyro's tutorial): at the trained theta_hat the K assignments summed by hand give log p(x_n | theta_hat),
which the harness's IS estimate and its enumeration must meet. Bayesian regression (Pyro's tutorial,
sigma a pyro.param): the evidence log N(y; 0, sigma^2 I + F_1 Sigma_0 F_1^T) bounds the data-set ELBO, which
for the mean-field Normal q(w, b) equals evidence - KL(q || p(w, b | y)) exactly (both Gaussian); with no
local latents the per-datum log p(y_n | f_n, theta_hat) is log N(y_n; f_n . w_hat + b_hat, sigma^2).
Each also through the command line, where the test-time refit of a per-datum guide must keep q(theta).
"""
import json
import math
import sys
from pathlib import Path

import pyro
import pytest
import torch

import zoo
from zoo.evaluation.harness import EvaluationSettings
from zoo.cli import main

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from reference_checks import (gmm_check, gmm_log_likelihood, regression_check, regression_evidence,  # noqa: E402
                              trained_run)

MODELS = ROOT / "benchmarks" / "pyro_models"
GMM = f"{MODELS / 'gmm.py'}:gmm"
REGRESSION = f"{MODELS / 'bayesian_regression.py'}:bayesian_regression"
TINY = ["--eval-samples", "50", "--iwae-k", "5", "--no-progress", "--seed", "0", "--refit-epochs", "30"]


def load(spec):
    import runpy
    path, name = spec.rsplit(":", 1)
    return runpy.run_path(path)[name]


def clusters(n=90, seed=0):
    g = torch.Generator().manual_seed(seed)
    centres = torch.tensor([[-4.0, 0.0], [0.0, 4.0], [4.0, 0.0]])
    return centres[torch.arange(n) % 3] + 0.7 * torch.randn(n, 2, generator=g)


def regression_data(n=80, p=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    f = torch.randn(n, p, generator=g)
    y = f @ torch.linspace(-1.0, 1.5, p) + 2.0 + 0.5 * torch.randn(n, generator=g)
    return torch.cat([f, y.unsqueeze(1)], dim=1)


def test_the_gmm_sums_its_assignments_by_hand():
    """The by-hand sum itself, on a case with an obvious answer: one component of weight 1 is a Gaussian."""
    x = torch.randn(5, 2)
    one = gmm_log_likelihood(x, torch.tensor([1.0 - 1e-12, 1e-12]), torch.tensor(2.0), torch.zeros(2, 2))
    torch.testing.assert_close(one, torch.distributions.Normal(0.0, 2.0).log_prob(x.double()).sum(-1))


@pytest.mark.parametrize("global_guide", ["normal", "delta"])
def test_gmm_log_likelihood_at_theta_hat_is_the_sum_over_assignments(global_guide):
    """At the trained theta_hat: the harness's enumeration equals the hand sum to 1e-4 and its IS estimate
    lies below it (a stochastic lower bound; the trained guide's q(assignment | x) is near one-hot, so
    importance sampling misses the other components' mass). A per-datum proposal set by hand to the exact
    posterior p(assignment_n | x_n, theta_hat) makes every weight p(x_n | theta_hat): IS and ELBO equal the hand
    sum to 1e-4; a uniform proposal (200 samples of 3 values) meets it within 4 se + 0.01."""
    x = clusters()
    model = zoo.from_pyro(load(GMM), 2)
    pyro.set_rng_seed(0)
    guide = zoo.build_guide("amortized", model, num_data=x.shape[0], global_guide=global_guide)
    zoo.fit(model, guide, zoo.build_objective("elbo"), x, epochs=30, batch_size=30, lr=3e-2, progress=False)
    r = zoo.evaluate(model, guide, x, num_samples=200, iwae_k=5, settings=EvaluationSettings(global_samples=5))
    check = gmm_check(model, guide, x, r)
    assert r["global_guide"] == global_guide
    assert r["exact_log_likelihood"] == pytest.approx(check["log_likelihood_by_hand"], abs=1e-4)
    assert check["log_likelihood_difference"] < 4 * r["log_likelihood_se"] + 1e-5

    theta = guide.globals.point_estimate()
    log_joint = (theta["weights"].log() + torch.distributions.Normal(theta["locs"], theta["scale"])
                 .log_prob(x.unsqueeze(1)).sum(-1))                                     # [n, K] by hand
    proposal = zoo.build_guide("meanfield", model, num_data=x.shape[0], global_guide=global_guide)
    proposal.adopt_globals(guide)
    for logits, exact in ((log_joint - log_joint.logsumexp(-1, keepdim=True), True), (torch.zeros_like(log_joint), False)):
        with torch.no_grad():
            proposal.assignment_logits.copy_(logits)
        r = zoo.evaluate(model, proposal, x, num_samples=200, iwae_k=5, settings=EvaluationSettings(global_samples=5),
                         proposal="guide" if exact else "defensive")         # the exact posterior's weights are p(x)
        difference = r["log_likelihood"] - check["log_likelihood_by_hand"]
        if exact:
            assert abs(difference) < 1e-4 and abs(r["elbo"] - check["log_likelihood_by_hand"]) < 1e-4
        else:
            assert abs(difference) < 4 * r["log_likelihood_se"] + 0.01 and r["log_likelihood_se"] > 0


def test_regression_data_elbo_is_the_evidence_less_the_closed_form_kl():
    """data_elbo * N <= evidence; = evidence - KL(q || posterior) within 4 Monte Carlo se (400 draws of (w, b));
    the per-datum log p(y_n | f_n, theta_hat) is the Gaussian density by hand to 1e-4."""
    x = regression_data()
    model = zoo.from_pyro(load(REGRESSION), x.shape[1])
    assert model.covariates == (0, 1, 2, 3) and model.latents == ()
    pyro.set_rng_seed(0)
    guide = zoo.build_guide("meanfield", model, num_data=x.shape[0])
    zoo.fit(model, guide, zoo.build_objective("elbo"), x, epochs=150, batch_size=40, lr=1e-1, progress=False)
    pyro.set_rng_seed(1)
    r = zoo.evaluate(model, guide, x, num_samples=3, iwae_k=2, settings=EvaluationSettings(global_samples=400))
    check = regression_check(model, guide, x, r)
    assert check["bound_holds"] and check["kl"] > 0
    assert abs(check["elbo_difference"]) < 4 * check["elbo_mc_se"], check
    assert abs(check["log_likelihood_difference"]) < 1e-4
    # trained towards the optimum: the KL is small against the evidence (type-II ML moved sigma from 1 toward 0.5)
    assert check["kl"] < 15 and 0.35 < check["sigma"] < 0.7


def test_regression_evidence_by_hand_matches_a_sum_over_the_prior():
    """The closed-form evidence against a plain Monte Carlo average of p(y | w, b) over the prior (tiny N,
    so the average converges): a check of the checker."""
    x = regression_data(n=4, p=2, seed=1)
    g = torch.Generator().manual_seed(0)
    beta = torch.randn(400000, 3, generator=g, dtype=torch.float64) * torch.tensor([1.0, 1.0, 10.0], dtype=torch.float64)
    f1 = torch.cat([x[:, :-1].double(), torch.ones(4, 1, dtype=torch.float64)], dim=1)
    log_lik = torch.distributions.Normal(beta @ f1.T, 1.5).log_prob(x[:, -1].double()).sum(-1)
    assert regression_evidence(x, 1.5) == pytest.approx((torch.logsumexp(log_lik, 0) - math.log(400000)).item(),
                                                        abs=0.05)


def _train(tmp_path, capsys, spec, *args):
    out = tmp_path / "run"
    code = main(["train", spec, "--out", str(out), *args, *TINY])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return out, json.loads((out / "results.json").read_text())


def test_gmm_through_the_cli_with_a_refit_per_datum_guide(tmp_path, capsys):
    """pyro-zoo train gmm --guide meanfield: the refit to the test data keeps q(theta), so the harness's figures
    are those at the checkpoint's theta_hat (a refit that moved theta would miss the hand sum)."""
    out, r = _train(tmp_path, capsys, GMM, "--guide", "meanfield", "--objective", "elbo", "--dataset",
                    "digits-gray", "--epochs", "1", "--eval-limit", "30")
    model, guide, x = trained_run(out, GMM)
    check = gmm_check(model, guide, x, r)
    assert r["exact_log_likelihood"] == pytest.approx(check["log_likelihood_by_hand"], abs=1e-3)
    assert abs(check["log_likelihood_difference"]) < 4 * r["log_likelihood_se"] + 0.01


def test_regression_through_the_cli(tmp_path, capsys):
    out, r = _train(tmp_path, capsys, REGRESSION, "--guide", "meanfield", "--objective", "elbo", "--dataset",
                    "synthetic", "--epochs", "1", "--eval-limit", "60")
    assert "refit" not in r                          # no local latents: nothing per datum to refit
    model, guide, x = trained_run(out, REGRESSION)
    assert x.shape[0] == 60
    check = regression_check(model, guide, x, r)
    assert check["bound_holds"] and abs(check["log_likelihood_difference"]) < 1e-4
    assert abs(check["elbo_difference"]) < 4 * check["elbo_mc_se"], check


@pytest.mark.parametrize("spec, args, says", [
    (GMM, ["--guide", "exact"], "'exact' guide has no global part"),
    (REGRESSION, ["--guide", "relaxed"], "relaxes discrete latents"),
    (GMM, ["--guide", "amortized", "--objective", "iwae"], "reparameter"),
    (GMM, ["--guide", "amortized", "--objective", "rws"], "no wake update for a guide of global latents"),
])
def test_a_guide_or_objective_that_does_not_fit_is_one_line(tmp_path, capsys, spec, args, says):
    out = tmp_path / "run"
    code = main(["train", spec, "--dataset", "digits-gray" if spec == GMM else "synthetic", "--epochs", "1",
                 "--out", str(out), *args])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("pyro-zoo: error:") and says in err[0], err
    assert not out.exists()
