"""Stochastic variational inference with Adam, for any model, guide and objective.

One SVI step on a minibatch with indices ``idx`` out of N data::

    loss = objective.loss_and_grads(model, guide, x[idx], idx=idx, N=N)   # -(N/B)-scaled bound
    adam.step()                                                           # model and guide params

This is :class:`pyro.infer.SVI` written out: the parameters live in the modules
(``module_local_params``), so a plain ``torch.optim.Adam`` over
``model.parameters()`` and ``guide.parameters()`` takes the place of ``pyro.optim``,
and its state can be checkpointed with ``state_dict`` and resumed exactly. The
data order of epoch e is a permutation drawn from a generator seeded by
(seed, e), so a resumed run sees the same minibatches as an uninterrupted one.
"""
from __future__ import annotations

import contextlib
import math
import time
import warnings
from typing import Callable, Dict, List, Optional

import pyro
import pyro.infer.util
import torch
from tqdm.auto import tqdm

from zoo.core.errors import ZooError
from zoo.evaluation.harness import bound_per_datum
from zoo.objectives.base import for_model
from zoo.training.optimizer import make_optimizer
from zoo.training.warmup import KLWarmup, kl_warmup_weight

__all__ = ["fit", "fit_local_guide", "epoch_order", "NonFiniteError"]

#: Pyro's ``warn_if_nan`` warnings ("Encountered NaN: loss"): the loop reports a non-finite loss itself, in one line.
_NAN_WARNINGS = r"Encountered (NaN|[+-]?inf)"


class NonFiniteError(ZooError):
    """Training produced NaN or inf (a loss, a gradient, the parameters after a step, the validation
    ELBO); raised before that state reaches a checkpoint. ``epoch`` and ``step`` (1-based; step None:
    the validation pass after the epoch) say where."""

    def __init__(self, message: str, epoch: int, step: Optional[int]):
        super().__init__(message)
        self.epoch, self.step = epoch, step


def epoch_order(num_data: int, seed: int, epoch: int) -> torch.Tensor:
    """The data permutation of ``epoch``: a pure function of (seed, epoch)."""
    g = torch.Generator().manual_seed(int(seed) * 1_000_003 + int(epoch))
    return torch.randperm(num_data, generator=g)




