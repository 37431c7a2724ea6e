"""Every (model, guide, objective) triple the registry calls valid trains and lowers its loss; every kind of
refusal is given in one line.

The grid is tested as ideas, not as a cross: every pair of components that can meet (model × guide,
model × objective, guide × objective) trains in at least one valid cell (:func:`combinations.pairwise_cover`,
158 of the 560 valid cells), and each reason a component refuses a cell for is tested once
(:func:`combinations.each_refusal_once`). The README's test command runs the refusals and one valid cell per
objective (spread over the models); the rest of the cover is marked ``slow`` and runs in CI's slow step."""
from collections import Counter

import pytest

from combinations import (assert_refused_in_one_line, assert_trains_and_lowers_its_loss, each_refusal_once, grid,
                          pairs, pairwise_cover)
from zoo.core.errors import ZooError
from zoo.registry import MODELS, build_guide, build_model
from zoo.rules import check_combination, compatibility

VALID, INVALID = grid()


def valid_sample(valid) -> list:
    """One cell per objective, each from the model the sample has used least so far (ties: the grid's order)."""
    used, sample = Counter(), []
    for objective in dict.fromkeys(o for _, _, o in valid):
        cell = min((c for c in valid if c[2] == objective), key=lambda c: used[c[0]])
        used[cell[0]] += 1
        sample.append(cell)
    return sample


SAMPLE = valid_sample(VALID)
COVER = pairwise_cover(VALID, first=SAMPLE)
REFUSALS = each_refusal_once(INVALID)


def _slow_unless(cells, sample):
    return [c if c in sample else pytest.param(*c, marks=pytest.mark.slow) for c in cells]


def test_registry_has_the_issue_s_grid():
    assert {"ppca", "fa", "vae", "sbn", "categorical_vae"} <= set(MODELS)
    assert ("vae", "iaf", "iwae") in VALID and ("ppca", "exact", "renyi") in VALID
    assert ("sbn", "amortized", "enum") in VALID and ("categorical_vae", "relaxed", "iwae") in VALID
    assert ("sbn", "amortized", "tracemeanfield") not in VALID and ("sbn", "iaf", "elbo") not in VALID
    assert any(m == "vae" and g == "exact" for m, g, o, _ in INVALID)


def test_every_component_s_test_options_are_valid_options():
    """What the grid builds each model and guide with is accepted by the component as it stands."""
    from zoo.registry import GUIDES, OBJECTIVES
    for registry in (MODELS, GUIDES, OBJECTIVES):
        for _name, component in registry.items():
            component.resolve(component.options.test_options)


@pytest.mark.parametrize("model_name,guide_name,objective_name", _slow_unless(COVER, SAMPLE))
def test_valid_triple_trains_and_lowers_its_loss(model_name, guide_name, objective_name):
    assert_trains_and_lowers_its_loss(model_name, guide_name, objective_name)


def test_the_fast_sample_covers_every_objective_and_the_cover_every_pair():
    assert {o for _, _, o in SAMPLE} == {o for _, _, o in VALID} and len(SAMPLE) == len({o for _, _, o in VALID})
    assert len({m for m, _, _ in SAMPLE}) >= 5                       # spread over the models, not all on one
    assert set(SAMPLE) <= set(COVER) <= set(VALID) and len(COVER) == len(set(COVER)) < len(VALID) / 3
    assert set().union(*map(pairs, COVER)) == set().union(*map(pairs, VALID))


def test_each_refusal_is_one_component_s_rule_and_the_grid_meets_every_one():
    """Every component that refuses a cell is tested refusing it, for each rule it refuses by; a rule's kind
    does not depend on the model's or the cell's names (a kind per cell would be the cross again)."""
    subjects = {(o if not why.startswith("the ") else g) for _, g, o, why in INVALID}
    assert {g if why.startswith("the ") else o for _, g, o, why in REFUSALS} == subjects
    assert len(REFUSALS) < len({why for *_, why in INVALID}) / 3


