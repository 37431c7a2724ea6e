"""One run: build it from a RunConfig, train it into a folder (resumable), evaluate it, write its results.

A run folder holds::

    config.json          the RunConfig (everything needed to rebuild the run)
    checkpoint.pt        model, guide, optimizer, RNG state, history (atomic, weights_only)
    results.json         evaluation (keys documented in zoo.evaluation.harness.RESULT_KEYS) + history, and the
                         samples' spread relative to the data's (zoo.evaluation.reliability.sample_spread)
    results.md           the same as a Markdown table
    per_datum.npz        per-datum log p(x), its standard error, ELBO, PSIS k-hat
    training_curves.png, samples.png, reconstructions.png, latent_scatter.png (2-D latents)

Everything the user can get wrong is checked in :func:`prepare` before anything
is written, so bad input leaves no half-written folder behind. ``config.json`` is written with the
first checkpoint, so a new run that fails (or is stopped) before it has one leaves nothing: the
folder it created is removed. One process writes a run folder at a time (the OS lock of
:func:`~zoo.experiments.run_folder.writer_lock`), and a folder is read as data
(:func:`~zoo.experiments.run_folder.load_run`): its checkpoint must be its own, and no model file it
names is imported unless the user names it.
"""
from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional, Union

import numpy as np
import pyro
import torch
from tqdm.auto import tqdm

from zoo.core.errors import ZooError
from zoo.core.files import sealed
from zoo.core.memory import refuse_oversized_run
from zoo.data import Dataset
from zoo.evaluation import plots
from zoo.evaluation.harness import bound_per_datum, evaluate
from zoo.evaluation.reliability import sample_spread
from zoo.evaluation.tables import results_markdown
from zoo.experiments.config import RunConfig, refuse_mismatch, resolve_device, set_determinism, with_data_source
from zoo.experiments.outputs import check_out_dir, json_ready, make_out_dir, refuse_weaker_evaluation
from zoo.objectives import build_objective
from zoo.objectives.base import for_model
from zoo.objectives.capture import CapturedObjective
from zoo.objectives.jit import JIT_NOTICE
from zoo.registry import build_guide
from zoo.rules import DataFacts, build_run_model, check_run, check_step, likelihood_name, likelihood_warning
from zoo.training import distributed as ddp
from zoo.experiments.run_folder import (LoadedRun, load_run, load_weights, read_stored_config,
                                       refuse_foreign_checkpoint, writer_lock)
from zoo.training.checkpoint import (atomic_path, atomic_write_text, load_checkpoint, rng_state,
                                     save_checkpoint, set_rng_state, signals_deferred, written_together)
from zoo.training.callbacks import Checkpoint, Log, LRSchedule, ValidationELBO
from zoo.training.config import TrainConfig, TrainState
from zoo.training.guards import NonFiniteError
from zoo.training.threads import run_threads
from zoo.training.loop import early_stop, fit
from zoo.objectives.analytic_kl import sites_without_closed_form_kl, uses_analytic_kl
from zoo.training.refit import refit_local_guide, refit_settings
from zoo.training.optimizer import change_schedule, make_optimizer, restore_optimizer
from zoo.usercode.errors import user_code_errors
from zoo.usercode.specs import is_file_spec

__all__ = ["Prepared", "prepare", "train_run", "evaluate_run", "BEST"]


@dataclass
class Prepared:
    """A run's live objects, built and checked from a :class:`RunConfig`."""

    config: RunConfig
    data: Dataset
    model: object
    guide: object
    objective: object
    device: torch.device


