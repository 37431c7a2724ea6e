"""Per-datum reliability of log p(x) from agreement between independent replicas.

One run of AIS or importance sampling cannot see the mass its chains or draws never reach: chains that start in
one mode of a two-mode posterior and stay there, or discrete states that never switch, give final weights with a
healthy effective sample size and a small standard error around the wrong value. So the estimate of each datum is
made R times, **independently and from different starts**, and is called reliable only where the replicas agree
with each other within their own stated errors and each replica's own chains or weights pass their checks.

**Replicas.** Replica r (r = 1..R) gives l_r = log Z^_r of a datum and its delta-method standard error s_r. Each
uses its own seed and its own start, cycling through :data:`AIS_STARTS` (AIS: the guide q(z | x), the prior p(z),
the guide with every scale multiplied by :data:`WIDE_INFLATION` and its discrete sites uniform, the prior again)
or :data:`IS_STARTS` (importance sampling: the guide alone through the harness, the prior, the harness's defensive
mixture, the prior again, the widened guide). The prior comes twice in four: a guide that settled on one mode
passes that mode to its widened copy too, and where only one replica reaches the mass the others miss, that
replica's noise bounds the test's power (the calibration exam measured it). Every Z^_r is an unbiased estimate of p(x) whatever its start (Neal
2001), so they differ only by noise if each has found the posterior's mass; where one start misses a mode that
another reaches, they differ by more than their SEs say.

**The agreement test** is Cochran's Q, the between-replica statistic of a meta-analysis::

    l_bar = sum_r l_r / s_r^2 / sum_r 1 / s_r^2,        Q = sum_r (l_r - l_bar)^2 / s_r^2  ~  chi^2_(R - 1)

If every replica is normal about the same value with its stated SE (the assumption each single run already makes
to quote estimate ± 1.96 SE), Q is exactly chi-square with R - 1 degrees of freedom, so flagging Q above its
1 - :data:`ALPHA` quantile has the false-alarm rate ALPHA per datum, whatever R and however unequal the SEs.
It is the likelihood-ratio test of a common mean with known variances, the test with the most power against the
alternative "some replicas sit elsewhere" that weighs each replica by its precision. Two alternatives were weighed:

- the range max_r l_r - min_r l_r against a few pooled SEs: its null distribution depends on R and on the ratio of
  the SEs (unequal SEs, as a prior start and a guide start give, make a fixed multiple of a pooled SE too strict
  for the noisy replica and too loose for the precise one), so its false-alarm rate is not the one it states;
- a rank-normalized split-R-hat (Vehtari et al. 2021) over the replicas' chains: it needs draws of one target,
  whereas AIS's chains end in weighted states of the posterior, and with one number per replica it reduces to a
  ratio of between- to within-replica variance, which is Q / (R - 1) with the within part taken from the SEs.

Each s_r is widened in quadrature by :data:`SE_TOLERANCE` nats, so that replicas whose SEs are at the floor of
rounding (the exact posterior as the guide) are not called apart for differences no table shows.

**Estimated SEs.** The s_r are themselves estimates, from C chains or K draws, and one from 8 AIS chains is far from
exact: with Q against chi^2_(R-1), replicas whose SEs are estimated from 8 normal draws are flagged at several times
the stated 1 % (``tests/test_replicas.py``).
So the threshold is Welch's (1951) for equal means with unequal *estimated* variances: with nu_r the degrees of
freedom of s_r (AIS: the chains less one; importance sampling: the weights' effective sample size less one, so
that a few dominant weights count as few draws), w_r = 1 / s_r^2 and L = sum_r (1 - w_r / sum w)^2 / nu_r, Q / ((R - 1) (1 + 2 (R - 2) L / (R^2 - 1))) is
F(R - 1, (R^2 - 1) / (3 L)) (:func:`agreement_threshold`). As nu_r grows it is chi^2_(R-1) again (K = 1000 draws
of a good proposal), and where the replicas' weights are few it asks for more before it calls them apart.
``tests/test_replicas.py`` checks both rates on replicas drawn from their stated normal, and the calibration exam
(``benchmarks/calibration_exam.py``) measures the rate and the power against exact answers.

**The chains' own evidence**, per replica (AIS, :class:`~zoo.evaluation.ais.AISResult`):

- the HMC steps' mean acceptance probability at least :data:`MIN_ACCEPTANCE`: below it the real sites barely move
  and each chain's weight is that of its start;
- discrete states that switch: where the chains end in more than one discrete state but at beta >= 1/2 fewer than
  :data:`MIN_SWITCH_RATE` of their Gibbs and MH transitions changed a state, chains sit in different modes of the
  posterior without moving between them (the discrete analogue of a between-chain variance far above the
  within-chain one); chains that all end in one state never moving is what a concentrated posterior does, and is
  not flagged;
- the weights' effective sample size: AIS's (sum w)^2 / sum w^2 of the final weights at least
  :data:`~zoo.evaluation.ais.MIN_ESS_FRACTION` of the chains and at least :data:`~zoo.evaluation.ais.MIN_ESS`; importance sampling's PSIS verdict (k-hat <= 0.7, or
  without a k-hat an ESS of at least 10; :mod:`zoo.evaluation.estimators.psis`).

A datum is reliable only when all hold, and each flag says why, in a short string per datum
(``"replicas disagree (Q 41.2 > 16.3)"``, ``"prior: acceptance 0.02"``, ``"guide: ESS 1.30 < 2"``,
``"guide: discrete states never switched"``).

**The pooled estimate** is that of all R replicas together: log p^(x) = log (1/R) sum_r Z^_r (each unbiased, so
their mean is), with the larger of two standard errors: the within-replica one, sqrt(sum_r Z^_r^2 s_r^2) /
(R mean_r Z^_r), which the delta method gives from the replicas' own SEs and which is the precise one when they
agree, and the between-replica one, sd_r(Z^_r) / (sqrt(R) mean_r Z^_r), which sees replicas that are off by more
than their SEs. The latter is estimated with R - 1 degrees of freedom only, so it is multiplied by
t_(R-1, 0.975) / 1.96 (1.62 for R = 4): estimate ± 1.96 SE is then Student's interval where the spread rules.

References: W. G. Cochran, "The combination of estimates from different experiments", Biometrics 10, 1954.
R. Grosse, Z. Ghahramani and R. P. Adams, "Sandwiching the marginal likelihood using bidirectional Monte Carlo",
2015, https://arxiv.org/abs/1511.02543. A. Vehtari, A. Gelman, D. Simpson, B. Carpenter and P.-C. Bürkner,
"Rank-normalization, folding, and localization: an improved R-hat", Bayesian Analysis 16, 2021.

Example::

    >>> import torch
    >>> from zoo.evaluation.replicas import Replica, judge
    >>> agree = [Replica("guide", s, torch.tensor([-3.00, -2.0]), torch.tensor([0.02, 0.02])) for s in range(3)]
    >>> off = Replica("prior", 9, torch.tensor([-2.70, -2.0]), torch.tensor([0.02, 0.02]))
    >>> verdict = judge(agree + [off])
    >>> verdict.reliable.tolist(), verdict.reasons[0]
    ([False, True], 'replicas disagree (Q 158.8 > 11.3)')
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, replace
from typing import Dict, List, Optional, Sequence

import torch
from pyro.poutine.messenger import Messenger
from torch import nn

from zoo.core.errors import ZooError
from zoo.core.seeds import REPLICA_STRIDE
from zoo.core.weights import is_subsample_site
from zoo.evaluation.ais import MIN_ESS, MIN_ESS_FRACTION, AnnealedImportanceSampling, annealing_start
from zoo.evaluation.defensive import GUIDE_PROPOSAL, DefensiveProposal, widen
from zoo.evaluation.estimators.psis import PSIS_MIN_ESS, PSIS_THRESHOLD

__all__ = ["Replication", "Replica", "Verdict", "judge", "cochran_q", "chi2_quantile", "pool", "WidenedGuide",
           "replicated_ais", "replicated_importance_sampling", "ais_replica", "ais_starts", "reason_array", "t_quantile", "f_quantile", "agreement_threshold", "AIS_STARTS", "IS_STARTS", "ALPHA", "SE_TOLERANCE",
           "MIN_ACCEPTANCE", "MIN_SWITCH_RATE", "WIDE_INFLATION", "DEFAULT_AIS_REPLICAS", "DEFAULT_IS_REPLICAS",
           "MAX_REPLICAS", "check_replicas"]

#: the agreement test's false-alarm rate per datum, where each replica is normal with its stated SE
ALPHA = 0.01
#: nats added in quadrature to each replica's SE before the test (differences below it are not the question)
SE_TOLERANCE = 0.005
#: below this mean acceptance probability of its HMC steps a replica's real sites have not moved
MIN_ACCEPTANCE = 0.05
#: below this share of transitions changing a discrete state (beta >= 1/2), chains in different states are stuck
MIN_SWITCH_RATE = 0.01
#: the widened guide's scale over the guide's
WIDE_INFLATION = 2.0
#: where the replicas start, in turn (module docstring)
AIS_STARTS = ("guide", "prior", "wide", "prior")
IS_STARTS = ("guide", "prior", "defensive", "prior", "wide")
#: the starts of SMC's replicas, in turn: each replica is a whole SMC run (its own R copies give its SE), so two
#: starts already double the cost; the prior is the one a guide that settled on one mode cannot mislead
SMC_STARTS = ("guide", "prior")
#: the standard normal's 97.5 % quantile: estimate +- Z_975 SE is the nominal 95 % interval
Z_975 = 1.959963984540054
DEFAULT_AIS_REPLICAS = 4
#: the most replicas one evaluation runs: each is a whole estimate (beyond a few dozen, more temperatures or chains
#: buy more than more replicas), and a larger count is refused before any is started
MAX_REPLICAS = 64
DEFAULT_IS_REPLICAS = 4


@dataclass(frozen=True)
class Replication:
    """How many independent estimates of each datum :func:`replicated_ais` and :func:`replicated_importance_sampling`
    make, and how they are judged: ``replicas`` runs, the r-th from ``starts[r % len(starts)]`` (``None``: the
    estimator's default, :data:`AIS_STARTS` or :data:`IS_STARTS`) with seed ``seed + 1009 r``, agreement tested at
    the false-alarm rate ``alpha`` per datum."""
    replicas: int = DEFAULT_AIS_REPLICAS
    seed: int = 0
    starts: Optional[Sequence[str]] = None
    alpha: float = ALPHA


@dataclass
class Replica:
    """One independent estimate of every datum's log p(x): ``log_likelihood`` and ``se`` ``[n]``, and ``problems``,
    one string per datum naming what its own checks found ("" where none)."""

    start: str
    seed: int
    log_likelihood: torch.Tensor
    se: torch.Tensor
    problems: Optional[List[str]] = None
    #: per datum, the verdict of the single run's own rule before replicas (AIS: the final weights' ESS at least a
    #: tenth of the chains; IS: the PSIS verdict), kept to compare with
    alone: Optional[torch.Tensor] = None
    #: per datum, the degrees of freedom the SE is estimated with (the weights' ESS less one; None: taken as known)
    dof: Optional[torch.Tensor] = None

    def __post_init__(self):
        self.log_likelihood = self.log_likelihood.detach().double().cpu()
        self.se = self.se.detach().double().cpu()
        if self.problems is None:
            self.problems = [""] * self.log_likelihood.shape[0]


def chi2_quantile(p: float, dof: int) -> float:
    """The p-quantile of chi-square with ``dof`` degrees of freedom, by bisection on its CDF, the regularized
    incomplete gamma P(dof / 2, x / 2) (no SciPy).

    >>> round(chi2_quantile(0.95, 1), 3), round(chi2_quantile(0.99, 3), 3)
    (3.841, 11.345)
    """
    if not 0.0 < p < 1.0 or dof < 1:
        raise ValueError(f"chi2_quantile needs 0 < p < 1 and dof >= 1, got {p}, {dof}")
    a = torch.tensor(dof / 2.0, dtype=torch.float64)
    lo, hi = 0.0, float(dof) + 10.0 * math.sqrt(2.0 * dof) + 50.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if float(torch.special.gammainc(a, torch.tensor(mid / 2.0, dtype=torch.float64))) < p:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def t_quantile(p: float, dof: int) -> float:
    """The p-quantile (p > 1/2) of Student's t with ``dof`` degrees of freedom, by bisection on its CDF integrated
    from the density on a fine grid (no SciPy; to about 1e-4).

    >>> round(t_quantile(0.975, 3), 2), round(t_quantile(0.975, 1), 1)
    (3.18, 12.7)
    """
    if not 0.5 < p < 1.0 or dof < 1:
        raise ValueError(f"t_quantile needs 1/2 < p < 1 and dof >= 1, got {p}, {dof}")
    nu = float(dof)
    log_c = math.lgamma((nu + 1) / 2) - math.lgamma(nu / 2) - 0.5 * math.log(nu * math.pi)

    def cdf(x: float) -> float:
        grid = torch.linspace(0.0, x, 20001, dtype=torch.float64)
        density = torch.exp(log_c - (nu + 1) / 2 * torch.log1p(grid ** 2 / nu))
        return 0.5 + float(torch.trapezoid(density, grid))
    lo, hi = 0.0, 1.0
    while cdf(hi) < p:
        lo, hi = hi, 2 * hi
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if cdf(mid) < p else (lo, mid)
    return 0.5 * (lo + hi)


def _f_cdf(f: torch.Tensor, d1: int, nu: torch.Tensor) -> torch.Tensor:
    """P(F(d1, nu) <= f) elementwise: E_s[P(d1 / 2, f d1 s / 2)], s ~ chi^2_nu / nu, on a grid of u = log s."""
    nu = nu[:, None]
    u = torch.linspace(-30.0, 8.0, 1000, dtype=torch.float64)
    s = u.exp()[None]
    log_density = (nu / 2) * torch.log(nu / 2) - torch.lgamma(nu / 2) + (nu / 2) * u[None] - (nu / 2) * s
    weight = torch.softmax(log_density, -1)                  # Gamma(nu / 2, rate nu / 2) in u, on the even grid
    a = torch.tensor(d1 / 2.0, dtype=torch.float64)
    return (torch.special.gammainc(a, f[:, None] * d1 * s / 2) * weight).sum(-1)


_F_TABLES: Dict = {}
#: the denominator degrees of freedom at which F's quantile is tabulated (interpolated in log nu between them)
_F_NU = torch.logspace(math.log10(0.5), 6, 200, dtype=torch.float64)


def f_quantile(p: float, d1: int, d2: torch.Tensor) -> torch.Tensor:
    """The p-quantile of Snedecor's F(d1, d2) for each of the denominator degrees of freedom ``d2`` (inf: chi^2_d1 /
    d1): tabulated once per (p, d1) by bisection on the CDF (:func:`_f_cdf`; no SciPy) and interpolated log-log.

    >>> [round(v, 2) for v in f_quantile(0.99, 3, torch.tensor([7.0, 15.0, math.inf])).tolist()]
    [8.45, 5.42, 3.78]
    """
    key = (p, d1)
    if key not in _F_TABLES:
        lo, hi = torch.zeros_like(_F_NU), torch.full_like(_F_NU, 1.0)
        while True:
            low = _f_cdf(hi, d1, _F_NU) < p
            if not bool(low.any()):
                break
            hi = torch.where(low, 2 * hi, hi)
        for _ in range(40):
            mid = 0.5 * (lo + hi)
            below = _f_cdf(mid, d1, _F_NU) < p
            lo, hi = torch.where(below, mid, lo), torch.where(below, hi, mid)
        _F_TABLES[key] = 0.5 * (lo + hi)
    table, limit = _F_TABLES[key], chi2_quantile(p, d1) / d1
    d2 = d2.double().reshape(-1)
    position = (d2.clamp(min=float(_F_NU[0])).log() - math.log(float(_F_NU[0]))) \
        / (math.log(float(_F_NU[1])) - math.log(float(_F_NU[0])))
    i = position.floor().clamp(max=len(_F_NU) - 2).long()
    t = (position - i).clamp(0.0, 1.0)
    value = torch.exp(table[i].log() * (1 - t) + table[i + 1].log() * t)
    return torch.where(torch.isfinite(d2) & (d2 < float(_F_NU[-1])), value, torch.full_like(d2, limit))


def agreement_threshold(se: torch.Tensor, dof: Optional[torch.Tensor], alpha: float = ALPHA,
                        tolerance: float = SE_TOLERANCE) -> torch.Tensor:
    """The value of Cochran's Q above which the replicas disagree, per datum, from ``[R, n]`` SEs and the degrees of
    freedom each SE is estimated with (None: known, Q ~ chi^2_(R-1)). With estimated SEs this is Welch's (1951) test
    of equal means with unequal variances: with w_r = 1 / s_r^2 and L = sum_r (1 - w_r / sum w)^2 / nu_r,
    Q / (R - 1) / (1 + 2 (R - 2) L / (R^2 - 1)) ~ F(R - 1, (R^2 - 1) / (3 L))."""
    R = se.shape[0]
    if dof is None:
        return torch.full(se.shape[1:], chi2_quantile(1.0 - alpha, R - 1), dtype=torch.float64)
    weight = 1.0 / (se.double().pow(2) + tolerance ** 2)
    share = weight / weight.sum(0)
    lam = ((1 - share).pow(2) / dof.double().clamp(min=1.0)).sum(0)
    nu_w = torch.where(lam > 0, (R * R - 1) / (3 * lam.clamp(min=1e-300)), torch.full_like(lam, math.inf))
    return (R - 1) * f_quantile(1.0 - alpha, R - 1, nu_w) * (1 + 2 * (R - 2) * lam / (R * R - 1))


def cochran_q(log_z: torch.Tensor, se: torch.Tensor, tolerance: float = SE_TOLERANCE) -> torch.Tensor:
    """Q = sum_r (l_r - l_bar)^2 / s_r^2 per datum from ``[R, n]`` estimates and SEs (module docstring), each SE
    widened in quadrature by ``tolerance``."""
    var = se.double().pow(2) + tolerance ** 2
    weight = 1.0 / var
    mean = (weight * log_z.double()).sum(0) / weight.sum(0)
    return ((log_z.double() - mean).pow(2) * weight).sum(0)


def pool(log_z: torch.Tensor, se: torch.Tensor):
    """(log (1/R) sum_r Z^_r, its SE) per datum from ``[R, n]`` estimates and SEs: the larger of the within-replica
    SE and the between-replica one, the latter scaled by t_(R-1) / z (module docstring)."""
    log_z, se = log_z.double(), se.double()
    R = log_z.shape[0]
    pooled = torch.logsumexp(log_z, 0) - math.log(R)
    ratio = torch.exp(log_z - pooled)                           # Z^_r / mean_r Z^_r
    within = (ratio.pow(2) * se.pow(2)).sum(0).sqrt() / R
    if R < 2:
        return pooled, within
    between = ((ratio - 1).pow(2).sum(0) / (R - 1)).sqrt() / math.sqrt(R)
    return pooled, torch.maximum(within, between * t_quantile(0.975, R - 1) / Z_975)


@dataclass
class Verdict:
    """What :func:`judge` returns: per datum ``[n]`` the pooled estimate and its SE, Cochran's Q and whether the
    datum is reliable, and ``reasons`` (one string per datum, "" where reliable)."""

    log_likelihood: torch.Tensor
    log_likelihood_se: torch.Tensor
    chi2: torch.Tensor
    threshold: torch.Tensor
    reliable: torch.Tensor
    reasons: List[str]
    replicas: List[Replica] = field(default_factory=list)
    alpha: float = ALPHA

    def summary(self) -> Dict:
        """The data set's figures (for results files): the pooled average, the share flagged and the reasons'
        counts, the replicas' starts and seeds."""
        n = self.log_likelihood.shape[0]
        kinds: Dict[str, int] = {}
        for reason in self.reasons:
            for part in filter(None, reason.split("; ")):
                if not part.startswith("replicas") and ": " in part:
                    start, problems = part.split(": ", 1)
                    # a problem's kind is its words before its first figure ("ESS 1.2 < 1.6": ESS; "one copy
                    # carries the estimate": all of it)
                    found = [f"{start}: " + ("discrete states" if p.startswith("discrete") else
                                             re.split(r"\s+\d", p, maxsplit=1)[0])
                             for p in problems.split(", ")]
                else:
                    found = [part.split(" (")[0]]
                for kind in found:
                    kinds[kind] = kinds.get(kind, 0) + 1
        return {"replicas": len(self.replicas), "starts": [r.start for r in self.replicas],
                "seeds": [r.seed for r in self.replicas],
                "pooled_log_likelihood": self.log_likelihood.mean().item(),
                "pooled_log_likelihood_se": (self.log_likelihood_se.pow(2).sum().sqrt() / n).item(),
                "replica_log_likelihood": [r.log_likelihood.mean().item() for r in self.replicas],
                "agreement_test": f"Cochran's Q against Welch's {1 - self.alpha:.1%} quantile (chi2 with "
                                  f"{len(self.replicas) - 1} dof where the SEs are known), median "
                                  f"{self.threshold.median().item():.2f}",
                "frac_flagged": 1.0 - self.reliable.double().mean().item(), "flag_counts": kinds}

    def per_datum(self) -> Dict[str, torch.Tensor]:
        """Per-datum columns (``reasons`` is a list of strings; :func:`reason_array` makes it an array)."""
        return {"pooled_log_likelihood": self.log_likelihood, "pooled_log_likelihood_se": self.log_likelihood_se,
                "replica_q": self.chi2, "replica_q_threshold": self.threshold, "reliable": self.reliable,
                "replica_log_likelihood": torch.stack([r.log_likelihood for r in self.replicas]),
                "replica_se": torch.stack([r.se for r in self.replicas])}


