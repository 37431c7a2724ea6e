"""STL, DReG and VIMCO against closed forms and exact enumerations; the gradient diagnostics CLI."""
import itertools
import json
import math

import pyro
import pytest
import torch
from torch.distributions import Bernoulli

from guides import Amortized, MeanField
from zoo.evaluation.gradients import gradient_samples, parameter_groups, toy_gradients
from zoo.models import PPCA, SBN
from zoo.objectives import build_objective


def ppca_with_meanfield(seed=0, n=6):
    torch.manual_seed(seed)
    m = PPCA(x_dim=4, latent_dim=2)
    with torch.no_grad():
        m.W.normal_()
        m.mu.normal_()
        m.log_noise_scale.fill_(math.log(0.7))
    g = MeanField(m, num_data=n, init_scale=0.6)
    with torch.no_grad():
        g.z_loc.normal_(0, 0.5)
        g.z_log_scale.uniform_(-1.0, 0.0)
    x = torch.randn(n, 4)
    return m, g, x


def closed_form_elbo(m, g, x):
    """E_q[log p(x|z)] + E_q[log p(z)] + H[q] for pPCA and a diagonal Gaussian q, in closed form."""
    mean, s2 = g.z_loc, torch.exp(2 * g.z_log_scale)
    sigma2 = torch.exp(2 * m.log_noise_scale)
    D, q = m.W.shape
    resid = x - mean @ m.W.T - m.mu
    expected_sq = resid.pow(2).sum(-1) + (s2 @ m.W.pow(2).T).sum(-1)
    log_lik = -0.5 * D * torch.log(2 * math.pi * sigma2) - 0.5 * expected_sq / sigma2
    log_prior = -0.5 * q * math.log(2 * math.pi) - 0.5 * (mean.pow(2) + s2).sum(-1)
    entropy = (0.5 * torch.log(2 * math.pi * math.e * s2)).sum(-1)
    return (log_lik + log_prior + entropy).sum()


def mean_and_se(name, k, m, g, x, repeats, seed=0):
    groups = parameter_groups(m, g)
    pyro.set_rng_seed(seed)
    samples, _ = gradient_samples(build_objective(name, k), m, g, (x, torch.arange(x.shape[0]), x.shape[0]),
                                  repeats, groups)
    flat = torch.cat([samples["model"], samples["guide"]], 1)
    return flat.mean(0), flat.std(0) / math.sqrt(repeats), samples


def exact_grad(loss, m, g):
    params = list(m.parameters()) + list(g.parameters())
    grads = torch.autograd.grad(loss, params)
    return torch.cat([gr.reshape(-1) for gr in grads])


def within(mean, se, exact, tol=3.0, fraction=0.97):
    z = (mean - exact).abs() / (se + 1e-6 * exact.abs().max())
    return (z < tol).float().mean().item() >= fraction and z.max().item() < 5


@pytest.mark.parametrize("name", ["elbo", "stl", "reinforce"])
@pytest.mark.slow
def test_elbo_estimators_are_unbiased_on_ppca(name):
    """The mean of 2000 estimates matches the closed-form ELBO gradient within 3 standard errors."""
    m, g, x = ppca_with_meanfield()
    exact = exact_grad(-closed_form_elbo(m, g, x), m, g)
    mean, se, _ = mean_and_se(name, 1, m, g, x, 2000 if name != "reinforce" else 8000)
    assert within(mean, se, exact)


@pytest.mark.slow
def test_dreg_and_iwae_agree_in_expectation():
    """Same model-gradient estimator; guide gradients equal in expectation (difference within 3 se)."""
    m, g, x = ppca_with_meanfield(seed=1)
    mean_i, se_i, s_i = mean_and_se("iwae", 5, m, g, x, 3000, seed=1)
    mean_d, se_d, s_d = mean_and_se("dreg", 5, m, g, x, 3000, seed=2)
    z = (mean_i - mean_d).abs() / torch.sqrt(se_i ** 2 + se_d ** 2 + 1e-12)
    assert (z < 3).float().mean() >= 0.97 and z.max() < 5
    # ...and DReG's guide gradient has lower variance than IWAE's
    assert s_d["guide"].var(0).mean() < s_i["guide"].var(0).mean()


