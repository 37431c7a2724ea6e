"""When the zoo trusts a likelihood figure: the two thresholds every table and model card reads.

An AIS estimate of log p(x) is a stochastic lower bound; how far below the truth it may sit is bounded by
BDMC's gap on data simulated from the model (Grosse et al. 2015), and whether its own standard error means
anything shows in its independent replicas (those that disagree beyond their errors are flagged). A figure is
the one to use where both hold; otherwise :func:`ais_untrusted` says in words why not.
"""
import math
from typing import Mapping, Optional

__all__ = ["BDMC_TRUST_NATS", "UNRELIABLE_SHARE", "SAMPLER_AT_MOST", "SAMPLER_SAME", "SAMPLER_FLAGS", "ais_untrusted",
           "bdmc_stronger", "finite"]

#: a BDMC gap (nats per datum) at most this wide bounds AIS's error well enough to name AIS the figure to use
#: (Grosse et al. 2015; Wu et al. 2017 report gaps of 0.1-1 nats on MNIST decoders)
BDMC_TRUST_NATS = 0.5
#: the share of data above which a figure is unreliable: of data with PSIS k-hat > 0.7 for importance
#: sampling, of data whose AIS replicas disagree for AIS (a compare grid's cell: the mean over seeds)
UNRELIABLE_SHARE = 0.1


#: sampler settings in which BDMC may not exceed AIS: its gap shrinks as each grows, so a gap measured with more
#: temperatures, chains or leapfrog steps than AIS ran bounds nothing about AIS's error
SAMPLER_AT_MOST = {"num_temperatures": "T", "num_chains": "chains", "leapfrog_steps": "leapfrog steps"}
#: sampler settings BDMC must share with AIS: another start, annealing schedule or preconditioner is another
#: sampler, whose error BDMC's gap does not measure
SAMPLER_SAME = {"path": "start", "schedule": "schedule", "precondition": "preconditioner",
                "local_moves": "local discrete moves"}

#: kernels BDMC may not add to AIS's: recorded only where switched on (a file without one ran without it), and a BDMC
#: gap measured with one bounds only an AIS that had it too (AIS's guide moves, zoo.evaluation.ais)
SAMPLER_FLAGS = {"guide_moves": "guide moves"}


_FLAG_NAMES = {True: "transport", False: "none"}


def finite(value) -> bool:
    """A finite number (not a bool); an integer too large for a float, as JSON can hold, is not one."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return False
    try:
        return math.isfinite(float(value))
    except OverflowError:
        return False


def bdmc_stronger(ais: Mapping, bdmc: Mapping) -> Optional[str]:
    """Why a BDMC gap measured with sampler settings ``bdmc`` does not bound the error of an AIS run with settings
    ``ais`` (each a mapping of :data:`SAMPLER_AT_MOST` and :data:`SAMPLER_SAME` keys), or None where it does. A
    count BDMC records and AIS does not is a reason (unknown, it may be smaller); any other setting either side
    leaves out is not compared (results written before it was recorded); one that a side records but not as a
    finite number (or, for the ``SAMPLER_SAME`` keys, not as text or a flag) is a reason: settings read from files
    are untrusted input."""
    for key, name in SAMPLER_AT_MOST.items():
        a, b = ais.get(key), bdmc.get(key)
        for side, value in (("AIS", a), ("BDMC", b)):
            if value is not None and not finite(value):
                return f"{side}'s {name} is not a number"
        if a is None and b is not None:         # unknown on AIS's side: no gap measured at a count can vouch for it
            return (f"AIS's {'temperatures' if name == 'T' else name} are not recorded, so no BDMC gap is known to "
                    f"bound it")
        if a is not None and b is not None and a < b:
            return (f"AIS ran at T = {a:.0f}, below the T = {b:.0f} of BDMC's gap" if name == "T" else
                    f"AIS ran {a:.0f} {name}, fewer than the {b:.0f} of BDMC's gap")
    for key, name in SAMPLER_SAME.items():
        # results written before the preconditioner had names recorded it as a flag, as AIS itself still reads one
        a, b = ((_FLAG_NAMES.get(v, v) if key == "precondition" and isinstance(v, bool) else v)
                for v in (ais.get(key), bdmc.get(key)))
        for side, value in (("AIS", a), ("BDMC", b)):
            if value is not None and not isinstance(value, (bool if key == "local_moves" else str)):
                return f"{side}'s {name} is not {'true or false' if key == 'local_moves' else 'a name'}"
        if a is not None and b is not None and a != b:
            return f"BDMC's gap was measured with {name} {b!r}, AIS ran {a!r}"
    for key, name in SAMPLER_FLAGS.items():
        a, b = ais.get(key, False), bdmc.get(key, False)
        for side, value in (("AIS", a), ("BDMC", b)):
            if not isinstance(value, bool):
                return f"{side}'s {name} is not true or false"
        if b and not a:
            return f"BDMC's gap was measured with {name}, which AIS ran without"
    return None


def ais_untrusted(bdmc_gap: Optional[float], frac_flagged: Optional[float], ais: Optional[Mapping] = None,
                  bdmc: Optional[Mapping] = None) -> Optional[str]:
    """None where an AIS figure is the one to use: its BDMC gap within :data:`BDMC_TRUST_NATS` of zero (a gap far
    below zero is as wrong as one far above), measured with a sampler no stronger than AIS's (:func:`bdmc_stronger`
    on the two runs' settings ``ais`` and ``bdmc``, where given), and its replicas, where run, agreeing on all but
    :data:`UNRELIABLE_SHARE` of the data; else why not, in a few words."""
    if bdmc_gap is None:
        return "no BDMC gap bounds AIS"
    if not math.isfinite(bdmc_gap) or abs(bdmc_gap) > BDMC_TRUST_NATS:
        return f"BDMC gap {bdmc_gap:.2f} outside ±{BDMC_TRUST_NATS}"
    stronger = bdmc_stronger(ais or {}, bdmc or {})
    if stronger is not None:
        return stronger
    if frac_flagged is not None and not (frac_flagged <= UNRELIABLE_SHARE):      # NaN: not known to agree
        return (f"replicas disagree on {frac_flagged:.0%}" if math.isfinite(frac_flagged) else
                "the replicas' agreement is not a number")
    return None
