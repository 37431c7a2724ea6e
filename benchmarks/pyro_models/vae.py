"""Pyro's VAE example (pyro-ppl/pyro ``examples/vae/vae.py``) under the zoo's contract.

    z ~ N(0, I_50),    x | z ~ Bernoulli(f_theta(z)),    f_theta: z -> 400 softplus units -> sigmoid

The Decoder and the model are the example's; only what the README's contract asks changed:

- the signature ``model(x, idx=None, N=None)`` and the data plate ``pyro.plate("data", N, subsample=idx)``
  (the example's ``pyro.iarange("data", x.size(0))``);
- the prior's parameters are sized from the plate, ``len(batch)``, not ``x.new_zeros((x.size(0), z_dim))``:
  to generate, the zoo calls ``model(None, idx=None, N=n)``, where there is no x;
- ``obs=x.reshape(-1, x_dim)`` when x is given (the example's 784 is the data's ``x_dim``), and the
  class takes ``x_dim`` first, so ``from_pyro(VAE, x_dim)`` builds fresh networks for every zoo model.

The example's Encoder and guide are left out: the zoo's guide families take their place.

Usage::

    python -m zoo compare benchmarks/pyro_models/vae.py:VAE --dataset digits --guides meanfield,amortized,iaf
"""
import pyro
import pyro.distributions as dist
import torch
import torch.nn as nn

fudge = 1e-7


class Decoder(nn.Module):
    """p(x | z): the parameters of the Bernoulli output, one per pixel."""

    def __init__(self, x_dim, z_dim, hidden_dim):
        super().__init__()
        self.fc1 = nn.Linear(z_dim, hidden_dim)
        self.fc21 = nn.Linear(hidden_dim, x_dim)
        self.softplus = nn.Softplus()
        self.sigmoid = nn.Sigmoid()

    def forward(self, z):
        hidden = self.softplus(self.fc1(z))
        # the example's guard against the sigmoid's saturation: probabilities in [fudge, 1 - fudge]
        loc_img = (self.sigmoid(self.fc21(hidden)) + fudge) * (1 - 2 * fudge)
        return loc_img


class VAE(nn.Module):
    """Pyro's VAE: a 50-dimensional Gaussian latent and a one-hidden-layer Bernoulli decoder."""

    def __init__(self, x_dim, z_dim=50, hidden_dim=400):
        super().__init__()
        self.decoder = Decoder(x_dim, z_dim, hidden_dim)
        self.x_dim = x_dim
        self.z_dim = z_dim

    def model(self, x, idx=None, N=None):
        pyro.module("decoder", self.decoder)
        with pyro.plate("data", N, subsample=idx) as batch:
            z_loc = torch.zeros(torch.Size((len(batch), self.z_dim)))
            z_scale = torch.ones(torch.Size((len(batch), self.z_dim)))
            z = pyro.sample("latent", dist.Normal(z_loc, z_scale).to_event(1))
            loc_img = self.decoder.forward(z)
            pyro.sample("obs", dist.Bernoulli(loc_img).to_event(1),
                        obs=None if x is None else x.reshape(-1, self.x_dim))
