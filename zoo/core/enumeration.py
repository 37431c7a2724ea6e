"""Exact log p(x) for any model whose latents are all discrete, by enumerating them.

    log p(x) = log sum_z p(z) p(x | z)

over every joint configuration z of the model's declared latents. The model is run
under ``poutine.condition`` with a chunk of C configurations stacked on a
``"particles"`` plate left of the data plate, so one trace scores C configurations
for every datum at once, and the chunks are combined with logsumexp. Nothing here
knows which model it is; it reads ``model.latents`` only.
"""
from __future__ import annotations

import itertools
from typing import Dict, Iterator

import pyro.poutine as poutine
import torch

from zoo.core.distributions import ENUMERATION_LIMIT, joint_configurations
from zoo.core.errors import ZooError
from zoo.core.weights import is_deterministic, masked_log_prob, vectorize

__all__ = ["enumerated_log_marginal", "configuration_chunks", "site_configurations"]


def site_configurations(site, device=None, dtype=torch.float32) -> torch.Tensor:
    """Every value one datum's discrete ``site`` can take, ``[C, *event_shape]``, in the site's own form:
    0. and 1. for one bit, the K rows of the identity for a one-hot site, the integers 0..K-1 for an
    index site, and the joint configurations of the zoo's vector forms (:func:`joint_configurations`); the real-valued
    forms in ``dtype`` (a double-precision model's)."""
    if site.form == "bit":
        return torch.tensor([0.0, 1.0], device=device, dtype=dtype)
    if site.form == "one_hot":
        return torch.eye(site.num_classes, device=device, dtype=dtype)
    if site.form == "index":
        return torch.arange(site.num_classes, device=device)
    return joint_configurations(site.support, site.event_shape, device, dtype)


def configuration_chunks(model, chunk: int, device=None, dtype=torch.float32) -> Iterator[Dict[str, torch.Tensor]]:
    """Yield ``{site: values [c, 1, *event]}`` covering the product of all latents' configurations."""
    tables = [site_configurations(s, device, dtype) for s in model.latents]
    sizes = [t.shape[0] for t in tables]
    total = 1
    for n in sizes:
        total *= n
    if total > ENUMERATION_LIMIT:
        raise ZooError(f"exact enumeration needs {total:.3g} latent configurations, more than the limit "
                       f"{ENUMERATION_LIMIT}; estimate log p(x) by importance sampling instead")
    flat = torch.tensor(list(itertools.product(*[range(n) for n in sizes])), device=device).reshape(total, -1)
    for start in range(0, total, chunk):
        rows = flat[start:start + chunk]
        yield {s.name: t[rows[:, j]].unsqueeze(1) for j, (s, t) in enumerate(zip(model.latents, tables))}


def enumerated_log_marginal(model, x: torch.Tensor, max_elements: int = 1 << 24,
                            differentiable: bool = False) -> torch.Tensor:
    """Exact log p(x) per datum, ``[B]``, by summing p(x, z) over all latent configurations
    (differentiable in the model's parameters if asked)."""
    with torch.set_grad_enabled(differentiable):
        return _enumerated_log_marginal(model, x, max_elements)


def _enumerated_log_marginal(model, x, max_elements):
    chunk = max(1, max_elements // (x.shape[0] * max(1, x.shape[1])))
    parts = []
    for values in configuration_chunks(model, chunk, x.device, x.dtype):
        c = next(iter(values.values())).shape[0]
        trace = poutine.trace(poutine.condition(vectorize(model.model, c), data=values)).get_trace(x)
        log_joint = 0.0
        for name, site in trace.nodes.items():
            # sites outside the data plate (a model's global latents, held fixed by the caller's
            # poutine.condition) are not summed: the result is then log p(x | theta)
            if site["type"] == "sample" and name not in ("particles", "data") and not is_deterministic(site) \
                    and any(f.name == "data" for f in site["cond_indep_stack"]):
                # an observation's poutine.mask drops its term (a padded step); a latent's is not applied: masked
                # out, it is an auxiliary variable from its own conditional, whose sum over its values is one
                log_p = site["fn"].log_prob(site["value"])
                if site["is_observed"] and site["name"] not in values:
                    log_p = masked_log_prob(log_p, site["mask"])
                log_joint = log_joint + log_p
        parts.append(torch.logsumexp(log_joint, dim=0))
    return torch.logsumexp(torch.stack(parts), dim=0)
