"""SIGINT and SIGTERM for the ``pyro-zoo`` command: stop at once, in one line, losing nothing.

:func:`handle_stop_signals` (:mod:`zoo.__main__`, the command's entry point, calls it first thing)
makes both signals raise :class:`Stopped`, a ``KeyboardInterrupt``, in the main thread. Everything
the zoo writes is atomic and groups of result files are written with the signals held
(:func:`zoo.training.checkpoint.signals_deferred`), so a stop leaves every file either as it was
or whole. The code that knows what is left (the last checkpoint, unchanged results) puts it in
the exception's ``zoo_note``, and :func:`stopped_message` says it.

SIGINT is handled even when it was ignored at start, as a shell does for the background jobs of
a script (``pyro-zoo eval RUN &``): ``kill -INT`` then stops the run instead of letting it run on
and rewrite results. Exit codes follow the shell's convention: 128 + the signal's number (130 for
SIGINT, 143 for SIGTERM).

A handler's exception can be swallowed: a signal that arrives while Python runs a callback it cannot
propagate from (a weakref callback, an import lock's cleanup, a ``__del__``) has its :class:`Stopped` printed
as "Exception ignored" and the program carries on. :func:`handle_stop_signals` therefore also hooks
``sys.unraisablehook``: a swallowed :class:`Stopped` is recorded, not printed, and :func:`raise_if_stopped`
raises it again at the next safe point, the start of every group of writes
(:func:`zoo.training.checkpoint.signals_deferred`), so no result is written after a stop.

This module imports nothing heavy (nor does ``import zoo``), so the handlers are in place some
0.05 CPU-seconds after the interpreter starts, before torch and Pyro load (seconds more).
"""
from __future__ import annotations

import signal
import sys
from typing import Optional

__all__ = ["Stopped", "handle_stop_signals", "raise_if_stopped", "stopped_message", "exit_code"]

#: The signal of a :class:`Stopped` that Python swallowed (see the module docstring), until it is raised again.
_SWALLOWED: Optional[int] = None


class Stopped(KeyboardInterrupt):
    """SIGINT or SIGTERM arrived; ``signum`` says which."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _raise_stopped(signum, frame):
    raise Stopped(signum)


def _keeping_swallowed_stops(hook):
    """``sys.unraisablehook`` that records a swallowed :class:`Stopped` and passes anything else to ``hook``."""
    def unraisable(info):
        global _SWALLOWED
        if isinstance(info.exc_value, Stopped):
            _SWALLOWED = info.exc_value.signum
            return
        hook(info)
    unraisable.keeps_stops = True
    return unraisable


def raise_if_stopped() -> None:
    """Raise the :class:`Stopped` that Python swallowed since the last call, if any."""
    global _SWALLOWED
    if _SWALLOWED is not None:
        signum, _SWALLOWED = _SWALLOWED, None
        raise Stopped(signum)


def handle_stop_signals() -> None:
    """Make SIGINT and SIGTERM raise :class:`Stopped` in the main thread (a no-op elsewhere), and keep one that
    Python swallows for :func:`raise_if_stopped`."""
    import threading
    if threading.current_thread() is not threading.main_thread():
        return
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _raise_stopped)
    if not getattr(sys.unraisablehook, "keeps_stops", False):
        sys.unraisablehook = _keeping_swallowed_stops(sys.unraisablehook)


def exit_code(error: KeyboardInterrupt) -> int:
    """128 + the signal's number: 130 for SIGINT (and a plain KeyboardInterrupt), 143 for SIGTERM."""
    return 128 + getattr(error, "signum", signal.SIGINT)


def stopped_message(error: KeyboardInterrupt) -> str:
    """The one line for a stop: the signal, and what was kept (``zoo_note``)."""
    name = signal.Signals(getattr(error, "signum", signal.SIGINT)).name
    note = getattr(error, "zoo_note", None) or "it stopped before writing anything"
    return f"stopped by {name}; {note}"
