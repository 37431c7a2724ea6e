"""Probes of homework 1: what must run next to the student's code, in the grader's worker.

A probe is called as ``probe(submission, *args)`` with arguments the grader chose (network weights,
data, indices, probe points) and returns plain values: sample-site summaries of a Pyro trace, Monte
Carlo draws and gradients, trained weights. It decides nothing: the grader validates what comes back
and computes every verdict itself with its own networks (:mod:`zoo.homework.bernoulli_vae.checks`,
which the worker does not import). The networks are the ones the starter gives, :class:`Decoder` and
:class:`Encoder`, imported from it (one definition for the student, the probes and the checks); the
grader fixes their architecture and sends their weights.

The Monte Carlo probes take one seed per draw, chosen by the grader, and seed the generators with it before
the draw (:func:`~zoo.homework.base.seed_draw`): the grader replays a few draws in a fresh worker and takes the
draws only if they come back the same (:func:`~zoo.homework.base.assert_replayed`), so that a submission that
replaces what a probe calls cannot make the draws depend on one another.
"""
from __future__ import annotations

import math
from typing import Dict, Optional

import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import torch
from torch import nn

from zoo.homework.base import seed_draw, with_weights
from zoo.homework.bernoulli_vae.starter import Decoder, Encoder

__all__ = ["network", "trace_sites", "meanfield_rows", "reconstruction_draws", "elbo_draws", "train_amortized",
           "fit_meanfield"]


def network(kind: str, z_dim: int, x_dim: int, hidden: int, state: Optional[Dict] = None, double: bool = False):
    """A :class:`Decoder` (``kind="decoder"``) or :class:`Encoder` of that architecture, with weights ``state``."""
    return with_weights(Decoder(z_dim, x_dim, hidden) if kind == "decoder" else Encoder(x_dim, z_dim, hidden), state,
                        double)


def _summary(site, probes):
    """What the grader needs of a sample site: its value, log-probabilities, plate and scale."""
    frames = [f for f in site["cond_indep_stack"] if f.name == "data"]
    log_probs = []
    for point in [site["value"], *probes]:
        try:
            log_probs.append(site["fn"].log_prob(point).detach())
        except (ValueError, RuntimeError):
            log_probs.append(None)
    return {"observed": bool(site["is_observed"]), "value": site["value"].detach(), "log_prob": log_probs,
            "plate": (getattr(frames[0], "full_size", None) or frames[0].size) if frames else None,
            "scale": float(site["scale"]), "has_rsample": bool(getattr(site["fn"], "has_rsample", False)),
            "requires_grad": bool(site["value"].requires_grad)}


def _registered(trace, module: nn.Module):
    ids = {id(s["value"]) for s in trace.nodes.values() if s["type"] == "param"}
    return [name for name, p in module.named_parameters() if id(p) in ids]


def trace_sites(sub, function: str, kind: str, z_dim: int, hidden: int, state, batch, probes_by_site):
    """Trace ``function(network, x, idx, N)`` on ``batch`` = ``(x, idx, N)`` (``model`` with a decoder,
    ``amortized_guide`` with an encoder, of ``z_dim`` latents, ``hidden`` units and weights ``state``):
    ``{"sites": {name: summary}, "registered": [the network's parameters registered with pyro.module]}``, each
    summary's ``log_prob`` taken at the site's value and at ``probes_by_site[name]``."""
    if function not in ("model", "amortized_guide"):
        raise ValueError(f"no traced function {function}")
    x, idx, N = batch
    net = network(kind, z_dim, x.shape[1], hidden, state)
    trace = poutine.trace(getattr(sub, function)).get_trace(net, x, idx, N)
    sites = {name: _summary(site, probes_by_site.get(name, [])) for name, site in trace.nodes.items()
             if site["type"] == "sample"}
    return {"sites": sites, "registered": _registered(trace, net)}


def meanfield_rows(sub, z_dim: int, x_all, N: int, first_idx, idx_a, idx_b, probe):
    """``meanfield_guide`` on the minibatch ``first_idx``, then, its per-datum parameters perturbed, on
    ``idx_a`` and ``idx_b``: the first site's summary, the shapes of its parameters, and log q(probe) per datum
    of each later minibatch."""
    def run(idx):
        trace = poutine.trace(sub.meanfield_guide).get_trace(z_dim, x_all[idx], idx, N)
        if "z" not in trace.nodes or trace.nodes["z"]["type"] != "sample":
            raise ValueError("meanfield_guide has no sample site 'z'")
        return trace, trace.nodes["z"]

    trace, site = run(first_idx)
    params = [s["value"] for s in trace.nodes.values() if s["type"] == "param"]
    per_datum = [p for p in params if p.shape[:1] == (N,)]
    with torch.no_grad():                        # distinct rows, so each datum's q can be told apart
        for value in per_datum:
            unconstrained = getattr(value, "unconstrained", None)
            target = unconstrained() if callable(unconstrained) else value
            target.copy_(target + 0.5 * torch.randn_like(target))
    _, a = run(idx_a)
    _, b = run(idx_b)
    return {"first": _summary(site, []), "param_shapes": [list(p.shape) for p in params],
            "log_q_a": a["fn"].log_prob(probe.expand(len(idx_a), -1)).detach(),
            "log_q_b": b["fn"].log_prob(probe.expand(len(idx_b), -1)).detach()}


