"""What one training run is (:class:`TrainConfig`) and where it stands (:class:`TrainState`)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

__all__ = ["TrainConfig", "TrainState"]


@dataclass(frozen=True)
class TrainConfig:
    """The settings of :func:`zoo.training.loop.fit`, each also a ``zoo.fit`` keyword.

    Arguments:
        epochs: the total number of epochs (as Lightning's ``max_epochs``; a resumed run counts those it has).
        batch_size: data per minibatch.
        lr: Adam's step size (the optimizer ``zoo.fit`` builds when it is given none).
        seed: the data order of epoch e is a permutation drawn from (seed, e).
        guide_only: train the guide's parameters alone; the model stays in eval mode (a test-time fit).
        clip_grad: clip the global gradient norm to this (:class:`~zoo.training.callbacks.GradientClipping`).
        kl_warmup: epochs of KL annealing (:class:`~zoo.training.callbacks.KLWarmupSchedule`).
        patience: stop once the validation ELBO (the rows' ``valid_elbo``) has not improved for this many epochs
            (:func:`~zoo.training.loop.early_stop`); the caller must fill ``valid_elbo`` (a
            :class:`~zoo.training.callbacks.ValidationELBO`), or the run is refused.
        progress: a progress bar per epoch and a line after it (:class:`~zoo.training.callbacks.ProgressBar`).
        parallel: how the epoch's minibatches and each step are run, as Lightning's ``strategy``: ``None``, one
            process (:class:`~zoo.training.loop.SingleProcess`), or one rank of data-parallel training
            (:class:`~zoo.training.distributed.DataParallel`).
    """

    epochs: int
    batch_size: int
    lr: float
    seed: int = 0
    guide_only: bool = False
    clip_grad: Optional[float] = None
    kl_warmup: Optional[int] = None
    patience: Optional[int] = None
    progress: bool = True
    parallel: Optional[Any] = None


@dataclass
class TrainState:
    """Where training stands: ``epoch`` epochs done and ``step`` steps into the next, whose losses per datum
    sum to ``epoch_total``, and one ``history`` row per epoch done. A checkpoint stores these four, and
    :func:`~zoo.training.loop.fit` started from them (with the optimizer's and the RNG's states) continues the
    run exactly."""

    epoch: int = 0
    step: int = 0
    epoch_total: float = 0.0
    history: List[Dict] = field(default_factory=list)
