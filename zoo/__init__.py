"""pyro-zoo: latent-variable models, interchangeable guides, SVI objectives, one harness.

Importing the zoo switches on Pyro's ``module_local_params`` setting: parameters live
in their modules (``model.parameters()``, ``guide.parameters()``, ``state_dict``)
rather than in Pyro's global param store, so several models can live in one
process (a compare grid, a test session) without sharing parameters by name.
"""
import pyro

pyro.settings.set(module_local_params=True)

__version__ = "0.1.0"
