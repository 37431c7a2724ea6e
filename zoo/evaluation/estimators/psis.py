"""Pareto k-hat of each datum's importance weights, and the verdict on whether its IS standard error is a
precision.

``psis_khat_*``
    The Pareto k-hat of each datum's K weights (PSIS, :func:`psis_khat`). k-hat above 0.7 means the importance-sampled
    log p(x) of that datum is unreliable (Yao et al. 2018, "Yes, but did it work?"; Vehtari et al. 2024):
    the delta-method SE sees only the draws made, so the estimate can sit many of its own SEs below the truth.
    ``psis_khat_frac_over_0_7`` says how often. Where the weights take few distinct values (a discrete latent:
    they are bounded and their tail has no Pareto shape, so PSIS returns inf) k-hat does not apply
    (:func:`psis_khat`): ``psis_khat_not_applicable`` says for how many data and ``psis_khat_note`` why, and
    such a datum is judged by its effective sample size instead (unreliable below :data:`PSIS_MIN_ESS`).
``log_likelihood_se_reliable``, ``log_likelihood_se_note``
    The fraction of data whose SE is a precision (k-hat <= 0.7, or without a k-hat an ESS of at least 10),
    and for the others, why not. Per datum, per_datum.npz holds ``psis_khat`` (+inf where no tail was
    fitted, never NaN), ``psis_khat_reason`` and ``log_likelihood_se_reliable``. A second estimator of the same
    images (AIS, :mod:`zoo.evaluation.reliability`) turns this warning into a verdict.
"""
from __future__ import annotations

import math
from typing import Dict, Tuple

import numpy as np
import torch

from pyro.ops.stats import fit_generalized_pareto

from zoo.evaluation.estimators.base import Batch, Estimator

__all__ = ["PSISDiagnostics", "psis_khat", "psis_tail_size", "PSIS_THRESHOLD", "PSIS_MIN_ESS"]

PSIS_THRESHOLD = 0.7
#: Where k-hat does not apply (bounded weights, few distinct values), the effective sample size a datum's
#: weights need: bounded weights have a Pareto shape k <= 0, for which Vehtari et al. (2024) ask for
#: S > 10^(1 / (1 - k)) = 10 draws; the effective sample size stands in for S as the weights are unequal.
PSIS_MIN_ESS = 10
#: The log of the smallest positive double: PSIS never puts its tail's cutoff below it (arviz's ``cutoffmin``).
_LOG_TINY = math.log(np.finfo(float).tiny)


def psis_tail_size(K: int) -> int:
    """M, how many of the K largest weights PSIS fits its generalized Pareto tail to (arviz's rule)."""
    return int(math.ceil(min(K / 5.0, 3 * math.sqrt(K))))


def _pareto_shape(sorted_x: np.ndarray, M: int) -> float:
    """k-hat of one datum's log weights, shifted to a maximum of 0 and sorted: the generalized Pareto shape of the
    weights above the (M + 1)-th largest, less that cutoff (``np.exp`` for both, as arviz: a tail within an ulp of
    its cutoff is moved by ``math.exp``'s rounding). inf for a tail of 4 or fewer; NaN where the fit fails, which
    Pyro's reports by dividing by zero: a point of Zhang and Stephens' grid at b = 0 exactly (a tail of one
    repeated value, or of values in particular ratios) makes every grid weight NaN, and arviz, whose numpy does not
    raise, returns its prior's k, 5 / (M + 10), there."""
    cutoff = max(sorted_x[-M - 1], _LOG_TINY)
    tail = sorted_x[sorted_x > cutoff]
    if tail.size <= 4:
        return math.inf
    try:
        k, _ = fit_generalized_pareto(torch.from_numpy(np.exp(tail) - np.exp(cutoff)))
    except ZeroDivisionError:
        return math.nan
    return k


