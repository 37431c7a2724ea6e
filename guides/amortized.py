"""Amortized guide: an MLP encoder shared by all data.

For each latent site, with h = g_phi(x) an MLP (the "encoder"; tanh, relu, gated or linear units, by default
the model's own ``activation``, see :mod:`zoo.core.nn`)::

    q_phi(z | x) = N(z; W_mu h + b_mu, diag(softplus(W_s h + b_s)^2))    real latents
    q_phi(z | x) = prod_k Bernoulli(z_k; sigmoid(W h + b)_k)              binary latents (score function)
    q_phi(z | x) = prod_j OneHotCategorical(z_j; softmax((W h + b)_j))    categorical latents (score function)

Training the encoder amortizes inference: one network maps any x to its approximate
posterior, so unseen data need no refit.

For a model with several latent sites the family has two modes. Mean-field (the default)
gives every site its own head on h: q(z1 | x) q(z2 | x). Structured (``structured=True``)
follows the posterior's dependencies, a faithful inverse of the model's graph
(:func:`~zoo.core.contract.posterior_order`, NaMI, Webb et al. 2018): each site is sampled after
the sites the posterior couples it with, and its head also reads their sampled values. For
``z2 -> z1 -> x`` the guide is q(z1 | x) q(z2 | z1, x), the factorization of the exact posterior
p(z1 | x) p(z2 | z1) (Burda et al.'s two-layer IWAE encoder is of this form); for M2, whose y and
z are independent a priori but both parents of x, it is q(y | x) q(z | x, y) (Kingma et al. 2014),
which the prior's arrows alone would leave mean-field. A conditioned head is a one-hidden-layer MLP
on [h, z_conditioning]. The default encoder mirrors the model's
decoder, which for the VAE gives Burda et al.'s 784-200-200-50. Discrete sites are
not reparameterizable: their gradients come from the score function (``elbo``,
``tracegraph`` with baselines, ``rws``) or from exact enumeration (``enum``).

References: D. P. Kingma and M. Welling, "Auto-Encoding Variational Bayes",
ICLR 2014, https://arxiv.org/abs/1312.6114; A. Mnih and K. Gregor, "Neural
Variational Inference and Learning in Belief Networks", ICML 2014; Y. Burda, R. Grosse and
R. Salakhutdinov, "Importance Weighted Autoencoders", ICLR 2016, https://arxiv.org/abs/1509.00519.

Example::

    >>> import torch
    >>> from zoo.core.latents import LatentLayer
    >>> from zoo.models import VAE
    >>> g = Amortized(VAE(64, LatentLayer(dim=2), hidden=(32,)))
    >>> h, raw = g.encode(torch.zeros(3, 64))
    >>> raw["z"].shape
    torch.Size([3, 4])
    >>> from zoo.models import SBN
    >>> [s.name for s in Amortized(SBN(x_dim=6, layers=(3, 2)), structured=True).order]
    ['z1', 'z2']
"""
from __future__ import annotations

from typing import Dict, Optional, Sequence, Tuple

import pyro
import torch
from torch import nn

from dataclasses import dataclass

from zoo.core.errors import ZooError
from guides.base import BaselineOptions, EncoderOptions, ZooGuide, raw_size, site_distribution
from guides.globals import GlobalGuideOptions
from zoo.core.contract import LatentSite, posterior_order
from zoo.core.components import GUIDES
from zoo.core.plates import data_plate
from zoo.core.params import register_module
from zoo.core.nn import mlp

__all__ = ["Amortized", "default_encoder_hidden", "default_encoder_activation"]


def default_encoder_hidden(model) -> Tuple[int, ...]:
    """Mirror the decoder's hidden sizes when the model has them, else one layer of 200."""
    hidden = getattr(model, "hidden", None)
    return tuple(reversed(hidden)) if hidden else (200,)


def default_encoder_activation(model) -> str:
    """The model's own ``activation`` when it has one (vae, hvae), else tanh."""
    return getattr(model, "activation", None) or "tanh"


@dataclass
class AmortizedOptions(EncoderOptions, BaselineOptions, GlobalGuideOptions):
    pass


@GUIDES.register("amortized", options=AmortizedOptions, description="MLP encoder giving a diagonal Normal, a "
                 "vMF or Power Spherical on the sphere, a wrapped normal on H^d, or Bernoulli/categorical logits "
                 "(score function)")
