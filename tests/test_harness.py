"""The evaluation harness, checked where the answers are known."""
import math

import pyro
import pytest
import torch

from guides import Amortized, Exact, MeanField
from zoo.evaluation.harness import RESULT_KEYS, EvaluationSettings, evaluate, psis_khat
from zoo.core.latents import LatentLayer
from zoo.models import PPCA, VAE


@pytest.fixture
def ml_ppca(synthetic):
    m = PPCA(synthetic.x_dim, latent_dim=2)
    m.set_ml_solution(synthetic.train)
    return m


def test_documented_keys_are_reported(ml_ppca, synthetic):
    r = evaluate(ml_ppca, Exact(ml_ppca), synthetic.test[:20], num_samples=10, iwae_k=5)
    assert set(RESULT_KEYS) <= set(r)


def test_exact_guide_bounds_all_equal_log_marginal(ml_ppca, synthetic):
    """With q = p(z | x) as the proposal every weight is p(x). The defensive mixture's weights,
    p(x) q / ((1 - alpha) q + alpha q_wide), vary but are bounded by p(x) / (1 - alpha): its estimate is
    within 3 of its (small) SEs of the closed form, and the ELBO, from the draws of q alone, is still exact."""
    r = evaluate(ml_ppca, Exact(ml_ppca), synthetic.test, num_samples=50, iwae_k=10, proposal="guide")
    for key in ("elbo", "iwae_bound", "log_likelihood"):
        assert r[key] == pytest.approx(r["exact_log_likelihood"], abs=1e-4)
    assert r["elbo_gap"] == pytest.approx(0.0, abs=1e-4)
    assert r["reconstruction"] - r["kl"] == pytest.approx(r["elbo"], abs=1e-5)
    assert r["psis_khat_max"] < 0.7 and r["psis_warning"] is None
    d = evaluate(ml_ppca, Exact(ml_ppca), synthetic.test, num_samples=50, iwae_k=10)
    assert d["proposal"]["draws_wide"] == 5 and d["log_likelihood_se"] < 0.01
    assert abs(d["log_likelihood"] - d["exact_log_likelihood"]) < 3 * d["log_likelihood_se"]
    assert d["elbo"] == pytest.approx(d["exact_log_likelihood"], abs=1e-4) and d["iwae_k"] == 10


def test_data_standard_error_is_the_spread_of_exact_log_likelihoods(ml_ppca, synthetic):
    """With the exact guide each datum's IS estimate is its exact log p(x), so the data standard
    error must be the sample sd of the closed-form log p(x_n) over sqrt(n); it is what separates
    the averages of two disjoint halves of the data, not the (zero) Monte Carlo error."""
    x = synthetic.test
    r = evaluate(ml_ppca, Exact(ml_ppca), x, num_samples=10, iwae_k=5, psis=False)
    exact = ml_ppca.log_marginal(x).double()
    assert r["log_likelihood_data_se"] == pytest.approx((exact.std() / math.sqrt(x.shape[0])).item(), rel=1e-4)
    assert r["log_likelihood_se"] < 1e-4 < r["log_likelihood_data_se"]
    half = x.shape[0] // 2
    a, b = (evaluate(ml_ppca, Exact(ml_ppca), part, num_samples=10, iwae_k=5, psis=False)
            for part in (x[:half], x[half:2 * half]))
    # the two halves' averages differ by about sqrt(2) data se of a half, not by the Monte Carlo se
    assert abs(a["log_likelihood"] - b["log_likelihood"]) < 4 * math.hypot(a["log_likelihood_data_se"],
                                                                           b["log_likelihood_data_se"])


def test_bounds_are_ordered_for_an_inexact_guide(ml_ppca, synthetic):
    """ELBO <= IWAE-k <= IS log p(x) ~ exact, for a mismatched (prior-like) per-datum guide."""
    g = MeanField(ml_ppca, num_data=synthetic.test.shape[0], init_scale=0.5)
    r = evaluate(ml_ppca, g, synthetic.test, num_samples=400, iwae_k=20)
    assert r["elbo"] < r["iwae_bound"] < r["log_likelihood"] <= r["exact_log_likelihood"] + 3 * r["log_likelihood_se"]
    assert r["elbo_gap"] > 1.0


