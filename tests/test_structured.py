"""Structured latents: declared parents, bottom-up structured guides, and declared module sharing.

The mathematics checked:
- a structured guide q(z1 | x) q(z2 | z1, x) on a two-layer sigmoid belief net gets closer to the
  exact log p(x) (enumerated) than the mean-field q(z1 | x) q(z2 | x) at the same budget, with the
  model held fixed, so the difference is KL(q || p(z | x)) alone;
- on a linear-Gaussian chain z2 -> z1 -> x, where the exact posterior is a correlated Gaussian,
  mean-field cannot go below the closed-form gap -1/2 log(1 - rho^2) and the structured guide
  (amortized and IAF) goes well below it;
- a model that borrows its guide (a VampPrior-like prior q(z | u)) owns no guide parameter,
  trains them through its prior, and is refused by dreg from its declaration.
"""
import math
import sys
from pathlib import Path

import pyro
import pyro.distributions as dist
import pytest
import torch
from torch import nn

import zoo
from guides import Amortized
from guides.base import site_distribution
from zoo.core.contract import LatentSite, ZooModel, children_of, posterior_order
from zoo.core.distributions import IndependentBernoulli
from zoo.core.errors import ZooError
from zoo.core.params import register_module
from zoo.core.plates import data_plate
from zoo.models import SBN
from zoo.objectives.enum import EnumELBO
from zoo.registry import build_guide
from zoo.rules import check_combination


def test_sbn_declares_each_layer_conditioned_on_the_one_above():
    sites = SBN(x_dim=6, layers=(4, 3, 2)).latents
    assert [(s.name, s.parents) for s in sites] == [("z3", ()), ("z2", ("z3",)), ("z1", ("z2",))]
    assert [c.name for c in children_of(sites[0], sites)] == ["z2"]


def test_structured_heads_read_the_children_and_mean_field_heads_do_not():
    model = SBN(x_dim=6, layers=(4, 3))
    mf, st = Amortized(model, hidden=(8,)), Amortized(model, hidden=(8,), structured=True)
    assert [s.name for s in mf.order] == ["z2", "z1"] and [s.name for s in st.order] == ["z1", "z2"]
    assert st.context_size(model.latents[0]) == 8 + 4 and st.context_size(model.latents[1]) == 8
    x = torch.bernoulli(torch.full((5, 6), 0.5))
    trace = pyro.poutine.trace(st).get_trace(x)
    z1 = trace.nodes["z1"]["value"]
    # q(z2 | z1, x): other z1 values change z2's logits, with x fixed
    with pyro.poutine.condition(data={"z1": 1 - z1}):
        other = pyro.poutine.trace(st).get_trace(x)
    assert not torch.allclose(trace.nodes["z2"]["fn"].base.logits, other.nodes["z2"]["fn"].base.logits)


def _enumerated_elbo(model, guide, x):
    return -EnumELBO().loss(model, guide, x) / x.shape[0]


@pytest.mark.slow
def test_structured_guide_on_a_two_layer_sbn_is_closer_to_the_exact_log_likelihood():
    """Model fixed (strongly coupled random weights), guide trained by the exact enumerated ELBO
    gradient: the structured guide's ELBO is closer to the enumerated log p(x) than mean-field's."""
    torch.manual_seed(0)
    model = SBN(x_dim=8, layers=(3, 3))
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 3.0)
    for p in model.parameters():
        p.requires_grad_(False)
    x = model.sample(64, mean=False)
    log_px = model.log_marginal(x).mean().item()
    gaps = {}
    for structured in (False, True):
        torch.manual_seed(1)
        guide = Amortized(model, hidden=(32,), structured=structured)
        zoo.fit(model, guide, EnumELBO(), x, epochs=300, batch_size=64, lr=1e-2, progress=False, guide_only=True)
        guide.eval()
        gaps[structured] = log_px - _enumerated_elbo(model, guide, x)
    assert gaps[True] > -1e-4 and gaps[False] > -1e-4          # ELBOs are lower bounds
    assert gaps[True] < 0.7 * gaps[False], gaps


