"""When the zoo trusts a likelihood figure: the two thresholds every table and model card reads.

An AIS estimate of log p(x) is a stochastic lower bound; how far below the truth it may sit is bounded by
BDMC's gap on data simulated from the model (Grosse et al. 2015), and whether its own standard error means
anything shows in its independent replicas (those that disagree beyond their errors are flagged). A figure is
the one to use where both hold; otherwise :func:`ais_untrusted` says in words why not.
"""
import math
from typing import Optional

__all__ = ["BDMC_TRUST_NATS", "UNRELIABLE_SHARE", "ais_untrusted"]

#: a BDMC gap (nats per datum) at most this wide bounds AIS's error well enough to name AIS the figure to use
#: (Grosse et al. 2015; Wu et al. 2017 report gaps of 0.1-1 nats on MNIST decoders)
BDMC_TRUST_NATS = 0.5
#: the share of data above which a figure is unreliable: of data with PSIS k-hat > 0.7 for importance
#: sampling, of data whose AIS replicas disagree for AIS (a compare grid's cell: the mean over seeds)
UNRELIABLE_SHARE = 0.1


def ais_untrusted(bdmc_gap: Optional[float], frac_flagged: Optional[float],
                  ais_temperatures: Optional[float] = None, bdmc_temperatures: Optional[float] = None) -> Optional[str]:
    """None where an AIS figure is the one to use: its BDMC gap within :data:`BDMC_TRUST_NATS` of zero (a gap far
    below zero is as wrong as one far above), measured at no more temperatures than AIS ran (a gap shrinks as T
    grows, so one at a larger T bounds nothing at a smaller), and its replicas, where run, agreeing on all but
    :data:`UNRELIABLE_SHARE` of the data; else why not, in a few words."""
    if bdmc_gap is None:
        return "no BDMC gap bounds AIS"
    if not math.isfinite(bdmc_gap) or abs(bdmc_gap) > BDMC_TRUST_NATS:
        return f"BDMC gap {bdmc_gap:.2f} outside ±{BDMC_TRUST_NATS}"
    if ais_temperatures is not None and bdmc_temperatures is not None and ais_temperatures < bdmc_temperatures:
        return f"AIS ran at T = {ais_temperatures:.0f}, below the T = {bdmc_temperatures:.0f} of BDMC's gap"
    if frac_flagged is not None and not (frac_flagged <= UNRELIABLE_SHARE):      # NaN: not known to agree
        return (f"replicas disagree on {frac_flagged:.0%}" if math.isfinite(frac_flagged) else
                "the replicas' agreement is not a number")
    return None