def test_chunking_does_not_change_the_answer(ml_ppca, synthetic):
    g = Amortized(ml_ppca, hidden=(8,))
    x = synthetic.test[:30]
    pyro.set_rng_seed(0)
    whole = evaluate(ml_ppca, g, x, num_samples=64, iwae_k=8, psis=False, proposal="guide", settings=EvaluationSettings(batch_size=30))
    pyro.set_rng_seed(0)
    chunked = evaluate(ml_ppca, g, x, num_samples=64, iwae_k=8, psis=False, proposal="guide",
                       settings=EvaluationSettings(batch_size=30, max_elements=30 * 6 * 16))
    # different particle chunks consume the RNG differently, so compare to Monte Carlo precision
    assert chunked["log_likelihood"] == pytest.approx(whole["log_likelihood"], abs=0.05)
    assert chunked["num_samples"] == 64


def test_chunking_keeps_the_defensive_allocation(ml_ppca, synthetic):
    """K = 64 in chunks of 16: the last 6 draws come from q_wide although a chunk straddles the boundary, so
    chunked and whole agree within their SEs (here the guide is exact, the weights bounded)."""
    x = synthetic.test[:30]
    whole = evaluate(ml_ppca, Exact(ml_ppca), x, num_samples=64, iwae_k=8, psis=False, settings=EvaluationSettings(batch_size=30))
    chunked = evaluate(ml_ppca, Exact(ml_ppca), x, num_samples=64, iwae_k=8, psis=False,
                       settings=EvaluationSettings(batch_size=30, max_elements=30 * 6 * 16))
    assert chunked["proposal"]["draws_wide"] == whole["proposal"]["draws_wide"] == 6
    assert abs(chunked["log_likelihood"] - whole["log_likelihood"]) < 3 * math.hypot(
        chunked["log_likelihood_se"], whole["log_likelihood_se"])
    assert chunked["elbo"] == pytest.approx(chunked["exact_log_likelihood"], abs=1e-4)


def test_chunks_keep_p_x_given_z_only_for_the_reconstructions(monkeypatch):
    """The harness's draws drop each chunk's p(x | z) (a K x B x D tensor of decoder outputs) once its weights
    are formed, except the first chunk of the one minibatch whose reconstructions it returns; the figures do not
    change."""
    from zoo.evaluation.defensive import DefensiveProposal
    g = torch.Generator().manual_seed(0)
    x = (torch.rand(12, 16, generator=g) < 0.4).float()
    model = VAE(16, LatentLayer(dim=3), hidden=(8,))
    guide = Amortized(model, hidden=(8,))
    idx = torch.arange(12)
    draws = {}
    for keep in (None, 1, 0):
        pyro.set_rng_seed(1)
        draws[keep] = DefensiveProposal().draw(model, guide, x, idx, 12, 40, max_elements=12 * 16 * 8,
                                               keep_observations=keep)
    assert len(draws[0].parts) == 6               # 36 draws of q in chunks of 8, then the 4 of q_wide
    assert [p.x_dist is not None for p in draws[None].parts] == [True] * 6
    assert [p.x_dist is not None for p in draws[1].parts] == [True] + [False] * 5
    assert [p.x_dist is not None for p in draws[0].parts] == [False] * 6
    assert torch.equal(draws[None].log_w, draws[0].log_w) and torch.equal(draws[None].log_w, draws[1].log_w)

    kept = []
    draw = DefensiveProposal.draw
    monkeypatch.setattr(DefensiveProposal, "draw", lambda self, *a, keep_observations=None, **k: (
        kept.append(keep_observations), draw(self, *a, keep_observations=keep_observations, **k))[1])
    results = {}
    for recon in (0, 4):
        pyro.set_rng_seed(2)
        results[recon] = evaluate(model, guide, x, num_samples=40, iwae_k=8, psis=False,
                                  settings=EvaluationSettings(batch_size=6, max_elements=6 * 16 * 8, keep_reconstructions=recon))
    assert kept == [0, 0, 1, 0]                   # two minibatches each; only the first one with reconstructions
    assert results[4]["reconstructions"][1].shape == (4, 16)
    assert torch.equal(results[4]["reconstructions"][0], x[:4])
    for key in ("log_likelihood", "elbo", "iwae_bound"):
        assert results[4][key] == results[0][key]


