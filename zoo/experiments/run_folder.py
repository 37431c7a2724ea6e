"""Reading a run folder someone else may have written, and writing one without a second writer.

A run folder is **data**. What it holds is checked before it is used, and nothing it names is run:

- ``checkpoint.pt`` is read with ``torch.load(weights_only=True)`` (:func:`~zoo.training.checkpoint.load_checkpoint`)
  and must be *this run's* checkpoint: the model, guide, objective, dataset and every option that a
  resumed run may not change must equal those in the folder's ``config.json``
  (:func:`refuse_foreign_checkpoint`), and its parameters must have the names and shapes of the
  model and guide the config builds (:func:`load_weights`).
- a run of a user's model file (``FILE.py:NAME``) records the file's absolute path and SHA-256. Reading
  the run never imports that file: the user must name a model file on the command line
  (``--model FILE.py:NAME``), and its SHA-256 must equal the recorded one before it is imported
  (:func:`read_stored_config`). A user's guide file (``--guide FILE.py:NAME``, :mod:`guides.user`) is
  treated the same way. Installed entry points and registered names need nothing.

Writers (``train``, ``eval``, ``eval --gaps``, ``compare``, ``gradients``) hold an exclusive OS lock on
``.pyro-zoo.lock`` in the folder while they write (:func:`writer_lock`); a second writer is refused
in one line. The lock is ``fcntl.flock``: the kernel drops it when its holder exits, SIGKILL
included, so a lock file left behind blocks nobody. A writer killed mid-write leaves the temporary file of
an atomic write; the next writer to take the lock removes those of the folder's own files (:data:`RUN_FILES`).
"""
from __future__ import annotations

import dataclasses
import errno
import os
import stat
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Tuple

from zoo.core.catalogue import refuse_inside_catalogue
from zoo.core.errors import OptionError, ZooError
from zoo.core.files import read_json
from zoo.data.dataset import SPLITS
from zoo.experiments.config import COMPONENT_KINDS, RunConfig, resumable_changes
from zoo.training.checkpoint import load_checkpoint, non_finite_tensors, remove_temp_files, write_error
from zoo.usercode.loading import file_sha256, only_named_files
from zoo.usercode.specs import is_file_spec

__all__ = ["chosen_weights", "best_checkpoint", "BEST", "LAST", "read_stored_config", "refuse_foreign_checkpoint", "load_run", "LoadedRun", "open_run", "load_weights", "upgrade_legacy_names",
           "writer_lock", "LOCK", "RUN_FILES", "CODE_FILES"]

#: The checkpoint of a run's last epoch (and of its optimizer, to resume it).
LAST = "checkpoint.pt"
#: With ``keep_best``, the model and guide of the epoch with the best validation ELBO.
BEST = "best.pt"
#: The lock file of a run folder (empty but for the holder's pid; a left-over one is harmless).
LOCK = ".pyro-zoo.lock"

#: The files a run, grid or gradients folder keeps for itself, each written by its writer under the folder's
#: lock: never another command's output (``compress --out`` refuses these names), and a temporary file of one
#: found by the next holder of the lock was left by a killed writer (:func:`writer_lock` removes it).
RUN_FILES = ("checkpoint.pt", "best.pt", "config.json", "results.json", "results.md", "per_datum.npz",
             "training_curves.png", "samples.png", "reconstructions.png", "latent_scatter.png", "gaps.json",
             "gaps.md", "gaps_per_datum.npz", "grid.json", "compare.json", "compare.md", "compare.png",
             "gradients.json", "gradients.md", "gradients.png", "fixed_gaps.json", "ais.json", "ais.md", "ais_per_datum.npz",
             "ais_partial.npz", "bdmc.json", "bdmc.md", LOCK)
#: The code files ``pyro-zoo compress`` writes into a run folder by default (``compressed-SPLIT.pzbb``). Not run
#: files (``--out`` may name them), but written under the folder's lock, so their temporary files are removed too.
CODE_FILES = tuple(f"compressed-{split}.pzbb" for split in SPLITS)


