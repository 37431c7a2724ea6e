"""A trained model held fixed while a guide trains against it (``--fixed-model RUN|NAME``).

The research the zoo serves holds a trained model fixed and compares guides and estimators on it (Cremer, Li &
Duvenaud 2018; Rainforth et al. 2018): a difference in ELBO between two guides is then the guides' alone, not also
that of the decoders each guide led training to. A run with ``fixed_model`` set (a run folder's path; a trained
model's name is resolved to its folder when the config is made) is prepared here:

- the fixed run's model must be this run's: the same model, every model option, the same data set
  (:func:`fixed_model_state`);
- its model tensors, those its figures score (the best epoch's under ``--keep-best``), are loaded, and every model
  parameter's gradient is switched off (:func:`hold_model_fixed`); training then optimizes the guide's parameters
  alone, so the model is bit-identical after any number of steps;
- a model that computes with its guide (a VampPrior, whose prior is the mixture of q(z | u_k) over its pseudo-inputs)
  is fixed with the guide it was trained with: a frozen copy of the fixed run's guide is bound as the prior's, and the
  guide being trained is a new one of its own, so its steps never move the prior;
- a guide that computes with the model's parameters beside its own (the ladder guide's top-down pass is the model's
  p(z_l | z_{l+1})) is refused: part of it would be frozen, and it would be compared with guides that are not. The
  exact posterior (``exact``) has no parameters of its own: with the model fixed there is nothing to train, and it is
  refused too (``eval`` scores it).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Dict, Optional, Tuple

from torch import nn

from zoo.core.errors import ZooError
from zoo.experiments.config import RunConfig, fixed_weights_sha256
from zoo.experiments.run_folder import chosen_weights, load_run, load_weights
from zoo.usercode.specs import is_file_spec

__all__ = ["fixed_model_state", "hold_model_fixed"]


def fixed_model_state(config: RunConfig) -> Tuple[Dict, RunConfig, Path]:
    """(the checkpoint whose weights ``config.fixed_model``'s run scores, that run's config, the file): refused in one
    line unless that run's model is this config's: the same model, every model option, the same data set."""
    folder = Path(config.fixed_model)
    if not folder.is_dir():
        raise ZooError(f"--fixed-model {folder}: no trained run there; give a run folder or a trained model's name "
                       f"('pyro-zoo list' names them)")
    model_file = config.model if is_file_spec(config.model) else None
    state, stored = load_run(folder, model_file, how="--model FILE.py:NAME --fixed-model RUN")
    for key in ("model", "dataset"):
        if getattr(stored, key) != getattr(config, key):
            raise ZooError(f"--fixed-model {folder} is a run of {key} {getattr(stored, key)!r}, not "
                           f"{getattr(config, key)!r}; leave out the {key} (it is the fixed run's) or name another run")
    theirs, ours = stored.resolved("model").to_dict(), config.resolved("model").to_dict()
    for name in ours:
        if theirs.get(name) != ours[name]:
            raise ZooError(f"--fixed-model {folder} has model option {name} = {theirs.get(name)!r}, not {ours[name]!r}; "
                           f"leave out the model's options (they are the fixed run's) or name another run")
    for key in ("split", "split_seed", "levels", "covariates"):
        if getattr(stored, key) != getattr(config, key):
            raise ZooError(f"--fixed-model {folder} was trained with --{key.replace('_', '-')} {getattr(stored, key)!r}, "
                           f"not {getattr(config, key)!r}: its guide would train and be scored on other rows; leave it "
                           f"out (it is the fixed run's) or name another run")
    weights, source, _ = chosen_weights(folder, state, stored)
    if config.fixed_model_sha256 is not None and fixed_weights_sha256(folder) != config.fixed_model_sha256:
        raise ZooError(f"the fixed model in {folder} changed since this run was trained against it (its weights' "
                       f"SHA-256 differs): restore that run's weights, or train the guide again against the new ones "
                       f"in a new folder")
    return weights, stored, source


def hold_model_fixed(model, guide, config: RunConfig, num_data: int, freeze: bool = True) -> Optional[nn.Module]:
    """Load ``config.fixed_model``'s model into ``model`` (module docstring) and hold it fixed for training ``guide``:
    every model parameter's gradient off, so no optimizer step, weight decay or clipping reaches it (``freeze=False``:
    loaded only, for a command that measures the model's gradients and takes no step). A model that computes with
    its guide is bound to a frozen copy of the fixed run's guide (``num_data``: the data a per-datum one has rows
    for), which is returned (borrowed, it does not move with the model: the caller places it); else None."""
    if getattr(type(guide), "borrows_model", False) and any(True for _ in guide.parameters()):
        raise ZooError(f"the {config.guide!r} guide computes with the model's own parameters, so part of it would be "
                       f"frozen with the model: it cannot be trained against a fixed model; choose a guide with networks "
                       f"of its own (amortized, iaf, meanfield)")
    if freeze and not any(True for _ in guide.parameters()):
        raise ZooError(f"the {config.guide!r} guide has no parameters of its own, and with the model fixed nothing is "
                       f"left to train: score it on the fixed model with 'pyro-zoo eval {config.fixed_model}', or "
                       f"choose a guide that trains")
    weights, stored, source = fixed_model_state(config)
    if model.borrows_guide:              # the prior computes with the guide the model was trained with, frozen
        trained_with = stored.component("guide").build(model, num_data,
                                                       **dataclasses.asdict(stored.resolved("guide")))
        load_weights(model, trained_with, {"model": weights["model"], "guide": weights["guide"]}, source)
        trained_with.requires_grad_(False)
        model.bind_guide(trained_with)
    else:
        trained_with = None
        load_weights(model, guide, {"model": weights["model"], "guide": guide.state_dict()}, source)
    if freeze:
        model.requires_grad_(False)
    return trained_with
