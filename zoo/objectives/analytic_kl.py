"""Where Pyro's ``TraceMeanField_ELBO`` (the zoo's ``tracemeanfield``, ``--estimator analytic_kl``) has a
closed-form KL, and where it silently does not.

TraceMeanField_ELBO computes KL(q(z) || p(z)) with :func:`torch.distributions.kl_divergence` for each latent
site, and where no closed form is registered for the pair (a flow guide, a ``TransformedDistribution``,
against a Normal prior) it falls back to the Monte Carlo estimate log q(z) - log p(z) without a word: the
objective is then the plain ``elbo``. :func:`sites_without_closed_form_kl` finds those sites, so a run can
say so (e.g. ``iaf`` with ``tracemeanfield``).

Example::

    >>> import torch, zoo
    >>> from zoo.registry import build_guide, build_model
    >>> model = build_model("vae", x_dim=64, latent_dim=2)
    >>> sites_without_closed_form_kl(model, build_guide("iaf", model), torch.zeros(2, 64))
    ['z']
    >>> sites_without_closed_form_kl(model, build_guide("amortized", model), torch.zeros(2, 64))
    []
"""
from __future__ import annotations

from typing import List, Optional

import torch
from pyro import poutine
from pyro.poutine.util import site_is_subsample
from torch.distributions import kl_divergence

__all__ = ["sites_without_closed_form_kl", "uses_analytic_kl"]


def uses_analytic_kl(objective: str, estimator: Optional[str] = None) -> bool:
    """Is ``objective`` (with ``estimator``, as given to a bound) the ELBO with TraceMeanField_ELBO's KL?"""
    from zoo.objectives import preset_of
    return preset_of(objective, estimator) == ("elbo", "analytic_kl")


def sites_without_closed_form_kl(model, guide, x: torch.Tensor) -> List[str]:
    """The latent sites of ``model`` whose KL from ``guide``'s site has no closed form in torch (so
    TraceMeanField_ELBO estimates it by Monte Carlo), from one trace of both on the data ``x`` ``[n, D]``, as
    training sees them: the guide in training mode, the model through the guide's ``training_model`` (a
    relaxed guide's Concrete sites meet a relaxed model, whose KL the relaxed guide registers)."""
    idx = torch.arange(x.shape[0], device=x.device)
    was_training = guide.training
    guide.train()
    model = guide.training_model(model) if hasattr(guide, "training_model") else model
    try:
        return _missing(model, guide, x, idx)
    finally:
        guide.train(was_training)


def _missing(model, guide, x: torch.Tensor, idx: torch.Tensor) -> List[str]:
    with torch.no_grad():
        guide_trace = poutine.trace(guide).get_trace(x, idx=idx, N=x.shape[0])
        model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(x, idx=idx, N=x.shape[0])
    missing = []
    for name, site in model_trace.nodes.items():
        if site["type"] != "sample" or site["is_observed"] or site_is_subsample(site) or name not in guide_trace.nodes:
            continue
        try:
            kl_divergence(guide_trace.nodes[name]["fn"], site["fn"])
        except NotImplementedError:
            missing.append(name)
    return missing