def fit(model, guide, objective, x: torch.Tensor, *, epochs: int, batch_size: int, lr: float,
        seed: int = 0, valid: Optional[torch.Tensor] = None, progress: bool = True,
        optimizer: Optional[torch.optim.Optimizer] = None, scheduler=None, start_epoch: int = 0,
        start_step: int = 0, epoch_total: float = 0.0, history: Optional[List[Dict]] = None,
        on_checkpoint: Optional[Callable] = None, checkpoint_every: Optional[int] = None,
        clip_grad: Optional[float] = None, guide_only: bool = False, desc: str = "train",
        batches: Optional[Callable] = None, step_fn: Optional[Callable] = None,
        log: Optional[Callable] = None, kl_warmup: Optional[int] = None) -> List[Dict]:
    """Run SVI for ``epochs`` epochs; return the per-epoch history.

    Each history row has ``epoch``, ``loss`` (the objective's negative bound per
    datum, averaged over the epoch's minibatches), ``valid_elbo`` (the ELBO per datum
    on ``valid``, for amortized guides, else ``None``) and ``seconds``.

    ``on_checkpoint(epoch, step, epoch_total, optimizer, scheduler, history)`` is called
    after every ``checkpoint_every`` steps (mid-epoch: ``epoch`` epochs done and ``step``
    steps into the next) and after every epoch (``step`` 0). Resuming with the same
    ``start_epoch``, ``start_step``, ``epoch_total``, optimizer/scheduler/RNG states continues
    the run exactly: the data order is a function of (seed, epoch). A non-finite loss or
    gradient raises :class:`NonFiniteError` before the optimizer step; non-finite parameters
    after it (a finite gradient times too large a step overflows) or a non-finite validation
    ELBO raise it before the next checkpoint; so no checkpoint ever holds a NaN state. Pyro's
    own NaN warnings are silenced (the error says it, in one line). An exception raised in the
    user's own model code becomes one line naming its file and line. ``clip_grad`` clips the
    global gradient norm.

    Two hooks serve distributed training (:mod:`zoo.training.distributed`): ``batches(epoch)``
    returns the epoch's minibatch index tensors (default: the (seed, epoch) permutation cut
    into ``batch_size`` pieces) and ``step_fn(x_batch, idx)`` computes one step's loss and
    gradients (default: ``objective.loss_and_grads``). ``log("step", global_step, loss=,
    grad_norm=)`` and ``log("epoch", epoch, row=)`` receive the monitoring values (TensorBoard).

    ``kl_warmup`` (epochs): KL annealing. Step s of the first ``kl_warmup`` epochs runs under
    :class:`~zoo.training.warmup.KLWarmup` with beta = (s + 1) / (kl_warmup x steps per epoch), so the
    latent terms of the objective are weighted up linearly from ~0 to 1; such epochs' rows carry
    ``kl_weight``, the beta of their last step, and their ``loss`` is the tempered bound. The
    validation ELBO is always the true one. beta is a function of the step, so a resumed run
    continues the same schedule.
    """
    model.validate_data(x, what="training data")
    from guides.user import as_zoo_guide
    guide = as_zoo_guide(guide, model, num_data=x.shape[0])   # a Pyro guide function: wrapped once, then reused
    N = x.shape[0]
    if batch_size > N:
        raise ZooError(f"--batch-size {batch_size} is larger than the {N} training data; use at most {N}")
    optimizer = optimizer or make_optimizer(model, guide, lr, guide_only)
    params = [p for group in optimizer.param_groups for p in group["params"]]
    history = history if history is not None else []
    # A guide may change what the objective sees of the model while training (the relaxed
    # guide relaxes the model's discrete sites) and may anneal itself per step.
    train_model = guide.training_model(model)
    objective = for_model(objective, model)        # Pyro's vectorized particles would broadcast global latents
    if batches is None:
        def batches(epoch):
            return epoch_order(N, seed, epoch).to(x.device).split(batch_size)
    if step_fn is None:
        def step_fn(xb, idx):
            return objective.loss_and_grads(train_model, guide, xb, idx=idx, N=N)
    if not guide_only:                  # a test-time refit keeps the frozen model in eval mode
        model.train()
    guide.train()
    name = getattr(model, "display_name", type(model).__name__)
    for epoch in range(start_epoch, epochs):
        t0 = time.perf_counter()
        epoch_batches = batches(epoch)
        steps = len(epoch_batches)
        first = start_step if epoch == start_epoch else 0
        total = epoch_total if epoch == start_epoch else 0.0
        bar = tqdm(range(first, steps), desc=f"{desc} epoch {epoch + 1}/{epochs}", disable=not progress,
                   leave=False, dynamic_ncols=True, initial=first, total=steps)
        for step in bar:
            idx = epoch_batches[step]
            global_step = epoch * steps + step
            guide.on_step(global_step)
            optimizer.zero_grad(set_to_none=True)
            # Pyro checks distribution arguments on the first step of each epoch (shapes,
            # supports); after that the checks are off in the hot loop. The data were
            # validated once up front and non-finite values are caught just below.
            beta = kl_warmup_weight(global_step, kl_warmup * steps) if kl_warmup else 1.0
            warm = KLWarmup(beta) if beta < 1.0 else contextlib.nullcontext()
            with pyro.validation_enabled(pyro.infer.util.is_validation_enabled() and step == first), warm, \
                    _guarded(name, objective, epoch, step):
                loss = step_fn(x[idx], idx)
            check_finite(loss, params, epoch, step, global_step, objective)
            if clip_grad:
                grad_norm = torch.nn.utils.clip_grad_norm_(params, clip_grad)
            elif log is not None:
                grad_norm = torch.linalg.vector_norm(
                    torch.stack([torch.linalg.vector_norm(p.grad) for p in params if p.grad is not None]))
            optimizer.step()
            check_parameters(params, epoch, step, global_step)
            if log is not None:
                log("step", global_step, loss=loss / N, grad_norm=float(grad_norm))
            total += loss / N
            if progress and step % 10 == 0:
                bar.set_postfix(loss=f"{loss / N:.3f}")
            if checkpoint_every and on_checkpoint and (global_step + 1) % checkpoint_every == 0 and step + 1 < steps:
                on_checkpoint(epoch, step + 1, total, optimizer, scheduler, history)
        row = {"epoch": epoch + 1, "loss": total / steps, "seconds": time.perf_counter() - t0,
               "valid_elbo": None, "lr": optimizer.param_groups[0]["lr"]}
        if kl_warmup and epoch < kl_warmup:
            row["kl_weight"] = kl_warmup_weight(epoch * steps + steps - 1, kl_warmup * steps)
        row.update(guide.epoch_record())
        if valid is not None and guide.amortized:
            with _guarded(name, objective, epoch, None):
                row["valid_elbo"] = bound_per_datum(model, guide, valid)
            if not math.isfinite(row["valid_elbo"]):
                raise NonFiniteError(f"non-finite validation ELBO ({row['valid_elbo']}) after epoch {epoch + 1}; "
                                     f"{_ADVICE}", epoch + 1, None)
            if not guide_only:
                model.train()
            guide.train()
        if scheduler is not None:
            scheduler.step()
        history.append(row)
        if log is not None:
            log("epoch", epoch + 1, row=row)
        if progress:
            tqdm.write(f"{desc} epoch {epoch + 1}/{epochs}: loss/datum {row['loss']:.3f}"
                       + (f", valid ELBO {row['valid_elbo']:.3f}" if row["valid_elbo"] is not None else ""))
        if on_checkpoint is not None:
            on_checkpoint(epoch + 1, 0, 0.0, optimizer, scheduler, history)
    return history


