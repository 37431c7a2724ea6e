"""DRAW's inference network: an LSTM encoder that reads x and the error image where the decoder's state looks.

For a model that writes x over steps (:meth:`~zoo.core.contract.ZooModel.decoder_step`: DRAW), the guide runs the
model's decoder alongside and, at each step t (Gregor et al. 2015, eq. 3-5)::

    x^_t = x - E[x | c_{t-1}]                                     (the error image: what is left to draw)
    r_t = read(x, x^_t, h^dec_{t-1}) = gamma [F_Y x F_X^T, F_Y x^_t F_X^T]      (an N x N glimpse of each)
    h^enc_t = LSTM_enc([r_t, h^dec_{t-1}], h^enc_{t-1})
    q(z_t | x, z_<t) = N(mu(h^enc_t), diag(sigma(h^enc_t)^2))
    h^dec_t, c_t = the model's decoder step from z_t

The read attention's grid is placed by h^dec_{t-1} (:mod:`zoo.core.attention`; ``read_glimpse`` = N, 2 in the
paper's MNIST model); ``read_glimpse=0`` reads x and x^_t whole (DRAW without attention). Because q(z_t | .) is
conditioned on the sampled past in the model's own order, ``tracemeanfield``'s analytic KL of each step,
KL(q(z_t | x, z_<t) || N(0, I)), is an unbiased term of the ELBO: that sum plus -log p(x | c_T) is DRAW's loss.

The guide computes with the decoder's parameters (``borrows_model``), as DRAW does: gradients of log q reach the
decoder through h^dec, so dreg, which needs disjoint parameters, refuses it. The decoder runs twice per step
(once here, once in the model), the price of keeping model and guide separate Pyro programs.

References:
    K. Gregor, I. Danihelka, A. Graves, D. J. Rezende and D. Wierstra, "DRAW: A Recurrent Neural Network For
    Image Generation", ICML 2015, https://arxiv.org/abs/1502.04623.

Example::

    >>> from zoo.models.draw import DRAW
    >>> m = DRAW(x_dim=64, steps=4, latent_dim=3, decoder_size=16, write_glimpse=3)
    >>> g = Recurrent(m, encoder_size=16, read_glimpse=2)
    >>> g.read_size
    8
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Optional

import pyro
import torch
from torch import nn

from guides.base import ZooGuide, raw_size, site_distribution
from zoo.core.attention import GaussianAttention
from zoo.core.autoregressive import image_side
from zoo.core.components import GUIDES, Options, option
from zoo.core.contract import Borrowed
from zoo.core.errors import ZooError
from zoo.core.nn import lstm_step
from zoo.core.params import register_module
from zoo.core.plates import data_plate

__all__ = ["Recurrent", "RecurrentOptions"]


@dataclass
class RecurrentOptions(Options):
    test_options: ClassVar[dict] = {"encoder_size": 8, "read_glimpse": 2}

    encoder_size: int = option(256, "the encoder LSTM's units", minimum=1, checkpoint="shape")
    read_glimpse: int = option(2, "N of the N x N read attention (0: read the whole image and error image)",
                               minimum=0, checkpoint="shape")


@GUIDES.register("recurrent", options=RecurrentOptions, description="DRAW's encoder: an LSTM reading x and the error "
                 "image through attention, q(z_t | x, z_<t), running the model's decoder alongside")
class Recurrent(ZooGuide):
    """DRAW's recurrent encoder with read attention.

    Arguments:
        model: a zoo model that writes x over steps (``decoder_start`` / ``decoder_step`` / ``decoder_mean``: draw),
            with real latents, one site per step.
        num_data: unused (amortized).
        encoder_size, read_glimpse: see :class:`RecurrentOptions`.
    """

    family = "recurrent"
    supports = ("real",)
    supports_globals = False
    borrows_model = True

    def __init__(self, model, num_data: Optional[int] = None, encoder_size: int = 256, read_glimpse: int = 2):
        super().__init__(model, num_data)
        self._model = Borrowed(model)
        self.encoder_size, self.read_glimpse = int(encoder_size), int(read_glimpse)
        h_dec = model.decoder_start().h.shape[-1]
        side = image_side(model.x_dim)
        if self.read_glimpse and side is None:
            raise ZooError(f"the 'recurrent' guide's attention reads square images, and {model.display_name}'s data "
                           f"of {model.x_dim} features are not square; use --read-glimpse 0")
        if self.read_glimpse:
            self.attention = GaussianAttention(side, self.read_glimpse, h_dec)
            self.read_size = 2 * self.read_glimpse ** 2
        else:
            self.read_size = 2 * model.x_dim
        self.rnn = nn.LSTMCell(self.read_size + h_dec, self.encoder_size)
        self.heads = nn.ModuleDict({s.name: nn.Linear(self.encoder_size, raw_size(s)) for s in self.sites})
        self.register_buffer("h0", torch.zeros(self.encoder_size))

    @classmethod
    def check(cls, model) -> None:
        super().check(model)
        if not model.has_recurrent_decoder:
            raise ZooError(f"the 'recurrent' guide reads what the decoder has drawn so far, and "
                           f"{model.display_name} does not write x over steps (draw does); use amortized")

    def read(self, x: torch.Tensor, error: torch.Tensor, h_dec: torch.Tensor) -> torch.Tensor:
        """r_t: glimpses of x and of the error image at the grid h^dec_{t-1} places, or both whole."""
        if not self.read_glimpse:
            batch = torch.broadcast_shapes(x.shape[:-1], error.shape[:-1])
            return torch.cat([x.expand(batch + x.shape[-1:]), error.expand(batch + error.shape[-1:])], -1)
        return torch.cat([self.attention.read(x, h_dec), self.attention.read(error, h_dec)], -1)

    def forward(self, x, idx=None, N=None):
        register_module("recurrent", self)
        decoder = self._model.module
        with data_plate(x, idx, N):
            state, h, c = decoder.decoder_start(), self.h0, self.h0
            for s in self.sites:
                r = self.read(x, x - decoder.decoder_mean(state), state.h)
                batch = torch.broadcast_shapes(r.shape[:-1], state.h.shape[:-1])
                inputs = torch.cat([r.expand(batch + r.shape[-1:]), state.h.expand(batch + state.h.shape[-1:])], -1)
                h, c = lstm_step(self.rnn, inputs, h, c)               # h^enc_t
                z = pyro.sample(s.name, site_distribution(s, self.heads[s.name](h)))
                state = decoder.decoder_step(state, z)
