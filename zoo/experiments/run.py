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
from pathlib import Path
from typing import Dict, Optional, Union

import numpy as np
import pyro
import torch
from tqdm.auto import tqdm

from zoo.evaluation.replicas import Replication, check_replicas, reason_array, replicated_importance_sampling
from zoo.core.seeds import stream_seed
from zoo.core.errors import ZooError
from zoo.core.files import sealed
from zoo.data import Dataset
from zoo.evaluation import plots
from zoo.evaluation.harness import EvaluationSettings, bound_per_datum, evaluate
from zoo.evaluation.reliability import sample_spread
from zoo.evaluation.tables import results_markdown
from zoo.experiments.config import RunConfig, refuse_mismatch
from zoo.experiments.outputs import check_out_dir, json_ready, make_out_dir, refuse_weaker_evaluation
from zoo.objectives.base import for_model
from zoo.objectives.capture import CapturedObjective
from zoo.objectives.jit import JIT_NOTICE
from zoo.registry import build_guide
from zoo.rules import DataFacts, likelihood_name, likelihood_warning
from zoo.training import distributed as ddp
from zoo.experiments.prepare import Prepared, prepare
from zoo.experiments.run_folder import BEST, LoadedRun, best_checkpoint, load_run, load_weights, writer_lock
from zoo.experiments.trained import Invocation, TrainedRun, evaluation_split
from zoo.training.checkpoint import (atomic_path, atomic_write_text, rng_state, save_checkpoint, set_rng_state,
                                     signals_deferred, written_together)
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

__all__ = ["Prepared", "prepare", "train_run", "evaluate_run", "evaluation_guide", "TrainedRun", "BEST"]


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
    if config.fixed_model is not None and out.resolve() == Path(config.fixed_model).resolve():
        raise ZooError(f"--out {out} is the fixed model's own folder; train the guide into a new folder with --out")
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
    optimizer = make_optimizer(run.model, run.guide, config.lr, guide_only=config.fixed_model is not None,
                               betas=config.adam_betas, eps=config.adam_eps, weight_decay=config.weight_decay)
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
                               progress=progress and main, parallel=parallel)
    # a resumed run's training time counts the epochs it trained before it stopped (their steps' time)
    t0 = time.perf_counter() - sum(row.get("seconds", 0.0) for row in history)
    try:
        fit(run.model, run.guide, objective, x, train_config, optimizer, callbacks=callbacks,
            state=TrainState(start_epoch, start_step, epoch_total, history))
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
    best_epoch = None
    if config.keep_best:                     # the best epoch's weights are the run's, as eval opens it
        best = best_checkpoint(out, config)
        load_weights(run.model, run.guide, best, out / BEST)
        best_epoch = int(best["epoch"])
    return _evaluate_and_write(run, out, history, progress, best_epoch=best_epoch, train_seconds=train_seconds)


def _refuse_fewer_epochs(state: Dict, config: RunConfig, out: Path) -> None:
    """``--epochs`` is the run's total, as Lightning's ``max_epochs``: it may not be below what the checkpoint
    has trained (the run's record would say fewer epochs than its parameters have seen)."""
    epoch, step = int(state.get("epoch", 0)), int(state.get("step", 0))
    if config.epochs < epoch or (config.epochs == epoch and step):
        done = f"{epoch} epoch{'s' if epoch != 1 else ''}" + (f" and {step} steps of epoch {epoch + 1}" if step else "")
        raise ZooError(f"the run in {out} has already trained {done}; --epochs N is the total number of epochs, "
                       f"not how many more: give --epochs {epoch + 1} or more to train on, or evaluate it as it is "
                       f"with 'pyro-zoo eval {out}'")