def psis_khat(log_w: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Pareto k-hat per row of ``log_w`` ``[n, K]``, and why a row has none.

    PSIS's k-hat (Vehtari et al. 2024) is the shape of a generalized Pareto distribution fitted to the M largest
    weights (:func:`psis_tail_size`) less the (M + 1)-th: Zhang and Stephens' (2009) empirical-Bayes fit with
    Vehtari's weak prior towards 0.5, which is Pyro's :func:`pyro.ops.stats.fit_generalized_pareto`. The tail and
    its cutoff are chosen as arviz's ``psislw`` chooses them (with a relative efficiency of 1), and the k-hat is
    arviz's to rounding (tested), except where the fit fails (:func:`_pareto_shape`: NaN here, arviz's prior k
    there). arviz itself is not imported: it imports SciPy, pandas and xarray, which a small run's start-up would
    pay for.

    Returns ``(khat, not_applicable)``: ``khat`` is NaN where the tail fit means nothing, and
    ``not_applicable`` holds the reason there ("" elsewhere):

    - ``"few distinct weights"``: the M largest weights take fewer than M / 2
      distinct values. Weights that take a few values are bounded (a discrete latent, or a discrete
      proposal against a discrete posterior: q = (0.5, 0.5) against (0.6, 0.4) gives two) and their tail
      has no Pareto shape to estimate: a fit to it means nothing, whether it returns inf (ties leave 4 or fewer
      weights above the cutoff) or a number. Their reliability is read from the effective sample size instead;
    - ``"degenerate tail"``: the fit failed otherwise (inf or NaN: Zhang and Stephens' grid met b = 0 exactly, or
      the weights above the cutoff are within rounding of it).

    Rows whose weights are constant to 1e-4 nats (the proposal is the exact posterior) have k-hat 0
    (perfectly reliable).
    """
    log_w = np.asarray(log_w, dtype=np.float64)
    M = psis_tail_size(log_w.shape[-1])
    top = log_w.max(-1, keepdims=True)
    with np.errstate(invalid="ignore"):           # inf - inf for data the model gives zero density
        shifted = np.sort(log_w - top, axis=-1)
    khat = np.array([_pareto_shape(row, M) if np.isfinite(t) and log_w.shape[-1] > M else math.inf
                     for row, t in zip(shifted, top[:, 0])])
    reason = np.full(khat.shape, "", dtype=object)
    with np.errstate(invalid="ignore"):
        flat = (log_w.max(-1) - log_w.min(-1)) < 1e-4
        tail = np.sort(log_w, axis=-1)[:, -M:]
        distinct = 1 + (np.diff(tail, axis=-1) > 1e-9 * np.maximum(1.0, np.abs(tail[:, 1:]))).sum(-1)
    few = (distinct < M / 2) & ~flat
    reason[few] = "few distinct weights"
    reason[~np.isfinite(khat) & ~few & ~flat] = "degenerate tail"
    khat[reason != ""] = np.nan
    khat[flat] = 0.0
    return khat, reason


def summary(khat: torch.Tensor, reasons, ess: torch.Tensor) -> Dict:
    """The k-hat figures of results.json: over the data whose k-hat applies, and for the others (bounded
    weights with few distinct values) reliability read from the effective sample size."""
    applicable = ~torch.isnan(khat)
    over = (khat > PSIS_THRESHOLD) & applicable
    low_ess = ~applicable & (ess < PSIS_MIN_ESS)
    frac, frac_low = over.double().mean().item(), low_ess.double().mean().item()
    frac_na = 1.0 - applicable.double().mean().item()
    missing = sorted({r for r in reasons if r})
    warning = []
    if frac > 0:
        warning.append(f"{frac:.1%} of data have PSIS k-hat > {PSIS_THRESHOLD}: their importance-sampled log p(x) "
                       f"is unreliable")
    if frac_low > 0:
        warning.append(f"{frac_low:.1%} of data have no k-hat ({', '.join(missing)}) and an effective sample size "
                       f"below {PSIS_MIN_ESS}: their importance-sampled log p(x) is unreliable")
    se_reliable = 1.0 - (over | low_ess).double().mean().item()
    return {"log_likelihood_se_reliable": se_reliable,
            "log_likelihood_se_note": None if se_reliable == 1.0 else (
                f"the standard error is not a precision for {1 - se_reliable:.1%} of data: their importance weights "
                f"are heavy-tailed (k-hat > {PSIS_THRESHOLD}) or carried by a few draws (ESS < {PSIS_MIN_ESS}), so "
                f"the estimate can sit many of its SEs below log p(x) (the delta-method SE only sees the draws made); "
                f"an AIS estimate (pyro-zoo eval RUN --estimator ais) tells how far"),
            "psis_khat_mean": khat[applicable].mean().item() if applicable.any() else None,
            "psis_khat_max": khat[applicable].max().item() if applicable.any() else None,
            "psis_khat_frac_over_0_7": frac,
            "psis_khat_not_applicable": frac_na,
            "psis_khat_note": (f"k-hat does not apply to {frac_na:.1%} of data ({', '.join(missing)}: bounded "
                               f"weights that take few values have no Pareto tail to fit); their reliability is "
                               f"judged by the effective sample size, at least {PSIS_MIN_ESS}") if missing else None,
            "psis_frac_low_ess": frac_low,
            "psis_warning": "; ".join(warning) or None}


def columns(khat: torch.Tensor, reasons, ess: torch.Tensor) -> Dict:
    """The per-datum k-hat columns of per_datum.npz, without NaN: ``psis_khat`` where a Pareto tail was fitted and
    +inf where none was, ``psis_khat_reason`` saying why not there ("" where it was), and
    ``log_likelihood_se_reliable``, whether the datum's SE is a precision (k-hat <= 0.7, or without a k-hat an
    effective sample size of at least 10)."""
    applicable = ~torch.isnan(khat)
    reliable = torch.where(applicable, khat <= PSIS_THRESHOLD, ess.double().cpu() >= PSIS_MIN_ESS)
    return {"psis_khat": torch.where(applicable, khat, torch.full_like(khat, math.inf)),
            "psis_khat_reason": np.asarray([r or "" for r in reasons], dtype=str),
            "log_likelihood_se_reliable": reliable}


class PSISDiagnostics(Estimator):
    """Reads the IS estimator's effective sample sizes (``per_datum["is_ess"]``), so it comes after it."""
    name = "psis"
    keys = {
        "psis_khat_mean": "mean Pareto k-hat of the per-datum importance weights (where it applies), or null",
        "psis_khat_max": "largest k-hat (where it applies), or null",
        "psis_khat_frac_over_0_7": "fraction of data with k-hat > 0.7 (IS estimate unreliable)",
        "psis_warning": "a sentence when any k-hat exceeds 0.7, else null",
        "psis_khat_not_applicable": "fraction of data whose k-hat does not apply (bounded weights with few distinct "
                                    "values, or a degenerate tail); the k-hat figures are over the others",
        "psis_khat_note": "why k-hat does not apply where it does not, and how reliability is judged there, or null",
        "psis_frac_low_ess": "fraction of data without a k-hat whose effective sample size is below 10 (unreliable)",
        "log_likelihood_se_reliable": "fraction of data whose standard error is a precision: k-hat <= 0.7, or without "
                                      "a k-hat an ESS of at least 10",
        "log_likelihood_se_note": "why the standard error is not a precision for the other data, or null",
    }

    @classmethod
    def applies(cls, ctx) -> bool:
        return ctx.psis

    def __init__(self, ctx):
        super().__init__(ctx)
        self.reasons = []

    def update(self, batch: Batch) -> None:
        khat, reason = psis_khat(batch.draws.log_w.T.double().cpu().numpy())
        self.keep("khat", torch.from_numpy(khat))
        self.reasons += list(reason)

    def finish(self, result, per_datum):
        khat, ess = self.column("khat"), per_datum["is_ess"]
        return summary(khat, self.reasons, ess), columns(khat, self.reasons, ess)
