"""Training objectives: Pyro's ELBOs where they fit, and our per-datum bounds and estimators.

Every objective is a :class:`pyro.infer.ELBO` (``loss``, ``loss_and_grads``), built by
name from :data:`OBJECTIVES` with a number of particles K, vectorized over a particle
plate left of the data plate. Which file holds what:

- :mod:`zoo.objectives.renyi`: the per-datum Renyi / IWAE bounds (why not Pyro's RenyiELBO);
- :mod:`zoo.objectives.estimators`: gradient estimators of a per-datum bound (score function,
  leave-one-out, VIMCO, sticking the landing, DReG);
- :mod:`zoo.objectives.baselines`: TraceGraph_ELBO with per-datum baselines (NVIL);
- :mod:`zoo.objectives.enum`: exact enumeration of discrete guide sites;
- :mod:`zoo.objectives.wake_sleep`: reweighted wake-sleep.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

from pyro.infer import ELBO, RenyiELBO, Trace_ELBO, TraceMeanField_ELBO

from zoo.core.errors import ZooError, unknown_name
from zoo.core.plates import MAX_PLATE_NESTING
from zoo.objectives.baselines import BaselineTraceGraph_ELBO
from zoo.objectives.enum import EnumELBO
from zoo.objectives.estimators import VIMCO, DReGIWAE, LeaveOneOutReinforce, Reinforce, StickingTheLanding
from zoo.objectives.renyi import IWAEBound, RenyiBound
from zoo.objectives.wake_sleep import PyroReweightedWakeSleep, ReweightedWakeSleep

__all__ = ["RenyiBound", "IWAEBound", "EnumELBO", "ReweightedWakeSleep", "ObjectiveSpec", "OBJECTIVES",
           "build_objective"]


def _pyro_elbo(cls):
    def build(particles: int, alpha: float):
        return cls(num_particles=particles, vectorize_particles=particles > 1,
                   max_plate_nesting=MAX_PLATE_NESTING)
    return build


@dataclass(frozen=True)
class ObjectiveSpec:
    """A registry entry: how to build an objective, and what it requires of a guide."""

    name: str
    description: str
    build: Callable[[int, float], ELBO]
    default_particles: int = 1
    needs_reparam: bool = False
    uses_alpha: bool = False
    needs_enumeration: bool = False
    uses_baselines: bool = False
    uses_insomnia: bool = False
    needs_normal_guide: bool = False      # path derivatives: log q at detached parameters
    needs_own_guide_params: bool = False
    warmup: bool = True                   # --kl-warmup is defined (no: the latents are summed or slept)


OBJECTIVES = {spec.name: spec for spec in [
    ObjectiveSpec("elbo", "Trace_ELBO: Monte Carlo ELBO (score function for non-reparameterized sites)",
                  _pyro_elbo(Trace_ELBO)),
    ObjectiveSpec("tracemeanfield", "TraceMeanField_ELBO: analytic KL(q || p) where available "
                  "(reparameterizable guides only; with the relaxed guide, the discrete KL: Jang et al.'s objective)",
                  _pyro_elbo(TraceMeanField_ELBO), needs_reparam=True),
    ObjectiveSpec("tracegraph", "TraceGraph_ELBO: score function with Rao-Blackwellization and the guide's "
                  "--baseline (none, decaying, neural = NVIL), per datum (zoo.objectives.baselines)",
                  _pyro_elbo(BaselineTraceGraph_ELBO), uses_baselines=True),
    ObjectiveSpec("enum", "TraceEnum_ELBO with the guide's discrete sites summed exactly (small latent spaces)",
                  lambda k, a: EnumELBO(), needs_enumeration=True, warmup=False),
    ObjectiveSpec("rws", "per-datum reweighted wake-sleep (wake-theta, wake-phi, sleep-phi by --insomnia); "
                  "--particles 1 --insomnia 0 is wake-sleep", None, default_particles=5, uses_insomnia=True,
                  warmup=False),
    ObjectiveSpec("rws_pyro", "Pyro's ReweightedWakeSleep. Caveat: pools the N/B-scaled log-weights of the "
                  "minibatch into one weight per particle, so under minibatching it is not per-datum",
                  None, default_particles=5, uses_insomnia=True, warmup=False),
    ObjectiveSpec("reinforce", "ELBO with the pure score-function gradient for every site, even reparameterizable "
                  "ones, no baseline (the lecture's comparison)", lambda k, a: Reinforce(num_particles=k)),
    ObjectiveSpec("rloo", "ELBO with the score-function gradient and a leave-one-out baseline over K >= 2 samples "
                  "per datum (Kool et al. 2019), for discrete latents", lambda k, a: LeaveOneOutReinforce(num_particles=k),
                  default_particles=2),
    ObjectiveSpec("stl", "ELBO with the sticking-the-landing path-derivative guide gradient (Roeder et al. 2017)",
                  lambda k, a: StickingTheLanding(num_particles=k), needs_reparam=True, needs_normal_guide=True),
    ObjectiveSpec("dreg", "IWAE bound with the doubly-reparameterized guide gradient (Tucker et al. 2019)",
                  lambda k, a: DReGIWAE(num_particles=k), default_particles=5, needs_reparam=True,
                  needs_normal_guide=True, needs_own_guide_params=True),
    ObjectiveSpec("vimco", "IWAE bound with VIMCO's leave-one-out score-function gradient (Mnih & Rezende 2016), "
                  "for discrete latents; K >= 2", lambda k, a: VIMCO(num_particles=k), default_particles=5),
    ObjectiveSpec("renyi", "per-datum Renyi bound of order --alpha, scaled by N/B after the logsumexp",
                  lambda k, a: RenyiBound(alpha=a, num_particles=k), default_particles=5,
                  needs_reparam=True, uses_alpha=True),
    ObjectiveSpec("iwae", "per-datum IWAE bound (Burda et al. 2016), the Renyi bound at alpha = 0",
                  lambda k, a: IWAEBound(num_particles=k), default_particles=5, needs_reparam=True),
    ObjectiveSpec("renyi_pyro", "Pyro's RenyiELBO. Caveat: scales log-weights by N/B before the "
                  "logsumexp and pools the minibatch into one weight (pyro-ppl/pyro#3104), so under "
                  "minibatching it is not the per-datum bound",
                  lambda k, a: RenyiELBO(alpha=a, num_particles=k, vectorize_particles=True,
                                         max_plate_nesting=MAX_PLATE_NESTING),
                  default_particles=5, needs_reparam=True, uses_alpha=True),
]}


def build_objective(name: str, particles: Optional[int] = None, alpha: float = 0.0,
                    insomnia: float = 1.0, jit: bool = False) -> ELBO:
    """Build the named objective with K = ``particles`` (default: the objective's own).

    ``jit=True`` wraps it in :class:`zoo.training.jit.JitObjective`: the training step is traced once and
    replayed (the same estimator with less Python per step), for the objectives in
    :data:`zoo.training.jit.JIT_OBJECTIVES`.
    """
    from zoo.training.jit import JIT_OBJECTIVES, JitObjective
    if name not in OBJECTIVES:
        raise unknown_name("objective", name, OBJECTIVES)
    if jit and name not in JIT_OBJECTIVES:
        raise ZooError(f"--jit traces {', '.join(JIT_OBJECTIVES)}; {name!r} is not one of them (dreg differentiates "
                       f"separate model and guide surrogates; rws_pyro and renyi_pyro are Pyro's own classes, kept to "
                       f"show their caveat): drop --jit")
    if jit:
        return JitObjective(build_objective(name, particles, alpha, insomnia))
    spec = OBJECTIVES[name]
    if spec.uses_alpha and name == "renyi_pyro" and alpha == 1.0:
        raise ZooError("renyi_pyro needs --alpha != 1 (alpha = 1 is the ELBO: use 'elbo')")
    k = spec.default_particles if particles is None else int(particles)
    if k < 1:
        raise ZooError(f"--particles must be a positive integer, got {k}")
    if spec.uses_insomnia:
        if not 0.0 <= insomnia <= 1.0:
            raise ZooError(f"--insomnia must be in [0, 1], got {insomnia}")
        if name == "rws":
            return ReweightedWakeSleep(num_particles=k, insomnia=insomnia)
        return PyroReweightedWakeSleep(num_particles=k, insomnia=insomnia, vectorize_particles=True,
                                       max_plate_nesting=MAX_PLATE_NESTING)
    return spec.build(k, float(alpha))


# --- the registry entries (interim: the bound x estimator split replaces these) --------------------
from dataclasses import dataclass as _dataclass  # noqa: E402
from typing import Optional as _Optional  # noqa: E402

from zoo.core.registry import OBJECTIVES as _REGISTRY, Options as _Options, option as _option  # noqa: E402


@_dataclass
class ObjectiveOptions(_Options):
    particles: _Optional[int] = _option(None, "K particles per datum (default: 1; 5 for iwae/renyi)", minimum=1)
    alpha: float = _option(0.0, "Renyi order for renyi / renyi_pyro (default 0)")
    insomnia: float = _option(1.0, "rws: weight of wake-phi against sleep-phi for the guide (default 1)")

    def validate(self):
        if not 0.0 <= self.insomnia <= 1.0:
            from zoo.core.registry import OptionError
            raise OptionError("insomnia", f"must be in [0, 1], got {self.insomnia}")


@_dataclass(frozen=True)
class ObjectiveCapabilities:
    bound: str
    estimator: str
    default_particles: int
    min_particles: int
    needs_reparam: bool
    needs_enumeration: bool
    uses_baselines: bool
    needs_normal_guide: bool
    separate_surrogates: bool
    warmup: bool
    jit: bool
    ddp: bool
    uses_alpha: bool
    uses_insomnia: bool


def _register_interim():
    from zoo.training.distributed import DDP_OBJECTIVES
    from zoo.training.jit import JIT_OBJECTIVES
    for spec in OBJECTIVES.values():
        def factory(particles=None, alpha=0.0, insomnia=1.0, _name=spec.name):
            return build_objective(_name, particles, alpha, insomnia)
        _REGISTRY.register(spec.name, options=ObjectiveOptions, description=spec.description,
                           caps=ObjectiveCapabilities(spec.name, spec.name, spec.default_particles,
                                                      2 if spec.name in ("rloo", "vimco") else 1, spec.needs_reparam,
                                                      spec.needs_enumeration, spec.uses_baselines,
                                                      spec.needs_normal_guide, spec.needs_own_guide_params,
                                                      spec.warmup, spec.name in JIT_OBJECTIVES,
                                                      spec.name in DDP_OBJECTIVES, spec.uses_alpha,
                                                      spec.uses_insomnia))(factory)


def objective_capabilities(name: str, estimator: _Optional[str] = None) -> ObjectiveCapabilities:
    return _REGISTRY[name].capability("caps")


_register_interim()
