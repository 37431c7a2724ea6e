"""The grader's own protocol (issue 43): whatever a submission sends back, the grade ends, in bounded time,
with every check scored and a one-line reason.

Each grade here runs in a child Python with a hard timeout (``subprocess.run(timeout=...)``), so a grader
that hangs fails the test instead of hanging the suite. The toy assignment's checks are plain Python
written to a temporary folder, so its worker starts in a blink:

- a reply channel that ends (the JSON line ``"died"``, a closed descriptor) while the process lives on;
- a line that is not JSON while the submission imports;
- a few hundred random and adversarial replies (seeded): garbage, partial lines, binary, huge numbers,
  forged ids, malformed tensors, nothing at all;
- a reply over the cap (MAX_REPLY, 16 MiB), read in linear time and blamed on its size, with the grader's memory
  bounded;
- the grader's environment (an instructor's secret) never reaches the submission;
- a child whose main thread exited while another thread runs is killed with its thread group;
- a grade's total time budget: a submission that sleeps everywhere costs the budget, not 10x every limit.
"""
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

RUNNER = '''
import json, sys
sys.path.insert(0, sys.argv[1])
from zoo.homework.base import Assignment, Check
from zoo.homework.grader import WorkerSettings, grade
spec = json.loads(open(sys.argv[2]).read())
checks = tuple(Check(c["name"], 1, c["name"], f"toy_checks:{c['function']}", timeout=c["timeout"])
               for c in spec["checks"])
hw = Assignment("toy", "toy", checks=checks, package="toy_checks")
worker = WorkerSettings(import_timeout=spec.get("import_timeout", 20), sandbox=spec.get("sandbox", True))
# this grader's own peak RSS (not its worker's), in KiB: VmHWM, since getrusage's ru_maxrss keeps the peak of the
# process that started this one (pytest) across exec
peak = lambda: int(next(line for line in open("/proc/self/status") if line.startswith("VmHWM:")).split()[1])
before = peak()
result = grade(hw, sys.argv[3], seed=1, budget=spec.get("budget"), worker=worker)
print(json.dumps({**result.to_json(), "grader_peak_growth_bytes": 1024 * (peak() - before)}))
'''


def _grade(tmp_path, checks_source: str, checks, submission: str, *, timeout: float = 300, env=None, **spec):
    """Grade ``submission`` on a toy assignment in a child Python killed after ``timeout`` seconds: the
    result as JSON and the wall seconds it took."""
    (tmp_path / "toy_checks.py").write_text(checks_source)
    (tmp_path / "spec.json").write_text(json.dumps({"checks": checks, **spec}))
    (tmp_path / "runner.py").write_text(RUNNER)
    folder = tmp_path / "submission"
    folder.mkdir(exist_ok=True)
    (folder / "sub.py").write_text(submission)
    start = time.monotonic()
    run = subprocess.run([sys.executable, str(tmp_path / "runner.py"), str(tmp_path), str(tmp_path / "spec.json"),
                          str(folder / "sub.py")], capture_output=True, text=True, timeout=timeout, cwd=tmp_path,
                         env=dict(env or os.environ, PYTHONPATH=str(ROOT)))
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(run.stdout.strip().splitlines()[-1]), time.monotonic() - start


def _assert_scored(result):
    for c in result["checks"]:
        assert c["message"] and "\n" not in c["message"] and len(c["message"]) <= 300, c
        assert c["points"] == (c["max_points"] if c["passed"] else 0), c


CALL = '''
def check_call(sub, ctx):
    value = sub.call("answer")
    assert value == 42, f"answer() returned {value!r}"
    return "fine"
'''


