"""How many CPU threads a run (training, then evaluation) uses when the user has not said.

PyTorch starts one intra-op thread per core. A training step of a small model (the 8x8 digits, most homework and
user models) is mostly Python and small matrix products, and a second thread buys little: the README's
quickstart grid on 2 cores finishes sooner on PyTorch's default 2 threads than on one, but for more CPU-seconds in
every round of ``benchmarks/results/quickstart_cost.json``, and on a loaded machine
the spinning threads of several such processes cost far more. The 784-200-200-50 MNIST VAE (about 250 MFLOP a step at batch 100) runs 1.9x
faster on 2 threads than on one for about the same CPU (the eager loop of ``benchmarks/results/
speed_cpu_compiled.json`` on one thread and of ``speed_cpu_numpyro.json`` on two, same machine type).

So when nothing chose the threads (no ``OMP_NUM_THREADS`` in the environment and no engine setting them), a run
whose training step is below :data:`SMALL_STEP_FLOP` trains and is evaluated on one thread, and the process says
so once. The FLOPs are counted from the model's and guide's linear layers (:func:`step_flop`); a model with
other layers (convolutions, recurrent cells), whose cost that count misses, or with no linear layer keeps
PyTorch's default, as does any run on a GPU.
``OMP_NUM_THREADS=N`` chooses N for everything.
"""
from __future__ import annotations

import contextlib
import os
from typing import Iterator, Optional

import torch

__all__ = ["SMALL_STEP_FLOP", "step_flop", "run_threads", "chosen_by_caller"]

#: A training step below this many FLOPs trains on one thread when nothing else chose the threads.
SMALL_STEP_FLOP = 2e8

_CALLER_CHOSE = False
_SAID = False


def chosen_by_caller() -> None:
    """Record that this process's threads were set on purpose (a grid worker's ``cores // workers``)."""
    global _CALLER_CHOSE
    _CALLER_CHOSE = True


def step_flop(model: torch.nn.Module, guide: torch.nn.Module, batch_size: int) -> Optional[float]:
    """FLOPs of one training step: each linear layer's multiply-adds per datum, 2 FLOPs forward and 4 backward,
    times the batch; None where the model or guide has a convolution, a recurrent cell or attention, whose cost
    this count misses, or no linear layer at all (a model of ``pyro.param`` tensors: its cost is unknown here)."""
    macs = 0
    for net in (model, guide):
        for m in net.modules():
            if isinstance(m, torch.nn.Linear):
                macs += m.in_features * m.out_features
            elif isinstance(m, (torch.nn.modules.conv._ConvNd, torch.nn.RNNBase, torch.nn.RNNCellBase,
                                torch.nn.MultiheadAttention)):
                return None
    return 6.0 * macs * batch_size if macs else None


@contextlib.contextmanager
def run_threads(model, guide, batch_size: int, device: torch.device, say=print) -> Iterator[None]:
    """One thread inside the block where the training step is small and nothing chose the threads (see the
    module docstring); the first time in a process, ``say`` a line of why and how to choose."""
    global _SAID
    flop = step_flop(model, guide, batch_size)
    threads = torch.get_num_threads()
    if (device.type != "cpu" or _CALLER_CHOSE or "OMP_NUM_THREADS" in os.environ or threads == 1
            or flop is None or flop >= SMALL_STEP_FLOP):
        yield
        return
    if not _SAID:
        _SAID = True
        say(f"note: 1 CPU thread of {threads}: a step of this model is {flop / 1e6:.0f} MFLOP, too "
            f"small to gain from more (set OMP_NUM_THREADS=N to choose)")
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
