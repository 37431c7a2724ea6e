"""Homework 5, expressive VAEs: your submission. Fill in every TODO and upload this file.

The lecture's three pieces (CSE599i, "Expressive VAEs"):

    IAF step (Kingma et al. 2016):  (m, s) = MADE(z, h),  sigma = sigmoid(s),
                                    z' = sigma * z + (1 - sigma) * m,   log |det dz'/dz| = sum_i log sigma_i
    VampPrior (Tomczak & Welling 2018):  log p(z) = logsumexp_k log q(z | u_k) - log K
    ELBO(x) = E_q[log p(x | z_T) + log p(z_T) - log q(z_T | x)],
              log q(z_T | x) = log N(z_0; mu(x), sigma(x)^2) - sum_t log |det dz_t / dz_{t-1}|
    active units (Burda et al. 2016):  A_u = Cov_x(E_q[u | x]) > 0.01

See handout.md for the task and how it is graded; run `python selfcheck.py` to grade it locally.
"""
import math  # noqa: F401 (yours to use)

import torch
import torch.nn.functional as F  # noqa: F401 (yours to use)
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
    raise NotImplementedError("TODO: mask_in[k, d] = m(k) >= d and mask_out[i, k] = i > m(k), degrees counted from 1")


def autoregressive_net(net, z, h):
    """Task 2. (m, s) = MADE(z, h), each [..., dim]: m_i and s_i depend on z_1..z_{i-1} and the context h only."""
    raise NotImplementedError("TODO: hidden = tanh(masked inner(z) + context(h)); m, s = masked shift, scale of it")


def iaf_step(net, z, h):
    """Task 3. One IAF step in the gated form: z' = sigma * z + (1 - sigma) * m with sigma = sigmoid(s), and its
    log-determinant sum_i log sigma_i [...]."""
    raise NotImplementedError("TODO: (m, s) = autoregressive_net(net, z, h); return sigma z + (1 - sigma) m, sum log sigma")


def vamp_prior_log_prob(z, encoder, pseudo_inputs):
    """Task 4. log p(z) = logsumexp_k log N(z; mu(u_k), diag sigma(u_k)^2) - log K for z [..., J] and the K
    pseudo-inputs u_k [K, x_dim]: [...]."""
    raise NotImplementedError("TODO: the encoder's Gaussians at the pseudo-inputs; logsumexp over k of log q(z | u_k) - log K")


def elbo(decoder, encoder, x, num_particles=1, flows=(), pseudo_inputs=None):
    """Task 5. The Monte Carlo ELBO per datum [B], averaged over num_particles reparameterized particles:
    z_0 = mu(x) + sigma(x) * eps, z_T = the IAF steps of ``flows`` (context x) applied in order,
    log q(z_T | x) = log N(z_0; mu, sigma^2) - sum_t log_det_t, and p(z) = N(0, I), or the VampPrior of
    ``pseudo_inputs`` when they are given."""
    raise NotImplementedError("TODO: z_0 reparameterized, through the IAF steps; mean over particles of log p(x|z) + log p(z) - log q(z|x)")


def fit_iaf(decoder, encoder, flows, x, num_steps, lr, num_particles):
    """Task 6. Fit the IAF steps ``flows`` (the decoder and encoder stay fixed) to the data x: num_steps of Adam at
    learning rate lr on minus the average ELBO of x with num_particles particles."""
    raise NotImplementedError("TODO: Adam on the flows' parameters, minimizing -elbo(...).mean() for num_steps steps")


def active_units(encoder, x, threshold=THRESHOLD):
    """Task 7. Burda et al.'s active units of the encoder on the data x [N, x_dim]: the variance over the data of
    each unit's posterior mean, A_u = Cov_x(E_q[u | x]) [J], and how many exceed ``threshold``."""
    raise NotImplementedError("TODO: the variance over the data of mu(x), per unit; count those above threshold")
