"""Training objectives on two axes: a bound, and the estimator of its gradient.

Every objective is a :class:`pyro.infer.ELBO` (``loss``, ``loss_and_grads``), built by
name from :data:`zoo.core.components.OBJECTIVES` with a number of particles K, vectorized
over a particle plate left of the data plate. A registered name is a bound (``elbo``,
``iwae``, ``renyi``, ``rws``) whose ``estimator`` option picks the gradient estimator, or a
preset that fixes both (``dreg`` = ``iwae`` with estimator ``dreg``): :mod:`zoo.objectives.axes`.
Which file holds what:

- :mod:`zoo.objectives.axes`: bounds, estimators and their capabilities, presets, :func:`build_objective`;
- :mod:`zoo.objectives.base`: the one base class of the per-datum bounds and estimators;
- :mod:`zoo.objectives.elbo`: the ``elbo`` bound, Pyro's ELBOs and the zoo's ELBO estimators;
- :mod:`zoo.objectives.importance`: the ``iwae`` and ``renyi`` bounds and their estimators;
- :mod:`zoo.objectives.renyi`: the per-datum Renyi / IWAE bounds (why not Pyro's RenyiELBO);
- :mod:`zoo.objectives.tighter`: MIWAE, CIWAE and PIWAE (Rainforth et al. 2018);
- :mod:`zoo.objectives.thermodynamic`: the thermodynamic variational objective (TVO, Masrani et al. 2019);
- :mod:`zoo.objectives.arm`: ARM and DisARM, antithetic-pair gradients of the ELBO for Bernoulli latents;
- :mod:`zoo.objectives.arsm`: ARSM, the swapped-Dirichlet gradient of the ELBO for categorical latents;
- :mod:`zoo.objectives.relax`: REBAR and RELAX, relaxed control variates trained on the gradient's variance;
- :mod:`zoo.objectives.estimators`: gradient estimators of a per-datum bound (score function,
  leave-one-out, VIMCO, sticking the landing, DReG);
- :mod:`zoo.objectives.baselines`: TraceGraph_ELBO with per-datum baselines (NVIL);
- :mod:`zoo.objectives.enum`: exact enumeration of discrete guide sites;
- :mod:`zoo.objectives.wake_sleep`: reweighted wake-sleep, the ``rws`` objective.

A new bound is one new file that calls :func:`~zoo.objectives.axes.register_bound`, imported here.
"""
from __future__ import annotations

from zoo.core.components import OBJECTIVES
# The registrations, in the order `pyro-zoo list` shows them.
from zoo.objectives import elbo, importance, tighter, thermodynamic, wake_sleep  # noqa: F401  isort: skip
from zoo.objectives.axes import (Estimator, bounds, build_objective, objective_capabilities, objective_label,
                                 preset_of, presets, split_objective)
from zoo.objectives.base import PerDatumObjective
from zoo.objectives.enum import EnumELBO
from zoo.objectives.renyi import IWAEBound, RenyiBound
from zoo.objectives.wake_sleep import ReweightedWakeSleep

__all__ = ["PerDatumObjective", "RenyiBound", "IWAEBound", "EnumELBO", "ReweightedWakeSleep", "Estimator",
           "OBJECTIVES", "build_objective", "objective_capabilities", "objective_label", "preset_of", "presets",
           "bounds", "split_objective"]
