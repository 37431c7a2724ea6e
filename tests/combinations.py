"""The (model, guide, objective) grid the registry names, and the two checks every cell of it gets.

Read by ``test_combinations.py`` (the registered components) and ``test_new_components.py`` (the
same checks with scratch components added). Nothing here names a component: each is built with
the options its options class declares for tests (``test_options``), its data are binary or real
as its model's likelihood says, and an objective runs at its defaults (the grid ``pyro-zoo list``
shows) with K = 3 particles, or its estimator's minimum where that is larger.
"""
import re

import pyro
import pytest
import torch

from zoo.core.errors import ZooError
from zoo.objectives import objective_capabilities
from zoo.registry import GUIDES, MODELS, build_guide, build_model, build_objective
from zoo.rules import check_combination, compatibility
from zoo.training.loop import fit

#: Adam's step for every cell, then a 4x smaller one for the estimators too noisy for it with per-datum
#: tables (measured on pPCA: Pyro's RWS, which pools the minibatch's N/B-scaled log-weights into one weight
#: per particle, 1812 -> 2002 at 2e-2 and 1812 -> 1793 at 5e-3; REINFORCE on Gaussian latents, 1817 -> 1970
#: and 1817 -> 1771).
STEPS = (2e-2, 5e-3)
X_DIM = 16


def model_options(name):
    return dict(MODELS[name].options.test_options)


def guide_options(name):
    return dict(GUIDES[name].options.test_options)


def grid():
    """(valid cells, invalid cells with their reason) over every registered component."""
    rows = compatibility(x_dim=X_DIM, model_options={m: model_options(m) for m in MODELS})
    return ([(m, g, o) for m, g, o, why in rows if why is None],
            [(m, g, o, why) for m, g, o, why in rows if why is not None])


def pairs(cell) -> set:
    """The three pairs a cell makes: (model, guide), (model, objective), (guide, objective)."""
    model, guide, objective = cell[:3]
    return {("model", model, "guide", guide), ("model", model, "objective", objective),
            ("guide", guide, "objective", objective)}


def pairwise_cover(valid, first=(), keep=lambda pair: True) -> list:
    """Valid cells, beginning with ``first``, in which every pair that a valid cell makes (of those ``keep``
    keeps) appears at least once: the grid as ideas. A defect in one component shows with any partner, and one
    in how two components meet shows in their pair; the full cross adds only a third partner to each pair.
    Greedy: each next cell is the one that covers the most pairs not yet covered (ties: the grid's order)."""
    chosen = list(dict.fromkeys(first))
    need = {p for cell in valid for p in pairs(cell) if keep(p)} - {p for cell in chosen for p in pairs(cell)}
    while need:
        cell = max(valid, key=lambda c: len(pairs(c) & need))
        chosen.append(cell)
        need -= pairs(cell)
    return chosen


def refusal_kind(cell) -> tuple:
    """(what refuses, the reason with the cell's names and the advice taken out): the component whose
    declaration refuses the cell (the guide, where the message opens with the guide, else the objective) and
    the rule it meets, so that one cell per kind tests each rule as each component applies it."""
    model_name, guide, objective, why = cell
    model = build_model(model_name, X_DIM, **model_options(model_name))
    reason = re.split(r"; (?:use|pick) |guides that fit this model", why)[0]
    for name, mark in ((model.display_name, "<model>"), (repr(guide), "<guide>"), (repr(objective), "<objective>")):
        reason = reason.replace(name, mark)
    # a site's name goes, its support stays: "z (categorical)" and "z (real)" are two conditions of one rule
    reason = re.sub(r"(?:'[^']*'|\b\w+) \(((?:real|binary|categorical|sphere|hyperbolic)[^)]*)\)", r"(\1)", reason)
    reason = re.sub(r"'[^']*'|\d[\d.e+]*", "_", reason)
    return (guide if reason.startswith("the <guide>") else objective), reason


def each_refusal_once(invalid) -> list:
    """The first invalid cell of each :func:`refusal_kind`."""
    return list(dict((refusal_kind(cell), cell) for cell in reversed(invalid)).values())[::-1]


def data_for(model):
    """64 data of the model's dimension that its likelihood scores: binary for a Bernoulli likelihood, else
    real data from a rank-2 linear map plus noise."""
    torch.manual_seed(0)
    if model.likelihood == "bernoulli":
        return (torch.rand(64, model.x_dim) < 0.3).float()
    return torch.randn(64, 2) @ torch.randn(2, model.x_dim) + 0.3 * torch.randn(64, model.x_dim)


def mean_loss(objective, model, guide, x, seed, reps=8):
    """The training objective as fit() sees it, averaged over a fixed set of draws."""
    pyro.set_rng_seed(seed)
    scored = guide.training_model(model) if hasattr(guide, "training_model") else model
    with torch.no_grad():
        return sum(objective.loss(scored, guide, x) for _ in range(reps)) / reps


def assert_trains_and_lowers_its_loss(model_name, guide_name, objective_name):
    """40 epochs of fit() lower the cell's mean loss, at the first of :data:`STEPS` that does."""
    particles = max(3, objective_capabilities(objective_name).min_particles)
    losses = []
    x = data_for(build_model(model_name, X_DIM, **model_options(model_name)))
    for lr in STEPS:
        pyro.set_rng_seed(0)
        model = build_model(model_name, X_DIM, **model_options(model_name))
        guide = build_guide(guide_name, model, num_data=x.shape[0], **guide_options(guide_name))
        objective = build_objective(objective_name, particles)
        before = mean_loss(objective, model, guide, x, seed=1)
        fit(model, guide, objective, x, epochs=40, batch_size=32, lr=lr, progress=False)
        after = mean_loss(objective, model, guide, x, seed=1)
        losses.append((lr, before, after))
        if after < before:
            return
    raise AssertionError(f"the loss did not go down at any step (lr, before, after): {losses}")


def assert_refused_in_one_line(model_name, guide_name, objective_name):
    """check_combination refuses the cell in one line that names the guide or objective and says what to use."""
    model = build_model(model_name, X_DIM, **model_options(model_name))
    with pytest.raises(ZooError) as e:
        check_combination(model, guide_name, objective_name)
    message = str(e.value)
    assert "\n" not in message and (guide_name in message or objective_name in message)
    assert " use " in message or "guides that fit this model" in message      # it says what to do instead
    if "guides that fit this model" in message:                               # the guide cannot be built at all
        with pytest.raises(ZooError):
            build_guide(guide_name, model, num_data=10)
