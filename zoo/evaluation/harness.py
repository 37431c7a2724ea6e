"""The shared evaluation harness. It knows nothing about specific models.

It sees a model and a guide that follow the contract of :mod:`zoo.core.contract`,
and data. For each datum x it draws K samples (in chunks, so memory stays bounded) from the
proposal, by default the defensive mixture q_def = (1 - alpha) q(z | x) + alpha q_wide(z | x) of
:mod:`zoo.evaluation.defensive` (``proposal="guide"``: q itself), the first n_q = (1 - alpha) K from q
and the rest from q_wide, forms log p(x, z_k) and log q(z_k | x) with
:func:`zoo.core.weights.per_datum_log_weights`, and reports, averaged over data:

``elbo``, ``reconstruction``, ``kl``
    ELBO = E_q[log p(x | z)] - KL(q(z|x) || p(z)), both parts by Monte Carlo over the n_q samples of q,
    with log w_k = log p(x, z_k) - log q(z_k | x).
``iwae_bound`` (``iwae_k``)
    The IWAE-k bound E[log (1/k) sum_{j<=k} w_j], averaged over the n_q/k disjoint groups of q's samples.
``log_likelihood``, ``log_likelihood_se``, ``proposal``
    The importance-sampled log p(x) = log (1/K) sum_k w_k over all K samples, with the weights under the
    proposal, w_k = p(x, z_k) / q_def(z_k | x) (a stochastic lower bound: it slightly underestimates
    log p(x)), and its Monte Carlo standard error: per datum by the delta method,
    se_n = sqrt((mean(w^2)/mean(w)^2 - 1) / K) for one stratum of draws, its stratified form for the two
    (:func:`~zoo.evaluation.defensive.log_mean_weight`); for the average, sqrt(sum_n se_n^2) / n. Where q
    is narrower than the posterior, or gives a state almost no probability, the weights of q alone are
    heavy-tailed or miss mass, and that estimate sits many of its own standard errors low; the defensive
    mixture bounds the weights, so the error is what its standard error says. ``proposal`` records
    which proposal made these figures (alpha, the inflation, the draws of each part).
``log_likelihood_data_se``
    The other uncertainty of the average: which data were evaluated. The spread of the
    per-datum log p(x) over the n data divided by sqrt(n): how far the average over a random
    subset of a test split may sit from the average over the whole split (conservative by
    the factor 1 / sqrt(1 - n/N_split)). On a subset of 1000 test images it is far above the
    Monte Carlo error, so a subset's figure can be compared with a paper's whole-test-set
    figure only within it.
``levels``, ``bits_per_dim_elbo``, ``bits_per_dim_nll``
    Where the model's likelihood is a probability over data with k levels per value (``data_levels``:
    2 for Bernoulli pixels, k for :mod:`zoo.core.levels`), -ELBO and -log p(x) are code lengths, and
    in bits per dimension they are nats / (D ln 2), D the values per datum (Theis et al. 2016). ``None``
    for a density (a Gaussian on [0, 1]: its "NLL" is a differential entropy, and can be negative).
``exact_log_likelihood``, ``elbo_gap``, ``is_error``
    Where the model has a closed-form ``log_marginal``: the exact log p(x), the gap
    log p(x) - ELBO (the KL from q to the true posterior), and IS - exact.
``active_units``
    Burda et al.'s count of latent units u with Cov_x(E_q[z_u | x]) > 0.01, where
    E_q[z | x] is the guide's analytic mean, or the mean of the K samples for guides
    (flows) that have none.
``kl_per_site``, ``active_units_per_site``
    The same two figures for each latent site s of ``model.latents`` (each layer of a
    hierarchical model): KL_s = E_q[log q(z_s | .) - log p(z_s | parents(z_s))], where q's and
    p's conditioning is whatever guide and model condition z_s on (for a chain z2 -> z1 -> x,
    KL_z1 is E_q[log q(z1 | x) - log p(z1 | z2)] and KL_z2 is E_q[log q(z2 | .) - log p(z2)]).
    The KL_s add up to ``kl``.
``psis_khat_*``, ``is_ess_*``
    The Pareto k-hat of each datum's K importance weights (arviz's PSIS). k-hat above
    0.7 means the importance-sampled log p(x) for that datum is unreliable
    (Yao et al. 2018, "Yes, but did it work?"); ``psis_khat_frac_over_0_7`` says how often.
    Where the weights take few distinct values (a discrete latent: they are bounded, and their tail has
    no Pareto shape to fit, so PSIS returns inf) k-hat does not apply (:func:`psis_khat`):
    ``psis_khat_not_applicable`` says for how many data and ``psis_khat_note`` why, and such a datum is
    judged by its effective sample size (sum w)^2 / sum w^2 instead (unreliable below
    :data:`PSIS_MIN_ESS`); ``is_ess_mean`` and ``is_ess_min`` summarize it for all data.

``conditional_log_likelihood``, ``conditional_accuracy``, ``view_log_likelihood``
    For a model that declares two or more ``views`` and a guide that encodes any subset of them
    (``encodes_views``, the product of experts): per ordered pair of views, "u|v", the conditional
    log-likelihood of view u given view v, as the difference of two IS estimates::

        log p(x_u | x_v)  ~=  log p^(x_u, x_v)  -  log p^(x_v)

    where p^(x_v) = (1/K) sum_k w_k, with z_k ~ q(z | x_v) (the single-view posterior) and
    w_k = p(x_v | z_k) p(z_k) / q(z_k | x_v), and p^(x_u, x_v) is ``log_likelihood`` above (the joint
    proposal q(z | x_u, x_v)). ``conditional_log_likelihood_self_normalized`` uses the single-view
    proposal for both terms, over the same samples::

        log p(x_u | x_v)  ~=  log sum_k w_k p(x_u | z_k)  -  log sum_k w_k

    the self-normalized IS estimate of E_{p(z | x_v)}[p(x_u | z)]. Both are consistent as K grows and,
    as differences of log-estimates, neither is a bound at finite K. The first is the more accurate
    when q(z | x_v) is much broader than p(z | x_u, x_v) (MNIST halves): both of its terms are then
    estimated with a proposal close to their own posterior, while the self-normalized form estimates
    p(x_u, x_v) with the broad single-view proposal and comes out low (tens of nats on MNIST halves at
    K = 500). For a categorical view u, ``conditional_accuracy["u|v"]`` is how
    often argmax_c p(x_u = c | x_v), with p(x_u = c | x_v) ~= sum_k w_k p(x_u = c | z_k) / sum_k w_k,
    is the datum's class. ``view_log_likelihood[v]`` is log p^(x_v), the IS estimate of a single
    view's marginal (a stochastic lower bound, like ``log_likelihood``). ``None`` for other models.

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

All figures are in nats per datum. Per-datum arrays come back in ``per_datum``.
"""
from __future__ import annotations

