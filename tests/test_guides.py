"""Guide families: built from latent declarations, correct densities, clear refusals."""
import pyro
import pyro.poutine as poutine
import pytest
import torch

from guides import IAF, Amortized, Exact, MeanField
from guides.base import site_distribution
from zoo.core.errors import ZooError
from zoo.core.weights import vectorize
from zoo.core.latents import LatentLayer
from zoo.models import PPCA, VAE, LatentSite, ZooModel


def test_iaf_density_matches_a_fresh_inversion():
    """log q of the guide's own sample (read from the flow's cache) equals the density recomputed by
    inverting every step from scratch, so the IAF log-determinants are right."""
    torch.manual_seed(0)
    g = IAF(VAE(10, LatentLayer(dim=3), hidden=(8,)), hidden=(8,), num_flows=3)
    x = torch.rand(5, 10)
    h, raw = g.encode(x)
    base = site_distribution(g.sites[0], raw["z"])
    d = g.posterior_distribution("z", h, base)
    z = d.rsample()
    cached = d.log_prob(z)
    fresh = g.posterior_distribution("z", h, base).log_prob(z.detach().clone())
    assert torch.allclose(cached, fresh, atol=1e-4)


def test_iaf_changes_the_base_density():
    """With non-trivial flow weights, log q(z) differs from the Normal base's log density at the same z."""
    torch.manual_seed(0)
    g = IAF(VAE(10, LatentLayer(dim=3), hidden=(8,)), hidden=(8,), num_flows=2)
    for p in g.flows.parameters():
        torch.nn.init.normal_(p, std=0.5)
    h, raw = g.encode(torch.rand(4, 10))
    base = site_distribution(g.sites[0], raw["z"])
    z = g.posterior_distribution("z", h, base).rsample()
    assert not torch.allclose(g.posterior_distribution("z", h, base).log_prob(z.detach().clone()),
                              base.log_prob(z.detach()), atol=1e-3)


def test_meanfield_uses_the_rows_named_by_idx():
    m = PPCA(x_dim=4, latent_dim=2)
    g = MeanField(m, num_data=10, init_scale=1e-4)
    with torch.no_grad():
        g.z_loc.copy_(torch.arange(10.0)[:, None].expand(10, 2))
    idx = torch.tensor([7, 2])
    tr = poutine.trace(g).get_trace(torch.zeros(2, 4), idx=idx, N=10)
    assert torch.allclose(tr.nodes["z"]["value"][:, 0], torch.tensor([7.0, 2.0]), atol=1e-2)
    assert tr.nodes["z"]["scale"] == pytest.approx(5.0)         # N / B


def test_meanfield_refuses_new_data_without_indices():
    g = MeanField(PPCA(x_dim=4, latent_dim=2), num_data=10)
    with pytest.raises(ZooError, match="refit"):
        g(torch.zeros(3, 4))


def test_guides_sample_every_latent_with_vectorized_particles():
    m = VAE(6, LatentLayer(dim=3), hidden=(5,))
    x = torch.rand(4, 6)
    for g in (MeanField(m, 4), Amortized(m), IAF(m)):
        tr = poutine.trace(vectorize(g, 7)).get_trace(x)
        assert tr.nodes["z"]["value"].shape == (7, 4, 3)


class DiscreteToy(ZooModel):
    """A model with a binary latent, to check refusals (the discrete models come with issue 3)."""
    likelihood = "bernoulli"

    @property
    def latents(self):
        return (LatentSite("b", (4,), "binary"),)


@pytest.mark.parametrize("cls", [IAF, Exact])
def test_real_only_guides_refuse_binary_latents(cls):
    with pytest.raises(ZooError, match="supports real latents only"):
        cls(DiscreteToy(x_dim=3), 5)


def test_relaxed_guide_refuses_real_latents_and_bad_temperatures():
    """A model of real latents only has nothing to relax (real latents beside discrete ones, as in M2, keep
    the amortized Normal: tests/test_discrete_sites.py)."""
    from guides import Relaxed
    from zoo.models import SBN
    with pytest.raises(ZooError, match="relaxes discrete latents, and VAE has none"):
        Relaxed(VAE(x_dim=6))
    with pytest.raises(ZooError, match="temperature must be positive"):
        Relaxed(SBN(x_dim=6, layers=(3,)), temperature=0.0)


def test_exact_refuses_models_without_a_posterior():
    with pytest.raises(ZooError, match="closed-form posterior"):
        Exact(VAE(x_dim=6))


@pytest.mark.parametrize("family", ["amortized", "meanfield", "relaxed"])
def test_traces_carry_each_models_own_parameters(family):
    """Two models and guides of the same families in one process each show *their own* tensors
    as param sites, every trainable parameter exactly once. (pyro.module would hand the second
    pair the first pair's tensors from Pyro's global param store.)"""
    from zoo.registry import build_guide, build_model
    model_name = "sbn" if family == "relaxed" else "vae"
    x = torch.bernoulli(torch.full((6, 12), 0.5))
    for _ in range(2):
        model = build_model(model_name, 12, **({"layers": (3,)} if model_name == "sbn" else
                                                {"latent_dim": 2, "hidden": (5,)}))
        guide = build_guide(family, model, num_data=6)
        for module, fn in ((model, model.model), (guide, guide)):
            trace = poutine.trace(fn).get_trace(x, idx=torch.arange(6), N=6)
            values = [site["value"] for site in trace.nodes.values() if site["type"] == "param"]
            assert len(values) == len({id(v) for v in values})
            assert {id(v) for v in values} == {id(p) for p in module.parameters() if p.requires_grad}


