"""Amortized guide: an MLP encoder shared by all data.

For each latent site, with h = g_phi(x) a tanh MLP (the "encoder")::

    q_phi(z | x) = N(z; W_mu h + b_mu, diag(softplus(W_s h + b_s)^2))    real latents
    q_phi(z | x) = prod_k Bernoulli(z_k; sigmoid(W h + b)_k)              binary latents (score function)
    q_phi(z | x) = prod_j OneHotCategorical(z_j; softmax((W h + b)_j))    categorical latents (score function)

Training the encoder amortizes inference: one network maps any x to its approximate
posterior, so unseen data need no refit. The default encoder mirrors the model's
decoder, which for the VAE gives Burda et al.'s 784-200-200-50. Discrete sites are
not reparameterizable: their gradients come from the score function (``elbo``,
``tracegraph`` with baselines, ``rws``) or from exact enumeration (``enum``).

References: D. P. Kingma and M. Welling, "Auto-Encoding Variational Bayes",
ICLR 2014, https://arxiv.org/abs/1312.6114; A. Mnih and K. Gregor, "Neural
Variational Inference and Learning in Belief Networks", ICML 2014.

Example::

    >>> import torch
    >>> from zoo.models import VAE
    >>> g = Amortized(VAE(x_dim=64, latent_dim=2, hidden=(32,)))
    >>> h, raw = g.encode(torch.zeros(3, 64))
    >>> raw["z"].shape
    torch.Size([3, 4])
"""
from __future__ import annotations

from typing import Dict, Optional, Sequence, Tuple

import pyro
import torch
from torch import nn

from dataclasses import dataclass

from guides.base import BaselineOptions, EncoderOptions, ZooGuide, raw_size, site_distribution
from zoo.core.registry import GUIDES
from zoo.core.plates import data_plate
from zoo.core.params import register_module
from zoo.core.nn import mlp

__all__ = ["Amortized", "default_encoder_hidden"]


def default_encoder_hidden(model) -> Tuple[int, ...]:
    """Mirror the decoder's hidden sizes when the model has them, else one layer of 200."""
    hidden = getattr(model, "hidden", None)
    return tuple(reversed(hidden)) if hidden else (200,)


@dataclass
class AmortizedOptions(EncoderOptions, BaselineOptions):
    pass


@GUIDES.register("amortized", options=AmortizedOptions, description="MLP encoder giving a diagonal Normal, or "
                 "Bernoulli/categorical logits (score function)")
class Amortized(ZooGuide):
    """MLP encoder giving, per latent site, a diagonal Normal or independent Bernoulli/categorical logits.

    Arguments:
        model: the zoo model.
        num_data: unused (the guide is amortized); accepted so all families build alike.
        hidden: encoder hidden sizes, from x to the heads (default: mirror the decoder).
        baseline: see :class:`~guides.base.ZooGuide`.
    """

    family = "amortized"
    supports = ("real", "binary", "categorical")
    enumerable = True

    def __init__(self, model, num_data: Optional[int] = None, hidden: Optional[Sequence[int]] = None,
                 baseline: Optional[str] = None):
        super().__init__(model, num_data, baseline)
        self.hidden = tuple(hidden) if hidden else default_encoder_hidden(model)
        self.trunk = mlp((self.x_dim, *self.hidden), final_activation=True)
        self.heads = nn.ModuleDict({s.name: nn.Linear(self.hidden[-1], raw_size(s)) for s in self.sites})

    def encode(self, x: torch.Tensor) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
        """Return the encoder's hidden state h and the raw parameters of each site."""
        h = self.trunk(x)
        return h, {s.name: self.heads[s.name](h) for s in self.sites}

    def forward(self, x, idx=None, N=None):
        register_module("encoder", self)
        _, raw = self.encode(x)
        with data_plate(x, idx, N):
            for s in self.sites:
                pyro.sample(s.name, site_distribution(s, raw[s.name]), infer=self.infer_for(s, x))
