"""Product-of-experts guide for models with several views (Wu & Goodman 2018).

One amortized Gaussian expert per view, q_v(z | x_v) = N(mu_v(x_v), diag(sigma_v(x_v)^2)), and the
prior expert p(z) = N(0, I). For any subset S of the views the guide is their product,
renormalized, which for Gaussians is Gaussian in closed form (precision-weighted)::

    q(z | x_S)  ∝  p(z) prod_{v in S} q_v(z | x_v)  =  N(z; mu_S, diag(sigma_S^2))
    1 / sigma_S^2 = 1 + sum_{v in S} 1 / sigma_v^2
    mu_S          = sigma_S^2 * sum_{v in S} mu_v / sigma_v^2

so a datum with any views missing is still encoded: q(z | x_1) = p(z) q_1(z | x_1) renormalized.
The prior expert is N(0, I), the prior of the ``mvae`` model; each real latent site of the model
gets its own product. The guide reads only the model's declarations (``latents``, ``views``) and
refuses models without views.

**Training: the sub-sampled objective.** Trained on the joint ELBO alone, the single-view experts
are never asked to encode a datum alone. Wu & Goodman therefore add the ELBO of each view on its
own; for V views (two here) the objective is::

    L(x) = ELBO(x_1, .., x_V) + sum_v ELBO(x_v)
    ELBO(x_S) = E_{q(z|x_S)}[ sum_{v in S} log p(x_v | z) ] - KL(q(z | x_S) || p(z))

It lives in the model/guide pair, not in a new objective: in training mode :meth:`training_model`
hands the objective a model that samples the joint sites ``z``, ``x`` and, per view v, a copy of
the model on that view alone with its sites renamed ``z|v``, ``x|v``; the guide samples ``z`` from
q(z | x_1..x_V) and ``z|v`` from q(z | x_v). One trace then has log-weight
log w = log w(x_1..x_V) + sum_v log w(x_v), so every objective of ``zoo/objectives`` trains it as
it is: ``elbo`` maximizes exactly L(x) (each term with its own sample of z), ``iwae`` with K
particles the bound E[log (1/K) sum_k prod_terms w_k] <= log p(x) + sum_v log p(x_v). With
``joint_only`` the guide trains on ELBO(x_1, .., x_V) alone (an ablation). Validation and the
evaluation harness put the guide in eval mode, where it samples ``z`` only, so they report the
joint bound and log p(x) of the model itself.

**KL warm-up is needed** (``--kl-warmup EPOCHS``), as in Wu & Goodman's training. At the start the
decoders ignore z, and the KL term pulls q(z | x_S) to the prior; a product of experts gets there
by driving every expert's precision 1 / sigma_v^2 to 0, and then d mu_S / d mu_v =
(1 / sigma_v^2) / (1 / sigma_S^2) is nearly 0 too, so no information reaches the decoder and the
run stays collapsed (no active units on ``digits_labels`` without warm-up, while the amortized guide on
the same model keeps several). Wu & Goodman also weight each view's likelihood (lambda_v); here every
view has weight 1.

Usage: ``python -m zoo train mvae --guide poe --dataset digits_labels --epochs 40 --kl-warmup 20``.

Reference:
    M. Wu and N. Goodman, "Multimodal Generative Models for Scalable Weakly-Supervised
    Learning", NeurIPS 2018, https://arxiv.org/abs/1802.05335 (equations 3 and 5).

Example::

    >>> from zoo.models import MVAE
    >>> g = ProductOfExperts(MVAE(x_dim=8, latent_dim=2, hidden=(4,)))
    >>> import torch
    >>> loc, scale = g.product(torch.zeros(3, 8), ["x1"])["z"]
    >>> loc.shape, scale.shape
    (torch.Size([3, 2]), torch.Size([3, 2]))
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Callable, Dict, Optional, Sequence, Tuple

import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import torch
import torch.nn.functional as F
from pyro.poutine.messenger import Messenger
from torch import nn

from guides.base import ZooGuide
from zoo.core.contract import Borrowed, ZooModel
from zoo.core.errors import ZooError
from zoo.core.nn import mlp
from zoo.core.params import register_module
from zoo.core.plates import data_plate
from zoo.core.components import GUIDES, Options, option

__all__ = ["ProductOfExperts", "gaussian_product", "RenameSites"]


def gaussian_product(locs: Sequence[torch.Tensor], scales: Sequence[torch.Tensor]
                     ) -> Tuple[torch.Tensor, torch.Tensor]:
    """The renormalized product of diagonal Gaussian densities N(mu_i, sigma_i^2) and N(0, 1).

    Returns (mu, sigma) of the product, which is Gaussian: precisions add, and the mean is the
    precision-weighted mean of the experts' means (the prior expert's mean is 0).
    """
    precisions = [s.pow(-2) for s in scales]
    precision = 1.0 + sum(precisions)
    loc = sum(p * m for p, m in zip(precisions, locs)) / precision
    return loc, precision.rsqrt()


class RenameSites(Messenger):
    """Rename sample sites (``{"z": "z|image"}``): one copy of a model or guide per view in one trace.

    Only the named sites change; the ``data`` plate and its subsample site keep their names, so
    every copy stays in the contract's plate.
    """

    def __init__(self, names: Dict[str, str]):
        super().__init__()
        self.names = dict(names)

    def _process_message(self, msg):
        if msg["type"] == "sample" and msg["name"] in self.names:
            msg["name"] = self.names[msg["name"]]


def view_site(name: str, view: str) -> str:
    """The name of site ``name`` in the single-view copy for ``view``."""
    return f"{name}|{view}"


@dataclass
class PoEOptions(Options):
    hidden: Optional[Tuple[int, ...]] = option(None, "encoder hidden sizes, from x (default: mirror the decoder; "
                                               "poe: of each view's expert)", cli={"flag": "guide-hidden"}, minimum=1,
                                               checkpoint="shape")
    joint_only: bool = option(False, "train on the joint ELBO(x1, x2) only, without Wu & Goodman's single-view "
                              "terms ELBO(x1) + ELBO(x2)")


@GUIDES.register("poe", options=PoEOptions, description="product of experts q(z | x_S) ∝ p(z) prod_{v in S} q(z | "
                 "x_v), one Gaussian MLP expert per view, for models with views (mvae); trains on Wu & Goodman's "
                 "sub-sampled objective")
class ProductOfExperts(ZooGuide):
    """Gaussian experts per view, combined with the prior expert in closed form.

    Arguments:
        model: a zoo model that declares two or more ``views``.
        num_data: unused (the guide is amortized); accepted so all families build alike.
        hidden: each expert's hidden sizes, from its view (default: the decoder's, reversed).
        joint_only: train on the joint ELBO alone (default ``False``: the sub-sampled objective).
    """

    family = "poe"
    supports = ("real",)
    supports_globals = False
    encodes_views = True

    def __init__(self, model: ZooModel, num_data: Optional[int] = None, hidden: Optional[Sequence[int]] = None,
                 joint_only: bool = False):
        super().__init__(model, num_data)
        self.views = tuple(model.views)
        model_hidden = getattr(model, "hidden", None)
        self.hidden = tuple(hidden) if hidden else (tuple(reversed(model_hidden)) if model_hidden else (200,))
        self.joint_only = bool(joint_only)
        out = sum(2 * s.numel for s in self.sites)
        self.experts = nn.ModuleDict({v.name: mlp((v.size, *self.hidden, out)) for v in self.views})

    @classmethod
    def check(cls, model: ZooModel) -> None:
        super().check(model)
        if len(model.views) < 2:
            raise ZooError(f"the 'poe' guide multiplies one expert per view, and {model.display_name} declares "
                           f"{len(model.views)} views; use it with a model that has views (mvae), or another guide")

    def experts_of(self, x: torch.Tensor, views: Sequence[str]) -> Dict[str, Tuple[list, list]]:
        """Per latent site, the (locs, scales) of the experts of ``views``."""
        out = {s.name: ([], []) for s in self.sites}
        for v in self.views:
            if v.name not in views:
                continue
            raw = self.experts[v.name](v.of(x))
            start = 0
            for s in self.sites:
                loc, s_raw = raw[..., start:start + 2 * s.numel].chunk(2, dim=-1)
                start += 2 * s.numel
                out[s.name][0].append(loc)
                out[s.name][1].append(F.softplus(s_raw) + 1e-5)
        return out

    def product(self, x: torch.Tensor, views: Optional[Sequence[str]] = None
                ) -> Dict[str, Tuple[torch.Tensor, torch.Tensor]]:
        """(mu_S, sigma_S) per latent site, flat ``[B, numel]``, for the views S (default: all)."""
        names = [v.name for v in self.views] if views is None else list(views)
        unknown = [n for n in names if n not in self.experts]
        if unknown or not names:
            raise ZooError(f"encode one or more of the views {[v.name for v in self.views]}, got {names}")
        return {name: gaussian_product(locs, scales) for name, (locs, scales) in self.experts_of(x, names).items()}

    def _sample_sites(self, x: torch.Tensor, views: Optional[Sequence[str]]) -> None:
        products = self.product(x, views)
        for s in self.sites:
            loc, scale = products[s.name]
            pyro.sample(s.name, dist.Normal(loc.reshape(loc.shape[:-1] + s.event_shape),
                                            scale.reshape(scale.shape[:-1] + s.event_shape)
                                            ).to_event(len(s.event_shape)))

    def forward(self, x, idx=None, N=None, views: Optional[Sequence[str]] = None):
        """Sample z ~ q(z | x_S), S = ``views`` (default: all); in training, also each single view's copy."""
        register_module("poe", self)
        with data_plate(x, idx, N):
            self._sample_sites(x, views)
            if self.subsampled and views is None:
                for v in self.views:
                    with RenameSites({s.name: view_site(s.name, v.name) for s in self.sites}):
                        self._sample_sites(x, (v.name,))

    @property
    def subsampled(self) -> bool:
        """Whether the guide samples the single-view copies now (training, unless ``joint_only``)."""
        return self.training and not self.joint_only

    def given(self, views: Sequence[str]) -> Callable:
        """The guide q(z | x_S) for the views S only, as a callable ``(x, idx=None, N=None)``."""
        return functools.partial(self, views=tuple(views))

    def training_model(self, model: ZooModel):
        """The model the objective sees in training: the joint model and one single-view copy per view.

        ``p(x, z) prod_v p(x_v, z|v)`` over independent copies ``z|v`` of the latent, so that the
        log-weight against this guide is the sum of the joint and the single-view log-weights
        (the module docstring). Made once per model, so a ``--jit`` trace keyed on it is reused.
        """
        if self.joint_only:
            return model
        cached = self.__dict__.get("_subsampled_model")
        if cached is None or cached[0].module is not model:
            self._subsampled_model = cached = (Borrowed(model), functools.partial(_subsampled_model, Borrowed(model)))
        return cached[1]


def _subsampled_model(model: Borrowed, x=None, idx=None, N=None):
    """The sub-sampled model: the joint model, then each view alone with its sites renamed.

    Each copy enters the ``data`` plate again; its subsample site (the minibatch indices, the same
    each time) is hidden from the trace, which holds one site per name.
    """
    model = model.module
    model(x, idx, N)
    for v in model.views:
        names = {s.name: view_site(s.name, v.name) for s in model.latents}
        names["x"] = view_site("x", v.name)
        with poutine.block(hide=["data"]), RenameSites(names):
            model.model(x, idx, N, views=(v.name,))
