"""DRAW: a recurrent VAE that builds its image on a canvas over T steps, writing where its attention puts it.

Generative story, for each datum (Gregor et al. 2015, eq. 6-9 read as a generative model)::

    h_0 = 0,   c_0 = b                                             (b: a learned canvas bias)
    for t = 1 .. T:
        z_t ~ N(0, I_d)                                            (one latent site "z{t}" per step)
        h_t = LSTM_dec(z_t, h_{t-1})
        c_t = c_{t-1} + write(h_t)
    x | z_1..T ~ Bernoulli(sigmoid(c_T))                           (likelihood="bernoulli")
    x | z_1..T ~ N(c_T, diag(sigma^2))                             (likelihood="gaussian")

``write(h) = (1 / gamma) F_Y^T w F_X`` pastes an N x N patch ``w = W(h)`` through a grid of Gaussian filters whose
centre, stride, blur and intensity are also linear in h (:mod:`zoo.core.attention`; ``write_glimpse`` = N, 5 in the
paper's MNIST model); ``write_glimpse=0`` is DRAW without attention, ``write(h) = W(h)`` over the whole image.
So p(x, z) = prod_t N(z_t; 0, I) p(x | c_T): the steps' latents are independent a priori and coupled only through
x, and the model has no exact log p(x).

DRAW's own inference network (:mod:`guides.recurrent`, ``--guide recurrent``) reads x and the error image
x - sigmoid(c_{t-1}) with an attention placed by h_{t-1}, and its LSTM gives q(z_t | x, z_<t): it runs this
model's decoder alongside (:meth:`decoder_step`). Any guide for real latents works as well (amortized reads x
alone for every step, iaf, meanfield, hamiltonian), and every objective for reparameterized guides; with the
recurrent guide ``tracemeanfield`` is DRAW's loss, the analytic KL of each step at the sampled past.

Defaults are the paper's MNIST model: T = 64 steps of d = 100 latents, 256 LSTM units, a 5 x 5 write (2 x 2 read)
glimpse, ``-log p(x) <= 80.97`` nats on binarized MNIST (87.40 without attention). Attention needs square images.

References:
    K. Gregor, I. Danihelka, A. Graves, D. J. Rezende and D. Wierstra, "DRAW: A Recurrent Neural Network For
    Image Generation", ICML 2015, https://arxiv.org/abs/1502.04623.

Example::

    >>> m = DRAW(x_dim=64, steps=4, latent_dim=3, decoder_size=16, write_glimpse=3)
    >>> [s.name for s in m.latents], m.sample(2).shape
    (['z1', 'z2', 'z3', 'z4'], torch.Size([2, 64]))
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Optional

import pyro
import pyro.distributions as dist
import torch
from torch import nn

from zoo.core.attention import GaussianAttention
from zoo.core.autoregressive import image_side
from zoo.core.components import MODELS, option
from zoo.core.contract import DecoderState, LatentSite, ZooModel
from zoo.core.errors import ZooError
from zoo.core.likelihoods import LikelihoodOptions, build_likelihood
from zoo.core.nn import lstm_step
from zoo.core.params import register_module
from zoo.core.plates import data_plate

__all__ = ["DRAW", "DRAWOptions"]


@dataclass
class DRAWOptions(LikelihoodOptions):
    test_options: ClassVar[dict] = {"steps": 3, "latent_dim": 2, "decoder_size": 8, "write_glimpse": 2}

    steps: int = option(64, "T, the steps that write the canvas (one latent site each)", minimum=1, checkpoint="shape")
    latent_dim: int = option(100, "latent units per step", minimum=1, checkpoint="shape")
    decoder_size: int = option(256, "the decoder LSTM's units", minimum=1, checkpoint="shape")
    write_glimpse: int = option(5, "N of the N x N write attention (0: no attention, each step writes the whole "
                                "image)", minimum=0, checkpoint="shape")

    def floats_per_datum(self, x_dim: int):
        # each step draws its latents and writes the canvas, and the gradient keeps every step's
        return [("steps", self.steps * (self.latent_dim + x_dim), "the latents and canvases of T steps")]


@MODELS.register("draw", options=DRAWOptions, description="DRAW (Gregor et al. 2015): T steps of latents, an LSTM "
                 "decoder writing on a canvas through Gaussian attention; its guide is 'recurrent'")
class DRAW(ZooModel):
    """The DRAW generative model: latents per step, an LSTM decoder, and a canvas written through attention.

    Arguments:
        x_dim: data dimension (a square image when ``write_glimpse`` > 0: 784 for MNIST, 64 for the 8x8 digits).
        steps: T, the number of steps (default 64).
        latent_dim: d, latent units per step (default 100).
        decoder_size: the decoder LSTM's units (default 256).
        write_glimpse: N of the N x N write attention; 0 writes the whole image each step (default 5).
        likelihood: ``"bernoulli"`` (binary data) or ``"gaussian"``; ``levels`` and ``mixtures`` are refused.
    """

    def __init__(self, x_dim: int, steps: int = 64, latent_dim: int = 100, decoder_size: int = 256,
                 write_glimpse: int = 5, likelihood: Optional[str] = "bernoulli", levels: Optional[int] = None,
                 mixtures: int = 5):
        super().__init__(x_dim)
        self.steps, self.latent_dim, self.decoder_size = int(steps), int(latent_dim), int(decoder_size)
        self.write_glimpse = int(write_glimpse)
        px = build_likelihood(likelihood, "mlp", x_dim, levels, mixtures)    # p(x | c_T): zoo.core.likelihoods
        if px.outputs != x_dim:
            raise ZooError(f"DRAW writes one canvas value per pixel, and the {px.name!r} likelihood reads "
                           f"{px.outputs // x_dim} per pixel; use --likelihood bernoulli or gaussian")
        self.px, self.likelihood, self.levels = px, px.name, px.levels
        side = image_side(x_dim)
        if self.write_glimpse and side is None:
            raise ZooError(f"DRAW's attention writes on square images, and data of {x_dim} features are not "
                           f"square; use --write-glimpse 0 (DRAW without attention)")
        self.rnn = nn.LSTMCell(self.latent_dim, self.decoder_size)
        if self.write_glimpse:
            self.patch = nn.Linear(self.decoder_size, self.write_glimpse ** 2)
            self.attention = GaussianAttention(side, self.write_glimpse, self.decoder_size)
        else:
            self.patch = nn.Linear(self.decoder_size, x_dim)
        self.canvas_bias = nn.Parameter(torch.zeros(x_dim))
        self.register_buffer("h0", torch.zeros(self.decoder_size))
        self.register_buffer("prior_loc", torch.zeros(self.latent_dim))

    @property
    def latents(self):
        return tuple(LatentSite(f"z{t + 1}", (self.latent_dim,)) for t in range(self.steps))

    def write(self, h: torch.Tensor) -> torch.Tensor:
        """What step t adds to the canvas: an N x N patch through the attention, or the whole image."""
        return self.attention.write(self.patch(h), h) if self.write_glimpse else self.patch(h)

    def decoder_start(self) -> DecoderState:
        return DecoderState(self.h0, self.h0, self.canvas_bias)

    def decoder_step(self, state: DecoderState, z: torch.Tensor) -> DecoderState:
        h, c = lstm_step(self.rnn, z, state.h, state.c)            # h_t = LSTM_dec(z_t, h_{t-1})
        return DecoderState(h, c, state.canvas + self.write(h))    # c_t = c_{t-1} + write(h_t)

    def decoder_mean(self, state: DecoderState) -> torch.Tensor:
        return self.px.distribution(state.canvas).mean

    def model(self, x=None, idx=None, N=None):
        register_module("draw", self)
        with data_plate(x, idx, N, device=self.h0.device):
            state = self.decoder_start()
            for site in self.latents:
                z = pyro.sample(site.name, dist.Normal(self.prior_loc, 1.0).to_event(1))
                state = self.decoder_step(state, z)
            pyro.sample("x", self.px.distribution(state.canvas), obs=x)
