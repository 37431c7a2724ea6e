"""The graded checks of assignment 3 (probabilistic PCA three ways).

Each check is called as ``check(submission)`` by the grader; it fails with a one-line
``AssertionError`` and passes returning a one-line summary. Every reference value comes from
the zoo's closed forms (:mod:`zoo.homework.ppca_three_ways.problem`, which evaluates
:mod:`zoo.models.ppca` in float64) or from scikit-learn, never from the submission: a
log-likelihood is always recomputed from the parameters the submission returns. Random
draws use torch's global RNG, which the grader seeds before each check.
"""
from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import torch
from pyro.infer import Trace_ELBO

from zoo.homework.ppca_three_ways.problem import (LATENT_DIM, average_log_likelihood, make_data, reference_ml,
                                                  reference_posterior)
from zoo.testing import assert_close, assert_lower_bound, assert_unbiased

__all__ = ["check_ml_closed_form", "check_ml_matches_sklearn", "check_log_likelihood", "check_posterior",
           "check_em_monotone", "check_em_converges", "check_em_on_other_data", "check_svi_minibatch_scale",
           "check_svi_exact_guide", "check_svi_amortized_guide"]

SVI_TOLERANCE = 0.05            # nats per datum below the maximum likelihood
EM_ITERATIONS = 60
EM_DECREASE_TOLERANCE = 1e-5    # nats per datum: float32 rounding, not a real decrease


def _tensor(value, what):
    if isinstance(value, (int, float)):
        return torch.tensor(float(value), dtype=torch.float64)
    if not isinstance(value, torch.Tensor):
        raise AssertionError(f"{what} is a {type(value).__name__}, expected a tensor")
    return value.detach().double()


def _parameters(result, what, x_dim, latent_dim):
    """(W [D, q], mu [D], sigma2 scalar) as float64 tensors, or a one-line failure."""
    if not isinstance(result, (tuple, list)) or len(result) != 3:
        raise AssertionError(f"{what} must return (W, mu, sigma2), got {type(result).__name__}")
    W, mu, sigma2 = (_tensor(v, n) for v, n in zip(result, ("W", "mu", "sigma2")))
    if tuple(W.shape) != (x_dim, latent_dim) or tuple(mu.shape) != (x_dim,) or sigma2.numel() != 1:
        raise AssertionError(f"{what} returned shapes W {tuple(W.shape)}, mu {tuple(mu.shape)}, sigma2 "
                             f"{tuple(sigma2.shape)}; expected ({x_dim}, {latent_dim}), ({x_dim},), ()")
    sigma2 = sigma2.reshape(())
    if not (torch.isfinite(W).all() and torch.isfinite(mu).all() and float(sigma2) > 0):
        raise AssertionError(f"{what} returned nan/inf parameters or sigma2 = {float(sigma2):.3g} <= 0")
    return W, mu, sigma2


def _random_parameters(x_dim, latent_dim):
    return torch.randn(x_dim, latent_dim), torch.randn(x_dim), torch.tensor(0.3)


def check_ml_closed_form(sub):
    """ml_solution is Tipping & Bishop's: mu = mean, sigma^2 = the mean discarded eigenvalue,
    W W^T = U_q (L_q - sigma^2 I) U_q^T."""
    x = make_data()
    W, mu, sigma2 = _parameters(sub.ml_solution(x, LATENT_DIM), "ml_solution(x, 2)", x.shape[1], LATENT_DIM)
    W_ref, mu_ref, sigma2_ref = reference_ml(x, LATENT_DIM)
    assert_close(mu, mu_ref, atol=1e-4, what="mu")
    assert_close(sigma2, torch.tensor(sigma2_ref), atol=1e-5, rtol=1e-4, what="sigma^2")
    assert_close(W @ W.T, W_ref @ W_ref.T, atol=1e-4, rtol=1e-4, what="W W^T (W is unique up to a rotation)")
    return f"mu, sigma^2 = {float(sigma2):.5f} and W W^T match the closed form"


