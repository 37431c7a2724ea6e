"""The one exception type the zoo raises for user mistakes.

Anything the user can fix (a name, a file, a flag, a data shape) raises
:class:`ZooError`. The CLI prints its message on one line and exits with code 2;
everything else is a bug and keeps its traceback.
"""
from __future__ import annotations

import difflib
from typing import Iterable, Optional

__all__ = ["ZooError", "OptionError", "unknown_name"]


class ZooError(Exception):
    """A user-fixable error. Its message is one line that says what to do."""

    exit_code = 2


class OptionError(ZooError):
    """A bad option value. ``option`` is its API name; the CLI shows its flag instead
    (also importable from :mod:`zoo.core.components`, where options are declared)."""

    def __init__(self, option: str, problem: str, kind: Optional[str] = None):
        super().__init__(f"{option} {problem}")
        self.option, self.problem, self.kind = option, problem, kind


def unknown_name(kind: str, name: str, known: Iterable[str], of: str = "") -> ZooError:
    """Build the error for an unknown name of a ``kind`` (a registry's, or ``of`` something: the checks of an
    assignment), suggesting the nearest one."""
    known = sorted(known)
    close = difflib.get_close_matches(name, known, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    owner = f" of {of}" if of else ""
    return ZooError(f"unknown {kind} {name!r}{owner}.{hint} Known {kind}s{owner}: {', '.join(known)}.")
