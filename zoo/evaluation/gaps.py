"""Inference suboptimality: the approximation gap and the amortization gap (Cremer, Li & Duvenaud 2018).

An amortized guide q_phi(z | x) falls short of log p(x) for two reasons. Let q* be the best member
*of the guide's own family* for each datum, fitted per datum with the model fixed. Then ::

    log p(x) - ELBO[q_phi]  =  [log p(x) - ELBO[q*]]  +  [ELBO[q*] - ELBO[q_phi]]
                               approximation gap          amortization gap
                               (the family is too          (the encoder does not output
                                narrow: KL(q* || p(z|x)))   each datum's best member)

Both are non-negative in exact arithmetic: ELBO[q] = log p(x) - KL(q || p(z | x)), and q* is fitted
starting from the encoder's own output, so its optimum is no worse than ELBO[q_phi]. As estimated they
are non-negative within Monte Carlo error: the refit is stochastic (Adam on sampled gradients, its last
iterate kept), and each ELBO is an average over samples.

"The same family", per guide family:

- ``amortized`` (mean-field across sites): for each datum the encoder outputs a diagonal Normal
  (real latents) or independent Bernoulli/categorical logits. q* is the per-datum ``meanfield``
  guide, the same distributions with free parameters per datum, started at the encoder's output
  (Cremer et al.'s "FFG").
- ``relaxed``: it is evaluated as the hard Bernoulli/categorical its logits define; q* is per-datum
  logits (``meanfield``), started at the encoder's logits.
- ``iaf``: a Normal base N(mu, sigma^2) pushed through the K IAF steps, which are conditioned on the
  encoder's hidden state h. The encoder outputs (mu, sigma, h) per datum; q* frees them per datum
  (tables started at the encoder's values) and keeps the autoregressive networks as trained: a
  per-datum flow with the amortized flow's steps.
- ``exact``: the posterior is a full-covariance Gaussian; q* is a per-datum full-covariance Gaussian,
  started at the exact posterior (both gaps are then 0: the oracle check).
- structured amortized guides q(z2 | z1, x) and per-datum guides are refused: the first's
  conditional heads read sampled values, so no table of per-datum numbers spans its family; the
  second has no amortization gap by construction.

The refit is :func:`zoo.training.refit.refit_local_guide` (converges on its own criterion). Every
figure is then estimated from ``num_samples`` fresh samples per datum of each guide: ELBO[q] as the
mean of the log-weights (Monte Carlo se sd(log w) / sqrt(K) per datum), and log p(x) as the exact
closed form where the model has one, else by importance sampling, log (1/K) sum_k w_k, with the
proposal (q_phi or q*) that gives the larger average (the tighter of two stochastic lower bounds;
which one is reported as ``log_likelihood_proposal``). Each importance sampler draws from the defensive
mixture of its guide (:mod:`zoo.evaluation.defensive`, recorded as ``proposal``), and each ELBO from
that mixture's draws of q alone. Standard errors come in two kinds, as in
:mod:`zoo.evaluation.harness`: ``*_se``, the Monte Carlo error of the average over these data (the
estimates of each difference treated as independent, which overstates it when they share samples),
and ``*_data_se``, the spread over data, sd_n / sqrt(n).

Reference: C. Cremer, X. Li and D. Duvenaud, "Inference Suboptimality in Variational Autoencoders",
ICML 2018, https://arxiv.org/abs/1801.03558.

Example::

    >>> import torch
    >>> from zoo.models import PPCA
    >>> from zoo.registry import build_guide
    >>> from dataclasses import replace
    >>> model = PPCA(x_dim=5, latent_dim=2)
    >>> gaps = inference_gaps(model, build_guide("amortized", model, hidden=(8,)), torch.randn(30, 5),
    ...                       num_samples=20, schedule=replace(FROM_ENCODER, max_epochs=30))
    >>> abs(gaps["approximation_gap"] + gaps["amortization_gap"] - gaps["total_gap"]) < 1e-9
    True
"""
from __future__ import annotations

