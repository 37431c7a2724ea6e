"""The leapfrog integrator of Hamiltonian dynamics, shared by AIS's HMC kernel and the Hamiltonian guide.

For a log density log pi(q) and momenta p with kinetic energy |p|^2 / 2, one step of size eps is

    p <- p + (eps / 2) grad log pi(q)
    q <- q + eps p
    p <- p + (eps / 2) grad log pi(q)

(Neal 2011, "MCMC using Hamiltonian dynamics", eq. 5.18-5.20). It is volume-preserving and reversible, which is
what a Metropolis correction (AIS) and a change of variables without a Jacobian term (the Hamiltonian guide,
Salimans et al. 2015) both need.

Not Pyro's ``velocity_verlet`` (``pyro.ops.integrator``), for two reasons: it recomputes the potential and its
gradient through its own ``potential_fn`` on a dict of sites, where AIS keeps the gradients of its two densities
apart (the next temperature reuses them, :class:`zoo.evaluation.ais._Point`); and it detaches, where the
Hamiltonian guide's ELBO differentiates through the steps. Here the caller says how the gradient is computed
(``gradient_at``), and may cool the momenta between steps (the guide's tempering).
"""
from __future__ import annotations

from typing import Any, Callable, List, Optional, Sequence, Tuple

import torch

__all__ = ["leapfrog"]


def leapfrog(q: Sequence[torch.Tensor], p: Sequence[torch.Tensor], grad: Sequence[torch.Tensor],
             step: Sequence[torch.Tensor], steps: int,
             gradient_at: Callable[[List[torch.Tensor]], Tuple[Any, List[torch.Tensor]]],
             cool: Optional[Callable[[int, List[torch.Tensor]], List[torch.Tensor]]] = None):
    """``steps`` leapfrog steps from positions ``q`` and momenta ``p`` (lists of tensors, one per block), where
    ``grad`` is grad log pi at ``q`` and ``step`` the step size of each block (broadcastable against it).

    ``gradient_at(q)`` returns ``(state, grad log pi(q))``: the caller's record of the point (its densities), kept
    for the last one. ``cool(k, p)``, if given, rescales the momenta after step k (k = 0, ..., steps - 1).
    Returns ``(q, p, state, grad)`` at the end; ``state`` is ``None`` after zero steps."""
    q, p, grad, state = list(q), list(p), list(grad), None
    for k in range(steps):
        p = [p_b + 0.5 * e * g_b for p_b, e, g_b in zip(p, step, grad)]
        q = [q_b + e * p_b for q_b, e, p_b in zip(q, step, p)]
        state, grad = gradient_at(q)
        p = [p_b + 0.5 * e * g_b for p_b, e, g_b in zip(p, step, grad)]
        if cool is not None:
            p = cool(k, p)
    return q, p, state, grad