def judge(replicas: Sequence[Replica], alpha: float = ALPHA, tolerance: float = SE_TOLERANCE) -> Verdict:
    """Pool the replicas and call each datum reliable or not (module docstring)."""
    if len(replicas) < 2:
        raise ValueError("agreement needs at least two replicas")
    log_z = torch.stack([r.log_likelihood for r in replicas])
    se = torch.stack([r.se for r in replicas])
    pooled, pooled_se = pool(log_z, se)
    q = cochran_q(log_z, se, tolerance)
    dof = (torch.stack([r.dof.double().cpu() if r.dof is not None else torch.full_like(r.se, math.inf)
                        for r in replicas]) if any(r.dof is not None for r in replicas) else None)
    threshold = agreement_threshold(se, dof, alpha, tolerance)
    finite = torch.isfinite(log_z).all(0) & torch.isfinite(se).all(0)
    reasons = []
    for n in range(log_z.shape[1]):
        parts = []
        if not bool(finite[n]):
            parts.append("a replica gave no finite estimate")
        elif float(q[n]) > float(threshold[n]):
            parts.append(f"replicas disagree (Q {float(q[n]):.1f} > {float(threshold[n]):.1f})")
        parts += [f"{r.start}: {r.problems[n]}" for r in replicas if r.problems[n]]
        reasons.append("; ".join(parts))
    reliable = torch.tensor([not reason for reason in reasons], dtype=torch.bool)
    return Verdict(pooled, pooled_se, q, threshold, reliable, reasons, list(replicas), alpha)


