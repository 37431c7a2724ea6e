"""``pyro-zoo compare``: one model, a grid of guides x objectives at several seeds, the same budget and evaluation.

Each cell at each seed is a run folder in OUT (:func:`seed_folder`), trained by an engine
(:mod:`zoo.experiments.engines`). ``OUT/grid.json`` records the grid, so ``compare --resume OUT`` can
finish it after any stop, SIGKILL included: finished cells are kept, interrupted ones resume from their
last checkpoint, missing ones train. The grid holds OUT's writer lock while it runs, so a second grid on
the same OUT is refused. ``compare.json`` keeps every cell's figures at every seed; ``compare.md`` and
``compare.png`` show the mean ± SE over seeds and the paired differences from a baseline cell
(:mod:`zoo.evaluation.compare_tables`).

What the tables take is bound to the grid: ``grid.json`` and each cell's ``results.json`` are sealed
(:func:`~zoo.core.files.sealed`: the SHA-256 of their content), a cell's results must carry the cell's config in
everything that trains (:func:`_cell_result`), and every check is made before anything is written, so a
hand-edited, swapped or non-numeric result, or a changed plan, is one line and leaves the grid's files as they
were.
"""
from __future__ import annotations

import dataclasses
import json
import math
import re
import shlex
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

from zoo.core.errors import ZooError
from zoo.core.components import REGISTRIES, OptionError
from zoo.evaluation import plots
from zoo.core.files import SEAL, read_json, seal_holds, sealed
from zoo.evaluation.fixed_gaps import fixed_gaps_markdown, fixed_model_gaps
from zoo.evaluation.compare_tables import compare_markdown
from zoo.experiments.config import RunConfig, refuse_mismatch
from zoo.experiments.engines import ENGINES, Job, engine_session, run_jobs
from zoo.experiments.outputs import check_out_dir, json_ready, make_out_dir
from zoo.experiments.run import prepare
from zoo.experiments.run_folder import load_run, read_stored_config, writer_lock
from zoo.objectives.axes import split_objective
from zoo.rules import build_run_model, grid_axes_without_effect
from zoo.training.checkpoint import atomic_write_text
from zoo.usercode.specs import is_file_spec, spec_label

__all__ = ["compare", "resume_compare", "Grid", "Execution", "SERIAL", "grid_cells", "checked_cells", "cell_name",
           "cell_label", "seed_folder", "read_plan", "resume_command", "PLAN", "ALL"]

#: ``--guides all`` / ``--objectives all``: every registered guide family / objective (bounds and presets)
#: that the registry says fits the model; the cells it rules out are skipped and listed, not errors.
ALL = "all"


def grid_cells(model: str, guides: Sequence[str], objectives: Sequence[str], base: RunConfig,
               guide_options: Optional[Mapping] = None, objective_options: Optional[Mapping] = None,
               latents: Optional[Sequence[str]] = None) -> List[RunConfig]:
    """The config of every (guide, objective) cell: ``base`` with that guide and objective, and the
    options of ``guide_options`` / ``objective_options`` that each cell's component takes. An option that
    no guide (objective) of the grid takes is an error. With ``latents`` (latent families,
    :mod:`zoo.core.latents`) every (guide, objective) cell is made once per family, the model's ``latent``
    option set to it: the same model on R^d, the sphere and hyperbolic space, side by side."""
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
    bases = [base] if not latents else [dataclasses.replace(base, model_options={**base.model_options, "latent": f})
                                        for f in latents]
    return [dataclasses.replace(b, model=model, guide=g, objective=o,
                                guide_options={k: v for k, v in given["guide"].items() if k in _option_names("guide", g)},
                                objective_options=objective_options_of(o, estimator))
            for b in bases for g in guides for o, estimator in pairs]


def checked_cells(model: str, guides: Sequence[str], objectives: Sequence[str], base: RunConfig, data,
                  guide_options: Optional[Mapping] = None, objective_options: Optional[Mapping] = None,
                  latents: Optional[Sequence[str]] = None) -> Tuple[List[RunConfig], List[Tuple[str, str]]]:
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
    for cfg in grid_cells(model, guides, objectives, base, guide_options, objective_options, latents):
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
        raise ZooError(f"{len(refused)} cells of the grid do not fit {model}: " + "; ".join(
            f"{', '.join(cells)} ({'each as the first: ' if len(cells) > 1 else ''}{reason})"
            for reason, cells in _by_reason(refused).items())
            + f"; 'pyro-zoo list {model}' names the runs that do")
    if not cells:
        raise ZooError(f"no guide and objective of the grid fits {model}: " + "; ".join(f"{c}: {why}"
                                                                                       for c, why in skipped[:3]))
    return cells, skipped


