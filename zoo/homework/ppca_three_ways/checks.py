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

False alarms: every check here but the two SVI checks (whose path, the loss of each of train_svi's own SVI steps, must
also go down and end at the state it left: :func:`_assert_svi_path`) is deterministic given its inputs (a closed form compared
to float32 rounding, or EM from a start whose EM run the grader has computed itself), so a correct submission
passes at every seed. The SVI checks' tolerance is five times the worst gap that correct SVIs (the reference,
and a constant-rate Adam in float64) show, and a run that misses it gets a second one four times as long:
``benchmarks/results/homework_seed_sweep.md`` measures both rates.
"""
from __future__ import annotations


import torch

from zoo.homework.base import expect_number, expect_sequence, expect_tensor
from zoo.homework.ppca_three_ways.problem import (LATENT_DIM, average_elbo, average_log_likelihood, make_data,
                                                  reference_ml, reference_model, reference_posterior)
from zoo.testing import assert_close, assert_lower_bound

__all__ = ["check_ml_closed_form", "check_ml_matches_sklearn", "check_log_likelihood", "check_posterior",
           "check_em_update", "check_em_monotone", "check_em_converges", "check_em_on_other_data",
           "check_svi_minibatch_scale", "check_svi_exact_guide", "check_svi_amortized_guide", "em_update"]

#: How far below the maximum likelihood (nats per datum) the ELBO that SVI reached may end: the average of
#: E_q[log p(x_n, z) - log q(z)] over the data, with the model's parameters and the guide's q(z_n) as train_svi left
#: them. A correct SVI ends up to 0.1 below (the reference 0.05, a constant-rate Adam in float64 0.1 when it has
#: converged: its per-datum means keep jittering); every bug in the kit's mutation suite ends more than 1.4 below,
#: and a train_svi that does not run SVI (the closed-form ML, the guide left as it starts) more than 15.
SVI_TOLERANCE = 0.5
#: The steps a train_svi that missed the tolerance at its own default is run again with: slow is not wrong.
SVI_RETRY_STEPS = 1600
#: The path of train_svi's own loop (each loss its ``SVI.step`` returned, per datum), which must show that SVI got
#: there: at least :data:`SVI_MIN_STEPS` steps (and the ``num_steps`` asked for), a descent of at least
#: :data:`SVI_MIN_DESCENT` nats/datum from the mean loss of its first tenth to that of its last, and that last mean
#: within :data:`SVI_PATH_TOLERANCE` of minus the ELBO of the state it left. The reference descends 1.9 to 2.5, the
#: float64 constant-rate Adam 4.8 to 6.2, and both end within 0.06 of their end state's ELBO (per-step noise 0.13,
#: averaged over 40 steps); a train_svi that writes the closed form and the exact posterior into the param store
#: takes no step, and one that writes them after a short real run ends more than its own gap above them.
SVI_MIN_STEPS = 100
SVI_MIN_DESCENT = 0.5
SVI_PATH_TOLERANCE = 0.25
EM_ITERATIONS = 60
EM_TOLERANCE = 1e-4             # nats per datum below the maximum likelihood after EM_ITERATIONS
EM_DECREASE_TOLERANCE = 1e-5    # nats per datum: float32 rounding, not a real decrease
#: The data's mean, in the coordinates of its two principal axes, before the secret rotation. In the principal
#: subspace only, the posterior mean M^-1 W^T (x - mu) = A x + b has a large intercept b = -M^-1 W^T mu at every
#: seed that no coordinate of x can stand in for: an encoder without its bias ends more than 1 nat/datum short.
MEAN_IN_PRINCIPAL_AXES = (4.0, 3.0)
_PROBES = "zoo.homework.ppca_three_ways.probes"


def _data(ctx, **kwargs) -> torch.Tensor:
    """The check's data: the handout's pPCA data set, its mean moved to :data:`MEAN_IN_PRINCIPAL_AXES` along its
    first principal axes, then rotated by an orthogonal R drawn from the check's (secret) seed (x_n -> R x_n), its
    rows shuffled. The likelihood is invariant under the rotation (W -> R W, mu -> R mu), and so are the mean's
    length and its place relative to the principal subspace: every grade poses the same problem in other
    coordinates (a random translation made an optimizer started at 0 walk further at some seeds than at others,
    and left the encoder's bias nothing to do at some)."""
    x = make_data(**kwargs).double()
    centred = x - x.mean(0)
    _, axes = torch.linalg.eigh(centred.T @ centred)                  # ascending: the principal axes are last
    mean = axes.flip(-1)[:, :len(MEAN_IN_PRINCIPAL_AXES)] @ torch.tensor(MEAN_IN_PRINCIPAL_AXES, dtype=torch.float64)
    generator = torch.Generator().manual_seed(ctx.seed % 2 ** 63)
    R, _ = torch.linalg.qr(torch.randn(x.shape[1], x.shape[1], generator=generator, dtype=torch.float64))
    return ((centred + mean) @ R.T)[torch.randperm(x.shape[0], generator=generator)].float()


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
    M_inverse = torch.linalg.inv(W.T @ W + sigma2 * torch.eye(W.shape[1], dtype=torch.float64))
    xc = x - mu
    mean, cov = xc @ W @ M_inverse, sigma2 * M_inverse
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


def _em_start(x, latent_dim: int, iterations: int, tolerance: float):
    """A random start W (with sigma^2 = 1) from which EM itself, the grader's :func:`em_update` in float64, reaches
    the maximum likelihood within a tenth of ``tolerance`` in ``iterations`` steps. A start almost orthogonal to the
    principal subspace sits near a saddle point of the likelihood, and EM needs longer to leave it: such a start is
    drawn again (from the check's seed, so deterministically), so that how far a correct EM gets never depends on
    the seed. (Over 1000 starts on the handout's data, EM's worst gap after 60 iterations was 7e-6 nats/datum.)"""
    mu = x.mean(0).double()
    optimum = average_log_likelihood(x, *reference_ml(x, latent_dim))
    for _ in range(100):
        W = torch.randn(x.shape[1], latent_dim)
        W_em, sigma2_em = W.double(), 1.0
        for _t in range(iterations):
            W_em, sigma2_em = em_update(x, W_em, mu, sigma2_em)
        if optimum - average_log_likelihood(x, W_em, mu, sigma2_em) <= tolerance / 10:
            return W, optimum
    raise RuntimeError("no start from which EM converges")      # never: one start in a thousand needs a redraw


def _run_em(sub, x, latent_dim: int, iterations: int, tolerance: float):
    """The submission's em_step iterated from a start of :func:`_em_start`: ``{"iterates": [(W_t, sigma2_t)],
    "lls": the log-likelihood of each by the reference, "optimum": the maximum}``."""
    W, optimum = _em_start(x, latent_dim, iterations, tolerance)
    mu, sigma2 = x.mean(0), torch.tensor(1.0)
    iterates = [(W, sigma2)]
    for _t in range(iterations):
        W, sigma2 = _em_step(sub, x, W, mu, sigma2, latent_dim)
        W, sigma2 = W.to(x.dtype), sigma2.to(x.dtype)
        iterates.append((W, sigma2))
    return {"iterates": iterates, "lls": [average_log_likelihood(x, W, mu, s) for W, s in iterates],
            "optimum": optimum}


def _assert_em_steps(x, run):
    """Each step of the run is EM's: iterate t + 1 is :func:`em_update` of iterate t, to float32 rounding (the
    tolerances of ``em_update``). A step that is not EM (the closed-form maximum likelihood, several EM steps in
    one, a slip in an update) climbs differently, so the run's monotonicity and convergence would not be EM's."""
    mu = x.mean(0)
    for t, ((W, sigma2), (W_next, sigma2_next)) in enumerate(zip(run["iterates"][:-1], run["iterates"][1:]), 1):
        W_ref, sigma2_ref = em_update(x, W, mu, sigma2)
        try:
            assert_close(W_next, W_ref, atol=1e-4, rtol=1e-4, what="W_new")
            assert_close(sigma2_next, torch.tensor(sigma2_ref), atol=1e-5, rtol=1e-4, what="sigma2_new")
        except AssertionError as e:
            raise AssertionError(f"em_step is not one EM step along the run from a random start: at iteration {t}, "
                                 f"{e}") from None


def _assert_monotone(lls):
    steps = [b - a for a, b in zip(lls[:-1], lls[1:])]
    worst = min(range(len(steps)), key=steps.__getitem__)
    if steps[worst] < -EM_DECREASE_TOLERANCE:
        raise AssertionError(f"the log-likelihood decreased at EM iteration {worst + 1}: {lls[worst]:.6f} -> "
                             f"{lls[worst + 1]:.6f} ({steps[worst]:.3g} nats/datum)")


def _assert_converged(lls, optimum, tolerance):
    if optimum - lls[-1] > tolerance:
        raise AssertionError(f"after {len(lls) - 1} EM iterations the log-likelihood is {lls[-1]:.6f}, "
                             f"{optimum - lls[-1]:.3g} nats/datum below the maximum {optimum:.6f}")


def _em_run(sub, ctx):
    """(x, the submission's EM run on x from a random start): one run of :data:`EM_ITERATIONS` iterations that
    ``em_monotone`` and ``em_converges`` share (kept in ``ctx.cache``, so a grade runs it once; each check alone
    runs it on its own seed's data)."""
    if "em_run" not in ctx.cache:
        x = _data(ctx)
        ctx.cache["em_run"] = x, _run_em(sub, x, LATENT_DIM, EM_ITERATIONS, EM_TOLERANCE)
    return ctx.cache["em_run"]


def check_em_monotone(sub, ctx):
    """The submission's EM never lowers the log-likelihood (within float rounding): 60 of its steps from a random
    start, each of them EM's (:func:`em_update` of the one before, to float32 rounding)."""
    x, run = _em_run(sub, ctx)
    _assert_em_steps(x, run)
    lls = run["lls"]
    _assert_monotone(lls)
    return f"log-likelihood nondecreasing over {EM_ITERATIONS} EM iterations: {lls[0]:.4f} -> {lls[-1]:.4f}"


def check_em_converges(sub, ctx):
    """The submission's EM from a random start, each step EM's, reaches the maximum likelihood within 1e-4
    nats/datum in 60 iterations (from a start where the grader's own EM gets within 1e-5)."""
    x, run = _em_run(sub, ctx)
    _assert_em_steps(x, run)
    _assert_converged(run["lls"], run["optimum"], EM_TOLERANCE)
    return f"{run['optimum'] - run['lls'][-1]:.2g} nats/datum below the maximum after {EM_ITERATIONS} EM iterations"


def check_em_on_other_data(sub, ctx):
    """EM is EM, monotone and converges on other data (D = 8, q = 3, N = 300): 60 steps, within 1e-3 (the grader's
    own EM gets within 1e-4 from the start it picks; over 300 random starts its worst gap after 60 steps was 5e-6)."""
    x = _data(ctx, num_data=300, x_dim=8, latent_dim=3, sigma=0.7)
    run = _run_em(sub, x, 3, EM_ITERATIONS, 1e-3)
    _assert_em_steps(x, run)
    lls = run["lls"]
    _assert_monotone(lls)
    _assert_converged(lls, run["optimum"], 1e-3)
    return f"EM's steps, monotone and converged: {lls[0]:.4f} -> {lls[-1]:.4f}"


def check_svi_minibatch_scale(sub, ctx):
    """The model's minibatch ELBO (plate of size N, subsample idx) is unbiased for the full-data ELBO, draw by draw:
    with the exact posterior as guide and the ML parameters, log p(x_n, z) - log q(z | x_n) = log p(x_n) whatever z
    is drawn, so the ELBO of the minibatch idx is (N / B) sum_{n in idx} log p(x_n) exactly (and its mean over the
    minibatches, sum_n log p(x_n)). The grader draws the minibatches and compares each of 100 to that, to float32
    rounding: deterministic, no false alarm."""
    x = _data(ctx)
    N, batch, num_samples = x.shape[0], 20, 100
    W, mu, sigma2 = reference_ml(x, LATENT_DIM)
    log_px = reference_model(W, mu, sigma2).log_marginal(x.double()).detach()               # [N]
    mean, cov = (t.float() for t in reference_posterior(x, W, mu, sigma2))
    batches = torch.stack([torch.randperm(N)[:batch] for _ in range(num_samples)])
    values = expect_tensor(sub.probe(f"{_PROBES}:minibatch_elbos", x, W.float(), mu.float(), float(sigma2), mean,
                                     cov, batches),
                           "the model's minibatch ELBO (Trace_ELBO with the exact posterior as guide)",
                           (num_samples,))
    expected = N / batch * log_px[batches].sum(1)
    assert_close(values, expected, atol=0.05, rtol=1e-5,
                 what=f"the minibatch ELBO (B = {batch}) against N / B times its data's log p(x_n)")
    return (f"each minibatch ELBO (B = {batch}) is N / B times its data's log p(x_n): unbiased for sum_n log p(x_n) "
            f"= {float(log_px.sum()):.2f}")


def _svi_run(sub, x, guide_name: str, num_steps=None):
    """(the average ELBO of the model's parameters and the guide that train_svi left, the average log-likelihood)."""
    what = f"train_svi(x, {guide_name}, 2{'' if num_steps is None else f', num_steps={num_steps}'})"
    reply = sub.probe(f"{_PROBES}:train_svi", guide_name, x, LATENT_DIM, num_steps)
    if not isinstance(reply, dict) or set(reply) != {"parameters", "loc", "covariance", "losses"}:
        raise AssertionError(f"{what} must return 3 values (W, mu, sigma2) and leave its guide fitted in Pyro's param "
                             f"store: what came back is malformed")
    W, mu, sigma2 = _parameters(reply["parameters"], what, x.shape[1], LATENT_DIM)
    N = x.shape[0]
    loc = expect_tensor(reply["loc"], f"{guide_name}'s q(z_n) after {what}: the means", (N, LATENT_DIM))
    cov = expect_tensor(reply["covariance"], f"{guide_name}'s q(z_n) after {what}: the covariances",
                        (N, LATENT_DIM, LATENT_DIM))
    if not bool((torch.linalg.eigvalsh(0.5 * (cov + cov.transpose(-1, -2))) > 0).all()):
        raise AssertionError(f"{guide_name}'s q(z_n) after {what} has a covariance that is not positive definite")
    losses = expect_tensor(reply["losses"], f"the losses of {what}'s SVI steps", None)
    elbo = average_elbo(x, W, mu, sigma2, loc, cov)
    _assert_svi_path(losses.reshape(-1) / N, elbo, what, SVI_MIN_STEPS if num_steps is None else num_steps)
    return elbo, average_log_likelihood(x, W, mu, sigma2)


def _assert_svi_path(losses: torch.Tensor, elbo: float, what: str, min_steps: int) -> None:
    """The loss that train_svi's own SVI steps returned (per datum, ``losses``) went down and ended at the state it
    left (its ELBO ``elbo``): see :data:`SVI_MIN_STEPS`, :data:`SVI_MIN_DESCENT`, :data:`SVI_PATH_TOLERANCE`."""
    steps = losses.numel()
    if steps < min_steps:
        raise AssertionError(f"{what} took {steps} SVI steps (pyro.infer.SVI.step), fewer than {min_steps}: the fit "
                             f"must come from SVI, not be written into the param store")
    tenth = max(10, steps // 10)
    first, last = float(losses[:tenth].mean()), float(losses[-tenth:].mean())
    if first - last < SVI_MIN_DESCENT:
        raise AssertionError(f"{what}'s SVI loss went from {first:.3f} to {last:.3f} nats/datum (the means of its first "
                             f"and last {tenth} steps), less than {SVI_MIN_DESCENT} down: SVI did not fit the model")
    if abs(last + elbo) > SVI_PATH_TOLERANCE:
        raise AssertionError(f"{what}'s SVI loss ended at {last:.3f} nats/datum (the mean of its last {tenth} steps), "
                             f"but the state it left has an ELBO of {elbo:.3f}: the fit left in the param store is not "
                             f"where its SVI got (allowed {SVI_PATH_TOLERANCE})")


def _check_svi(sub, ctx, guide_name):
    """SVI fits the model and the guide: the ELBO it reached, the grader's closed form of
    E_q[log p(x_n, z) - log q(z)] for the parameters train_svi returns and the guide's q(z_n) as train_svi left it
    in Pyro's param store, is within :data:`SVI_TOLERANCE` of the maximum likelihood (ELBO <= log p(x) <= the
    maximum, so both the model and the guide must be fitted). A run that misses it gets a second, of
    :data:`SVI_RETRY_STEPS` steps."""
    x = _data(ctx)
    optimum = average_log_likelihood(x, *reference_ml(x, LATENT_DIM))
    gaps = []
    for num_steps in (None, SVI_RETRY_STEPS):
        elbo, ll = _svi_run(sub, x, guide_name, num_steps)
        gaps.append(f"{optimum - elbo:.3g}")
        if optimum - elbo <= SVI_TOLERANCE:
            again = f" in a second run of {SVI_RETRY_STEPS} steps (the first: {gaps[0]})" if num_steps else ""
            return (f"SVI's ELBO {optimum - elbo:.4f} nats/datum below the maximum likelihood {optimum:.4f} (its "
                    f"log-likelihood {optimum - ll:.4f} below){again}")
    raise AssertionError(f"SVI with {guide_name} reached an ELBO {gaps[0]} nats/datum below the maximum likelihood "
                         f"{optimum:.4f}, and {gaps[1]} with {SVI_RETRY_STEPS} steps (its log-likelihood "
                         f"{optimum - ll:.3f} below; allowed {SVI_TOLERANCE}): are the model and the guide both "
                         f"fitted, and left in Pyro's param store?")


def check_svi_exact_guide(sub, ctx):
    """SVI with the per-datum guide (which contains the exact posterior) reaches an ELBO within 0.5 nats/datum of
    the maximum likelihood (:func:`_check_svi`)."""
    return _check_svi(sub, ctx, "exact_guide")


def check_svi_amortized_guide(sub, ctx):
    """SVI with the amortized linear-encoder guide (which contains the exact posterior, its bias included) reaches
    an ELBO within 0.5 nats/datum of the maximum likelihood (:func:`_check_svi`)."""
    return _check_svi(sub, ctx, "amortized_guide")
