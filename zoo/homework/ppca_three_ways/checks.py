"""The graded checks of assignment 3 (probabilistic PCA three ways), run in the grader's process.

Each check is ``check(sub, ctx)``: it draws its data and parameters from ``ctx.seed`` (a secret per
grade unless the instructor fixes ``--seed``), asks the submission's worker only for values
(``sub.call`` for a function, ``sub.probe`` for :mod:`~zoo.homework.ppca_three_ways.probes`),
validates them, and decides with its own code. It fails with a one-line ``AssertionError`` and
passes returning a one-line summary. Every reference value comes from the zoo's closed forms
(:mod:`zoo.homework.ppca_three_ways.problem`, which evaluates :mod:`zoo.models.ppca` in float64),
from :func:`em_update` (Bishop, PRML 12.54-12.57, written here once in float64) or from
scikit-learn, never from the submission: a log-likelihood is always recomputed from the
parameters the submission returns.
"""
from __future__ import annotations


import torch

from zoo.homework.base import expect_number, expect_sequence, expect_tensor
from zoo.homework.ppca_three_ways.problem import (LATENT_DIM, average_log_likelihood, make_data, reference_ml,
                                                  reference_posterior)
from zoo.testing import assert_close, assert_lower_bound, assert_unbiased

__all__ = ["check_ml_closed_form", "check_ml_matches_sklearn", "check_log_likelihood", "check_posterior",
           "check_em_update", "check_em_monotone", "check_em_converges", "check_em_on_other_data",
           "check_svi_minibatch_scale", "check_svi_exact_guide", "check_svi_amortized_guide", "em_update"]

SVI_TOLERANCE = 0.1             # nats per datum below the maximum likelihood: a correct SVI with a constant
                                # learning rate ends up to ~0.05 below (its last iterate's noise); bugs cost > 1
EM_ITERATIONS = 60
EM_DECREASE_TOLERANCE = 1e-5    # nats per datum: float32 rounding, not a real decrease
_PROBES = "zoo.homework.ppca_three_ways.probes"


def _data(ctx, **kwargs) -> torch.Tensor:
    """The check's data: the handout's pPCA data set moved by a rigid motion drawn from the check's (secret)
    seed, x_n -> R x_n + b (R orthogonal), its rows shuffled. The likelihood is invariant under it (W -> R W,
    mu -> R mu + b), so every grade poses a problem of the same difficulty with different numbers."""
    x = make_data(**kwargs).double()
    generator = torch.Generator().manual_seed(ctx.seed % 2 ** 63)
    R, _ = torch.linalg.qr(torch.randn(x.shape[1], x.shape[1], generator=generator, dtype=torch.float64))
    b = 2.0 * torch.randn(x.shape[1], generator=generator, dtype=torch.float64)
    return (x @ R.T + b)[torch.randperm(x.shape[0], generator=generator)].float()


def _parameters(result, what, x_dim, latent_dim):
    """(W [D, q], mu [D], sigma2 scalar) as float64 tensors, or a one-line failure."""
    W, mu, sigma2 = expect_sequence(result, what, 3)
    W = expect_tensor(W, f"{what}: W", (x_dim, latent_dim))
    mu = expect_tensor(mu, f"{what}: mu", (x_dim,))
    sigma2 = expect_number(sigma2, f"{what}: sigma2")
    if not sigma2 > 0:
        raise AssertionError(f"{what} returned sigma2 = {sigma2:.3g} <= 0")
    return W, mu, torch.tensor(sigma2, dtype=torch.float64)


def _random_parameters(x_dim, latent_dim):
    return torch.randn(x_dim, latent_dim), torch.randn(x_dim), torch.tensor(0.3)


def em_update(x, W, mu, sigma2):
    """One EM step in float64 (Tipping & Bishop 1999; Bishop, PRML 12.54-12.57), mu fixed: (W_new, sigma2_new).

    E-step: E[z_n] = M^-1 W^T (x_n - mu), E[z_n z_n^T] = sigma^2 M^-1 + E[z_n] E[z_n]^T, M = W^T W + sigma^2 I;
    M-step: W_new = [sum_n (x_n - mu) E[z_n]^T] [sum_n E[z_n z_n^T]]^-1,
    sigma2_new = 1/(N D) sum_n (|x_n - mu|^2 - 2 E[z_n]^T W_new^T (x_n - mu) + tr(E[z_n z_n^T] W_new^T W_new))."""
    x, W, mu, sigma2 = x.double(), W.double(), mu.double(), float(sigma2)
    N, D = x.shape
    mean, cov = reference_posterior(x, W, mu, sigma2)
    xc = x - mu
    second_moment = N * cov + mean.T @ mean
    W_new = torch.linalg.solve(second_moment, (xc.T @ mean).T).T
    sigma2_new = ((xc ** 2).sum() - 2 * (mean * (xc @ W_new)).sum()
                  + torch.trace(second_moment @ W_new.T @ W_new)) / (N * D)
    return W_new, float(sigma2_new)