def read_stored_config(stored: Any, source: str, model_file: Optional[str] = None,
                       how: str = "--model FILE.py:NAME", guide_file: Optional[str] = None,
                       guide_how: str = "--guide FILE.py:NAME") -> RunConfig:
    """The :class:`RunConfig` stored in ``source`` (a config.json or a checkpoint), read as data.

    If the stored model is a model file, ``model_file`` (what the user named on the command line,
    or None) must be given, have the recorded NAME, and hash to the recorded SHA-256; the check reads
    the file's bytes and runs nothing, and the config then refers to the user's file. ``how`` is how
    the user names one in the command at hand (the refusal says it). A guide file (``--guide
    FILE.py:NAME``) is checked the same way against ``guide_file`` and ``guide_how``.
    """
    if not isinstance(stored, Mapping) or not isinstance(stored.get("model"), str):
        raise ZooError(f"{source} holds no pyro-zoo run config; use a run folder written by 'pyro-zoo train'")
    stored = dict(stored)
    named: Dict[str, str] = {}
    for kind, given, hint in (("model", model_file, how), ("guide", guide_file, guide_how)):
        spec = _named_file(stored, kind, given, source, hint)
        if spec is not None:
            named[spec] = stored[f"{kind}_options"]["source_sha256"]
    try:
        with only_named_files(named):
            return RunConfig.from_json(stored)
    except OptionError as e:                # the folder's option, not a flag the user gave
        raise ZooError(f"{source} is not a valid pyro-zoo run config ({e.kind or 'run'} option {e}); use a run "
                       f"folder written by 'pyro-zoo train'") from None
    except (TypeError, ValueError, KeyError, AttributeError, RecursionError) as e:
        raise ZooError(f"{source} is not a valid pyro-zoo run config ({type(e).__name__}: "
                       f"{str(e).splitlines()[0][:200] if str(e) else ''}); use a run folder written by "
                       f"'pyro-zoo train'") from None


def _named_file(stored: Dict, kind: str, given: Optional[str], source: str, how: str) -> Optional[str]:
    """If the stored ``kind`` ("model" or "guide") is a file, check that the user named it (``given``) and
    that it hashes to the run's SHA-256, and point ``stored`` at the user's file: its spec; else None."""
    recorded = stored.get(kind)
    if not isinstance(recorded, str) or not is_file_spec(recorded):
        if given is not None and given != recorded and (kind == "model" or is_file_spec(given)):
            raise ZooError(f"this run's {kind} is {recorded!r}, not {given!r}; drop the {kind} or name {recorded!r}")
        return None
    name = recorded.rpartition(":")[2]
    sha = (stored.get(f"{kind}_options") or {}).get("source_sha256")
    if given is None:
        raise ZooError(f"this run's {kind} is the file {recorded!r}, and the zoo never imports a file that a run "
                       f"folder names: if you trust that file, name it yourself with {how.replace('NAME', name)} "
                       f"(its SHA-256 must match the run's)")
    if not is_file_spec(given) or given.rpartition(":")[2] != name:
        raise ZooError(f"this run's {kind} is {name!r} from the file {recorded!r}, not {given!r}; "
                       f"give {how.replace('NAME', name)}")
    if not isinstance(sha, str):
        raise ZooError(f"{source} records no SHA-256 of its {kind} file, so no file can be checked against it; "
                       f"train the run again")
    if file_sha256(given, kind) != sha:
        raise ZooError(f"{kind} file {given.rpartition(':')[0]!r} changed since this run was made (its SHA-256 "
                       f"differs from the run's); nothing in it was run: give the run's own {kind} file, or "
                       f"train a new run")
    stored[kind] = given                    # the RunConfig made of it records its absolute path
    return given


