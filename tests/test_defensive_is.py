"""Standard errors that mean what they say: the defensive proposal, k-hat for bounded weights, data_elbo's SE.

Each case has a closed form, and in each the guide itself is a poor proposal:

- a correlated 2-D Gaussian posterior (z ~ N(0, I), x | z ~ N(z1 + z2, sigma^2), sigma = 0.3: posterior
  correlation -0.92) under its KL-optimal mean-field q, N(m, diag(1 / Lambda_ii)) with m the posterior mean
  and Lambda the posterior precision: q's variance along z1 - z2 is a twelfth of the posterior's;
- a three-component mixture whose q(c | x) gives one state (1% to 95% of the posterior mass on the data
  below) probability 1e-9, so q never draws it;
- a two-state posterior (0.6, 0.4) under q = (0.5, 0.5): two distinct weights;
- the global-latent model of tests/test_globals.py, mu ~ N(0, tau^2 I), z_n ~ N(0, I),
  x_n ~ N(mu + z_n, sigma^2 I), whose data ELBO under a given Gaussian q is a closed form.
"""
import math

import pyro
import pyro.distributions as dist
import pytest
import torch

import zoo
from zoo.core.distributions import JointDiscrete
from zoo.evaluation.defensive import log_mean_weight, widen
from zoo.evaluation.harness import PSIS_MIN_ESS, psis_khat

SIGMA = 0.3
A = torch.tensor([[1.0, 1.0]])
PRECISION = torch.eye(2) + A.T @ A / SIGMA ** 2
COVARIANCE = torch.linalg.inv(PRECISION)


def correlated(x_dim):
    def model(x, idx=None, N=None):
        with pyro.plate("data", N, subsample=idx):
            z = pyro.sample("z", dist.Normal(torch.zeros(2), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(z @ A.T, SIGMA).to_event(1), obs=x)
    return model


def mean_field(x, idx=None, N=None):
    """The KL(q || p)-optimal mean-field Gaussian: the posterior mean, variances 1 / Lambda_ii."""
    mean = (x @ A / SIGMA ** 2) @ COVARIANCE
    with pyro.plate("data", N, subsample=idx):
        pyro.sample("z", dist.Normal(mean, torch.diagonal(PRECISION).rsqrt()).to_event(1))


def correlated_data(n=50):
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, 2, generator=g) @ A.T + SIGMA * torch.randn(n, 1, generator=g)


def errors_in_se(result, exact):
    return (result["log_likelihood"] - exact) / result["log_likelihood_se"]


def test_mean_field_on_a_correlated_posterior_plain_is_many_ses_low_defensive_is_within_three():
    """log p(x) = log N(x; 0, A A^T + sigma^2). With K = 1000 at seed 0 the plain estimate sits 6.6 of its SEs
    below it (0.22 nats per datum), the defensive one 1.8 SEs (0.04 nats)."""
    model, x = zoo.from_pyro(correlated, 1), correlated_data()
    exact = dist.Normal(0.0, math.sqrt(2 + SIGMA ** 2)).log_prob(x).sum(-1).mean().item()
    pyro.set_rng_seed(0)
    plain = zoo.evaluate(model, mean_field, x, num_samples=1000, proposal="guide")
    pyro.set_rng_seed(0)
    defended = zoo.evaluate(model, mean_field, x, num_samples=1000)
    assert errors_in_se(plain, exact) < -5
    assert abs(errors_in_se(defended, exact)) < 3
    assert defended["proposal"]["kind"] == "defensive" and defended["proposal"]["sites_widened"] == {"z": "StudentT"}
    assert plain["proposal"]["kind"] == "guide"
    # the ELBO is q's own: from the 900 draws of q, within Monte Carlo error of the plain run's 1000
    assert defended["elbo"] == pytest.approx(plain["elbo"], abs=0.02)
    assert defended["proposal"]["draws_q"] == 900 and defended["proposal"]["draws_wide"] == 100


