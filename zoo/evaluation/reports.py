"""Reports of a folder of runs: every figure on its pages is rendered from a result file.

``pyro-zoo report DIR`` reads every ``*.json`` in DIR (a result file records its command, the git commit
and the hardware under ``provenance``; a run folder's ``results.json`` records its config) and renders
``DIR/README.md`` from the template ``DIR/README.template.md`` (or a default one). It also rewrites the
results block of the nearest ``README.md`` above DIR, between ``<!-- results:start -->`` and
``<!-- results:end -->``, and the component tables (``<!-- registry:start -->`` ...
``<!-- registry:end -->``) of the user guide ``zoo/README.md`` from the registry. So no figure is typed
by hand twice, and none is typed by hand at all: the prose of the template may not hold a decimal
number; it names the figure instead, and the report fills it in.

Beside it the report writes ``DIR/LEADERBOARD.md`` (:func:`render_leaderboard`): the best run per
(dataset, model, guide, objective), against published figures where the folder declares them, each
with a small plot of its training under ``DIR/plots/`` drawn from the run's ``history``. DIR may be a
folder of the user's own runs (run folders of ``pyro-zoo train`` or ``compare``, whose results.json
records the config, not a command): they get the same pages (:func:`load_user_runs`).

The report knows the harness's summary of a trained run (config, ``elbo``, ``nll``, ``history``, ...)
and nothing about particular models or benchmarks: what a folder's owner knows (the papers' figures and
which run they apply to, the headline runs, the order of models, the tables of other result files) is
data in ``DIR/report.json`` (:mod:`zoo.evaluation.report_config`).

Placeholders in the template:

- ``{{ table NAME }}``: one of the tables in :data:`TABLES` (``headline``, ``runs``, ``sources``) or
  declared under ``tables`` in ``report.json`` (:func:`declared_table`);
- ``{{ include FILE.json }}``: the Markdown tables the benchmark wrote to ``FILE.md`` beside ``FILE.json``;
- ``{{ FILE | PATH }}`` or ``{{ FILE | PATH | FORMAT }}``: one value of a result file. PATH walks
  the JSON by ``/``-separated keys; in a list, a segment selects the element with that ``label``
  (or that index). ``neg_elbo`` is −``elbo``. FORMAT is a Python format spec (default ``.2f``
  for floats), or ``x`` for a ratio such as ``1.09×``;
- ``{{ reference | KEY }}``: a figure from a paper, declared under ``references`` in ``report.json``.

Example::

    >>> runs = {"a.json": {"provenance": {"command": "python a.py"},
    ...                    "runs": [{"label": "b", "elbo": -88.123}]}}
    >>> render_template("NLL {{ a.json | runs/b/neg_elbo }} nats", runs)
    'NLL 88.12 nats'
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from zoo.core.errors import ZooError
from zoo.core.files import read_json, read_text
from zoo.core.components import OptionError
from zoo.evaluation.seed_stats import pool_seeds
from zoo.evaluation.report_config import CONFIG_NAME, MINUS, Reference, ReportConfig, Table, flat_config, \
    load_config, matches

__all__ = ["TABLES", "load_results", "render_template", "render_results_readme", "render_readme_block",
           "headline_runs", "declared_table", "render_leaderboard", "leaderboard_runs", "model_label",
           "replace_readme_block", "report", "START", "END", "TEMPLATE_NAME"]

START, END = "<!-- results:start -->", "<!-- results:end -->"
TEMPLATE_NAME = "README.template.md"
#: the generic report: no references, headline runs, declared tables or orders
GENERIC = ReportConfig()

Results = Dict[str, dict]       # file name -> parsed JSON


# ---------------------------------------------------------------------------------------------
# reading


def load_results(directory: Path) -> Results:
    """Every ``*.json`` in ``directory``, by file name. A file that is not JSON, or records no
    command, is an error naming the file: every figure must come with the command that made it."""
    directory = Path(directory)
    if not directory.is_dir():
        raise ZooError(f"{directory} is not a folder of result files or run folders")
    results: Results = {}
    for path in sorted(directory.glob("*.json")):
        if path.name == CONFIG_NAME:            # what the pages show, not a result (load_config)
            continue
        data = read_json(path, "JSON result file")
        if path.name in RUN_FILES:              # DIR is itself a run folder or a comparison: read below
            continue
        if not isinstance(data, dict):
            raise ZooError(f"{path}: holds a JSON {type(data).__name__}, not an object with provenance.command; "
                           f"fix or remove it")
        if not isinstance(data.get("provenance"), dict) \
                or not data["provenance"].get("command"):
            raise ZooError(f"{path}: no provenance.command; a result file must record the command that made it")
        markdown = path.with_suffix(".md")
        if markdown.is_file():                  # the script's own rendering of the same run, for {{ include }}
            data[MARKDOWN_KEY] = read_text(markdown, "Markdown file")
        results[path.name] = data
    results.update(load_user_runs(directory))
    if not results:
        raise ZooError(f"no *.json result files (or run folders with a results.json) in {directory}")
    return results


#: The JSON files the zoo's commands write in a run folder (``train``, ``eval --gaps``, ``gradients``) or a
#: comparison (``compare``): they record no command; the runs they hold are read from the results.json files.
RUN_FILES = ("results.json", "config.json", "compare.json", "grid.json", "gaps.json", "gradients.json")
#: where a user's run is marked in :data:`Results` (its config is its provenance: there is no command)
USER_RUN_KEY = "_user_run"


def load_user_runs(directory: Path) -> Results:
    """The user's own runs under ``directory``: each ``results.json`` written by ``pyro-zoo train`` or
    ``compare`` in DIR, DIR/RUN or DIR/COMPARISON/CELL (no deeper, so a big tree is not walked), keyed by
    its path relative to DIR and wrapped as a result file with one run labelled by its folder. Such a file
    records its config, not a command; a ``results.json`` that is not a run's summary is an error naming it.
    """
    runs: Results = {}
    for pattern in ("results.json", "*/results.json", "*/*/results.json"):
        for path in sorted(directory.glob(pattern)):
            data = read_json(path, "run folder's results.json")
            if not (isinstance(data, dict) and isinstance(data.get("config"), dict) and "elbo" in data):
                raise ZooError(f"{path}: not the results.json of a 'pyro-zoo train' or 'compare' run "
                               f"(no config and elbo); move it out of {directory}")
            name = path.relative_to(directory).as_posix()
            label = path.parent.relative_to(directory).as_posix() if path.parent != directory \
                else directory.resolve().name
            markdown = path.with_suffix(".md")
            shown = [f for f in ("samples.png", "reconstructions.png") if (path.parent / f).is_file()]
            runs[name] = {"provenance": {}, USER_RUN_KEY: True,
                          "runs": [dict(data, label=label, _folder_files=shown)]}
            if markdown.is_file():
                runs[name][MARKDOWN_KEY] = read_text(markdown, "Markdown file")
    return runs


def _training_runs(results: Results):
    """(file, run) for every trained-and-evaluated run (the harness's summary with its config)."""
    for name, data in results.items():
        runs = data.get("runs")
        if isinstance(runs, list):
            for run in runs:
                if isinstance(run, dict) and isinstance(run.get("config"), dict) and "elbo" in run:
                    yield name, run


def _find(results: Results, name: str, label: str) -> Optional[dict]:
    for file, run in _training_runs(results):
        if file == name and run.get("label") == label:
            return run
    return None


def _walk(value: Any, path: str, name: str) -> Any:
    """The value at ``path`` (``/``-separated) in a result file's JSON: a key of an object, or in a list
    the element with that ``label`` (or that index). ``neg_elbo`` is −``elbo``. KeyError if absent."""
    for seg in [s for s in path.split("/") if s]:
        if isinstance(value, dict) and seg == "neg_elbo" and "elbo" in value:
            value = -value["elbo"]
        elif isinstance(value, dict) and seg in value:
            value = value[seg]
        elif isinstance(value, list):
            hits = [e for e in value if isinstance(e, dict) and e.get("label") == seg]
            if hits:
                value = hits[0]
            elif seg.isdigit() and int(seg) < len(value):
                value = value[int(seg)]
            else:
                raise KeyError(f"no element {seg!r} in {name}")
        else:
            raise KeyError(f"no key {seg!r} in {name}")
    return value


# ---------------------------------------------------------------------------------------------
# formatting


def _num(v, spec: str = ".2f") -> str:
    if v is None:
        return "–"
    if isinstance(v, bool) or isinstance(v, (int, str)) and spec == ".2f":
        return str(v)
    if spec == "x":
        return f"{v:.2f}×"
    text = format(v, spec)
    return MINUS + text[1:] if text.startswith("-") else text


def _seed_mean(value, run: dict, se_key: str) -> str:
    """A figure, and for a run pooled over seeds (:func:`~zoo.evaluation.seed_stats.pool_seeds`) ± its SE across
    them and how many seeds."""
    if run.get(se_key) is None:
        return _num(value)
    return f"{_num(value)} ± {_num(run[se_key])} ({len(run['seeds'])} seeds)"


def _delta(measured: float, reference: Reference) -> str:
    d = measured - float(reference.value)
    sign = MINUS if d < 0 else "+"
    return f"{'yes' if d <= 0 else 'no'}, {sign}{abs(d):.2f}"


def _link(name: str, base: str) -> str:
    return f"[{name}]({base}{name})"


def _source(name: str, base: str = "") -> str:
    """A row's provenance: the result file, and (in the results README) its command in the sources table."""
    if base:
        return f"[{name.removesuffix('.json')}]({base}{name})"
    return f"{_link(name, '')} ([command](#{_anchor(name)}))"


def _anchor(name: str) -> str:
    return "cmd-" + re.sub(r"[^a-z0-9]+", "-", name.lower().removesuffix(".json")).strip("-")


def _epochs(run: dict) -> str:
    best = run.get("best_epoch")
    return f"{run.get('epochs_trained')}" + (f" (best {best})" if best is not None else "")


def _rank(order: Sequence[str], name: Optional[str]) -> int:
    """The place of ``name`` in a declared order; names not declared come after, all at one place."""
    return order.index(name) if name in order else len(order)


def settings(config: dict, report_config: ReportConfig = GENERIC) -> str:
    """The run's settings that the folder's ``report.json`` shows, as the flags that set them."""
    c = flat_config(config)
    out = []
    for setting in report_config.settings:
        v = c.get(setting.key)
        if v is None or v == setting.hide:
            continue
        if isinstance(v, bool):
            out.append(setting.flag)
        else:
            v = ",".join(map(str, v)) if isinstance(v, (list, tuple)) else f"{v:g}" if isinstance(v, float) else v
            out.append(f"{setting.flag} {v}")
    return "`" + " ".join(out) + "`" if out else "–"


def _table(head: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    if not rows:
        return "(no result files of this kind)"
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    lines += ["| " + " | ".join(str(c).replace("|", "\\|") if "`" not in str(c) else str(c) for c in row) + " |"
              for row in rows]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# tables of trained runs


def _reference_cells(run: dict, config: ReportConfig, short: bool = False) -> Tuple[str, str]:
    refs = config.references_for(run["config"])
    if not refs:
        return "–", "–"
    measured = {"nll": run.get("nll"), "neg_elbo": -run["elbo"]}
    ref = "; ".join(f"{r.label} {r.value}, {r.cite}" + ("" if short else f" ({r.what})") for r in refs)
    met = "; ".join(f"{r.label} {_delta(measured[r.metric], r)}" for r in refs)
    return ref, met


def headline_runs(results: Results, config: ReportConfig = GENERIC) -> List[Tuple[str, dict]]:
    """(file, run) of the folder's headline runs (``report.json``) present in ``results``."""
    found = [(name, _find(results, name, label)) for name, label in config.headline]
    return [(name, run) for name, run in found if run is not None]


def _headline_cells(name: str, run: dict, base: str, config: ReportConfig) -> List[str]:
    c = run["config"]
    ref, met = _reference_cells(run, config, short=bool(base))
    return [f"`{run['label']}`", f"`{c['model']}`", f"`{c['guide']}`", f"`{c['objective']}`", _epochs(run),
            _num(-run["elbo"]), _num(run["nll"]), ref, met, _source(name, base)]


_HEADLINE_HEAD = ["run", "model", "guide", "objective", "epochs", f"test {MINUS}ELBO", "test NLL (IS)",
                  "reference", "met", "source"]


def table_headline(results: Results, config: ReportConfig = GENERIC) -> str:
    rows = []
    for name, run in headline_runs(results, config):
        cells = _headline_cells(name, run, "", config)
        rows.append(cells[:7] + [_num(run.get("log_likelihood_data_se")), str(run.get("num_data")),
                                 settings(run["config"], config)] + cells[7:])
    return _table(_HEADLINE_HEAD[:7] + ["± data se", "test images", "settings"] + _HEADLINE_HEAD[7:], rows)


def render_readme_block(results: Results, config: ReportConfig, base: str) -> str:
    """The compact headline table for the top-level README; ``base`` is the results folder, relative to the
    README's folder (``benchmarks/results/``), for the links to the result files."""
    table = _table(_HEADLINE_HEAD, [_headline_cells(name, run, base, config)
                                    for name, run in headline_runs(results, config)])
    return (f"{START}\n<!-- generated by 'pyro-zoo report' from the result files; do not edit -->\n"
            f"{table}\n{END}")


def table_runs(results: Results, config: ReportConfig = GENERIC) -> str:
    order = config.runs_model_order
    runs = sorted(_training_runs(results), key=lambda fr: (_rank(order, fr[1]["config"].get("model")), fr[0]))
    rows = []
    for name, run in runs:
        c = run["config"]
        ref, met = _reference_cells(run, config)
        rows.append([f"`{run.get('label', '')}`", f"`{c.get('model')}`", f"`{c.get('guide')}`",
                     f"`{c.get('objective')}`", settings(c, config), _epochs(run), str(run.get("num_data")),
                     str(run.get("num_samples")), _num(-run["elbo"]), _num(run.get("nll")),
                     _num(run.get("log_likelihood_data_se")), str(run.get("active_units")),
                     _num(run.get("psis_khat_frac_over_0_7"), ".0%"), met, _source(name)])
    return _table(["run", "model", "guide", "objective", "settings", "epochs", "test images", "K",
                   f"{MINUS}ELBO", "NLL (IS)", "± data se", "active units", "k̂ > 0.7", "vs reference", "source"],
                  rows)


def table_sources(results: Results, config: ReportConfig = GENERIC) -> str:
    rows = []
    for name, d in results.items():
        p = d["provenance"]
        if d.get(USER_RUN_KEY):             # the user's run records its config (config.json beside it), no command
            rows.append([f'<a id="{_anchor(name)}"></a>{_link(name, "")}', "your run: `pyro-zoo train` with "
                         f"[its config]({Path(name).parent.as_posix()}/config.json)", "–", "–", "–"])
            continue
        commit = (p.get("git_commit") or "?")[:10] + (" (uncommitted changes)" if p.get("git_dirty") else "")
        threads = f", {p['cpu_threads']} torch threads" if p.get("cpu_threads") else ""
        hardware = f"{p.get('cpu', '?')}{threads}, GPU: {p.get('gpu') or 'none'}"
        rows.append([f'<a id="{_anchor(name)}"></a>{_link(name, "")}', f"`{p['command']}`", f"`{commit}`",
                     hardware, p.get("date", "?")])
    return _table(["file", "command", "commit", "hardware", "date"], rows)


#: The tables every folder has; a folder's ``report.json`` declares more (:func:`declared_table`).
TABLES: Dict[str, Callable[[Results, ReportConfig], str]] = {
    "headline": table_headline, "runs": table_runs, "sources": table_sources,
}


# ---------------------------------------------------------------------------------------------
# tables declared in report.json

_FIELD = re.compile(r"\{([^{}:]*)(?::([^{}]*))?\}")


def _get(row: dict, data: dict, path: str) -> Any:
    """A field of a declared table's row (``a/b``), or of its result file (``/a/b``); None if absent."""
    try:
        return _walk(data if path.startswith("/") else row, path, "")
    except KeyError:
        return None


def _fill_cell(template: str, row: dict, data: dict) -> Optional[str]:
    """``template`` with each ``{PATH}`` or ``{PATH:FORMAT}`` filled in, or None if a field is absent."""
    values = [_get(row, data, m.group(1)) for m in _FIELD.finditer(template)]
    if any(v is None or v == "" for v in values):
        return None
    filled = iter(values)
    return _FIELD.sub(lambda m: _num(next(filled), m.group(2) or ".2f"), template)


def _cell(spec: Any, row: dict, data: dict) -> str:
    """A declared table's cell. ``spec`` is a template (``"{variance:.4g}"``, ``"`{label}`"``); a list of
    alternatives, the first whose fields are all present (and, for ``{"when": MATCH, "cell": TEMPLATE}``,
    whose row matches), the last one usually plain text; or ``{"lookup": PATH, "key": TEMPLATE, "format":
    FORMAT}``, the entry of the mapping at PATH whose key is the template filled from the row."""
    if isinstance(spec, dict) and "lookup" in spec:
        key = _fill_cell(spec["key"], row, data)
        table = _get(row, data, spec["lookup"])
        value = table.get(key) if isinstance(table, dict) and key is not None else None
        return _num(value, spec.get("format", ".2f"))
    for choice in spec if isinstance(spec, list) else [spec]:
        if isinstance(choice, dict):
            if not matches(choice.get("when", {}), row):
                continue
            choice = choice["cell"]
        text = _fill_cell(choice, row, data)
        if text is not None:
            return text
    return "–"


def _rows(data: dict, table: Table) -> List[dict]:
    """The rows of one result file for a declared table (see :class:`~zoo.evaluation.report_config.Table`)."""
    found = _get(data, data, table.rows)
    if isinstance(found, dict) and table.rows:
        found = [dict(v, key=k) if isinstance(v, dict) else {"key": k, "value": v} for k, v in found.items()]
    elif isinstance(found, dict):
        found = [found]
    if not isinstance(found, list):
        return []
    return [r for r in found if isinstance(r, dict) and (table.with_field is None or table.with_field in r)]


def declared_table(results: Results, table: Table) -> str:
    """A table declared in ``report.json``: the rows of every result file, one column per ``[HEAD, CELL]``
    (:func:`_cell`), and the result file each row comes from."""
    rows = []
    for name, data in results.items():
        rows += [[_cell(cell, row, data) for _, cell in table.columns] + [_source(name)] for row in _rows(data, table)]
    return _table([head for head, _ in table.columns] + ["source"], rows)


# ---------------------------------------------------------------------------------------------
# templates

_PLACEHOLDER = re.compile(r"\{\{(.*?)\}\}")
_HAND_FIGURE = re.compile(r"(?<![\w.])\d+\.\d+")


def _value(results: Results, name: str, path: str):
    if name not in results:
        raise KeyError(f"no result file {name}")
    return _walk(results[name], path, name)


#: where :func:`load_results` keeps the text of the Markdown file a benchmark wrote beside its JSON
MARKDOWN_KEY = "_markdown"


def included_tables(results: Results, name: str) -> str:
    """``{{ include FILE.json }}``: the Markdown tables that the benchmark script wrote to ``FILE.md`` beside
    ``FILE.json`` in the same run (so each figure still comes from a result file with its command). A table's
    caption comes with it: the line just above it that ends in a colon ("KL on the test images, nats:"), which
    tells apart tables with the same columns."""
    if name not in results:
        raise KeyError(f"no result file {name}")
    text = results[name].get(MARKDOWN_KEY)
    if text is None:
        raise KeyError(f"{name} has no {Path(name).with_suffix('.md')} beside it to include")
    blocks, current, caption = [], [], None
    for line in text.splitlines() + [""]:
        if line.startswith("|"):
            if not current and caption:
                current += [caption, ""]
            current.append(line)
            continue
        if current:
            blocks.append("\n".join(current))
            current = []
        if line.strip():
            caption = line.strip() if line.rstrip().endswith(":") else None
    if not blocks:
        raise KeyError(f"{Path(name).with_suffix('.md')} holds no Markdown table")
    return "\n\n".join(blocks)


def _fill(results: Results, expr: str, config: ReportConfig) -> str:
    parts = [p.strip() for p in expr.split("|")]
    if len(parts) == 1 and parts[0].startswith("include "):
        return included_tables(results, parts[0].split(None, 1)[1].strip())
    if len(parts) == 1 and parts[0].startswith("table "):
        table = parts[0].split(None, 1)[1].strip()
        if table in TABLES:
            return TABLES[table](results, config)
        if table in config.tables:
            return declared_table(results, config.tables[table])
        raise KeyError(f"no table {table!r} (known: {', '.join([*TABLES, *config.tables])}; more are declared "
                       f"under 'tables' in {CONFIG_NAME})")
    if len(parts) == 2 and parts[0] == "reference":
        if parts[1] not in config.references:
            raise KeyError(f"no reference {parts[1]!r} (known: {', '.join(config.references) or 'none'}; "
                           f"they are declared under 'references' in {CONFIG_NAME})")
        return config.references[parts[1]].value
    if len(parts) in (2, 3):
        return _num(_value(results, parts[0], parts[1]), parts[2] if len(parts) == 3 else ".2f")
    raise KeyError("expected {{ table NAME }}, {{ include FILE.json }}, {{ FILE | PATH [| FORMAT] }} or "
                   "{{ reference | KEY }}")


def _check_no_hand_figures(template: str, where: str) -> None:
    """Prose may not quote a decimal figure; code (settings, commands) may."""
    in_code = False
    for i, line in enumerate(template.splitlines(), 1):
        if line.lstrip().startswith("```"):
            in_code = not in_code
            continue
        prose = re.sub(r"`[^`]*`", "", _PLACEHOLDER.sub("", line))
        prose = re.sub(r"\]\([^)]*\)", "]", prose)          # link targets are file names
        hit = None if in_code or line.startswith("    ") else _HAND_FIGURE.search(prose)
        if hit:
            raise ZooError(f"{where} line {i}: {hit.group()} is typed by hand; render it from a result file "
                           "with {{ FILE | PATH }} (see zoo.evaluation.reports)")


def render_template(template: str, results: Results, where: str = "template",
                    config: ReportConfig = GENERIC) -> str:
    """Fill the placeholders of ``template`` from ``results``; refuse figures typed by hand."""
    _check_no_hand_figures(template, where)

    def fill(match):
        try:
            return _fill(results, match.group(1), config)
        except (KeyError, TypeError, ValueError) as e:
            line = template.count("\n", 0, match.start()) + 1
            raise ZooError(f"{where} line {line}: {{{{{match.group(1)}}}}}: {e.args[0] if e.args else e}") from None
    return _PLACEHOLDER.sub(fill, template)


DEFAULT_TEMPLATE = """# Results

The best run per model, guide and objective, with its training curve: [the leaderboard](LEADERBOARD.md).

{{ table headline }}

## Every training run

{{ table runs }}

## Where each figure comes from

{{ table sources }}
"""

GENERATED_NOTE = (f"<!-- generated by 'pyro-zoo report' on this folder from its *.json result files and "
                  f"{TEMPLATE_NAME}; edit those, not this file -->\n")


def render_results_readme(directory: Path, results: Results, config: ReportConfig = GENERIC) -> str:
    directory = Path(directory)
    template_path = directory / TEMPLATE_NAME
    template = read_text(template_path, "template") if template_path.exists() else DEFAULT_TEMPLATE
    body = render_template(template, results, where=str(template_path), config=config)
    return GENERATED_NOTE + body.rstrip("\n") + "\n"


# ---------------------------------------------------------------------------------------------
# the leaderboard

LEADERBOARD_NAME = "LEADERBOARD.md"
#: the folder, beside the leaderboard, of the small plots the report draws from the result files' histories
PLOTS_DIR = "plots"


def model_label(config: dict, report_config: ReportConfig = GENERIC) -> str:
    """The model as the leaderboard groups it: with the options that ``report.json`` says make a variant
    of it (a VAE with a VampPrior is not the VAE of the papers), where they are not at their plain value."""
    flat = flat_config(config)
    variants = [flat.get(option) for option, plain in report_config.model_options.items()
                if flat.get(option) not in (None, plain)]
    return " + ".join([config.get("model", "?"), *map(str, variants)])


def _score(run: dict) -> float:
    """What 'best' means: the lowest importance-sampled NLL (the −ELBO where a run has none)."""
    return run["nll"] if isinstance(run.get("nll"), (int, float)) else -run["elbo"]


def leaderboard_runs(results: Results, config: ReportConfig = GENERIC) -> List[Tuple[str, dict]]:
    """(file, run): the best run per (dataset, model, guide, objective). The result files' runs count on
    the datasets ``report.json`` names (all if it names none); the folder's own run folders on any. A run
    scored on more test images beats one scored on a subset (``--eval-limit``), whatever their figures:
    only runs on the same images compare. Datasets come in the declared order, then by name; models too."""
    datasets = list(config.leaderboard_datasets)
    best: Dict[tuple, Tuple[str, dict]] = {}
    # a grid's seeds of one cell (run folders beside each other, or runs of one result file): one row, their mean
    for name, run in pool_seeds(_training_runs(results), source=lambda name: Path(name).parent.parent.as_posix()
                                if results[name].get(USER_RUN_KEY) else name):
        c = run["config"]
        dataset = str(c.get("dataset"))
        if datasets and dataset not in datasets and not results[name].get(USER_RUN_KEY):
            continue
        key = (dataset, model_label(c, config), c.get("guide"), c.get("objective"))
        rank = (-(run.get("num_data") or 0), _score(run))
        if key not in best or rank < (-(best[key][1].get("num_data") or 0), _score(best[key][1])):
            best[key] = (name, run)
    order = sorted(best, key=lambda k: (_rank(datasets, k[0]), k[0],
                                        _rank(config.leaderboard_model_order, best[k][1]["config"].get("model")),
                                        _score(best[k][1])))
    return [best[k] for k in order]


def plot_path(name: str, run: dict) -> str:
    """The leaderboard plot of a run, relative to the leaderboard: ``plots/FILE-LABEL.png``."""
    own = name.endswith("results.json")         # a user's run: its label is its folder, already unique
    stem = re.sub(r"[^A-Za-z0-9_]+", "-", run.get("label", "") if own else
                  f"{name.removesuffix('.json')}-{run.get('label', '')}").strip("-")
    return f"{PLOTS_DIR}/{stem}.png"


def _has_curve(run: dict) -> bool:
    history = run.get("history")
    return isinstance(history, list) and any(isinstance(h, dict) and "epoch" in h and "loss" in h for h in history)


def _plot_cell(name: str, run: dict, user: bool) -> str:
    cells = [f"![−ELBO per epoch]({plot_path(name, run)})"] if _has_curve(run) else []
    folder = Path(name).parent.as_posix()
    if user and "samples.png" in run.get("_folder_files", ()):
        cells.append(f"![samples]({folder}/samples.png)")
    return " ".join(cells) or "–"


def render_leaderboard(results: Results, archive: str = "README.md", config: ReportConfig = GENERIC) -> str:
    """The leaderboard page: per dataset, the best run per (model, guide, objective) with its figures
    against the published ones, and a small plot of its training from the result file's history."""
    rows: Dict[str, list] = {}
    for name, run in leaderboard_runs(results, config):
        c = run["config"]
        user = bool(results[name].get(USER_RUN_KEY))
        ref, met = _reference_cells(run, config, short=True)
        source = (f"[`{run['label']}`]({Path(name).parent.as_posix()}/) (your run)" if user
                  else f"`{run['label']}` in [{name.removesuffix('.json')}]({name})")
        rows.setdefault(str(c.get("dataset")), []).append(
            [f"`{model_label(c, config)}`", f"`{c.get('guide')}`", f"`{c.get('objective')}`",
             _seed_mean(-run["elbo"], run, "elbo_seed_se"), _seed_mean(run.get("nll"), run, "nll_seed_se"),
             _num(run.get("bits_per_dim_nll"), ".4f"), str(run.get("num_data")), _epochs(run), ref, met, source,
             _plot_cell(name, run, user)])
    head = ["model", "guide", "objective", f"test {MINUS}ELBO", "test NLL (IS)", "test NLL bits/dim", "test images",
            "epochs", "paper", "met", "run", "training"]
    sections = []
    for dataset, table_rows in rows.items():
        title = config.leaderboard_datasets.get(dataset, f"`{dataset}`")
        bits = any(r[5] != "–" for r in table_rows)    # a column where some run's data are discrete levels
        keep = [i for i in range(len(head)) if i != 5 or bits]
        sections.append(f"## {title}\n\n{_table([head[i] for i in keep], [[r[i] for i in keep] for r in table_rows])}")
    return (f"<!-- generated by 'pyro-zoo report' from the *.json result files beside it; do not edit -->\n"
            f"# Leaderboard\n\n"
            f"The best run per model, guide and objective: nats per datum on the test images, lower is better "
            f"(the importance-sampled NLL decides; a run on all test images beats one on a subset). \"paper\" is "
            f"the published figure for the same model on the same data, \"met\" the measured figure minus it. "
            f"\"training\" plots the training bound and the validation {MINUS}ELBO per epoch from the result "
            f"file's history (and a run folder's samples where it has them). Every run, with its command or config: "
            f"[the archive]({archive}).\n\n" + ("\n\n".join(sections) or "(no trained runs)") + "\n")


def leaderboard_plots(results: Results, config: ReportConfig = GENERIC) -> Dict[str, list]:
    """plot path (relative to the leaderboard) -> the history it is drawn from, for each leaderboard run."""
    return {plot_path(name, run): run["history"] for name, run in leaderboard_runs(results, config)
            if _has_curve(run)}


def replace_readme_block(readme: str, block: str, where: str = "README.md", start_mark: str = START,
                         end_mark: str = END) -> str:
    start, end = readme.find(start_mark), readme.find(end_mark)
    if start < 0 or end < start:
        raise ZooError(f"{where}: no block ({start_mark} ... {end_mark}) to rewrite")
    return readme[:start] + block + readme[end + len(end_mark):]


REGISTRY_START, REGISTRY_END = "<!-- registry:start -->", "<!-- registry:end -->"
#: the user guide beside the package, whose component tables the report also regenerates (path from the repository root)
CATALOG = Path("zoo") / "README.md"


def render_registry_block() -> str:
    """The README's component tables, generated from the registry (:func:`zoo.registry.registry_markdown`)."""
    from zoo.registry import registry_markdown
    return (f"{REGISTRY_START}\n<!-- generated by 'pyro-zoo report' from the registry; do not edit -->\n"
            f"{registry_markdown()}\n{REGISTRY_END}")


def _holds(path: Path, text: str) -> bool:
    """Does ``path`` hold exactly ``text`` (as written: UTF-8)? Compared as bytes, so any file can be compared."""
    return path.is_file() and path.read_bytes() == text.encode("utf-8")


def find_readme(directory: Path) -> Optional[Path]:
    """The nearest README.md above ``directory`` that has a results block (the repository's)."""
    for parent in Path(directory).resolve().parents:
        candidate = parent / "README.md"
        if candidate.is_file() and START in read_text(candidate, "README"):
            try:
                return candidate.relative_to(Path.cwd())
            except ValueError:
                return candidate
    return None


def report(directory: Path, out: Optional[Path] = None, readme: Optional[Path] = None,
           check: bool = False) -> List[Path]:
    """Render the results README, the leaderboard (and the top-level README's results block) from the
    result files and ``report.json`` of ``directory``; write them, or with ``check`` raise
    :class:`ZooError` if the files on disk differ. Everything is rendered before anything is written,
    and each file is replaced atomically, so an error leaves the files as they were.

    Returns the files written (or checked).
    """
    from zoo.training.checkpoint import atomic_write_text    # torch is only needed to write
    directory = Path(directory)
    results = load_results(directory)
    config = load_config(directory)
    out = Path(out) if out else directory / "README.md"
    if out.is_dir():
        raise OptionError("out", f"{out} is a folder; give the page's file name, e.g. {out / 'README.md'}")
    if not out.parent.is_dir():
        raise OptionError("out", f"{out}: the folder {out.parent} does not exist; create it or write elsewhere")
    outputs = {out: render_results_readme(directory, results, config),
               out.parent / LEADERBOARD_NAME: render_leaderboard(results, archive=out.name, config=config)}
    plot_histories = {out.parent / p: h for p, h in leaderboard_plots(results, config).items()}
    if readme is None and all(d.get(USER_RUN_KEY) for d in results.values()):
        readme = None                       # a folder of the user's own runs: the repository's README is not theirs
    else:
        readme = Path(readme) if readme else find_readme(directory)
    if readme is not None:
        if readme.is_dir():
            raise OptionError("readme", f"{readme} is a folder; give the README file, e.g. {readme / 'README.md'}")
        if not readme.is_file():
            raise ZooError(f"{readme}: no such README")
        base = Path(os.path.relpath(directory.resolve(), readme.resolve().parent)).as_posix() + "/"
        current = read_text(readme, "README")
        current = replace_readme_block(current, render_readme_block(results, config, base), str(readme))
        if REGISTRY_START in current:
            current = replace_readme_block(current, render_registry_block(), str(readme), REGISTRY_START, REGISTRY_END)
        outputs[readme] = current
        catalog = readme.parent / CATALOG
        if catalog.is_file() and REGISTRY_START in read_text(catalog, "README"):
            outputs[catalog] = replace_readme_block(read_text(catalog, "README"), render_registry_block(), str(catalog),
                                                    REGISTRY_START, REGISTRY_END)
    if check:
        stale = [str(p) for p, text in outputs.items() if not _holds(p, text)]
        stale += [str(p) for p in plot_histories if not p.is_file()]     # a plot's pixels depend on matplotlib
        if stale:
            raise ZooError(f"{', '.join(stale)} out of date with the result files; "
                           f"run 'pyro-zoo report {directory.as_posix()}'")
        return list(outputs)
    from zoo.evaluation.plots import history_png
    from zoo.training.checkpoint import atomic_write_bytes
    images = {path: history_png(history) for path, history in plot_histories.items()}    # all drawn, then written
    if images:
        (out.parent / PLOTS_DIR).mkdir(exist_ok=True)
    for path, png in images.items():
        if not (path.is_file() and path.read_bytes() == png):
            atomic_write_bytes(path, png)
    for path, text in outputs.items():
        if not _holds(path, text):
            atomic_write_text(path, text)
    return list(outputs) + list(images)
