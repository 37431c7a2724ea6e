"""Small network helpers shared by models and guides.

Four hidden-layer maps, named by the ``activation`` options of models and encoders:

``tanh``
    h = tanh(W x + b), Burda et al.'s (2016) networks and the zoo's default.
``relu``
    h = max(0, W x + b).
``gated``
    h = (W x + b) * sigmoid(V x + c), the gated linear unit (Dauphin et al. 2017) of Tomczak &
    Welling's VampPrior networks. Its linear path never saturates: a tanh encoder can make its
    output constant in x by saturating every unit, where the gradient is zero, and under a
    VampPrior (whose components are that same encoder's output) it does so within the first
    epoch and stays there, the posterior collapsed (``benchmarks/vampprior_saturation.py``).
``linear``
    h = W x + b, no nonlinearity: a linear network. A linear-Gaussian model's exact posterior has
    means linear in x (and in the conditioning latents) and constant variances, so a linear encoder
    holds it exactly (``tests/test_hvae.py`` trains one to it).

References:
    Y. N. Dauphin, A. Fan, M. Auli and D. Grangier, "Language Modeling with Gated Convolutional
    Networks", ICML 2017, https://arxiv.org/abs/1612.08083.
    J. M. Tomczak and M. Welling, "VAE with a VampPrior", AISTATS 2018.
"""
from __future__ import annotations

from typing import Sequence, Tuple

import torch
from torch import nn

__all__ = ["ACTIVATIONS", "GatedDense", "activation_layer", "mlp", "lstm_step"]

ACTIVATIONS = ("tanh", "relu", "gated", "linear")


class GatedDense(nn.Module):
    """h = (W x + b) * sigmoid(V x + c): a linear layer and its nonlinearity in one module."""

    def __init__(self, in_features: int, out_features: int):
        super().__init__()
        self.h = nn.Linear(in_features, out_features)
        self.g = nn.Linear(in_features, out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.h(x) * torch.sigmoid(self.g(x))


def activation_layer(activation: str) -> nn.Module:
    """The nonlinearity ``activation`` as a layer: tanh, relu, or linear (the identity). A gated unit is a layer of
    its own (:class:`GatedDense`), not a nonlinearity after one."""
    layers = {"tanh": nn.Tanh, "relu": nn.ReLU, "linear": nn.Identity}
    if activation not in layers:
        raise ValueError(f"activation must be one of {', '.join(layers)}, got {activation!r}")
    return layers[activation]()


def mlp(sizes: Sequence[int], activation: str = "tanh", final_activation: bool = False) -> nn.Sequential:
    """An MLP ``sizes[0] -> ... -> sizes[-1]`` with the nonlinearity ``activation`` (one of
    :data:`ACTIVATIONS`) after every layer but the last (and after the last if ``final_activation``).
    A ``gated`` layer is a :class:`GatedDense`; the output layer is always linear unless
    ``final_activation``."""
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {', '.join(ACTIVATIONS)}, got {activation!r}")
    layers = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        hidden = i < len(sizes) - 2 or final_activation
        if hidden and activation == "gated":
            layers.append(GatedDense(a, b))
            continue
        layers.append(nn.Linear(a, b))
        if hidden and activation != "linear":
            layers.append(activation_layer(activation))
    return nn.Sequential(*layers)


def lstm_step(cell: nn.LSTMCell, inputs: torch.Tensor, h: torch.Tensor, c: torch.Tensor
              ) -> Tuple[torch.Tensor, torch.Tensor]:
    """One step of ``cell`` for inputs and states of any broadcastable batch shape (an ``nn.LSTMCell`` takes one
    batch dimension; Pyro's vectorized particles add another): ``(h', c')`` of batch shape the broadcast one."""
    batch = torch.broadcast_shapes(inputs.shape[:-1], h.shape[:-1], c.shape[:-1])
    flat = (-1,)
    h2, c2 = cell(inputs.expand(batch + inputs.shape[-1:]).reshape(flat + inputs.shape[-1:]),
                  (h.expand(batch + h.shape[-1:]).reshape(flat + h.shape[-1:]),
                   c.expand(batch + c.shape[-1:]).reshape(flat + c.shape[-1:])))
    return h2.reshape(batch + h2.shape[-1:]), c2.reshape(batch + c2.shape[-1:])
