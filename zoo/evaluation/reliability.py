"""Can a run's figures be trusted? The PSIS verdict on its importance-sampled NLL, and posterior collapse.

Every table and plot a person reads carries these, so that no ranking crowns an estimate the harness
itself calls unreliable, and no collapsed model passes for a trained one.

**The PSIS verdict.** The harness records, per datum, the Pareto k-hat of the K importance weights
(Yao et al. 2018; Vehtari et al. 2024). Above 0.7 the importance-sampled log p(x) of that datum can be
far off however large K is: the weights' tail is too heavy for their mean to converge. The average NLL is
called *unreliable* when more than :data:`UNRELIABLE_SHARE` of the data have k-hat > 0.7; a few such data
shift the average little, most of them mean that the proposal (the guide) misses the posterior's mass and
the NLL is an IWAE-K bound rather than an estimate of log p(x). A run that records no k-hat (the exact
posterior as proposal, an old result file) gets no verdict. The ELBO is a bound whatever the k-hat.

**A second estimator.** Where an annealed-importance-sampling estimate is recorded beside the run
(``run["ais"]``, :mod:`zoo.evaluation.ais`), the verdict is no longer k-hat's warning but a check: IS and AIS of
the same images agree (:func:`agrees`: within :data:`AGREEMENT_NATS` plus three combined standard errors), and the
NLL stands, or they do not, and the lower of the two (both are stochastic lower bounds) is off by their difference.
AIS costs hundreds of times what IS does, so it may score a subset of the run's images: the record then holds IS of
that subset beside it (``run["ais"]["is_same_images"]``), and the check compares those two, never AIS on a subset
with IS on the whole split (which differ by the choice of images, about a nat on 1,000 MNIST digits). A BDMC gap
(``run["bdmc"]``) says how far AIS itself can be off on data from the model.

**Collapse.** A model whose latent units are all inactive (Burda et al.'s Cov_x(E_q[z_u | x]) <= 0.01
for every unit: the posterior equals the prior, and the decoder ignores z) or whose samples are
near-identical (their spread across samples is under :data:`MIN_SAMPLE_SPREAD` of the data's: it has
learnt one image) has collapsed, whatever its ELBO: :func:`collapse_warning` says so.

Example::

    >>> reliability_cell({"psis_khat_frac_over_0_7": 0.922})
    '92.2% ⚠ unreliable'
    >>> reliability_cell({"psis_khat_frac_over_0_7": 0.03}), reliability_cell({"psis_khat_frac_over_0_7": None})
    ('3.0%', '–')
    >>> collapse_warning({"active_units": 0, "num_latent_units": 50})[:32]
    'posterior collapse: 0 of 50 late'
"""
from __future__ import annotations

import math
from typing import Mapping, Optional

# the share of data with k-hat above KHAT_THRESHOLD above which a run's average NLL is unreliable: one value for
# the compare grid's cells (zoo.evaluation.compare_tables) and every other table
from zoo.core.trust import BDMC_TRUST_NATS, SAMPLER_AT_MOST, SAMPLER_FLAGS, SAMPLER_SAME, UNRELIABLE_SHARE, ais_untrusted, finite

__all__ = ["KHAT_THRESHOLD", "UNRELIABLE_SHARE", "MIN_SAMPLE_SPREAD", "AGREEMENT_NATS", "BDMC_TRUST_NATS", "khat_share", "is_unreliable",
           "agrees", "ais_minus_is", "is_of_ais_images", "bdmc_gap", "agreement_verdict",
           "reliability_cell", "reliability_legend", "sample_spread", "collapse_warning"]

#: the Pareto k-hat above which one datum's importance-sampled log p(x) is unreliable (the harness's PSIS_THRESHOLD)
KHAT_THRESHOLD = 0.7
#: IS and AIS agree on a run's log p(x) when they differ by at most this many nats per datum (plus three of their
#: combined Monte Carlo standard errors): a tenth of a nat is below every difference the leaderboard ranks on
AGREEMENT_NATS = 0.1
#: samples whose spread across samples is under this fraction of the data's are near-identical
MIN_SAMPLE_SPREAD = 0.1


