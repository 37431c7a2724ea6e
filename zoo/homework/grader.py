"""The autograder: grade one submission file against an assignment's checks.

**Who decides.** The submission (the student's filled-in ``starter.py``) is imported once, in a
worker subprocess (:mod:`zoo.homework._worker`). The checks run here, in the grader's process,
which never imports student code. A check is ``check(sub, ctx)``: it chooses its inputs, asks the
worker for *values* only (``sub.call("kl_normal", mu, log_sigma)`` calls a top-level function of
the submission; ``sub.probe("zoo.homework.<hw>.probes:name", ...)`` runs a public probe next to the
student's code, e.g. to trace a Pyro model or train it), validates what comes back (types,
shapes, finiteness: :func:`~zoo.homework.base.expect_tensor`) and decides the verdict with its
own code. Replies are plain data (JSON, tensors as dtype/shape/list), matched to their request
by id; a malformed, forged or out-of-turn reply fails the check, it cannot pass one.

**Secret inputs.** Every check's inputs come from a seed derived from the grade's seed, which is
drawn from :mod:`secrets` for each grade unless the instructor gives one (``--seed``, to regrade
reproducibly; it is recorded in ``--json``, never in Gradescope's output). Values hard-coded for
one run's inputs are wrong for the next.

**Failures cost one check.** A submission that does not import (a syntax error, an exception,
``os._exit`` or a hang at import time) loses every check's points, each with the same one-line
message; a check whose call raises loses its points with the exception's first line and the
submission's line; a check that runs past its time limit, or kills the worker, loses its points,
the worker is killed and a fresh one serves the next check. What a check computed and stored in
``ctx.cache`` (e.g. the trained networks' weights) survives that restart.

**Time limits are CPU time** of the worker (``/proc/PID/stat``: the worker's user + system time
and that of the children it waited for), so a busy machine does not fail a correct submission;
a wall-clock backstop of :data:`WALL_FACTOR` times the limit catches a submission that sleeps.
Where ``/proc`` is missing (not Linux) the limits are wall-clock time. **A grade has a total budget** of
wall-clock time, :data:`BUDGET_FACTOR` times the reference solution's grade time on this machine now
(``Assignment.reference_time`` in units of :func:`calibrate`, timed when the grade starts); past it the
remaining checks score 0 with one line.

**The protocol cannot hang or crash the grader.** Whatever comes back on the reply pipe (nothing, a closed
descriptor, garbage, binary, a partial or huge line) ends as the check's failure with one line: the reader
is linear and capped at :data:`MAX_REPLY` bytes and :data:`MAX_REPLY_VALUES` values (counted before parsing), and a worker whose reply channel closed is waited for at
most :data:`_EXIT_GRACE` seconds, then killed. The worker's environment is :func:`worker_environment`
(named variables only), never the grader's.

**Each worker runs in a sandbox** (:mod:`zoo.homework.sandbox`, bubblewrap): its own pid, user and network
namespaces, a read-only view of the system, the Python environment and the zoo (without the solutions),
and a private copy of only the submission; killing the sandbox ends everything in it. Where no sandbox
can be made, :func:`grade` refuses unless ``worker=WorkerSettings(sandbox=False)`` (``--unsafe-no-sandbox``), and then:

**Nothing is left behind.** On Linux the grader makes itself a child subreaper
(``prctl(PR_SET_CHILD_SUBREAPER)``), so a process the submission detaches (double fork +
``setsid``) is re-parented to the grader instead of escaping; when a worker ends, the grader kills
every process descended from it (by thread group: a process whose main thread exited while another
thread runs is alive), looping until none is left, before :func:`grade` returns (so
before any results file is written). ``as_user`` runs the worker as an unprivileged user (the
Gradescope bundle does; the grader must then run as root).

**Hidden checks** (``Check(hidden=True)``) are skipped unless the instructor switches them on
(``hidden=True`` here, ``--hidden`` on the command line, or in the Gradescope bundle). When
switched on they run and count; Gradescope shows them ``after_published``, every other check
``visible``. When off they are neither run nor listed, and the maximum score leaves them out.

Results: :func:`grade` returns a :class:`GradeResult`; :meth:`GradeResult.table` is the table
printed by ``pyro-zoo grade``, :meth:`GradeResult.to_json` our own schema (``--json``), and
:meth:`GradeResult.to_gradescope` Gradescope's autograder ``results.json`` (``--gradescope``).
The threat model (what is prevented, what is not) is in ``zoo/homework/INSTRUCTORS.md``.

Example::

    from zoo.homework.grader import grade
    result = grade("bernoulli_vae", "my_submission.py")
    print(result.table())
    print(result.score, "/", result.max_score)
"""
from __future__ import annotations

import ctypes
import hashlib
import importlib
import json
import math
import os
import platform
import random
import secrets
import select
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

from zoo.core.errors import ZooError
from zoo.homework import get_assignment
from zoo.homework import sandbox as _sandbox
from zoo.homework._worker import ProtocolError, decode, encode
from zoo.homework.base import Assignment, Check

