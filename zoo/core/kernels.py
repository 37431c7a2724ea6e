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
Both compute the same sum, to float rounding (``tests/test_kernels.py``); the kernel writes the softplus so
that the CPU's ``log1p`` never takes the arguments on which it is ten times slower (:func:`_kernel_bernoulli`).
"""
from __future__ import annotations

import contextlib
import logging
import math
import os
import shutil
import sys
from typing import Callable, Optional

import torch
import torch.nn.functional as F

__all__ = ["cpu_compiler", "quiet_compiler", "bernoulli_log_prob", "FUSED_MIN_ELEMENTS", "FUSED_GRAD_MIN_ELEMENTS"]

#: Arrays below this many elements are scored eagerly: a compilation (seconds, once per process) repays itself only
#: on the evaluation's big chunks (an MNIST chunk holds up to 2**24 elements; the 8x8 digits' stay below 2**23).
FUSED_MIN_ELEMENTS = 1 << 23
#: The same, for logits that need a gradient: AIS's gradient evaluations (100 MNIST images x 16 chains, 1.25e6
#: elements, hundreds of times per image) and the IWAE bound with 50 particles repay a compilation; a training
#: step of one particle (100 x 784) does not.
FUSED_GRAD_MIN_ELEMENTS = 1 << 20

_BUILT: dict = {}


def _build_errors() -> tuple:
    """What a kernel that cannot be built raises: torch.compile's own errors (Inductor's failed builds come wrapped in
    them), a compiler or Triton that cannot be run or imported. Anything else (an error in the caller's tensors, or
    the exception ``torch.utils.checkpoint`` stops a recomputation with) is raised, not taken for a failed build."""
    errors = [OSError, ImportError]
    for module, name in (("torch._dynamo.exc", "TorchDynamoException"), ("torch._inductor.exc", "CppCompileError")):
        try:
            errors.append(getattr(__import__(module, fromlist=[name]), name))
        except (ImportError, AttributeError):  # pragma: no cover  another torch's layout: the two above still hold
            pass
    return tuple(errors)


def cpu_compiler() -> Optional[str]:
    """The C++ compiler Inductor would build CPU kernels with (``$CXX``, g++, c++ or clang++), or None."""
    for name in (os.environ.get("CXX"), "g++", "c++", "clang++"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


@contextlib.contextmanager
def quiet_compiler():
    """Compiling without torch's notes about its own set-up ("No CUDA runtime is found" from its C++ extension
    builder on a machine with no GPU), which are not the user's to act on.

    That note is logged once, when the builder's module is first imported (by the first compilation). Once it is
    imported there is nothing left to silence, and the level is left alone: setting a logger's level clears every
    logger's cache (torch registers many loggers), twice per call of a kernel that takes a few ms."""
    if "torch.utils.cpp_extension" in sys.modules:
        yield
        return
    logger = logging.getLogger("torch.utils.cpp_extension")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _eager_bernoulli(logits: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    return (value * logits - F.softplus(logits)).sum(-1)


#: per dtype, (tiny, underflow): below ``tiny``, log1p(e^l) is e^l to under half an ulp (they differ by a factor
#: 1 - e^l / 2 + ...); below ``underflow``, e^l would be a denormal. Other dtypes are scored eagerly.
_GUARDS = {torch.float32: (-17.0, -87.0), torch.float64: (-37.0, -708.0)}


def _kernel_bernoulli(logits: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """The sum the compiled kernel computes: softplus(l) as torch computes it, l above 20 and log1p(e^l) below,
    except that e^l itself is taken below l = -17, where it equals log1p(e^l) in float32 (-37 in float64).

    Why: SLEEF's vectorised ``log1p``, which torch and Inductor's generated code call on the CPU, is ten times slower
    on arguments between about 1e-25 and 1e-9 than elsewhere (its intermediates fall into denormal floats, each a
    microcode assist), and ``exp`` a hundred times slower where its result is a denormal. A trained MNIST decoder
    puts most background pixels there: on draws from the headline VAE's prior, half its logits are below -13 and a
    tenth below -39, so log1p(e^l) took three times as long on such a chunk as on ``4 * randn`` logits
    (``benchmarks/bernoulli_kernel.py`` times both). Here ``log1p`` is given e^l no smaller than e^-17, and ``exp``
    l no smaller than -87 (:data:`_GUARDS` has float64's bounds). The result is softplus to the ulps of torch's own,
    except below -87, where it is e^-87 (1.7e-38) and torch's is a denormal or 0, and the sum is
    :func:`_eager_bernoulli`'s to float rounding (``tests/test_kernels.py``).

    ``exp_l()`` makes e^l afresh at each use: Inductor keeps a CPU ``exp`` that is read twice in memory (here a
    64 MiB array per chunk, written and read back), while two identical ones become one line of its kernel.
    """
    tiny, underflow = _GUARDS[logits.dtype]

    def exp_l():    # not for autograd: above l = 88.7, e^l is inf, and its untaken branch's gradient 0 x inf is NaN
        return torch.exp(logits.clamp(min=underflow))

    log1p_exp = torch.where(logits < tiny, exp_l(), torch.log1p(exp_l().clamp(min=math.exp(tiny))))
    softplus = torch.where(logits > 20.0, logits, log1p_exp)
    return (value * logits - softplus).sum(-1)


def _compiled(name: str, fn: Callable, device: torch.device) -> Optional[Callable]:
    """``fn`` compiled for ``device``'s kind, or None where no compiler can build it (decided once per process)."""
    key = (name, device.type)
    if key not in _BUILT:
        usable = cpu_compiler() is not None if device.type == "cpu" else device.type == "cuda"
        _BUILT[key] = torch.compile(fn, dynamic=None) if usable else None
    return _BUILT[key]


def _bernoulli_gradient(grad: torch.Tensor, logits: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """d/dl_d of ``grad * sum_d [x_d l_d - softplus(l_d)]``: ``grad * (x_d - sigmoid(l_d))``, finite for every l and
    to an ulp as torch's own."""
    return grad.unsqueeze(-1) * (value - torch.sigmoid(logits))


class _BernoulliScore(torch.autograd.Function):
    """The compiled kernel's sum forward, and its gradient backward: d/dl_d sum_d [x_d l_d - softplus(l_d)] is
    x_d - sigmoid(l_d), times the gradient of the sum. The data ``value`` get none (callers pass data that need none,
    and logits already of the broadcast shape).

    The backward is compiled too (one pass over the logits instead of eager torch's three, a sigmoid, a difference and
    a product, which made the kernel's gradient slower than torch's fused one on an AMD EPYC:
    ``benchmarks/bernoulli_kernel.py``), except where it is itself differentiated (``create_graph=True``), which
    torch's operations then record. The incoming gradient (K x B, a D-th of the logits) is made contiguous first: as
    ``.sum().backward()`` gives it, it is a stride-0 expansion, and each layout would be a graph of its own."""

    @staticmethod
    def forward(ctx, logits, value, kernel):
        ctx.save_for_backward(logits, value)
        return kernel(logits.detach(), value.detach())      # the graph compiled for no_grad calls, not a second one

    @staticmethod
    def backward(ctx, grad):
        logits, value = ctx.saved_tensors
        gradient = None if torch.is_grad_enabled() else _compiled("bernoulli_gradient", _bernoulli_gradient,
                                                                  logits.device)
        if gradient is not None:
            try:
                with quiet_compiler():
                    return gradient(grad.contiguous(), logits, value), None, None
            except _build_errors():             # a kernel that cannot be built: the eager gradient, from now on
                _BUILT[("bernoulli_gradient", logits.device.type)] = None
        return _bernoulli_gradient(grad, logits, value), None, None


def bernoulli_log_prob(logits: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """sum_d [x_d l_d - softplus(l_d)], the log-density of binary ``value`` under Bernoulli ``logits``, summed over
    the last dimension (the two broadcast against each other). One compiled kernel, outside autograd and within it
    (:class:`_BernoulliScore`, where the logits have the broadcast shape and ``value`` needs no gradient); otherwise,
    or where no kernel can be built, the same sum eagerly."""
    if logits.dtype not in _GUARDS:
        return _eager_bernoulli(logits, value)
    grad = torch.is_grad_enabled() and (logits.requires_grad or value.requires_grad)
    if grad and (value.requires_grad or logits.shape != torch.broadcast_shapes(logits.shape, value.shape)
                 or _transformed(logits)):
        return _eager_bernoulli(logits, value)
    kernel = _compiled("bernoulli", _kernel_bernoulli, logits.device)
    if kernel is not None:
        try:
            with quiet_compiler():
                if grad:
                    return _BernoulliScore.apply(logits, value, kernel)
                with torch.no_grad():                    # one compiled graph, whatever autograd's mode
                    return kernel(logits, value)
        except _build_errors():                 # a kernel that cannot be built: the eager sum, from now on
            _BUILT[("bernoulli", logits.device.type)] = None
    return _eager_bernoulli(logits, value)


def _transformed(logits: torch.Tensor) -> bool:
    """Whether ``logits`` are seen through forward-mode AD or a ``torch.func`` transform (grad, vmap, jacrev), which
    :class:`_BernoulliScore` does not implement: torch's own operations answer there."""
    if torch.autograd.forward_ad.unpack_dual(logits).tangent is not None:
        return True
    active = getattr(torch._C, "_are_functorch_transforms_active", None)      # no public test for it (torch 2.4+)
    return bool(active()) if active is not None else False
