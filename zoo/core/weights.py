"""Per-datum importance weights, formed from Pyro traces for any zoo model and guide.

For a minibatch x_1..x_B and K particles z^(k)_b ~ q(z | x_b) this computes::

    log w_{k,b} = log p(x_b | z^(k)_b) + log p(z^(k)_b) - log q(z^(k)_b | x_b)

where log p(x_b | z) is the sum over every observed site in the data plate (one site ``"x"``,
or a sequence model's per-step emissions ``x_t``, each holding some columns of x) plus every
``pyro.factor`` term there. A factor counts in the likelihood term, as Pyro counts it (an observed
site): the prior term then stays log p(z), a normalized density, so the reported KL is a KL.
``pyro.deterministic`` sites (recorded values without a density) are skipped.

as a ``[K, B]`` tensor, *without* the plate's subsample scale N/B. The guide runs
under a vectorized ``"particles"`` plate left of the data plate, then the model is
replayed against its trace, exactly as Pyro's own vectorized ELBOs do. The split
into likelihood, prior and guide terms is what the evaluation harness reports as
reconstruction and KL. Both the Renyi/IWAE objectives and the harness use this one
function, so training bounds and reported bounds are the same computation.

The contract it relies on (:mod:`zoo.core.contract`): every local latent is inside the
``"data"`` plate, and the guide samples every latent the model has.

**Global latents** theta (sites outside the data plate, ``model.global_latents``) are sampled
*once* per call and shared by the K particles: the particle plate applies only to sites inside
the data plate (:func:`vectorize`), so a model indexing a global ``locs[assignment]`` still sees
``locs`` as it wrote it. The weights above are then those of x_b given that theta,
log w_{k,b} = log p(x_b, z^(k)_b | theta) - log q(z^(k)_b | x_b), and the global terms come apart,
each summed over its own dimensions and counted once (not N/B times)::

    global_log_prior = log p(theta),   global_log_q = log q(theta)

so that an objective's data-set bound is N/B sum_b reduce_k(log w[:, b]) + log p(theta) - log q(theta)
(:class:`~zoo.objectives.base.PerDatumObjective`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional

import math

import pyro.poutine as poutine
import torch
from pyro.poutine.broadcast_messenger import BroadcastMessenger
from pyro.poutine.indep_messenger import CondIndepStackFrame
from pyro.poutine.messenger import Messenger

from zoo.core.errors import ZooError
from zoo.core.plates import MAX_PLATE_NESTING

__all__ = ["LogWeights", "vectorize", "per_datum_log_weights", "per_datum_renyi_bound", "is_deterministic",
           "is_factor", "is_subsample_site", "AssembledObservation", "dreamt_data", "masked_log_prob"]


@dataclass
class LogWeights:
    """Per-particle, per-datum log densities, each ``[K, B]``."""

    log_likelihood: torch.Tensor   # log p(x | z)
    log_prior: torch.Tensor        # log p(z)
    log_q: torch.Tensor            # log q(z | x)
    scale: float                   # N / B, the data plate's subsample factor
    latents: Dict[str, torch.Tensor] = field(default_factory=dict)   # z, [K, B, *event]
    guide_means: Dict[str, torch.Tensor] = field(default_factory=dict)  # E_q[z | x] where analytic
    x_dist: object = None          # p(x | z): its ``mean`` is E[x | z], [K, B, D]
    reparameterized: bool = True
    model_params: List[torch.Tensor] = field(default_factory=list)   # from the traces' param sites
    guide_params: List[torch.Tensor] = field(default_factory=list)
    site_log_prior: Dict[str, torch.Tensor] = field(default_factory=dict)   # log p(z_s | parents), per latent
    site_log_q: Dict[str, torch.Tensor] = field(default_factory=dict)       # log q(z_s | ...), per latent
    global_log_prior: object = 0.0     # log p(theta), a scalar (0.0 without global latents)
    global_log_q: object = 0.0         # log q(theta), a scalar
    global_values: Dict[str, torch.Tensor] = field(default_factory=dict)    # theta, per global site
    #: per latent whose log q was masked (``poutine.mask`` in the guide, or the model masking that latent): the
    #: mask, so that another density of the same draw (the defensive proposal's q_wide) is masked the same way
    site_q_mask: Dict[str, object] = field(default_factory=dict)

    @property
    def global_term(self):
        """log p(theta) - log q(theta), counted once per data set (0.0 without global latents)."""
        return self.global_log_prior - self.global_log_q

    @property
    def log_w(self) -> torch.Tensor:
        return self.log_likelihood + self.log_prior - self.log_q

    @property
    def x_mean(self) -> torch.Tensor:
        """E[x | z], ``[K, B, D]``, computed on demand: for a Bernoulli decoder it is a sigmoid
        over all K x B x D logits, which the training objectives never need (only the
        harness's reconstruction plot does), so an IWAE step should not pay for it."""
        return None if self.x_dist is None else self.x_dist.mean


class LocalParticles(Messenger):
    """A ``"particles"`` plate of size K at dim -2, just left of the data plate, for the sites *inside*
    the data plate only.

    ``pyro.plate("particles", K)`` would broadcast every site in its scope, global latents too, so K
    particles would each draw their own theta, and a model's ``locs[assignment]`` would index a
    ``[K, ...]`` tensor it never wrote. Here the frame is added (and the site's distribution broadcast,
    as a plate does) only for messages that already carry the data plate's frame; the data plate is
    entered inside this messenger, so its frame is there when this one sees the message. No plate dim
    is allocated, so a model's own plates of global latents (at any dim) do not collide with it.
    """

    def __init__(self, size: int):
        super().__init__()
        self.frame = CondIndepStackFrame(name="particles", dim=-(MAX_PLATE_NESTING + 1), size=size, counter=0)

    def _process_message(self, msg) -> None:
        if any(f.name == "data" for f in msg["cond_indep_stack"]):
            msg["cond_indep_stack"] = (self.frame,) + tuple(msg["cond_indep_stack"])
            BroadcastMessenger._pyro_sample(msg)


def vectorize(fn: Callable, num_particles: int) -> Callable:
    """Run ``fn`` with K = ``num_particles`` particles of every site inside the data plate, at dim -2
    (:class:`LocalParticles`); sites outside it (global latents) are sampled once and shared."""
    def vectorized(*args, **kwargs):
        with LocalParticles(num_particles):
            return fn(*args, **kwargs)
    return vectorized


def is_deterministic(site) -> bool:
    """A ``pyro.deterministic`` site: a recorded value with no density (a masked Delta), ignored everywhere."""
    return bool((site.get("infer") or {}).get("_deterministic"))


def is_factor(site) -> bool:
    """A ``pyro.factor`` site: an observed ``Unit`` whose log-probability is the factor itself."""
    return site["is_observed"] and type(site["fn"]).__name__ == "Unit"


def is_subsample_site(site) -> bool:
    """The sample site a ``pyro.plate`` records for its indices (its ``fn`` is Pyro's private
    ``_Subsample``, matched by name here only): bookkeeping, no density, no latent."""
    return type(site["fn"]).__name__ == "_Subsample"


class AssembledObservation:
    """p(x | z) of a model with several observed sites, each holding some columns of x (a sequence
    model's per-step emissions ``x_t = x[:, t*d:(t+1)*d]``): its :attr:`mean` is E[x | z] ``[K, B, D]``,
    each site's mean put in its columns; columns no site observes (covariates) hold the data given."""

    def __init__(self, sites, x: torch.Tensor):
        self.sites, self.x = sites, x               # sites: [(p(x_s | z), its columns)]

    @property
    def mean(self) -> torch.Tensor:
        batch = torch.broadcast_shapes(*(fn.batch_shape for fn, _ in self.sites))
        out = self.x.expand(*batch[:-1], *self.x.shape).clone()
        for fn, columns in self.sites:
            out[..., list(columns)] = fn.mean.expand(*batch, *fn.event_shape).reshape(*batch, len(columns))
        return out


def dreamt_data(trace):
    """(x ``[B, D]``, the names of its sites) from a generation trace, ``model(None, N=B)``: the sites
    tagged with the columns of x they hold (``infer["zoo_columns"]``, a user's Pyro model), each put in
    its columns, else the contract's site ``"x"``."""
    tagged = {n: s for n, s in trace.nodes.items()
              if s["type"] == "sample" and "zoo_columns" in (s["infer"] or {})}
    if not tagged:
        return trace.nodes["x"]["value"], ("x",)
    B = next(iter(tagged.values()))["value"].shape[0]
    D = 1 + max(c for s in tagged.values() for c in s["infer"]["zoo_columns"])
    first = next(iter(tagged.values()))["value"]
    x = first.new_zeros(B, D, dtype=torch.get_default_dtype())
    for site in tagged.values():
        columns = site["infer"]["zoo_columns"]
        x[:, list(columns)] = site["value"].reshape(B, len(columns)).to(x.dtype)
    return x, tuple(tagged)


def _in_data_plate(site) -> bool:
    return any(frame.name == "data" for frame in site["cond_indep_stack"])


def per_datum_log_weights(model: Callable, guide: Callable, *args, num_particles: int = 1,
                          detach_latents: bool = False, q_transform: Optional[Callable] = None,
                          **kwargs) -> LogWeights:
    """Sample ``num_particles`` z per datum from ``guide`` and score them under ``model``.

    ``args``/``kwargs`` are passed to both, e.g. ``(x, idx=idx, N=N)``. With
    ``detach_latents`` the samples carry no gradient (path derivatives are cut), so
    gradients of log q reach the guide's parameters only through its density (score).
    ``q_transform`` maps each guide distribution before log q is evaluated (e.g. to cut
    its parameters from the graph, for path-derivative estimators).
    """
    guide_trace = poutine.trace(vectorize(guide, num_particles)).get_trace(*args, **kwargs)
    if detach_latents:
        # local samples only: theta stays reparameterized (the global guide is a Normal or a point mass)
        for site in guide_trace.nodes.values():
            if site["type"] == "sample" and _in_data_plate(site):
                site["value"] = site["value"].detach()
    model_trace = poutine.trace(
        poutine.replay(vectorize(model, num_particles), trace=guide_trace)).get_trace(*args, **kwargs)

    log_likelihood, log_prior_terms, log_q_terms = 0.0, [], []
    scale, x_dist, latents, guide_means = _plate_scale(model_trace), None, {}, {}
    site_log_prior, site_log_q, observed, latent_masks, site_q_mask = {}, {}, [], {}, {}
    global_log_prior, global_log_q, global_values = 0.0, 0.0, {}
    reparameterized = True
    for name, site in model_trace.nodes.items():
        if site["type"] != "sample" or name in ("particles", "data") or is_deterministic(site) \
                or is_subsample_site(site):
            continue
        if not _in_data_plate(site):
            if site["is_observed"]:
                raise ZooError(f"observed site {name!r} lies outside the 'data' plate; per-datum bounds need "
                               f"every observation inside pyro.plate('data', N, subsample=idx)")
            if name not in guide_trace.nodes:
                raise ZooError(f"the guide does not sample the model's global latent {name!r}; "
                               f"a guide must cover every latent site")
            log_p = masked_log_prob(site["fn"].log_prob(site["value"]), site["mask"])
            global_log_prior = global_log_prior + site["scale"] * log_p.sum()
            global_values[name] = site["value"]
            continue
        log_p = masked_log_prob(site["fn"].log_prob(site["value"]), site["mask"])
        if site["is_observed"]:             # every observed site and every pyro.factor: log p(x | z)
            log_likelihood = log_likelihood + _relative(log_p, site["scale"], scale)
            if not is_factor(site):
                observed.append((site["fn"], (site["infer"] or {}).get("zoo_columns")))
        else:
            if name not in guide_trace.nodes:
                raise ZooError(f"the guide does not sample the model's latent {name!r}; "
                               f"a guide must cover every latent site")
            log_prior_terms.append((log_p, site["scale"]))
            if site["mask"] is not None:
                latent_masks[name] = site["mask"]
            latents[name] = site["value"]
            site_log_prior[name] = log_p
    for name, site in guide_trace.nodes.items():
        if site["type"] == "sample" and name in global_values:
            global_log_q = global_log_q + site["scale"] * site["fn"].log_prob(site["value"]).sum()
            reparameterized = reparameterized and bool(site["fn"].has_rsample)
        elif site["type"] == "sample" and name not in ("particles", "data") and not is_subsample_site(site):
            q = q_transform(site["fn"]) if q_transform is not None else site["fn"]
            # where the model masks a latent out, its value is an auxiliary draw of q that integrates to
            # one: q's density there leaves the weight too, so it stays p(x, z_kept) / q(z_kept | x)
            site_log_q[name] = masked_log_prob(masked_log_prob(q.log_prob(site["value"]), site["mask"]),
                                               latent_masks.get(name))
            if site["mask"] is not None or name in latent_masks:
                site_q_mask[name] = _both(site["mask"], latent_masks.get(name))
            log_q_terms.append((site_log_q[name], site["scale"]))
            reparameterized = reparameterized and bool(site["fn"].has_rsample)
            try:
                guide_means[name] = site["fn"].mean
            except NotImplementedError:         # e.g. a flow: no closed-form mean
                pass
    if not torch.is_tensor(log_likelihood):
        raise ZooError("the model observed nothing: pass the data x to score it")
    if len(observed) == 1 and observed[0][1] in (None, tuple(range(args[0].shape[-1]))):
        x_dist = observed[0][0]                       # one site holding all of x, in order
    elif observed and all(columns is not None for _, columns in observed):
        x_dist = AssembledObservation(observed, args[0])
    log_prior, log_q = _weighted_sum(log_prior_terms, scale), _weighted_sum(log_q_terms, scale)
    if not torch.is_tensor(log_prior):          # a model whose only latents are global
        log_prior = torch.zeros_like(log_likelihood)
    if not torch.is_tensor(log_q):
        log_q = torch.zeros_like(log_likelihood)
    log_likelihood, log_prior, log_q = torch.broadcast_tensors(log_likelihood, log_prior, log_q)
    def params(trace):
        return list({id(s["value"]): s["value"] for s in trace.nodes.values() if s["type"] == "param"}.values())

    return LogWeights(log_likelihood, log_prior, log_q, scale, latents, guide_means, x_dist, reparameterized,
                      params(model_trace), params(guide_trace), site_log_prior, site_log_q,
                      global_log_prior, global_log_q, global_values, site_q_mask)


def _plate_scale(model_trace) -> float:
    """N / B of the data plate, read from its subsample site (1.0 where the plate is not subsampled)."""
    site = model_trace.nodes.get("data")
    if site is None or not is_subsample_site(site):
        return 1.0
    return float(site["fn"].size) / float(len(site["value"]))


def masked_log_prob(log_p: torch.Tensor, mask) -> torch.Tensor:
    """A site's log-density under ``poutine.mask``, as Pyro's ELBOs count it: zero where the mask is False."""
    if mask is None or mask is True:
        return log_p
    if mask is False:
        return torch.zeros_like(log_p)
    return torch.where(mask, log_p, log_p.new_zeros(()))


def _both(a, b):
    """The conjunction of two ``poutine.mask`` masks (None: no mask)."""
    if a is None or a is True:
        return b
    if b is None or b is True:
        return a
    return a & b if torch.is_tensor(a) and torch.is_tensor(b) else (a and b)


def _relative(log_p: torch.Tensor, site_scale, data_scale: float):
    """``log_p`` weighted by its site's scale relative to the data plate's N/B: 1 for a plain observation, the
    factor of a ``poutine.scale`` the model applies to it (a tempered likelihood), as Pyro's ELBOs weight it."""
    weight = site_scale / data_scale
    return log_p if isinstance(weight, float) and abs(weight - 1.0) < 1e-12 else weight * log_p


def _weighted_sum(terms, data_scale: float):
    """Sum latent log-densities, each weighted by its site's scale relative to the data's.

    Sites inside the data plate carry the plate's N/B like the observation, so the weight is 1;
    under :class:`zoo.training.warmup.KLWarmup` a latent's scale is beta * N/B and its weight beta."""
    total = 0.0
    for log_p, site_scale in terms:
        weight = site_scale / data_scale
        total = total + (log_p if isinstance(weight, float) and weight == 1.0 else weight * log_p)
    return total


def per_datum_renyi_bound(log_w: torch.Tensor, alpha: float) -> torch.Tensor:
    """The Renyi bound of each datum from its ``[K, B]`` log-weights, shape ``[B]``.

    alpha = 0 is the IWAE bound log (1/K) sum_k w_k; alpha = 1 is the ELBO mean_k log w_k.
    """
    K = log_w.shape[0]
    if alpha == 1.0:
        return log_w.mean(0)
    return (torch.logsumexp((1.0 - alpha) * log_w, dim=0) - math.log(K)) / (1.0 - alpha)
