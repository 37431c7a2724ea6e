"""A run's live objects: the data, model, guide and objective a :class:`~zoo.experiments.config.RunConfig` names,
built and checked before anything is written.

Training (:mod:`zoo.experiments.run`) prepares a new run here, and every command that reads a trained one
(:mod:`zoo.experiments.trained`) prepares its run here before the weights are loaded into it.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Optional

import pyro
import torch

from zoo.core.memory import refuse_oversized_run
from zoo.data import Dataset
from zoo.experiments.config import RunConfig, resolve_device, set_determinism, with_data_source
from zoo.experiments.fixed import hold_model_fixed
from zoo.objectives import build_objective
from zoo.rules import DataFacts, build_run_model, check_run, check_step
from zoo.training import distributed as ddp

__all__ = ["Prepared", "prepare"]


@dataclass
class Prepared:
    """A run's live objects, built and checked from a :class:`RunConfig`."""

    config: RunConfig
    data: Dataset
    model: object
    guide: object
    objective: object
    device: torch.device


def prepare(config: RunConfig, data: Optional[Dataset] = None, device: Optional[torch.device] = None,
            distributed: bool = False, freeze_fixed: bool = True) -> Prepared:
    """Build and check data, model, guide and objective; raises ZooError before any output exists.

    ``config`` was checked when it was made (names, options, training settings); what is checked
    here needs the data or the built model, and is decided by :mod:`zoo.rules` (what ``pyro-zoo list``
    asks too): the run's rules (:func:`~zoo.rules.check_run`), then what a trial step shows
    (:func:`~zoo.rules.check_step`). ``distributed``: the run trains data-parallel; its device is
    then the rank's (:func:`zoo.training.distributed.init`, joined once the rules pass). A run with ``fixed_model``
    gets that run's model, held fixed (:mod:`zoo.experiments.fixed`; ``freeze_fixed=False``: loaded, its gradients
    left on).
    """
    set_determinism(config.deterministic)
    data = data if data is not None else config.load_data()
    config = with_data_source(config, data)
    facts = DataFacts.of(data)
    pyro.set_rng_seed(config.seed)
    # sizes first: an option such as DRAW's --steps or TVO's --partitions is allocated as the model or objective is
    # built or first stepped; the device is checked again below once a data-parallel rank has its own
    refuse_oversized_run(config, data.x_dim, data.train.shape[0],
                         device if device is not None or distributed else resolve_device(config.device))
    model = build_run_model(config, data, facts)
    check_run(config, model, facts, distributed)
    model.validate_data(data.train, what=f"dataset {data.name!r}")
    if distributed:
        device = ddp.init(config.device)[2]
    device = device if device is not None else resolve_device(config.device)
    guide = config.component("guide").build(model, data.train.shape[0], **dataclasses.asdict(config.resolved("guide")))
    # a fixed model is loaded and frozen (only the guide trains); one that computes with its guide (a VampPrior)
    # keeps a frozen copy of the guide it was trained with, and the guide being trained is never bound to it
    held = hold_model_fixed(model, guide, config, data.train.shape[0], freeze=freeze_fixed) \
        if config.fixed_model is not None else model.bind_guide(guide)
    objective = build_objective(config.objective, jit=config.jit, compile=config.compile,
                                **dataclasses.asdict(config.resolved("objective")))
    check_step(config, model, guide, objective, data.train, device)
    refuse_oversized_run(config, data.x_dim, data.train.shape[0], device)
    if held is not None:                         # borrowed, so it does not move with the model
        held.to(device)
    return Prepared(config, data, model.to(device), guide.to(device), objective, device)