def reconstruction_draws(sub, decoder_state, encoder_state, hidden: int, x, num_particles: int, seeds):
    """One draw of reconstruction(decoder, encoder, x, num_particles) [B] and of its gradient in every decoder and
    encoder parameter [P] per seed of ``seeds`` (the generators seeded with it before the draw; float64 networks),
    stacked ``{"values": [n, B], "gradients": [n, P]}``, or ``{"value": ...}`` when a value is not a tensor of
    shape [B]."""
    decoder = network("decoder", 2, x.shape[1], hidden, decoder_state, double=True)
    encoder = network("encoder", 2, x.shape[1], hidden, encoder_state, double=True)
    params = [*decoder.parameters(), *encoder.parameters()]
    values, gradients = [], []
    for seed in seeds:
        seed_draw(seed)
        value = sub.reconstruction(decoder, encoder, x, num_particles)
        if not isinstance(value, torch.Tensor) or tuple(value.shape) != (x.shape[0],):
            return {"value": value}
        grads = torch.autograd.grad(value.sum(), params, allow_unused=True) if value.requires_grad else \
            [None] * len(params)
        values.append(value.detach())
        gradients.append(torch.cat([(torch.zeros_like(p) if g is None else g).reshape(-1)
                                    for p, g in zip(params, grads)]))
    return {"values": torch.stack(values), "gradients": torch.stack(gradients)}


def elbo_draws(sub, decoder_state, encoder_state, hidden: int, x, num_particles: int, seeds):
    """One value of elbo(decoder, encoder, x, num_particles) per seed of ``seeds`` (the generators seeded with it
    before the draw; float64 networks), stacked [n, B]; the first value as it is when one is not a tensor [B]."""
    decoder = network("decoder", 2, x.shape[1], hidden, decoder_state, double=True)
    encoder = network("encoder", 2, x.shape[1], hidden, encoder_state, double=True)
    values = []
    with torch.no_grad():
        for seed in seeds:
            seed_draw(seed)
            values.append(sub.elbo(decoder, encoder, x, num_particles))
    if not all(isinstance(v, torch.Tensor) and tuple(v.shape) == (x.shape[0],) for v in values):
        return values[0]
    return torch.stack(values)


def _svi(model, guide, x, epochs: int, batch: int, lr: float) -> None:
    from pyro.infer import SVI, TraceMeanField_ELBO
    svi = SVI(model, guide, pyro.optim.Adam({"lr": lr}), TraceMeanField_ELBO())
    N = x.shape[0]
    for _ in range(epochs):
        for idx in torch.randperm(N).split(batch):
            loss = svi.step(x[idx], idx, N)
            if not math.isfinite(loss):
                raise ValueError("the SVI loss became nan or inf during training")


def train_amortized(sub, x_train, z_dim: int, hidden: int, epochs: int, batch: int, lr: float):
    """SVI (Pyro's TraceMeanField_ELBO, Adam) of the student's ``model`` and ``amortized_guide`` on ``x_train``
    with a fresh :class:`Decoder` and :class:`Encoder`: their trained weights ``{"decoder": ..., "encoder": ...}``."""
    decoder = network("decoder", z_dim, x_train.shape[1], hidden)
    encoder = network("encoder", z_dim, x_train.shape[1], hidden)
    _svi(lambda x, idx, N: sub.model(decoder, x, idx, N), lambda x, idx, N: sub.amortized_guide(encoder, x, idx, N),
         x_train, epochs, batch, lr)
    return {"decoder": decoder.state_dict(), "encoder": encoder.state_dict()}


def fit_meanfield(sub, decoder_state, x, z_dim: int, hidden: int, steps: int, lr: float):
    """The student's ``meanfield_guide`` fitted by SVI to all of ``x`` under their ``model`` with the decoder
    ``decoder_state`` frozen; then q(z_n) for every datum as ``{"loc": [N, z_dim], "scale": [N, z_dim]}``,
    read off the guide's Normal."""
    decoder = network("decoder", z_dim, x.shape[1], hidden, decoder_state)
    for p in decoder.parameters():
        p.requires_grad_(False)
    N = x.shape[0]

    def frozen_model(x, idx, N):
        return poutine.block(sub.model, hide_types=["param"])(decoder, x, idx, N)

    def guide(x, idx, N):
        return sub.meanfield_guide(z_dim, x, idx, N)

    _svi(frozen_model, guide, x, steps, N, lr)
    fn = poutine.trace(guide).get_trace(x, torch.arange(N), N).nodes["z"]["fn"]
    while isinstance(fn, dist.Independent):
        fn = fn.base_dist
    if not isinstance(fn, dist.Normal):
        raise ValueError(f"meanfield_guide's q(z_n) is a {type(fn).__name__}, not a Normal")
    return {"loc": fn.loc.detach(), "scale": fn.scale.detach()}
