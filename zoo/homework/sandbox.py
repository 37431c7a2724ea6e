"""The sandbox each submission's worker runs in: bubblewrap (``bwrap``), the tool Flatpak uses.

A grade of a whole class in one environment (``pyro-zoo grade HW submissions/alice.py``, then the next
student) must not let one submission reach the grader, a classmate or a later grade. The worker is
started as ``bwrap [the view below] -- python _worker.py /submission/NAME.py FD`` with:

- **its own namespaces** (``--unshare-all``: user, pid, network, IPC, UTS, cgroup) and ``--die-with-parent``:
  no network; its ``/proc`` shows only its own processes (not the grader's command line, not its results
  path); when the grader kills the sandbox, everything in its pid namespace ends, whatever it double-forked,
  detached, or left with a main thread exited;
- **its own mount view, read-only** except two small ``tmpfs``: ``/usr`` and the system's libraries, the Python
  environment (``sys.prefix``, ``sys.base_prefix`` and the folders on ``sys.path``), the zoo's own packages
  with ``zoo/homework/solutions`` hidden, and a private copy of *only* this submission in the empty folder
  ``/submission`` (its working folder, first on ``sys.path``). A ``.pth`` file written into site-packages, a
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
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Optional

__all__ = ["refusal", "command", "LIMITS", "DISK_BYTES", "SUBMISSION_FOLDER"]

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


def _python_folders() -> List[str]:
    """The Python environment: its prefixes and every folder on sys.path outside the zoo's checkout."""
    root = _zoo_root()
    folders = []
    for entry in (sys.prefix, sys.base_prefix, sys.exec_prefix, str(Path(sys.executable).resolve().parent), *sys.path):
        path = Path(entry or ".").resolve()
        if not path.is_dir() or path == Path("/") or path == root or root in path.parents or path in root.parents:
            continue
        if not any(Path(f) == path or Path(f) in path.parents for f in folders):
            folders = [f for f in folders if path not in Path(f).parents] + [str(path)]
    return folders


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
