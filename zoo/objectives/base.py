"""The one base class of the zoo's per-datum objectives: log-weights per particle and datum, then N/B.

For a minibatch x_1..x_B of N data and K particles z_kb ~ q(z | x_b) per datum
(:mod:`zoo.core.weights`)::

    log w[k, b] = log p(x_b, z_kb) - log q(z_kb | x_b)                    [K, B]
    bound_b     = reduce_k log w[:, b]        (mean_k: ELBO; log mean_k exp: IWAE; ...)   [B]
    loss        = -(N / B) * sum_b bound_b  -  [log p(theta) - log q(theta)]

The bracket is there for a model with global latents theta (outside the data plate): theta is
drawn once per step from the global guide and shared by the K particles and the B data, the
per-datum bounds are those of x_b given theta, and the global term is counted once per data set,
not N/B times (:mod:`zoo.core.weights`). So ``loss`` estimates minus a bound on log p(X) (the ELBO
over theta of the data's per-datum bounds) whose global KL does not grow with N/B.

The subsample scale N/B multiplies the per-datum bounds *after* the reduction over
particles, never the log-weights before it (which is what Pyro's RenyiELBO and
ReweightedWakeSleep do, pyro-ppl/pyro#3104). A subclass says which bound it reports
(:meth:`PerDatumObjective.bound`), how its particles are drawn (``detach_latents`` for
score-function estimators, ``path_derivative`` for estimators that evaluate log q at
detached parameters) and which per-datum surrogate it differentiates
(:meth:`PerDatumObjective.per_datum`); the sampling, the checks, the scaling and Pyro's
``loss`` / ``loss_and_grads`` interface are here, once.
"""
from __future__ import annotations

from typing import Tuple

import pyro.distributions as dist
import torch
from pyro.infer import ELBO

from zoo.core.errors import ZooError
from zoo.core.plates import MAX_PLATE_NESTING
from zoo.core.weights import LogWeights, per_datum_log_weights, per_datum_renyi_bound

__all__ = ["PerDatumObjective", "detach_parameters", "for_model", "assumption_broken"]


def assumption_broken(estimator: str, assumption: str) -> ZooError:
    """The error of an estimator run on a guide or model that breaks what it assumes (Pyro's own estimators check
    theirs the same way, on the trace): it says which assumption failed, and leaves the rule and what fits instead
    to :mod:`zoo.rules`, which ``pyro-zoo train`` and ``zoo.fit`` ask before the first step, so that each rule is
    stated once."""
    return ZooError(f"{estimator} assumes {assumption}, and this run breaks it: a combination zoo.rules refuses; "
                    f"zoo.check_combination(model, guide, objective) or 'pyro-zoo list MODEL' says why and what fits")


def for_model(objective, model):
    """The objective as it must run on ``model``: itself, unless the model has global latents and the
    objective is one of Pyro's ELBOs with vectorized particles.

    Pyro's vectorized particles (``vectorize_particles=True``) put *every* site under a particle plate,
    globals included: each particle draws its own theta, and a model that indexes a global with a
    local (the GMM's ``locs[assignment]``) meets a ``[P, K, D]`` tensor it never wrote and fails. For
    such a model the same estimator is run with its P particles drawn one after another (a copy with
    ``vectorize_particles=False``; each particle a full (theta, z) draw, as Pyro's loop does). The zoo's
    own per-datum objectives share one theta across their particles instead (:mod:`zoo.core.weights`).
    ``--jit`` and ``--compile`` wrap the objective (:class:`~zoo.objectives.capture.CapturedObjective`): the same
    holds for the objective inside, in a copy of the wrapper with nothing captured yet.
    """
    from zoo.objectives.capture import CapturedObjective
    if isinstance(objective, CapturedObjective):
        inner = for_model(objective.objective, model)
        return objective if inner is objective.objective else objective.around(inner)
    if (model.global_latents and isinstance(objective, ELBO)
            and not isinstance(objective, PerDatumObjective) and getattr(objective, "vectorize_particles", False)
            and objective.num_particles > 1 and not getattr(objective, "shares_globals", False)):
        import copy
        objective = copy.copy(objective)
        objective.vectorize_particles = False
    return objective


def detach_parameters(fn):
    """The same distribution with its parameters cut from the graph (for path-derivative estimators).

    Supports Normal, MultivariateNormal and ``Independent`` wrappers of them: the guides
    whose density has a closed form in its parameters (meanfield, amortized, exact).
    """
    if isinstance(fn, torch.distributions.Independent):
        return dist.Independent(detach_parameters(fn.base_dist), fn.reinterpreted_batch_ndims)
    if isinstance(fn, torch.distributions.Normal):
        return dist.Normal(fn.loc.detach(), fn.scale.detach())
    if isinstance(fn, torch.distributions.TransformedDistribution) and not any(
            isinstance(t, torch.nn.Module) for t in fn.transforms):      # a constrained site: biject_to has no parameters
        return dist.TransformedDistribution(detach_parameters(fn.base_dist), fn.transforms)
    if isinstance(fn, torch.distributions.MultivariateNormal):
        return dist.MultivariateNormal(fn.loc.detach(), scale_tril=fn.scale_tril.detach())
    raise assumption_broken("a path-derivative estimator (stl, dreg)", f"a guide of Normal sites, not "
                            f"{type(fn).__name__}")


