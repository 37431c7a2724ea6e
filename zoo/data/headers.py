"""Reading an untrusted ``.npy`` array: its header is checked before a byte of its data is allocated.

A ``.npy`` header declares the array's shape and dtype; ``numpy.load`` believes it. A file that
declares a 71 TiB array, Python objects (a pickle: code), or more bytes than it holds would end in a
``MemoryError``, code run, or a traceback deep inside NumPy. Here each is refused in one line,
and nothing larger than the file's actual contents is ever allocated.
"""
from __future__ import annotations

import math
import zipfile
import zlib
from typing import BinaryIO, Callable, Dict, Tuple

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
    if version not in ((1, 0), (2, 0)):
        raise ZooError(f"{what} is in .npy format version {version}; save it again with numpy.save")
    read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    try:
        shape, _, dtype = read_header(f)
    except (ValueError, TypeError, SyntaxError, RecursionError, MemoryError, OverflowError, EOFError) as e:
        # NumPy parses the header as a Python literal (ast.literal_eval) and raises whatever that raises
        raise ZooError(f"{what} has a malformed .npy header ({error_text(e)}); the file is corrupt or not "
                       f"written by numpy.save: replace it with a good copy") from None
    if any(d < 0 for d in shape):
        raise ZooError(f"{what} declares shape {shape}, with a negative dimension; the file is corrupt: replace it "
                       f"with a good copy")
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


def read_npz_arrays(source, path, keep: Callable[[str], bool] = lambda name: True) -> Dict[str, np.ndarray]:
    """The arrays of an untrusted ``.npz`` (``source``: its path or a file object) whose names ``keep`` accepts.

    Every kept member's header is checked (:func:`checked_npy_header`) before any data is read, so the
    arrays together must fit in what the file holds; no pickle is ever loaded. A broken archive is one
    line naming ``path``."""
    arrays, declared = {}, 0
    try:
        with zipfile.ZipFile(source) as archive:
            members = [i for i in archive.infolist() if i.filename.endswith(".npy") and keep(i.filename[:-4])]
            for info in members:                    # every header first: the arrays together must fit, too
                with archive.open(info) as f:
                    declared += checked_npy_header(f, info.file_size, f"{path}: array {info.filename[:-4]!r}",
                                                   declared)[2]
            for info in members:
                with archive.open(info) as f:
                    arrays[info.filename[:-4]] = np.lib.format.read_array(f, allow_pickle=False)
    except ZooError:
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, ValueError, OSError, EOFError, RuntimeError,
            NotImplementedError) as e:       # RuntimeError: an encrypted member; NotImplementedError: a compression
        raise ZooError(f"{path} is corrupt or truncated ({error_text(e)}); replace it with a good copy") from None
    return arrays


def error_text(e: BaseException) -> str:
    """``zlib.error: Error -3 while decompressing data``: the type (with its module unless built in) and the
    first line of the message, short enough for a one-line error."""
    name = type(e).__name__ if type(e).__module__ == "builtins" else f"{type(e).__module__}.{type(e).__name__}"
    text = str(e).strip().splitlines()[0][:120] if str(e).strip() else ""
    return f"{name}: {text}" if text else name
