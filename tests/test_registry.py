"""The one registry: components describe themselves, and the CLI, the config and the checks are read from it."""
import dataclasses
import sys
import textwrap

import pytest

from zoo.cli import build_parser, main
from zoo.core.components import (DATASETS, GUIDES, MODELS, OBJECTIVES, REGISTRIES, Options, OptionError, Registry,
                               option)
from zoo.experiments.config import RunConfig, flat_name, resumable_changes


def test_every_component_declares_typed_options_with_help():
    for kind, registry in REGISTRIES.items():
        assert len(registry) >= 4, kind
        for component in registry.values():
            assert component.description, (kind, component.name)
            defaults = component.options()            # every option has a default, and the defaults pass the checks
            for f in component.options.specs():
                assert f.metadata.get("help"), (kind, component.name, f.name)
                assert hasattr(defaults, f.name)


def test_the_cli_has_exactly_one_flag_per_registered_option_and_run_setting():
    """Generated, not hand-kept: a new option appears as a flag with no other change."""
    parser = build_parser()
    train = parser._subparsers._group_actions[0].choices["train"]
    flags = {s for a in train._actions for s in a.option_strings}
    for kind in ("model", "guide", "objective"):
        for name, (f, _owners) in REGISTRIES[kind].options_fields().items():
            assert "--" + flat_name(f).replace("_", "-") in flags, (kind, name)
    for f in dataclasses.fields(RunConfig):
        if f.metadata and f.metadata.get("cli") is not False:
            assert "--" + f.name.replace("_", "-") in flags, f.name


def test_a_new_option_needs_no_other_change(monkeypatch):
    """Register a model with an option no other component has: the CLI grows a flag and routes it."""
    @dataclasses.dataclass
    class WidgetOptions(Options):
        widget_width: int = option(7, "the widget's width", minimum=1)

    with MODELS.temporary():
        MODELS.register("widget_test_model", options=WidgetOptions, description="a test model")(
            lambda x_dim, widget_width: ("widget", x_dim, widget_width))
        assert MODELS.build("widget_test_model", 5, widget_width=3) == ("widget", 5, 3)
        parser = build_parser()
        args = parser.parse_args(["train", "widget_test_model", "--widget-width", "4"])
        assert getattr(args, "model:widget_width") == 4
        config = RunConfig.make(model="widget_test_model", widget_width=4, guide="amortized")
        assert config.model_options == {"widget_width": 4}
        with pytest.raises(OptionError, match="widget_width must be a positive integer"):
            RunConfig.make(model="widget_test_model", widget_width=0)
    assert "widget_test_model" not in MODELS


def test_a_temporary_scope_forgets_what_was_registered_in_it_and_nothing_else():
    """Registrations inside ``Registry.temporary()`` are gone after it, an error inside included; the
    components registered before it are all still there, in their order."""
    before = MODELS.items()
    with pytest.raises(RuntimeError, match="inside the scope"):
        with MODELS.temporary():
            MODELS.register("scoped_test_model", description="a test model")(lambda x_dim: x_dim)
            assert MODELS.build("scoped_test_model", 3) == 3 and "scoped_test_model" in list(MODELS)
            raise RuntimeError("inside the scope")
    assert "scoped_test_model" not in MODELS and MODELS.items() == before
    with MODELS.temporary():                      # the name is free again
        MODELS.register("scoped_test_model", description="another test model")(lambda x_dim: -x_dim)
        assert MODELS.build("scoped_test_model", 3) == -3


