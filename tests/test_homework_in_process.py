"""Grading a trusted file in this process (``zoo.homework.in_process``, what the seed sweep measures the checks with)
gives the grader's verdicts: the same seeds, cache and verdict code, and the worker's wire types."""
import numpy as np
import pytest
import torch

from zoo.homework._worker import ProtocolError, decode, encode
from zoo.homework.in_process import as_on_the_wire, grade_in_process, load_file
from zoo.homework.kit import solution_path
from zoo.homework import get_assignment


def _same(a, b):
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape and \
            bool(torch.isclose(a, b, rtol=0, atol=0, equal_nan=True).all())
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b


@pytest.mark.parametrize("value", [
    (torch.randn(3, 2), 0.1 + 0.2, 7, None, "text", True),
    {"W": torch.randn(5, 2, dtype=torch.float64), "steps": [torch.arange(4), torch.tensor(True)]},
    np.arange(6.0).reshape(2, 3),
    torch.tensor([float("nan"), float("inf"), 1e-40]),
])
def test_a_value_in_process_is_what_the_worker_would_send(value):
    assert _same(as_on_the_wire(value), decode(encode(value)))


@pytest.mark.parametrize("value", [{1: torch.zeros(1)}, {"set"}, torch.zeros(2, dtype=torch.complex64)])
def test_a_value_the_wire_cannot_carry_is_refused_in_process_too(value):
    with pytest.raises(ProtocolError):
        encode(value)
    with pytest.raises(ProtocolError):
        as_on_the_wire(value)


def test_grading_in_process_gives_the_verdicts_of_the_checks(tmp_path):
    """The reference keeps the closed-form and EM checks of homework 3; an em_step that returns the closed-form
    maximum likelihood loses every EM check, with the grader's one-line reasons."""
    path = solution_path(get_assignment("ppca_three_ways"))
    checks = ["ml_closed_form", "posterior", "em_update", "em_monotone", "em_converges"]
    results = grade_in_process("ppca_three_ways", load_file(path), seed=5, only=checks)
    assert list(results) == checks and all(r.passed and r.points == r.max_points for r in results.values())
    source = path.read_text()
    jump = tmp_path / "jump.py"
    jump.write_text(source.replace("    N, D = x.shape\n    xc = x - mu\n",
                                   "    return ml_solution(x, W.shape[1])[::2]\n    N, D = x.shape\n    xc = x - mu\n"))
    results = grade_in_process("ppca_three_ways", load_file(jump), seed=5, only=checks)
    assert {name for name, r in results.items() if not r.passed} == {"em_update", "em_monotone", "em_converges"}
    assert "is not one EM step" in results["em_monotone"].message and "\n" not in results["em_monotone"].message


@pytest.mark.parametrize("assignment, check", [("discrete_estimators", "gumbel_softmax_distribution"),
                                               ("bernoulli_vae", "elbo_lower_bound")])
@pytest.mark.slow
def test_in_process_a_check_draws_what_it_draws_in_the_grader(assignment, check):
    """The same seed gives the same inputs, draws and verdict in process as in the sandboxed grader, to the digit:
    the file's requests do not move the check's own random numbers (the worker's seeding of torch used to reseed
    the check's generator in process, and its later draws differed)."""
    from zoo.homework.grader import grade

    path = solution_path(get_assignment(assignment))
    in_process = grade_in_process(assignment, load_file(path), seed=7, only=[check])[check]
    graded = grade(assignment, path, seed=7, only=[check]).checks[0]
    assert in_process.passed and graded.passed and in_process.message == graded.message
