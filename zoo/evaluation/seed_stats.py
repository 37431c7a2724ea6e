"""Statistics across seeds: the mean and standard error of a figure, and paired differences with a t-interval.

A grid trains every cell at the same seeds, and a seed fixes the data splits, the minibatch order and the
evaluation's random numbers for every cell alike (:mod:`zoo.experiments.compare`). So cell A at seed s and the
baseline B at seed s form a pair, and the differences ``d_s = A_s - B_s`` remove what the seed does to both:
their mean ± ``t_{n-1} * sd(d) / sqrt(n)`` is the usual paired t-interval (Student 1908; what a reviewer asks
for when two estimators differ by 0.3 nats). It assumes the seeds are independent draws and the differences
roughly normal; with two or three seeds the interval is wide, as it should be.

Pure Python (no scipy): the Student t distribution function for integer degrees of freedom is a finite sum
(Abramowitz & Stegun 26.7.3 and 26.7.4), and its quantile is found by bisection.

    >>> round(t_quantile(0.95, 2), 3)
    4.303
    >>> d = paired_difference([1.1, 1.3, 0.9], [1.0, 1.0, 1.0])     # differences 0.1, 0.3, -0.1
    >>> round(d.mean, 3), round(d.low, 3), round(d.high, 3), d.contains_zero
    (0.1, -0.397, 0.597, True)
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

# a cell is marked unreliable when more than this share of its data have PSIS k-hat > 0.7 (mean over seeds)
from zoo.core.trust import UNRELIABLE_SHARE

__all__ = ["Summary", "PairedDifference", "summarize", "pooled_se", "paired_difference", "t_quantile",
           "t_interval_mass", "pool_seeds", "pool_runs", "derived_figures", "bits_per_nat", "POOLED_MEANS",
           "UNRELIABLE_SHARE"]


def t_interval_mass(t: float, df: int) -> float:
    """P(|T| <= t) for Student's t with ``df`` (a positive integer) degrees of freedom.

    With theta = atan(t / sqrt(df)) (Abramowitz & Stegun 26.7.3-4):
    odd df:  (2/pi) [theta + sin(theta) (cos(theta) + 2/3 cos^3(theta) + ... + (2*4*...*(df-3))/(3*5*...*(df-2))
    cos^(df-2)(theta))], the sum empty for df = 1;
    even df: sin(theta) [1 + 1/2 cos^2(theta) + (1*3)/(2*4) cos^4(theta) + ... + (1*3*...*(df-3))/(2*4*...*(df-2))
    cos^(df-2)(theta)].
    """
    if df < 1 or int(df) != df:
        raise ValueError(f"degrees of freedom must be a positive integer, got {df}")
    theta = math.atan(abs(t) / math.sqrt(df))
    c2, s = math.cos(theta) ** 2, math.sin(theta)
    if df % 2:
        term = total = math.cos(theta) if df > 1 else 0.0
        for k in range(1, (df - 3) // 2 + 1):
            term *= c2 * (2 * k) / (2 * k + 1)
            total += term
        return 2 / math.pi * (theta + s * total)
    term = total = 1.0
    for k in range(1, (df - 2) // 2 + 1):
        term *= c2 * (2 * k - 1) / (2 * k)
        total += term
    return s * total


def t_quantile(confidence: float, df: int) -> float:
    """The t such that P(|T| <= t) = ``confidence``: the half-width of a two-sided interval in standard errors."""
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    lo, hi = 0.0, 1.0
    while t_interval_mass(hi, df) < confidence:
        lo, hi = hi, 2 * hi
    for _ in range(200):
        mid = (lo + hi) / 2
        if t_interval_mass(mid, df) < confidence:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-12 * hi:
            break
    return (lo + hi) / 2


@dataclass(frozen=True)
class Summary:
    """The mean of a figure over ``n`` seeds and its standard error sd/sqrt(n) (None with one seed)."""

    mean: float
    se: Optional[float]
    n: int


def summarize(values: Sequence[float]) -> Summary:
    """Mean and standard error across seeds (the sample sd, n - 1 in the denominator, over sqrt(n))."""
    xs = [float(v) for v in values]
    if not xs:
        raise ValueError("no values to summarize")
    n = len(xs)
    mean = sum(xs) / n
    if n < 2:
        return Summary(mean, None, n)
    var = sum((x - mean) ** 2 for x in xs) / (n - 1)
    return Summary(mean, math.sqrt(var / n), n)


def pooled_se(ses: Sequence[float]) -> float:
    """The standard error of the mean of ``n`` independent estimates with standard errors ``ses``:
    sqrt(sum se_i^2) / n. For the importance-sampling error of a mean over seeds (each seed's IS
    estimate draws its own samples), not the spread between seeds."""
    ses = [float(s) for s in ses]
    if not ses:
        raise ValueError("no standard errors to pool")
    return math.sqrt(sum(s * s for s in ses)) / len(ses)


@dataclass(frozen=True)
class PairedDifference:
    """Mean of the per-seed differences (cell - baseline), its standard error, and a t-interval
    (``low``, ``high`` are None with one seed, where there is no interval)."""

    mean: float
    se: Optional[float]
    low: Optional[float]
    high: Optional[float]
    n: int
    confidence: float

    @property
    def contains_zero(self) -> Optional[bool]:
        """Does the interval contain 0 (the data cannot tell the two apart)? None without an interval."""
        return None if self.low is None else self.low <= 0.0 <= self.high


def paired_difference(values: Sequence[float], baseline: Sequence[float],
                      confidence: float = 0.95) -> PairedDifference:
    """The paired t-interval of ``values[s] - baseline[s]`` over the seeds s (the same order in both)."""
    if len(values) != len(baseline):
        raise ValueError(f"paired differences need the same seeds: {len(values)} values, {len(baseline)} baseline")
    summary = summarize([a - b for a, b in zip(values, baseline)])
    if summary.se is None:
        return PairedDifference(summary.mean, None, None, None, summary.n, confidence)
    half = t_quantile(confidence, summary.n - 1) * summary.se
    return PairedDifference(summary.mean, summary.se, summary.mean - half, summary.mean + half, summary.n, confidence)


def _without_seed(config: Dict) -> str:
    """A run's config as a hashable key with its seed left out: the runs of one cell at several seeds share it."""
    return json.dumps({k: v for k, v in config.items() if k != "seed"}, sort_keys=True, default=str)


