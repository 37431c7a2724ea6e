"""KL warm-up: the latent terms of a bound weighted by beta rising to 1 over the first epochs."""
from __future__ import annotations

from pyro.poutine.messenger import Messenger

__all__ = ["KLWarmup", "kl_warmup_weight"]


class KLWarmup(Messenger):
    """KL annealing, or "warm-up" (Bowman et al. 2016; Sønderby et al. 2016, section 2.3).

    Inside this handler every *latent* sample site, of the model and of the guide, has its
    log-density weighted by ``beta``; observed sites are left alone. Any objective then trains
    the tempered bound::

        E_q[ log p(x | z) + beta * (log p(z) - log q(z | x)) ]  =  E_q[log p(x | z)] - beta * KL(q || p)

    and each importance log-weight becomes log p(x | z) + beta * (log p(z) - log q(z | x)).
    Early in training, with beta near 0, the guide is not pulled to the prior before the decoder
    has learned to use z, which keeps more latent units active; at beta = 1 it is the ELBO again.

    It multiplies each site's ``scale``, the factor Pyro's ELBOs already apply (the plate's N/B):
    Trace_ELBO, TraceGraph_ELBO and TraceMeanField_ELBO's analytic KL honour it directly, and
    :func:`zoo.core.weights.per_datum_log_weights` reads a latent site's scale relative to the
    observation's, so the per-datum bounds (iwae, renyi, dreg, stl, vimco, reinforce) are
    tempered the same way. Training wraps each step in it (``fit(kl_warmup=EPOCHS)``, ``--kl-warmup``);
    validation and the evaluation harness never run under it, so they report the true bound.
    """

    def __init__(self, beta: float):
        super().__init__()
        self.beta = float(beta)

    def _process_message(self, msg):
        if msg["type"] == "sample" and not msg["is_observed"]:
            msg["scale"] = msg["scale"] * self.beta


def kl_warmup_weight(global_step: int, warmup_steps: int) -> float:
    """beta of step ``global_step`` (from 0): linear from 1/warmup_steps to 1, then 1."""
    return min(1.0, (global_step + 1) / warmup_steps)
