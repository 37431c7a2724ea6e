"""The homework kit: assignments with handouts, starter code and an autograder (the reference solutions
live in ``zoo/homework/solutions/`` of a source checkout, not in the installed package).

:data:`ASSIGNMENTS` maps each assignment's name to its :class:`~zoo.homework.base.Assignment`;
each assignment package registers itself on import (``ASSIGNMENT = Assignment(...)`` and
``register(ASSIGNMENT)``). The instructor's guide is ``zoo/homework/INSTRUCTORS.md``.
"""
from __future__ import annotations

import importlib
from typing import Dict

from zoo.core.errors import unknown_name
from zoo.homework.base import Assignment, Check

__all__ = ["ASSIGNMENTS", "Assignment", "Check", "register", "get_assignment"]

#: name -> Assignment, filled by each assignment package's ``__init__``.
ASSIGNMENTS: Dict[str, Assignment] = {}

_PACKAGES = ("bernoulli_vae", "discrete_estimators", "ppca_three_ways", "wake_sleep_and_iwae",
             "expressive_posteriors")


def register(assignment: Assignment) -> Assignment:
    """Add an assignment to :data:`ASSIGNMENTS` (called by its package's ``__init__``)."""
    names = [c.name for c in assignment.checks]
    if len(set(names)) != len(names):
        raise ValueError(f"assignment {assignment.name!r} has duplicate check names")
    ASSIGNMENTS[assignment.name] = assignment
    return assignment


def get_assignment(name: str) -> Assignment:
    """The assignment called ``name``; an unknown name is a :class:`ZooError` naming the known ones."""
    if name not in ASSIGNMENTS:
        raise unknown_name("assignment", name, ASSIGNMENTS)
    return ASSIGNMENTS[name]


for _name in _PACKAGES:
    try:
        importlib.import_module(f"{__name__}.{_name}")
    except ModuleNotFoundError as _e:
        # An assignment package not present in this checkout (yet) is skipped; any other import
        # error inside a present package is a bug and propagates.
        if _e.name != f"{__name__}.{_name}":
            raise
