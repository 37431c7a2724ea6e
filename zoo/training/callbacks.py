"""What a training run does besides its SVI steps, each a small callback of :func:`zoo.training.loop.fit`.

A callback overrides the hooks it needs, each given the running :class:`~zoo.training.loop.Loop` (and the
epoch's history row), as Lightning's and pythae's trainers hand theirs::

    step_context(loop)              a context manager around the step's loss and gradients (or None); every
                                    callback's is asked for before the first is entered
    on_before_optimizer_step(loop)  the gradients are there, the parameters not yet changed
    on_step_end(loop)               after the optimizer step
    on_epoch_end(loop, row)         the epoch's row is in loop.state.history; a callback may add to it

Their order in the list is the order their hooks run. :func:`callbacks_for` puts a
:class:`~zoo.training.config.TrainConfig`'s own callbacks around the caller's: the guards first (nothing
non-finite reaches a later hook), KL warm-up next (its ``kl_weight`` is in the row the others see), then
the caller's (validation before what records the row, a logger before the checkpoint that saves the RNG
state it drew from), then clipping (after a logger has read the unclipped gradient norm) and the progress
bar.
"""
from __future__ import annotations

from typing import Callable, List, Optional

import torch
from tqdm.auto import tqdm

from zoo.training.config import TrainConfig
from zoo.training.guards import check_finite, check_parameters, check_validation, one_device
from zoo.training.warmup import KLWarmup, kl_warmup_weight

__all__ = ["Callback", "NonFiniteGuard", "KLWarmupSchedule", "GradientClipping", "ProgressBar", "Checkpoint",
           "Log", "LRSchedule", "ValidationELBO", "callbacks_for"]


class Callback:
    """The hooks of :func:`~zoo.training.loop.fit`, each doing nothing here (see the module docstring)."""

    def step_context(self, loop):
        return None

    def on_before_optimizer_step(self, loop) -> None:
        pass

    def on_step_end(self, loop) -> None:
        pass

    def on_epoch_end(self, loop, row: dict) -> None:
        pass


class NonFiniteGuard(Callback):
    """A non-finite loss or gradient stops the run before the optimizer step, non-finite parameters right
    after it (a finite gradient times too large a step overflows): no checkpoint ever holds them."""

    _loop = _device = None          # the loop whose parameters' one device (None: several) was found, at its first step

    def _device_of(self, loop):
        if self._loop is not loop:
            self._loop, self._device = loop, one_device(loop.params)
        return self._device

    def on_before_optimizer_step(self, loop) -> None:
        check_finite(loop.loss, loop.params, loop.epoch, loop.step, loop.global_step, loop.objective,
                     self._device_of(loop))

    def on_step_end(self, loop) -> None:
        check_parameters(loop.params, loop.epoch, loop.step, loop.global_step, self._device_of(loop))


class KLWarmupSchedule(Callback):
    """KL annealing over the first ``epochs`` epochs: step s runs under :class:`~zoo.training.warmup.KLWarmup`
    with beta = (s + 1) / (epochs x steps per epoch), so the latent terms of the objective are weighted up
    linearly from ~0 to 1. Such epochs' rows carry ``kl_weight``, the beta of their last step, and their
    ``loss`` is the tempered bound; the validation ELBO is always the true one. beta is a function of the
    step, so a resumed run continues the same schedule."""

    def __init__(self, epochs: int):
        self.epochs = epochs

    def step_context(self, loop):
        beta = kl_warmup_weight(loop.global_step, self.epochs * loop.steps)
        return KLWarmup(beta) if beta < 1.0 else None

    def on_epoch_end(self, loop, row: dict) -> None:
        if loop.epoch < self.epochs:
            row["kl_weight"] = kl_warmup_weight(loop.epoch * loop.steps + loop.steps - 1, self.epochs * loop.steps)


class GradientClipping(Callback):
    """Clip the global gradient norm to ``max_norm`` before each optimizer step."""

    def __init__(self, max_norm: float):
        self.max_norm = max_norm

    def on_before_optimizer_step(self, loop) -> None:
        torch.nn.utils.clip_grad_norm_(loop.params, self.max_norm)