def prepare(config: RunConfig, data: Optional[Dataset] = None, device: Optional[torch.device] = None,
            distributed: bool = False) -> Prepared:
    """Build and check data, model, guide and objective; raises ZooError before any output exists.

    ``config`` was checked when it was made (names, options, training settings); what is checked
    here needs the data or the built model, and is decided by :mod:`zoo.rules` (what ``pyro-zoo list``
    asks too): the run's rules (:func:`~zoo.rules.check_run`), then what a trial step shows
    (:func:`~zoo.rules.check_step`). ``distributed``: the run trains data-parallel; its device is
    then the rank's (:func:`zoo.training.distributed.init`, joined once the rules pass).
    """
    set_determinism(config.deterministic)
    data = data if data is not None else config.load_data()
    config = with_data_source(config, data)
    facts = DataFacts.of(data)
    pyro.set_rng_seed(config.seed)
    # sizes first: an option such as DRAW's --steps or TVO's --partitions is allocated as the model or objective is
    # built or first stepped; the device is checked again below once a data-parallel rank has its own
    refuse_oversized_run(config, data.x_dim, data.train.shape[0],
                         device if device is not None or distributed else resolve_device(config.device))
    model = build_run_model(config, data, facts)
    check_run(config, model, facts, distributed)
    model.validate_data(data.train, what=f"dataset {data.name!r}")
    if distributed:
        device = ddp.init(config.device)[2]
    device = device if device is not None else resolve_device(config.device)
    guide = config.component("guide").build(model, data.train.shape[0], **dataclasses.asdict(config.resolved("guide")))
    model.bind_guide(guide)
    objective = build_objective(config.objective, jit=config.jit, compile=config.compile,
                                **dataclasses.asdict(config.resolved("objective")))
    check_step(config, model, guide, objective, data.train, device)
    refuse_oversized_run(config, data.x_dim, data.train.shape[0], device)
    return Prepared(config, data, model.to(device), guide.to(device), objective, device)


def _checkpoint(run: Prepared, path: Path, loop, scheduler, saved: list) -> None:
    """Write the run's checkpoint at ``loop.state`` (and with ``keep_best`` the best epoch's); the first one of
    this process writes ``config.json`` with it. ``saved`` collects the (epoch, step) written: with the
    signals held, so that a stop just after the checkpoint's rename never takes the run for one without any.

    A new folder's ``config.json`` is written before its first checkpoint: a kill in between leaves a run not yet
    started, never a checkpoint without its config. A resumed run's new ``config.json`` is written to its
    temporary file before the checkpoint and renamed into place only once the checkpoint is: a resume whose
    checkpoint cannot be written (a full disk) leaves the folder's config as it was, not one that says epochs
    the run never trained, and a kill between the two renames leaves the old config beside a checkpoint that
    differs from it only in what a resume may change (:func:`~zoo.experiments.run_folder.refuse_foreign_checkpoint`
    accepts it)."""
    config = path.parent / "config.json"
    with signals_deferred():
        if saved:
            _save(run, path, loop, scheduler)
        elif not config.exists():
            atomic_write_text(config, json.dumps(run.config.to_json(), indent=2))
            _save(run, path, loop, scheduler)
        else:
            with atomic_path(config) as staged:
                with open(staged, "w") as f:            # on disk before the checkpoint that needs it
                    f.write(json.dumps(run.config.to_json(), indent=2))
                    f.flush()
                    os.fsync(f.fileno())
                _save(run, path, loop, scheduler)
        saved.append((loop.state.epoch, loop.state.step))


def _save(run: Prepared, path: Path, loop, scheduler) -> None:
    """The checkpoint at ``loop.state``, and with ``keep_best`` the best epoch's before it."""
    state, history = loop.state, loop.state.history
    if run.config.keep_best and state.step == 0 and _is_best_epoch(history):
        # written before the run's checkpoint: a crash in between redoes this epoch and rewrites it
        save_checkpoint(path.parent / BEST, config=run.config.to_json(), model=run.model.state_dict(),
                        guide=run.guide.state_dict(), epoch=state.epoch, valid_elbo=history[-1]["valid_elbo"])
    save_checkpoint(path, config=run.config.to_json(), model=run.model.state_dict(),
                    guide=run.guide.state_dict(), optimizer=loop.optimizer.state_dict(),
                    scheduler=scheduler.state_dict(), epoch=state.epoch, step=state.step,
                    epoch_total=state.epoch_total, history=history, rng=rng_state(),
                    objective=objective_state(run.objective))


def objective_state(objective) -> dict:
    """What an objective trains of its own (REBAR's and RELAX's control variate, :mod:`zoo.objectives.relax`), for
    the checkpoint; ``{}`` for the others."""
    state_dict = getattr(objective, "state_dict", None)
    return state_dict() if callable(state_dict) else {}


