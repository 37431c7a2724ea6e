"""Homework 3, probabilistic PCA three ways: your submission. Fill in every TODO and upload this file.

    z_n ~ N(0, I_q),   x_n | z_n ~ N(W z_n + mu, sigma^2 I_D)          (Tipping & Bishop 1999)

    log p(x) = log N(x; mu, C),  C = W W^T + sigma^2 I
    p(z | x) = N(M^-1 W^T (x - mu), sigma^2 M^-1),  M = W^T W + sigma^2 I

See handout.md for the task and how it is graded; run `python selfcheck.py` to grade it locally.
"""


# -- 1. closed-form maximum likelihood ---------------------------------------------------------------

def ml_solution(x, latent_dim):
    """Tipping & Bishop's ML estimate (W [D, q], mu [D], sigma2 scalar): mu = mean, sigma^2 = the mean of
    the D - q discarded eigenvalues of S, W = U_q (L_q - sigma^2 I)^{1/2} (the rotation R = I)."""
    raise NotImplementedError("TODO: the closed-form maximum-likelihood (W, mu, sigma2)")


def log_likelihood(x, W, mu, sigma2):
    """The average log-likelihood (1/N) sum_n log N(x_n; mu, W W^T + sigma^2 I)."""
    raise NotImplementedError("TODO: the average log-likelihood")


def posterior(x, W, mu, sigma2):
    """p(z_n | x_n) = N(M^-1 W^T (x_n - mu), sigma^2 M^-1), M = W^T W + sigma^2 I: (means [N, q], cov [q, q])."""
    raise NotImplementedError("TODO: the exact posterior (means, covariance)")


# -- 2. EM ------------------------------------------------------------------------------------------

def em_step(x, W, mu, sigma2):
    """One EM iteration, mu fixed at the sample mean: returns (W_new, sigma2_new)."""
    raise NotImplementedError("TODO: one EM iteration (E-step, then M-step)")


# -- 3. SVI -----------------------------------------------------------------------------------------

def model(x, idx, num_data, latent_dim):
    """The pPCA model on the minibatch x = data[idx]; params "W" [D, q], "mu" [D], "log_sigma" (scalar)."""
    raise NotImplementedError("TODO: the pPCA model in Pyro, with a subsampled plate of size num_data")


def exact_guide(x, idx, num_data, latent_dim):
    """q(z_n) = N(m_n, L L^T): a free mean per datum and one shared full covariance."""
    raise NotImplementedError("TODO: the per-datum guide")


def amortized_guide(x, idx, num_data, latent_dim):
    """q(z | x) = N(A x + b, L L^T): a linear encoder and one shared full covariance."""
    raise NotImplementedError("TODO: the amortized guide")


def train_svi(x, guide, latent_dim, num_steps=400, batch_size=100):
    """Fit the model by SVI on minibatches with ``guide``; returns the learned (W, mu, sigma2)."""
    raise NotImplementedError("TODO: the SVI training loop")
