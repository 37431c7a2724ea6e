"""Reweighted wake-sleep: per-datum (ours) and Pyro's, kept to show its caveat; the ``rws`` objective.

Wake-sleep is not one bound with a gradient estimator: the model climbs the IWAE bound, the
guide follows its own wake and sleep updates (:class:`ReweightedWakeSleep`). It is registered
as the bound ``rws`` whose two "estimators" are the two implementations, ``per_datum`` (ours,
the default) and ``pyro`` (the preset ``rws_pyro``), so that it takes the same options
(``particles``, ``insomnia``) and declares its capabilities like every other objective.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, Optional

import pyro.poutine as poutine
import torch
from pyro.infer import ReweightedWakeSleep as PyroRWS

from zoo.core.errors import ZooError
from zoo.core.plates import MAX_PLATE_NESTING
from zoo.core.weights import dreamt_data, is_deterministic, is_factor
from zoo.core.components import OptionError, option
from zoo.objectives.axes import BoundOptions, Estimator, Particles, estimator_option, register_bound, register_preset
from zoo.objectives.base import PerDatumObjective, assumption_broken

__all__ = ["ReweightedWakeSleep", "PyroReweightedWakeSleep", "Insomnia", "RWSOptions", "RWS_ESTIMATORS"]


class ReweightedWakeSleep(PerDatumObjective):
    """Reweighted wake-sleep (Bornschein & Bengio 2015) with per-datum importance weights.

    With K samples z_k ~ q(z | x_b) per datum (detached: no path derivatives) and
    w_kb = p(x_b, z_kb) / q(z_kb | x_b), normalized to w~_kb over k::

        wake-theta:  maximize (N/B) sum_b log (1/K) sum_k w_kb            (model parameters)
        wake-phi:    maximize (N/B) sum_b sum_k w~_kb log q(z_kb | x_b)   (guide parameters)
        sleep-phi:   maximize (N/B) sum_b log q(z'_b | x'_b),  (x', z') ~ p  (guide parameters)

    The guide minimizes ``insomnia * wake-phi + (1 - insomnia) * sleep-phi``.
    ``num_particles=1, insomnia=0`` is the wake-sleep algorithm of the Helmholtz
    machine (Hinton et al. 1995). The reported loss is the wake-theta term, i.e. minus
    (N/B) x the IWAE bound.

    Why not Pyro's :class:`~pyro.infer.ReweightedWakeSleep` (kept as ``rws_pyro``): it
    sums each particle's N/B-scaled log-probabilities over the whole minibatch into one
    weight, so under minibatching its weights are not per-datum (as with RenyiELBO,
    pyro-ppl/pyro#3104).

    Assumptions: local latents only; the sleep phase needs an amortized guide (a
    per-datum guide has no row for a dreamt x').
    """

    alpha = 0.0                 # the reported loss: minus (N/B) x the IWAE bound
    default_particles = 5
    detach_latents = True

    def __init__(self, num_particles: Optional[int] = None, insomnia: float = 1.0,
                 max_plate_nesting: int = MAX_PLATE_NESTING):
        if not 0.0 <= insomnia <= 1.0:
            raise ZooError(f"--insomnia must be in [0, 1], got {insomnia}")
        super().__init__(num_particles=num_particles, max_plate_nesting=max_plate_nesting)
        self.insomnia = float(insomnia)

    def _losses(self, model, guide, *args, **kwargs):
        lw = self.log_weights(model, guide, *args, **kwargs)
        if lw.global_values:
            raise assumption_broken("rws", f"local latents only, not the global {', '.join(lw.global_values)}")
        log_w = lw.log_likelihood + lw.log_prior - lw.log_q.detach()
        wake_theta = -lw.scale * (torch.logsumexp(log_w, 0) - math.log(self.num_particles)).sum()
        phi = 0.0
        if self.insomnia > 0:
            normalized = torch.softmax(log_w, 0).detach()
            phi = phi - self.insomnia * lw.scale * (normalized * lw.log_q).sum()
        if self.insomnia < 1:
            phi = phi + (1 - self.insomnia) * self._sleep_phi(model, guide, args[0].shape[0], lw.scale)
        return wake_theta, phi

    @staticmethod
    def _sleep_phi(model, guide, batch_size: int, scale: float):
        if not guide.amortized:
            raise assumption_broken("rws's sleep phase", "an amortized guide")
        # The dream (x', z') is data for the guide: detached, so no gradient reaches the model through
        # it (a reparameterized x' would carry one).
        refusal = getattr(getattr(model, "__self__", model), "cannot_generate", None)
        if refusal:
            raise assumption_broken("rws's sleep phase", "a model that generates every column of x")
        dream = poutine.trace(model).get_trace(None, N=batch_size)
        x_dream, observations = dreamt_data(dream)
        latents = {n: s["value"].detach() for n, s in dream.nodes.items()
                   if s["type"] == "sample" and n != "data" and n not in observations
                   and not is_deterministic(s) and not is_factor(s)}
        trace = poutine.trace(poutine.condition(guide, data=latents)).get_trace(x_dream.detach())
        log_q = sum(trace.nodes[n]["fn"].log_prob(v) for n, v in latents.items())
        return -scale * log_q.sum()

    def value_and_surrogate(self, model, guide, *args, **kwargs):
        """(the wake-theta loss, detached; the sum of the model's and the guide's losses).

        Not :meth:`~zoo.objectives.base.PerDatumObjective.per_datum`: the sleep phase scores dreamt
        data, which are no datum of the minibatch."""
        wake_theta, phi = self._losses(model, guide, *args, **kwargs)
        return wake_theta.detach(), wake_theta + phi


class PyroReweightedWakeSleep(PyroRWS):
    """Pyro's ReweightedWakeSleep, returning one number like every other objective.

    Pyro's ``loss``/``loss_and_grads`` return (wake-theta loss, guide loss); the zoo's
    training loop and tables use the wake-theta loss, minus the (minibatch-pooled) IWAE
    bound. See :class:`ReweightedWakeSleep` for why this is not the per-datum estimator.
    """

    def loss(self, model, guide, *args, **kwargs):
        return super().loss(model, guide, *args, **kwargs)[0]

    def loss_and_grads(self, model, guide, *args, **kwargs):
        return super().loss_and_grads(model, guide, *args, **kwargs)[0]


@dataclass
class Insomnia(Particles):
    """Options of the ``rws`` objective but its estimator (the ``rws_pyro`` preset's)."""

    test_options: ClassVar[dict] = {"insomnia": 0.5}       # insomnia = 1 has no sleep phase

    insomnia: float = option(1.0, "rws: weight of wake-phi against sleep-phi for the guide (default 1)")

    def validate(self) -> None:
        super().validate()
        if not 0.0 <= self.insomnia <= 1.0:
            raise OptionError("insomnia", f"must be in [0, 1], got {self.insomnia}")


@dataclass
class RWSOptions(Insomnia, BoundOptions):
    """Options of the ``rws`` objective."""

    bound: ClassVar[str] = "rws"
    estimator: str = estimator_option("per_datum")


class _PyroRWS(PyroReweightedWakeSleep):
    """Pyro's :class:`~pyro.infer.ReweightedWakeSleep`, with the guide called as Pyro's sleep phase calls it.

    The sleep phase draws ``x`` from the unconditioned model and calls the guide with
    ``observations={"x": x}`` added to its arguments; zoo guides take ``(x, idx, N)``, so the guide is
    wrapped to encode the dreamed ``x`` when ``observations`` is given. Nothing else is changed.
    """

    def _loss(self, model, guide, args, kwargs):
        if self.insomnia < 1 and not guide.amortized:
            raise assumption_broken("rws_pyro's sleep phase", "an amortized guide")

        def sleep_aware_guide(*a, observations=None, **kw):
            if observations is not None:
                a = (observations["x"],) + tuple(a[1:])
            return guide(*a, **kw)

        return super()._loss(model, sleep_aware_guide, args, kwargs)


def _pyro_rws(particles: int, insomnia: float) -> PyroReweightedWakeSleep:
    return _PyroRWS(num_particles=particles, insomnia=insomnia, vectorize_particles=True,
                    max_plate_nesting=MAX_PLATE_NESTING)


RWS_ESTIMATORS = register_bound("rws", options=RWSOptions, default="per_datum", description=(
    "reweighted wake-sleep: the IWAE bound for the model; wake-phi and sleep-phi, mixed by --insomnia, for the "
    "guide; --particles 1 --insomnia 0 is wake-sleep"), estimators=[
    Estimator.of(ReweightedWakeSleep, "per_datum", "our per-datum reweighted wake-sleep",
                 lambda k, insomnia: ReweightedWakeSleep(num_particles=k, insomnia=insomnia),
                 local_latents_only=True, needs_guide_density=True, jit=True),
    Estimator("pyro", "Pyro's ReweightedWakeSleep. Caveat: pools the N/B-scaled log-weights of the minibatch into "
              "one weight per particle, so under minibatching it is not per-datum", _pyro_rws, default_particles=5,
              min_particles=2, needs_guide_density=True),
])

register_preset("rws_pyro", RWS_ESTIMATORS["pyro"], options=Insomnia)