__all__ = ["grade", "WorkerSettings", "GradeResult", "CheckResult", "CheckContext", "Submission", "SubmissionError",
           "find_submission", "with_points", "check_output_file", "write_results", "calibrate", "worker_environment",
           "IMPORT_TIMEOUT", "WALL_FACTOR", "BUDGET_FACTOR", "WORKER_ENVIRONMENT", "MAX_REPLY",
           "MAX_REPLY_VALUES", "MAX_REPLY_CONTAINERS"]

#: Seconds of CPU time a submission may take to import.
IMPORT_TIMEOUT = 60.0
#: The wall-clock backstop: a check (or the import) is stopped after this many times its CPU limit in wall time.
WALL_FACTOR = 10.0
#: Seconds the worker may take to start (Python itself) before the submission.
_START_TIMEOUT = 300.0
#: The longest message kept for one check (one line).
_MAX_MESSAGE = 300
#: The longest reply read from the worker (bytes): a bigger one fails the check, and the grader holds at most this
#: much of it. The largest reply of a reference solution is under 2 MiB (discrete_estimators).
MAX_REPLY = 16 * 2 ** 20
#: The most values (numbers, strings, lists, dicts) and containers (lists, dicts) a reply may hold, counted on its
#: bytes before it is parsed: parsing costs per value, not per byte (16 MiB of ``{}`` became 0.67 GB of dicts). A
#: reference solution's largest reply holds about 10^5 numbers in a handful of containers; at these bounds a reply
#: costs the grader at most about 100 MB however it is built.
MAX_REPLY_VALUES = 2 ** 19
MAX_REPLY_CONTAINERS = 2 ** 15
#: Seconds the grader waits for a worker whose reply channel closed to exit, before it kills it.
_EXIT_GRACE = 0.5
#: A grade's wall-clock budget, in multiples of the reference solution's own grade time on this machine (its
#: ``Assignment.reference_time`` times :func:`calibrate` now, so a loaded or slow machine gets a larger budget).
BUDGET_FACTOR = 10.0
#: Variables the worker takes from the grader's environment when they are set; nothing else is passed on.
WORKER_ENVIRONMENT = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "LD_LIBRARY_PATH", "HOME", "TMPDIR")
#: What :meth:`_Worker._read` returns past the time limits, and when the reply channel closed (no JSON value is
#: either, so no reply can be taken for them).
_TIMEOUT, _ENDED = object(), object()


@dataclass
class CheckResult:
    """The outcome of one check: ``status`` is passed, failed, error, timeout, crashed or import_error."""

    name: str
    description: str
    max_points: float
    points: float
    status: str
    message: str = ""
    seconds: float = 0.0
    hidden: bool = False

    @property
    def passed(self) -> bool:
        return self.status == "passed"


@dataclass
class GradeResult:
    """The grade of one submission."""

    assignment: str
    title: str
    submission: str
    checks: List[CheckResult]
    hidden_included: bool
    seed: int
    seconds: float = 0.0

    @property
    def score(self) -> float:
        return float(sum(c.points for c in self.checks))

    @property
    def max_score(self) -> float:
        return float(sum(c.max_points for c in self.checks))

    def table(self) -> str:
        """The grade table: one row per check, with a one-line reason for each failure."""
        width = max([len(c.name) for c in self.checks] + [5])
        lines = [f"{self.title} ({self.assignment}): {Path(self.submission).name}",
                 f"{'check'.ljust(width)}  {'points':>11}  result"]
        for c in self.checks:
            mark = "ok" if c.passed else c.status.upper()
            note = f" {c.message}" if c.message else ""
            tag = " [hidden]" if c.hidden else ""
            lines.append(f"{c.name.ljust(width)}  {_num(c.points):>5} / {_num(c.max_points):<4} {mark}{tag}:{note}"
                         if note else f"{c.name.ljust(width)}  {_num(c.points):>5} / {_num(c.max_points):<4} {mark}{tag}")
        lines.append(f"{'total'.ljust(width)}  {_num(self.score):>5} / {_num(self.max_score):<4} "
                     f"({self.seconds:.1f} s)")
        return "\n".join(lines)

    def to_json(self) -> Dict:
        """Our own schema (``pyro-zoo grade --json``); documented in ``zoo/homework/INSTRUCTORS.md``."""
        import zoo
        return {"assignment": self.assignment, "title": self.title, "submission": str(self.submission),
                "score": self.score, "max_score": self.max_score, "hidden_included": self.hidden_included,
                "seed": self.seed, "seconds": round(self.seconds, 3),
                "checks": [{**asdict(c), "passed": c.passed, "seconds": round(c.seconds, 3)} for c in self.checks],
                "grader": {"pyro_zoo": zoo.__version__, "python": platform.python_version()}}

    def to_gradescope(self) -> Dict:
        """Gradescope's autograder ``results.json``: hidden checks are ``after_published``."""
        tests = []
        for number, c in enumerate(self.checks, 1):
            output = c.description if c.passed and not c.message else \
                f"{c.description}\n{'passed' if c.passed else 'failed'}: {c.message}"
            tests.append({"name": c.name, "number": str(number), "score": c.points, "max_score": c.max_points,
                          "output": output, "visibility": "after_published" if c.hidden else "visible"})
        return {"score": self.score, "execution_time": round(self.seconds, 1),
                "output": f"{self.title}: {_num(self.score)} / {_num(self.max_score)} points",
                "visibility": "visible", "stdout_visibility": "hidden", "tests": tests}