@pytest.mark.parametrize("structured", [False, True])
def test_an_analytic_mean_shared_by_every_draw_is_taken_once_with_the_same_figures(monkeypatch, structured):
    """Active units read E_q[z | x]. Where the guide's mean is one broadcast view for all K draws (the amortized
    guide) it is taken as it is, not averaged over K rows; where it depends on another draw (z2 of q(z2 | z1, x))
    the rows are averaged. The figures are those of the full computation."""
    import numpy as np
    from zoo.evaluation.estimators import active_units
    from zoo.models import HVAE
    g = torch.Generator().manual_seed(0)
    x = (torch.rand(10, 16, generator=g) < 0.4).float()
    model = HVAE(16, layers=(4, 3), hidden=(8,), transition_hidden=(6,))
    guide = Amortized(model, hidden=(8,), structured=structured)
    taken = []
    shortcut = active_units._mean_over_draws
    monkeypatch.setattr(active_units, "_mean_over_draws",
                        lambda site, *a: taken.append((site.name, shortcut(site, *a) is not None)) or shortcut(site, *a))
    pyro.set_rng_seed(3)
    fast = evaluate(model, guide, x, num_samples=30, iwae_k=5, psis=False, settings=EvaluationSettings(batch_size=5, max_elements=5 * 16 * 8))
    monkeypatch.setattr(active_units, "_mean_over_draws", lambda *a: None)
    pyro.set_rng_seed(3)
    full = evaluate(model, guide, x, num_samples=30, iwae_k=5, psis=False, settings=EvaluationSettings(batch_size=5, max_elements=5 * 16 * 8))
    assert dict(taken) == {"z2": not structured, "z1": True}
    np.testing.assert_allclose(fast["per_datum"]["z_mean"], full["per_datum"]["z_mean"], rtol=1e-6, atol=1e-7)
    assert fast["active_units_per_site"] == full["active_units_per_site"]


def test_active_units_count_the_used_latents(ml_ppca, synthetic):
    """pPCA's two latents both carry signal; a VAE whose decoder ignores z has none active."""
    r = evaluate(ml_ppca, Exact(ml_ppca), synthetic.test, num_samples=20, iwae_k=5)
    assert r["active_units"] == 2 and r["num_latent_units"] == 2
    vae = VAE(16, LatentLayer(dim=4), hidden=(8,))
    g = Amortized(vae, hidden=(8,))
    with torch.no_grad():
        g.heads["z"].weight.zero_()             # q(z | x) no longer depends on x
    r = evaluate(vae, g, (torch.rand(50, 16) < 0.5).float(), num_samples=20, iwae_k=5)
    assert r["active_units"] == 0


def test_psis_flags_a_heavy_tailed_proposal(synthetic):
    """A proposal far narrower than the posterior gives heavy-tailed weights: k-hat > 0.7 is flagged."""
    m = PPCA(synthetic.x_dim, latent_dim=2)
    m.set_ml_solution(synthetic.train)
    g = MeanField(m, num_data=40, init_scale=0.02)
    r = evaluate(m, g, synthetic.test[:40], num_samples=1000, iwae_k=10)
    assert r["psis_khat_frac_over_0_7"] > 0.5 and "unreliable" in r["psis_warning"]


def _psis_cases():
    """Rows of log weights of several shapes: light, heavy and very heavy tails, a scale far below 0, ties, some
    weights 0 (-inf), a row of zero weights, a tail of one repeated weight, and sizes from below PSIS's minimum tail
    up to the K of a test run."""
    import numpy as np
    from zoo.evaluation.estimators.psis import psis_tail_size
    rng = np.random.default_rng(0)
    for K in (10, 25, 100, 1000, 5000):
        for lw in (2.0 * rng.normal(size=(12, K)), np.log(np.abs(rng.standard_t(1.5, size=(12, K)))),
                   np.log1p(rng.pareto(1.2, size=(12, K))), 30.0 * rng.normal(size=(12, K)) - 1000.0,
                   np.round(rng.normal(size=(12, K)), 1)):
            lw[0, :3] = -math.inf
            lw[1] = -math.inf
            # a tail of one repeated weight above a lower cutoff (a padded HMM's masked steps gave this one): at
            # K = 5000 its 112 values put a point of Pyro's Zhang-Stephens grid at b = 0, and the fit divides by zero
            lw[3, :] = math.log1p(-0.9903736732565701)
            lw[3, :min(112, psis_tail_size(K))] = 0.0
            yield lw


