"""The one plate of the contract: ``"data"``, subsampled by the minibatch indices.

Every zoo model and guide puts its local latents and the observation ``"x"`` inside
``pyro.plate("data", N, subsample=idx)`` at dim -1. Particle plates of the vectorized
objectives and of the harness go to its left.
"""
from __future__ import annotations

from typing import Optional

import pyro
import torch

__all__ = ["MAX_PLATE_NESTING", "data_plate"]

#: Every zoo model nests exactly one plate (``"data"``, dim -1). Particle plates
#: used by vectorized objectives go to the left of it.
MAX_PLATE_NESTING = 1


def data_plate(x: Optional[torch.Tensor], idx: Optional[torch.Tensor] = None,
               N: Optional[int] = None, device=None) -> pyro.plate:
    """The ``"data"`` plate of the contract, subsampled by ``idx`` out of ``N``.

    ``x`` is the minibatch (``None`` when generating ``N`` new data). With ``idx``
    given, Pyro scales every site inside the plate by ``N / len(idx)``.
    """
    if x is None:
        if N is None:
            raise ValueError("give either data x or the number of data N to generate")
        return pyro.plate("data", N, dim=-1, device=device)
    B = x.shape[0]
    if idx is None:
        if N is not None and N != B:
            raise ValueError(f"a minibatch of {B} out of N={N} needs its indices idx")
        return pyro.plate("data", B, dim=-1, device=x.device)
    # device: Pyro's plate otherwise makes a tensor on every entry to find the default device
    return pyro.plate("data", N if N is not None else B, subsample=idx, dim=-1, device=getattr(idx, "device", None))
