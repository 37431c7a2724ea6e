"""The ``elbo`` bound and its gradient estimators; Pyro's own ELBO classes where they fit.

The bound, per datum, with z ~ q(z | x)::

    ELBO(x) = E_q[log p(x, z) - log q(z | x)]

Its estimators (``--estimator``), each with what it assumes:

- ``auto``: Pyro's :class:`~pyro.infer.Trace_ELBO`, reparameterized where the guide can
  sample so, the score function (no baseline) elsewhere;
- ``analytic_kl``: Pyro's :class:`~pyro.infer.TraceMeanField_ELBO`, KL(q || p) in closed form
  where available (reparameterizable guides);
- ``tracegraph``: Pyro's :class:`~pyro.infer.TraceGraph_ELBO`, the Rao-Blackwellized score
  function with the guide's per-datum baselines (:mod:`zoo.objectives.baselines`);
- ``reinforce``, ``rloo``, ``stl``: the zoo's per-datum estimators (:mod:`zoo.objectives.estimators`);
- ``enum``: Pyro's :class:`~pyro.infer.TraceEnum_ELBO`, the expectation over discrete guide
  sites summed exactly (:mod:`zoo.objectives.enum`).

Presets: ``tracemeanfield``, ``tracegraph``, ``enum``, ``reinforce``, ``rloo`` and ``stl``
are ``elbo`` with that estimator; ``elbo`` itself is ``auto``.

Example::

    >>> from zoo.objectives import build_objective
    >>> type(build_objective("elbo", estimator="analytic_kl")).__name__, type(build_objective("tracemeanfield")).__name__
    ('TraceMeanField_ELBO', 'TraceMeanField_ELBO')
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from pyro.infer import Trace_ELBO, TraceMeanField_ELBO

from zoo.core.plates import MAX_PLATE_NESTING
from zoo.objectives.axes import BoundOptions, Estimator, estimator_option, register_bound, register_preset
from zoo.objectives.baselines import BaselineTraceGraph_ELBO
from zoo.objectives.enum import EnumELBO
from zoo.objectives.estimators import LeaveOneOutReinforce, Reinforce, StickingTheLanding

__all__ = ["ELBOOptions", "ELBO_ESTIMATORS"]


def pyro_elbo(cls):
    """``build(K)`` of one of Pyro's ELBO classes, vectorized over K particles."""
    def build(particles: int):
        return cls(num_particles=particles, vectorize_particles=particles > 1, max_plate_nesting=MAX_PLATE_NESTING)
    return build


@dataclass
class ELBOOptions(BoundOptions):
    """Options of the ``elbo`` bound."""

    bound: ClassVar[str] = "elbo"
    estimator: str = estimator_option("auto")


ELBO_ESTIMATORS = register_bound("elbo", options=ELBOOptions, default="auto", description=(
    "the evidence lower bound E_q[log p(x, z) - log q(z | x)], per datum"), estimators=[
    Estimator("auto", "Trace_ELBO: reparameterized where the guide can, score function (no baseline) elsewhere",
              pyro_elbo(Trace_ELBO)),
    Estimator("analytic_kl", "TraceMeanField_ELBO: analytic KL(q || p) where available (reparameterizable guides "
              "only; with the relaxed guide, the discrete KL: Jang et al.'s objective)",
              pyro_elbo(TraceMeanField_ELBO), needs_reparam=True, needs_mean_field_guide=True),
    Estimator("tracegraph", "TraceGraph_ELBO: score function with Rao-Blackwellization and the guide's --baseline "
              "(none, decaying, neural = NVIL), per datum (zoo.objectives.baselines)",
              pyro_elbo(BaselineTraceGraph_ELBO), uses_baselines=True, ddp=False),
    Estimator("reinforce", "the pure score-function gradient for every site, even reparameterizable ones, no "
              "baseline (the lecture's comparison)", lambda k: Reinforce(num_particles=k)),
    Estimator("rloo", "the score-function gradient with a leave-one-out baseline over K >= 2 samples per datum "
              "(Kool et al. 2019), for discrete latents", lambda k: LeaveOneOutReinforce(num_particles=k),
              default_particles=2, min_particles=2),
    Estimator("stl", "the sticking-the-landing path-derivative guide gradient (Roeder et al. 2017)",
              lambda k: StickingTheLanding(num_particles=k), needs_reparam=True, needs_normal_guide=True),
    Estimator("enum", "TraceEnum_ELBO with the guide's discrete sites summed exactly (small latent spaces; "
              "K is not used)", lambda k: EnumELBO(), needs_enumeration=True, warmup=False),
])

register_preset("tracemeanfield", ELBO_ESTIMATORS["analytic_kl"])
for _name in ("tracegraph", "enum", "reinforce", "rloo", "stl"):
    register_preset(_name, ELBO_ESTIMATORS[_name])
