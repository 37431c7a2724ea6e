"""Amortized Gaussian guide: an MLP encoder shared by all data.

For each real latent site z::

    h = g_phi(x)                              (tanh MLP, the "encoder")
    q_phi(z | x) = N(z; W_mu h + b_mu, diag(softplus(W_s h + b_s)^2))

Training the encoder amortizes inference: one network maps any x to its approximate
posterior, so unseen data need no refit. The default encoder mirrors the model's
decoder, which for the VAE gives Burda et al.'s 784-200-200-50.

Reference: D. P. Kingma and M. Welling, "Auto-Encoding Variational Bayes",
ICLR 2014, https://arxiv.org/abs/1312.6114.

Example::

    >>> import torch
    >>> from zoo.models import VAE
    >>> g = Amortized(VAE(x_dim=64, latent_dim=2, hidden=(32,)))
    >>> h, params = g.encode(torch.zeros(3, 64))
    >>> params["z"][0].shape
    torch.Size([3, 2])
"""
from __future__ import annotations

from typing import Dict, Optional, Sequence, Tuple

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from torch import nn

from guides.base import ZooGuide
from zoo.models.base import data_plate
from zoo.models.vae import mlp

__all__ = ["Amortized", "default_encoder_hidden"]


def default_encoder_hidden(model) -> Tuple[int, ...]:
    """Mirror the decoder's hidden sizes when the model has them, else one layer of 200."""
    hidden = getattr(model, "hidden", None)
    return tuple(reversed(hidden)) if hidden else (200,)


class Amortized(ZooGuide):
    """MLP encoder giving a diagonal Normal for each real latent site.

    Arguments:
        model: the zoo model.
        num_data: unused (the guide is amortized); accepted so all families build alike.
        hidden: encoder hidden sizes, from x to the heads (default: mirror the decoder).
    """

    family = "amortized"

    def __init__(self, model, num_data: Optional[int] = None, hidden: Optional[Sequence[int]] = None):
        super().__init__(model, num_data)
        self.hidden = tuple(hidden) if hidden else default_encoder_hidden(model)
        self.trunk = mlp((self.x_dim, *self.hidden), final_activation=True)
        self.heads = nn.ModuleDict({
            s.name: nn.Linear(self.hidden[-1], 2 * s.numel) for s in self.sites})

    def encode(self, x: torch.Tensor) -> Tuple[torch.Tensor, Dict[str, Tuple[torch.Tensor, torch.Tensor]]]:
        """Return the encoder's hidden state h and (loc, scale) per latent site."""
        h = self.trunk(x)
        params = {}
        for s in self.sites:
            loc, raw_scale = self.heads[s.name](h).chunk(2, dim=-1)
            shape = x.shape[:-1] + s.event_shape
            params[s.name] = (loc.reshape(shape), (F.softplus(raw_scale) + 1e-5).reshape(shape))
        return h, params

    def forward(self, x, idx=None, N=None):
        pyro.module("encoder", self)
        _, params = self.encode(x)
        with data_plate(x, idx, N):
            for s in self.sites:
                loc, scale = params[s.name]
                pyro.sample(s.name, dist.Normal(loc, scale).to_event(len(s.event_shape)))