def test_param_sites_follow_frozen_added_and_replaced_parameters():
    """register_module caches each module's parameter list; the sites must still be the live
    parameters after freezing one, adding one, and a conversion that replaces parameter objects."""
    from zoo.registry import build_guide, build_model
    x = torch.bernoulli(torch.full((6, 12), 0.5))
    model = build_model("vae", 12, latent_dim=2, hidden=(5,))
    guide = build_guide("amortized", model)

    def sites(module, fn):
        trace = poutine.trace(fn).get_trace(x.to(next(module.parameters()).dtype), idx=torch.arange(6), N=6)
        return {id(s["value"]) for s in trace.nodes.values() if s["type"] == "param"}

    def live(module):
        return {id(p) for p in module.parameters() if p.requires_grad}

    assert sites(model, model.model) == live(model)
    model.decoder[0].bias.requires_grad_(False)
    assert sites(model, model.model) == live(model) and id(model.decoder[0].bias) not in live(model)
    model.decoder[0].bias.requires_grad_(True)
    model.extra = torch.nn.Parameter(torch.zeros(3))
    assert id(model.extra) in sites(model, model.model) == live(model)
    old = list(guide.parameters())            # held, so their ids are not reused
    torch.__future__.set_overwrite_module_params_on_conversion(True)
    try:
        guide.double()
        model.double()
    finally:
        torch.__future__.set_overwrite_module_params_on_conversion(False)
    assert live(guide).isdisjoint(id(p) for p in old)
    assert sites(guide, guide) == live(guide) and sites(model, model.model) == live(model)


def test_pyros_own_svi_trains_a_zoo_model_and_guide():
    """A Pyro user's loop, pyro.infer.SVI with a pyro.optim optimizer, finds the zoo's parameters
    through their param sites and trains them, without touching the global param store."""
    from pyro.infer import SVI, Trace_ELBO
    from zoo.registry import build_guide, build_model
    pyro.set_rng_seed(0)
    pyro.clear_param_store()
    x = torch.bernoulli(torch.full((64, 16), 0.3))
    model = build_model("vae", 16, latent_dim=2, hidden=(8,))
    guide = build_guide("amortized", model)
    before = [p.detach().clone() for p in (*model.parameters(), *guide.parameters())]
    svi = SVI(model.model, guide, pyro.optim.Adam({"lr": 1e-2}), Trace_ELBO())
    losses = [svi.step(x, idx=torch.arange(64), N=64) for _ in range(300)]
    assert sum(losses[-20:]) < sum(losses[:20])
    assert all(not torch.equal(b, p) for b, p in zip(before, (*model.parameters(), *guide.parameters())))
    assert len(pyro.get_param_store()) == 0


def test_a_plate_keeps_the_guides_and_likelihoods_distributions_of_its_own_shape():
    """A plate's broadcast of a site whose distribution already has the plate's batch shape returns that
    object (no copy, ``ShapedIndependent`` and ``IndependentBernoulli``); any other shape is expanded as torch
    expands it, with the same densities as Pyro's ``Normal(...).to_event(1)``."""
    import pyro.distributions as dist
    from zoo.core.distributions import IndependentBernoulli, ShapedIndependent
    torch.manual_seed(0)
    site = LatentSite("z", (3,))
    q = site_distribution(site, torch.randn(4, 6))
    px = IndependentBernoulli(torch.randn(4, 5))
    assert isinstance(q, ShapedIndependent) and q.batch_shape == (4,) and q.event_shape == (3,)

    def model():
        with pyro.plate("data", 4):
            pyro.sample("z", q)
            pyro.sample("x", px, obs=(torch.rand(4, 5) < 0.5).float())
    trace = poutine.trace(model).get_trace()
    assert trace.nodes["z"]["fn"] is q and trace.nodes["x"]["fn"] is px
    reference = dist.Normal(q.base_dist.loc, q.base_dist.scale).to_event(1)
    z = torch.randn(2, 4, 3)
    wide = q.expand((2, 4))                                 # a particle plate to the left: a real expand
    assert wide is not q and wide.batch_shape == (2, 4) and isinstance(wide, ShapedIndependent)
    assert torch.allclose(wide.log_prob(z), reference.expand((2, 4)).log_prob(z))
    assert torch.allclose(q.log_prob(z), reference.log_prob(z))
    assert px.expand((2, 4)).batch_shape == (2, 4)
    assert site_distribution(LatentSite("s", ()), torch.randn(4, 2)).batch_shape == (4,)     # a scalar site: Normal