# --- the starts ----------------------------------------------------------------------------------------------
class _Widen(Messenger):
    """Each guide site in the data plate drawn from its over-dispersed form (:func:`zoo.evaluation.defensive.widen`
    without Student-t tails: a Normal's scale times ``inflation``, a discrete site uniform)."""

    def __init__(self, inflation: float):
        super().__init__()
        self.inflation = inflation

    def _process_message(self, msg):
        if msg["type"] != "sample" or msg["is_observed"] or is_subsample_site(msg) \
                or not any(f.name == "data" for f in msg["cond_indep_stack"]):
            return
        wide = widen(msg["fn"], self.inflation, None)
        if wide is not None:
            msg["fn"] = wide


class WidenedGuide(nn.Module):
    """A guide with every scale multiplied by ``inflation`` and its discrete sites uniform: an over-dispersed start
    (Gelman and Rubin's) whose density is known, so AIS can anneal from it and IS propose from it. Everything else
    (its global guide, its family) is the guide's; its per-datum mean and scale (``marginal_posterior``) are not."""

    def __init__(self, guide: nn.Module, inflation: float = WIDE_INFLATION):
        super().__init__()
        self.base = guide
        self.inflation = float(inflation)

    def forward(self, *args, **kwargs):
        with _Widen(self.inflation):
            return self.base(*args, **kwargs)

    def __getattr__(self, name):
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name in ("marginal_posterior", "initial_guide"):
                raise
            return getattr(self._modules["base"], name)