_ADVICE = ("likely causes: too large a step (lower --lr or set --clip-grad), a high-variance score-function gradient "
           "(try --baseline neural), or extreme data values")


@contextlib.contextmanager
def _guarded(name: str, objective, epoch: int, step: Optional[int]):
    """One training step (``step``) or the validation pass after ``epoch`` (``step`` None), with Pyro's
    NaN warnings silenced and its failures in one line: a distribution refusing NaN arguments is a
    :class:`NonFiniteError`; an exception raised in the user's own model code names its file and line
    (as the trial run of :func:`zoo.from_pyro` does); anything else is a bug and keeps its traceback."""
    from zoo.usercode.errors import user_code_errors
    where = f"epoch {epoch + 1}, step {step + 1}" if step is not None else f"the validation pass after epoch {epoch + 1}"
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_NAN_WARNINGS)
        try:
            with user_code_errors(name, f"at {where}"):
                yield
        except ValueError as e:
            if "found invalid values" not in str(e):
                raise
            if str(e).startswith("Expected value argument"):     # a value, not a parameter: no NaN involved
                support = str(e).split("within the support (", 1)[-1].split(") of the distribution")[0]
                raise ZooError(f"{name} at {where} with {type(objective).__name__}: a latent's value is outside "
                               f"the support {support} of its model site's distribution, so the guide samples "
                               f"values of another form than the model declares; give the guide and the model's "
                               f"site the same support") from None
            raise NonFiniteError(f"non-finite values in a distribution's parameters at {where} with "
                                 f"{type(objective).__name__}; {_ADVICE}", epoch + 1,
                                 None if step is None else step + 1) from None


def check_parameters(params, epoch: int, step: int, global_step: int) -> None:
    """Stop when the optimizer step has made a parameter NaN or inf, before it can be checkpointed."""
    if params and not math.isfinite(torch.stack(torch._foreach_norm(params)).sum().item()):
        raise NonFiniteError(f"non-finite parameters after the optimizer step at epoch {epoch + 1}, step {step + 1} "
                             f"(global step {global_step + 1}); {_ADVICE}", epoch + 1, step + 1)


def check_finite(loss: float, params, epoch: int, step: int, global_step: int, objective) -> None:
    """Stop before a non-finite loss or gradient reaches the parameters (or a checkpoint)."""
    bad = None
    if not math.isfinite(loss):
        bad = f"loss {loss}"
    else:
        grads = [p.grad for p in params if p.grad is not None]
        # one fused norm per tensor and a single sync: any NaN/inf makes the sum non-finite
        if grads and not math.isfinite(torch.stack(torch._foreach_norm(grads)).sum().item()):
            bad = "gradient"
    if bad:
        raise NonFiniteError(f"non-finite {bad} at epoch {epoch + 1}, step {step + 1} (global step {global_step + 1}) "
                             f"with {type(objective).__name__}; {_ADVICE}", epoch + 1, step + 1)


def fit_local_guide(model, guide, objective, x: torch.Tensor, *, epochs: int, batch_size: int,
                    lr: float, seed: int = 0, progress: bool = True) -> List[Dict]:
    """Fit only ``guide``'s parameters to ``x`` with the model held fixed.

    Non-amortized (per-datum) guides have no posterior for data they were not trained
    on; this is the test-time inference that gives them one before evaluation.
    """
    # the model's parameters and the guide's global part q(theta) (fitted to the training data, like them)
    global_guide = getattr(guide, "global_guide", None)
    frozen = [p for p in model.parameters() if p.requires_grad]
    frozen += [p for p in (global_guide.parameters() if global_guide is not None else ()) if p.requires_grad]
    for p in frozen:
        p.requires_grad_(False)
    was_training = model.training
    model.train(False)          # the model is fixed here; register_module skips its frozen parameters
    try:
        return fit(model, guide, objective, x, epochs=epochs, batch_size=min(batch_size, x.shape[0]),
                   lr=lr, seed=seed + 1, progress=progress, guide_only=True,
                   desc="refit guide")
    finally:
        for p in frozen:
            p.requires_grad_(True)
        model.train(was_training)
