"""The ELBO, its two parts, the KL of each latent site, and the IWAE-k bound, from the draws of q.

With z_k ~ q(z | x) (the first n_q of a datum's K draws: the defensive part of the proposal is for log p(x)
alone) and log w_k = log p(x, z_k) - log q(z_k | x):

``elbo``, ``reconstruction``, ``kl``
    ELBO = E_q[log p(x | z)] - KL(q(z|x) || p(z)), both parts by Monte Carlo over the n_q draws.
``kl_per_site``
    For each latent site s of ``model.latents`` (each layer of a hierarchical model):
    KL_s = E_q[log q(z_s | .) - log p(z_s | parents(z_s))], where q's and p's conditioning is whatever guide
    and model condition z_s on (for a chain z2 -> z1 -> x, KL_z1 is E_q[log q(z1 | x) - log p(z1 | z2)] and
    KL_z2 is E_q[log q(z2 | .) - log p(z2)]). The KL_s add up to ``kl``.
``iwae_bound`` (``iwae_k``)
    The IWAE-k bound E[log (1/k) sum_{j<=k} w_j] (Burda et al. 2016), averaged over the n_q / k disjoint
    groups of q's draws.
"""
from __future__ import annotations

import torch

from zoo.core.weights import per_datum_renyi_bound
from zoo.evaluation.estimators.base import Batch, Estimator

__all__ = ["ELBO"]


class ELBO(Estimator):
    name = "elbo"
    keys = {
        "elbo": "ELBO per datum, Monte Carlo over the K samples",
        "reconstruction": "E_q[log p(x|z)] per datum",
        "kl": "E_q[log q(z|x) - log p(z)] per datum",
        "kl_per_site": "per latent site s: E_q[log q(z_s|.) - log p(z_s|parents)], summing to kl",
        "iwae_k": "k of the reported IWAE bound",
        "iwae_bound": "IWAE-k bound per datum",
    }

    def __init__(self, ctx):
        super().__init__(ctx)
        self.iwae_k = max(1, min(ctx.iwae_k, ctx.num_q))

    def update(self, batch: Batch) -> None:
        log_lik = batch.cat("log_likelihood")
        kl_term = batch.draws.of_q(torch.cat([p.log_q - p.log_prior for p in batch.parts]))
        log_w = log_lik - kl_term                                                       # [n_q, b]
        self.keep("rec", log_lik.mean(0))
        self.keep("kl", kl_term.mean(0))
        self.keep("elbo", log_w.mean(0))
        for s in self.ctx.model.latents:
            self.keep("kl:" + s.name, batch.draws.of_q(torch.cat([p.site_log_q[s.name] - p.site_log_prior[s.name]
                                                                  for p in batch.parts])).mean(0))
        groups = log_w.shape[0] // self.iwae_k
        grouped = log_w[:groups * self.iwae_k].reshape(groups, self.iwae_k, -1)             # [n_q/k, k, b]
        self.keep("iwae", torch.stack([per_datum_renyi_bound(g, 0.0) for g in grouped]).mean(0))

    def finish(self, result, per_datum):
        elbo = self.column("elbo")
        return ({"elbo": elbo.mean().item(), "reconstruction": self.column("rec").mean().item(),
                 "kl": self.column("kl").mean().item(),
                 "kl_per_site": {s.name: self.column("kl:" + s.name).mean().item() for s in self.ctx.model.latents},
                 "iwae_k": self.iwae_k, "iwae_bound": self.column("iwae").mean().item()},
                {"elbo": elbo})