def _ais_problems(result, start: str) -> List[str]:
    """One string per datum of what an AIS replica's own checks found (module docstring)."""
    C = result.settings.get("num_chains", 1)
    min_ess = max(MIN_ESS_FRACTION * C, MIN_ESS)
    out = []
    for n in range(result.log_likelihood.shape[0]):
        parts = []
        ess = float(result.ess[n])
        if ess < min_ess:
            parts.append(f"ESS {ess:.2f} < {min_ess:g}")
        if result.hmc_acceptance is not None:
            a = float(result.hmc_acceptance[n])
            if math.isfinite(a) and a < MIN_ACCEPTANCE:
                parts.append(f"acceptance {a:.2f}")
        if result.switch_rate is not None and result.final_states is not None:
            rate, states = float(result.switch_rate[n]), float(result.final_states[n])
            if math.isfinite(rate) and rate < MIN_SWITCH_RATE and states > 1:
                parts.append("discrete states never switched" if rate == 0 else
                             f"discrete states switched in {rate:.1%} of moves")
        out.append(", ".join(parts))
    return out


def check_replicas(value, flag: str = "--replicas", minimum: int = 1, why: str = "") -> int:
    """``value`` where it is a whole number of replicas from ``minimum`` to :data:`MAX_REPLICAS`; else a one-line
    :class:`ZooError` naming ``flag`` (``why``: what the minimum is for)."""
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= MAX_REPLICAS:
        raise ZooError(f"{flag} takes a whole number from {minimum} to {MAX_REPLICAS}{why}, got {value!r}")
    return value


