"""Homework 1, the Bernoulli VAE by SVI: your submission. Fill in every TODO and upload this file.

The generative story (lecture 20) and the two guides:

    p(z)           = N(z; 0, I)
    p_theta(x | z) = prod_d Bernoulli(x_d; sigmoid(f_theta(z)_d))          f_theta: the decoder's logits
    q_phi(z | x)   = N(z; mu_phi(x), diag sigma_phi(x)^2)                  (b) the amortized guide
    q(z_n)         = N(z_n; m_n, diag s_n^2), one (m_n, log s_n) per datum  (a) the per-datum guide

    ELBO(x) = E_q[log p_theta(x | z)] - KL(q(z | x) || p(z)),
    KL(N(mu, diag sigma^2) || N(0, I)) = 1/2 sum_j (mu_j^2 + sigma_j^2 - 1 - log sigma_j^2).

See handout.md for the task and how it is graded; run `python selfcheck.py` to grade it locally.
"""
import torch
import pyro
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
    """Task 1. KL(N(mu, diag sigma^2) || N(0, I)) in closed form, summed over the last dimension."""
    raise NotImplementedError("TODO: 1/2 sum_j (mu_j^2 + sigma_j^2 - 1 - log sigma_j^2), with sigma = exp(log_sigma)")


def model(decoder, x, idx, N):
    """Task 2. The model p(z) p_theta(x | z) for the minibatch x = data[idx] of a data set of N.

    With x = None (and idx = None) it draws N new data: the plate then has all N rows."""
    raise NotImplementedError("TODO: pyro.module the decoder; in pyro.plate('data', N, subsample=idx) sample z ~ N(0, I) and observe x ~ Bernoulli(logits=decoder(z))")


def amortized_guide(encoder, x, idx, N):
    """Task 3b. q_phi(z | x) = N(mu_phi(x), diag sigma_phi(x)^2), the encoder's output."""
    raise NotImplementedError("TODO: pyro.module the encoder; mu, log_sigma = encoder(x); in the same plate sample z ~ N(mu, exp(log_sigma))")


def meanfield_guide(z_dim, x, idx, N):
    """Task 3a. q(z_n) = N(m_n, diag s_n^2) with free parameters (m_n, log s_n) for each of the N data."""
    raise NotImplementedError("TODO: pyro.param one row (m_n, log s_n) per datum, [N, z_dim] each; in the plate sample z ~ N(m[idx], exp(log_s[idx]))")


def reconstruction(decoder, encoder, x, num_particles=1):
    """Task 4. E_q[log p_theta(x | z)] per datum [B], by Monte Carlo over num_particles reparameterized
    samples z_s = mu + sigma * eps_s, eps_s ~ N(0, I), averaged over the particles."""
    raise NotImplementedError("TODO: z = mu + sigma * eps for num_particles draws; average log p(x|z) over them")


def elbo(decoder, encoder, x, num_particles=1):
    """Task 5. The ELBO per datum [B]: the Monte Carlo reconstruction minus the closed-form KL."""
    raise NotImplementedError("TODO: reconstruction(...) minus kl_normal(...)")


if __name__ == "__main__":
    # Train on the binarized 8x8 digits with Pyro's SVI, as the grader does (a few seconds on one core).
    from pyro.infer import SVI, TraceMeanField_ELBO
    from sklearn.datasets import load_digits

    torch.manual_seed(0)
    pyro.set_rng_seed(0)
    x_train = torch.tensor(load_digits().data >= 8, dtype=torch.float32)
    N, D = x_train.shape
    decoder, encoder = Decoder(Z_DIM, D), Encoder(D, Z_DIM)
    svi = SVI(lambda x, idx, N: model(decoder, x, idx, N), lambda x, idx, N: amortized_guide(encoder, x, idx, N),
              pyro.optim.Adam({"lr": 2e-2}), TraceMeanField_ELBO())
    for epoch in range(15):
        batches = torch.randperm(N).split(100)
        loss = sum(svi.step(x_train[idx], idx, N) for idx in batches) / len(batches)   # -ELBO of all N data
        print(f"epoch {epoch + 1:2d}: training ELBO per digit {-loss / N:.2f}")
    with torch.no_grad():
        print(f"elbo(...) on the first 100 digits, 10 particles: {elbo(decoder, encoder, x_train[:100], 10).mean():.2f}")
