"""The one small interface every estimator of the harness has, and what it is handed.

:func:`zoo.evaluation.harness.evaluate` draws K importance samples per datum **once** per minibatch
(:meth:`zoo.evaluation.defensive.DefensiveProposal.draw`) and hands the same :class:`Batch` to every
estimator of :data:`zoo.evaluation.estimators.ESTIMATORS` in turn. An estimator keeps what it needs of each
batch (:meth:`Estimator.update`) and, once all data are seen, turns it into its entries of results.json and
its columns of per_datum.npz (:meth:`Estimator.finish`). It sees the model and guide only through the
contract and the draws, never by name, and it may read the figures of the estimators listed before it (the
ELBO gap reads the ELBO and the exact log p(x); bits per dimension read both code lengths).

Sharing the draws is what makes the figures comparable: the ELBO, the IWAE bound, the IS log p(x) and its
k-hats are of the same samples. An estimator that draws its own (the views' conditional likelihoods) does so
in ``finish``; those with their own command (AIS, BDMC, the gaps) are listed in
:data:`zoo.evaluation.estimators.LOG_P_ESTIMATORS`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Dict, List, Optional, Tuple

import torch

from zoo.evaluation.defensive import DefensiveProposal, Draws

__all__ = ["Batch", "Context", "Estimator"]


@dataclass
class Context:
    """What every estimator of one evaluation shares: the model and guide, the data, the settings."""
    model: Any
    guide: Any
    x: torch.Tensor
    num_samples: int
    iwae_k: int
    proposal: DefensiveProposal
    batch_size: int = 100
    max_elements: int = 1 << 24
    psis: bool = True
    #: log p(x_b) in closed form (or by enumeration given theta_hat) for a minibatch, or ``None``
    log_marginal: Optional[Callable[[torch.Tensor], torch.Tensor]] = None

    @property
    def n(self) -> int:
        return self.x.shape[0]

    @property
    def num_q(self) -> int:
        """How many of each datum's K draws come from q itself (the rest from the defensive part)."""
        return self.proposal.allocation(self.num_samples)[0]


@dataclass
class Batch:
    """One minibatch of data and the K draws made for it: ``draws.parts`` are the particle chunks
    (:class:`zoo.core.weights.LogWeights`), ``draws.log_w`` ``[K, b]`` the log weights under the proposal, and
    ``draws.of_q`` picks the draws of q alone."""
    x: torch.Tensor
    idx: torch.Tensor
    draws: Draws

    @property
    def parts(self):
        return self.draws.parts

    def cat(self, field_name: str) -> torch.Tensor:
        """One field of the particle chunks, joined along the particle dimension, of q's draws only."""
        return self.draws.of_q(torch.cat([getattr(p, field_name) for p in self.parts]))


class Estimator:
    """One figure of an evaluation, or a few that share their arithmetic.

    Subclasses set ``name`` and ``keys`` (each results.json key they write, with the sentence the README's
    results.json table prints) and override :meth:`update` and :meth:`finish`; :meth:`applies` says whether the
    figure exists for this model and guide (where not, its keys are written as ``None``)."""
    name: ClassVar[str] = "estimator"
    keys: ClassVar[Dict[str, str]] = {}
    #: evaluated after the guide's global part leaves its point estimate (it integrates theta itself)
    integrates_globals: ClassVar[bool] = False

    def __init__(self, ctx: Context):
        self.ctx = ctx
        self.columns: Dict[str, List[torch.Tensor]] = {}

    @classmethod
    def applies(cls, ctx: Context) -> bool:
        return True

    def keep(self, name: str, value: torch.Tensor) -> None:
        """Append one minibatch's per-datum values to the column ``name``."""
        self.columns.setdefault(name, []).append(value)

    def column(self, name: str) -> torch.Tensor:
        """The column ``name`` over all data so far, float64 on the CPU."""
        return torch.cat(self.columns[name]).double().cpu()

    def update(self, batch: Batch) -> None:
        """Keep what this estimator needs of one minibatch's draws."""

    def finish(self, result: Dict, per_datum: Dict) -> Tuple[Dict, Dict]:
        """This estimator's results.json entries and per_datum.npz columns. ``result`` and ``per_datum`` hold
        those of the estimators before it."""
        raise NotImplementedError
