"""Categorical VAE: N categorical latents with K classes each, in one-hot form.

Generative story, for each datum::

    z_n ~ OneHotCategorical(1/K, ..., 1/K)        n = 1..N     (uniform prior)
    x | z ~ Bernoulli(sigmoid(f_theta(flatten(z))))            (tanh MLP decoder)

The latent site ``z`` has event shape (N, K). The default 20 x 10 is Jang et al.'s;
their decoder is 200-256-512-784. With K^N at most 2^16 (e.g. 4 x 4 = 256)
``log_marginal`` is exact by enumeration.

Reference: E. Jang, S. Gu and B. Poole, "Categorical Reparameterization with
Gumbel-Softmax", ICLR 2017, https://arxiv.org/abs/1611.01144.

Example::

    >>> m = CategoricalVAE(x_dim=8, num_variables=2, num_classes=3, hidden=(16,))
    >>> m.sample(4).shape
    torch.Size([4, 8])
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Sequence, Tuple

import pyro
import torch
from torch.distributions import OneHotCategorical

from zoo.core.distributions import IndependentBernoulli, JointDiscrete
from zoo.core.components import MODELS, Options, option
from zoo.core.contract import LatentSite, ZooModel
from zoo.core.plates import data_plate
from zoo.core.params import register_module
from zoo.core.nn import mlp

__all__ = ["CategoricalVAE"]


@dataclass
class CategoricalVAEOptions(Options):
    test_options: ClassVar[dict] = {"num_variables": 2, "num_classes": 3, "hidden": (16,)}

    num_variables: int = option(20, "number of categorical latents", minimum=1, checkpoint="shape")
    num_classes: int = option(10, "classes per latent", minimum=2, checkpoint="shape")
    hidden: Tuple[int, ...] = option((256, 512), "decoder hidden sizes, from z to x", minimum=1, checkpoint="shape")


@MODELS.register("categorical_vae", options=CategoricalVAEOptions, description="categorical VAE: N one-hot latents "
                 "with K classes (Jang et al. 2017: 20x10), MLP decoder; exact log p(x) when small")
class CategoricalVAE(ZooModel):
    """Uniform categorical prior, MLP decoder, Bernoulli likelihood.

    Arguments:
        x_dim: data dimension.
        num_variables: N, the number of categorical latents (default 20).
        num_classes: K, classes per latent (default 10).
        hidden: decoder hidden sizes from z to x (default (256, 512)).
    """

    likelihood = "bernoulli"

    def __init__(self, x_dim: int, num_variables: int = 20, num_classes: int = 10,
                 hidden: Sequence[int] = (256, 512)):
        super().__init__(x_dim)
        self.num_variables, self.num_classes = int(num_variables), int(num_classes)
        self.hidden = tuple(int(h) for h in hidden)
        self.decoder = mlp((self.num_variables * self.num_classes, *self.hidden, x_dim))
        self.register_buffer("prior_logits", torch.zeros(self.num_variables, self.num_classes))

    @property
    def latents(self):
        return (LatentSite("z", (self.num_variables, self.num_classes), "categorical", self.num_classes),)

    def model(self, x=None, idx=None, N=None):
        register_module("categorical_vae", self)
        with data_plate(x, idx, N, device=self.prior_logits.device):
            z = pyro.sample("z", JointDiscrete(OneHotCategorical(logits=self.prior_logits)))
            logits = self.decoder(z.flatten(-2))
            pyro.sample("x", IndependentBernoulli(logits), obs=x)
