"""The importance-weighted bounds ``iwae`` and ``renyi`` and their gradient estimators.

With K samples z_k ~ q(z | x) per datum and w_k = p(x, z_k) / q(z_k | x)::

    IWAE_K(x)    = E[log (1/K) sum_k w_k]                                   (Burda et al. 2016)
    L_alpha(x)   = E[1/(1 - alpha) log (1/K) sum_k w_k^(1 - alpha)]         (Li & Turner 2016)

``iwae`` is ``renyi`` at alpha = 0; both are per datum and scaled by N/B after the
logsumexp (:mod:`zoo.objectives.renyi` says why that is not Pyro's RenyiELBO).

Estimators (``--estimator``):

- ``reparam``: our per-datum bound, differentiated through reparameterized samples;
- ``dreg`` (``iwae`` only): the doubly-reparameterized guide gradient (Tucker et al. 2019);
- ``vimco`` (``iwae`` only): VIMCO's leave-one-out score function (Mnih & Rezende 2016),
  for discrete latents;
- ``disarm`` (``iwae`` only): a DisARM antithetic pair for each of the K samples, the others held
  (:class:`~zoo.objectives.arm.MultiSampleDisARM`), for Bernoulli latents;
- ``pyro``: Pyro's :class:`~pyro.infer.RenyiELBO`, kept for comparison. **Caveat**: it scales
  log-weights by N/B before the logsumexp and pools the minibatch into one weight
  (pyro-ppl/pyro#3104), so under minibatching it is not the per-datum bound.

DReG, VIMCO and DisARM are derived for alpha = 0, so ``renyi`` offers only ``reparam`` and ``pyro``.
Presets: ``dreg`` and ``vimco`` are ``iwae`` with that estimator, ``renyi_pyro`` is ``renyi``
with ``pyro``.

Example::

    >>> from zoo.objectives import build_objective
    >>> build_objective("iwae", 3, estimator="dreg").num_particles, type(build_objective("dreg")).__name__
    (3, 'DReGIWAE')
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from pyro.infer import RenyiELBO

from zoo.core.errors import ZooError
from zoo.core.plates import MAX_PLATE_NESTING
from zoo.core.components import option
from zoo.objectives.arm import MultiSampleDisARM
from zoo.objectives.axes import BoundOptions, Estimator, Particles, estimator_option, register_bound, register_preset
from zoo.objectives.estimators import VIMCO, DReGIWAE
from zoo.objectives.renyi import IWAEBound, RenyiBound

__all__ = ["IWAEOptions", "RenyiOrder", "RenyiOptions", "IWAE_ESTIMATORS", "RENYI_ESTIMATORS"]


def pyro_renyi(particles: int, alpha: float = 0.0) -> RenyiELBO:
    if alpha == 1.0:
        raise ZooError("renyi_pyro needs --alpha != 1 (alpha = 1 is the ELBO: use 'elbo')")
    return RenyiELBO(alpha=alpha, num_particles=particles, vectorize_particles=True,
                     max_plate_nesting=MAX_PLATE_NESTING)


PYRO_CAVEAT = ("Pyro's RenyiELBO. Caveat: scales log-weights by N/B before the logsumexp and pools the minibatch "
               "into one weight (pyro-ppl/pyro#3104), so under minibatching it is not the per-datum bound")


@dataclass
class IWAEOptions(BoundOptions):
    """Options of the ``iwae`` bound."""

    bound: ClassVar[str] = "iwae"
    estimator: str = estimator_option("reparam")


@dataclass
class RenyiOrder(Particles):
    """Options of the ``renyi`` bound but its estimator (the ``renyi_pyro`` preset's)."""

    test_options: ClassVar[dict] = {"alpha": 0.5}          # alpha = 0 is the iwae bound

    alpha: float = option(0.0, "Renyi order for renyi / renyi_pyro: 0 is IWAE, 1 the ELBO (default 0)", minimum=0.0)


@dataclass
class RenyiOptions(RenyiOrder, BoundOptions):
    """Options of the ``renyi`` bound."""

    bound: ClassVar[str] = "renyi"
    estimator: str = estimator_option("reparam")


IWAE_ESTIMATORS = register_bound("iwae", options=IWAEOptions, default="reparam", description=(
    "the importance-weighted bound E[log (1/K) sum_k w_k] (Burda et al. 2016), per datum, scaled by N/B after "
    "the logsumexp"), estimators=[
    Estimator.of(IWAEBound, "reparam", "our per-datum IWAE bound, reparameterized gradient",
                 lambda k: IWAEBound(num_particles=k), warmup=True, jit=True, ddp=True),
    Estimator.of(DReGIWAE, "dreg", "the doubly-reparameterized guide gradient (Tucker et al. 2019)",
                 lambda k: DReGIWAE(num_particles=k), needs_normal_guide=True, separate_surrogates=True, warmup=True),
    Estimator.of(VIMCO, "vimco", "VIMCO's leave-one-out score-function gradient (Mnih & Rezende 2016), for discrete "
                 "latents and also continuous ones; K >= 2", lambda k: VIMCO(num_particles=k), needs_guide_density=True,
                 warmup=True, jit=True, ddp=True),
    Estimator.of(MultiSampleDisARM, "disarm", "DisARM's antithetic pair for each of the K samples, the others held "
                 "(Dong, Mnih & Tucker 2020's local multi-sample DisARM): Bernoulli latents, one layer or several "
                 "drawn from x alone, 2K evaluations", lambda k: MultiSampleDisARM(num_particles=k),
                 needs_bernoulli_latents=True, several_bernoulli_layers=True, jit=True, ddp=True),
    Estimator("pyro", PYRO_CAVEAT + " (alpha = 0)", lambda k: pyro_renyi(k, 0.0), default_particles=5,
              needs_reparam=True, warmup=True, ddp=True),
])

RENYI_ESTIMATORS = register_bound("renyi", options=RenyiOptions, default="reparam", description=(
    "the per-datum Renyi bound of order --alpha (Li & Turner 2016), scaled by N/B after the logsumexp"), estimators=[
    Estimator.of(RenyiBound, "reparam", "our per-datum Renyi bound, reparameterized gradient",
                 lambda k, alpha: RenyiBound(alpha=alpha, num_particles=k), warmup=True, jit=True, ddp=True),
    Estimator("pyro", PYRO_CAVEAT, pyro_renyi, default_particles=5, needs_reparam=True, warmup=True, ddp=True),
])

register_preset("dreg", IWAE_ESTIMATORS["dreg"])
register_preset("vimco", IWAE_ESTIMATORS["vimco"])
register_preset("renyi_pyro", RENYI_ESTIMATORS["pyro"], options=RenyiOrder)