@pytest.mark.parametrize("action", ["died", "close"])
def test_a_reply_channel_that_ends_while_the_process_lives_does_not_hang_the_grader(tmp_path, action):
    """The JSON line "died", or a closed reply descriptor, from a process that then sleeps: the grader used to wait
    for its exit without a limit; now the check fails in one line, the next one runs, and so at import."""
    end = {"died": "os.write(int(sys.argv[2]), b'\"died\"\\n')", "close": "os.close(int(sys.argv[2]))"}[action]
    at_check = f"import os, sys, time\ndef answer():\n    {end}\n    time.sleep(1000)\n"
    result, seconds = _grade(tmp_path, CALL, [{"name": "one", "function": "check_call", "timeout": 30},
                                              {"name": "two", "function": "check_call", "timeout": 30}], at_check)
    status = {"died": "failed", "close": "crashed"}[action]      # "died" is a reply that answers nothing
    assert [c["status"] for c in result["checks"]] == [status, status], result
    _assert_scored(result)
    at_import = f"import os, sys, time\n{end}\ntime.sleep(1000)\n"
    result, seconds = _grade(tmp_path, CALL, [{"name": "one", "function": "check_call", "timeout": 30}], at_import)
    assert result["checks"][0]["status"] == "import_error", result
    _assert_scored(result)


def test_a_line_that_is_not_json_at_import_is_an_import_error(tmp_path):
    """It used to raise an uncaught exception in the grader: a traceback, no results, the worker left running."""
    garbage = "import os, sys\nos.write(int(sys.argv[2]), b'this is not json\\n')\ndef answer():\n    return 42\n"
    result, _ = _grade(tmp_path, CALL, [{"name": "one", "function": "check_call", "timeout": 30}], garbage)
    check = result["checks"][0]
    assert check["status"] == "import_error" and "not a reply" in check["message"], check
    _assert_scored(result)


def _payloads(count: int, seed: int):
    """Adversarial and random replies, as bytes a submission writes to the reply pipe."""
    rng = random.Random(seed)
    tensor = lambda **spec: {"__tensor__": {"dtype": "float64", "shape": [2], "data": [1.0, 2.0], **spec}}
    fixed = [b"", b"\n", b'"died"\n', b"null\n", b"[]\n", b"{}\n", b"42\n", b'"ready"\n', b"garbage\n", b"garbage",
             b"\xff\xfe\x00binary\n", b"[" * 100000 + b"\n", b"1" * 5000 + b"\n", b"1e999\n", b"NaN\n",
             b'{"id": true, "value": 42}\n', b'{"id": 1.0, "value": 42}\n', b'{"id": "1", "value": 42}\n',
             b'{"id": 1, "value": 42, "extra": 1}\n', b'{"id": 1}\n', b'{"id": 1, "error": null}\n',
             b'{"id": 1, "value": 1e999}\n', b'{"id": 99999999999999999999999, "value": 42}\n',
             b'{"status": "passed"}\n', b'{"started": true}\n{"ready": true}\n',
             *(json.dumps({"id": 1, "value": tensor(**spec)}).encode() + b"\n" for spec in (
                 {"shape": [3]}, {"shape": [-1]}, {"shape": [10 ** 12]}, {"dtype": "complex64"},
                 {"data": ["a", "b"]}, {"data": [1e999, 1]}, {"shape": [1] * 9}, {"data": [10 ** 400, 1]},
                 {"shape": [True, 2]})),
             json.dumps({"id": 1, "value": {"__tensor__": 3}}).encode() + b"\n",
             json.dumps({"id": 1, "value": {"__tensor__": {}, "other": 1}}).encode() + b"\n"]

    def random_json(depth=0):
        kind = rng.randrange(7 if depth < 4 else 4)
        if kind == 0:
            return rng.choice([None, True, False])
        if kind == 1:
            return rng.choice([rng.randint(-10 ** 30, 10 ** 30), rng.uniform(-1e300, 1e300), 0, -0.0])
        if kind == 2:
            return "".join(chr(rng.randrange(0x20, 0x3000)) for _ in range(rng.randrange(20)))
        if kind == 3:
            return rng.choice(["died", "value", "error", "__tensor__", "id"])
        if kind == 4:
            return [random_json(depth + 1) for _ in range(rng.randrange(4))]
        if kind == 5:
            return {rng.choice(["id", "value", "error", "__tensor__", "x"]): random_json(depth + 1)
                    for _ in range(rng.randrange(4))}
        return {"id": rng.randrange(-2, 5), "value": random_json(depth + 1)}

    payloads = list(fixed)
    while len(payloads) < count:
        kind = rng.randrange(4)
        if kind == 0:                                          # random bytes, maybe with newlines
            payloads.append(bytes(rng.randrange(256) for _ in range(rng.randrange(1, 200))))
        elif kind == 1:                                        # random JSON lines
            payloads.append(b"".join(json.dumps(random_json()).encode() + b"\n" for _ in range(rng.randrange(1, 3))))
        elif kind == 2:                                        # a JSON line cut short
            line = json.dumps(random_json()).encode()
            payloads.append(line[:rng.randrange(len(line) + 1)])
        else:                                                  # a big line
            payloads.append(json.dumps([rng.random()] * rng.randrange(1000, 50000)).encode() + b"\n")
    return payloads[:count]


