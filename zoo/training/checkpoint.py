"""Checkpoints: atomic to write, safe to load (``weights_only=True``), complete to resume.

A checkpoint holds the run's config, the model and guide ``state_dict``, the
optimizer state, the epoch and step, the training history and every RNG state
(torch, CUDA, numpy, python). It is written to a temporary file in the same
folder, fsynced, then renamed over the old one, so a crash at any moment leaves
either the old or the new checkpoint, never half of one.

A checkpoint is data. It is read with ``torch.load(weights_only=True)``, which unpickles
tensors, containers, numbers and strings only, so a file holding pickled code is refused rather
than run; anything that does not load, or loads as something other than a checkpoint's dict of
tensors, is refused in one line. No tensor that is not finite is ever written: a diverged state
must not replace the last good one.
"""
from __future__ import annotations

import contextlib
import errno
import os
import pickle
import random
import re
import signal
import tempfile
import warnings
from pathlib import Path
from typing import Any, Dict, Iterable, List

import numpy as np
import torch

from zoo.core.errors import ZooError
from zoo.training.guards import any_non_finite
from zoo.training.interrupts import raise_if_stopped

__all__ = ["atomic_write_bytes", "atomic_write_text", "atomic_path", "written_together", "remove_temp_files", "save_checkpoint",
           "load_checkpoint", "rng_state", "set_rng_state", "write_error", "signals_deferred", "non_finite_tensors"]

#: The errno values of a full disk or an exhausted quota.
_NO_SPACE = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}


def write_error(path: Path, error: OSError) -> ZooError:
    """The one-line error for an ``OSError`` raised while writing ``path`` (a full disk, a read-only folder)."""
    if error.errno in _NO_SPACE:
        return ZooError(f"no space left on device writing {path}; free space and run the command again "
                        f"(nothing half-written was left)")
    return ZooError(f"cannot write {path} ({error.strerror or type(error).__name__}); check the folder's "
                    f"permissions and free space, then run the command again")


@contextlib.contextmanager
def signals_deferred():
    """Hold SIGINT and SIGTERM until the block ends, so a group of files is written whole.

    The signals are blocked (``pthread_sigmask``), not lost: one that arrives inside the block is
    delivered, and its handler runs, as the block ends. A stop that Python swallowed before the block
    (:func:`~zoo.training.interrupts.raise_if_stopped`) is raised as it starts, before anything is written.
    Elsewhere than the main thread, or where the platform has no signal masks, the block runs as it is.
    """
    import threading
    mask = {signal.SIGINT, signal.SIGTERM}
    if not hasattr(signal, "pthread_sigmask") or threading.current_thread() is not threading.main_thread():
        yield
        return
    old = signal.pthread_sigmask(signal.SIG_BLOCK, mask)
    try:
        raise_if_stopped()          # a stop Python swallowed earlier ends the command here, before any write
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename: the old file or the new, never half.

    An ``OSError`` (a full disk) becomes a :class:`ZooError` naming the file; the temporary file is removed.
    """
    path = Path(path)
    try:
        _atomic_write(path, data)
    except OSError as e:
        raise write_error(path, e) from None


@contextlib.contextmanager
def atomic_path(path: Path):
    """A temporary path beside ``path`` (same suffix) for a writer that takes a file name (a plot);
    renamed over ``path`` when the block succeeds, removed when it fails."""
    path = Path(path)
    tmp = path.with_name(_partial(path.name))
    try:
        yield tmp
        os.replace(tmp, path)
    except OSError as e:
        raise write_error(path, e) from None
    finally:
        if tmp.exists():
            tmp.unlink()


def _give_usual_mode(fd: int) -> None:
    umask = os.umask(0)
    os.umask(umask)
    os.fchmod(fd, 0o666 & ~umask)               # mkstemp makes 0600; give results the usual mode


_KEPT = object()       # FileGroup._backup: an old file that could not be linked to a backup


class FileGroup:
    """Files staged by :func:`written_together`: each is written whole to a temporary file beside its target, and
    none replaces its target until all are written."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self._staged: List[tuple] = []          # (temporary, target), in the order the targets are renamed in

    def write_bytes(self, path: Path, data: bytes) -> None:
        path = Path(path)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        self._staged.append((Path(tmp), path))
        try:
            with os.fdopen(fd, "wb") as f:
                _give_usual_mode(f.fileno())
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
        except OSError as e:
            raise write_error(path, e) from None

    def write_text(self, path: Path, text: str) -> None:
        self.write_bytes(path, text.encode())

    @contextlib.contextmanager
    def path(self, path: Path):
        """A temporary path beside ``path`` (same suffix) for a writer that takes a file name (a plot); what the
        writer left there is synced as the block ends."""
        path = Path(path)
        tmp = path.with_name(_partial(path.name))
        self._staged.append((tmp, path))
        try:
            yield tmp
            fd = os.open(tmp, os.O_RDONLY)
            try:
                _give_usual_mode(fd)
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as e:
            raise write_error(path, e) from None
        except ZooError as e:           # the writer's own atomic write names the temporary file: name the target
            if isinstance(e.__context__, OSError):
                raise write_error(path, e.__context__) from None
            raise

    def _commit(self) -> None:
        """Rename every staged file over its target. The old targets are first linked to backups, so that a
        rename failing half-way puts back the ones renamed before it: all are replaced, or none."""
        backups, renamed, target = [], [], self.folder
        try:
            for _, target in self._staged:
                backups.append(self._backup(target))
            for tmp, target in self._staged:
                os.replace(tmp, target)
                renamed.append(target)
        except OSError as e:
            for (_, old), backup in reversed(list(zip(self._staged[:len(renamed)], backups))):
                with contextlib.suppress(OSError):
                    if backup is None:
                        os.unlink(old)
                    elif backup is not _KEPT:
                        os.replace(backup, old)
            raise write_error(target, e) from None
        finally:
            for backup in backups:
                if isinstance(backup, Path):
                    with contextlib.suppress(OSError):
                        os.unlink(backup)
        dir_fd = os.open(self.folder, os.O_RDONLY)      # make the renames themselves durable
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    @staticmethod
    def _backup(target: Path):
        """A hard link to ``target``'s old file (named as a temporary file, so that one a kill leaves behind is
        swept by :func:`remove_temp_files`); ``None`` where there is no old file; ``_KEPT`` where the folder
        takes no hard links (the rename then cannot be undone, as with :func:`atomic_write_bytes`)."""
        if not target.is_file():
            return None
        backup = target.with_name(f".{target.name}.{os.urandom(4).hex()}.tmp")
        try:
            os.link(target, backup)
        except OSError as e:
            if e.errno in _NO_SPACE:
                raise
            return _KEPT
        return backup

    def _discard(self) -> None:
        for tmp, _ in self._staged:
            with contextlib.suppress(OSError):
                os.unlink(tmp)


