"""The random streams of one run, each seeded from the run's ``--seed``: one table, so that no two streams of a
run share a seed and a stream's figures are the same whenever the same command runs again.

A command that draws random numbers after training (evaluation, AIS, BDMC, SMC, the gap split, bits-back coding)
seeds its stream with :func:`stream_seed` ``(seed, name)``: the run's seed plus the stream's offset in
:data:`STREAMS`. The offsets are fixed numbers, not derived from anything else, because results committed under
them must stay reproducible; they are distinct, and none is within the few hundred seeds a grid uses
(``--repeats``) of another. Independent replicas of one stream take ``stream_seed(...) + REPLICA_STRIDE * r``
(a prime stride: the replicas of neighbouring streams and seeds do not meet).
"""
from __future__ import annotations

__all__ = ["STREAMS", "REPLICA_STRIDE", "stream_seed"]

#: name -> the offset of that stream's seed from the run's
STREAMS = {
    "evaluation": 12345,     # importance sampling after training (pyro-zoo train, eval)
    "ais": 23456,            # eval --estimator ais
    "bdmc": 34567,           # eval --estimator bdmc
    "smc": 45678,            # eval --estimator smc
    "gaps": 4321,            # eval --gaps: the per-datum refit and its scoring
    "compress": 4242,        # compress: the bits-back coder's draws
}
#: the seed step between independent replicas of one stream
REPLICA_STRIDE = 1009


def stream_seed(seed: int, name: str) -> int:
    """The seed of the stream ``name`` (:data:`STREAMS`) of a run seeded ``seed``."""
    return int(seed) + STREAMS[name]