def ais_starts(path: str, replicas: int) -> List[str]:
    """The starts of ``replicas`` AIS replicas whose first starts where ``path`` says (the guide or the prior)."""
    order = AIS_STARTS if path == "guide" else ("prior", "guide", "wide", "prior")
    return [order[r % len(order)] for r in range(replicas)]


def ais_replica(sampler: AnnealedImportanceSampling, model, guide, x: torch.Tensor, start: str, seed: int,
                **estimate_options):
    """(one AIS replica from ``start`` with ``seed``, its :class:`~zoo.evaluation.ais.AISResult`);
    ``estimate_options`` (``progress``, ``done``, ``on_batch``) go to
    :meth:`~zoo.evaluation.ais.AnnealedImportanceSampling.estimate`."""
    from guides.user import as_zoo_guide
    guide = as_zoo_guide(guide, model)
    if start == "prior":
        sampler, chosen = replace(sampler, path="prior"), guide
    elif start == "wide":
        sampler, chosen = replace(sampler, path="guide"), WidenedGuide(annealing_start(guide, "guide")[0])
    elif start == "guide":
        sampler, chosen = replace(sampler, path="guide"), guide
    else:
        raise ValueError(f"an AIS replica starts from one of guide, prior, wide; got {start!r}")
    result = sampler.estimate(model, chosen, x, seed=seed, **estimate_options)
    return Replica(start, seed, result.log_likelihood, result.log_likelihood_se, _ais_problems(result, start),
                   result.se_reliable, torch.full_like(result.ess, float(sampler.num_chains - 1))), result


