"""The variational autoencoder's generative model (the decoder half).

Generative story, for each datum n = 1..N::

    z_n ~ N(0, I_d)
    x_n | z_n ~ Bernoulli(sigmoid(f_theta(z_n)))          (likelihood="bernoulli")
    x_n | z_n ~ N(f_theta(z_n), diag(sigma_theta^2))        (likelihood="gaussian")
    x_n | z_n ~ prod_i Bernoulli(x_ni; sigmoid(l_i(x_n,<i, z_n)))  (decoder="made" or "pixelcnn")

f_theta is an MLP with tanh hidden layers. The default is Burda et al.'s
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

    >>> m = VAE(x_dim=64, latent_dim=2, hidden=(32,))
    >>> m.sample(4).shape
    torch.Size([4, 64])
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import pyro
import pyro.distributions as dist
import torch
from torch import nn

from zoo.core.autoregressive import DECODERS, AutoregressiveBernoulli, autoregressive_decoder
from zoo.core.distributions import IndependentBernoulli
from zoo.core.errors import ZooError
from zoo.core.nn import mlp
from zoo.core.registry import MODELS, OptionError, Options, option
from zoo.core.contract import LatentSite, ZooModel
from zoo.core.plates import data_plate
from zoo.core.params import register_module

__all__ = ["VAE"]




@dataclass
class VAEOptions(Options):
    latent_dim: int = option(50, "number of latent units", minimum=1, shape=True)
    hidden: Tuple[int, ...] = option((200, 200), "decoder hidden sizes, from z to x", minimum=1, shape=True)
    likelihood: Optional[str] = option(None, "bernoulli or gaussian (default: bernoulli for binary data, else gaussian)",
                                       choices=("bernoulli", "gaussian"))
    decoder: str = option("mlp", "p(x|z): mlp (factorized), made or pixelcnn (autoregressive, binary data; "
                          "pixelcnn: square images)", choices=DECODERS, shape=True)
    channels: Tuple[int, ...] = option((32, 32, 32), "pixelcnn decoder: channels of its masked layers (one 3x3 "
                                       "mask-B layer per entry after the first)", minimum=1, nonempty=True, shape=True)

    def validate(self) -> None:
        super().validate()
        if len(set(self.channels)) != 1:
            raise OptionError("channels", f"must all be equal (the PixelCNN's layers are residual), got "
                              f"{list(self.channels)}")


@MODELS.register("vae", options=VAEOptions, description="VAE, Gaussian prior, tanh MLP decoder, Bernoulli or "
                 "Gaussian likelihood (Burda et al. 2016: 784-200-200-50)")
class VAE(ZooModel):
    """Gaussian prior, MLP decoder, Bernoulli or Gaussian likelihood.

    Arguments:
        x_dim: data dimension (784 for MNIST, 64 for the 8x8 digits).
        latent_dim: d, the number of latent units (default 50).
        hidden: decoder hidden sizes, from z to x (default (200, 200)).
        likelihood: ``"bernoulli"`` for binary data, ``"gaussian"`` for continuous data.
        decoder: ``"mlp"``, or ``"made"`` / ``"pixelcnn"`` for an autoregressive Bernoulli p(x | z).
        channels: the PixelCNN's channels per masked layer (``decoder="pixelcnn"`` only).
    """

    def __init__(self, x_dim: int, latent_dim: int = 50, hidden: Sequence[int] = (200, 200),
                 likelihood: Optional[str] = "bernoulli", decoder: str = "mlp",
                 channels: Sequence[int] = (32, 32, 32)):
        super().__init__(x_dim)
        likelihood = likelihood or "bernoulli"
        if likelihood not in ("bernoulli", "gaussian"):
            raise ValueError(f"likelihood must be 'bernoulli' or 'gaussian', got {likelihood!r}")
        self.likelihood = likelihood
        self.latent_dim = int(latent_dim)
        self.hidden = tuple(int(h) for h in hidden)
        self.decoder_kind = decoder
        if decoder == "mlp":
            self.decoder = mlp((self.latent_dim, *self.hidden, x_dim))
        else:
            self.decoder = autoregressive_decoder(decoder, x_dim, self.latent_dim, self.hidden, channels)
            if likelihood != "bernoulli":
                raise ZooError(f"decoder {decoder!r} is an autoregressive Bernoulli likelihood, for binary data; "
                               f"binarize the data or use decoder 'mlp' with the gaussian likelihood")
        if likelihood == "gaussian":
            self.log_scale = nn.Parameter(torch.zeros(x_dim))
        self.register_buffer("prior_loc", torch.zeros(self.latent_dim))

    @property
    def latents(self):
        return (LatentSite("z", (self.latent_dim,), "real"),)

    def model(self, x=None, idx=None, N=None):
        register_module("vae", self)
        with data_plate(x, idx, N, device=self.prior_loc.device):
            z = pyro.sample("z", dist.Normal(self.prior_loc, 1.0).to_event(1))
            if self.decoder_kind != "mlp":
                pyro.sample("x", AutoregressiveBernoulli(self.decoder, z, observed=x), obs=x)
                return
            out = self.decoder(z)
            if self.likelihood == "bernoulli":
                px = IndependentBernoulli(out)                 # Bernoulli(logits=out).to_event(1)
            else:
                px = dist.Normal(out, torch.exp(self.log_scale)).to_event(1)
            pyro.sample("x", px, obs=x)