def _latent_prefix(cfg: RunConfig, sep: str) -> str:
    """``vmf`` and ``sep`` for a cell whose latent family was set (a grid over ``--latents``, or ``--latent``)."""
    latent = cfg.model_options.get("latent")
    return f"{latent}{sep}" if latent else ""


def cell_name(cfg: RunConfig) -> str:
    """The folder of a grid cell: ``amortized-dreg``, or ``amortized-iwae-dreg`` for a bound with an estimator,
    ``vmf-amortized-elbo`` for a cell whose latent family was set."""
    estimator = cfg.objective_options.get("estimator")
    return _latent_prefix(cfg, "-") + f"{spec_label(cfg.guide)}-{cfg.objective}" + (f"-{estimator}" if estimator else "")


def _option_names(kind: str, name: str) -> set:
    return {f.name for f in REGISTRIES[kind][name].options.specs()}


def cell_label(cfg: RunConfig) -> str:
    """A cell as ``--baseline-cell`` names it and the tables show it: ``amortized/elbo``, ``amortized/iwae:dreg``,
    ``vmf/amortized/elbo`` for a cell whose latent family was set."""
    estimator = cfg.objective_options.get("estimator")
    return _latent_prefix(cfg, "/") + f"{spec_label(cfg.guide)}/{cfg.objective}" + (f":{estimator}" if estimator else "")


def seed_folder(cfg: RunConfig, seeded: bool) -> str:
    """The run folder of a cell at a seed: the cell's folder (:func:`cell_name`) alone in a one-seed grid, as
    before seeds, else ``CELL-seedS``, one level deep, so ``pyro-zoo report`` finds every seed of a grid."""
    return cell_name(cfg) + (f"-seed{cfg.seed}" if seeded else "")


#: The grid's plan in its folder: what ``compare --resume OUT`` runs again.
PLAN = "grid.json"


@dataclasses.dataclass
class Grid:
    """A grid: the model, the guides and objectives as given, the seeds, the baseline cell, and the base
    config with the options each kind of component was given (stored as ``OUT/grid.json``)."""

    model: str
    guides: List[str]
    objectives: List[str]
    base: RunConfig
    #: paired seeds (:func:`compare`); empty: the base config's seed alone
    seeds: List[int] = dataclasses.field(default_factory=list)
    baseline: Optional[str] = None
    guide_options: Dict = dataclasses.field(default_factory=dict)
    objective_options: Dict = dataclasses.field(default_factory=dict)
    #: latent families, one set of cells each (``--latents``); empty: the base config's own
    latents: List[str] = dataclasses.field(default_factory=list)
    #: read from a grid.json whose content no longer matches its seal (:func:`read_plan`): edited since written
    edited: bool = False

    def __post_init__(self):
        self.guides, self.objectives = list(self.guides), list(self.objectives)
        self.seeds = list(dict.fromkeys(self.seeds or ())) or [self.base.seed]
        self.latents = list(dict.fromkeys(self.latents or ()))
        self.guide_options, self.objective_options = dict(self.guide_options or {}), dict(self.objective_options or {})

    def to_json(self) -> Dict:
        """The plan as grid.json stores it, sealed (:func:`~zoo.core.files.sealed`): a grid's plan never changes,
        so ``compare --resume`` refuses one that was edited."""
        plan = {"model": self.model, "guides": self.guides, "objectives": self.objectives,
                "seeds": self.seeds, "baseline": self.baseline, "base": self.base.to_json(),
                "guide_options": self.guide_options, "objective_options": self.objective_options}
        if self.latents:
            plan["latents"] = self.latents
        return sealed(json_ready(plan))


@dataclasses.dataclass(frozen=True)
class Execution:
    """Where a grid's cells run (:mod:`zoo.experiments.engines`): ``serial``, a pool of ``workers`` processes, or
    Ray at ``address``; ``progress``: a line per epoch or cell."""

    engine: str = "serial"
    workers: int = 1
    address: Optional[str] = None
    progress: bool = True


#: one process, with progress: how a grid runs unless told otherwise
SERIAL = Execution()


