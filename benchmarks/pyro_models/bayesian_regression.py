"""Bayesian linear regression as Pyro's tutorial writes it: Gaussian priors on the weights and bias.

Source: pyro-ppl/pyro, tutorial/source/bayesian_regression.ipynb ("Bayesian Regression - Introduction
(Part 1)"), ``BayesianRegression``: a ``PyroModule[nn.Linear]`` whose weight and bias are
``PyroSample(dist.Normal(0., 1.))`` and ``PyroSample(dist.Normal(0., 10.))``, and
``obs ~ Normal(mean, sigma)`` in ``pyro.plate("data", x.shape[0])``. Each row of x is a datum
(f_n, y_n): the P = x_dim - 1 features f_n = x[n, :-1] are covariates (read, not observed) and the
response y_n = x[n, -1] is the one observed column. The generative story::

    w ~ N(0, I_P)                                         global
    b ~ N(0, 10^2)                                        global
    y_n | f_n, w, b ~ N(f_n . w + b, sigma^2)             n = 1..N, in plate "data"

Changed from the tutorial as the zoo's contract asks (the signature ``model(x, idx=None, N=None)``,
the subsampled data plate, y and the features read from x), and one more change: the tutorial's
``sigma ~ Uniform(0, 10)`` is a ``pyro.param`` here (type-II maximum likelihood), so that given sigma
the model is linear-Gaussian and its evidence is closed form: with F_1 = [F, 1] the features and a
column of ones, and Sigma_0 = diag(1, ..., 1, 10^2) the prior covariance of (w, b),

    log p(y | F, sigma) = log N(y; 0, sigma^2 I_N + F_1 Sigma_0 F_1^T),

and the posterior p(w, b | y, F, sigma) is Gaussian with precision A = Sigma_0^-1 + F_1^T F_1 / sigma^2
and mean A^-1 F_1^T y / sigma^2 (tests/test_reference_models.py checks the zoo against both). There
are no local latents: the zoo's per-datum figures are log p(y_n | f_n, theta_hat), exact, and the
data-set ELBO (``data_elbo``) is the bound on the evidence above.

Usage (``synthetic``: 10-D data, the last column regressed on the other nine)::

    pyro-zoo train benchmarks/pyro_models/bayesian_regression.py:bayesian_regression --guide meanfield \\
        --objective elbo --dataset synthetic --epochs 2
"""
import pyro
import pyro.distributions as dist
import torch
from torch.distributions import constraints

#: The prior scales of the tutorial's weight and bias.
WEIGHT_SCALE, BIAS_SCALE = 1.0, 10.0


def bayesian_regression(x_dim):
    """Pyro's Bayesian regression tutorial: y = x[:, -1] on the covariates x[:, :-1], sigma a pyro.param."""
    def model(x, idx=None, N=None):
        features = x[:, :-1]
        weight = pyro.sample("weight", dist.Normal(torch.zeros(x_dim - 1), WEIGHT_SCALE).to_event(1))
        bias = pyro.sample("bias", dist.Normal(0.0, BIAS_SCALE))
        sigma = pyro.param("sigma", torch.tensor(1.0), constraint=constraints.positive)
        mean = features @ weight + bias
        with pyro.plate("data", N, subsample=idx):
            pyro.sample("obs", dist.Normal(mean, sigma), obs=x[:, -1])
    return model
