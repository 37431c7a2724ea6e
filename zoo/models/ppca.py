"""Probabilistic PCA and factor analysis: the continuous-latent ground truth.

Generative story, for each datum n = 1..N::

    z_n ~ N(0, I_q)
    x_n | z_n ~ N(W z_n + mu, Psi)

with Psi = sigma^2 I (probabilistic PCA) or Psi = diag(psi) (factor analysis).
Everything is Gaussian, so the zoo can check every estimator against closed forms:

- marginal likelihood:  log p(x) = log N(x; mu, W W^T + Psi)
- exact posterior:      p(z | x) = N(M^-1 W^T Psi^-1 (x - mu), M^-1),  M = I + W^T Psi^-1 W
  (for pPCA this is N(M'^-1 W^T (x - mu), sigma^2 M'^-1) with M' = W^T W + sigma^2 I)
- maximum likelihood (pPCA only): mu = mean(x), sigma^2 = mean of the D - q smallest
  eigenvalues of the sample covariance, W = U_q (Lambda_q - sigma^2 I)^{1/2}.

Reference: M. E. Tipping and C. M. Bishop, "Probabilistic principal component
analysis", JRSS B 61(3), 1999.

Example::

    >>> import torch
    >>> m = PPCA(x_dim=5, latent_dim=2)
    >>> m.log_marginal(torch.randn(3, 5)).shape
    torch.Size([3])
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import pyro
import pyro.distributions as dist
import torch
from torch import nn

from zoo.core.contract import LatentSite, ZooModel
from zoo.core.components import MODELS, Options, option
from zoo.core.plates import data_plate
from zoo.core.params import register_module

__all__ = ["PPCA", "ppca_ml_solution"]


@dataclass
class PPCAOptions(Options):
    latent_dim: int = option(2, "number of latent units", minimum=1, checkpoint="shape")


@MODELS.register("ppca", options=PPCAOptions,
                 description="probabilistic PCA (Tipping & Bishop 1999): exact log p(x) and posterior")
def ppca(x_dim: int, latent_dim: int) -> "PPCA":
    return PPCA(x_dim, latent_dim, noise="isotropic")


@MODELS.register("fa", options=PPCAOptions,
                 description="factor analysis: pPCA with diagonal noise; exact log p(x) and posterior")
def factor_analysis(x_dim: int, latent_dim: int) -> "PPCA":
    return PPCA(x_dim, latent_dim, noise="diagonal")


class PPCA(ZooModel):
    """Probabilistic PCA (``noise="isotropic"``) or factor analysis (``noise="diagonal"``).

    Arguments:
        x_dim: D, the data dimension.
        latent_dim: q, the latent dimension.
        noise: ``"isotropic"`` (sigma^2 I, pPCA) or ``"diagonal"`` (diag(psi), FA).
    """

    likelihood = "gaussian"

    def __init__(self, x_dim: int, latent_dim: int = 2, noise: str = "isotropic"):
        super().__init__(x_dim)
        if noise not in ("isotropic", "diagonal"):
            raise ValueError(f"noise must be 'isotropic' or 'diagonal', got {noise!r}")
        self.latent_dim = int(latent_dim)
        self.noise = noise
        self.W = nn.Parameter(0.1 * torch.randn(x_dim, latent_dim))
        self.mu = nn.Parameter(torch.zeros(x_dim))
        self.log_noise_scale = nn.Parameter(torch.zeros(1 if noise == "isotropic" else x_dim))
        self.register_buffer("prior_loc", torch.zeros(latent_dim))

    @property
    def latents(self):
        return (LatentSite("z", (self.latent_dim,), "real"),)

    @property
    def display_name(self) -> str:
        return "PPCA" if self.noise == "isotropic" else "FA"

    @property
    def noise_variance(self) -> torch.Tensor:
        """The diagonal of Psi, shape ``[D]``."""
        return torch.exp(2 * self.log_noise_scale).expand(self.x_dim)

    def model(self, x=None, idx=None, N=None):
        register_module("ppca", self)
        noise_scale = torch.exp(self.log_noise_scale)
        with data_plate(x, idx, N, device=self.prior_loc.device):
            z = pyro.sample("z", dist.Normal(self.prior_loc, 1.0).to_event(1))
            x_loc = z @ self.W.T + self.mu
            pyro.sample("x", dist.Normal(x_loc, noise_scale).to_event(1), obs=x)

    # -- closed forms --------------------------------------------------------------------
    def marginal_covariance(self) -> torch.Tensor:
        return self.W @ self.W.T + torch.diag(self.noise_variance)

    def log_marginal(self, x: torch.Tensor) -> torch.Tensor:
        return dist.MultivariateNormal(self.mu, self.marginal_covariance()).log_prob(x)

    def posterior(self, x: torch.Tensor):
        psi_inv = 1.0 / self.noise_variance
        precision = torch.eye(self.latent_dim, device=x.device, dtype=x.dtype) \
            + self.W.T @ (psi_inv[:, None] * self.W)                # M = I + W^T Psi^-1 W
        cov = torch.cholesky_inverse(torch.linalg.cholesky(precision))
        loc = (x - self.mu) @ (psi_inv[:, None] * self.W) @ cov     # M^-1 W^T Psi^-1 (x - mu)
        return {"z": dist.MultivariateNormal(loc, covariance_matrix=cov)}

    @torch.no_grad()
    def set_ml_solution(self, x: torch.Tensor) -> None:
        """Set W, mu, sigma to the closed-form maximum-likelihood solution (pPCA only)."""
        if self.noise != "isotropic":
            raise ValueError("the eigendecomposition ML solution exists for pPCA (isotropic noise) only")
        W, mu, sigma2 = ppca_ml_solution(x, self.latent_dim)
        self.W.copy_(W)
        self.mu.copy_(mu)
        self.log_noise_scale.fill_(0.5 * math.log(sigma2))


def ppca_ml_solution(x: torch.Tensor, latent_dim: int):
    """Tipping & Bishop's maximum-likelihood pPCA parameters ``(W, mu, sigma2)``.

    W is determined up to a rotation; this returns the one with R = I.
    """
    x = x.to(torch.float64)
    mu = x.mean(0)
    S = torch.cov((x - mu).T, correction=0)
    evals, evecs = torch.linalg.eigh(S)                  # ascending order
    evals, evecs = evals.flip(0), evecs.flip(1)
    sigma2 = evals[latent_dim:].mean()
    W = evecs[:, :latent_dim] * torch.sqrt(torch.clamp(evals[:latent_dim] - sigma2, min=0.0))
    return W.float(), mu.float(), float(sigma2)
