"""The categorical latent family as a part (zoo.core.latents, ``--latent categorical --latent-classes C``): the vae and
the hvae take d one-hot latents of C classes through the same option as the sphere, hyperbolic space and binary
latents.

Checked against exact answers: the prior is uniform (log p(z) = -d log C for every z); log p(x) of a vae with d = 2
variables of C = 3 classes is a sum over the 9 configurations, written out here from the decoder's logits, which
the model's enumeration and the importance-sampled estimate (whose stated standard error must cover it) are
compared against; and a vae with the categorical family is the categorical VAE (Jang et al. 2017) given the same
decoder weights.
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

D, C = 2, 3


def categorical_vae(seed=0):
    torch.manual_seed(seed)
    return build_model("vae", 16, latent_dim=D, hidden=(8,), latent="categorical", latent_classes=C).double()


def configurations():
    """The C^d values of z, one-hot, ``[C^d, d, C]``."""
    eye = torch.eye(C, dtype=torch.float64)
    return torch.stack([torch.stack([eye[k] for k in ks]) for ks in itertools.product(range(C), repeat=D)])


def hand_log_px(model, x):
    """log (1/C^d) sum_z prod_i Bernoulli(x_i; sigmoid(f(z)_i)), f reading the d one-hot vectors side by side."""
    logits = model.decoder(configurations().flatten(-2))                             # [C^d, D]
    log_lik = (x[:, None] * torch.nn.functional.logsigmoid(logits)
               + (1 - x[:, None]) * torch.nn.functional.logsigmoid(-logits)).sum(-1)  # [n, C^d]
    return torch.logsumexp(log_lik, -1) - D * math.log(C)


def data(n=8, seed=0):
    return (torch.rand(n, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(seed)) < 0.4).double()


def test_the_site_is_one_hot_and_its_prior_uniform():
    model = categorical_vae()
    assert [(s.name, s.support, s.event_shape, s.num_classes) for s in model.latents] == [("z", "categorical", (D, C), C)]
    trace = poutine.trace(model.model).get_trace(None, N=50)
    z = trace.nodes["z"]["value"]
    assert z.shape == (50, D, C) and torch.equal(z.sum(-1), torch.ones(50, D, dtype=z.dtype))
    assert set(z.unique().tolist()) <= {0.0, 1.0}
    assert torch.allclose(trace.nodes["z"]["fn"].log_prob(z), torch.full((50,), -D * math.log(C), dtype=torch.float64))
    assert model.decoder[0].in_features == D * C


def test_log_px_by_enumeration_is_the_hand_written_sum():
    model, x = categorical_vae(), data()
    with torch.no_grad():
        assert torch.allclose(model.log_marginal(x), hand_log_px(model, x), atol=1e-10)


def test_a_vae_with_categorical_latents_is_the_categorical_vae():
    """The same generative story: given the categorical VAE's decoder weights, the vae's exact log p(x) is its."""
    model, x = categorical_vae(), data()
    reference = build_model("categorical_vae", 16, num_variables=D, num_classes=C, hidden=(8,)).double()
    model.decoder.load_state_dict(reference.decoder.state_dict())
    with torch.no_grad():
        assert torch.allclose(model.log_marginal(x), reference.log_marginal(x), atol=1e-10)


def test_importance_sampling_covers_the_exact_log_px_as_often_as_its_se_says():
    """Over 20 models, the IS estimate (amortized guide, K = 300) lies within 2 stated standard errors of the exact
    mean log p(x) in at least 80% of them (a 95% interval), with z-scores averaging near 0."""
    assert_is_covers_exact_log_px(categorical_vae, hand_log_px, data)


@pytest.mark.parametrize("guide_name,objective", [("amortized", "tracegraph"), ("relaxed", "elbo"),
                                                  ("amortized", "rloo")])
def test_score_function_and_relaxed_training_raise_the_exact_log_px(guide_name, objective):
    """Trained by a score-function objective or the Gumbel-softmax guide, the model's exact log p(x) of its own
    training data rises."""
    model, x = categorical_vae(3), data(32, seed=3)
    guide = build_guide(guide_name, model).double()
    with torch.no_grad():
        before = model.log_marginal(x).mean().item()
    zoo.fit(model, guide, zoo.build_objective(objective, 4 if objective == "rloo" else 1), x, epochs=60,
            batch_size=16, lr=3e-2, progress=False)
    with torch.no_grad():
        after = model.log_marginal(x).mean().item()
    assert after > before + 0.3, (before, after)


def test_the_hvae_takes_a_categorical_top_layer_over_its_gaussian_ones():
    model = build_model("hvae", 16, layers=(3, 2), hidden=(8,), transition_hidden=(4,), latent="categorical",
                        latent_classes=4)
    assert [(s.name, s.support, s.event_shape) for s in model.latents] == [("z2", "categorical", (2, 4)),
                                                                           ("z1", "real", (3,))]
    assert model.transitions[0][0].in_features == 2 * 4
    guide = build_guide("amortized", model, structured=True)
    x = data().float()
    zoo.fit(model, guide, zoo.build_objective("tracegraph"), x, epochs=2, batch_size=4, lr=1e-2, progress=False)
    result = zoo.evaluate(model, guide, x, num_samples=50, iwae_k=5, psis=False)
    assert math.isfinite(result["elbo"]) and result["elbo"] <= result["log_likelihood"] + 1.0


def test_what_categorical_latents_cannot_take_is_refused_in_one_line():
    with pytest.raises(ZooError, match="drop --prior, or use --latent gaussian"):
        build_model("vae", 16, latent_dim=D, hidden=(8,), latent="categorical", prior="vampprior")
    with pytest.raises(ZooError, match="drop --latent-classes, or add --latent categorical"):
        build_model("vae", 16, latent_dim=D, hidden=(8,), latent_classes=4)
    with pytest.raises(ZooError, match="at least 2"):
        build_model("vae", 16, latent_dim=D, hidden=(8,), latent="categorical", latent_classes=1)
    model = build_model("vae", 16, latent_dim=D, hidden=(8,), latent="categorical", latent_classes=C)
    for guide in ("iaf", "ladder", "hamiltonian"):
        with pytest.raises(ZooError, match="pick a guide that supports them"):
            build_guide(guide, model)
    from zoo.rules import check_combination
    check_combination(model, "amortized", "tracegraph")
    check_combination(model, "relaxed", "iwae")
