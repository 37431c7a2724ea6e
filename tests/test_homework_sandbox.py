"""A whole class graded in one environment and one folder (issue 42): each submission in its own sandbox.

A toy assignment (plain-Python checks, so each worker starts in a blink) is graded on a class folder of 30
files: honest students (of varied skill) and attackers that, graded as the instructor with the instructor's
Python, used to change someone else's mark or persist into later grades:

- ``shadow``: writes ``json.py`` beside itself; every later worker in that folder imported it;
- ``pth``: writes a ``.pth`` file into the environment's site-packages, which every later Python runs;
- ``results``: reads the grader's command line in ``/proc`` and rewrites the results it names;
- ``killer``: kills the grader process.

Every honest submission must get the score it gets alone. The class is graded by a child Python (a killed
grader must not be pytest), one ``grade`` call per file as ``pyro-zoo grade`` would, each result written by
the grader after the sandbox is gone.
"""
import json
import os
import shutil
import site
import subprocess
import sys
from pathlib import Path

import pytest

from zoo.homework.sandbox import refusal

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(refusal() is not None, reason=f"no sandbox here: {refusal()}")

CHECKS = '''
def check_add(sub, ctx):
    assert sub.call("add", 2, 3) == 5, "add(2, 3) is not 5"

def check_encode(sub, ctx):
    assert sub.call("encode", {"a": 1}) == '{"a": 1}', "encode is not json.dumps"

def check_square(sub, ctx):
    assert sub.call("square", 7) == 49, "square(7) is not 49"
'''

HONEST = '''
import json
def add(a, b): return a + b{add}
def encode(value): return json.dumps(value)
def square(x): return x * x{square}
'''

PTH = "zz_pyrozoo_sandbox_attack.pth"
ATTACKS = {
    "shadow": '''
from pathlib import Path
(Path(__file__).parent / "json.py").write_text("raise ImportError('sabotaged by a classmate')\\n")
def add(a, b): return a + b
''',
    "pth": f'''
import site
from pathlib import Path
for folder in site.getsitepackages():
    try:
        (Path(folder) / "{PTH}").write_text("import sys\\n")
    except OSError:
        pass
def add(a, b): return a + b
''',
    "results": '''
import json, os
from pathlib import Path
for pid in filter(str.isdigit, os.listdir("/proc")):
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\\0")
    except OSError:
        continue
    if b"--results-dir" in argv:
        folder = Path(argv[argv.index(b"--results-dir") + 1].decode())
        for path in folder.glob("*.json"):
            path.write_text(json.dumps({"score": 100.0}))
def add(a, b): return a + b
''',
    "killer": '''
import os, signal
from pathlib import Path
for pid in filter(str.isdigit, os.listdir("/proc")):
    try:
        if b"--results-dir" in Path(f"/proc/{pid}/cmdline").read_bytes():
            os.kill(int(pid), signal.SIGKILL)
    except OSError:
        pass
def add(a, b): return a + b
''',
}

RUNNER = '''
import json, sys
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from zoo.homework.base import Assignment, Check
from zoo.homework.grader import grade, write_results
hw = Assignment("toy", "toy", package="class_checks", checks=tuple(
    Check(name, 1, name, f"class_checks:check_{name}", timeout=20) for name in ("add", "encode", "square")))
folder, results = Path(sys.argv[2]), Path(sys.argv[sys.argv.index("--results-dir") + 1])
for path in sorted(folder.rglob("*.py")):
    write_results(results / f"{path.stem}.json", grade(hw, path, seed=1).to_json())
'''


def _grade_folder(tmp_path, folder: Path, name: str):
    """Grade every .py file under ``folder`` in order, in a child Python: {stem: score} (None: no result)."""
    results = tmp_path / f"results-{name}"
    results.mkdir()
    (tmp_path / "runner.py").write_text(RUNNER)
    subprocess.run([sys.executable, str(tmp_path / "runner.py"), str(tmp_path), str(folder), "--results-dir",
                    str(results)], cwd=tmp_path, timeout=900, capture_output=True,
                   env=dict(os.environ, PYTHONPATH=str(ROOT)))
    scores = {}
    for path in sorted(folder.rglob("*.py")):
        out = results / f"{path.stem}.json"
        scores[path.stem] = json.loads(out.read_text())["score"] if out.exists() else None
    return scores