def _num(x: float) -> str:
    return f"{x:g}"


def with_points(assignment: Assignment, points: Optional[Mapping[str, float]]) -> Assignment:
    """The assignment with some checks' points changed (``--points name=value,...``)."""
    if not points:
        return assignment
    names = [c.name for c in assignment.checks]
    for name, value in points.items():
        if name not in names:
            from zoo.core.errors import unknown_name
            raise unknown_name("check", name, names, of=assignment.name)
        if not value >= 0:
            raise ZooError(f"points of {name} must be >= 0, got {value}")
    return replace(assignment, checks=tuple(replace(c, points=float(points[c.name])) if c.name in points else c
                                            for c in assignment.checks))


def find_submission(path: Union[str, Path]) -> Path:
    """The submission file: ``path`` itself, or the one ``.py`` file in the folder ``path``.

    In a folder (Gradescope puts uploads in ``/autograder/submission/``) ``selfcheck.py`` is
    ignored; if several ``.py`` files remain, ``starter.py`` is taken when present.
    """
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.glob("*.py") if p.name != "selfcheck.py")
        if len(files) == 1:
            return files[0]
        if any(p.name == "starter.py" for p in files):
            return path / "starter.py"
        found = ", ".join(p.name for p in files) or "none"
        raise ZooError(f"{path} should hold one .py submission (or a starter.py), found: {found}")
    if not path.is_file():
        raise ZooError(f"no submission file {path}: give the student's .py file (their filled-in starter.py)")
    if path.suffix != ".py":
        raise ZooError(f"the submission {path} is not a .py file")
    return path


# -- what a check sees ---------------------------------------------------------------------------------
class SubmissionError(Exception):
    """The submission's function raised (or returned something the wire format cannot carry): the check errs."""


class _WorkerTrouble(Exception):
    """The worker cannot go on (timeout, death, a forged or garbled reply): the check gets ``status``, the
    worker is replaced."""

    def __init__(self, status: str, message: str):
        super().__init__(message)
        self.status = status


@dataclass
class CheckContext:
    """What a check gets besides the submission: its ``seed`` (its inputs are drawn from it; torch's global
    RNG is seeded with it while the check runs) and ``cache``, a dict shared by the checks of one grade and
    kept across worker restarts (e.g. trained weights that a later check reuses)."""

    seed: int
    cache: Dict[str, Any] = field(default_factory=dict)


class Submission:
    """The grader's handle on the submission's worker, for one check: it asks for values, never verdicts.

    :meth:`call` and :meth:`probe` return the decoded reply (tensors, numbers, strings, lists, dicts) or
    raise :class:`SubmissionError` when the submission raised. The check's CPU-time limit covers all its
    requests together."""

    def __init__(self, session: "_Session", seed: int, limit: float):
        self._session, self._random, self._limit = session, random.Random(seed), limit
        self._cpu_used, self._wall_used = 0.0, 0.0

    def call(self, function: str, *args):
        """``submission.function(*args)`` in the worker; the arguments are data the grader chose."""
        return self._request({"call": function}, args)

    def probe(self, probe: str, *args):
        """``probe(submission, *args)`` in the worker, ``probe`` being ``"zoo.homework.<hw>.probes:name"``."""
        return self._request({"probe": probe}, args)

    def restart(self) -> None:
        """Replace the worker by a fresh one that imports the submission again: nothing the old one held (in its
        memory, or in its sandbox's files) reaches the new one. A check replays requests after it, to see that the
        answers depend on their inputs and seeds only."""
        self._session.stop()
        failure = self._session.start()
        if failure is not None:
            raise _WorkerTrouble("crashed", f"the submission's fresh process did not start: {failure}")

    def _request(self, target: Dict, args) -> Any:
        worker = self._session.worker
        if worker is None:
            raise _WorkerTrouble("crashed", "the grader's worker process is gone")
        request_id = self._session.next_id()
        request = {"id": request_id, "seed": self._random.randrange(2 ** 31), **target, "args": encode(list(args))}
        wall_left = min(WALL_FACTOR * self._limit - self._wall_used, self._session.deadline - time.monotonic())
        reply, used_cpu, used_wall = worker.request(request, self._limit - self._cpu_used, wall_left)
        self._cpu_used += used_cpu
        self._wall_used += used_wall
        if not isinstance(reply, dict) or type(reply.get("id")) is not int or reply["id"] != request_id or \
                not ({"value"} == set(reply) - {"id"} or {"error"} == set(reply) - {"id"}):
            raise _WorkerTrouble("failed", "the submission's process sent a reply that does not answer the "
                                           "grader's request (forged or garbled)")
        if "error" in reply:
            raise SubmissionError(str(reply["error"]))
        try:
            return decode(reply["value"])
        except ProtocolError as e:
            raise _WorkerTrouble("failed", f"the submission's process sent {e} instead of a value") from None
        except Exception as e:                   # e.g. a number torch cannot hold
            raise _WorkerTrouble("failed", f"the submission's process sent a value the grader cannot read "
                                           f"({type(e).__name__})") from None


