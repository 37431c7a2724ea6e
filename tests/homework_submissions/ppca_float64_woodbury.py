"""pPCA three ways, written with loops, the Woodbury identity and float64 throughout."""
import math

import pyro
import pyro.distributions as dist
import torch
from pyro.distributions import constraints
from pyro.infer import SVI, Trace_ELBO
from pyro.optim import Adam


def ml_solution(x, latent_dim):
    x = x.double()
    N, D = x.shape
    mu = sum(x[n] for n in range(N)) / N
    S = torch.zeros(D, D, dtype=torch.float64)
    for n in range(N):
        S += torch.outer(x[n] - mu, x[n] - mu)
    S /= N
    evals, evecs = torch.linalg.eigh(S)
    order = torch.argsort(evals, descending=True)
    evals, evecs = evals[order], evecs[:, order]
    sigma2 = evals[latent_dim:].sum() / (D - latent_dim)
    W = torch.stack([evecs[:, i] * math.sqrt(float(evals[i] - sigma2)) for i in range(latent_dim)], 1)
    return W, mu, sigma2


def log_likelihood(x, W, mu, sigma2):
    """Woodbury: C^-1 = (I - W M^-1 W^T) / sigma^2, log|C| = (D - q) log sigma^2 + log|M|."""
    x, W, mu, sigma2 = x.double(), W.double(), mu.double(), torch.as_tensor(sigma2, dtype=torch.float64)
    N, D = x.shape
    q = W.shape[1]
    M = W.T @ W + sigma2 * torch.eye(q, dtype=torch.float64)
    Minv = torch.linalg.inv(M)
    Cinv = (torch.eye(D, dtype=torch.float64) - W @ Minv @ W.T) / sigma2
    logdet = (D - q) * torch.log(sigma2) + torch.logdet(M)
    total = 0.0
    for n in range(N):
        d = x[n] - mu
        total = total - 0.5 * (D * math.log(2 * math.pi) + logdet + d @ Cinv @ d)
    return total / N


def posterior(x, W, mu, sigma2):
    x, W, mu = x.double(), W.double(), mu.double()
    q = W.shape[1]
    M = W.T @ W + float(sigma2) * torch.eye(q, dtype=torch.float64)
    Minv = torch.linalg.inv(M)
    means = torch.stack([Minv @ W.T @ (x[n] - mu) for n in range(x.shape[0])])
    return means, float(sigma2) * Minv


def em_step(x, W, mu, sigma2):
    x, W, mu = x.double(), W.double(), mu.double()
    N, D = x.shape
    q = W.shape[1]
    Ez, cov = posterior(x, W, mu, sigma2)
    A = torch.zeros(D, q, dtype=torch.float64)
    B = torch.zeros(q, q, dtype=torch.float64)
    for n in range(N):
        A += torch.outer(x[n] - mu, Ez[n])
        B += cov + torch.outer(Ez[n], Ez[n])
    W_new = A @ torch.linalg.inv(B)
    s = 0.0
    for n in range(N):
        d = x[n] - mu
        s += d @ d - 2 * Ez[n] @ W_new.T @ d + torch.trace((cov + torch.outer(Ez[n], Ez[n])) @ W_new.T @ W_new)
    return W_new, s / (N * D)


def model(x, idx, num_data, latent_dim):
    x = x.double()
    D = x.shape[1]
    W = pyro.param("W", lambda: torch.randn(D, latent_dim, dtype=torch.float64))
    mu = pyro.param("mu", lambda: torch.zeros(D, dtype=torch.float64))
    log_sigma = pyro.param("log_sigma", lambda: torch.tensor(0.0, dtype=torch.float64))
    with pyro.plate("data", num_data, subsample=idx):
        z = pyro.sample("z", dist.Normal(torch.zeros(latent_dim, dtype=torch.float64), 1.0).to_event(1))
        pyro.sample("x", dist.Normal(z @ W.T + mu, torch.exp(log_sigma)).to_event(1), obs=x)


def exact_guide(x, idx, num_data, latent_dim):
    m = pyro.param("m", lambda: torch.zeros(num_data, latent_dim, dtype=torch.float64))
    L = pyro.param("L", lambda: torch.eye(latent_dim, dtype=torch.float64), constraint=constraints.lower_cholesky)
    with pyro.plate("data", num_data, subsample=idx):
        pyro.sample("z", dist.MultivariateNormal(m[idx], scale_tril=L))


def amortized_guide(x, idx, num_data, latent_dim):
    x = x.double()
    D = x.shape[1]
    A = pyro.param("A", lambda: torch.zeros(latent_dim, D, dtype=torch.float64))
    b = pyro.param("b", lambda: torch.zeros(latent_dim, dtype=torch.float64))
    L = pyro.param("L", lambda: torch.eye(latent_dim, dtype=torch.float64), constraint=constraints.lower_cholesky)
    with pyro.plate("data", num_data, subsample=idx):
        pyro.sample("z", dist.MultivariateNormal(x @ A.T + b, scale_tril=L))


def train_svi(x, guide, latent_dim, num_steps=400, batch_size=100):
    pyro.clear_param_store()
    x = x.double()
    N = x.shape[0]
    svi = SVI(model, guide, Adam({"lr": 0.05}), Trace_ELBO())
    for _ in range(num_steps):
        idx = torch.randperm(N)[:batch_size]
        svi.step(x[idx], idx, N, latent_dim)
    return pyro.param("W").detach(), pyro.param("mu").detach(), torch.exp(2 * pyro.param("log_sigma")).detach()
