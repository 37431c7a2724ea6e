"""Faults a user's machine throws at the zoo, each tried as the command a user types: held or lost.

Five families of faults, each case one real ``pyro-zoo`` process (``python -m zoo``) on the embedded 8x8 digits:

- **sigkill**: ``train``, ``eval``, ``eval --estimator ais`` and ``compare`` killed with SIGKILL at a random moment
  (seeded), then the command a user runs next (``--resume``, or the same command again). Held if it ends with
  exactly the figures of a run that was never stopped (parameters bit for bit; results without their timings)
  and leaves none of the zoo's temporary files.
- **full_disk**: every writer pointed at a run folder on a tmpfs filled to the last byte. Held if it refuses in
  one line (exit 2, no traceback), every file that was there is byte for byte as it was, and nothing new is left
  behind (a folder the command made is removed again). The folder's lock file, which holds the pid of its
  writer, is the zoo's own and is left out of both checks.
- **read_only**: the same writers on a read-only mount of the same folders; the same rule.
- **edited_grid**: a finished ``compare`` grid whose files are edited by hand (a figure changed, NaN, a word,
  two cells' results swapped, a raised ``epochs``, a deleted checkpoint or results file), then ``compare
  --resume``. Held if it refuses in one line and leaves the tables as they were, or ends with exactly the tables
  of the unedited grid (a missing cell trained again), never with an edited figure in them.
- **code_file**: ``compress --decode`` of crafted code files (truncations, flipped bytes, headers that claim
  huge sizes, a FIFO, ``/dev/zero``, a folder, random bytes), and ``compress --out`` aimed at files the zoo did
  not make for it. Held if it refuses in one line within 60 s and 2 GiB (the child's peak RSS), writes no
  output, and leaves the target as it was; a decode that succeeds is held only if its rows are the true ones.

A case that times out, prints a traceback, exits otherwise, changes a file it must not, or leaves junk is lost,
and the result says why. The mounts need root (tmpfs and a read-only remount; ``chmod`` does not stop root):
without it those two families are reported as not run.

    OMP_NUM_THREADS=1 python benchmarks/fault_injection.py                  # the committed results (~15 min)
    OMP_NUM_THREADS=1 python benchmarks/fault_injection.py --families code_file --name try

Writes ``benchmarks/results/<name>.json`` and ``.md``.
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
ENV = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT), PYRO_ZOO_OFFLINE="1")
FAMILIES = ("sigkill", "full_disk", "read_only", "edited_grid", "code_file")
#: a small run of the digits: seconds to train, so that every case is one short process
SMALL = ["--dataset", "digits", "--latent-dim", "2", "--hidden", "16", "--eval-samples", "10", "--iwae-k", "4",
         "--no-progress"]
TIMEOUT_S = 60
MAX_RSS_MIB = 2048
#: the zoo's temporary files (zoo.training.checkpoint: .NAME.XXXXXXXX.tmp, .NAME.partial.EXT)
TEMP = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp$|^\..+\.partial(\.[A-Za-z0-9]+)?$")
LOCK = ".pyro-zoo.lock"


@dataclass
class Outcome:
    """One process: its exit status, the last line it printed on stderr, its time and its peak memory."""
    code: Optional[int]
    stderr: str
    seconds: float
    max_rss_mib: float
    timed_out: bool

    @property
    def one_line_refusal(self) -> bool:
        lines = self.stderr.strip().splitlines()
        return self.code == 2 and len(lines) == 1 and "Traceback" not in self.stderr

    @property
    def last_line(self) -> str:
        lines = self.stderr.strip().splitlines()
        return lines[-1][:300] if lines else ""


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
    max_rss_mib: float = 0.0
    extra: Dict = field(default_factory=dict)


def run(args: List, timeout: float = TIMEOUT_S, kill_after: Optional[float] = None,
        stdin=subprocess.DEVNULL) -> Outcome:
    """``pyro-zoo ARGS`` in a child process: its outcome, with the child's own peak RSS (``os.wait4``). With
    ``kill_after``, SIGKILL it that many seconds after its start (if it is still running)."""
    cmd = ZOO + [str(a) for a in args]
    err = tempfile.TemporaryFile()
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, stdin=stdin, env=ENV, cwd=ROOT)
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
    proc.returncode = os.waitstatus_to_exitcode(status)
    err.seek(0)
    text = err.read().decode(errors="replace")
    return Outcome(proc.returncode, text, time.perf_counter() - start, usage.ru_maxrss / 1024, timed_out)


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


def without_timings(value):
    """A results file's data without what differs between two runs of the same command: wall-clock figures, and
    the seal (a SHA-256 of the whole content, timings included)."""
    from zoo.core.files import SEAL
    if isinstance(value, dict):
        return {k: without_timings(v) for k, v in value.items() if "seconds" not in k and k not in ("date", SEAL)}
    if isinstance(value, list):
        return [without_timings(v) for v in value]
    return value


def figures(path: Path):
    """A results file as data, its timings left out (what two runs of the same command must agree on)."""
    return without_timings(json.loads(path.read_text()))


def same_parameters(a: Path, b: Path) -> bool:
    import torch
    from zoo.training.checkpoint import load_checkpoint
    sa, sb = load_checkpoint(a / "checkpoint.pt"), load_checkpoint(b / "checkpoint.pt")
    return all(sa[part].keys() == sb[part].keys() and all(torch.equal(sa[part][k], sb[part][k]) for k in sa[part])
               for part in ("model", "guide"))


def record(cases: List[Case], family: str, name: str, args: List, outcome: Optional[Outcome], problems: List[str],
           **extra) -> Case:
    case = Case(family, name, shown(args), held=not problems, why_lost="; ".join(problems), extra=extra)
    if outcome is not None:
        case.code, case.stderr, case.seconds = outcome.code, outcome.last_line, round(outcome.seconds, 2)
        case.max_rss_mib = round(outcome.max_rss_mib, 1)
    cases.append(case)
    print(f"  {'held' if case.held else 'LOST'}  {family}: {name}" + (f" ({case.why_lost})" if problems else ""),
          flush=True)
    return case


def check_outcome(outcome: Outcome) -> List[str]:
    """What is wrong with a process's ending whatever the case: a timeout, a traceback, too much memory."""
    problems = []
    if outcome.timed_out:
        problems.append(f"still running after {TIMEOUT_S} s")
    if "Traceback" in outcome.stderr:
        problems.append("a traceback")
    if outcome.max_rss_mib > MAX_RSS_MIB:
        problems.append(f"peak RSS {outcome.max_rss_mib:.0f} MiB")
    return problems


