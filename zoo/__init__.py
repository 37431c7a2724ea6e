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
"""
import importlib
import sys

try:
    import pyro                 # and torch: the first ~2 s of every pyro-zoo command
except KeyboardInterrupt:       # Ctrl-C before the CLI's own handler exists: one line, not 50 of traceback
    sys.stderr.write("pyro-zoo: stopped by SIGINT while loading torch and Pyro; nothing was written\n")
    raise SystemExit(130) from None

pyro.settings.set(module_local_params=True)

__version__ = "0.1.0"

_API = {
    "load_dataset": "zoo.data", "build_model": "zoo.registry", "build_guide": "zoo.registry",
    "build_objective": "zoo.registry", "check_combination": "zoo.rules", "fit": "zoo.training.loop",
    "refit_local_guide": "zoo.training.refit", "evaluate": "zoo.evaluation.harness",
    "RunConfig": "zoo.experiments.config", "train_run": "zoo.experiments.run", "evaluate_run": "zoo.experiments.run",
    "compare": "zoo.experiments.compare", "ZooError": "zoo.core.errors", "from_pyro": "zoo.models.pyro_model",
    "from_pyro_guide": "guides.user",
}
__all__ = sorted(_API)


def __getattr__(name):
    # Imported lazily so that `import zoo` stays light and free of import cycles.
    if name in _API:
        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'zoo' has no attribute {name!r}")