def replicated_ais(sampler: AnnealedImportanceSampling, model, guide, x: torch.Tensor,
                   replication: Replication = Replication()) -> Verdict:
    """R = ``replication.replicas`` AIS runs of every datum of ``x``, the r-th from the r-th of the replication's
    starts (default :data:`AIS_STARTS`, in turn) with seed ``seed + 1009 r``, judged by :func:`judge`."""
    check_replicas(replication.replicas, minimum=2, why=" (the agreement test compares at least two runs)")
    starts = replication.starts or AIS_STARTS
    out = [ais_replica(sampler, model, guide, x, starts[r % len(starts)], replication.seed + REPLICA_STRIDE * r)[0]
           for r in range(replication.replicas)]
    return judge(out, replication.alpha)


def smc_replica(smc, model, guide, x: torch.Tensor, start: str, seed: int, **estimate_options):
    """(one SMC run from ``start`` with ``seed``, its :class:`~zoo.evaluation.smc.SMCResult`) as a :class:`Replica`:
    its estimate, its SE from its own copies (with their number less one as the SE's degrees of freedom, which
    Welch's threshold reads), and its own checks (one copy carrying the estimate, a schedule forced to beta = 1)."""
    from guides.user import as_zoo_guide
    guide = as_zoo_guide(guide, model)
    if start in ("guide", "prior"):
        sampler, chosen = replace(smc, path=start), guide
    elif start == "wide":
        sampler, chosen = replace(smc, path="guide"), WidenedGuide(annealing_start(guide, "guide")[0])
    else:
        raise ValueError(f"an SMC replica starts from one of guide, prior, wide; got {start!r}")
    result = sampler.estimate(model, chosen, x, seed=seed, **estimate_options)
    problems = ["schedule forced to its end at the step limit" if bool(f) else "" if bool(ok) else
                "one copy carries the estimate"
                for ok, f in zip(result.se_reliable, result.forced)]
    dof = torch.full_like(result.log_likelihood, float(max(sampler.num_replicas - 1, 1)))
    return Replica(start, seed, result.log_likelihood, result.log_likelihood_se, problems, result.se_reliable,
                   dof), result