# -- grading -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class WorkerSettings:
    """How :func:`grade`'s worker process runs the submission.

    Arguments:
        threads: torch's CPU threads in the worker.
        import_timeout: CPU seconds the submission may take to import.
        as_user: run the worker as this (unprivileged) user; the grader must be root.
        sandbox: run the worker in a bubblewrap sandbox (:mod:`zoo.homework.sandbox`); where none can be made,
            grading is refused unless this is False (``--unsafe-no-sandbox``).
    """
    threads: int = 1
    import_timeout: float = IMPORT_TIMEOUT
    as_user: Optional[str] = None
    sandbox: bool = True


def grade(assignment: Union[str, Assignment], submission: Union[str, Path], *, hidden: bool = False,
          seed: Optional[int] = None, timeout_scale: float = 1.0, only: Optional[Sequence[str]] = None,
          budget: Optional[float] = None, worker: WorkerSettings = WorkerSettings()) -> GradeResult:
    """Grade ``submission`` (a .py file, or a folder holding one) on ``assignment``.

    Arguments:
        assignment: a name from :data:`zoo.homework.ASSIGNMENTS` or an :class:`Assignment`.
        submission: the student's file.
        hidden: run the hidden checks too (and count them).
        seed: the seed the checks' inputs are drawn from; ``None`` (the default) draws a secret one.
        timeout_scale: multiplies every check's time limit (a slow grading machine).
        only: grade only these checks (by name).
        budget: wall-clock seconds for the whole grade, after which the remaining checks score 0; ``None`` (the
            default) is :data:`BUDGET_FACTOR` times the reference solution's grade time on this machine now
            (``assignment.reference_time`` times :func:`calibrate`, times ``timeout_scale``), and no budget for an
            assignment that records no reference time.
        worker: how the submission's process runs (:class:`WorkerSettings`: threads, import time, user, sandbox).
    """
    hw = get_assignment(assignment) if isinstance(assignment, str) else assignment
    path = find_submission(submission).resolve()
    if timeout_scale <= 0:
        raise ZooError(f"timeout_scale must be > 0, got {timeout_scale}")
    if seed is None:
        seed = secrets.randbits(63)
    elif not 0 <= seed < 2 ** 63:
        raise ZooError(f"--seed must be between 0 and 2**63 - 1, got {seed}")
    checks = [c for c in hw.checks if hidden or not c.hidden]
    if only is not None:
        unknown = sorted(set(only) - {c.name for c in hw.checks})
        if unknown:
            from zoo.core.errors import unknown_name
            raise unknown_name("check", unknown[0], [c.name for c in hw.checks], of=hw.name)
        checks = [c for c in checks if c.name in set(only)]
    if worker.sandbox and _sandbox.refusal() is not None:
        raise ZooError(f"cannot grade in a sandbox: {_sandbox.refusal()}; pass --unsafe-no-sandbox to grade without "
                       f"one (the submission then runs as you, beside your files: see INSTRUCTORS.md)")
    if budget is None and hw.reference_time is not None:
        budget = BUDGET_FACTOR * hw.reference_time * calibrate() * timeout_scale
    if budget is not None and not budget > 0:
        raise ZooError(f"the grade's budget must be > 0 seconds, got {budget}")
    start = time.perf_counter()
    results: List[CheckResult] = []
    deadline = time.monotonic() + budget if budget is not None else math.inf
    cpu_total = worker.import_timeout + sum(c.timeout for c in checks) * timeout_scale
    session = _Session(path, worker.threads, worker.import_timeout, worker.as_user, deadline, worker.sandbox, cpu_total)
    cache: Dict[str, Any] = {}
    import_failure: Optional[str] = None
    spent = f"not run: the grade's time budget of {budget or 0:.0f} s (wall clock) was spent on the checks before it"
    try:
        for check in checks:
            if time.monotonic() >= deadline:
                results.append(_result(check, "timeout", spent))
                continue
            if import_failure is None and session.worker is None:
                import_failure = session.start()
            if import_failure is not None:
                results.append(_result(check, "import_error", import_failure))
                continue
            results.append(_run_check(check, session, _derive(seed, check.name), cache, timeout_scale))
    finally:
        session.close()                          # the worker and everything it left behind are gone
    return GradeResult(hw.name, hw.title, str(path), results, hidden, seed, time.perf_counter() - start)


