"""The ``elbo`` bound and its gradient estimators; Pyro's own ELBO classes where they fit.

The bound, per datum, with z ~ q(z | x)::

    ELBO(x) = E_q[log p(x, z) - log q(z | x)]

Its estimators (``--estimator``), each with what it assumes:

- ``auto``: Pyro's :class:`~pyro.infer.Trace_ELBO`, reparameterized where the guide can
  sample so, the score function (no baseline) elsewhere; as :class:`~zoo.objectives.lean.LeanTrace_ELBO`,
  which gives the same numbers with less bookkeeping per step where every guide latent is reparameterized;
- ``analytic_kl``: Pyro's :class:`~pyro.infer.TraceMeanField_ELBO`, KL(q || p) in closed form
  where available (reparameterizable guides); as :class:`~zoo.objectives.lean.LeanTraceMeanField_ELBO`,
  the same numbers with less bookkeeping per step;
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
    ('LeanTraceMeanField_ELBO', 'LeanTraceMeanField_ELBO')
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import ClassVar, Optional


from zoo.core.plates import MAX_PLATE_NESTING
from zoo.core.components import OptionError, option
from zoo.objectives.axes import BoundOptions, Estimator, Particles, estimator_option, register_bound, register_preset
from zoo.objectives.arm import ARM, DisARM
from zoo.objectives.arsm import ARSM
from zoo.objectives.baselines import BaselineTraceGraph_ELBO
from zoo.objectives.enum import EnumELBO
from zoo.objectives.estimators import LeaveOneOutReinforce, Reinforce, StickingTheLanding
from zoo.objectives.relax import REBAR, RELAX
from zoo.objectives.free_bits import FreeBitsELBO
from zoo.objectives.lean import LeanTrace_ELBO, LeanTraceMeanField_ELBO

__all__ = ["ELBOOptions", "ELBO_ESTIMATORS"]


#: The estimators whose gradient the free-bits objective keeps: the reparameterized ELBO's.
FREE_BITS_ESTIMATORS = ("auto", "analytic_kl")


def pyro_elbo(cls):
    """``build(K)`` of one of Pyro's ELBO classes, vectorized over K particles; with ``free_bits``
    (lambda, nats per latent unit) the free-bits ELBO of :mod:`zoo.objectives.free_bits` instead."""
    def build(particles: int, free_bits: Optional[float] = None):
        if free_bits is not None:
            return FreeBitsELBO(free_bits, num_particles=particles)
        return cls(num_particles=particles, vectorize_particles=particles > 1, max_plate_nesting=MAX_PLATE_NESTING)
    return build


def without_free_bits(build):
    """``build(K)`` of an estimator that free bits does not apply to (``ELBOOptions.validate`` refuses it)."""
    return lambda particles, free_bits=None: build(particles)


@dataclass
class FreeBits(Particles):
    """The ``free_bits`` option of the ``elbo`` bound and of its presets.

    ``free_bits`` (lambda) turns the KL term into sum_j max(lambda, KL_j) over latent units j, each
    KL_j averaged over the minibatch (Kingma et al. 2016; :mod:`zoo.objectives.free_bits`), for the
    reparameterized estimators ``auto`` and ``analytic_kl``, whose gradient it then takes with analytic
    per-unit KLs; it composes with ``--kl-warmup`` (each KL term weighted by beta).
    """

    free_bits: Optional[float] = option(None, "free bits (Kingma et al. 2016): each latent unit's KL, averaged over "
                                        "the minibatch, counts as at least this many nats (default: none)",
                                        minimum=0.0)

    def validate(self) -> None:
        super().validate()
        row = self.chosen_estimator()
        estimator = row.name if row is not None else None
        if self.free_bits is not None and row is not None and estimator not in FREE_BITS_ESTIMATORS:
            raise OptionError("free_bits", f"applies to the reparameterized ELBO with analytic per-unit KLs (estimator "
                              f"{' or '.join(FREE_BITS_ESTIMATORS)}), not estimator {estimator!r}: drop it or "
                              f"use objective elbo", kind="objective")

    def refine(self, caps):
        if self.free_bits is None:
            return caps
        return dataclasses.replace(caps, needs_reparam=True, needs_unit_kl=True, jit=False, ddp=False)


@dataclass
class ELBOOptions(FreeBits, BoundOptions):
    """Options of the ``elbo`` bound: the estimator and ``free_bits``."""

    bound: ClassVar[str] = "elbo"
    estimator: str = estimator_option("auto")


ELBO_ESTIMATORS = register_bound("elbo", options=ELBOOptions, default="auto", description=(
    "the evidence lower bound E_q[log p(x, z) - log q(z | x)], per datum"), estimators=[
    Estimator("auto", "Trace_ELBO: reparameterized where the guide can, score function (no baseline) elsewhere",
              pyro_elbo(LeanTrace_ELBO), warmup=True, jit=True, ddp=True),
    Estimator("analytic_kl", "TraceMeanField_ELBO: analytic KL(q || p) where available (reparameterizable guides "
              "only; with the relaxed guide, the discrete KL: Jang et al.'s objective)",
              pyro_elbo(LeanTraceMeanField_ELBO), needs_reparam=True, needs_mean_field_guide=True, needs_guide_density=True,
              warmup=True, jit=True, ddp=True),
    Estimator("tracegraph", "TraceGraph_ELBO: score function with Rao-Blackwellization and the guide's --baseline "
              "(none, decaying, neural = NVIL), per datum (zoo.objectives.baselines)",
              without_free_bits(pyro_elbo(BaselineTraceGraph_ELBO)), uses_baselines=True, warmup=True, jit=True),
    Estimator.of(Reinforce, "reinforce", "the pure score-function gradient for every site, even reparameterizable "
                 "ones, no baseline (the lecture's comparison)", without_free_bits(lambda k: Reinforce(num_particles=k)),
                 needs_guide_density=True, warmup=True, jit=True, ddp=True),
    Estimator.of(LeaveOneOutReinforce, "rloo", "the score-function gradient with a leave-one-out baseline over K >= 2 "
                 "samples per datum (Kool et al. 2019), for discrete latents and also continuous ones",
                 without_free_bits(lambda k: LeaveOneOutReinforce(num_particles=k)), needs_guide_density=True,
                 warmup=True, jit=True, ddp=True),
    Estimator.of(StickingTheLanding, "stl", "the sticking-the-landing path-derivative guide gradient (Roeder et al. "
                 "2017)", without_free_bits(lambda k: StickingTheLanding(num_particles=k)), needs_normal_guide=True,
                 warmup=True, jit=True, ddp=True),
    Estimator("enum", "TraceEnum_ELBO with the guide's discrete sites summed exactly (small latent spaces; "
              "K is not used)", without_free_bits(lambda k: EnumELBO()), needs_enumeration=True, jit=True, ddp=True),
    Estimator.of(ARM, "arm", "ARM's antithetic-pair gradient for Bernoulli latents (Yin & Zhou 2019), one layer or "
                 "several (a pair per layer where the guide is structured), K pairs per datum", without_free_bits(lambda k: ARM(num_particles=k)),
                 needs_bernoulli_latents=True, several_bernoulli_layers=True, structured_bernoulli_layers=True,
                 jit=True, ddp=True),
    Estimator.of(DisARM, "disarm", "DisARM's antithetic-pair gradient for Bernoulli latents (Dong, Mnih & Tucker "
                 "2020), one layer or several (a pair per layer where the guide is structured), K pairs per datum",
                 without_free_bits(lambda k: DisARM(num_particles=k)), needs_bernoulli_latents=True,
                 several_bernoulli_layers=True, structured_bernoulli_layers=True, jit=True, ddp=True),
    Estimator.of(ARSM, "arsm", "ARSM's swapped-Dirichlet gradient for one layer of categorical latents (Yin, Yue & "
                 "Zhou 2019): 1 + C(C-1)/2 evaluations per datum, K draws", without_free_bits(lambda k: ARSM(
                     num_particles=k)), needs_categorical_latents=True, jit=True, ddp=True),
    Estimator.of(REBAR, "rebar", "REBAR's gradient for one layer of Bernoulli latents (Tucker et al. 2017): the "
                 "Concrete relaxation as a control variate, its scale and temperature trained to minimise the "
                 "gradient's variance", without_free_bits(lambda k: REBAR(num_particles=k)),
                 needs_bernoulli_latents=True),
    Estimator.of(RELAX, "relax", "RELAX's gradient for one layer of Bernoulli latents (Grathwohl et al. 2018): "
                 "REBAR's control variate plus a network, all trained to minimise the gradient's variance",
                 without_free_bits(lambda k: RELAX(num_particles=k)), needs_bernoulli_latents=True),
])

register_preset("tracemeanfield", ELBO_ESTIMATORS["analytic_kl"], options=FreeBits)
for _name in ("tracegraph", "enum", "reinforce", "rloo", "stl", "arm", "disarm", "arsm", "rebar", "relax"):
    register_preset(_name, ELBO_ESTIMATORS[_name], options=FreeBits)
