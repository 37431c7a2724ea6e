"""The homework grader never crashes, and a broken check costs only that check's points.

A toy assignment (its checks in a module written to a temporary folder, plain Python so the
worker starts in a blink) is graded on
submissions that fail in every way students' code fails: it does not import (an exception, a
syntax error, ``os._exit``, a hang at import time), a function raises, loops forever, returns the
wrong shape or kills its process. Each loses exactly the points of the check it breaks, with a
one-line message; later checks still run in a fresh worker. Then: the Gradescope results.json
schema, hidden checks, the CLI's exit codes (2 and no files on bad input), the bundle's contents
(and its run_autograder run end to end), and the student / solution folders.
"""
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from zoo.cli import main
from zoo.homework import ASSIGNMENTS
from zoo.homework.base import Assignment, Check
from zoo.homework.grader import WorkerSettings, grade
from zoo.homework.kit import STUDENT_FILES, make_bundle

sys.path.insert(0, str(Path(__file__).parent))
from detached_daemon import daemon_source, outlived      # noqa: E402  (tests/detached_daemon.py)

ROOT = Path(__file__).resolve().parents[1]

TOY_CHECKS = '''
def check_add(sub, ctx):
    got = sub.call("add", 1, 2)
    assert got == 3, f"add(1, 2) returned {got!r}, expected 3"

def check_shape(sub, ctx):
    out = sub.call("ones", 3)
    assert len(out) == 3, f"ones(3) has length {len(out)}, expected 3"

def check_loop(sub, ctx):
    sub.call("loop")

def check_exit(sub, ctx):
    sub.call("die")

def check_raise(sub, ctx):
    sub.call("boom")

def check_output(sub, ctx):
    return "all fine"
'''

GOOD = '''
print("students print things; the grader must not mind")
def add(a, b): return a + b
def ones(n): return [1.0] * n
def loop(): return None
def die(): return None
def boom(): return None
'''

BAD = '''
import os
def add(a, b): return a + b + 1
def ones(n): return [1.0] * (n - 1)
def loop():
    while True:
        pass
def die():
    os._exit(3)
def boom():
    raise ValueError("kaboom\\nsecond line")
'''

TOY = Assignment("toy", "A toy assignment", package="toy_checks", checks=(
    Check("add", 1, "add works", "toy_checks:check_add", timeout=30),
    Check("shape", 2, "ones has the right shape", "toy_checks:check_shape", timeout=30),
    Check("loop", 3, "loop returns", "toy_checks:check_loop", timeout=2),
    Check("exit", 4, "die does not kill", "toy_checks:check_exit", timeout=30),
    Check("raise", 5, "boom does not raise", "toy_checks:check_raise", timeout=30),
    Check("output", 6, "always passes", "toy_checks:check_output", timeout=30, hidden=True),
))


@pytest.fixture
def toy(tmp_path, monkeypatch):
    """The toy assignment, registered, its checks importable by the grader (which runs them in its own process)."""
    checks = tmp_path / "checks"
    checks.mkdir()
    (checks / "toy_checks.py").write_text(TOY_CHECKS)
    monkeypatch.syspath_prepend(str(checks))
    monkeypatch.delitem(sys.modules, "toy_checks", raising=False)
    monkeypatch.setitem(ASSIGNMENTS, "toy", TOY)
    return tmp_path


def _write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(text)
    return path


def test_a_good_submission_gets_every_point(toy):
    result = grade("toy", _write(toy, "good.py", GOOD), hidden=True)
    assert [c.status for c in result.checks] == ["passed"] * 6
    assert result.score == result.max_score == 21
    assert result.checks[-1].message == "all fine"


@pytest.mark.slow
def test_each_failure_costs_only_its_check(toy):
    """Wrong value, wrong shape, an infinite loop (killed at 2 s), os._exit, an exception: each
    loses its own points with a one-line message, and the checks after them still run."""
    result = grade("toy", _write(toy, "bad.py", BAD), hidden=True)
    by_name = {c.name: c for c in result.checks}
    assert {n: c.status for n, c in by_name.items()} == {
        "add": "failed", "shape": "failed", "loop": "timeout", "exit": "crashed", "raise": "error",
        "output": "passed"}
    assert result.score == 6
    assert by_name["add"].message == "add(1, 2) returned 4, expected 3"
    assert by_name["shape"].message == "ones(3) has length 2, expected 3"
    assert "2 s time limit" in by_name["loop"].message and by_name["loop"].seconds < 10
    assert "exited with code 3" in by_name["exit"].message
    assert by_name["raise"].message.startswith("ValueError: kaboom (bad.py line ")
    for c in result.checks:
        assert "\n" not in c.message and (c.passed or c.message)
    table = result.table()
    assert "TIMEOUT" in table and "CRASHED" in table and table.splitlines()[-1].split()[1:4] == ["6", "/", "21"]