class LinearGaussianChain(ZooModel):
    """z2 ~ N(0, 1), z1 | z2 ~ N(a z2, s^2), x | z1 ~ N(w z1, sigma^2 I): exact log p(x) in closed form."""

    def __init__(self, x_dim=4, a=3.0, s=0.3, sigma=1.5):
        super().__init__(x_dim)
        self.a, self.s, self.sigma = a, s, sigma
        self.register_buffer("w", torch.linspace(0.5, 1.5, x_dim))

    @property
    def latents(self):
        return (LatentSite("z2", (1,)), LatentSite("z1", (1,), parents=("z2",)))

    def model(self, x=None, idx=None, N=None):
        with data_plate(x, idx, N, device=self.w.device):
            z2 = pyro.sample("z2", dist.Normal(torch.zeros(1, device=self.w.device), 1.0).to_event(1))
            z1 = pyro.sample("z1", dist.Normal(self.a * z2, self.s).to_event(1))
            pyro.sample("x", dist.Normal(z1 * self.w, self.sigma).to_event(1), obs=x)

    def log_marginal(self, x):
        var_z1 = self.a ** 2 + self.s ** 2
        cov = var_z1 * torch.outer(self.w, self.w) + self.sigma ** 2 * torch.eye(self.x_dim)
        return dist.MultivariateNormal(torch.zeros(self.x_dim), cov).log_prob(x)


@pytest.mark.slow
def test_linear_gaussian_chain_structured_guides_beat_the_mean_field_limit():
    """p(z1, z2 | x) has correlation rho between z1 and z2; any mean-field q pays at least
    -1/2 log(1 - rho^2) nats per datum. The structured amortized and IAF guides go well below."""
    torch.manual_seed(0)
    model = LinearGaussianChain()
    x = model.sample(256, mean=False)
    log_px = model.log_marginal(x).mean().item()
    # posterior covariance of (z2, z1): prior precision plus the likelihood's on z1
    a, s, sigma, w = model.a, model.s, model.sigma, model.w
    prior_cov = torch.tensor([[1.0, a], [a, a * a + s * s]])
    post_prec = torch.linalg.inv(prior_cov) + torch.tensor([[0.0, 0.0], [0.0, float(w @ w) / sigma ** 2]])
    post_cov = torch.linalg.inv(post_prec)
    rho2 = float(post_cov[0, 1] ** 2 / (post_cov[0, 0] * post_cov[1, 1]))
    mean_field_floor = -0.5 * math.log(1 - rho2)
    assert mean_field_floor > 0.4                      # the test needs a strongly correlated posterior
    objective = zoo.build_objective("elbo", particles=8)
    gaps = {}
    for name, options in (("amortized", {}), ("amortized", {"structured": True}), ("iaf", {"structured": True})):
        pyro.set_rng_seed(1)
        guide = build_guide(name, model, hidden=(32,), **options)
        zoo.fit(model, guide, objective, x, epochs=150, batch_size=64, lr=1e-2, progress=False)
        guide.eval()
        result = zoo.evaluate(model, guide, x, num_samples=10, iwae_k=1)
        gaps[(name, bool(options))] = log_px - result["elbo"]
    assert gaps[("amortized", False)] > mean_field_floor - 0.1, gaps
    assert gaps[("amortized", True)] < 0.5 * mean_field_floor, gaps
    assert gaps[("iaf", True)] < 0.5 * mean_field_floor, gaps


class BorrowingPrior(ZooModel):
    """A VampPrior-like toy: p(z) = 1/K sum_k q(z | u_k), the guide's posterior at K learned pseudo-inputs."""

    likelihood = "bernoulli"
    borrows_guide = True

    def __init__(self, x_dim, latent_dim=2, K=3):
        super().__init__(x_dim)
        self.pseudo_inputs = nn.Parameter(torch.rand(K, x_dim))
        self.decoder = nn.Linear(latent_dim, x_dim)
        self.site = LatentSite("z", (latent_dim,))

    @property
    def latents(self):
        return (self.site,)

    def check_guide(self, guide):
        if not hasattr(guide, "encode"):
            raise ZooError(f"this prior needs an amortized encoder, which the {guide.family!r} guide has not")

    def model(self, x=None, idx=None, N=None):
        register_module("toy", self)
        register_module("encoder", self.guide)
        _, raw = self.guide.encode(self.pseudo_inputs)
        components = site_distribution(self.site, raw["z"])            # batch [K], event [latent_dim]
        K = self.pseudo_inputs.shape[0]
        prior = dist.MixtureSameFamily(dist.Categorical(logits=torch.zeros(K)), components)
        with data_plate(x, idx, N):
            z = pyro.sample("z", prior)
            pyro.sample("x", IndependentBernoulli(self.decoder(z)), obs=x)