#: With ``keep_best``, the model and guide of the epoch with the best validation ELBO.
BEST = "best.pt"


def _is_best_epoch(history) -> bool:
    """Did the last epoch reach the best validation ELBO so far (ties go to the later epoch)?"""
    if not history or history[-1].get("valid_elbo") is None:
        return False
    return all(history[-1]["valid_elbo"] >= h["valid_elbo"] for h in history[:-1] if h.get("valid_elbo") is not None)


def train_run(config: RunConfig, out: Path, force: bool = False, resume: Union[bool, LoadedRun] = False,
              progress: bool = True, data: Optional[Dataset] = None) -> Dict:
    """Train a run into folder ``out`` (resuming from its checkpoint if ``resume``), then evaluate it.

    ``resume`` may be the folder already read (:func:`~zoo.experiments.run_folder.open_run`, as ``pyro-zoo
    train --resume`` reads it to build ``config``): it is then not read again, only checked to be unchanged
    once the folder is locked.

    The folder is locked for the whole run (a second writer is refused). A resumed run must be the
    folder's own (:func:`~zoo.experiments.run_folder.load_run`; a model file is the one named in
    ``config``, checked against the run's SHA-256 before it is imported), and ``config.epochs`` is the
    total number of epochs, as Lightning's ``max_epochs``: fewer than the run has trained is refused.
    When training stops (NaN, an error, SIGINT/SIGTERM) the last checkpoint written stays as it was
    and the message says which it is; a new run with none yet leaves no folder behind.
    """
    out = Path(out)
    ckpt_path = out / "checkpoint.pt"
    if resume and not ckpt_path.is_file():
        raise ZooError(f"--resume: no checkpoint in {out}; start the run without --resume")
    check_out_dir(out, force, resume)
    distributed = config.distributed or (ddp.launched_by_torchrun() and int(os.environ["WORLD_SIZE"]) > 1)
    run = prepare(config, data, distributed=distributed)
    world = ddp.dist.get_world_size() if distributed else 1
    main = ddp.is_main()
    created = main and not out.exists()
    saved: list = []                     # the (epoch, step) of each checkpoint this process writes
    resumed: list = []                   # the (epoch, step) of the checkpoint resumed from
    with contextlib.ExitStack() as lock:
        if main:
            make_out_dir(out)
            lock.enter_context(writer_lock(out, made=created))
        if world == 1:                   # a small model's run takes one thread unless someone chose (module doc)
            lock.enter_context(run_threads(run.model, run.guide, config.batch_size, run.device))
        try:
            return _train_locked(run, out, resume, progress, world, main, saved, resumed)
        except BaseException as e:
            if created and not saved:    # nothing of this run was kept: leave no folder behind
                shutil.rmtree(out, ignore_errors=True)
            note = _stopped_note(out, saved or resumed, created)
            if isinstance(e, NonFiniteError):
                raise ZooError(f"{e}; {note}") from None
            if isinstance(e, KeyboardInterrupt) and not getattr(e, "zoo_note", None):
                e.zoo_note = note
            raise


def _say(line: str) -> None:
    """A line printed while training, above the progress bar if there is one."""
    tqdm.write(line)
    sys.stdout.flush()


def _stopped_note(out: Path, kept: list, created: bool) -> str:
    """What is left after a run stopped early: the checkpoint to resume (``kept``: its (epoch, step)), or nothing."""
    if kept:
        epoch, step = kept[-1]
        at = f" (epoch {epoch}{f', step {step}' if step else ''})"
        return (f"{out / 'checkpoint.pt'}{at} holds the last good state and is intact: resume it with "
                f"'pyro-zoo train --resume {out}' (after NaN or inf, with a lower --lr)")
    if created:
        return f"no checkpoint had been written, so {out} was removed: start again (after NaN or inf, with a lower --lr)"
    return f"no checkpoint had been written, and nothing in {out} was changed"


