"""The :class:`Dataset` every loader returns, and the split helpers they share."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Optional, Tuple

import numpy as np
import torch

from zoo.core.errors import ZooError
from zoo.core.views import ViewSite
from zoo.data.kinds import ColumnKinds, column_kinds, merge_kinds

__all__ = ["Dataset", "SPLITS", "as_tensor", "split_indices", "only_zeros_and_ones"]

SPLITS = ("train", "valid", "test")


@dataclass
class Dataset:
    """Train/valid/test splits as float32 ``[N, D]`` tensors.

    Attributes:
        binary: all values are 0/1, so a Bernoulli likelihood applies.
        image_shape: (H, W) for image data, used by the sample and reconstruction plots.
        labels: optional class labels per split (for the latent scatter plot).
        views: the parts of a row with their own likelihood (:class:`~zoo.core.views.ViewSite`),
            for multimodal models; empty for ordinary data.
        truth: known generating parameters, for synthetic data.
        levels: k when the values are intensities 0..k-1 (17 for the 8x8 digits, 256 for 8-bit
            images), what a k-level likelihood needs; ``None`` when no number of levels is declared.
        covariates: the names of the per-datum inputs that are not data (a regression's features, a
            CVAE's condition), given with ``--covariates``.
        covariate_dim: how many of the last columns of a row hold those covariates (0: none).
        source: for data read from a file: its ``path``, ``sha256`` and ``shapes`` per split, which a
            run records so that ``eval`` and ``--resume`` can refuse a changed file.
    """

    name: str
    train: torch.Tensor
    valid: torch.Tensor
    test: torch.Tensor
    binary: bool
    image_shape: Optional[Tuple[int, int]] = None
    labels: Dict[str, torch.Tensor] = field(default_factory=dict)
    truth: Dict[str, torch.Tensor] = field(default_factory=dict)
    views: Tuple[ViewSite, ...] = ()
    levels: Optional[int] = None
    covariates: Tuple[str, ...] = ()
    covariate_dim: int = 0
    source: Optional[Dict[str, Any]] = None

    @property
    def x_dim(self) -> int:
        return self.train.shape[1]

    def kinds(self) -> ColumnKinds:
        """What each data column holds (:func:`~zoo.data.kinds.column_kinds` of each split, merged; covariates
        aside); computed once per set of split tensors, as the rules ask it for every run ``list`` checks."""
        key = (id(self.train), id(self.valid), id(self.test), self.covariate_dim)
        cached = self.__dict__.get("_kinds")
        if cached is None or cached[0] != key:
            d = self.x_dim - self.covariate_dim
            cached = key, merge_kinds([column_kinds(x[:, :d].float()) for x in (self.train, self.valid, self.test)])
            self.__dict__["_kinds"] = cached
        return cached[1]

    def split(self, name: str) -> torch.Tensor:
        if name not in SPLITS:
            raise ZooError(f"unknown split {name!r}; use one of {', '.join(SPLITS)}")
        return getattr(self, name)


def split_indices(n: int, n_valid: int, n_test: int, seed: int = 0):
    """A random permutation of ``range(n)`` cut into (train, valid, test) row numbers."""
    perm = np.random.RandomState(seed).permutation(n)
    return perm[n_valid + n_test:], perm[:n_valid], perm[n_valid:n_valid + n_test]


def as_tensor(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))


def only_zeros_and_ones(a: np.ndarray) -> bool:
    """Whether every value of ``a`` is 0 or 1 (NaN is neither): two comparisons in one pass each, where
    ``np.isin`` sorts; on MNIST's training split it was the slowest step of loading the file."""
    return bool(((a == 0) | (a == 1)).all())
