"""Small network helpers shared by models and guides."""
from __future__ import annotations

from typing import Sequence

from torch import nn

__all__ = ["mlp"]


def mlp(sizes: Sequence[int], activation=nn.Tanh, final_activation: bool = False) -> nn.Sequential:
    """A plain MLP ``sizes[0] -> ... -> sizes[-1]`` with ``activation`` between layers
    (and after the last one if ``final_activation``)."""
    layers = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2 or final_activation:
            layers.append(activation())
    return nn.Sequential(*layers)