def khat_share(run: Mapping) -> Optional[float]:
    """The share of data with k-hat > 0.7, or None where the run records none."""
    share = run.get("psis_khat_frac_over_0_7")
    return _as_float(share)


def is_unreliable(run: Mapping) -> bool:
    """Is the run's importance-sampled NLL unreliable? Where an AIS estimate of the same data is recorded
    (``run["ais"]``), the verdict is theirs (:func:`agrees`); else k-hat's: more than :data:`UNRELIABLE_SHARE` of
    data over 0.7; a share recorded but not a finite number is not known to be small, so it counts as
    unreliable."""
    agreement = agrees(run)
    if agreement is not None:
        return not agreement
    share = khat_share(run)
    return share is not None and not (share <= UNRELIABLE_SHARE)


def _ais_row(run: Mapping) -> Optional[Mapping]:
    """The largest-T AIS row recorded beside a run's IS figures, or None."""
    ais = run.get("ais")
    rows = ais.get("rows") if isinstance(ais, Mapping) else None
    if not isinstance(rows, list) or not rows or not isinstance(rows[-1], Mapping):
        return None
    row = rows[-1]
    return row if all(_number(row.get(k)) for k in ("log_likelihood", "log_likelihood_se")) else None


def _as_float(value) -> Optional[float]:
    """A number read from a results file as a float (NaN where it is too large for one), None where it is no
    number (text, a bool, missing)."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return None
    try:
        return float(value)
    except OverflowError:
        return math.nan


def _number(value) -> bool:
    """Is ``value`` a finite number (:func:`zoo.core.trust.finite`)?"""
    return finite(value)


def is_of_ais_images(run: Mapping) -> Optional[Mapping]:
    """The importance-sampling figures of the images AIS scored: ``run["ais"]["is_same_images"]`` where AIS scored
    a subset, else the run's own (AIS of the run's images). None where neither holds a number."""
    ais = run.get("ais")
    same = ais.get("is_same_images") if isinstance(ais, Mapping) else None
    record = same if isinstance(same, Mapping) else run
    return record if _number(record.get("log_likelihood")) else None


def ais_minus_is(run: Mapping) -> Optional[float]:
    """AIS's log p(x) minus IS's of the same images, nats per datum (both stochastic lower bounds: positive means IS
    sits low)."""
    row, is_record = _ais_row(run), is_of_ais_images(run)
    if row is None or is_record is None:
        return None
    return float(row["log_likelihood"]) - float(is_record["log_likelihood"])


def agrees(run: Mapping) -> Optional[bool]:
    """Do IS and AIS agree on the log p(x) of the same images? True: within :data:`AGREEMENT_NATS` plus three of
    their combined Monte Carlo standard errors, those errors themselves within the tolerance; False: further apart
    than that; None where no AIS is recorded, or where the errors are too wide to tell (then the verdict is k-hat's,
    as without AIS)."""
    delta, row = ais_minus_is(run), _ais_row(run)
    if delta is None:
        return None
    is_se = is_of_ais_images(run).get("log_likelihood_se")
    combined = (float(row["log_likelihood_se"]) ** 2 + (float(is_se) if _number(is_se) else 0.0) ** 2) ** 0.5
    if abs(delta) > AGREEMENT_NATS + 3 * combined:
        return False
    # errors as wide as the tolerance itself leave anything "in agreement": that is no agreement, nor a disagreement
    return True if combined <= AGREEMENT_NATS else None


def _bdmc_row(run: Mapping, ais_temperatures: Optional[float]) -> Optional[Mapping]:
    """The BDMC row that bounds AIS at ``ais_temperatures``: the one with the most temperatures not above AIS's (a
    gap shrinks as T grows); the largest T's where AIS's is unknown; the fewest's where every row has more than AIS
    (whose gap then bounds nothing, as :func:`~zoo.core.trust.ais_untrusted` says)."""
    bdmc = run.get("bdmc")
    rows = bdmc.get("rows") if isinstance(bdmc, Mapping) else None
    rows = [r for r in rows if isinstance(r, Mapping)] if isinstance(rows, list) else []
    if not rows:
        return None
    if ais_temperatures is None:
        return rows[-1]
    timed = [r for r in rows if _number(r.get("num_temperatures"))]
    within = [r for r in timed if r["num_temperatures"] <= ais_temperatures]
    if within:
        return max(within, key=lambda r: r["num_temperatures"])
    return min(timed, key=lambda r: r["num_temperatures"]) if timed else rows[-1]


def _samplers(run: Mapping, ais_row: Mapping, bdmc_row: Optional[Mapping]):
    """The sampler settings of the run's AIS (its record and its largest-T row) and of the BDMC row that bounds it
    (``bdmc.json``'s ``settings`` and the row's T), for :func:`zoo.core.trust.bdmc_stronger` to compare."""
    keys = (*SAMPLER_AT_MOST, *SAMPLER_SAME, *SAMPLER_FLAGS)
    ais, bdmc = run.get("ais"), run.get("bdmc")
    ais = {k: v for k, v in (ais if isinstance(ais, Mapping) else {}).items() if k in keys}
    ais.update({k: ais_row[k] for k in keys if k in ais_row})
    settings = bdmc.get("settings") if isinstance(bdmc, Mapping) else None
    bdmc = {k: v for k, v in (settings if isinstance(settings, Mapping) else {}).items() if k in keys}
    if bdmc_row is not None and "num_temperatures" in bdmc_row:
        bdmc["num_temperatures"] = bdmc_row["num_temperatures"]
    else:
        bdmc.pop("num_temperatures", None)      # the settings' list of T is not the row's T
    return ais, bdmc


def bdmc_gap(run: Mapping) -> Optional[float]:
    """The BDMC gap that bounds the run's AIS (:func:`_bdmc_row`), nats per datum, or None."""
    row = _ais_row(run)
    t = row.get("num_temperatures") if row is not None else None
    chosen = _bdmc_row(run, float(t) if _number(t) else None)
    gap = chosen.get("gap") if chosen is not None else None
    return float(gap) if _number(gap) else None


