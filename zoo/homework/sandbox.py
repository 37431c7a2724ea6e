"""The sandbox each submission's worker runs in: bubblewrap (``bwrap``), the tool Flatpak uses.

A grade of a whole class in one environment (``pyro-zoo grade HW submissions/alice.py``, then the next
student) must not let one submission reach the grader, a classmate or a later grade. The worker is
started as ``bwrap [the view below] -- python _worker.py /submission/NAME.py FD`` with:

- **its own namespaces** (``--unshare-all``: user, pid, network, IPC, UTS, cgroup) and ``--die-with-parent``:
  no network; its ``/proc`` shows only its own processes (not the grader's command line, not its results
  path); when the grader kills the sandbox, everything in its pid namespace ends, whatever it double-forked,
  detached, or left with a main thread exited;
- **its own mount view, read-only** except two small ``tmpfs``: ``/usr`` and the system's libraries, the Python
  environment (:func:`_python_folders`: the interpreter's prefixes, their standard library and site-packages, and
  the folders where the zoo's requirements are installed, never a folder that is on ``sys.path`` only because the
  grader was started there or because ``PYTHONPATH`` names it, such as a course folder holding the answer key), the
  zoo's own packages with ``zoo/homework/solutions`` hidden, and a private copy of *only* this submission in the
  empty folder ``/submission`` (its working folder, first on ``sys.path``). A ``.pth`` file written into site-packages, a
  ``torch.py`` left beside the submission, a rewritten results file: each write fails or vanishes with the
  sandbox. Classmates' files, the grader's results path and the instructor's home are not in the view;
- **limits**, set by the worker before it imports the submission (:data:`LIMITS`): address space, file size,
  processes (for a grader that is not root: the kernel exempts root's uid from the process limit), open
  files, no core dumps; and ``/tmp`` and ``/submission`` are ``tmpfs`` of :data:`DISK_BYTES` each.

The user inside is ``nobody`` (65534) in a user namespace without capabilities. Run by root, that uid is
root's own outside (a user namespace maps to its creator), so the sandbox can read root-owned files of its
view (system files, the zoo's public source); it can write none of them. What else holds as root and what
does not: ``INSTRUCTORS.md``, "Grading as root".

:func:`refusal` says why no sandbox can be made here (no ``bwrap``, user namespaces switched off): the grader
then refuses to grade unless the instructor passes ``--unsafe-no-sandbox``.
"""
from __future__ import annotations

import functools
import os
import re
import shutil
import site
import subprocess
import sys
import sysconfig
from pathlib import Path
from typing import Dict, List, Optional, Set, Tuple

__all__ = ["refusal", "command", "dependency_folders", "python_path", "LIMITS", "DISK_BYTES", "REQUIREMENTS",
           "SUBMISSION_FOLDER"]

#: The folder inside the sandbox that holds the private copy of the submission.
SUBMISSION_FOLDER = "/submission"
#: Size of each writable tmpfs in the sandbox (``/tmp`` and the submission's folder).
DISK_BYTES = 256 * 2 ** 20
#: Resource limits the worker sets on itself before it imports the submission (``resource`` names).
LIMITS = {"RLIMIT_AS": 8 * 2 ** 30, "RLIMIT_FSIZE": DISK_BYTES, "RLIMIT_NPROC": 256, "RLIMIT_NOFILE": 1024,
          "RLIMIT_CORE": 0}
#: System folders bound read-only when they exist (symbolic links, as /bin -> usr/bin, are kept as links).
_SYSTEM = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc/ld.so.cache", "/etc/ld.so.conf",
           "/etc/ld.so.conf.d", "/etc/alternatives", "/etc/localtime", "/etc/passwd", "/etc/group",
           "/etc/nsswitch.conf")
_NOBODY = "65534"
#: The zoo's requirements (setup.cfg) that the worker and a submission import, by distribution name: where the zoo
#: is not installed (a checkout on PYTHONPATH), the folders where these and theirs live are bound into the view.
REQUIREMENTS = ("pyro-ppl", "torch", "numpy")
#: Modules looked up where they are imported from, beside their distributions' metadata (an editable install).
_MODULES = ("torch", "pyro", "numpy")


