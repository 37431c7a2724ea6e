"""The shared evaluation harness. It knows nothing about specific models, and computes no figure itself.

It sees a model and a guide that follow the contract of :mod:`zoo.core.contract`, and data. For each minibatch
it draws K samples per datum (in chunks, so memory stays bounded) from the proposal, by default the defensive
mixture q_def = (1 - alpha) q(z | x) + alpha q_wide(z | x) of :mod:`zoo.evaluation.defensive` (``proposal=
"guide"``: q itself), the first n_q = (1 - alpha) K from q and the rest from q_wide, with log p(x, z_k) and
log q(z_k | x) from :func:`zoo.core.weights.per_datum_log_weights`, and hands the same draws to each estimator of
:data:`zoo.evaluation.estimators.ESTIMATORS`, one module each:

=================================================  ==================================================
:mod:`~zoo.evaluation.estimators.elbo`             ELBO, its parts, the KL per site, IWAE-k
:mod:`~zoo.evaluation.estimators.importance`       IS log p(x), its standard errors, the ESS
:mod:`~zoo.evaluation.estimators.psis`             k-hat per datum; whether each IS SE is a precision
:mod:`~zoo.evaluation.estimators.exact`            closed-form log p(x), the ELBO gap, the IS error
:mod:`~zoo.evaluation.estimators.active_units`     active units (Burda et al.)
:mod:`~zoo.evaluation.estimators.bits_per_dim`     code lengths in bits per dimension
:mod:`~zoo.evaluation.estimators.views`            conditional log-likelihoods between views
:mod:`~zoo.evaluation.estimators.globals`          the data set's ELBO with theta integrated
=================================================  ==================================================

Each module's docstring defines its figures. An estimator that does not apply to the model and guide (no views,
no global latents, k-hat switched off) writes its keys as ``None``.

For a model with global latents theta (outside the data plate) every per-datum figure is *given theta =
theta_hat*, a stated point estimate: the guide's global part is held at
:meth:`~guides.globals.GlobalGuide.point_estimate` while the draws are made, and only the data set's ELBO
(:mod:`~zoo.evaluation.estimators.globals`) integrates theta under its guide.

Annealed importance sampling and BDMC, which run Markov chains rather than reweighting the guide's draws, are
:mod:`zoo.evaluation.ais` and :mod:`zoo.evaluation.bdmc` (``pyro-zoo eval --estimator ais|bdmc``).

All figures are in nats per datum. Per-datum arrays come back in ``per_datum``.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Dict

import pyro
import torch

from zoo.usercode.errors import user_code_errors
from zoo.core.modes import evaluation_mode, held_fixed
from zoo.core.weights import per_datum_log_weights
from zoo.evaluation.defensive import as_proposal
from zoo.evaluation.estimators import ESTIMATORS, Batch, Context
from zoo.evaluation.estimators.bits_per_dim import bits_per_dim
from zoo.evaluation.estimators.exact import conditional_log_marginal
from zoo.evaluation.estimators.globals import DATA_ELBO_MAX_PASSES, DATA_ELBO_TARGET_SE, data_set_elbo
from zoo.evaluation.estimators.importance import effective_sample_size, rounding_floor
from zoo.evaluation.estimators.psis import PSIS_MIN_ESS, PSIS_THRESHOLD, psis_khat, psis_tail_size
from zoo.evaluation.estimators.views import conditional_log_likelihoods
from zoo.evaluation.summed import exact_by_summing
from zoo.core.process import map_torch_constants

__all__ = ["evaluate", "EvaluationSettings", "bound_per_datum", "conditional_log_likelihoods", "RESULT_KEYS", "PSIS_THRESHOLD",
           "PSIS_MIN_ESS", "bits_per_dim", "psis_khat", "psis_tail_size", "effective_sample_size", "rounding_floor",
           "data_set_elbo", "evaluation_mode"]

#: The documented keys of an evaluation result (README "results.json"): every estimator's, in registry order.
RESULT_KEYS = {key: text for estimator in ESTIMATORS for key, text in estimator.keys.items()}


@torch.no_grad()
def bound_per_datum(model, guide, x: torch.Tensor, num_particles: int = 1, batch_size: int = 500) -> float:
    """The ELBO per datum on ``x`` (K = ``num_particles``), for monitoring during training."""
    total, n = 0.0, x.shape[0]
    with evaluation_mode(model, guide):
        for i in range(0, n, batch_size):
            idx = torch.arange(i, min(i + batch_size, n), device=x.device)
            lw = per_datum_log_weights(model, guide, x[idx], idx=idx, N=n, num_particles=num_particles)
            total += lw.log_w.mean(0).sum().item()
    return total / x.shape[0]


@dataclass(frozen=True)
class EvaluationSettings:
    """How :func:`evaluate` goes through the data, beyond what it estimates with.

    Arguments:
        batch_size: data per pass of the K draws.
        max_elements: the most decoder outputs held at once (a batch is split further to stay below it).
        keep_reconstructions: how many data to keep with the decoder's means of their first draw
            (``result["reconstructions"]``, for the plots).
        global_samples, data_elbo_target_se, data_elbo_max_passes: for a model with global latents, ``data_elbo``
            takes at least ``global_samples`` passes over the data (a draw of theta each), and more until its
            standard error is below ``data_elbo_target_se`` nats per datum or ``data_elbo_max_passes`` are done.
    """

    batch_size: int = 100
    max_elements: int = 1 << 24
    keep_reconstructions: int = 0
    global_samples: int = 10
    data_elbo_target_se: float = DATA_ELBO_TARGET_SE
    data_elbo_max_passes: int = DATA_ELBO_MAX_PASSES


def evaluate(model, guide, x: torch.Tensor, num_samples: int = 1000, iwae_k: int = 50, proposal="defensive",
             psis: bool = True, settings: EvaluationSettings = EvaluationSettings()) -> Dict:
    """Score ``guide`` and ``model`` on data ``x`` ``[n, D]`` with every estimator of
    :data:`~zoo.evaluation.estimators.ESTIMATORS`, K = ``num_samples`` importance samples per datum and the
    IWAE-``iwae_k`` bound; see the module docstring, and each estimator's, for the keys. ``psis``: fit each
    datum's Pareto k-hat (False: skip it, which tests of other figures may). ``settings``: how the data are gone
    through (:class:`EvaluationSettings`: the batch size, memory, reconstructions kept, passes for global latents).

    ``guide`` is a zoo guide, or a Pyro guide function ``guide(x, idx=None, N=None)`` of your own,
    which is checked against the model and scored the same way (:func:`guides.user.from_pyro_guide`).
    Model and guide are scored in eval mode, so a relaxed guide proposes hard discrete samples and every
    figure is a bound on the true discrete model.

    ``proposal`` is the importance-sampling proposal behind ``log_likelihood``, its standard error and the
    k-hats: ``"defensive"`` (the default, :mod:`zoo.evaluation.defensive`), ``"guide"`` (q itself), or a
    :class:`~zoo.evaluation.defensive.DefensiveProposal`; results.json records it (``proposal``).
    """
    batch_size, max_elements, keep_reconstructions = settings.batch_size, settings.max_elements, \
        settings.keep_reconstructions
    global_samples, data_elbo_target_se = settings.global_samples, settings.data_elbo_target_se
    data_elbo_max_passes = settings.data_elbo_max_passes
    map_torch_constants()                        # once per process: zoo.core.process
    proposal = as_proposal(proposal)
    model.validate_data(x, what="evaluation data")
    from guides.user import as_zoo_guide
    guide = as_zoo_guide(guide, model)           # a Pyro guide function of your own is wrapped and checked
    global_guide = getattr(guide, "global_guide", None)
    ctx = Context(model, guide, x, num_samples, iwae_k, proposal, batch_size, max_elements, psis)
    estimators = [e(ctx) for e in ESTIMATORS if e.applies(ctx)]
    skipped = [e for e in ESTIMATORS if not e.applies(ctx)]
    if global_guide is not None:
        for e in estimators:
            if e.integrates_globals:
                e.global_samples, e.target_se, e.max_passes = global_samples, data_elbo_target_se, data_elbo_max_passes
    result, per_datum = {}, {}

    def finish(selected):
        for e in selected:
            entries, columns = e.finish(result, per_datum)
            result.update(entries)
            per_datum.update(columns)

    # a user's model that fails here (a NaN log-density at data the trial run did not reach) is said in one line
    with held_fixed(model, guide), torch.no_grad(), user_code_errors(model.display_name, "in evaluation"):
        if global_guide is None:
            ctx.log_marginal = model.log_marginal if model.has_log_marginal else exact_by_summing(model, x)
            recon = _draw(ctx, estimators, keep_reconstructions)
            finish(estimators)
        else:
            with global_guide.at_point_estimate() as theta_hat:
                ctx.log_marginal = conditional_log_marginal(model, theta_hat)
                recon = _draw(ctx, estimators, keep_reconstructions)
                finish([e for e in estimators if not e.integrates_globals])
            finish([e for e in estimators if e.integrates_globals])
    for e in skipped:
        result.update(dict.fromkeys(e.keys))
    if not getattr(guide, "has_density", True):
        result["guide_density_note"] = (f"the {guide.family!r} guide has no marginal density q(z | x): the ELBO, KL, "
                                        f"IWAE-k and the importance weights use its augmented-space term at its own "
                                        f"draws, so the ELBO and IWAE-k are augmented bounds (below the marginal "
                                        f"ones) and the IS estimate of p(x) stays unbiased")
    result["per_datum"] = per_datum
    if recon is not None:
        result["reconstructions"] = recon
    return result


def _draw(ctx: Context, estimators, keep_reconstructions: int):
    """One pass over the data: each minibatch's K draws per datum, handed to every estimator. Returns the first
    ``keep_reconstructions`` data and their decoder means, or ``None``.

    Pyro's validation (each distribution's checks of its arguments and of the values scored, where the caller
    has it on, as Pyro ships) runs for the first minibatch, both strata of the proposal, and is off for the rest,
    as :func:`zoo.training.loop.fit` does after a validated step: the data were validated whole before (the
    model's ``validate_data``), and the checks re-scan every tensor a distribution is given or scores."""
    recon = None
    for i in range(0, ctx.n, ctx.batch_size):
        idx = torch.arange(i, min(i + ctx.batch_size, ctx.n), device=ctx.x.device)
        xb = ctx.x[idx]
        keep = 1 if keep_reconstructions and recon is None else 0     # only the plot reads p(x | z), of one chunk
        with contextlib.nullcontext() if i == 0 else pyro.validation_enabled(False):
            draws = ctx.proposal.draw(ctx.model, ctx.guide, xb, idx, ctx.n, ctx.num_samples, ctx.max_elements,
                                      keep_observations=keep)
        batch = Batch(xb, idx, draws)
        for e in estimators:
            e.update(batch)
        if keep_reconstructions and recon is None:
            recon = (xb[:keep_reconstructions], batch.parts[0].x_mean[0, :keep_reconstructions].clone())
    return recon
