"""Stochastic variational inference: one SVI step, and the loop of epochs that runs it with its callbacks.

One SVI step on a minibatch with indices ``idx`` out of N data::

    loss = objective.loss_and_grads(model, guide, x[idx], idx=idx, N=N)   # -(N/B)-scaled bound
    adam.step()                                                           # model and guide params

This is :class:`pyro.infer.SVI` written out: the parameters live in the modules
(``module_local_params``), so a plain ``torch.optim.Adam`` over
``model.parameters()`` and ``guide.parameters()`` takes the place of ``pyro.optim``,
and its state can be checkpointed with ``state_dict`` and resumed exactly. The
data order of epoch e is a permutation drawn from a generator seeded by
(seed, e), so a resumed run sees the same minibatches as an uninterrupted one.

Everything else a run does while it trains (guards against NaN, KL warm-up, clipping, validation,
logging, checkpoints, the progress bar) is a callback (:mod:`zoo.training.callbacks`), and everything
that makes the objects it trains (wrapping a user's guide, checking the data, building the optimizer,
the objective as it must run on the model) happens before it: in :mod:`zoo.training.prepare` for
``zoo.fit``'s keywords, in :mod:`zoo.experiments.run` for ``pyro-zoo train``.
"""
from __future__ import annotations

import contextlib
import time
from typing import Dict, List, Optional, Sequence

import pyro
import pyro.infer.util
import torch

from zoo.core.errors import ZooError
from zoo.training.callbacks import Callback, ValidationELBO, callbacks_for
from zoo.training.config import TrainConfig, TrainState
from zoo.training.guards import nan_warnings_silenced, step_errors
from zoo.core.process import map_torch_constants

__all__ = ["fit", "Loop", "SingleProcess", "svi_step", "epoch_order", "early_stop"]


def epoch_order(num_data: int, seed: int, epoch: int) -> torch.Tensor:
    """The data permutation of ``epoch``: a pure function of (seed, epoch)."""
    g = torch.Generator().manual_seed(int(seed) * 1_000_003 + int(epoch))
    return torch.randperm(num_data, generator=g)


class SingleProcess:
    """The minibatches and the step of one process: epoch e's (seed, e) permutation cut into ``batch_size``
    pieces, and ``objective.loss_and_grads`` on the model as the guide trains it (a relaxed guide relaxes
    the model's discrete sites). :class:`zoo.training.distributed.DataParallel` is the same two methods
    under DDP."""

    def __init__(self, model, guide, objective, x: torch.Tensor, batch_size: int, seed: int):
        self.train_model, self.guide, self.objective = guide.training_model(model), guide, objective
        self.num_data, self.batch_size, self.seed, self.device = x.shape[0], batch_size, seed, x.device

    def batches(self, epoch: int):
        return epoch_order(self.num_data, self.seed, epoch).to(self.device).split(self.batch_size)

    def step(self, x: torch.Tensor, idx: torch.Tensor) -> float:
        return self.objective.loss_and_grads(self.train_model, self.guide, x, idx=idx, N=self.num_data)


class Loop:
    """A running fit as its callbacks see it: the objects it trains (``model``, ``guide``, ``objective``,
    ``optimizer``, ``params``), its ``config`` and ``state`` (:mod:`zoo.training.config`), and where it is:
    ``epoch`` and ``step`` (from 0), ``global_step``, ``steps`` per epoch, the step's ``loss`` (the
    objective's, summed over the N = ``num_data`` data)."""

    def __init__(self, model, guide, objective, optimizer, config: TrainConfig, state: TrainState, num_data: int):
        self.model, self.guide, self.objective, self.optimizer = model, guide, objective, optimizer
        self.config, self.state, self.num_data = config, state, num_data
        self.params = [p for group in optimizer.param_groups for p in group["params"]]
        self.name = getattr(model, "display_name", type(model).__name__)          # for the one-line errors
        self.epoch = self.step = self.global_step = self.steps = 0
        self.loss = float("nan")

    def train(self) -> None:
        """Training mode; with ``guide_only`` the fixed model stays in eval mode."""
        if not self.config.guide_only:
            self.model.train()
        self.guide.train()

    def errors(self, step: Optional[int]):
        """The one-line errors of the step ``step`` of this epoch, or (None) of the validation pass after it."""
        return step_errors(self.name, self.objective, self.epoch, step)


def svi_step(loop: Loop, compute, x: torch.Tensor, idx: torch.Tensor, callbacks: Sequence[Callback]) -> None:
    """One SVI step on the minibatch ``idx``: ``compute(x[idx], idx)``, the loss and its gradients, inside
    the callbacks' step contexts, then the optimizer step, with the callbacks' hooks before and after it."""
    loop.guide.on_step(loop.global_step)
    loop.optimizer.zero_grad(set_to_none=True)
    contexts = [c for c in (callback.step_context(loop) for callback in callbacks) if c is not None]
    with contextlib.ExitStack() if contexts else contextlib.nullcontext() as around:    # most steps have none
        for context in contexts:
            around.enter_context(context)
        with loop.errors(loop.step):
            loop.loss = compute(x[idx], idx)
    for callback in callbacks:
        callback.on_before_optimizer_step(loop)
    loop.optimizer.step()
    loop.state.step, loop.state.epoch_total = loop.step + 1, loop.state.epoch_total + loop.loss / loop.num_data
    for callback in callbacks:
        callback.on_step_end(loop)


