"""Learned priors (zoo.models.priors): each log-density against a direct computation."""
import math

import pytest
import torch
from torch.distributions import Normal

import zoo
from guides.base import site_distribution
from zoo.core.contract import LatentSite
from zoo.core.errors import ZooError
from zoo.models.priors import DiagonalNormalMixture, FlowPrior, MixturePrior, build_prior
from zoo.registry import build_guide, build_model
from zoo.rules import check_combination

SITE = LatentSite("z", (3,))


def mixture_by_loop(logits, loc, scale, z):
    """log sum_k pi_k prod_d N(z_d; loc_kd, scale_kd), one component at a time."""
    log_pi = logits - torch.logsumexp(logits, 0)
    terms = [log_pi[k] + Normal(loc[k], scale[k]).log_prob(z).sum(-1) for k in range(loc.shape[0])]
    return torch.logsumexp(torch.stack(terms), 0)


@pytest.mark.parametrize("batch,value", [((3,), (3,)), ((3,), (5, 3)), ((2, 3), (3,)), ((), (4,))])
def test_the_standard_normal_is_torchs_normal_at_zero_and_one(batch, value):
    """Its log-density in any broadcast, its expand, its registered KL and its samples are Normal(0, 1)'s."""
    from zoo.core.distributions import StandardNormal
    d = StandardNormal(torch.zeros(batch), torch.ones(batch))
    reference = Normal(torch.zeros(batch), torch.ones(batch))
    z = torch.randn(value, requires_grad=True)
    torch.testing.assert_close(d.log_prob(z), reference.log_prob(z))
    (grad,) = torch.autograd.grad(d.log_prob(z).sum(), z)
    torch.testing.assert_close(grad, -z.detach() * torch.broadcast_shapes(batch, value).numel() / z.numel())
    e = d.expand((6,) + batch)
    assert type(e) is StandardNormal and e.batch_shape == (6,) + batch
    w = torch.randn((6,) + batch)
    torch.testing.assert_close(e.log_prob(w), reference.expand((6,) + batch).log_prob(w))
    q = Normal(torch.full(batch, 0.3), torch.full(batch, 0.7))
    torch.testing.assert_close(torch.distributions.kl_divergence(q, d), torch.distributions.kl_divergence(q, reference))
    assert d.sample((2,)).shape == (2,) + batch


def test_the_standard_prior_is_one_object_per_buffers_and_validation_setting():
    """N(0, I) is made once and its expansion to a minibatch kept, while its buffers and Pyro's validation
    setting are the same; a move to float64 or a change of the setting makes a new one, which follows them."""
    import pyro
    from zoo.core.distributions import ShapedIndependent
    prior = build_prior("standard", SITE, 6)
    with pyro.validation_enabled(False):
        p = prior()
        assert prior() is p and isinstance(p, ShapedIndependent) and not p._validate_args
        assert p.expand((4,)) is p.expand((4,)) and p.expand((4,)).batch_shape == (4,)
        z = torch.randn(4, 3)
        torch.testing.assert_close(p.expand((4,)).log_prob(z), Normal(0.0, 1.0).log_prob(z).sum(-1))
    with pyro.validation_enabled(True):
        v = prior()
        assert v is not p and v._validate_args and v.expand((4,))._validate_args
    with pyro.validation_enabled(False):
        prior.double()
        d = prior()
        assert d is not p and d.base_dist.loc.dtype == torch.float64 and d.base_dist.loc is prior.loc