import math
import warnings
from typing import Dict, Tuple

import numpy as np
import pyro.poutine as poutine
import torch

from zoo.core.modes import evaluation_mode
from zoo.evaluation.defensive import GUIDE_PROPOSAL, as_proposal, log_mean_weight
from zoo.core.weights import per_datum_log_weights
from zoo.core.weights import per_datum_renyi_bound

__all__ = ["evaluate", "bound_per_datum", "conditional_log_likelihoods", "RESULT_KEYS", "PSIS_THRESHOLD", "bits_per_dim"]

PSIS_THRESHOLD = 0.7
#: Where k-hat does not apply (bounded weights, few distinct values), the effective sample size a datum's
#: weights need: bounded weights have a Pareto shape k <= 0, for which Vehtari et al. (2024) ask for
#: S > 10^(1 / (1 - k)) = 10 draws; the effective sample size stands in for S as the weights are unequal.
PSIS_MIN_ESS = 10
#: data_elbo's passes go on until its standard error is below this many nats per datum, or the cap
DATA_ELBO_TARGET_SE = 0.01
DATA_ELBO_MAX_PASSES = 400
ACTIVE_UNIT_THRESHOLD = 0.01

#: The documented keys of an evaluation result (README "results.json").
RESULT_KEYS = {
    "num_data": "number of data evaluated",
    "num_samples": "K, importance samples per datum",
    "elbo": "ELBO per datum, Monte Carlo over the K samples",
    "reconstruction": "E_q[log p(x|z)] per datum",
    "kl": "E_q[log q(z|x) - log p(z)] per datum",
    "iwae_k": "k of the reported IWAE bound",
    "iwae_bound": "IWAE-k bound per datum",
    "log_likelihood": "importance-sampled log p(x) per datum (K samples)",
    "log_likelihood_se": "Monte Carlo standard error of log_likelihood",
    "log_likelihood_data_se": "standard error of log_likelihood over the choice of data: per-datum sd / sqrt(n)",
    "nll": "-log_likelihood, the figure papers report",
    "levels": "k, levels per value when the likelihood is a probability over discrete data (2: Bernoulli), or null",
    "bits_per_dim_elbo": "-elbo / (D ln 2), the ELBO's code length in bits per dimension (discrete data), or null",
    "bits_per_dim_nll": "nll / (D ln 2), bits per dimension (discrete data), or null",
    "exact_log_likelihood": "closed-form log p(x) per datum, or null",
    "elbo_gap": "exact log p(x) - ELBO (else log_likelihood - ELBO), per datum",
    "is_error": "log_likelihood - exact_log_likelihood, or null",
    "active_units": "units with Cov_x(E_q[z_u|x]) > 0.01",
    "kl_per_site": "per latent site s: E_q[log q(z_s|.) - log p(z_s|parents)], summing to kl",
    "active_units_per_site": "per latent site: its units with Cov_x(E_q[z_u|x]) > 0.01",
    "num_latent_units": "total latent units",
    "psis_khat_mean": "mean Pareto k-hat of the per-datum importance weights (where it applies), or null",
    "psis_khat_max": "largest k-hat (where it applies), or null",
    "psis_khat_frac_over_0_7": "fraction of data with k-hat > 0.7 (IS estimate unreliable)",
    "psis_warning": "a sentence when any k-hat exceeds 0.7, else null",
    "conditional_log_likelihood": "per pair of views 'u|v': log p(x_u | x_v) = log p^(x_u, x_v) - log p^(x_v), "
                                  "IS with the joint and the single-view posteriors (models with views)",
    "conditional_log_likelihood_self_normalized": "per pair 'u|v': log p(x_u | x_v), self-normalized IS with "
                                                  "q(z | x_v) only (models with views)",
    "conditional_accuracy": "per pair 'u|v' with u categorical: accuracy of argmax p(x_u | x_v) (models with views)",
    "view_log_likelihood": "per view v: log p(x_v), IS with q(z | x_v) (models with views)",
    "global_latents": "names of the model's global latents theta (outside the data plate), or null; when set, "
                      "every per-datum figure above is given theta = theta_hat (global_point_estimate)",
    "global_guide": "the global guide: normal (mean-field Normal, unconstrained space) or delta (MAP), or null",
    "global_point_estimate": "what theta_hat is: the delta's value, or the Normal guide's median biject_to(c)(loc)",
    "data_elbo": "the data set's ELBO per datum, (E_q[sum_n log p(x_n, z_n | theta) - log q(z_n | x_n)] + "
                 "E_q[log p(theta) - log q(theta)]) / N, theta from its guide (delta: the MAP objective, not a bound)",
    "data_elbo_samples": "passes behind data_elbo, each a draw of theta and one z_n per datum",
    "data_elbo_se": "Monte Carlo standard error of data_elbo, sd of the passes / sqrt(passes), or null",
    "data_elbo_target_se": "the passes went on until data_elbo_se fell below this (or data_elbo_samples reached "
                           "the cap), or null",
    "proposal": "the importance-sampling proposal behind log_likelihood, its SE and the k-hats: kind "
                "('defensive' or 'guide'), alpha, inflation, df, the draws from q and from q_wide, the sites "
                "widened and those kept as q",
    "is_ess_mean": "mean over data of the weights' effective sample size (sum w)^2 / sum w^2",
    "is_ess_min": "smallest effective sample size",
    "psis_khat_not_applicable": "fraction of data whose k-hat does not apply (bounded weights with few distinct "
                                "values, or a degenerate tail); the k-hat figures are over the others",
    "psis_khat_note": "why k-hat does not apply where it does not, and how reliability is judged there, or null",
    "psis_frac_low_ess": "fraction of data without a k-hat whose effective sample size is below 10 (unreliable)",
    "log_likelihood_se_reliable": "fraction of data whose standard error is a precision: k-hat <= 0.7, or without a "
                                  "k-hat an ESS of at least 10",
    "log_likelihood_se_note": "why the standard error is not a precision for the other data, or null",
}


