"""What kind of values a data set holds, column by column: binary, counts or reals.

A likelihood assumes a kind of value: a Bernoulli 0/1, a Poisson (or any count likelihood)
non-negative integers, a Categorical over k levels (or a discretized logistic) the integers
0..k-1, a Gaussian any real. The rules (:func:`zoo.rules.check_run`) compare the likelihood of
each observed column with what the data hold before anything trains, and name a value that
breaks the assumption, so the error says which column to fix.

The kinds are nested (binary values are counts, counts are reals), so each column carries its
narrowest kind and a *witness*: the first value that rules out the narrower one (for a column of
counts, a value other than 0 and 1; for a column of reals, one that is not a non-negative
integer).

Example::

    >>> import torch
    >>> kinds = column_kinds(torch.tensor([[0., 3., 0.5], [1., 0., 2.]]))
    >>> kinds.kinds, kinds.witnesses[1:], kinds.maximum
    (('binary', 'counts', 'reals'), (3.0, 0.5), 3.0)
    >>> data_kind(kinds.kinds, levels=None)
    'reals'
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import torch

__all__ = ["KINDS", "ColumnKinds", "column_kinds", "merge_kinds", "data_kind"]

#: The kinds of a data set, narrowest first; ``levels``: intensities 0..k-1 whose k is declared.
KINDS = ("binary", "levels", "counts", "reals")


@dataclass(frozen=True)
class ColumnKinds:
    """Per column of a data set: its narrowest kind and the value that rules out the narrower one.

    Arguments:
        kinds: ``"binary"`` (0/1), ``"counts"`` (non-negative integers) or ``"reals"``, per column.
        witnesses: per column, the first value (rows in split order) that is not 0/1 for a column of
            counts, not a non-negative integer for a column of reals; NaN for a binary column.
        maximum: the largest value in the data (what a k-level likelihood's k must exceed).
    """

    kinds: Tuple[str, ...]
    witnesses: Tuple[float, ...]
    maximum: float


def column_kinds(x: torch.Tensor) -> ColumnKinds:
    """The :class:`ColumnKinds` of ``x`` ``[N, D]`` (finite values; the loaders refuse NaN and inf)."""
    if x.numel() == 0:
        return ColumnKinds(("binary",) * x.shape[-1], (math.nan,) * x.shape[-1], -math.inf)
    not_binary = (x != 0) & (x != 1)
    not_count = (x < 0) | (x != torch.round(x))
    kinds, witnesses = [], []
    columns = torch.arange(x.shape[1])
    first_not_binary = x[not_binary.to(torch.uint8).argmax(0), columns]
    first_not_count = x[not_count.to(torch.uint8).argmax(0), columns]
    for binary_ok, count_ok, b, c in zip(~not_binary.any(0), ~not_count.any(0), first_not_binary, first_not_count):
        if binary_ok:
            kinds.append("binary")
            witnesses.append(math.nan)
        elif count_ok:
            kinds.append("counts")
            witnesses.append(float(b))
        else:
            kinds.append("reals")
            witnesses.append(float(c))
    return ColumnKinds(tuple(kinds), tuple(witnesses), float(x.max()))


def merge_kinds(parts: Sequence[ColumnKinds]) -> ColumnKinds:
    """The :class:`ColumnKinds` of rows stacked from ``parts`` (the splits), without stacking them: each column's
    widest kind, with the witness of the first part that has it."""
    order = ("binary", "counts", "reals")
    kinds, witnesses = [], []
    for column in zip(*[zip(p.kinds, p.witnesses) for p in parts]):
        widest = max((k for k, _ in column), key=order.index)
        kinds.append(widest)
        witnesses.append(next(w for k, w in column if k == widest))
    return ColumnKinds(tuple(kinds), tuple(witnesses), max(p.maximum for p in parts))


def data_kind(kinds: Sequence[str], levels: Optional[int]) -> str:
    """The kind of a whole data set: its widest column's, or ``"levels"`` when its integers are intensities
    of a declared number of ``levels`` (an 8-bit image's 256, the 8x8 digits' 17)."""
    widest = max(kinds, key=lambda k: ("binary", "counts", "reals").index(k)) if kinds else "binary"
    if levels is not None and widest != "reals" and levels > 2:
        return "levels"
    return widest