def test_a_model_that_borrows_its_guide_owns_none_of_its_parameters_and_trains_them():
    model = BorrowingPrior(x_dim=6)
    with pytest.raises(ZooError, match="none is bound"):
        model.guide  # noqa: B018 (reading the property is what raises)
    guide = build_guide("amortized", model, hidden=(8,))
    assert model.guide is guide
    model_ids = {id(p) for p in model.parameters()}
    assert not model_ids & {id(p) for p in guide.parameters()}
    assert not any(k.startswith("_guide") or "trunk" in k for k in model.state_dict())
    x = torch.bernoulli(torch.full((20, 6), 0.5))
    trace = pyro.poutine.trace(model.model).get_trace(x)
    assert any(n.startswith("encoder$$$") for n, s in trace.nodes.items() if s["type"] == "param")
    # the prior's gradient reaches the guide's encoder through the borrowed module
    loss = -trace.log_prob_sum()
    loss.backward()
    assert guide.trunk[0].weight.grad is not None and guide.trunk[0].weight.grad.abs().sum() > 0
    before = [p.detach().clone() for p in guide.parameters()]
    zoo.fit(model, guide, zoo.build_objective("elbo"), x, epochs=2, batch_size=10, lr=1e-2, progress=False)
    assert any(not torch.equal(b, p) for b, p in zip(before, guide.parameters()))


def test_sharing_is_declared_and_refused_where_it_breaks_an_estimator():
    model = BorrowingPrior(x_dim=6)
    with pytest.raises(ZooError, match="computes with its guide's parameters"):
        check_combination(model, "amortized", "dreg")
    check_combination(model, "amortized", "iwae")
    with pytest.raises(ZooError, match="amortized encoder"):
        build_guide("meanfield", model, num_data=10)
    ppca = zoo.build_model("ppca", 5, latent_dim=2)
    with pytest.raises(ZooError, match="guide computes with the model's parameters"):
        check_combination(ppca, "exact", "dreg")
    exact = build_guide("exact", ppca)
    assert not list(exact.parameters()) and "_oracle" not in dict(exact.named_modules())


@pytest.mark.parametrize("objective", ["elbo", "tracegraph", "enum", "rws", "rloo", "vimco"])
def test_structured_guide_trains_on_a_two_layer_sbn_with_every_discrete_objective(objective):
    torch.manual_seed(0)
    model = SBN(x_dim=6, layers=(3, 2))
    options = {"baseline": "neural"} if objective == "tracegraph" else {}
    guide = build_guide("amortized", model, hidden=(8,), structured=True, **options)
    x = torch.bernoulli(torch.full((20, 6), 0.5))
    history = zoo.fit(model, guide, zoo.build_objective(objective, particles=2 if objective in ("rloo", "vimco") else
                                                       None), x, epochs=2, batch_size=10, lr=1e-2, progress=False)
    assert all(math.isfinite(row["loss"]) for row in history)


def test_structured_relaxed_guide_reads_hard_children_when_evaluating():
    torch.manual_seed(0)
    model = SBN(x_dim=6, layers=(3, 2))
    guide = build_guide("relaxed", model, hidden=(8,), structured=True, temperature=0.5)
    x = torch.bernoulli(torch.full((20, 6), 0.5))
    zoo.fit(model, guide, zoo.build_objective("elbo"), x, epochs=2, batch_size=10, lr=1e-2, progress=False)
    guide.eval()
    trace = pyro.poutine.trace(guide).get_trace(x)
    assert set(trace.nodes["z1"]["value"].unique().tolist()) <= {0.0, 1.0}
    result = zoo.evaluate(model, guide, x, num_samples=20, iwae_k=5)
    assert result["elbo"] <= result["exact_log_likelihood"] + 1e-4


def test_analytic_kl_is_refused_for_a_structured_guide():
    """TraceMeanField_ELBO's per-site closed-form KL(q(z1|x) || p(z1|z2)) holds z2 fixed while z2 was
    drawn given z1: biased for q(z2 | z1, x). The registry refuses the pair, and mean-field is fine."""
    model = SBN(x_dim=6, layers=(3, 2))
    with pytest.raises(ZooError, match="biased for a structured guide"):
        check_combination(model, "relaxed", "tracemeanfield", guide_options={"structured": True})
    with pytest.raises(ZooError, match="biased for a structured guide"):
        check_combination(model, "relaxed", "elbo", guide_options={"structured": True},
                          objective_options={"estimator": "analytic_kl"})
    check_combination(model, "relaxed", "tracemeanfield", guide_options={"structured": False})
    check_combination(model, "relaxed", "elbo", guide_options={"structured": True})


