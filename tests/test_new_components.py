"""A new model, guide family or objective is one file plus one import line, and the suite covers it.

Three scratch components, each one file in ``tests/fixtures/`` written as a newcomer would write it
(a Bernoulli mixture, an amortized guide with a linear encoder, Pyro's Trace_ELBO as a bound of its
own), are imported inside a registry scope (:meth:`zoo.core.components.Registry.temporary`), so they
register themselves through the ordinary decorators and are gone after this module. With them:

- they get the checks of ``test_combinations.py`` where they meet the other components: every pair a
  scratch component makes with another trains in a valid cell that lowers its loss, and each reason a
  cell with one of them is refused for is given in one line (the cells without them are that module's);
- ``pyro-zoo list`` lists them and the combinations they make, ``pyro-zoo train`` trains and
  evaluates one, in process, and the user guide's generated tables (``pyro-zoo report``) document them.
"""
import contextlib
import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest

from combinations import (assert_refused_in_one_line, assert_trains_and_lowers_its_loss, each_refusal_once, grid,
                          pairs, pairwise_cover)
from zoo.cli import main
from zoo.core.components import GUIDES, MODELS, OBJECTIVES, REGISTRIES

FIXTURES = Path(__file__).parent / "fixtures"
#: file -> (registry, the name it registers)
SCRATCH = {"bernoulli_mixture.py": (MODELS, "bernoulli_mixture"), "linear_encoder.py": (GUIDES, "linear_encoder"),
           "plain_elbo.py": (OBJECTIVES, "plain_elbo")}
NEW = {name for _, name in SCRATCH.values()}


@contextlib.contextmanager
def scratch_components():
    """The registries with the scratch components in them, as their import registers them; as before after."""
    with contextlib.ExitStack() as scope:
        for registry in REGISTRIES.values():
            scope.enter_context(registry.temporary())
        for file in SCRATCH:
            name = f"scratch_{Path(file).stem}"
            spec = importlib.util.spec_from_file_location(name, FIXTURES / file)
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            scope.callback(sys.modules.pop, name)
            spec.loader.exec_module(module)
        yield


def involves_scratch(cell) -> bool:
    model, guide, objective = cell[:3]
    return model in NEW or guide in NEW or objective in NEW


def new_pair(pair) -> bool:
    return pair[1] in NEW or pair[3] in NEW


with scratch_components():
    VALID, ALL_INVALID = grid()
    ALL_VALID = [c for c in VALID if involves_scratch(c)]
    ALL_INVALID = [c for c in ALL_INVALID if involves_scratch(c)]
    #: the scratch components together, then every pair a scratch component makes with another component
    #: (registered or scratch), each trained once
    VALID = pairwise_cover(ALL_VALID, first=[("bernoulli_mixture", "linear_encoder", "plain_elbo")], keep=new_pair)
    #: each reason a cell with a scratch component is refused for, once
    INVALID = each_refusal_once(ALL_INVALID)


@pytest.fixture(autouse=True, scope="module")
def registered():
    with scratch_components():
        yield


def test_the_scratch_components_register_and_make_valid_cells_of_every_kind():
    assert all(name in registry for registry, name in SCRATCH.values())
    assert ("bernoulli_mixture", "linear_encoder", "plain_elbo") in VALID
    assert ("bernoulli_mixture", "amortized", "enum") in ALL_VALID and ("vae", "linear_encoder", "iwae") in ALL_VALID
    assert ("bernoulli_mixture", "iaf", "plain_elbo") in [c[:3] for c in ALL_INVALID]
    new_pairs = {p for cell in ALL_VALID for p in pairs(cell) if new_pair(p)}
    assert new_pairs <= set().union(*map(pairs, VALID)) and len(VALID) < len(ALL_VALID) / 3
    assert {"bernoulli_mixture", "linear_encoder", "plain_elbo"} <= {name for cell in INVALID for name in cell[:3]}


@pytest.mark.parametrize("model_name,guide_name,objective_name", VALID)
@pytest.mark.slow
def test_valid_triple_trains_and_lowers_its_loss(model_name, guide_name, objective_name):
    assert_trains_and_lowers_its_loss(model_name, guide_name, objective_name)


@pytest.mark.parametrize("model_name,guide_name,objective_name,why", INVALID)
def test_invalid_triple_gets_a_clear_error(model_name, guide_name, objective_name, why):
    assert_refused_in_one_line(model_name, guide_name, objective_name)


def test_list_shows_them_and_their_combinations(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for name in NEW:
        assert f"  {name} " in out, name
    line = next(s for s in out.splitlines() if s.split()[:3] == ["bernoulli_mixture", "×", "linear_encoder"])
    assert "plain_elbo" in line and "enum" in line and "iwae" not in line.split()


def test_the_user_guide_s_generated_tables_document_them():
    from zoo.registry import registry_markdown
    tables = registry_markdown()
    for name in NEW:
        assert f"`{name}`" in tables, name


def test_train_through_the_cli(tmp_path, capsys):
    """``pyro-zoo train bernoulli_mixture --guide linear_encoder --objective plain_elbo``, each with an option of
    its own on the command line: the run's log p(x) is the model's exact one (a mixture enumerates)."""
    out = tmp_path / "run"
    code = main(["train", "bernoulli_mixture", "--components", "3", "--guide", "linear_encoder", "--encoder-width",
                 "8", "--objective", "plain_elbo", "--estimator", "trace", "--particles", "2", "--epochs", "1",
                 "--dataset", "digits", "--eval-samples", "10", "--iwae-k", "5", "--no-progress", "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    config = json.loads((out / "config.json").read_text())
    assert (config["model"], config["guide"], config["objective"]) == ("bernoulli_mixture", "linear_encoder",
                                                                       "plain_elbo")
    results = json.loads((out / "results.json").read_text())
    assert math.isfinite(results["log_likelihood"]) and results["elbo"] <= results["log_likelihood"] + 1e-4
