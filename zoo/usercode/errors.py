"""An exception raised in a user's own code, turned into one line that names its file and line.

The zoo's own failures keep their traceback (they are bugs); a user's model or guide failing is
a user mistake, said in one :class:`~zoo.core.errors.ZooError` line: who failed, doing what, where
in the user's file, the exception's first line, and what the zoo expected.
"""
from __future__ import annotations

import contextlib
import sysconfig
import traceback
from pathlib import Path
from typing import Callable

from zoo.core.errors import ZooError

__all__ = ["user_line", "first_line", "call_user", "user_code_errors"]

#: Pyro's message when a site's batch shape does not fit the data plate (a missing ``.to_event``).
_PLATE_MISMATCH = "Shape mismatch inside plate('data')"


def user_line(error: BaseException) -> str:
    """`` (file.py, line 12)``: the last frame of the traceback in the user's code (not in Python's
    library, installed packages, or the zoo); ``""`` if no frame is."""
    root = Path(__file__).resolve().parents[2]
    library = [sysconfig.get_paths()[k] for k in ("stdlib", "platstdlib", "purelib", "platlib")]
    library += [root / "zoo", root / "guides"]
    for frame in reversed(traceback.extract_tb(error.__traceback__)):
        path = str(Path(frame.filename).resolve()) if not frame.filename.startswith("<") else ""
        if path and not any(path.startswith(str(Path(lib).resolve())) for lib in library):
            return f" ({Path(frame.filename).name}, line {frame.lineno})"
    return ""


def first_line(error: BaseException) -> str:
    """The first line of an exception's message (``""`` if it has none)."""
    text = str(error)
    return text.splitlines()[0] if text else ""


def call_user(run: Callable, who: str, what: str, fix: str, plate_hint: bool = True):
    """``run()``, a call into the user's code on a trial run; any exception but a :class:`ZooError`
    becomes one line, ``{who} failed {what} (file.py, line n): TypeError: ...; {fix}``.

    With ``plate_hint``, Pyro's shape mismatch inside the data plate is said as what it almost
    always is: a datum's value that is not one event (a missing ``.to_event(1)``)."""
    try:
        return run()
    except ZooError:
        raise
    except Exception as e:
        where, text = user_line(e), first_line(e)
        if plate_hint and _PLATE_MISMATCH in text:
            raise ZooError(f"{who}{where}: {text}; inside pyro.plate('data', ...) a datum's value must be one "
                           f"event: add .to_event(1) to its distribution") from None
        raise ZooError(f"{who} failed {what}{where}: {type(e).__name__}: {text}; {fix}") from None


@contextlib.contextmanager
def user_code_errors(name: str, what: str):
    """Within the block, an exception raised in a user's own code (a model file: any frame outside
    Python's library, the installed packages and the zoo) becomes one line naming the file and line,
    as on the trial run; an exception from the zoo, Pyro or PyTorch alone is a bug and keeps its traceback.

    ``name`` is the model's display name, ``what`` where it failed ("in training at epoch 3, step 1").
    """
    try:
        yield
    except ZooError:
        raise
    except Exception as e:
        where = user_line(e)
        if not where:
            raise
        raise ZooError(f"{name} failed {what}{where}: {type(e).__name__}: {first_line(e)}; fix the model "
                       f"there") from None
