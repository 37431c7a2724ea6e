"""Optional TensorBoard logging of a training run (``--tensorboard``).

Logged under ``OUT/tensorboard``: the training loss per step and its global gradient
norm, per epoch the training bound and the validation ELBO, and a grid of samples from
the model for image data. Needs the ``tensorboard`` package (``pip install tensorboard``,
or the project's ``dev`` extra).
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Tuple


from zoo.core.errors import ZooError

__all__ = ["TensorBoardLogger"]


class TensorBoardLogger:
    """A ``log(kind, step, **values)`` callable for :class:`zoo.training.callbacks.Log`, backed by SummaryWriter."""

    def __init__(self, folder: Path, model=None, image_shape: Optional[Tuple[int, int]] = None):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise ZooError("--tensorboard needs the tensorboard package: pip install tensorboard") from None
        self.writer = SummaryWriter(log_dir=str(folder))
        self.model, self.image_shape = model, image_shape

    def __call__(self, kind: str, step: int, **values) -> None:
        if kind == "step":
            self.writer.add_scalar("train/loss_per_datum", values["loss"], step)
            self.writer.add_scalar("train/grad_norm", values["grad_norm"], step)
            return
        row = values["row"]
        self.writer.add_scalar("epoch/training_bound", -row["loss"], step)
        if row.get("valid_elbo") is not None:
            self.writer.add_scalar("epoch/valid_elbo", row["valid_elbo"], step)
        if self.model is not None and self.image_shape is not None and not self.model.cannot_generate:
            from torchvision.utils import make_grid
            images = self.model.sample(64).detach().float().cpu().clamp(0, 1).reshape(-1, 1, *self.image_shape)
            self.writer.add_image("samples", make_grid(images, nrow=8, padding=1), step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