def test_mixture_log_density_is_the_sum_over_components():
    torch.manual_seed(0)
    logits, loc, scale = torch.randn(5, dtype=torch.float64), torch.randn(5, 3, dtype=torch.float64), \
        0.3 + torch.rand(5, 3, dtype=torch.float64)
    z = 2 * torch.randn(4, 7, 3, dtype=torch.float64)
    p = DiagonalNormalMixture(logits, loc, scale)
    assert torch.allclose(p.log_prob(z), mixture_by_loop(logits, loc, scale, z), atol=1e-10)
    # under a plate it is expanded, and scores the same
    assert torch.allclose(p.expand((7,)).log_prob(z), mixture_by_loop(logits, loc, scale, z), atol=1e-10)
    assert p.expand((7,)).sample((4,)).shape == (4, 7, 3)
    # the learned MoG prior module is the same mixture with softplus scales
    prior = MixturePrior(SITE, components=4).double()
    with torch.no_grad():
        prior.loc.normal_()
        prior.logits.normal_()
    d = prior()
    assert torch.allclose(d.log_prob(z), mixture_by_loop(d.logits, d.loc, d.scale, z), atol=1e-10)


def test_mixture_log_density_of_narrow_components_is_exact_in_float32():
    """Narrow components (scales 0.01, as a trained VampPrior's can be) near z: in float32 the log-density is
    within 1e-3 nats of the float64 sum over components; the matrix expansion, formed in float32, was off by
    up to a nat here."""
    torch.manual_seed(2)
    K, D = 500, 40
    logits, loc = torch.randn(K, dtype=torch.float64), torch.randn(K, D, dtype=torch.float64)
    scale = 0.01 * (0.5 + torch.rand(K, D, dtype=torch.float64))
    z = loc[torch.randint(K, (64,))] + 0.02 * torch.randn(64, D, dtype=torch.float64)   # near the components
    exact = mixture_by_loop(logits, loc, scale, z)
    p = DiagonalNormalMixture(logits.float(), loc.float(), scale.float())
    log_p = p.log_prob(z.float())
    assert log_p.dtype == torch.float32
    assert (log_p.double() - exact).abs().max() < 1e-3


def test_vampprior_is_the_average_of_the_encoders_posteriors_at_the_pseudo_inputs():
    torch.manual_seed(1)
    model = build_model("vae", 6, latent_dim=3, hidden=(8,), prior="vampprior", prior_components=4).double()
    guide = build_guide("amortized", model).double()
    with torch.no_grad():
        model.prior.raw_pseudo_inputs.uniform_(-0.2, 1.2)           # some clipped by the hardtanh
    z = torch.randn(10, 3, dtype=torch.float64)
    u = model.prior.pseudo_inputs
    assert u.min() >= 0 and u.max() <= 1
    per_component = []
    for k in range(4):                                              # q(z | u_k) from the guide's own encoder
        _, raw = guide.encode(u[k:k + 1])
        per_component.append(site_distribution(model.latents[0], raw["z"]).log_prob(z))
    direct = torch.logsumexp(torch.stack(per_component), 0) - math.log(4)
    assert torch.allclose(model.prior().log_prob(z), direct, atol=1e-10)


