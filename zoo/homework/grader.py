"""The autograder: grade one submission file against an assignment's checks.

The submission (the student's filled-in ``starter.py``) is imported **once**, in one worker
subprocess, which then runs the checks one after another, each called as
``function(submission_module)`` (see :class:`~zoo.homework.base.Check`). The parent process
never imports student code, so nothing a submission does can crash the grader:

- a submission that does not import (a syntax error, an exception, ``os._exit`` or a hang at
  import time) loses every check's points, each with the same one-line message;
- a check that raises loses its points with the exception's first line (``AssertionError``
  is the check's own reason; anything else is shown with its type and the submission's line);
- a check that runs past its ``timeout``, or kills the worker (``os._exit``, a segfault, running
  out of memory), loses its points; the parent kills the worker, starts a fresh one (the
  submission imported again) and goes on with the remaining checks.

Before each check the worker seeds ``random``, NumPy, torch and Pyro with the grader's seed
and clears Pyro's param store, so every check sees the same state whatever ran before it.
The worker uses one CPU thread by default (``threads``), so grades are reproducible and
several can run side by side.

**Hidden checks** (``Check(hidden=True)``) are skipped unless the instructor switches them on
(``hidden=True`` here, ``--hidden`` on the command line, or in the Gradescope bundle). When
switched on they run and count; Gradescope shows them ``after_published``, every other check
``visible``. When off they are neither run nor listed, and the maximum score leaves them out.

Results: :func:`grade` returns a :class:`GradeResult`; :meth:`GradeResult.table` is the table
printed by ``pyro-zoo grade``, :meth:`GradeResult.to_json` our own schema (``--json``), and
:meth:`GradeResult.to_gradescope` Gradescope's autograder ``results.json`` (``--gradescope``).

Example::

    from zoo.homework.grader import grade
    result = grade("bernoulli_vae", "my_submission.py")
    print(result.table())
    print(result.score, "/", result.max_score)
"""
from __future__ import annotations

import json
import os
import platform
import select
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Union

from zoo.core.errors import ZooError
from zoo.homework import get_assignment
from zoo.homework.base import Assignment, Check

__all__ = ["grade", "GradeResult", "CheckResult", "find_submission", "with_points", "DEFAULT_SEED",
           "IMPORT_TIMEOUT"]

#: The seed every check starts from (``--seed`` changes it).
DEFAULT_SEED = 0
#: Seconds a submission may take to import.
IMPORT_TIMEOUT = 60.0
#: Seconds the worker may take to start (import torch, Pyro and the zoo) before the submission.
_START_TIMEOUT = 300.0
#: The longest message kept for one check (one line).
_MAX_MESSAGE = 300


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
            raise unknown_name(f"check of {assignment.name}", name, names)
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


def grade(assignment: Union[str, Assignment], submission: Union[str, Path], *, hidden: bool = False,
          seed: int = DEFAULT_SEED, timeout_scale: float = 1.0, threads: int = 1,
          only: Optional[Sequence[str]] = None, import_timeout: float = IMPORT_TIMEOUT) -> GradeResult:
    """Grade ``submission`` (a .py file, or a folder holding one) on ``assignment``.

    Arguments:
        assignment: a name from :data:`zoo.homework.ASSIGNMENTS` or an :class:`Assignment`.
        submission: the student's file.
        hidden: run the hidden checks too (and count them).
        seed: the seed each check starts from.
        timeout_scale: multiplies every check's time limit (a slow grading machine).
        threads: torch's CPU threads in the worker.
        only: grade only these checks (by name).
        import_timeout: seconds the submission may take to import.
    """
    hw = get_assignment(assignment) if isinstance(assignment, str) else assignment
    path = find_submission(submission).resolve()
    if timeout_scale <= 0:
        raise ZooError(f"timeout_scale must be > 0, got {timeout_scale}")
    checks = [c for c in hw.checks if hidden or not c.hidden]
    if only is not None:
        unknown = sorted(set(only) - {c.name for c in hw.checks})
        if unknown:
            from zoo.core.errors import unknown_name
            raise unknown_name(f"check of {hw.name}", unknown[0], [c.name for c in hw.checks])
        checks = [c for c in checks if c.name in set(only)]
    start = time.perf_counter()
    results: List[CheckResult] = []
    worker: Optional[_Worker] = None
    import_failure: Optional[str] = None
    try:
        for check in checks:
            if import_failure is not None:
                results.append(_result(check, "import_error", import_failure))
                continue
            if worker is None:
                worker, import_failure = _Worker.start(path, seed, threads, import_timeout)
                if import_failure is not None:
                    results.append(_result(check, "import_error", import_failure))
                    continue
            result, alive = worker.run(check, check.timeout * timeout_scale)
            results.append(result)
            if not alive:
                worker.kill()
                worker = None
    finally:
        if worker is not None:
            worker.close()
    return GradeResult(hw.name, hw.title, str(path), results, hidden, seed, time.perf_counter() - start)