FUZZ_CHECKS = '''
def _make(i):
    def check(sub, ctx):
        value = sub.call("reply", i)
        assert value == "the honest value", f"reply({i}) returned a {type(value).__name__}"
    return check

for _i in range(400):
    globals()[f"check_{_i}"] = _make(_i)
'''

# the payloads lie in files beside the submission, read one per call: in its source (68 MB of literals) they
# would be parsed again by every fresh worker, a hundred restarts
FUZZ_SUBMISSION = '''
import os, sys
from pathlib import Path

def reply(i):
    folder = Path(__file__).parent / "payloads"
    data, ending = (folder / str(i)).read_bytes(), (folder / f"{i}.ending").read_text()
    fd = int(sys.argv[2])
    if data:
        os.write(fd, data)
    if ending == "exit":
        os._exit(5)
    if ending == "close":
        os.close(fd)
    if ending == "spin":
        while True:
            pass
    return "not this"
'''


@pytest.mark.slow
def test_a_few_hundred_adversarial_replies_each_end_as_a_scored_one_line_check(tmp_path):
    """Seeded: 300 replies (see :func:`_payloads`), each followed by the process returning, exiting, closing its
    reply descriptor or spinning. Every one ends as a check worth 0 points with a one-line reason, in bounded time."""
    rng = random.Random(43)
    endings = ["return"] * 12 + ["exit"] * 4 + ["close"] * 2 + ["spin"]
    payloads = [(p, rng.choice(endings)) for p in _payloads(300, seed=43)]
    folder = tmp_path / "submission" / "payloads"
    folder.mkdir(parents=True)
    for i, (data, ending) in enumerate(payloads):
        (folder / str(i)).write_bytes(data)
        (folder / f"{i}.ending").write_text(ending)
    checks = [{"name": f"c{i}", "function": f"check_{i}", "timeout": 0.5} for i in range(len(payloads))]
    # without the sandbox (the reader is the same; 300 sandboxes would cost minutes of worker starts)
    result, seconds = _grade(tmp_path, FUZZ_CHECKS, checks, FUZZ_SUBMISSION, timeout=500, sandbox=False)
    assert len(result["checks"]) == 300 and result["score"] == 0
    statuses = {c["status"] for c in result["checks"]}
    assert statuses <= {"failed", "error", "crashed", "timeout"} and {"failed", "crashed", "timeout"} <= statuses
    _assert_scored(result)


HUGE = '''
import os, sys
def answer():
    fd, block = int(sys.argv[2]), b"x" * (1 << 20)
    for _ in range(300):                      # 300 MiB, no newline
        os.write(fd, block)
    return 42
'''


def test_a_reply_over_the_cap_is_read_in_linear_time_and_blamed_on_its_size(tmp_path):
    """The reader used to append each read to a bytes object and scan it whole (quadratic): the cap was never
    reached and the check timed out, blaming the submission's speed."""
    from zoo.homework.grader import MAX_REPLY
    result, _ = _grade(tmp_path, CALL, [{"name": "one", "function": "check_call", "timeout": 2}], HUGE, timeout=300)
    check = result["checks"][0]
    assert check["status"] == "failed" and f"over {MAX_REPLY >> 20} MiB" in check["message"], check


BIG_VALUE = "def answer():\n    return [0.5] * 8_000_000\n\ndef small():\n    return 1\n"   # a valid 40 MB reply
BIG_CHECKS = CALL + '''
def check_small(sub, ctx):
    assert sub.call("small") == 1, "small() is not 1"
'''