def replicated_smc(smc, model, guide, x: torch.Tensor,
                   replication: Replication = Replication(replicas=2, starts=SMC_STARTS)) -> Verdict:
    """R = ``replication.replicas`` SMC runs of every datum of ``x``, the r-th from the r-th of the replication's
    starts (default :data:`SMC_STARTS`, in turn) with seed ``seed + 1009 r``, judged by :func:`judge`.

    One SMC run's own copies all start where its path says, so a mode that no particle of that start reaches is
    missed by every copy alike and their spread, its SE, does not see it (``zoo.evaluation.smc``): from the guide of
    a two-mode posterior that settled on one mode, every copy is off by the missing mode's mass and called precise.
    A run from the prior, whose particles reach both, disagrees with it by far more than their SEs, and the
    agreement test flags the datum (``tests/test_smc.py`` against the two-mode model's closed form)."""
    check_replicas(replication.replicas, minimum=2, why=" (the agreement test compares at least two runs)")
    starts = replication.starts or SMC_STARTS
    out = [smc_replica(smc, model, guide, x, starts[r % len(starts)], replication.seed + REPLICA_STRIDE * r)[0]
           for r in range(replication.replicas)]
    return judge(out, replication.alpha)


def _psis_problems(per_datum: Dict) -> List[str]:
    """One string per datum of the harness's PSIS verdict (:mod:`zoo.evaluation.estimators.psis`)."""
    khat = per_datum.get("psis_khat")
    ess = per_datum["is_ess"]
    out = []
    for n in range(ess.shape[0]):
        k = float(khat[n]) if khat is not None else math.nan
        if math.isfinite(k) and k > PSIS_THRESHOLD:
            out.append(f"k-hat {k:.2f} > {PSIS_THRESHOLD}")
        elif not math.isfinite(k) and float(ess[n]) < PSIS_MIN_ESS:
            out.append(f"ESS {float(ess[n]):.1f} < {PSIS_MIN_ESS}")
        else:
            out.append("")
    return out