@functools.lru_cache(maxsize=None)
def refusal() -> Optional[str]:
    """None when a sandbox can be made here; otherwise why not, in one line."""
    if not sys.platform.startswith("linux"):
        return f"the sandbox needs Linux (bubblewrap), not {sys.platform}"
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        return "bubblewrap (bwrap) is not installed (Debian/Ubuntu: apt-get install bubblewrap)"
    try:
        run = subprocess.run([bwrap, "--unshare-all", "--unshare-user", "--uid", _NOBODY, "--gid", _NOBODY,
                              *_view_arguments(), "--", sys.executable, "-c", "pass"],
                             capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError) as e:
        return f"bubblewrap cannot run here: {e}"
    if run.returncode != 0:
        reason = (run.stderr.strip().splitlines() or [f"exit code {run.returncode}"])[-1]
        return f"bubblewrap cannot make a sandbox here ({reason}); user namespaces may be switched off"
    return None


def _zoo_root() -> Path:
    return Path(__file__).resolve().parents[2]


def _caller_folders() -> Set[Path]:
    """The folders on ``sys.path`` because of where the grader was started, not because Python or the zoo needs them:
    the current folder (``sys.path[0]`` under ``python -m``, ``''`` under ``-c``) and the script's folder."""
    try:
        here = Path.cwd().resolve()
    except OSError:                              # the folder was removed: nothing of it can be bound
        return {Path(entry).resolve() for entry in sys.path[:1] if entry}
    return {here, Path(sys.path[0] or here).resolve()} if sys.path else {here}


def _requirement_names(requires: Optional[List[str]]) -> List[str]:
    """The distribution names of ``Requires-Dist`` lines, leaving out those of extras (``; extra == "dev"``)."""
    names = []
    for line in requires or ():
        name, _, marker = line.partition(";")
        match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", name)
        if match and "extra" not in marker:
            names.append(match.group(1))
    return names


def dependency_folders() -> List[str]:
    """The folders where what the worker imports is installed: each of the zoo's requirements (its installed
    metadata, or :data:`REQUIREMENTS` where the zoo runs from a checkout), and each of theirs, lives in the folder
    that holds its metadata; ``torch``, ``pyro`` and ``numpy`` are also looked up as modules (an editable install
    keeps its metadata in site-packages and its code elsewhere). A ``pip install --target`` folder on
    ``PYTHONPATH`` is one of them; the caller's current folder and a script's folder are never searched, so a
    folder on ``sys.path`` for another reason (a course folder on ``PYTHONPATH``) is not one. In ``sys.path``
    order, the zoo's own checkout left out."""
    search = [str(Path(entry).resolve()) for entry in sys.path if entry and Path(entry).resolve() not in
              _caller_folders()]
    return list(_dependency_folders(tuple(search), str(_zoo_root())))


@functools.lru_cache(maxsize=8)
def _dependency_folders(search: Tuple[str, ...], root: str) -> Tuple[str, ...]:
    import importlib.machinery
    import importlib.metadata as metadata
    found: Set[Path] = set()
    own = next(iter(metadata.distributions(name="pyro-zoo", path=list(search))), None)
    pending = _requirement_names(own.requires) if own is not None else list(REQUIREMENTS)
    seen: Set[str] = set()
    while pending:
        name = re.sub(r"[-_.]+", "_", pending.pop()).lower()   # as wheels name their metadata folders
        if name in seen:
            continue
        seen.add(name)
        dist = next(iter(metadata.distributions(name=name, path=list(search))), None)
        if dist is None:
            continue
        found.add(Path(str(dist.locate_file(""))).resolve())
        pending += _requirement_names(dist.requires)
    for module in _MODULES:
        spec = importlib.machinery.PathFinder.find_spec(module, list(search))
        if spec is not None and spec.origin not in (None, "namespace"):
            origin = Path(spec.origin).resolve()
            found.add(origin.parent.parent if spec.submodule_search_locations else origin.parent)
    return tuple(entry for entry in search if Path(entry) in found and Path(entry) != Path(root))