def _psis_summary(khat: torch.Tensor, reasons, ess: torch.Tensor) -> Dict:
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


#: the relative rounding error of a log-density summed in floating point, in units of the dtype's epsilon: a
#: standard error below ROUNDING_EPS * eps * |log p^| claims more than the arithmetic that made the estimate holds
ROUNDING_EPS = 16


def rounding_floor(se: torch.Tensor, log_p: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``se`` raised to the rounding error of ``log_p`` computed in ``dtype`` (:data:`ROUNDING_EPS`): where the weights
    are all but equal (a guide that is the exact posterior of a datum), the Monte Carlo error is ~0 and the error left
    is the arithmetic's."""
    return torch.maximum(se, ROUNDING_EPS * torch.finfo(dtype).eps * log_p.detach().abs().to(se.dtype))


def _khat_columns(khat, reasons, ess: torch.Tensor) -> Dict:
    """The per-datum k-hat columns of per_datum.npz, without NaN: ``psis_khat`` where a Pareto tail was fitted and
    +inf where none was, ``psis_khat_reason`` saying why not there ("" where it was), and
    ``log_likelihood_se_reliable``, whether the datum's SE is a precision (k-hat <= 0.7, or without a k-hat an
    effective sample size of at least 10)."""
    if khat is None:
        return {"psis_khat": None}
    applicable = ~torch.isnan(khat)
    reliable = torch.where(applicable, khat <= PSIS_THRESHOLD, ess.double().cpu() >= PSIS_MIN_ESS)
    return {"psis_khat": torch.where(applicable, khat, torch.full_like(khat, math.inf)),
            "psis_khat_reason": np.asarray([r or "" for r in reasons], dtype=str),
            "log_likelihood_se_reliable": reliable}


def _log_weight_chunks(model, guide, x, idx, N, num_samples: int, max_elements: int):
    """Yield LogWeights for the minibatch ``x = data[idx]`` in particle chunks of at most
    ``max_elements`` decoder outputs. Passing ``idx`` lets per-datum guides find their rows."""
    per_particle = x.shape[0] * max(1, x.shape[1])
    chunk = max(1, min(num_samples, max_elements // per_particle))
    done = 0
    while done < num_samples:
        k = min(chunk, num_samples - done)
        yield per_datum_log_weights(model, guide, x, idx=idx, N=N, num_particles=k)
        done += k


def _posterior_mean(name: str, parts, num_q: int) -> torch.Tensor:
    """E_q[z_name | x] per datum from the particle chunks ``parts``: the average over the first ``num_q``
    particles (those drawn from q) of the guide's analytic (conditional) mean where it has one, else of
    the samples."""
    if name in parts[0].guide_means:
        return torch.cat([p.guide_means[name].expand_as(p.latents[name]) for p in parts])[:num_q].mean(0)
    return torch.cat([p.latents[name] for p in parts])[:num_q].mean(0)


def _index_mean(site, parts, num_q: int) -> torch.Tensor:
    """E_q[one_hot(z) | x] of an index (``Categorical``) site, whose own mean is undefined (torch's is
    NaN): the average of the first ``num_q`` samples' one-hot vectors, ``[B, K]``."""
    return torch.cat([site.features(p.latents[site.name]) for p in parts])[:num_q].mean(0)


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


def psis_tail_size(K: int) -> int:
    """M, how many of the K largest weights PSIS fits its generalized Pareto tail to (arviz's rule)."""
    return int(math.ceil(min(K / 5.0, 3 * math.sqrt(K))))


def psis_khat(log_w: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Pareto k-hat per row of ``log_w`` ``[n, K]`` (arviz PSIS), and why a row has none.

    Returns ``(khat, not_applicable)``: ``khat`` is NaN where the tail fit means nothing, and
    ``not_applicable`` holds the reason there ("" elsewhere):

    - ``"few distinct weights"``: the M largest weights (:func:`psis_tail_size`) take fewer than M / 2
      distinct values. Weights that take a few values are bounded (a discrete latent, or a discrete
      proposal against a discrete posterior: q = (0.5, 0.5) against (0.6, 0.4) gives two), their tail
      has no Pareto shape to estimate, and arviz returns inf for ties. Their reliability is read from the
      effective sample size instead (:func:`effective_sample_size`);
    - ``"degenerate tail"``: the fit failed otherwise (inf or NaN).

    Rows whose weights are constant to 1e-4 nats (the proposal is the exact posterior) have k-hat 0
    (perfectly reliable).
    """
    import arviz as az
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _, khat = az.psislw(log_w)
    khat = np.asarray(khat, dtype=np.float64).reshape(-1)
    reason = np.full(khat.shape, "", dtype=object)
    M = psis_tail_size(log_w.shape[-1])
    with np.errstate(invalid="ignore"):           # inf - inf for data the model gives zero density
        flat = (log_w.max(-1) - log_w.min(-1)) < 1e-4
        tail = np.sort(log_w, axis=-1)[:, -M:]
        distinct = 1 + (np.diff(tail, axis=-1) > 1e-9 * np.maximum(1.0, np.abs(tail[:, 1:]))).sum(-1)
    few = (distinct < M / 2) & ~flat
    reason[few] = "few distinct weights"
    reason[~np.isfinite(khat) & ~few & ~flat] = "degenerate tail"
    khat[reason != ""] = np.nan
    khat[flat] = 0.0
    return khat, reason


def effective_sample_size(log_w: torch.Tensor) -> torch.Tensor:
    """Kish's effective sample size of each datum's weights, (sum_k w_k)^2 / sum_k w_k^2, from ``[K, B]``."""
    return torch.exp(2 * torch.logsumexp(log_w, 0) - torch.logsumexp(2 * log_w, 0))


def evaluate(model, guide, x: torch.Tensor, num_samples: int = 1000, iwae_k: int = 50,
             batch_size: int = 100, max_elements: int = 1 << 24, psis: bool = True,
             keep_reconstructions: int = 0, global_samples: int = 10, proposal="defensive",
             data_elbo_target_se: float = DATA_ELBO_TARGET_SE,
             data_elbo_max_passes: int = DATA_ELBO_MAX_PASSES) -> Dict:
    """Score ``guide`` and ``model`` on data ``x`` ``[n, D]``; see the module docstring for keys.

    ``guide`` is a zoo guide, or a Pyro guide function ``guide(x, idx=None, N=None)`` of your own,
    which is checked against the model and scored the same way (:func:`guides.user.from_pyro_guide`).

    ``max_elements`` bounds the number of decoder outputs held at once. Model and guide
    are scored in eval mode, so a relaxed guide proposes hard discrete samples and every
    figure is a bound on the true discrete model.

    ``proposal`` is the importance-sampling proposal behind ``log_likelihood``, its standard error and the
    k-hats: ``"defensive"`` (the default, :mod:`zoo.evaluation.defensive`), ``"guide"`` (q itself), or a
    :class:`~zoo.evaluation.defensive.DefensiveProposal`; results.json records it (``proposal``).

    For a model with global latents, ``data_elbo`` takes at least ``global_samples`` passes over ``x`` (a
    draw of theta each), and more until its standard error is below ``data_elbo_target_se`` nats per
    datum or ``data_elbo_max_passes`` are done.
    """
    proposal = as_proposal(proposal)
    model.validate_data(x, what="evaluation data")
    from guides.user import as_zoo_guide
    guide = as_zoo_guide(guide, model)           # a Pyro guide function of your own is wrapped and checked
    global_guide = getattr(guide, "global_guide", None)
    with evaluation_mode(model, guide), torch.no_grad():
        if global_guide is None:
            result = _evaluate(model, guide, x, num_samples, iwae_k, batch_size, max_elements, psis,
                               keep_reconstructions, model.log_marginal if model.has_log_marginal else None,
                               proposal)
            result.update(global_latents=None, global_guide=None, global_point_estimate=None, data_elbo=None,
                          data_elbo_samples=None, data_elbo_se=None, data_elbo_target_se=None)
            return result
        with global_guide.at_point_estimate() as theta_hat:
            result = _evaluate(model, guide, x, num_samples, iwae_k, batch_size, max_elements, psis,
                               keep_reconstructions, _conditional_log_marginal(model, theta_hat), proposal)
        elbo, se, passes = data_set_elbo(model, guide, x, global_samples, batch_size,
                                         target_se=data_elbo_target_se, max_passes=data_elbo_max_passes)
        result.update(global_latents=[s.name for s in global_guide.sites], global_guide=global_guide.kind,
                      global_point_estimate=global_guide.point_kind, data_elbo=elbo, data_elbo_samples=passes,
                      data_elbo_se=se, data_elbo_target_se=data_elbo_target_se)
        return result


def bits_per_dim(levels, dims: int, neg_elbo: float, nll: float) -> Dict:
    """``levels`` and the two code lengths in bits per dimension, nats / (D ln 2); ``None`` for a density."""
    scale = None if levels is None else 1.0 / (dims * math.log(2))
    return {"levels": levels, "bits_per_dim_elbo": None if scale is None else neg_elbo * scale,
            "bits_per_dim_nll": None if scale is None else nll * scale}


def _conditional_log_marginal(model, theta):
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


def _evaluate(model, guide, x, num_samples, iwae_k, batch_size, max_elements, psis, keep_reconstructions,
              log_marginal=None, proposal=GUIDE_PROPOSAL):
    n = x.shape[0]
    num_q, _ = proposal.allocation(num_samples)
    iwae_k = max(1, min(iwae_k, num_q))
    cols = {k: [] for k in ("elbo", "rec", "kl", "iwae", "ll", "se", "ess", "khat", "exact")}
    reasons = []
    site_kl = {s.name: [] for s in model.latents}
    z_means, recon, widened, kept = [], None, {}, []
    for i in range(0, n, batch_size):
        idx = torch.arange(i, min(i + batch_size, n), device=x.device)
        xb = x[idx]
        draws = proposal.draw(model, guide, xb, idx, n, num_samples, max_elements)
        parts = draws.parts
        widened.update(draws.widened)
        kept += [name for name in draws.kept if name not in kept]
        # the figures of q itself (ELBO, its parts, IWAE-k, active units) from the draws of q alone
        log_lik = draws.of_q(torch.cat([p.log_likelihood for p in parts]))
        kl_term = draws.of_q(torch.cat([p.log_q - p.log_prior for p in parts]))
        log_w = log_lik - kl_term                                           # [n_q, b]
        cols["rec"].append(log_lik.mean(0))
        cols["kl"].append(kl_term.mean(0))
        for name in site_kl:
            site_kl[name].append(draws.of_q(torch.cat([p.site_log_q[name] - p.site_log_prior[name]
                                                       for p in parts])).mean(0))
        cols["elbo"].append(log_w.mean(0))
        groups = num_q // iwae_k
        grouped = log_w[:groups * iwae_k].reshape(groups, iwae_k, -1)           # [n_q/k, k, b]
        cols["iwae"].append(torch.stack([per_datum_renyi_bound(g, 0.0) for g in grouped]).mean(0))
        # log p(x), its standard error, k-hat and ESS from all K draws, weighted under the proposal
        log_mean_w, se = log_mean_weight(draws.log_w, draws.num_q)
        se = rounding_floor(se, log_mean_w, draws.log_w.dtype)
        cols["ll"].append(log_mean_w)
        cols["se"].append(se)
        cols["ess"].append(effective_sample_size(draws.log_w))
        if psis:
            khat, reason = psis_khat(draws.log_w.T.double().cpu().numpy())
            cols["khat"].append(torch.from_numpy(khat))
            reasons += list(reason)
        if log_marginal is not None:
            cols["exact"].append(log_marginal(xb))
        # E_q[z | x] per latent, flattened per datum, for the active-unit count: the guide's
        # analytic mean where it has one (a sample mean would add Monte Carlo variance to
        # Cov_x and inflate the count), else the mean of the K samples. A site that a structured
        # guide conditions on other samples (z2 in q(z2 | z1, x)) has an analytic mean per sample
        # of z1; their average over the K samples is E_q[z2 | x] (Rao-Blackwellized).
        z_means.append(torch.cat([(_posterior_mean(s.name, parts, num_q) if s.form != "index"
                                   else _index_mean(s, parts, num_q)).reshape(xb.shape[0], -1)
                                  for s in model.latents] + [xb.new_zeros(xb.shape[0], 0)], dim=-1))
        if keep_reconstructions and recon is None:
            recon = (xb[:keep_reconstructions], parts[0].x_mean[0, :keep_reconstructions])
    col = {k: torch.cat(v).double().cpu() for k, v in cols.items() if v}
    z_mean = torch.cat(z_means).double()
    # no local unit (a model whose only latents are global): nothing to count, and var() of zero columns warns
    au_var = z_mean.var(0, unbiased=True) if n > 1 and z_mean.shape[1] else torch.zeros(z_mean.shape[1])
    active = au_var > ACTIVE_UNIT_THRESHOLD
    sizes = [s.value_size for s in model.latents]

    ll = col["ll"].mean().item()
    result = {
        "num_data": n,
        "num_samples": num_samples,
        "proposal": {**proposal.to_json(num_samples), "sites_widened": widened, "sites_kept": kept},
        "elbo": col["elbo"].mean().item(),
        "reconstruction": col["rec"].mean().item(),
        "kl": col["kl"].mean().item(),
        "iwae_k": iwae_k,
        "iwae_bound": col["iwae"].mean().item(),
        "log_likelihood": ll,
        "log_likelihood_se": (col["se"].pow(2).sum().sqrt() / n).item(),
        "log_likelihood_data_se": (col["ll"].std() / math.sqrt(n)).item() if n > 1 else None,
        "nll": -ll,
        **bits_per_dim(getattr(model, "data_levels", None), x.shape[1], -col["elbo"].mean().item(), -ll),
        "exact_log_likelihood": col["exact"].mean().item() if "exact" in col else None,
        "active_units": int(active.sum()),
        "kl_per_site": {name: torch.cat(v).double().mean().item() for name, v in site_kl.items()},
        "active_units_per_site": {s.name: int(a.sum()) for s, a in zip(model.latents, active.split(sizes))},
        "num_latent_units": int(z_mean.shape[1]),
        "is_ess_mean": col["ess"].mean().item(),
        "is_ess_min": col["ess"].min().item(),
    }
    reference = result["exact_log_likelihood"] if "exact" in col else ll
    result["elbo_gap"] = reference - result["elbo"]
    result["is_error"] = ll - result["exact_log_likelihood"] if "exact" in col else None
    if "khat" in col:
        result.update(_psis_summary(col["khat"], reasons, col["ess"]))
    conditional = None
    if len(model.views) >= 2 and getattr(guide, "encodes_views", False):
        conditional = conditional_log_likelihoods(model, guide, x, num_samples, batch_size, max_elements)
    result.update(conditional_log_likelihood=None, conditional_log_likelihood_self_normalized=None,
                  conditional_accuracy=None, view_log_likelihood=None)
    if conditional is not None:
        difference = {pair: col["ll"] - conditional["marginal"][pair.split("|")[1]].double().cpu()
                      for pair in conditional["conditional"]}
        result.update(conditional_log_likelihood={k: v.mean().item() for k, v in difference.items()},
                      conditional_log_likelihood_self_normalized={k: v.mean().item()
                                                                  for k, v in conditional["conditional"].items()},
                      conditional_accuracy={k: v.double().mean().item() for k, v in conditional["correct"].items()},
                      view_log_likelihood={k: v.mean().item() for k, v in conditional["marginal"].items()})
    result["per_datum"] = {"log_likelihood": col["ll"], "log_likelihood_se": col["se"],
                           "elbo": col["elbo"], **_khat_columns(col.get("khat"), reasons, col["ess"]),
                           "is_ess": col["ess"],
                           "exact_log_likelihood": col.get("exact"), "z_mean": z_mean.float()}
    if conditional is not None:
        result["per_datum"].update({f"conditional_log_likelihood[{k}]": v for k, v in difference.items()})
        result["per_datum"].update({f"conditional_log_likelihood_self_normalized[{k}]": v.double().cpu()
                                    for k, v in conditional["conditional"].items()})
    if recon is not None:
        result["reconstructions"] = recon
    return result


@torch.no_grad()
def conditional_log_likelihoods(model, guide, x: torch.Tensor, num_samples: int = 1000, batch_size: int = 100,
                                max_elements: int = 1 << 24) -> Dict[str, Dict[str, torch.Tensor]]:
    """Per datum, the self-normalized log p(x_u | x_v) for every ordered pair of the model's views, and
    each view's log p^(x_v) (module docstring).

    ``guide.given((v,))`` is the proposal q(z | x_v); the model observes every view, and its
    likelihood's ``log_prob_views`` gives each view's log p(x_u | z_k) at the same samples.
    Returns ``{"conditional": {"u|v": [n]}, "correct": {"u|v": [n] bool, u categorical},
    "marginal": {"v": [n]}}``. Call it in eval mode (:func:`evaluate` does).
    """
    views = model.views
    n = x.shape[0]
    out = {"conditional": {}, "correct": {}, "marginal": {}}
    for j, given in enumerate(views):
        proposal = guide.given((given.name,))
        cond = {u.name: [] for u in views if u is not given}
        correct = {u.name: [] for u in views if u is not given and u.likelihood == "categorical"}
        marginal = []
        for i in range(0, n, batch_size):
            idx = torch.arange(i, min(i + batch_size, n), device=x.device)
            xb = x[idx]
            parts = list(_log_weight_chunks(model, proposal, xb, idx, n, num_samples, max_elements))
            per_view = torch.cat([p.x_dist.log_prob_views(xb) for p in parts])               # [K, b, V]
            log_w = per_view[..., j] + torch.cat([p.log_prior - p.log_q for p in parts])     # log w_k, [K, b]
            K = log_w.shape[0]
            log_norm = torch.logsumexp(log_w, 0)
            marginal.append(log_norm - math.log(K))
            for t, target in enumerate(views):
                if target is given:
                    continue
                cond[target.name].append(torch.logsumexp(log_w + per_view[..., t], 0) - log_norm)
                if target.likelihood == "categorical":
                    probs = torch.cat([p.x_dist.parts[t].probs for p in parts])              # [K, b, C]
                    predictive = (torch.softmax(log_w, 0).unsqueeze(-1) * probs).sum(0)      # [b, C]
                    correct[target.name].append(predictive.argmax(-1) == target.of(xb).argmax(-1))
        out["marginal"][given.name] = torch.cat(marginal)
        for u, values in cond.items():
            out["conditional"][f"{u}|{given.name}"] = torch.cat(values)
        for u, values in correct.items():
            out["correct"][f"{u}|{given.name}"] = torch.cat(values)
    return out