# -- the shared material: a run, a code file, a grid -----------------------------------------------------------
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
            outcome = run(args, timeout=600)
            if outcome.code != 0:
                fail(f"{shown(args)} failed (exit {outcome.code}): {outcome.last_line}")
        self.decoded = work / "decoded.npy"
        outcome = run(["compress", self.run, "--decode", self.code, "--out", self.decoded])
        if outcome.code != 0:
            fail(f"decoding the untouched code file failed: {outcome.last_line}")


# -- sigkill -------------------------------------------------------------------------------------------------------
def sigkill(m: Material, cases: List[Case], rng: random.Random, kills: int) -> None:
    work = m.work / "sigkill"
    work.mkdir()
    train = ["train", "vae", "--epochs", "4", "--batch-size", "10", "--checkpoint-every", "7", "--seed", "3", *SMALL]
    reference = run([*train, "--out", work / "train-ref"], timeout=600)
    if reference.code != 0:
        fail(f"the uninterrupted training failed: {reference.last_line}")
    for i in range(kills):
        out = work / f"train-{i}"
        delay = rng.uniform(0.5, reference.seconds)
        run([*train, "--out", out], kill_after=delay)
        if (out / "checkpoint.pt").is_file():
            args, then = ["train", "--resume", out, "--no-progress"], "--resume"
        else:                                   # killed before its first checkpoint: the command again, --force
            args, then = [*train, "--out", out, "--force"], "the same command with --force"
        outcome = run(args, timeout=600)
        problems = check_outcome(outcome)
        if outcome.code != 0:
            problems.append(f"exit {outcome.code}: {outcome.last_line}")
        else:
            if not same_parameters(work / "train-ref", out):
                problems.append("parameters differ from the uninterrupted run's")
            if figures(out / "results.json") != figures(work / "train-ref" / "results.json"):
                problems.append("results differ from the uninterrupted run's")
        if junk(out):
            problems.append(f"left {junk(out)}")
        record(cases, "sigkill", f"train killed at {delay:.2f} s, then {then}", args, outcome, problems)

    for label, extra, result_file in (("eval", ["--eval-samples", "400"], "results.json"),
                                      ("eval --estimator ais", ["--estimator", "ais", "--temperatures", "30",
                                                                "--chains", "4", "--leapfrog", "3",
                                                                "--ais-batch-size", "20", "--eval-limit", "100"],
                                       "ais.json")):
        ref = work / f"{label.replace(' ', '_')}-ref"
        shutil.copytree(m.run, ref)
        command = ["eval", ref, *extra, "--no-progress"]
        full = run(command, timeout=600)
        if full.code != 0:
            fail(f"the uninterrupted {label} failed: {full.last_line}")
        for i in range(max(1, kills // 2)):
            out = work / f"{label.replace(' ', '_')}-{i}"
            shutil.copytree(m.run, out)
            delay = rng.uniform(0.5, full.seconds)
            args = ["eval", out, *extra, "--no-progress"]
            run(args, kill_after=delay)
            outcome = run(args, timeout=600)
            problems = check_outcome(outcome)
            if outcome.code != 0:
                problems.append(f"exit {outcome.code}: {outcome.last_line}")
            elif figures(out / result_file) != figures(ref / result_file):
                problems.append(f"{result_file} differs from the uninterrupted {label}'s")
            if junk(out):
                problems.append(f"left {junk(out)}")
            record(cases, "sigkill", f"{label} killed at {delay:.2f} s, then the same command", args, outcome,
                   problems)

    grid_ref = work / "grid-ref"
    full = run([*m.grid_args, "--out", grid_ref], timeout=600)
    for i in range(max(1, kills // 2)):
        out = work / f"grid-{i}"
        delay = rng.uniform(0.5, full.seconds)
        run([*m.grid_args, "--out", out], kill_after=delay)
        args = ["compare", "--resume", out, "--no-progress"] if (out / "grid.json").is_file() else \
            [*m.grid_args, "--out", out, "--force"]
        outcome = run(args, timeout=600)
        problems = check_outcome(outcome)
        if outcome.code != 0:
            problems.append(f"exit {outcome.code}: {outcome.last_line}")
        elif figures(out / "compare.json") != figures(grid_ref / "compare.json"):
            problems.append("compare.json differs from the uninterrupted grid's")
        if junk(out):
            problems.append(f"left {junk(out)}")
        record(cases, "sigkill", f"compare killed at {delay:.2f} s, then {args[1]}", args, outcome, problems)


# -- full disk and read-only folders ---------------------------------------------------------------------------
@contextlib.contextmanager
def mounted(path: Path, size_kib: int):
    path.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kib}k", "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(folder: Path) -> None:
    """Fill the filesystem of ``folder`` to its last byte."""
    fd = os.open(folder / "filler", os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        for block in (2 ** 16, 4096, 1):                  # unbuffered: every byte that fits is written
            with contextlib.suppress(OSError):
                while True:
                    os.write(fd, b"\0" * block)
    finally:
        os.close(fd)


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
        "compress": ["compress", run_, "--limit", "5"],
        "compress --decode": ["compress", m.run, "--decode", m.code, "--out", place / "decoded.npy"],
        "compare (a new grid)": [*m.grid_args, "--out", place / "newgrid"],
        "compare --resume": ["compare", "--resume", place / "grid", "--no-progress"],
        "report": ["report", run_, "--out", place / "report"],
    }


def judge_refusal(outcome: Outcome, before: Dict[str, str], after: Dict[str, str], place: Path) -> List[str]:
    problems = check_outcome(outcome)
    if not outcome.one_line_refusal:
        problems.append(f"exit {outcome.code}, not a one-line refusal: {outcome.last_line!r}")
    changed = [p for p, h in before.items() if after.get(p) != h and Path(p).name != LOCK]   # the lock holds a pid
    if changed:
        problems.append(f"changed or removed {changed[:3]}")
    new = [p for p in after if p not in before and Path(p).name != LOCK]
    if new:
        problems.append(f"left {new[:3]}")
    return problems


def full_disk(m: Material, cases: List[Case]) -> None:
    for name, args in writers(m.work / "disk", m).items():
        with mounted(m.work / "disk", 4096) as place:
            shutil.copytree(m.run, place / "run")
            shutil.copytree(m.grid, place / "grid")
            fill(place)
            before = hashes(place)
            outcome = run(args)
            problems = judge_refusal(outcome, before, hashes(place), place)
            record(cases, "full_disk", name, args, outcome, problems)
        shutil.rmtree(m.work / "disk")


def read_only(m: Material, cases: List[Case]) -> None:
    for name, args in writers(m.work / "ro", m).items():
        with mounted(m.work / "ro", 65536) as place:
            shutil.copytree(m.run, place / "run")
            shutil.copytree(m.grid, place / "grid")
            subprocess.run(["mount", "-o", "remount,ro", str(place)], check=True)
            before = hashes(place)
            outcome = run(args)
            problems = judge_refusal(outcome, before, hashes(place), place)
            record(cases, "read_only", name, args, outcome, problems)
        shutil.rmtree(m.work / "ro")


# -- hand-edited grids -------------------------------------------------------------------------------------------
def _edit_json(path: Path, change: Callable[[Dict], None]) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data, indent=2))


def edited_grid(m: Material, cases: List[Case]) -> None:
    cells = sorted(p for p in m.grid.iterdir() if (p / "results.json").is_file())
    a, b = cells[0], cells[1]

    def shift(key, value):
        return lambda g: _edit_json(g / a.name / "results.json", lambda r: r.__setitem__(key, value))

    def swap(g):
        ra, rb = (g / a.name / "results.json"), (g / b.name / "results.json")
        ta, tb = ra.read_text(), rb.read_text()
        ra.write_text(tb)
        rb.write_text(ta)

    reference = figures(m.grid / "compare.json")
    nll = json.loads((a / "results.json").read_text())["nll"]
    edits = {
        "a cell's NLL changed by a nat": shift("nll", nll - 1.0),
        "a cell's NLL made NaN": lambda g: (g / a.name / "results.json").write_text(
            (g / a.name / "results.json").read_text().replace(f'"nll": {json.dumps(nll)}', '"nll": NaN')),
        "a cell's NLL made a word": shift("nll", "low"),
        "two cells' results.json swapped": swap,
        "epochs raised in grid.json": lambda g: _edit_json(
            g / "grid.json", lambda p: p["base"].__setitem__("epochs", p["base"]["epochs"] + 3)),
        "a cell's checkpoint.pt deleted": lambda g: (g / a.name / "checkpoint.pt").unlink(),
        "a cell's results.json deleted": lambda g: (g / a.name / "results.json").unlink(),
    }
    for name, edit in edits.items():
        grid = m.work / f"edited-{len(cases)}"
        shutil.copytree(m.grid, grid)
        edit(grid)
        tables = {f: (grid / f).read_bytes() for f in ("compare.md", "compare.json")}
        args = ["compare", "--resume", grid, "--no-progress"]
        outcome = run(args, timeout=300)
        problems = check_outcome(outcome)
        if outcome.code == 2:
            if not outcome.one_line_refusal:
                problems.append(f"a refusal of {len(outcome.stderr.strip().splitlines())} lines")
            if any((grid / f).read_bytes() != t for f, t in tables.items()):
                problems.append("rewrote the tables before refusing")
        elif outcome.code == 0:
            if figures(grid / "compare.json") != reference:
                problems.append("took the edited figures into compare.json")
        else:
            problems.append(f"exit {outcome.code}: {outcome.last_line}")
        record(cases, "edited_grid", name, args, outcome, problems)


# -- crafted code files ------------------------------------------------------------------------------------------
def _header(data: bytes):
    start = 4 + 1 + 4
    size = int.from_bytes(data[5:9], "big")
    return json.loads(data[start:start + size]), start + size


def _with_header(data: bytes, change: Callable[[Dict], None]) -> bytes:
    header, end = _header(data)
    change(header)
    text = json.dumps(header, sort_keys=True).encode()
    return data[:5] + len(text).to_bytes(4, "big") + text + data[end:]


def code_file(m: Material, cases: List[Case], rng: random.Random, flips: int) -> None:
    import numpy as np
    good = m.code.read_bytes()
    _, header_end = _header(good)
    truth = np.load(m.decoded)
    folder = m.work / "crafted"
    folder.mkdir()
    crafted: Dict[str, Callable[[Path], None]] = {}
    for cut in sorted({0, 3, 4, 5, 8, 9, header_end // 2, header_end, header_end + 1, len(good) - 4,
                       len(good) - 1}):
        crafted[f"truncated to {cut} bytes"] = lambda p, c=cut: p.write_bytes(good[:c])
    for _ in range(flips):
        at = rng.randrange(len(good))
        crafted[f"byte {at} flipped"] = lambda p, a=at: p.write_bytes(good[:a] + bytes([good[a] ^ 0xFF]) + good[a + 1:])
    claims = {"num_data": 200000, "num_words": 10 ** 12, "x_dim": 10 ** 6, "limit": -1, "levels": 3,
              "latent_bits": 64, "split": "train", "precision_bits": 99, "run_sha256": "0" * 64}
    for key, value in claims.items():
        crafted[f"header says {key} {value}"] = lambda p, k=key, v=value: p.write_bytes(
            _with_header(good, lambda h: h.__setitem__(k, v)))
    crafted["header deletes num_words"] = lambda p: p.write_bytes(_with_header(good, lambda h: h.pop("num_words")))
    crafted["header size claims 2^31 bytes"] = lambda p: p.write_bytes(good[:5] + (2 ** 31).to_bytes(4, "big")
                                                                      + good[9:])
    crafted["version byte 9"] = lambda p: p.write_bytes(good[:4] + bytes([9]) + good[5:])
    crafted["wrong magic"] = lambda p: p.write_bytes(b"PZBX" + good[4:])
    crafted["one byte appended"] = lambda p: p.write_bytes(good + b"\0")
    crafted["1 MiB appended"] = lambda p: p.write_bytes(good + os.urandom(2 ** 20))
    crafted["empty file"] = lambda p: p.write_bytes(b"")
    crafted["1 MiB of random bytes"] = lambda p: p.write_bytes(os.urandom(2 ** 20))
    crafted["64 MiB of zeros after a good header"] = lambda p: p.write_bytes(good[:header_end] + b"\0" * 2 ** 26)
    crafted["a folder"] = lambda p: p.mkdir()
    crafted["a FIFO"] = lambda p: os.mkfifo(p)
    crafted["a link to /dev/zero"] = lambda p: p.symlink_to("/dev/zero")
    crafted["a link to /dev/urandom"] = lambda p: p.symlink_to("/dev/urandom")
    for i, (name, make) in enumerate(crafted.items()):
        path, out = folder / f"case{i}.pzbb", folder / f"case{i}.npy"
        make(path)
        feeder = None
        if name == "a FIFO":                    # a writer stands ready: a decoder that reads the pipe gets the file
            feeder = threading.Thread(target=_feed, args=(path, good), daemon=True)
            feeder.start()
        args = ["compress", m.run, "--decode", path, "--out", out]
        outcome = run(args)
        problems = check_outcome(outcome)
        if outcome.code == 0:
            if not (out.is_file() and np.array_equal(np.load(out), truth)):
                problems.append("decoded rows that are not the coded ones")
        elif not outcome.one_line_refusal:
            problems.append(f"exit {outcome.code}, not a one-line refusal: {outcome.last_line!r}")
        elif out.exists():
            problems.append("wrote --out before refusing")
        if outcome.seconds > 30:
            problems.append(f"took {outcome.seconds:.0f} s")
        record(cases, "code_file", f"--decode: {name}", args, outcome, problems)
        if path.is_dir() and not path.is_symlink():
            path.rmdir()
        else:
            path.unlink()

    notes = folder / "notes.txt"
    notes.write_text("a file of the user's")
    theirs = folder / "theirs.pzbb"
    shutil.copyfile(m.code, theirs)
    outcome = run(["compress", m.other, "--limit", "3", "--out", folder / "other.pzbb"])
    if outcome.code != 0:
        fail(f"compress of the second run failed: {outcome.last_line}")
    targets = {"the run's checkpoint.pt": (m.run, m.run / "checkpoint.pt"),
               "the run's config.json": (m.run, m.run / "config.json"),
               "another run's results.json": (m.run, m.other / "results.json"),
               "another run's code file": (m.run, folder / "other.pzbb"),
               "a file of the user's": (m.run, notes)}
    for name, (source, target) in targets.items():
        before = target.read_bytes()
        args = ["compress", source, "--limit", "5", "--out", target]
        outcome = run(args)
        problems = check_outcome(outcome)
        if not outcome.one_line_refusal:
            problems.append(f"exit {outcome.code}, not a one-line refusal: {outcome.last_line!r}")
        if target.read_bytes() != before:
            problems.append("replaced it")
        record(cases, "code_file", f"--out onto {name}", args, outcome, problems)
    for name, target in (("another run's results.json", m.other / "results.json"), ("a file of the user's", notes)):
        before = target.read_bytes()
        args = ["compress", m.run, "--decode", m.code, "--out", target]
        outcome = run(args)
        problems = check_outcome(outcome)
        if not outcome.one_line_refusal:
            problems.append(f"exit {outcome.code}, not a one-line refusal: {outcome.last_line!r}")
        if target.read_bytes() != before:
            problems.append("replaced it")
        record(cases, "code_file", f"--decode --out onto {name}", args, outcome, problems)


def _feed(fifo: Path, data: bytes) -> None:
    deadline = time.time() + TIMEOUT_S
    while time.time() < deadline:
        try:
            fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        except OSError:
            time.sleep(0.005)
            continue
        with contextlib.suppress(OSError):
            os.set_blocking(fd, True)
            os.write(fd, data)
        os.close(fd)
        return


# -- the result ----------------------------------------------------------------------------------------------------
def markdown(data: Dict) -> str:
    prov = data["provenance"]
    lines = ["# Fault injection: what the zoo holds and what it loses", "",
             f"Command: `{prov['command']}`  ", f"Commit: `{prov['git_commit']}`"
             + (" (uncommitted changes)" if prov.get("git_dirty") else "") + "  ",
             f"Hardware: {prov['cpu']}, {prov['logical_cores']} logical cores; "
             f"{data['seconds'] / 60:.1f} min", "",
             "Each case is one `pyro-zoo` process on the 8x8 digits (see the script's docstring for what held "
             "means in each family).", "",
             "| family | tried | held | lost | not run |", "|---|---|---|---|---|"]
    for family, t in data["totals"].items():
        lines.append(f"| {family} | {t['tried']} | {t['held']} | {t['lost']} | {t.get('not_run') or ''} |")
    total = {k: sum(t[k] for t in data["totals"].values()) for k in ("tried", "held", "lost")}
    lines.append(f"| **all** | **{total['tried']}** | **{total['held']}** | **{total['lost']}** | |")
    lost = [c for c in data["cases"] if not c["held"]]
    lines += ["", "## Lost", ""]
    lines += [f"- {c['family']}: {c['case']} (`{c['command']}`): {c['why_lost']}" for c in lost] or ["None."]
    lines += ["", "## Every case", "", "Held or lost, the exit status, seconds, the child's peak RSS, and the last "
              "line it printed on stderr:", ""]
    for c in data["cases"]:
        lines.append(f"- {'held' if c['held'] else '**lost**'}: {c['family']}, {c['case']}: exit {c['code']}, "
                     f"{c['seconds']} s, {c['max_rss_mib']} MiB" + (f"; `{c['stderr'][:160]}`" if c["stderr"] else ""))
    return "\n".join(lines) + "\n"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--families", default=",".join(FAMILIES), help=f"comma-separated, from {', '.join(FAMILIES)}")
    p.add_argument("--kills", type=int, default=4, help="random SIGKILL moments of train (half as many of the rest)")
    p.add_argument("--flips", type=int, default=12, help="random byte flips of a code file")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--name", default="fault_injection")
    p.add_argument("--markdown-only", action="store_true",
                   help="write NAME.md again from NAME.json (no case is run)")
    args = p.parse_args(argv)
    if args.markdown_only:
        source = RESULTS / f"{args.name}.json"
        if not source.is_file():
            fail(f"no {source} to render; run the benchmark first")
        (RESULTS / f"{args.name}.md").write_text(markdown(json.loads(source.read_text())))
        print(f"wrote {RESULTS / (args.name + '.md')}")
        return
    families = [f for f in args.families.split(",") if f]
    if not families or any(f not in FAMILIES for f in families):
        fail(f"--families takes names from {', '.join(FAMILIES)}, got {args.families!r}")
    if args.kills < 1 or args.flips < 0:
        fail("--kills must be at least 1 and --flips at least 0")
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
                full_disk(m, cases)
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
                                    "criteria": {"timeout_s": TIMEOUT_S, "max_rss_mib": MAX_RSS_MIB},
                                    "totals": totals, "cases": [asdict(c) for c in cases]})
    (RESULTS / f"{args.name}.md").write_text(markdown(json.loads(path.read_text())))
    print(f"wrote {path} and {RESULTS / (args.name + '.md')}")
    lost = sum(t["lost"] for t in totals.values())
    print(f"{len(cases)} cases, {len(cases) - lost} held, {lost} lost in {seconds / 60:.1f} min")


if __name__ == "__main__":
    run_script(main)
