"""ARM and DisARM (zoo.objectives.arm): unbiased for the exact ELBO gradient, which enumeration gives.

An SBN with one layer of 3 bits over 6 pixels and an amortized guide: the ELBO sums over 2^3 configurations, and
the ``enum`` objective's gradient is its exact gradient. An estimate is the mean of S calls on 4 data replicated R
times (each call averages R independent pairs per datum); it must lie within Z = 4.5 standard errors of the mean
(the calls' own spread / sqrt(S)) of the exact gradient in every coordinate. The test could fail: an estimator off
by a factor of 2 on the guide's gradient (DisARM without its 1/2) lies far outside.
"""
import itertools
import math

import pyro
import pytest
import torch

from zoo.core.errors import ZooError
from zoo.registry import build_guide, build_model, build_objective
from zoo.rules import check_combination

Z, S, R, N = 4.5, 150, 50, 4


def _setup(layers=(3,), structured=False):
    torch.manual_seed(0)
    pyro.set_rng_seed(0)
    model = build_model("sbn", 6, layers=layers).double()
    guide = build_guide("amortized", model, hidden=(5,), structured=structured).double()
    x = torch.bernoulli(torch.full((N, 6), 0.4, dtype=torch.float64))
    return model, guide, x


def _grads(objective, model, guide, x):
    params = list(model.parameters()) + list(guide.parameters())
    for p in params:
        p.grad = None
    objective.loss_and_grads(model, guide, x, idx=torch.arange(x.shape[0]), N=x.shape[0])
    return (torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in params]),
            len(list(model.parameters())))


def estimate(name, layers=(3,), structured=False):
    model, guide, x = _setup(layers, structured)
    exact, n_model = _grads(build_objective("enum"), model, guide, x)
    objective = build_objective(name, 1)
    pyro.set_rng_seed(1)
    draws = torch.stack([_grads(objective, model, guide, x.repeat(R, 1))[0] / R for _ in range(S)])
    n_model_coords = sum(p.numel() for p in model.parameters())
    return draws.mean(0), draws.std(0) / math.sqrt(S), draws.var(0), exact, n_model_coords


def assert_unbiased(mean, se, exact, n_model):
    """The mean of the calls lies within Z of its standard errors of the exact gradient in every coordinate that
    varies (one that never does, an encoder weight of a pixel that is 0 in every datum, equals it), and this test
    would see the guide's gradient taken twice over (the first ``n_model`` coordinates are the model's)."""
    varies = se > 0
    assert torch.allclose(mean[~varies], exact[~varies], atol=1e-12)
    z = ((mean - exact)[varies] / se[varies]).abs()
    assert z.max() < Z, f"|estimate - exact| / se: {z.tolist()}"
    wrong = exact.clone()
    wrong[n_model:] *= 2
    assert ((exact - wrong)[varies] / se[varies]).abs().max() > Z + 4


@pytest.mark.parametrize("layers", [(3,), (3, 2)], ids=["one-layer", "two-layers"])
@pytest.mark.parametrize("name", ["arm", "disarm"])
def test_the_antithetic_gradient_is_unbiased_for_the_enumerated_elbo(name, layers):
    """Two layers (z2 -> z1 -> x, 2^5 configurations) with the unstructured guide q(z1 | x) q(z2 | x): all five bits
    are one vector of independent Bernoulli bits given x, and one antithetic pair of it is unbiased as for one
    layer."""
    mean, se, _, exact, n_model = estimate(name, layers)
    assert_unbiased(mean, se, exact, n_model)


@pytest.mark.parametrize("name", [pytest.param("arm", marks=pytest.mark.slow), "disarm"])
def test_the_per_layer_gradient_is_unbiased_for_a_structured_guide(name):
    """A structured guide q(z1 | x) q(z2 | z1, x) over two layers (2^5 configurations): per layer, an antithetic pair
    with the layers below held and the layers above drawn afresh on each side (module docstring of
    zoo.objectives.arm). The exact gradient is the enumerated ELBO's; one pair for all five bits would be biased."""
    mean, se, _, exact, n_model = estimate(name, (3, 2), structured=True)
    assert_unbiased(mean, se, exact, n_model)


@pytest.mark.slow
def test_one_pair_for_all_bits_is_biased_for_a_structured_guide(monkeypatch):
    """The control for the per-layer test above: the same structured guide taken as if its layers were drawn from x
    alone (one antithetic pair for all five bits) is many standard errors off the exact gradient."""
    def unstructured_view(layers=(3,), structured=False):
        model, guide, x = setup(layers, structured)
        guide.structured = False                          # value_and_surrogate then draws one pair for all bits
        return model, guide, x
    setup = _setup
    monkeypatch.setitem(globals(), "_setup", unstructured_view)
    mean, se, _, exact, _ = estimate("disarm", (3, 2), structured=True)
    varies = se > 0
    assert ((mean - exact)[varies] / se[varies]).abs().max() > 3 * Z


def test_disarm_has_lower_variance_than_arm_for_the_encoder():
    _, _, arm_var, _, n_model = estimate("arm")
    _, _, disarm_var, _, _ = estimate("disarm")
    assert disarm_var[n_model:].mean() < arm_var[n_model:].mean()