def _derive(seed: int, name: str) -> int:
    """A check's own seed: its inputs do not depend on which checks ran before it."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{name}".encode()).digest()[:8], "little") >> 1


def _run_check(check: Check, session: "_Session", seed: int, cache: Dict, timeout_scale: float) -> CheckResult:
    limit = check.timeout * timeout_scale
    module_name, _, name = check.function.partition(":")
    try:
        function = getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError) as e:
        return _result(check, "error", f"the grader cannot find its check {check.function}: {e}")
    sub = Submission(session, seed, limit)
    start = time.perf_counter()
    torch = sys.modules.get("torch")
    try:
        if torch is not None:                    # the check's own draws, reproducible, the caller's RNG left alone
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                output = function(sub, CheckContext(seed, cache))
        else:
            output = function(sub, CheckContext(seed, cache))
    except AssertionError as e:
        return _result(check, "failed", str(e).strip() or "assertion failed", time.perf_counter() - start)
    except SubmissionError as e:
        return _result(check, "error", str(e), time.perf_counter() - start)
    except _WorkerTrouble as e:
        session.stop()
        message = str(e)
        if e.status == "timeout":
            message = (f"stopped when the grade's time budget of {session.budget:.0f} s (wall clock) ran out"
                       if time.monotonic() >= session.deadline else
                       f"took longer than its {limit:g} s time limit (CPU time; an infinite loop?)")
        return _result(check, e.status, message, time.perf_counter() - start)
    except Exception as e:                       # the grader's own code choked on a value: the check fails
        return _result(check, "error", f"the grader could not use what the submission returned: "
                                       f"{type(e).__name__}: {e}", time.perf_counter() - start)
    return _result(check, "passed", seconds=time.perf_counter() - start, output="" if output is None else str(output))


def _result(check: Check, status: str, message: str = "", seconds: float = 0.0, output: str = "") -> CheckResult:
    passed = status == "passed"
    return CheckResult(check.name, check.description, float(check.points), float(check.points) if passed else 0.0,
                       status, _one_line(output if passed else message), seconds, check.hidden)


def _one_line(text: str) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= _MAX_MESSAGE else text[:_MAX_MESSAGE - 3] + "..."


# -- processes -----------------------------------------------------------------------------------------
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
#: The workers this process started and has not yet ended (every thread's): never taken for strays.
_LIVE_WORKERS: set = set()
_LOCK = threading.Lock()
_SUBREAPER = False


def _become_subreaper() -> None:
    """On Linux, adopt orphaned descendants (PR_SET_CHILD_SUBREAPER = 36), so a detached process cannot escape."""
    global _SUBREAPER
    if _SUBREAPER or not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        _SUBREAPER = libc.prctl(36, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):
        pass


def _stat(pid: int) -> Optional[List[str]]:
    """The fields of /proc/PID/stat after the command name (field 3 onwards), or None."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2:].split()


def _cpu_seconds(pid: int) -> Optional[float]:
    """User + system CPU seconds of ``pid`` and of the children it waited for; None without /proc."""
    fields = _stat(pid)
    return None if fields is None else sum(int(f) for f in fields[11:15]) / _CLOCK_TICKS


def _alive(pid: int) -> bool:
    """Whether any thread of ``pid``'s thread group still runs: a leader that exited (state Z) while another
    thread runs on is alive, and a signal to the leader's pid reaches the whole group."""
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return False
    for task in tasks:
        try:
            text = Path(f"/proc/{pid}/task/{task}/stat").read_text()
        except OSError:
            continue
        if text[text.rindex(")") + 2:][:1] not in ("Z", "X"):
            return True
    return False


def _tree_cpu_seconds(root: int) -> Optional[float]:
    """User + system CPU seconds of ``root`` and every live descendant, each with the children it waited for.

    The tree is walked through ``/proc/PID/task/TID/children`` (a few files for a worker's tree; a scan of all of
    ``/proc`` costs ~10 ms on a busy machine, and the grader asks before each request); without those files, all
    of ``/proc`` is scanned."""
    if _stat(root) is None:
        return None
    total, stack, seen = 0, [root], set()
    while stack:
        pid = stack.pop()
        if pid in seen:
            continue
        seen.add(pid)
        fields = _stat(pid)
        if fields is None:
            continue
        total += sum(int(f) for f in fields[11:15])
        try:
            tasks = os.listdir(f"/proc/{pid}/task")
            children = [int(c) for t in tasks for c in Path(f"/proc/{pid}/task/{t}/children").read_text().split()]
        except FileNotFoundError:
            return _tree_cpu_seconds_by_scan(root)
        except OSError:
            continue
        stack.extend(children)
    return total / _CLOCK_TICKS


def _tree_cpu_seconds_by_scan(root: int) -> Optional[float]:
    """:func:`_tree_cpu_seconds` from a scan of every process in ``/proc`` (kernels without ``children`` files)."""
    table = _processes()
    children: Dict[int, List[int]] = {}
    for pid, fields in table.items():
        children.setdefault(int(fields[1]), []).append(pid)
    total, stack = 0, [root]
    while stack:
        pid = stack.pop()
        if pid in table:
            total += sum(int(f) for f in table[pid][11:15])
        stack.extend(children.get(pid, []))
    return total / _CLOCK_TICKS


def _processes() -> Dict[int, List[str]]:
    found = {}
    for entry in os.listdir("/proc") if os.path.isdir("/proc") else ():
        if entry.isdigit():
            fields = _stat(int(entry))
            if fields is not None:
                found[int(entry)] = fields
    return found


