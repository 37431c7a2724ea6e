"""Certifiers: statistical assertions for the mathematics of inference, for pytest suites and graders.

Each certifier checks one claim that a variational-inference code base makes and that a
plain ``allclose`` cannot check, because one side of it is random:

- :func:`assert_unbiased`: a stochastic gradient (or any estimator) has the exact value as
  its expectation. Tested as Pyro tests its gradient estimators
  (``tests/infer/test_gradient.py``): draw many estimates, and z-test the mean deviation
  from the exact value along random directions.
- :func:`assert_lower_bound`: a bound (an ELBO, an IWAE bound) is not above the exact
  log-likelihood, up to its own Monte Carlo error.
- :func:`assert_close`: a value matches its closed form within stated tolerances.
- :func:`assert_variance_order`: estimators' variances decrease in a stated order (a
  baseline helps, Rao-Blackwellization helps), demonstrably and not by chance.
- :func:`gradient_of`: the flat gradient of a loss, the usual thing to certify.

Each raises ``AssertionError`` with a one-line reason that names the worst offender and
returns a one-line summary when the claim holds, so a grader can show either.

Every test of a random claim has a false-alarm rate; here it is the two-sided normal tail
beyond ``sigmas`` standard errors (0.27% at the default 3), held for the whole assertion
(a Bonferroni correction over the directions tested), so a correct estimator fails one
seed in about 370 and a suite can fix the seed.

Example::

    >>> import torch
    >>> from zoo.testing import assert_unbiased, assert_close, assert_lower_bound
    >>> exact = torch.tensor([1.0, -2.0])
    >>> print(assert_unbiased(lambda: exact + torch.randn(2), exact, num_samples=400))
    unbiased: max |z| = ... over 11 directions (threshold 3.67, 400 samples)
    >>> assert_unbiased(lambda: exact + 0.5 + torch.randn(2), exact, num_samples=400)
    Traceback (most recent call last):
        ...
    AssertionError: biased: along ... the mean of (estimate - exact) is ... standard errors from 0 ...
    >>> print(assert_close(torch.tensor(0.5), 0.5, what="KL"))
    KL matches the closed form (max |diff| = 0, atol 1e-06, rtol 1e-05)
    >>> print(assert_lower_bound(-3.2, -3.0, what="ELBO"))
    ELBO -3.2 is below the exact -3 by 0.2 (0 allowed above)
"""
from __future__ import annotations

import math
from statistics import NormalDist
from typing import Callable, Mapping, Sequence, Union

import torch

__all__ = ["assert_unbiased", "assert_lower_bound", "assert_close", "assert_variance_order", "gradient_of",
           "two_sided_threshold", "sigmas_for_rate"]

TensorLike = Union[torch.Tensor, float, Sequence[torch.Tensor]]


def _flat(value: TensorLike, what: str) -> torch.Tensor:
    """One float64 vector from a tensor, a number, or a sequence of tensors (concatenated)."""
    if isinstance(value, torch.Tensor):
        return value.detach().reshape(-1).to(torch.float64)
    if isinstance(value, (int, float)):
        return torch.tensor([float(value)], dtype=torch.float64)
    if isinstance(value, (list, tuple)):
        if not value:
            raise AssertionError(f"{what} is an empty sequence; expected tensors")
        return torch.cat([_flat(v, what) for v in value])
    try:
        return torch.as_tensor(value, dtype=torch.float64).reshape(-1)
    except (TypeError, ValueError, RuntimeError):
        raise AssertionError(f"{what} is a {type(value).__name__}; expected a tensor, a number "
                             f"or a sequence of tensors") from None


def two_sided_threshold(sigmas: float, tests: int) -> float:
    """The |z| threshold that keeps the family-wise two-sided false-alarm rate of ``tests``
    z-tests at that of one test at ``sigmas`` standard errors (Bonferroni).

    >>> round(two_sided_threshold(3.0, 1), 6), round(two_sided_threshold(3.0, 11), 2)
    (3.0, 3.67)
    """
    alpha = 2.0 * (1.0 - NormalDist().cdf(sigmas))
    return NormalDist().inv_cdf(1.0 - alpha / (2.0 * tests))