def _train_locked(run: Prepared, out: Path, resume: Union[bool, LoadedRun], progress: bool, world: int, main: bool,
                  saved: list, resumed: list) -> Dict:
    """:func:`train_run` once the folder is locked: restore a resumed run, train, evaluate."""
    config = run.config
    ckpt_path = out / "checkpoint.pt"
    optimizer = make_optimizer(run.model, run.guide, config.lr, betas=config.adam_betas, eps=config.adam_eps,
                               weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=config.lr_decay)
    history, start_epoch, start_step, epoch_total = [], 0, 0, 0.0
    if resume:
        if isinstance(resume, LoadedRun):
            resume.refuse_changed()
            state, stored = resume.state, resume.config
        else:
            state, stored = load_run(out, model_file=config.model if is_file_spec(config.model) else None,
                                     guide_file=config.guide if is_file_spec(config.guide) else None)
        refuse_mismatch(stored, config)
        _refuse_fewer_epochs(state, config, out)
        load_weights(run.model, run.guide, state, ckpt_path)
        try:
            fresh_lrs = restore_optimizer(optimizer, scheduler, state)
            history, start_epoch = list(state["history"]), int(state["epoch"])
            start_step, epoch_total = int(state.get("step", 0)), float(state.get("epoch_total", 0.0))
            rng = state["rng"]
            restore = getattr(run.objective, "load_state_dict", None)
            if state.get("objective") and restore is not None:      # another objective's state has no use here
                restore(state["objective"])
            resumed.append((start_epoch, start_step))
        except (RuntimeError, KeyError, ValueError, TypeError):
            raise ZooError(f"the checkpoint in {out} lacks a resumable optimizer or training state; evaluate it "
                           f"with 'pyro-zoo eval {out}', or start a new run with a new --out") from None
        if (stored.lr, stored.lr_decay) != (config.lr, config.lr_decay):
            change_schedule(optimizer, scheduler, config.lr != stored.lr, config.lr_decay, fresh_lrs)
        set_rng_state(rng)
    stopped = early_stop(history, config.patience, config.kl_warmup) if resume else None
    if stopped and config.patience != stored.patience:
        raise ZooError(f"--patience {config.patience} would stop the run in {out} where it stands ({stopped}), "
                       f"and its record says {'no --patience' if stored.patience is None else f'--patience {stored.patience}'}: resume with a larger --patience to train "
                       f"on, or score it as it is with 'pyro-zoo eval {out}'")
    if main:
        warning = likelihood_warning(run.model, DataFacts.of(run.data))
        if warning and not resume:
            print(f"warning: {warning}", flush=True)
        if config.jit:
            print(f"note: {JIT_NOTICE}", flush=True)
        if stopped:
            print(f"{out} stopped early, at epoch {start_epoch}: no epoch to train", flush=True)
        elif start_epoch >= config.epochs:   # a resume of a run killed between its last checkpoint and results
            print(f"{out} has trained its {config.epochs} epoch{'s' if config.epochs != 1 else ''}: no epoch to "
                  f"train, evaluating it", flush=True)
        elif not progress:                   # no bar: one line says what the next minutes are
            print(f"training {out}: epochs {start_epoch + 1} to {config.epochs}", flush=True)
        if isinstance(run.objective, CapturedObjective):     # a capture's cost and any fallback, in a line each
            run.objective.say = _say
    x = run.data.train.to(run.device)
    # the objective as it must run on the model (Pyro's vectorized particles would broadcast global latents)
    objective, parallel = for_model(run.objective, run.model), None
    if world > 1:
        # each rank and each resumed (epoch, step) draws its own stream; numpy's seed must be below 2**32
        pyro.set_rng_seed((config.seed * 7919 + 101 * ddp.dist.get_rank() + start_epoch * 1009 + start_step)
                          % 2 ** 32)
        parallel = ddp.DataParallel(run.model, run.guide, run.objective, x.shape[0], config.batch_size, config.seed,
                                    run.device)
    logger = None
    if config.tensorboard and main:
        from zoo.training.tensorboard import TensorBoardLogger
        logger = TensorBoardLogger(out / "tensorboard", run.model, run.data.image_shape)
    callbacks = [LRSchedule(scheduler)]
    if main:                                 # rank 0 alone validates, logs and writes
        callbacks = [ValidationELBO(run.data.valid.to(run.device), bound_per_datum), *callbacks,
                     *([Log(logger)] if logger is not None else []),
                     Checkpoint(lambda loop: _checkpoint(run, ckpt_path, loop, scheduler, saved),
                                every=config.checkpoint_every)]
    train_config = TrainConfig(epochs=config.epochs, batch_size=config.batch_size, lr=config.lr, seed=config.seed,
                               clip_grad=config.clip_grad, kl_warmup=config.kl_warmup, patience=config.patience,
                               progress=progress and main)
    t0 = time.perf_counter()
    try:
        fit(run.model, run.guide, objective, x, train_config, optimizer, callbacks=callbacks,
            state=TrainState(start_epoch, start_step, epoch_total, history), parallel=parallel)
    finally:
        if logger is not None:
            logger.close()
        if world > 1:
            ddp.finish()
    if not main:
        return {"rank": "worker", "history": history}
    train_seconds = time.perf_counter() - t0
    stopped = early_stop(history, config.patience, config.kl_warmup)
    if stopped:
        print(stopped, flush=True)
    return _evaluate_and_write(run, out, history, progress, train_seconds=train_seconds)


