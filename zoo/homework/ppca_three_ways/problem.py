"""The data and the closed-form references of assignment 3 (probabilistic PCA three ways).

The data are drawn from a pPCA model (:func:`zoo.data.synthetic_ppca`); every reference value
the checks compare a submission to comes from the zoo's closed forms in
:mod:`zoo.models.ppca` (Tipping & Bishop 1999), evaluated here in float64:

    log p(x) = log N(x; mu, C),  C = W W^T + sigma^2 I
    p(z | x) = N(M^-1 W^T (x - mu), sigma^2 M^-1),  M = W^T W + sigma^2 I
    ML:  mu = mean(x),  sigma^2 = mean of the D - q smallest eigenvalues of S,  W = U_q (L_q - sigma^2 I)^{1/2}
    ELBO(q) = log p(x) - KL(q(z) || p(z | x)) <= log p(x),  in closed form for a Gaussian q = N(m, Sigma)

Example::

    >>> x = make_data()
    >>> x.shape
    torch.Size([200, 5])
    >>> W, mu, sigma2 = reference_ml(x, LATENT_DIM)
    >>> bool(average_log_likelihood(x, W, mu, sigma2) >= average_log_likelihood(x, 1.1 * W, mu, sigma2))
    True
"""
from __future__ import annotations

import math
from typing import Tuple

import torch

from zoo.data import synthetic_ppca
from zoo.models.ppca import PPCA, ppca_ml_solution

__all__ = ["make_data", "reference_ml", "reference_model", "average_log_likelihood", "reference_posterior", "average_elbo",
           "LATENT_DIM", "NUM_DATA", "X_DIM"]

NUM_DATA, X_DIM, LATENT_DIM = 200, 5, 2


def make_data(seed: int = 3, num_data: int = NUM_DATA, x_dim: int = X_DIM, latent_dim: int = LATENT_DIM,
              sigma: float = 0.5) -> torch.Tensor:
    """``[N, D]`` float32 data from a pPCA model with a nonzero mean."""
    return synthetic_ppca(x_dim=x_dim, latent_dim=latent_dim, sigma=sigma, sizes=(num_data, 0, 0),
                          seed=seed).train.clone()


def reference_ml(x: torch.Tensor, latent_dim: int) -> Tuple[torch.Tensor, torch.Tensor, float]:
    """The maximum-likelihood ``(W, mu, sigma2)`` of :func:`zoo.models.ppca.ppca_ml_solution`, in float64."""
    W, mu, sigma2 = ppca_ml_solution(x.double(), latent_dim)
    return W.double(), mu.double(), float(sigma2)


def reference_model(W, mu, sigma2) -> PPCA:
    """The zoo's :class:`~zoo.models.ppca.PPCA`, in float64, set to the given parameters."""
    W = torch.as_tensor(W).detach().double()
    model = PPCA(W.shape[0], W.shape[1]).double()
    with torch.no_grad():
        model.W.copy_(W)
        model.mu.copy_(torch.as_tensor(mu).detach().double())
        model.log_noise_scale.fill_(0.5 * math.log(float(sigma2)))
    return model


@torch.no_grad()
def average_log_likelihood(x, W, mu, sigma2) -> float:
    """(1/N) sum_n log N(x_n; mu, W W^T + sigma^2 I), in float64."""
    return float(reference_model(W, mu, sigma2).log_marginal(x.double()).mean())


@torch.no_grad()
def reference_posterior(x, W, mu, sigma2) -> Tuple[torch.Tensor, torch.Tensor]:
    """The exact posterior's mean ``[N, q]`` and (shared) covariance ``[q, q]``, in float64."""
    post = reference_model(W, mu, sigma2).posterior(x.double())["z"]
    return post.loc, post.covariance_matrix[0]            # sigma^2 M^-1 is the same for every datum


def average_elbo(x, W, mu, sigma2, loc, covariance) -> float:
    """(1/N) sum_n E_{q_n}[log p(x_n, z) - log q_n(z)] for Gaussian q_n = N(loc_n, covariance_n), in float64 and in
    closed form (``loc [N, q]``, ``covariance [N, q, q]``)::

        E_q log p(x_n | z) = -D/2 log(2 pi sigma^2) - (|x_n - mu - W m_n|^2 + tr(W Sigma_n W^T)) / (2 sigma^2)
        E_q log p(z)       = -q/2 log(2 pi) - (|m_n|^2 + tr Sigma_n) / 2
        H(q_n)             =  q/2 log(2 pi e) + 1/2 log det Sigma_n

    It equals log p(x_n) exactly when q_n is the posterior, and is below it by KL(q_n || p(z_n | x_n)) otherwise."""
    x, W, mu, m, S = (torch.as_tensor(t).detach().double() for t in (x, W, mu, loc, covariance))
    sigma2 = float(sigma2)
    D, q = W.shape
    residual = x - mu - m @ W.T
    likelihood = -0.5 * D * math.log(2 * math.pi * sigma2) \
        - ((residual ** 2).sum(-1) + torch.einsum("dk,nkl,dl->n", W, S, W)) / (2 * sigma2)
    prior = -0.5 * q * math.log(2 * math.pi) - 0.5 * ((m ** 2).sum(-1) + torch.diagonal(S, dim1=-2, dim2=-1).sum(-1))
    entropy = 0.5 * q * math.log(2 * math.pi * math.e) + 0.5 * torch.logdet(S)
    return float((likelihood + prior + entropy).mean())
