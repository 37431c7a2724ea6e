"""Probes of homework 4: what must run next to the student's code, in the grader's worker.

A probe is called as ``probe(submission, *args)`` with arguments the grader chose and returns plain values; it
decides nothing. The gradients of a student's surrogate can only be taken where it is built, so the probes rebuild
the grader's problems from their seeds (:mod:`zoo.homework.wake_sleep_and_iwae.problem` is public and
deterministic), call the student's function and return the gradients, the bound's values, or what a training run
left. Each Monte Carlo gradient draw is computed from its own seed, chosen by the grader, which replays some of them
in a fresh worker (:func:`~zoo.homework.base.assert_replayed`) before it certifies them.
"""
from __future__ import annotations

import torch

from zoo.homework.base import seed_draw
from zoo.homework.wake_sleep_and_iwae.problem import (load_machine, machine_state, make_gaussian_problem,
                                                      make_kl_problem, make_sbn_problem)
from zoo.testing import gradient_of

__all__ = ["log_probabilities", "phase_gradients", "iwae_gradients", "iwae_values", "train_sleep", "train"]

PHASES = ("wake_surrogate", "sleep_surrogate", "rws_surrogate")


def log_probabilities(sub, state, x, h):
    """The student's ``log_joint(machine, x, h)`` and ``log_recognition(machine, h, x)`` on the machine of weights
    ``state``: ``{"log_joint": ..., "log_recognition": ...}``."""
    machine = load_machine(state)
    with torch.no_grad():
        return {"log_joint": sub.log_joint(machine, x, h), "log_recognition": sub.log_recognition(machine, h, x)}


def phase_gradients(sub, function: str, problem_seed: int, num_samples: int, seeds):
    """One flat gradient per seed (``[len(seeds), P]``, over the machine's a, W, c, R, b) of the student's
    ``function`` (``wake_surrogate(machine, x, S)``, ``rws_surrogate(machine, x, S)`` or
    ``sleep_surrogate(machine, S)``) on ``make_sbn_problem(problem_seed)``, in float32."""
    if function not in PHASES:
        raise ValueError(f"no phase {function}")
    problem = make_sbn_problem(problem_seed)
    machine = load_machine(machine_state(problem.machine))
    x = problem.x.float()
    surrogate = getattr(sub, function)
    args = (num_samples,) if function == "sleep_surrogate" else (x, num_samples)
    draws = []
    for seed in seeds:
        seed_draw(seed)
        draws.append(gradient_of(lambda: surrogate(machine, *args), list(machine.parameters())))
    return torch.stack(draws)


def gaussian_problem(problem_seed: int, at_posterior: bool):
    """The linear Gaussian problem in float32, its parameters leaves that require grad."""
    problem = make_gaussian_problem(problem_seed)
    if at_posterior:
        problem = problem.at_posterior()
    params = [p.detach().float().requires_grad_() for p in problem.params]
    return type(problem)(*params, problem.x.float()), params


def iwae_gradients(sub, problem_seed: int, num_samples: int, seeds):
    """One flat gradient per seed (``[len(seeds), P]``, over W, mu, log sigma, A, d, e) of sum_b
    ``iwae_bound(log_joint, loc, log_scale, K)`` on ``make_gaussian_problem(problem_seed)``, in float32."""
    problem, params = gaussian_problem(problem_seed, False)
    draws = []
    for seed in seeds:
        seed_draw(seed)

        def value():
            loc, log_scale = problem.guide()
            return sub.iwae_bound(problem.log_joint, loc, log_scale, num_samples).sum()
        draws.append(gradient_of(value, params))
    return torch.stack(draws)


def iwae_values(sub, problem_seed: int, num_samples: int, repeats: int, at_posterior: bool, offset: float):
    """``iwae_bound(log_joint + offset, loc, log_scale, K)`` on the Gaussian problem's data repeated ``repeats``
    times (independent draws of each datum's bound): ``[repeats, B]``; with ``at_posterior`` q is the exact
    posterior."""
    problem, _ = gaussian_problem(problem_seed, at_posterior)
    B = problem.x.shape[0]
    repeated = type(problem)(*problem.params, problem.x.repeat(repeats, 1))
    with torch.no_grad():
        loc, log_scale = repeated.guide()
        values = sub.iwae_bound(lambda z: repeated.log_joint(z) + offset, loc, log_scale, num_samples)
    if not isinstance(values, torch.Tensor) or values.shape != (repeats * B,):
        return values
    return values.reshape(repeats, B)


def train_sleep(sub, problem_seed: int, R, b, steps: int, dreams: int, lr: float):
    """Train only the recognition network of ``make_kl_problem(problem_seed)``, from weights (R, b), by plain SGD
    ascent on the student's ``sleep_surrogate(machine, dreams)`` at rate ``lr``: the average of (R, b) over the
    second half of the ``steps``, ``{"R": [K, D], "b": [K]}``."""
    machine = load_machine(machine_state(make_kl_problem(problem_seed)))
    with torch.no_grad():
        machine.encoder.weight.copy_(R)
        machine.encoder.bias.copy_(b)
    optimizer = torch.optim.SGD(machine.recognition_parameters(), lr=lr)
    totals, count = [torch.zeros_like(p, dtype=torch.float64) for p in machine.recognition_parameters()], 0
    for step in range(steps):
        optimizer.zero_grad()
        (-sub.sleep_surrogate(machine, dreams)).backward()
        for p in machine.generative_parameters():         # the sleep phase updates q only
            p.grad = None
        optimizer.step()
        if step >= steps // 2:
            count += 1
            for total, p in zip(totals, machine.recognition_parameters()):
                total += p.detach().double()
    return {"R": totals[0] / count, "b": totals[1] / count}


def train(sub, method: str, x, num_latents: int, steps: int, seed: int):
    """The student's ``train(method, x, num_latents, steps, seed)``: the trained model's ``state_dict()``."""
    state = sub.train(method, x, num_latents, steps, seed)
    if isinstance(state, dict):
        return {str(k): v.detach() if isinstance(v, torch.Tensor) else v for k, v in state.items()}
    return state