def _refuse_fewer_epochs(state: Dict, config: RunConfig, out: Path) -> None:
    """``--epochs`` is the run's total, as Lightning's ``max_epochs``: it may not be below what the checkpoint
    has trained (the run's record would say fewer epochs than its parameters have seen)."""
    epoch, step = int(state.get("epoch", 0)), int(state.get("step", 0))
    if config.epochs < epoch or (config.epochs == epoch and step):
        done = f"{epoch} epoch{'s' if epoch != 1 else ''}" + (f" and {step} steps of epoch {epoch + 1}" if step else "")
        raise ZooError(f"the run in {out} has already trained {done}; --epochs N is the total number of epochs, "
                       f"not how many more: give --epochs {epoch + 1} or more to train on, or evaluate it as it is "
                       f"with 'pyro-zoo eval {out}'")


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


def _evaluate_and_write(run: Prepared, out: Path, history, progress: bool, train_seconds=None) -> Dict:
    cfg = run.config
    best_epoch = None
    if cfg.keep_best:
        best = best_checkpoint(out, cfg)
        load_weights(run.model, run.guide, best, out / BEST)
        best_epoch = int(best["epoch"])
    x_eval, labels = _eval_subset(run.data, cfg)
    x_eval = x_eval.to(run.device)
    guide, refit = evaluation_guide(run, x_eval, progress)
    pyro.set_rng_seed(cfg.seed + 12345)
    # a phase of seconds to minutes after training's last line: say what runs (also under --no-progress)
    print(f"evaluating {out}: log p(x) by importance sampling, K = {cfg.eval_samples}, on {x_eval.shape[0]} "
          f"{cfg.eval_split} data", flush=True)
    t0 = time.perf_counter()
    with results_kept_on_stop(out), user_code_errors(run.model.display_name, "in evaluation"):
        result = evaluate(run.model, guide, x_eval, num_samples=cfg.eval_samples, iwae_k=cfg.iwae_k,
                          proposal=cfg.eval_proposal,
                          keep_reconstructions=32 if run.data.image_shape else 0)
    eval_seconds = time.perf_counter() - t0
    per_datum = result.pop("per_datum")
    recon = result.pop("reconstructions", None)
    facts = DataFacts.of(run.data)
    summary = {"config": cfg.to_json(), "device": str(run.device), "split": cfg.eval_split,
               "likelihood": likelihood_name(run.model, facts),
               "epochs_trained": len(history), "best_epoch": best_epoch, "train_seconds": train_seconds,
               "eval_seconds": eval_seconds, **result, "history": history}
    if cfg.patience:
        summary["stopped_early"] = early_stop(history, cfg.patience, cfg.kl_warmup)
    if refit is not None:
        summary["refit"] = refit.to_json()
    if uses_analytic_kl(cfg.objective, cfg.objective_options.get("estimator")):
        missing = sites_without_closed_form_kl(run.model, guide, x_eval[:2])
        if missing:                         # TraceMeanField_ELBO falls back to Monte Carlo without a word
            global_names = {s.name for s in getattr(run.model, "global_latents", ())}
            local = [m for m in missing if m not in global_names]
            glob = [m for m in missing if m in global_names]
            owners = ([f"{cfg.guide} has no closed-form KL for {', '.join(local)}"] if local else []) + (
                [f"the {guide.global_guide.kind} global guide has no closed-form KL for {', '.join(glob)} "
                 f"({'a point mass' if guide.global_guide.kind == 'delta' else 'a transformed Normal'})"] if glob else [])
            summary["note"] = (f"{'; '.join(owners)}: {cfg.objective} estimates it by Monte Carlo there, the same "
                               f"estimator as elbo")
    notes = [summary["note"]] if summary.get("note") else []
    if likelihood_warning(run.model, facts):    # counts under a Gaussian density: it trains, but say so
        notes.append(likelihood_warning(run.model, facts))
    if run.model.likelihood_note:           # a model with covariates: log p(x) is a conditional density
        notes.append(run.model.likelihood_note)
    if run.data.image_shape and run.model.cannot_generate:
        notes.append(f"{run.model.cannot_generate}: no samples.png")
    if notes:
        summary["note"] = "; ".join(notes)
    generate = run.data.image_shape and not run.model.cannot_generate
    unit = 1.0 / (run.data.levels - 1) if getattr(run.data, "levels", None) else 1.0    # k levels drawn on [0, 1]
    samples = run.model.sample(64) * unit if generate else None
    if samples is not None:                 # near-identical samples: a collapsed model (zoo.evaluation.reliability)
        summary["sample_spread"] = sample_spread(samples.detach().cpu(), x_eval.cpu() * unit)
    try:
        # the files are one group (written_together): all replaced, or none, and SIGINT/SIGTERM wait until it is
        # whole. results.json is renamed in last: a run or grid cell holds it only once the rest is in place, and
        # one killed before that is evaluated again by its resume
        with written_together(out) as files:
            buf = io.BytesIO()
            np.savez(buf, **{k: np.asarray(v) for k, v in per_datum.items() if v is not None})
            files.write_bytes(out / "per_datum.npz", buf.getvalue())
            with files.path(out / "training_curves.png") as path:
                plots.training_curves(history, path, summary)
            if generate:
                with files.path(out / "samples.png") as path:
                    plots.image_grid(samples, run.data.image_shape, path)
            if generate and run.model.has_recurrent_decoder:        # DRAW: the canvas, step by step
                with files.path(out / "canvas.png") as path:
                    plots.canvas_grid(run.model.canvas_steps(8) * unit, run.data.image_shape, path)
            if run.data.image_shape:
                with files.path(out / "reconstructions.png") as path:
                    plots.reconstruction_grid(recon[0] * unit, recon[1] * unit, run.data.image_shape, path)
            if per_datum["z_mean"].shape[1] == 2:
                with files.path(out / "latent_scatter.png") as path:
                    plots.latent_scatter(per_datum["z_mean"], labels, path)
            files.write_text(out / "results.md", results_markdown([summary]))
            # sealed (content_sha256): a grid takes a cell's results into its tables only as they were written
            files.write_text(out / "results.json", json.dumps(sealed(json_ready(summary)), indent=2))
    except KeyboardInterrupt as e:
        e.zoo_note = f"it came while {out}'s results were being written, and they were written whole first"
        raise
    return summary