def test_a_held_vampprior_keeps_its_components_only_while_nothing_can_change_them():
    """Held fixed (eval mode, parameters frozen: zoo.core.modes.held_fixed), the VampPrior computes its K components
    once; a change to the pseudo-inputs or the encoder inside the block (an in-place update, load_state_dict) is seen
    at the next call, and so is a step of the zoo's optimizer between two blocks (a fused Adam step moves no tensor's
    version). Outside a block nothing is kept, so gradients reach the pseudo-inputs and the encoder, twice at the
    same parameters; a parameter frozen before the block stays frozen after it."""
    from unittest import mock
    from zoo.core.modes import held_fixed
    from zoo.training.optimizer import make_optimizer
    torch.manual_seed(3)
    model = build_model("vae", 6, latent_dim=3, hidden=(8,), prior="vampprior", prior_components=4).double()
    guide = build_guide("amortized", model).double()
    z = torch.randn(5, 3, dtype=torch.float64)
    fresh = model.prior().log_prob(z).detach()
    with mock.patch.object(type(model.prior), "components", autospec=True,
                           side_effect=type(model.prior).components) as computed:
        with held_fixed(model, guide):
            for _ in range(3):
                assert torch.equal(model.prior().log_prob(z), fresh)
            assert computed.call_count == 1                                   # kept
            with torch.no_grad():
                model.prior.raw_pseudo_inputs.add_(0.3)                       # an in-place change: seen
            moved = model.prior().log_prob(z)
            assert computed.call_count == 2 and not torch.allclose(moved, fresh)
            state = {k: v.clone() for k, v in guide.state_dict().items()}
            state = {k: v + 0.1 if v.is_floating_point() else v for k, v in state.items()}
            guide.load_state_dict(state)                                     # the encoder changed: seen
            held = model.prior().log_prob(z)
            assert not torch.allclose(held, moved) and computed.call_count == 3
        assert all(p.requires_grad for p in [*model.parameters(), *guide.parameters()])
        model.train(), guide.train()
        calls = computed.call_count
        model.prior().log_prob(z).sum().backward()
        model.prior().log_prob(z).sum().backward()                          # twice at the same parameters
        assert computed.call_count == calls + 2
        assert model.prior.raw_pseudo_inputs.grad is not None
        assert any(p.grad is not None for p in guide.parameters())
        optimizer = make_optimizer(model, guide, lr=0.05)
        optimizer.zero_grad()
        (-model.prior().log_prob(z).sum()).backward()
        optimizer.step()                                                     # between two held blocks: seen
        with torch.no_grad():
            model.eval(), guide.eval()
            outside = model.prior().log_prob(z)                              # not held: computed, not kept
        with held_fixed(model, guide):
            assert torch.equal(model.prior().log_prob(z), outside) and not torch.allclose(outside, held)
    frozen = next(iter(guide.parameters()))
    frozen.requires_grad_(False)
    with held_fixed(model, guide):
        pass
    assert not frozen.requires_grad and model.prior.raw_pseudo_inputs.requires_grad


def test_vampprior_with_one_pseudo_input_at_x_is_the_encoders_posterior_at_x():
    torch.manual_seed(2)
    x = torch.bernoulli(torch.full((1, 6), 0.5, dtype=torch.float64))
    for name, structured in (("vae", False), ("hvae", False), ("hvae", True)):
        options = dict(latent_dim=3, hidden=(8,)) if name == "vae" else dict(layers=(4, 3), hidden=(8,),
                                                                            transition_hidden=(5,))
        model = build_model(name, 6, prior="vampprior", prior_components=1, **options).double()
        guide = build_guide("amortized", model, structured=structured).double()
        with torch.no_grad():
            model.prior.raw_pseudo_inputs.copy_(x)                  # hardtanh(0, 1) leaves 0 and 1 as they are
        top = model.latents[0]
        z = torch.randn(5, top.numel, dtype=torch.float64)
        h = guide.trunk(x)
        if structured:                                              # q(z2 | E_q[z1 | x], x)
            z1 = guide.order[0]
            q1 = guide.distribution(z1, guide.context(z1, h, {}))
            q = guide.distribution(top, guide.context(top, h, {z1.name: q1.mean}))
        else:
            q = guide.distribution(top, h)
        assert torch.allclose(model.prior().log_prob(z), q.log_prob(z), atol=1e-10), name