def resume_command(model: str, out: Path) -> str:
    """The command that finishes the grid in ``out``: ``pyro-zoo compare --resume OUT``, with the model file for a
    grid of a user's model (``FILE.py:NAME``), which a grid folder never imports unless the user names it."""
    return "pyro-zoo compare " + (f"{shlex.quote(model)} " if is_file_spec(model) else "") + \
        f"--resume {shlex.quote(str(out))}"


def read_plan(out: Path, model_file: Optional[str] = None) -> Grid:
    """The grid stored in ``out`` (``grid.json``), read as data: a model file it names is imported only if the
    user names it (``model_file``) and it hashes to the recorded SHA-256, as for a run folder."""
    path = out / PLAN
    if not path.is_file():
        what = "a finished comparison from before resumable grids" if (out / "compare.json").is_file() else "no grid"
        raise ZooError(f"--resume: {out} holds {what} ({PLAN} is missing); start the grid without --resume")
    stored = read_json(path, "grid plan", fix="restore it or start the grid again with --force")
    try:
        guides, objectives = list(stored["guides"]), list(stored["objectives"])
        seeds = [int(s) for s in stored["seeds"]]
        extra = {k: dict(stored.get(k) or {}) for k in ("guide_options", "objective_options")}
        extra["latents"] = [str(f) for f in stored.get("latents") or []]
    except (KeyError, TypeError, ValueError):
        raise ZooError(f"{path} is not a grid plan written by 'pyro-zoo compare'; start the grid again with "
                       f"--force") from None
    if any(is_file_spec(g) for g in guides):
        raise ZooError(f"the grid in {out} has a guide file ({', '.join(g for g in guides if is_file_spec(g))}); "
                       f"a grid folder's files are never imported, so finish it with the compare command that "
                       f"started it and --force")
    base = read_stored_config(stored.get("base"), str(path), model_file,
                              how=f"pyro-zoo compare FILE.py:NAME --resume {out}")
    return Grid(base.model, guides, objectives, base, seeds, stored.get("baseline"), **extra,
                edited=not seal_holds(stored))


def compare(grid: Grid, out: Path, force: bool = False, execution: Execution = SERIAL) -> List[Dict]:
    """Train and evaluate every (guide, objective) cell of ``grid`` at every seed with the same budget and
    evaluation, in ``out``.

    The grid's seeds (default: its base config's seed alone) are paired: at seed s every cell draws the same
    minibatch order (:func:`zoo.training.loop.epoch_order` is a function of the seed and epoch alone) on the same
    data splits (fixed by the dataset, not the seed), and its evaluation's samples from the same seed. So the
    per-seed differences from the ``baseline`` cell (``GUIDE/OBJECTIVE``, default the first) are paired
    (:mod:`zoo.evaluation.seed_stats`). Its ``guide_options`` and ``objective_options`` (default: ``base``'s) go to
    the cells whose guide or objective takes them, e.g. ``num_flows`` to ``iaf`` only; its ``latents`` (latent
    families) repeat the grid once per family, the model's ``latent`` option set to it. Cells run as ``execution``
    says. Returns the rows of ``compare.json``, one per cell and seed.

    Example::

        compare(Grid("vae", ["amortized", "iaf"], ["elbo", "iwae"], RunConfig(model="vae", dataset="digits"),
                     seeds=[0, 1]), Path("runs/grid"), execution=Execution(workers=2))
    """
    out = Path(out)
    check_out_dir(out, force, resume=False)
    _refuse_running_grid(out)
    if (out / "compare.json").exists() and not force:
        raise ZooError(f"{out} already holds a comparison; pass --force to overwrite or choose another --out")
    if (out / PLAN).exists() and not force:
        raise ZooError(f"{out} holds an unfinished grid; pass --force to start it again, or finish it with: "
                       f"{resume_command(grid.base.model, out)}")
    if grid.latents and "latent" in grid.base.model_options:
        raise ZooError("--latents sets each cell's --latent: drop --latent, or --latents")
    unknown = [f for f in grid.latents if f not in _latent_families()]
    if unknown:
        raise ZooError(f"unknown latent famil{'ies' if len(unknown) > 1 else 'y'} {', '.join(map(repr, unknown))} in "
                       f"--latents; choose from {', '.join(_latent_families())}")
    return _run_grid(grid, out, fresh=True, execution=execution)


def resume_compare(out: Path, model_file: Optional[str] = None, execution: Execution = SERIAL) -> List[Dict]:
    """Finish the grid in ``out`` (``compare --resume OUT``): cells with results are kept once their folder is
    checked against the grid's config (as ``train --resume`` checks a run), interrupted cells resume from
    their last checkpoint, and missing cells train."""
    out = Path(out)
    if not out.is_dir():
        raise ZooError(f"--resume: no grid at {out}; start one with 'pyro-zoo compare MODEL ... --out {out}'")
    _refuse_running_grid(out)
    grid = read_plan(out, model_file)
    return _run_grid(grid, out, fresh=False, execution=execution)