def check_ml_matches_sklearn(sub):
    """The log-likelihood of ml_solution's parameters equals scikit-learn's PCA(2).score, and is not below it."""
    from sklearn.decomposition import PCA

    x = make_data()
    W, mu, sigma2 = _parameters(sub.ml_solution(x, LATENT_DIM), "ml_solution(x, 2)", x.shape[1], LATENT_DIM)
    ll = average_log_likelihood(x, W, mu, sigma2)
    sk = float(PCA(n_components=LATENT_DIM).fit(x.double().numpy()).score(x.double().numpy()))
    # sklearn estimates the covariance with 1/(N-1), so its score is a hair below the maximum
    assert_close(torch.tensor(ll), torch.tensor(sk), atol=2e-3, rtol=0.0,
                 what="the average log-likelihood of ml_solution vs sklearn's PCA.score")
    assert_lower_bound(sk, ll, atol=1e-6, what="sklearn's PCA.score")
    return f"average log-likelihood {ll:.5f} vs sklearn PCA.score {sk:.5f}"


def check_log_likelihood(sub):
    """log_likelihood is the average of log N(x_n; mu, W W^T + sigma^2 I), at parameters other than the ML ones."""
    x = make_data()
    W, mu, sigma2 = _random_parameters(x.shape[1], LATENT_DIM)
    value = sub.log_likelihood(x, W, mu, sigma2)
    expected = average_log_likelihood(x, W, mu, sigma2)
    return assert_close(_tensor(value, "log_likelihood").reshape(()), torch.tensor(expected), atol=1e-3, rtol=1e-5,
                        what="log_likelihood")


def check_posterior(sub):
    """posterior returns the exact p(z_n | x_n): means M^-1 W^T (x_n - mu) [N, q] and covariance sigma^2 M^-1."""
    x = make_data()
    W, mu, sigma2 = _random_parameters(x.shape[1], LATENT_DIM)
    result = sub.posterior(x, W, mu, sigma2)
    if not isinstance(result, (tuple, list)) or len(result) != 2:
        raise AssertionError(f"posterior must return (means, covariance), got {type(result).__name__}")
    mean_ref, cov_ref = reference_posterior(x, W, mu, sigma2)
    assert_close(_tensor(result[0], "the posterior means"), mean_ref, atol=1e-4, rtol=1e-4,
                 what="the posterior means")
    assert_close(_tensor(result[1], "the posterior covariance"), cov_ref, atol=1e-5, rtol=1e-4,
                 what="the posterior covariance")
    return "posterior means and covariance match the closed form"


def _run_em(sub, x, latent_dim, iterations):
    """Run the submission's em_step from a random start; the log-likelihood after each step, by the reference."""
    W = torch.randn(x.shape[1], latent_dim)
    mu, sigma2 = x.mean(0), torch.tensor(1.0)
    lls = [average_log_likelihood(x, W, mu, sigma2)]
    for t in range(iterations):
        result = sub.em_step(x, W, mu, sigma2)
        if not isinstance(result, (tuple, list)) or len(result) != 2:
            raise AssertionError(f"em_step must return (W_new, sigma2_new), got {type(result).__name__}")
        W, _, sigma2 = _parameters((result[0], mu, result[1]), "em_step", x.shape[1], latent_dim)
        W, sigma2 = W.to(x.dtype), sigma2.to(x.dtype)
        lls.append(average_log_likelihood(x, W, mu, sigma2))
    return lls


def _assert_monotone(lls):
    steps = [b - a for a, b in zip(lls[:-1], lls[1:])]
    worst = min(range(len(steps)), key=steps.__getitem__)
    if steps[worst] < -EM_DECREASE_TOLERANCE:
        raise AssertionError(f"the log-likelihood decreased at EM iteration {worst + 1}: {lls[worst]:.6f} -> "
                             f"{lls[worst + 1]:.6f} ({steps[worst]:.3g} nats/datum)")
    if steps[0] < 1e-3:
        raise AssertionError(f"the first EM step from a random start did not raise the log-likelihood "
                             f"({lls[0]:.4f} -> {lls[1]:.4f})")


def _assert_converged(lls, optimum, tolerance=1e-4):
    if optimum - lls[-1] > tolerance:
        raise AssertionError(f"after {len(lls) - 1} EM iterations the log-likelihood is {lls[-1]:.6f}, "
                             f"{optimum - lls[-1]:.3g} nats/datum below the maximum {optimum:.6f}")


