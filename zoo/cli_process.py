"""The command line's process tuning: two settings of its own process that pay on some machines, behind one switch.

:func:`tune_process` makes both, once, as ``pyro-zoo`` starts a command; ``PYRO_ZOO_PROCESS_TUNING=0`` turns both
off (:data:`zoo.core.process.SWITCH`). Neither changes a result, only time and memory. Code that imports the zoo as a
library gets neither from here: its process is its own.

**torch's constants mapped in** (:func:`zoo.core.process.map_torch_constants`, which ``fit``, ``evaluate`` and AIS
also call). On AMD EPYC (Zen 4, AVX-512) PyTorch's vectorised math faults, and recovers through a microcode assist,
on every call that names a page of ``libtorch_cpu.so``'s read-only constants not yet mapped into the process; mapped,
the compiled Bernoulli kernel and ATen's softplus and binary cross-entropy run five to six times faster. It costs
about 10 ms and 60 MiB of shared, file-backed pages.

**Freed memory kept** (:func:`keep_freed_memory`). PyTorch allocates CPU tensors with the C library's ``malloc``.
glibc serves a block above its *mmap threshold* (128 KiB at start, raised by itself to at most 32 MiB) with a fresh
``mmap`` and returns it to the kernel on ``free``; it also returns the top of its heap beyond the *trim threshold*.
Every new block of that size is then new pages, which the kernel faults in and zeroes on first touch, 4 KiB at a
time. The evaluation allocates and frees such blocks once per chunk (importance sampling on MNIST: 64 MiB of logits
at a time). Raising both thresholds to 1 GiB (``mallopt``) keeps freed blocks in the heap, and the next chunk reuses
their pages: on AMD EPYC, a 64 MiB tensor allocated, filled and freed takes 16,385 page faults and about 60 ms each
time by default, none and about 7 ms kept. The cost is memory the process keeps after a peak (its resident size does
not shrink until it exits), which is why the command line makes this setting for its own process and the library
does not. PyTorch's CPU tuning guide reaches the same end by preloading jemalloc or tcmalloc, which a ``pip
install`` cannot do. It does nothing where the C library is not glibc, or where the user chose glibc's settings
through its environment variables (``MALLOC_MMAP_THRESHOLD_``, ``MALLOC_TRIM_THRESHOLD_``, ``GLIBC_TUNABLES``).

``benchmarks/process_tuning.py`` measures each setting alone, in fresh processes
(``benchmarks/results/process_tuning.json`` says on which processor); ``tests/test_process.py`` checks both in the
kernel's own counts (resident pages, page faults).
"""
from __future__ import annotations

import os

from zoo.core.process import libc, map_torch_constants, tuning_on

__all__ = ["tune_process", "keep_freed_memory", "KEPT_BYTES"]

#: glibc's ``mallopt`` parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
#: blocks up to this size come from the heap and freed memory up to it stays there
KEPT_BYTES = 1 << 30
_USER_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES")


def keep_freed_memory(limit: int = KEPT_BYTES) -> bool:
    """Raise glibc's mmap and trim thresholds to ``limit`` bytes for this process (module docstring). True where it
    did; False with the tuning off, where the C library is not glibc, the user chose its settings, or it refused."""
    if not tuning_on() or any(k in os.environ for k in _USER_SETTINGS):
        return False
    c = libc()
    if c is None:
        return False
    # the trim threshold first: once the mmap threshold is set, glibc stops adjusting either one itself
    return bool(c.mallopt(_M_TRIM_THRESHOLD, int(limit))) and bool(c.mallopt(_M_MMAP_THRESHOLD, int(limit)))


def tune_process() -> dict:
    """Both settings, unless ``PYRO_ZOO_PROCESS_TUNING=0``: what each did (``kept_freed_memory``, ``mapped_bytes``)."""
    return {"kept_freed_memory": keep_freed_memory(), "mapped_bytes": map_torch_constants()}