def evaluation_guide(run: Prepared, x_eval: torch.Tensor, progress: bool):
    """(the guide to evaluate ``x_eval`` with, the refit's record or None): the run's guide when it is amortized;
    a per-datum guide has no posterior for held-out data, so a fresh one is fitted to them, model fixed."""
    cfg, guide = run.config, run.guide
    if guide.amortized:
        return guide, None
    guide = build_guide(cfg.guide, run.model, num_data=x_eval.shape[0],
                        **dataclasses.asdict(cfg.resolved("guide"))).to(run.device)
    guide.adopt_globals(run.guide)          # q(theta) was fitted to the training data; the refit keeps it
    guide.refit_start()                     # where a refit starts its rows, not where training does
    if not run.model.latents:               # with global latents alone there is nothing per datum to refit
        return guide, None
    if progress:                            # minutes with no other output otherwise
        print(f"refitting a per-datum {cfg.guide} guide to the {x_eval.shape[0]} {cfg.eval_split} data "
              f"(model fixed) before evaluating it", flush=True)
    return guide, refit_local_guide(run.model, guide, x_eval, **refit_settings(cfg), seed=cfg.seed,
                                    progress=progress)


def fixed_subset_rows(n: int, limit: Optional[int]) -> Optional[torch.Tensor]:
    """The rows of a fixed random subset of ``limit`` out of ``n`` data, in their order (None: all of them).

    The subset is drawn with a fixed generator (seed 0), so every run and every model is
    scored on the same data. Not the first N: dataset files can be ordered (the first
    images of the binarized MNIST test file are darker than the rest, and a VAE's ELBO on
    them is several nats lower than on the whole split).
    """
    if limit is None or limit >= n:
        return None
    return torch.randperm(n, generator=torch.Generator().manual_seed(0))[:limit].sort().values