import math
from typing import Dict, Optional

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from torch import nn

from guides.base import ZooGuide, site_distribution
from zoo.core.seeds import stream_seed
from zoo.core.contract import Borrowed
from zoo.core.errors import ZooError
from zoo.core.params import register_module
from zoo.core.plates import data_plate
from zoo.evaluation.defensive import as_proposal, log_mean_weight
from zoo.core.modes import evaluation_mode, frozen_parameters
from zoo.evaluation.estimators.psis import PSIS_THRESHOLD, psis_khat
from zoo.registry import build_guide
from zoo.rules import check_gaps
from zoo.training.refit import REFIT_LR_FROM_ENCODER, RefitSchedule, refit_local_guide

#: the per-datum refit of the gaps: it starts from the encoder's outputs, with the smaller step that suits them
FROM_ENCODER = RefitSchedule(lr=REFIT_LR_FROM_ENCODER)

__all__ = ["inference_gaps", "FROM_ENCODER", "local_guide", "LocalIAF", "LocalGaussian", "GAP_KEYS", "gaps_markdown",
           "same_family"]

#: The documented keys of a gaps result (``gaps.json``); all in nats per datum.
GAP_KEYS = {
    "log_likelihood": "log p(x): exact where the model has it, else IS with the better proposal",
    "log_likelihood_proposal": "where log p(x) came from: 'exact', 'amortized' or 'per-datum' (the IS proposal)",
    "elbo_amortized": "ELBO[q_amortized], the trained encoder's bound",
    "elbo_local": "ELBO[q*], the per-datum member of the same family, refitted to convergence",
    "approximation_gap": "log p(x) - ELBO[q*]",
    "amortization_gap": "ELBO[q*] - ELBO[q_amortized]",
    "total_gap": "log p(x) - ELBO[q_amortized] = approximation_gap + amortization_gap",
}


def same_family(guide) -> str:
    """One line naming q*'s family for ``guide``; refuses (ZooError) where none is defined."""
    check_gaps(guide)
    family = getattr(guide, "family", type(guide).__name__)
    if family in ("amortized", "relaxed"):
        return ("per-datum meanfield: a diagonal Normal or Bernoulli/categorical logits per datum, from the "
                "encoder's output")
    if family == "iaf":
        return ("per-datum IAF: the base (mu, sigma) and the flows' context h free per datum, from the encoder's "
                "values; the autoregressive networks as trained")
    return "per-datum full-covariance Gaussian, from the exact posterior"


class LocalIAF(ZooGuide):
    """The ``iaf`` family per datum: q*(z | n) = IAF_h_n(N(mu_n, sigma_n^2)), the flows borrowed from a
    trained :class:`~guides.iaf.IAF` guide and fixed, (mu_n, sigma_n, h_n) free per datum.

    Arguments:
        model: the zoo model.
        iaf: the trained (non-structured) IAF guide.
        x: the data ``[n, D]`` whose encoder outputs start the tables.
    """

    family = "iaf (per datum)"
    amortized = False
    normal_sites = False

    def __init__(self, model, iaf, x: torch.Tensor):
        super().__init__(model, x.shape[0])
        self._iaf = Borrowed(iaf)
        with torch.no_grad(), evaluation_mode(iaf):
            h, raw = iaf.encode(x)
        self.context = nn.Parameter(h.detach().clone())
        self.raw = nn.ParameterDict({s.name: nn.Parameter(raw[s.name].detach().clone()) for s in self.sites})

    def forward(self, x=None, idx=None, N=None):
        register_module("local_iaf", self)
        idx = torch.arange(self.num_data, device=self.context.device) if idx is None else idx
        with data_plate(x, idx, self.num_data if N is None else N):
            for s in self.sites:
                base = site_distribution(s, self.raw[s.name][idx])
                pyro.sample(s.name, self._iaf.module.posterior_distribution(s.name, self.context[idx], base))


