"""Code lengths in bits per dimension (Theis et al. 2016).

``levels``, ``bits_per_dim_elbo``, ``bits_per_dim_nll``
    Where the model's likelihood is a probability over data with k levels per value (``data_levels``: 2 for
    Bernoulli pixels, k for :mod:`zoo.core.levels`), -ELBO and -log p(x) are code lengths, and in bits per
    dimension they are nats / (D ln 2), D the values per datum that the model observes (a model file's
    covariates are given, not scored: log p(x | c) is the code length of the other columns). ``None`` for a
    density (a Gaussian on [0, 1]: its "NLL" is a differential entropy, and can be negative).
"""
from __future__ import annotations

import math
from typing import Dict

from zoo.evaluation.estimators.base import Estimator

__all__ = ["BitsPerDim", "bits_per_dim"]


def bits_per_dim(levels, dims: int, neg_elbo: float, nll: float) -> Dict:
    """``levels`` and the two code lengths in bits per dimension, nats / (D ln 2); ``None`` for a density."""
    scale = None if levels is None else 1.0 / (dims * math.log(2))
    return {"levels": levels, "bits_per_dim_elbo": None if scale is None else neg_elbo * scale,
            "bits_per_dim_nll": None if scale is None else nll * scale}


class BitsPerDim(Estimator):
    """Reads ``result["elbo"]`` and ``result["nll"]``: it comes after the ELBO and IS estimators."""
    name = "bits_per_dim"
    keys = {
        "levels": "k, levels per value when the likelihood is a probability over discrete data (2: Bernoulli), "
                  "or null",
        "bits_per_dim_elbo": "-elbo / (D ln 2), the ELBO's code length in bits per dimension (discrete data), "
                             "or null",
        "bits_per_dim_nll": "nll / (D ln 2), bits per dimension (discrete data), or null",
    }

    def finish(self, result, per_datum):
        model = self.ctx.model
        observed = self.ctx.x.shape[1] - len(getattr(model, "covariates", ()))
        return bits_per_dim(model.data_levels, observed, -result["elbo"], result["nll"]), {}