@pytest.mark.parametrize("argv, message", [
    (["train", "vae", "--flows", "2"], "--flows applies to the 'iaf' guide only, not 'amortized'"),
    (["train", "vae", "--latent-dim", "0"], "--latent-dim must be a positive integer, got 0"),
    (["train", "vae", "--likelihood", "poisson"], "invalid choice: 'poisson'"),
    (["train", "vae", "--guide", "iaf", "--flows", "0"], "--flows must be a positive integer, got 0"),
    (["train", "sbn", "--layers", "8,0"], "--layers must be numbers of at least 1, got [8, 0]"),
    (["train", "vae", "--guide-hidden", "abc"], "expected comma-separated integers"),
    (["train", "categorical_vae", "--num-classes", "1"], "--num-classes must be at least 2, got 1"),
    (["train", "vae", "--lr", "inf"], "--lr must be a finite number, got inf"),
    (["compare", "vae", "--guides", "amortized,meanfield", "--objectives", "elbo", "--flows", "2"],
     "--flows applies to the 'iaf' guide only, not 'amortized', 'meanfield'"),
])
def test_the_generated_cli_rejects_a_wrong_option_in_one_line_with_exit_2(argv, message, tmp_path, capsys):
    out = tmp_path / "out"
    code = main(argv + ["--out", str(out), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and err.startswith("pyro-zoo: error:"), err
    assert message in err
    assert not out.exists()


def test_the_library_speaks_api_names_and_the_cli_translates_them():
    with pytest.raises(OptionError) as info:
        GUIDES.build("iaf", MODELS.build("vae", 6, latent_dim=2, hidden=(4,)), None, num_flows=0)
    assert str(info.value) == "num_flows must be a positive integer, got 0" and info.value.kind == "guide"
    from zoo.flags import translate
    assert translate(info.value) == "--flows must be a positive integer, got 0"


def test_config_round_trips_and_reads_the_flat_configs_of_old_checkpoints():
    config = RunConfig.make(model="sbn", layers=[8, 4], guide="relaxed", temperature_min=0.2, objective="iwae",
                            particles=3, epochs=2)
    assert RunConfig.from_json(config.to_json()) == config
    old = {"model": "sbn", "guide": "relaxed", "objective": "iwae", "layers": [8, 4], "temperature_min": 0.2,
           "particles": 3, "epochs": 2, "straight_through": False, "alpha": 0.0, "insomnia": 1.0,
           "latent_dim": None, "flows": None}
    assert RunConfig.from_json(old) == config


def test_configs_stored_before_the_bound_estimator_split_still_load():
    """Every objective used to take alpha and insomnia and ignore them unless it used them: a stored config
    with them on another objective loads without them; an objective that uses them keeps them."""
    old_nested = {"model": "vae", "objective": "dreg", "objective_options": {"particles": 3, "alpha": 0.5,
                                                                             "insomnia": 0.2}}
    assert RunConfig.from_json(old_nested) == RunConfig.make(model="vae", objective="dreg", particles=3)
    old_flat = {"model": "vae", "objective": "iwae", "alpha": 0.5, "insomnia": 1.0, "particles": None}
    assert RunConfig.from_json(old_flat).objective_options == {}
    for objective, key in (("renyi_pyro", "alpha"), ("rws", "insomnia")):
        config = RunConfig.from_json({"model": "sbn", "objective": objective, key: 0.5})
        assert config.objective_options == {key: 0.5} and getattr(config.resolved("objective"), key) == 0.5
    with pytest.raises(OptionError, match="alpha applies to the 'renyi', 'renyi_pyro' objectives only"):
        RunConfig.make(model="vae", objective="iwae", alpha=0.5)       # a new config is checked strictly


def test_resumable_changes_are_declared_by_the_components():
    changes = resumable_changes(RunConfig.make(model="sbn", layers=[4], guide="relaxed"))
    assert {"epochs", "lr", "lr_decay", "eval_samples"} <= set(changes["run"])
    assert "batch_size" not in changes["run"] and "seed" not in changes["run"]
    assert set(changes["guide"]) == {"temperature", "temperature_min", "anneal_rate"}
    assert changes["model"] == ()


def test_installed_packages_add_components_through_an_entry_point(tmp_path, monkeypatch):
    """A package that declares ``[pyro_zoo.models] name = module`` is loaded on the registry's first lookup."""
    (tmp_path / "zoo_plugin_pkg").mkdir()
    (tmp_path / "zoo_plugin_pkg" / "__init__.py").write_text(textwrap.dedent("""
        from zoo.core.components import Registry
        import tests_registry_probe
        tests_registry_probe.registry.register("plugged", description="from a plug-in")(lambda x_dim: x_dim)
    """))
    dist = tmp_path / "zoo_plugin_pkg-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: zoo-plugin-pkg\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[pyro_zoo.test_models]\nplugged = zoo_plugin_pkg\n")
    probe = type(sys)("tests_registry_probe")
    probe.registry = Registry("model", entry_points="pyro_zoo.test_models")
    monkeypatch.setitem(sys.modules, "tests_registry_probe", probe)
    monkeypatch.syspath_prepend(str(tmp_path))
    assert "plugged" in probe.registry and probe.registry.build("plugged", 3) == 3


def test_a_broken_plugin_is_one_clear_error(tmp_path, monkeypatch):
    dist = tmp_path / "broken_zoo_plugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-zoo-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[pyro_zoo.test_broken]\nbroken = no_such_module_anywhere\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    from zoo.core.errors import ZooError
    with pytest.raises(ZooError, match="plug-in 'broken'.*failed to load: ModuleNotFoundError"):
        list(Registry("model", entry_points="pyro_zoo.test_broken"))


def test_unknown_names_suggest_the_nearest():
    from zoo.core.errors import ZooError
    for registry, typo, right in ((MODELS, "vea", "vae"), (GUIDES, "amortised", "amortized"),
                                  (OBJECTIVES, "iwea", "iwae"), (DATASETS, "digit", "digits")):
        with pytest.raises(ZooError, match=f"Did you mean '{right}'"):
            registry[typo]
