"""Grade a trusted file in this process, without a worker or a sandbox: to measure the checks, never to grade students.

:func:`grade_in_process` runs each check of an assignment exactly as :func:`zoo.homework.grader.grade` does: the
check's own seed (derived from the grade's seed and its name), torch's global RNG seeded with it while it runs,
one ``ctx.cache`` shared by the checks of the grade, and the same outcome for an ``AssertionError`` (failed) or a
submission's exception (error). The difference is the stand-in for the worker, :class:`InProcessSubmission`: it
calls the file's functions and the kit's probes here, each request seeded as the worker seeds it and its arguments
and reply given the wire format's types (:func:`as_on_the_wire`: a check sees lists where a tuple was returned, a
copy of each tensor, a refusal where the wire carries no such value), without spelling tensors out as JSON. What is not exercised: the sandbox, the worker process and its limits, and the replay of
draws in a fresh process (here a replay asks the same functions again, which is what a fresh worker running a
correct file does).

A probe can be replaced by a faster one with the same law (``probes={"zoo.homework.<hw>.probes:name": fn}``,
``fn(submission, *args)``): ``benchmarks/homework_seed_sweep.py`` draws the score-function gradients of 1000 grades
at once that way. The file runs with this process's rights: only the kit's own reference, alternatives and mutants.

Example::

    from zoo.homework.in_process import grade_in_process, load_file
    results = grade_in_process("ppca_three_ways", load_file("zoo/homework/solutions/ppca_three_ways.py"), seed=3)
    print({name: r.passed for name, r in results.items()})
"""
from __future__ import annotations

import importlib
import importlib.util
import random
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Callable, Dict, Mapping, Optional, Sequence, Union

from zoo.homework import get_assignment
from zoo.homework._worker import DTYPES, ProtocolError
from zoo.homework.grader import CheckContext, CheckResult, SubmissionError
from zoo.homework.grader import _derive as check_seed

__all__ = ["InProcessSubmission", "grade_in_process", "load_file", "as_on_the_wire"]


def as_on_the_wire(value):
    """``value`` as the grader receives it from a worker (``decode(encode(value))`` of :mod:`zoo.homework._worker`),
    without the JSON in between: None, booleans, strings and numbers as they are, tuples as lists, dicts with string
    keys, NumPy arrays and tensors as a copy (a float32 tensor survives JSON's floats exactly); anything else is the
    :class:`~zoo.homework._worker.ProtocolError` the wire raises."""
    import torch
    if value is None or isinstance(value, (bool, str, int, float)):
        return value
    if isinstance(value, (list, tuple)):
        return [as_on_the_wire(v) for v in value]
    if isinstance(value, dict):
        if not all(isinstance(k, str) for k in value):
            raise ProtocolError("a dict with non-string keys")
        return {k: as_on_the_wire(v) for k, v in value.items()}
    numpy = sys.modules.get("numpy")
    if numpy is not None and isinstance(value, (numpy.ndarray, numpy.generic)):
        value = torch.as_tensor(numpy.asarray(value))
    if isinstance(value, torch.Tensor):
        if str(value.dtype).replace("torch.", "") not in DTYPES:
            raise ProtocolError(f"a tensor of dtype {value.dtype}")
        return value.detach().cpu().clone()
    raise ProtocolError(f"a {type(value).__name__}, which is not a tensor, number, string, list or dict")


def seed_request(seed: int) -> None:
    """What the worker does before each request: seed Python's, NumPy's and torch's generators with the request's
    seed and clear Pyro's param store (torch's CPU generator directly: ``torch.manual_seed`` also queues the seeding
    of every accelerator, with a stack trace, a millisecond a call)."""
    import random as python_random

    import torch
    python_random.seed(seed)
    if "numpy" in sys.modules:
        sys.modules["numpy"].random.seed(seed % 2 ** 32)
    torch.random.default_generator.manual_seed(seed)
    if "pyro" in sys.modules:
        sys.modules["pyro"].clear_param_store()


