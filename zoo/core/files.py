"""Reading a text or JSON file that someone else may have written (a run's config.json, a result file).

Such a file is untrusted: it may be a FIFO (reading it waits forever for a writer), a link to
``/dev/zero`` (reading it never ends), many gigabytes, not UTF-8, or JSON that Python's parser
refuses (an integer of more than 4300 digits) or cannot parse without exhausting the stack (100,000
nested brackets). :func:`read_text` and :func:`read_json` read a regular file of at most
:data:`MAX_FILE_BYTES` and turn each of those into one :class:`~zoo.core.errors.ZooError` naming the
file; ``fix`` says what to do about it.
"""
from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

from zoo.core.errors import ZooError

__all__ = ["MAX_FILE_BYTES", "read_text", "read_json"]

#: The largest text file read (a result file or run config is kilobytes; a README well under a megabyte).
MAX_FILE_BYTES = 64 * 2 ** 20


def read_text(path: Path, what: str, fix: str = "fix or remove it") -> str:
    """The UTF-8 text of the regular file ``path`` (a ``what``), or a one-line :class:`ZooError`:
    missing, a folder, a FIFO or device, larger than :data:`MAX_FILE_BYTES`, or not UTF-8.

    The file is opened without blocking (a FIFO with no writer) and checked on the open descriptor,
    and no more than the limit is ever read, whatever its size claims to be."""
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except IsADirectoryError:
        raise ZooError(f"{path} is a folder, not a {what}") from None
    except OSError as e:
        raise ZooError(f"{path}: cannot read this {what} ({e.strerror or type(e).__name__})") from None
    with os.fdopen(fd, "rb") as f:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise ZooError(f"{path} is a folder, not a {what}")
        if not stat.S_ISREG(mode):
            raise ZooError(f"{path} is not a regular file (a FIFO, a device or a socket), so it is not a {what}; "
                           f"{fix}")
        data = f.read(MAX_FILE_BYTES + 1)
    if len(data) > MAX_FILE_BYTES:
        raise ZooError(f"{path}: more than {MAX_FILE_BYTES // 2 ** 20} MiB is too large for a {what}; {fix}")
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
