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

import pyro
import pyro.distributions as dist
import pytest
import torch
from torch import nn

import zoo
from guides import Amortized
from guides.base import site_distribution
from zoo.core.contract import LatentSite, ZooModel, children_of, guide_order
from zoo.core.distributions import IndependentBernoulli
from zoo.core.errors import ZooError
from zoo.core.params import register_module
from zoo.core.plates import data_plate
from zoo.models import SBN
from zoo.objectives.enum import EnumELBO
from zoo.registry import build_guide, check_combination


def test_sbn_declares_each_layer_conditioned_on_the_one_above():
    sites = SBN(x_dim=6, layers=(4, 3, 2)).latents
    assert [(s.name, s.parents) for s in sites] == [("z3", ()), ("z2", ("z3",)), ("z1", ("z2",))]
    assert [s.name for s in guide_order(sites)] == ["z1", "z2", "z3"]
    assert [c.name for c in children_of(sites[0], sites)] == ["z2"]


def test_guide_order_refuses_unknown_parents_and_cycles():
    with pytest.raises(ZooError, match="not latent sites"):
        guide_order((LatentSite("a", (1,), parents=("b",)),))
    with pytest.raises(ZooError, match="cycle"):
        guide_order((LatentSite("a", (1,), parents=("b",)), LatentSite("b", (1,), parents=("a",))))


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
        model.guide
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
