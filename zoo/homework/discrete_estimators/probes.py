"""Probes of assignment 2: what must run next to the student's code, in the grader's worker.

A probe is called as ``probe(submission, *args)`` with arguments the grader chose and returns plain
values. Gradients of a student's surrogate can only be taken where the surrogate is built, so the
probes rebuild the grader's problem from its seed (:func:`~zoo.homework.discrete_estimators.problem.make_problem`
is public and deterministic), call the student's estimator and return the gradients. They decide
nothing: the grader, which builds the same problem and its exact gradient itself, validates the
draws and tests them (:mod:`zoo.homework.discrete_estimators.checks`).
"""
from __future__ import annotations

import torch

from zoo.homework.discrete_estimators.problem import make_problem
from zoo.testing import gradient_of

__all__ = ["gradient_draws", "straight_through"]


def gradient_draws(sub, function: str, problem_seed: int, num_particles: int, num_samples: int):
    """``num_samples`` flat gradients ``[num_samples, 46]`` of the surrogate ``function(logits, f, num_particles)``
    (``reinforce`` or ``reinforce_loo``) in (theta, phi) on ``make_problem(problem_seed)``."""
    if function not in ("reinforce", "reinforce_loo"):
        raise ValueError(f"no estimator {function}")
    problem = make_problem(seed=problem_seed)
    surrogate = getattr(sub, function)
    return torch.stack([gradient_of(lambda: surrogate(problem.logits, problem.f, num_particles), problem.params)
                        for _ in range(num_samples)])


def straight_through(sub, logits, tau: float, weights):
    """``y = straight_through(softmax(logits / tau))``: its value, whether it carries a gradient, and the
    gradient of sum(weights * y) in ``logits`` (zeros when it carries none)."""
    logits = logits.clone().requires_grad_()
    y = sub.straight_through(torch.softmax(logits / tau, -1))
    if not isinstance(y, torch.Tensor) or y.shape != logits.shape:
        return {"value": y, "requires_grad": False, "gradient": torch.zeros_like(logits)}
    carries = bool(y.requires_grad)
    gradient = gradient_of(lambda: (weights * y).sum(), [logits]).reshape(logits.shape) if carries \
        else torch.zeros_like(logits)
    return {"value": y.detach(), "requires_grad": carries, "gradient": gradient}