def fit(model, guide, objective, x: torch.Tensor, config: Optional[TrainConfig] = None, optimizer=None, *,
        callbacks: Sequence[Callback] = (), state: Optional[TrainState] = None,
        **options) -> List[Dict]:
    """Run SVI on ``x`` for ``config.epochs`` epochs with ``optimizer``; return the per-epoch history.

    Each history row has ``epoch``, ``loss`` (the objective's negative bound per datum, averaged over the
    epoch's minibatches), ``valid_elbo`` (None unless a :class:`~zoo.training.callbacks.ValidationELBO`
    fills it), ``seconds``, ``lr`` and the guide's own record (a temperature). ``callbacks`` run between
    ``config``'s own (:func:`~zoo.training.callbacks.callbacks_for`). From a checkpoint's ``state``, with
    the optimizer's and RNG's states restored, the run continues exactly. ``config.parallel`` gives the
    epoch's minibatches and the step (default :class:`SingleProcess`; DDP:
    :class:`~zoo.training.distributed.DataParallel`).

    The keyword form, ``fit(model, guide, objective, x, epochs=10, batch_size=100, lr=1e-3)``, first makes
    the objects ready (:func:`zoo.training.prepare.keyword_fit`: a Pyro guide function is wrapped, the
    data checked, Adam built) and takes ``on_checkpoint``, ``checkpoint_every`` and ``log`` too.
    """
    if config is None:
        from zoo.training.prepare import keyword_fit
        return fit(model, **keyword_fit(model, guide, objective, x, optimizer, callbacks, **options), state=state)
    map_torch_constants()                        # once per process: zoo.core.process
    if config.patience is not None and config.patience < 1:
        raise ZooError(f"patience must be at least 1 epoch, got {config.patience}")
    if config.patience and not (guide.amortized and any(isinstance(c, ValidationELBO) for c in callbacks)):
        raise ZooError("early stopping (patience) watches the validation ELBO, and this fit computes none (it needs "
                       "an amortized guide and a ValidationELBO callback): drop the patience, or validate")
    callbacks = callbacks_for(config, *callbacks)
    loop = Loop(model, guide, objective, optimizer, config, state if state is not None else TrainState(), x.shape[0])
    parallel = config.parallel or SingleProcess(model, guide, objective, x, config.batch_size, config.seed)
    loop.train()
    validating = pyro.infer.util.is_validation_enabled()
    with nan_warnings_silenced(), pyro.validation_enabled(False):
        _epochs(loop, parallel, x, callbacks, validating)
    return loop.state.history


def _epochs(loop: Loop, parallel, x: torch.Tensor, callbacks: Sequence[Callback], validating: bool) -> None:
    """The epochs of :func:`fit`, with Pyro's validation off but in the first step of each epoch (when it
    was on): the data were validated before training, and non-finite values are caught by the guards. The
    callbacks' epoch-end work (the validation ELBO, checkpoints) runs with it off too.

    Validation goes by the step's position: a run resumed mid-epoch takes the same validated and unvalidated
    steps as an uninterrupted one, and so the same numbers (a validated step goes through Pyro's own ELBO
    classes and the others through :mod:`zoo.objectives.lean`, whose gradients agree to float rounding, not
    bit for bit)."""
    config, optimizer, guide = loop.config, loop.optimizer, loop.guide
    if early_stop(loop.state.history, config.patience, config.kl_warmup):    # a resumed run that had stopped
        return
    for epoch in range(loop.state.epoch, config.epochs):
        t0 = time.perf_counter()
        batches = parallel.batches(epoch)
        loop.epoch, loop.steps, first = epoch, len(batches), loop.state.step
        for step in range(first, loop.steps):
            loop.step, loop.global_step = step, epoch * loop.steps + step
            if step == 0 and validating:
                with pyro.validation_enabled(True):
                    svi_step(loop, parallel.step, x, batches[step], callbacks)
            else:
                svi_step(loop, parallel.step, x, batches[step], callbacks)
        row = {"epoch": epoch + 1, "loss": loop.state.epoch_total / loop.steps, "seconds": time.perf_counter() - t0,
               "valid_elbo": None, "lr": optimizer.param_groups[0]["lr"], **guide.epoch_record()}
        loop.state.epoch, loop.state.step, loop.state.epoch_total = epoch + 1, 0, 0.0
        loop.state.history.append(row)
        for callback in callbacks:
            callback.on_epoch_end(loop, row)
        if early_stop(loop.state.history, config.patience, config.kl_warmup):
            return


def early_stop(history: Sequence[Dict], patience: Optional[int], warmup: Optional[int] = None) -> Optional[str]:
    """Early stopping's verdict on a run's ``history``: None while it trains on, else the line that says why it
    stopped. It stops once ``patience`` epochs have passed without a better validation ELBO (``valid_elbo``),
    counted as Lightning's ``EarlyStopping`` counts them, except that the first ``warmup`` epochs (KL warm-up,
    whose models are not yet the final objective's) never count, as in Tomczak & Welling's (2018) code. A tie
    counts as the later epoch's, as for ``--keep-best``'s ``best.pt``, so the epoch it scores is the one the line
    names. A function of the history alone, so a resumed run stops where an uninterrupted one would."""
    if not patience or not history:
        return None
    scored = [(row["valid_elbo"], row["epoch"]) for row in history if row.get("valid_elbo") is not None]
    if not scored:
        return None
    best, best_epoch = max(scored)
    last = history[-1]["epoch"]
    waited = last - max(best_epoch, warmup or 0)
    if waited < patience:
        return None
    return (f"early stopping after epoch {last}: the validation ELBO has not improved for {waited} epochs"
            f"{' after the warm-up' if (warmup or 0) > best_epoch else ''}, its best at epoch {best_epoch} "
            f"({best:.3f}); patience {patience}")
