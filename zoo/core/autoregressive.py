"""Autoregressive likelihoods p(x | z) = prod_i p(x_i | x_<i, z) over binary pixels in raster order.

Two conditional networks give the D logits l_i(x_<i, z) of all pixels in one pass:

- :class:`ConditionalMADE`: masked fully connected layers (Germain et al. 2015); z enters every
  hidden layer, and the output, through unmasked linear maps.
- :class:`ConditionalPixelCNN`: masked convolutions (van den Oord et al. 2016), one mask-A layer
  (the centre pixel excluded) then mask-B layers (the centre included, so nothing after it leaks);
  z enters PixelVAE-style (Gulrajani et al. 2017) as a learned map to a feature map added after the
  first layer, and as a learned per-channel bias of every later layer.

:class:`AutoregressiveBernoulli` wraps either as a :class:`pyro.distributions.TorchDistribution`
over x in {0, 1}^D, so a model observes or samples it at its site ``"x"`` and every guide, objective
and the harness use it unchanged::

    log p(x | z) = sum_i [x_i log sigmoid(l_i) + (1 - x_i) log sigmoid(-l_i)]     (one network pass)
    x_i ~ Bernoulli(sigmoid(l_i(x_<i, z))),  i = 1..D in order                       (D passes: ancestral)

Only Bernoulli pixels (binary data): a model refuses a Gaussian likelihood with these decoders.

References:
    M. Germain, K. Gregor, I. Murray, H. Larochelle, "MADE: Masked Autoencoder for Distribution
    Estimation", ICML 2015, https://arxiv.org/abs/1502.03509.
    A. van den Oord, N. Kalchbrenner, K. Kavukcuoglu, "Pixel Recurrent Neural Networks", ICML 2016,
    https://arxiv.org/abs/1601.06759.
    I. Gulrajani, K. Kumar, F. Ahmed, A. A. Taiga, F. Visin, D. Vazquez, A. Courville, "PixelVAE: A
    Latent Variable Model for Natural Images", ICLR 2017, https://arxiv.org/abs/1611.05013.

Example::

    >>> import torch
    >>> net = ConditionalMADE(x_dim=6, z_dim=2, hidden=(16,))
    >>> p = AutoregressiveBernoulli(net, torch.zeros(3, 2))
    >>> p.sample().shape, p.log_prob(torch.ones(3, 6)).shape
    (torch.Size([3, 6]), torch.Size([3]))
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from pyro.distributions import TorchDistribution
from torch import nn
from torch.distributions import constraints

from zoo.core.nn import ACTIVATIONS
from zoo.core.errors import ZooError
from zoo.core.components import OptionError, Options, option

__all__ = ["DecoderOptions", "MaskedLinear", "MaskedConv2d", "ConditionalMADE", "ConditionalPixelCNN", "AutoregressiveBernoulli",
           "image_side", "autoregressive_decoder", "check_autoregressive", "DECODERS"]

#: The decoder choices of models that take ``decoder``: ``mlp`` is the model's own factorized one.
DECODERS = ("mlp", "made", "pixelcnn")


@dataclass
class DecoderOptions(Options):
    """The ``decoder``, ``channels`` and ``activation`` options of a model whose p(x | z) may be autoregressive
    (vae, hvae). ``activation`` sets the model's MLPs; a made or pixelcnn decoder keeps its own units."""

    decoder: str = option("mlp", "p(x|z): mlp (factorized), made or pixelcnn (autoregressive, binary data; "
                          "pixelcnn: square images)", choices=DECODERS, checkpoint="shape")
    channels: Tuple[int, ...] = option((32, 32, 32), "pixelcnn decoder: channels of its masked layers (one 3x3 "
                                       "mask-B layer per entry after the first)", minimum=1, positive=True, checkpoint="shape")
    activation: str = option("tanh", "nonlinearity of the model's MLPs (the mlp decoder, hvae's transitions) and, "
                             "by default, of the encoder: tanh, relu, gated (Tomczak & Welling's VampPrior nets) "
                             "or linear",
                             choices=ACTIVATIONS, checkpoint="shape")

    def validate(self) -> None:
        super().validate()
        if len(set(self.channels)) != 1:
            raise OptionError("channels", f"must all be equal (the PixelCNN's layers are residual), got "
                              f"{list(self.channels)}")


class MaskedLinear(nn.Linear):
    """``y = (W * M) x + b`` with a fixed 0/1 mask M of the weight's shape."""

    def __init__(self, mask: torch.Tensor):
        super().__init__(mask.shape[1], mask.shape[0])
        self.register_buffer("mask", mask.float())

    def forward(self, x):
        return F.linear(x, self.weight * self.mask, self.bias)


