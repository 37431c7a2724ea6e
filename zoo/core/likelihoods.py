"""Likelihoods: p(x | z) as a part a model is composed from, not a flag it branches on.

A likelihood is the distribution a decoder network's outputs parameterize, and it knows which network fits it
(how many outputs per pixel, or an autoregressive one). A model takes the part itself; the command line's
``likelihood`` and ``decoder`` options (:class:`LikelihoodOptions`, :class:`~zoo.core.autoregressive.DecoderOptions`)
become one at the registry's boundary (the model's ``from_options``)::

    px = build_likelihood(likelihood, decoder, x_dim, levels, mixtures, channels)

and the model builds the network the part reads::

    self.decoder = self.px.network(latent_dim, hidden, activation)

and observes x with one line, whatever the likelihood is::

    pyro.sample("x", self.px(self.decoder, h, observed=x), obs=x)

The parts, with f the decoder network and D the pixels:

``bernoulli``
    x in {0, 1}^D, p(x | z) = prod_i Bernoulli(x_i; sigmoid(f(z)_i)): D outputs; 2 levels per pixel.
``gaussian``
    x in R^D, p(x | z) = N(f(z), diag(sigma^2)) with log sigma a learned vector: D outputs; a density, so its
    negative log-likelihood is not a code length and has no bits/dim.
``categorical``, ``dlogistic``, ``dmol``, ``dequant-uniform``, ``dequant-flow``
    x in {0, ..., k-1}^D (:mod:`zoo.core.levels`): k, 2, 3M or 1 outputs per pixel; k levels.
``decoder="made"`` or ``"pixelcnn"``
    an autoregressive Bernoulli p(x | z) = prod_i Bernoulli(x_i; sigmoid(l_i(x_<i, z))) whose network reads x as
    well as z (:mod:`zoo.core.autoregressive`); binary data only.

Each part declares ``name`` (the ``--likelihood`` it answers to), ``levels`` (k of a k-level likelihood, else
``None``: the model's :attr:`~zoo.core.contract.ZooModel.levels`) and ``data_levels`` (2 for Bernoulli pixels, k,
or ``None`` for a density), which decides whether log p(x) is a code length with a bits/dim. A new likelihood is
one class here and one line in :func:`build_likelihood`.

Checkpoints written before likelihoods were parts named the Gaussian's scale ``log_scale`` and the k-level part
``pixels``; :data:`LEGACY_TENSOR_NAMES` maps them to ``px.log_scale`` and ``px.pixels``
(:func:`zoo.experiments.run_folder.load_weights` applies it).

Example::

    >>> import torch
    >>> px = build_likelihood("gaussian", "mlp", x_dim=4)
    >>> f = px.network(z_dim=2, hidden=(8,))
    >>> p = px(f, torch.zeros(3, 2))
    >>> p.batch_shape, p.event_shape, px.data_levels
    (torch.Size([3]), torch.Size([4]), None)
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Optional, Sequence

import pyro.distributions as dist
import torch
from pyro.distributions import TorchDistribution
from torch import nn

from zoo.core.autoregressive import AutoregressiveBernoulli, autoregressive_decoder, check_autoregressive
from zoo.core.components import Options, option
from zoo.core.distributions import IndependentBernoulli
from zoo.core.errors import ZooError
from zoo.core.levels import LEVEL_LIKELIHOODS, LevelsLikelihood
from zoo.core.nn import mlp

__all__ = ["Likelihood", "Bernoulli", "Gaussian", "PixelLevels", "Autoregressive", "build_likelihood",
           "LikelihoodOptions", "LIKELIHOODS", "LEGACY_TENSOR_NAMES"]

#: Every ``--likelihood`` of a model with an MLP decoder: binary pixels, a density, or k levels.
LIKELIHOODS = ("bernoulli", "gaussian", *LEVEL_LIKELIHOODS)

#: Tensor names of checkpoints from before likelihoods were parts -> their names now (prefixes).
LEGACY_TENSOR_NAMES = {"log_scale": "px.log_scale", "pixels.": "px.pixels."}


@dataclass
class LikelihoodOptions(Options):
    """The ``likelihood``, ``levels`` and ``mixtures`` options of a model composed with a likelihood part."""

    likelihood: Optional[str] = option(None, "p(x|z): bernoulli (binary data), gaussian (a density), or for k-level "
                                       "data categorical, dlogistic, dmol (discretized logistic mixture), "
                                       "dequant-uniform or dequant-flow (a dequantized Gaussian); default: "
                                       "bernoulli for binary data, categorical for levels, else gaussian",
                                       choices=LIKELIHOODS)
    levels: Optional[int] = option(None, "k, the intensity levels of a k-level likelihood (default: the dataset's; "
                                   "on the command line always the dataset's, which --levels declares for a data file)",
                                   minimum=2, checkpoint="shape", cli=False)
    mixtures: int = option(5, "dmol likelihood: logistic components per pixel", minimum=1, checkpoint="shape")


class Likelihood(nn.Module):
    """p(x | z) read from a decoder network's output: the base of the parts (module docstring).

    Arguments:
        x_dim: D, values per datum.

    Class attributes:
        name: the ``--likelihood`` name.
        levels: k of a k-level likelihood, else ``None``.
        data_levels: values each x_i can take (2 for Bernoulli pixels, k), or ``None`` for a density.
    """

    name: ClassVar[str] = ""
    data_levels: ClassVar[Optional[int]] = None

    def __init__(self, x_dim: int):
        super().__init__()
        self.x_dim = int(x_dim)

    @property
    def levels(self) -> Optional[int]:
        return None

    @property
    def outputs(self) -> int:
        """How many numbers the decoder network gives per datum."""
        return self.x_dim

    #: the ``--decoder`` whose network this part reads: ``"mlp"`` (factorized), or an autoregressive one
    decoder_kind: ClassVar[str] = "mlp"

    def network(self, z_dim: int, hidden: Sequence[int] = (200, 200), activation: str = "tanh") -> nn.Module:
        """The decoder network f this likelihood reads: an MLP ``z_dim -> hidden -> outputs``."""
        return mlp((int(z_dim), *hidden, self.outputs), activation)

    def distribution(self, out: torch.Tensor) -> TorchDistribution:
        """p(x | z) with event shape ``(D,)`` from the network's output ``[..., outputs]``."""
        raise NotImplementedError

    def forward(self, decoder: nn.Module, h: torch.Tensor, observed: Optional[torch.Tensor] = None) -> TorchDistribution:
        """p(x | z) for decoder input ``h`` (``observed``: the data x, which only an autoregressive part reads)."""
        return self.distribution(decoder(h))


