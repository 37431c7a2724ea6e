"""The exact log p(x), where the model has one, and what it says of the other estimates.

``exact_log_likelihood``
    The model's closed-form ``log_marginal`` (pPCA, factor analysis, a conjugate model), or, for a model with
    global latents, log p(x_n | theta_hat) by enumerating local latents that are small and discrete (a
    mixture's assignment); ``None`` for other models.
``elbo_gap``
    log p(x) - ELBO, the KL from q to the true posterior: with the exact log p(x) where there is one, else
    with the IS estimate (then the gap is itself an estimate, low by the IS estimate's own bias).
``is_error``
    IS - exact, the importance-sampling error, or ``None``.
"""
from __future__ import annotations

import pyro.poutine as poutine

from zoo.evaluation.estimators.base import Batch, Estimator

__all__ = ["ExactLogLikelihood", "conditional_log_marginal"]


def conditional_log_marginal(model, theta):
    """log p(x_n | theta) by enumerating the local latents, where they are small and discrete; else ``None``."""
    from zoo.core.distributions import ENUMERATION_LIMIT
    from zoo.core.enumeration import enumerated_log_marginal
    if not model.latents:                   # nothing to enumerate (the IS estimate is exact given theta)
        return None
    total = 1
    for s in model.latents:
        if s.num_configurations is None:
            return None
        total *= s.num_configurations
    if total > ENUMERATION_LIMIT:
        return None

    from types import SimpleNamespace
    given = SimpleNamespace(latents=model.latents, model=poutine.condition(model.model, data=theta))
    return lambda xb: enumerated_log_marginal(given, xb)


class ExactLogLikelihood(Estimator):
    """Reads the ELBO and the IS estimate (``result["elbo"]``, ``result["log_likelihood"]``): it comes after both."""
    name = "exact"
    keys = {
        "exact_log_likelihood": "closed-form log p(x) per datum, or null",
        "elbo_gap": "exact log p(x) - ELBO (else log_likelihood - ELBO), per datum",
        "is_error": "log_likelihood - exact_log_likelihood, or null",
    }

    def update(self, batch: Batch) -> None:
        if self.ctx.log_marginal is not None:
            self.keep("exact", self.ctx.log_marginal(batch.x))

    def finish(self, result, per_datum):
        ll = result["log_likelihood"]
        if "exact" not in self.columns:
            return ({"exact_log_likelihood": None, "elbo_gap": ll - result["elbo"], "is_error": None},
                    {"exact_log_likelihood": None})
        exact = self.column("exact")
        return ({"exact_log_likelihood": exact.mean().item(), "elbo_gap": exact.mean().item() - result["elbo"],
                 "is_error": ll - exact.mean().item()},
                {"exact_log_likelihood": exact})