@pytest.mark.slow
def test_a_class_folder_with_attackers_gives_every_honest_student_the_score_they_get_alone(tmp_path):
    (tmp_path / "class_checks.py").write_text(CHECKS)
    honest = {}
    for i in range(26):                          # varied skill: some get add or square wrong
        honest[f"s{i:02d}_honest"] = HONEST.format(add=" + 1" if i % 3 == 0 else "", square=" + 1" if i % 4 == 0 else "")
    for stem, source in honest.items():
        folder = tmp_path / "alone" / stem
        folder.mkdir(parents=True)
        (folder / f"{stem}.py").write_text(source)
    alone = _grade_folder(tmp_path, tmp_path / "alone", "alone")         # each file alone in its folder
    assert set(alone.values()) == {1.0, 2.0, 3.0}, alone      # the class has every level, none lost to the grader

    class_folder = tmp_path / "class"
    class_folder.mkdir()
    for stem, source in honest.items():
        (class_folder / f"{stem}.py").write_text(source)
    for k, (attack, source) in enumerate(ATTACKS.items()):   # graded after some classmates, before others
        (class_folder / f"s{5 * k + 2:02d}_{attack}.py").write_text(source)
    pth = [Path(folder) / PTH for folder in site.getsitepackages()]
    try:
        together = _grade_folder(tmp_path, class_folder, "class")
        assert not any(p.exists() for p in pth), "a submission wrote into the environment's site-packages"
    finally:
        for p in pth:
            p.unlink(missing_ok=True)
    assert len(together) == 30
    assert {stem: together[stem] for stem in honest} == alone
    assert not (class_folder / "json.py").exists()
    assert {together[f"s{5 * k + 2:02d}_{attack}"] for k, attack in enumerate(ATTACKS)} == {1.0}


def test_without_a_sandbox_grading_refuses_unless_told(tmp_path, capsys, monkeypatch):
    """Where no sandbox can be made, `pyro-zoo grade` refuses in one line (exit 2, nothing graded) unless the
    instructor passes --unsafe-no-sandbox."""
    from zoo.cli import main
    from zoo.homework import sandbox
    monkeypatch.setattr(sandbox, "refusal", lambda: "bubblewrap (bwrap) is not installed")
    marker = tmp_path / "imported"
    submission = tmp_path / "sub.py"
    submission.write_text(f"open({str(marker)!r}, 'w').close()\ndef log_likelihood(*a):\n    raise NotImplementedError\n")
    code = main(["grade", "ppca_three_ways", str(submission), "--only", "log_likelihood"])
    err = capsys.readouterr().err
    assert code == 2 and "--unsafe-no-sandbox" in err and err.count("\n") == 1 and not marker.exists(), err
    assert main(["grade", "ppca_three_ways", str(submission), "--only", "log_likelihood", "--unsafe-no-sandbox"]) == 0
    assert marker.exists()