class ProgressBar(Callback):
    """A tqdm bar per epoch showing the loss per datum, and a line with the epoch's loss and validation ELBO."""

    def __init__(self, desc: str = "train"):
        self.desc, self.bar = desc, None

    def on_step_end(self, loop) -> None:
        if self.bar is None:
            self.bar = tqdm(desc=f"{self.desc} epoch {loop.epoch + 1}/{loop.config.epochs}", leave=False,
                            dynamic_ncols=True, initial=loop.step, total=loop.steps)
        if loop.step % 10 == 0:
            self.bar.set_postfix(loss=f"{loop.loss / loop.num_data:.3f}", refresh=False)
        self.bar.update(1)

    def on_epoch_end(self, loop, row: dict) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        tqdm.write(f"{self.desc} epoch {row['epoch']}/{loop.config.epochs}: loss/datum {row['loss']:.3f}"
                   + (f", valid ELBO {row['valid_elbo']:.3f}" if row["valid_elbo"] is not None else ""))


class Checkpoint(Callback):
    """``save(loop)`` after every epoch and, with ``every``, after every ``every`` steps (not at an epoch's
    last step, which the epoch's own checkpoint follows); ``loop.state`` then says where the run stands."""

    def __init__(self, save: Callable, every: Optional[int] = None):
        self.save, self.every = save, every

    def on_step_end(self, loop) -> None:
        if self.every and (loop.global_step + 1) % self.every == 0 and loop.step + 1 < loop.steps:
            self.save(loop)

    def on_epoch_end(self, loop, row: dict) -> None:
        self.save(loop)


class Log(Callback):
    """Monitoring values to ``log(kind, step, **values)`` (e.g. :class:`~zoo.training.tensorboard.TensorBoardLogger`):
    ``log("step", global_step, loss=, grad_norm=)`` with the loss per datum and the global norm of the
    gradient before any clipping, and ``log("epoch", epoch, row=)``."""

    def __init__(self, log: Callable):
        self.log, self.grad_norm = log, None

    def on_before_optimizer_step(self, loop) -> None:
        self.grad_norm = float(torch.linalg.vector_norm(
            torch.stack([torch.linalg.vector_norm(p.grad) for p in loop.params if p.grad is not None])))

    def on_step_end(self, loop) -> None:
        self.log("step", loop.global_step, loss=loop.loss / loop.num_data, grad_norm=self.grad_norm)

    def on_epoch_end(self, loop, row: dict) -> None:
        self.log("epoch", row["epoch"], row=row)


class LRSchedule(Callback):
    """Step a ``torch.optim.lr_scheduler`` after every epoch (the row has recorded the epoch's rate)."""

    def __init__(self, scheduler):
        self.scheduler = scheduler

    def on_epoch_end(self, loop, row: dict) -> None:
        self.scheduler.step()


class ValidationELBO(Callback):
    """The row's ``valid_elbo``: ``elbo(model, guide, valid)``, the ELBO per datum on ``valid`` after each
    epoch, for an amortized guide (a per-datum one has no posterior for the validation data). The caller
    gives the function (the evaluation harness's ``bound_per_datum``); it runs with the step's one-line
    errors, and a non-finite value stops the run before the epoch's checkpoint."""

    def __init__(self, valid: torch.Tensor, elbo: Callable):
        self.valid, self.elbo = valid, elbo

    def on_epoch_end(self, loop, row: dict) -> None:
        if not loop.guide.amortized:
            return
        with loop.errors(None):
            row["valid_elbo"] = self.elbo(loop.model, loop.guide, self.valid)
        check_validation(row["valid_elbo"], loop.epoch)
        loop.train()


def callbacks_for(config: TrainConfig, *callbacks: Callback) -> List[Callback]:
    """``config``'s own callbacks around the caller's ``callbacks``, in the order their hooks must run
    (the module docstring says why)."""
    return ([NonFiniteGuard()] + ([KLWarmupSchedule(config.kl_warmup)] if config.kl_warmup else [])
            + list(callbacks) + ([GradientClipping(config.clip_grad)] if config.clip_grad else [])
            + ([ProgressBar()] if config.progress else []))
