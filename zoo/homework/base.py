"""The homework kit's two records: an :class:`Assignment` is a titled tuple of :class:`Check` s.

A check is named by its function (``"module:function"``); the grader (:mod:`zoo.homework.grader`)
imports the student's submission once in a worker process and calls ``function(sub, ctx)`` *in the
grader's own process* for each check, ``sub`` being a :class:`~zoo.homework.grader.Submission`
that asks the worker for values (``sub.call("kl_normal", mu, log_sigma)``) and ``ctx`` a
:class:`~zoo.homework.grader.CheckContext`. A check validates each value it gets back with
:func:`expect_tensor` / :func:`expect_sequence`, fails by raising ``AssertionError`` with a
one-line reason, and passes by returning ``None`` or a short output string (shown in the table
and in Gradescope's ``output``). A submission that raises, hangs past ``timeout`` (CPU seconds)
or kills its worker fails that check, and only that check.

Each assignment lives in a package ``zoo.homework.<name>`` whose folder holds ``handout.md``,
``starter.py``, ``selfcheck.py`` (the student's local self-check), ``checks.py`` (the grader's
side) and ``probes.py`` (public helpers run next to the student's code); its ``__init__`` defines
``ASSIGNMENT`` and registers it in :data:`zoo.homework.ASSIGNMENTS`. The reference solution is
kept out of the package, in ``zoo/homework/solutions/<name>.py`` of a source checkout.

Example::

    >>> from zoo.homework.base import Assignment, Check
    >>> hw = Assignment("toy", "A toy", (Check("adds", 2.0, "add(1, 2) == 3", "toy.checks:check_add"),),
    ...                 package="zoo.homework.toy")
    >>> hw.max_points, hw.check("adds").timeout
    (2.0, 60.0)
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

__all__ = ["Check", "Assignment", "expect_tensor", "expect_sequence", "expect_number", "assert_total_variance",
           "draw_seeds", "seed_draw", "with_weights", "assert_replayed", "REPLAYS", "FALSE_ALARM", "DESIGN_RATE"]


@dataclass(frozen=True)
class Check:
    """One graded check of an assignment.

    Arguments:
        name: snake_case id, unique in the assignment, e.g. ``"kl_closed_form"``.
        points: the points it is worth.
        description: one line shown in the grade table.
        function: ``"module:function"``, called as ``function(sub, ctx)`` in the grader's process;
            raises ``AssertionError("one-line reason")`` to fail, returns ``None`` or a short
            output string to pass.
        timeout: CPU seconds of the worker for all of the check's requests, enforced by the grader
            (the worker is killed past it).
        hidden: hidden from students until published (Gradescope ``after_published``) when the
            instructor switches hidden checks on.
    """

    name: str
    points: float
    description: str
    function: str
    timeout: float = 60.0
    hidden: bool = False


@dataclass(frozen=True)
class Assignment:
    """A homework assignment: its checks and the package holding its files.

    Arguments:
        name: the assignment's id (``"bernoulli_vae"``, ``"discrete_estimators"``, ``"ppca_three_ways"``,
            ``"wake_sleep_and_iwae"``).
        title: one line for ``pyro-zoo homework list``.
        checks: the graded checks, in the order they run.
        package: ``"zoo.homework.<name>"``; its folder holds handout.md, starter.py, selfcheck.py,
            checks.py and probes.py.
        reference_time: the reference solution's whole grade (hidden checks on, worker start included) in units
            of :func:`zoo.homework.grader.calibrate`, as ``benchmarks/homework_grade.py`` measures it; the
            grader's time budget for a grade is a multiple of it. ``None``: no budget besides each check's limit.
    """

    name: str
    title: str
    checks: Tuple[Check, ...]
    package: str
    reference_time: Optional[float] = None

    @property
    def max_points(self) -> float:
        return float(sum(c.points for c in self.checks))

    def check(self, name: str) -> Check:
        for c in self.checks:
            if c.name == name:
                return c
        raise KeyError(name)


# -- validating what the submission's process returned -----------------------------------------------
def expect_sequence(value, what: str, length: int):
    """``value`` as a list of ``length`` items (a returned tuple arrives as a list), or a one-line failure."""
    if not isinstance(value, list) or len(value) != length:
        got = f"{len(value)} values" if isinstance(value, list) else f"a {type(value).__name__}"
        raise AssertionError(f"{what} must return {length} values, got {got}")
    return value


def expect_tensor(value, what: str, shape: Optional[Sequence[int]] = None, *, finite: bool = True,
                  numbers: bool = False):
    """``value`` as a float64 tensor of ``shape`` (any shape when None), finite unless ``finite=False``;
    with ``numbers`` a plain number is taken as a 0-d tensor. Anything else is a one-line AssertionError."""
    import torch
    if numbers and isinstance(value, (int, float)) and not isinstance(value, bool):
        value = torch.tensor(float(value))
    if not isinstance(value, torch.Tensor):
        raise AssertionError(f"{what} returned a {type(value).__name__}, expected a tensor"
                             + (f" of shape {tuple(shape)}" if shape is not None else ""))
    if shape is not None and tuple(value.shape) != tuple(shape):
        raise AssertionError(f"{what} returned shape {tuple(value.shape)}, expected {tuple(shape)}")
    value = value.double()
    if finite and not torch.isfinite(value).all():
        raise AssertionError(f"{what} returned nan or inf")
    return value


def expect_number(value, what: str) -> float:
    """``value`` as a finite float (a number or a one-element tensor), or a one-line failure."""
    t = expect_tensor(value, what, numbers=True)
    if t.numel() != 1:
        raise AssertionError(f"{what} returned shape {tuple(t.shape)}, expected a number")
    return float(t.reshape(()))


def assert_total_variance(draws, exact: float, what: str, *, sigmas: float = 3.5, slack: float = 1.15,
                          hint: str = "") -> str:
    """The draws' total variance (the trace of their covariance, ``draws`` being ``[n, d]``) equals ``exact``:
    it fails when the log of their ratio is beyond ``log(slack)`` by more than ``sigmas`` standard errors (from
    the draws' fourth moments, so heavy tails widen them). A Monte Carlo estimator with S independent particles
    has the variance of one particle over S; one that ignores S, draws identical particles or adds its own noise
    to an exact answer has another."""
    import math
    n = draws.shape[0]
    d = draws.double().reshape(n, -1)
    sq = ((d - d.mean(0)) ** 2).sum(1) * n / (n - 1)
    variance = float(sq.mean())
    if not variance > 0:
        raise AssertionError(f"{what} does not vary: a Monte Carlo estimator's variance is {exact:.3g}")
    relative = float(sq.std()) / math.sqrt(n) / variance
    z = (abs(math.log(variance / exact)) - math.log(slack)) / max(relative, 1e-12)
    if z > sigmas:
        raise AssertionError(f"the variance of {what} is {variance:.3g}, a correct estimator's {exact:.3g} (ratio "
                             f"{variance / exact:.3g}, {z:.1f} standard errors){hint}")
    return f"variance {variance:.3g} (exact {exact:.3g})"



def assert_elbo_draws(what: str, draws, log_px, exact_elbo, one, particles: int, threshold: float,
                      few_hint: str) -> float:
    """A Monte Carlo ELBO of ``particles`` independent particles, from its draws ``[n, B]`` (one row per seed) on
    B data, against the exact answers by quadrature: ``log_px`` and ``exact_elbo`` ``[B]``, and ``one``, one
    particle's variance ``[B]``. Its spread is that of ``particles`` particles: the mean over the data of
    var / (one / particles) is chi-square(B (n - 1)) / (B (n - 1)) for a correct estimator, and it fails above 4 or
    below 0.25 (``few_hint`` says what the estimator must be). Its mean lies below log p(x) and equals the exact
    ELBO: z-tests at ``threshold`` whose standard error is the exact one over ``particles`` and n, or the draws'
    own if larger (a mean above log p(x) by the threshold is above the exact ELBO by more, so the bound adds no
    false alarm). Returns the mean gap log p(x) - ELBO over the data (the homeworks 1 and 5 ELBO checks)."""
    import torch
    ratio = float((draws.var(0) / (one / particles)).mean())
    if ratio > 4.0:
        raise AssertionError(f"{what} varies {ratio:.3g} times as much as the mean of {particles} independent "
                             f"particles: does it average num_particles independent particles?")
    if ratio < 0.25:
        raise AssertionError(f"{what} varies only {ratio:.3g} times as much as the mean of {particles} independent "
                             f"particles: {few_hint}")
    mean = draws.mean(0)
    stderr = torch.sqrt(torch.maximum(one / particles, draws.var(0)) / draws.shape[0])
    above = (mean - log_px) / stderr
    if float(above.max()) > threshold:
        b = int(above.argmax())
        raise AssertionError(f"{what} is above the exact log p(x) (datum {b}): {float(mean[b]):.4f} > "
                             f"{float(log_px[b]):.4f} by {float(above[b]):.1f} standard errors (threshold "
                             f"{threshold:.2f})")
    off = (mean - exact_elbo).abs() / stderr
    if float(off.max()) > threshold:
        b = int(off.argmax())
        raise AssertionError(f"{what} against the exact ELBO by quadrature (datum {b}): {float(mean[b]):.4f} vs "
                             f"{float(exact_elbo[b]):.4f}, {float(off[b]):.1f} standard errors (threshold "
                             f"{threshold:.2f})")
    return float((log_px - exact_elbo).mean())


# -- how often a check may fail a correct submission -----------------------------------------------------------
#: The false-alarm rate of one check: the probability, over the grade's secret seed, that a correct submission loses
#: its points by chance. Every statistical test inside a check shares it (Bonferroni); a deterministic check (a
#: closed form compared to float rounding) has none. ``benchmarks/homework_seed_sweep.py`` measures it.
FALSE_ALARM = 1e-4
#: The rate each check's tests are designed at: a quarter of :data:`FALSE_ALARM`. A z-test of the mean (or the log
#: variance) of a few hundred skewed draws is a normal approximation, and 4 to 5 standard errors out its tail can be
#: off by a factor of 2 to 3 (the Edgeworth term of a skewness of a few, over the square root of the draws).
DESIGN_RATE = FALSE_ALARM / 4


# -- draws that are the student's estimator's: one seed each, replayed in a fresh worker --------------------
#: draws of each request replayed in a fresh worker
REPLAYS = 3


def draw_seeds(n: int):
    """``n`` seeds for the draws a check asks for, from torch's global RNG (which the grader seeds per check)."""
    import torch
    return [int(torch.randint(0, 2 ** 31 - 1, ())) for _ in range(n)]


def seed_draw(seed: int) -> None:
    """In a probe, before one draw: seed Python's, torch's and (if imported) NumPy's generators with ``seed``,
    so that the draw is a function of its seed and its inputs alone."""
    import random
    import sys

    import torch
    random.seed(seed)
    seed_torch(torch, seed)
    if "numpy" in sys.modules:
        sys.modules["numpy"].random.seed(seed)


def seed_torch(torch, seed: int) -> None:
    """``torch.manual_seed(seed)`` as a probe sees it, without its cost: the CPU generator, and CUDA's only once CUDA
    is in use. ``torch.manual_seed`` also queues the seeding of an accelerator not yet started, recording a stack
    trace each time (about a millisecond, a fifth of a homework 4 grade, where every draw is seeded)."""
    torch.random.default_generator.manual_seed(seed)
    if torch.cuda.is_initialized():
        torch.cuda.manual_seed_all(seed)


def with_weights(net, state=None, double: bool = False):
    """In a probe: the starter's network ``net``, in float64 where ``double``, holding the weights ``state`` the grader
    sent (where given)."""
    if double:
        net = net.double()
    if state is not None:
        net.load_state_dict(state)
    return net


def assert_replayed(sub, requests, replays: int = REPLAYS) -> None:
    """Restart the submission's worker and ask again for a few draws of every request, alone and in another order.

    ``requests`` holds ``(ask, seeds, draws, what)``: ``ask(seeds)`` returns the draws of those seeds (validated,
    ``[len(seeds), ...]``), ``draws`` are the ones the check already took. A probe runs beside the student's code,
    which can replace what it calls; a draw that depends on more than its seed and its inputs (the other draws,
    a running mean, what the process did before) comes back different, and the check fails before anything is
    certified. One that comes back the same is the student's estimator, i.i.d., whatever code computed it."""
    import torch
    sub.restart()
    for ask, seeds, draws, what in requests:
        picks = torch.randperm(len(seeds))[:replays].tolist()
        again = ask([seeds[i] for i in picks])
        if not torch.allclose(again, draws[picks], rtol=1e-5, atol=1e-6):
            raise AssertionError(f"{what}: draws replayed in a fresh process from the same seeds differ (by "
                                 f"{float((again - draws[picks]).abs().max()):.3g}): each draw must depend only on "
                                 f"its own random numbers, not on the other draws or on what ran before")