def _environment_folders() -> List[Path]:
    """The Python environment: the interpreter's prefixes (its standard library and site-packages), the folders
    ``sysconfig`` and ``site`` name (the user site where the grader uses it) and :func:`dependency_folders`."""
    paths = sysconfig.get_paths()
    user_site = site.getusersitepackages() if site.ENABLE_USER_SITE else None
    candidates = [sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix,
                  str(Path(sys.executable).resolve().parent),
                  *(paths.get(key) for key in ("stdlib", "platstdlib", "purelib", "platlib")),
                  *site.getsitepackages(), *([user_site] if user_site in sys.path else []), *dependency_folders()]
    return [Path(c).resolve() for c in candidates if c]


def _python_folders() -> List[str]:
    """:func:`_environment_folders` to bind, the outermost of nested ones; never ``/``, the zoo's checkout or a
    folder above it (the zoo's packages are bound on their own, without the solutions)."""
    root = _zoo_root()
    folders: List[str] = []
    for path in _environment_folders():
        if not path.is_dir() or path == Path("/") or path == root or path in root.parents:
            continue
        if not any(Path(f) == path or Path(f) in path.parents for f in folders):
            folders = [f for f in folders if path not in Path(f).parents] + [str(path)]
    return folders


def python_path() -> List[str]:
    """The folders the worker needs on ``PYTHONPATH`` besides the zoo: the :func:`dependency_folders` outside the
    interpreter's prefixes, which its Python does not find by itself (a ``pip install --target`` folder; the user
    site, since the worker's ``HOME`` is another), in ``sys.path`` order."""
    prefixes = {Path(p).resolve() for p in (sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix)}
    return [f for f in dependency_folders() if not any(p == Path(f) or p in Path(f).parents for p in prefixes)]


def _view_arguments() -> List[str]:
    """The read-only view: system folders, the Python environment, the zoo's packages without the solutions."""
    args = []
    for path in _SYSTEM:
        if os.path.islink(path):
            args += ["--symlink", os.readlink(path), path]
        elif os.path.exists(path):
            args += ["--ro-bind", path, path]
    for folder in _python_folders():
        args += ["--ro-bind", folder, folder]
    root = _zoo_root()
    for package in ("zoo", "guides"):
        if (root / package).is_dir():
            args += ["--ro-bind", str(root / package), str(root / package)]
    if (root / "zoo" / "homework" / "solutions").is_dir():
        args += ["--tmpfs", str(root / "zoo" / "homework" / "solutions")]
    return args + ["--proc", "/proc", "--dev", "/dev"]


def command(worker: List[str], submission: Path, source_fd: int, env: Dict[str, str]) -> List[str]:
    """The bwrap command line that runs ``worker`` (its argv, the submission named at its place in the sandbox)
    on a private copy of ``submission``, read by bwrap from ``source_fd``; ``env`` is the worker's whole
    environment."""
    inside = f"{SUBMISSION_FOLDER}/{submission.name}"
    args = [shutil.which("bwrap") or "bwrap", "--unshare-all", "--unshare-user", "--uid", _NOBODY, "--gid", _NOBODY,
            "--cap-drop", "ALL", "--die-with-parent", "--new-session",
            "--size", str(DISK_BYTES), "--tmpfs", "/tmp",             # first: the view may lie under /tmp
            *_view_arguments(), "--size", str(DISK_BYTES), "--tmpfs", SUBMISSION_FOLDER,
            "--perms", "0644", "--file", str(source_fd), inside, "--chdir", SUBMISSION_FOLDER, "--clearenv"]
    for name, value in env.items():
        args += ["--setenv", name, value]
    return args + ["--", *[inside if a == str(submission) else a for a in worker]]