class LocalGaussian(ZooGuide):
    """A full-covariance Gaussian per datum and site, q*(z | n) = N(m_n, L_n L_n^T), started at the
    exact posterior of a model that has one (the per-datum family of the ``exact`` guide).

    L_n is lower triangular with a positive diagonal, stored as its strictly lower part and log diagonal.
    """

    family = "gaussian (per datum)"
    amortized = False

    def __init__(self, model, x: torch.Tensor):
        super().__init__(model, x.shape[0])
        bad = [s.name for s in self.sites if len(s.event_shape) != 1]
        if bad:
            raise ZooError(f"a per-datum full-covariance Gaussian needs 1-D latents; {bad} are not")
        with torch.no_grad():
            posterior = model.posterior(x)
        self.loc = nn.ParameterDict({s.name: nn.Parameter(posterior[s.name].loc.detach().clone())
                                     for s in self.sites})
        tril = {s.name: posterior[s.name].scale_tril.detach().expand(x.shape[0], s.numel, s.numel)
                for s in self.sites}
        self.off_diagonal = nn.ParameterDict({k: nn.Parameter(torch.tril(L, -1).clone()) for k, L in tril.items()})
        self.log_diagonal = nn.ParameterDict({k: nn.Parameter(torch.log(torch.diagonal(L, dim1=-2, dim2=-1)).clone())
                                              for k, L in tril.items()})

    def scale_tril(self, name: str, idx) -> torch.Tensor:
        return torch.tril(self.off_diagonal[name][idx], -1) + torch.diag_embed(torch.exp(self.log_diagonal[name][idx]))

    def forward(self, x=None, idx=None, N=None):
        register_module("local_gaussian", self)
        idx = torch.arange(self.num_data, device=next(self.parameters()).device) if idx is None else idx
        with data_plate(x, idx, self.num_data if N is None else N):
            for s in self.sites:
                pyro.sample(s.name, dist.MultivariateNormal(self.loc[s.name][idx], scale_tril=self.scale_tril(s.name, idx)))


def local_guide(guide, model, x: torch.Tensor) -> nn.Module:
    """q*'s family for ``guide`` (see :func:`same_family`), one row per datum of ``x``, started at ``guide``'s
    own output on ``x``."""
    same_family(guide)
    if guide.family == "exact":
        return LocalGaussian(model, x).to(x.device)
    if guide.family == "iaf":
        return LocalIAF(model, guide, x).to(x.device)
    # bind=False: a model that computes with its guide (a VampPrior) keeps the trained encoder, which q* is not
    local = build_guide("meanfield", model, num_data=x.shape[0], bind=False).to(x.device)
    with torch.no_grad(), evaluation_mode(guide):
        _, raw = guide.encode(x)
        for s in model.latents:
            if s.support == "real":
                loc, scale = raw[s.name].chunk(2, dim=-1)
                getattr(local, f"{s.name}_loc").copy_(loc.reshape(-1, *s.event_shape))
                getattr(local, f"{s.name}_log_scale").copy_(
                    torch.log(F.softplus(scale) + 1e-5).reshape(-1, *s.event_shape))
            else:
                getattr(local, f"{s.name}_logits").copy_(raw[s.name])
    return local


