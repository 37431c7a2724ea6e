"""Expressive VAEs, correct and written differently from the reference: the masks by torch.tril-free comparisons
of repeated degrees, each IAF step's update as z + (1 - sigma)(m - z), the particles folded into the batch ([S * B]),
the VampPrior's logsumexp as a method with log K from a tensor, the active units by torch.var_mean."""
import math  # noqa: F401 (the starter's)

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
    H = hidden_degrees.shape[0]
    inputs = torch.arange(1, dim + 1).repeat(H, 1)                   # [H, dim]
    degrees = hidden_degrees.unsqueeze(1).repeat(1, dim)               # [H, dim]
    mask_in = torch.ge(degrees, inputs).float()
    mask_out = torch.gt(inputs, degrees).float().T
    return mask_in, mask_out


def autoregressive_net(net, z, h):
    mask_in, mask_out = made_masks(net.hidden_degrees, net.dim)
    a = z @ (net.inner.weight * mask_in).T + net.inner.bias + net.context(h)
    hidden = torch.tanh(a)
    m = hidden @ (net.shift.weight * mask_out).T + net.shift.bias
    s = hidden @ (net.scale.weight * mask_out).T + net.scale.bias
    return m, s


def iaf_step(net, z, h):
    m, s = autoregressive_net(net, z, h)
    gate = torch.sigmoid(s)
    return z + (1.0 - gate) * (m - z), F.logsigmoid(s).sum(-1)


def vamp_prior_log_prob(z, encoder, pseudo_inputs):
    mu, log_sigma = encoder(pseudo_inputs)
    components = torch.distributions.Normal(mu, log_sigma.exp())
    log_q = components.log_prob(z.unsqueeze(-2)).sum(-1)
    K = torch.tensor(float(pseudo_inputs.shape[0]), dtype=log_q.dtype)
    return log_q.logsumexp(-1) - K.log()


def elbo(decoder, encoder, x, num_particles=1, flows=(), pseudo_inputs=None):
    S, B = num_particles, x.shape[0]
    xs = x.repeat(S, 1)                                                # [S * B, D], particle-major
    mu, log_sigma = encoder(xs)
    q0 = torch.distributions.Normal(mu, log_sigma.exp())
    z = q0.rsample()
    log_q = q0.log_prob(z).sum(-1)
    for net in flows:
        z, log_det = iaf_step(net, z, xs)
        log_q -= log_det
    if pseudo_inputs is None:
        log_p = torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(-1)
    else:
        log_p = vamp_prior_log_prob(z, encoder, pseudo_inputs)
    log_lik = torch.distributions.Bernoulli(logits=decoder(z)).log_prob(xs).sum(-1)
    return (log_lik + log_p - log_q).reshape(S, B).mean(0)


def fit_iaf(decoder, encoder, flows, x, num_steps, lr, num_particles):
    optimizer = torch.optim.Adam([p for net in flows for p in net.parameters()], lr=lr)
    for _ in range(num_steps):
        optimizer.zero_grad()
        objective = elbo(decoder, encoder, x, num_particles, flows).mean()
        (-objective).backward()
        optimizer.step()


def active_units(encoder, x, threshold=THRESHOLD):
    with torch.no_grad():
        variance, _ = torch.var_mean(encoder(x)[0], dim=0)
    active = variance > threshold
    return int(active.sum().item()), variance