def mixture(x_dim):
    def model(x, idx=None, N=None):
        with pyro.plate("data", N, subsample=idx):
            c = pyro.sample("c", dist.Categorical(torch.ones(3) / 3))
            pyro.sample("x", dist.Normal(torch.tensor([-2.0, 0.0, 2.0])[c].unsqueeze(-1), 1.0).to_event(1), obs=x)
    return model


def misses_a_state(x, idx=None, N=None):
    """q(c | x) = (1/2, 1/2, 1e-9): state 2 is never drawn."""
    with pyro.plate("data", N, subsample=idx):
        pyro.sample("c", dist.Categorical(torch.tensor([0.5, 0.5, 1e-9]).expand(x.shape[0], 3)))


def test_a_mixture_whose_q_misses_a_state_plain_is_many_ses_low_defensive_is_within_three():
    """log p(x) = logsumexp_c log (1/3) N(x; mu_c, 1) by enumeration. Plain IS never draws state 2 and estimates
    log p(x, c != 2) instead, 88 of its own SEs low at seed 0 (1.06 nats per datum); the defensive proposal
    gives state 2 probability >= alpha / 3 and lands 0.6 SEs low. The effective sample size cannot see mass
    that q never draws: it is high for the plain estimate too."""
    model = zoo.from_pyro(mixture, 1)
    x = torch.tensor([[-1.0], [0.5], [1.0], [1.5], [2.5]])
    locs = torch.tensor([-2.0, 0.0, 2.0])
    exact = torch.logsumexp(dist.Normal(locs, 1.0).log_prob(x) - math.log(3), -1).mean().item()
    pyro.set_rng_seed(0)
    plain = zoo.evaluate(model, misses_a_state, x, num_samples=1000, proposal="guide")
    pyro.set_rng_seed(0)
    defended = zoo.evaluate(model, misses_a_state, x, num_samples=1000)
    assert errors_in_se(plain, exact) < -20
    assert abs(errors_in_se(defended, exact)) < 3
    assert defended["proposal"]["sites_widened"] == {"c": "Categorical"}
    # few distinct weights: no k-hat, said so, and no "unreliable" warning (the weights are bounded, ESS high)
    assert defended["psis_khat_not_applicable"] == 1.0 and "few distinct weights" in defended["psis_khat_note"]
    assert defended["psis_warning"] is None and defended["is_ess_min"] > PSIS_MIN_ESS


def test_discrete_sites_widen_to_uniform_and_a_point_mass_is_kept():
    q = dist.Categorical(torch.tensor([0.9, 0.1, 0.0]))
    assert torch.allclose(widen(q, 2.0, 5.0).probs, torch.full((3,), 1 / 3))
    assert torch.allclose(widen(dist.Bernoulli(torch.tensor([0.99])), 2.0, None).probs, torch.tensor([0.5]))
    normal = widen(dist.Normal(torch.tensor([1.0]), torch.tensor([0.5])).to_event(1), 2.0, None)
    assert torch.allclose(normal.base_dist.scale, torch.tensor([1.0])) and normal.event_shape == (1,)
    assert widen(dist.Delta(torch.tensor([1.0])), 2.0, 5.0) is None
    bits = widen(JointDiscrete(torch.distributions.Bernoulli(logits=torch.tensor([4.0, -4.0]))), 2.0, 5.0)
    assert torch.allclose(bits.log_prob(torch.tensor([0.0, 1.0])), torch.tensor(2 * math.log(0.5)))


