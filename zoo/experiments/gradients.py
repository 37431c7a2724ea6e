"""``pyro-zoo gradients``: bias, variance and SNR of gradient estimators at fixed parameters."""
from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from typing import Dict, Mapping, Optional, Sequence

from zoo.core.errors import ZooError
from zoo.evaluation import plots
from zoo.evaluation.gradients import GradientStudy, diagnose
from zoo.evaluation.tables import gradients_markdown
from zoo.experiments.compare import grid_cells
from zoo.experiments.config import RunConfig, refuse_other_shapes
from zoo.experiments.outputs import check_out_dir, json_ready, make_out_dir
from zoo.experiments.run import prepare
from zoo.experiments.run_folder import chosen_weights, load_run, load_weights, read_stored_config, writer_lock
from zoo.objectives import build_objective
from zoo.registry import build_guide
from zoo.training.checkpoint import atomic_path, atomic_write_text, load_checkpoint
from zoo.usercode.specs import is_file_spec

__all__ = ["gradients_run", "GradientsPlan", "checkpoint_for"]


def checkpoint_for(checkpoint: Path, model: str, guide: Optional[str] = None):
    """The state and config of ``checkpoint`` (a run folder, checked as ``eval`` checks it, or a
    checkpoint file), read as data: a run of a model file needs ``model`` to be that file, which is
    hashed and compared with the run's SHA-256 before anything imports it (a guide file: ``guide``)."""
    checkpoint = Path(checkpoint)
    model_file = model if is_file_spec(model) else None
    guide_file = guide if guide is not None and is_file_spec(guide) else None
    how = "pyro-zoo gradients FILE.py:NAME --checkpoint ..."
    guide_how = "pyro-zoo gradients ... --guide FILE.py:NAME --checkpoint ..."
    if checkpoint.is_dir():                 # the weights its figures score: the best epoch's under --keep-best
        state, config = load_run(checkpoint, model_file, how, guide_file, guide_how)
        return chosen_weights(checkpoint, state, config)[0], config
    state = load_checkpoint(checkpoint)
    return state, read_stored_config(state["config"], str(checkpoint), model_file, how, guide_file, guide_how)


def _status_line(line: str) -> None:
    print(f"gradients: {line}", file=sys.stderr, flush=True)


def _trained_control_variate(stored) -> Optional[tuple]:
    """``(objective class, state)`` of a checkpoint whose run trained a control variate of its own (REBAR, RELAX):
    the objectives of that class are measured with it, not with one trained afresh at the checkpoint."""
    if stored is None or not stored[0].get("objective"):
        return None
    state, config = stored
    trained = build_objective(config.objective, **dataclasses.asdict(config.resolved("objective")))
    return (type(trained), state["objective"]) if hasattr(trained, "train_control_variate") else None


@dataclasses.dataclass(frozen=True)
class GradientsPlan:
    """What ``pyro-zoo gradients`` measures: ``repeats`` gradient estimates of each of ``objectives`` at each K of
    ``particles``, for ``model`` with ``guide`` as ``base`` configures them, at their initialization or at the weights
    of ``checkpoint`` (a run folder); ``objective_options`` (default: ``base``'s) go to the objectives that take them,
    as in a compare grid."""

    model: str
    guide: str
    objectives: Sequence[str]
    particles: Sequence[int]
    repeats: int
    base: RunConfig
    checkpoint: Optional[Path] = None
    objective_options: Optional[Mapping] = None


def gradients_run(plan: GradientsPlan, out: Path, force: bool = False, progress: bool = True) -> Dict:
    """``pyro-zoo gradients``: the gradient diagnostics ``plan`` names (:class:`GradientsPlan`), written to ``out``.
    With ``progress``, one line on stderr as each stage starts (the whole can take minutes)."""
    model, guide, objectives, particles, repeats = plan.model, plan.guide, plan.objectives, plan.particles, \
        plan.repeats
    base, checkpoint, objective_options = plan.base, plan.checkpoint, plan.objective_options
    out = Path(out)
    check_out_dir(out, force, resume=False)
    if (out / "gradients.json").exists() and not force:
        raise ZooError(f"{out} already holds gradient diagnostics; pass --force to overwrite or choose another --out")
    if repeats < 2:
        raise ZooError(f"--repeats must be at least 2 to estimate a variance, got {repeats}")
    if not particles or any(k < 1 for k in particles):
        raise ZooError(f"--particles must be positive integers, got {list(particles)}")
    stored = checkpoint_for(checkpoint, model, guide) if checkpoint is not None else None
    cells = grid_cells(model, [guide], objectives, base, objective_options=objective_options)
    config = cells[0]
    data = config.load_data()
    for cell in cells:
        run = prepare(cell, data, freeze_fixed=False)     # a fixed model's gradients are measured too
    if stored is not None:
        state, stored_config = stored
        refuse_other_shapes(stored_config, config)
        load_weights(run.model, run.guide, state, Path(checkpoint))
    x = run.data.train[:config.batch_size].to(run.device)
    if not getattr(run.guide, "amortized", True):
        run.guide = build_guide(config.guide, run.model, num_data=x.shape[0],
                                bind=config.fixed_model is None).to(run.device)
    study = GradientStudy(seed=config.seed,
                          objective_options={name: cell.objective_options for name, cell in zip(objectives, cells)},
                          trained_control_variate=_trained_control_variate(stored))
    result = diagnose(run.model, run.guide, x, objectives, particles, repeats, study,
                      status=_status_line if progress else None)
    result.update(config=config.to_json(), objectives=list(objectives), particles=list(particles),
                  repeats=repeats, checkpoint=str(checkpoint) if checkpoint else None, device=str(run.device))
    made = not out.exists()
    make_out_dir(out)
    with writer_lock(out, made=made):
        atomic_write_text(out / "gradients.json", json.dumps(json_ready(result), indent=2))
        atomic_write_text(out / "gradients.md", gradients_markdown(result))
        with atomic_path(out / "gradients.png") as path:
            plots.gradient_plot(result["rows"], path)
    return result
