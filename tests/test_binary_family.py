"""The discrete latent family as a part (zoo.core.latents, ``--latent bernoulli``): the vae and the hvae take binary
latents through the same option as the sphere and hyperbolic space, without a flag of their own.

Checked against exact answers: the prior is uniform on {0, 1}^d (log p(z) = -d log 2 for every z); log p(x) of a
vae with d = 4 binary units is a sum over the 16 configurations, written out here from the decoder's logits, which
the model's enumeration and the importance-sampled estimate (whose stated standard error must cover it) are
compared against.
"""
import itertools
import math

import pyro.poutine as poutine
import pytest
import torch

import zoo
from exact_coverage import assert_is_covers_exact_log_px
from zoo.core.errors import ZooError
from zoo.registry import build_guide, build_model


def binary_vae(seed=0):
    torch.manual_seed(seed)
    return build_model("vae", 16, latent_dim=4, hidden=(8,), latent="bernoulli").double()


def hand_log_px(model, x):
    """log (1/16) sum_z prod_i Bernoulli(x_i; sigmoid(f(z)_i)), over the 16 z in {0, 1}^4."""
    configurations = torch.tensor(list(itertools.product([0.0, 1.0], repeat=4)), dtype=torch.float64)
    logits = model.decoder(configurations)                                           # [16, D]
    log_lik = (x[:, None] * torch.nn.functional.logsigmoid(logits)
               + (1 - x[:, None]) * torch.nn.functional.logsigmoid(-logits)).sum(-1)  # [n, 16]
    return torch.logsumexp(log_lik, -1) - math.log(16)


def data(n=8, seed=0):
    return (torch.rand(n, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(seed)) < 0.4).double()


def test_the_site_is_binary_and_its_prior_uniform():
    model = binary_vae()
    assert [(s.name, s.support, s.event_shape) for s in model.latents] == [("z", "binary", (4,))]
    trace = poutine.trace(model.model).get_trace(None, N=50)
    z = trace.nodes["z"]["value"]
    assert set(z.unique().tolist()) <= {0.0, 1.0}
    assert torch.allclose(trace.nodes["z"]["fn"].log_prob(z), torch.full((50,), -4 * math.log(2), dtype=torch.float64))


def test_log_px_by_enumeration_is_the_hand_written_sum():
    model, x = binary_vae(), data()
    with torch.no_grad():
        assert torch.allclose(model.log_marginal(x), hand_log_px(model, x), atol=1e-10)


def test_importance_sampling_covers_the_exact_log_px_as_often_as_its_se_says():
    """Over 20 models, the IS estimate (amortized guide, K = 300) lies within 2 stated standard errors of the exact
    mean log p(x) in at least 80% of them (a 95% interval), with z-scores averaging near 0."""
    assert_is_covers_exact_log_px(binary_vae, hand_log_px, data)


def test_the_hvae_takes_a_binary_top_layer_over_its_gaussian_ones():
    model = build_model("hvae", 16, layers=(3, 2), hidden=(8,), transition_hidden=(4,), latent="bernoulli")
    assert [(s.name, s.support) for s in model.latents] == [("z2", "binary"), ("z1", "real")]
    guide = build_guide("amortized", model, structured=True)
    x = data().float()
    zoo.fit(model, guide, zoo.build_objective("tracegraph"), x, epochs=2, batch_size=4, lr=1e-2, progress=False)
    result = zoo.evaluate(model, guide, x, num_samples=50, iwae_k=5, psis=False)
    assert math.isfinite(result["elbo"]) and result["elbo"] <= result["log_likelihood"] + 1.0


def test_what_binary_latents_cannot_take_is_refused_in_one_line():
    with pytest.raises(ZooError, match="drop --prior, or use --latent gaussian"):
        build_model("vae", 16, latent_dim=4, hidden=(8,), latent="bernoulli", prior="vampprior")
    model = build_model("vae", 16, latent_dim=4, hidden=(8,), latent="bernoulli")
    for guide in ("iaf", "ladder", "hamiltonian"):
        with pytest.raises(ZooError, match="pick a guide that supports them"):
            build_guide(guide, model)
    from zoo.rules import check_combination
    with pytest.raises(ZooError) as e:
        check_combination(model, "amortized", "tracemeanfield")
    assert "\n" not in str(e.value)
    check_combination(model, "amortized", "tracegraph")
    check_combination(model, "amortized", "disarm")
    check_combination(model, "relaxed", "iwae")