def test_two_distinct_bounded_weights_get_no_k_hat_and_a_reason_where_arviz_says_inf():
    """q = (0.5, 0.5) against the posterior (0.6, 0.4): the weights are 1.2 p(x) and 0.8 p(x). arviz's PSIS
    returns k-hat inf for them; here k-hat is "not applicable" (NaN, with a reason), not a warning, and the
    estimate is within 3 SEs of log p(x)."""
    import warnings

    import arviz as az
    log_w = torch.where(torch.rand(4, 1000, generator=torch.Generator().manual_seed(0)) < 0.5,
                        math.log(1.2), math.log(0.8)).double().numpy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert (az.psislw(log_w)[1] == float("inf")).all()            # what arviz says: inf for every row
    khat, reason = psis_khat(log_w)
    assert torch.isnan(torch.from_numpy(khat)).all() and set(reason) == {"few distinct weights"}

    def two_states(x_dim):
        def model(x, idx=None, N=None):
            with pyro.plate("data", N, subsample=idx):
                c = pyro.sample("c", dist.Bernoulli(0.5))
                pyro.sample("x", dist.Normal(c.unsqueeze(-1), 1.0).to_event(1), obs=x)
        return model

    def even(x, idx=None, N=None):
        with pyro.plate("data", N, subsample=idx):
            pyro.sample("c", dist.Bernoulli(0.5 * torch.ones(x.shape[0])))
    # p(c = 1 | x) = 0.4: x = 1/2 + log(0.4 / 0.6), as N(x; 1, 1) / N(x; 0, 1) = exp(x - 1/2)
    x = torch.full((3, 1), 0.5 + math.log(0.4 / 0.6))
    exact = torch.logsumexp(dist.Normal(torch.tensor([0.0, 1.0]), 1.0).log_prob(x) + math.log(0.5), -1).mean()
    r = zoo.evaluate(zoo.from_pyro(two_states, 1), even, x, num_samples=1000)
    assert r["psis_khat_max"] is None and r["psis_khat_not_applicable"] == 1.0 and r["psis_warning"] is None
    assert abs(errors_in_se(r, exact.item())) < 3


def test_continuous_heavy_weights_keep_their_k_hat():
    """A t-distributed tail of weights (k = 1/2) has a k-hat, near 0.5, and is applicable."""
    log_w = (0.5 * torch.distributions.Exponential(1.0).sample((2, 2000))).double().numpy()   # P(w > t) = t^-2
    khat, reason = psis_khat(log_w)
    assert set(reason) == {""} and ((0.3 < khat) & (khat < 0.7)).all()


def test_the_stratified_standard_error_is_the_spread_of_the_estimate_over_repeats():
    """log_mean_weight's SE against the sd of log mean w over 2000 independent repeats, for 900 draws of one
    log-normal stratum and 100 of another (the defensive allocation at K = 1000): within 5%."""
    g = torch.Generator().manual_seed(0)
    repeats = torch.cat([torch.randn(2000, 900, generator=g) * 0.8, 1.0 + torch.randn(2000, 100, generator=g)], 1)
    estimate, se = log_mean_weight(repeats.T.double(), 900)
    assert se.mean().item() == pytest.approx(estimate.std().item(), rel=0.05)
    # pooled as one stratum, the same draws give a larger (conservative) SE
    assert log_mean_weight(repeats.T.double(), 1000)[1].mean() > 1.05 * se.mean()


TAU, GSIGMA, D = 2.0, 0.5, 3


