"""``pyro-zoo compare``: one model, a grid of guides x objectives, the same seed, budget and evaluation."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

from zoo.core.errors import ZooError
from zoo.core.components import REGISTRIES, OptionError
from zoo.data import load_dataset
from zoo.evaluation import plots
from zoo.evaluation.tables import results_markdown
from zoo.experiments.config import RunConfig
from zoo.experiments.outputs import check_out_dir, json_ready, make_out_dir
from zoo.experiments.run import prepare, train_run
from zoo.objectives.axes import split_objective
from zoo.training.checkpoint import atomic_write_text
from zoo.usercode.specs import spec_label

__all__ = ["compare", "grid_cells", "checked_cells", "cell_name", "ALL"]

#: ``--guides all`` / ``--objectives all``: every registered guide family / objective (bounds and presets)
#: that the registry says fits the model; the cells it rules out are skipped and listed, not errors.
ALL = "all"


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


def checked_cells(model: str, guides: Sequence[str], objectives: Sequence[str], base: RunConfig, data,
                  guide_options: Optional[Mapping] = None, objective_options: Optional[Mapping] = None
                  ) -> Tuple[List[RunConfig], List[Tuple[str, str]]]:
    """The grid's cells, each built and checked against the data (:func:`~zoo.experiments.run.prepare`)
    before anything trains, and the ``(cell, reason)`` of those skipped.

    Named guides and objectives must all fit: the cells that do not are the error, every one of them
    named (one alone keeps its whole message, with what to use instead). With ``--guides all`` or
    ``--objectives all`` every registered one is tried and those that do not fit the model are
    skipped, so ``--guides all --objectives all`` is the grid that ``pyro-zoo list`` calls valid for
    the model.
    """
    expand = {"guide": list(guides) == [ALL], "objective": list(objectives) == [ALL]}
    if ALL in guides and not expand["guide"] or ALL in objectives and not expand["objective"]:
        raise ZooError(f"'{ALL}' stands alone (--guides all, --objectives all): it means every one that fits the model")
    guides = list(REGISTRIES["guide"]) if expand["guide"] else list(guides)
    objectives = list(REGISTRIES["objective"]) if expand["objective"] else list(objectives)
    cells, skipped, refused = [], [], []
    for cfg in grid_cells(model, guides, objectives, base, guide_options, objective_options):
        try:                                        # check the whole grid before training anything
            prepare(cfg, data)
            cells.append(cfg)
        except ZooError as e:
            if not (expand["guide"] or expand["objective"]):
                refused.append((cfg, e))
            skipped.append((cell_name(cfg), str(e).split(";")[0]))
    if len({str(e) for _, e in refused}) == 1:      # one cell, or one reason for all (an option's value)
        raise refused[0][1]
    if refused:
        def label(cfg: RunConfig) -> str:           # guide × objective, as named: amortized × iwae:dreg
            estimator = cfg.objective_options.get("estimator")
            return f"{spec_label(cfg.guide)} × {cfg.objective}" + (f":{estimator}" if estimator else "")
        raise ZooError(f"{len(refused)} cells of the grid do not fit {model}: " + "; ".join(
            f"{label(cfg)} ({str(e).split(';')[0]})" for cfg, e in refused) + f"; 'pyro-zoo list {model}' names "
            "the runs that do")
    if not cells:
        raise ZooError(f"no guide and objective of the grid fits {model}: " + "; ".join(f"{c}: {why}"
                                                                                       for c, why in skipped[:3]))
    return cells, skipped


def cell_name(cfg: RunConfig) -> str:
    """The folder of a grid cell: ``amortized-dreg``, or ``amortized-iwae-dreg`` for a bound with an estimator."""
    estimator = cfg.objective_options.get("estimator")
    return f"{spec_label(cfg.guide)}-{cfg.objective}" + (f"-{estimator}" if estimator else "")


def _option_names(kind: str, name: str) -> set:
    return {f.name for f in REGISTRIES[kind][name].options.specs()}


def compare(model: str, guides: Sequence[str], objectives: Sequence[str], base: RunConfig, out: Path,
            force: bool = False, progress: bool = True, guide_options: Optional[Mapping] = None,
            objective_options: Optional[Mapping] = None) -> List[Dict]:
    """Train and evaluate every (guide, objective) cell with the same seed, budget and evaluation.

    ``guide_options`` and ``objective_options`` (default: ``base``'s) go to the cells whose guide or
    objective takes them, e.g. ``num_flows`` to the ``iaf`` cells only.
    """
    out = Path(out)
    check_out_dir(out, force, resume=False)
    if (out / "compare.json").exists() and not force:
        raise ZooError(f"{out} already holds a comparison; pass --force to overwrite or choose another --out")
    data = load_dataset(base.dataset, base.data_dir)
    cells, skipped = checked_cells(model, guides, objectives, base, data, guide_options, objective_options)
    if progress and skipped:
        print(f"skipping {len(skipped)} cells that do not fit the model (see compare.md); training {len(cells)}",
              flush=True)
    rows = []
    for cfg in cells:
        if progress:
            print(f"== {cfg.model} / {cfg.guide} / {cell_name(cfg)[len(spec_label(cfg.guide)) + 1:]} ==", flush=True)
        rows.append(train_run(cfg, out / cell_name(cfg), force=True, progress=progress, data=data))
    make_out_dir(out)
    table = results_markdown(rows)
    if skipped:
        table += "\n\nSkipped (they do not fit the model):\n\n" + "\n".join(f"- {c}: {why}" for c, why in skipped) + "\n"
    atomic_write_text(out / "compare.md", table)
    atomic_write_text(out / "compare.json", json.dumps(json_ready(
        [{k: v for k, v in r.items() if k != "history"} for r in rows]), indent=2))
    plots.compare_plot(rows, out / "compare.png")
    return rows
