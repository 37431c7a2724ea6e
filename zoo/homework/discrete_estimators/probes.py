"""Probes of assignment 2: what must run next to the student's code, in the grader's worker.

A probe is called as ``probe(submission, *args)`` with arguments the grader chose and returns plain
values. Gradients of a student's surrogate can only be taken where the surrogate is built, so the
probes rebuild the grader's problem from its seed (:func:`~zoo.homework.discrete_estimators.problem.make_problem`
and :func:`~zoo.homework.discrete_estimators.problem.make_large_problem` are public and deterministic), call
the student's estimator and return the gradients. They decide nothing: the grader, which builds the same
problem and its exact gradient and variance itself, validates the draws and tests them
(:mod:`zoo.homework.discrete_estimators.checks`).

Everything here runs beside the submission, which can replace what it calls (``torch.stack``, this module's
functions). So each gradient draw is computed from its own seed, chosen by the grader, and depends on nothing
else: the grader replays some of them in a fresh worker and takes the draws only if they come back the same.
A draw that is not a function of its own seed (shrunk toward the other draws, or toward a running mean) fails
that replay; one that is, is the student's estimator, whatever code computed it, and is certified as such.
"""
from __future__ import annotations


import torch

from zoo.homework.base import seed_draw
from zoo.homework.discrete_estimators.problem import make_large_problem, make_problem
from zoo.testing import gradient_of

__all__ = ["gradient_draws", "straight_through"]


def gradient_draws(sub, function: str, problem_seed: int, num_particles: int, seeds, large: bool = False,
                   offsets=None):
    """One flat gradient per seed of ``seeds`` (``[len(seeds), P]``) of the surrogate
    ``function(logits, f, num_particles)`` (``reinforce`` or ``reinforce_loo``) in the problem's parameters, on
    ``make_problem(problem_seed)`` (P = 46) or, with ``large``, on ``make_large_problem(problem_seed)``; the
    random number generators are seeded with each draw's seed before its draw. ``offsets`` ``[B]`` adds a
    constant per datum to f (the ELBO's gradient stays the same)."""
    if function not in ("reinforce", "reinforce_loo"):
        raise ValueError(f"no estimator {function}")
    problem = make_large_problem(seed=problem_seed) if large else make_problem(seed=problem_seed)
    surrogate = getattr(sub, function)
    f = problem.f if offsets is None else (lambda z: problem.f(z) + offsets)
    draws = []
    for seed in seeds:
        seed_draw(seed)
        draws.append(gradient_of(lambda: surrogate(problem.logits, f, num_particles), problem.params))
    return torch.stack(draws)


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