def _latent_families() -> Tuple[str, ...]:
    from zoo.core.latents import LATENT_FAMILIES
    return tuple(LATENT_FAMILIES)


def _refuse_running_grid(out: Path) -> None:
    """Refuse, in one line, if another grid (or run) is writing to ``out`` now: it holds the folder's lock."""
    if out.is_dir():
        with writer_lock(out):
            pass


def _jobs(grid: Grid, out: Path, data, fresh: bool) -> Tuple[List[RunConfig], List[Tuple[str, str]], List[Job]]:
    """The grid's checked cells, those skipped, and the jobs to run: every (cell, seed) when ``fresh``, else the
    unfinished ones (finished ones are checked against the grid's config here)."""
    cells, skipped = checked_cells(grid.model, grid.guides, grid.objectives, grid.base, data, grid.guide_options,
                                   grid.objective_options, grid.latents)
    labels = [cell_label(c) for c in cells]
    if grid.baseline is not None and grid.baseline not in labels:
        raise ZooError(f"--baseline-cell {grid.baseline!r} is not a cell of the grid; choose one of "
                       f"{', '.join(labels)}")
    seeded = len(grid.seeds) > 1
    jobs = []
    for cfg in cells:
        for seed in grid.seeds:
            run = dataclasses.replace(cfg, seed=seed)
            folder = out / seed_folder(run, seeded)
            label = f"{cell_label(run)} seed {seed}"
            if fresh:
                jobs.append(Job(label, run, str(folder), "fresh"))
            elif (folder / "results.json").is_file():
                _check_finished(run, folder)
            else:
                jobs.append(Job(label, run, str(folder), "resume" if (folder / "checkpoint.pt").is_file() else "fresh"))
    return cells, skipped, jobs


def _by_reason(refused: Sequence[Tuple[RunConfig, ZooError]]) -> Dict[str, List[str]]:
    """The refused cells grouped by the rule that refused them, each reason said once (its first clause, as the
    first cell of the group words it) with the cells it refuses, ``guide × objective`` as named
    (``amortized × iwae:dreg``). A reason names its cell's guide and objective (quoted), so cells are grouped by
    their reason with the quoted names taken out."""
    groups: Dict[str, Tuple[str, List[str]]] = {}
    for cfg, e in refused:
        estimator = cfg.objective_options.get("estimator")
        reason = str(e).split(";")[0]
        rule = re.sub(r"'[^']*'( with estimator '[^']*')?", "…", reason)
        label = f"{spec_label(cfg.guide)} × {cfg.objective}" + (f":{estimator}" if estimator else "")
        groups.setdefault(rule, (reason, []))[1].append(label)
    return {reason: cells for reason, cells in groups.values()}


def _check_finished(cfg: RunConfig, folder: Path) -> None:
    """A finished cell is kept only if its folder is this cell's run: checkpoint and config.json agree
    (:func:`~zoo.experiments.run_folder.load_run`) and differ from the grid's config only where a resume may, and
    its results.json is this cell's (:func:`_cell_result`)."""
    if not (folder / "checkpoint.pt").is_file():     # load_run's "train a run there first" cannot work in a grid
        raise ZooError(f"{folder} holds results.json but no checkpoint.pt, so it cannot be checked as this grid's "
                       f"cell; move the folder away and '{resume_command(cfg.model, folder.parent)}' trains the cell "
                       f"again")
    model_file = cfg.model if is_file_spec(cfg.model) else None
    _, stored = load_run(folder, model_file, how=resume_command("FILE.py:NAME", folder.parent))
    try:
        refuse_mismatch(stored, cfg)
    except ZooError as e:
        raise ZooError(f"{folder} is not this grid's cell: {str(e).split(';')[0]}; move it away and resume "
                       f"again, or start the grid again with --force") from None
    _cell_result(cfg, folder)


#: What a cell's results.json may differ in from its cell: how it was evaluated again (``pyro-zoo eval``: K, the
#: subset, the proposal, the refit, the device) and where the data were read from; nothing that trains.
_EVALUATION_SETTINGS = frozenset(f.name for f in dataclasses.fields(RunConfig)
                                 if isinstance(f.metadata.get("cli"), dict)
                                 and f.metadata["cli"].get("group") == "evaluation") | {"device", "data_dir",
                                                                                        "data_source"}

