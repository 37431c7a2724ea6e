"""pyro-zoo: latent-variable models, interchangeable guides, SVI objectives, one harness.

The Python API mirrors the CLI::

    import zoo
    data = zoo.load_dataset("digits")
    model = zoo.build_model("vae", data.x_dim, latent_dim=2)
    guide = zoo.build_guide("iaf", model)
    zoo.fit(model, guide, zoo.build_objective("iwae", particles=5), data.train,
            epochs=20, batch_size=100, lr=1e-3)
    print(zoo.evaluate(model, guide, data.test)["log_likelihood"])

Importing the zoo switches on Pyro's ``module_local_params`` setting: parameters live
in their modules (``model.parameters()``, ``guide.parameters()``, ``state_dict``)
rather than in Pyro's global param store, so several models can live in one
process (a compare grid, a test session) without sharing parameters by name.

``import zoo`` itself loads neither torch nor Pyro (they cost seconds, and ``pyro-zoo --help``
and ``pyro-zoo list`` need neither): the setting is switched on as Pyro loads, whoever imports it.
"""
import importlib
import importlib.abc
import importlib.util
import sys


class _SwitchOnAsPyroLoads(importlib.abc.MetaPathFinder):
    """Finds Pyro as the other finders do, with one step added to its loading: the setting.

    Pyro's ``PyroModule`` reads the setting when a module is made, so it must be on before the first
    one exists, that is, as soon as Pyro has loaded, not at the zoo's first use.
    """

    def find_spec(self, name, path=None, target=None):
        if name != "pyro":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.loader is not None:
            load = spec.loader.exec_module

            def exec_module(module):
                try:
                    load(module)
                except BaseException:               # Ctrl-C mid-import: the next import of Pyro tries again
                    sys.meta_path.insert(0, self)
                    raise
                module.settings.set(module_local_params=True)
            spec.loader.exec_module = exec_module
        return spec


if "pyro" in sys.modules:
    sys.modules["pyro"].settings.set(module_local_params=True)
else:
    sys.meta_path.insert(0, _SwitchOnAsPyroLoads())

__version__ = "0.1.0"

_API = {
    "load_dataset": "zoo.data", "build_model": "zoo.registry", "build_guide": "zoo.registry",
    "build_objective": "zoo.registry", "check_combination": "zoo.rules", "fit": "zoo.training.loop",
    "refit_local_guide": "zoo.training.refit", "RefitSchedule": "zoo.training.refit",
    "evaluate": "zoo.evaluation.harness", "EvaluationSettings": "zoo.evaluation.harness",
    "RunConfig": "zoo.experiments.config", "train_run": "zoo.experiments.run", "evaluate_run": "zoo.experiments.run",
    "compare": "zoo.experiments.compare", "Grid": "zoo.experiments.compare", "Execution": "zoo.experiments.compare",
    "ZooError": "zoo.core.errors", "from_pyro": "zoo.models.pyro_model",
    "from_pyro_guide": "guides.user", "load_trained": "zoo.experiments.trained", "trained_names": "zoo.core.catalogue",
    "open_trained": "zoo.experiments.trained",
}
__all__ = sorted(_API)


def __getattr__(name):
    # Imported lazily so that `import zoo` stays light and free of import cycles.
    if name in _API:
        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'zoo' has no attribute {name!r}")