def check_ml_closed_form(sub, ctx):
    """ml_solution is Tipping & Bishop's: mu = mean, sigma^2 = the mean discarded eigenvalue,
    W W^T = U_q (L_q - sigma^2 I) U_q^T."""
    x = _data(ctx)
    W, mu, sigma2 = _parameters(sub.call("ml_solution", x, LATENT_DIM), "ml_solution(x, 2)", x.shape[1], LATENT_DIM)
    W_ref, mu_ref, sigma2_ref = reference_ml(x, LATENT_DIM)
    assert_close(mu, mu_ref, atol=1e-4, what="mu")
    assert_close(sigma2, torch.tensor(sigma2_ref), atol=1e-5, rtol=1e-4, what="sigma^2")
    assert_close(W @ W.T, W_ref @ W_ref.T, atol=1e-4, rtol=1e-4, what="W W^T (W is unique up to a rotation)")
    return f"mu, sigma^2 = {float(sigma2):.5f} and W W^T match the closed form"


def check_ml_matches_sklearn(sub, ctx):
    """The log-likelihood of ml_solution's parameters equals scikit-learn's PCA(2).score, and is not below it."""
    from sklearn.decomposition import PCA

    x = _data(ctx)
    W, mu, sigma2 = _parameters(sub.call("ml_solution", x, LATENT_DIM), "ml_solution(x, 2)", x.shape[1], LATENT_DIM)
    ll = average_log_likelihood(x, W, mu, sigma2)
    sk = float(PCA(n_components=LATENT_DIM).fit(x.double().numpy()).score(x.double().numpy()))
    # sklearn estimates the covariance with 1/(N-1), so its score is a hair below the maximum
    assert_close(torch.tensor(ll), torch.tensor(sk), atol=2e-3, rtol=0.0,
                 what="the average log-likelihood of ml_solution vs sklearn's PCA.score")
    assert_lower_bound(sk, ll, atol=1e-6, what="sklearn's PCA.score")
    return f"average log-likelihood {ll:.5f} vs sklearn PCA.score {sk:.5f}"


def check_log_likelihood(sub, ctx):
    """log_likelihood is the average of log N(x_n; mu, W W^T + sigma^2 I), at parameters other than the ML ones."""
    x = _data(ctx)
    W, mu, sigma2 = _random_parameters(x.shape[1], LATENT_DIM)
    value = expect_number(sub.call("log_likelihood", x, W, mu, sigma2), "log_likelihood(x, W, mu, sigma2)")
    expected = average_log_likelihood(x, W, mu, sigma2)
    return assert_close(torch.tensor(value), torch.tensor(expected), atol=1e-3, rtol=1e-5, what="log_likelihood")


def check_posterior(sub, ctx):
    """posterior returns the exact p(z_n | x_n): means M^-1 W^T (x_n - mu) [N, q] and covariance sigma^2 M^-1."""
    x = _data(ctx)
    W, mu, sigma2 = _random_parameters(x.shape[1], LATENT_DIM)
    what = "posterior(x, W, mu, sigma2)"
    means, cov = expect_sequence(sub.call("posterior", x, W, mu, sigma2), what, 2)
    mean_ref, cov_ref = reference_posterior(x, W, mu, sigma2)
    assert_close(expect_tensor(means, f"{what}: the means", tuple(mean_ref.shape)), mean_ref, atol=1e-4, rtol=1e-4,
                 what="the posterior means")
    assert_close(expect_tensor(cov, f"{what}: the covariance", tuple(cov_ref.shape)), cov_ref, atol=1e-5, rtol=1e-4,
                 what="the posterior covariance")
    return "posterior means and covariance match the closed form"


def _em_step(sub, x, W, mu, sigma2, latent_dim):
    """The submission's (W_new, sigma2_new), validated, in float64."""
    result = expect_sequence(sub.call("em_step", x, W, mu, sigma2), "em_step(x, W, mu, sigma2)", 2)
    W_new, _, sigma2_new = _parameters([result[0], mu, result[1]], "em_step", x.shape[1], latent_dim)
    return W_new, sigma2_new


def check_em_update(sub, ctx):
    """Each EM update is its closed form: from three random starting points (W, sigma^2) the grader draws,
    em_step's W_new and sigma2_new equal :func:`em_update`'s (the E-step's moments and the M-step's two
    updates, sigma^2 from W_new), to float32 rounding."""
    x = _data(ctx)
    mu = x.mean(0)
    for start in range(3):
        W = torch.randn(x.shape[1], LATENT_DIM) * float(torch.empty(()).uniform_(0.3, 2.0))
        sigma2 = torch.empty(()).uniform_(0.1, 2.0)
        W_new, sigma2_new = _em_step(sub, x, W, mu, sigma2, LATENT_DIM)
        W_ref, sigma2_ref = em_update(x, W, mu, sigma2)
        assert_close(W_new, W_ref, atol=1e-4, rtol=1e-4, what=f"W_new from random start {start + 1} of 3")
        assert_close(sigma2_new, torch.tensor(sigma2_ref), atol=1e-5, rtol=1e-4,
                     what=f"sigma2_new from random start {start + 1} of 3")
    return "W_new and sigma2_new equal their closed forms from 3 random starting points"


