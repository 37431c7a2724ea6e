"""Views: a datum made of several observed parts, each with its own likelihood (multimodal models).

A multimodal datum (an image and its label, the top and bottom halves of an image) is still
one row of the data tensor ``x`` ``[N, D]``: its views are consecutive column blocks. A model
declares them with ``model.views``, a tuple of :class:`ViewSite` (name, columns, likelihood);
guides (the product of experts) and the evaluation harness read that declaration and nothing
else, so they never ask which model they hold.

A model with views observes ``"x"`` with a :class:`ViewsLikelihood`: the product of its views'
likelihoods, ``p(x | z) = prod_v p(x_v | z)``. Restricted to a subset S of the views
(``model.model(x, idx, N, views=S)``) its ``log_prob`` sums the views in S only, ``log p(x_S | z)``;
:meth:`ViewsLikelihood.log_prob_views` gives each view's term, which is how the harness scores one
view given another from the same samples.

Likelihoods of a view:

- ``bernoulli``: binary columns, ``prod_i Bernoulli(x_i; sigmoid(l_i))``;
- ``categorical``: one-hot columns, ``OneHotCategorical(x; softmax(l))`` (a label).

Views are given as strings ``NAME:SIZE:LIKELIHOOD`` in column order (:func:`parse_views`), which
is also how a run's config and the CLI (``--views``) record them.

Example::

    >>> views = parse_views(["image:64:bernoulli", "label:10:categorical"])
    >>> [(v.name, v.start, v.stop) for v in views]
    [('image', 0, 64), ('label', 64, 74)]
    >>> import torch
    >>> p = ViewsLikelihood(views, [torch.zeros(64), torch.zeros(10)])
    >>> p.log_prob_views(torch.cat([torch.ones(64), torch.eye(10)[3]])).shape
    torch.Size([2])
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import pyro.distributions as dist
import torch
from pyro.distributions import TorchDistribution
from torch.distributions import constraints

from zoo.core.errors import ZooError

__all__ = ["ViewSite", "VIEW_LIKELIHOODS", "parse_views", "ViewsLikelihood", "check_views", "check_view_data"]

#: The likelihoods a view can have.
VIEW_LIKELIHOODS = ("bernoulli", "categorical")


@dataclass(frozen=True)
class ViewSite:
    """One view of a multimodal datum: the columns ``x[:, start:stop]`` and their likelihood.

    Arguments:
        name: the view's name (``"image"``, ``"label"``, ``"top"``).
        start, stop: its columns in the data tensor.
        likelihood: ``"bernoulli"`` (binary columns) or ``"categorical"`` (one-hot columns).
    """

    name: str
    start: int
    stop: int
    likelihood: str = "bernoulli"

    def __post_init__(self):
        if self.likelihood not in VIEW_LIKELIHOODS:
            raise ZooError(f"view {self.name!r}: likelihood must be one of {', '.join(VIEW_LIKELIHOODS)}, "
                           f"got {self.likelihood!r}")
        if not 0 <= self.start < self.stop:
            raise ZooError(f"view {self.name!r} must have at least one column, got columns {self.start}:{self.stop}")

    @property
    def size(self) -> int:
        return self.stop - self.start

    @property
    def spec(self) -> str:
        """``NAME:SIZE:LIKELIHOOD``, as :func:`parse_views` reads it."""
        return f"{self.name}:{self.size}:{self.likelihood}"

    def of(self, x: torch.Tensor) -> torch.Tensor:
        """This view's columns of ``x`` ``[..., D]``."""
        return x[..., self.start:self.stop]


def parse_views(specs: Sequence[str]) -> Tuple[ViewSite, ...]:
    """Views from strings ``NAME:SIZE:LIKELIHOOD``, laid out left to right over the columns."""
    views, start = [], 0
    for spec in specs:
        parts = str(spec).split(":")
        if len(parts) != 3 or not parts[1].isdigit():
            raise ZooError(f"a view is NAME:SIZE:LIKELIHOOD, e.g. image:64:bernoulli, got {spec!r}")
        name, size, likelihood = parts[0], int(parts[1]), parts[2]
        views.append(ViewSite(name, start, start + size, likelihood))
        start += size
    return check_views(views)


