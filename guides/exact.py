"""The exact posterior as a guide: the oracle for tests.

For models with a closed-form posterior (pPCA, factor analysis) this guide samples
z ~ p(z | x) using the model's own parameters. Then log p(x, z) - log q(z | x) =
log p(x) for *every* sample, so every bound equals log p(x) with zero variance:
the sharpest test of an objective or of the evaluation harness.

The guide has no parameters of its own. Trained jointly with the model, gradients
reach the model's parameters through q as well, as in the E-step of EM.

Example::

    >>> import torch
    >>> from zoo.models import PPCA
    >>> g = Exact(PPCA(x_dim=5, latent_dim=2))
"""
from __future__ import annotations

from typing import Optional

import pyro

from guides.base import ZooGuide
from zoo.core.contract import Borrowed
from zoo.core.components import GUIDES
from zoo.core.errors import ZooError
from zoo.core.plates import data_plate

__all__ = ["Exact"]


@GUIDES.register("exact", description="the closed-form posterior p(z|x), the oracle (pPCA, FA)")
class Exact(ZooGuide):
    """q(z | x) = p(z | x), read from ``model.posterior(x)``."""

    family = "exact"
    supports = ("real",)
    supports_globals = False
    borrows_model = True

    def __init__(self, model, num_data: Optional[int] = None):
        super().__init__(model, num_data)
        # Borrowed, not a submodule: the model's parameters belong to the model, not to the
        # guide (they must not appear twice in an optimizer or a checkpoint).
        self._oracle = Borrowed(model)

    @classmethod
    def check(cls, model) -> None:
        super().check(model)
        if not model.has_posterior:
            raise ZooError(f"the 'exact' guide needs a closed-form posterior, which "
                           f"{model.display_name} does not have; use it with ppca or fa")

    def forward(self, x, idx=None, N=None):
        posterior = self._oracle.module.posterior(x)
        with data_plate(x, idx, N):
            for s in self.sites:
                pyro.sample(s.name, posterior[s.name])
