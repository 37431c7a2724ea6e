"""When the zoo trusts a likelihood figure: the two thresholds every table and model card reads.

An AIS estimate of log p(x) is a stochastic lower bound; how far below the truth it may sit is bounded by
BDMC's gap on data simulated from the model (Grosse et al. 2015), and whether its own standard error means
anything shows in its independent replicas (those that disagree beyond their errors are flagged). A figure is
the one to use where both hold; otherwise :func:`ais_untrusted` says in words why not.
"""
from typing import Optional

__all__ = ["BDMC_TRUST_NATS", "UNRELIABLE_SHARE", "ais_untrusted"]

#: a BDMC gap (nats per datum) at most this wide bounds AIS's error well enough to name AIS the figure to use
#: (Grosse et al. 2015; Wu et al. 2017 report gaps of 0.1-1 nats on MNIST decoders)
BDMC_TRUST_NATS = 0.5
#: the share of data above which a figure is unreliable: of data with PSIS k-hat > 0.7 for importance
#: sampling, of data whose AIS replicas disagree for AIS (a compare grid's cell: the mean over seeds)
UNRELIABLE_SHARE = 0.1


def ais_untrusted(bdmc_gap: Optional[float], frac_flagged: Optional[float]) -> Optional[str]:
    """None where an AIS figure is the one to use (its BDMC gap at most :data:`BDMC_TRUST_NATS`, its replicas, where
    run, agreeing on all but :data:`UNRELIABLE_SHARE` of the data); else why not, in a few words."""
    if bdmc_gap is None:
        return "no BDMC gap bounds AIS"
    if bdmc_gap > BDMC_TRUST_NATS:
        return f"BDMC gap {bdmc_gap:.2f} > {BDMC_TRUST_NATS}"
    if frac_flagged is not None and frac_flagged > UNRELIABLE_SHARE:
        return f"replicas disagree on {frac_flagged:.0%}"
    return None
