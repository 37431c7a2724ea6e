"""The k-level likelihoods (zoo.core.levels): probabilities that sum to 1, dequantization bounds against exact
enumeration, and bits/dim from the CLI to results.json."""
import itertools
import json
import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from torch.distributions import constraints

from zoo.core.levels import LEVEL_LIKELIHOODS, Dequantized, DiscretizedLogistic, LevelsLikelihood, levels_of

K, D = 4, 2


def all_images(k, d):
    """Every image of d pixels with k levels, [k^d, d]."""
    return torch.tensor(list(itertools.product(range(k), repeat=d)), dtype=torch.float32)


@pytest.mark.parametrize("kind", ["categorical", "dlogistic", "dmol"])
def test_probabilities_sum_to_one_over_all_images(kind):
    """sum over all k^D images of P(x | z) = 1, for random decoder outputs (k = 4, D = 2)."""
    torch.manual_seed(0)
    pixels = LevelsLikelihood(kind, D, K, mixtures=3)
    out = 3 * torch.randn(5, 1, D * pixels.outputs_per_pixel)            # 5 decoders' outputs
    p = pixels(out)
    assert levels_of(p) == K
    total = p.log_prob(all_images(K, D)).exp().sum(-1)                  # [5, 16] -> [5]
    assert torch.allclose(total, torch.ones(5), atol=1e-5)


def test_dequantized_mass_is_the_density_over_the_unit_cube():
    """E_u[exp(log_prob(x))] summed over the k^D images is the density's mass on [0, 1)^D: for a Gaussian,
    prod_i (Phi((1 - mu_i)/s_i) - Phi(-mu_i/s_i)) <= 1 (uniform u: E_u[p((x+u)/k) k^-D] = P(x))."""
    torch.manual_seed(1)
    pixels = LevelsLikelihood("dequant-uniform", D, K)
    pixels.log_scale.data.fill_(math.log(0.4))           # a density that varies little within a cell: MC is exact
    out = torch.tensor([0.3, 0.8])
    p = pixels(out.expand(20000, 1, D))
    with torch.no_grad():
        mass = p.log_prob(all_images(K, D)).exp().mean(0).sum()
    normal = torch.distributions.Normal(out, torch.exp(pixels.log_scale))
    exact = (normal.cdf(torch.ones(D)) - normal.cdf(torch.zeros(D))).prod()
    assert abs(mass.item() - exact.item()) < 0.02 * exact.item()


class PiecewiseConstant(dist.TorchDistribution):
    """A density on [0, 1)^3 constant on each of the k^3 cells: p(y) = h(cell(y)) k^3, so P(x) = h(x) exactly."""

    arg_constraints, support = {}, constraints.independent(constraints.unit_interval, 1)

    def __init__(self, h, k):
        self.h, self.k = h, k
        super().__init__(torch.Size(), torch.Size([3]))

    def log_prob(self, y):
        cell = torch.floor(y * self.k).long().clamp(0, self.k - 1)
        index = (cell[..., 0] * self.k + cell[..., 1]) * self.k + cell[..., 2]
        return torch.log(self.h[index]) + 3 * math.log(self.k)


def test_uniform_dequantization_of_a_piecewise_constant_density_is_exact():
    """On a 3-pixel toy with a piecewise-constant density the uniform bound E_u[log p((x+u)/k)] - D log k has
    no Jensen gap: it equals log P(x) = log h(x), for every u, for all k^3 images."""
    torch.manual_seed(2)
    k = 4
    h = torch.softmax(torch.randn(k ** 3), 0)
    p = Dequantized(PiecewiseConstant(h, k), k)
    x = all_images(k, 3)
    assert torch.allclose(p.log_prob(x), torch.log(h), atol=1e-5)


@pytest.mark.parametrize("kind", ["dequant-uniform", "dequant-flow"])
def test_dequantized_bound_is_below_the_exact_log_probability(kind):
    """For a Gaussian density on a 3-pixel toy, exact log P(x) = sum_i log(Phi(b_i) - Phi(a_i)) over x's cell;
    the dequantization bound E_q[log p - log q] - D log k is below it for every image, and with uniform u the
    IS estimate log E_u[exp(log_prob)] converges to it (this checks the -D log k term; a flow's q, a sigmoid of
    a Gaussian, has 1/q heavy-tailed at the cube's faces, so its finite-sample IS estimate converges slowly)."""
    torch.manual_seed(3)
    k = 4
    pixels = LevelsLikelihood(kind, 3, k)
    pixels.log_scale.data.fill_(math.log(0.4))
    loc = torch.tensor([0.2, 0.5, 0.9])
    x = all_images(k, 3)
    with torch.no_grad():
        draws = pixels(loc.expand(4000, 1, 3)).log_prob(x)                # [4000, 64]
    normal = torch.distributions.Normal(loc, torch.exp(pixels.log_scale.detach()))
    exact = torch.log(normal.cdf((x + 1) / k) - normal.cdf(x / k)).sum(-1)
    bound = draws.mean(0)
    assert (bound < exact).all()
    if kind == "dequant-uniform":
        is_estimate = torch.logsumexp(draws, 0) - math.log(draws.shape[0])
        assert torch.allclose(is_estimate, exact, atol=0.05)