def refuse_foreign_checkpoint(run: RunConfig, checkpoint: RunConfig, where: Path) -> None:
    """Raise unless ``checkpoint`` (the config a checkpoint carries) is a config of the run ``run``
    (its config.json): the same components and dataset, and the same value of every option a
    resumed run may not change (a resume that was stopped before its first checkpoint leaves
    config.json with the new epochs or learning rate and the checkpoint with the old)."""
    def refuse(what: str, theirs, ours):
        raise ZooError(f"{where / 'checkpoint.pt'} is not this run's checkpoint: it was made with {what} {theirs!r}, "
                       f"but {where / 'config.json'} has {ours!r}; restore the run's own checkpoint.pt or train "
                       f"the run again")
    for key in ("model", "guide", "objective", "dataset"):
        if getattr(checkpoint, key) != getattr(run, key):
            refuse(key, getattr(checkpoint, key), getattr(run, key))
    allowed = resumable_changes(run)
    for f in dataclasses.fields(RunConfig):
        if f.metadata and f.name not in allowed["run"] and getattr(checkpoint, f.name) != getattr(run, f.name):
            refuse(f.name, getattr(checkpoint, f.name), getattr(run, f.name))
    for kind in COMPONENT_KINDS:
        theirs, ours = checkpoint.resolved(kind).to_dict(), run.resolved(kind).to_dict()
        for name in ours:
            if name not in allowed[kind] and theirs.get(name) != ours[name]:
                refuse(f"{kind} option {name}", theirs.get(name), ours[name])


def load_run(out: Path, model_file: Optional[str] = None, how: str = "--model FILE.py:NAME",
             guide_file: Optional[str] = None, guide_how: str = "--guide FILE.py:NAME") -> Tuple[Dict, RunConfig]:
    """The checkpoint state of the run folder ``out`` and its config, both checked (see the module docstring)."""
    out = Path(out)
    if not out.is_dir():
        raise ZooError(f"no run folder at {out}; train one there first ('pyro-zoo train ... --out {out}')")
    state = load_checkpoint(out / "checkpoint.pt")
    path = out / "config.json"
    if not os.path.lexists(path):
        raise ZooError(f"{out} has a checkpoint but no config.json, so the checkpoint cannot be checked against "
                       f"its run; restore config.json or train the run again")
    recorded = read_json(path, "run config", fix="restore it or train the run again")
    run = read_stored_config(recorded, str(path), model_file, how, guide_file, guide_how)
    config = read_stored_config(state["config"], str(out / "checkpoint.pt"), model_file, how, guide_file, guide_how)
    refuse_foreign_checkpoint(run, config, out)
    return state, config


@dataclasses.dataclass
class LoadedRun:
    """A run folder read once (:func:`open_run`): its checkpoint ``state``, its checked ``config``, and the
    checkpoint file's identity when it was read, so a later step (``train --resume`` under the folder's
    lock) can use what was read instead of reading it again, after :meth:`refuse_changed`."""

    folder: Path
    state: Dict
    config: RunConfig
    stamp: Tuple[int, int, int]

    def refuse_changed(self) -> None:
        """Refuse if the checkpoint was rewritten since it was read (another writer finished in between)."""
        if _stamp(self.folder / "checkpoint.pt") != self.stamp:
            raise ZooError(f"{self.folder / 'checkpoint.pt'} changed while it was being resumed (another process "
                           f"wrote it); run the command again")


def _stamp(path: Path) -> Tuple[int, int, int]:
    st = path.stat()
    return st.st_ino, st.st_size, st.st_mtime_ns


def open_run(out: Path, model_file: Optional[str] = None, how: str = "--model FILE.py:NAME",
             guide_file: Optional[str] = None, guide_how: str = "--guide FILE.py:NAME") -> LoadedRun:
    """:func:`load_run`, kept with the checkpoint's identity as a :class:`LoadedRun`."""
    out = Path(out)
    stamp = _stamp(out / "checkpoint.pt") if (out / "checkpoint.pt").is_file() else (0, 0, 0)
    state, config = load_run(out, model_file, how, guide_file, guide_how)
    return LoadedRun(out, state, config, stamp)