def test_a_big_valid_reply_is_refused_with_the_graders_memory_bounded(tmp_path):
    """The cap used to be 256 MiB, and a valid reply under it was decoded whole: one of 255 MiB cost the grader
    2.65 GiB and 36 s per check. A reply over MAX_REPLY (16 MiB; a reference solution's largest is under 2 MiB) is
    refused in one line, and the grader holds no more than about that much of it (its peak RSS, measured: 20 MB
    above its start here; a 40 MB reply grew it by about 1 GB before)."""
    from zoo.homework.grader import MAX_REPLY
    checks = [{"name": "big", "function": "check_call", "timeout": 60},
              {"name": "small", "function": "check_small", "timeout": 60}]
    result, _ = _grade(tmp_path, BIG_CHECKS, checks, BIG_VALUE)
    one, two = result["checks"]
    assert one["status"] == "failed" and f"reply over {MAX_REPLY >> 20} MiB" in one["message"], one
    assert "\n" not in one["message"] and two["status"] == "passed", result     # the grade goes on, a fresh worker
    assert result["grader_peak_growth_bytes"] < 3 * MAX_REPLY, result["grader_peak_growth_bytes"]


# a valid reply just under MAX_REPLY bytes of 4 million empty dicts ("{}, " each)
EMPTY_DICTS = "def answer():\n    return [{}] * 4_000_000\n\ndef small():\n    return 1\n"


def test_a_valid_reply_of_many_small_values_is_refused_before_it_is_parsed(tmp_path):
    """Parsing costs per value, not per byte: a reply under MAX_REPLY made of ``{}`` grew the grader by about
    0.67 GB (40 times its 16 MB; 4 million dicts, then their decoded copies). Its values and containers are
    counted on its bytes and it is refused in one line, with the grader's peak RSS within 3 * MAX_REPLY of its
    start."""
    from zoo.homework.grader import MAX_REPLY, MAX_REPLY_VALUES
    checks = [{"name": "big", "function": "check_call", "timeout": 60},
              {"name": "small", "function": "check_small", "timeout": 60}]
    result, _ = _grade(tmp_path, BIG_CHECKS, checks, EMPTY_DICTS)
    one, two = result["checks"]
    assert one["status"] == "failed" and f"over the {MAX_REPLY_VALUES} values" in one["message"], one
    assert "\n" not in one["message"] and two["status"] == "passed", result
    assert result["grader_peak_growth_bytes"] < 3 * MAX_REPLY, result["grader_peak_growth_bytes"]


def test_reply_size_counts_values_and_containers_on_the_bytes():
    """The pre-scan's counts: commas and brackets, a scalar being one value; a reference-sized tensor passes."""
    import json as _json
    from zoo.homework.grader import MAX_REPLY_CONTAINERS, MAX_REPLY_VALUES, _check_reply_size, _WorkerTrouble
    tensor = {"id": 1, "value": {"__tensor__": {"dtype": "float64", "shape": [600, 160],
                                                "data": [0.123456789] * 96_000}}}
    _check_reply_size(_json.dumps(tensor).encode())
    _check_reply_size(b"42")
    with pytest.raises(_WorkerTrouble):
        _check_reply_size(b"[" + b"0," * MAX_REPLY_VALUES + b"0]")
    with pytest.raises(_WorkerTrouble):
        _check_reply_size(b"[" + b"[]" * (MAX_REPLY_CONTAINERS + 1) + b"]")


ENVIRONMENT_CHECK = '''
def check_environment(sub, ctx):
    names = sub.call("names")
    return " ".join(sorted(names))
'''


def test_the_worker_gets_a_minimal_named_environment(tmp_path):
    """An instructor's secret in the grader's environment is not the submission's to read: the worker's
    environment is the named variables only."""
    from zoo.homework.grader import WORKER_ENVIRONMENT
    env = dict(os.environ, INSTRUCTOR_SECRET="hunter2", GITHUB_TOKEN="ghp_secret")
    result, _ = _grade(tmp_path, ENVIRONMENT_CHECK, [{"name": "env", "function": "check_environment", "timeout": 30}],
                       "import os\ndef names():\n    return list(os.environ)\n", env=env)
    names = set(result["checks"][0]["message"].split())
    allowed = set(WORKER_ENVIRONMENT) | {"OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "PYTHONPATH",
                                         "PYTHONDONTWRITEBYTECODE", "PYRO_ZOO_OFFLINE", "MPLBACKEND", "USER", "LOGNAME",
                                         "LC_CTYPE", "PWD"}            # PWD: the sandbox's working folder
    assert names and names <= allowed, names - allowed
    assert "INSTRUCTOR_SECRET" not in names and "GITHUB_TOKEN" not in names