def check_views(views: Sequence[ViewSite], x_dim: Optional[int] = None, owner: str = "the model"
                ) -> Tuple[ViewSite, ...]:
    """Raise :class:`ZooError` unless ``views`` are two or more named, non-overlapping column blocks
    covering ``x_dim`` columns (when given); return them as a tuple."""
    views = tuple(views)
    if len(views) < 2:
        raise ZooError(f"{owner} needs two or more views of each datum, got {len(views)}; use a dataset with "
                       f"views (digits_labels, mnist_halves) or give views NAME:SIZE:LIKELIHOOD for each")
    names = [v.name for v in views]
    if len(set(names)) != len(names) or any(not n for n in names):
        raise ZooError(f"the views need distinct, non-empty names, got {names}")
    ends = sorted((v.start, v.stop) for v in views)
    if any(a[1] > b[0] for a, b in zip(ends, ends[1:])):
        raise ZooError(f"the views {names} overlap; give each its own columns")
    if x_dim is not None and sum(v.size for v in views) != x_dim:
        raise ZooError(f"the views {[v.spec for v in views]} cover {sum(v.size for v in views)} columns but the "
                       f"data have {x_dim}; make the sizes add up to {x_dim}")
    return views


def check_view_data(x: torch.Tensor, views: Sequence[ViewSite], what: str = "data",
                    model_name: str = "the model") -> None:
    """Raise :class:`ZooError` unless each view's columns of ``x`` fit its likelihood (0/1; one-hot)."""
    for v in views:
        block = v.of(x)
        if not ((block == 0) | (block == 1)).all():
            raise ZooError(f"{what}: view {v.name!r} has values other than 0 and 1, but {model_name} scores it "
                           f"with a {v.likelihood} likelihood; binarize (or one-hot encode) it")
        if v.likelihood == "categorical" and not (block.sum(-1) == 1).all():
            raise ZooError(f"{what}: view {v.name!r} is categorical, so each row needs exactly one 1 among its "
                           f"{v.size} columns (one-hot); encode the labels one-hot")


def _part(view: ViewSite, logits: torch.Tensor) -> TorchDistribution:
    if view.likelihood == "bernoulli":
        return dist.Bernoulli(logits=logits).to_event(1)
    return dist.OneHotCategorical(logits=logits)


class ViewsLikelihood(TorchDistribution):
    """p(x | z) = prod_{v in S} p(x_v | z) over the columns of each view; event shape ``[D]``.

    Arguments:
        views: the model's views (all of them: they fix the layout of ``x``).
        logits: one tensor ``[..., view.size]`` per view, in the order of ``views``; ``None`` for a
            view that is not observed saves its decoder (the distribution then only scores).
        observed: the names of the views whose terms ``log_prob`` sums (default: all).

    ``log_prob_views(x)`` gives every view's term ``[..., V]`` whatever ``observed`` is.
    """

    arg_constraints = {}
    support = constraints.independent(constraints.boolean, 1)

    def __init__(self, views: Sequence[ViewSite], logits: Sequence[Optional[torch.Tensor]],
                 observed: Optional[Sequence[str]] = None, validate_args=None):
        self.views = tuple(views)
        names = [v.name for v in self.views]
        observed = names if observed is None else list(observed)
        unknown = [n for n in observed if n not in names]
        if unknown:
            raise ZooError(f"unknown views {unknown}; the model's views are {names}")
        if not observed:
            raise ZooError("observe at least one view")
        self.observed = tuple(observed)
        self._mask = [v.name in self.observed for v in self.views]
        if any(l is None for l, keep in zip(logits, self._mask) if keep):
            raise ZooError("every observed view needs its logits")
        self.parts = tuple(None if l is None else _part(v, l) for v, l in zip(self.views, logits))
        batch = torch.broadcast_shapes(*[p.batch_shape for p in self.parts if p is not None])
        super().__init__(batch, torch.Size([self.views[-1].stop]), validate_args=False)

    def _complete(self) -> None:
        if any(p is None for p in self.parts):
            raise ZooError("this likelihood was built for the views "
                           f"{list(self.observed)} only; build it with every view's logits to generate x")

    def expand(self, batch_shape, _instance=None):
        batch_shape = torch.Size(batch_shape)
        logits = [None if p is None else (p.base_dist.logits if v.likelihood == "bernoulli" else p.logits)
                  for v, p in zip(self.views, self.parts)]
        return ViewsLikelihood(self.views, [None if l is None else l.expand(batch_shape + l.shape[-1:])
                                            for l in logits], self.observed)

    def log_prob_views(self, value: torch.Tensor) -> torch.Tensor:
        """Each view's log p(x_v | z), stacked on the last dimension: ``[..., V]``."""
        self._complete()
        return torch.stack([p.log_prob(v.of(value)) for v, p in zip(self.views, self.parts)], dim=-1)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        terms = [p.log_prob(v.of(value)) for v, p, keep in zip(self.views, self.parts, self._mask) if keep]
        return sum(terms[1:], terms[0])

    @property
    def mean(self) -> torch.Tensor:
        self._complete()
        return torch.cat([p.mean for p in self.parts], dim=-1)

    def sample(self, sample_shape=torch.Size()) -> torch.Tensor:
        self._complete()
        return torch.cat([p.sample(sample_shape) for p in self.parts], dim=-1)
