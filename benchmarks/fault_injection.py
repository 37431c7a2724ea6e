"""Faults a user's machine throws at the zoo, each tried as the command a user types: held or lost (issue 50).

Five families of faults; each case is one real ``pyro-zoo`` process (``python -m zoo``) on the embedded 8x8
digits, in a temporary folder, under a wall-clock limit (a timeout is lost):

- **sigkill**: ``train``, ``eval``, ``eval --estimator ais`` and ``compare`` (serial, and ``--workers 2``) killed
  with SIGKILL at a random moment of their life (seeded), then the command a user runs next (``--resume`` where
  there is a checkpoint or a grid plan, else the same command again). Held if it ends with exactly the figures of
  a run that was never stopped (parameters bit for bit, ``results.json`` and ``per_datum.npz`` without their
  timings, the grid's tables), leaves no temporary file of the zoo's, and the kill left no process behind and no
  lock held. (The lock file itself stays by design: an ``flock`` on it dies with its holder.)
- **full_disk**: every writer pointed at a folder on a tmpfs filled to its last byte, and again with 16 and 64 KiB
  left free (the first small files fit, a later one does not). Held if it refuses in one line (exit 2, one line
  on stderr, no traceback), every file that was there is byte for byte as it was, and nothing new is left. With
  space left, a command whose files all fit may also end well (exit 0), and one that refuses may leave the whole
  files it wrote before the disk filled (a trained checkpoint is the user's work), never a partial or temporary
  one. A folder's lock file is left out of both: it holds only its holder's pid (the tests'
  snapshots leave it out too).
- **read_only**: the same writers on the same folders, the tmpfs remounted read-only; the same rule.
- **edited_grid**: a finished ``compare`` grid whose files are edited by hand (a figure changed, NaN, a word, two
  cells' results swapped, ``epochs`` raised in ``grid.json``, a cell's checkpoint or results deleted), then
  ``compare --resume`` and ``report`` of the grid. Held if the command refuses in one line and leaves the tables
  as they were, or ends with the tables (the report) of a grid that was never edited, where the edit asks for a
  change of plan, of one trained to that plan: never with an edited figure in them.
- **code_file**: ``compress --decode`` of crafted code files (truncations, flipped bits in header and payload,
  headers that claim huge counts, a FIFO, ``/dev/zero``, a folder, random bytes), and ``compress --out`` aimed at
  files the zoo did not make for it. Held if it refuses in one line within 20 s of CPU and 2 GiB (the child's
  peak RSS), writes no output, and leaves the target byte for byte; a decode that succeeds is held only if its
  rows are the coded ones.

The mounts need root (``mount -t tmpfs``, ``remount,ro``; ``chmod`` does not stop root); without it those two
families are reported as not run.

    OMP_NUM_THREADS=1 python benchmarks/fault_injection.py                  # the committed results (~15 min)
    OMP_NUM_THREADS=1 python benchmarks/fault_injection.py --families code_file --name try

Writes ``benchmarks/results/<name>.json`` (every case: its command, exit code, stderr's last line, seconds, CPU
seconds, peak RSS, held, why lost; totals per family) and ``.md`` (the totals and every lost case).
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import RESULTS, fail, run_script, write_result  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
ZOO = [sys.executable, "-m", "zoo"]
ENV = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
FAMILIES = ("sigkill", "full_disk", "read_only", "edited_grid", "code_file")
#: a small run of the digits: a few seconds a process, most of it Python and torch starting
SMALL = ["--dataset", "digits", "--latent-dim", "2", "--hidden", "16", "--eval-samples", "10", "--iwae-k", "4",
         "--no-progress"]
TIMEOUT_S = 300          # wall clock: generous, since the machine may be shared; a case that reaches it is lost
CPU_LIMIT_S = 20         # what a refusal of a crafted code file may cost (user + system time of the child)
MAX_RSS_MIB = 2048
#: the zoo's temporary files (zoo.training.checkpoint: .NAME.XXXXXXXX.tmp of mkstemp, .NAME.partial.EXT)
TEMP = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp$|^\..+\.partial(\.[A-Za-z0-9]+)?$")
LOCK = ".pyro-zoo.lock"


@dataclass
class Outcome:
    """One process: its exit status, its stderr, its wall and CPU time, its peak memory, and whether it ran out
    of time or left processes behind when it ended."""
    code: Optional[int]
    stderr: str
    seconds: float
    cpu_seconds: float
    max_rss_mib: float
    timed_out: bool
    left_processes: bool

    @property
    def lines(self) -> List[str]:
        return self.stderr.strip().splitlines()

    @property
    def one_line_refusal(self) -> bool:
        return (self.code == 2 and len(self.lines) == 1 and self.lines[0].startswith("pyro-zoo: error:")
                and "Traceback" not in self.stderr)

    @property
    def last_line(self) -> str:
        return self.lines[-1][:300] if self.lines else ""


@dataclass
class Case:
    family: str
    case: str
    command: str
    held: bool
    why_lost: str = ""
    code: Optional[int] = None
    stderr: str = ""
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    max_rss_mib: float = 0.0
    extra: Dict = field(default_factory=dict)


def run(args: List, timeout: float = TIMEOUT_S, kill_after: Optional[float] = None) -> Outcome:
    """``pyro-zoo ARGS`` in a child process of its own process group, with its (and its waited-for children's)
    CPU time and peak RSS from ``os.wait4``. With ``kill_after``, SIGKILL it that many seconds after its start
    if it is still running. Whatever of its group outlives it is noted and then killed."""
    cmd = ZOO + [str(a) for a in args]
    with tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, stdin=subprocess.DEVNULL, env=ENV,
                                cwd=ROOT, start_new_session=True)
        deadline = start + (kill_after if kill_after is not None else timeout)
        timed_out = False
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() > deadline:
                os.kill(proc.pid, signal.SIGKILL)
                pid, status, usage = os.wait4(proc.pid, 0)
                timed_out = kill_after is None
                break
            time.sleep(0.005)
        seconds = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        left = _kill_group(proc.pid)
        err.seek(0)
        text = err.read().decode(errors="replace")
    return Outcome(proc.returncode, text, seconds, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024,
                   timed_out, left)


def _kill_group(pgid: int) -> bool:
    """Whether processes of the group ``pgid`` (one this script started) are still running; they are killed."""
    for _ in range(40):                         # 2 s for a pool's workers to see their parent go, if they do
        if not _running(pgid):
            return False
        time.sleep(0.05)
    os.killpg(pgid, signal.SIGKILL)
    return True


def _running(pgid: int) -> List[int]:
    """The processes of group ``pgid`` that run (a zombie has ended: only its exit status waits to be read)."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = stat.read_text().rsplit(")", 1)[1].split()     # after "pid (comm)": state, ppid, pgrp, ...
            if int(fields[2]) == pgid and fields[0] != "Z":
                pids.append(int(stat.parent.name))
    return pids


