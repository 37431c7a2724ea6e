"""The figures of a model with global latents theta (outside the data plate).

``global_latents``, ``global_guide``, ``global_point_estimate``, ``data_elbo``, ``data_elbo_samples``, ``data_elbo_se``
    For a model with global latents theta (outside the data plate) the per-datum figures above
    (``elbo``, ``reconstruction``, ``kl``, ``iwae_bound``, ``log_likelihood``, their errors, k-hats and
    active units) are those *given theta = theta_hat*, a stated point estimate: the guide's global
    part is held at :meth:`~guides.globals.GlobalGuide.point_estimate` (the delta guide's value, or the
    Normal guide's median biject_to(c)(loc)), so ``log_likelihood`` is the IS estimate of
    log p(x_n | theta_hat) and ``elbo`` is E_q[log p(x_n, z_n | theta_hat) - log q(z_n | x_n)].
    ``exact_log_likelihood`` is then log p(x_n | theta_hat) by enumeration where the local latents
    are small and discrete (a mixture's assignment). ``data_elbo`` is the ELBO of the whole data set
    per datum, with theta integrated under its guide::

        data_elbo = (1/N) ( E_q[ sum_n log p(x_n, z_n | theta) - log q(z_n | x_n) ] + E_q[ log p(theta) - log q(theta) ] )

    by Monte Carlo over ``data_elbo_samples`` passes, each a draw of theta with one z_n per datum, a
    lower bound on log p(X) / N in expectation; for the ``delta`` global guide, log q(theta) = 0 and it
    is the MAP objective at theta_hat, not a bound. Passes go on until ``data_elbo_se``, their sd over
    sqrt(passes), is below ``data_elbo_target_se`` (0.01 nats per datum) or a cap
    (:func:`data_set_elbo`). ``global_latents`` names the global sites. All are ``None`` for a model
    without global latents.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from zoo.core.weights import per_datum_log_weights
from zoo.evaluation.estimators.base import Estimator

__all__ = ["DataSetELBO", "data_set_elbo", "DATA_ELBO_TARGET_SE", "DATA_ELBO_MAX_PASSES"]

#: data_elbo's passes go on until its standard error is below this many nats per datum, or the cap
DATA_ELBO_TARGET_SE = 0.01
DATA_ELBO_MAX_PASSES = 400


@torch.no_grad()
def data_set_elbo(model, guide, x: torch.Tensor, num_theta: int = 10, batch_size: int = 100,
                  target_se: float = DATA_ELBO_TARGET_SE, max_passes: int = DATA_ELBO_MAX_PASSES):
    """The data set's ELBO per datum for a model with global latents (module docstring, ``data_elbo``), its
    Monte Carlo standard error, and the number of passes behind it: ``(data_elbo, se, passes)``.

    Each pass draws theta_s ~ q(theta) (under the delta guide, its point) and holds the guide's global part
    there for a whole pass over ``x``, one z_n ~ q(z_n | x_n) per datum, giving
    T_s = sum_n [log p(x_n, z_n | theta_s) - log q(z_n | x_n)] + log p(theta_s) - log q(theta_s). The
    passes are independent draws of T / N, so data_elbo is their mean and se = sd_s(T_s / N) / sqrt(S).
    At least ``num_theta`` passes (two at least, for an se), then more until se <= ``target_se`` nats per
    datum or ``max_passes``: even under a delta guide one pass leaves the z_n's Monte Carlo error, a tenth
    of a nat per datum on a few hundred data. Call it in eval mode (:func:`evaluate` does)."""
    globals_ = guide.global_guide
    n, totals = x.shape[0], []
    least = max(2, int(num_theta))
    while True:
        theta, log_q = globals_.draw()
        total, log_prior = 0.0, None
        with globals_.held_at(theta):
            for i in range(0, n, batch_size):
                idx = torch.arange(i, min(i + batch_size, n), device=x.device)
                lw = per_datum_log_weights(model, guide, x[idx], idx=idx, N=n, num_particles=1)
                total += lw.log_w.double().sum().item()
                log_prior = lw.global_log_prior
        totals.append((total + float(log_prior) - (0.0 if globals_.kind == "delta" else float(log_q))) / n)
        if len(totals) >= least:
            se = float(np.std(totals, ddof=1) / math.sqrt(len(totals)))
            if se <= target_se or len(totals) >= max(least, max_passes):
                return float(np.mean(totals)), se, len(totals)


class DataSetELBO(Estimator):
    """Draws theta from its guide pass by pass, so the harness finishes it after the guide's global part has left
    its point estimate (``integrates_globals``). ``global_samples``, ``target_se`` and ``max_passes`` are set by
    :func:`zoo.evaluation.harness.evaluate`."""
    name = "data_elbo"
    integrates_globals = True
    keys = {
        "global_latents": "names of the model's global latents theta (outside the data plate), or null; when set, "
                          "every per-datum figure above is given theta = theta_hat (global_point_estimate)",
        "global_guide": "the global guide: normal (mean-field Normal, unconstrained space) or delta (MAP), or null",
        "global_point_estimate": "what theta_hat is: the delta's value, or the Normal guide's median "
                                 "biject_to(c)(loc)",
        "data_elbo": "the data set's ELBO per datum, (E_q[sum_n log p(x_n, z_n | theta) - log q(z_n | x_n)] + "
                     "E_q[log p(theta) - log q(theta)]) / N, theta from its guide (delta: the MAP objective, not a "
                     "bound)",
        "data_elbo_samples": "passes behind data_elbo, each a draw of theta and one z_n per datum",
        "data_elbo_se": "Monte Carlo standard error of data_elbo, sd of the passes / sqrt(passes), or null",
        "data_elbo_target_se": "the passes went on until data_elbo_se fell below this (or data_elbo_samples reached "
                               "the cap), or null",
    }
    global_samples = 10
    target_se = DATA_ELBO_TARGET_SE
    max_passes = DATA_ELBO_MAX_PASSES

    @classmethod
    def applies(cls, ctx) -> bool:
        return getattr(ctx.guide, "global_guide", None) is not None

    def finish(self, result, per_datum):
        ctx, globals_ = self.ctx, self.ctx.guide.global_guide
        elbo, se, passes = data_set_elbo(ctx.model, ctx.guide, ctx.x, self.global_samples, ctx.batch_size,
                                         target_se=self.target_se, max_passes=self.max_passes)
        return ({"global_latents": [s.name for s in globals_.sites], "global_guide": globals_.kind,
                 "global_point_estimate": globals_.point_kind, "data_elbo": elbo, "data_elbo_samples": passes,
                 "data_elbo_se": se, "data_elbo_target_se": self.target_se}, {})