def upgrade_legacy_names(model, state: Dict) -> None:
    """Rename, in place, the model tensors of a checkpoint written before they moved (a model's
    ``legacy_tensor_names``, old prefix -> new prefix: the likelihood parts of :mod:`zoo.core.likelihoods`), and
    reorder its Adam state to match: the optimizer keeps its moments by the parameters' position, and a moved
    parameter can change places (a dequantizing likelihood's scale came before the decoder, and now after)."""
    renames = getattr(model, "legacy_tensor_names", None) or {}
    ours = model.state_dict()
    moved = {}
    for key in state["model"]:
        if key in ours:
            continue
        for old, new in renames.items():
            if key.startswith(old) and new + key[len(old):] in ours:
                moved[key] = new + key[len(old):]
                break
    if not moved:
        return
    their_order = [moved.get(k, k) for k in state["model"]]
    state["model"] = {moved.get(k, k): v for k, v in state["model"].items()}
    params = [name for name, _ in model.named_parameters()]
    old_positions = [k for k in their_order if k in set(params)]
    optimizer = state.get("optimizer")
    if not isinstance(optimizer, dict) or old_positions == params or sorted(old_positions) != sorted(params):
        return
    groups = optimizer.get("param_groups")
    first = groups[0].get("params") if isinstance(groups, list) and groups and isinstance(groups[0], dict) else None
    if not isinstance(first, list) or not isinstance(optimizer.get("state"), dict) or len(first) != len(params):
        return                                  # not the model's group (guide-only), or malformed: restore refuses it
    position = {name: first[i] for i, name in enumerate(old_positions)}
    moments = optimizer["state"]
    optimizer["state"] = {**{k: v for k, v in moments.items() if k not in first},
                          **{first[j]: moments[position[name]] for j, name in enumerate(params)
                             if position[name] in moments}}


def load_weights(model, guide, state: Mapping, source: Path) -> None:
    """Load a checkpoint's model and guide tensors; refuse, naming the first difference, unless every
    parameter and buffer has the name and shape the run's own model and guide have, and is finite
    (an earlier pyro-zoo could checkpoint a diverged step). Tensors an earlier pyro-zoo named otherwise are
    renamed first (:func:`upgrade_legacy_names`)."""
    upgrade_legacy_names(model, state)
    for part, module in (("model", model), ("guide", guide)):   # shapes first: a file may declare any size
        ours = {k: tuple(v.shape) for k, v in module.state_dict().items()}
        theirs = {k: tuple(v.shape) for k, v in state[part].items()}
        missing, extra = sorted(set(ours) - set(theirs)), sorted(set(theirs) - set(ours))
        shape = next((k for k in ours if k in theirs and ours[k] != theirs[k]), None)
        if missing or extra or shape:
            detail = (f"it lacks {part} tensor {missing[0]!r}" if missing else
                      f"it has a {part} tensor {extra[0]!r} that this run's {part} lacks" if extra else
                      f"{part} tensor {shape!r} is {list(theirs[shape])} there, {list(ours[shape])} here")
            raise ZooError(f"{source} does not fit this run's model and guide: {detail}; restore the run's own "
                           f"checkpoint or train the run again")
    bad = non_finite_tensors({"model": state["model"], "guide": state["guide"]})
    if bad:
        raise ZooError(f"{source} holds NaN or inf ({bad[0]} and {len(bad) - 1} more tensors): its training diverged "
                       f"and it can be neither evaluated nor resumed; train the run again with a lower --lr")
    for part, module in (("model", model), ("guide", guide)):
        module.load_state_dict(state[part])


def chosen_weights(folder: Path, state: Dict, config: RunConfig) -> Tuple[Dict, Path, Optional[int]]:
    """(the checkpoint whose weights a trained run's figures score, its file, the best epoch or None): the last
    epoch's ``state`` (read from ``checkpoint.pt``), or for a run trained with ``--keep-best`` its best epoch's."""
    if config.keep_best:
        best = best_checkpoint(folder, config)
        return best, folder / BEST, int(best["epoch"])
    return state, folder / LAST, None


def best_checkpoint(out: Path, config: Optional[RunConfig] = None) -> Dict:
    """The checkpoint of the epoch with the best validation ELBO of a run trained with ``--keep-best``
    (refused unless it was made by the run of ``config``)."""
    if not (out / BEST).is_file():
        raise ZooError(f"this run was trained with --keep-best but {out / BEST} is missing; restore it, or "
                       f"train the run again")
    state = load_checkpoint(out / BEST)
    if config is not None:
        model_file = config.model if is_file_spec(config.model) else None
        refuse_foreign_checkpoint(config, read_stored_config(state["config"], str(out / BEST), model_file), out)
    return state


