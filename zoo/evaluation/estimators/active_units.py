"""How many latent units the model uses (Burda et al. 2016), in all and per latent site.

``active_units``, ``active_units_per_site``, ``num_latent_units``
    The units u with Cov_x(E_q[z_u | x]) > 0.01 over the evaluated data, where E_q[z | x] is the guide's
    analytic mean (a sample mean would add Monte Carlo variance to Cov_x and inflate the count), or the
    mean of q's draws for guides (flows) that have none. A site that a structured guide conditions on
    other samples (z2 in q(z2 | z1, x)) has an analytic mean per draw of z1; their average is E_q[z2 | x]
    (Rao-Blackwellized). An index (Categorical) site counts as its one-hot vector. A site in hyperbolic space
    H^d counts the d units the decoder reads, log_(mu_0)(z) (:meth:`~zoo.core.latents.LatentFamily.decoder_input`;
    the mean of q's draws of it), not its d + 1 Lorentz coordinates, the first of which is a function of the
    others; a site on the sphere counts its d ambient coordinates, which the decoder reads. per_datum.npz keeps
    E_q[z | x] (``z_mean``) for the latent-space plots.
"""
from __future__ import annotations

import torch

from zoo.core.latents import LATENT_FAMILIES
from zoo.evaluation.estimators.base import Batch, Estimator

__all__ = ["ActiveUnits", "ACTIVE_UNIT_THRESHOLD"]

ACTIVE_UNIT_THRESHOLD = 0.01


def _posterior_mean(name: str, parts, num_q: int) -> torch.Tensor:
    if name in parts[0].guide_means:
        return torch.cat([p.guide_means[name].expand_as(p.latents[name]) for p in parts])[:num_q].mean(0)
    return torch.cat([p.latents[name] for p in parts])[:num_q].mean(0)


def _tangent_mean(site, parts, num_q: int) -> torch.Tensor:
    """E_q[log_(mu_0)(z) | x] of a hyperbolic site, from q's draws."""
    family = LATENT_FAMILIES[site.family]
    return torch.cat([family.decoder_input(p.latents[site.name]) for p in parts])[:num_q].mean(0)


def _units(site) -> int:
    """How many units a site counts: its value's numbers, or d of a hyperbolic site's d + 1."""
    return LATENT_FAMILIES[site.family].dim_of(site.value_size) if site.support == "hyperbolic" else site.value_size


def _index_mean(site, parts, num_q: int) -> torch.Tensor:
    """E_q[one_hot(z) | x] of an index site, whose own mean is undefined (torch's is NaN)."""
    return torch.cat([site.features(p.latents[site.name]) for p in parts])[:num_q].mean(0)


class ActiveUnits(Estimator):
    name = "active_units"
    keys = {
        "active_units": "units with Cov_x(E_q[z_u|x]) > 0.01",
        "active_units_per_site": "per latent site: its units with Cov_x(E_q[z_u|x]) > 0.01",
        "num_latent_units": "total latent units",
    }

    def update(self, batch: Batch) -> None:
        b, num_q = batch.x.shape[0], batch.draws.num_q
        self.keep("z_mean", torch.cat([(_index_mean(s, batch.parts, num_q) if s.form == "index" else
                                        _tangent_mean(s, batch.parts, num_q) if s.support == "hyperbolic" else
                                        _posterior_mean(s.name, batch.parts, num_q)).reshape(b, -1)
                                       for s in self.ctx.model.latents] + [batch.x.new_zeros(b, 0)], dim=-1))

    def finish(self, result, per_datum):
        z_mean = self.column("z_mean")
        n = z_mean.shape[0]
        # no local unit (a model whose only latents are global): nothing to count, and var() of zero columns warns
        variance = z_mean.var(0, unbiased=True) if n > 1 and z_mean.shape[1] else torch.zeros(z_mean.shape[1])
        active = variance > ACTIVE_UNIT_THRESHOLD
        sizes = [_units(s) for s in self.ctx.model.latents]
        return ({"active_units": int(active.sum()),
                 "active_units_per_site": {s.name: int(a.sum())
                                           for s, a in zip(self.ctx.model.latents, active.split(sizes))},
                 "num_latent_units": int(z_mean.shape[1])},
                {"z_mean": z_mean.float()})