@contextlib.contextmanager
def written_together(folder: Path):
    """A command's output files in ``folder``, written as one group: all replaced, or none.

    The block writes each file to the :class:`FileGroup` it is given (``write_bytes``, ``write_text``, or
    ``path`` for a writer that takes a file name); each goes to a temporary file. Only when the block ends and
    every file is written and synced are they renamed over their targets, in the order they were written (so
    the last one, e.g. ``results.json``, appears last). If anything fails (a full disk), every temporary file is
    removed and the old files stay as they were; an ``OSError`` becomes one line naming the file. SIGINT and
    SIGTERM wait until the group is renamed in (:func:`signals_deferred`)."""
    group = FileGroup(folder)
    try:
        with signals_deferred():
            yield group
            group._commit()
    finally:
        group._discard()


def _partial(name: str) -> str:
    """The name of :func:`atomic_path`'s temporary file for the file ``name``."""
    name = Path(name)
    return f".{name.stem}.partial{name.suffix}"


def _temp_names(name: str) -> "re.Pattern":
    """The names of the temporary files the writers here make for the file ``name``: :func:`_atomic_write`'s
    (``.NAME.XXXXXXXX.tmp``, eight characters of ``mkstemp``'s alphabet), :func:`atomic_path`'s, and the
    atomic write of that one (a plot is written to it)."""
    written = lambda n: re.escape(f".{n}.") + r"[a-z0-9_]{8}" + re.escape(".tmp")     # noqa: E731
    partial = _partial(name)
    return re.compile(f"{written(name)}|{re.escape(partial)}|{written(partial)}")


