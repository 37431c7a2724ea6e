"""Per-datum (non-amortized) mean-field guide.

For every datum n and latent site z, with free parameters per datum::

    q(z_n) = N(z_n; m_n, diag(s_n^2))           real latents
    q(z_n) = prod_k Bernoulli(z_nk; sigmoid(l_nk))   binary latents
    q(z_n) = prod_j OneHotCategorical(z_nj; softmax(l_nj))   categorical latents

stored as ``[N, ...]`` tables and indexed by the minibatch indices ``idx`` of the
data plate. This is classical stochastic variational inference: no encoder, so there
is no amortization gap, but new data need a fresh fit (:func:`zoo.training.refit.refit_local_guide`).

Reference: M. D. Hoffman, D. M. Blei, C. Wang and J. Paisley, "Stochastic
Variational Inference", JMLR 14, 2013.

Example::

    >>> from zoo.models import PPCA
    >>> g = MeanField(PPCA(x_dim=5, latent_dim=2), num_data=100)
    >>> g.z_loc.shape
    torch.Size([100, 2])
"""
from __future__ import annotations

import math
from typing import Optional

import pyro
import pyro.distributions as dist
import torch
from torch import nn

from dataclasses import dataclass

from guides.base import BaselineOptions, ZooGuide, constrain, site_distribution
from guides.globals import GlobalGuideOptions
from zoo.core.latents import LATENT_FAMILIES, MANIFOLDS
from zoo.core.components import GUIDES
from zoo.core.errors import ZooError
from zoo.core.plates import data_plate
from zoo.core.params import register_module

__all__ = ["MeanField"]


@dataclass
class MeanFieldOptions(BaselineOptions, GlobalGuideOptions):
    pass


@GUIDES.register("meanfield", options=MeanFieldOptions, description="per-datum diagonal Normal, vMF or "
                 "Power Spherical (sphere), wrapped normal (H^d), or Bernoulli/categorical logits, indexed by the data "
                 "plate's idx")
class MeanField(ZooGuide):
    """Per-datum diagonal Normal (real) or independent logits (binary, categorical) for each site.

    Arguments:
        model: the zoo model.
        num_data: N, the number of data whose posteriors are fitted.
        init_scale: initial posterior standard deviation of real latents.
        baseline: see :class:`~guides.base.ZooGuide`.
    """

    family = "meanfield"
    supports = ("real", "binary", "categorical", "sphere", "hyperbolic")
    amortized = False
    enumerable = True
    #: Each row of a per-datum table gets one gradient per epoch, against one per step for
    #: shared parameters, so the tables train with a 10x larger Adam step by default. The global
    #: guide q(theta) is shared, and steps at --lr as in every family (zoo.training.optimizer).
    lr_multiplier = 10.0
    #: The standard deviation a test-time refit starts each real latent's rows at (:meth:`refit_start`): the
    #: geometric middle of training's start, 0.1, and the standard prior's 1. A narrow posterior (an active
    #: dimension) and one at the prior (a dimension the decoder ignores) are then each at most log(sqrt(10)) from
    #: the start in log-scale, half of what 0.1 leaves to the second, which Adam covers at about lr per step.
    #: ``benchmarks/refit_start.py`` measures the refit from here (with its step size and monitor) against the
    #: earlier one from 0.1: the epochs, the CPU time and the ELBO reached.
    refit_init_scale = 0.3

    def __init__(self, model, num_data: int, init_scale: float = 0.1, baseline: Optional[str] = None,
                 global_guide: Optional[str] = None):
        super().__init__(model, num_data, baseline, global_guide)
        if not num_data or num_data < 1:
            raise ZooError("the 'meanfield' guide needs the number of data it is fitted to")
        for site in self.sites:
            if site.support == "real":
                shape = site.unconstrained_shape            # a constrained site's Normal is on its unconstrained space
                setattr(self, f"{site.name}_loc", nn.Parameter(torch.zeros(num_data, *shape)))
                setattr(self, f"{site.name}_log_scale",
                        nn.Parameter(torch.full((num_data, *shape), math.log(init_scale))))
            elif site.support in MANIFOLDS:
                family = LATENT_FAMILIES[site.family]
                setattr(self, f"{site.name}_raw",
                        nn.Parameter(family.initial_raw(num_data, family.dim_of(site.numel))))
            else:
                setattr(self, f"{site.name}_logits", nn.Parameter(torch.zeros(num_data, site.num_logits)))

    def refit_start(self) -> None:
        """Every row of the real latents at loc 0 and standard deviation :attr:`refit_init_scale`; the other
        latents' rows as built."""
        with torch.no_grad():
            for site in self.sites:
                if site.support == "real":
                    getattr(self, f"{site.name}_loc").zero_()
                    getattr(self, f"{site.name}_log_scale").fill_(math.log(self.refit_init_scale))

    def _device(self):
        return next(self.parameters()).device

    def distribution(self, site, idx):
        if site.support == "real":
            loc = getattr(self, f"{site.name}_loc")[idx]
            scale = torch.exp(getattr(self, f"{site.name}_log_scale")[idx])
            return constrain(site, dist.Normal(loc, scale).to_event(len(site.unconstrained_shape)))
        if site.support in MANIFOLDS:
            return site_distribution(site, getattr(self, f"{site.name}_raw")[idx])
        return site_distribution(site, getattr(self, f"{site.name}_logits")[idx])

    def forward(self, x=None, idx=None, N=None):
        register_module("meanfield", self)
        if idx is None:
            if x is not None and x.shape[0] != self.num_data:
                raise ZooError(f"this 'meanfield' guide holds {self.num_data} per-datum posteriors but got "
                               f"{x.shape[0]} data without indices; pass idx, or refit it on the new data")
            idx = torch.arange(self.num_data, device=self._device())
        self.sample_globals()
        with data_plate(x, idx, self.num_data if N is None else N):
            for site in self.sites:
                pyro.sample(site.name, self.distribution(site, idx), infer=self.infer_for(site, x))
