"""What a folder's report shows beyond the generic pages: its ``report.json``, data and never code.

``pyro-zoo report DIR`` renders any folder of runs the same way (:mod:`zoo.evaluation.reports`). What
only the folder's owner knows, which published figure a run is compared with, which runs head the page,
in which order models are listed, which settings are worth showing, and how to tabulate the result
files that are not training runs, is declared in ``DIR/report.json`` beside the result files and the
template. The file is optional: without it the pages show what every run has. It is JSON, read as data,
so a results folder from someone else can never make the report run code.

The keys, each optional:

- ``references``: ``{KEY: {"metric": "nll" | "neg_elbo", "value": "88.71", "cite": ..., "what": ...}}``,
  figures from papers, with their citations (``value`` as printed in the paper);
- ``compare_with``: ``[{"match": {FIELD: VALUE or [VALUES]}, "references": [KEY, ...]}]``: a trained run
  is compared with the references of the first rule whose every field it matches (fields of its
  config and its model, guide and objective options);
- ``headline``: ``[[FILE.json, RUN LABEL], ...]``, the runs of the headline table, in order;
- ``runs``: ``{"model_order": [MODEL, ...]}``, the order of the table of every training run;
- ``leaderboard``: ``{"datasets": {DATASET: TITLE}, "model_order": [MODEL, ...], "model_options":
  {OPTION: PLAIN VALUE}}``: the datasets on which the result files' runs count (in that order, under
  that title; a folder's own run folders count on any dataset), the order of models, and the options
  that make a model variant its own leaderboard entry, with their plain value (``{"prior": "standard"}``:
  a run with ``--prior vampprior`` is listed as ``MODEL + vampprior``);
- ``settings``: ``[{"key": CONFIG KEY, "flag": "--flag", "hide": VALUE}]``, the settings a run's row
  shows, as the flags that set them, unless null or equal to ``hide``;
- ``tables``: ``{NAME: {"rows": PATH, "with": FIELD, "columns": [[HEAD, CELL], ...]}}``, tables of
  result files of any schema, for ``{{ table NAME }}`` (:func:`zoo.evaluation.reports.declared_table`).

The file of this repository's benchmarks is ``benchmarks/results/report.json``; ``benchmarks/README.md``
says what to add there for a new model or benchmark.

Example::

    >>> config = ReportConfig(
    ...     references={"paper": Reference("nll", "88.71", "A et al. 2016", "the same model, 3280 epochs")},
    ...     compare_with=(({"model": "m", "dataset": ["d1", "d2"]}, ("paper",)),))
    >>> [r.cite for r in config.references_for({"model": "m", "dataset": "d2", "model_options": {}})]
    ['A et al. 2016']
    >>> config.references_for({"model": "m", "dataset": "d3"})
    []
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, List, Mapping, Optional, Tuple

from zoo.core.errors import ZooError
from zoo.core.files import read_json

__all__ = ["CONFIG_NAME", "Reference", "Setting", "Table", "ReportConfig", "load_config", "flat_config", "matches",
           "json_type"]

#: the configuration file of a results folder
CONFIG_NAME = "report.json"
MINUS = "−"


@dataclass(frozen=True)
class Reference:
    """A figure published in a paper: not a measurement of ours, so it is declared once, with its citation."""

    metric: str         # "nll" (test NLL) or "neg_elbo" (test −ELBO), nats per datum
    value: str          # as printed in the paper
    cite: str
    what: str

    @property
    def label(self) -> str:
        return {"nll": "NLL", "neg_elbo": f"{MINUS}ELBO"}[self.metric]


@dataclass(frozen=True)
class Setting:
    """A config key a run's row shows as the flag that sets it, unless it is null or ``hide``."""

    key: str
    flag: str
    hide: Any = None


@dataclass(frozen=True)
class Table:
    """A table of result files of any schema: one row per element at ``rows`` in each file (the file itself
    for ``""``; a mapping's items, with their key as ``key``), kept if it has the field ``with``."""

    rows: str
    columns: Tuple[Tuple[str, Any], ...]
    with_field: Optional[str] = None


@dataclass(frozen=True)
class ReportConfig:
    """A results folder's ``report.json``; the default is the generic report, with none of it."""

    references: Mapping[str, Reference] = field(default_factory=dict)
    compare_with: Tuple[Tuple[Mapping[str, Any], Tuple[str, ...]], ...] = ()
    headline: Tuple[Tuple[str, str], ...] = ()
    runs_model_order: Tuple[str, ...] = ()
    leaderboard_datasets: Mapping[str, str] = field(default_factory=dict)
    leaderboard_model_order: Tuple[str, ...] = ()
    model_options: Mapping[str, Any] = field(default_factory=dict)
    settings: Tuple[Setting, ...] = ()
    tables: Mapping[str, Table] = field(default_factory=dict)
    #: the results folder relative to the folder the pages are written to, ``""`` when they are beside the results
    #: (so their links reach the result files and run folders); set by ``pyro-zoo report``, never by report.json
    pages_to_results: str = ""

    def references_for(self, config: dict) -> List[Reference]:
        """The published figures a run is compared with: those of the first rule it matches."""
        flat = flat_config(config)
        for match, keys in self.compare_with:
            if matches(match, flat):
                return [self.references[k] for k in keys]
        return []


