"""The ELBO with free bits (Kingma et al. 2016): a floor lambda under each latent unit's KL.

For a minibatch x_1..x_B of N data, K particles z ~ q(z | x_b), and the latent units j of every
site (a unit is one coordinate of a site's event, each a factorized Normal under q and under the
model's prior, so its KL is in closed form)::

    L_lambda = (N/B) sum_b E_q[log p(x_b | z)]  -  N sum_j max(lambda, KL_j),
    KL_j     = (1/B) sum_b E_q[KL(q(z_j | x_b) || p(z_j | pa_j))]

A model with several observed sites (the mvae's sub-sampled objective observes the joint and each
view alone, each sub-ELBO with its own latent site) has one log-likelihood term per observed site,
each scaled by its own N/B, and one floored KL term per latent site.

KL_j is the unit's KL averaged over the minibatch (and the K particles, which sample the units'
parents pa_j in a hierarchical prior). A unit whose average KL is below lambda costs lambda nats and
gets no gradient from its KL term: the encoder is free to put up to lambda nats of information into
it, which is how free bits keeps a strong (autoregressive) decoder from collapsing the posterior.
At lambda = 0 it is the ELBO with analytic per-unit KLs (``TraceMeanField_ELBO``).

With KL warm-up (:class:`zoo.training.warmup.KLWarmup`) each site's KL term is weighted by beta,
read from the site's scale as every zoo objective reads it: ``- N beta sum_j max(lambda, KL_j)``.

Assumptions: a reparameterized, mean-field guide whose sites, like the model's latent sites, are
Normal distributions (with ``Independent``) of the same shape; anything else is refused in one line
(a structured guide would make the per-unit closed forms biased; a flow has no per-unit KL).

Reference: D. P. Kingma, T. Salimans, R. Jozefowicz, X. Chen, I. Sutskever, M. Welling,
"Improved Variational Inference with Inverse Autoregressive Flow", NeurIPS 2016, appendix C.8,
https://arxiv.org/abs/1606.04934.
"""
from __future__ import annotations

import math
from typing import Tuple

import pyro.poutine as poutine
import torch
from pyro.infer import ELBO
from torch.distributions import Independent, kl_divergence

from zoo.core.errors import ZooError
from zoo.core.plates import MAX_PLATE_NESTING
from zoo.core.weights import vectorize

__all__ = ["FreeBitsELBO", "unit_kl"]


def _normal_base(d, what: str, site: str) -> Tuple[torch.distributions.Normal, int]:
    event_dims = 0
    while isinstance(d, Independent):
        event_dims += d.reinterpreted_batch_ndims
        d = d.base_dist
    if not isinstance(d, torch.distributions.Normal):
        raise ZooError(f"free bits takes each latent unit's KL in closed form, which needs Normal {what}s; "
                       f"site {site!r} has {type(d).__name__}: drop free_bits, or use a Normal {what}")
    return d, event_dims


def unit_kl(q, p, site: str = "z") -> torch.Tensor:
    """KL(q || p) of each latent unit of a site, ``[*batch, units]``, for factorized Normal q and p."""
    q_base, q_event = _normal_base(q, "guide site", site)
    p_base, p_event = _normal_base(p, "prior", site)
    kl = kl_divergence(q_base, p_base)
    event_dims = max(q_event, p_event)
    return kl.reshape(kl.shape[:kl.dim() - event_dims] + (-1,))


class FreeBitsELBO(ELBO):
    """The free-bits ELBO ``L_lambda`` above; ``loss`` is ``-L_lambda`` for the minibatch.

    Arguments:
        free_bits: lambda >= 0, nats per latent unit.
        num_particles: K samples per datum (vectorized).
    """

    def __init__(self, free_bits: float, num_particles: int = 1):
        if not 0 <= free_bits < math.inf:
            raise ZooError(f"free_bits must be a finite number of nats per latent unit, at least 0; got {free_bits}")
        super().__init__(num_particles=num_particles, vectorize_particles=True, max_plate_nesting=MAX_PLATE_NESTING)
        self.free_bits = float(free_bits)

    def _get_trace(self, model, guide, args, kwargs):
        raise NotImplementedError("FreeBitsELBO traces model and guide itself, in terms()")

    def terms(self, model, guide, *args, **kwargs):
        """Per observed site (its scale N/B, log-likelihood ``[K, B]``), and per latent site (its scale
        beta N/B, KL per unit ``[K, B, units]``)."""
        K = self.num_particles
        guide_trace = poutine.trace(vectorize(guide, K)).get_trace(*args, **kwargs)
        model_trace = poutine.trace(poutine.replay(vectorize(model, K), trace=guide_trace)).get_trace(*args, **kwargs)
        observed, latents = [], []
        for name, site in model_trace.nodes.items():
            if site["type"] != "sample" or name in ("particles", "data"):
                continue
            if site["is_observed"]:
                observed.append((float(site["scale"]), site["fn"].log_prob(site["value"])))
            else:
                if name not in guide_trace.nodes:
                    raise ZooError(f"the guide does not sample the model's latent {name!r}; a guide must cover "
                                   f"every latent site")
                q = guide_trace.nodes[name]["fn"]
                if not q.has_rsample:
                    raise ZooError(f"free bits needs a reparameterized guide; site {name!r} is not: drop free_bits")
                latents.append((float(site["scale"]), unit_kl(q, site["fn"], name)))
        if not observed:
            raise ZooError("the model observed nothing: pass the data x to score it")
        return observed, latents

    def check(self, model, guide, *args, **kwargs) -> None:
        """Raise :class:`ZooError` unless every latent site is a factorized Normal under guide and model
        (one pass without gradient on the data given, leaving torch's random state as it was)."""
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            self.terms(model, guide, *args, **kwargs)

    def differentiable_loss(self, model, guide, *args, **kwargs):
        observed, latents = self.terms(model, guide, *args, **kwargs)
        objective = sum(scale * log_likelihood.mean(0).sum() for scale, log_likelihood in observed)
        B = observed[0][1].shape[-1]
        for scale, kl in latents:                                     # scale = beta N / B
            per_unit = kl.reshape(-1, kl.shape[-1]).mean(0)          # KL_j, averaged over particles and data
            objective = objective - scale * B * torch.clamp(per_unit, min=self.free_bits).sum()
        return -objective

    def loss(self, model, guide, *args, **kwargs):
        with torch.no_grad():
            return self.differentiable_loss(model, guide, *args, **kwargs).item()

    def loss_and_grads(self, model, guide, *args, **kwargs):
        loss = self.differentiable_loss(model, guide, *args, **kwargs)
        loss.backward()
        return loss.item()
