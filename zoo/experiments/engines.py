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
  the rest of the grid finishes. Ray is an optional extra.

A job that fails is reported by its label and the error's first line; the others go on.
"""
from __future__ import annotations

import os
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Callable, Dict, Optional, Sequence

from zoo.core.errors import ZooError
from zoo.experiments.config import RunConfig

__all__ = ["Job", "run_cell", "run_jobs", "ENGINES", "RAY_INSTALL"]

ENGINES = ("serial", "ray")
RAY_INSTALL = 'pip install "pyro-zoo[ray]"'


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
        torch.set_num_threads(threads)
    train_run(job.config, Path(job.folder), force=job.mode == "fresh", resume=job.mode == "resume",
              progress=progress, data=data)
    return job.label


def _error_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if isinstance(e, ZooError) and text else f"{type(e).__name__}: {text[0] if text else ''}"


def run_jobs(jobs: Sequence[Job], engine: str = "serial", workers: int = 1, address: Optional[str] = None,
             progress: bool = True, data=None, on_done: Callable[[Job, Optional[str]], None] = lambda j, e: None
             ) -> Dict[str, str]:
    """Run every job; ``on_done(job, error)`` is called as each ends. Returns {label: error line} of those that failed."""
    if engine == "ray":
        return _ray(jobs, address, on_done)
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


def _pool(jobs: Sequence[Job], workers: int, on_done) -> Dict[str, str]:
    threads = threads_per_worker(workers)
    failed = {}
    # spawn, not fork: a forked child would inherit torch's thread pools and locks mid-state
    with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
        pending = {pool.submit(run_cell, job, threads): job for job in jobs}
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                job = pending.pop(future)
                error = None
                try:
                    future.result()
                except Exception as e:
                    error = failed[job.label] = _error_line(e)
                on_done(job, error)
    return failed


def _ray(jobs: Sequence[Job], address: Optional[str], on_done) -> Dict[str, str]:
    try:
        import ray
    except ImportError:
        raise ZooError(f"--engine ray needs Ray, which is not installed: {RAY_INSTALL}") from None
    started = not ray.is_initialized()
    if started:
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
    try:
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
    finally:
        if started:
            ray.shutdown()
