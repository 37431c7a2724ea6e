"""Compiled kernels for the evaluation's hot loops, each with an eager twin that gives the same numbers.

Importance sampling and AIS score the decoder's Bernoulli likelihood on arrays of K x B x D logits: for
log p(x) with K = 5,000 on the 10,000 MNIST test images that is 3.9e10 elements, more than the decoder's
matrix products cost. PyTorch's eager operations make several passes over such an array (a product, a
softplus, two sums, each writing a temporary); one kernel that reads each logit once and adds it into its
datum's sum does the same work at memory speed. ``torch.compile`` (Inductor) generates that kernel.

A kernel is built on first use, once per process (Inductor keeps the generated code in its on-disk cache, so
a later process loads it), and only where a C++ compiler (CPU) or Triton (CUDA) can build it; anywhere it
cannot, the eager twin runs. Callers use the kernel on arrays big enough to repay a compilation
(:data:`FUSED_MIN_ELEMENTS`).
Both are written as the same sum, so they differ by float rounding only (``tests/test_kernels.py``).
"""
from __future__ import annotations

import contextlib
import logging
import os
import shutil
from typing import Callable, Optional

import torch
import torch.nn.functional as F

__all__ = ["cpu_compiler", "quiet_compiler", "bernoulli_log_prob", "FUSED_MIN_ELEMENTS"]

#: Arrays below this many elements are scored eagerly: a compilation (seconds, once per process) repays itself only
#: on the evaluation's big chunks (an MNIST chunk holds up to 2**24 elements; the 8x8 digits' stay below 2**23).
FUSED_MIN_ELEMENTS = 1 << 23

_BUILT: dict = {}


def cpu_compiler() -> Optional[str]:
    """The C++ compiler Inductor would build CPU kernels with (``$CXX``, g++, c++ or clang++), or None."""
    for name in (os.environ.get("CXX"), "g++", "c++", "clang++"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


@contextlib.contextmanager
def quiet_compiler():
    """Compiling without torch's notes about its own set-up (such as "No CUDA runtime is found" from its C++
    extension builder on a machine with no GPU), which are not the user's to act on."""
    logger = logging.getLogger("torch.utils.cpp_extension")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _eager_bernoulli(logits: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    return (value * logits - F.softplus(logits)).sum(-1)


def _compiled(name: str, fn: Callable, device: torch.device) -> Optional[Callable]:
    """``fn`` compiled for ``device``'s kind, or None where no compiler can build it (decided once per process)."""
    key = (name, device.type)
    if key not in _BUILT:
        usable = cpu_compiler() is not None if device.type == "cpu" else device.type == "cuda"
        _BUILT[key] = torch.compile(fn, dynamic=None) if usable else None
    return _BUILT[key]


def bernoulli_log_prob(logits: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """sum_d [x_d l_d - softplus(l_d)], the log-density of binary ``value`` under Bernoulli ``logits``, summed over
    the last dimension (the two broadcast against each other). Outside autograd, one compiled kernel; with autograd,
    or where no kernel can be built, the same sum eagerly."""
    if torch.is_grad_enabled():
        return _eager_bernoulli(logits, value)
    kernel = _compiled("bernoulli", _eager_bernoulli, logits.device)
    if kernel is not None:
        try:
            with quiet_compiler():
                return kernel(logits, value)
        except Exception:          # noqa: BLE001  a kernel that cannot be built: the eager sum, from now on
            _BUILT[("bernoulli", logits.device.type)] = None
    return _eager_bernoulli(logits, value)
