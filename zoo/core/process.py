"""Two process-wide CPU settings behind the zoo's speed: torch's constants mapped in, freed memory kept.

**torch's constants mapped in** (:func:`map_torch_constants`). PyTorch's vectorised math (SLEEF's ``log1p``,
``exp``, ... in ``libtorch_cpu.so``, which ATen's softplus, log1p and binary cross-entropy and the kernels
``torch.compile`` generates call) handles special cases with AVX-512 *masked* loads of constants from the
library's read-only data. Where the mask is all zeros nothing is read, but the load still names its address, and
if that page has never been touched the processor cannot suppress the fault without a microcode assist: hundreds of
cycles per load, on every call, because a suppressed fault never maps the page in. Found on the 2-core AMD EPYC
VM of 2026-11-26 (``perf record`` put most of ``Sleef_finz_log1pf16_u10avx512f``'s samples on the instruction after
one such load); ``benchmarks/kernel_state.py`` measures it: the compiled Bernoulli kernel and ATen's softplus and
binary cross-entropy ran five to six times faster once the library's read-only pages were mapped
(``benchmarks/results/kernel_state.json``). Any call that happens to read a constant on the same page has the
same effect, which is why the evaluation was fast after the Student-t's ``torch.lgamma`` and slow without it (the
script measures that state too). :func:`map_torch_constants` asks the kernel to map every read-only page of torch's CPU
library, ``libtorch_cpu.so``, into the process (``madvise(MADV_POPULATE_READ)``, Linux 5.14 and later; elsewhere
one read per page): file-backed pages, shared with every other process that loaded them, mapped once per process.

**Freed memory kept** (:func:`keep_freed_memory`). PyTorch allocates CPU tensors with the C library's
``malloc``. glibc serves a block above its *mmap threshold* (128 KiB at start, raised by itself to at most 32 MiB)
with a fresh ``mmap`` and gives it back to the kernel on ``free``; it also gives back the top of its heap beyond the
*trim threshold*. Every new block of that size is then new pages, and the kernel faults each 4 KiB page in and
zeroes it on first touch. The evaluation's chunks are such blocks: importance sampling on MNIST holds 2**24
decoder outputs at once (64 MiB of logits), allocated and freed once per chunk, each time faulted in afresh
(``tests/test_process.py`` counts the faults). :func:`keep_freed_memory` raises both thresholds (``mallopt``),
so freed blocks stay in the process's heap and the
next chunk reuses their pages; PyTorch's CPU tuning guide reaches the same end by preloading jemalloc or tcmalloc,
which a ``pip install`` cannot do. The cost is memory the process keeps after a peak (its resident size does not
shrink until it exits), so the command line sets it for its own process and the library does not. It does nothing
where the C library is not glibc, where the user chose glibc's settings through its environment variables
(``MALLOC_MMAP_THRESHOLD_``, ``MALLOC_TRIM_THRESHOLD_``, ``GLIBC_TUNABLES``), or with
``PYRO_ZOO_KEEP_FREED_MEMORY=0``.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform
from pathlib import Path

__all__ = ["keep_freed_memory", "map_torch_constants", "KEPT_BYTES"]

#: glibc's ``mallopt`` parameters (malloc.h) and Linux's ``madvise`` advice (mman.h)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _MADV_POPULATE_READ = -1, -3, 22
#: blocks up to this size come from the heap and freed memory up to it stays there
KEPT_BYTES = 1 << 30
_USER_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES")
_PAGE = 4096
_MAPPED = None


def _libc():
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    except OSError:
        return None


def keep_freed_memory(limit: int = KEPT_BYTES) -> bool:
    """Raise glibc's mmap and trim thresholds to ``limit`` bytes for this process (module docstring). True where it
    did; False where the C library is not glibc, the user chose its settings, or it refused."""
    if os.environ.get("PYRO_ZOO_KEEP_FREED_MEMORY", "1") == "0" or any(k in os.environ for k in _USER_SETTINGS):
        return False
    libc = _libc()
    if libc is None:
        return False
    # the trim threshold first: once the mmap threshold is set, glibc stops adjusting either one itself
    return bool(libc.mallopt(_M_TRIM_THRESHOLD, int(limit))) and bool(libc.mallopt(_M_MMAP_THRESHOLD, int(limit)))


def _read_only_mappings(library: Path):
    """(start, end) of each read-only, non-executable mapping of the file ``library``, from /proc/self/maps."""
    with open("/proc/self/maps") as f:
        for line in f:
            fields = line.split(maxsplit=5)
            if len(fields) == 6 and fields[1] == "r--p" and Path(fields[5].strip()) == library:
                start, end = (int(v, 16) for v in fields[0].split("-"))
                yield start, end


def _torch_cpu_library(torch) -> Path:
    """The file of torch's CPU kernels (SLEEF and MKL are linked into it)."""
    return Path(torch.__file__).resolve().parent / "lib" / "libtorch_cpu.so"


def map_torch_constants() -> int:
    """Map every read-only data page of ``libtorch_cpu.so`` into this process, once (module docstring).
    Returns the bytes mapped (0 where there is no /proc/self/maps, or on a later call)."""
    global _MAPPED
    if _MAPPED is not None:
        return 0
    _MAPPED = 0
    if not os.path.exists("/proc/self/maps"):
        return 0
    import torch
    libc = _libc()
    if libc is not None:
        libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    try:
        spans = list(_read_only_mappings(_torch_cpu_library(torch)))
    except OSError:                                         # /proc unreadable (a sandbox): leave things as they are
        return 0
    for start, end in spans:
        if libc is None or libc.madvise(start, end - start, _MADV_POPULATE_READ) != 0:
            for page in range(start, end, _PAGE):          # a kernel before 5.14: one read per page
                ctypes.string_at(page, 1)
        _MAPPED += end - start
    return _MAPPED