#: The figures compare.md reads from a cell's results.json: each a finite number or null.
_TABLE_FIGURES = ("elbo", "log_likelihood", "log_likelihood_se", "log_likelihood_data_se", "elbo_gap",
                  "active_units", "num_latent_units", "psis_khat_frac_over_0_7")


def _cell_result(cfg: RunConfig, folder: Path) -> Dict:
    """The results.json of the cell ``cfg`` in ``folder``, bound to that cell: sealed as ``pyro-zoo train`` or
    ``eval`` wrote it (:func:`~zoo.core.files.seal_holds`: a hand-edited figure, a NaN or a word is seen), its
    config that of this cell in everything that trains (model, guide, objective, data, seed, epochs, every
    option: :data:`_EVALUATION_SETTINGS` alone may differ), and its figures numbers. Else one line, exit 2."""
    path = folder / "results.json"
    fix = (f"restore the file, re-evaluate the cell with 'pyro-zoo eval {folder}', or start the grid again with "
           f"--force")
    result = read_json(path, "run's results.json", fix=fix)
    if not seal_holds(result):
        why = ("it has no content_sha256, so it was not written by this pyro-zoo" if not isinstance(result, dict)
               or SEAL not in result else "its content no longer matches its content_sha256: it was edited")
        raise ZooError(f"{path} is not the results 'pyro-zoo' wrote for this cell ({why}); {fix}")
    model_file = cfg.model if is_file_spec(cfg.model) else None
    guide_file = cfg.guide if is_file_spec(cfg.guide) else None         # the grid's own, named when it started
    stored = read_stored_config(result.get("config"), str(path), model_file,
                                how=resume_command("FILE.py:NAME", folder.parent), guide_file=guide_file)
    ours, theirs = cfg.to_json(), stored.to_json()
    for key in ours:
        if key not in _EVALUATION_SETTINGS and key not in ("model_options", "guide_options", "objective_options") \
                and ours[key] != theirs.get(key):
            raise ZooError(f"{path} holds the results of another run ({key} {theirs.get(key)!r}, this cell's is "
                           f"{ours[key]!r}); {fix}")
    for kind in ("model", "guide", "objective"):
        if cfg.resolved(kind).to_dict() != stored.resolved(kind).to_dict():
            raise ZooError(f"{path} holds the results of another run (other {kind} options); {fix}")
    for key in _TABLE_FIGURES:
        value = result.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                  or not math.isfinite(value)):
            raise ZooError(f"{path} gives {key} as {str(value)[:40]!r}, not a number; {fix}")
    return result


def _run_grid(grid: Grid, out: Path, fresh: bool, execution: Execution) -> List[Dict]:
    engine, workers, address, progress = execution.engine, execution.workers, execution.address, execution.progress
    if engine not in ENGINES:
        raise ZooError(f"unknown --engine {engine!r}; use one of {', '.join(ENGINES)}")
    if workers < 1:
        raise ZooError(f"--workers must be 1 or more, got {workers}")
    data = grid.base.load_data()
    make = not out.exists()
    cells, skipped, jobs = _jobs(grid, out, data, fresh)       # every check before anything is written
    if grid.edited:
        raise ZooError(f"{out / PLAN} was edited since the grid was started (its content no longer matches its "
                       f"{SEAL}): a grid's plan cannot change, so its cells would not be comparable; restore the "
                       f"file, or start a new grid with --force (or another --out)")
    resume = resume_command(grid.base.model, out)
    # Ray: the cluster at --address answers (a bounded check) before the grid's folder is made
    with engine_session(engine, address) as session:
        make_out_dir(out)
        try:
            with writer_lock(out, made=make):
                if fresh:
                    atomic_write_text(out / PLAN, json.dumps(grid.to_json(), indent=2))
                if progress and skipped:
                    print(f"skipping {len(skipped)} cells that do not fit the model (see compare.md); training "
                          f"{len(cells)}", flush=True)
                total = len(cells) * len(grid.seeds)
                if progress and len(jobs) < total:
                    print(f"resuming the grid in {out}: {total - len(jobs)} of {total} cells are finished", flush=True)
                finished = []

                def on_done(job: Job, error: Optional[str]) -> None:
                    finished.append(job)
                    if progress and (workers > 1 or engine != "serial" or error):
                        print(f"[{len(finished)}/{len(jobs)}] {job.label}: {'failed: ' + error if error else 'done'}",
                              flush=True)
                failed = run_jobs(jobs, engine, workers, session, progress=progress and workers == 1
                                  and engine == "serial", data=data, on_done=on_done)
                rows = _gather(grid, cells, out)
                _write_tables(grid, rows, skipped, failed, out, notes=_axes_notes(cells, data),
                              fixed=_fixed_gaps(grid, cells, out))
        except BaseException as e:
            if isinstance(e, KeyboardInterrupt) and (out / PLAN).is_file():
                e.zoo_note = (f"the grid's finished cells and the last checkpoint of each interrupted one are kept: "
                              f"finish it with: {resume}")
            raise
    if failed:
        raise ZooError(f"{len(failed)} of {len(cells) * len(grid.seeds)} cells failed ({'; '.join(f'{k}: {v}' for k, v in failed.items())}); "
                       f"the others are in {out / 'compare.md'}: fix the cause and run: {resume}")
    return rows


