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

import math
import time
from typing import Callable, Dict, List, Optional

import pyro
import pyro.infer.util
import torch
from tqdm.auto import tqdm

from zoo.errors import ZooError
from zoo.harness import bound_per_datum

__all__ = ["fit", "fit_local_guide", "epoch_order", "make_optimizer"]


def epoch_order(num_data: int, seed: int, epoch: int) -> torch.Tensor:
    """The data permutation of ``epoch``: a pure function of (seed, epoch)."""
    g = torch.Generator().manual_seed(int(seed) * 1_000_003 + int(epoch))
    return torch.randperm(num_data, generator=g)


def make_optimizer(model, guide, lr: float, guide_only: bool = False) -> torch.optim.Adam:
    """Adam over the model's and the guide's parameters (only the guide's if ``guide_only``);
    a guide's ``lr_multiplier`` (per-datum tables) scales its step."""
    guide_params = list(guide.parameters())
    model_params = [] if guide_only else list(model.parameters())
    groups = [{"params": model_params, "lr": lr},
              {"params": guide_params, "lr": lr * getattr(guide, "lr_multiplier", 1.0)}]
    return torch.optim.Adam([g for g in groups if g["params"]], lr=lr)


def fit(model, guide, objective, x: torch.Tensor, *, epochs: int, batch_size: int, lr: float,
        seed: int = 0, valid: Optional[torch.Tensor] = None, progress: bool = True,
        optimizer: Optional[torch.optim.Optimizer] = None, start_epoch: int = 0,
        history: Optional[List[Dict]] = None, on_epoch_end: Optional[Callable] = None,
        guide_only: bool = False, desc: str = "train") -> List[Dict]:
    """Run SVI for ``epochs`` epochs; return the per-epoch history.

    Each history row has ``epoch``, ``loss`` (the objective's negative bound per
    datum, averaged over the epoch's minibatches), ``valid_elbo`` (the ELBO per datum
    on ``valid``, for amortized guides, else ``None``) and ``seconds``.
    ``on_epoch_end(epoch, optimizer, history)`` runs after each epoch (checkpointing).
    """
    N = x.shape[0]
    if batch_size > N:
        raise ZooError(f"--batch-size {batch_size} is larger than the {N} training data; use at most {N}")
    optimizer = optimizer or make_optimizer(model, guide, lr, guide_only)
    history = history if history is not None else []
    steps = math.ceil(N / batch_size)
    # A guide may change what the objective sees of the model while training (the relaxed
    # guide relaxes the model's discrete sites) and may anneal itself per step.
    train_model = guide.training_model(model) if hasattr(guide, "training_model") else model
    on_step = getattr(guide, "on_step", None)
    model.train()
    guide.train()
    for epoch in range(start_epoch, epochs):
        t0 = time.perf_counter()
        order = epoch_order(N, seed, epoch).to(x.device)
        total = 0.0
        bar = tqdm(range(steps), desc=f"{desc} epoch {epoch + 1}/{epochs}", disable=not progress,
                   leave=False, dynamic_ncols=True)
        for step in bar:
            idx = order[step * batch_size:(step + 1) * batch_size]
            if on_step is not None:
                on_step(epoch * steps + step)
            optimizer.zero_grad(set_to_none=True)
            # Pyro checks distribution arguments on the first step of each epoch (shapes,
            # supports); after that the checks are off in the hot loop. The data were
            # validated once up front and a non-finite loss is caught just below.
            with pyro.validation_enabled(pyro.infer.util.is_validation_enabled() and step == 0):
                loss = objective.loss_and_grads(train_model, guide, x[idx], idx=idx, N=N)
            if not math.isfinite(loss):
                raise ZooError(f"the loss became {loss} at epoch {epoch + 1}, step {step + 1} with "
                               f"{type(objective).__name__}; lower --lr or check the data scale")
            optimizer.step()
            total += loss / N
            if progress and step % 10 == 0:
                bar.set_postfix(loss=f"{loss / N:.3f}")
        row = {"epoch": epoch + 1, "loss": total / steps, "seconds": time.perf_counter() - t0,
               "valid_elbo": None}
        if valid is not None and getattr(guide, "amortized", True):
            row["valid_elbo"] = bound_per_datum(model, guide, valid)
            model.train()
            guide.train()
        history.append(row)
        if progress:
            tqdm.write(f"{desc} epoch {epoch + 1}/{epochs}: loss/datum {row['loss']:.3f}"
                       + (f", valid ELBO {row['valid_elbo']:.3f}" if row["valid_elbo"] is not None else ""))
        if on_epoch_end is not None:
            on_epoch_end(epoch + 1, optimizer, history)
    return history


def fit_local_guide(model, guide, objective, x: torch.Tensor, *, epochs: int, batch_size: int,
                    lr: float, seed: int = 0, progress: bool = True) -> List[Dict]:
    """Fit only ``guide``'s parameters to ``x`` with the model held fixed.

    Non-amortized (per-datum) guides have no posterior for data they were not trained
    on; this is the test-time inference that gives them one before evaluation.
    """
    frozen = [p for p in model.parameters() if p.requires_grad]
    for p in frozen:
        p.requires_grad_(False)
    was_training = model.training
    model.train(False)          # pyro.module skips frozen parameters silently in eval mode
    try:
        return fit(model, guide, objective, x, epochs=epochs, batch_size=min(batch_size, x.shape[0]),
                   lr=lr, seed=seed + 1, progress=progress, guide_only=True,
                   desc="refit guide")
    finally:
        for p in frozen:
            p.requires_grad_(True)
        model.train(was_training)