@torch.no_grad()
def per_datum_estimates(model, guide, x: torch.Tensor, num_samples: int, batch_size: int = 100,
                        max_elements: int = 1 << 24, psis: bool = True, proposal="defensive") -> Dict[str, torch.Tensor]:
    """Per datum of ``x``: the ELBO (mean log w over the draws from q) and its Monte Carlo se, the IS log p(x)
    under ``proposal`` (:mod:`zoo.evaluation.defensive`) and its delta-method se, and the PSIS k-hat of those
    K = ``num_samples`` weights (NaN where it does not apply); each ``[n]``, float64."""
    proposal = as_proposal(proposal)
    n = x.shape[0]
    cols = {k: [] for k in ("elbo", "elbo_se", "ll", "ll_se", "khat")}
    with evaluation_mode(model, guide):
        for i in range(0, n, batch_size):
            idx = torch.arange(i, min(i + batch_size, n), device=x.device)
            draws = proposal.draw(model, guide, x[idx], idx, n, num_samples, max_elements, keep_observations=0)
            log_w = draws.of_q(torch.cat([p.log_w for p in draws.parts])).double()          # [n_q, b], q's own
            K = log_w.shape[0]
            cols["elbo"].append(log_w.mean(0))
            cols["elbo_se"].append(log_w.std(0) / math.sqrt(K) if K > 1 else torch.zeros_like(log_w[0]))
            ll, ll_se = log_mean_weight(draws.log_w.double(), draws.num_q)
            cols["ll"].append(ll)
            cols["ll_se"].append(ll_se)
            if psis:
                cols["khat"].append(torch.from_numpy(psis_khat(draws.log_w.T.double().cpu().numpy())[0]))
    return {k: torch.cat(v).cpu().double() for k, v in cols.items() if v}


def _mean_and_errors(per_datum: torch.Tensor, mc_se: Optional[torch.Tensor]):
    """(mean, its Monte Carlo se from per-datum se's, its data se sd / sqrt(n))."""
    n = per_datum.numel()
    return (per_datum.mean().item(),
            (mc_se.pow(2).sum().sqrt() / n).item() if mc_se is not None else 0.0,
            (per_datum.std() / math.sqrt(n)).item() if n > 1 else None)


def inference_gaps(model, guide, x: torch.Tensor, *, num_samples: int = 1000, schedule: RefitSchedule = FROM_ENCODER,
                   seed: int = 0, proposal="defensive", reference=None) -> Dict:
    """The approximation and amortization gaps of the amortized ``guide`` on data ``x`` (keys: :data:`GAP_KEYS`,
    each with ``_se`` and ``_data_se``; ``refit``: what the per-datum refit did; ``per_datum``: arrays;
    ``proposal``: the importance-sampling proposal behind an IS log p(x), :mod:`zoo.evaluation.defensive`).

    ``schedule``: how q* is refitted per datum (:class:`~zoo.training.refit.RefitSchedule`); the default,
    :data:`FROM_ENCODER`, starts from the encoder's outputs with the smaller step that suits them, and
    ``dataclasses.replace(FROM_ENCODER, max_epochs=...)`` changes one setting and keeps that step.

    ``reference``: an :class:`~zoo.evaluation.ais.AnnealedImportanceSampling` to take log p(x) from instead of the
    better of the two IS estimates (AIS starting from the refitted q*, the closest start there is); a model with a
    closed-form log p(x) uses that whatever is asked. ``log_likelihood_proposal`` says which reference was used."""
    proposal = as_proposal(proposal)
    family = same_family(guide)
    model.validate_data(x, what="data for the inference gaps")
    local = local_guide(guide, model, x)
    with frozen_parameters(guide):
        refit = refit_local_guide(model, local, x, schedule, seed=seed)
    pyro.set_rng_seed(stream_seed(seed, "gaps"))
    amortized = per_datum_estimates(model, guide, x, num_samples, proposal=proposal)
    fitted = per_datum_estimates(model, local, x, num_samples, proposal=proposal)
    exact = model.log_marginal(x) if model.has_log_marginal else None
    if exact is not None:
        ll, ll_se, chosen_name, khat = exact.detach().double().cpu(), torch.zeros(x.shape[0], dtype=torch.float64), \
            "exact", None
    elif reference is not None:
        ais = reference.estimate(model, local, x)
        ll, ll_se, khat = ais.log_likelihood, ais.log_likelihood_se, None
        chosen_name = (f"AIS from q*, T {reference.num_temperatures}, {reference.num_chains} chains, "
                       f"{reference.leapfrog_steps} leapfrog steps")
    else:
        chosen_name = "per-datum" if fitted["ll"].mean() >= amortized["ll"].mean() else "amortized"
        chosen = fitted if chosen_name == "per-datum" else amortized
        ll, ll_se, khat = chosen["ll"], chosen["ll_se"], chosen.get("khat")
    approximation = ll - fitted["elbo"]
    amortization = fitted["elbo"] - amortized["elbo"]
    result = {"num_data": x.shape[0], "num_samples": num_samples, "same_family": family,
              "log_likelihood_proposal": chosen_name, "proposal": proposal.to_json(num_samples)}
    for key, per_datum, mc_se in (
            ("log_likelihood", ll, ll_se),
            ("elbo_amortized", amortized["elbo"], amortized["elbo_se"]),
            ("elbo_local", fitted["elbo"], fitted["elbo_se"]),
            ("approximation_gap", approximation, (ll_se.pow(2) + fitted["elbo_se"].pow(2)).sqrt()),
            ("amortization_gap", amortization, (fitted["elbo_se"].pow(2) + amortized["elbo_se"].pow(2)).sqrt()),
            ("total_gap", ll - amortized["elbo"], (ll_se.pow(2) + amortized["elbo_se"].pow(2)).sqrt())):
        result[key], result[f"{key}_se"], result[f"{key}_data_se"] = _mean_and_errors(per_datum, mc_se)
    # the three gaps are differences of the same three averages: make them add up exactly as printed
    result["total_gap"] = result["approximation_gap"] + result["amortization_gap"]
    if khat is not None:
        result["psis_khat_frac_over_0_7"] = (khat > PSIS_THRESHOLD).double().mean().item()
    result["refit"] = refit.to_json()
    result["per_datum"] = {"log_likelihood": ll, "elbo_amortized": amortized["elbo"], "elbo_local": fitted["elbo"],
                           "approximation_gap": approximation, "amortization_gap": amortization}
    return result