def load_file(path: Union[str, Path], name: Optional[str] = None) -> ModuleType:
    """Import the Python file ``path`` as a module of its own (``name``, default one made from the path)."""
    path = Path(path).resolve()
    name = name or f"in_process_{abs(hash(str(path)))}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


class InProcessSubmission:
    """The grader's :class:`~zoo.homework.grader.Submission`, served in this process: :meth:`call` and
    :meth:`probe` run the module's functions (or a replacement of the probe) with the request's seed set as the
    worker sets it (Python's, NumPy's, torch's generators and Pyro's param store), and raise
    :class:`~zoo.homework.grader.SubmissionError` when the module raises."""

    def __init__(self, module: ModuleType, seed: int, probes: Optional[Mapping[str, Callable]] = None):
        self.module, self._random, self._probes = module, random.Random(seed), dict(probes or {})

    def call(self, function: str, *args):
        return self._run(getattr(self.module, function), args)

    def probe(self, probe: str, *args):
        if probe in self._probes:
            fast = self._probes[probe]
            return self._run(lambda *a: fast(self.module, *a), args)
        module_name, _, name = probe.partition(":")
        target = getattr(importlib.import_module(module_name), name)
        return self._run(lambda *a: target(self.module, *a), args)

    def restart(self) -> None:
        """Nothing to restart: the module's functions depend on their inputs and seeds only (trusted files)."""

    def _run(self, function, args):
        """The request as the worker serves it, its generators kept apart from the check's: the worker's seeding
        (and the file's draws) must not move the random numbers the check draws next, as they cannot across
        processes."""
        import torch
        numpy = sys.modules.get("numpy")
        python_state, numpy_state = random.getstate(), numpy.random.get_state() if numpy is not None else None
        try:
            with torch.random.fork_rng(devices=[]):
                seed_request(self._random.randrange(2 ** 31))
                value = function(*as_on_the_wire(list(args)))
        except Exception as e:                    # the file's exception: the check errs, as in the grader
            first = str(e).strip().splitlines()[0] if str(e).strip() else ""
            raise SubmissionError(f"{type(e).__name__}: {first}") from None
        finally:
            random.setstate(python_state)
            if numpy_state is not None:
                numpy.random.set_state(numpy_state)
        try:
            return as_on_the_wire(value)
        except ProtocolError as e:                # the worker answers this with an error: the check errs
            raise SubmissionError(f"it returned {e}; the grader reads tensors, numbers, lists and dicts") from None


def grade_in_process(assignment: str, module: ModuleType, seed: int, *, only: Optional[Sequence[str]] = None,
                     probes: Optional[Mapping[str, Callable]] = None, hidden: bool = True) -> Dict[str, CheckResult]:
    """Each check of ``assignment`` (those in ``only``, in the assignment's order; hidden ones too unless
    ``hidden=False``) on ``module`` at the grade seed ``seed``: name -> :class:`~zoo.homework.grader.CheckResult`."""
    import torch

    hw = get_assignment(assignment)
    cache: Dict = {}
    results = {}
    for check in hw.checks:
        if (only is not None and check.name not in only) or (check.hidden and not hidden):
            continue
        module_name, _, name = check.function.partition(":")
        function = getattr(importlib.import_module(module_name), name)
        own_seed = check_seed(seed, check.name)
        sub = InProcessSubmission(module, own_seed, probes)
        start = time.perf_counter()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(own_seed)
            try:
                output, status = function(sub, CheckContext(own_seed, cache)), "passed"
            except AssertionError as e:
                output, status = str(e).strip() or "assertion failed", "failed"
            except SubmissionError as e:
                output, status = str(e), "error"
            except Exception as e:                # the grader's code choked on a reply: the check errs, as there
                output, status = f"the grader could not use what the submission returned: {type(e).__name__}: {e}", \
                    "error"
        points = check.points if status == "passed" else 0.0
        results[check.name] = CheckResult(check.name, check.description, check.points, points, status,
                                          output if isinstance(output, str) else "", time.perf_counter() - start,
                                          check.hidden)
    return results
