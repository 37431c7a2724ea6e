"""Shared helpers for benchmark scripts: provenance (command, commit, hardware) and result writing."""
from __future__ import annotations

import json
import os
import platform
import re
import resource
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

import torch

RESULTS = Path(__file__).resolve().parent / "results"
ROOT = Path(__file__).resolve().parent.parent


def readme_command(install: str) -> list:
    """The README Quickstart's command that starts with ``install &&``, without that install step, as an argument
    list: what a benchmark of the command the README shows runs (quickstart_cost.py, suite_time.py)."""
    section = (ROOT / "README.md").read_text().split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    line = re.search(rf"^    ({re.escape(install)} && .+)$", section, re.M).group(1)
    return shlex.split(line.split("&&", 1)[1])


def timed_run(argv: list, cwd, threads: Optional[int] = None, env: Optional[dict] = None) -> dict:
    """Run ``argv`` to completion in a fresh process from ``cwd`` and return its wall seconds, its CPU-seconds
    (user + system of the child and its children, from ``getrusage``), its last stdout line, its ``pyro-zoo:``
    notices (stderr) and ``note:`` lines (stdout), and the peak resident memory of the largest child process so far (``ru_maxrss``: this command's own
    where it is the first or largest one run). ``OMP_NUM_THREADS`` is ``threads``, or absent where ``threads`` is None (what a user who sets nothing
    runs); ``env`` adds variables. The child imports this checkout's ``zoo`` (``PYTHONPATH``), not an installed copy. A failed command ends the benchmark with the failed tests or the error it printed."""
    extra = env or {}
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    env.update({"MPLBACKEND": "Agg", **({"OMP_NUM_THREADS": str(threads)} if threads else {}), **extra})
    # the checkout's zoo, whatever copy pip installed: a command run from another folder (pyro-zoo, python -m zoo)
    # would import the installed one, and the result file would record this commit for another's code
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + [p for p in [env.get("PYTHONPATH")] if p])
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    last = (done.stdout.strip().splitlines() or [""])[-1]
    if done.returncode != 0:
        failed = [line for line in done.stdout.splitlines() if line.startswith(("FAILED", "ERROR"))]
        error = failed or done.stderr.strip().splitlines()[-1:]
        raise SystemExit("\n".join(error + [f"{' '.join(argv)} failed ({last}); fix it first"]))
    return {"command": " ".join(argv), "wall_seconds": round(wall, 2),
            "cpu_seconds": round((after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), 2),
            "max_child_resident_mb": round(after.ru_maxrss / 1024, 1),          # KiB on Linux
            "last_line": last,
            # what the zoo told the user about its own settings: its stderr notices and its stdout notes (the
            # threads it picked, zoo.training.threads)
            "notices": [line for line in done.stderr.splitlines() if line.startswith("pyro-zoo:")]
            + [line for line in done.stdout.splitlines() if line.startswith("note:")]}


def _git_state():
    """(HEAD, whether tracked files differ from it). Result files are left out of the comparison: one benchmark
    run right after another finds the first one's results not yet committed, and they are outputs, not code."""
    root = Path(__file__).resolve().parent.parent
    stated = os.environ.get("PYRO_ZOO_GIT_COMMIT")
    if stated:
        # a copy of the tree (a lent GPU machine): the caller states the commit it copied, which wins over any
        # .git the copy carries (one there can be older than the tree it sits beside)
        return stated, None
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                                check=True).stdout.strip()
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".",
                                     ":(exclude)benchmarks/results"], cwd=root,
                                    capture_output=True, text=True).stdout.strip())
    except (OSError, subprocess.CalledProcessError):
        commit, dirty = "unknown", None          # a copy of the tree without its .git, and no commit stated
    return commit, dirty


