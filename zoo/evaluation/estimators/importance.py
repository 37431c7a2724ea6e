"""The importance-sampled log p(x), its standard errors, and the weights' effective sample size.

``log_likelihood``, ``log_likelihood_se``, ``proposal``
    log p(x) ~= log (1/K) sum_k w_k over all K draws of a datum, with the weights under the proposal,
    w_k = p(x, z_k) / q_def(z_k | x), q_def the defensive mixture (1 - alpha) q + alpha q_wide of
    :mod:`zoo.evaluation.defensive` (or q itself): a stochastic lower bound, it slightly underestimates
    log p(x) (Jensen). Its Monte Carlo standard error per datum is the delta method's,
    se_n = sqrt((mean(w^2)/mean(w)^2 - 1) / K) for one stratum of draws, its stratified form for two
    (:func:`~zoo.evaluation.defensive.log_mean_weight`), never below the float arithmetic's own rounding
    error (:func:`rounding_floor`); for the average, sqrt(sum_n se_n^2) / n. Where q is narrower than the
    posterior, the weights of q alone are heavy-tailed and that estimate sits many of its own SEs low; the
    defensive mixture bounds the weights. Whether an SE is a precision is the k-hat estimator's verdict
    (:mod:`zoo.evaluation.estimators.psis`). ``proposal`` records what made these figures.
``log_likelihood_data_se``
    The other uncertainty of the average: which data were evaluated. The spread of the per-datum log p(x)
    over the n data divided by sqrt(n): how far the average over a random subset of a test split may sit
    from the average over the whole split (conservative by 1 / sqrt(1 - n/N_split)). On 1000 test images it
    is far above the Monte Carlo error, so a subset's figure can be compared with a paper's whole-test-set
    figure only within it.
``is_ess_mean``, ``is_ess_min``
    Kish's effective sample size (sum w)^2 / sum w^2 of each datum's K weights, averaged and at its smallest.
"""
from __future__ import annotations

import math

import torch

from zoo.evaluation.defensive import log_mean_weight
from zoo.evaluation.estimators.base import Batch, Estimator

__all__ = ["ImportanceSampling", "effective_sample_size", "rounding_floor", "ROUNDING_EPS"]

#: the relative rounding error of a log-density summed in floating point, in units of the dtype's epsilon: a
#: standard error below ROUNDING_EPS * eps * |log p^| claims more than the arithmetic that made the estimate holds
ROUNDING_EPS = 16


def rounding_floor(se: torch.Tensor, log_p: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``se`` raised to the rounding error of ``log_p`` computed in ``dtype`` (:data:`ROUNDING_EPS`): where the weights
    are all but equal (a guide that is the exact posterior of a datum), the Monte Carlo error is ~0 and the error left
    is the arithmetic's."""
    return torch.maximum(se, ROUNDING_EPS * torch.finfo(dtype).eps * log_p.detach().abs().to(se.dtype))


def effective_sample_size(log_w: torch.Tensor) -> torch.Tensor:
    """Kish's effective sample size of each datum's weights, (sum_k w_k)^2 / sum_k w_k^2, from ``[K, B]``."""
    return torch.exp(2 * torch.logsumexp(log_w, 0) - torch.logsumexp(2 * log_w, 0))


class ImportanceSampling(Estimator):
    name = "is"
    keys = {
        "num_data": "number of data evaluated",
        "num_samples": "K, importance samples per datum",
        "proposal": "the importance-sampling proposal behind log_likelihood, its SE and the k-hats: kind "
                    "('defensive' or 'guide'), alpha, inflation, df, the draws from q and from q_wide, the sites "
                    "widened and those kept as q",
        "log_likelihood": "importance-sampled log p(x) per datum (K samples)",
        "log_likelihood_se": "Monte Carlo standard error of log_likelihood",
        "log_likelihood_data_se": "standard error of log_likelihood over the choice of data: per-datum sd / sqrt(n)",
        "nll": "-log_likelihood, the figure papers report",
        "is_ess_mean": "mean over data of the weights' effective sample size (sum w)^2 / sum w^2",
        "is_ess_min": "smallest effective sample size",
    }

    def __init__(self, ctx):
        super().__init__(ctx)
        self.widened, self.kept = {}, []

    def update(self, batch: Batch) -> None:
        draws = batch.draws
        self.widened.update(draws.widened)
        self.kept += [name for name in draws.kept if name not in self.kept]
        log_mean_w, se = log_mean_weight(draws.log_w, draws.num_q)
        self.keep("ll", log_mean_w)
        self.keep("se", rounding_floor(se, log_mean_w, draws.log_w.dtype))
        self.keep("ess", effective_sample_size(draws.log_w))

    def finish(self, result, per_datum):
        ll, se, ess = self.column("ll"), self.column("se"), self.column("ess")
        n = ll.shape[0]
        return ({"num_data": n, "num_samples": self.ctx.num_samples,
                 "proposal": {**self.ctx.proposal.to_json(self.ctx.num_samples), "sites_widened": self.widened,
                              "sites_kept": self.kept},
                 "log_likelihood": ll.mean().item(), "log_likelihood_se": (se.pow(2).sum().sqrt() / n).item(),
                 "log_likelihood_data_se": (ll.std() / math.sqrt(n)).item() if n > 1 else None,
                 "nll": -ll.mean().item(), "is_ess_mean": ess.mean().item(), "is_ess_min": ess.min().item()},
                {"log_likelihood": ll, "log_likelihood_se": se, "is_ess": ess})