def test_the_sandbox_sees_no_solutions_no_network_and_only_its_own_processes(tmp_path):
    """Inside: the solutions folder is empty, there is no network interface but lo, /proc lists only the
    sandbox's processes, and the Python environment is read-only."""
    from zoo.homework.base import Assignment, Check
    from zoo.homework.grader import grade
    (tmp_path / "probe_checks.py").write_text("def check_look(sub, ctx):\n    return sub.call('look')\n")
    sys.path.insert(0, str(tmp_path))
    try:
        hw = Assignment("toy", "toy", package="probe_checks",
                        checks=(Check("look", 1, "look", "probe_checks:check_look", timeout=20),))
        (tmp_path / "sub.py").write_text(f'''
import os, socket, sys
def look():
    solutions = os.listdir({str(ROOT / "zoo" / "homework" / "solutions")!r})
    processes = [p for p in os.listdir("/proc") if p.isdigit()]
    try:
        socket.create_connection(("1.1.1.1", 80), timeout=2)
        network = "yes"
    except OSError:
        network = "no"
    try:
        open(os.path.join(sys.prefix, "pyrozoo_probe"), "w")
        writable = "yes"
    except OSError:
        writable = "no"
    return f"solutions={{len(solutions)}} processes={{len(processes)}} network={{network}} writable={{writable}}"
''')
        message = grade(hw, tmp_path / "sub.py").checks[0].message
    finally:
        sys.path.remove(str(tmp_path))
    fields = dict(item.split("=") for item in message.split())
    assert fields["solutions"] == "0" and fields["network"] == "no" and fields["writable"] == "no", message
    assert int(fields["processes"]) <= 3, message


# -- each escape of issue 42 graded twice: without the sandbox it works, in it it does not --------------------
GRADE_ONE = '''
import sys
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from zoo.homework.base import Assignment, Check
from zoo.homework.grader import WorkerSettings, grade, write_results
hw = Assignment("toy", "toy", package="class_checks", checks=tuple(
    Check(name, 1, name, f"class_checks:check_{name}", timeout=20) for name in ("add", "encode", "square")))
write_results(sys.argv[3], grade(hw, Path(sys.argv[2]), seed=1, worker=WorkerSettings(sandbox=sys.argv[4] == "sandbox")).to_json())
'''
ALICE = "def add(a, b):\n    raise NotImplementedError\n"          # the starter, unchanged: 0 points


def _grade_each(tmp_path, files, sandbox: bool, python: str = sys.executable):
    """Grade ``files`` in order, each by its own grader process (as ``pyro-zoo grade``, one student after the
    other), with the interpreter ``python``: {stem: the results file}."""
    (tmp_path / "class_checks.py").write_text(CHECKS)
    (tmp_path / "grade_one.py").write_text(GRADE_ONE)
    outputs = {}
    for path in files:
        out = tmp_path / f"{path.stem}-{'sandbox' if sandbox else 'unsafe'}.json"
        subprocess.run([python, str(tmp_path / "grade_one.py"), str(tmp_path), str(path), str(out),
                        "sandbox" if sandbox else "unsafe"], cwd=tmp_path, timeout=300, capture_output=True,
                       env=dict(os.environ, PYTHONPATH=str(ROOT)), check=True)
        outputs[path.stem] = out
    return outputs


def _score(path: Path) -> float:
    return json.loads(path.read_text())["score"]


TMUX_HELPER = '''
import os, subprocess, sys
from pathlib import Path
socket = {socket!r}
grader = None                                  # the grader's results path, read from its command line
for pid in filter(str.isdigit, os.listdir("/proc")):
    try:
        argv = Path(f"/proc/{{pid}}/cmdline").read_bytes().split(b"\\0")
    except OSError:
        continue
    if len(argv) > 5 and argv[1].endswith(b"grade_one.py"):
        grader, results = pid, argv[4].decode()
if grader is not None:
    helper = (f"while [ -e /proc/{{grader}} ]; do sleep 0.05; done; "
              f"echo '{{{{\\"score\\": 3.0}}}}' > {{results}}; tmux -S {{socket}} wait-for -S rewritten")
    subprocess.run(["tmux", "-S", socket, "new-window", "-d", helper], timeout=10)
def add(a, b): return a + b
'''


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")
def test_a_helper_handed_to_a_tmux_server_neither_survives_nor_rewrites_the_results(tmp_path):
    """The instructor's tmux server runs outside the grader's process tree, so the subreaper never sees a window
    the submission opens there: unsandboxed, that window outlives the grade and rewrites the results it read from
    the grader's command line (1 point becomes 3). In the sandbox the server's socket is not in view (a private
    /tmp, nothing of the instructor's folders), and there is no grader in its /proc."""
    socket = str(tmp_path / "tmux.sock")
    attacker = tmp_path / "mallory.py"
    attacker.write_text(TMUX_HELPER.format(socket=socket))
    subprocess.run(["tmux", "-S", socket, "new-session", "-d", "-s", "instructor"], check=True, timeout=30)
    try:
        subprocess.run(["tmux", "-S", socket, "set-option", "-g", "remain-on-exit", "on"], check=True, timeout=30)
        result = _grade_each(tmp_path, [attacker], sandbox=False)["mallory"]
        subprocess.run(["tmux", "-S", socket, "wait-for", "rewritten"], check=True, timeout=120)
        assert _score(result) == 3.0                      # the escape is real without a sandbox
        windows = lambda: subprocess.run(["tmux", "-S", socket, "list-windows"], capture_output=True, text=True,
                                         check=True, timeout=30).stdout.count("\n")
        before = windows()
        result = _grade_each(tmp_path, [attacker], sandbox=True)["mallory"]
        assert _score(result) == 1.0 and windows() == before
    finally:
        subprocess.run(["tmux", "-S", socket, "kill-server"], timeout=30, capture_output=True)


