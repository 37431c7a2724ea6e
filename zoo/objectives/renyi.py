"""The per-datum Renyi and IWAE bounds, and why they are our own classes.

Every objective is a :class:`pyro.infer.ELBO` (``loss``, ``loss_and_grads``), built by
name from the registry with a number of particles K, vectorized over a particle
plate left of the data plate. Here the bounds themselves, with their reparameterized
gradient; the registry entries ``iwae`` and ``renyi`` and their other estimators
(DReG, VIMCO, Pyro's RenyiELBO) are in :mod:`zoo.objectives.importance`.

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
bound. :class:`RenyiBound` forms per-datum weights (:mod:`zoo.core.weights`), takes
the logsumexp per datum, and only then scales by N/B. Pyro's class stays available
as ``renyi_pyro`` so the difference can be seen.
"""
from __future__ import annotations

from typing import Optional

from zoo.core.errors import ZooError
from zoo.core.plates import MAX_PLATE_NESTING
from zoo.core.weights import per_datum_renyi_bound
from zoo.objectives.base import PerDatumObjective

__all__ = ["RenyiBound", "IWAEBound", "per_datum_renyi_bound"]


class RenyiBound(PerDatumObjective):
    """The per-datum Renyi variational bound, scaled by N/B after the logsumexp.

    Computes ``-(N/B) * sum_b L_alpha(x_b)`` (see the module docstring) and its
    reparameterized gradient: the bound is its own surrogate.

    Assumptions:
        - every latent lies inside the model's ``"data"`` plate (local latents);
        - the guide is fully reparameterizable. A score-function guide raises a
          :class:`~zoo.core.errors.ZooError`; its gradient would be silently wrong.

    Arguments:
        alpha: the Renyi order; 0 gives IWAE, 1 gives the ELBO. Must be >= 0.
        num_particles: K, importance samples per datum.
    """

    default_particles = 5
    needs_reparam = True

    def __init__(self, alpha: float = 0.0, num_particles: Optional[int] = None,
                 max_plate_nesting: int = MAX_PLATE_NESTING):
        if alpha < 0:
            raise ZooError(f"the Renyi order alpha must be >= 0, got {alpha}")
        super().__init__(num_particles=num_particles, max_plate_nesting=max_plate_nesting)
        self.alpha = float(alpha)


class IWAEBound(RenyiBound):
    """The per-datum importance-weighted bound of Burda et al. (2016): RenyiBound at alpha = 0.

    Reference: Y. Burda, R. Grosse and R. Salakhutdinov, "Importance Weighted
    Autoencoders", ICLR 2016, https://arxiv.org/abs/1509.00519.
    """

    def __init__(self, num_particles: int = 5, max_plate_nesting: int = MAX_PLATE_NESTING):
        super().__init__(alpha=0.0, num_particles=num_particles, max_plate_nesting=max_plate_nesting)
