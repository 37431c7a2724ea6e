"""The variational autoencoder's generative model (the decoder half).

Generative story, for each datum n = 1..N::

    z_n ~ N(0, I_d)                                       (or a learned prior: --prior, zoo.models.priors)
    z_n ~ Uniform(S^(d-1))                                (--latent vmf / power-spherical: zoo.core.latents)
    z_n ~ WrappedNormal(mu_0, I) on H^d                   (--latent wrapped-normal; f_theta reads log_(mu_0)(z_n),
                                                           or, with --latent-decoder gyroplane, z_n's distances
                                                           to learned gyroplanes: zoo.core.hyperbolic.Gyroplane)
    z_n ~ Bernoulli(1/2)^d on {0, 1}^d                    (--latent bernoulli: binary latents)
    x_n | z_n ~ Bernoulli(sigmoid(f_theta(z_n)))          (likelihood="bernoulli")
    x_n | z_n ~ N(f_theta(z_n), diag(sigma_theta^2))        (likelihood="gaussian")
    x_n | z_n ~ prod_i p_k(x_ni | f_theta(z_n)_i)             (k levels: categorical, dlogistic, dmol, dequant-*;
                                                           zoo.core.levels)
    x_n | z_n ~ prod_i Bernoulli(x_ni; sigmoid(l_i(x_n,<i, z_n)))  (decoder="made" or "pixelcnn")

f_theta is an MLP with tanh hidden layers (``activation``: or relu, or gated as in Tomczak & Welling). The default is Burda et al.'s
one-stochastic-layer architecture: 50 latents, two hidden layers of 200 units,
giving 784-200-200-50 on MNIST with the amortized encoder that mirrors it.
The encoder belongs to the guide (``guides/``), so any guide family can be paired
with this model; the model itself has no exact log p(x).

``decoder="made"`` or ``"pixelcnn"`` replaces the factorized likelihood by an autoregressive one
(:mod:`zoo.core.autoregressive`): a MADE with the same hidden sizes, or a small masked-convolution
PixelCNN over square images, each conditioned on z; Bernoulli pixels only. Such a decoder can model
x without z, the setting of posterior collapse (``--free-bits``, ``--kl-warmup``).

References:
    D. P. Kingma and M. Welling, "Auto-Encoding Variational Bayes", ICLR 2014,
    https://arxiv.org/abs/1312.6114.
    Y. Burda, R. Grosse and R. Salakhutdinov, "Importance Weighted Autoencoders",
    ICLR 2016, https://arxiv.org/abs/1509.00519 (appendix D for the architecture).

Example::

    >>> from zoo.core.latents import LatentLayer
    >>> m = VAE(64, LatentLayer(dim=2), hidden=(32,))
    >>> m.sample(4).shape
    torch.Size([4, 64])
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Optional, Sequence, Tuple

import pyro
import torch
from torch import nn

from zoo.core.autoregressive import DecoderOptions
from zoo.core.components import MODELS, option
from zoo.core.contract import ZooModel
from zoo.core.errors import OptionError, ZooError
from zoo.core.hyperbolic import Gyroplane
from zoo.core.latents import LatentLayer, LatentOptions
from zoo.core.likelihoods import LEGACY_TENSOR_NAMES, Bernoulli, Likelihood, LikelihoodOptions, build_likelihood
from zoo.core.nn import activation_layer
from zoo.core.plates import data_plate
from zoo.core.params import register_module
from zoo.models.priors import STANDARD_PRIOR, PriorMixin, PriorOptions, PriorPart, prior_part

__all__ = ["VAE", "LATENT_DECODERS"]

#: the default latent layer: z in R^50 with an N(0, I) prior (Burda et al.)
BURDA_LATENT = LatentLayer(dim=50)

#: how the decoder reads z: wrapped (the family's decoder_input, log_(mu_0)(z) on H^d) or gyroplane (H^d only)
LATENT_DECODERS = ("wrapped", "gyroplane")




def check_parts(x_dim: int, likelihood, latent: LatentLayer, latent_decoder: str = "wrapped") -> None:
    """Refuse, in one line, parts that cannot make one model: a likelihood part built for other data, or the
    gyroplane layer reading a z that is not hyperbolic."""
    if getattr(likelihood, "x_dim", x_dim) != int(x_dim):
        raise ZooError(f"the likelihood part models {likelihood.x_dim} values per datum and the data have {x_dim}: "
                       f"build it with x_dim={x_dim}")
    if latent_decoder not in LATENT_DECODERS:
        raise ZooError(f"latent_decoder must be one of {', '.join(LATENT_DECODERS)}, got {latent_decoder!r}")
    if latent_decoder == "gyroplane" and latent.family.support != "hyperbolic":
        raise ZooError(f"the gyroplane layer reads a hyperbolic z, and the latent layer is {latent.family.name!r}: "
                       f"use LatentLayer.named('wrapped-normal', d), or latent_decoder='wrapped'")


@dataclass
class VAEOptions(LikelihoodOptions, DecoderOptions, PriorOptions, LatentOptions):
    test_options: ClassVar[dict] = {"latent_dim": 3, "hidden": (16,)}

    latent_dim: int = option(50, "number of latent units", minimum=1, checkpoint="shape")
    hidden: Tuple[int, ...] = option((200, 200), "decoder hidden sizes, from z to x", minimum=1, checkpoint="shape")
    latent_decoder: str = option("wrapped", "how the decoder reads a hyperbolic z (--latent wrapped-normal): wrapped "
                                 "(log_(mu_0)(z) into the MLP) or gyroplane (the first layer's units are distances to "
                                 "learned gyroplanes; Mathieu et al. 2019)", choices=LATENT_DECODERS, checkpoint="shape")

    def validate(self) -> None:
        super().validate()
        if self.latent_decoder == "gyroplane":
            if self.latent != "wrapped-normal":
                raise OptionError("latent_decoder", f"gyroplane reads a hyperbolic z, and the latent is {self.latent!r}: "
                                  f"add --latent wrapped-normal, or drop --latent-decoder")
            if self.decoder != "mlp" or self.activation == "gated":
                raise OptionError("latent_decoder", "the gyroplane layer replaces the first layer of an mlp decoder "
                                  "with tanh, relu or linear units: drop --latent-decoder, or use --decoder mlp and "
                                  "another --activation")


@MODELS.register("vae", options=VAEOptions, description="VAE, Gaussian prior (or --latent on the sphere or "
                 "in hyperbolic space), tanh MLP decoder, Bernoulli or Gaussian likelihood (Burda et al. 2016: "
                 "784-200-200-50)")
class VAE(PriorMixin, ZooModel):
    """Gaussian prior, MLP decoder, Bernoulli or Gaussian likelihood, composed from parts.

    Arguments:
        x_dim: data dimension (784 for MNIST, 64 for the 8x8 digits).
        latent: the latent layer z (:class:`~zoo.core.latents.LatentLayer`): its family (R^d by default; the unit
            sphere S^(d-1) of the S-VAE, hyperbolic space H^d, bits, or d one-hot variables of C classes), its d
            (default 50) and C.
        hidden: decoder hidden sizes, from z to x (default (200, 200)).
        likelihood: p(x | z), a :class:`~zoo.core.likelihoods.Likelihood` part (default Bernoulli pixels; a
            Gaussian density, k levels, or an autoregressive MADE or PixelCNN).
        prior: p(z), a :data:`~zoo.models.priors.PriorPart` (default N(0, I), or the family's own prior; a mixture,
            a VampPrior or a flow through :func:`~zoo.models.priors.prior_part`).
        activation: the mlp decoder's hidden units, ``"tanh"``, ``"relu"`` or ``"gated"`` (:mod:`zoo.core.nn`);
            the encoder's too, by default.
        latent_decoder: how the decoder reads a hyperbolic z: ``"wrapped"`` (log_(mu_0)(z) into the MLP) or
            ``"gyroplane"`` (its first layer's units are distances to learned gyroplanes).

    The command line's options become these parts once, in :meth:`from_options`.
    """

    legacy_tensor_names = LEGACY_TENSOR_NAMES

    def __init__(self, x_dim: int, latent: LatentLayer = BURDA_LATENT, hidden: Sequence[int] = (200, 200),
                 likelihood: Optional[Likelihood] = None, prior: PriorPart = STANDARD_PRIOR,
                 activation: str = "tanh", latent_decoder: str = "wrapped"):
        super().__init__(x_dim)
        self.latent_layer = latent
        self.latent_family, self.latent_dim, self.latent_classes = latent.family.name, latent.dim, latent.classes
        self.hidden = tuple(int(h) for h in hidden)
        px = likelihood if likelihood is not None else Bernoulli(x_dim)     # p(x | z): zoo.core.likelihoods
        check_parts(x_dim, px, latent, latent_decoder)
        self.decoder_kind = px.decoder_kind
        self.activation = activation                           # the encoder's too, by default
        self.likelihood, self.levels = px.name, px.levels
        self.latent_decoder = latent_decoder
        if latent_decoder == "gyroplane":     # z in H^d read by distances to gyroplanes, then the rest of the MLP
            self.decoder = nn.Sequential(Gyroplane(self.latent_dim, self.hidden[0]), activation_layer(activation),
                                         *px.network(self.hidden[0], self.hidden[1:], activation))
        else:
            self.decoder = px.network(latent.decoder_size, self.hidden, activation)    # d, or d x C one-hot
        self.px = px
        self.register_buffer("prior_loc", torch.zeros(self.latent_dim))
        self.prior = prior(self.latents[0], x_dim)

    @classmethod
    def from_options(cls, x_dim: int, options: VAEOptions) -> "VAE":
        """The model the command line's options name: each name made its part here, once."""
        o = options
        return cls(x_dim, LatentLayer.named(o.latent, o.latent_dim, o.latent_classes), o.hidden,
                   build_likelihood(o.likelihood, o.decoder, x_dim, o.levels, o.mixtures, o.channels),
                   prior_part(o.prior, o.prior_components, o.prior_flows), o.activation, o.latent_decoder)

    @property
    def latents(self):
        return (self.latent_layer.site("z"),)

    def model(self, x=None, idx=None, N=None):
        register_module("vae", self)
        with data_plate(x, idx, N, device=self.prior_loc.device):
            z = pyro.sample("z", self.prior())                 # N(0, I) unless --prior or --latent say otherwise
            h = z if self.latent_decoder == "gyroplane" else self.latent_layer.family.decoder_input(z)
            # ^ z itself, but log_(mu_0)(z) on H^d unless the gyroplane layer reads z
            pyro.sample("x", self.px(self.decoder, h, observed=x), obs=x)
