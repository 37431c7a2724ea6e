"""A trained run, opened once: its config and checkpoint read and checked, its model, guide and data built, and
the weights its figures score loaded into them.

Every command that reads a trained run folder opens it here, and only here: ``eval`` (importance sampling, its
``--gaps`` and ``--estimator ais|bdmc``), ``compress``, ``gradients --checkpoint`` and ``--fixed-model``.
Opening a run is three steps:

1. the folder is read as data (:func:`~zoo.experiments.run_folder.load_run`): its checkpoint must be its own, and no
   model or guide file it names is imported unless the user names it;
2. the command's own settings (more importance samples, another device, where the data are) are applied to the
   run's config, and its data, model and guide are built and checked (:func:`~zoo.experiments.prepare.prepare`);
3. **one rule picks the weights**: those of the last epoch (``checkpoint.pt``), or, for a run trained with
   ``--keep-best``, those of the epoch with the best validation ELBO (``best.pt``). Whatever a folder holds beside
   its results (IS, the gaps, AIS, BDMC, a code file) therefore describes one model.

Example::

    run = open_trained("runs/vae", changes={"eval_samples": 5000})
    x, labels = run.evaluation_data()
    run.model, run.guide, run.weights_file          # the model and guide hold the chosen weights
"""
from __future__ import annotations

import dataclasses
import os
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Tuple

import torch

from zoo.core.catalogue import trained_folder
from zoo.core.errors import ZooError
from zoo.data import Dataset
from zoo.experiments.config import RunConfig
from zoo.experiments.prepare import Prepared, prepare
from zoo.experiments.run_folder import chosen_weights, load_run, load_weights

__all__ = ["TrainedRun", "Invocation", "open_trained", "load_trained", "fixed_subset_rows", "fixed_subset", "evaluation_split"]



@dataclass
class TrainedRun(Prepared):
    """A trained run folder opened by :func:`open_trained`: the prepared run (``config``, ``data``, ``model``,
    ``guide``, ``objective``, ``device``) with the chosen weights loaded, and where they came from.

    ``history`` is the run's training record (one entry per epoch trained); ``weights_file`` the file whose tensors
    the model and guide hold (``checkpoint.pt``, or ``best.pt`` under ``--keep-best``, whose epoch is ``best_epoch``).
    """

    folder: Path
    history: List[Dict]
    weights_file: Path
    best_epoch: Optional[int]

    def evaluation_data(self) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """(the evaluation data, their labels or None): the config's split, or its fixed subset of ``eval_limit``."""
        return evaluation_split(self.data, self.config)

    def weights_sha256(self) -> str:
        """The SHA-256 of the weights file's bytes: what a file made with these weights records (``compress``)."""
        return hashlib.sha256(self.weights_file.read_bytes()).hexdigest()