#: Read when the benchmark starts: the code a long run imported, not what HEAD is when it ends.
GIT_AT_START = _git_state()
#: the machine's 1-, 5- and 15-minute load averages when the benchmark started (other jobs slow every timing)
LOAD_AT_START = [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None


def provenance() -> dict:
    """The command, git commit (at start) and hardware a result was measured with."""
    root = Path(__file__).resolve().parent.parent
    commit, dirty = GIT_AT_START
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((l.split(":", 1)[1].strip() for l in f if l.startswith("model name")), cpu)
    except OSError:
        pass
    return {
        "command": "python " + " ".join([os.path.relpath(sys.argv[0], root)] + sys.argv[1:]),
        "git_commit": commit, "git_dirty": dirty,
        "load_average_at_start": LOAD_AT_START,
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None,
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "cpu": cpu, "cpu_threads": torch.get_num_threads(), "logical_cores": os.cpu_count(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "python": platform.python_version(), "torch": torch.__version__,
        "pyro": __import__("pyro").__version__,
    }


def write_result(name: str, payload: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps({"provenance": provenance(), **payload}, indent=2))
    return path


def grid_parser(doc: str, out: str, eval_samples: int, eval_limit: Optional[int]):
    """The options every training benchmark shares: data, evaluation, device, --evaluate-only,
    --resume and --out (each script adds its own, e.g. epochs)."""
    import argparse
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--eval-samples", type=int, default=eval_samples)
    p.add_argument("--eval-limit", type=int, default=eval_limit)
    p.add_argument("--device", default="auto")
    p.add_argument("--evaluate-only", action="store_true",
                   help="re-evaluate the runs already trained in --out instead of training them")
    p.add_argument("--resume", action="store_true",
                   help="continue runs that have a checkpoint in --out up to the given epochs (same data order and RNG)")
    p.add_argument("--out", default=out)
    return p


def run_grid(name: str, title: str, runs, out_root: Path, protocol: str, evaluate_only=False,
             reference_label: str = "reference NLL", resume: bool = False) -> list:
    """Train and evaluate each ``(label, RunConfig, reference_nll)`` through the zoo's own
    ``train_run`` (the same harness as the CLI), then write ``results/<name>.json`` and ``.md``.
    With ``evaluate_only`` (True, or a set of run labels) the runs already in ``out_root`` are re-scored with ``evaluate_run``
    (same evaluation settings as ``config``), keeping their training history and time. With
    ``resume`` a run whose folder holds a checkpoint continues from it up to ``config.epochs``
    (``train_run(..., resume=True)``: same data order, optimizer and RNG state), and its
    training time is the sum over all its epochs."""
    import json
    from zoo.experiments.run import evaluate_run, train_run
    from zoo.experiments.trained import Invocation
    from zoo.evaluation.tables import results_markdown
    rows = []
    for label, config, reference in runs:
        if evaluate_only is True or (evaluate_only and label in evaluate_only):
            folder = Path(out_root) / label
            trained = json.loads((folder / "results.json").read_text()) if (folder / "results.json").exists() else {}
            summary = evaluate_run(folder, Invocation({"eval_samples": config.eval_samples, "iwae_k": config.iwae_k,
                                                       "eval_limit": config.eval_limit, "device": config.device,
                                                       "data_dir": config.data_dir}, progress=False))
            # the sum of the logged epoch times covers every epoch, also of a resumed run
            summary["train_seconds"] = sum(h["seconds"] for h in summary["history"]) or trained.get("train_seconds")
        elif resume and (Path(out_root) / label / "checkpoint.pt").exists():
            summary = train_run(config, Path(out_root) / label, resume=True, progress=False)
            summary["train_seconds"] = sum(h["seconds"] for h in summary["history"])
        else:
            summary = train_run(config, Path(out_root) / label, force=True, progress=False)
        summary["label"], summary["reference_nll"] = label, reference
        rows.append(summary)
        print(f"{label}: test -ELBO {-summary['elbo']:.2f}, NLL {summary['nll']:.2f} ± "
              f"{summary['log_likelihood_se']:.2f} after {summary['epochs_trained']} epochs "
              f"({summary['train_seconds'] or 0:.0f} s training)", flush=True)
    write_result(name, {"protocol": protocol, "runs": rows})
    prov = provenance()
    md = [f"# {title}", "", f"Command: `{prov['command']}`  ", f"Commit: `{prov['git_commit']}`  ",
          f"Hardware: {prov['cpu']} ({prov['cpu_threads']} torch threads, {prov['logical_cores']} cores), "
          f"GPU: {prov['gpu']}", "", f"Protocol: {protocol}", "",
          f"| run | objective | guide | epochs | test −ELBO | test NLL (IS) | ± se | ± data se | {reference_label} | "
          "active units | k̂>0.7 | train s |",
          "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        epochs = r['epochs_trained'] if r.get('best_epoch') is None else f"{r['epochs_trained']} (best {r['best_epoch']})"
        md.append(f"| {r['label']} | {r['config']['objective']} | {r['config']['guide']} | {epochs} | "
                  f"{-r['elbo']:.2f} | {r['nll']:.2f} | {r['log_likelihood_se']:.2f} | "
                  f"{_two_places(r['log_likelihood_data_se'])} | "
                  f"{r['reference_nll'] if r['reference_nll'] is not None else '–'} | {r['active_units']} | "
                  f"{r['psis_khat_frac_over_0_7']:.1%} | {r['train_seconds'] or 0:.0f} |")
    md += ["", "± se is the Monte Carlo error of the importance sampling; ± data se the error from which test "
           "images were scored (per-datum sd / √n): on a subset (--eval-limit) it is what bounds a comparison with "
           "a whole-test-set reference.",
           "", "Full harness table:", "", results_markdown(rows)]
    (RESULTS / f"{name}.md").write_text("\n".join(md) + "\n")
    return rows


def write_result_and_page(name: str, payload: dict, markdown) -> Path:
    """:func:`write_result` of ``payload``, then ``RESULTS/NAME.md``: ``markdown`` of the result as written (with its
    provenance)."""
    path = write_result(name, payload)
    (RESULTS / f"{name}.md").write_text(markdown(json.loads(path.read_text())))
    return path


def provenance_lines(prov: dict) -> list:
    """The lines a results page opens with, after its title: the command, the commit and the hardware."""
    return [f"Command: `{prov['command']}`  ", f"Commit: `{prov['git_commit']}`  ",
            f"Hardware: {prov['cpu']} ({prov['cpu_threads']} torch threads), GPU: {prov['gpu']}", ""]


def _two_places(value) -> str:
    """A figure to two decimals, or a dash where there is none (a data se of one scored image)."""
    return "–" if value is None else f"{value:.2f}"


def fail(message: str) -> None:
    """One line on stderr and exit code 2, as the zoo's CLI does for bad input."""
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


def zoo_cli(argv, check: bool = False) -> int:
    """``pyro-zoo ARGV`` in this process (each item made a string), as a user types it; with ``check``, a non-zero
    exit ends the script in one line naming the command (the command's own message is above it)."""
    from zoo.cli import main as zoo
    code = zoo([str(a) for a in argv])
    if code and check:
        fail(f"pyro-zoo {' '.join(str(a) for a in argv)} exited with {code}")
    return code


def run_script(main) -> None:
    """Run a benchmark's ``main()``. Bad input (a :class:`~zoo.core.errors.ZooError`: an unknown name, a
    missing dataset, a checkpoint that does not match) ends with one line and exit code 2, before any
    result file is written (results are written last)."""
    from zoo.core.errors import ZooError
    from zoo.flags import translate
    try:
        main()
    except ZooError as e:
        fail(translate(e))            # an option's API name shown as the script's flag
