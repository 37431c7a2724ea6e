"""The multimodal VAE (Wu & Goodman 2018): one latent z shared by several views of a datum.

Generative story, for each datum n = 1..N with views v = 1..V (an image and its label, or the
top and bottom halves of an image)::

    z_n ~ N(0, I_d)
    x_{n,v} | z_n ~ Bernoulli(sigmoid(f_v(z_n)))           a binary view (pixels)
    x_{n,v} | z_n ~ Categorical(softmax(f_v(z_n)))          a categorical view (a label, one-hot)

    p(x_n, z_n) = p(z_n) prod_v p(x_{n,v} | z_n)

Each view has its own decoder f_v, a tanh MLP. The views are the model's declaration
``views`` (:class:`~zoo.core.views.ViewSite`: name, columns of the data row, likelihood), read
from the dataset (``digits_labels``, ``mnist_halves``) or given as ``NAME:SIZE:LIKELIHOOD``
strings. Because the views are conditionally independent given z, any subset S of them has the
marginal p(x_S) = int p(z) prod_{v in S} p(x_v | z) dz, and ``model(x, idx, N, views=S)`` scores
x_S alone: this is what lets one view be predicted from another, p(x_u | x_v), and lets the
product-of-experts guide (``guides/poe.py``) be trained on subsets (Wu & Goodman's sub-sampled
objective, which lives in that guide's :meth:`~guides.poe.ProductOfExperts.training_model`).

Without ``views`` the model splits x into two Bernoulli halves, ``x1`` and ``x2``.

Reference:
    M. Wu and N. Goodman, "Multimodal Generative Models for Scalable Weakly-Supervised
    Learning", NeurIPS 2018, https://arxiv.org/abs/1802.05335.

Example::

    >>> m = MVAE(x_dim=74, views=("image:64:bernoulli", "label:10:categorical"), latent_dim=2, hidden=(16,))
    >>> [v.name for v in m.views], m.sample(3).shape
    (['image', 'label'], torch.Size([3, 74]))
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Optional, Sequence, Tuple

import pyro
import pyro.distributions as dist
import torch

from zoo.core.contract import LatentSite, ZooModel
from zoo.core.errors import ZooError
from zoo.core.nn import mlp
from zoo.core.params import register_module
from zoo.core.plates import data_plate
from zoo.core.components import MODELS, Options, option
from zoo.core.views import ViewSite, ViewsLikelihood, check_view_data, check_views, parse_views

__all__ = ["MVAE"]


@dataclass
class MVAEOptions(Options):
    test_options: ClassVar[dict] = {"latent_dim": 3, "hidden": (16,)}

    views: Optional[Tuple[str, ...]] = option(
        None, "the views of a datum in column order, NAME:SIZE:LIKELIHOOD each, likelihood bernoulli or "
        "categorical (default: the dataset's views)", checkpoint="shape",
        cli={"nargs": "+", "metavar": "NAME:SIZE:LIKELIHOOD"})
    latent_dim: int = option(20, "number of latent units", minimum=1, checkpoint="shape")
    hidden: Tuple[int, ...] = option((200, 200), "decoder hidden sizes, from z to x (mvae: of each view's decoder)",
                                     minimum=1, checkpoint="shape")


@MODELS.register("mvae", options=MVAEOptions, description="multimodal VAE (Wu & Goodman 2018): one Gaussian z, "
                 "one tanh MLP decoder and likelihood per view (image halves, image + label); needs a dataset "
                 "with views")
class MVAE(ZooModel):
    """A shared Gaussian latent and one decoder per view.

    Arguments:
        x_dim: columns of a data row (all views together).
        views: the views, ``NAME:SIZE:LIKELIHOOD`` strings in column order (default: two Bernoulli halves).
        latent_dim: d, the number of latent units (default 20).
        hidden: each view's decoder hidden sizes, from z to the view (default (200, 200)).
    """

    likelihood = "bernoulli"           # every view's columns are 0/1 (one-hot for a categorical view)

    def __init__(self, x_dim: int, views: Optional[Sequence[str]] = None, latent_dim: int = 20,
                 hidden: Sequence[int] = (200, 200)):
        super().__init__(x_dim)
        if views:
            self._views = check_views(parse_views(views), x_dim, owner="mvae")
        else:
            half = x_dim // 2
            if half < 1:
                raise ZooError(f"mvae splits a row into two views and the data have {x_dim} column; give views")
            self._views = (ViewSite("x1", 0, half), ViewSite("x2", half, x_dim))
        self.latent_dim = int(latent_dim)
        self.hidden = tuple(int(h) for h in hidden)
        self.decoders = torch.nn.ModuleDict({v.name: mlp((self.latent_dim, *self.hidden, v.size))
                                             for v in self._views})
        self.register_buffer("prior_loc", torch.zeros(self.latent_dim))

    @property
    def views(self) -> Tuple[ViewSite, ...]:
        return self._views

    @property
    def latents(self):
        return (LatentSite("z", (self.latent_dim,), "real"),)

    def model(self, x=None, idx=None, N=None, views: Optional[Sequence[str]] = None):
        """p(z) prod_{v in S} p(x_v | z), S = ``views`` (default: all of them)."""
        register_module("mvae", self)
        with data_plate(x, idx, N, device=self.prior_loc.device):
            z = pyro.sample("z", dist.Normal(self.prior_loc, 1.0).to_event(1))
            # a view outside S is not decoded: the subset ELBOs of training pay only for what they score
            logits = [self.decoders[v.name](z) if views is None or v.name in views else None for v in self.views]
            pyro.sample("x", ViewsLikelihood(self.views, logits, observed=views), obs=x)

    def validate_data(self, x: torch.Tensor, what: str = "data") -> None:
        super().validate_data(x, what)
        check_view_data(x, self.views, what, self.display_name)
