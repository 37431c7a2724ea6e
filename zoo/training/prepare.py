"""``zoo.fit``'s keyword form made ready for the loop: what happens before the first step.

``zoo.fit(model, guide, objective, x, epochs=10, batch_size=100, lr=1e-3)`` takes a Pyro guide function as
well as a zoo guide, and builds its own optimizer; :func:`keyword_fit` does that once, before
:func:`zoo.training.loop.fit` runs (``pyro-zoo train`` does the same in :func:`zoo.experiments.run.prepare`).
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence

import torch

from guides.user import as_zoo_guide
from zoo.objectives.base import for_model
from zoo.rules import check_batch_size, check_fit
from zoo.training.callbacks import Callback, Checkpoint, Log
from zoo.training.config import TrainConfig
from zoo.training.optimizer import make_optimizer

__all__ = ["keyword_fit"]


def keyword_fit(model, guide, objective, x: torch.Tensor, optimizer=None, callbacks: Sequence[Callback] = (),
                **options) -> dict:
    """The arguments of :func:`zoo.training.loop.fit` for its keyword form: ``options`` are the
    :class:`~zoo.training.config.TrainConfig`'s fields (``epochs``, ``batch_size``, ``lr``, ...) and three
    callbacks given as functions, ``on_checkpoint``, ``checkpoint_every`` and ``log`` (below).

    The guide as the loop takes it (a Pyro guide function wrapped once per model, then reused), the data
    checked against the model, Adam over the model's and guide's parameters (the guide's alone with
    ``guide_only``) unless ``optimizer`` is given, and the objective as it must run on the model (Pyro's
    vectorized particles would broadcast global latents). ``on_checkpoint(epoch, step, epoch_total,
    optimizer, scheduler, history)`` is called after every epoch (``step`` 0) and every ``checkpoint_every``
    steps; ``log`` receives the monitoring values (:class:`~zoo.training.callbacks.Log`).
    """
    on_checkpoint: Optional[Callable] = options.pop("on_checkpoint", None)
    checkpoint_every: Optional[int] = options.pop("checkpoint_every", None)
    log: Optional[Callable] = options.pop("log", None)
    config = TrainConfig(**options)
    model.validate_data(x, what="training data")
    guide = as_zoo_guide(guide, model, num_data=x.shape[0])
    check_batch_size(config.batch_size, x.shape[0])
    check_fit(model, guide, objective)
    optimizer = optimizer or make_optimizer(model, guide, config.lr, config.guide_only)
    extra = [Log(log)] if log is not None else []
    if on_checkpoint is not None:
        extra.append(Checkpoint(lambda loop: on_checkpoint(loop.state.epoch, loop.state.step, loop.state.epoch_total,
                                                           loop.optimizer, None, loop.state.history),
                                every=checkpoint_every))
    return {"guide": guide, "objective": for_model(objective, model), "x": x, "config": config,
            "optimizer": optimizer, "callbacks": [*extra, *callbacks]}