def gaps_markdown(result: Dict) -> str:
    """The gaps as a Markdown table (nats per datum, ± Monte Carlo se, ± data se)."""
    def row(label, key):
        data_se = result.get(f"{key}_data_se")
        return (f"| {label} | {result[key]:.3f} | {result[f'{key}_se']:.3f} | "
                f"{'–' if data_se is None else f'{data_se:.3f}'} |")
    refit = result["refit"]
    lines = ["| quantity | nats per datum | ± MC se | ± data se |", "|---|---|---|---|",
             row(f"log p(x) ({result['log_likelihood_proposal']})", "log_likelihood"),
             row("ELBO[q*] (per datum, refitted)", "elbo_local"),
             row("ELBO[q amortized]", "elbo_amortized"),
             row("approximation gap log p(x) − ELBO[q*]", "approximation_gap"),
             row("amortization gap ELBO[q*] − ELBO[q amortized]", "amortization_gap"),
             row("total gap log p(x) − ELBO[q amortized]", "total_gap"),
             "",
             f"{result['num_data']} data, K = {result['num_samples']} samples per datum and guide. q*: "
             f"{result['same_family']}. Refit: {refit['estimator']}, Adam lr {refit['lr']}, "
             + (f"converged after {refit['epochs']} epochs (relative gain < {refit['tol']:g} over {refit['window']} "
                f"epochs)" if refit["converged"] else
                f"NOT converged: stopped at the cap of {refit['max_epochs']} epochs")
             + f", {refit['seconds']:.0f} s."]
    if result.get("psis_khat_frac_over_0_7"):
        lines.append(f"PSIS: {result['psis_khat_frac_over_0_7']:.1%} of data have k-hat > {PSIS_THRESHOLD} for the "
                     f"log p(x) proposal: their IS estimate is unreliable.")
    return "\n".join(lines)