def open_trained(folder, changes: Optional[Mapping] = None, *, model_file: Optional[str] = None,
                 guide_file: Optional[str] = None, how: str = "--model FILE.py:NAME",
                 guide_how: str = "--guide FILE.py:NAME", data: Optional[Dataset] = None) -> TrainedRun:
    """Open the trained run in ``folder`` (module docstring): ``changes`` are the command's settings that differ
    from the run's (``None`` values are left out), ``model_file``/``guide_file`` the files the user named for a run
    of a model or guide file (checked against the run's SHA-256 before anything imports them; ``how`` and
    ``guide_how`` say how to name them in the refusal), ``data`` the data set already loaded, if any."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ZooError(f"no run folder at {folder}; train one there first ('pyro-zoo train ... --out {folder}')")
    state, config = load_run(folder, model_file, how, guide_file, guide_how)
    if config.data_dir and not Path(config.data_dir).is_absolute() and not os.path.exists(config.data_dir):
        # a relative folder named the trainer's current directory (a committed model's: its machine's); where it is
        # not here, the data are where $PYRO_ZOO_DATA (or --data-dir) says, as for a run that named none
        config = dataclasses.replace(config, data_dir=None)
    config = dataclasses.replace(config, **{k: v for k, v in (changes or {}).items() if v is not None})
    run = prepare(config, data)
    weights, source, best_epoch = chosen_weights(folder, state, config)
    load_weights(run.model, run.guide, weights, source)
    return TrainedRun(**{f.name: getattr(run, f.name) for f in dataclasses.fields(Prepared)}, folder=folder,
                      history=list(state["history"]), weights_file=source, best_epoch=best_epoch)


@dataclass(frozen=True)
class Invocation:
    """What a command on a trained run folder (``eval`` with its estimators, ``--gaps``) is told beside its estimator's
    own settings: ``changes``, the run's settings it overrides (``device``, ``data_dir``, ``eval_limit``, ...; a None
    keeps the run's); ``model_file``/``guide_file``, the files a run of a user's model or guide was made from
    (checked against the run before anything imports them); whether to print ``progress``; and ``force``, whether
    a result may replace a stronger one."""

    changes: Mapping = field(default_factory=dict)
    model_file: Optional[str] = None
    guide_file: Optional[str] = None
    progress: bool = True
    force: bool = False

    #: the run settings an evaluation may change; the rest (its model, its seed, ...) are the run's own
    CHANGEABLE = ("eval_samples", "iwae_k", "eval_limit", "eval_proposal", "device", "data_dir", "refit_epochs",
                  "refit_tol")

    def open(self, folder) -> TrainedRun:
        """:func:`open_trained` of ``folder`` as this command changes it."""
        other = sorted(k for k, v in self.changes.items() if k not in self.CHANGEABLE and v is not None)
        if other:
            raise ZooError(f"an evaluation of {folder} cannot change the run's {', '.join(other)}; it may change "
                           f"{', '.join(self.CHANGEABLE)}")
        return open_trained(folder, self.changes, model_file=self.model_file, guide_file=self.guide_file)


def load_trained(name: str, data_dir: Optional[str] = None, device: Optional[str] = None,
                 data: Optional[Dataset] = None) -> TrainedRun:
    """The trained model ``name`` (:mod:`zoo.core.catalogue`: the weights committed under ``benchmarks/checkpoints``,
    as ``pyro-zoo list`` names them), opened: its model and guide hold the committed weights. ``data_dir``: where its
    data set is (else the run's own setting or ``$PYRO_ZOO_DATA``); ``device``: where to put it (default: the
    run's, ``auto``); ``data``: the data set already loaded.

    Example::

        run = load_trained("vae-mnist-elbo", data_dir="../shared/data")
        x, _ = run.evaluation_data()
        zoo.evaluate(run.model, run.guide, x[:100], num_samples=100)
    """
    return open_trained(trained_folder(name), {"data_dir": data_dir, "device": device}, data=data)


def fixed_subset_rows(n: int, limit: Optional[int]) -> Optional[torch.Tensor]:
    """The rows of a fixed random subset of ``limit`` out of ``n`` data, in their order (None: all of them).

    The subset is drawn with a fixed generator (seed 0), so every run and every model is
    scored on the same data. Not the first N: dataset files can be ordered (the first
    images of the binarized MNIST test file are darker than the rest, and a VAE's ELBO on
    them is several nats lower than on the whole split).
    """
    if limit is None or limit >= n:
        return None
    return torch.randperm(n, generator=torch.Generator().manual_seed(0))[:limit].sort().values


def fixed_subset(x: torch.Tensor, limit: Optional[int]) -> torch.Tensor:
    """All of ``x``, or its fixed random subset of ``limit`` rows (:func:`fixed_subset_rows`)."""
    rows = fixed_subset_rows(x.shape[0], limit)
    return x if rows is None else x[rows]


def evaluation_split(data: Dataset, config: RunConfig) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """(the evaluation data, their labels or None): ``config``'s split, or with ``eval_limit`` its fixed random
    subset (:func:`fixed_subset_rows`)."""
    x = data.split(config.eval_split)
    labels = data.labels.get(config.eval_split)
    rows = fixed_subset_rows(x.shape[0], config.eval_limit)
    if rows is None:
        return x, labels
    return x[rows], (labels[rows] if labels is not None else None)