def test_stl_guide_gradient_vanishes_at_the_exact_posterior():
    """q = p(z|x) exactly (a pPCA whose posterior is diagonal, represented in the meanfield family):
    STL's guide gradient is 0 for every sample; Trace_ELBO's is not (its score term has variance)."""
    m = PPCA(x_dim=4, latent_dim=2)
    with torch.no_grad():
        m.W.copy_(torch.tensor([[2.0, 0.0], [0.0, 1.0], [0.0, 0.0], [0.0, 0.0]]))     # orthogonal columns
        m.mu.zero_()
        m.log_noise_scale.fill_(math.log(0.5))
    x = torch.randn(5, 4)
    post = m.posterior(x)["z"]
    g = MeanField(m, num_data=5)
    with torch.no_grad():
        g.z_loc.copy_(post.loc)
        g.z_log_scale.copy_(0.5 * torch.log(torch.diagonal(post.covariance_matrix, dim1=-2, dim2=-1)))
    _, _, stl = mean_and_se("stl", 1, m, g, x, 50)
    _, _, elbo = mean_and_se("elbo", 1, m, g, x, 50)
    assert stl["guide"].abs().max() < 1e-4
    assert elbo["guide"].var(0).mean() > 1e-2


def exact_iwae_sbn(m, g, x, K):
    """E over K independent z_k ~ q of log (1/K) sum_k w_k, summed over all 8^K tuples (3 bits, K=2)."""
    zs = torch.tensor(list(itertools.product((0.0, 1.0), repeat=3)))                       # [8, 3]
    _, raw = g.encode(x)
    log_q = Bernoulli(logits=raw["z1"][None]).log_prob(zs[:, None, :]).sum(-1)               # [8, B]
    log_p = Bernoulli(logits=m.prior_logits).log_prob(zs).sum(-1)[:, None] \
        + Bernoulli(logits=m.decoder(zs)[:, None, :]).log_prob(x).sum(-1)                   # [8, B]
    log_w = log_p - log_q
    total = 0.0
    for combo in itertools.product(range(8), repeat=K):
        idx = list(combo)
        weight = log_q[idx].sum(0).exp()
        total = total + (weight * (torch.logsumexp(log_w[idx], 0) - math.log(K))).sum()
    return total


@pytest.mark.slow
def test_vimco_is_unbiased_for_the_exact_iwae_gradient():
    torch.manual_seed(3)
    m = SBN(x_dim=6, layers=(3,))
    with torch.no_grad():
        for p in m.parameters():
            p.normal_()
    g = Amortized(m, hidden=(8,))
    x = (torch.rand(4, 6) < 0.4).float()
    exact = exact_grad(-exact_iwae_sbn(m, g, x, 2), m, g)
    mean, se, _ = mean_and_se("vimco", 2, m, g, x, 4000)
    # Score-function estimates are heavy-tailed, so the standard errors of 4000 draws are themselves
    # noisy: ask 95% of coordinates within 3 se (none beyond 5). With 16000 draws all are within 2.8 se.
    assert within(mean, se, exact, fraction=0.95)


def test_vimco_refuses_one_particle():
    from zoo.core.errors import ZooError
    with pytest.raises(ZooError, match="at least 2 particles"):
        build_objective("vimco", 1)


def test_path_derivative_estimators_refuse_unsupported_guides():
    from zoo.core.errors import ZooError
    from zoo.registry import build_model
    from zoo.rules import check_combination
    with pytest.raises(ZooError, match="guide of Normal sites"):
        check_combination(build_model("vae", 16), "iaf", "stl")
    with pytest.raises(ZooError, match="guide computes with the model.s parameters"):
        check_combination(build_model("ppca", 16), "exact", "dreg")
    with pytest.raises(ZooError, match="reparameterizable"):
        check_combination(build_model("sbn", 16, layers=(3,)), "amortized", "dreg")


def test_lecture_toy():
    """d/dtheta E_{N(theta,1)}[x^2] = 2 theta: both estimators unbiased, REINFORCE far noisier."""
    rows = toy_gradients(theta=1.5, samples=(1, 100), repeats=4000)
    for r in rows:
        assert abs(r["mean"] - r["exact"]) < 3 * r["bias_se"] + 1e-9
    var = {(r["estimator"], r["samples"]): r["variance"] for r in rows}
    assert var[("reinforce", 1)] > 5 * var[("reparameterized", 1)]
    assert var[("reinforce", 100)] == pytest.approx(var[("reinforce", 1)] / 100, rel=0.3)


