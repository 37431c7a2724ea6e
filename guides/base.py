"""What every guide family shares: how it reads a model's latent declaration.

A guide family is a :class:`ZooGuide` subclass. It is built from a model (and the
number of data, for per-datum families), it samples every latent site the model
declares inside the same ``"data"`` plate as the model, and it refuses, with a
:class:`~zoo.errors.ZooError` that names what it supports, any model whose latents
it cannot represent. Guides never look at a model's internals beyond
``model.latents``, ``model.x_dim`` and, for the oracle ``exact`` guide,
``model.posterior``.
"""
from __future__ import annotations

from typing import Optional, Sequence

from pyro.nn import PyroModule

from zoo.errors import ZooError
from zoo.models.base import ZooModel

__all__ = ["ZooGuide"]


class ZooGuide(PyroModule):
    """Base class of guide families.

    Class attributes:
        family: the registry name.
        supports: latent supports this family can represent.
        amortized: ``False`` for per-datum (non-amortized) guides, whose parameters
            are tables indexed by ``idx``; such a guide must be refitted on new data.
        reparameterized: whether every sample it draws is reparameterizable.
    """

    family: str = ""
    supports: Sequence[str] = ("real",)
    amortized: bool = True
    reparameterized: bool = True

    def __init__(self, model: ZooModel, num_data: Optional[int] = None):
        super().__init__()
        self.check(model)
        self.x_dim = model.x_dim
        self.sites = tuple(model.latents)
        self.num_data = num_data

    @classmethod
    def check(cls, model: ZooModel) -> None:
        """Raise :class:`ZooError` if this family cannot represent ``model``'s latents."""
        bad = [s for s in model.latents if s.support not in cls.supports]
        if bad:
            desc = ", ".join(f"{s.name!r} ({s.support})" for s in bad)
            raise ZooError(f"the {cls.family!r} guide supports {'/'.join(cls.supports)} latents only, "
                           f"but {type(model).__name__} has {desc}; pick a guide that supports them "
                           f"(see 'pyro-zoo list')")