def flat_config(config: dict) -> dict:
    """A run's config with its model, guide and objective options merged in (older result files have none)."""
    flat = {k: v for k, v in config.items() if not k.endswith("_options")}
    for key in ("model_options", "guide_options", "objective_options"):
        flat.update(config.get(key) or {})
    return flat


def matches(match: Mapping[str, Any], record: Mapping[str, Any]) -> bool:
    """Does ``record`` have every field of ``match`` at its value (or at one of the values of a list)?"""
    return all(record.get(k) in v if isinstance(v, list) else record.get(k) == v for k, v in match.items())


def load_config(directory: Path) -> ReportConfig:
    """``directory/report.json``, checked, or the generic configuration when there is none."""
    path = Path(directory) / CONFIG_NAME
    if not path.is_file():
        return ReportConfig()
    data = read_json(path, "report configuration")
    try:
        return _parse(data)
    except (TypeError, ValueError) as e:
        raise ZooError(f"{path}: {e} (its keys are described in zoo.evaluation.report_config)") from None


def _parse(data: Any) -> ReportConfig:
    _expect(data, dict, "the file")
    unknown = set(data) - {"references", "compare_with", "headline", "runs", "leaderboard", "settings", "tables"}
    if unknown:
        raise ValueError(f"unknown key {sorted(unknown)[0]!r}")
    references = {}
    for key, ref in _expect(data.get("references", {}), dict, "references").items():
        where = f"references/{key}"
        metric, value, cite, what = (_need(ref, k, where) for k in ("metric", "value", "cite", "what"))
        if metric not in ("nll", "neg_elbo"):
            raise ValueError(f"{where}: metric is 'nll' or 'neg_elbo', not {metric!r}")
        references[key] = Reference(metric, str(value), str(cite), str(what))
    compare_with = []
    for i, rule in enumerate(_expect(data.get("compare_with", []), list, "compare_with")):
        where = f"compare_with/{i}"
        keys = tuple(_expect(_need(rule, "references", where), list, f"{where}/references"))
        missing = [k for k in keys if k not in references]
        if missing:
            raise ValueError(f"{where}: no reference {missing[0]!r} under references")
        compare_with.append((_expect(_need(rule, "match", where), dict, f"{where}/match"), keys))
    headline = []
    for i, entry in enumerate(_expect(data.get("headline", []), list, "headline")):
        if not (isinstance(entry, list) and len(entry) == 2):
            raise ValueError(f"headline/{i}: expected [FILE.json, RUN LABEL], not {entry!r}")
        headline.append((str(entry[0]), str(entry[1])))
    runs = _expect(data.get("runs", {}), dict, "runs")
    board = _expect(data.get("leaderboard", {}), dict, "leaderboard")
    settings = tuple(Setting(str(_need(s, "key", f"settings/{i}")), str(_need(s, "flag", f"settings/{i}")),
                             s.get("hide"))
                     for i, s in enumerate(_expect(data.get("settings", []), list, "settings")))
    tables = {}
    for name, spec in _expect(data.get("tables", {}), dict, "tables").items():
        where = f"tables/{name}"
        columns = []
        for j, column in enumerate(_expect(_need(spec, "columns", where), list, f"{where}/columns")):
            if not (isinstance(column, list) and len(column) == 2):
                raise ValueError(f"{where}/columns/{j}: expected [HEAD, CELL], not {column!r}")
            columns.append((str(column[0]), column[1]))
        tables[name] = Table(str(spec.get("rows", "")), tuple(columns), spec.get("with"))
    return ReportConfig(references=references, compare_with=tuple(compare_with), headline=tuple(headline),
                        runs_model_order=tuple(_expect(runs.get("model_order", []), list, "runs/model_order")),
                        leaderboard_datasets=_expect(board.get("datasets", {}), dict, "leaderboard/datasets"),
                        leaderboard_model_order=tuple(_expect(board.get("model_order", []), list,
                                                              "leaderboard/model_order")),
                        model_options=_expect(board.get("model_options", {}), dict, "leaderboard/model_options"),
                        settings=settings, tables=tables)


def json_type(value: Any) -> str:
    """What JSON calls the type of a parsed ``value`` (object, list, string, number, boolean, null)."""
    return _JSON_NAMES.get(type(value), type(value).__name__)


def _expect(value: Any, kind: type, where: str) -> Any:
    if not isinstance(value, kind):
        raise TypeError(f"{where} is a JSON {json_type(value)}, expected a JSON {_JSON_NAMES[kind]}")
    return value


def _need(entry: Any, key: str, where: str) -> Any:
    """``entry[key]``, where ``entry`` must be a JSON object that has ``key``."""
    if key not in _expect(entry, dict, where):
        raise ValueError(f"{where}: no {key!r}")
    return entry[key]


_JSON_NAMES = {dict: "object", list: "list", str: "string", int: "number", float: "number", bool: "boolean",
               type(None): "null"}