def _kill_leftovers(root: int, since_ticks: int) -> None:
    """SIGKILL every descendant of ``root``, and every orphan re-parented to this process (we are its
    subreaper) that started after ``since_ticks`` and is not a live worker, looping until none is left."""
    me = os.getpid()
    for _ in range(100):
        table = _processes()
        children: Dict[int, List[int]] = {}
        for pid, fields in table.items():
            children.setdefault(int(fields[1]), []).append(pid)
        with _LOCK:
            live = set(_LIVE_WORKERS)
        strays = [pid for pid in children.get(me, []) if pid not in live and int(table[pid][19]) >= since_ticks
                  and _alive(pid)]
        targets, stack = set(), [root, *strays]
        while stack:
            pid = stack.pop()
            for child in children.get(pid, []):
                if child not in targets and child not in live:
                    targets.add(child)
                    stack.append(child)
        targets |= set(strays)
        targets = {p for p in targets if _alive(p)}
        for pid in targets:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        for pid in children.get(me, []):          # reap the orphans we adopted (never a live worker: Popen reaps those)
            if pid not in live:
                try:
                    os.waitpid(pid, os.WNOHANG)
                except ChildProcessError:
                    pass
        if not targets:
            return
        time.sleep(0.02)


class _Session:
    """The worker of one grade: started on demand, replaced after a timeout or crash, and at the end killed
    with everything it left behind."""

    def __init__(self, path: Path, threads: int, import_timeout: float, as_user: Optional[str], deadline: float,
                 sandbox: bool, cpu_total: float):
        self.path, self.threads, self.import_timeout, self.as_user = path, threads, import_timeout, as_user
        self.sandbox, self.cpu_total = sandbox, cpu_total
        self.deadline, self.budget = deadline, deadline - time.monotonic()
        self.worker: Optional[_Worker] = None
        self._ids = 0

    def next_id(self) -> int:
        self._ids += 1
        return self._ids

    def start(self) -> Optional[str]:
        """Start a worker that imported the submission; the reason why not, or None."""
        _become_subreaper()
        self.worker, failure = _Worker.start(self, self.deadline)
        return failure

    def stop(self) -> None:
        if self.worker is not None:
            self.worker.kill()
            self.worker = None

    def close(self) -> None:
        if self.worker is not None:
            self.worker.close()
            self.worker = None


