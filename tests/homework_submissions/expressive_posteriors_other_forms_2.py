"""Expressive VAEs, correct and written differently from the reference: boolean masks, the masked network as a
stack of nn.functional calls on masked copies of the weights, log sigma as log(sigmoid(s)), the VampPrior's Gaussian
log-density written out with a hand-made logsumexp (the maximum subtracted), Independent distributions in the ELBO,
NumPy for the active units."""
import math

import torch
import torch.nn.functional as F
from torch import nn

Z_DIM = 2          # the latent dimension of the fixed digits model
HIDDEN = 64        # its encoder's and decoder's hidden units
FLOW_HIDDEN = 32   # the hidden units of each IAF step's autoregressive network
THRESHOLD = 0.01   # Burda et al.'s threshold on Cov_x(E_q[z | x]) for an active unit


class Decoder(nn.Module):
    """f_theta: z [..., z_dim] -> the Bernoulli logits of the pixels [..., x_dim]. (Given.)"""

    def __init__(self, z_dim: int, x_dim: int, hidden: int = HIDDEN):
        super().__init__()
        self.z_dim, self.x_dim = z_dim, x_dim
        self.net = nn.Sequential(nn.Linear(z_dim, hidden), nn.Tanh(), nn.Linear(hidden, x_dim))

    def forward(self, z):
        return self.net(z)


class Encoder(nn.Module):
    """x [..., x_dim] -> (mu_phi(x), log sigma_phi(x)), each [..., z_dim]. (Given.)"""

    def __init__(self, x_dim: int, z_dim: int, hidden: int = HIDDEN):
        super().__init__()
        self.z_dim, self.x_dim = z_dim, x_dim
        self.net = nn.Sequential(nn.Linear(x_dim, hidden), nn.Tanh())
        self.mu, self.log_sigma = nn.Linear(hidden, z_dim), nn.Linear(hidden, z_dim)

    def forward(self, x):
        h = self.net(x)
        return self.mu(h), self.log_sigma(h)


class AutoregressiveNet(nn.Module):
    """The weights of one IAF step's network (MADE, Germain et al. 2015), without its masks. (Given.)

    ``inner`` maps z [..., dim] to the hidden layer, ``context`` adds the context h [..., context_dim] (the datum x)
    there, unmasked; ``shift`` and ``scale`` map the hidden layer to m and s [..., dim]. ``hidden_degrees`` [hidden]
    holds each hidden unit's degree m(k) in 1..dim-1: the masks are yours to build from it (``made_masks``)."""

    def __init__(self, dim: int, context_dim: int, hidden: int = FLOW_HIDDEN):
        super().__init__()
        self.dim, self.context_dim, self.hidden = dim, context_dim, hidden
        self.inner = nn.Linear(dim, hidden)
        self.context = nn.Linear(context_dim, hidden, bias=False)
        self.shift, self.scale = nn.Linear(hidden, dim), nn.Linear(hidden, dim)
        self.register_buffer("hidden_degrees", torch.arange(hidden) % max(dim - 1, 1) + 1)


def made_masks(hidden_degrees, dim):
    inputs = torch.arange(1, dim + 1)
    return hidden_degrees[:, None] >= inputs[None, :], inputs[:, None] > hidden_degrees[None, :]


def autoregressive_net(net, z, h):
    mask_in, mask_out = made_masks(net.hidden_degrees, net.dim)
    w_in = torch.where(mask_in, net.inner.weight, torch.zeros_like(net.inner.weight))
    w_m = torch.where(mask_out, net.shift.weight, torch.zeros_like(net.shift.weight))
    w_s = torch.where(mask_out, net.scale.weight, torch.zeros_like(net.scale.weight))
    hidden = torch.tanh(F.linear(z, w_in, net.inner.bias) + F.linear(h, net.context.weight))
    return F.linear(hidden, w_m, net.shift.bias), F.linear(hidden, w_s, net.scale.bias)


def iaf_step(net, z, h):
    m, s = autoregressive_net(net, z, h)
    sigma = torch.sigmoid(s)
    z_new = sigma * z + m - sigma * m
    return z_new, torch.log(sigma).sum(dim=-1)


def vamp_prior_log_prob(z, encoder, pseudo_inputs):
    mu, log_sigma = encoder(pseudo_inputs)
    diff = (z[..., None, :] - mu) / torch.exp(log_sigma)
    log_q = (-0.5 * diff ** 2 - log_sigma - 0.5 * math.log(2 * math.pi)).sum(-1)      # [..., K]
    top = log_q.max(-1, keepdim=True).values
    return (top + torch.log(torch.exp(log_q - top).mean(-1, keepdim=True))).squeeze(-1)


def elbo(decoder, encoder, x, num_particles=1, flows=(), pseudo_inputs=None):
    D = torch.distributions
    mu, log_sigma = encoder(x)
    q0 = D.Independent(D.Normal(mu, torch.exp(log_sigma)), 1)
    z = q0.rsample(torch.Size([num_particles]))
    log_q = q0.log_prob(z)
    h = x.unsqueeze(0).expand(num_particles, -1, -1)
    log_dets = []
    for net in flows:
        z, log_det = iaf_step(net, z, h)
        log_dets.append(log_det)
    if log_dets:
        log_q = log_q - torch.stack(log_dets).sum(0)
    if pseudo_inputs is not None:
        log_p = vamp_prior_log_prob(z, encoder, pseudo_inputs)
    else:
        log_p = D.Independent(D.Normal(torch.zeros_like(z), torch.ones_like(z)), 1).log_prob(z)
    log_lik = D.Independent(D.Bernoulli(logits=decoder(z)), 1).log_prob(x)
    return torch.mean(log_lik + log_p - log_q, dim=0)


def fit_iaf(decoder, encoder, flows, x, num_steps, lr, num_particles):
    params = []
    for net in flows:
        params.extend(net.parameters())
    optimizer = torch.optim.Adam(params, lr)
    step = 0
    while step < num_steps:
        optimizer.zero_grad()
        (-elbo(decoder, encoder, x, num_particles, flows)).mean().backward()
        optimizer.step()
        step += 1


def active_units(encoder, x, threshold=THRESHOLD):
    import numpy as np
    with torch.no_grad():
        means = encoder(x)[0].numpy()
    variance = np.var(means, axis=0, ddof=1)
    return int(np.sum(variance > threshold)), torch.from_numpy(variance)