def _evaluate_and_write(run: Prepared, out: Path, history, progress: bool, best_epoch: Optional[int] = None,
                        train_seconds=None, replicas: int = 1) -> Dict:
    """Evaluate ``run`` as its model and guide stand (the caller loaded the weights to score: with ``--keep-best``
    those of ``best_epoch``) and write its results into ``out``. With ``replicas`` R >= 2, also R independent
    importance-sampling estimates of every datum from different proposals (:mod:`zoo.evaluation.replicas`): their
    pooled log p(x), and each datum called reliable only where they agree and each passes its own check, the summary
    under ``results.json``'s ``replicas``, the flags and reasons per datum in ``per_datum.npz`` (``replicas_*``)."""
    cfg = run.config
    x_eval, labels = evaluation_split(run.data, cfg)
    x_eval = x_eval.to(run.device)
    guide, refit = evaluation_guide(run, x_eval, progress)
    pyro.set_rng_seed(stream_seed(cfg.seed, "evaluation"))
    # a phase of seconds to minutes after training's last line: say what runs (also under --no-progress)
    print(f"evaluating {out}: log p(x) by importance sampling, K = {cfg.eval_samples}, on {x_eval.shape[0]} "
          f"{cfg.eval_split} data", flush=True)
    t0 = time.perf_counter()
    with results_kept_on_stop(out), user_code_errors(run.model.display_name, "in evaluation"):
        result = evaluate(run.model, guide, x_eval, num_samples=cfg.eval_samples, iwae_k=cfg.iwae_k,
                          proposal=cfg.eval_proposal,
                          settings=EvaluationSettings(keep_reconstructions=32 if run.data.image_shape else 0))
    per_datum = result.pop("per_datum")
    if replicas > 1:
        print(f"evaluating {out}: {replicas} importance-sampling replicas from different proposals, K = "
              f"{cfg.eval_samples} each", flush=True)
        with results_kept_on_stop(out), user_code_errors(run.model.display_name, "in evaluation"):
            verdict = replicated_importance_sampling(
                run.model, guide, x_eval, num_samples=cfg.eval_samples,
                replication=Replication(replicas, stream_seed(cfg.seed, "evaluation")),
                batch_size=min(500, x_eval.shape[0]))
        result["replicas"] = verdict.summary()
        per_datum.update({f"replicas_{k}": v.detach().cpu().numpy() for k, v in verdict.per_datum().items()})
        per_datum["replicas_reasons"] = reason_array(verdict.reasons)
    eval_seconds = time.perf_counter() - t0
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
            global_names = {s.name for s in run.model.global_latents}
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
    # a fixed model that computes with its guide keeps the frozen one it was trained with (zoo.experiments.fixed)
    guide = build_guide(cfg.guide, run.model, num_data=x_eval.shape[0], bind=cfg.fixed_model is None,
                        **dataclasses.asdict(cfg.resolved("guide"))).to(run.device)
    guide.adopt_globals(run.guide)          # q(theta) was fitted to the training data; the refit keeps it
    guide.refit_start()                     # where a refit starts its rows, not where training does
    if not run.model.latents:               # with global latents alone there is nothing per datum to refit
        return guide, None
    if progress:                            # minutes with no other output otherwise
        print(f"refitting a per-datum {cfg.guide} guide to the {x_eval.shape[0]} {cfg.eval_split} data "
              f"(model fixed) before evaluating it", flush=True)
    return guide, refit_local_guide(run.model, guide, x_eval, refit_settings(cfg, progress=progress), seed=cfg.seed)


def evaluate_run(out: Path, invocation: Optional[Invocation] = None, replicas: int = 1) -> Dict:
    """Re-evaluate a trained run folder with the run's settings as ``invocation`` changes them (more samples
    ``eval_samples``, a subset ``eval_limit``, another ``device``; a per-datum guide's test-time refit with another cap
    ``refit_epochs`` or tolerance ``refit_tol``) and ``replicas`` importance-sampling replicas beside the harness's
    figures. An evaluation that would replace a stronger one is refused unless ``invocation.force``
    (:func:`~zoo.experiments.outputs.refuse_weaker_evaluation`).

    The folder is read as data (:func:`~zoo.experiments.run_folder.load_run`): a run of a model file
    needs ``invocation.model_file``, the file the user names, which must hash to the run's recorded SHA-256; a run
    of a guide file (:mod:`guides.user`) needs ``invocation.guide_file`` the same way."""
    out = Path(out)
    invocation = invocation or Invocation()
    if not out.is_dir():
        raise ZooError(f"no run folder at {out}; train one there first ('pyro-zoo train ... --out {out}')")
    with results_kept_on_stop(out), writer_lock(out):       # a stop once the lock is held says the results are kept
        run = invocation.open(out)
        refuse_weaker_evaluation(out, run.config.to_json(), run.config.eval_samples,
                                 run.evaluation_data()[0].shape[0], invocation.force)
        check_replicas(replicas)
        return _evaluate_and_write(run, out, run.history, invocation.progress, best_epoch=run.best_epoch,
                                   replicas=replicas)


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
