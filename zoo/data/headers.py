"""Reading an untrusted ``.npy`` array: its header is checked before a byte of its data is allocated.

A ``.npy`` header declares the array's shape and dtype; ``numpy.load`` believes it. A file that
declares a 71 TiB array, Python objects (a pickle: code), or more bytes than it holds would end in a
``MemoryError``, code run, or a traceback deep inside NumPy. Here each is refused in one line,
and nothing larger than the file's actual contents is ever allocated.
"""
from __future__ import annotations

import math
from typing import BinaryIO, Tuple

import numpy as np

from zoo.core.errors import ZooError

__all__ = ["checked_npy_header", "read_npy"]


def checked_npy_header(f: BinaryIO, size: int, what: str, before: int = 0) -> Tuple[Tuple[int, ...], np.dtype, int]:
    """``(shape, dtype, nbytes)`` of the ``.npy`` stream ``f`` of ``size`` bytes, read from its header (``f`` is
    left at the start of the data); refused unless it declares a plain numeric array whose bytes are exactly
    what the stream holds and, with the ``before`` bytes of arrays read with it, fit this machine's memory.
    ``what`` names the array in messages (``"data.npz: array 'train'"``)."""
    from zoo.core.memory import human_bytes, memory_bytes
    try:
        version = np.lib.format.read_magic(f)
    except ValueError:
        raise ZooError(f"{what} is not a .npy array (no NumPy magic string); save it with numpy.save or "
                       f"numpy.savez") from None
    if version == (1, 0):
        shape, _, dtype = np.lib.format.read_array_header_1_0(f)
    elif version == (2, 0):
        shape, _, dtype = np.lib.format.read_array_header_2_0(f)
    else:
        raise ZooError(f"{what} is in .npy format version {version}; save it again with numpy.save")
    if dtype.hasobject or dtype.kind not in "biuf":
        raise ZooError(f"{what} has dtype {dtype}, not a plain number type; the zoo never unpickles data: "
                       f"save numbers (uint8, int, float) with numpy.save or numpy.savez")
    nbytes = math.prod(shape) * dtype.itemsize
    if before + nbytes > memory_bytes():
        raise ZooError(f"{what} declares shape {shape} ({human_bytes(nbytes)}), more than this machine's "
                       f"{human_bytes(memory_bytes())} of memory; the file is corrupt or not a data set")
    if f.tell() + nbytes != size:
        raise ZooError(f"{what} declares shape {shape} ({human_bytes(nbytes)}) but holds "
                       f"{human_bytes(max(0, size - f.tell()))} of data; the file is corrupt or truncated: "
                       f"replace it with a good copy")
    return shape, dtype, nbytes


def read_npy(f: BinaryIO, size: int, what: str) -> np.ndarray:
    """The array of the ``.npy`` stream ``f`` of ``size`` bytes, its header checked first
    (:func:`checked_npy_header`); never unpickles."""
    start = f.tell()
    checked_npy_header(f, size, what)
    f.seek(start)
    return np.lib.format.read_array(f, allow_pickle=False)