ZOMBIE_LEADER = '''
import ctypes, os, threading, time
from pathlib import Path
MARKER = Path(__file__).with_name("still_alive")

def answer():
    if os.fork() == 0:
        def linger():
            time.sleep(3.0)                 # long after the grade
            MARKER.write_text("")
            os._exit(0)
        threading.Thread(target=linger).start()
        ctypes.CDLL(None).pthread_exit(None)    # the main thread exits: the leader shows as a zombie
    return 42
'''


@pytest.mark.slow
def test_a_child_whose_leader_is_a_zombie_while_a_thread_runs_is_killed(tmp_path):
    """The sweep used to skip a process whose leader is in state Z, though another of its threads runs on."""
    result, _ = _grade(tmp_path, CALL, [{"name": "one", "function": "check_call", "timeout": 30}], ZOMBIE_LEADER,
                       sandbox=False)          # the grader's own sweep (in a sandbox its pid namespace ends it)
    assert result["checks"][0]["status"] == "passed", result
    time.sleep(4.0)
    assert not (tmp_path / "submission" / "still_alive").exists()


SLEEPER = "import time\ndef answer():\n    time.sleep(1000)\n"


@pytest.mark.slow
def test_a_grade_stops_at_its_time_budget(tmp_path):
    """A submission that sleeps in every function used to cost 10x every check's limit in wall time (2250 s on
    bernoulli_vae); now the grade stops at its budget and the remaining checks score 0 with one line."""
    checks = [{"name": f"c{i}", "function": "check_call", "timeout": 30} for i in range(4)]
    result, seconds = _grade(tmp_path, CALL, checks, SLEEPER, budget=4.0)
    assert seconds < 120 and [c["status"] for c in result["checks"]] == ["timeout"] * 4, result
    assert "budget of 4 s" in result["checks"][0]["message"] and "not run" in result["checks"][-1]["message"]
    _assert_scored(result)
    result, seconds = _grade(tmp_path, CALL, checks[:1], "import time\ntime.sleep(1000)\n", budget=4.0)
    assert seconds < 120 and "budget" in result["checks"][0]["message"], result


@pytest.mark.slow
def test_the_budget_is_the_reference_time_on_this_machine_now(tmp_path, monkeypatch):
    """Without an explicit budget it is BUDGET_FACTOR times the assignment's reference_time in units of
    calibrate(), measured when the grade starts (a loaded machine gets a larger budget)."""
    from zoo.homework import grader
    from zoo.homework.base import Assignment, Check
    (tmp_path / "budget_checks.py").write_text(CALL)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "budget_checks", raising=False)
    monkeypatch.setattr(grader, "calibrate", lambda: 0.02)
    hw = Assignment("toy", "toy", checks=(Check("one", 1, "one", "budget_checks:check_call", timeout=30),
                                          Check("two", 1, "two", "budget_checks:check_call", timeout=30)),
                    package="budget_checks", reference_time=10.0)
    (tmp_path / "sub.py").write_text(SLEEPER)
    start = time.monotonic()
    result = grader.grade(hw, tmp_path / "sub.py")
    budget = grader.BUDGET_FACTOR * 10.0 * 0.02
    assert time.monotonic() - start < budget + 20
    assert f"budget of {budget:.0f} s" in result.checks[0].message and "not run" in result.checks[1].message


def test_variance_order_summary_with_a_zero_variance():
    """A deterministic last estimator is accepted (it beats any noisy one); its summary used to divide by its 0
    variance, which a grader reported as "could not use what the submission returned"."""
    import torch
    from zoo.testing import assert_variance_order
    summary = assert_variance_order({"noisy": lambda: torch.randn(3), "exact": lambda: torch.zeros(3)},
                                    ["noisy", "exact"], num_samples=50)
    assert "exact 0" in summary and "inf" in summary