class ConditionalMADE(nn.Module):
    """MADE in raster order, conditioned on z: logits l_i depend on x_<i and z only.

    Degrees: input and output i get degree i (1..D); hidden units get degrees cycling over
    1..D-1. A hidden unit of degree m sees the units below of degree <= m (inputs: x_j with
    j <= m); output i sees hidden units of degree < i. So l_i is a function of x_1..x_{i-1}.
    z is added to every hidden layer's pre-activation and to the output logits by unmasked
    linear maps (otherwise l_1, which sees no hidden unit, could not depend on z).

    Arguments:
        x_dim: D.
        z_dim: the latent dimension.
        hidden: masked hidden layer sizes (tanh).
    """

    def __init__(self, x_dim: int, z_dim: int, hidden: Sequence[int] = (200, 200)):
        super().__init__()
        D = int(x_dim)
        degrees = [torch.arange(1, D + 1)]
        for h in hidden:
            degrees.append(torch.arange(int(h)) % max(D - 1, 1) + 1)
        layers = [MaskedLinear(d_out[:, None] >= d_in[None, :]) for d_in, d_out in zip(degrees[:-1], degrees[1:])]
        layers.append(MaskedLinear(torch.arange(1, D + 1)[:, None] > degrees[-1][None, :]))
        self.layers = nn.ModuleList(layers)
        self.z_maps = nn.ModuleList([nn.Linear(z_dim, layer.out_features, bias=False) for layer in layers])

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        h = x
        for i, (layer, z_map) in enumerate(zip(self.layers, self.z_maps)):
            h = layer(h) + z_map(z)
            if i < len(self.layers) - 1:
                h = torch.tanh(h)
        return h


