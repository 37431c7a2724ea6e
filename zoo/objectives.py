"""Training objectives: Pyro's ELBOs, and our per-datum Renyi / IWAE bounds.

Every objective is a :class:`pyro.infer.ELBO` (``loss``, ``loss_and_grads``), built by
name from the registry with a number of particles K, vectorized over a particle
plate left of the data plate.

Why we write our own Renyi/IWAE class
-------------------------------------
The per-datum bound of Burda et al. (2016) and Li & Turner (2016) is, for minibatch
indices b of N data::

    L_alpha(x_b) = 1/(1 - alpha) * log (1/K) sum_k w_{k,b}^(1 - alpha),
    w_{k,b} = p(x_b, z_kb) / q(z_kb | x_b),          z_kb ~ q(z | x_b)
    objective = (N / B) * sum_b L_alpha(x_b)

with alpha = 0 the IWAE bound and alpha -> 1 the ELBO. Pyro's
:class:`~pyro.infer.RenyiELBO` differs in two ways (pyro-ppl/pyro#3104): it
multiplies each log-weight by the subsample scale N/B *before* the logsumexp, and
it sums the log-weights of the whole minibatch into one weight per particle.
Under minibatching that is a different, looser quantity, not (N/B) x the per-datum
bound. :class:`RenyiBound` forms per-datum weights (:mod:`zoo.importance`), takes
the logsumexp per datum, and only then scales by N/B. Pyro's class stays available
as ``renyi_pyro`` so the difference can be seen.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional

import torch
import pyro.poutine as poutine
from pyro.poutine.messenger import Messenger
from pyro.infer import (ELBO, RenyiELBO, ReweightedWakeSleep as PyroRWS, Trace_ELBO, TraceEnum_ELBO,
                        TraceMeanField_ELBO, config_enumerate)

from zoo.baselines import BaselineTraceGraph_ELBO
from zoo.errors import ZooError
from zoo.estimators import VIMCO, DReGIWAE, LeaveOneOutReinforce, Reinforce, StickingTheLanding
from zoo.importance import per_datum_log_weights, per_datum_renyi_bound
from zoo.models.base import MAX_PLATE_NESTING

__all__ = ["RenyiBound", "IWAEBound", "EnumELBO", "ReweightedWakeSleep", "ObjectiveSpec", "OBJECTIVES",
           "build_objective", "per_datum_renyi_bound", "KLWarmup", "kl_warmup_weight"]


class KLWarmup(Messenger):
    """KL annealing, or "warm-up" (Bowman et al. 2016; Sønderby et al. 2016, section 2.3).

    Inside this handler every *latent* sample site, of the model and of the guide, has its
    log-density weighted by ``beta``; observed sites are left alone. Any objective then trains
    the tempered bound::

        E_q[ log p(x | z) + beta * (log p(z) - log q(z | x)) ]  =  E_q[log p(x | z)] - beta * KL(q || p)

    and each importance log-weight becomes log p(x | z) + beta * (log p(z) - log q(z | x)).
    Early in training, with beta near 0, the guide is not pulled to the prior before the decoder
    has learned to use z, which keeps more latent units active; at beta = 1 it is the ELBO again.

    It multiplies each site's ``scale``, the factor Pyro's ELBOs already apply (the plate's N/B):
    Trace_ELBO, TraceGraph_ELBO and TraceMeanField_ELBO's analytic KL honour it directly, and
    :func:`zoo.importance.per_datum_log_weights` reads a latent site's scale relative to the
    observation's, so the per-datum bounds (iwae, renyi, dreg, stl, vimco, reinforce) are
    tempered the same way. Training wraps each step in it (``fit(kl_warmup=EPOCHS)``, ``--kl-warmup``);
    validation and the evaluation harness never run under it, so they report the true bound.
    """

    def __init__(self, beta: float):
        super().__init__()
        self.beta = float(beta)

    def _process_message(self, msg):
        if msg["type"] == "sample" and not msg["is_observed"]:
            msg["scale"] = msg["scale"] * self.beta


def kl_warmup_weight(global_step: int, warmup_steps: int) -> float:
    """beta of step ``global_step`` (from 0): linear from 1/warmup_steps to 1, then 1."""
    return min(1.0, (global_step + 1) / warmup_steps)


class RenyiBound(ELBO):
    """The per-datum Renyi variational bound, scaled by N/B after the logsumexp.

    Computes ``-(N/B) * sum_b L_alpha(x_b)`` (see the module docstring) and its
    reparameterized gradient.

    Assumptions:
        - every latent lies inside the model's ``"data"`` plate (local latents);
        - the guide is fully reparameterizable. A score-function guide raises a
          :class:`~zoo.errors.ZooError`; its gradient would be silently wrong.

    Arguments:
        alpha: the Renyi order; 0 gives IWAE, 1 gives the ELBO. Must be >= 0.
        num_particles: K, importance samples per datum.
    """

    def __init__(self, alpha: float = 0.0, num_particles: int = 2,
                 max_plate_nesting: int = MAX_PLATE_NESTING):
        if alpha < 0:
            raise ZooError(f"the Renyi order alpha must be >= 0, got {alpha}")
        super().__init__(num_particles=num_particles, max_plate_nesting=max_plate_nesting,
                         vectorize_particles=True)
        self.alpha = float(alpha)

    def per_datum_bound(self, model, guide, *args, **kwargs):
        """Return (``[B]`` per-datum bounds, N/B)."""
        lw = per_datum_log_weights(model, guide, *args, num_particles=self.num_particles, **kwargs)
        if not lw.reparameterized:
            raise ZooError(f"{type(self).__name__} needs a reparameterizable guide; "
                           f"for discrete latents use tracegraph")
        return per_datum_renyi_bound(lw.log_w, self.alpha), lw.scale

    def _get_trace(self, model, guide, args, kwargs):
        raise NotImplementedError("RenyiBound forms per-datum weights in zoo.importance, not per trace")

    def differentiable_loss(self, model, guide, *args, **kwargs):
        bound, scale = self.per_datum_bound(model, guide, *args, **kwargs)
        return -scale * bound.sum()

    def value_and_surrogate(self, model, guide, *args, **kwargs):
        """(the loss as a detached tensor, the loss): the bound is its own surrogate."""
        loss = self.differentiable_loss(model, guide, *args, **kwargs)
        return loss.detach(), loss

    def loss(self, model, guide, *args, **kwargs):
        with torch.no_grad():
            return self.differentiable_loss(model, guide, *args, **kwargs).item()

    def loss_and_grads(self, model, guide, *args, **kwargs):
        loss = self.differentiable_loss(model, guide, *args, **kwargs)
        loss.backward()
        return loss.item()


class IWAEBound(RenyiBound):
    """The per-datum importance-weighted bound of Burda et al. (2016): RenyiBound at alpha = 0.

    Reference: Y. Burda, R. Grosse and R. Salakhutdinov, "Importance Weighted
    Autoencoders", ICLR 2016, https://arxiv.org/abs/1509.00519.
    """

    def __init__(self, num_particles: int = 5, max_plate_nesting: int = MAX_PLATE_NESTING):
        super().__init__(alpha=0.0, num_particles=num_particles, max_plate_nesting=max_plate_nesting)


class EnumELBO(TraceEnum_ELBO):
    """The ELBO with the expectation over discrete guide sites summed exactly.

    Computes sum_z q(z | x) [log p(x, z) - log q(z | x)] per datum, and its exact
    gradient, by Pyro's TraceEnum_ELBO with the guide's sites enumerated in parallel
    (``config_enumerate(guide, "parallel")``). The discrete sites are
    :class:`~zoo.distributions.JointDiscrete`, whose support lists all joint
    configurations of a latent vector.

    Assumptions: every guide site is discrete and the joint latent space has at most
    :data:`~zoo.distributions.ENUMERATION_LIMIT` configurations; otherwise the registry
    refuses the combination (and enumeration itself raises).
    """

    def __init__(self, max_plate_nesting: int = MAX_PLATE_NESTING):
        super().__init__(max_plate_nesting=max_plate_nesting)

    def loss(self, model, guide, *args, **kwargs):
        return super().loss(model, config_enumerate(guide, "parallel"), *args, **kwargs)

    def differentiable_loss(self, model, guide, *args, **kwargs):
        return super().differentiable_loss(model, config_enumerate(guide, "parallel"), *args, **kwargs)

    def loss_and_grads(self, model, guide, *args, **kwargs):
        return super().loss_and_grads(model, config_enumerate(guide, "parallel"), *args, **kwargs)


class ReweightedWakeSleep(ELBO):
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

    def __init__(self, num_particles: int = 5, insomnia: float = 1.0,
                 max_plate_nesting: int = MAX_PLATE_NESTING):
        if not 0.0 <= insomnia <= 1.0:
            raise ZooError(f"--insomnia must be in [0, 1], got {insomnia}")
        super().__init__(num_particles=num_particles, max_plate_nesting=max_plate_nesting,
                         vectorize_particles=True)
        self.insomnia = float(insomnia)

    def _get_trace(self, model, guide, args, kwargs):
        raise NotImplementedError("ReweightedWakeSleep forms per-datum weights in zoo.importance")

    def _losses(self, model, guide, *args, **kwargs):
        lw = per_datum_log_weights(model, guide, *args, num_particles=self.num_particles,
                                   detach_latents=True, **kwargs)
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
        if not getattr(guide, "amortized", True):
            raise ZooError("the sleep phase needs an amortized guide; use --insomnia 1 with per-datum guides")
        # The dream (x', z') is data for the guide: detached, so no gradient reaches the model through
        # it (a reparameterized x' would carry one). detach, not torch.no_grad, which a --jit trace ignores.
        dream = poutine.trace(model).get_trace(None, N=batch_size)
        latents = {n: s["value"].detach() for n, s in dream.nodes.items()   # "x" is the contract's observation
                   if s["type"] == "sample" and n not in ("data", "x")}
        trace = poutine.trace(poutine.condition(guide, data=latents)).get_trace(dream.nodes["x"]["value"].detach())
        log_q = sum(trace.nodes[n]["fn"].log_prob(v) for n, v in latents.items())
        return -scale * log_q.sum()

    def differentiable_loss(self, model, guide, *args, **kwargs):
        wake_theta, phi = self._losses(model, guide, *args, **kwargs)
        return wake_theta + phi

    def loss(self, model, guide, *args, **kwargs):
        with torch.no_grad():
            lw = per_datum_log_weights(model, guide, *args, num_particles=self.num_particles, **kwargs)
            return -lw.scale * per_datum_renyi_bound(lw.log_w, 0.0).sum().item()

    def value_and_surrogate(self, model, guide, *args, **kwargs):
        """(the wake-theta loss, detached; the sum of the model's and the guide's losses)."""
        wake_theta, phi = self._losses(model, guide, *args, **kwargs)
        return wake_theta.detach(), wake_theta + phi

    def loss_and_grads(self, model, guide, *args, **kwargs):
        value, surrogate = self.value_and_surrogate(model, guide, *args, **kwargs)
        surrogate.backward()
        return value.item()


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
                  "--baseline (none, decaying, neural = NVIL), per datum (zoo.baselines)",
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

    ``jit=True`` wraps it in :class:`zoo.jit.JitObjective`: the training step is traced once and
    replayed (the same estimator with less Python per step), for the objectives in
    :data:`zoo.jit.JIT_OBJECTIVES`.
    """
    from zoo.errors import unknown_name
    from zoo.jit import JIT_OBJECTIVES, JitObjective
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
