"""Homework 4, expressive VAEs: the reference solution (instructors only).

The lecture's three pieces (CSE599i, "Expressive VAEs"):

    IAF step (Kingma et al. 2016):  (m, s) = MADE(z, h),  sigma = sigmoid(s),
                                    z' = sigma * z + (1 - sigma) * m,   log |det dz'/dz| = sum_i log sigma_i
    VampPrior (Tomczak & Welling 2018):  log p(z) = logsumexp_k log q(z | u_k) - log K
    ELBO(x) = E_q[log p(x | z_T) + log p(z_T) - log q(z_T | x)],
              log q(z_T | x) = log N(z_0; mu(x), sigma(x)^2) - sum_t log |det dz_t / dz_{t-1}|
    active units (Burda et al. 2016):  A_u = Cov_x(E_q[u | x]) > 0.01

See handout.md for the task and how it is graded.
"""
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
    """Task 1. The MADE masks for inputs of degrees 1..dim and hidden units of degrees ``hidden_degrees`` [H]:
    ``mask_in`` [H, dim] lets hidden unit k see input d when m(k) >= d, ``mask_out`` [dim, H] lets output i see
    hidden unit k when i > m(k); so output i depends on the inputs 1..i-1 only."""
    inputs = torch.arange(1, dim + 1)
    mask_in = (hidden_degrees.unsqueeze(1) >= inputs.unsqueeze(0)).float()
    mask_out = (inputs.unsqueeze(1) > hidden_degrees.unsqueeze(0)).float()
    return mask_in, mask_out


def autoregressive_net(net, z, h):
    """Task 2. (m, s) = MADE(z, h), each [..., dim]: m_i and s_i depend on z_1..z_{i-1} and the context h only."""
    mask_in, mask_out = made_masks(net.hidden_degrees, net.dim)
    hidden = torch.tanh(F.linear(z, net.inner.weight * mask_in, net.inner.bias) + net.context(h))
    m = F.linear(hidden, net.shift.weight * mask_out, net.shift.bias)
    s = F.linear(hidden, net.scale.weight * mask_out, net.scale.bias)
    return m, s


def iaf_step(net, z, h):
    """Task 3. One IAF step in the gated form: z' = sigma * z + (1 - sigma) * m with sigma = sigmoid(s), and its
    log-determinant sum_i log sigma_i [...]."""
    m, s = autoregressive_net(net, z, h)
    sigma = torch.sigmoid(s)
    z_new = sigma * z + (1 - sigma) * m
    log_sigma = F.logsigmoid(s)
    return z_new, log_sigma.sum(-1)


def vamp_prior_log_prob(z, encoder, pseudo_inputs):
    """Task 4. log p(z) = logsumexp_k log N(z; mu(u_k), diag sigma(u_k)^2) - log K for z [..., J] and the K
    pseudo-inputs u_k [K, x_dim]: [...]."""
    mu, log_sigma = encoder(pseudo_inputs)                                       # [K, J]
    K = pseudo_inputs.shape[0]
    log_q = torch.distributions.Normal(mu, log_sigma.exp()).log_prob(z.unsqueeze(-2)).sum(-1)   # [..., K]
    return torch.logsumexp(log_q, dim=-1) - math.log(K)


def elbo(decoder, encoder, x, num_particles=1, flows=(), pseudo_inputs=None):
    """Task 5. The Monte Carlo ELBO per datum [B], averaged over num_particles reparameterized particles:
    z_0 = mu(x) + sigma(x) * eps, z_T = the IAF steps of ``flows`` (context x) applied in order,
    log q(z_T | x) = log N(z_0; mu, sigma^2) - sum_t log_det_t, and p(z) = N(0, I), or the VampPrior of
    ``pseudo_inputs`` when they are given."""
    mu, log_sigma = encoder(x)
    q0 = torch.distributions.Normal(mu, log_sigma.exp())
    z = q0.rsample((num_particles,))                                             # [S, B, J]
    log_q = q0.log_prob(z).sum(-1)
    context = x.expand(num_particles, *x.shape)
    for net in flows:
        z, log_det = iaf_step(net, z, context)
        log_q = log_q - log_det
    if pseudo_inputs is None:
        log_p_z = torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(-1)
    else:
        log_p_z = vamp_prior_log_prob(z, encoder, pseudo_inputs)
    log_px_z = torch.distributions.Bernoulli(logits=decoder(z)).log_prob(x).sum(-1)
    return (log_px_z + log_p_z - log_q).mean(0)


def fit_iaf(decoder, encoder, flows, x, num_steps, lr, num_particles):
    """Task 6. Fit the IAF steps ``flows`` (the decoder and encoder stay fixed) to the data x: num_steps of Adam at
    learning rate lr on minus the average ELBO of x with num_particles particles."""
    params = [p for net in flows for p in net.parameters()]
    optimizer = torch.optim.Adam(params, lr=lr)
    for _ in range(num_steps):
        optimizer.zero_grad()
        loss = -elbo(decoder, encoder, x, num_particles, flows).mean()
        loss.backward()
        optimizer.step()


def active_units(encoder, x, threshold=THRESHOLD):
    """Task 7. Burda et al.'s active units of the encoder on the data x [N, x_dim]: the variance over the data of
    each unit's posterior mean, A_u = Cov_x(E_q[u | x]) [J], and how many exceed ``threshold``."""
    with torch.no_grad():
        mu, _ = encoder(x)
    variance = mu.var(0)
    return int((variance > threshold).sum()), variance