@pytest.mark.parametrize("source, reason", [
    ("raise RuntimeError('broken at import')", "the submission does not import: RuntimeError: broken at import"),
    ("def add(a, b) return a", "the submission does not import: SyntaxError"),
    ("import os\nos._exit(7)", "exited with code 7 while importing"),
    ("while True:\n    pass", "did not finish importing within 3 s"),
])
@pytest.mark.slow
def test_a_submission_that_does_not_import_loses_every_check(toy, source, reason):
    result = grade("toy", _write(toy, "broken.py", source), hidden=True, worker=WorkerSettings(import_timeout=3))
    assert result.score == 0 and len(result.checks) == 6
    assert {c.status for c in result.checks} == {"import_error"}
    assert len({c.message for c in result.checks}) == 1
    assert reason in result.checks[0].message and "\n" not in result.checks[0].message


def test_hidden_checks_run_only_when_switched_on(toy):
    path = _write(toy, "good.py", GOOD)
    shown = grade("toy", path, only=["add", "output"])
    assert [c.name for c in shown.checks] == ["add"] and shown.max_score == 1
    results = grade("toy", path, hidden=True, only=["add", "output"]).to_gradescope()
    assert [(t["name"], t["visibility"]) for t in results["tests"]] == [("add", "visible"),
                                                                        ("output", "after_published")]


def test_gradescope_results_schema(toy):
    results = grade("toy", _write(toy, "bad.py", BAD), hidden=True, only=["add", "shape", "output"]).to_gradescope()
    assert results["score"] == 6 and set(results) >= {"score", "tests", "output", "visibility"}
    for t in results["tests"]:
        assert set(t) >= {"name", "score", "max_score", "output", "visibility"}
        assert isinstance(t["score"], float) and isinstance(t["max_score"], float) and isinstance(t["output"], str)
    assert [t["score"] for t in results["tests"]] == [0.0, 0.0, 6.0]
    assert results["tests"][0]["output"].endswith("failed: add(1, 2) returned 4, expected 3")
    json.dumps(results)


def test_cli_grade_writes_both_json_files(toy, capsys):
    path = _write(toy, "bad.py", BAD)
    ours, gs = toy / "out" / "ours.json", toy / "out" / "gs.json"
    (toy / "out").mkdir()
    code = main(["grade", "toy", str(path), "--only", "add,shape", "--json", str(ours), "--gradescope",
                 "--results", str(gs), "--points", "add=10"])
    assert code == 0                                        # graded, whatever the score
    assert "add" in capsys.readouterr().out
    mine = json.loads(ours.read_text())
    assert mine["assignment"] == "toy" and mine["max_score"] == 12 and mine["score"] == 0
    assert [c["name"] for c in mine["checks"]] == ["add", "shape"] and mine["checks"][0]["max_points"] == 10
    assert json.loads(gs.read_text())["tests"][0]["max_score"] == 10


@pytest.mark.parametrize("argv, message", [
    (["grade", "nope", "{sub}"], "unknown assignment 'nope'"),
    (["grade", "toy", "{tmp}/missing.py"], "no submission file"),
    (["grade", "toy", "{tmp}/empty_dir"], "should hold one .py submission"),
    (["grade", "toy", "{sub}", "--points", "nothing=3"], "unknown check 'nothing' of toy"),
    (["grade", "toy", "{sub}", "--points", "add"], "expected CHECK=POINTS"),
    (["grade", "toy", "{sub}", "--json", "{tmp}/same.json", "--gradescope", "--results", "{tmp}/same.json"],
     "name the same file"),
    (["homework", "init", "nope", "{tmp}/new"], "unknown assignment"),
    (["homework", "init", "bernoulli_vae", "{tmp}/full"], "not an empty folder"),
    (["homework", "solution", "bernoulli_vae", "{tmp}/full"], "not an empty folder"),
    (["homework", "bundle", "nope", "{tmp}/b.zip"], "unknown assignment"),
    (["homework", "bundle", "bernoulli_vae", "{tmp}/b.txt"], "should be a .zip"),
    (["homework", "bundle", "bernoulli_vae", "{tmp}/b.zip", "--points", "nothing=1"], "unknown check"),
])
def test_cli_bad_input_is_one_line_exit_2_and_writes_nothing(toy, capsys, argv, message):
    sub = _write(toy, "good.py", GOOD)
    (toy / "empty_dir").mkdir()
    (toy / "full").mkdir()
    (toy / "full" / "keep.txt").write_text("mine")
    before = sorted(p for p in toy.rglob("*"))
    code = main([a.format(sub=sub, tmp=toy) for a in argv])
    err = capsys.readouterr().err
    assert code == 2 and message in err and err.count("\n") == 1, err
    assert sorted(p for p in toy.rglob("*")) == before