def _result(check: Check, status: str, message: str = "", seconds: float = 0.0, output: str = "") -> CheckResult:
    passed = status == "passed"
    return CheckResult(check.name, check.description, float(check.points), float(check.points) if passed else 0.0,
                       status, _one_line(output if passed else message), seconds, check.hidden)


def _one_line(text: str) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= _MAX_MESSAGE else text[:_MAX_MESSAGE - 3] + "..."


class _Worker:
    """A subprocess that imported the submission and runs checks on request (JSON lines).

    Requests go in on its stdin; replies come back on a pipe of their own, so whatever the
    submission prints cannot garble them (its output is discarded: a print loop cannot fill a disk).
    """

    def __init__(self, proc: subprocess.Popen, reply_fd: int):
        self.proc, self.reply_fd = proc, reply_fd
        self._buffer = b""

    @classmethod
    def start(cls, path: Path, seed: int, threads: int, import_timeout: float):
        read_fd, write_fd = os.pipe()
        env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads),
                   PYTHONDONTWRITEBYTECODE="1")
        # the worker must import this same zoo (a checkout run with `python -m zoo`, not an installed one)
        root = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        command = [sys.executable, str(Path(__file__).with_name("_worker.py")), str(path), str(write_fd), str(seed),
                   str(threads)]
        proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                pass_fds=(write_fd,), env=env, cwd=str(path.parent))
        os.close(write_fd)
        worker = cls(proc, read_fd)
        reply = worker._read(_START_TIMEOUT)
        if not isinstance(reply, dict) or not reply.get("started"):
            worker.kill()
            return None, "the grader's worker did not start"
        reply = worker._read(import_timeout)
        if reply is None:
            worker.kill()
            return None, f"the submission did not finish importing within {import_timeout:g} s"
        if reply == "died":
            code = proc.wait()
            worker.kill()
            return None, f"the submission does not import: the process exited with code {code} while importing it"
        if "import_error" in reply:
            worker.kill()
            return None, f"the submission does not import: {reply['import_error']}"
        return worker, None

    def run(self, check: Check, timeout: float):
        """(CheckResult, whether the worker is still usable)."""
        start = time.perf_counter()
        try:
            self.proc.stdin.write((json.dumps({"function": check.function}) + "\n").encode())
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            return _result(check, "crashed", "the grader's worker process died before this check"), False
        reply = self._read(timeout)
        seconds = time.perf_counter() - start
        if reply is None:
            return _result(check, "timeout", f"took longer than the {timeout:g} s time limit (an infinite loop?)",
                           seconds), False
        if reply == "died":
            code = self.proc.wait()
            return _result(check, "crashed", f"the process running the check exited with code {code} "
                                             f"(os._exit, sys.exit or a crash in the submission?)", seconds), False
        return _result(check, reply["status"], reply.get("message", ""), seconds, reply.get("output") or ""), True

    def _read(self, timeout: float):
        """The next reply, None past ``timeout`` seconds, or "died" when the worker ended."""
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            ready, _, _ = select.select([self.reply_fd], [], [], left)
            if not ready:
                return None
            chunk = os.read(self.reply_fd, 65536)
            if not chunk:
                return "died"
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return json.loads(line)

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self._cleanup()

    def close(self):
        try:
            self.proc.stdin.close()
            self.proc.wait(timeout=5)
        except (subprocess.TimeoutExpired, OSError):
            pass
        self.kill()

    def _cleanup(self):
        for closer in (lambda: os.close(self.reply_fd), lambda: self.proc.stdin and self.proc.stdin.close()):
            try:
                closer()
            except OSError:
                pass