class PerDatumObjective(ELBO):
    """A bound formed from per-datum log-weights ``[K, B]``, reduced per datum, then scaled by N/B.

    ``loss`` is ``-(N/B) * sum_b bound(log w)[b]``; ``loss_and_grads`` backpropagates
    ``-(N/B) * sum_b surrogate[b]`` (:meth:`per_datum`) and returns the loss.

    Assumptions: every latent lies inside the model's ``"data"`` plate (local latents), and
    the guide samples every latent of the model (:func:`~zoo.core.weights.per_datum_log_weights`
    refuses otherwise). With ``needs_reparam`` a guide that cannot reparameterize its samples
    is refused: the gradient would be silently wrong.

    Class attributes (what the estimator's row in :mod:`zoo.objectives.axes` reads, through
    :meth:`~zoo.objectives.axes.Estimator.of`): ``default_particles``, ``min_particles`` (the
    objective's options refuse fewer) and ``needs_reparam``.

    Arguments:
        num_particles: K, samples per datum (default: the class's ``default_particles``).
    """

    #: the Renyi order of the reported bound (:func:`~zoo.core.weights.per_datum_renyi_bound`):
    #: 1 for the ELBO, 0 for the IWAE bound
    alpha = 1.0
    default_particles = 1
    min_particles = 1
    #: samples cut from the graph: gradients reach q's parameters through its density only (score function)
    detach_latents = False
    #: log q evaluated at detached parameters (the path derivative: Roeder et al., Tucker et al.)
    path_derivative = False
    needs_reparam = False

    def __init__(self, num_particles: int = None, max_plate_nesting: int = MAX_PLATE_NESTING):
        num_particles = self.default_particles if num_particles is None else num_particles
        super().__init__(num_particles=num_particles, max_plate_nesting=max_plate_nesting,
                         vectorize_particles=True)

    @property
    def name(self) -> str:
        return type(self).__name__

    @property
    def draws(self) -> int:
        """Samples drawn per datum: K (``num_particles``); M K for the bounds of M groups of K
        (:mod:`zoo.objectives.tighter`)."""
        return self.num_particles

    def _get_trace(self, model, guide, args, kwargs):
        raise NotImplementedError(f"{type(self).__name__} forms per-datum weights in zoo.core.weights, not per trace")

    def log_weights(self, model, guide, *args, **kwargs) -> LogWeights:
        """K particles per datum, drawn as this estimator needs them, and their log-weights."""
        lw = per_datum_log_weights(model, guide, *args, num_particles=self.draws,
                                   detach_latents=self.detach_latents,
                                   q_transform=detach_parameters if self.path_derivative else None, **kwargs)
        self._check_reparameterized(lw)
        return lw

    def _check_reparameterized(self, lw: LogWeights) -> None:
        if self.needs_reparam and not lw.reparameterized:
            raise assumption_broken(type(self).__name__, "a guide that reparameterizes its samples")

    def bound(self, log_w: torch.Tensor) -> torch.Tensor:
        """The per-datum bound ``[B]`` from log-weights ``[K, B]`` (what ``loss`` reports)."""
        return per_datum_renyi_bound(log_w, self.alpha)

    def per_datum(self, lw: LogWeights) -> Tuple[torch.Tensor, torch.Tensor]:
        """(the per-datum bound, the per-datum surrogate whose gradient is the estimator), each ``[B]``.

        By default the bound is its own surrogate: the reparameterized gradient."""
        bound = self.bound(lw.log_w)
        return bound, bound

    def value_and_surrogate(self, model, guide, *args, **kwargs):
        """(the loss, a detached tensor; the surrogate loss whose gradient is the estimator), both scaled by N/B;
        a global term log p(theta) - log q(theta) enters both once (reparameterized: the global guide's
        samples carry their path gradient)."""
        lw = self.log_weights(model, guide, *args, **kwargs)
        bound, surrogate = self.per_datum(lw)
        global_term = lw.global_term
        return (-lw.scale * bound.detach().sum() - (global_term.detach() if torch.is_tensor(global_term) else global_term),
                -lw.scale * surrogate.sum() - global_term)

    def loss(self, model, guide, *args, **kwargs):
        with torch.no_grad():
            lw = per_datum_log_weights(model, guide, *args, num_particles=self.draws, **kwargs)
            self._check_reparameterized(lw)
            return -lw.scale * self.bound(lw.log_w).sum().item() - float(lw.global_term)

    def differentiable_loss(self, model, guide, *args, **kwargs):
        return self.value_and_surrogate(model, guide, *args, **kwargs)[1]

    def loss_and_grads(self, model, guide, *args, **kwargs):
        value, surrogate = self.value_and_surrogate(model, guide, *args, **kwargs)
        surrogate.backward()
        return value.item()