def shown(args: List) -> str:
    return "pyro-zoo " + " ".join(str(a) for a in args)


def hashes(folder: Path) -> Dict[str, str]:
    """SHA-256 of every regular file under ``folder`` by relative path, and ``"folder"`` for each folder."""
    out = {}
    for path in sorted(Path(folder).rglob("*")):
        if path.is_dir() and not path.is_symlink():
            out[str(path.relative_to(folder))] = "folder"
        elif path.is_file() and not path.is_symlink():
            out[str(path.relative_to(folder))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def junk(folder: Path) -> List[str]:
    """The zoo's temporary files left anywhere under ``folder``."""
    return sorted(str(p.relative_to(folder)) for p in Path(folder).rglob("*") if TEMP.match(p.name))


def kept_files(folder: Path) -> List[str]:
    """The files under ``folder`` but lock and temporary files: what a resumed command must end with."""
    return sorted(str(p.relative_to(folder)) for p in Path(folder).rglob("*")
                  if p.is_file() and p.name != LOCK and not TEMP.match(p.name))


def held_locks(folder: Path) -> List[str]:
    """The lock files under ``folder`` that some process still holds (a writer that outlived its command)."""
    import fcntl
    held = []
    for path in Path(folder).rglob(LOCK):
        with open(path, "rb") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                held.append(str(path.relative_to(folder)))
    return held


def without_timings(value):
    """A results file's data without what two runs of the same command need not agree on (times, rates, dates,
    and the seal, content_sha256, which covers the times)."""
    if isinstance(value, dict):
        return {k: without_timings(v) for k, v in value.items()
                if "second" not in k and k not in ("date", "content_sha256")}
    if isinstance(value, list):
        return [without_timings(v) for v in value]
    return value


def figures(path: Path):
    return without_timings(json.loads(path.read_text()))


def same_parameters(a: Path, b: Path) -> bool:
    import torch
    from zoo.training.checkpoint import load_checkpoint
    sa, sb = load_checkpoint(a / "checkpoint.pt"), load_checkpoint(b / "checkpoint.pt")
    return all(sa[part].keys() == sb[part].keys() and all(torch.equal(sa[part][k], sb[part][k]) for k in sa[part])
               for part in ("model", "guide"))


def same_per_datum(a: Path, b: Path) -> bool:
    import numpy as np
    with np.load(a / "per_datum.npz") as pa, np.load(b / "per_datum.npz") as pb:
        return sorted(pa.files) == sorted(pb.files) and all(
            np.array_equal(pa[k], pb[k], equal_nan=pa[k].dtype.kind == "f") for k in pa.files)


def grid_tables(grid: Path):
    """What a grid's tables say, without timings (as tests/test_grid.py compares two grids)."""
    from zoo.evaluation.compare_tables import compare_markdown
    rows = json.loads((grid / "compare.json").read_text())
    return without_timings(rows), compare_markdown(rows, timings=False)


def record(cases: List[Case], family: str, name: str, args: List, outcome: Optional[Outcome], problems: List[str],
           **extra) -> Case:
    case = Case(family, name, shown(args), held=not problems, why_lost="; ".join(problems), extra=extra)
    if outcome is not None:
        case.code, case.stderr, case.seconds = outcome.code, outcome.last_line, round(outcome.seconds, 2)
        case.cpu_seconds, case.max_rss_mib = round(outcome.cpu_seconds, 2), round(outcome.max_rss_mib, 1)
    cases.append(case)
    print(f"  {'held' if case.held else 'LOST'}  {family}: {name}" + (f" ({case.why_lost})" if problems else ""),
          flush=True)
    return case


def check_outcome(outcome: Outcome) -> List[str]:
    """What is wrong with a process's ending in any case: a timeout, a traceback, too much memory, processes
    left running."""
    problems = []
    if outcome.timed_out:
        problems.append(f"still running after {TIMEOUT_S} s")
    if "Traceback" in outcome.stderr:
        problems.append("a traceback")
    if outcome.max_rss_mib > MAX_RSS_MIB:
        problems.append(f"peak RSS {outcome.max_rss_mib:.0f} MiB")
    if outcome.left_processes:
        problems.append("left processes running")
    return problems


def check_refusal(outcome: Outcome) -> List[str]:
    problems = check_outcome(outcome)
    if not outcome.one_line_refusal:
        problems.append(f"exit {outcome.code}, not a one-line refusal "
                        f"({len(outcome.lines)} lines on stderr): {outcome.last_line!r}")
    return problems


# -- the shared material: a run, another run, a code file, a grid ------------------------------------------------
class Material:
    def __init__(self, work: Path):
        self.work = work
        self.run = work / "run"
        self.other = work / "other"
        self.code = work / "code.pzbb"
        self.grid = work / "grid"
        self.grid_args = ["compare", "vae", "--guides", "amortized,meanfield", "--objectives", "elbo", "--epochs",
                          "2", "--deterministic", *SMALL]
        for args in (["train", "vae", "--epochs", "2", "--seed", "0", *SMALL, "--out", self.run],
                     ["train", "vae", "--epochs", "1", "--seed", "1", *SMALL, "--out", self.other],
                     ["compress", self.run, "--limit", "5", "--out", self.code],
                     [*self.grid_args, "--out", self.grid]):
            outcome = run(args)
            if outcome.code != 0:
                fail(f"{shown(args)} failed (exit {outcome.code}): {outcome.last_line}")
        self.decoded = work / "decoded.npy"
        outcome = run(["compress", self.run, "--decode", self.code, "--out", self.decoded])
        if outcome.code != 0:
            fail(f"decoding the untouched code file failed: {outcome.last_line}")


# -- sigkill -------------------------------------------------------------------------------------------------------
def _after_kill(out: Path, ref: Path, outcome: Outcome, killed: Outcome) -> List[str]:
    """What is wrong after a kill and the next command, besides the figures: ``ref`` is the folder of the command
    that was never stopped."""
    problems = check_outcome(outcome)
    if killed.left_processes:
        problems.append("the killed command left processes running")
    if outcome.code != 0:
        problems.append(f"exit {outcome.code}: {outcome.last_line}")
    elif kept_files(out) != kept_files(ref):
        missing, extra = sorted(set(kept_files(ref)) - set(kept_files(out))), \
            sorted(set(kept_files(out)) - set(kept_files(ref)))
        problems.append(f"its files differ from the uninterrupted one's (missing {missing[:3]}, extra {extra[:3]})")
    if junk(out):
        problems.append(f"left {junk(out)[:3]}")
    if held_locks(out):
        problems.append(f"lock still held: {held_locks(out)[:3]}")
    return problems


def sigkill(m: Material, cases: List[Case], rng: random.Random, kills: int) -> None:
    work = m.work / "sigkill"
    work.mkdir()
    train = ["train", "vae", "--epochs", "4", "--batch-size", "10", "--checkpoint-every", "7", "--seed", "3", *SMALL]
    ref = work / "train-ref"
    reference = run([*train, "--out", ref])
    if reference.code != 0:
        fail(f"the uninterrupted training failed: {reference.last_line}")
    for i in range(kills):
        out = work / f"train-{i}"
        delay = rng.uniform(0.3, reference.seconds)
        killed = run([*train, "--out", out], kill_after=delay)
        # what a user runs next: --resume where a checkpoint was written, else the same command again
        args = ["train", "--resume", out, "--no-progress"] if (out / "checkpoint.pt").is_file() else \
            [*train, "--out", out]
        outcome = run(args)
        problems = _after_kill(out, ref, outcome, killed)
        if outcome.code == 0:
            if not same_parameters(ref, out):
                problems.append("parameters differ from the uninterrupted run's")
            if figures(out / "results.json") != figures(ref / "results.json"):
                problems.append("results.json differs from the uninterrupted run's")
            if not same_per_datum(ref, out):
                problems.append("per_datum.npz differs from the uninterrupted run's")
        record(cases, "sigkill", f"train killed at {delay:.2f} s of {reference.seconds:.1f}, then "
               f"{'--resume' if '--resume' in args else 'the same command'}", args, outcome, problems,
               killed_exit=killed.code)

    for label, extra, result_file in (("eval", ["--eval-samples", "400"], "results.json"),
                                      ("eval --estimator ais", ["--estimator", "ais", "--temperatures", "30",
                                                                "--chains", "4", "--leapfrog", "3",
                                                                "--ais-batch-size", "20", "--eval-limit", "100"],
                                       "ais.json")):
        ref = work / f"{label.replace(' ', '_')}-ref"
        shutil.copytree(m.run, ref)
        full = run(["eval", ref, *extra, "--no-progress"])
        if full.code != 0:
            fail(f"the uninterrupted {label} failed: {full.last_line}")
        for i in range(max(1, kills // 2)):
            out = work / f"{label.replace(' ', '_')}-{i}"
            shutil.copytree(m.run, out)
            delay = rng.uniform(0.3, full.seconds)
            args = ["eval", out, *extra, "--no-progress"]
            killed = run(args, kill_after=delay)
            outcome = run(args)
            problems = _after_kill(out, ref, outcome, killed)
            if outcome.code == 0:
                if figures(out / result_file) != figures(ref / result_file):
                    problems.append(f"{result_file} differs from the uninterrupted {label}'s")
                if label == "eval" and not same_per_datum(ref, out):
                    problems.append("per_datum.npz differs from the uninterrupted eval's")
            record(cases, "sigkill", f"{label} killed at {delay:.2f} s of {full.seconds:.1f}, then the same "
                   f"command", args, outcome, problems, killed_exit=killed.code)

    grid_ref = work / "grid-ref"
    for label, extra, times in (("compare", [], max(1, kills // 2)),
                                ("compare --workers 2", ["--workers", "2"], max(1, kills // 3))):
        # the tables to end with are the serial grid's (--deterministic); the kill moments span this command's life
        full = run([*m.grid_args, *extra, "--out", grid_ref if not extra else work / "grid-ref-workers"])
        if full.code != 0:
            fail(f"the uninterrupted {label} failed: {full.last_line}")
        for i in range(times):
            out = work / f"grid-{label.replace(' ', '_')}-{i}"
            delay = rng.uniform(0.3, full.seconds)
            killed = run([*m.grid_args, *extra, "--out", out], kill_after=delay)
            args = ["compare", "--resume", out, "--no-progress"] if (out / "grid.json").is_file() else \
                [*m.grid_args, "--out", out]
            outcome = run(args)
            problems = _after_kill(out, grid_ref, outcome, killed)
            if outcome.code == 0:
                if grid_tables(out) != grid_tables(grid_ref):
                    problems.append("the tables differ from the uninterrupted grid's")
                cells = [c.name for c in grid_ref.iterdir() if (c / "checkpoint.pt").is_file()]
                if not all(same_parameters(grid_ref / c, out / c) for c in cells):
                    problems.append("a cell's parameters differ from the uninterrupted grid's")
            record(cases, "sigkill", f"{label} killed at {delay:.2f} s of {full.seconds:.1f}, then "
                   f"{'--resume' if '--resume' in args else 'the same command'}", args, outcome, problems,
                   killed_exit=killed.code)


# -- full disk and read-only folders ---------------------------------------------------------------------------
@contextlib.contextmanager
def mounted(path: Path, size_kib: int):
    path.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kib}k", "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=True)
        path.rmdir()


def fill(folder: Path, free_kib: int = 0) -> None:
    """Fill the filesystem of ``folder`` to its last byte, then free ``free_kib`` KiB of it again (so that a
    command's first small files fit and a later one does not)."""
    with open(folder / "filler", "wb", buffering=0) as f:
        for block in (2 ** 16, 4096, 1):
            with contextlib.suppress(OSError):
                while True:
                    f.write(b"\0" * block)
        f.truncate(max(0, f.tell() - 1024 * free_kib))


def writers(place: Path, m: Material) -> Dict[str, List]:
    """Every command that writes, aimed at ``place`` (which holds a copy of the run and of the grid)."""
    run_ = place / "run"
    return {
        "train (a new run folder)": ["train", "vae", "--epochs", "1", *SMALL, "--out", place / "new"],
        "train --resume": ["train", "--resume", run_, "--epochs", "3", "--no-progress"],
        "eval": ["eval", run_, "--eval-samples", "12", "--force", "--no-progress"],
        "eval --gaps": ["eval", run_, "--gaps", "--refit-epochs", "2", "--eval-limit", "10", "--no-progress"],
        "eval --estimator ais": ["eval", run_, "--estimator", "ais", "--temperatures", "5", "--chains", "2",
                                 "--leapfrog", "2", "--eval-limit", "8", "--no-progress"],
        "eval --estimator bdmc": ["eval", run_, "--estimator", "bdmc", "--temperatures", "5", "--chains", "2",
                                  "--leapfrog", "2", "--bdmc-data", "4", "--no-progress"],
        "compress (into the run folder)": ["compress", run_, "--limit", "5"],
        "compress --out": ["compress", m.run, "--limit", "5", "--out", place / "code.pzbb"],
        "compress --decode": ["compress", m.run, "--decode", m.code, "--out", place / "decoded.npy"],
        "compare (a new grid)": [*m.grid_args, "--out", place / "newgrid"],
        "compare --resume": ["compare", "--resume", place / "grid", "--no-progress"],
        "gradients": ["gradients", "vae", "--objectives", "elbo", "--particles", "1", "--repeats", "2", "--checkpoint",
                      run_, "--out", place / "gradients", *SMALL[:6], "--batch-size", "5", "--no-progress"],
        "report": ["report", place / "grid", "--out", place / "report"],
    }


def judge_refusal(outcome: Outcome, before: Dict[str, str], after: Dict[str, str], place: Path,
                  whole_files_may_stay: bool = False) -> List[str]:
    """What is wrong with a writer's ending on a full or read-only disk: not a one-line refusal, a file that was
    there changed or gone, or something new left: anything at all, or, where ``whole_files_may_stay`` (the disk
    filled part way through: what was written before it filled, a checkpoint say, is the user's work), a
    temporary file or a file that does not load."""
    problems = check_refusal(outcome)
    changed = [p for p, h in before.items() if after.get(p) != h and Path(p).name != LOCK]
    if changed:
        problems.append(f"changed or removed {changed[:3]}")
    new = [p for p in after if p not in before and Path(p).name != LOCK]
    if whole_files_may_stay:
        new = [p for p in new if TEMP.match(Path(p).name) or not whole(place / p)]
    if new:
        problems.append(f"left {new[:3]}" if not whole_files_may_stay else f"left a partial file: {new[:3]}")
    return problems


def whole(path: Path) -> bool:
    """Whether a file the zoo wrote is whole: it loads as what its name says (a folder is whole)."""
    import numpy as np
    if path.is_dir():
        return True
    try:
        if path.suffix == ".json":
            json.loads(path.read_text())
        elif path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as arrays:
                [arrays[k] for k in arrays.files]
        elif path.suffix == ".npy":
            np.load(path, allow_pickle=False)
        elif path.suffix == ".pt":
            from zoo.training.checkpoint import load_checkpoint
            load_checkpoint(path)
        elif path.suffix == ".png":
            return path.read_bytes().endswith(b"IEND\xaeB`\x82")
        elif path.suffix == ".pzbb":
            return path.read_bytes().startswith(b"PZBB")
        else:
            return path.stat().st_size > 0
    except Exception:                           # whatever a loader raises on a cut file
        return False
    return True


def full_disk(m: Material, cases: List[Case], free_kib: int) -> None:
    """Each writer on a disk with ``free_kib`` KiB free. With none, a one-line refusal that leaves nothing is the
    only answer; with some, a command whose files all fit may end well (exit 0), and one that refuses may leave
    the whole files it wrote before the disk filled, but no partial one, and every file that was there as it was."""
    for name, args in writers(m.work / "disk", m).items():
        with mounted(m.work / "disk", 4096) as place:
            shutil.copytree(m.run, place / "run")
            shutil.copytree(m.grid, place / "grid")
            fill(place, free_kib)
            before = hashes(place)
            outcome = run(args)
            if free_kib and outcome.code == 0:
                problems = check_outcome(outcome)
            else:
                problems = judge_refusal(outcome, before, hashes(place), place, whole_files_may_stay=free_kib > 0)
            record(cases, "full_disk", f"{name}, {free_kib} KiB free", args, outcome, problems)


def read_only(m: Material, cases: List[Case]) -> None:
    for name, args in writers(m.work / "ro", m).items():
        with mounted(m.work / "ro", 65536) as place:
            shutil.copytree(m.run, place / "run")
            shutil.copytree(m.grid, place / "grid")
            subprocess.run(["mount", "-o", "remount,ro", str(place)], check=True)
            before = hashes(place)
            outcome = run(args)
            record(cases, "read_only", name, args, outcome, judge_refusal(outcome, before, hashes(place), place))


# -- hand-edited grids -------------------------------------------------------------------------------------------
def _edit_json(path: Path, change: Callable[[Dict], None]) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data, indent=2))


def _report_pages(out: Path, grid: Path) -> Dict[str, str]:
    """The text pages a report of ``grid`` wrote, the grid's folder name (its links) made neutral."""
    return {str(p.relative_to(out)): p.read_text().replace(grid.name, "GRID")
            for p in sorted(out.rglob("*")) if p.is_file() and p.suffix in (".md", ".json", ".html")}


def _report(grid: Path, out: Path) -> Dict[str, str]:
    """The pages of ``report GRID``, for a grid this script has not edited."""
    outcome = run(["report", grid, "--out", out])
    if outcome.code != 0:
        fail(f"report of the unedited grid {grid.name} failed: {outcome.last_line}")
    return _report_pages(out, grid)


def edited_grid(m: Material, cases: List[Case]) -> None:
    cells = sorted(p for p in m.grid.iterdir() if (p / "results.json").is_file())
    a, b = cells[0], cells[1]
    results = a / "results.json"
    nll = json.loads(results.read_text())["nll"]

    def set_nll(value):
        return lambda g: _edit_json(g / a.name / "results.json", lambda r: r.__setitem__("nll", value))

    def swap(g):
        ra, rb = (g / a.name / "results.json"), (g / b.name / "results.json")
        ta, tb = ra.read_text(), rb.read_text()
        ra.write_text(tb)
        rb.write_text(ta)

    def nan(g):
        path = g / a.name / "results.json"
        text = path.read_text()
        path.write_text(re.sub(r'"nll": [^,\n]+', '"nll": NaN', text, count=1))

    epochs = json.loads((m.grid / "grid.json").read_text())["base"]["epochs"]
    edits = {
        "a cell's NLL lowered by a nat": set_nll(nll - 1.0),
        "a cell's NLL made NaN": nan,
        "a cell's NLL made a word": set_nll("low"),
        "two cells' results.json swapped": swap,
        "epochs raised in grid.json": lambda g: _edit_json(
            g / "grid.json", lambda p: p["base"].__setitem__("epochs", epochs + 1)),
        "a cell's checkpoint.pt deleted": lambda g: (g / a.name / "checkpoint.pt").unlink(),
        "a cell's results.json deleted": lambda g: (g / a.name / "results.json").unlink(),
    }
    reference = grid_tables(m.grid)
    raised = m.work / "grid-raised"            # the tables of the grid the raised plan asks for, made if needed
    unedited = m.work / "unedited-grid"         # (a name that no page holds but as the grid's folder)
    shutil.copytree(m.grid, unedited)
    report_ref = _report(unedited, m.work / "report-unedited")
    for i, (name, edit) in enumerate(edits.items()):
        grid = m.work / f"edited-{i}"
        shutil.copytree(m.grid, grid)
        edit(grid)
        expected = reference
        if name.startswith("epochs raised"):
            if not raised.exists():
                made = run([*m.grid_args[:m.grid_args.index("--epochs") + 1], str(epochs + 1),
                            *m.grid_args[m.grid_args.index("--epochs") + 2:], "--out", raised])
                if made.code != 0:
                    fail(f"the grid of {epochs + 1} epochs failed: {made.last_line}")
            expected = grid_tables(raised)

        # the report reads the cells' results.json alone: it shows the unedited grid's figures, or (a results.json
        # deleted) those of the grid without that cell
        expected_pages = report_ref
        if name.endswith("results.json deleted"):
            shutil.copytree(m.grid, m.work / "unedited-grid-less", ignore=lambda d, f: [a.name] if d == str(m.grid)
                            else [])
            expected_pages = _report(m.work / "unedited-grid-less", m.work / "report-unedited-less")
        report_out = m.work / f"report-{i}"
        args = ["report", grid, "--out", report_out]
        outcome = run(args)
        problems = check_outcome(outcome)
        if outcome.code == 0:
            if _report_pages(report_out, grid) != expected_pages:
                problems.append("the report's pages differ from those of the unedited grid")
        elif not outcome.one_line_refusal:
            problems.append(f"exit {outcome.code}, not a one-line refusal: {outcome.last_line!r}")
        record(cases, "edited_grid", f"report: {name}", args, outcome, problems)

        before = {f: (grid / f).read_bytes() for f in ("compare.md", "compare.json", "grid.json")}
        args = ["compare", "--resume", grid, "--no-progress"]
        outcome = run(args)
        problems = check_outcome(outcome)
        if outcome.code == 2:
            if not outcome.one_line_refusal:
                problems.append(f"a refusal of {len(outcome.lines)} lines")
            if any((grid / f).read_bytes() != t for f, t in before.items()):
                problems.append("rewrote the grid's files before refusing")
        elif outcome.code == 0:
            if grid_tables(grid) != expected:
                problems.append("the tables differ from those of the grid the plan asks for (an edited figure "
                                "taken in)")
        else:
            problems.append(f"exit {outcome.code}: {outcome.last_line}")
        record(cases, "edited_grid", f"compare --resume: {name}", args, outcome, problems)


# -- crafted code files ------------------------------------------------------------------------------------------
def _header(data: bytes):
    """The JSON header of a code file (MAGIC, a version byte, a 4-byte big-endian length, the header) and where
    it ends."""
    start = 4 + 1 + 4
    size = int.from_bytes(data[5:9], "big")
    return json.loads(data[start:start + size]), start + size


def _with_header(data: bytes, change: Callable[[Dict], None]) -> bytes:
    header, end = _header(data)
    change(header)
    text = json.dumps(header, sort_keys=True).encode()
    return data[:5] + len(text).to_bytes(4, "big") + text + data[end:]


def _flip(data: bytes, at: int, bit: int) -> bytes:
    return data[:at] + bytes([data[at] ^ (1 << bit)]) + data[at + 1:]


def crafted_files(good: bytes, rng: random.Random, flips: int) -> Dict[str, Callable[[Path], Path]]:
    """Name -> a function that makes the crafted file at the path it is given and returns the path to decode."""
    _, header_end = _header(good)

    def writes(data: bytes):
        def make(p: Path) -> Path:
            p.write_bytes(data)
            return p
        return make

    crafted: Dict[str, Callable[[Path], Path]] = {"the untouched file": writes(good)}
    for cut in sorted({0, 3, 4, 5, 8, 9, header_end // 2, header_end - 1, header_end, header_end + 1,
                       len(good) - 4, len(good) - 1}):
        crafted[f"truncated to {cut} of {len(good)} bytes"] = writes(good[:cut])
    for where, low, high in (("header", 9, header_end), ("payload", header_end, len(good))):
        for _ in range(flips):
            at, bit = rng.randrange(low, high), rng.randrange(8)
            crafted[f"bit {bit} of byte {at} flipped ({where})"] = writes(_flip(good, at, bit))
    claims = [("num_data", 200000), ("num_data", 10 ** 30), ("num_data", 5.0), ("num_data", "5"), ("num_data", -5),
              ("num_words", 10 ** 12), ("x_dim", 10 ** 6), ("levels", 2 ** 40), ("latent_bits", 64),
              ("limit", -1), ("split", "valid"), ("split", "../../etc"), ("precision_bits", 99),
              ("run_sha256", "0" * 64), ("data_sha256", "0" * 64), ("message_sha256", "0" * 64)]
    for key, value in claims:
        crafted[f"header says {key} {value!r}"] = writes(_with_header(good, lambda h, k=key, v=value: h.__setitem__(k, v)))
    crafted["header without num_words"] = writes(_with_header(good, lambda h: h.pop("num_words")))
    crafted["header a JSON list"] = writes(good[:5] + (2).to_bytes(4, "big") + b"[]" + good[header_end:])
    crafted["header nested 30000 deep"] = writes(good[:5] + (60000).to_bytes(4, "big") + b"[" * 30000 + b"]" * 30000
                                                 + good[header_end:])
    digits, found = re.subn(rb'"num_data": \d+', b'"num_data": ' + b"9" * 5000, good[9:header_end])
    if found != 1:
        fail("the code file's header has no num_data to lengthen")
    crafted["header says num_data of 5000 digits"] = writes(good[:5] + len(digits).to_bytes(4, "big") + digits
                                                            + good[header_end:])
    crafted["header length claims 2^31 bytes"] = writes(good[:5] + (2 ** 31).to_bytes(4, "big") + good[9:])
    crafted["header length claims 2^32 - 1 bytes"] = writes(good[:5] + (2 ** 32 - 1).to_bytes(4, "big") + good[9:])
    crafted["version byte 9"] = writes(good[:4] + bytes([9]) + good[5:])
    crafted["wrong magic"] = writes(b"PZBX" + good[4:])
    crafted["one byte appended"] = writes(good + b"\0")
    crafted["1 MiB appended"] = writes(good + rng.randbytes(2 ** 20))
    crafted["empty file"] = writes(b"")
    crafted["1 MiB of random bytes"] = writes(rng.randbytes(2 ** 20))
    crafted["64 MiB of zeros after a good header"] = writes(good[:header_end] + b"\0" * 2 ** 26)
    crafted["a folder"] = lambda p: (p.mkdir(), p)[1]
    crafted["a FIFO with a writer ready to feed it the good file"] = lambda p: (os.mkfifo(p), p)[1]
    crafted["/dev/zero"] = lambda p: Path("/dev/zero")
    crafted["a link to /dev/zero"] = lambda p: (p.symlink_to("/dev/zero"), p)[1]
    crafted["a link to /dev/urandom"] = lambda p: (p.symlink_to("/dev/urandom"), p)[1]
    crafted["a path that does not exist"] = lambda p: p
    return crafted


def code_file(m: Material, cases: List[Case], rng: random.Random, flips: int) -> None:
    import numpy as np
    good = m.code.read_bytes()
    truth = np.load(m.decoded)
    folder = m.work / "crafted"
    folder.mkdir()
    for i, (name, make) in enumerate(crafted_files(good, rng, flips).items()):
        path = make(folder / f"case{i}.pzbb")
        out = folder / f"case{i}.npy"
        feeder = None
        if "FIFO" in name:                      # a decoder that reads the pipe would get the good file
            feeder = threading.Thread(target=_feed, args=(path, good), daemon=True)
            feeder.start()
        unchanged = path.is_file() and path.read_bytes() == good if "FIFO" not in name else False
        args = ["compress", m.run, "--decode", path, "--out", out]
        outcome = run(args)
        problems = check_outcome(outcome)
        if outcome.code == 0:
            if not (out.is_file() and np.array_equal(np.load(out), truth)):
                problems.append("exit 0 with rows that are not the coded ones")
        else:
            if unchanged:
                problems.append(f"the untouched file was not decoded: {outcome.last_line!r}")
            if not outcome.one_line_refusal:
                problems.append(f"exit {outcome.code}, not a one-line refusal: {outcome.last_line!r}")
            if os.path.lexists(out):
                problems.append("wrote --out before refusing")
        if outcome.cpu_seconds > CPU_LIMIT_S:
            problems.append(f"took {outcome.cpu_seconds:.0f} s of CPU")
        record(cases, "code_file", f"--decode: {name}", args, outcome, problems,
               decoded=outcome.code == 0, file_changed=not unchanged)
        if feeder is not None:
            with contextlib.suppress(OSError):           # end a feeder still waiting for a reader
                os.close(os.open(path, os.O_RDONLY | os.O_NONBLOCK))
            feeder.join(timeout=5)
        if path.parent == folder:
            if path.is_dir() and not path.is_symlink():
                path.rmdir()
            elif os.path.lexists(path):
                path.unlink()

    notes = folder / "notes.txt"
    notes.write_text("a file of the user's")
    outcome = run(["compress", m.other, "--limit", "3", "--out", folder / "other.pzbb"])
    if outcome.code != 0:
        fail(f"compress of the second run failed: {outcome.last_line}")
    targets = {"the run's checkpoint.pt": (m.run, m.run / "checkpoint.pt"),
               "the run's config.json": (m.run, m.run / "config.json"),
               "the run's results.json": (m.run, m.run / "results.json"),
               "another run's results.json": (m.run, m.other / "results.json"),
               "another run's checkpoint.pt": (m.run, m.other / "checkpoint.pt"),
               "another run's code file": (m.run, folder / "other.pzbb"),
               "the grid's compare.json": (m.run, m.grid / "compare.json"),
               "a file of the user's": (m.run, notes)}
    for name, (source, target) in targets.items():
        before = target.read_bytes()
        args = ["compress", source, "--limit", "5", "--out", target]
        outcome = run(args)
        problems = check_refusal(outcome)
        if target.read_bytes() != before:
            problems.append("replaced it")
        record(cases, "code_file", f"compress --out onto {name}", args, outcome, problems)
    for name, target in (("the run's checkpoint.pt", m.run / "checkpoint.pt"),
                         ("another run's results.json", m.other / "results.json"),
                         ("the code file being read", m.code), ("a file of the user's", notes)):
        before = target.read_bytes()
        args = ["compress", m.run, "--decode", m.code, "--out", target]
        outcome = run(args)
        problems = check_refusal(outcome)
        if target.read_bytes() != before:
            problems.append("replaced it")
        record(cases, "code_file", f"compress --decode --out onto {name}", args, outcome, problems)


def _feed(fifo: Path, data: bytes) -> None:
    """Write ``data`` into the FIFO once a reader opens it (blocks until then, or until it is opened to end)."""
    with contextlib.suppress(OSError):
        with open(fifo, "wb") as f:
            f.write(data)


# -- the result ----------------------------------------------------------------------------------------------------
def markdown(data: Dict) -> str:
    """The totals (the one table, so that the report's ``{{ include }}`` takes it alone), every lost case, and every
    case as a list by family."""
    prov = data["provenance"]
    lines = ["# Fault injection: what the zoo holds and what it loses", "",
             f"Command: `{prov['command']}`  ", f"Commit: `{prov['git_commit']}`"
             + (" (uncommitted changes)" if prov.get("git_dirty") else "") + "  ",
             f"Hardware: {prov['cpu']}, {prov['logical_cores']} logical cores; "
             f"{data['seconds'] / 60:.1f} min wall", "",
             "Each case is one `pyro-zoo` process on the 8x8 digits; the script's docstring says what held means "
             f"in each family. Limits: {TIMEOUT_S} s wall per process, {CPU_LIMIT_S} s CPU for a crafted code "
             f"file, {MAX_RSS_MIB} MiB peak RSS.", "",
             "Cases tried, held and lost, by family of fault:", "",
             "| family | tried | held | lost | not run |", "|---|---|---|---|---|"]
    for family, t in data["totals"].items():
        lines.append(f"| {family} | {t['tried']} | {t['held']} | {t['lost']} | {t.get('not_run') or ''} |")
    total = {k: sum(t[k] for t in data["totals"].values()) for k in ("tried", "held", "lost")}
    lines.append(f"| **all** | **{total['tried']}** | **{total['held']}** | **{total['lost']}** | |")
    lost = [c for c in data["cases"] if not c["held"]]
    lines += ["", "## Lost", ""]
    lines += [f"- {c['family']}: {c['case']} (`{c['command']}`): {c['why_lost']}" for c in lost] or ["None."]
    decoded = [c for c in data["cases"] if c["extra"].get("decoded") and c["extra"].get("file_changed")]
    if decoded:
        lines += ["", "Changed code files that decoded, to exactly the coded rows (held): "
                  + "; ".join(c["case"].removeprefix("--decode: ") for c in decoded) + "."]
    lines += ["", "## Every case", "", "held or LOST · exit code · seconds (CPU seconds) · peak RSS · the case · "
              "stderr's last line"]
    for family in data["totals"]:
        lines += ["", f"### {family}", ""]
        for c in (c for c in data["cases"] if c["family"] == family):
            stderr = c["stderr"][:200].replace("`", "'")
            lines.append(f"- {'held' if c['held'] else '**LOST**'} · {c['code']} · {c['seconds']} s "
                         f"({c['cpu_seconds']}) · {c['max_rss_mib']:.0f} MiB · {c['case']}"
                         + (f" · `{stderr}`" if stderr else ""))
    return "\n".join(lines) + "\n"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--families", default=",".join(FAMILIES), help=f"comma-separated, from {', '.join(FAMILIES)}")
    p.add_argument("--kills", type=int, default=6, help="random SIGKILL moments of train (half as many of eval, AIS and compare, a third of --workers 2)")
    p.add_argument("--flips", type=int, default=6, help="random bit flips of a code file, in header and in payload")
    p.add_argument("--free-kib", default="0,16,64",
                   help="the KiB left free on the full disk, one pass of every writer each (comma-separated)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--name", default="fault_injection")
    args = p.parse_args(argv)
    families = [f for f in args.families.split(",") if f]
    if not families or any(f not in FAMILIES for f in families):
        fail(f"--families takes names from {', '.join(FAMILIES)}, got {args.families!r}")
    if args.kills < 1 or args.flips < 0:
        fail("--kills must be at least 1 and --flips at least 0")
    try:
        free_kib = [int(k) for k in args.free_kib.split(",")]
    except ValueError:
        free_kib = [-1]
    if any(k < 0 or k > 1024 for k in free_kib):
        fail(f"--free-kib takes comma-separated KiB from 0 to 1024 (the disk holds 4 MiB), got {args.free_kib!r}")
    rng = random.Random(args.seed)
    cases: List[Case] = []
    not_run: Dict[str, str] = {}
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="pyro-zoo-faults-") as tmp:
        print("making a run, a code file and a grid ...", flush=True)
        m = Material(Path(tmp))
        for family in families:
            print(f"{family}:", flush=True)
            if family in ("full_disk", "read_only") and os.geteuid() != 0:
                not_run[family] = "needs root to mount a tmpfs"
                continue
            if family == "sigkill":
                sigkill(m, cases, rng, args.kills)
            elif family == "full_disk":
                for kib in free_kib:
                    full_disk(m, cases, kib)
            elif family == "read_only":
                read_only(m, cases)
            elif family == "edited_grid":
                edited_grid(m, cases)
            else:
                code_file(m, cases, rng, args.flips)
    totals = {}
    for family in families:
        mine = [c for c in cases if c.family == family]
        totals[family] = {"tried": len(mine), "held": sum(c.held for c in mine),
                          "lost": sum(not c.held for c in mine), "not_run": not_run.get(family)}
    seconds = time.perf_counter() - t0
    path = write_result(args.name, {"settings": vars(args), "seconds": round(seconds, 1),
                                    "limits": {"timeout_s": TIMEOUT_S, "cpu_limit_s": CPU_LIMIT_S,
                                               "max_rss_mib": MAX_RSS_MIB},
                                    "totals": totals, "cases": [asdict(c) for c in cases]})
    (RESULTS / f"{args.name}.md").write_text(markdown(json.loads(path.read_text())))
    print(f"wrote {path} and {RESULTS / (args.name + '.md')}")
    lost = sum(t["lost"] for t in totals.values())
    print(f"{len(cases)} cases, {len(cases) - lost} held, {lost} lost in {seconds / 60:.1f} min")


if __name__ == "__main__":
    run_script(main)
