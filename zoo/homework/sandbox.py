"""The sandbox each submission's worker runs in: bubblewrap (``bwrap``), the tool Flatpak uses.

A grade of a whole class in one environment (``pyro-zoo grade HW submissions/alice.py``, then the next
student) must not let one submission reach the grader, a classmate or a later grade. The worker is
started as ``bwrap [the view below] -- python _worker.py /submission/NAME.py FD`` with:

- **its own namespaces** (``--unshare-all``: user, pid, network, IPC, UTS, cgroup) and ``--die-with-parent``:
  no network; its ``/proc`` shows only its own processes (not the grader's command line, not its results
  path); when the grader kills the sandbox, everything in its pid namespace ends, whatever it double-forked,
  detached, or left with a main thread exited;
- **its own mount view, read-only** except the three small ``tmpfs`` of :data:`WRITABLE`: ``/usr`` and the
  system's libraries, the Python environment (:func:`_python_folders`: the interpreter's prefixes, their
  standard library and site-packages, and the folders where the zoo's requirements are installed, never a folder
  that is on ``sys.path`` only because the grader was started there or because ``PYTHONPATH`` names it, such as a
  course folder holding the answer key), the zoo's own packages with ``zoo/homework/solutions`` hidden, a
  read-only ``/dev``, and a private copy of *only* this submission in the empty folder ``/submission`` (its
  working folder, first on ``sys.path``). A ``.pth`` file written into site-packages, a ``torch.py`` left beside
  the submission, a rewritten results file: each write fails or vanishes with the sandbox. Classmates' files, the
  grader's results path and the instructor's home are not in the view;
- **limits**: ``/tmp``, ``/submission`` and ``/dev/shm`` are ``tmpfs`` of :data:`DISK_BYTES` each (the root of
  the view and ``/dev``, tmpfs of half the machine's memory in bubblewrap, are read-only); where a memory cgroup
  can be made (:class:`MemoryCgroup`), everything the sandbox holds is capped at :data:`MEMORY_BYTES`; and the
  worker sets :data:`LIMITS` on itself before it imports the submission: address space (of each process, which
  does not count tmpfs pages), file size, processes (for a grader that is not root: the kernel exempts root's uid
  from the process limit), open files, no core dumps.

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
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional, Set, Tuple

__all__ = ["refusal", "command", "dependency_folders", "python_path", "MemoryCgroup", "LIMITS", "DISK_BYTES",
           "MEMORY_BYTES", "WRITABLE", "REQUIREMENTS", "SUBMISSION_FOLDER"]

#: The folder inside the sandbox that holds the private copy of the submission.
SUBMISSION_FOLDER = "/submission"
#: Size of each writable tmpfs in the sandbox (:data:`WRITABLE`).
DISK_BYTES = 256 * 2 ** 20
#: The only folders a submission can write to in the sandbox, each a tmpfs of :data:`DISK_BYTES`; everything else in
#: its view is read-only.
WRITABLE = ("/tmp", SUBMISSION_FOLDER, "/dev/shm")
#: The memory of everything in one sandbox (processes, tmpfs pages, shared memory), where a cgroup can be made
#: (:class:`MemoryCgroup`); a reference solution's sandbox holds at most 400 MiB (bernoulli_vae, ppca_three_ways).
MEMORY_BYTES = 2 * 2 ** 30
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


def _installed(root: Path) -> bool:
    """Whether the zoo was installed into the environment (``pip install pyro-zoo``: ``root`` is a site-packages
    folder, which holds nothing of a checkout, the reference solutions left out by ``setup.cfg``) rather than run
    from a checkout or an editable install (``root`` is the checkout, beside its tests and benchmarks)."""
    paths = sysconfig.get_paths()
    packages = [paths.get("purelib"), paths.get("platlib"), *site.getsitepackages()]
    return any(p and Path(p).resolve() == root for p in packages)


def _python_folders() -> List[str]:
    """:func:`_environment_folders` to bind, the outermost of nested ones; never ``/``, nor, where the zoo runs from
    a checkout, the checkout or a folder above it (the zoo's packages are bound on their own, without the
    solutions). An installed zoo lives in site-packages, which is bound with the rest of the environment."""
    root = _zoo_root()
    hidden = [] if _installed(root) else [root, *root.parents]
    folders: List[str] = []
    for path in _environment_folders():
        if not path.is_dir() or path == Path("/") or path in hidden:
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
    """The read-only view: system folders, the Python environment, the zoo's packages without the solutions, a
    read-only ``/dev`` with a ``/dev/shm`` of :data:`DISK_BYTES`."""
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
    solutions = root / "zoo" / "homework" / "solutions"
    if solutions.is_dir():                       # an empty tmpfs over them, read-only: nothing can be written there
        args += ["--tmpfs", str(solutions), "--remount-ro", str(solutions)]
    # bwrap's /dev is a tmpfs of half the machine's memory: read-only, with a tmpfs of its own for shared memory
    return args + ["--proc", "/proc", "--dev", "/dev", "--size", str(DISK_BYTES), "--tmpfs", "/dev/shm",
                   "--remount-ro", "/dev"]


def command(worker: List[str], submission: Path, source_fd: int, env: Dict[str, str]) -> List[str]:
    """The bwrap command line that runs ``worker`` (its argv, the submission named at its place in the sandbox)
    on a private copy of ``submission``, read by bwrap from ``source_fd``; ``env`` is the worker's whole
    environment. The root of the view (bwrap's tmpfs, which holds ``/etc`` and the folders above the binds) is
    read-only; :data:`WRITABLE` are the only places a submission can write to, each a tmpfs of :data:`DISK_BYTES`."""
    inside = f"{SUBMISSION_FOLDER}/{submission.name}"
    args = [shutil.which("bwrap") or "bwrap", "--unshare-all", "--unshare-user", "--uid", _NOBODY, "--gid", _NOBODY,
            "--cap-drop", "ALL", "--die-with-parent", "--new-session",
            "--size", str(DISK_BYTES), "--tmpfs", "/tmp",             # first: the view may lie under /tmp
            *_view_arguments(), "--size", str(DISK_BYTES), "--tmpfs", SUBMISSION_FOLDER,
            "--perms", "0644", "--file", str(source_fd), inside, "--remount-ro", "/",
            "--chdir", SUBMISSION_FOLDER, "--clearenv"]
    for name, value in env.items():
        args += ["--setenv", name, value]
    return args + ["--", *[inside if a == str(submission) else a for a in worker]]


class MemoryCgroup:
    """A memory cgroup that caps everything one sandbox holds at :data:`MEMORY_BYTES`: its processes' memory, the
    pages of its tmpfs, shared memory and memory files, the kernel's memory for its files. Past the cap the kernel's
    out-of-memory killer ends a process of the sandbox (cgroup v2: all of them), and no process outside it.

    Made by :meth:`create` where this process may make one: a child of its own cgroup (cgroup v1's memory
    controller), or a sibling of it (cgroup v2, whose parent must hand the memory controller to its children and let
    this user write there: root, or a delegated systemd unit). The worker is started :meth:`held`, waiting on its
    stdin, :meth:`admit` moves it in and lets it go (so everything it starts is inside), :meth:`remove` removes the
    cgroup once the sandbox is gone."""

    def __init__(self, folder: Path, version: int, limit: int):
        self.folder, self.version, self.limit = folder, version, limit

    @classmethod
    def create(cls, limit: int) -> Optional["MemoryCgroup"]:
        """A new cgroup capped at ``limit`` bytes (no swap), or None where none can be made here."""
        for version, parent in _cgroup_parents():
            try:
                _remove_stale(parent)
                folder = Path(tempfile.mkdtemp(prefix=f"pyro-zoo-{os.getpid()}-", dir=parent))
            except OSError:
                continue
            group = cls(folder, version, limit)
            try:
                if version == 2:
                    (folder / "memory.max").write_text(str(limit))
                    for name, value in (("memory.swap.max", "0"), ("memory.oom.group", "1")):
                        if (folder / name).exists():
                            (folder / name).write_text(value)
                else:
                    (folder / "memory.limit_in_bytes").write_text(str(limit))
                    if (folder / "memory.memsw.limit_in_bytes").exists():     # swap accounting is on
                        (folder / "memory.memsw.limit_in_bytes").write_text(str(limit))
            except OSError:
                group.remove()
                continue
            return group
        return None

    @classmethod
    def available(cls) -> Optional[int]:
        """The cgroup version (1 or 2) a sandbox's memory is capped with here, or None (then only :data:`LIMITS`
        and the tmpfs sizes bound it): a cgroup is made and removed to find out."""
        group = cls.create(2 ** 30)
        if group is None:
            return None
        group.remove()
        return group.version

    @staticmethod
    def held(command: List[str]) -> List[str]:
        """``command``, run once the first line of its stdin arrives (:meth:`admit` sends it)."""
        return ["/bin/sh", "-c", 'read -r _ && exec "$@"', "pyro-zoo-sandbox", *command]

    def admit(self, proc: subprocess.Popen) -> bool:
        """Move ``proc`` (started :meth:`held`) into the cgroup, then let it run; False if it could not be moved
        (it then runs outside, under its rlimits only)."""
        try:
            (self.folder / "cgroup.procs").write_text(str(proc.pid))
            moved = True
        except OSError:
            moved = False
        try:
            proc.stdin.write(b"\n")
            proc.stdin.flush()
        except OSError:
            pass
        return moved

    def out_of_memory(self) -> bool:
        """Whether the out-of-memory killer ended a process of the cgroup."""
        try:
            text = (self.folder / ("memory.events" if self.version == 2 else "memory.oom_control")).read_text()
        except OSError:
            return False
        counts = dict(line.split()[:2] for line in text.splitlines() if len(line.split()) >= 2)
        return int(counts.get("oom_kill", "0")) > 0

    def remove(self) -> None:
        """Remove the cgroup (once the sandbox is gone: a cgroup with a process left cannot be removed)."""
        for _ in range(50):
            try:
                self.folder.rmdir()
                return
            except FileNotFoundError:
                return
            except OSError:
                time.sleep(0.02)                 # its last processes are being reaped


def _cgroup_parents() -> List[Tuple[int, Path]]:
    """Where this process could make a memory cgroup: (version, folder), best first."""
    try:
        mounts = [line.split(" - ") for line in Path("/proc/self/mountinfo").read_text().splitlines()]
        own = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return []
    # (the cgroup path the mount shows as its root, where it is mounted), for v2 and for v1's memory controller
    v2 = next(((m[0].split()[3], m[0].split()[4]) for m in mounts if len(m) == 2 and m[1].startswith("cgroup2 ")),
              None)
    v1 = next(((m[0].split()[3], m[0].split()[4]) for m in mounts if len(m) == 2 and m[1].startswith("cgroup ")
               and "memory" in m[1].split()[-1].split(",")), None)
    parents = []
    for line in own:
        number, controllers, path = line.split(":", 2)
        mount = v2 if number == "0" and controllers == "" else v1 if "memory" in controllers.split(",") else None
        if mount is None or not (path + "/").startswith(mount[0].rstrip("/") + "/"):
            continue
        here = Path(mount[1] + "/" + path[len(mount[0].rstrip("/")):].lstrip("/"))
        if mount is v1:
            parents.append((1, here))
            continue
        for candidate in (here, here.parent):      # a cgroup with processes hands no controller to its children
            if Path(mount[1]) in (candidate, *candidate.parents) and _hands_out_memory(candidate):
                parents.append((2, candidate))
    parents.sort(key=lambda parent: -parent[0])
    return [(version, folder) for version, folder in parents if os.access(folder, os.W_OK | os.X_OK)]


def _hands_out_memory(folder: Path) -> bool:
    try:
        return "memory" in (folder / "cgroup.subtree_control").read_text().split()
    except OSError:
        return False


def _remove_stale(parent: Path) -> None:
    """Remove the empty cgroups that graders which died left in ``parent`` (``pyro-zoo-PID-*``, PID gone)."""
    for folder in parent.glob("pyro-zoo-*-*"):
        pid = folder.name.split("-")[2]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            try:
                folder.rmdir()
            except OSError:
                pass
