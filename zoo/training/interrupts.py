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

This module imports nothing heavy (nor does ``import zoo``), so the handlers are in place some
0.05 CPU-seconds after the interpreter starts, before torch and Pyro load (seconds more).
"""
from __future__ import annotations

import signal

__all__ = ["Stopped", "handle_stop_signals", "stopped_message", "exit_code"]


class Stopped(KeyboardInterrupt):
    """SIGINT or SIGTERM arrived; ``signum`` says which."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _raise_stopped(signum, frame):
    raise Stopped(signum)


def handle_stop_signals() -> None:
    """Make SIGINT and SIGTERM raise :class:`Stopped` in the main thread (a no-op elsewhere)."""
    import threading
    if threading.current_thread() is not threading.main_thread():
        return
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _raise_stopped)


def exit_code(error: KeyboardInterrupt) -> int:
    """128 + the signal's number: 130 for SIGINT (and a plain KeyboardInterrupt), 143 for SIGTERM."""
    return 128 + getattr(error, "signum", signal.SIGINT)


def stopped_message(error: KeyboardInterrupt) -> str:
    """The one line for a stop: the signal, and what was kept (``zoo_note``)."""
    name = signal.Signals(getattr(error, "signum", signal.SIGINT)).name
    note = getattr(error, "zoo_note", None) or "it stopped before writing anything"
    return f"stopped by {name}; {note}"