def test_gradients_cli_writes_table_json_and_plot(tmp_path, capsys):
    from zoo.cli import main
    out = tmp_path / "g"
    code = main(["gradients", "ppca", "--guide", "meanfield", "--objectives", "elbo,stl,iwae,dreg",
                 "--particles", "1,4", "--repeats", "20", "--dataset", "synthetic", "--batch-size", "20",
                 "--out", str(out)])
    stdout, err = capsys.readouterr()
    assert code == 0, err
    result = json.loads((out / "gradients.json").read_text())
    assert {(r["objective"], r["particles"], r["group"]) for r in result["rows"]} >= {("dreg", 4, "guide"), ("stl", 1, "model")}
    assert result["reference"]["model"].startswith("exact")
    assert (out / "gradients.png").is_file() and "| dreg | 4 | guide |" in stdout


def test_snr_ignores_coordinates_whose_gradient_does_not_vary():
    """A saturated coordinate (sd ~ 1e-30, tiny non-zero mean) must not swamp the mean SNR."""
    from zoo.evaluation.gradients import summarize
    g = torch.Generator().manual_seed(0)
    samples = torch.randn(200, 3, generator=g) + torch.tensor([1.0, 0.0, 0.0])
    samples[:, 2] = 1e-20 + 1e-30 * torch.randn(200, generator=g)
    snr = summarize(samples, None)["snr"]
    expected = summarize(samples[:, :2], None)["snr"]
    assert snr == pytest.approx(expected) and snr < 2


def test_snr_median_is_the_middle_coordinate_and_the_mean_is_pulled_by_the_largest():
    """Three coordinates of known SNR (|mean| / sd = 0, 0.5 and 10 to within sampling error): the median reads the
    middle one, the mean is pulled up by the largest."""
    from zoo.evaluation.gradients import summarize
    g = torch.Generator().manual_seed(1)
    noise = torch.randn(20000, 3, generator=g)
    noise = (noise - noise.mean(0)) / noise.std(0)                      # exact mean 0, sd 1 per coordinate
    out = summarize(noise + torch.tensor([0.0, 0.5, 10.0]), None)
    assert out["snr_median"] == pytest.approx(0.5, abs=1e-4)
    assert out["snr"] == pytest.approx(10.5 / 3, abs=1e-4)


def test_dreg_trains_a_constrained_pyro_param_as_iwae_does():
    """DReG's model gradient is the IWAE bound's. A constrained ``pyro.param`` (a positive noise scale) enters the
    trace as transform_to(c) of its leaf, a non-leaf tensor: its gradient must reach the leaf, as backward()
    gives it under iwae, not be set on the non-leaf value and lost."""
    import pyro.distributions as dist
    from torch.distributions import constraints
    from zoo import from_pyro
    from zoo.registry import build_guide

    def noisy(x_dim):
        def model(x, idx=None, N=None):
            sigma = pyro.param("sigma", torch.tensor(0.7), constraint=constraints.positive)
            with pyro.plate("data", N, subsample=idx):
                z = pyro.sample("z", dist.Normal(torch.zeros(2), 1.0).to_event(1))
                pyro.sample("x", dist.Normal(z.sum(-1, keepdim=True).expand(z.shape[:-1] + (x_dim,)), sigma)
                            .to_event(1), obs=x)
        return model

    torch.manual_seed(0)
    x = torch.randn(8, 3)
    m = from_pyro(noisy, 3)
    g = build_guide("amortized", m, num_data=8, hidden=(8,))
    grads = {}
    for name in ("iwae", "dreg"):
        for p in list(m.parameters()) + list(g.parameters()):
            p.grad = None
        pyro.set_rng_seed(3)
        build_objective(name, particles=4).loss_and_grads(m.model, g, x, idx=torch.arange(8), N=8)
        grads[name] = m.params["sigma"].grad
    assert grads["dreg"] is not None and torch.allclose(grads["dreg"], grads["iwae"], rtol=1e-5)
    assert grads["iwae"].abs() > 0
