"""The grader's worker process (``python zoo/homework/_worker.py FILE REPLY_FD SEED THREADS``).

It imports the submission once, then reads one JSON request per line on stdin
(``{"function": "module:function"}``), runs that check on the submission and writes one JSON
reply per line to the file descriptor REPLY_FD: ``{"status": "passed", "output": ...}`` or
``{"status": "failed" | "error", "message": ...}``. Its own stdout goes to stderr, so a
submission's prints cannot garble the replies. See :mod:`zoo.homework.grader`.

It is run as a script, not ``-m``, and imports nothing heavy itself: torch, Pyro and the zoo are
imported by the submission and the checks that need them, so a grader's start costs what the
assignment needs. ``sys.path`` starts with the submission's folder.
"""
from __future__ import annotations

import importlib
import importlib.util
import json
import os
import random
import sys
import traceback
from pathlib import Path


def _reason(error: BaseException, submission: str) -> str:
    """``Type: message (submission.py line N, in f)``: the exception and the submission's last line in it."""
    text = str(error).strip().splitlines()
    head = f"{type(error).__name__}: {text[0]}" if text else type(error).__name__
    where = [f for f in traceback.extract_tb(error.__traceback__) if f.filename == submission]
    if where:
        head += f" ({Path(submission).name} line {where[-1].lineno}, in {where[-1].name})"
    return head


def _seed(seed: int, threads: int) -> None:
    """Seed every random number generator in use (Pyro draws from torch's) and clear Pyro's param store."""
    random.seed(seed)
    if "numpy" in sys.modules:
        sys.modules["numpy"].random.seed(seed)
    if "torch" in sys.modules:
        torch = sys.modules["torch"]
        torch.set_num_threads(threads)
        torch.manual_seed(seed)
    if "pyro" in sys.modules:
        sys.modules["pyro"].clear_param_store()


def main(argv) -> None:
    path, reply_fd, seed, threads = argv[0], int(argv[1]), int(argv[2]), int(argv[3])
    replies = os.fdopen(reply_fd, "w", buffering=1)
    os.dup2(2, 1)                                # the submission's prints go to stderr
    sys.stdout = sys.stderr

    def reply(**message):
        replies.write(json.dumps(message) + "\n")
        replies.flush()

    sys.path[0] = str(Path(path).resolve().parent)
    _seed(seed, threads)
    reply(started=True)                          # the submission's import time is counted from here
    try:
        spec = importlib.util.spec_from_file_location("submission", path)
        submission = importlib.util.module_from_spec(spec)
        sys.modules["submission"] = submission
        spec.loader.exec_module(submission)
    except BaseException as e:                   # SyntaxError, SystemExit, anything: report it in one line
        reply(import_error=_reason(e, path) if not isinstance(e, SyntaxError)
              else f"SyntaxError: {e.msg} ({Path(path).name} line {e.lineno})")
        return
    reply(ready=True)
    for line in sys.stdin:
        request = json.loads(line)
        module_name, function_name = request["function"].split(":")
        try:
            check = getattr(importlib.import_module(module_name), function_name)
        except (ImportError, AttributeError) as e:
            reply(status="error", message=f"the grader cannot find its check {request['function']}: {e}")
            continue
        _seed(seed, threads)
        try:
            output = check(submission)
        except AssertionError as e:
            reply(status="failed", message=str(e).strip() or "assertion failed")
        except BaseException as e:               # the submission raised (or called sys.exit): this check fails
            reply(status="error", message=_reason(e, path))
        else:
            reply(status="passed", output="" if output is None else str(output))


if __name__ == "__main__":
    main(sys.argv[1:])
