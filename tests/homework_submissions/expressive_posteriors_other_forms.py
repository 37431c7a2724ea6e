"""Expressive VAEs, correct and written differently from the reference: masks from a difference of degrees, the
masked layers by einsum, z' = m + sigma (z - m), log sigma as -softplus(-s), the VampPrior as torch's
MixtureSameFamily, particles drawn one at a time, the active units' variance over N (not N - 1)."""
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
    d = torch.arange(dim) + 1
    mask_in = ((hidden_degrees.view(-1, 1) - d.view(1, -1)) >= 0).to(torch.float32)
    mask_out = ((d.view(-1, 1) - hidden_degrees.view(1, -1)) > 0).to(torch.float32)
    return mask_in, mask_out


def autoregressive_net(net, z, h):
    mask_in, mask_out = made_masks(net.hidden_degrees, net.dim)
    pre = torch.einsum("...d,kd->...k", z, net.inner.weight * mask_in.to(z.dtype)) + net.inner.bias
    hidden = torch.tanh(pre + h @ net.context.weight.T)
    m = torch.einsum("...k,ik->...i", hidden, net.shift.weight * mask_out.to(z.dtype)) + net.shift.bias
    s = torch.einsum("...k,ik->...i", hidden, net.scale.weight * mask_out.to(z.dtype)) + net.scale.bias
    return m, s


def iaf_step(net, z, h):
    m, s = autoregressive_net(net, z, h)
    sigma = torch.sigmoid(s)
    return m + sigma * (z - m), (-F.softplus(-s)).sum(-1)


def vamp_prior_log_prob(z, encoder, pseudo_inputs):
    D = torch.distributions
    mu, log_sigma = encoder(pseudo_inputs)
    K = mu.shape[0]
    mixture = D.MixtureSameFamily(D.Categorical(logits=torch.zeros(K, dtype=mu.dtype)),
                                  D.Independent(D.Normal(mu, torch.exp(log_sigma)), 1))
    return mixture.log_prob(z)


def elbo(decoder, encoder, x, num_particles=1, flows=(), pseudo_inputs=None):
    mu, log_sigma = encoder(x)
    sigma = torch.exp(log_sigma)
    total = 0.0
    for _ in range(num_particles):
        eps = torch.randn_like(mu)
        z = mu + sigma * eps
        log_q = (-0.5 * eps ** 2 - log_sigma - 0.5 * math.log(2 * math.pi)).sum(-1)
        for net in flows:
            z, log_det = iaf_step(net, z, x)
            log_q = log_q - log_det
        if pseudo_inputs is None:
            log_p = (-0.5 * z ** 2 - 0.5 * math.log(2 * math.pi)).sum(-1)
        else:
            log_p = vamp_prior_log_prob(z, encoder, pseudo_inputs)
        logits = decoder(z)
        log_px_z = -F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(-1)
        total = total + log_px_z + log_p - log_q
    return total / num_particles


def fit_iaf(decoder, encoder, flows, x, num_steps, lr, num_particles):
    optimizer = torch.optim.Adam(nn.ModuleList(flows).parameters(), lr=lr)
    for _ in range(num_steps):
        loss = -elbo(decoder, encoder, x, num_particles, flows).sum() / x.shape[0]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def active_units(encoder, x, threshold=THRESHOLD):
    mu = encoder(x)[0].detach()
    variance = ((mu - mu.mean(0)) ** 2).mean(0)
    return int(torch.count_nonzero(variance > threshold)), variance