#: The figures of a run that are means over its data (nats per datum, a share of the data, a count of units): a run
#: pooled over seeds holds their mean over the seeds. The figures that follow from them are recomputed from those
#: means (:func:`derived_figures`), never carried over from one seed.
POOLED_MEANS = ("elbo", "reconstruction", "kl", "iwae_bound", "log_likelihood", "log_likelihood_data_se",
                "exact_log_likelihood", "data_elbo", "psis_khat_frac_over_0_7", "active_units")


def derived_figures(run: Mapping, bits_per_nat: Optional[float] = None) -> Dict:
    """The figures of a result that follow from its others, computed from them:

    - ``nll = -log_likelihood``;
    - ``elbo_gap = log p(x) - elbo``, with the exact log p(x) where there is one, else the IS estimate;
    - ``is_error = log_likelihood - exact_log_likelihood``;
    - ``bits_per_dim_elbo = -elbo / (D ln 2)`` and ``bits_per_dim_nll = nll / (D ln 2)`` (Theis et al. 2016),
      given ``bits_per_nat`` = 1 / (D ln 2) (:func:`bits_per_nat`); a density's code lengths are not bits.

    Only the keys the run has are returned (a result without an exact log p(x) gains no ``is_error``), and
    ``nll`` wherever it has a ``log_likelihood``."""
    def number(key):
        value = run.get(key)
        return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None
    elbo, ll, exact = number("elbo"), number("log_likelihood"), number("exact_log_likelihood")
    nll = None if ll is None else -ll
    reference = exact if exact is not None else ll
    derived = {"nll": nll,
               "elbo_gap": None if reference is None or elbo is None else reference - elbo,
               "is_error": None if ll is None or exact is None else ll - exact}
    if bits_per_nat is not None:
        derived.update(bits_per_dim_elbo=None if elbo is None else -elbo * bits_per_nat,
                       bits_per_dim_nll=None if nll is None else nll * bits_per_nat)
    return {k: v for k, v in derived.items() if k in run or k == "nll" and "log_likelihood" in run}


def bits_per_nat(run: Mapping) -> Optional[float]:
    """A run's 1 / (D ln 2), the factor from nats per datum to bits per dimension, read off its own figures
    (``bits_per_dim_elbo / -elbo``); None for a density, whose figures are not code lengths."""
    bits, elbo = run.get("bits_per_dim_elbo"), run.get("elbo")
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (bits, elbo)) or elbo == 0:
        return None
    return bits / -elbo


def pool_runs(members: Sequence[Dict]) -> Dict:
    """One cell's runs at several seeds as one run: the first run's fields, each of :data:`POOLED_MEANS` the mean
    over the seeds (where every seed has it), ``seeds``, ``elbo_seed_se`` and ``nll_seed_se`` (the standard errors
    across the seeds), ``log_likelihood_se`` the IS error of the mean (:func:`pooled_se`), and every figure that
    follows from those recomputed from the means (:func:`derived_figures`)."""
    first = members[0]
    run = dict(first, seeds=[r["config"].get("seed") for r in members])
    for key in POOLED_MEANS:
        values = [r.get(key) for r in members]
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            run[key] = sum(values) / len(values)
    elbo = summarize([r["elbo"] for r in members])
    run["elbo_seed_se"] = elbo.se
    lls = [r.get("log_likelihood") for r in members]
    if all(isinstance(v, (int, float)) for v in lls):
        run["nll_seed_se"] = summarize(lls).se
    ses = [r.get("log_likelihood_se") for r in members]
    if all(isinstance(v, (int, float)) for v in ses):
        run["log_likelihood_se"] = pooled_se(ses)
    run.update(derived_figures(run, bits_per_nat(first)))
    return run


def pool_seeds(runs: Iterable[Tuple[str, Dict]], source: Callable[[str], str] = lambda name: "") -> List[Tuple[str, Dict]]:
    """(name, run) pairs in which the runs of one source (``source(name)``: a grid's folder, a result file) whose
    configs differ only in the seed become one run (:func:`pool_runs`: the means over the seeds, their SEs across
    them, and every derived figure, bits/dim included, recomputed from the means). A run alone, or a group in
    which a seed repeats (the same run recorded twice), is passed through unchanged. The pooled run keeps the
    first run's name and is placed where that run was."""
    groups: Dict[Tuple[str, str], List[Tuple[str, Dict]]] = {}
    for name, run in runs:
        groups.setdefault((source(name), _without_seed(run["config"])), []).append((name, run))
    pooled = []
    for members in groups.values():
        seeds = [r["config"].get("seed") for _, r in members]
        if len(members) == 1 or len(set(seeds)) < len(seeds):
            pooled.extend(members)
            continue
        pooled.append((members[0][0], pool_runs([r for _, r in members])))
    return pooled
