"""The grader's worker process: it imports the submission and answers requests for *values*.

Run as ``python zoo/homework/_worker.py FILE REPLY_FD`` by :mod:`zoo.homework.grader`. It imports
the submission once, then reads one JSON request per line on stdin and writes one JSON reply
per line to the file descriptor REPLY_FD:

- ``{"id": n, "seed": s, "call": "kl_normal", "args": [...]}`` calls a top-level function of the
  submission with the arguments the grader chose;
- ``{"id": n, "seed": s, "probe": "zoo.homework.<hw>.probes:trace_model", "args": [...]}`` calls a
  public probe ``probe(submission, *args)``, for what must run next to the student's code
  (tracing a Pyro model, a gradient through it, a training loop).

The reply is ``{"id": n, "value": ...}`` or ``{"id": n, "error": "one line"}``. Before each
request the worker seeds ``random``, NumPy, torch and Pyro with the request's seed and clears
Pyro's param store.

**No verdict is made here.** Everything in this process is reachable by the submission (it can
replace a probe, write to REPLY_FD, read the requests), so the grader treats every reply as an
untrusted value: it checks the request id, decodes it with :func:`decode` (plain JSON; a tensor is
``{"__tensor__": {"dtype", "shape", "data"}}``; never a pickle) and validates types, shapes and
finiteness before its own code decides pass or fail.

An import guard (:class:`_GraderOnly`) refuses the grader-side modules (each assignment's
``checks``, the kit's grader, the reference solutions) to the submission. It is a fence against
the casual ``from zoo.homework.x.checks import *``, not a wall: locally a submission can still
read any file the user can; on Gradescope the bundle runs this process as an unprivileged user
and those files are readable by root only (see ``INSTRUCTORS.md``).

It is run as a script, not ``-m``, and imports nothing heavy itself (torch only to decode a
tensor argument), so a toy assignment's worker starts in a blink. ``sys.path`` starts with the
submission's folder.
"""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import json
import math
import os
import random
import re
import sys
import traceback
from pathlib import Path

#: dtypes a tensor may have on the wire.
DTYPES = ("float64", "float32", "float16", "int64", "int32", "bool")
#: Modules the submission may not import: the grader's side of the kit and the reference solutions.
_GRADER_ONLY = re.compile(r"^zoo\.homework\.(grader|kit|mutation|solutions|[a-z_0-9]+\.(checks|solution))(\.|$)")


class ProtocolError(ValueError):
    """A message that is not valid data of the wire format."""


# -- the wire format: JSON values, tensors as dtype/shape/flat list -----------------------------
def encode(value):
    """``value`` as plain JSON data; tensors and NumPy arrays become ``{"__tensor__": ...}``."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return value
    if isinstance(value, (list, tuple)):
        return [encode(v) for v in value]
    if isinstance(value, dict):
        if not all(isinstance(k, str) for k in value):
            raise ProtocolError("a dict with non-string keys")
        return {k: encode(v) for k, v in value.items()}
    torch = sys.modules.get("torch")
    numpy = sys.modules.get("numpy")
    if numpy is not None and isinstance(value, (numpy.ndarray, numpy.generic)) and torch is not None:
        value = torch.as_tensor(numpy.asarray(value))
    if torch is not None and isinstance(value, torch.Tensor):
        t = value.detach().cpu()
        dtype = str(t.dtype).replace("torch.", "")
        if dtype not in DTYPES:
            raise ProtocolError(f"a tensor of dtype {dtype}")
        return {"__tensor__": {"dtype": dtype, "shape": list(t.shape), "data": t.reshape(-1).tolist()}}
    raise ProtocolError(f"a {type(value).__name__}, which is not a tensor, number, string, list or dict")


def decode(data, depth: int = 0):
    """The inverse of :func:`encode`, strict: anything else is a :class:`ProtocolError`."""
    if depth > 20:
        raise ProtocolError("nested too deeply")
    if data is None or isinstance(data, (bool, str, int, float)):
        return data
    if isinstance(data, list):
        return [decode(v, depth + 1) for v in data]
    if not isinstance(data, dict):
        raise ProtocolError(f"a {type(data).__name__}")
    if "__tensor__" not in data:
        return {k: decode(v, depth + 1) for k, v in data.items()}
    spec = data["__tensor__"]
    if set(data) != {"__tensor__"} or not isinstance(spec, dict) or set(spec) != {"dtype", "shape", "data"}:
        raise ProtocolError("a malformed tensor")
    dtype, shape, flat = spec["dtype"], spec["shape"], spec["data"]
    if dtype not in DTYPES or not isinstance(shape, list) or len(shape) > 8 or \
            not all(isinstance(n, int) and not isinstance(n, bool) and 0 <= n for n in shape):
        raise ProtocolError(f"a tensor with dtype {dtype!r} and shape {shape!r}")
    if not isinstance(flat, list) or len(flat) != math.prod(shape) or \
            not all(isinstance(v, (int, float)) for v in flat):
        raise ProtocolError(f"a tensor of shape {shape} whose data is not {math.prod(shape)} numbers")
    import torch
    return torch.tensor(flat, dtype=getattr(torch, dtype)).reshape(shape)


# -- the worker ------------------------------------------------------------------------------------
class _GraderOnly(importlib.abc.MetaPathFinder):
    """Refuses the grader-side modules (see the module docstring: a fence, not a wall)."""

    def find_spec(self, fullname, path=None, target=None):
        if _GRADER_ONLY.match(fullname):
            raise ImportError(f"{fullname} is the grader's, not the submission's", name=fullname)
        return None


def _reason(error: BaseException, submission: str) -> str:
    """``Type: message (submission.py line N, in f)``: the exception and the submission's last line in it."""
    text = str(error).strip().splitlines()
    head = f"{type(error).__name__}: {text[0]}" if text else type(error).__name__
    where = [f for f in traceback.extract_tb(error.__traceback__) if f.filename == submission]
    if where:
        head += f" ({Path(submission).name} line {where[-1].lineno}, in {where[-1].name})"
    return head


