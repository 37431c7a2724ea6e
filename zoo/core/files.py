"""Reading a text or JSON file that someone else may have written (a run's config.json, a result file).

Such a file is untrusted: it may be a FIFO (reading it waits forever for a writer), a link to
``/dev/zero`` (reading it never ends), many gigabytes, not UTF-8, or JSON that Python's parser
refuses (an integer of more than 4300 digits) or cannot parse without exhausting the stack (100,000
nested brackets). :func:`read_text` and :func:`read_json` read a regular file of at most
:data:`MAX_FILE_BYTES` and turn each of those into one :class:`~zoo.core.errors.ZooError` naming the
file; ``fix`` says what to do about it. A binary format opens the file with :func:`open_regular` and
reads no more than its own header says it holds (or :func:`read_bytes`, with its own limit).
"""
from __future__ import annotations

import contextlib
import json
import os
import stat
from pathlib import Path
from typing import Any, BinaryIO, Iterator

from zoo.core.errors import ZooError

__all__ = ["MAX_FILE_BYTES", "open_regular", "read_bytes", "read_text", "read_json", "SEAL", "sealed", "seal_holds",
           "cache_dir"]

#: The largest text file read (a result file or run config is kilobytes; a README well under a megabyte).
MAX_FILE_BYTES = 64 * 2 ** 20


@contextlib.contextmanager
def open_regular(path: Path, what: str, fix: str = "fix or remove it") -> Iterator[BinaryIO]:
    """``path`` opened for binary reading if it is a regular file (a ``what``), else a one-line :class:`ZooError`:
    missing, a folder, a FIFO, a device or a socket.

    The file is opened without blocking (a FIFO with no writer) and checked on the open descriptor, so
    what is read is what was checked; the caller bounds what it reads (``/dev/zero`` never ends)."""
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except IsADirectoryError:
        raise ZooError(f"{path} is a folder, not a {what}") from None
    except OSError as e:
        raise ZooError(f"{path}: cannot read this {what} ({e.strerror or type(e).__name__})") from None
    try:                                # before os.fdopen, which raises IsADirectoryError on a folder's descriptor
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise ZooError(f"{path} is a folder, not a {what}")
        if not stat.S_ISREG(mode):
            raise ZooError(f"{path} is not a regular file (a FIFO, a device or a socket), so it is not a {what}; "
                           f"{fix}")
    except BaseException:
        os.close(fd)
        raise
    with os.fdopen(fd, "rb") as f:
        yield f


def read_bytes(path: Path, what: str, limit: int = MAX_FILE_BYTES, fix: str = "fix or remove it") -> bytes:
    """The bytes of the regular file ``path`` (:func:`open_regular`), or a one-line :class:`ZooError` if it holds
    more than ``limit`` bytes; no more than the limit is ever read, whatever its size claims to be."""
    with open_regular(path, what, fix) as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        size = f"{limit // 2 ** 20} MiB" if limit >= 2 ** 20 else f"{limit} bytes"
        raise ZooError(f"{path}: more than {size} is too large for a {what}; {fix}")
    return data


def read_text(path: Path, what: str, fix: str = "fix or remove it") -> str:
    """The UTF-8 text of the regular file ``path`` (a ``what``), or a one-line :class:`ZooError`:
    missing, a folder, a FIFO or device, larger than :data:`MAX_FILE_BYTES`, or not UTF-8 (:func:`read_bytes`)."""
    data = read_bytes(path, what, MAX_FILE_BYTES, fix)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise ZooError(f"{path}: not a UTF-8 text {what}; {fix}") from None


def read_json(path: Path, what: str, fix: str = "fix or remove it") -> Any:
    """The JSON value in ``path`` (read by :func:`read_text`), or a one-line :class:`ZooError` saying why not."""
    text = read_text(path, what, fix)
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        detail = str(e).splitlines()[0]
    except ValueError as e:             # an integer longer than sys.get_int_max_str_digits() (4300)
        detail = str(e).split(";")[0]
    except RecursionError:
        detail = "nested deeper than Python's recursion limit"
    raise ZooError(f"{path}: not a readable {what} ({detail}); {fix}")


#: The key under which a JSON file the zoo writes for itself (a run's results.json, a grid's grid.json) records the
#: SHA-256 of the rest of its content, so that a later reader can tell the file is as the zoo wrote it.
SEAL = "content_sha256"


def _content_sha256(value: dict) -> str:
    import hashlib
    content = {k: v for k, v in value.items() if k != SEAL}
    text = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)
    return hashlib.sha256(text.encode()).hexdigest()


def sealed(value: dict) -> dict:
    """``value`` (a JSON object of finite numbers, strings, lists, objects and nulls) with :data:`SEAL`: the
    SHA-256 of its canonical JSON (keys sorted, no spaces), which reading the file back reproduces exactly."""
    return {**value, SEAL: _content_sha256(value)}


def seal_holds(value: Any) -> bool:
    """Is ``value`` (a JSON value read back) an object whose :data:`SEAL` is the SHA-256 of the rest of it, i.e.
    unchanged since it was written? False for an object without one, one that was edited, or one that holds
    what JSON's standard cannot (NaN)."""
    if not isinstance(value, dict) or not isinstance(value.get(SEAL), str):
        return False
    try:
        return _content_sha256(value) == value[SEAL]
    except (TypeError, ValueError, RecursionError):
        return False


def cache_dir() -> Path:
    """The user's cache folder for what the zoo builds on first use (the CLI's snapshot, the homework kit's fixed
    models): ``$PYRO_ZOO_CACHE``, else ``$XDG_CACHE_HOME/pyro-zoo``, else ``~/.cache/pyro-zoo``."""
    if os.environ.get("PYRO_ZOO_CACHE"):
        return Path(os.environ["PYRO_ZOO_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "pyro-zoo"