@pytest.mark.parametrize("model_name,guide_name,objective_name,why", REFUSALS)
def test_invalid_triple_gets_a_clear_error(model_name, guide_name, objective_name, why):
    assert_refused_in_one_line(model_name, guide_name, objective_name)


def test_enum_refuses_a_latent_space_too_large_to_sum():
    with pytest.raises(ZooError, match=r"1\.61e\+60 latent configurations.*use tracegraph"):
        check_combination(build_model("sbn", 16), "amortized", "enum")


def test_unknown_names_suggest_the_nearest():
    with pytest.raises(ZooError, match="Did you mean 'amortized'"):
        build_guide("amortised", build_model("vae", 16))
    with pytest.raises(ZooError, match="Did you mean 'ppca'"):
        build_model("pcca", 16)


def test_unknown_options_are_refused():
    with pytest.raises(ZooError, match="hidden is not an option of the model 'ppca'"):
        build_model("ppca", 16, hidden=(4,))
    with pytest.raises(ZooError, match="num_flows is not an option of the guide 'amortized'"):
        build_guide("amortized", build_model("vae", 16), num_flows=3)


@pytest.mark.parametrize("model_name,dataset,options", [("ppca", "digits-gray", {"latent_dim": 2}),
                                                        ("sbn", "digits", {"layers": (4, 2)})])
def test_compare_all_is_the_grid_the_registry_calls_valid(model_name, dataset, options):
    """``compare --guides all --objectives all`` trains exactly the cells ``pyro-zoo list`` calls valid
    for the model, and skips the others with their reason; 'all' beside a name is refused."""
    from zoo.data import load_dataset
    from zoo.experiments.compare import checked_cells
    from zoo.experiments.config import RunConfig
    data = load_dataset(dataset)
    base = RunConfig(model=model_name, dataset=dataset, epochs=1, model_options=options)
    cells, skipped = checked_cells(model_name, ["all"], ["all"], base, data)
    trained = {(c.guide, c.objective) for c in cells}
    valid = {(g, o) for m, g, o, why in compatibility(x_dim=data.x_dim, model_options={model_name: options})
             if m == model_name and why is None}
    assert trained == valid and len(valid) > 5
    assert len(skipped) == sum(1 for m, *_ in compatibility(x_dim=data.x_dim, model_options={model_name: options})
                               if m == model_name) - len(valid)
    with pytest.raises(ZooError, match="stands alone"):
        checked_cells(model_name, ["all", "amortized"], ["elbo"], base, data)


def test_a_grid_with_several_invalid_cells_names_them_all(capsys):
    """``compare sbn --guides amortized,iaf --objectives elbo,iwae`` named only amortized × iwae, the first
    of its three cells that cannot run; one invalid cell keeps its whole message, with what to use instead. A
    reason that refuses several cells is said once, after the cells it refuses (it was repeated per cell)."""
    from zoo.cli import main
    code = main(["compare", "sbn", "--guides", "amortized,iaf", "--objectives", "elbo,iwae", "--dataset", "digits"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("pyro-zoo: error: 3 cells of the grid do not fit sbn: ")
    for cell in ("amortized × iwae (", "iaf × elbo, iaf × iwae ("):
        assert cell in err[0], err
    assert err[0].count("supports real latents only") == 1 and err[0].count("reparameterizable") == 1, err
    assert "amortized × elbo" not in err[0]
    code = main(["compare", "sbn", "--guides", "amortized,meanfield", "--objectives", "iwae,dreg,stl", "--dataset",
                 "digits"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].count("needs a reparameterizable guide") == 1, err
    for cell in ("amortized × iwae", "amortized × dreg", "amortized × stl", "meanfield × iwae", "meanfield × dreg",
                 "meanfield × stl"):
        assert cell in err[0], err
    assert main(["compare", "sbn", "--guides", "iaf", "--objectives", "elbo", "--dataset", "digits"]) == 2
    assert "guides that fit this model: amortized" in capsys.readouterr().err