def _gather(grid: Grid, cells: Sequence[RunConfig], out: Path) -> List[Dict]:
    """The rows of compare.json: each finished cell's results.json at each seed (bound to its cell:
    :func:`_cell_result`), without its history and seal, with its ``cell`` and ``epoch_seconds`` (training time
    summed over its recorded epochs)."""
    rows = []
    seeded = len(grid.seeds) > 1
    for cfg in cells:
        for seed in grid.seeds:
            run = dataclasses.replace(cfg, seed=seed)
            folder = out / seed_folder(run, seeded)
            if not (folder / "results.json").is_file():
                continue
            result = dict(_cell_result(run, folder))
            result.pop(SEAL, None)
            history = result.pop("history", None) or []
            rows.append({"cell": cell_label(cfg), **result,
                         "epoch_seconds": sum(float(h.get("seconds") or 0.0) for h in history
                                              if isinstance(h, dict))})
    return rows


def _fixed_gaps(grid: Grid, cells: Sequence[RunConfig], out: Path) -> Optional[Dict]:
    """With ``--fixed-model``, each finished cell's gap to one shared log p(x) (:mod:`zoo.evaluation.fixed_gaps`)."""
    if grid.base.fixed_model is None:
        return None
    seeded = len(grid.seeds) > 1
    folders = {cell_label(cfg): {seed: out / seed_folder(dataclasses.replace(cfg, seed=seed), seeded)
                                 for seed in grid.seeds
                                 if (out / seed_folder(dataclasses.replace(cfg, seed=seed), seeded) / "per_datum.npz")
                                 .is_file()} for cfg in cells}
    folders = {label: f for label, f in folders.items() if f}
    return fixed_model_gaps(Path(grid.base.fixed_model), folders, grid.base.eval_split, grid.base.eval_limit,
                            grid.base.fixed_model_sha256) if folders else None


def _axes_notes(cells: Sequence[RunConfig], data) -> List[str]:
    """The sentences compare.md must say about an axis of the grid (several guides, several objectives) that
    cannot change its figures on this model (:func:`zoo.rules.grid_axes_without_effect`)."""
    first = cells[0]
    model = build_run_model(first, data)      # as train builds it: a model file is tried on the data's rows
    varied = {"guide": len({c.guide for c in cells}) > 1,
              "objective": len({(c.objective, c.objective_options.get("estimator")) for c in cells}) > 1}
    return [why for axis, why in grid_axes_without_effect(model).items() if varied[axis]]


def _write_tables(grid: Grid, rows: List[Dict], skipped, failed: Mapping[str, str], out: Path,
                  notes: Sequence[str] = (), fixed: Optional[Dict] = None) -> None:
    table = compare_markdown(rows, baseline=grid.baseline, notes=notes)
    if fixed is not None:
        table += "\n" + fixed_gaps_markdown(fixed)
        atomic_write_text(out / "fixed_gaps.json", json.dumps(json_ready(fixed), indent=2))
    if failed:
        table += "\n\nFailed (resume the grid to retry them):\n\n" + "\n".join(f"- {c}: {why}"
                                                                             for c, why in failed.items()) + "\n"
    if skipped:
        table += "\n\nSkipped (they do not fit the model):\n\n" + "\n".join(f"- {c}: {why}" for c, why in skipped) + "\n"
    atomic_write_text(out / "compare.md", table)
    atomic_write_text(out / "compare.json", json.dumps(json_ready(rows), indent=2))
    if rows:
        plots.compare_plot(rows, out / "compare.png", baseline=grid.baseline)
