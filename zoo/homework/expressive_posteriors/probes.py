"""Probes of homework 5: what must run next to the student's code, in the grader's worker.

A probe is called as ``probe(submission, *args)`` with arguments the grader chose (network weights, latent points,
data, seeds) and returns plain values: the outputs of the student's functions on networks it builds from those
weights, their Jacobian by autograd through the student's code, Monte Carlo draws, fitted weights. It decides
nothing: the grader validates what comes back and computes every verdict itself
(:mod:`zoo.homework.expressive_posteriors.checks`, which the worker does not import). The networks are the
starter's (:class:`Decoder`, :class:`Encoder`, :class:`AutoregressiveNet`), imported from it.

The Monte Carlo probe takes one seed per draw, chosen by the grader, and seeds the generators with it before the
draw (:func:`~zoo.homework.base.seed_draw`); the grader replays a few draws in a fresh worker
(:func:`~zoo.homework.base.assert_replayed`).
"""
from __future__ import annotations

from typing import Dict, Optional

import torch

from zoo.homework.base import seed_draw, with_weights
from zoo.homework.expressive_posteriors.starter import AutoregressiveNet, Decoder, Encoder

__all__ = ["network", "flow", "autoregressive_outputs", "iaf_step_jacobian", "vamp_log_prob", "elbo_draws",
           "fit_flows", "active_units_of"]


def network(kind: str, z_dim: int, x_dim: int, hidden: int, state: Optional[Dict] = None, double: bool = False):
    """A :class:`Decoder` (``kind="decoder"``) or :class:`Encoder` of that architecture, with weights ``state``."""
    return with_weights(Decoder(z_dim, x_dim, hidden) if kind == "decoder" else Encoder(x_dim, z_dim, hidden), state,
                        double)


def flow(dim: int, context_dim: int, hidden: int, state: Dict, double: bool = False) -> AutoregressiveNet:
    """An :class:`AutoregressiveNet` with the weights and hidden degrees of ``state``."""
    return with_weights(AutoregressiveNet(dim, context_dim, hidden), state, double)


def autoregressive_outputs(sub, state, dim: int, context_dim: int, hidden: int, z, h):
    """``autoregressive_net(net, z, h)`` on the net of ``state``: ``[m, s]``."""
    with torch.no_grad():
        return list(sub.autoregressive_net(flow(dim, context_dim, hidden, state), z, h))


def iaf_step_jacobian(sub, state, dim: int, context_dim: int, hidden: int, z, h):
    """``iaf_step(net, z, h)`` on a float64 copy of the net (``z`` [B, dim], ``h`` [B, context_dim]), and the Jacobian
    dz'_b / dz_b of each datum by autograd through the student's function (torch.autograd.functional.jacobian):
    ``{"z_new": [B, dim], "log_det": [B], "jacobian": [B, dim, dim]}``, or ``{"value": ...}`` when ``iaf_step`` does not
    return two tensors of those shapes."""
    net = flow(dim, context_dim, hidden, state, double=True)
    value = sub.iaf_step(net, z, h)
    if not (isinstance(value, (tuple, list)) and len(value) == 2 and all(isinstance(v, torch.Tensor) for v in value)
            and tuple(value[0].shape) == tuple(z.shape) and tuple(value[1].shape) == (z.shape[0],)):
        return {"value": value if not isinstance(value, tuple) else list(value)}
    jacobians = []
    for b in range(z.shape[0]):
        jacobians.append(torch.autograd.functional.jacobian(lambda zb, hb=h[b]: sub.iaf_step(net, zb, hb)[0], z[b]))
    return {"z_new": value[0].detach(), "log_det": value[1].detach(), "jacobian": torch.stack(jacobians)}


def vamp_log_prob(sub, state, x_dim: int, z_dim: int, hidden: int, z, pseudo_inputs):
    """``vamp_prior_log_prob(z, encoder, pseudo_inputs)`` with the encoder of ``state``."""
    with torch.no_grad():
        return sub.vamp_prior_log_prob(z, network("encoder", z_dim, x_dim, hidden, state), pseudo_inputs)


def elbo_draws(sub, networks, flows, pseudo_inputs, x, num_particles: int, seeds):
    """One value of ``elbo(decoder, encoder, x, num_particles, flows, pseudo_inputs)`` per seed of ``seeds`` (the
    generators seeded with it before the draw; float64 networks, 2-d latent, the data as the flows' context),
    stacked [n, B]; the first value as it is when one is not a tensor [B]. ``networks`` is ``(decoder_state,
    encoder_state, hidden)``, ``flows`` is ``(flow_states, flow_hidden)``."""
    (decoder_state, encoder_state, hidden), (flow_states, flow_hidden) = networks, flows
    x_dim = x.shape[1]
    decoder = network("decoder", 2, x_dim, hidden, decoder_state, double=True)
    encoder = network("encoder", 2, x_dim, hidden, encoder_state, double=True)
    flows = [flow(2, x_dim, flow_hidden, s, double=True) for s in flow_states]
    values = []
    with torch.no_grad():
        for seed in seeds:
            seed_draw(seed)
            values.append(sub.elbo(decoder, encoder, x, num_particles, flows, pseudo_inputs))
    if not all(isinstance(v, torch.Tensor) and tuple(v.shape) == (x.shape[0],) for v in values):
        return values[0]
    return torch.stack(values)


def fit_flows(sub, networks, flows, x, schedule):
    """``fit_iaf(decoder, encoder, flows, x, num_steps, lr, num_particles)`` with the fixed networks frozen and the
    flows starting from ``flow_states``: the fitted flows' parameters, one dict per step (the hidden degrees are the
    grader's and are not returned). ``networks`` is ``(decoder_state, encoder_state, hidden)``, ``flows``
    ``(flow_states, flow_hidden)`` and ``schedule`` ``(num_steps, lr, num_particles)``."""
    (decoder_state, encoder_state, hidden), (flow_states, flow_hidden) = networks, flows
    num_steps, lr, num_particles = schedule
    x_dim = x.shape[1]
    decoder = network("decoder", 2, x_dim, hidden, decoder_state)
    encoder = network("encoder", 2, x_dim, hidden, encoder_state)
    for p in [*decoder.parameters(), *encoder.parameters()]:
        p.requires_grad_(False)
    flows = [flow(2, x_dim, flow_hidden, s) for s in flow_states]
    sub.fit_iaf(decoder, encoder, flows, x, num_steps, lr, num_particles)
    return [{name: p.detach() for name, p in net.named_parameters()} for net in flows]


def active_units_of(sub, state, x_dim: int, z_dim: int, hidden: int, x, threshold: float):
    """``active_units(encoder, x, threshold)`` with the encoder of ``state``: what it returns."""
    value = sub.active_units(network("encoder", z_dim, x_dim, hidden, state), x, threshold)
    return list(value) if isinstance(value, tuple) else value