def test_psis_khat_is_arvizs_without_importing_it(monkeypatch):
    """psis_khat fits Pyro's generalized Pareto to the tail arviz's psislw chooses: the same k-hat to rounding on
    every row it fits (reason ""), and a reason (k-hat NaN) on every row where arviz gives inf (too short a tail,
    ties, zero weights); and it runs where arviz cannot be imported."""
    import sys
    import warnings
    import arviz as az
    import numpy as np
    cases = list(_psis_cases())
    fitted = 0
    for lw in cases:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            expected = az.psislw(lw.copy())[1]
        khat, reason = psis_khat(lw)
        fit = reason == ""
        np.testing.assert_allclose(khat[fit], expected[fit], rtol=1e-9, atol=1e-12)
        assert (reason[~np.isfinite(expected)] != "").all() and np.isnan(khat[reason != ""]).all()
        fitted += int(fit.sum())
    assert fitted > 150                             # most rows were fitted, not only the refused ones
    monkeypatch.setitem(sys.modules, "arviz", None)  # import arviz raises ImportError
    khat, reason = psis_khat(cases[-2])
    assert np.isfinite(khat[[0, 2] + list(range(4, len(khat)))]).all() and np.isnan(khat[[1, 3]]).all()
    assert reason[1] != "" and reason[3] == "few distinct weights"


@pytest.mark.parametrize("shape", [0.3, 0.5, 0.8])
def test_psis_khat_recovers_the_shape_of_a_pareto_tail(shape):
    """The fit itself against a known answer (which tail it is fitted to is the arviz test's): weights drawn from a
    generalized Pareto distribution of shape k (numpy's Lomax with alpha = 1 / k) have a tail of shape k above every
    threshold, so the mean k-hat over 80 data of K = 5000 weights is k to within 0.05,
    about four of its standard errors (one datum's k-hat spreads 0.08-0.14 here, and the prior towards 0.5 moves
    it by (0.5 - k) 10 / (M + 10), 0.013 at k = 0.8)."""
    import numpy as np
    rng = np.random.default_rng(1)
    khat, reason = psis_khat(np.log(rng.pareto(1.0 / shape, size=(80, 5000))))
    assert (reason == "").all() and abs(khat.mean() - shape) < 0.05


def test_standard_error_matches_the_spread_of_repeated_estimates(ml_ppca, synthetic):
    g = MeanField(ml_ppca, num_data=10, init_scale=0.7)
    x = synthetic.test[:10]
    estimates, ses = [], []
    for seed in range(30):
        pyro.set_rng_seed(seed)
        r = evaluate(ml_ppca, g, x, num_samples=200, iwae_k=10, psis=False)
        estimates.append(r["log_likelihood"])
        ses.append(r["log_likelihood_se"])
    spread = torch.tensor(estimates).std().item()
    assert 0.5 * spread < sum(ses) / len(ses) < 2.0 * spread


def test_harness_is_model_agnostic():
    """The harness module never names a model class."""
    import inspect
    import zoo.evaluation.harness as harness
    source = inspect.getsource(harness)
    for name in ("PPCA", "VAE", "ppca", "vae"):
        assert name not in source


def test_validation_checks_the_first_minibatch_and_is_off_after(ml_ppca, synthetic, monkeypatch):
    """Pyro's checks run for the first minibatch (both strata of the defensive proposal) and not for the later
    ones; the caller's setting is what it was afterwards, and the answer is the one a run without any checks gives
    (the same draws: the checks change nothing but what is raised)."""
    import pyro.infer.util
    import zoo.evaluation.defensive as defensive
    seen, draw = [], defensive.per_datum_log_weights

    def recording(*args, **kwargs):
        seen.append(pyro.infer.util.is_validation_enabled())
        return draw(*args, **kwargs)

    monkeypatch.setattr(defensive, "per_datum_log_weights", recording)
    x = synthetic.test[:30]
    with pyro.validation_enabled(True):
        pyro.set_rng_seed(3)
        fast = evaluate(ml_ppca, Exact(ml_ppca), x, num_samples=20, iwae_k=4, psis=False, settings=EvaluationSettings(batch_size=10))
        assert pyro.infer.util.is_validation_enabled()
    assert seen == [True, True] + [False, False] * 2
    seen.clear()
    with pyro.validation_enabled(False):
        pyro.set_rng_seed(3)
        unchecked = evaluate(ml_ppca, Exact(ml_ppca), x, num_samples=20, iwae_k=4, psis=False, settings=EvaluationSettings(batch_size=10))
    assert seen == [False] * 6
    assert fast["log_likelihood"] == pytest.approx(unchecked["log_likelihood"], abs=1e-6)
