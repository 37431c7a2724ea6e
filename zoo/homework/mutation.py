"""Mutation testing of an assignment's checks: does each check fail for the bug it certifies, and only that one?

A grader is trustworthy when (1) the reference solution (``zoo/homework/solutions/<name>.py`` of a source
checkout) scores full marks at every seed used, (2) the
untouched starter scores 0 with a one-line reason per check and no crash, and (3) each *mutant*, one bug
that students really write as a textual edit of the reference ``solution.py``, loses the points of
exactly the checks that certify the mathematics it breaks and keeps every other check at full points.
This module grades all of these at once and states the three properties as assertions, so that an
instructor's new assignment gets the same tests as the kit's own (``tests/test_homework_*.py``).

Example (a pytest file for an assignment ``my_hw``)::

    import pytest
    from zoo.homework.mutation import (Mutant, assert_full_marks, assert_loses_exactly,
                                       assert_starter_scores_zero, grade_with_mutants)

    MUTANTS = {"kl_sign_flipped": Mutant("return 0.5 * (", "return -0.5 * (", {"kl_closed_form"})}

    @pytest.fixture(scope="module")
    def grades(tmp_path_factory):
        return grade_with_mutants("my_hw", MUTANTS, tmp_path_factory.mktemp("my_hw"))

    def test_reference(grades):
        assert_full_marks(grades["reference"], "my_hw")

    @pytest.mark.parametrize("name", sorted(MUTANTS))
    def test_mutant(grades, name):
        assert_loses_exactly(grades[name], MUTANTS[name].fails)
"""
from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import AbstractSet, Dict, Mapping, Sequence, Tuple

from zoo.homework import get_assignment
from zoo.homework.grader import GradeResult, grade
from zoo.homework.kit import assignment_folder, solution_path

#: The seed mutants are graded at (and the reference's first seed).
DEFAULT_SEED = 0

__all__ = ["Mutant", "grade_with_mutants", "assert_full_marks", "assert_starter_scores_zero", "assert_loses_exactly",
           "reference_key"]


@dataclass(frozen=True)
class Mutant:
    """One bug: ``old`` (which must occur exactly once in the reference solution) replaced by ``new``, and the
    names of the checks it must fail."""

    old: str
    new: str
    fails: AbstractSet[str] = field(default_factory=frozenset)


def reference_key(seed: int) -> str:
    """The key of the reference solution graded at ``seed`` in :func:`grade_with_mutants`'s result."""
    return "reference" if seed == DEFAULT_SEED else f"reference_seed_{seed}"


def grade_with_mutants(assignment: str, mutants: Mapping[str, Mutant], folder: Path,
                       seeds: Sequence[int] = (DEFAULT_SEED, 1), workers: int = 2) -> Dict[str, GradeResult]:
    """Grade, hidden checks on: the reference solution at each of ``seeds`` (keys :func:`reference_key`), the
    starter (key ``"starter"``) and every mutant (its name) at :data:`DEFAULT_SEED`; ``workers`` submissions at a
    time, each grade in a process of its own (a grade seeds torch's global RNG for each check, which threads
    would share). Mutant files are written to ``folder``."""
    hw = get_assignment(assignment)
    source_folder = assignment_folder(hw)
    solution = solution_path(hw)
    source = solution.read_text()
    jobs: Dict[str, Tuple[Path, int]] = {reference_key(s): (solution, s) for s in seeds}
    jobs["starter"] = (source_folder / "starter.py", DEFAULT_SEED)
    for name, mutant in mutants.items():
        if source.count(mutant.old) != 1:
            raise ValueError(f"mutant {name}: {mutant.old!r} must occur exactly once in {assignment}'s solution.py, "
                             f"found {source.count(mutant.old)} times")
        path = Path(folder) / f"{name}.py"
        path.write_text(source.replace(mutant.old, mutant.new))
        jobs[name] = (path, DEFAULT_SEED)
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {name: pool.submit(grade, assignment, path, hidden=True, seed=seed)
                   for name, (path, seed) in jobs.items()}
        return {name: f.result() for name, f in futures.items()}


def assert_full_marks(result: GradeResult, assignment: str) -> None:
    """Every check passed, hidden ones included, and the score is the assignment's maximum."""
    failed = {c.name: c.message for c in result.checks if not c.passed}
    assert not failed, f"the reference loses points: {failed}"
    assert result.score == result.max_score == get_assignment(assignment).max_points
    assert any(c.hidden for c in result.checks) == any(c.hidden for c in get_assignment(assignment).checks)


def assert_starter_scores_zero(result: GradeResult, assignment: str) -> None:
    """The untouched starter: every check graded, each failing on the starter's ``NotImplementedError`` with a
    one-line reason."""
    assert result.score == 0 and len(result.checks) == len(get_assignment(assignment).checks)
    for c in result.checks:
        assert c.status == "error" and "NotImplementedError: TODO" in c.message and "\n" not in c.message, c


def assert_loses_exactly(result: GradeResult, expected: AbstractSet[str]) -> None:
    """The checks in ``expected`` fail with a one-line reason and score 0; every other check scores full points."""
    failed = {c.name for c in result.checks if not c.passed}
    assert failed == set(expected), {c.name: c.message for c in result.checks if c.name in failed ^ set(expected)}
    for c in result.checks:
        assert c.points == (0 if c.name in expected else c.max_points)
        assert c.passed or (c.message and "\n" not in c.message)