def test_flow_prior_density_is_the_change_of_variables():
    """log p(z) = log N(T(z); 0, I) + log |det dT/dz|, the Jacobian taken by autograd."""
    torch.manual_seed(3)
    prior = FlowPrior(SITE, flows=3).double()
    with torch.no_grad():                                           # away from the identity map it starts near
        for p in prior.parameters():
            p.add_(0.3 * torch.randn_like(p))
    transforms = prior.normalizing_transforms()

    def T(z):
        for t in transforms:
            z = t(z)
        return z

    z = torch.randn(6, 3, dtype=torch.float64)
    base = Normal(torch.zeros(3, dtype=torch.float64), 1.0)

    def change_of_variables(points):
        return torch.stack([base.log_prob(T(p)).sum() + torch.linalg.slogdet(
            torch.autograd.functional.jacobian(T, p))[1] for p in points])

    assert torch.allclose(prior().log_prob(z), change_of_variables(z), atol=1e-8)
    # its samples are T^{-1}(eps) (Pyro inverts in float32 only): T maps them back to the draws of N(0, I)
    prior.float()
    torch.manual_seed(5)
    s = prior().sample((4,))
    torch.manual_seed(5)
    eps = torch.randn(4, 3)
    assert torch.allclose(T(s), eps, atol=1e-4)


@pytest.mark.parametrize("prior", ["standard", "mog", "vampprior", "flow"])
def test_every_prior_trains_samples_and_keeps_the_is_estimate_finite(prior):
    torch.manual_seed(4)
    x = torch.bernoulli(torch.full((30, 6), 0.4))
    model = build_model("vae", 6, latent_dim=2, hidden=(8,), prior=prior,
                        **({"prior_components": 3} if prior in ("mog", "vampprior") else {}))
    guide = build_guide("amortized", model)
    before = [p.detach().clone() for p in model.prior.parameters()]
    zoo.fit(model, guide, zoo.build_objective("elbo"), x, epochs=2, batch_size=10, lr=1e-2, progress=False)
    assert all(not torch.equal(b, p) for b, p in zip(before, model.prior.parameters()))   # the prior is learned
    assert model.sample(5).shape == (5, 6)
    result = zoo.evaluate(model, guide, x, num_samples=20, iwae_k=5, psis=False)
    assert math.isfinite(result["log_likelihood"]) and result["log_likelihood"] >= result["elbo"] - 1e-4


def test_a_vampprior_borrows_the_encoder_and_is_refused_where_that_breaks_something():
    model = build_model("vae", 6, latent_dim=2, hidden=(8,), prior="vampprior", prior_components=3)
    assert model.borrows_guide and not build_model("vae", 6, prior="mog").borrows_guide
    guide = build_guide("amortized", model)
    assert not {id(p) for p in model.parameters()} & {id(p) for p in guide.parameters()}   # owned once
    with pytest.raises(ZooError, match="computes with its guide's parameters"):
        check_combination(model, "amortized", "dreg")
    check_combination(model, "amortized", "iwae")
    with pytest.raises(ZooError, match="has no amortized encoder; use --guide amortized"):
        build_guide("meanfield", model, num_data=10)
    with pytest.raises(ZooError, match="flow"):
        build_guide("iaf", model)


def test_unknown_prior_is_refused_by_the_python_api_too():
    with pytest.raises(ZooError, match="prior"):
        build_model("vae", 6, prior="gauss")
    with pytest.raises(ZooError, match="prior_components"):
        build_model("vae", 6, prior="mog", prior_components=0)
    with pytest.raises(ZooError):
        build_prior("gauss", SITE)


