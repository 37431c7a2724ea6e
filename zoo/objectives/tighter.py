"""Tighter bounds are not necessarily better: MIWAE, CIWAE and PIWAE (Rainforth et al. 2018).

With M x K samples z_mk ~ q(z | x) per datum and w_mk = p(x, z_mk) / q(z_mk | x)::

    MIWAE_{M,K}(x)    = (1/M) sum_m log (1/K) sum_k w_mk          M independent IWAE_K bounds, averaged
    CIWAE_{beta,K}(x) = beta ELBO_K(x) + (1 - beta) IWAE_K(x)      ELBO_K = (1/K) sum_k log w_k, same K samples
    PIWAE_{M,K}:        theta ascends IWAE_{MK}(x), all M K samples as one bound; phi ascends MIWAE_{M,K}(x)

Rainforth et al. show that the signal-to-noise ratio of the IWAE_K gradient falls as O(1/sqrt(K)) for the
guide's parameters phi while it rises as O(sqrt(K)) for the model's theta: a tighter bound trains a better
model through a worse-informed encoder. MIWAE (M > 1) trades tightness for the encoder's signal (M = 1 is
IWAE_K, K = 1 the ELBO with M particles), CIWAE interpolates between the ELBO (beta = 1) and IWAE_K (beta = 0), and
PIWAE gives each network its own target: the tight IWAE_{MK} for the model, MIWAE_{M,K} for the guide.

All three are reparameterized gradients of their bounds (a guide that cannot reparameterize its samples is
refused), per datum and scaled by N/B after the logsumexp like the zoo's ``iwae``. The reported bound of
``piwae`` is IWAE_{MK}, the model's target. ``pyro-zoo gradients --section snr`` sets their encoder and decoder
SNR beside IWAE's (``benchmarks/gradient_variance.py``).

Reference: T. Rainforth, A. R. Kosiorek, T. A. Le, C. J. Maddison, M. Igl, F. Wood, Y. W. Teh, "Tighter
Variational Bounds are Not Necessarily Better", ICML 2018, https://arxiv.org/abs/1802.04537.

Example::

    >>> from zoo.objectives import build_objective
    >>> o = build_objective("miwae", 4, outer=3)
    >>> o.num_particles, o.M, o.draws
    (4, 3, 12)
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch

from zoo.core.components import option
from zoo.core.plates import MAX_PLATE_NESTING
from zoo.objectives.axes import BoundOptions, Estimator, Particles, estimator_option, register_bound
from zoo.objectives.base import PerDatumObjective, assumption_broken
from zoo.objectives.estimators import TwoSurrogates

__all__ = ["MIWAEBound", "CIWAEBound", "PIWAE", "miwae", "iwae"]


def iwae(log_w: torch.Tensor) -> torch.Tensor:
    """log (1/K) sum_k w_k per datum ``[B]`` from log-weights ``[K, B]``."""
    return torch.logsumexp(log_w, 0) - math.log(log_w.shape[0])


def miwae(log_w: torch.Tensor, M: int) -> torch.Tensor:
    """(1/M) sum_m IWAE_K of the m-th group of K, per datum ``[B]``, from log-weights ``[M K, B]`` (i.i.d. draws, so
    any split into M groups of K is M independent IWAE_K estimates)."""
    return iwae(log_w.reshape(M, -1, log_w.shape[-1]).transpose(0, 1)).mean(0)


class _Grouped:
    """M groups of K samples: ``num_particles`` is K, and M K samples are drawn per datum (``draws``)."""

    default_particles = 8
    needs_reparam = True
    M = 1

    @property
    def K(self) -> int:
        return self.num_particles

    @property
    def draws(self) -> int:
        return self.num_particles * self.M


class MIWAEBound(_Grouped, PerDatumObjective):
    """MIWAE_{M,K}: the average of M independent IWAE_K bounds, reparameterized (module docstring)."""

    def __init__(self, num_particles: int = None, outer: int = 8, max_plate_nesting: int = MAX_PLATE_NESTING):
        super().__init__(num_particles=num_particles, max_plate_nesting=max_plate_nesting)
        self.M = int(outer)

    def bound(self, log_w: torch.Tensor) -> torch.Tensor:
        return miwae(log_w, self.M)


class CIWAEBound(_Grouped, PerDatumObjective):
    """CIWAE_{beta,K} = beta ELBO_K + (1 - beta) IWAE_K on the same K samples, reparameterized (module docstring)."""

    def __init__(self, num_particles: int = None, ciwae_beta: float = 0.5, max_plate_nesting: int = MAX_PLATE_NESTING):
        super().__init__(num_particles=num_particles, max_plate_nesting=max_plate_nesting)
        self.beta = float(ciwae_beta)

    def bound(self, log_w: torch.Tensor) -> torch.Tensor:
        return self.beta * log_w.mean(0) + (1.0 - self.beta) * iwae(log_w)


class PIWAE(_Grouped, TwoSurrogates):
    """PIWAE_{M,K}: the model's parameters follow IWAE_{MK}, the guide's follow MIWAE_{M,K}, from the same M K samples
    (module docstring); the loss reported is IWAE_{MK}. Needs a guide with parameters of its own (not ``exact``)."""

    def __init__(self, num_particles: int = None, outer: int = 8, max_plate_nesting: int = MAX_PLATE_NESTING):
        super().__init__(num_particles=num_particles, max_plate_nesting=max_plate_nesting)
        self.M = int(outer)

    def bound(self, log_w: torch.Tensor) -> torch.Tensor:
        return iwae(log_w)

    def _surrogates(self, model, guide, *args, **kwargs):
        lw = self.log_weights(model, guide, *args, **kwargs)
        if {id(p) for p in lw.model_params} & {id(p) for p in lw.guide_params}:
            raise assumption_broken("piwae", "model and guide parameters apart")
        theta_loss = -lw.scale * iwae(lw.log_w).sum() - lw.global_term
        phi_loss = -lw.scale * miwae(lw.log_w, self.M).sum()
        return lw, theta_loss, phi_loss


@dataclass
class Outer(Particles):
    """M, the number of groups of K (``miwae``, ``piwae``)."""

    test_options: ClassVar[dict] = {"outer": 2}

    outer: int = option(8, "miwae, piwae: M groups of K particles per datum (Rainforth et al. 2018; default 8)",
                        minimum=1)

    def floats_per_datum(self, x_dim: int):
        return [("outer", self.outer * x_dim, "the likelihood terms of M groups of K particles")]


@dataclass
class MIWAEOptions(Outer, BoundOptions):
    """Options of the ``miwae`` bound."""

    bound: ClassVar[str] = "miwae"
    estimator: str = estimator_option("reparam")


@dataclass
class PIWAEOptions(Outer, BoundOptions):
    """Options of the ``piwae`` objective."""

    bound: ClassVar[str] = "piwae"
    estimator: str = estimator_option("reparam")


@dataclass
class CIWAEOptions(BoundOptions):
    """Options of the ``ciwae`` bound."""

    bound: ClassVar[str] = "ciwae"
    estimator: str = estimator_option("reparam")
    ciwae_beta: float = option(0.5, "ciwae: weight of the ELBO against IWAE_K, 1 the ELBO, 0 IWAE (default 0.5)",
                               minimum=0.0, maximum=1.0)


register_bound("miwae", options=MIWAEOptions, default="reparam", description=(
    "MIWAE_{M,K}: M independent IWAE_K bounds averaged (Rainforth et al. 2018), --outer M, --particles K"),
    estimators=[Estimator.of(MIWAEBound, "reparam", "the reparameterized gradient of MIWAE",
                             lambda k, outer=8: MIWAEBound(num_particles=k, outer=outer), warmup=True, jit=True,
                             ddp=True)])

register_bound("ciwae", options=CIWAEOptions, default="reparam", description=(
    "CIWAE_{beta,K}: beta ELBO_K + (1 - beta) IWAE_K on the same K samples (Rainforth et al. 2018), --ciwae-beta"),
    estimators=[Estimator.of(CIWAEBound, "reparam", "the reparameterized gradient of CIWAE",
                             lambda k, ciwae_beta=0.5: CIWAEBound(num_particles=k, ciwae_beta=ciwae_beta), warmup=True,
                             jit=True, ddp=True)])

register_bound("piwae", options=PIWAEOptions, default="reparam", description=(
    "PIWAE_{M,K}: the model trained on IWAE_{MK}, the guide on MIWAE_{M,K}, from the same M K samples (Rainforth et "
    "al. 2018), --outer M, --particles K"),
    estimators=[Estimator.of(PIWAE, "reparam", "IWAE_{MK}'s gradient for the model, MIWAE_{M,K}'s for the guide",
                             lambda k, outer=8: PIWAE(num_particles=k, outer=outer), needs_normal_guide=False,
                             separate_surrogates=True, warmup=True)])