def _seed(seed: int) -> None:
    """Seed every random number generator in use (Pyro draws from torch's) and clear Pyro's param store."""
    random.seed(seed)
    if "numpy" in sys.modules:
        sys.modules["numpy"].random.seed(seed % 2 ** 32)
    torch = sys.modules.get("torch")
    if torch is not None:            # torch.manual_seed, less the stack trace it records for an idle accelerator
        torch.random.default_generator.manual_seed(seed)
        if torch.cuda.is_initialized():
            torch.cuda.manual_seed_all(seed)
    if "pyro" in sys.modules:
        sys.modules["pyro"].clear_param_store()


def _limit(limits) -> None:
    """Set the sandbox's resource limits (``{"RLIMIT_AS": bytes, ...}``) on this process, before the submission
    is imported: they bind it and every process it starts."""
    import resource
    for name, value in limits.items():
        resource.setrlimit(getattr(resource, name), (value, value))


def _target(request, submission):
    """The function a request names: a top-level function of the submission, or a probe of the kit."""
    if "call" in request:
        fn = getattr(submission, request["call"], None)
        if not callable(fn):
            raise AttributeError(f"the submission has no function {request['call']}")
        return fn
    module_name, _, name = request["probe"].partition(":")
    if not re.fullmatch(r"zoo\.homework\.[a-z_0-9]+\.probes", module_name):
        raise ValueError(f"{request['probe']} is not a probe of the kit")
    probe = getattr(importlib.import_module(module_name), name)
    return lambda *args: probe(submission, *args)


def main(argv) -> None:
    path, reply_fd = argv[0], int(argv[1])
    replies = os.fdopen(reply_fd, "w", buffering=1)
    os.dup2(2, 1)                                # the submission's prints go to stderr (discarded)
    sys.stdout = sys.stderr
    threads = int(os.environ.get("OMP_NUM_THREADS", "1"))

    def reply(**message):
        replies.write(json.dumps(message) + "\n")
        replies.flush()

    sys.path[0] = str(Path(path).resolve().parent)
    sys.meta_path.insert(0, _GraderOnly())
    _limit(json.loads(os.environ.pop("PYRO_ZOO_WORKER_LIMITS", "{}")))
    _seed(0)
    reply(started=True)                          # the submission's import time is counted from here
    try:
        spec = importlib.util.spec_from_file_location("submission", path)
        submission = importlib.util.module_from_spec(spec)
        sys.modules["submission"] = submission
        spec.loader.exec_module(submission)
    except BaseException as e:                   # SyntaxError, SystemExit, anything: report it in one line
        reply(import_error=_reason(e, path) if not isinstance(e, SyntaxError)
              else f"SyntaxError: {e.msg} ({Path(path).name}{f' line {e.lineno}' if e.lineno else ''})")
        return
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)
    reply(ready=True)
    for line in sys.stdin:
        request = json.loads(line)
        _seed(int(request["seed"]))
        try:
            fn = _target(request, submission)
            args = decode(request.get("args", []))
            value = fn(*args)
        except BaseException as e:               # the submission raised (or called sys.exit)
            reply(id=request["id"], error=_reason(e, path))
            continue
        try:
            reply(id=request["id"], value=encode(value))
        except ProtocolError as e:
            reply(id=request["id"], error=f"it returned {e}; the grader reads tensors, numbers, lists and dicts")


if __name__ == "__main__":
    main(sys.argv[1:])
