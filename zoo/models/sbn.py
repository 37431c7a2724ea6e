"""Sigmoid belief net: the generative half of a Helmholtz machine, with binary latents.

Generative story with L stochastic layers of sizes K_L (top) ... K_1 (bottom), for each datum::

    z_L ~ Bernoulli(sigmoid(beta))                               (learnable prior beta)
    z_l | z_{l+1} ~ Bernoulli(sigmoid(f_l(z_{l+1})))             l = L-1 .. 1
    x | z_1 ~ Bernoulli(sigmoid(g(z_1)))

f_l and g are affine maps (the classic SBN of Neal 1992 and Mnih & Gregor 2014; Jang
et al.'s "784-200-784" is one layer of 200) or tanh MLPs with ``hidden``. Each layer is
one site ``z1`` .. ``zL`` holding a K_l-bit vector. With a small latent space (at most
2^16 joint configurations) ``log_marginal`` sums p(x, z) over all of them exactly
(:mod:`zoo.core.enumeration`): the discrete ground truth, as pPCA is for real latents.
For K = 32 that sum would have 4 billion terms, hence the estimators.

References:
    R. M. Neal, "Connectionist learning of belief networks", Artificial Intelligence 56, 1992.
    P. Dayan, G. E. Hinton, R. M. Neal, R. S. Zemel, "The Helmholtz machine", Neural Computation 7, 1995.
    A. Mnih and K. Gregor, "Neural Variational Inference and Learning in Belief Networks",
    ICML 2014, https://arxiv.org/abs/1402.0030.

Example::

    >>> import torch
    >>> m = SBN(x_dim=6, layers=(3,))
    >>> m.log_marginal(torch.ones(2, 6)).shape
    torch.Size([2])
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Sequence, Tuple

import pyro
import torch
from torch import nn
from torch.distributions import Bernoulli

from zoo.core.distributions import IndependentBernoulli, JointDiscrete
from zoo.core.components import MODELS, Options, option
from zoo.core.contract import LatentSite, ZooModel
from zoo.core.plates import data_plate
from zoo.core.params import register_module
from zoo.core.nn import mlp

__all__ = ["SBN"]


@dataclass
class SBNOptions(Options):
    test_options: ClassVar[dict] = {"layers": (4, 2)}

    layers: Tuple[int, ...] = option((200,), "stochastic layer sizes, bottom to top, e.g. 200 or 200,200",
                                     minimum=1, positive=True, checkpoint="shape")
    hidden: Tuple[int, ...] = option((), "deterministic tanh hidden sizes inside each map (default none: affine)",
                                     minimum=1, checkpoint="shape")


@MODELS.register("sbn", options=SBNOptions, description="sigmoid belief net / Helmholtz machine: binary latent "
                 "layers, learnable prior, Bernoulli decoder (affine by default, as in Mnih & Gregor 2014); "
                 "exact log p(x) when small")
class SBN(ZooModel):
    """Sigmoid belief net with binary stochastic layers.

    Arguments:
        x_dim: data dimension.
        layers: stochastic layer sizes from the bottom (next to x) to the top, e.g. (200,) or (200, 200).
        hidden: deterministic tanh hidden sizes inside each map (default none: affine, the classic SBN).
    """

    likelihood = "bernoulli"

    def __init__(self, x_dim: int, layers: Sequence[int] = (200,), hidden: Sequence[int] = ()):
        super().__init__(x_dim)
        self.layers = tuple(int(k) for k in layers)
        self.hidden = tuple(int(h) for h in hidden)
        self.prior_logits = nn.Parameter(torch.zeros(self.layers[-1]))
        self.transitions = nn.ModuleList([mlp((above, *self.hidden, below))
                                          for below, above in zip(self.layers[:-1], self.layers[1:])])
        self.decoder = mlp((self.layers[0], *self.hidden, x_dim))

    @property
    def latents(self):
        # in the order the model samples them (top layer first), as guides then sample them too
        L = len(self.layers)
        return tuple(LatentSite(f"z{l + 1}", (k,), "binary", parents=(f"z{l + 2}",) if l + 1 < L else ())
                     for l, k in reversed(list(enumerate(self.layers))))

    def model(self, x=None, idx=None, N=None):
        register_module("sbn", self)
        L = len(self.layers)
        with data_plate(x, idx, N, device=self.prior_logits.device):
            z = pyro.sample(f"z{L}", JointDiscrete(Bernoulli(logits=self.prior_logits)))
            for l in reversed(range(L - 1)):
                z = pyro.sample(f"z{l + 1}", JointDiscrete(Bernoulli(logits=self.transitions[l](z))))
            pyro.sample("x", IndependentBernoulli(self.decoder(z)), obs=x)