class Amortized(ZooGuide):
    """MLP encoder giving, per latent site, a diagonal Normal or independent Bernoulli/categorical logits.

    Arguments:
        model: the zoo model.
        num_data: unused (the guide is amortized); accepted so all families build alike.
        hidden: encoder hidden sizes, from x to the heads (default: mirror the decoder).
        baseline: see :class:`~guides.base.ZooGuide`.
        structured: condition each site on what the posterior couples it with, the faithful inverse of
            the model's graph (:meth:`structure`): its children, the co-parents of its children and
            observations, and the fill-in of variable elimination (default ``False``: mean-field
            across sites).
    """

    family = "amortized"
    supports = ("real", "binary", "categorical", "sphere", "hyperbolic")
    enumerable = True

    def __init__(self, model, num_data: Optional[int] = None, hidden: Optional[Sequence[int]] = None,
                 baseline: Optional[str] = None, structured: bool = False, activation: Optional[str] = None,
                 global_guide: Optional[str] = None):
        super().__init__(model, num_data, baseline, global_guide)
        self.hidden = tuple(hidden) if hidden else default_encoder_hidden(model)
        self.activation = activation or default_encoder_activation(model)
        self.structured = bool(structured)
        #: the order the guide samples the sites in, and what each site's q reads besides x
        self.order, self.conditioning = self.structure(model) if self.structured else \
            (self.sites, {s.name: () for s in self.sites})
        self.trunk = mlp((self.x_dim, *self.hidden), self.activation, final_activation=True)
        self.heads = nn.ModuleDict({s.name: self._head(s) for s in self.sites})

    def structure(self, model) -> Tuple[Tuple[LatentSite, ...], Dict[str, Tuple[LatentSite, ...]]]:
        """The structured guide's sampling order and each site's conditioning sites: the faithful inverse
        of the model's graph (:func:`~zoo.core.contract.posterior_order`; M2 gets q(y | x) q(z | x, y))."""
        structure = posterior_order(self.sites, model.observed_parents)
        return tuple(s for s, _ in structure), {s.name: given for s, given in structure}

    def _head(self, site: LatentSite) -> nn.Module:
        given = sum(c.value_size for c in self.conditioning[site.name])
        if not given:
            return nn.Linear(self.hidden[-1], raw_size(site))
        return mlp((self.context_size(site), self.hidden[-1], raw_size(site)), self.activation)

    def context_size(self, site: LatentSite) -> int:
        """Width of the input of ``site``'s head: h, and its conditioning sites' values."""
        return self.hidden[-1] + sum(c.value_size for c in self.conditioning[site.name])

    def encode(self, x: torch.Tensor) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
        """Return the encoder's hidden state h and the raw parameters of every site that reads
        x alone (all of them in mean-field mode)."""
        h = self.trunk(x)
        return h, {s.name: self.heads[s.name](h) for s in self.sites if not self.conditioning[s.name]}

    def context(self, site: LatentSite, h: torch.Tensor, values: Dict[str, torch.Tensor]) -> torch.Tensor:
        """What ``site``'s q is computed from: h, joined by the sampled values of its conditioning
        sites (flattened per datum, an index one-hot, broadcast over particle and enumeration dimensions)."""
        given = self.conditioning[site.name]
        if not given:
            return h
        flat = [c.features(values[c.name]) for c in given]
        batch = torch.broadcast_shapes(h.shape[:-1], *[v.shape[:-1] for v in flat])
        return torch.cat([h.expand(batch + h.shape[-1:])] + [v.to(h.dtype).expand(batch + v.shape[-1:])
                                                              for v in flat], dim=-1)

    def distribution(self, site: LatentSite, context: torch.Tensor):
        """q(site | context) of this family; subclasses transform (IAF) or relax (relaxed) it."""
        return site_distribution(site, self.heads[site.name](context))

    def marginal_posterior(self, name: str, x: torch.Tensor):
        """q(name | x), with the sites a structured guide samples before it at their means E_q[z | x]."""
        h = self.trunk(x)
        values = {}
        for s in self.order:                       # children come first in a structured guide's order
            q = self.distribution(s, self.context(s, h, values))
            if s.name == name:
                return q
            values[s.name] = q.mean
        raise ZooError(f"the {self.family!r} guide samples no site {name!r}")

    def forward(self, x, idx=None, N=None):
        register_module("encoder", self)
        self.sample_globals()
        h = self.trunk(x)
        values: Dict[str, torch.Tensor] = {}
        with data_plate(x, idx, N):
            for s in self.order:
                values[s.name] = pyro.sample(s.name, self.distribution(s, self.context(s, h, values)),
                                             infer=self.infer_for(s, x))