@contextmanager
def writer_lock(out: Path, made: bool = False):
    """Hold the exclusive writer lock of folder ``out`` (which must exist) for the block; refuse in one
    line if another process holds it, or if the lock file cannot be written (a full disk, a read-only folder:
    :func:`~zoo.training.checkpoint.write_error`), before the command has written anything. Where ``fcntl`` is
    missing (Windows) the block runs unlocked.

    Once held, the temporary files of the folder's own files (:data:`RUN_FILES`, :data:`CODE_FILES`) are removed:
    every writer of those takes this lock, so one found now was left by a writer killed mid-write (SIGKILL, a power cut).

    ``made``: the caller has just made ``out``. If the command then fails (the lock file or its first output
    cannot be written), the folder is removed again, while the lock is held, if it holds nothing but the lock
    file: a failed command leaves no folder of its own behind."""
    try:
        import fcntl
    except ImportError:                                   # pragma: no cover - not on POSIX
        yield
        return
    try:
        refuse_inside_catalogue(Path(out))     # every writer of a folder takes this lock
    except ZooError:
        if made:
            _remove_if_only_lock(Path(out))
        raise
    path = Path(out) / LOCK
    fd = _open_lock(path)
    held = False
    try:
        _lock_or_refuse(fcntl, fd, fcntl.LOCK_EX, out)
        held = True
        try:                        # the holder's pid, for a second writer's message; a full disk stops here
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except OSError as e:
            raise write_error(path, e) from None
        remove_temp_files(Path(out), RUN_FILES + CODE_FILES)
        yield
    except BaseException:
        if held and made:
            _remove_if_only_lock(Path(out))
        raise
    finally:
        os.close(fd)                                      # closing the descriptor releases the lock


@contextmanager
def reader_lock(out: Path):
    """Hold a shared lock on folder ``out`` for a command that only reads it: refused in one line while a writer
    holds :func:`writer_lock` (its files may be mid-change: a resumed run replacing its checkpoint), and held so
    that no writer starts meanwhile. A folder the reader may not write (read-only, or with no lock file yet) is read
    without one: there is then no lock file for a writer to hold either, or the reader cannot make one."""
    try:
        import fcntl
    except ImportError:                                   # pragma: no cover - not on POSIX
        yield
        return
    path = Path(out) / LOCK
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    except OSError:
        yield                                             # no lock file (no writer ever ran here), or not ours
        return
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ZooError(f"{path} is not a regular file, not the lock file pyro-zoo writes: remove it and run the "
                           f"command again")
        _lock_or_refuse(fcntl, fd, fcntl.LOCK_SH, out)
        yield
    finally:
        os.close(fd)


def _lock_or_refuse(fcntl, fd: int, kind: int, out: Path) -> None:
    """Take the lock ``kind`` (exclusive: a writer; shared: a reader) on the open lock file ``fd`` of folder ``out``
    without waiting; refuse in one line, naming the writer's pid, where a writer holds it."""
    try:
        fcntl.flock(fd, kind | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
        raise ZooError(f"another pyro-zoo process{f' (pid {holder})' if holder.isdigit() else ''} is writing to "
                       f"{out}; wait for it to finish, or use another folder") from None


def _open_lock(path: Path) -> int:
    """A descriptor of the lock file ``path``, made if missing. A folder may come from someone else, so the lock is
    opened without following a symbolic link, and refused unless it is a regular file of one name: the lock is
    truncated and written, and a link would carry that write to a file outside the folder."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0),
                     0o666)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise ZooError(f"{path} is a symbolic link, not the lock file pyro-zoo writes: remove it (a run "
                           f"folder's lock is its own file) and run the command again") from None
        raise write_error(path, e) from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or info.st_nlink > 1:
        os.close(fd)
        what = "a hard link to another file" if stat.S_ISREG(info.st_mode) else "not a regular file"
        raise ZooError(f"{path} is {what}, not the lock file pyro-zoo writes: remove it (a run folder's lock is its "
                       f"own file) and run the command again")
    return fd


def _remove_if_only_lock(out: Path) -> None:
    """Remove the folder ``out`` if it holds nothing but its lock file (its holder calls this)."""
    try:
        if all(p.name == LOCK for p in out.iterdir()):
            (out / LOCK).unlink(missing_ok=True)
            out.rmdir()
    except OSError:                 # gone already, or not ours to remove: it stays as it is
        pass
