"""``pyro-zoo compare``: one model, a grid of guides x objectives, the same seed, budget and evaluation."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence

from zoo.core.errors import ZooError
from zoo.core.registry import REGISTRIES, OptionError
from zoo.data import load_dataset
from zoo.evaluation import plots
from zoo.evaluation.tables import results_markdown
from zoo.experiments.config import RunConfig
from zoo.experiments.outputs import check_out_dir, json_ready, make_out_dir
from zoo.models.pyro_model import absolute_spec, model_label
from zoo.experiments.run import prepare, train_run
from zoo.objectives.axes import split_objective
from zoo.training.checkpoint import atomic_write_text

__all__ = ["compare", "grid_cells", "cell_name"]


def grid_cells(model: str, guides: Sequence[str], objectives: Sequence[str], base: RunConfig,
               guide_options: Optional[Mapping] = None, objective_options: Optional[Mapping] = None) -> List[RunConfig]:
    """The config of every (guide, objective) cell: ``base`` with that guide and objective, and the
    options of ``guide_options`` / ``objective_options`` that each cell's component takes. An option that
    no guide (objective) of the grid takes is an error."""
    pairs = [split_objective(o) for o in objectives]           # "iwae:dreg" -> ("iwae", "dreg")
    picked = {"guide": list(guides), "objective": [o for o, _ in pairs]}
    given = {"guide": dict(guide_options or base.guide_options), "objective": dict(objective_options or
                                                                                   base.objective_options)}
    for kind, names in picked.items():
        for key in given[kind]:
            if not any(key in _option_names(kind, n) for n in names):
                raise OptionError(key, f"is not an option of any {kind} of the grid ({', '.join(names)})", kind=kind)

    def objective_options_of(o: str, estimator: Optional[str]) -> Dict:
        chosen = {k: v for k, v in given["objective"].items() if k in _option_names("objective", o)}
        if estimator is not None:
            chosen["estimator"] = estimator
        return chosen
    return [dataclasses.replace(base, model=model, guide=g, objective=o,
                                guide_options={k: v for k, v in given["guide"].items() if k in _option_names("guide", g)},
                                objective_options=objective_options_of(o, estimator))
            for g in guides for o, estimator in pairs]


def cell_name(cfg: RunConfig) -> str:
    """The folder of a grid cell: ``amortized-dreg``, or ``amortized-iwae-dreg`` for a bound with an estimator."""
    estimator = cfg.objective_options.get("estimator")
    return f"{model_label(cfg.guide)}-{cfg.objective}" + (f"-{estimator}" if estimator else "")


def _option_names(kind: str, name: str) -> set:
    return {f.name for f in REGISTRIES[kind][name].options.specs()}


def compare(model: str, guides: Sequence[str], objectives: Sequence[str], base: RunConfig, out: Path,
            force: bool = False, progress: bool = True, guide_options: Optional[Mapping] = None,
            objective_options: Optional[Mapping] = None) -> List[Dict]:
    """Train and evaluate every (guide, objective) cell with the same seed, budget and evaluation.

    ``guide_options`` and ``objective_options`` (default: ``base``'s) go to the cells whose guide or
    objective takes them, e.g. ``num_flows`` to the ``iaf`` cells only.
    """
    model = absolute_spec(model)                # a model file is recorded by its absolute path
    guides = [absolute_spec(g) for g in guides]  # and so is a guide file (guides.user)
    out = Path(out)
    check_out_dir(out, force, resume=False)
    if (out / "compare.json").exists() and not force:
        raise ZooError(f"{out} already holds a comparison; pass --force to overwrite or choose another --out")
    data = load_dataset(base.dataset, base.data_dir)
    cells = grid_cells(model, guides, objectives, base, guide_options, objective_options)
    for cfg in cells:                               # check the whole grid before training anything
        prepare(cfg, data)
    rows = []
    for cfg in cells:
        if progress:
            print(f"== {model} / {cfg.guide} / {cell_name(cfg)[len(model_label(cfg.guide)) + 1:]} ==", flush=True)
        rows.append(train_run(cfg, out / cell_name(cfg), force=True, progress=progress, data=data))
    make_out_dir(out)
    table = results_markdown(rows)
    atomic_write_text(out / "compare.md", table)
    atomic_write_text(out / "compare.json", json.dumps(json_ready(
        [{k: v for k, v in r.items() if k != "history"} for r in rows]), indent=2))
    plots.compare_plot(rows, out / "compare.png")
    return rows