def fixed_subset(x: torch.Tensor, limit: Optional[int]) -> torch.Tensor:
    """All of ``x``, or its fixed random subset of ``limit`` rows (:func:`fixed_subset_rows`)."""
    rows = fixed_subset_rows(x.shape[0], limit)
    return x if rows is None else x[rows]


def _eval_subset(data: Dataset, cfg: RunConfig):
    """The evaluation data: the whole split, or with ``eval_limit`` its fixed random subset (:func:`fixed_subset_rows`)."""
    x = data.split(cfg.eval_split)
    labels = data.labels.get(cfg.eval_split)
    rows = fixed_subset_rows(x.shape[0], cfg.eval_limit)
    if rows is None:
        return x, labels
    return x[rows], (labels[rows] if labels is not None else None)


def evaluate_run(out: Path, eval_samples: Optional[int] = None, iwae_k: Optional[int] = None,
                 eval_limit: Optional[int] = None, eval_proposal: Optional[str] = None,
                 device: Optional[str] = None, data_dir: Optional[str] = None,
                 progress: bool = True, refit_epochs: Optional[int] = None,
                 refit_tol: Optional[float] = None, model_file: Optional[str] = None,
                 guide_file: Optional[str] = None, force: bool = False) -> Dict:
    """Re-evaluate a trained run folder (optionally with more samples or another device; a per-datum
    guide's test-time refit with another cap ``refit_epochs`` or tolerance ``refit_tol``). An evaluation
    that would replace a stronger one is refused unless ``force`` (:func:`~zoo.experiments.outputs.refuse_weaker_evaluation`).

    The folder is read as data (:func:`~zoo.experiments.run_folder.load_run`): a run of a model file
    needs ``model_file``, the file the user names, which must hash to the run's recorded SHA-256; a run
    of a guide file (:mod:`guides.user`) needs ``guide_file`` the same way."""
    out = Path(out)
    if not out.is_dir():
        raise ZooError(f"no run folder at {out}; train one there first ('pyro-zoo train ... --out {out}')")
    with results_kept_on_stop(out), writer_lock(out):       # a stop once the lock is held says the results are kept
        state, config = load_run(out, model_file, guide_file=guide_file)
        changes = {"eval_samples": eval_samples, "iwae_k": iwae_k, "eval_limit": eval_limit,
                   "eval_proposal": eval_proposal, "device": device,
                   "data_dir": data_dir, "refit_epochs": refit_epochs, "refit_tol": refit_tol}
        config = dataclasses.replace(config, **{k: v for k, v in changes.items() if v is not None})
        run = prepare(config)
        refuse_weaker_evaluation(out, config.to_json(), config.eval_samples,
                                 _eval_subset(run.data, config)[0].shape[0], force)
        load_weights(run.model, run.guide, state, out / "checkpoint.pt")
        return _evaluate_and_write(run, out, list(state["history"]), progress)


@contextlib.contextmanager
def results_kept_on_stop(out: Path):
    """A SIGINT/SIGTERM in the block (:mod:`zoo.training.interrupts`) says, unless it knows better, that
    the results in ``out`` were not touched: they are written only at the end, as one group."""
    try:
        yield
    except KeyboardInterrupt as e:
        if not getattr(e, "zoo_note", None):
            e.zoo_note = f"it stopped before any results were written, so {out}'s results are as they were"
        raise
