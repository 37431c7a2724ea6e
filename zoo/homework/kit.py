"""The homework kit's folders and files: the student's folder, the reference solution, the Gradescope bundle.

These are what ``pyro-zoo homework init | solution | bundle`` call (:mod:`zoo.cli` only parses
flags). Each refuses bad input (an unknown assignment, a non-empty folder or a path under a file,
an existing file) with a one-line :class:`~zoo.core.errors.ZooError` before it writes anything.

**Reference solutions are not in the installed package** (students install pyro-zoo for their
self-check): they live in ``zoo/homework/solutions/<name>.py`` of a source checkout, a folder
without ``__init__.py`` that setup.cfg leaves out of the wheel. ``homework solution`` copies one
from there and refuses, in one line, where there is no checkout.

The **Gradescope bundle** is the zip Gradescope's "Configure Autograder" page takes: at its root
``setup.sh`` (installs the pinned Python packages the grader was made with and creates the
unprivileged user the submission runs as) and ``run_autograder`` (grades
``/autograder/submission`` and writes ``/autograder/results/results.json``), plus a frozen copy of
the zoo's source under ``pyro-zoo/`` (the graded assignment only, no reference solution) and
``bundle.json`` recording what was frozen. The zip does not change when the zoo does: it is the
deadline's grader. See ``INSTRUCTORS.md``.
"""
from __future__ import annotations

import datetime
import importlib
import importlib.metadata
import io
import json
import platform
import re
import shlex
import subprocess
import zipfile
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence

from zoo.core.errors import ZooError
from zoo.homework import ASSIGNMENTS, get_assignment
from zoo.homework.base import Assignment

__all__ = ["assignment_folder", "solution_path", "selfcheck", "list_text", "init_student_folder", "write_solution",
           "make_bundle", "STUDENT_FILES", "BUNDLE_PACKAGES", "STUDENT_USER"]

#: What ``homework init`` writes into the student's folder.
STUDENT_FILES = ("handout.md", "starter.py", "selfcheck.py")
#: The Python packages the bundle's setup.sh installs, pinned at the versions installed here.
BUNDLE_PACKAGES = ("pyro-ppl", "numpy", "scikit-learn", "tqdm", "matplotlib")
_SOURCE_PACKAGES = ("zoo", "guides")
#: The unprivileged user the bundle runs submissions as (setup.sh creates it).
STUDENT_USER = "pyrozoo-student"


def assignment_folder(hw: Assignment) -> Path:
    """The folder of the assignment's package (handout.md, starter.py, checks.py, ...)."""
    return Path(importlib.import_module(hw.package).__file__).parent


def solution_path(hw: Assignment) -> Path:
    """The reference solution of ``hw`` in this source checkout; a one-line ZooError where there is none
    (an installed pyro-zoo does not carry the solutions)."""
    path = Path(__file__).resolve().parent / "solutions" / f"{hw.name}.py"
    if not path.is_file():
        raise ZooError(f"the reference solution of {hw.name} is not in an installed pyro-zoo (students install it "
                       f"too); run this from a source checkout of pyro-zoo, which has zoo/homework/solutions/")
    return path


def list_text() -> str:
    """``pyro-zoo homework list``: per assignment, a line with its title and totals, then its checks by name
    with their points (what ``pyro-zoo grade`` reports them as). Hidden checks are counted, not named: students
    run this too."""
    if not ASSIGNMENTS:
        return "no assignments installed"
    lines = []
    width = max(len(n) for n in ASSIGNMENTS)
    for name, hw in ASSIGNMENTS.items():
        shown = [c for c in hw.checks if not c.hidden]
        hidden = [c for c in hw.checks if c.hidden]
        note = f"; hidden: {len(hidden)} more, {sum(c.points for c in hidden):g} points" if hidden else ""
        lines.append(f"{name.ljust(width)}  {hw.title} ({len(shown)} checks, {sum(c.points for c in shown):g} "
                     f"points{note})")
        check_width = max(len(c.name) for c in shown) if shown else 0
        lines += [f"    {c.name.ljust(check_width)}  {c.points:g} points" for c in shown]
    return "\n".join(lines)


def _empty_target(folder: Path) -> None:
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise ZooError(f"{folder} is not an empty folder; give a new or empty folder so nothing is overwritten")
    for parent in folder.absolute().parents:
        if parent.exists():
            if not parent.is_dir():
                raise ZooError(f"{folder} is under {parent}, which is a file; give a folder path")
            break


def _write_files(hw: Assignment, folder: Path, names) -> List[Path]:
    source = assignment_folder(hw)
    missing = [n for n in names if not (source / n).is_file()]
    if missing:
        raise ZooError(f"the installed assignment {hw.name} lacks {', '.join(missing)}; reinstall pyro-zoo")
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name in names:
        (folder / name).write_text((source / name).read_text())
        written.append(folder / name)
    return written