class _Worker:
    """A subprocess that imported the submission and answers requests (JSON lines).

    Requests go in on its stdin; replies come back on a pipe of their own; its stdout and stderr are
    discarded (a print loop cannot fill a disk)."""

    def __init__(self, proc: subprocess.Popen, reply_fd: int, started_ticks: int,
                 memory: Optional[_sandbox.MemoryCgroup] = None):
        self.proc, self.reply_fd, self.started_ticks, self.memory = proc, reply_fd, started_ticks, memory
        self._buffer, self._scanned = bytearray(), 0

    @classmethod
    def start(cls, session: "_Session", deadline: float):
        path, threads, import_timeout, as_user = session.path, session.threads, session.import_timeout, session.as_user
        read_fd, write_fd = os.pipe()
        user = {}
        home = None
        if as_user is not None:
            import pwd
            try:
                entry = pwd.getpwnam(as_user)
            except KeyError:
                raise ZooError(f"no user {as_user!r} to run the submission as; create it (see INSTRUCTORS.md)") \
                    from None
            user = {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}
            home = "/tmp"
        env = worker_environment(threads, as_user, "/tmp" if session.sandbox else home)
        command = [sys.executable, str(Path(__file__).with_name("_worker.py")), str(path), str(write_fd)]
        fds, cwd = [write_fd], str(path.parent)
        if session.sandbox:
            source = os.memfd_create("submission")      # bwrap copies it into the sandbox's private folder
            os.write(source, path.read_bytes())
            os.lseek(source, 0, os.SEEK_SET)
            limits = {**_sandbox.LIMITS, "RLIMIT_CPU": int(session.cpu_total) + 60}
            env["PYRO_ZOO_WORKER_LIMITS"] = json.dumps(limits)
            command, env, cwd = _sandbox.command(command, path, source, env), {"PATH": os.defpath}, "/"
            fds.append(source)
            memory = _sandbox.MemoryCgroup.create(_sandbox.MEMORY_BYTES)
            if memory is not None:                      # the sandbox starts once it is in its cgroup
                command = memory.held(command)
        else:
            memory = None
        uptime = _uptime_ticks()
        with _LOCK:
            try:
                proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL, pass_fds=tuple(fds), env=env,
                                        cwd=cwd, start_new_session=True, **user)
            except OSError as e:
                for fd in [read_fd, *fds]:
                    os.close(fd)
                if memory is not None:
                    memory.remove()
                who = f" as {as_user}" if as_user else ""
                raise ZooError(f"cannot start the grader's worker{who}: {e.strerror or e} "
                               f"({e.filename or sys.executable}); it must be able to run {sys.executable} and "
                               f"read {path}") from None
            _LIVE_WORKERS.add(proc.pid)
        for fd in fds:
            os.close(fd)
        if memory is not None:
            memory.admit(proc)
        worker = cls(proc, read_fd, uptime, memory)
        try:
            failure = worker._handshake(import_timeout, deadline)
        except _WorkerTrouble as e:
            failure = f"the submission does not import: {e}"
        if failure is not None:
            worker.kill()
            return None, failure
        return worker, None

    def _handshake(self, import_timeout: float, deadline: float) -> Optional[str]:
        """Wait for the worker to start and to import the submission: None, or why it did not."""
        wall = lambda limit: max(0.0, min(limit, deadline - time.monotonic()))
        reply, _, _ = self._read(_START_TIMEOUT, wall(_START_TIMEOUT), cpu=False)
        if not isinstance(reply, dict) or reply.get("started") is not True:
            return "the grader's worker did not start"
        reply, _, _ = self._read(import_timeout, wall(WALL_FACTOR * import_timeout))
        if reply is _TIMEOUT:
            if time.monotonic() >= deadline:
                return "the submission did not finish importing within the grade's time budget"
            return f"the submission did not finish importing within {import_timeout:g} s"
        if reply is _ENDED:
            code = self._exit_code()
            if self._out_of_memory():
                return f"the submission does not import: {self._out_of_memory()}"
            return ("the submission does not import: its process closed the grader's reply channel while importing"
                    if code is None else
                    f"the submission does not import: the process exited with code {code} while importing it")
        if not isinstance(reply, dict) or \
                not (reply.get("ready") is True or isinstance(reply.get("import_error"), str)):
            return "the submission does not import: its process sent a garbled message while importing"
        if "import_error" in reply:
            return f"the submission does not import: {reply['import_error']}"
        return None

    def request(self, request: Dict, cpu_left: float, wall_left: float):
        """Send ``request``; (the reply, CPU seconds used, wall seconds used). Raises
        :class:`_WorkerTrouble` on a timeout, a dead worker or an unreadable reply."""
        try:
            self.proc.stdin.write((json.dumps(request) + "\n").encode())
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            raise _WorkerTrouble("crashed", "the grader's worker process died before this check") from None
        reply, cpu, wall = self._read(cpu_left, wall_left)
        if reply is _TIMEOUT:
            raise _WorkerTrouble("timeout", "time limit")
        if reply is _ENDED:
            code = self._exit_code()
            if self._out_of_memory():
                raise _WorkerTrouble("crashed", self._out_of_memory())
            raise _WorkerTrouble("crashed", "the process running the check closed the grader's reply channel"
                                 if code is None else f"the process running the check exited with code {code} "
                                                      f"(os._exit, sys.exit or a crash in the submission?)")
        return reply, cpu, wall

    def _out_of_memory(self) -> str:
        """Why the worker ended when its sandbox ran out of memory ("" otherwise)."""
        if self.memory is None or not self.memory.out_of_memory():
            return ""
        return (f"it ran out of memory (the sandbox's limit is {self.memory.limit >> 20} MiB, its files in /tmp and "
                f"/dev/shm included)")

    def _exit_code(self) -> Optional[int]:
        """The worker's exit code once its reply channel closed, or None if it lives on after
        :data:`_EXIT_GRACE` seconds (the caller then kills it: the grader never waits without a limit)."""
        try:
            return self.proc.wait(timeout=_EXIT_GRACE)
        except subprocess.TimeoutExpired:
            return None

    def _read(self, cpu_left: float, wall_left: float, cpu: bool = True):
        """(the next reply, CPU seconds, wall seconds): the reply is :data:`_TIMEOUT` past the limits,
        :data:`_ENDED` when the channel closed; a line that is not JSON, or one over :data:`MAX_REPLY` bytes,
        is a :class:`_WorkerTrouble`. Each byte is scanned for the newline once (the buffer grows in place)."""
        start_wall = time.monotonic()
        start_cpu = self.cpu_seconds() if cpu else None
        used_cpu = lambda: (self.cpu_seconds() or start_cpu) - start_cpu if start_cpu is not None \
            else time.monotonic() - start_wall
        next_look = start_wall                   # the CPU time (a scan of /proc) is looked at 10 times a second
        while True:
            end = self._buffer.find(b"\n", self._scanned)
            if end >= 0:
                break
            self._scanned = len(self._buffer)
            if time.monotonic() >= next_look:
                next_look = time.monotonic() + 0.1
                if used_cpu() > cpu_left or time.monotonic() - start_wall > wall_left:
                    return _TIMEOUT, used_cpu(), time.monotonic() - start_wall
            ready, _, _ = select.select([self.reply_fd], [], [], 0.1)
            if not ready:
                continue
            chunk = os.read(self.reply_fd, 1 << 20)
            if not chunk:
                return _ENDED, used_cpu(), time.monotonic() - start_wall
            if len(self._buffer) + len(chunk) > MAX_REPLY:
                raise _WorkerTrouble("failed", f"the submission's process sent a reply over {MAX_REPLY >> 20} MiB, "
                                               f"the most the grader reads")
            self._buffer += chunk
        self._scanned = 0
        _check_reply_size(self._buffer, end)     # counted in place, before the line is copied out
        line = bytes(self._buffer[:end])
        del self._buffer[:end + 1]
        spent = used_cpu(), time.monotonic() - start_wall
        try:
            return json.loads(line), *spent
        except Exception:                        # not JSON, not UTF-8, nested past the parser's depth, too big
            raise _WorkerTrouble("failed", "the submission's process sent a line that is not a reply "
                                           "(forged or garbled)") from None

    def cpu_seconds(self) -> Optional[float]:
        """CPU seconds of the worker's whole process tree (the sandbox and everything in it, and the children
        they waited for); None without /proc."""
        return _tree_cpu_seconds(self.proc.pid)

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        with _LOCK:
            _LIVE_WORKERS.discard(self.proc.pid)
        _kill_leftovers(self.proc.pid, self.started_ticks)
        if self.memory is not None:
            self.memory.remove()
        self._cleanup()

    def close(self):
        try:
            self.proc.stdin.close()
            self.proc.wait(timeout=2)
        except (subprocess.TimeoutExpired, OSError):
            pass
        self.kill()

    def _cleanup(self):
        for closer in (lambda: os.close(self.reply_fd), lambda: self.proc.stdin and self.proc.stdin.close()):
            try:
                closer()
            except OSError:
                pass