@pytest.mark.parametrize("args, message", [
    (["vae", "--prior", "vampprior", "--guide", "meanfield"], "no amortized encoder"),
    (["hvae", "--prior", "vampprior", "--guide", "meanfield"], "no amortized encoder"),
    (["vae", "--prior", "gauss"], "--prior"),
    (["vae", "--prior", "mog", "--prior-components", "0"], "--prior-components must be a positive integer"),
    (["hvae", "--prior-components", "5"], "--prior-components sets the components of a mog or vampprior"),
])
def test_bad_prior_input_is_one_line_exit_2_and_no_files(tmp_path, capsys, args, message):
    from zoo.cli import main
    out = tmp_path / "run"
    assert main(["train", *args, "--dataset", "digits", "--epochs", "1", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err
    assert not out.exists()


def test_vampprior_elbo_gradients_are_those_of_the_hand_written_bound():
    """The zoo's ELBO step with a VampPrior (the prior computed by the guide's own encoder, shared through
    Borrowed) gives the loss and every gradient of the bound written out by hand for the same draws:
    -(N/B) sum_b [log p(x_b|z_b) + log (1/K) sum_k q(z_b|u_k) - log q(z_b|x_b)], z_b = mu(x_b) + sigma(x_b) eps_b.
    The encoder gets gradient through q(z|x), through z, and through the prior's components."""
    import pyro
    import torch.nn.functional as F
    from zoo.objectives import build_objective
    torch.manual_seed(0)
    N, B, K = 100, 16, 4
    x = (torch.rand(B, 12) < 0.4).float()
    idx = torch.arange(B)
    model = build_model("vae", 12, latent_dim=3, hidden=(8,), prior="vampprior", prior_components=K)
    guide = build_guide("amortized", model)
    params = list(model.parameters()) + list(guide.parameters())
    pyro.set_rng_seed(1)
    z_drawn = pyro.poutine.trace(guide).get_trace(x, idx=idx, N=N).nodes["z"]["value"].detach()
    pyro.set_rng_seed(1)                                 # the step below draws the same z
    loss = build_objective("elbo").loss_and_grads(model, guide, x, idx=idx, N=N)
    zoo_grads = [p.grad.clone() for p in params]

    def encode(inputs):
        loc, s = guide.heads["z"](guide.trunk(inputs)).chunk(2, -1)
        return loc, F.softplus(s) + 1e-5
    loc, scale = encode(x)
    eps = ((z_drawn - loc) / scale).detach()
    z = loc + scale * eps
    u_loc, u_scale = encode(F.hardtanh(model.prior.raw_pseudo_inputs, 0.0, 1.0))
    log_prior = torch.logsumexp(Normal(u_loc, u_scale).log_prob(z.unsqueeze(1)).sum(-1), -1) - math.log(K)
    log_lik = -F.binary_cross_entropy_with_logits(model.decoder(z), x, reduction="none").sum(-1)
    bound = -(N / B) * (log_lik + log_prior - Normal(loc, scale).log_prob(z).sum(-1)).sum()
    hand_grads = torch.autograd.grad(bound, params)
    assert loss == pytest.approx(bound.item(), rel=1e-5)
    for (name, _), a, b in zip(list(model.named_parameters()) + list(guide.named_parameters()), zoo_grads, hand_grads):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-3 * b.abs().max().item()), name


@pytest.mark.parametrize("activation, collapsed", [("tanh", True), ("gated", False)])
@pytest.mark.slow
def test_a_vampprior_collapses_with_a_tanh_encoder_and_not_with_gated_units(activation, collapsed):
    """The failure zoo.core.nn documents: with the VampPrior, whose components are the encoder's own output, a
    tanh encoder saturates into a constant map (q(z|x) = p(z), KL 0, the ELBO of a decoder that ignores z) and
    stays there; gated units (Tomczak & Welling's) cannot saturate and keep several nats of KL. Digits, 100
    epochs: KL 0.003-0.005 with tanh against 3.3-3.9 with gated units at seeds 0, 1, 2."""
    torch.manual_seed(0)
    x = zoo.load_dataset("digits").train
    model = build_model("vae", 64, latent_dim=10, hidden=(64, 64), prior="vampprior", prior_components=50,
                        activation=activation)
    guide = build_guide("amortized", model)
    assert guide.activation == activation                                 # the encoder follows the model
    zoo.fit(model, guide, zoo.build_objective("elbo"), x, epochs=100, batch_size=100, lr=1e-3, progress=False)
    result = zoo.evaluate(model, guide, zoo.load_dataset("digits").test, num_samples=10, iwae_k=5, psis=False)
    if collapsed:
        assert result["kl"] < 0.1 and result["elbo"] < -24
    else:
        assert result["kl"] > 1.5 and result["elbo"] > -22
