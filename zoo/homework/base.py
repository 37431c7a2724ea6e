"""The homework kit's two records: an :class:`Assignment` is a titled tuple of :class:`Check` s.

A check is named by its function (``"module:function"``); the grader (:mod:`zoo.homework.grader`)
imports the student's submission once in a worker process and calls ``function(submission)``
for each check, under the check's time limit. A check fails by raising ``AssertionError`` with a
one-line reason; it passes by returning ``None`` or a short output string (shown in the table
and in Gradescope's ``output``). Any other exception, a hang past ``timeout`` or a dead worker
also fails the check, and only that check.

Each assignment lives in a package ``zoo.homework.<name>`` whose folder holds ``handout.md``,
``starter.py``, ``solution.py`` (the reference), ``selfcheck.py`` (the student's local self-check)
and ``checks.py``; its ``__init__`` defines ``ASSIGNMENT`` and registers it in
:data:`zoo.homework.ASSIGNMENTS`.

Example::

    >>> from zoo.homework.base import Assignment, Check
    >>> hw = Assignment("toy", "A toy", (Check("adds", 2.0, "add(1, 2) == 3", "toy.checks:check_add"),),
    ...                 package="zoo.homework.toy")
    >>> hw.max_points, hw.check("adds").timeout
    (2.0, 60.0)
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Tuple

__all__ = ["Check", "Assignment"]


@dataclass(frozen=True)
class Check:
    """One graded check of an assignment.

    Arguments:
        name: snake_case id, unique in the assignment, e.g. ``"kl_closed_form"``.
        points: the points it is worth.
        description: one line shown in the grade table.
        function: ``"module:function"``, called as ``function(submission_module)`` in the grader's
            worker process; raises ``AssertionError("one-line reason")`` to fail, returns ``None``
            or a short output string to pass.
        timeout: seconds, enforced by the grader (the worker is killed past it).
        hidden: hidden from students until published (Gradescope ``after_published``) when the
            instructor switches hidden checks on.
    """

    name: str
    points: float
    description: str
    function: str
    timeout: float = 60.0
    hidden: bool = False


@dataclass(frozen=True)
class Assignment:
    """A homework assignment: its checks and the package holding its files.

    Arguments:
        name: the assignment's id (``"bernoulli_vae"``, ``"discrete_estimators"``, ``"ppca_three_ways"``).
        title: one line for ``pyro-zoo homework list``.
        checks: the graded checks, in the order they run.
        package: ``"zoo.homework.<name>"``; its folder holds handout.md, starter.py, solution.py,
            selfcheck.py and checks.py.
    """

    name: str
    title: str
    checks: Tuple[Check, ...]
    package: str

    @property
    def max_points(self) -> float:
        return float(sum(c.points for c in self.checks))

    def check(self, name: str) -> Check:
        for c in self.checks:
            if c.name == name:
                return c
        raise KeyError(name)
