"""The one plate of the contract: ``"data"``, subsampled by the minibatch indices.

Every zoo model and guide puts its local latents and the observation ``"x"`` inside
``pyro.plate("data", N, subsample=idx)`` at dim -1. Particle plates of the vectorized
objectives and of the harness go to its left.
"""
from __future__ import annotations

from typing import Optional

import pyro
import torch
from pyro.distributions.torch_distribution import TorchDistributionMixin
from pyro.poutine.indep_messenger import CondIndepStackFrame, IndepMessenger
from pyro.poutine.runtime import _PYRO_STACK

__all__ = ["MAX_PLATE_NESTING", "DataPlate", "data_plate"]

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
    return DataPlate("data", N if N is not None else B, subsample=idx, dim=-1, device=getattr(idx, "device", None))


class DataPlate(pyro.plate):
    """``pyro.plate(name, size, subsample=idx, dim=dim)``, with two steps skipped where they would change nothing.

    Every training step enters the data plate twice (the guide's, the model's), and at the small models' sizes
    Pyro's per-plate and per-site Python is a visible share of the step (``benchmarks/step_overhead.py --small``):

    - **The subsample site.** ``pyro.plate`` sends its given indices through the effect stack as a sample site
      ``name``, so that a handler may record or replace them (``poutine.trace``, ``replay``). Where every handler on
      the stack declares that it reads no subsample site (``ignores_subsample_sites``: the training step's lean
      passes, :mod:`zoo.objectives.lean`), or there is no handler at all, that message would come back with the same
      indices: the plate takes them as they are.
    - **The broadcast.** ``pyro.plate`` broadcasts each sample site's distribution to the plates' shape by
      ``fn.expand(shape)``. Where the plate is the first to see the site (none nested inside it) and the
      distribution's batch shape already has this plate's size at its dim, that shape is the one it already has;
      the site keeps its distribution. Any other site is broadcast as Pyro does.

    The frame on the site's ``cond_indep_stack`` and the scale ``size / subsample_size`` are Pyro's own, so traces,
    ELBOs and handlers see the same sites as with ``pyro.plate``.
    """

    def __init__(self, name: str, size: int, subsample: torch.Tensor, dim: int, device=None):
        if not torch.is_tensor(subsample) or not isinstance(size, int) or not all(
                getattr(handler, "ignores_subsample_sites", False) for handler in _PYRO_STACK):
            super().__init__(name, size, subsample=subsample, dim=dim, device=device)
            return
        IndepMessenger.__init__(self, name, size, dim, device)
        self.subsample_size, self._indices = subsample.shape[0], subsample

    def _process_message(self, msg) -> None:
        fn, dim = msg["fn"], self.dim
        if (msg["type"] != "sample" or msg["done"] or msg["cond_indep_stack"] or not isinstance(self.size, int)
                or not isinstance(fn, TorchDistributionMixin)):
            return super()._process_message(msg)
        shape = fn.batch_shape
        if len(shape) < -dim or shape[dim] != self.subsample_size:
            return super()._process_message(msg)
        msg["cond_indep_stack"] = (CondIndepStackFrame(name=self.name, dim=dim, size=self.subsample_size,
                                                       counter=self.counter, full_size=self.size),)
        msg["scale"] = msg["scale"] * self.size / self.subsample_size
