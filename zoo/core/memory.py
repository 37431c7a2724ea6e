"""What the machine can hold: sizes that options ask for, refused in one line before they are allocated.

An integer option such as ``--particles``, ``--prior-components`` or ``--eval-samples`` sizes
tensors. A value far beyond the machine ends, unchecked, in a traceback from torch's allocator
(``DefaultCPUAllocator: can't allocate memory``), possibly after a run folder was begun; a value
just beyond it can be worse: Linux overcommits, so the allocation succeeds and the kernel's OOM
killer ends the process later. So sizes are checked twice:

* **before**: :func:`refuse_oversized` compares a *lower bound* of what a setting needs (e.g.
  ``K x batch x D`` float32 likelihood terms per training step, whatever the model) with the
  device's total memory, and raises :class:`~zoo.core.errors.OptionError` naming the option;
* **at construction**: :func:`sized_by` turns an allocation failure while a component is built
  (torch's ``RuntimeError``/``OutOfMemoryError``, ``MemoryError``, an ``OverflowError`` from a
  size) into the same one-line error, naming the option that sized it.

The bound is the device's *total* memory, not what is free now: a run should not be refused
because another job is running, and a lower bound that exceeds the total can never fit.

Example::

    >>> refuse_oversized("particles", "objective", 10 ** 10 * 100 * 784 * 4, "the likelihood terms of one step")
    Traceback (most recent call last):
    ...
    zoo.core.errors.OptionError: particles asks for at least 3.1 PB for the likelihood terms of one step, ...
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional, Sequence, Tuple

import torch

from zoo.core.errors import OptionError

__all__ = ["FLOAT_BYTES", "memory_bytes", "human_bytes", "refuse_oversized", "is_out_of_memory", "sized_by",
           "refuse_oversized_run", "refuse_oversized_annealing", "refuse_oversized_parameters", "TRAINING_COPIES"]

#: float32, the zoo's tensors
FLOAT_BYTES = 4

#: the messages of allocation failures that torch raises as a plain RuntimeError
_OUT_OF_MEMORY_TEXT = ("can't allocate memory", "not enough memory", "out of memory", "DefaultCPUAllocator",
                       "Invalid buffer size", "Storage size calculation overflowed",
                       "integer multiplication overflow")


def memory_bytes(device: Optional[torch.device] = None) -> int:
    """The total memory of ``device``: a GPU's memory, else the machine's RAM (or its cgroup's limit, lower)."""
    device = torch.device(device if device is not None else "cpu")
    if device.type == "cuda" and torch.cuda.is_available():
        return torch.cuda.get_device_properties(device).total_memory
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    try:                                        # a container's limit (cgroup v2); "max" when there is none
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit.isdigit():
            total = min(total, int(limit))
    except OSError:
        pass
    return total


def human_bytes(n: float) -> str:
    """``2.6 TB``: decimal units, one decimal."""
    for unit in ("B", "kB", "MB", "GB", "TB", "PB"):
        if n < 1000 or unit == "PB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError("unreachable")


def refuse_oversized(option: str, kind: Optional[str], nbytes: int, what: str,
                     device: Optional[torch.device] = None, advice: str = "use a smaller value",
                     value: object = None) -> None:
    """Raise :class:`OptionError` for ``option`` (shown with ``value``, if given) if ``nbytes`` (a lower bound
    of what it asks for) exceeds the total memory of ``device``."""
    total = memory_bytes(device)
    if nbytes > total:
        where = "the GPU" if device is not None and torch.device(device).type == "cuda" else "this machine"
        shown = "" if value is None else (",".join(map(str, value)) if isinstance(value, (tuple, list))
                                          else str(value)) + " "
        raise OptionError(option, f"{shown}asks for at least {human_bytes(nbytes)} for {what}, more than the "
                          f"{human_bytes(total)} of memory {where} has; {advice}", kind=kind)


def is_out_of_memory(error: BaseException) -> bool:
    """Is ``error`` a failed allocation (or a size too large to compute), rather than a bug?"""
    if isinstance(error, (MemoryError, OverflowError, torch.OutOfMemoryError)):
        return True
    return isinstance(error, RuntimeError) and any(text in str(error) for text in _OUT_OF_MEMORY_TEXT)


@contextmanager
def sized_by(candidates: Sequence[Tuple[str, object]], kind: Optional[str], what: str) -> Iterator[None]:
    """Turn an allocation failure inside the block into one :class:`OptionError`.

    ``candidates``: (option, value) pairs that size what the block builds, the likeliest first; the
    error names the first. Without candidates, the failure is re-raised unchanged.
    """
    try:
        yield
    except Exception as e:
        if not candidates or not is_out_of_memory(e):
            raise
        option, value = candidates[0]
        shown = ",".join(map(str, value)) if isinstance(value, (tuple, list)) else value
        raise OptionError(option, f"{shown} makes {what} too large to allocate ({_first_line(e)}); "
                          f"use a smaller value", kind=kind) from None


#: copies of each parameter that training holds: the value, its gradient and Adam's two moments
TRAINING_COPIES = 4


def refuse_oversized_parameters(built, candidates: Sequence[Tuple[str, object]], kind: Optional[str],
                                what: str) -> None:
    """Refuse a just-built component (an ``nn.Module``) whose parameters fit once but not the
    :data:`TRAINING_COPIES` that training holds: with Linux's overcommit such a run would be killed by the
    kernel mid-training rather than refused. Names the first of ``candidates`` (see :func:`sized_by`)."""
    parameters = getattr(built, "parameters", None)
    if not candidates or not callable(parameters):
        return
    nbytes = sum(p.numel() * p.element_size() for p in parameters()) * TRAINING_COPIES
    option, value = candidates[0]
    refuse_oversized(option, kind, nbytes, f"the parameters of {what} (value, gradient and Adam's two moments)",
                     advice="use a smaller value", value=value)


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    # torch's message starts with the C++ location: "[enforce fail at alloc_cpu.cpp:127] err == 0. ..."
    if text.startswith("[enforce fail"):
        text = text.split(". ", 1)[-1]
    return text[:160]


#: the data per minibatch of the evaluation harness (:func:`zoo.evaluation.harness.evaluate`'s ``batch_size``)
EVAL_BATCH = 100
#: floats the harness keeps per importance sample and datum: log p(x|z), log q - log p(z), log w
EVAL_TERMS = 3


def refuse_oversized_run(config, x_dim: int, num_train: int, device: Optional[torch.device] = None) -> None:
    """Refuse a run whose tensors cannot fit ``device``, naming the option, before anything is written.

    Lower bounds that hold for every model (so a refusal is never wrong): a training step holds, for each
    of the objective's K particles and each datum of the minibatch, the D likelihood terms and their
    gradient (``K x batch x D x 2`` floats); the evaluation keeps :data:`EVAL_TERMS` floats per
    importance sample and datum of a minibatch of :data:`EVAL_BATCH` (``eval_samples x 100 x 3``).

    ``config``: a :class:`~zoo.experiments.config.RunConfig`; ``x_dim``, ``num_train``: the data's.
    """
    particles = getattr(config.resolved("objective"), "particles", None) or 1
    batch = min(config.batch_size, num_train)
    refuse_oversized("particles", "objective", particles * batch * x_dim * 2 * FLOAT_BYTES,
                     f"the likelihood terms of one training step (K x batch {batch} x {x_dim} values, with "
                     f"their gradients)", device, advice="use fewer particles or a smaller batch size")
    for kind in ("model", "objective"):         # what an option sizes besides: Options.floats_per_datum
        options = config.resolved(kind)
        bounds = getattr(options, "floats_per_datum", None)
        for option, floats, what in (bounds(x_dim) if callable(bounds) else ()):
            refuse_oversized(option, kind, particles * batch * floats * 2 * FLOAT_BYTES,
                             f"{what} in one training step (K x batch {batch} x {floats} values, with "
                             f"their gradients)", device, advice="use a smaller value (or fewer particles)",
                             value=getattr(options, option, None))
    refuse_oversized("eval_samples", "run", config.eval_samples * EVAL_BATCH * EVAL_TERMS * FLOAT_BYTES,
                     f"the log-weights of one evaluation minibatch (K x {EVAL_BATCH} data x {EVAL_TERMS} terms)",
                     device, advice="use fewer samples")


def refuse_oversized_annealing(temperatures: int, chains: int, batch: int, x_dim: int,
                               device: Optional[torch.device] = None, simulated: Optional[int] = None) -> None:
    """Refuse AIS or BDMC settings whose tensors cannot fit ``device``, naming the option, before any chain runs.

    Lower bounds for every model: each chain of a minibatch of ``batch`` data scores its datum's ``x_dim``
    likelihood terms at every move (``chains x batch x D`` floats); the acceptance of each of the T - 1
    transitions is kept per chain and datum, and a step size per temperature and datum (``(T - 1) x chains x
    batch`` floats, ``(T + 1) x batch`` doubles); BDMC first simulates its ``simulated`` data (``N x D`` floats).
    """
    if simulated is not None:
        refuse_oversized("bdmc_data", None, simulated * x_dim * FLOAT_BYTES,
                         f"the data BDMC simulates (N x {x_dim} values)", device, advice="simulate fewer data",
                         value=simulated)
    refuse_oversized("chains", None, chains * batch * x_dim * FLOAT_BYTES,
                     f"the likelihood terms of one move of the chains (chains x batch {batch} x {x_dim} values)",
                     device, advice="use fewer chains or a smaller --ais-batch-size", value=chains)
    refuse_oversized("temperatures", None, ((temperatures - 1) * chains * FLOAT_BYTES + (temperatures + 1) * 8) * batch,
                     f"the acceptance rates and step sizes of every temperature ({chains} chains x batch {batch})",
                     device, advice="use fewer temperatures", value=temperatures)