# -- structured guides from the posterior's graph (a faithful inverse of the model's) -----------------------
def _linear_gaussian_posterior(latents, observed_parents, seed=0, x_dim=2):
    """The exact posterior covariance of a linear-Gaussian network with the given graph (random weights):
    z_i = sum_{p in pa(i)} w_ip z_p + N(0, 1), x = sum over the observation's parents W_p z_p + N(0, 0.5^2 I).
    Cov(z | x) = Sigma_zz - Sigma_zx Sigma_xx^-1 Sigma_xz, whatever the value of x."""
    g = torch.Generator().manual_seed(seed)
    names = [s.name for s in latents]
    n = len(names)
    B = torch.zeros(n, n, dtype=torch.float64)                 # z = B z + eps
    for i, s in enumerate(latents):
        for p in s.parents:
            B[i, names.index(p)] = 1.0 + torch.rand((), generator=g, dtype=torch.float64)
    A = torch.linalg.inv(torch.eye(n, dtype=torch.float64) - B)
    cov_z = A @ A.T
    W = torch.zeros(x_dim * len(observed_parents), n, dtype=torch.float64)
    for o, parents in enumerate(observed_parents):
        for p in parents:
            W[o * x_dim:(o + 1) * x_dim, names.index(p)] = 1.0 + torch.rand(x_dim, generator=g, dtype=torch.float64)
    cov_x = W @ cov_z @ W.T + 0.25 * torch.eye(W.shape[0], dtype=torch.float64)
    return cov_z - cov_z @ W.T @ torch.linalg.solve(cov_x, W @ cov_z)


def _regression_on_earlier(post, names, order, site):
    """p(site | sites sampled before it, x) = N(c^T z_before + ..., .): the coefficients c, by name."""
    before = [names.index(s) for s in order[:order.index(site)]]
    if not before:
        return {}
    i = names.index(site)
    coef = torch.linalg.solve(post[before][:, before], post[before, i])
    return {names[j]: float(c) for j, c in zip(before, coef)}


GRAPHS = {
    # name: (latents with their prior parents, each observation's parents)
    "m2": ((LatentSite("z", (1,)), LatentSite("y", (1,))), [("y", "z")]),
    "chain": ((LatentSite("z3", (1,)), LatentSite("z2", (1,), parents=("z3",)),
               LatentSite("z1", (1,), parents=("z2",))), None),
    "collider": ((LatentSite("a", (1,)), LatentSite("b", (1,), parents=("a",)), LatentSite("c", (1,))),
                 [("b", "c")]),
    # b and c stay dependent given (d, x) through a: the fill-in edge b - c that moralization alone misses
    "fill_in": ((LatentSite("a", (1,)), LatentSite("b", (1,), parents=("a",)), LatentSite("c", (1,), parents=("a",)),
                 LatentSite("d", (1,), parents=("c",))), [("b", "d")]),
    "two_observations": ((LatentSite("a", (1,)), LatentSite("b", (1,)), LatentSite("c", (1,), parents=("a", "b"))),
                         [("a",), ("c",)]),
}


@pytest.mark.parametrize("graph", sorted(GRAPHS))
def test_posterior_order_is_a_faithful_and_minimal_inverse_of_a_linear_gaussian_network(graph):
    """Independent check by the exact posterior of a linear-Gaussian network with that graph: for each site v,
    E[v | sites sampled before v, x] has a nonzero coefficient on exactly v's conditioning set (faithful: no
    other earlier site matters; minimal: each one in it does)."""
    latents, observed = GRAPHS[graph]
    structure = posterior_order(latents, observed)
    order = [s.name for s, _ in structure]
    assert sorted(order) == sorted(s.name for s in latents)
    names = [s.name for s in latents]
    post = _linear_gaussian_posterior(latents, observed or [tuple(s.name for s in latents
                                                                  if not children_of(s, latents))])
    for site, given in structure:
        assert all(order.index(c.name) < order.index(site.name) for c in given)
        coef = _regression_on_earlier(post, names, order, site.name)
        assert {n for n, c in coef.items() if abs(c) > 1e-9} == {c.name for c in given}, (site.name, coef)