@pytest.mark.parametrize("model_name,options,guide,says", [
    ("vae", {}, "amortized", "takes layers of binary latents"),
    ("vae", {"latent": "bernoulli", "hidden": (4,)}, "amortized", None),
    ("categorical_vae", {"num_variables": 2, "num_classes": 3}, "amortized", "takes layers of binary latents"),
    ("sbn", {"layers": (3,)}, "relaxed", "does not sample"),
])
def test_other_latents_and_guides_are_refused_in_one_line(model_name, options, guide, says):
    guide, guide_options = guide if isinstance(guide, tuple) else (guide, None)
    for name, objective_options in (("arm", None), ("disarm", None), ("iwae", {"estimator": "disarm"})):
        model = build_model(model_name, 6, **options)
        if says is None:                                  # binary latents of another model: taken
            check_combination(model, guide, name, objective_options=objective_options, guide_options=guide_options)
            continue
        with pytest.raises(ZooError, match=says) as e:
            check_combination(model, guide, name, objective_options=objective_options, guide_options=guide_options)
        assert "\n" not in str(e.value)


def test_a_structured_guide_is_taken_by_arm_and_disarm_and_refused_by_multi_sample_disarm():
    model = build_model("sbn", 6, layers=(3, 2))
    for name in ("arm", "disarm"):
        check_combination(model, "amortized", name, guide_options={"structured": True})
    with pytest.raises(ZooError, match="drop structured") as e:
        check_combination(model, "amortized", "iwae", objective_options={"estimator": "disarm"},
                          guide_options={"structured": True})
    assert "\n" not in str(e.value)


def test_rebar_and_relax_still_take_one_layer():
    for name in ("rebar", "relax"):
        with pytest.raises(ZooError, match="takes one layer of binary latents") as e:
            check_combination(build_model("sbn", 6, layers=(3, 2)), "amortized", name)
        assert "\n" not in str(e.value)


def exact_iwae(model, guide, x, K):
    """The K-sample IWAE bound summed over the data, exactly: E over K independent b_k ~ q of log (1/K) sum_k w(b_k),
    a sum over all (2^3)^K tuples of the 3-bit SBN's configurations."""
    bs = torch.tensor(list(itertools.product((0.0, 1.0), repeat=3)), dtype=x.dtype)          # [8, 3]
    _, raw = guide.encode(x)
    log_q = torch.distributions.Bernoulli(logits=raw["z1"][None]).log_prob(bs[:, None, :]).sum(-1)     # [8, B]
    log_p = torch.distributions.Bernoulli(logits=model.prior_logits).log_prob(bs).sum(-1)[:, None] \
        + torch.distributions.Bernoulli(logits=model.decoder(bs)[:, None, :]).log_prob(x).sum(-1)  # [8, B]
    log_w = log_p - log_q
    tuples = torch.tensor(list(itertools.product(range(8), repeat=K)))                         # [8^K, K]
    prob = log_q[tuples].sum(1).exp()                                                          # [8^K, B]
    return (prob * (torch.logsumexp(log_w[tuples], 1) - math.log(K))).sum()


@pytest.mark.parametrize("K", [2, 3])
def test_multi_sample_disarm_is_unbiased_for_the_exact_iwae_gradient(K):
    """``iwae --estimator disarm``: the mean of S calls (each R independent K-sample estimates per datum) lies within
    Z standard errors of the exact gradient of the K-sample bound in every coordinate. Leaving out the bound's
    direct dependence on the guide (through log q inside w: no zero mean here, unlike the ELBO's) is caught."""
    model, guide, x = _setup()
    params = list(model.parameters()) + list(guide.parameters())
    loss = -exact_iwae(model, guide, x, K)
    exact = torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, params)])
    n_model = sum(p.numel() for p in model.parameters())
    objective = build_objective("iwae", K, estimator="disarm")
    pyro.set_rng_seed(1)
    draws = torch.stack([_grads(objective, model, guide, x.repeat(R, 1))[0] / R for _ in range(S)])
    mean, se = draws.mean(0), draws.std(0) / math.sqrt(S)
    varies = se > 0
    assert torch.allclose(mean[~varies], exact[~varies], atol=1e-12)
    z = ((mean - exact)[varies] / se[varies]).abs()
    assert z.max() < Z, f"|estimate - exact| / se: {z.tolist()}"
    # the ELBO's rule applied here: the guide's direct term dropped as if it had zero mean
    direct = _direct_term(model, guide, x, K, n_model)
    assert (((exact - direct) - exact)[varies] / se[varies]).abs().max() > Z + 4


def _direct_term(model, guide, x, K, n_model):
    """The exact guide gradient of E[log (1/K) sum_k w(b_k)] through log q inside w only (the samples held)."""
    bs = torch.tensor(list(itertools.product((0.0, 1.0), repeat=3)), dtype=x.dtype)
    _, raw = guide.encode(x)
    log_q = torch.distributions.Bernoulli(logits=raw["z1"][None]).log_prob(bs[:, None, :]).sum(-1)
    log_p = torch.distributions.Bernoulli(logits=model.prior_logits).log_prob(bs).sum(-1)[:, None] \
        + torch.distributions.Bernoulli(logits=model.decoder(bs)[:, None, :]).log_prob(x).sum(-1)
    tuples = torch.tensor(list(itertools.product(range(8), repeat=K)))
    prob = log_q.detach()[tuples].sum(1).exp()
    value = -(prob * (torch.logsumexp((log_p.detach() - log_q)[tuples], 1) - math.log(K))).sum()
    grads = torch.autograd.grad(value, list(guide.parameters()))
    return torch.cat([torch.zeros(n_model, dtype=x.dtype)] + [g.reshape(-1) for g in grads])