class MaskedConv2d(nn.Conv2d):
    """A same-padded convolution whose kernel sees only pixels before the centre in raster order
    (mask ``"A"``) or before and at it (mask ``"B"``), for single-channel images."""

    def __init__(self, mask_type: str, in_channels: int, out_channels: int, kernel_size: int):
        super().__init__(in_channels, out_channels, kernel_size, padding=kernel_size // 2)
        if mask_type not in ("A", "B"):
            raise ValueError(f"mask_type must be 'A' or 'B', got {mask_type!r}")
        c = kernel_size // 2
        mask = torch.ones(kernel_size, kernel_size)
        mask[c, c + (mask_type == "B"):] = 0
        mask[c + 1:] = 0
        self.register_buffer("mask", mask.expand_as(self.weight).clone())

    def forward(self, x):
        return self._conv_forward(x, self.weight * self.mask, self.bias)


class ConditionalPixelCNN(nn.Module):
    """A small PixelCNN over side x side binary images, conditioned on z, returning D = side^2 logits.

    Layers: a k x k mask-A convolution (k = 5 for images of side >= 16, else 3), then one 3x3
    mask-B convolution per entry of ``channels`` with residual connections, then a 1x1 mask-B
    convolution to one logit per pixel; ReLU between. Conditioning (PixelVAE): a linear map from
    z to a [C, side, side] feature map added after the first layer, and a linear map from z to a
    per-channel bias of each mask-B layer and of the output.

    Arguments:
        side: the image side (x_dim = side^2).
        z_dim: the latent dimension.
        channels: the channels of the masked layers (one 3x3 mask-B layer per entry after the first;
            all entries must be equal, for the residual connections).
    """

    def __init__(self, side: int, z_dim: int, channels: Sequence[int] = (32, 32, 32)):
        super().__init__()
        channels = tuple(int(c) for c in channels)
        if len(set(channels)) != 1:
            raise ValueError(f"the PixelCNN's residual layers need equal channels, got {channels}")
        C, self.side = channels[0], int(side)
        self.first = MaskedConv2d("A", 1, C, 5 if side >= 16 else 3)
        self.z_map = nn.Linear(z_dim, C * self.side * self.side)
        self.hidden = nn.ModuleList([MaskedConv2d("B", C, C, 3) for _ in channels[1:]])
        self.z_biases = nn.ModuleList([nn.Linear(z_dim, C) for _ in channels[1:]])
        self.out = MaskedConv2d("B", C, 1, 1)
        self.z_out = nn.Linear(z_dim, 1)

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        n, s = x.shape[0], self.side
        h = F.relu(self.first(x.reshape(n, 1, s, s)) + self.z_map(z).reshape(n, -1, s, s))
        for conv, z_bias in zip(self.hidden, self.z_biases):
            h = h + F.relu(conv(h) + z_bias(z)[:, :, None, None])
        return (self.out(h) + self.z_out(z)[:, :, None, None]).reshape(n, s * s)


def image_side(x_dim: int) -> Optional[int]:
    """The side of a square image of ``x_dim`` pixels, or ``None`` if ``x_dim`` is not a square (> 1)."""
    side = math.isqrt(int(x_dim))
    return side if side * side == x_dim and side > 1 else None


def autoregressive_decoder(kind: str, x_dim: int, z_dim: int, hidden: Sequence[int] = (200, 200),
                           channels: Sequence[int] = (32, 32, 32), likelihood: str = "bernoulli") -> nn.Module:
    """The network of decoder ``kind`` (``made`` or ``pixelcnn``) for D = ``x_dim`` binary pixels.

    ``pixelcnn`` needs square images (784 = 28^2, 64 = 8^2), and both a Bernoulli likelihood; other
    data are refused in one line.
    """
    check_autoregressive(kind, x_dim, likelihood)
    if kind == "made":
        return ConditionalMADE(x_dim, z_dim, hidden)
    return ConditionalPixelCNN(image_side(x_dim), z_dim, channels)


def check_autoregressive(kind: str, x_dim: int, likelihood: str = "bernoulli") -> None:
    """Refuse in one line a decoder ``kind`` that cannot model these data: not made or pixelcnn, a PixelCNN over
    data that are not square images, or a likelihood other than Bernoulli."""
    if kind not in ("made", "pixelcnn"):
        raise ZooError(f"unknown decoder {kind!r}; decoders: {', '.join(DECODERS)}")
    if kind == "pixelcnn" and image_side(x_dim) is None:
        raise ZooError(f"decoder 'pixelcnn' convolves over square images, and data of {x_dim} features are not "
                       f"one (28x28 = 784, 8x8 = 64); use decoder 'made' or 'mlp'")
    if likelihood != "bernoulli":
        raise ZooError(f"decoder {kind!r} is an autoregressive Bernoulli likelihood, for binary data; "
                       f"binarize the data or use decoder 'mlp' with the {likelihood} likelihood")


class AutoregressiveBernoulli(TorchDistribution):
    """p(x | z) = prod_i Bernoulli(x_i; sigmoid(l_i(x_<i, z))) for an autoregressive ``net(x, z)``.

    Batch shape: ``z.shape[:-1]``; event shape ``[D]``. ``log_prob`` is exact and takes one pass of
    ``net``; ``sample`` is ancestral and takes D passes, pixel i drawn from its conditional given the
    pixels already drawn.

    ``mean`` is not E[x | z] (which would need a sum over 2^D images), but what reconstructions and
    sample grids conventionally show for autoregressive decoders, the pixel probabilities
    sigmoid(l_i(x_<i, z)): given ``observed`` data (a model's observation), along those data (one
    pass, "teacher forcing"); otherwise along one ancestral sample (D passes).

    Arguments:
        net: maps (x ``[n, D]``, z ``[n, d]``) to logits ``[n, D]``, l_i depending on x_<i and z only.
        z: the latent code, ``[..., d]``.
        observed: the observed x, if any, for ``mean``.
    """

    arg_constraints = {}
    support = constraints.independent(constraints.boolean, 1)
    #: images per network pass when no gradient is needed
    chunk = 2048

    def __init__(self, net: nn.Module, z: torch.Tensor, observed: Optional[torch.Tensor] = None,
                 validate_args=None):
        self.net, self.z, self.observed = net, z, observed
        D = net.layers[-1].out_features if isinstance(net, ConditionalMADE) else net.side ** 2
        super().__init__(z.shape[:-1], torch.Size([D]), validate_args=False)

    def expand(self, batch_shape, _instance=None):
        batch_shape = torch.Size(batch_shape)
        return AutoregressiveBernoulli(self.net, self.z.expand(batch_shape + self.z.shape[-1:]), self.observed)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """l_i(x_<i, z) for every pixel, ``[*batch, D]``, with x and z broadcast against each other."""
        shape = torch.broadcast_shapes(x.shape[:-1], self.batch_shape)
        x = x.expand(shape + self.event_shape).reshape(-1, self.event_shape[0])
        z = self.z.expand(shape + self.z.shape[-1:]).reshape(-1, self.z.shape[-1])
        x = x.to(z.dtype)
        if torch.is_grad_enabled() or x.shape[0] <= self.chunk:
            return self.net(x, z).reshape(shape + self.event_shape)
        # no graph to keep: evaluate in chunks, so that K x B images (importance sampling) need bounded memory
        return torch.cat([self.net(x[i:i + self.chunk], z[i:i + self.chunk]) for i in range(0, x.shape[0], self.chunk)]
                         ).reshape(shape + self.event_shape)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        logits = self.logits(value)
        return -F.binary_cross_entropy_with_logits(logits, value.expand_as(logits).to(logits.dtype),
                                                   reduction="none").sum(-1)

    def ancestral(self, noise: torch.Tensor) -> torch.Tensor:
        """The ancestral sample driven by uniform noise ``u`` ``[*shape, *batch, D]``: x_i = 1[u_i < sigmoid(l_i(x_<i, z))]."""
        x = torch.zeros_like(noise)
        for i in range(self.event_shape[0]):
            x[..., i] = (noise[..., i] < torch.sigmoid(self.logits(x)[..., i])).to(x.dtype)
        return x

    def sample(self, sample_shape=torch.Size()):
        with torch.no_grad():
            shape = self._extended_shape(sample_shape)
            return self.ancestral(torch.rand(shape, dtype=self.z.dtype, device=self.z.device))

    @property
    def mean(self):
        with torch.no_grad():
            return torch.sigmoid(self.logits(self.sample() if self.observed is None else self.observed))