def test_posterior_order_samples_discrete_sites_first_and_keeps_chains_bottom_up():
    """M2 as Pyro's example writes it (z sampled before y): q(y | x) q(z | x, y), the form enum needs; a chain
    (sbn, hvae) keeps the bottom-up q(z1 | x) q(z2 | z1, x) q(z3 | z2, x) that its children gave."""
    y = LatentSite("y", (1, 10), "categorical", num_classes=10)
    z = LatentSite("z", (4,))
    assert [(s.name, [c.name for c in g]) for s, g in posterior_order((z, y), [("z", "y")])] == \
        [("y", []), ("z", ["y"])]
    for model in (SBN(x_dim=6, layers=(4, 3, 2)), zoo.build_model("hvae", 6, layers=(4, 3, 2))):
        sites = model.latents
        assert model.observed_parents is None
        structure = posterior_order(sites, model.observed_parents)
        assert [s.name for s, _ in structure] == ["z1", "z2", "z3"]
        assert all(given == children_of(s, sites) for s, given in structure)


def test_pyros_posterior_dependencies_miss_the_fill_in_edge():
    """Why posterior_order is the zoo's own: Pyro's get_dependencies moralizes but does not eliminate, so for the
    'fill_in' graph it conditions b on (d, x) only, while the exact posterior's b still depends on c."""
    from pyro.infer.inspect import get_dependencies

    def model():
        a = pyro.sample("a", dist.Normal(0.0, 1.0))
        b = pyro.sample("b", dist.Normal(a, 1.0))
        c = pyro.sample("c", dist.Normal(a, 1.0))
        d = pyro.sample("d", dist.Normal(c, 1.0))
        pyro.sample("x", dist.Normal(b + d, 1.0), obs=torch.tensor(0.0))

    pyro_b = set(get_dependencies(model)["posterior_dependencies"]["b"]) - {"b", "x"}
    latents, observed = GRAPHS["fill_in"]
    ours = {s.name: {c.name for c in g} for s, g in posterior_order(latents, observed)}
    assert pyro_b == {"d"} and ours["b"] == {"c", "d"}


def test_posterior_order_refuses_unknown_observation_parents():
    with pytest.raises(ZooError, match="observation declares parents"):
        posterior_order((LatentSite("a", (1,)),), [("b",)])


def m2_factory(x_dim, num_classes=3, z_dim=2):
    """A tiny M2 (Kingma et al. 2014; pyro-ppl/pyro examples/vae/ss_vae_M2.py): y ~ Cat(1/K), z ~ N(0, I),
    x | y, z ~ Bernoulli(f(y, z)); y one-hot as the contract accepts it, OneHotCategorical(...).to_event(1)."""
    decoder = nn.Sequential(nn.Linear(num_classes + z_dim, 16), nn.Tanh(), nn.Linear(16, x_dim))

    def model(x, idx=None, N=None):
        pyro.module("decoder", decoder)
        with pyro.plate("data", N, subsample=idx):
            z = pyro.sample("z", dist.Normal(torch.zeros(z_dim), 1.0).to_event(1))
            y = pyro.sample("y", dist.OneHotCategorical(torch.full((num_classes,), 1.0 / num_classes)
                                                        .unsqueeze(-2)).to_event(1))
            logits = decoder(torch.cat([y.flatten(-2), z], -1))
            pyro.sample("x", dist.Bernoulli(logits=logits).to_event(1), obs=x)
    return model


def test_m2s_structured_guide_is_q_y_given_x_then_q_z_given_x_and_y():
    """y and z are independent a priori, coupled given x: the structured guide's head for z reads [h, y]."""
    model = zoo.from_pyro(m2_factory, x_dim=6)
    assert all(not s.parents for s in model.latents) and model.observed_parents == (("z", "y"),)
    guide = build_guide("amortized", model, hidden=(8,), structured=True)
    assert [s.name for s in guide.order] == ["y", "z"]
    assert [c.name for c in guide.conditioning["z"]] == ["y"] and guide.conditioning["y"] == ()
    assert guide.context_size(model.latents[0]) == 8 + 3 and guide.heads["z"][0].in_features == 8 + 3
    x = torch.bernoulli(torch.full((5, 6), 0.5))
    trace = pyro.poutine.trace(guide).get_trace(x)
    y = trace.nodes["y"]["value"]
    with pyro.poutine.condition(data={"y": y.roll(1, dims=-1)}):           # another class for every datum
        other = pyro.poutine.trace(guide).get_trace(x)
    assert not torch.allclose(trace.nodes["z"]["fn"].base_dist.loc, other.nodes["z"]["fn"].base_dist.loc)
    history = zoo.fit(model, guide, zoo.build_objective("elbo"), x, epochs=2, batch_size=5, lr=1e-2, progress=False)
    assert all(math.isfinite(row["loss"]) for row in history)


