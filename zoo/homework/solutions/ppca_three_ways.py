"""Assignment 3, reference solution: probabilistic PCA three ways (closed form, EM, SVI).

    z_n ~ N(0, I_q),   x_n | z_n ~ N(W z_n + mu, sigma^2 I_D)          (Tipping & Bishop 1999)
"""
import pyro
import pyro.distributions as dist
import torch
from pyro.distributions import constraints
from pyro.infer import SVI, Trace_ELBO
from pyro.optim import ClippedAdam


# -- 1. closed-form maximum likelihood ---------------------------------------------------------------

def ml_solution(x, latent_dim):
    """Tipping & Bishop's ML estimate (W [D, q], mu [D], sigma2 scalar): mu = mean, sigma^2 = the mean of
    the D - q discarded eigenvalues of S, W = U_q (L_q - sigma^2 I)^{1/2} (the rotation R = I)."""
    mu = x.mean(0)
    xc = x - mu
    S = xc.T @ xc / x.shape[0]
    evals, evecs = torch.linalg.eigh(S)                      # ascending
    evals, U = evals.flip(-1), evecs.flip(-1)
    sigma2 = evals[latent_dim:].mean()
    W = U[:, :latent_dim] * torch.sqrt(evals[:latent_dim] - sigma2)
    return W, mu, sigma2


def log_likelihood(x, W, mu, sigma2):
    """The average log-likelihood (1/N) sum_n log N(x_n; mu, W W^T + sigma^2 I)."""
    C = W @ W.T + sigma2 * torch.eye(W.shape[0], dtype=W.dtype)
    return dist.MultivariateNormal(mu, covariance_matrix=C).log_prob(x).mean()


def posterior(x, W, mu, sigma2):
    """p(z_n | x_n) = N(M^-1 W^T (x_n - mu), sigma^2 M^-1), M = W^T W + sigma^2 I: (means [N, q], cov [q, q])."""
    M = W.T @ W + sigma2 * torch.eye(W.shape[1], dtype=W.dtype)
    Minv = torch.linalg.inv(M)
    mean = (x - mu) @ W @ Minv
    cov = sigma2 * Minv
    return mean, cov


# -- 2. EM ------------------------------------------------------------------------------------------

def em_step(x, W, mu, sigma2):
    """One EM iteration (Bishop, PRML 12.54-12.57), mu fixed at the sample mean: returns (W_new, sigma2_new).

    E-step: E[z_n] = M^-1 W^T (x_n - mu),  E[z_n z_n^T] = sigma^2 M^-1 + E[z_n] E[z_n]^T.
    M-step: W_new = [sum_n (x_n - mu) E[z_n]^T] [sum_n E[z_n z_n^T]]^-1,
            sigma2_new = 1/(N D) sum_n ( |x_n - mu|^2 - 2 E[z_n]^T W_new^T (x_n - mu)
                                         + tr(E[z_n z_n^T] W_new^T W_new) ).
    """
    N, D = x.shape
    xc = x - mu
    Ez, cov = posterior(x, W, mu, sigma2)
    sum_Ezz = N * cov + Ez.T @ Ez
    W_new = (xc.T @ Ez) @ torch.linalg.inv(sum_Ezz)
    sigma2_new = ((xc ** 2).sum() - 2 * (Ez * (xc @ W_new)).sum() + torch.trace(sum_Ezz @ W_new.T @ W_new)) / (N * D)
    return W_new, sigma2_new


# -- 3. SVI -----------------------------------------------------------------------------------------

def model(x, idx, num_data, latent_dim):
    """The pPCA model on the minibatch x = data[idx]; params "W" [D, q], "mu" [D], "log_sigma" (scalar)."""
    D = x.shape[1]
    W = pyro.param("W", lambda: torch.randn(D, latent_dim))
    mu = pyro.param("mu", lambda: x.mean(0))
    log_sigma = pyro.param("log_sigma", lambda: torch.tensor(0.0))
    with pyro.plate("data", num_data, subsample=idx):
        z = pyro.sample("z", dist.Normal(torch.zeros(latent_dim), 1.0).to_event(1))
        pyro.sample("x", dist.Normal(z @ W.T + mu, torch.exp(log_sigma)).to_event(1), obs=x)


def exact_guide(x, idx, num_data, latent_dim):
    """q(z_n) = N(m_n, L L^T): a free mean per datum and one shared full covariance. The exact posterior
    N(M^-1 W^T (x_n - mu), sigma^2 M^-1) is in this family, so the ELBO can reach log p(x)."""
    m = pyro.param("m", lambda: torch.zeros(num_data, latent_dim))
    L = pyro.param("L", lambda: torch.eye(latent_dim), constraint=constraints.lower_cholesky)
    with pyro.plate("data", num_data, subsample=idx):
        pyro.sample("z", dist.MultivariateNormal(m[idx], scale_tril=L))


def amortized_guide(x, idx, num_data, latent_dim):
    """q(z | x) = N(A x + b, L L^T): a linear encoder, exact for pPCA (the posterior mean is linear in x)."""
    D = x.shape[1]
    A = pyro.param("A", lambda: torch.zeros(latent_dim, D))
    b = pyro.param("b", lambda: torch.zeros(latent_dim))
    L = pyro.param("L", lambda: torch.eye(latent_dim), constraint=constraints.lower_cholesky)
    with pyro.plate("data", num_data, subsample=idx):
        pyro.sample("z", dist.MultivariateNormal(x @ A.T + b, scale_tril=L))


def train_svi(x, guide, latent_dim, num_steps=400, batch_size=100):
    """Fit the model by SVI on minibatches with ``guide``; returns the learned (W, mu, sigma2)."""
    pyro.clear_param_store()
    N = x.shape[0]
    optim = ClippedAdam({"lr": 0.1, "lrd": 0.05 ** (1 / num_steps)})          # lr decays 20x over the run
    svi = SVI(model, guide, optim, Trace_ELBO())
    for _ in range(num_steps):
        idx = torch.randperm(N)[:batch_size]
        svi.step(x[idx], idx, N, latent_dim)
    W, mu = pyro.param("W").detach(), pyro.param("mu").detach()
    sigma2 = torch.exp(2 * pyro.param("log_sigma")).detach()
    return W, mu, sigma2

