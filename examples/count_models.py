"""Two Pyro models of counts for your own data file: ``pyro-zoo train examples/count_models.py:NAME``.

``poisson_pca``, a latent-variable model of count vectors (Poisson PCA; Collins, Dasgupta &
Schapire 2002, as a VAE's generative story)::

    z_n ~ N(0, I_2),    x_nd | z_n ~ Poisson(exp(W_d z_n + b_d))

    pyro-zoo train examples/count_models.py:poisson_pca --dataset counts.csv --guide amortized

``poisson_regression``, a regression with a per-datum random effect (an over-dispersed,
log-normal Poisson GLM); its inputs c_n are covariates, named columns of the CSV::

    u_n ~ N(0, 1),    y_n | u_n, c_n ~ Poisson(exp(b + w . c_n + s u_n))

    pyro-zoo train examples/count_models.py:poisson_regression --dataset visits.csv --covariates age,dose

Both keep the zoo's contract (``zoo/README.md``, "Your own Pyro model"): every latent and
observation inside ``pyro.plate("data", N, subsample=idx)``, shapes from the plate, never from x.
The regression declares ``covariates=``, so the zoo hands it the named columns apart from the data.
"""
import pyro
import pyro.distributions as dist
import torch
from torch import nn


def poisson_pca(x_dim, z_dim=2):
    """Poisson PCA: a Gaussian latent and a Poisson likelihood with a log-linear decoder."""
    decoder = nn.Linear(z_dim, x_dim)

    def model(x, idx=None, N=None):
        pyro.module("decoder", decoder)
        with pyro.plate("data", N, subsample=idx):
            z = pyro.sample("z", dist.Normal(torch.zeros(z_dim), 1.0).to_event(1))
            pyro.sample("x", dist.Poisson(decoder(z).clamp(max=20).exp()).to_event(1), obs=x)
    return model


def poisson_regression(x_dim, covariate_dim):
    """Poisson regression of one count on the covariates, with a per-datum log-normal random effect."""
    linear = nn.Linear(covariate_dim, 1)
    log_scale = nn.Parameter(torch.tensor(-1.0))
    holder = nn.ParameterDict({"log_scale": log_scale})

    def model(x, covariates=None, idx=None, N=None):
        pyro.module("linear", linear)
        pyro.module("holder", holder)
        with pyro.plate("data", N, subsample=idx):
            u = pyro.sample("u", dist.Normal(0.0, 1.0))
            rate = (linear(covariates).squeeze(-1) + holder["log_scale"].exp() * u).clamp(max=20).exp()
            pyro.sample("y", dist.Poisson(rate), obs=x[..., 0] if x is not None else None)
    return model