def check_em_monotone(sub):
    """EM never lowers the log-likelihood (within float rounding) and its first step raises it."""
    x = make_data()
    lls = _run_em(sub, x, LATENT_DIM, EM_ITERATIONS)
    _assert_monotone(lls)
    return f"log-likelihood nondecreasing over {EM_ITERATIONS} iterations: {lls[0]:.4f} -> {lls[-1]:.4f}"


def check_em_converges(sub):
    """EM from a random start reaches the maximum likelihood within 1e-4 nats/datum in 60 iterations."""
    x = make_data()
    lls = _run_em(sub, x, LATENT_DIM, EM_ITERATIONS)
    optimum = average_log_likelihood(x, *reference_ml(x, LATENT_DIM))
    _assert_converged(lls, optimum)
    return f"{optimum - lls[-1]:.2g} nats/datum below the maximum after {EM_ITERATIONS} iterations"


def check_em_on_other_data(sub):
    """EM is monotone and converges on other data (D = 8, q = 3, N = 300)."""
    x = make_data(seed=7, num_data=300, x_dim=8, latent_dim=3, sigma=0.7)
    lls = _run_em(sub, x, 3, 150)
    _assert_monotone(lls)
    _assert_converged(lls, average_log_likelihood(x, *reference_ml(x, 3)), tolerance=1e-3)
    return f"monotone and converged: {lls[0]:.4f} -> {lls[-1]:.4f}"


def check_svi_minibatch_scale(sub):
    """The model's minibatch ELBO (plate of size N, subsample idx) is unbiased for the full-data ELBO:
    with the exact posterior as guide and the ML parameters, E_idx[ELBO(x[idx])] = sum_n log p(x_n)."""
    x = make_data()
    N, batch = x.shape[0], 20
    W, mu, sigma2 = reference_ml(x, LATENT_DIM)
    total = N * average_log_likelihood(x, W, mu, sigma2)
    mean, cov = (t.float() for t in reference_posterior(x, W, mu, sigma2))
    pyro.clear_param_store()
    pyro.param("W", W.float())
    pyro.param("mu", mu.float())
    pyro.param("log_sigma", torch.tensor(0.5 * math.log(sigma2)))

    def exact_posterior_guide(x, idx, num_data, latent_dim):
        with pyro.plate("data", num_data, subsample=idx):
            pyro.sample("z", dist.MultivariateNormal(mean[idx], covariance_matrix=cov))

    elbo = Trace_ELBO()

    def minibatch_elbo():
        idx = torch.randperm(N)[:batch]
        return -elbo.differentiable_loss(sub.model, exact_posterior_guide, x[idx], idx, N, LATENT_DIM).detach()

    out = assert_unbiased(minibatch_elbo, torch.tensor(total), num_samples=100,
                          seed=int(torch.randint(0, 2 ** 31 - 1, ())))
    return f"minibatch ELBO (B = {batch}) unbiased for sum_n log p(x_n) = {total:.2f}: {out}"


def _check_svi(sub, guide_name):
    x = make_data()
    guide = getattr(sub, guide_name)
    W, mu, sigma2 = _parameters(sub.train_svi(x, guide, LATENT_DIM), f"train_svi(x, {guide_name}, 2)",
                                x.shape[1], LATENT_DIM)
    optimum = average_log_likelihood(x, *reference_ml(x, LATENT_DIM))
    ll = average_log_likelihood(x, W, mu, sigma2)
    if optimum - ll > SVI_TOLERANCE:
        raise AssertionError(f"SVI with {guide_name} reached an average log-likelihood of {ll:.4f}, "
                             f"{optimum - ll:.3f} nats/datum below the maximum {optimum:.4f} "
                             f"(allowed {SVI_TOLERANCE})")
    return f"{optimum - ll:.4f} nats/datum below the maximum likelihood {optimum:.4f}"


def check_svi_exact_guide(sub):
    """SVI with the per-datum guide (which contains the exact posterior) gets within 0.05 nats/datum of the ML."""
    return _check_svi(sub, "exact_guide")


def check_svi_amortized_guide(sub):
    """SVI with the amortized linear-encoder guide gets within 0.05 nats/datum of the maximum likelihood."""
    return _check_svi(sub, "amortized_guide")