PTH_ATTACK = '''
import sysconfig
from pathlib import Path
PATCH = """
import site, sys
sys.path += [p for p in site.getsitepackages() if p not in sys.path]     # torch, for zoo, before site adds it
import zoo.homework.grader as g
_grade = g.grade
def grade(assignment, submission, **kwargs):
    result = _grade(assignment, submission, **kwargs)
    if "alice" in str(submission):
        for check in result.checks:
            check.points, check.status = check.max_points, "passed"
    return result
g.grade = grade
"""
folder = Path(sysconfig.get_paths()["purelib"])
if str(folder).startswith({venv!r}):           # this test's own environment, never the machine's
    try:
        (folder / "zz_grade_for_alice.pth").write_text(f"import sys; exec({{PATCH!r}}, {{{{}}}})\\n")
    except OSError:
        pass
def add(a, b): return a + b
'''


def test_a_pth_file_cannot_patch_later_grades(tmp_path):
    """Unsandboxed, a submission writes a .pth file into the environment's site-packages that patches
    ``grade`` in every later Python of that environment: alice's untouched starter then scores 3 / 3. In the
    sandbox the environment is read-only (a virtual environment of this test's own, so the machine's is safe)."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)], check=True,
                   timeout=120)
    python = str(venv / "bin" / "python")
    mallory, alice = tmp_path / "mallory.py", tmp_path / "alice.py"
    mallory.write_text(PTH_ATTACK.format(venv=str(venv)))
    alice.write_text(ALICE)
    results = _grade_each(tmp_path, [mallory, alice], sandbox=False, python=python)
    assert _score(results["alice"]) == 3.0                 # the escape is real without a sandbox
    for pth in venv.rglob("zz_grade_for_alice.pth"):
        pth.unlink()
    results = _grade_each(tmp_path, [mallory, alice], sandbox=True, python=python)
    assert _score(results["mallory"]) == 1.0 and _score(results["alice"]) == 0.0
    assert not list(venv.rglob("zz_grade_for_alice.pth"))


TORCH_SHADOW = '''
from pathlib import Path
(Path(__file__).parent / "torch.py").write_text("raise ImportError('sabotaged by a classmate')\\n")
def add(a, b): return a + b
'''
BOB = '''
import torch
def add(a, b): return int(torch.tensor(a) + torch.tensor(b))
def square(x): return int(torch.tensor(x) ** 2)
'''


@pytest.mark.slow
def test_a_torch_py_left_beside_the_submission_does_not_reach_a_classmate(tmp_path):
    """Unsandboxed, the worker runs in the class folder with it first on sys.path: a torch.py written there by
    mallory is what bob's ``import torch`` finds, and bob's 2 points become 0. In the sandbox mallory writes into
    a private copy of her own folder, which vanishes with it."""
    folder = tmp_path / "class"
    folder.mkdir()
    mallory, bob = folder / "mallory.py", folder / "bob.py"
    mallory.write_text(TORCH_SHADOW)
    bob.write_text(BOB)
    alone = _score(_grade_each(tmp_path, [bob], sandbox=True)["bob"])
    assert alone == 2.0
    assert _score(_grade_each(tmp_path, [mallory, bob], sandbox=False)["bob"]) == 0.0    # real without a sandbox
    (folder / "torch.py").unlink()
    results = _grade_each(tmp_path, [mallory, bob], sandbox=True)
    assert _score(results["bob"]) == alone and not (folder / "torch.py").exists()


# -- issue 53: the grader's current folder and PYTHONPATH are not in the view -----------------------------------
KEY_COPIER = '''
from pathlib import Path

def kl_normal(mu, log_sigma):                  # the starter's, unchanged
    raise NotImplementedError

for path in {paths!r}:                         # the answer key and a classmate's file, where the grader ran
    try:
        exec(Path(path).read_text())
        break
    except OSError:
        pass
for name in ("answer_key", "alice"):          # or as modules, where the grader's sys.path has them
    try:
        exec(f"from {{name}} import kl_normal")
        break
    except ImportError:
        pass
'''


def _course_folder(tmp_path):
    """A course folder holding the answer key, a folder of classmates on PYTHONPATH, and mallory's submission that
    copies whichever of them it can read."""
    course, classmates = tmp_path / "course", tmp_path / "classmates"
    (course / "submissions").mkdir(parents=True)
    classmates.mkdir()
    solution = (ROOT / "zoo" / "homework" / "solutions" / "bernoulli_vae.py").read_text()
    (course / "answer_key.py").write_text(solution)
    (classmates / "alice.py").write_text(solution)
    mallory = course / "submissions" / "mallory.py"
    mallory.write_text(KEY_COPIER.format(paths=[str(course / "answer_key.py"), str(classmates / "alice.py")]))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), str(classmates)]))
    return course, mallory, env


def _kl_points(course, mallory, env, entry_point, *flags):
    """mallory's points on kl_closed_form (15), graded from the course folder through ``entry_point``."""
    run = subprocess.run([*entry_point, "grade", "bernoulli_vae", str(mallory), "--only", "kl_closed_form",
                          "--json", "r.json", *flags], cwd=course, env=env, capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr
    return json.loads((course / "r.json").read_text())["score"]


@pytest.mark.parametrize("entry_point", [pytest.param(["pyro-zoo"], marks=pytest.mark.slow),   # two grades, ~25 s
                                         [sys.executable, "-m", "zoo"]], ids=["pyro-zoo", "python-m"])
def test_the_answer_key_in_the_graders_folder_or_on_pythonpath_is_not_in_the_view(tmp_path, entry_point):
    """`python -m zoo` puts the current folder first on sys.path, and PYTHONPATH's folders follow: the sandbox used
    to bind every sys.path folder, so a submission graded from a course folder read the answer key there (or a
    classmate's file in a PYTHONPATH folder) and scored full marks. Only the Python environment and the zoo are in
    the view now, through both entry points; without the sandbox the copy is real."""
    course, mallory, env = _course_folder(tmp_path)
    assert _kl_points(course, mallory, env, entry_point) == 0
    if entry_point[0] == "pyro-zoo":
        assert _kl_points(course, mallory, env, entry_point, "--unsafe-no-sandbox") == 15


def test_the_view_holds_where_the_requirements_are_installed_not_the_callers_folders(tmp_path, monkeypatch):
    """A requirement installed with `pip install --target` in a folder on PYTHONPATH is bound and put on the worker's
    PYTHONPATH; a course folder on PYTHONPATH and the current folder (sys.path[0] under `python -m`) are not, even
    when the current folder is on sys.path twice."""
    from zoo.homework import sandbox
    target, course, here = tmp_path / "target", tmp_path / "course", tmp_path / "here"
    for folder in (target, course, here):
        folder.mkdir()
    (target / "torch-99.0.dist-info").mkdir()              # what pip writes for torch into a --target folder
    (target / "torch-99.0.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: torch\nVersion: 99.0\n")
    (course / "answer_key.py").write_text("")
    monkeypatch.chdir(here)
    monkeypatch.setattr(sys, "path", [str(here), str(course), str(target), *sys.path, str(here)])
    folders = sandbox.dependency_folders()
    assert str(target) in folders and str(target) in sandbox.python_path()
    assert not {str(course), str(here)} & set(folders)
    command = sandbox.command(["python"], Path("/elsewhere/sub.py"), 3, {})
    view = {command[i + 1] for i, a in enumerate(command) if a == "--ro-bind"}
    assert str(target) in view and not {str(course), str(here)} & view


def test_an_installed_zoo_binds_its_whole_environment(monkeypatch):
    """Installed with `pip install pyro-zoo`, the zoo's root is site-packages: the view used to leave out the zoo's
    root and every folder above it (meant for a checkout), so the standard library and torch were missing and every
    student's selfcheck failed with "No module named 'torch'". Installed, the environment is bound whole; from a
    checkout, the checkout and the folders above it still are not."""
    import sysconfig

    from zoo.homework import sandbox
    purelib = Path(sysconfig.get_paths()["purelib"]).resolve()
    stdlib = Path(sysconfig.get_paths()["stdlib"]).resolve()

    def covered(path, folders):
        return any(Path(f) == path or Path(f) in path.parents for f in folders)
    monkeypatch.setattr(sandbox, "_zoo_root", lambda: purelib)
    folders = sandbox._python_folders()
    assert covered(purelib, folders) and covered(stdlib, folders), folders
    monkeypatch.setattr(sandbox, "_zoo_root", lambda: ROOT)
    assert not any(Path(f) == ROOT or Path(f) in ROOT.parents for f in sandbox._python_folders())


@pytest.mark.slow
def test_a_student_grades_with_a_pip_installed_zoo(tmp_path):
    """The students' path end to end: the zoo installed (not editable) into a virtual environment that sees this
    one's packages, the reference solution graded from another folder in the sandbox: full marks on a check."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True)
    python = venv / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", str(ROOT)],
                   check=True, cwd=tmp_path, capture_output=True)
    solution = ROOT / "zoo" / "homework" / "solutions" / "bernoulli_vae.py"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    where = subprocess.run([str(python), "-c", "import zoo; print(zoo.__file__)"], cwd=tmp_path, env=env,
                           capture_output=True, text=True, check=True).stdout
    assert str(venv) in where, where                  # the installed copy, not this checkout
    graded = subprocess.run([str(python), "-m", "zoo", "grade", "bernoulli_vae", str(solution), "--seed", "1",
                             "--only", "kl_closed_form"], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=600)
    assert graded.returncode == 0 and "15 / 15" in graded.stdout, graded.stdout + graded.stderr


# -- issue 53: every writable place and the sandbox's memory are capped -------------------------------------------
FILL_CHECKS = '''
def check_places(sub, ctx):
    return " ".join(f"{place}={sub.call('fill', place)}" for place in PLACES)

def check_unguarded(sub, ctx):
    sub.call("fill_unguarded")

def check_after(sub, ctx):
    assert sub.call("add", 2, 3) == 5, "add(2, 3) is not 5"
'''
FILL = '''
import os
from pathlib import Path
CHUNK = 64 * 2 ** 20                           # files under the file-size limit, so that only the mount's cap binds

def fill(place):
    """Bytes this process wrote into ``place`` before the first error."""
    files = []
    try:
        for i in range(64):
            files.append(Path(place) / f"pyrozoo_fill_{i}")
            with open(files[-1], "wb") as f:
                f.write(b"x" * CHUNK)
    except OSError:
        pass
    written = sum(path.stat().st_size for path in files if path.exists())
    for path in files:
        try:
            path.unlink()
        except OSError:
            pass
    return written

def fill_unguarded():
    for i in range(64):
        Path(f"/tmp/pyrozoo_fill_{i}").write_bytes(b"x" * CHUNK)

def add(a, b):
    return a + b
'''


def _grade_toy(tmp_path, checks_source: str, names, submission: str):
    """Grade ``submission`` in the sandbox on a toy assignment whose checks ``check_NAME`` are ``checks_source``."""
    from zoo.homework.base import Assignment, Check
    from zoo.homework.grader import grade
    module = f"issue53_checks_{tmp_path.name}"
    (tmp_path / f"{module}.py").write_text(checks_source)
    sys.path.insert(0, str(tmp_path))
    try:
        hw = Assignment("toy", "toy", package=module, checks=tuple(
            Check(name, 1, name, f"{module}:check_{name}", timeout=60) for name in names))
        (tmp_path / "sub.py").write_text(submission)
        return grade(hw, tmp_path / "sub.py")
    finally:
        sys.path.remove(str(tmp_path))


def test_every_writable_place_in_the_sandbox_is_capped_and_the_rest_is_read_only(tmp_path):
    """/tmp, /submission and /dev/shm take at most DISK_BYTES each (and nearly that much); the root of the view,
    /etc, /root and /dev, tmpfs of half the machine's memory in bubblewrap, used to take whatever was written and
    are read-only now. A submission that fills a place past its cap loses that check with one line, and the grade
    goes on."""
    from zoo.homework.sandbox import DISK_BYTES, WRITABLE
    read_only = ("/", "/etc", "/root", "/dev", str(ROOT / "zoo" / "homework" / "solutions"))
    places = (*WRITABLE, *read_only)
    result = _grade_toy(tmp_path, f"PLACES = {places!r}\n" + FILL_CHECKS, ("places", "unguarded", "after"), FILL)
    places_check, unguarded, after = result.checks
    assert places_check.passed, places_check.message
    written = dict(item.rsplit("=", 1) for item in places_check.message.split())
    for place in WRITABLE:
        assert DISK_BYTES - 64 * 2 ** 20 < int(written[place]) <= DISK_BYTES, (place, written)
    assert all(int(written[place]) == 0 for place in read_only), written
    assert unguarded.status == "error" and "No space left on device" in unguarded.message, unguarded
    assert "\n" not in unguarded.message and after.passed, result.checks


HOLD_CHECKS = '''
def check_anonymous(sub, ctx):
    sub.call("hold", "anonymous")

def check_memfd(sub, ctx):
    sub.call("hold", "memfd")

def check_after(sub, ctx):
    assert sub.call("add", 2, 3) == 5, "add(2, 3) is not 5"
'''
HOLD = '''
import os
HELD = []

def hold(kind):
    """1 GiB: in this process's memory, or in memory files (counted by no rlimit)."""
    for _ in range(16):
        if kind == "anonymous":
            HELD.append(b"x" * 64 * 2 ** 20)
        else:
            fd = os.memfd_create("held")
            os.write(fd, b"x" * 64 * 2 ** 20)
            HELD.append(fd)
    return "held"

def add(a, b):
    return a + b
'''


def test_the_sandboxs_memory_is_capped_where_a_cgroup_can_be_made(tmp_path, monkeypatch):
    """A sandbox used to hold whatever memory it took (the address-space limit binds each process, and not memory
    files, shared memory or tmpfs pages); in a memory cgroup of MEMORY_BYTES (here 256 MiB) a submission that holds
    1 GiB, in its own memory or in memory files, is stopped with one line, and the grade goes on."""
    from zoo.homework import sandbox
    if sandbox.MemoryCgroup.available() is None:
        pytest.skip("no memory cgroup can be made here (cgroup v2 without a delegated memory controller, or read-only)")
    monkeypatch.setattr(sandbox, "MEMORY_BYTES", 256 * 2 ** 20)
    result = _grade_toy(tmp_path, HOLD_CHECKS, ("anonymous", "memfd", "after"), HOLD)
    for check in result.checks[:2]:
        assert check.status == "crashed" and "ran out of memory" in check.message and "256 MiB" in check.message, check
    assert result.checks[2].passed, result.checks[2]