def agreement_verdict(run: Mapping) -> str:
    """The table cell that says which NLL of the run to trust. Where BDMC's gap bounds AIS's error
    (:func:`zoo.core.trust.ais_untrusted`: within :data:`BDMC_TRUST_NATS`, measured with a sampler no stronger than
    AIS's, its replicas agreeing on most images): ✓ where IS and AIS agree, ✓ naming AIS's figure where IS sits below it (with
    IS's shortfall); else ⚠ saying what is missing, agreement or not; ⚠ where AIS sits below IS; without AIS, from
    k-hat alone, said as such."""
    delta = ais_minus_is(run)
    if delta is None:
        share = khat_share(run)
        return "–" if share is None else f"k̂ only: {share:.0%}" + (" ⚠" if is_unreliable(run) else "")
    gap = bdmc_gap(run)
    bdmc = "" if gap is None else f"; BDMC gap {gap:.2f}"
    ais = run.get("ais")
    images = ais.get("num_data") if isinstance(ais, Mapping) and isinstance(ais.get("is_same_images"), Mapping) else None
    # AIS of a subset: name its size (AIS of all the run's images needs no note)
    where = f" on {images:,} images" if _number(images) and images != run.get("num_data") else ""
    row = _ais_row(run)
    flagged = row.get("frac_flagged")
    flagged = _as_float(flagged)
    ais_t = row.get("num_temperatures")
    # AIS's own error is bounded where BDMC's gap is small measured with a sampler no stronger than AIS's, and its replicas,
    # where run, agree on most images: else two lower bounds that agree can both miss a mode, and one that sits
    # higher is only the nearer of two
    ais_t = float(ais_t) if _number(ais_t) else None
    chosen = _bdmc_row(run, ais_t)
    why = ais_untrusted(gap, flagged, *_samplers(run, row, chosen))
    agreement = agrees(run)
    if agreement:
        return f"✓ IS = AIS{where} (Δ {abs(delta):.2f}{bdmc})" if why is None else \
            f"⚠ IS = AIS{where} (Δ {abs(delta):.2f}), but {why}"
    if delta < 0 and agreement is False:    # AIS below IS: its chains fall short of what IS already found
        return f"⚠ AIS lower by {abs(delta):.2f}{where}{bdmc}: its chains fall short"
    if why is None:
        agree = f", replicas agree on {1 - flagged:.0%}" if flagged is not None else ""
        se = float(row["log_likelihood_se"])
        short = f"IS {delta:.2f} short" if agreement is False else "IS within their errors"
        return (f"✓ AIS {-float(row['log_likelihood']):.2f} ± {se:.{3 if se < 0.01 else 2}f}{where}{agree}"
                f"{bdmc}; {short}")
    if agreement is None:
        return f"⚠ IS and AIS within their errors (Δ {delta:+.2f}){where}; {why}"
    return f"⚠ IS lower by {abs(delta):.2f}{where}; {why}"


