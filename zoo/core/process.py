"""torch's read-only constants mapped into the process: :func:`map_torch_constants`.

PyTorch's vectorised math on CPUs with AVX-512 (SLEEF's ``log1p``, ``exp``, ... in ``libtorch_cpu.so``, which ATen's
softplus, log1p and binary cross-entropy and the kernels ``torch.compile`` generates call) handles special cases
with *masked* loads of constants from the library's read-only data. Where the mask is all zeros nothing is read, but
the load still names its address; if that page is not mapped into the process, the processor suppresses the fault
with a microcode assist, which costs hundreds of cycles and, since a suppressed fault maps nothing, recurs on every
call. :func:`map_torch_constants` asks the kernel to map every read-only page of ``libtorch_cpu.so`` into the
process (``madvise(MADV_POPULATE_READ)``, Linux 5.14 and later; on an older kernel, one read per page): about 60 MiB
of file-backed pages shared with every other process that loaded them, in about 10 ms, once per process.

What it buys, and where (``benchmarks/process_tuning.py``, ``benchmarks/kernel_state.py``): on AMD EPYC (Zen 4,
AVX-512) the compiled Bernoulli kernel and ATen's softplus and binary cross-entropy run five to six times faster
mapped than in a fresh process. No other processor has been measured; there it costs the 10 ms and may buy nothing.
It changes no result, only time.

``fit``, ``evaluate`` and AIS call it, and so does the command line (:mod:`zoo.cli_process`), whose switch
``PYRO_ZOO_PROCESS_TUNING=0`` turns it off (:func:`tuning_on`).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform
from pathlib import Path

__all__ = ["map_torch_constants", "tuning_on", "SWITCH"]

#: The environment variable that turns the zoo's process tuning off (``0``): this mapping, and the command line's
#: malloc setting (:mod:`zoo.cli_process`).
SWITCH = "PYRO_ZOO_PROCESS_TUNING"
#: Linux's ``madvise`` advice (mman.h)
_MADV_POPULATE_READ = 22
_PAGE = 4096
_MAPPED = None


def tuning_on() -> bool:
    """Whether the process tuning is on: unless :data:`SWITCH` is ``0``."""
    return os.environ.get(SWITCH, "1").strip() != "0"


def libc():
    """glibc, through ctypes, or ``None`` where the C library is another one (or none can be loaded)."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    except OSError:
        return None


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
    Returns the bytes mapped: 0 with the tuning off, where there is no /proc/self/maps, or on a later call."""
    global _MAPPED
    if _MAPPED is not None or not tuning_on():
        return 0
    _MAPPED = 0
    if not os.path.exists("/proc/self/maps"):
        return 0
    import torch
    c = libc()
    if c is not None:
        c.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    try:
        spans = list(_read_only_mappings(_torch_cpu_library(torch)))
    except OSError:                                         # /proc unreadable (a sandbox): leave things as they are
        return 0
    for start, end in spans:
        if c is None or c.madvise(start, end - start, _MADV_POPULATE_READ) != 0:
            for page in range(start, end, _PAGE):          # a kernel before 5.14: one read per page
                ctypes.string_at(page, 1)
        _MAPPED += end - start
    return _MAPPED
