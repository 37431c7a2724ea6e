"""DRAW's selective attention: a grid of N x N Gaussian filters laid over an A x B image (Gregor et al. 2015, sec. 3).

Five numbers, a linear map of a recurrent state h, place the grid::

    (g~_X, g~_Y, log sigma^2, log delta~, log gamma) = W(h)
    g_X = (A + 1) / 2 (g~_X + 1),   g_Y = (B + 1) / 2 (g~_Y + 1),   delta = (max(A, B) - 1) / (N - 1) delta~
    mu_X^i = g_X + (i - N/2 - 0.5) delta,   mu_Y^j = g_Y + (j - N/2 - 0.5) delta          i, j = 1 .. N
    F_X[i, a] = exp(-(a - mu_X^i)^2 / (2 sigma^2)) / Z_X,   F_Y[j, b] likewise             a = 1 .. A, b = 1 .. B

so that the grid's centre, stride, blur and intensity are learned, and every filter row sums to 1 (Z_X, Z_Y).
Reading extracts an N x N glimpse, writing pastes one back::

    read(x, h)  = gamma F_Y x F_X^T                  (an N x N glimpse of the B x A image x)
    write(w, h) = (1 / gamma) F_Y^T w F_X            (an N x N patch w placed on the B x A canvas)

Both are differentiable in every parameter, so the attention is trained by the same gradients as the rest.
Images are square here (A = B = ``side``), as for MNIST and the 8 x 8 digits.

References:
    K. Gregor, I. Danihelka, A. Graves, D. J. Rezende and D. Wierstra, "DRAW: A Recurrent Neural Network For
    Image Generation", ICML 2015, https://arxiv.org/abs/1502.04623 (section 3.2, eq. 19-29).

Example::

    >>> import torch
    >>> attention = GaussianAttention(side=8, glimpse=3, state_size=16)
    >>> h, x = torch.zeros(2, 16), torch.rand(2, 64)
    >>> attention.read(x, h).shape, attention.write(torch.rand(2, 9), h).shape
    (torch.Size([2, 9]), torch.Size([2, 64]))
"""
from __future__ import annotations

from typing import Tuple

import torch
from torch import nn

__all__ = ["GaussianAttention", "filterbanks"]


def filterbanks(params: torch.Tensor, side: int, glimpse: int) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(F_X, F_Y, gamma) from the five raw numbers ``params[..., 5]``: filterbanks ``[..., N, side]`` whose rows sum
    to 1, and the intensity ``[...]``."""
    gx_, gy_, log_var, log_delta, log_gamma = params.unbind(-1)
    centre = (side + 1) / 2
    gx, gy = centre * (gx_ + 1), centre * (gy_ + 1)
    delta = (side - 1) / max(glimpse - 1, 1) * log_delta.exp()
    offsets = torch.arange(1, glimpse + 1, dtype=params.dtype, device=params.device) - glimpse / 2 - 0.5
    pixels = torch.arange(1, side + 1, dtype=params.dtype, device=params.device)
    var = log_var.exp()[..., None, None]

    def bank(g):
        mu = g[..., None] + offsets * delta[..., None]                     # [..., N]
        # exp(-(a - mu)^2 / (2 sigma^2)) / Z as a softmax over the pixels a: each row sums to 1 exactly, also where
        # every exp would underflow (a filter far off the image, a small blur), which exp / (sum + eps) zeroes
        return torch.softmax(-(pixels - mu[..., None]).pow(2) / (2 * var), dim=-1)     # [..., N, side]

    return bank(gx), bank(gy), log_gamma.exp()


class GaussianAttention(nn.Module):
    """An N x N grid of Gaussian filters over ``side`` x ``side`` images, placed by a linear map of a state.

    Arguments:
        side: the image side (x_dim = side^2).
        glimpse: N, the filters per side of the grid.
        state_size: the size of the state h the five grid parameters are read from.
    """

    def __init__(self, side: int, glimpse: int, state_size: int):
        super().__init__()
        self.side, self.glimpse = int(side), int(glimpse)
        self.where = nn.Linear(state_size, 5)

    def banks(self, h: torch.Tensor):
        return filterbanks(self.where(h), self.side, self.glimpse)

    def read(self, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """gamma F_Y x F_X^T, flattened: ``x [..., side^2]`` -> ``[..., N^2]`` (batch shapes broadcast)."""
        fx, fy, gamma = self.banks(h)
        image = x.reshape(x.shape[:-1] + (self.side, self.side))
        glimpse = fy @ image @ fx.transpose(-1, -2)
        return (gamma[..., None, None] * glimpse).flatten(-2)

    def write(self, patch: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """(1 / gamma) F_Y^T w F_X, flattened: ``patch [..., N^2]`` -> ``[..., side^2]``."""
        fx, fy, gamma = self.banks(h)
        w = patch.reshape(patch.shape[:-1] + (self.glimpse, self.glimpse))
        return (fy.transpose(-1, -2) @ w @ fx / gamma[..., None, None]).flatten(-2)
