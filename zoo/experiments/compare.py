"""``pyro-zoo compare``: one model, a grid of guides x objectives, the same seed, budget and evaluation."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Dict, List, Sequence

from zoo.core.errors import ZooError
from zoo.data import load_dataset
from zoo.evaluation import plots
from zoo.evaluation.tables import results_markdown
from zoo.experiments.config import RunConfig
from zoo.experiments.outputs import check_out_dir, json_ready, make_out_dir
from zoo.experiments.run import prepare, train_run
from zoo.training.checkpoint import atomic_write_text

__all__ = ["compare"]


def compare(model: str, guides: Sequence[str], objectives: Sequence[str], base: RunConfig, out: Path,
            force: bool = False, progress: bool = True) -> List[Dict]:
    """Train and evaluate every (guide, objective) cell with the same seed, budget and evaluation."""
    out = Path(out)
    check_out_dir(out, force, resume=False)
    if (out / "compare.json").exists() and not force:
        raise ZooError(f"{out} already holds a comparison; pass --force to overwrite or choose another --out")
    data = load_dataset(base.dataset, base.data_dir)
    cells = [(g, o) for g in guides for o in objectives]
    for g, o in cells:                              # check the whole grid before training anything
        prepare(dataclasses.replace(base, model=model, guide=g, objective=o), data)
    rows = []
    for g, o in cells:
        cfg = dataclasses.replace(base, model=model, guide=g, objective=o)
        if progress:
            print(f"== {model} / {g} / {o} ==", flush=True)
        rows.append(train_run(cfg, out / f"{g}-{o}", force=True, progress=progress, data=data))
    make_out_dir(out)
    table = results_markdown(rows)
    atomic_write_text(out / "compare.md", table)
    atomic_write_text(out / "compare.json", json.dumps(json_ready(
        [{k: v for k, v in r.items() if k != "history"} for r in rows]), indent=2))
    plots.compare_plot(rows, out / "compare.png")
    return rows
