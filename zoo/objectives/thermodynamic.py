"""The thermodynamic variational objective (TVO): log p(x) as an integral over a path from q to the posterior.

For one datum x, the geometric path between q(z | x) (beta = 0) and the posterior p(z | x) (beta = 1)::

    pi_beta(z) = q(z | x)^(1 - beta) p(x, z)^beta / Z_beta,        log Z_0 = 0,  log Z_1 = log p(x)

has d log Z_beta / d beta = E_{pi_beta}[log w],  log w = log p(x, z) - log q(z | x)  (thermodynamic integration).
So log p(x) = int_0^1 E_{pi_beta}[log w] d beta, and since the integrand rises with beta (its derivative is the
variance of log w under pi_beta), its left Riemann sum over a partition 0 = beta_0 < beta_1 < ... < beta_P = 1 is
a lower bound, the TVO::

    TVO = sum_{j=0}^{P-1} (beta_{j+1} - beta_j) E_{pi_{beta_j}}[log w]      ELBO = TVO with P = 1  <=  TVO  <=  log p(x)

Each expectation is estimated by self-normalized importance sampling from S draws z_s ~ q(z | x): weights
w_s^beta / sum_t w_t^beta. Its gradient, for model parameters theta and guide parameters phi, follows from
grad E_{pi}[f] = E_{pi}[grad f] + Cov_{pi}(f, grad log pi~), pi~ = q^(1 - beta) p^beta unnormalized::

    grad E_{pi_beta}[log w] = E_{pi_beta}[grad log w] + Cov_{pi_beta}(log w, beta grad log p + (1 - beta) grad log q)

with the samples held fixed (a score-function estimator: no reparameterization, so it applies to discrete and
continuous latents alike). Both expectations use the same S draws; the covariance is multiplied by S / (S - 1),
which makes the beta = 0 term (the ELBO's) exactly unbiased: at P = 1 this is the ELBO gradient with a
leave-one-out-like baseline. For beta > 0 the self-normalized estimates are consistent, not unbiased: their bias
falls as 1/S (the paper's estimator, with the same property). S >= 2: with one draw the covariance is 0.

The partition: ``schedule='log'`` puts beta_1..beta_{P-1} log-uniformly between 10^log_beta_min and 1 (the
paper's choice, with a grid-searched beta_1), ``'linear'`` evenly in (0, 1).

Reported (``loss``): the TVO estimate, -(N/B) sum_b TVO_b. It is a lower bound on log p(x) in expectation as
S grows; the ELBO, IWAE and IS log-likelihood of the harness score a TVO-trained model the same way as any other.

Reference: V. Masrani, T. A. Le and F. Wood, "The Thermodynamic Variational Objective", NeurIPS 2019,
https://arxiv.org/abs/1907.00031 (its section 4 gives the covariance estimator; the authors' code the S/(S-1)
correction and the log-spaced partition).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from zoo.core.components import OptionError, option
from zoo.core.plates import MAX_PLATE_NESTING
from zoo.objectives.axes import BoundOptions, Estimator, estimator_option, register_bound
from zoo.objectives.base import PerDatumObjective

__all__ = ["partition", "tvo_bound", "ThermodynamicObjective"]

SCHEDULES = ("log", "linear")


def partition(partitions: int, schedule: str = "log", log_beta_min: float = -1.7) -> torch.Tensor:
    """beta_0 = 0 < beta_1 < ... < beta_P = 1, ``[P + 1]`` (P = ``partitions``; module docstring)."""
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule {schedule!r}: one of {', '.join(SCHEDULES)}")
    if partitions == 1:
        inner = torch.ones(1, dtype=torch.float64)
    elif schedule == "log":
        inner = torch.logspace(log_beta_min, 0.0, partitions, dtype=torch.float64)
    else:
        inner = torch.linspace(0.0, 1.0, partitions + 1, dtype=torch.float64)[1:]
    return torch.cat([torch.zeros(1, dtype=torch.float64), inner])


def tvo_bound(log_w: torch.Tensor, betas: torch.Tensor) -> torch.Tensor:
    """The left-Riemann TVO per datum ``[B]`` from log-weights ``[S, B]`` and a partition ``[P + 1]``,
    each E_{pi_beta}[log w] by self-normalized importance sampling."""
    betas = betas.to(log_w)
    weights = torch.softmax(log_w[..., None] * betas, 0)                    # [S, B, P + 1]
    expected = (weights * log_w[..., None]).sum(0)                          # [B, P + 1]
    return (expected[..., :-1] * (betas[1:] - betas[:-1])).sum(-1)


class ThermodynamicObjective(PerDatumObjective):
    """The TVO with the covariance (score-function) gradient of Masrani et al. (2019); module docstring.

    Arguments:
        num_particles: S draws from q per datum (>= 2).
        partitions: P, the number of intervals of [0, 1] (1 gives the ELBO).
        schedule: ``'log'`` or ``'linear'``.
        log_beta_min: log10 of beta_1 for the log schedule.
    """

    default_particles = 10
    min_particles = 2
    detach_latents = True

    def __init__(self, num_particles: int = None, partitions: int = 5, schedule: str = "log",
                 log_beta_min: float = -1.7, max_plate_nesting: int = MAX_PLATE_NESTING):
        super().__init__(num_particles=num_particles, max_plate_nesting=max_plate_nesting)
        self.betas = partition(int(partitions), schedule, float(log_beta_min))

    def bound(self, log_w: torch.Tensor) -> torch.Tensor:
        return tvo_bound(log_w, self.betas)

    def per_datum(self, lw):
        log_w, log_q = lw.log_w, lw.log_q                                   # [S, B]; samples cut from the graph
        log_p = log_w + log_q
        betas = self.betas.to(log_w)
        S = log_w.shape[0]
        f = log_w.detach()[..., None]                                       # [S, B, 1]
        weights = torch.softmax(f * betas, 0)                               # [S, B, P + 1], detached
        heated = betas * log_p[..., None] + (1 - betas) * log_q[..., None]   # log pi~_beta, differentiable
        centred_f = f - (weights * f).sum(0, keepdim=True)
        centred_h = heated - (weights * heated).sum(0, keepdim=True)
        covariance = S / (S - 1) * (weights * centred_f * centred_h).sum(0)          # [B, P + 1]
        direct = (weights * log_w[..., None]).sum(0)                                   # E_pi[grad log w]
        intervals = betas[1:] - betas[:-1]
        surrogate = ((covariance + direct)[..., :-1] * intervals).sum(-1)
        return self.bound(log_w), surrogate


@dataclass
class TVOOptions(BoundOptions):
    """Options of the ``tvo`` bound: the partition of [0, 1]."""

    bound: ClassVar[str] = "tvo"
    test_options: ClassVar[dict] = {"partitions": 2}
    estimator: str = estimator_option("covariance")
    partitions: int = option(5, "tvo: P, the intervals of [0, 1] in the Riemann sum (1 is the ELBO; default 5)",
                             minimum=1)
    schedule: str = option("log", "tvo: beta_1..beta_{P-1} spaced 'log' (from 10^log_beta_min) or 'linear' "
                           "(default log)", choices=SCHEDULES)
    log_beta_min: float = option(-1.7, "tvo: log10 of beta_1 for the log schedule (default -1.7, beta_1 = 0.02)",
                                 maximum=0.0)

    def validate(self) -> None:
        super().validate()
        # at 10^0 every beta of the log schedule is 1: the sum keeps its first interval alone, the plain ELBO
        if self.schedule == "log" and self.partitions > 1 and self.log_beta_min >= 0:
            raise OptionError("log_beta_min", f"{self.log_beta_min:g} puts every beta_1..beta_(P-1) at 1, which makes "
                              f"the TVO the plain ELBO; give a negative value (beta_1 = 10^log_beta_min, default "
                              f"-1.7), or --partitions 1 for the ELBO")

    def floats_per_datum(self, x_dim: int):
        # each particle is weighted at every beta of the partition: [S, B, P + 1]
        return [("partitions", self.partitions + 1, "the weights of each particle at P + 1 temperatures")]


register_bound("tvo", options=TVOOptions, default="covariance", description=(
    "the thermodynamic variational objective (Masrani et al. 2019): a left Riemann sum of E_{pi_beta}[log w] over "
    "a partition of [0, 1], --partitions P, --schedule, --log-beta-min; S = --particles draws from q"),
    estimators=[Estimator.of(ThermodynamicObjective, "covariance", "the paper's covariance (score-function) "
                             "gradient from S draws, for discrete and continuous latents",
                             lambda k, partitions=5, schedule="log", log_beta_min=-1.7: ThermodynamicObjective(
                                 num_particles=k, partitions=partitions, schedule=schedule,
                                 log_beta_min=log_beta_min), needs_guide_density=True, jit=True, ddp=True)])
