"""A VAE whose decoder's last layer is Bayesian: its weights are a global Normal latent.

The VAE of Kingma & Welling (2014) (as in pyro-ppl/pyro examples/vae/vae.py) with the output layer's
weights W given a prior instead of a point estimate (the "Bayesian decoder" of the same paper's
appendix F, "full VB"), for data x_n in {0, 1}^D::

    W ~ N(0, I),  shape (H, D)                           global
    z_n ~ N(0, I_L)                                      local
    h_n = tanh(A z_n + a)                                A, a, b: parameters (point estimates)
    x_n ~ Bernoulli(logits = h_n W + b)

Usage::

    pyro-zoo train benchmarks/pyro_models/bayesian_decoder_vae.py:bayesian_decoder_vae --guide amortized \\
        --objective elbo --dataset digits --epochs 2
"""
import pyro
import pyro.distributions as dist
import torch
from torch import nn


def bayesian_decoder_vae(x_dim, z_dim=4, hidden=64):
    """A VAE whose decoder's output weights W ~ N(0, I) are a global latent."""
    body = nn.Sequential(nn.Linear(z_dim, hidden), nn.Tanh())
    bias = nn.Parameter(torch.zeros(x_dim))

    def model(x, idx=None, N=None):
        pyro.module("body", body)
        b = pyro.param("bias", bias)
        W = pyro.sample("W", dist.Normal(torch.zeros(hidden, x_dim), 1.0).to_event(2))
        with pyro.plate("data", N, subsample=idx):
            z = pyro.sample("z", dist.Normal(torch.zeros(z_dim), 1.0).to_event(1))
            pyro.sample("x", dist.Bernoulli(logits=body(z) @ W + b).to_event(1), obs=x)
    return model