def test_discretized_logistic_edge_bins_reach_to_infinity_and_stay_finite():
    """The first bin holds all mass below its upper edge, the last all above its lower edge; a pixel 1000 scales
    from the mean still has a finite log-probability."""
    p = DiscretizedLogistic(torch.tensor([0.5]), torch.tensor([0.01]), levels=256)
    lo, hi = (p.log_prob(torch.tensor([v])) for v in (0.0, 255.0))
    assert torch.isfinite(lo) and torch.isfinite(hi)
    far = DiscretizedLogistic(torch.tensor([-5.0]), torch.tensor([0.01]), levels=4)
    assert torch.allclose(far.log_prob(torch.tensor([0.0])).exp(), torch.ones(1))
    with pytest.raises(ValueError):
        DiscretizedLogistic(torch.zeros(1), torch.ones(1), 4, validate_args=True).log_prob(torch.tensor([4.0]))


def test_from_pyro_model_with_a_discretized_logistic_reports_bits_per_dim():
    """A user's Pyro model observing x with DiscretizedLogistic(...).to_event(1) has 17 levels (from the
    support), refuses data outside 0..16, and its evaluation carries bits/dim = nats / (D ln 2)."""
    import zoo
    from zoo.core.errors import ZooError
    from zoo.data import load_digits17

    def model(x, idx=None, N=None):
        loc = pyro.param("loc", torch.full((64,), 0.3))
        with pyro.plate("data", N, subsample=idx) as batch:
            z = pyro.sample("z", dist.Normal(torch.zeros(len(batch), 1), 1.0).to_event(1))
            pyro.sample("x", DiscretizedLogistic(loc + 0.1 * z, torch.full((64,), 0.2), 17).to_event(1), obs=x)

    data = load_digits17()
    m = zoo.from_pyro(model, 64)
    assert m.levels == 17 and m.data_levels == 17
    with pytest.raises(ZooError, match="0..16"):
        m.validate_data(data.test / 16.0 + 0.01)
    guide = zoo.build_guide("amortized", m)
    result = zoo.evaluate(m, guide, data.test[:20], num_samples=4)
    assert result["bits_per_dim_nll"] == pytest.approx(result["nll"] / (64 * math.log(2)))


def test_train_digits17_categorical_reports_bits_per_dim(tmp_path, capsys):
    """The done line: pyro-zoo train vae --dataset digits17 --likelihood categorical reports bits/dim."""
    from zoo.cli import main
    out = tmp_path / "run"
    assert main(["train", "vae", "--dataset", "digits17", "--likelihood", "categorical", "--epochs", "1",
                 "--latent-dim", "2", "--hidden", "16", "--eval-samples", "4", "--out", str(out),
                 "--no-progress"]) == 0
    assert "NLL bits/dim" in capsys.readouterr().out
    result = json.loads((out / "results.json").read_text())
    assert result["levels"] == 17
    assert result["bits_per_dim_elbo"] == pytest.approx(-result["elbo"] / (64 * math.log(2)))
    assert "NLL bits/dim" in (out / "results.md").read_text()
    pages = tmp_path / "pages"                            # the leaderboard of your own runs has the column too
    assert main(["report", str(tmp_path), "--out", str(pages)]) == 0
    assert "| NLL bits/dim |" in (pages / "LEADERBOARD.md").read_text()


def test_level_likelihood_on_real_valued_data_is_refused(capsys):
    from zoo.cli import main
    assert main(["train", "vae", "--dataset", "digits-gray", "--likelihood", "dlogistic", "--epochs", "1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "digits17" in err


def test_every_level_likelihood_is_a_choice_of_vae_and_hvae():
    from zoo.core.components import MODELS
    for name in ("vae", "hvae"):
        choices = MODELS[name].options.__dataclass_fields__["likelihood"].metadata["choices"]
        assert set(LEVEL_LIKELIHOODS) <= set(choices)