class Bernoulli(Likelihood):
    """x_i ~ Bernoulli(sigmoid(f(z)_i)), independent over the D pixels."""

    name = "bernoulli"
    data_levels = 2

    def distribution(self, out):
        return IndependentBernoulli(out)                   # Bernoulli(logits=out).to_event(1), fused log_prob


class Gaussian(Likelihood):
    """x ~ N(f(z), diag(sigma^2)), sigma = exp(log_scale) one learned scale per dimension, shared over data."""

    name = "gaussian"

    def __init__(self, x_dim: int):
        super().__init__(x_dim)
        self.log_scale = nn.Parameter(torch.zeros(self.x_dim))

    def distribution(self, out):
        return dist.Normal(out, torch.exp(self.log_scale)).to_event(1)


class PixelLevels(Likelihood):
    """x_i in {0, ..., k-1}: one of :data:`~zoo.core.levels.LEVEL_LIKELIHOODS` (``kind``), with k = ``levels`` and
    ``mixtures`` components for ``dmol``."""

    def __init__(self, kind: str, x_dim: int, levels: Optional[int], mixtures: int = 5):
        super().__init__(x_dim)
        self.pixels = LevelsLikelihood(kind, x_dim, levels, mixtures)
        self.name = kind

    @property
    def levels(self) -> int:
        return self.pixels.levels

    @property
    def data_levels(self) -> int:
        return self.pixels.levels

    @property
    def outputs(self) -> int:
        return self.x_dim * self.pixels.outputs_per_pixel

    def distribution(self, out):
        return self.pixels(out)


class Autoregressive(Bernoulli):
    """p(x | z) = prod_i Bernoulli(x_i; sigmoid(l_i(x_<i, z))): a MADE or PixelCNN (``kind``) reads x and z, the
    PixelCNN with ``channels`` per masked layer."""

    def __init__(self, kind: str, x_dim: int, channels: Sequence[int] = (32, 32, 32)):
        super().__init__(x_dim)
        self.kind = kind
        self.channels = tuple(int(c) for c in channels)

    @property
    def decoder_kind(self) -> str:
        return self.kind

    def network(self, z_dim, hidden=(200, 200), activation="tanh"):
        return autoregressive_decoder(self.kind, self.x_dim, int(z_dim), hidden, self.channels, self.name)

    def forward(self, decoder, h, observed=None):
        return AutoregressiveBernoulli(decoder, h, observed=observed)


def build_likelihood(likelihood: Optional[str], decoder: str, x_dim: int, levels: Optional[int] = None,
                     mixtures: int = 5, channels: Sequence[int] = (32, 32, 32)) -> Likelihood:
    """The part for ``--likelihood`` (``None``: bernoulli) with a ``decoder`` of kind mlp, made or pixelcnn (with
    ``channels``)."""
    likelihood = likelihood or "bernoulli"
    if decoder != "mlp":
        check_autoregressive(decoder, x_dim, likelihood)
        return Autoregressive(decoder, x_dim, channels)
    if likelihood in LEVEL_LIKELIHOODS:
        return PixelLevels(likelihood, x_dim, levels, mixtures)
    if likelihood == "bernoulli":
        return Bernoulli(x_dim)
    if likelihood == "gaussian":
        return Gaussian(x_dim)
    raise ZooError(f"unknown likelihood {likelihood!r}; likelihoods: {', '.join(LIKELIHOODS)}")