def _run_em(sub, x, latent_dim, iterations):
    """Run the submission's em_step from a random start; the log-likelihood after each step, by the reference."""
    W = torch.randn(x.shape[1], latent_dim)
    mu, sigma2 = x.mean(0), torch.tensor(1.0)
    lls = [average_log_likelihood(x, W, mu, sigma2)]
    for _t in range(iterations):
        W, sigma2 = _em_step(sub, x, W, mu, sigma2, latent_dim)
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


def _em_run(sub, ctx):
    """(x, the log-likelihoods of the submission's EM on x from a random start): one run of
    :data:`EM_ITERATIONS` iterations that ``em_monotone`` and ``em_converges`` share (kept in ``ctx.cache``, so
    a grade runs it once; each check alone runs it on its own seed's data)."""
    if "em_run" not in ctx.cache:
        x = _data(ctx)
        ctx.cache["em_run"] = x, _run_em(sub, x, LATENT_DIM, EM_ITERATIONS)
    return ctx.cache["em_run"]


def check_em_monotone(sub, ctx):
    """EM never lowers the log-likelihood (within float rounding) and its first step raises it."""
    _, lls = _em_run(sub, ctx)
    _assert_monotone(lls)
    return f"log-likelihood nondecreasing over {EM_ITERATIONS} iterations: {lls[0]:.4f} -> {lls[-1]:.4f}"


def check_em_converges(sub, ctx):
    """EM from a random start reaches the maximum likelihood within 1e-4 nats/datum in 60 iterations."""
    x, lls = _em_run(sub, ctx)
    optimum = average_log_likelihood(x, *reference_ml(x, LATENT_DIM))
    _assert_converged(lls, optimum)
    return f"{optimum - lls[-1]:.2g} nats/datum below the maximum after {EM_ITERATIONS} iterations"


def check_em_on_other_data(sub, ctx):
    """EM is monotone and converges on other data (D = 8, q = 3, N = 300)."""
    x = _data(ctx, num_data=300, x_dim=8, latent_dim=3, sigma=0.7)
    lls = _run_em(sub, x, 3, 150)
    _assert_monotone(lls)
    _assert_converged(lls, average_log_likelihood(x, *reference_ml(x, 3)), tolerance=1e-3)
    return f"monotone and converged: {lls[0]:.4f} -> {lls[-1]:.4f}"


def check_svi_minibatch_scale(sub, ctx):
    """The model's minibatch ELBO (plate of size N, subsample idx) is unbiased for the full-data ELBO:
    with the exact posterior as guide and the ML parameters, E_idx[ELBO(x[idx])] = sum_n log p(x_n)."""
    x = _data(ctx)
    N, batch, num_samples = x.shape[0], 20, 100
    W, mu, sigma2 = reference_ml(x, LATENT_DIM)
    total = N * average_log_likelihood(x, W, mu, sigma2)
    mean, cov = (t.float() for t in reference_posterior(x, W, mu, sigma2))
    values = expect_tensor(sub.probe(f"{_PROBES}:minibatch_elbos", x, W.float(), mu.float(), float(sigma2), mean,
                                     cov, batch, num_samples),
                           "the model's minibatch ELBO (Trace_ELBO with the exact posterior as guide)",
                           (num_samples,))
    draws = iter(values)
    out = assert_unbiased(lambda: next(draws), torch.tensor(total), num_samples=num_samples, seed=ctx.seed % 2 ** 31)
    return f"minibatch ELBO (B = {batch}) unbiased for sum_n log p(x_n) = {total:.2f}: {out}"


def _check_svi(sub, ctx, guide_name):
    x = _data(ctx)
    what = f"train_svi(x, {guide_name}, 2)"
    W, mu, sigma2 = _parameters(sub.probe(f"{_PROBES}:train_svi", guide_name, x, LATENT_DIM), what,
                                x.shape[1], LATENT_DIM)
    optimum = average_log_likelihood(x, *reference_ml(x, LATENT_DIM))
    ll = average_log_likelihood(x, W, mu, sigma2)
    if optimum - ll > SVI_TOLERANCE:
        raise AssertionError(f"SVI with {guide_name} reached an average log-likelihood of {ll:.4f}, "
                             f"{optimum - ll:.3f} nats/datum below the maximum {optimum:.4f} "
                             f"(allowed {SVI_TOLERANCE})")
    return f"{optimum - ll:.4f} nats/datum below the maximum likelihood {optimum:.4f}"


def check_svi_exact_guide(sub, ctx):
    """SVI with the per-datum guide (which contains the exact posterior) gets within 0.1 nats/datum of the ML."""
    return _check_svi(sub, ctx, "exact_guide")


def check_svi_amortized_guide(sub, ctx):
    """SVI with the amortized linear-encoder guide gets within 0.1 nats/datum of the maximum likelihood."""
    return _check_svi(sub, ctx, "amortized_guide")