def sigmas_for_rate(rate: float) -> float:
    """The ``sigmas`` of a two-sided z-test whose false-alarm rate is ``rate``: P(|Z| > sigmas) = rate. Passed to
    a certifier, it holds the whole assertion (all its directions, by Bonferroni) at that rate.

    >>> round(sigmas_for_rate(0.0027), 2), round(sigmas_for_rate(1e-4), 2)
    (3.0, 3.89)
    """
    if not 0.0 < rate < 1.0:
        raise ValueError(f"a false-alarm rate is in (0, 1), got {rate}")
    return NormalDist().inv_cdf(1.0 - rate / 2.0)


def _draw(estimate: Callable[[], TensorLike], num_samples: int, seed: int, what: str) -> torch.Tensor:
    """``num_samples`` i.i.d. flat draws ``[n, d]`` under a fixed seed, leaving the caller's RNG alone."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        rows = [_flat(estimate(), what) for _ in range(num_samples)]
    sizes = {r.numel() for r in rows}
    if len(sizes) != 1:
        raise AssertionError(f"{what} returned estimates of different sizes {sorted(sizes)}")
    samples = torch.stack(rows)
    if not torch.isfinite(samples).all():
        bad = int((~torch.isfinite(samples)).any(1).sum())
        raise AssertionError(f"{what} returned nan or inf in {bad} of {num_samples} draws")
    return samples


def assert_unbiased(estimate: Callable[[], TensorLike], exact: TensorLike, *, num_samples: int = 1000,
                    num_directions: int = 10, sigmas: float = 3.0, seed: int = 0) -> str:
    """Assert that ``E[estimate()] = exact``, by z-tests of the mean deviation along random directions.

    Draws ``num_samples`` i.i.d. estimates e_1..e_n (each a tensor or a sequence of tensors,
    flattened to d numbers), projects the deviations e_i - exact on ``num_directions`` random
    unit vectors u_k and on the all-coordinates mean direction 1/sqrt(d), and z-tests each
    projection's mean against 0::

        z_k = mean_i(u_k . (e_i - exact)) / (std_i(u_k . (e_i - exact)) / sqrt(n))

    It fails if any |z_k| exceeds the Bonferroni threshold that holds the false-alarm rate of
    the whole assertion at that of one two-sided test at ``sigmas`` (|z| > 3.67 for 11
    directions at 3 sigma). A bias b is found once |u_k . b| is a few standard errors of
    the projection, so a random direction sees about |b| / sqrt(d) of it; the mean
    direction sees a bias shared by all coordinates at full strength. For d = 1 the one
    direction is the coordinate itself.

    A projection with zero spread (a deterministic estimator) fails if its mean is off by
    more than float rounding (1e-9 relative).

    Arguments:
        estimate: a callable drawing one estimate (it may use torch's global RNG; that RNG is
            seeded with ``seed`` for the draws and restored afterwards).
        exact: the exact expectation, of the same shape (or sequence of shapes).
        num_samples: the number of i.i.d. draws n.
        num_directions: the number of random unit directions (besides the mean direction).
        sigmas: the false-alarm rate, as a two-sided normal tail (3: 0.27%).
        seed: seeds both the directions and the draws.

    Returns:
        a one-line summary: the largest |z| and the threshold.

    Example::

        >>> import torch
        >>> p = torch.tensor(0.3, requires_grad=True)
        >>> f = lambda z: (z - 0.2) ** 2
        >>> def reinforce():             # score-function gradient of E_{z~Bern(p)} f(z)
        ...     z = torch.bernoulli(p.detach())
        ...     log_q = z * torch.log(p) + (1 - z) * torch.log(1 - p)
        ...     return gradient_of(lambda: f(z) * log_q, [p])
        >>> exact = torch.tensor(0.6)     # d/dp E f(z) = f(1) - f(0) = 0.64 - 0.04
        >>> print(assert_unbiased(reinforce, exact, num_samples=300))
        unbiased: max |z| = ... over 1 direction (threshold 3, 300 samples)
    """
    exact_flat = _flat(exact, "exact")
    d = exact_flat.numel()
    samples = _draw(estimate, num_samples, seed, "estimate")
    if samples.shape[1] != d:
        raise AssertionError(f"estimate has {samples.shape[1]} numbers but exact has {d}")
    if num_samples < 2:
        raise ValueError("assert_unbiased needs num_samples >= 2 to estimate a standard error")

    names, directions = _directions(d, num_directions, seed)
    deviations = (samples - exact_flat) @ directions.T             # [n, K]
    mean = deviations.mean(0)
    stderr = deviations.std(0) / math.sqrt(num_samples)
    rounding = 1e-9 * (1.0 + (samples.abs().mean(0) @ directions.abs().T))
    z = torch.where(stderr > rounding, mean / stderr.clamp_min(1e-300),
                    torch.where(mean.abs() > rounding, torch.full_like(mean, math.inf), torch.zeros_like(mean)))
    threshold = two_sided_threshold(sigmas, len(names))
    worst = int(z.abs().argmax())
    if z[worst].abs() > threshold:
        raise AssertionError(
            f"biased: along {names[worst]} the mean of (estimate - exact) is {float(mean[worst]):.4g} = "
            f"{float(z[worst]):.3g} standard errors from 0 (threshold {threshold:.3g} for {sigmas:g} sigma "
            f"over {len(names)} direction{'s' * (len(names) > 1)}, {num_samples} samples)")
    return (f"unbiased: max |z| = {float(z.abs().max()):.3g} over {len(names)} direction{'s' * (len(names) > 1)} "
            f"(threshold {threshold:.3g}, {num_samples} samples)")


def _directions(d: int, num_directions: int, seed: int):
    """Named unit directions ``[K, d]``: the mean over all coordinates, then random ones."""
    if d == 1:
        return ["the only coordinate"], torch.ones(1, 1, dtype=torch.float64)
    generator = torch.Generator().manual_seed(seed)
    random = torch.randn(num_directions, d, generator=generator, dtype=torch.float64)
    random = random / random.norm(dim=1, keepdim=True)
    mean = torch.full((1, d), 1.0 / math.sqrt(d), dtype=torch.float64)
    names = ["the mean over all coordinates"] + [f"random direction {k + 1}" for k in range(num_directions)]
    return names, torch.cat([mean, random])


def assert_lower_bound(bound: TensorLike, exact: TensorLike, *, stderr: TensorLike = 0.0, sigmas: float = 3.0,
                       what: str = "ELBO", atol: float = 0.0) -> str:
    """Assert that ``bound <= exact`` (elementwise), allowing ``sigmas`` Monte Carlo standard errors
    of the bound (and ``atol`` of float rounding) above it.

    An ELBO or IWAE bound estimated from samples scatters around its expectation, which is the
    true bound; ``stderr`` is that scatter's standard error (pass 0 for a bound computed exactly).

    Arguments:
        bound: the bound, a number or a tensor (e.g. one per datum).
        exact: the exact value it bounds (e.g. log p(x) by enumeration or in closed form).
        stderr: the standard error of ``bound``, broadcastable to it.
        sigmas: how many standard errors above ``exact`` are tolerated.
        what: the bound's name, for the message.
        atol: an absolute tolerance for float rounding.

    Example::

        >>> import torch
        >>> assert_lower_bound(torch.tensor([-3.0, -2.0]), torch.tensor([-3.5, -1.0]), what="ELBO")
        Traceback (most recent call last):
            ...
        AssertionError: ELBO is above the exact value: at index 0, ELBO -3 > exact -3.5 by 0.5 (0 allowed)
    """
    b, e = _as_tensor(bound, what), _as_tensor(exact, "exact")
    s = _as_tensor(stderr, "stderr")
    try:
        b, e, s = torch.broadcast_tensors(b, e, s)
    except RuntimeError:
        raise AssertionError(f"{what} has shape {tuple(b.shape)} but exact has {tuple(e.shape)}") from None
    if not torch.isfinite(b).all():
        raise AssertionError(f"{what} is nan or inf at {int((~torch.isfinite(b)).sum())} of {b.numel()} entries")
    allowed = sigmas * s + atol
    excess = b - e - allowed
    worst = int(excess.reshape(-1).argmax())
    bw, ew, aw = (float(t.reshape(-1)[worst]) for t in (b, e, allowed))
    if excess.reshape(-1)[worst] > 0:
        where = f"at index {worst}, " if b.numel() > 1 else ""
        raise AssertionError(f"{what} is above the exact value: {where}{what} {bw:.6g} > exact {ew:.6g} by "
                             f"{bw - ew:.3g} ({aw:.3g} allowed)")
    gap = (e - b).reshape(-1)
    if b.numel() == 1:
        return f"{what} {bw:.6g} is below the exact {ew:.6g} by {float(gap[0]):.3g} ({aw:.3g} allowed above)"
    return (f"{what} is below the exact value at all {b.numel()} entries (mean gap {float(gap.mean()):.3g}, "
            f"smallest {float(gap.min()):.3g})")


def _as_tensor(value, what: str) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value.detach().to(torch.float64)
    try:
        return torch.as_tensor(value, dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError):
        raise AssertionError(f"{what} is a {type(value).__name__}; expected a tensor or a number") from None


def assert_close(value: TensorLike, expected: TensorLike, *, atol: float = 1e-6, rtol: float = 1e-5,
                 what: str = "value") -> str:
    """Assert ``|value - expected| <= atol + rtol |expected|`` elementwise, with equal shapes.

    ``expected`` is the closed form; the message names the worst entry.

    Example::

        >>> import torch
        >>> assert_close(torch.tensor([1.0, 2.0]), torch.tensor([1.0, 2.1]), atol=1e-3, what="W")
        Traceback (most recent call last):
            ...
        AssertionError: W does not match the closed form: at index 1, 2 vs 2.1 (|diff| 0.1 > 0.00102)
    """
    v, e = _as_tensor(value, what), _as_tensor(expected, "expected")
    if v.shape != e.shape:
        raise AssertionError(f"{what} has shape {tuple(v.shape)}, expected {tuple(e.shape)}")
    if v.numel() == 0:
        return f"{what} matches the closed form (empty)"
    if not torch.isfinite(v).all():
        raise AssertionError(f"{what} is nan or inf at {int((~torch.isfinite(v)).sum())} of {v.numel()} entries")
    diff = (v - e).abs()
    allowed = atol + rtol * e.abs()
    excess = (diff - allowed).reshape(-1)
    worst = int(excess.argmax())
    if excess[worst] > 0:
        where = f"at index {_index(worst, v.shape)}, " if v.numel() > 1 else ""
        raise AssertionError(f"{what} does not match the closed form: {where}{float(v.reshape(-1)[worst]):.6g} vs "
                             f"{float(e.reshape(-1)[worst]):.6g} (|diff| {float(diff.reshape(-1)[worst]):.3g} > "
                             f"{float(allowed.reshape(-1)[worst]):.3g})")
    return f"{what} matches the closed form (max |diff| = {float(diff.max()):.3g}, atol {atol:g}, rtol {rtol:g})"


def _index(flat: int, shape) -> str:
    if len(shape) <= 1:
        return str(flat)
    index = []
    for size in reversed(shape):
        index.append(flat % size)
        flat //= size
    return str(tuple(reversed(index)))


def assert_variance_order(estimators: Mapping[str, Callable[[], TensorLike]], order: Sequence[str], *,
                          num_samples: int = 500, sigmas: float = 3.0, min_ratio: float = 1.0,
                          seed: int = 0) -> str:
    """Assert that the estimators' variances decrease along ``order``, each step demonstrably.

    The variance of a vector estimator is its total variance, the trace of its covariance,
    estimated as V = mean_i |e_i - mean(e)|^2 from ``num_samples`` independent draws of each.
    For each consecutive pair (a, b) in ``order`` it asks that V_a / V_b > ``min_ratio``
    by ``sigmas`` standard errors of log(V_a / V_b), which come from the draws' fourth
    moments (the F test on a variance ratio, made robust to the heavy tails of score-function
    estimators). Equal variances therefore fail: the ordering must be shown, not just not refuted.

    Arguments:
        estimators: name -> a callable drawing one estimate (tensor or sequence of tensors).
        order: names from the highest variance to the lowest.
        num_samples: draws per estimator.
        sigmas: the one-sided margin in standard errors of the log ratio.
        min_ratio: the ratio each step must exceed (1: any decrease).
        seed: the draws of the k-th estimator in ``order`` use seed + k.

    Example::

        >>> import torch
        >>> noisy = lambda: torch.randn(3) * 2.0
        >>> quiet = lambda: torch.randn(3)
        >>> print(assert_variance_order({"noisy": noisy, "quiet": quiet}, ["noisy", "quiet"], num_samples=300))
        variance decreases: noisy ... > quiet ... (ratio ...)
        >>> assert_variance_order({"noisy": noisy, "quiet": quiet}, ["quiet", "noisy"], num_samples=300)
        Traceback (most recent call last):
            ...
        AssertionError: variance of quiet (...) is not demonstrably above that of noisy (...): ...
    """
    missing = [name for name in order if name not in estimators]
    if missing:
        raise ValueError(f"order names {missing} that are not among the estimators {sorted(estimators)}")
    if len(order) < 2:
        raise ValueError("assert_variance_order needs at least two estimators in order")
    stats = {}
    for k, name in enumerate(order):
        samples = _draw(estimators[name], num_samples, seed + k, name)
        sq = ((samples - samples.mean(0)) ** 2).sum(1) * num_samples / (num_samples - 1)
        variance = sq.mean()
        stats[name] = (float(variance), float(sq.std() / math.sqrt(num_samples) / variance.clamp_min(1e-300)))
    for a, b in zip(order[:-1], order[1:]):
        (va, ra), (vb, rb) = stats[a], stats[b]
        if vb <= 0.0:
            if va > 0.0:
                continue                              # a deterministic estimator beats any noisy one
            raise AssertionError(f"variance of {a} and {b} are both 0; nothing to order")
        log_ratio = math.log(max(va, 1e-300) / vb)
        z = (log_ratio - math.log(min_ratio)) / max(math.hypot(ra, rb), 1e-12)
        if z < sigmas:
            raise AssertionError(f"variance of {a} ({va:.4g}) is not demonstrably above that of {b} ({vb:.4g}): "
                                 f"ratio {va / vb:.3g}, {z:.2g} standard errors above {min_ratio:g} "
                                 f"(need {sigmas:g}, {num_samples} samples each)")
    steps = " > ".join(f"{name} {stats[name][0]:.3g}" for name in order)
    ratios = ", ".join(f"{stats[a][0] / stats[b][0]:.3g}" if stats[b][0] > 0 else "inf"
                       for a, b in zip(order[:-1], order[1:]))
    return f"variance decreases: {steps} (ratio{'s' * (len(order) > 2)} {ratios})"


def gradient_of(loss_fn: Callable[[], torch.Tensor], params: Sequence[torch.Tensor]) -> torch.Tensor:
    """The gradient of the scalar ``loss_fn()`` with respect to ``params``, flattened into one vector
    (zeros for a parameter the loss does not use).

    Example::

        >>> import torch
        >>> w = torch.tensor([1.0, 2.0], requires_grad=True)
        >>> gradient_of(lambda: (w ** 2).sum(), [w])
        tensor([2., 4.])
    """
    params = list(params)
    loss = loss_fn()
    if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
        shape = tuple(loss.shape) if isinstance(loss, torch.Tensor) else type(loss).__name__
        raise AssertionError(f"the loss must be a scalar tensor, got {shape}")
    if not loss.requires_grad:
        return torch.cat([torch.zeros_like(p).reshape(-1) for p in params])
    grads = torch.autograd.grad(loss.reshape(()), params, allow_unused=True)
    return torch.cat([(torch.zeros_like(p) if g is None else g).reshape(-1) for p, g in zip(params, grads)])
