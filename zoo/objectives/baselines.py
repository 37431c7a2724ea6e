"""Score-function baselines for TraceGraph_ELBO, per datum and checkpointed with the guide.

For a non-reparameterizable guide site z with downstream cost l (the terms of
log p(x, z) - log q(z | x) that depend on z, Rao-Blackwellized by Pyro's provenance
tracking), TraceGraph_ELBO's surrogate gradient is ``grad log q(z | x) * (l - b)``,
unbiased for any b that does not depend on z. :class:`BaselineTraceGraph_ELBO` takes
b from the guide (``guide.baselines``, see :class:`SiteBaseline`)::

    decaying:  b = c                   c: running average of l,     c <- beta c + (1 - beta) mean(l)
    neural:    b = c + b_psi(x)        NVIL (Mnih & Gregor 2014): c centres the learning signal and the
                                       network b_psi learns the input-dependent rest,
                                       min_psi E[(l - c - b_psi(x))^2],   c <- beta c + (1 - beta) mean(l - b_psi(x))

Why our own class rather than Pyro's ``infer={"baseline": ...}`` options
-------------------------------------------------------------------------
Pyro's baselines work on the *scaled* downstream cost: under a subsampled data plate
every log-probability in the trace is multiplied by N/B, so with N = 50,000 and B = 100
the cost an NVIL network must predict is about -170 x 500 = -85,000 per datum. A
network trained by Adam moves its output by roughly the learning rate per step and
never catches up, so Pyro's ``nn_baseline`` gives almost no variance reduction on
MNIST (on SBN-200 it trained no better than no baseline at all).
Pyro's decaying average keeps one average per minibatch *position* (its shape is the
cost's shape), so it fails when the last minibatch is smaller, and it lives in the
global param store, outside checkpoints. Here every baseline is per datum and
unscaled (l / scale), the average is one scalar per site, and both are part of the
guide's ``state_dict``. NVIL's variance normalisation (dividing l - b by a running
standard deviation) is left out: it rescales the whole guide gradient by one positive
number per step, which Adam's per-parameter normalisation already undoes, and it
would make the estimator biased in magnitude.

Reference: A. Mnih and K. Gregor, "Neural Variational Inference and Learning in Belief
Networks", ICML 2014, https://arxiv.org/abs/1402.0030 (Algorithm 1).
"""
from __future__ import annotations

from typing import Optional

import torch
from pyro.distributions.util import is_identically_zero
from pyro.infer import TraceGraph_ELBO
from pyro.infer.util import MultiFrameTensor
from pyro.ops.provenance import detach_provenance, get_provenance
from torch import nn

__all__ = ["SiteBaseline", "BaselineTraceGraph_ELBO", "BASELINE_KEY"]

#: the key of a guide site's ``infer`` dict that carries its :class:`SiteBaseline`
BASELINE_KEY = "zoo_baseline"


class SiteBaseline(nn.Module):
    """The baseline of one score-function site: a running average c, and NVIL's b_psi(x) if ``neural``.

    Arguments:
        x_dim: data dimension (input of b_psi).
        neural: add the input-dependent network b_psi (an MLP x -> 100 tanh -> 1).
        beta: decay of the running average.
    """

    def __init__(self, x_dim: int, neural: bool, beta: float = 0.9, hidden: int = 100):
        super().__init__()
        self.beta = float(beta)
        self.register_buffer("average", torch.zeros(()))
        self.net = nn.Sequential(nn.Linear(x_dim, hidden), nn.Tanh(), nn.Linear(hidden, 1)) if neural else None

    def input_dependent(self, x: torch.Tensor) -> torch.Tensor:
        """b_psi(x), one number per datum (0 without a network)."""
        if self.net is None:
            return torch.zeros(x.shape[:-1], device=x.device, dtype=x.dtype)
        return self.net(x).squeeze(-1)

    def update(self, residual: torch.Tensor) -> None:
        """c <- beta c + (1 - beta) mean(residual).

        The residual is detached, so the update stays out of the graph, eager or captured (``--jit``,
        ``--compile``: the captured step writes the buffer back).
        """
        self.average.mul_(self.beta).add_((1 - self.beta) * residual.detach().mean())


class BaselineTraceGraph_ELBO(TraceGraph_ELBO):
    """Pyro's TraceGraph_ELBO with per-datum, unscaled, checkpointed baselines (see the module doc).

    A guide opts in per site with ``infer={BASELINE_KEY: {"module": SiteBaseline, "input": x}}``
    (``input`` broadcast to the site's batch shape, particles included). Sites without
    it get Pyro's plain Rao-Blackwellized score function. The ELBO value and every
    other term are exactly Pyro's.
    """

    def _loss_and_surrogate_loss_particle(self, model_trace, guide_trace):
        elbo = 0.0
        surrogate_elbo = 0.0
        baseline_loss = 0.0
        downstream_costs = {}

        def add_cost(key, site, log_prob):
            downstream_costs.setdefault(key, MultiFrameTensor()).add((site["cond_indep_stack"], log_prob))

        # log p(x, z) and -log q(z | x) terms, each credited to the score-function sites upstream of it
        for site in model_trace.nodes.values():
            if site["type"] == "sample":
                elbo = elbo + site["log_prob_sum"]
                surrogate_elbo = surrogate_elbo + site["log_prob_sum"]
                for key in get_provenance(site["log_prob_sum"]):
                    add_cost(key, site, site["log_prob"])
        for site in guide_trace.nodes.values():
            if site["type"] == "sample":
                elbo = elbo - site["log_prob_sum"]
                entropy_term = site["score_parts"].entropy_term
                if not is_identically_zero(entropy_term):
                    surrogate_elbo = surrogate_elbo - entropy_term.sum()
                for key in get_provenance(site["log_prob_sum"]):
                    add_cost(key, site, -site["log_prob"])

        for node, cost in downstream_costs.items():
            site = guide_trace.nodes[node]
            cost = cost.sum_to(site["cond_indep_stack"]).detach()
            baseline = self._baseline(site, cost)
            if baseline is not None:
                b, b_loss = baseline
                cost = cost - b
                baseline_loss = baseline_loss + b_loss
            surrogate_elbo = surrogate_elbo + (site["score_parts"].score_function * cost).sum()

        return detach_provenance(elbo), detach_provenance(-surrogate_elbo + baseline_loss)

    @staticmethod
    def _baseline(site, cost: torch.Tensor) -> Optional[tuple]:
        """(scaled baseline for ``cost``, squared-error loss of b_psi), or None without a baseline."""
        spec = site["infer"].get(BASELINE_KEY)
        if spec is None:
            return None
        module: SiteBaseline = spec["module"]
        scale = site["scale"]
        per_datum = cost / scale                       # the unscaled learning signal l
        b_x = module.input_dependent(spec["input"].detach())
        if b_x.shape != per_datum.shape:
            raise ValueError(f"baseline input gives shape {tuple(b_x.shape)}, the site's cost has "
                             f"{tuple(per_datum.shape)}")
        c = module.average.clone()
        residual = per_datum - c - b_x                 # b_psi learns what the average does not explain
        b_loss = residual.pow(2).sum() if module.net is not None else 0.0
        module.update(per_datum - b_x.detach())
        return scale * (c + b_x.detach()), b_loss
