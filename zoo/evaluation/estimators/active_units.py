"""How many latent units the model uses (Burda et al. 2016), in all and per latent site.

``active_units``, ``active_units_per_site``, ``num_latent_units``
    The units u with Cov_x(E_q[z_u | x]) > 0.01 over the evaluated data, where E_q[z | x] is the guide's
    analytic mean, or the mean of q's draws for guides (flows) that have none. A site that a structured guide
    conditions on other samples (z2 in q(z2 | z1, x)) has an analytic mean per draw of z1; their average is
    E_q[z2 | x] (Rao-Blackwellized). An index (Categorical) site counts as its one-hot vector. A site in hyperbolic
    space H^d counts the d units the decoder reads, log_(mu_0)(z) (:meth:`~zoo.core.latents.LatentFamily.decoder_input`;
    the mean of q's draws of it), not its d + 1 Lorentz coordinates, the first of which is a function of the
    others; a site on the sphere counts its d ambient coordinates, which the decoder reads. Where E_q[z_u | x] is
    a mean over M draws, Cov_x of it is Cov_x(E_q[z_u | x]) plus the draws' Monte Carlo variance Var_q / M, which
    would inflate the count: that variance (each datum's sample variance of its draws / M, averaged over the data)
    is subtracted. per_datum.npz keeps E_q[z | x] (``z_mean``) for the latent-space plots.
"""
from __future__ import annotations

import torch

from zoo.core.latents import LATENT_FAMILIES
from zoo.evaluation.estimators.base import Batch, Estimator

__all__ = ["ActiveUnits", "ACTIVE_UNIT_THRESHOLD"]

ACTIVE_UNIT_THRESHOLD = 0.01


def _per_draw(site, parts, num_q: int) -> torch.Tensor:
    """What E_q[z_u | x] averages, one row per draw of q ``[num_q, b, ...]``: the guide's analytic mean where it has
    one (per draw of the sites it conditions on), else the draw itself (as the decoder reads it: log_(mu_0)(z) on
    H^d, the one-hot vector of an index site)."""
    name = site.name
    if site.form == "index":
        values = [site.features(p.latents[name]) for p in parts]
    elif site.support == "hyperbolic":
        values = [LATENT_FAMILIES[site.family].decoder_input(p.latents[name]) for p in parts]
    elif name in parts[0].guide_means:
        values = [p.guide_means[name].expand_as(p.latents[name]) for p in parts]
    else:
        values = [p.latents[name] for p in parts]
    return torch.cat(values)[:num_q]


def _mean_over_draws(site, parts, num_q: int):
    """E_q[z_u | x] per datum ``[b, ...]`` where the guide's analytic mean is the same for every draw of q (it
    conditions on no other sample: each chunk's mean is a broadcast view, stride 0 along the draws, and the chunks
    agree), else ``None``. The mean over draws is then that mean exactly, with no Monte Carlo variance, and the
    ``[K, b, ...]`` rows need not be formed (at K = 5000 on MNIST, 100 MB a minibatch, in float64 twice that)."""
    name = site.name
    if site.form == "index" or site.support == "hyperbolic" or name not in parts[0].guide_means:
        return None
    first, taken = None, 0
    for p in parts:
        if taken >= num_q:
            break
        mean = p.guide_means[name]
        if mean.dim() < 1 or (mean.shape[0] > 1 and mean.stride(0) != 0):
            return None
        if first is None:
            first = mean[0]
        elif not torch.equal(mean[0], first):
            return None
        taken += p.latents[name].shape[0]
    return first


def _mean_and_noise(rows: torch.Tensor, b: int):
    """(the mean over draws, per datum and unit, and its Monte Carlo variance: the draws' sample variance / their
    number, 0 where every draw gives the same value, as an unconditioned analytic mean does)."""
    rows = rows.reshape(rows.shape[0], b, -1).double()
    noise = rows.var(0, unbiased=True) / rows.shape[0] if rows.shape[0] > 1 else torch.zeros_like(rows[0])
    return rows.mean(0), noise


def _units(site) -> int:
    """How many units a site counts: its value's numbers, or d of a hyperbolic site's d + 1."""
    return LATENT_FAMILIES[site.family].dim_of(site.value_size) if site.support == "hyperbolic" else site.value_size


class ActiveUnits(Estimator):
    name = "active_units"
    keys = {
        "active_units": "units with Cov_x(E_q[z_u|x]) > 0.01",
        "active_units_per_site": "per latent site: its units with Cov_x(E_q[z_u|x]) > 0.01",
        "num_latent_units": "total latent units",
    }

    def update(self, batch: Batch) -> None:
        b, num_q = batch.x.shape[0], batch.draws.num_q
        parts = []
        for s in self.ctx.model.latents:
            mean = _mean_over_draws(s, batch.parts, num_q)
            if mean is None:
                parts.append(_mean_and_noise(_per_draw(s, batch.parts, num_q), b))
            else:
                mean = mean.reshape(b, -1).double()
                parts.append((mean, torch.zeros_like(mean)))
        empty = batch.x.new_zeros(b, 0).double()
        self.keep("z_mean", torch.cat([m for m, _ in parts] + [empty], dim=-1))
        self.keep("z_mean_noise", torch.cat([v for _, v in parts] + [empty], dim=-1))

    def finish(self, result, per_datum):
        z_mean, noise = self.column("z_mean"), self.column("z_mean_noise")
        n = z_mean.shape[0]
        # no local unit (a model whose only latents are global): nothing to count, and var() of zero columns warns.
        # Cov_x of a mean over draws is Cov_x(E_q[z_u | x]) plus the mean Monte Carlo variance of those means:
        # subtracted, the estimate is unbiased, and a unit is not counted for the noise of its draws
        variance = z_mean.var(0, unbiased=True) - noise.mean(0) if n > 1 and z_mean.shape[1] \
            else torch.zeros(z_mean.shape[1])
        active = variance > ACTIVE_UNIT_THRESHOLD
        sizes = [_units(s) for s in self.ctx.model.latents]
        return ({"active_units": int(active.sum()),
                 "active_units_per_site": {s.name: int(a.sum())
                                           for s, a in zip(self.ctx.model.latents, active.split(sizes))},
                 "num_latent_units": int(z_mean.shape[1])},
                {"z_mean": z_mean.float()})