def remove_temp_files(folder: Path, names: Iterable[str]) -> List[Path]:
    """Remove, and return, the temporary files the writers here made in ``folder`` for the files ``names``.

    A writer killed between writing its temporary file and renaming it (SIGKILL, a power cut) leaves the
    temporary file behind. Call this only while no writer of these files can be running, e.g. holding the
    folder's writer lock when every writer of ``names`` takes it: any such file is then one that a killed
    writer left. Nothing else is touched: only those names, only in ``folder`` (not its subfolders).
    """
    patterns = [_temp_names(n) for n in names]
    removed = []
    with os.scandir(folder) as entries:
        for entry in entries:
            if entry.is_file(follow_symlinks=False) and any(p.fullmatch(entry.name) for p in patterns):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.path)
                    removed.append(Path(entry.path))
    return removed


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)               # mkstemp makes 0600; give results the usual mode
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        dir_fd = os.open(path.parent, os.O_RDONLY)      # make the rename itself durable
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def rng_state() -> Dict[str, Any]:
    mt, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"torch": torch.get_rng_state(),
             "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                       "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
             "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def non_finite_tensors(state) -> list:
    """The names of the floating-point tensors in a nested dict/list ``state`` that hold NaN or inf.

    The common case, all finite, is one fused check (:func:`zoo.training.guards.any_non_finite`, as the training
    loop checks its parameters), not one per tensor: a checkpoint is written every epoch. Only where it finds one
    are the tensors checked one by one for their names."""
    named = []

    def visit(value, name):
        if torch.is_tensor(value):
            if value.is_floating_point() and value.numel():
                named.append((name, value))
        elif isinstance(value, dict):
            for k, v in value.items():
                visit(v, f"{name}.{k}" if name else str(k))
        elif isinstance(value, (list, tuple)):
            for i, v in enumerate(value):
                visit(v, f"{name}[{i}]")
    visit(state, "")
    if not any_non_finite([t for _, t in named]):
        return []
    return [name for name, t in named if not bool(torch.isfinite(t).all())]


def save_checkpoint(path: Path, **state) -> None:
    """Write ``state`` (tensors, dicts, lists, numbers, strings) atomically to ``path``.

    The model, guide and optimizer tensors must be finite: a checkpoint replaces the last good
    one, so a diverged state is refused here (the training loop stops before it gets this far).
    """
    import io
    bad = non_finite_tensors({k: state[k] for k in ("model", "guide", "optimizer") if k in state})
    if bad:
        raise ZooError(f"not writing {path}: {bad[0]} holds NaN or inf ({len(bad)} tensor(s)); the previous "
                       f"checkpoint is kept as it was")
    buf = io.BytesIO()
    torch.save(state, buf)
    atomic_write_bytes(path, buf.getvalue())


def load_checkpoint(path: Path, map_location="cpu") -> Dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint`; no pickled code is executed.

    ``torch.load(weights_only=True)`` raises many kinds of error on a file that is not a torch
    file (``KeyError`` on plain text, ``UnpicklingError``, ``RuntimeError`` on a zip without
    ``data.pkl``, ``EOFError``, ``ValueError``, ``MemoryError`` on absurd sizes...): each becomes one
    line. A file that loads must be a dict with a ``config`` dict and ``model``/``guide`` dicts of
    tensors, the shape of every checkpoint :func:`save_checkpoint` writes.
    """
    path = Path(path)
    if not path.is_file():
        if os.path.lexists(path):           # a FIFO would block the reader, /dev/zero would never end
            raise ZooError(f"{path} is not a regular file (a FIFO, a device, a folder or a dangling link), so it is "
                           f"not a checkpoint; restore the run's checkpoint.pt or train the run again")
        raise ZooError(f"no checkpoint at {path}; train a run there first")
    try:
        with warnings.catch_warnings():     # torch's note on a pickle protocol it may not read: the error says
            warnings.simplefilter("ignore", UserWarning)
            state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        # a class or function to call, what weights_only exists to refuse: "Unsupported global: GLOBAL x.y" or, for a
        # blocked module (os.system), "unsupported GLOBAL posix.system whose module posix is blocked"
        if "unsupported global" in str(e).lower():
            raise ZooError(f"{path} holds pickled Python objects, not only tensors; pyro-zoo loads checkpoints with "
                           f"torch.load(weights_only=True) and never runs code from one: use a checkpoint "
                           f"written by pyro-zoo") from None
        raise _not_a_checkpoint(path, e) from None
    except Exception as e:                  # weights_only's unpickler on garbage: KeyError, IndexError, ...
        raise _not_a_checkpoint(path, e) from None
    if not (isinstance(state, dict) and isinstance(state.get("config"), dict)
            and all(isinstance(state.get(part), dict) and all(isinstance(k, str) and torch.is_tensor(v)
                                                             for k, v in state[part].items())
                    for part in ("model", "guide"))):
        raise ZooError(f"{path} is not a pyro-zoo checkpoint (it lacks a config and the model's and guide's "
                       f"tensors); use the checkpoint.pt that 'pyro-zoo train' wrote")
    return state


def _not_a_checkpoint(path: Path, error: Exception) -> ZooError:
    return ZooError(f"checkpoint {path} is corrupt or truncated, or not a checkpoint ({type(error).__name__}); "
                    f"restore the run's checkpoint.pt or train the run again")
