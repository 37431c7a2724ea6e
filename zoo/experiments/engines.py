"""Where a grid's cells train: one after another, in a local process pool, or as Ray tasks.

Every cell at every seed is an independent job that trains into its own run folder
(:func:`run_cell`); the engines differ only in where the job runs, so they give the same folders and the
same tables. Nothing is gathered through the engine: the grid reads each cell's ``results.json`` afterwards,
so a cell trained on another machine of a Ray cluster counts as soon as its folder is on the shared file
system.

- ``serial``: in this process, with the threads torch has.
- ``workers`` (``--workers N``): a pool of N spawned processes (``concurrent.futures``), each with
  ``cores // N`` torch threads, so N workers do not oversubscribe the cores.
- ``ray`` (``--engine ray [--address auto|ray://HOST:PORT]``): each job a Ray task declaring ``num_cpus=1``
  (one torch thread: Ray runs as many at once as the cluster has CPUs) and ``num_gpus=1`` on ``--device cuda``;
  a task that fails is retried once (Ray's ``max_retries`` with ``retry_exceptions``), then reported while
  the rest of the grid finishes. Ray is an optional extra. The cluster at ``--address`` must answer before the
  grid's folder is made (:func:`engine_session`: a TCP connection within :data:`RAY_PROBE_SECONDS`, then
  ``ray.init``), so an address with no cluster there is one line and leaves nothing behind.

A job that fails is reported by its label and the error's first line; the others go on. A stop (Ctrl-C, SIGTERM)
of the pool ends its workers without their tracebacks: they ignore SIGINT (the terminal sends it to the whole
process group), and the grid terminates them; each cell keeps its last checkpoint, written atomically. A grid killed
outright (SIGKILL) cannot terminate them: each worker ends by itself when its grid is gone.
"""
from __future__ import annotations

import os
import queue
import signal
import socket
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Callable, Dict, Iterator, Optional, Sequence

from zoo.core.errors import ZooError
from zoo.experiments.config import RunConfig

__all__ = ["Job", "run_cell", "run_jobs", "engine_session", "ENGINES", "RAY_INSTALL", "RAY_PROBE_SECONDS"]

ENGINES = ("serial", "ray")
RAY_INSTALL = 'pip install "pyro-zoo[ray]"'
#: How long ``--address HOST:PORT`` may take to accept a TCP connection before the grid is refused.
RAY_PROBE_SECONDS = 5.0


@dataclass(frozen=True)
class Job:
    """One cell at one seed: its config, its run folder, and how to start it: ``fresh`` (train from scratch,
    overwriting) or ``resume`` (continue from the folder's checkpoint)."""

    label: str
    config: RunConfig
    folder: str
    mode: str


def run_cell(job: Job, threads: Optional[int] = None, progress: bool = False, data=None) -> str:
    """Train and evaluate one job into its folder (:func:`~zoo.experiments.run.train_run`); returns its label."""
    from zoo.experiments.run import train_run
    if threads:
        import torch

        from zoo.training.threads import chosen_by_caller
        torch.set_num_threads(threads)
        chosen_by_caller()
    train_run(job.config, Path(job.folder), force=job.mode == "fresh", resume=job.mode == "resume",
              progress=progress, data=data)
    return job.label


def _error_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if isinstance(e, ZooError) and text else f"{type(e).__name__}: {text[0] if text else ''}"


def run_jobs(jobs: Sequence[Job], engine: str = "serial", workers: int = 1, session=None,
             progress: bool = True, data=None, on_done: Callable[[Job, Optional[str]], None] = lambda j, e: None
             ) -> Dict[str, str]:
    """Run every job; ``on_done(job, error)`` is called as each ends. Returns {label: error line} of those that
    failed. ``session``: Ray, connected by :func:`engine_session`, for ``engine="ray"``."""
    if engine == "ray":
        return _ray(jobs, session, on_done)
    if workers > 1:
        return _pool(jobs, workers, on_done)
    failed = {}
    for job in jobs:
        if progress:
            print(f"== {job.label} ==", flush=True)
        try:
            run_cell(job, progress=progress, data=data)
            error = None
        except Exception as e:                 # the rest of the grid goes on; SIGINT does not
            error = failed[job.label] = _error_line(e)
        on_done(job, error)
    return failed


def threads_per_worker(workers: int) -> int:
    """``cores // workers`` (at least 1): the torch threads of each of ``workers`` processes on this machine."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // workers)


def _start_worker(grid: int) -> None:
    """A pool worker's start (started with SIGINT ignored already): Ctrl-C reaches every process of the terminal's
    group, and the grid (process ``grid``), not each worker, decides what a stop does (it terminates them), so a
    worker prints no traceback of its own. A grid that is killed outright (SIGKILL: ``kill -9``, the OOM killer)
    cannot terminate them, so each worker also ends when its grid is gone (:func:`_end_with`)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)      # the grid's terminate() ends a worker, mid-step or not
    threading.Thread(target=_end_with, args=(grid,), name="end-with-the-grid", daemon=True).start()