def _is_replica(model, guide, x, start: str, seed: int, num_samples: int, batch_size: int) -> Replica:
    import pyro

    from zoo.evaluation.harness import EvaluationSettings, evaluate
    if start in ("guide", "defensive"):
        pyro.set_rng_seed(seed)
        result = evaluate(model, guide, x, num_samples=num_samples, iwae_k=2,
                          proposal=GUIDE_PROPOSAL if start == "guide" else DefensiveProposal(),
                          settings=EvaluationSettings(batch_size=batch_size))
        per = result["per_datum"]
        return Replica(start, seed, per["log_likelihood"], per["log_likelihood_se"], _psis_problems(per),
                       per["log_likelihood_se_reliable"].bool(), (per["is_ess"].double() - 1).clamp(min=1.0))
    # the prior or the widened guide as the proposal: AIS with one temperature is importance sampling, and its
    # weights have bounded support where the proposal's tails are no lighter than the posterior's; judged by ESS
    sampler = AnnealedImportanceSampling(num_temperatures=1, num_chains=num_samples, pilot_chains=0,
                                         batch_size=max(1, batch_size))
    _, result = ais_replica(sampler, model, guide, x, start, seed)
    problems = [f"ESS {float(e):.1f} < {PSIS_MIN_ESS}" if float(e) < PSIS_MIN_ESS else "" for e in result.ess]
    return Replica(start, seed, result.log_likelihood, result.log_likelihood_se, problems,
                   result.ess >= PSIS_MIN_ESS, (result.ess - 1).clamp(min=1.0))


def replicated_importance_sampling(model, guide, x: torch.Tensor, num_samples: int = 1000,
                                   replication: Replication = Replication(), batch_size: int = 100) -> Verdict:
    """R = ``replication.replicas`` importance-sampling estimates of every datum of ``x`` with K = ``num_samples``,
    the r-th with the r-th of the replication's proposals (default :data:`IS_STARTS`, in turn: the guide and the
    defensive mixture through the harness, :func:`zoo.evaluation.harness.evaluate`; the prior and the widened guide)
    and seed ``seed + 1009 r``, judged by :func:`judge`."""
    check_replicas(replication.replicas, minimum=2, why=" (the agreement test compares at least two runs)")
    starts = replication.starts or IS_STARTS
    out = [_is_replica(model, guide, x, starts[r % len(starts)], replication.seed + REPLICA_STRIDE * r, num_samples,
                       batch_size)
           for r in range(replication.replicas)]
    return judge(out, replication.alpha)


def reason_array(reasons: Sequence[str]):
    """The reasons as a numpy array of unicode strings (no pickle: ``np.load`` reads it with ``allow_pickle=False``)."""
    import numpy as np
    width = max([1] + [len(r) for r in reasons])
    return np.array(list(reasons), dtype=f"<U{width}")