def test_homework_list(capsys):
    assert main(["homework", "list"]) == 0
    out = capsys.readouterr().out
    assert "bernoulli_vae" in out and "Homework 1: the Bernoulli VAE by SVI (7 checks, 100 points; hidden: 1 more, 10 points)" in out


@pytest.mark.slow
def test_python_m_zoo_grade(tmp_path):
    """Through ``python -m zoo``: a grade exits 0; a missing file exits 2 with one line and no files."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    run = lambda *a: subprocess.run([sys.executable, "-m", "zoo", *a], capture_output=True, text=True, env=env,
                                    cwd=tmp_path, timeout=300)
    solution = ROOT / "zoo" / "homework" / "solutions" / "bernoulli_vae.py"
    graded = run("grade", "bernoulli_vae", str(solution), "--only", "kl_closed_form,model_matches_story",
                 "--json", "r.json")
    assert graded.returncode == 0, graded.stderr
    assert json.loads((tmp_path / "r.json").read_text())["score"] == 30
    missing = run("grade", "bernoulli_vae", "nothing.py", "--json", "x.json")
    assert missing.returncode == 2 and missing.stderr.count("\n") == 1 and "no submission file" in missing.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json"]


def test_init_and_solution_folders(tmp_path, capsys):
    assert main(["homework", "init", "bernoulli_vae", str(tmp_path / "student")]) == 0
    assert sorted(p.name for p in (tmp_path / "student").iterdir()) == sorted(STUDENT_FILES)
    starter = (tmp_path / "student" / "starter.py").read_text()
    assert "NotImplementedError" in starter and "solution" not in [p.stem for p in (tmp_path / "student").iterdir()]
    assert "KL" in (tmp_path / "student" / "handout.md").read_text()
    assert main(["homework", "solution", "bernoulli_vae", str(tmp_path / "instructor")]) == 0
    assert [p.name for p in (tmp_path / "instructor").iterdir()] == ["solution.py"]
    assert "NotImplementedError" not in (tmp_path / "instructor" / "solution.py").read_text()


@pytest.mark.slow
def test_bundle_contents_and_run_autograder(tmp_path):
    """The zip holds setup.sh and run_autograder at its root (executable), the frozen zoo with only the graded
    assignment and no reference solution, and bundle.json (with this checkout's commit); run_autograder grades a
    submission folder into results.json, with the paths relative to where it is run as INSTRUCTORS.md shows; an
    upload without a .py file gets 0 points and the reason instead of an autograder failure; a process the
    submission detaches does not outlive the grade."""
    path = make_bundle("bernoulli_vae", tmp_path / "hw1.zip", hidden=True, points={"kl_closed_form": 20})
    with zipfile.ZipFile(path) as z:
        names = set(z.namelist())
        modes = {i.filename: (i.external_attr >> 16) & 0o777 for i in z.infolist()}
        manifest = json.loads(z.read("bundle.json"))
        z.extractall(tmp_path / "autograder")
    assert {"setup.sh", "run_autograder", "bundle.json", "pyro-zoo/zoo/homework/grader.py",
            "pyro-zoo/zoo/homework/bernoulli_vae/checks.py", "pyro-zoo/guides/base.py"} <= names
    assert not [n for n in names if "solution" in n or "/ppca_three_ways/" in n or "/discrete_estimators/" in n]
    assert modes["setup.sh"] == modes["run_autograder"] == 0o755
    assert manifest["assignment"] == "bernoulli_vae" and manifest["hidden_checks_on"] is True
    assert manifest["grade_options"] == ["--hidden", "--points", "kl_closed_form=20"]
    assert manifest["git_commit"] == subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True,
                                                    text=True).stdout.strip()
    assert any(r.startswith("pyro-ppl==") for r in manifest["requirements"])
    assert not any(n.endswith((".pyc", ".npz")) for n in names)
    assert "useradd" in z_text(path, "setup.sh") and "pkill -KILL -u" in z_text(path, "run_autograder")
    with pytest.raises(Exception, match="exists"):
        make_bundle("bernoulli_vae", path)

    source = tmp_path / "autograder"
    for p in source.rglob("*"):                # zipfile does not restore permissions
        if p.name in ("setup.sh", "run_autograder"):
            p.chmod(0o755)
    (tmp_path / "submission").mkdir()
    # AUTOGRADER_STUDENT="": graded as this user, whatever users the machine has (a pyrozoo-student that cannot
    # run this interpreter, e.g. one under /root, used to fail this test as root)
    env = dict(os.environ, AUTOGRADER_SUBMISSION="submission", AUTOGRADER_RESULTS="results.json",
               AUTOGRADER_PYTHON=sys.executable, AUTOGRADER_STUDENT="")
    env.pop("PYTHONPATH", None)
    subprocess.run([str(source / "run_autograder")], env=env, cwd=tmp_path, timeout=300, check=True,
                   capture_output=True)
    empty = json.loads((tmp_path / "results.json").read_text())
    assert empty["score"] == 0 and "should hold one .py submission" in empty["output"]

    starter = (source / "pyro-zoo/zoo/homework/bernoulli_vae/starter.py").read_text()
    # a daemon the submission detaches, locking a file of the bundle's zoo (the sandbox shows it read-only)
    lock = source / "pyro-zoo/zoo/homework/__init__.py"
    (tmp_path / "submission" / "starter.py").write_text(starter + daemon_source(lock, tmp_path / "results.json"))
    subprocess.run([str(source / "run_autograder")], env=env, cwd=tmp_path, timeout=300, check=True,
                   capture_output=True)
    assert not outlived(lock)                  # dead when run_autograder returns: it rewrites nothing after
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["score"] == 0 and len(results["tests"]) == len(ASSIGNMENTS["bernoulli_vae"].checks)
    assert results["tests"][0]["max_score"] == 20
    assert {t["visibility"] for t in results["tests"]} == {"visible", "after_published"}
    assert all("NotImplementedError" in t["output"] for t in results["tests"])


def z_text(zip_path: Path, name: str) -> str:
    with zipfile.ZipFile(zip_path) as z:
        return z.read(name).decode()


CACHE_CHECKS = '''
def check_store(sub, ctx):
    ctx.cache["weights"] = sub.call("train")

def check_crash(sub, ctx):
    sub.call("die")

def check_reuse(sub, ctx):
    assert ctx.cache.get("weights") == [1.0, 2.0], "the trained weights were thrown away"
    assert sub.call("trainings") == 0, "trained again in the fresh worker"
'''

CACHE_SUBMISSION = '''
import os
TRAININGS = []
def train():
    TRAININGS.append(1)
    return [1.0, 2.0]
def trainings():
    return len(TRAININGS)
def die():
    os._exit(9)
'''


def test_what_a_check_computed_survives_a_worker_restart(tmp_path, monkeypatch):
    """A check that kills the worker costs its own points; the grader's ctx.cache (e.g. trained weights) is
    kept for the checks after it, which run in a fresh worker without training again."""
    (tmp_path / "cache_checks.py").write_text(CACHE_CHECKS)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "cache_checks", raising=False)
    hw = Assignment("cache", "cache", package="cache_checks", checks=(
        Check("store", 1, "store", "cache_checks:check_store"), Check("crash", 1, "crash", "cache_checks:check_crash"),
        Check("reuse", 1, "reuse", "cache_checks:check_reuse")))
    result = grade(hw, _write(tmp_path, "sub.py", CACHE_SUBMISSION))
    assert [c.status for c in result.checks] == ["passed", "crashed", "passed"], result.checks


@pytest.mark.slow
def test_the_students_selfcheck_grades_the_starter_beside_it(tmp_path, capsys):
    """`python selfcheck.py` in a folder written by `homework init` grades that folder's starter.py on the visible
    checks and prints the table: every visible check listed, each failing on the starter's TODO, exit 0."""
    from zoo.homework import get_assignment
    assert main(["homework", "init", "discrete_estimators", str(tmp_path / "hw")]) == 0
    capsys.readouterr()
    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ, PYTHONPATH=str(root) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    r = subprocess.run([sys.executable, "selfcheck.py"], cwd=tmp_path / "hw", capture_output=True, text=True,
                       timeout=300, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    for check in get_assignment("discrete_estimators").checks:
        assert (check.name in r.stdout) == (not check.hidden)
    assert "NotImplementedError" in r.stdout
