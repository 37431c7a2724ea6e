"""The estimators the evaluation harness is built from, one module each (:mod:`.base` has the interface).

:data:`ESTIMATORS` is what :func:`zoo.evaluation.harness.evaluate` runs, in this order, on the same K draws per
datum: an estimator may read the figures of those above it. Adding one is a module here with a subclass of
:class:`~zoo.evaluation.estimators.base.Estimator` and one line below; its ``keys`` join results.json's
documented keys (:data:`zoo.evaluation.harness.RESULT_KEYS`, the README's table) by themselves.

:data:`LOG_P_ESTIMATORS` are the estimators of log p(x) a user picks with ``pyro-zoo eval RUN --estimator NAME``:
importance sampling is the harness above; AIS and BDMC run their own Markov chains (:mod:`zoo.evaluation.ais`,
:mod:`zoo.evaluation.bdmc`) and write their own files beside results.json.
"""
from zoo.evaluation.estimators.active_units import ActiveUnits
from zoo.evaluation.estimators.base import Batch, Context, Estimator
from zoo.evaluation.estimators.bits_per_dim import BitsPerDim
from zoo.evaluation.estimators.elbo import ELBO
from zoo.evaluation.estimators.exact import ExactLogLikelihood
from zoo.evaluation.estimators.globals import DataSetELBO
from zoo.evaluation.estimators.importance import ImportanceSampling
from zoo.evaluation.estimators.psis import PSISDiagnostics
from zoo.evaluation.estimators.views import ViewLikelihoods

__all__ = ["ESTIMATORS", "LOG_P_ESTIMATORS", "Batch", "Context", "Estimator"]

ESTIMATORS = (
    ELBO,                     # elbo, reconstruction, kl, kl_per_site, iwae_bound
    ImportanceSampling,       # log_likelihood, its SEs, nll, ESS
    PSISDiagnostics,          # k-hat per datum; whether each IS SE is a precision
    ExactLogLikelihood,       # closed-form log p(x), elbo_gap, is_error
    ActiveUnits,              # active units, in all and per site
    BitsPerDim,               # code lengths in bits per dimension
    ViewLikelihoods,          # conditional log-likelihoods between views
    DataSetELBO,              # the whole data set's ELBO, theta integrated (global latents)
)

#: ``pyro-zoo eval --estimator`` choices: name -> what it is (the CLI's help reads this)
LOG_P_ESTIMATORS = {
    "is": "importance sampling from the defensive mixture of the guide (results.json, per_datum.npz)",
    "ais": "annealed importance sampling from the guide or the prior, HMC / independent MH transitions "
           "(ais.json, ais.md, ais_per_datum.npz)",
    "bdmc": "bidirectional Monte Carlo: forward and reverse AIS on data simulated from the model, bounding "
            "AIS's error from both sides (bdmc.json, bdmc.md)",
}