def _check_reply_size(line: Union[bytes, bytearray], end: Optional[int] = None) -> None:
    """Refuse, before parsing, a reply with more values or containers than :data:`MAX_REPLY_VALUES` and
    :data:`MAX_REPLY_CONTAINERS` (a :class:`_WorkerTrouble`). Every value but the last is followed by a comma and
    every container opens with a bracket; those inside strings count too, which only over-counts."""
    end = len(line) if end is None else end
    containers = line.count(b"{", 0, end) + line.count(b"[", 0, end)
    values = line.count(b",", 0, end) + containers + 1
    if containers > MAX_REPLY_CONTAINERS or values > MAX_REPLY_VALUES:
        raise _WorkerTrouble("failed", f"the submission's process sent a reply of {values} values in {containers} "
                                       f"lists or dicts, over the {MAX_REPLY_VALUES} values in "
                                       f"{MAX_REPLY_CONTAINERS} the grader parses")


def worker_environment(threads: int, as_user: Optional[str] = None, home: Optional[str] = None) -> Dict[str, str]:
    """The worker's whole environment: the grader's :data:`WORKER_ENVIRONMENT` variables, the thread settings and
    what the zoo needs (this zoo on ``PYTHONPATH``, with the folders of its requirements that are not the
    interpreter's own; no bytecode, no downloads, no display). Nothing else of the grader's environment (an
    instructor's token, a secret) reaches the submission."""
    env = {name: os.environ[name] for name in WORKER_ENVIRONMENT if name in os.environ}
    env.setdefault("PATH", os.defpath)
    env.setdefault("LANG", "C.UTF-8")
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[name] = str(threads)
    # the worker must import this same zoo (a checkout run with `python -m zoo`, not an installed one), and its
    # requirements where they are not in the interpreter's own site-packages; not the rest of the grader's sys.path
    path = [str(Path(__file__).resolve().parents[2]), *_sandbox.python_path()]
    env.update(PYTHONPATH=os.pathsep.join(path), PYTHONDONTWRITEBYTECODE="1",
               PYRO_ZOO_OFFLINE="1", MPLBACKEND="Agg")
    if as_user is not None:
        env.pop("TMPDIR", None)
        env.update(HOME=home or "/tmp", USER=as_user, LOGNAME=as_user)
    return env


def calibrate() -> float:
    """Wall seconds this machine takes now for a fixed piece of pure-Python work (about 0.1 s on an idle
    2020s core): the unit of ``Assignment.reference_time``, so a grade's budget follows the machine's speed
    and load at grade time."""
    start = time.perf_counter()
    total = 0
    for i in range(1_000_000):
        total += i * i % 7
    return time.perf_counter() - start


def _uptime_ticks() -> int:
    """Now, in the clock ticks since boot that /proc/PID/stat's start time uses (0 without /proc)."""
    try:
        return int(float(Path("/proc/uptime").read_text().split()[0]) * _CLOCK_TICKS) - 1
    except (OSError, ValueError, IndexError):
        return 0


# -- results files -------------------------------------------------------------------------------------
def check_output_file(path: Union[str, Path]) -> Path:
    """Refuse, before any grading, a results file that could not be written: a folder, a path under a
    file, a missing folder, or a folder this user cannot create files in (tried with a temporary file)."""
    import tempfile
    path = Path(path)
    if path.is_dir():
        raise ZooError(f"{path} is a folder; give a file name for the results")
    parent = path.absolute().parent
    for ancestor in (parent, *parent.parents):
        if ancestor.exists():
            if not ancestor.is_dir():
                raise ZooError(f"cannot write {path}: {ancestor} is a file, not a folder")
            break
    if not parent.is_dir():
        raise ZooError(f"no folder {parent} for {path}; create it first")
    try:
        with tempfile.NamedTemporaryFile(dir=parent, prefix=f".{path.name}.", suffix=".tmp"):
            pass
    except OSError as e:
        raise ZooError(f"cannot write {path}: the folder {parent} takes no new file ({e.strerror or e}); "
                       f"give a writable place") from None
    return path


def write_results(path: Union[str, Path], data: Dict) -> None:
    """Write ``data`` as JSON to ``path`` atomically (a temporary file beside it, then renamed over it)."""
    import tempfile
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.absolute().parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(data, indent=2) + "\n")
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