def reliability_cell(run: Mapping, digits: int = 1, short: bool = False) -> str:
    """The table cell: the share of data with k-hat > 0.7, marked ``⚠ unreliable`` above the limit (``⚠`` alone
    with ``short``, for narrow tables whose legend says what it means)."""
    share = khat_share(run)
    if share is None:
        return "–"
    flag = (" ⚠" if short else " ⚠ unreliable") if is_unreliable(run) else ""
    return (f"{share:.{digits}%}" if math.isfinite(share) else "not a number") + flag


def reliability_legend() -> str:
    """What the flag means, for the legend under a table that carries it."""
    return (f"k̂>{KHAT_THRESHOLD}: the share of data whose PSIS Pareto k-hat exceeds {KHAT_THRESHOLD} (Yao et al. "
            f"2018); ⚠ (unreliable) above {UNRELIABLE_SHARE:.0%}: the importance-sampled NLL of such a run is not "
            f"to be trusted (the guide misses the posterior's mass; compare its −ELBO instead), and it is ranked "
            f"after the reliable runs")


def sample_spread(samples, data) -> Optional[float]:
    """How much the generated samples differ from one another, relative to the data: the mean over pixels of
    the standard deviation across samples, over the same for the data (1 for samples as varied as the data,
    0 for one image drawn again and again). None where either has fewer than two rows or the data are constant."""
    if samples is None or data is None or samples.shape[0] < 2 or data.shape[0] < 2:
        return None
    data_spread = float(data.float().std(0).mean())
    if data_spread <= 0:
        return None
    return float(samples.float().std(0).mean()) / data_spread


def collapse_warning(run: Mapping) -> Optional[str]:
    """A sentence when the run's model has collapsed (no active unit, or near-identical samples), else None."""
    problems = []
    units, active = run.get("num_latent_units"), run.get("active_units")
    if isinstance(active, int) and active == 0 and (units is None or units > 0):
        problems.append(f"0 of {units if units is not None else 'its'} latent units are active (the guide gives every "
                        f"datum the same posterior mean: z carries nothing about x)")
    spread = run.get("sample_spread")
    if isinstance(spread, (int, float)) and spread < MIN_SAMPLE_SPREAD:
        problems.append(f"its samples are near-identical (their spread is {spread:.0%} of the data's: the model "
                        f"generates one image)")
    if not problems:
        return None
    return ("posterior collapse: " + "; ".join(problems) + "; train longer, or against collapse with --kl-warmup "
            "or the objective's --free-bits")
