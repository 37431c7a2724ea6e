"""ARSM (zoo.objectives.arsm): unbiased for the exact ELBO gradient of categorical latents, which enumeration gives.

A categorical VAE with 2 variables of 3 classes over 6 pixels and an amortized guide: the ELBO sums over 3^2
configurations, and the ``enum`` objective's gradient is its exact gradient. As in ``test_arm.py``: the mean of S
calls on the data replicated R times lies within Z = 4.5 standard errors (the calls' own spread) of the exact
gradient in every coordinate, and the guide's gradient doubled (an estimator off by a factor) lies far outside.
"""
import math

import pyro
import pytest
import torch

from test_arm import _grads as grads_and_count, assert_unbiased
from zoo.core.errors import ZooError
from zoo.objectives.arsm import pair_index, swap_pairs
from zoo.registry import build_guide, build_model, build_objective
from zoo.rules import check_combination

Z, S, R, N = 4.5, 150, 50, 4


def _setup(classes=3):
    torch.manual_seed(0)
    pyro.set_rng_seed(0)
    model = build_model("categorical_vae", 6, num_variables=2, num_classes=classes, hidden=(5,)).double()
    guide = build_guide("amortized", model, hidden=(5,)).double()
    x = torch.bernoulli(torch.full((N, 6), 0.4, dtype=torch.float64))
    return model, guide, x


def _grads(objective, model, guide, x):
    return grads_and_count(objective, model, guide, x)[0]


@pytest.mark.parametrize("classes", [3, pytest.param(4, marks=pytest.mark.slow)])
def test_arsm_is_unbiased_for_the_enumerated_elbo(classes):
    model, guide, x = _setup(classes)
    exact = _grads(build_objective("enum"), model, guide, x)
    n_model = sum(p.numel() for p in model.parameters())
    objective = build_objective("arsm", 1)
    pyro.set_rng_seed(1)
    draws = torch.stack([_grads(objective, model, guide, x.repeat(R, 1)) / R for _ in range(S)])
    assert_unbiased(draws.mean(0), draws.std(0) / math.sqrt(S), exact, n_model)


def test_the_pseudo_actions_are_the_unordered_swaps():
    perms, index = swap_pairs(4), pair_index(4)
    assert perms.shape == (1 + 6, 4) and perms[0].tolist() == [0, 1, 2, 3]
    for m in range(4):
        for j in range(4):
            p = perms[index[m, j]].tolist()
            expected = list(range(4))
            expected[m], expected[j] = expected[j], expected[m]
            assert p == expected


@pytest.mark.parametrize("model_name,options,guide,says", [
    ("vae", {}, "amortized", "takes one layer of categorical latents"),
    ("sbn", {"layers": (3,)}, "amortized", "takes one layer of categorical latents"),
    ("categorical_vae", {"num_variables": 2, "num_classes": 3}, "relaxed", "does not sample"),
])
def test_other_latents_and_guides_are_refused_in_one_line(model_name, options, guide, says):
    with pytest.raises(ZooError, match=says) as e:
        check_combination(build_model(model_name, 6, **options), guide, "arsm")
    assert "\n" not in str(e.value)


@pytest.mark.slow
def test_the_jit_step_of_arsm_is_captured_and_follows_the_eager_one(tmp_path, capsys):
    """ARSM's step is one surrogate and one backward pass with no value read in Python, so --jit captures it (no
    eager fallback) and, drawing the same numbers, ends an epoch where the eager run does."""
    from zoo.experiments.config import RunConfig
    from zoo.experiments.run import train_run
    common = dict(model="categorical_vae", num_variables=4, num_classes=3, guide="amortized", objective="arsm",
                  dataset="digits", epochs=2, batch_size=100, eval_samples=5, iwae_k=2, seed=1)
    jit = train_run(RunConfig.make(**common, jit=True), tmp_path / "jit", progress=False)
    eager = train_run(RunConfig.make(**common), tmp_path / "eager", progress=False)
    assert [h["loss"] for h in jit["history"]] == pytest.approx([h["loss"] for h in eager["history"]], rel=1e-5)
    out = capsys.readouterr().out
    assert "captured and compiled" in out and "runs this step eagerly" not in out