def init_student_folder(name: str, folder) -> List[Path]:
    """Write the student's folder: ``handout.md``, ``starter.py``, ``selfcheck.py``."""
    hw = get_assignment(name)
    folder = Path(folder)
    _empty_target(folder)
    return _write_files(hw, folder, STUDENT_FILES)


def write_solution(name: str, folder) -> List[Path]:
    """Write the instructor's reference solution, ``solution.py``, into ``folder`` (from a source checkout)."""
    hw = get_assignment(name)
    folder = Path(folder)
    _empty_target(folder)
    source = solution_path(hw)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "solution.py").write_text(source.read_text())
    return [folder / "solution.py"]


def _pinned(package: str) -> Optional[str]:
    try:
        version = importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None
    return f"{package}=={version.split('+')[0]}"


def _git_commit(root: Path) -> Optional[str]:
    """The commit checked out at ``root``, or None when ``root`` is not in a git clone.

    ``safe.directory`` is set for this one command: git refuses ("dubious ownership") a clone owned by
    another user, e.g. one made on the host and built in a container as root, and we only read it."""
    try:
        out = subprocess.run(["git", "-c", f"safe.directory={root}", "-C", str(root), "rev-parse", "HEAD"],
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    commit = out.stdout.strip()
    return commit if out.returncode == 0 and re.fullmatch(r"[0-9a-f]{40,64}", commit) else None


def _setup_sh(requirements: List[str]) -> str:
    torch = _pinned("torch") or "torch"
    return f"""#!/usr/bin/env bash
# Gradescope runs this once when it builds the autograder image (Ubuntu, as root).
set -euo pipefail
apt-get update -qq
apt-get install -y -qq python3 python3-pip procps bubblewrap > /dev/null
# CPU wheels: the grader needs no GPU.
pip3 install --no-cache-dir {shlex.quote(torch)} --index-url https://download.pytorch.org/whl/cpu \\
  || pip3 install --no-cache-dir --break-system-packages {shlex.quote(torch)} --index-url https://download.pytorch.org/whl/cpu
pip3 install --no-cache-dir {' '.join(shlex.quote(r) for r in requirements)} \\
  || pip3 install --no-cache-dir --break-system-packages {' '.join(shlex.quote(r) for r in requirements)}
# The unprivileged user the submissions run as (run_autograder): it cannot read the grader's checks.
id {STUDENT_USER} > /dev/null 2>&1 || useradd --no-create-home --shell /usr/sbin/nologin {STUDENT_USER}
"""


def _run_autograder(hw: Assignment, options: List[str]) -> str:
    grade_options = " ".join(shlex.quote(o) for o in options)
    return f"""#!/usr/bin/env bash
# Gradescope runs this, as root, for every submission. Paths default to Gradescope's; the variables let
# you try the bundle on your own machine (see INSTRUCTORS.md); relative paths are taken from where you are.
set -u
HERE="$(cd "$(dirname "${{BASH_SOURCE[0]}}")" && pwd)"
SOURCE="$HERE/pyro-zoo"
absolute() {{ case "$1" in /*) printf '%s\\n' "$1" ;; *) printf '%s/%s\\n' "$PWD" "$1" ;; esac; }}
SUBMISSION="$(absolute "${{AUTOGRADER_SUBMISSION:-/autograder/submission}}")"
RESULTS="$(absolute "${{AUTOGRADER_RESULTS:-/autograder/results/results.json}}")"
PYTHON="${{AUTOGRADER_PYTHON:-python3}}"
STUDENT="${{AUTOGRADER_STUDENT-{STUDENT_USER}}}"   # the user the submission runs as; empty: grade as this user
export PYTHONDONTWRITEBYTECODE=1         # no readable bytecode of the root-only checks
PRIVATE="$(mktemp -d)"                    # mode 700: the grade is written here first
AS_USER=()
# Each submission in a bubblewrap sandbox where the image allows one; Gradescope's own container (one per
# submission, thrown away after it) is the sandbox where it does not.
SANDBOX=()
if ! bwrap --unshare-all --unshare-user --ro-bind / / true > /dev/null 2>&1; then
  SANDBOX=(--unsafe-no-sandbox)
fi
if [ -n "$STUDENT" ] && [ "$(id -u)" = 0 ] && id "$STUDENT" > /dev/null 2>&1; then
  # The submission runs as $STUDENT; the grader's checks and this bundle's files are root's only.
  chmod 600 "$HERE/bundle.json" "$HERE/setup.sh"
  find "$SOURCE" -name checks.py -exec chmod 600 {{}} +
  chmod -R a+rX "$SUBMISSION"
  AS_USER=(--as-user "$STUDENT")
fi
cd "$SOURCE"
if ! "$PYTHON" -m zoo grade {hw.name} "$SUBMISSION" --gradescope --results "$PRIVATE/results.json" \\
     {grade_options} ${{AS_USER[@]+"${{AS_USER[@]}}"}} ${{SANDBOX[@]+"${{SANDBOX[@]}}"}} 2> "$PRIVATE/error.txt"; then
  # The grader refused its input (e.g. no .py file uploaded): give the student the reason, 0 points.
  "$PYTHON" - "$PRIVATE/results.json" "$PRIVATE/error.txt" <<'EOF'
import json, sys
reason = open(sys.argv[2]).read().strip().splitlines()
json.dump({{"score": 0, "output": reason[-1] if reason else "the grader could not read the submission",
           "tests": [], "visibility": "visible"}}, open(sys.argv[1], "w"))
EOF
fi
# Nothing the submission started may outlive the grade: every process of its user is killed first.
if [ ${{#AS_USER[@]}} -gt 0 ]; then
  for _ in $(seq 100); do pkill -KILL -u "$STUDENT" || break; sleep 0.1; done
fi
mkdir -p "$(dirname "$RESULTS")"
cp "$PRIVATE/results.json" "$RESULTS.partial" && mv -f "$RESULTS.partial" "$RESULTS"
rm -rf "$PRIVATE"
"""


def _source_files(root: Path, hw: Assignment) -> Dict[str, bytes]:
    """The zoo's source for the bundle: no reference solution, and of the assignments only ``hw``."""
    homework = root / "zoo" / "homework"
    others = {homework / name for name in ASSIGNMENTS if name != hw.name} | {homework / "solutions"}
    files = {}
    for package in _SOURCE_PACKAGES:
        for path in sorted((root / package).rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts and path.suffix in (".py", ".md", ".json") \
                    and not any(folder in path.parents for folder in others):
                files[f"pyro-zoo/{path.relative_to(root).as_posix()}"] = path.read_bytes()
    return files


def make_bundle(name: str, zip_path, *, hidden: bool = False, points: Optional[Mapping[str, float]] = None,
                timeout_scale: float = 1.0, overwrite: bool = False) -> Path:
    """Write the Gradescope autograder zip for assignment ``name``.

    Arguments:
        name: the assignment.
        zip_path: the zip to write (refused if it exists, unless ``overwrite``).
        hidden: switch the hidden checks on (Gradescope shows them ``after_published``).
        points: new points for some checks, ``{check name: points}``.
        timeout_scale: multiplies every check's time limit (a slow grading machine).
    """
    from zoo.homework.grader import with_points
    hw = with_points(get_assignment(name), points)        # refuses unknown check names
    zip_path = Path(zip_path)
    if zip_path.suffix != ".zip":
        raise ZooError(f"the bundle {zip_path} should be a .zip file (Gradescope takes a zip)")
    if zip_path.exists() and not overwrite:
        raise ZooError(f"{zip_path} exists; give a new file name (each deadline gets its own bundle)")
    if not zip_path.parent.is_dir():
        raise ZooError(f"no folder {zip_path.parent} for the bundle; create it first")
    if timeout_scale <= 0:
        raise ZooError(f"timeout_scale must be > 0, got {timeout_scale}")
    import zoo
    root = Path(zoo.__file__).resolve().parents[1]
    options = (["--hidden"] if hidden else []) + (["--timeout-scale", f"{timeout_scale:g}"] if timeout_scale != 1 else [])
    if points:
        options += ["--points", ",".join(f"{k}={v:g}" for k, v in points.items())]
    requirements = [r for r in (_pinned(p) for p in BUNDLE_PACKAGES) if r]
    manifest = {"assignment": hw.name, "title": hw.title, "pyro_zoo": zoo.__version__, "git_commit": _git_commit(root),
                "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                "python": platform.python_version(), "hidden_checks_on": hidden, "grade_options": options,
                "torch": _pinned("torch"), "requirements": requirements,
                "checks": [{"name": c.name, "points": c.points, "hidden": c.hidden, "timeout": c.timeout}
                           for c in hw.checks if hidden or not c.hidden],
                "max_score": sum(c.points for c in hw.checks if hidden or not c.hidden)}
    executable = {"setup.sh", "run_autograder"}
    entries = {"setup.sh": _setup_sh(requirements).encode(), "run_autograder": _run_autograder(hw, options).encode(),
               "bundle.json": (json.dumps(manifest, indent=2) + "\n").encode(), **_source_files(root, hw)}
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as z:
        for arcname, data in entries.items():
            info = zipfile.ZipInfo(arcname, date_time=(2020, 1, 1, 0, 0, 0))
            info.external_attr = (0o755 if arcname in executable else 0o644) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            z.writestr(info, data)
    zip_path.write_bytes(buffer.getvalue())
    return zip_path


def selfcheck(assignment: str, argv: Sequence[str], starter: Path) -> int:
    """What a student's ``selfcheck.py`` runs: grade ``argv[0]`` (default: the ``starter.py`` beside it) on the
    visible checks, print the table, return 0."""
    from zoo.homework.grader import WorkerSettings, grade
    from zoo.homework.sandbox import refusal
    # a student grading their own code needs no sandbox, and may have none (macOS, no bubblewrap)
    result = grade(assignment, Path(argv[0]) if argv else starter, worker=WorkerSettings(sandbox=refusal() is None))
    print(result.table())
    return 0