def shift(x_dim):
    def model(x, idx=None, N=None):
        mu = pyro.sample("mu", dist.Normal(torch.zeros(x_dim), TAU).to_event(1))
        with pyro.plate("data", N, subsample=idx):
            z = pyro.sample("z", dist.Normal(torch.zeros(x_dim), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(mu + z, GSIGMA).to_event(1), obs=x)
    return model


def closed_form_data_elbo(x, m, s, mu_loc, mu_scale):
    """(1/N) E_q[sum_n log p(x_n, z_n | mu) - log q(z_n) + log p(mu) - log q(mu)] for q(z_n) = N(m_n, s_n^2),
    q(mu) = N(mu_loc, mu_scale^2) (mu_scale = 0: a point mass, and log q(mu) is left out)."""
    N = x.shape[0]
    likelihood = (-0.5 * math.log(2 * math.pi * GSIGMA ** 2)
                  - ((x - mu_loc - m) ** 2 + s ** 2 + mu_scale ** 2) / (2 * GSIGMA ** 2)).sum()
    prior_z = (-0.5 * math.log(2 * math.pi) - (m ** 2 + s ** 2) / 2).sum()
    entropy_z = (0.5 * torch.log(2 * math.pi * math.e * s ** 2)).sum()
    prior_mu = (-0.5 * math.log(2 * math.pi * TAU ** 2) - (mu_loc ** 2 + mu_scale ** 2) / (2 * TAU ** 2)).sum()
    entropy_mu = D * 0.5 * math.log(2 * math.pi * math.e * mu_scale ** 2) if mu_scale > 0 else 0.0
    return ((likelihood + prior_z + entropy_z + prior_mu + entropy_mu) / N).item()


@pytest.mark.parametrize("global_guide", ["delta", "normal"])
def test_data_elbo_comes_with_its_se_below_a_hundredth_of_a_nat_and_within_three_of_the_closed_form(global_guide):
    """200 data, a per-datum Gaussian q(z_n) set off the posterior (so each draw varies): data_elbo is within
    3 of its SEs of the closed form, the SE is stated and <= 0.01 nats per datum, and it took more than the
    one pass that left 0.1 nats of error before."""
    g = torch.Generator().manual_seed(0)
    x = TAU * torch.randn(D, generator=g) + math.sqrt(1 + GSIGMA ** 2) * torch.randn(200, D, generator=g)
    model = zoo.from_pyro(shift, D)
    guide = zoo.build_guide("meanfield", model, num_data=200, global_guide=global_guide)
    mu_loc, m = x.mean(0), 0.6 * (x - x.mean(0))           # the posterior given mu: 0.8 (x - mu), sd 0.45
    s = torch.full((200, D), 0.5)
    with torch.no_grad():
        guide.globals.loc["mu"].copy_(mu_loc)
        guide.z_loc.copy_(m)
        guide.z_log_scale.copy_(s.log())
        if global_guide == "normal":
            guide.globals.scale["mu"].fill_(math.log(math.expm1(0.05)))
    mu_scale = 0.0 if global_guide == "delta" else 0.05 + 1e-5
    exact = closed_form_data_elbo(x, m, s, mu_loc, mu_scale)
    pyro.set_rng_seed(0)
    r = zoo.evaluate(model, guide, x, num_samples=10, iwae_k=5)
    assert r["data_elbo_se"] <= 0.01 and r["data_elbo_target_se"] == 0.01
    assert r["data_elbo_samples"] > 10
    assert abs(r["data_elbo"] - exact) < 3 * r["data_elbo_se"]


def test_a_run_records_its_proposal_and_eval_can_name_the_guide_instead(tmp_path):
    """results.json says which proposal made log p(x): the defensive one by default, the guide itself after
    `eval --eval-proposal guide --force` (another proposal replaces the evaluation only with --force)."""
    import json

    from zoo.experiments.config import RunConfig
    from zoo.experiments.run import evaluate_run, train_run
    from zoo.experiments.trained import Invocation
    config = RunConfig.make(model="vae", guide="amortized", objective="elbo", dataset="digits", latent_dim=2,
                            hidden=[16], epochs=1, batch_size=100, eval_samples=40, eval_limit=20, seed=3)
    first = train_run(config, tmp_path / "run", progress=False)
    assert first["proposal"]["kind"] == "defensive" and first["proposal"]["draws_wide"] == 4
    from zoo.core.errors import ZooError
    with pytest.raises(ZooError, match="eval_proposal guide, not defensive"):   # another proposal: not silently
        evaluate_run(tmp_path / "run", Invocation({"eval_proposal": "guide"}, progress=False))
    again = evaluate_run(tmp_path / "run", Invocation({"eval_proposal": "guide"}, progress=False, force=True))
    stored = json.loads((tmp_path / "run" / "results.json").read_text())
    assert stored["proposal"]["kind"] == again["proposal"]["kind"] == "guide"
    assert stored["config"]["eval_proposal"] == "guide" and stored["proposal"]["draws_q"] == 40


# a scANVI-shaped model (Xu et al. 2021): a cell-type label y beside continuous latents u and z. Linear-Gaussian,
# so log p(x) = log sum_y p(y) N(x; W m_y, 1.25 W W^T + s^2 I) is exact.
LABEL_MEANS = torch.tensor([[2.0, 0.0], [-2.0, 0.0], [0.0, 2.5]])
LOADINGS = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [1.0, -1.0]])
NOISE = 0.5