def collider_factory(x_dim, s=0.5, sigma=0.3):
    """a ~ N(0, 1), b | a ~ N(a, s^2), c ~ N(0, 1), x | b, c ~ N(w b + v c, sigma^2 I): b and c are independent
    a priori and, as co-parents of x, strongly coupled given x; a's prior child is b alone."""
    w, v = torch.linspace(0.8, 1.2, x_dim), torch.linspace(1.2, 0.8, x_dim)

    def collider(x, idx=None, N=None):
        with pyro.plate("data", N, subsample=idx):
            a = pyro.sample("a", dist.Normal(torch.zeros(1), 1.0).to_event(1))
            b = pyro.sample("b", dist.Normal(a, s).to_event(1))
            c = pyro.sample("c", dist.Normal(torch.zeros(1), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(b * w + c * v, sigma).to_event(1), obs=x)

    collider.log_marginal = lambda x: dist.MultivariateNormal(
        torch.zeros(x_dim), (1 + s * s) * torch.outer(w, w) + torch.outer(v, v) + sigma ** 2 * torch.eye(x_dim)
    ).log_prob(x)
    prior_cov = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1 + s * s, 0.0], [0.0, 0.0, 1.0]])      # of (a, b, c)
    M = torch.stack([torch.zeros(x_dim), w, v], dim=1)                                  # x = M (a, b, c) + noise
    collider.posterior_cov = torch.linalg.inv(torch.linalg.inv(prior_cov) + M.T @ M / sigma ** 2)
    return collider


def prior_parents_guide():
    """The guide class whose structure reads the prior's arrows only, from the benchmark that compares it."""
    benchmarks = str(Path(__file__).resolve().parents[1] / "benchmarks")
    sys.path.insert(0, benchmarks)
    try:
        from structured_posterior import prior_parents_guide as guide_class
    finally:
        sys.path.remove(benchmarks)
    return guide_class()


@pytest.mark.slow
def test_the_faithful_inverse_reaches_log_px_where_the_prior_parents_structure_cannot():
    """Linear-Gaussian collider a -> b, (b, c) -> x with linear encoder units. The faithful inverse
    q(c | x) q(b | c, x) q(a | b, x) contains the exact posterior, so its ELBO can reach the closed-form log p(x);
    the prior-parents structure q(b | x) q(c | x) q(a | b, x) leaves b and c independent, and pays at least
    KL = -1/2 log(1 - rho_bc^2), rho_bc their posterior correlation. Same encoder, data, objective and budget."""
    fn = collider_factory(3)
    model = zoo.from_pyro(fn, x_dim=3)
    assert model.observed_parents == (("b", "c"),)
    cov = fn.posterior_cov
    rho2 = float(cov[1, 2] ** 2 / (cov[1, 1] * cov[2, 2]))
    floor = -0.5 * math.log(1 - rho2)
    assert floor > 0.5                                       # the test needs strongly coupled co-parents
    pyro.set_rng_seed(0)
    x = model.sample(256, mean=False)
    log_px = fn.log_marginal(x).mean().item()
    objective = zoo.build_objective("elbo", particles=8)
    gaps = {}
    for label, make in (("posterior", lambda: Amortized(model, hidden=(16,), structured=True, activation="linear")),
                        ("prior_parents", lambda: prior_parents_guide()(model, hidden=(16,), structured=True,
                                                                        activation="linear"))):
        pyro.set_rng_seed(1)
        guide = make()
        zoo.fit(model, guide, objective, x, epochs=150, batch_size=64, lr=1e-2, progress=False)
        guide.eval()
        pyro.set_rng_seed(2)
        gaps[label] = log_px - zoo.evaluate(model, guide, x, num_samples=20, iwae_k=1)["elbo"]
    assert gaps["prior_parents"] > floor - 0.05, (gaps, floor)
    assert -0.02 < gaps["posterior"] < 0.1 * floor, (gaps, floor)          # an ELBO, and nearly log p(x)
    assert [c.name for c in build_guide("amortized", model, structured=True).conditioning["b"]] == ["c"]