def _end_with(grid: int, every: float = 0.2) -> None:
    """End this worker when its parent is no longer process ``grid``. A worker left behind trains its cell on,
    holding the cell's lock, so ``compare --resume`` is refused until it ends; ended here, it leaves at most a
    temporary file, which the resume's lock removes, and the cell resumes from its last checkpoint."""
    while os.getppid() == grid:
        time.sleep(every)
    os._exit(1)


def _pool(jobs: Sequence[Job], workers: int, on_done) -> Dict[str, str]:
    threads = threads_per_worker(workers)
    failed = {}
    ended: "queue.Queue" = queue.Queue()
    # spawn, not fork: a forked child would inherit torch's thread pools and locks mid-state. The workers are
    # started with SIGINT ignored, which a new Python keeps: a Ctrl-C while one is still importing torch would
    # otherwise print its traceback (the grid's own handler is back once they are started)
    in_main_thread = threading.current_thread() is threading.main_thread()    # where signal handlers are set
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN) if in_main_thread else None
    try:
        pool = get_context("spawn").Pool(workers, initializer=_start_worker, initargs=(os.getpid(),))
    finally:
        if in_main_thread:
            signal.signal(signal.SIGINT, previous)
    try:
        for job in jobs:
            pool.apply_async(run_cell, (job, threads), callback=lambda _, job=job: ended.put((job, None)),
                             error_callback=lambda e, job=job: ended.put((job, e)))
        for _ in jobs:
            job, exception = ended.get()
            error = None if exception is None else failed.setdefault(job.label, _error_line(exception))
            on_done(job, error)
        pool.close()
    except BaseException:
        pool.terminate()                   # a stop: the workers end now; each cell keeps its last checkpoint
        raise
    finally:
        pool.join()
    return failed


def _import_ray():
    try:
        import ray
    except ImportError:
        raise ZooError(f"--engine ray needs Ray, which is not installed: {RAY_INSTALL}") from None
    return ray


def _probe(address: str) -> None:
    """Refuse, in one line, an ``--address`` (``HOST:PORT`` or ``ray://HOST:PORT``) at which nothing accepts a TCP
    connection within :data:`RAY_PROBE_SECONDS` (``ray.init`` would retry for a minute, then raise)."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise ZooError(f"--address {address!r} is not auto, HOST:PORT or ray://HOST:PORT (the Ray head's GCS port, "
                       f"6379, or its Ray Client port, 10001)")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=RAY_PROBE_SECONDS):
            pass
    except OSError as e:
        why = "no answer" if isinstance(e, socket.timeout) else (e.strerror or type(e).__name__)
        raise ZooError(f"no Ray cluster answers at --address {address} ({why}); start one ('ray start --head') or "
                       f"give the address of a running one; nothing was written") from None


@contextmanager
def engine_session(engine: str, address: Optional[str]) -> Iterator[object]:
    """The engine made ready before a grid writes anything: for Ray, connected to the cluster at ``address`` (a
    local instance without one; :func:`_probe` first for HOST:PORT) and shut down after; None for the others."""
    if engine != "ray":
        yield None
        return
    ray = _import_ray()
    started = not ray.is_initialized()
    if started:
        if address not in (None, "auto"):
            _probe(address)
        try:
            ray.init(address=address, include_dashboard=False, log_to_driver=False)
        except (ConnectionError, TimeoutError, RuntimeError, ValueError) as e:
            first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
            raise ZooError(f"no Ray cluster at --address {address} ({first}); start one ('ray start --head') or give "
                           f"the address of a running one; nothing was written") from None
    try:
        yield ray
    finally:
        if started:
            ray.shutdown()


def _ray(jobs: Sequence[Job], ray, on_done) -> Dict[str, str]:
    threads = 1                                  # Ray runs as many tasks at once as the cluster has CPUs
    cuda = any(str(job.config.device).startswith("cuda") for job in jobs)
    task = ray.remote(run_cell).options(num_cpus=threads, num_gpus=1 if cuda else 0, max_retries=1,
                                        retry_exceptions=True)
    pending = {task.remote(job, threads): job for job in jobs}
    failed = {}
    while pending:
        done, _ = ray.wait(list(pending), num_returns=1)
        job = pending.pop(done[0])
        error = None
        try:
            ray.get(done[0])
        except Exception as e:                   # RayTaskError wraps the task's own exception
            error = failed[job.label] = _error_line(getattr(e, "cause", None) or e)
        on_done(job, error)
    return failed
