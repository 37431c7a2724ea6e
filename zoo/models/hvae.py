"""Hierarchical VAE: L stochastic Gaussian layers (Burda et al.'s two-layer architecture by default).

Generative story with layers z_L (top) ... z_1 (next to x), for each datum::

    z_L ~ p(z_L)                                         N(0, I), a learned prior (--prior), or a family of --latent
    z_l | z_{l+1} ~ N(mu_l(z_{l+1}), diag(sigma_l(z_{l+1})^2))       l = L-1 .. 1
    x | z_1 ~ Bernoulli(sigmoid(f(z_1)))                 (likelihood="bernoulli")
    x | z_1 ~ N(f(z_1), diag(sigma_x^2))                 (likelihood="gaussian")
    x | z_1 ~ prod_i p_k(x_i | f(z_1)_i)                  (k levels: categorical, dlogistic, dmol, dequant-*)
    x | z_1 ~ prod_i Bernoulli(x_i; sigmoid(l_i(x_<i, z_1)))  (decoder="made" or "pixelcnn")

so p(x, z) = p(z_L) prod_l p(z_l | z_{l+1}) p(x | z_1). (mu_l, sigma_l) is an MLP with
``transition_hidden`` hidden units and softplus scales; f is an MLP with ``hidden``; their units are
``activation`` (tanh, Burda et al.'s, by default; ``gated`` trains far better at short budgets, see
``benchmarks/hvae_saturation.py``). Each
z_l declares z_{l+1} as its parent (:class:`~zoo.core.contract.LatentSite`), so the structured
guides (``amortized --structured``, ``iaf --structured``) factor bottom-up as the exact posterior
does, q(z_1 | x) q(z_2 | z_1, x); mean-field amortized, IAF and per-datum guides work as well.

Default sizes, Burda et al. (2016), their architecture with two stochastic layers:
stochastic layers of 100 (z1) and 50 (z2) units; between x and z1 two deterministic tanh layers
of 200, between z1 and z2 two of 100. The generative network here is that architecture read
downwards, z2 (50) -> 100 -> 100 -> z1 (100) -> 200 -> 200 -> x (784). The encoder belongs to the
guide family: the amortized trunk mirrors ``hidden`` (784 -> 200 -> 200 -> q(z1 | x)); its
structured head for z2 reads [h, z1] through one tanh layer of 200 (Burda et al.'s encoder goes
z1 -> 100 -> 100 -> z2). The issue's one-line summary ("x -> 100 -> z1, z1 -> 50 -> z2 with two
deterministic layers of 100 and 50") differs: 100 and 50 are the sizes of the *stochastic*
layers; the deterministic ones are 200 and 100 wide. ``hidden=()`` and ``transition_hidden=()`` give affine maps, a
linear-Gaussian model with a closed-form log p(x) (the tests use it). ``decoder="made"`` or
``"pixelcnn"`` makes p(x | z_1) autoregressive (:mod:`zoo.core.autoregressive`, binary data), with
MADE's masked hidden sizes ``hidden``.

References:
    Y. Burda, R. Grosse and R. Salakhutdinov, "Importance Weighted Autoencoders", ICLR 2016,
    https://arxiv.org/abs/1509.00519 (Section 5: architectures).
    C. K. Sønderby, T. Raiko, L. Maaløe, S. K. Sønderby and O. Winther, "Ladder Variational
    Autoencoders", NeurIPS 2016, https://arxiv.org/abs/1602.02282.
    J. M. Tomczak and M. Welling, "VAE with a VampPrior", AISTATS 2018 (hierarchical VampPrior).

Example::

    >>> m = HVAE(x_dim=64, layers=(8, 4), hidden=(32,), transition_hidden=(16,))
    >>> [(s.name, s.parents) for s in m.latents]
    [('z2', ()), ('z1', ('z2',))]
    >>> m.sample(3).shape
    torch.Size([3, 64])
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Optional, Sequence, Tuple

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from torch import nn

from zoo.core.autoregressive import DecoderOptions
from zoo.core.contract import LatentSite, ZooModel
from zoo.core.latents import LatentLayer, LatentOptions
from zoo.core.likelihoods import LEGACY_TENSOR_NAMES, Bernoulli, Likelihood, LikelihoodOptions, build_likelihood
from zoo.core.nn import mlp
from zoo.core.params import register_module
from zoo.core.plates import data_plate
from zoo.core.components import MODELS, option
from zoo.models.vae import check_parts
from zoo.models.priors import STANDARD_PRIOR, PriorMixin, PriorOptions, PriorPart, prior_part

__all__ = ["HVAE"]


@dataclass
class HVAEOptions(LikelihoodOptions, DecoderOptions, PriorOptions, LatentOptions):
    test_options: ClassVar[dict] = {"layers": (3, 2), "hidden": (16,), "transition_hidden": (8,)}

    layers: Tuple[int, ...] = option((100, 50), "stochastic layer sizes, bottom (z1) to top, e.g. 100,50",
                                     minimum=1, positive=True, checkpoint="shape")
    hidden: Tuple[int, ...] = option((200, 200), "hidden sizes of p(x | z1), from z1 to x", minimum=1,
                                     checkpoint="shape")
    transition_hidden: Tuple[int, ...] = option((100, 100), "hidden sizes of each p(z_l | z_l+1)", minimum=1,
                                                checkpoint="shape")


@MODELS.register("hvae", options=HVAEOptions, description="hierarchical VAE, Gaussian layers z2 -> z1 -> x "
                 "(Burda et al. 2016: stochastic 100 and 50, deterministic 200 and 100), optional learned prior or "
                 "--latent family on top")
class HVAE(PriorMixin, ZooModel):
    """A VAE with a chain of Gaussian stochastic layers, composed from parts.

    Arguments:
        x_dim: data dimension.
        layers: stochastic layer sizes from the bottom (z1, next to x) to the top (default (100, 50)); the top may
            be a :class:`~zoo.core.latents.LatentLayer` of another family (z_L on the unit sphere, in hyperbolic
            space, bits, or one-hot variables); the layers below stay Gaussian.
        hidden: hidden sizes of the decoder p(x | z1), from z1 to x (default (200, 200)).
        transition_hidden: hidden sizes of each p(z_l | z_{l+1}) (default (100, 100)).
        likelihood: p(x | z1), a :class:`~zoo.core.likelihoods.Likelihood` part (default Bernoulli pixels).
        prior: p(z_L), a :data:`~zoo.models.priors.PriorPart` (default N(0, I), or the top family's own).
        activation: hidden units of the mlp decoder and the transitions: ``"tanh"``, ``"relu"`` or ``"gated"``.

    The command line's options become these parts once, in :meth:`from_options`.
    """

    legacy_tensor_names = LEGACY_TENSOR_NAMES

    def __init__(self, x_dim: int, layers: Sequence = (100, 50), hidden: Sequence[int] = (200, 200),
                 transition_hidden: Sequence[int] = (100, 100), likelihood: Optional[Likelihood] = None,
                 prior: PriorPart = STANDARD_PRIOR, activation: str = "tanh"):
        super().__init__(x_dim)
        *below, top = layers
        self.top = top if isinstance(top, LatentLayer) else LatentLayer(dim=int(top))
        self.latent_family, self.latent_classes = self.top.family.name, self.top.classes
        self.layers = tuple(int(k) for k in below) + (self.top.dim,)
        # what each layer's reader (the transition below it, or the decoder) takes in: its size, but the top
        # layer's as its family gives it (d x C numbers for d one-hot variables)
        reads = self.layers[:-1] + (self.top.decoder_size,)
        self.hidden = tuple(int(h) for h in hidden)
        self.transition_hidden = tuple(int(h) for h in transition_hidden)
        # transitions[l] maps z_{l+2} to the loc and raw scale of z_{l+1} (0-based l)
        self.activation = activation                           # the encoder's too, by default
        self.transitions = nn.ModuleList([mlp((above, *self.transition_hidden, 2 * below), activation)
                                          for below, above in zip(self.layers[:-1], reads[1:])])
        px = likelihood if likelihood is not None else Bernoulli(x_dim)     # p(x | z1): zoo.core.likelihoods
        check_parts(x_dim, px, self.top)
        self.decoder_kind = px.decoder_kind
        self.likelihood, self.levels = px.name, px.levels
        self.decoder = px.network(reads[0], self.hidden, activation)
        self.px = px
        self.prior = prior(self.latents[0], x_dim)

    @classmethod
    def from_options(cls, x_dim: int, options: HVAEOptions) -> "HVAE":
        """The model the command line's options name: each name made its part here, once."""
        o = options
        top = LatentLayer.named(o.latent, o.layers[-1], o.latent_classes)
        return cls(x_dim, (*o.layers[:-1], top), o.hidden, o.transition_hidden,
                   build_likelihood(o.likelihood, o.decoder, x_dim, o.levels, o.mixtures, o.channels),
                   prior_part(o.prior, o.prior_components, o.prior_flows), o.activation)

    @property
    def latents(self):
        # in the order the model samples them (top layer first); each names the layer above as parent
        L = len(self.layers)
        top = self.top.site(f"z{L}")
        return (top,) + tuple(LatentSite(f"z{l + 1}", (k,), "real", parents=(f"z{l + 2}",))
                              for l, k in reversed(list(enumerate(self.layers[:-1]))))

    def conditional(self, l: int, z_above: torch.Tensor) -> dist.TorchDistribution:
        """p(z_{l+1} | z_{l+2}) (0-based ``l``): a diagonal Normal whose loc and scale are an MLP of the layer above."""
        loc, s = self.transitions[l](z_above).chunk(2, dim=-1)
        return dist.Normal(loc, F.softplus(s) + 1e-5).to_event(1)

    def conditional_prior(self, name, parents):
        """p(z_l | z_{l+1}) for ``name`` = ``"z{l}"`` below the top, from the parent's value (the top layer as the
        decoder reads it: log_(mu_0)(z) on H^d); the top layer has no parent and its prior is ``self.prior()``."""
        L = len(self.layers)
        l = int(name[1:])
        if not 1 <= l < L:
            raise KeyError(f"{name!r} has no parent layer in {self.display_name} (its layers: z1..z{L})")
        above = parents[f"z{l + 1}"]
        if l + 1 == L:
            above = self.top.family.decoder_input(above)
        return self.conditional(l - 1, above)

    def model(self, x=None, idx=None, N=None):
        register_module("hvae", self)
        L = len(self.layers)
        with data_plate(x, idx, N, device=next(self.decoder.parameters()).device):
            z = pyro.sample(f"z{L}", self.prior())
            z = self.top.family.decoder_input(z)     # z itself, but log_(mu_0)(z) on H^d
            for l in reversed(range(L - 1)):
                z = pyro.sample(f"z{l + 1}", self.conditional(l, z))
            pyro.sample("x", self.px(self.decoder, z, observed=x), obs=x)
