"""The Bernoulli VAE, correct and written differently from the reference: the KL from torch.distributions,
Independent Normals, the reparameterization by hand, the per-datum scale as a softplus, the log-likelihood as
minus binary cross-entropy with logits."""
import torch
import pyro
import pyro.distributions as dist
from torch import nn

Z_DIM = 2          # the latent dimension used when you train on the digits yourself
HIDDEN = 64


class Decoder(nn.Module):
    """f_theta: z [..., z_dim] -> the Bernoulli logits of the pixels [..., x_dim]. (Given.)"""

    def __init__(self, z_dim: int, x_dim: int, hidden: int = HIDDEN):
        super().__init__()
        self.z_dim, self.x_dim = z_dim, x_dim
        self.net = nn.Sequential(nn.Linear(z_dim, hidden), nn.Tanh(), nn.Linear(hidden, x_dim))

    def forward(self, z):
        return self.net(z)


class Encoder(nn.Module):
    """x [B, x_dim] -> (mu_phi(x), log sigma_phi(x)), each [B, z_dim]. (Given.)"""

    def __init__(self, x_dim: int, z_dim: int, hidden: int = HIDDEN):
        super().__init__()
        self.z_dim, self.x_dim = z_dim, x_dim
        self.net = nn.Sequential(nn.Linear(x_dim, hidden), nn.Tanh())
        self.mu, self.log_sigma = nn.Linear(hidden, z_dim), nn.Linear(hidden, z_dim)

    def forward(self, x):
        h = self.net(x)
        return self.mu(h), self.log_sigma(h)


def kl_normal(mu, log_sigma):
    q = torch.distributions.Normal(mu, torch.exp(log_sigma))
    return torch.distributions.kl_divergence(q, torch.distributions.Normal(torch.zeros_like(mu), 1.0)).sum(-1)


def model(decoder, x, idx, N):
    pyro.module("decoder", decoder)
    with pyro.plate("data", N, subsample=idx):
        prior = dist.Independent(dist.Normal(torch.zeros(decoder.z_dim), torch.ones(decoder.z_dim)), 1)
        z = pyro.sample("z", prior)
        pyro.sample("x", dist.Independent(dist.Bernoulli(logits=decoder(z)), 1), obs=x)


def amortized_guide(encoder, x, idx, N):
    pyro.module("encoder", encoder)
    mu, log_sigma = encoder(x)
    with pyro.plate("data", N, subsample=idx):
        pyro.sample("z", dist.Independent(dist.Normal(mu, torch.exp(log_sigma)), 1))


def meanfield_guide(z_dim, x, idx, N):
    loc = pyro.param("loc", lambda: 0.01 * torch.randn(N, z_dim))
    raw_scale = pyro.param("raw_scale", lambda: torch.full((N, z_dim), -1.0))
    with pyro.plate("data", N, subsample=idx):
        pyro.sample("z", dist.Normal(loc[idx], torch.nn.functional.softplus(raw_scale[idx])).to_event(1))


def reconstruction(decoder, encoder, x, num_particles=1):
    mu, log_sigma = encoder(x)
    eps = torch.randn(num_particles, *mu.shape, dtype=mu.dtype)
    z = mu + torch.exp(log_sigma) * eps
    logits = decoder(z)
    log_px = -torch.nn.functional.binary_cross_entropy_with_logits(logits, x.expand_as(logits), reduction="none")
    return log_px.sum(-1).mean(0)


def elbo(decoder, encoder, x, num_particles=1):
    mu, log_sigma = encoder(x)
    return reconstruction(decoder, encoder, x, num_particles) - kl_normal(mu, log_sigma)