def scanvi_shaped(label: str):
    def model(x, idx=None, N=None):
        with pyro.plate("data", N, subsample=idx):
            if label == "one_hot":
                y = pyro.sample("y", dist.OneHotCategorical(logits=torch.zeros(3)))
                mean = y @ LABEL_MEANS
            else:
                y = pyro.sample("y", dist.Categorical(logits=torch.zeros(3)))
                mean = LABEL_MEANS[y]
            u = pyro.sample("u", dist.Normal(mean, 1.0).to_event(1))
            z = pyro.sample("z", dist.Normal(u, 0.5).to_event(1))
            pyro.sample("x", dist.Normal(z @ LOADINGS.T, NOISE).to_event(1), obs=x)
    return model


def scanvi_log_marginal(x):
    cov = 1.25 * LOADINGS @ LOADINGS.T + NOISE ** 2 * torch.eye(4)
    per_label = torch.stack([dist.MultivariateNormal(LOADINGS @ m, cov).log_prob(x) for m in LABEL_MEANS], -1)
    return torch.logsumexp(per_label, -1) - math.log(3)


@pytest.mark.parametrize("label", ["one_hot", "index"])
def test_a_label_beside_continuous_latents_is_scored_by_both_proposals_within_four_se_of_the_exact(label):
    """The defensive proposal widens the label to uniform and the Gaussians' scales: it scores the model (issue 49
    reported a crash there) and, like the guide alone, lands within four SEs (or 0.03 nats) of log p(x)."""
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    y = torch.randint(3, (400,))
    x = (LABEL_MEANS[y] + 1.25 ** 0.5 * torch.randn(400, 2)) @ LOADINGS.T + NOISE * torch.randn(400, 4)
    model = zoo.from_pyro(scanvi_shaped(label), 4)
    guide = zoo.build_guide("amortized", model)
    zoo.fit(model, guide, zoo.build_objective("elbo"), x, epochs=30, batch_size=50, lr=1e-2, progress=False)
    exact = scanvi_log_marginal(x[:50]).mean().item()
    for proposal in ("defensive", "guide"):
        pyro.set_rng_seed(1)
        r = zoo.evaluate(model, guide, x[:50], num_samples=2000, iwae_k=10, proposal=proposal)
        error = r["log_likelihood"] - exact
        assert math.isfinite(r["log_likelihood"]) and error < 0.03 + 4 * r["log_likelihood_se"], (proposal, error)
        assert abs(error) < max(0.03, 4 * r["log_likelihood_se"]), (proposal, error, r["log_likelihood_se"])


def test_a_draw_that_q_gives_no_density_keeps_a_finite_weight():
    """q_wide's log-density is q's with each widened site's term swapped for q_wide's: where q gives a draw of
    q_wide no density (log q_s = -inf: a Power Spherical at the antipode of its mean) it is q_wide's term alone,
    not -inf - (-inf) = NaN, so the defensive weight log p - log((1 - a) q + a q_wide) stays finite."""
    from types import SimpleNamespace
    from zoo.evaluation.defensive import _swap_sites
    inf = float("inf")
    lw = SimpleNamespace(site_log_q={"z": torch.tensor([-inf, -1.0]), "y": torch.tensor([-0.5, -0.25])},
                         log_q=torch.tensor([-inf, -1.25]))
    swapped = _swap_sites(lw, {"z": torch.tensor([-2.0, -3.0])})
    assert torch.equal(swapped, torch.tensor([-2.5, -3.25]))


def test_the_student_t_with_one_df_scores_as_torchs_student_t_after_expand():
    from zoo.evaluation.defensive import StudentT
    torch.manual_seed(0)
    loc, scale = torch.randn(4, 3, dtype=torch.float64), torch.rand(4, 3, dtype=torch.float64) + 0.1
    for df in (1.0, 5.0, 30.0):
        ours = StudentT(df, loc, scale).expand((7, 4, 3))
        assert isinstance(ours, StudentT) and ours._df == df
        value = ours.sample()
        assert torch.allclose(ours.log_prob(value), dist.StudentT(df, loc, scale).log_prob(value), atol=1e-12)
    assert widen(dist.Normal(loc, scale), 2.0, 5.0).__class__ is StudentT
