"""Reports of a folder of runs: every figure on its pages is rendered from a result file.

``pyro-zoo report DIR`` reads every ``*.json`` in DIR (a result file records its command, the git commit
and the hardware under ``provenance``; a run folder's ``results.json`` records its config) and renders
the archive page ``DIR/README.md`` from the template ``DIR/README.template.md`` (or a default one); for a
folder of the user's own runs the pages go to ``reports/NAME/`` under the current directory instead, never
into the run folders (:func:`default_out`), and ``--out`` puts them anywhere. It also rewrites the
results block of the nearest ``README.md`` above DIR, between ``<!-- results:start -->`` and
``<!-- results:end -->``, and the component tables (``<!-- registry:start -->`` ...
``<!-- registry:end -->``) of the user guide ``zoo/README.md`` from the registry. So no figure is typed
by hand twice, and none is typed by hand at all: the prose of the template may not hold a decimal
number; it names the figure instead, and the report fills it in.

Beside it the report writes ``LEADERBOARD.md`` (:func:`render_leaderboard`): the best run per
(dataset, model, guide, objective), reliable estimates first (:mod:`zoo.evaluation.reliability`), against
published figures where the folder declares them, each with a linked thumbnail of its training under
``plots/`` drawn from the run's ``history``. Every table is in the papers' convention (−ELBO and NLL,
positive, lower is better) and carries the PSIS flag. DIR may be a
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

import contextlib
import dataclasses
import hashlib
import json
import os
import posixpath
import re
import secrets
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from zoo.core.errors import ZooError
from zoo.core.files import SEAL, read_json, read_text, seal_holds
from zoo.core.components import OptionError
from zoo.evaluation.reliability import AGREEMENT_NATS, BDMC_TRUST_NATS, UNRELIABLE_SHARE, agreement_verdict, ais_minus_is, \
    is_of_ais_images, is_unreliable, reliability_cell, reliability_legend
from zoo.evaluation.seed_stats import pool_seeds
from zoo.evaluation.report_config import CONFIG_NAME, MINUS, Reference, ReportConfig, Table, flat_config, \
    json_type, load_config, matches

__all__ = ["TABLES", "load_results", "render_template", "render_results_readme", "render_results_pages",
           "render_readme_block",
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
        if "runs" in data and not isinstance(data["runs"], (list, dict)):     # else shown as no runs at all
            raise ZooError(f"{path}: runs is a JSON {json_type(data['runs'])}, expected a JSON list of runs (objects "
                           f"with a label), or an object of them by name; fix or remove it")
        check_training_runs(path, data)
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
RUN_FILES = ("results.json", "config.json", "compare.json", "grid.json", "gaps.json", "gradients.json", "ais.json",
             "bdmc.json")
#: where a user's run is marked in :data:`Results` (its config is its provenance: there is no command)
USER_RUN_KEY = "_user_run"


def load_user_runs(directory: Path) -> Results:
    """The user's own runs under ``directory``: each ``results.json`` written by ``pyro-zoo train`` or
    ``compare`` in DIR, DIR/RUN or DIR/COMPARISON/CELL (no deeper, so a big tree is not walked), keyed by
    its path relative to DIR and wrapped as a result file with one run labelled by its folder. Such a file
    records its config, not a command; a ``results.json`` that is not a run's summary is an error naming it, and so
    is one edited since the zoo wrote it (its :data:`~zoo.core.files.SEAL` no longer holds: a hand-edited figure, a
    NaN, a word). One without a seal, written before runs were sealed, is taken as it is.
    """
    runs: Results = {}
    for pattern in ("results.json", "*/results.json", "*/*/results.json"):
        for path in sorted(directory.glob(pattern)):
            data = read_json(path, "run folder's results.json")
            if not (isinstance(data, dict) and isinstance(data.get("config"), dict) and "elbo" in data):
                raise ZooError(f"{path}: not the results.json of a 'pyro-zoo train' or 'compare' run "
                               f"(no config and elbo); move it out of {directory}")
            if SEAL in data and not seal_holds(data):
                raise ZooError(f"{path} was edited after pyro-zoo wrote it (its content no longer matches its {SEAL}), "
                               f"so its figures are not the run's; restore the file, re-evaluate the run with "
                               f"'pyro-zoo eval {path.parent} --force', or move it out of {directory}")
            check_training_run(data, str(path))
            _check_own_folder(data, path, directory)
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


#: What makes a run the run of its folder: the keys of its training that neither ``eval`` nor ``train --resume``
#: changes, so a run's results.json and its folder's config.json agree on them however the run went on since (a
#: resume stopped before its evaluation leaves new epochs or lr in config.json beside the old results).
RUN_IDENTITY = ("model", "guide", "objective", "dataset", "model_options", "guide_options", "objective_options",
                "seed", "batch_size")


def _check_own_folder(data: Mapping, path: Path, directory: Path) -> None:
    """Refuse a results.json whose run is not that of its folder's config.json (the results of two cells
    swapped, or copied in from another run): the report labels a row by its folder and shows that folder's
    images, so another run's figures there would be shown as this one's."""
    config_path = path.parent / "config.json"
    if not config_path.is_file():
        return
    config = read_json(config_path, "run config")
    if not isinstance(config, dict):
        return                        # not a config the zoo wrote: the run folder's own reader refuses it
    differ = [k for k in RUN_IDENTITY if k in config and k in data["config"] and config[k] != data["config"][k]]
    if differ:
        key = differ[0]
        raise ZooError(f"{path} is not the results of the run in its folder: its {key} is "
                       f"{_short(data['config'][key])}, {config_path.name}'s is {_short(config[key])}; restore the "
                       f"folder's own results.json, re-evaluate it with 'pyro-zoo eval {path.parent} --force', or "
                       f"move it out of {directory}")


def _short(value) -> str:
    text = json.dumps(value)
    return text if len(text) <= 60 else text[:60] + "…"


#: The longest label of a run (it names the run in tables and its plot's file name) and of a component's name (a
#: registered name, or a model file's path and NAME).
MAX_LABEL, MAX_NAME = 200, 4200
#: What a training run's summary must hold for the report to read it: its label, its config's component names
#: (strings; the model always), and its figures (numbers, or null where not measured; the ELBO always).
_RUN_NAMES = ("model", "guide", "objective", "dataset")
_RUN_FIGURES = ("elbo", "nll", "log_likelihood", "log_likelihood_se", "log_likelihood_data_se", "bits_per_dim_nll",
                "psis_khat_frac_over_0_7", "elbo_seed_se", "nll_seed_se")


def check_training_runs(path: Path, data: dict) -> None:
    """Refuse in one line each training run of the result file ``data`` (the harness's summary: a ``config``
    object and an ``elbo``) that :func:`check_training_run` refuses, naming the file and the run."""
    runs = data.get("runs")
    for i, run in enumerate(runs if isinstance(runs, list) else []):
        if isinstance(run, dict) and isinstance(run.get("config"), dict) and "elbo" in run:
            label = run.get("label")
            shown = repr(label) if isinstance(label, str) and 0 < len(label) <= MAX_LABEL else str(i)
            check_training_run(run, f"{path}: run {shown}")


def check_training_run(run: dict, where: str) -> None:
    """Refuse in one line (``where``: the file and run) a training run that holds what no zoo command writes
    where the report reads it: a label that is not a short string, a component name that is not a string (a
    list where a model name belongs), a figure that is not a number."""
    def refuse(what: str) -> None:
        raise ZooError(f"{where}: {what}; a zoo command never writes that: fix or remove the file")
    label = run.get("label", "")
    if not isinstance(label, str):
        refuse(f"its label is a JSON {json_type(label)}, not a string")
    if len(label) > MAX_LABEL:
        refuse(f"its label has {len(label)} characters, more than the {MAX_LABEL} a label may have")
    config = run["config"]
    for key in _RUN_NAMES:
        value = config.get(key)
        if (value is not None or key == "model") and not isinstance(value, str):
            refuse(f"its config's {key} is a JSON {json_type(value)}, not a name")
        if isinstance(value, str) and len(value) > MAX_NAME:
            refuse(f"its config's {key} has {len(value)} characters, more than any name or file path")
    for key in _RUN_FIGURES:
        value = run.get(key)
        if (value is not None or key == "elbo") and (isinstance(value, bool) or not isinstance(value, (int, float))):
            refuse(f"its {key} is a JSON {json_type(value)}, not a number")
        if isinstance(value, float) and (value != value or abs(value) == float("inf")):
            # the zoo writes a figure it could not compute as null; NaN is JSON only to Python's reader
            refuse(f"its {key} is {json.dumps(value)}, not a finite number")


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
    the element with that ``label`` (or that index). ``neg_KEY`` is −``KEY``. KeyError if absent."""
    for seg in [s for s in path.split("/") if s]:
        if isinstance(value, dict) and seg not in value and seg.startswith("neg_") \
                and isinstance(value.get(seg[4:]), (int, float)):
            value = -value[seg[4:]]
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
    return f"[{name}]({_in_results(base, name)})"


def _source(name: str, base: str = "", prefix: str = "") -> str:
    """A row's provenance: the result file, and (in the results README) its command in the sources table.
    ``base``: the compact form of the top-level README, linking from there; ``prefix``: the results folder
    relative to the page (:attr:`ReportConfig.pages_to_results`)."""
    if base:
        return f"[{name.removesuffix('.json')}]({base}{name})"
    return f"{_link(name, prefix)} ([command](#{_anchor(name)}))"


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


def _ais_nll(run: dict) -> str:
    """IS and AIS (its largest T) of the same images side by side, NLL ± Monte Carlo SE each, or a dash where no AIS
    is recorded (:func:`~zoo.evaluation.reliability.is_of_ais_images`)."""
    ais = run.get("ais") if isinstance(run.get("ais"), dict) else {}
    rows = ais.get("rows") if isinstance(ais.get("rows"), list) else []
    if not rows or ais_minus_is(run) is None:
        return "–"
    is_record, row = is_of_ais_images(run), rows[-1]

    def nll(record) -> str:
        se = record.get("log_likelihood_se")
        return _num(-record["log_likelihood"]) + (f" ± {se:.3f}" if isinstance(se, (int, float)) else "")
    return f"{nll(is_record)} / {nll(row)} (T {row.get('num_temperatures')})"


def _headline_cells(name: str, run: dict, base: str, config: ReportConfig) -> List[str]:
    c = run["config"]
    ref, met = _reference_cells(run, config, short=bool(base))
    return [f"`{run['label']}`", f"`{c['model']}`", f"`{c['guide']}`", f"`{c['objective']}`", _epochs(run),
            _num(-run["elbo"]), _num(run["nll"]), _ais_nll(run), agreement_verdict(run), reliability_cell(run, 0),
            ref, met, _source(name, base)]


_HEADLINE_HEAD = ["run", "model", "guide", "objective", "epochs", f"test {MINUS}ELBO", "test NLL (IS)",
                  "NLL IS / AIS, same images", "verdict", "k̂>0.7", "reference", "met", "source"]
#: under every table of trained runs: the convention, and what the short heads and the flag mean
RUNS_LEGEND = (f"Nats per test image, lower is better: {MINUS}ELBO is the negated evidence lower bound, NLL the "
               f"importance-sampled negative log-likelihood. {reliability_legend()}.")


def table_headline(results: Results, config: ReportConfig = GENERIC) -> str:
    rows = []
    for name, run in headline_runs(results, config):
        cells = _headline_cells(name, run, "", config)
        rows.append(cells[:10] + [_num(run.get("log_likelihood_data_se")), str(run.get("num_data")),
                                  settings(run["config"], config)] + cells[10:])
    return (_table(_HEADLINE_HEAD[:10] + ["± data se", "test images", "settings"] + _HEADLINE_HEAD[10:], rows)
            + f"\n\n{RUNS_LEGEND} ± data se: the NLL's standard error over the choice of test images; met: "
              f"ours minus the paper's figure.")


def _paper_cell(run: dict, config: ReportConfig) -> str:
    """The published figures a run is compared with, compactly: ``NLL 88.7, A et al. 2016: met by 0.07``."""
    measured = {"nll": run.get("nll"), "neg_elbo": -run["elbo"]}
    cells = []
    for r in config.references_for(run["config"]):
        d = measured[r.metric] - float(r.value)
        cells.append(f"{r.label} {r.value}, {r.cite}: {'met' if d <= 0 else 'missed'} by {abs(d):.2f}")
    return "; ".join(cells) or "–"


def render_readme_block(results: Results, config: ReportConfig, base: str) -> str:
    """The compact headline table for the top-level README: the run (linked to its result file), what it is,
    its two figures, the PSIS flag and the paper's figure, narrow enough to read without a scroll (settings,
    epochs and commands are on the results page). ``base`` is the results folder, relative to the README's
    folder (``benchmarks/results/``), for the links to the result files."""
    rows = []
    for name, run in headline_runs(results, config):
        c = run["config"]
        rows.append([f"[`{run['label']}`]({base}{name})", f"{c['model']} · {c['guide']} · {c['objective']}",
                     _num(-run["elbo"]), _num(run["nll"]), _ais_nll(run), agreement_verdict(run),
                     _paper_cell(run, config)])
    table = _table(["run", "model · guide · objective", f"{MINUS}ELBO", "NLL (IS)", "NLL IS / AIS, same images",
                    "verdict", "paper"], rows)
    legend = (f"Nats per test image, lower is better. NLL (IS): importance sampling, K = 5000, all test images; "
              f"IS / AIS: importance sampling and annealed importance sampling (its largest T) of the same images, "
              f"each ± its Monte Carlo standard error (a fixed random subset where the verdict names its size). "
              f"verdict: the figure to use, where AIS's own error is bounded: its BDMC gap (on data from the model, "
              f"with no more temperatures, chains or leapfrog steps than AIS ran, from the same start) within "
              f"±{BDMC_TRUST_NATS} nats and its replicas, where run, "
              f"agreeing on all but {UNRELIABLE_SHARE:.0%} of images. Then ✓ where IS and AIS agree (within "
              f"{AGREEMENT_NATS} nats plus three standard errors, themselves below {AGREEMENT_NATS}), and ✓ AIS's NLL "
              f"with IS's shortfall where IS sits below it (both are stochastic lower bounds); else ⚠ saying what is "
              f"missing; ⚠ where AIS sits below IS; without AIS, the share of images whose PSIS k-hat exceeds 0.7, ⚠ "
              f"above {UNRELIABLE_SHARE:.0%}. paper: the published figure, met or missed by ours.")
    return (f"{START}\n<!-- generated by 'pyro-zoo report' from the result files; do not edit -->\n"
            f"{table}\n\n{legend}\n{END}")


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
                     reliability_cell(run, 0), met, _source(name, prefix=config.pages_to_results)])
    return (_table(["run", "model", "guide", "objective", "settings", "epochs", "test images", "K",
                    f"{MINUS}ELBO", "NLL (IS)", "± data se", "active units", "k̂>0.7", "vs reference", "source"],
                   rows) + f"\n\n{RUNS_LEGEND} K: importance samples per test image.")


def table_sources(results: Results, config: ReportConfig = GENERIC) -> str:
    rows = []
    for name, d in results.items():
        p = d["provenance"]
        if d.get(USER_RUN_KEY):             # the user's run records its config (config.json beside it), no command
            rows.append([f'<a id="{_anchor(name)}"></a>{_link(name, config.pages_to_results)}', "your run: "
                         f"`pyro-zoo train` with [its config]("
                         f"{_in_results(config.pages_to_results, Path(name).parent.as_posix() + '/config.json')})",
                         "–", "–", "–"])
            continue
        commit = (p.get("git_commit") or "?")[:10] + (" (uncommitted changes)" if p.get("git_dirty") else "")
        threads = f", {p['cpu_threads']} torch threads" if p.get("cpu_threads") else ""
        hardware = f"{p.get('cpu', '?')}{threads}, GPU: {p.get('gpu') or 'none'}"
        rows.append([f'<a id="{_anchor(name)}"></a>{_link(name, config.pages_to_results)}', f"`{p['command']}`",
                     f"`{commit}`",
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


def declared_table(results: Results, table: Table, config: ReportConfig = GENERIC) -> str:
    """A table declared in ``report.json``: the rows of every result file, one column per ``[HEAD, CELL]``
    (:func:`_cell`), and the result file each row comes from."""
    rows = []
    for name, data in results.items():
        rows += [[_cell(cell, row, data) for _, cell in table.columns] + [_source(name, prefix=config.pages_to_results)]
                 for row in _rows(data, table)]
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
            return declared_table(results, config.tables[table], config)
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


def _prose(template: str):
    """(line number, the line's prose) for each line outside code: fenced and indented blocks are skipped, and
    inline code and the placeholders are taken out of the line."""
    in_code = False
    for i, line in enumerate(template.splitlines(), 1):
        if line.lstrip().startswith("```"):
            in_code = not in_code
        elif not in_code and not line.startswith("    "):
            yield i, re.sub(r"`[^`]*`", "", _PLACEHOLDER.sub("", line))


def _check_prose(template: str, where: str) -> None:
    """Prose may not quote a decimal figure (code, settings and commands may), and a placeholder opens and closes
    on one line (one broken across lines would pass into the page unrendered)."""
    for i, prose in _prose(template):
        hit = _HAND_FIGURE.search(re.sub(r"\]\([^)]*\)", "]", prose))      # link targets are file names
        if hit:
            raise ZooError(f"{where} line {i}: {hit.group()} is typed by hand; render it from a result file "
                           "with {{ FILE | PATH }} (see zoo.evaluation.reports)")
        if "{{" in prose or "}}" in prose:
            raise ZooError(f"{where} line {i}: a placeholder's '{{{{' and '}}}}' must be on the same line; join "
                           "the placeholder onto one line")


def render_template(template: str, results: Results, where: str = "template",
                    config: ReportConfig = GENERIC) -> str:
    """Fill the placeholders of ``template`` from ``results``; refuse figures typed by hand and placeholders
    broken across lines."""
    _check_prose(template, where)

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
    """The results page as one text (its pages, where the template splits it, joined): :func:`render_results_pages`
    gives them apart."""
    return "".join(render_results_pages(directory, results, config).values())


#: a template line that starts a page of its own: ``<!-- page: NAME.md -->``; the page runs to the next such line
PAGE_MARKER = re.compile(r"^<!-- page: ([a-z0-9][a-z0-9_-]*\.md) -->[ \t]*$", re.M)
#: the template line where the index lists its pages (else they are listed where the first page began)
PAGES_PLACE = "<!-- pages -->"


def render_results_pages(directory: Path, results: Results, config: ReportConfig = GENERIC,
                         index: str = "README.md") -> Dict[str, str]:
    """The results pages, ``{file name: text}``: the template rendered, then split where it says
    (:data:`PAGE_MARKER`) so that no page is thousands of lines. The first is the index (the template's name without
    ``.template``: ``index``) and lists the others by their first heading; a link to an anchor (``#...``) that
    another page holds is pointed at that page."""
    directory = Path(directory)
    template_path = directory / TEMPLATE_NAME
    template = read_text(template_path, "template") if template_path.exists() else DEFAULT_TEMPLATE
    # the template's markers alone split pages: each becomes a token no result file can hold before the template is
    # rendered, so a marker inside an included table or code block (a result file's .md) stays text
    token = secrets.token_hex(8)
    template = PAGE_MARKER.sub(lambda m: f"<!-- {token} {m.group(1)} -->", template)
    body = render_template(template, results, where=str(template_path), config=config)
    parts = re.split(rf"^<!-- {token} (\S+) -->[ \t]*$", body, flags=re.M)
    named = list(zip(parts[1::2], parts[2::2]))
    if len({name for name, _ in named}) != len(named) or any(name in (index, LEADERBOARD_NAME) for name, _ in named):
        raise ZooError(f"{template_path}: a page is named twice (or as the index, {index}, or the leaderboard); name "
                       f"each '<!-- page: NAME.md -->' once")
    taken = [name for name, _ in named if (directory / name).with_suffix(".json").is_file()]
    if taken:
        raise ZooError(f"{template_path}: page {taken[0]} would overwrite the table of the result file "
                       f"{Path(taken[0]).stem}.json; name the page otherwise")
    titles = {name: next((line[3:].strip() for line in text.splitlines() if line.startswith("## ")), name)
              for name, text in named}
    listing = "\n".join(f"- [{titles[name]}]({name})" for name, _ in named)
    head = parts[0]
    if named:
        head = head.replace(PAGES_PLACE, listing, 1) if PAGES_PLACE in head else head.rstrip("\n") + \
            "\n\n" + listing + "\n"
    pages = {index: head, **dict(named)}
    anchors = {name: _anchors(text) for name, text in pages.items()}
    out = {}
    for name, text in pages.items():
        def point(match, name=name):
            anchor = match.group(1)
            if anchor in anchors[name]:
                return match.group(0)
            home = next((other for other, held in anchors.items() if anchor in held), None)
            return match.group(0) if home is None else f"]({home}#{anchor})"
        text = re.sub(r"\]\(#([^)\s]+)\)", point, text)
        back = "" if name == index else f"[← all results]({index})\n\n"
        out[name] = GENERATED_NOTE + back + (text if name == index else _promoted(text)).strip("\n") + "\n"
    return out


def _promoted(text: str) -> str:
    """Every heading of a page one level up (``## Speed`` becomes its title, ``# Speed``), outside fenced code: a
    page of its own starts at H1, as a site's page must."""
    lines, fenced = [], False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
        lines.append(line[1:] if not fenced and line.startswith("##") else line)
    return "\n".join(lines)


def _anchors(text: str) -> set:
    """The anchors a Markdown page holds: GitHub's slug of each heading, and each ``<a id=...>``/``name=``."""
    found = {m.group(1) for m in re.finditer(r'<a (?:id|name)="([^"]+)"', text)}
    for line in text.splitlines():
        if line.startswith("#"):
            heading = line.lstrip("#").strip().lower()
            found.add(re.sub(r"[^\w\- ]", "", heading).replace(" ", "-"))
    return found


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


def _standing(run: dict) -> tuple:
    """How a run ranks against another of the same entry: more test images first (only runs on the same images
    compare), then a reliable NLL before an unreliable one (:mod:`zoo.evaluation.reliability`), then the score."""
    return -(run.get("num_data") or 0), is_unreliable(run), _score(run)


def leaderboard_runs(results: Results, config: ReportConfig = GENERIC) -> List[Tuple[str, dict]]:
    """(file, run): the best run per (dataset, model, guide, objective). The result files' runs count on
    the datasets ``report.json`` names (all if it names none); the folder's own run folders on any. A run
    scored on more test images beats one scored on a subset (``--eval-limit``), whatever their figures:
    only runs on the same images compare; then a run whose NLL is reliable beats one whose NLL is not.
    Datasets come in the declared order, then by name; within one, the reliable entries first, then the
    unreliable ones, each by the declared order of models and by score. A committed checkpoint scored again
    (a run or result file naming its ``checkpoint``, with no training history: the AIS and headline files) is
    left to the archive: the
    same model's training run stands for it here, with its curve, and a second draw of the same estimate does
    not displace it by its Monte Carlo noise."""
    datasets = list(config.leaderboard_datasets)
    best: Dict[tuple, Tuple[str, dict]] = {}
    # a grid's seeds of one cell (run folders beside each other, or runs of one result file): one row, their mean
    for name, run in pool_seeds(_training_runs(results), source=lambda name: Path(name).parent.parent.as_posix()
                                if results[name].get(USER_RUN_KEY) else name):
        c = run["config"]
        dataset = str(c.get("dataset"))
        if _rescored(results, name, run):
            continue
        if datasets and dataset not in datasets and not results[name].get(USER_RUN_KEY):
            continue
        key = (dataset, model_label(c, config), c.get("guide"), c.get("objective"))
        if key not in best or _standing(run) < _standing(best[key][1]):
            best[key] = (name, run)
    order = sorted(best, key=lambda k: (_rank(datasets, k[0]), k[0], is_unreliable(best[k][1]),
                                        _rank(config.leaderboard_model_order, best[k][1]["config"].get("model")),
                                        _score(best[k][1])))
    return [best[k] for k in order]


def _rescored(results: Results, name: str, run: dict) -> bool:
    """Whether ``run`` of result file ``name`` scores a committed checkpoint again (the run or its file names
    the ``checkpoint``) without the training history that produced it."""
    return bool(run.get("checkpoint") or results[name].get("checkpoint")) and not run.get("history")


def plot_path(name: str, run: dict) -> str:
    """The leaderboard plot of a run, relative to the leaderboard: ``plots/FILE-LABEL.png``."""
    own = name.endswith("results.json")         # a user's run: its label is its folder, already unique
    stem = re.sub(r"[^A-Za-z0-9_]+", "-", run.get("label", "") if own else
                  f"{name.removesuffix('.json')}-{run.get('label', '')}").strip("-")
    if len(stem) > MAX_PLOT_STEM:               # a file name has at most 255 bytes: long ones end in a digest instead
        stem = f"{stem[:MAX_PLOT_STEM - 13]}-{hashlib.sha256(stem.encode()).hexdigest()[:12]}"
    return f"{PLOTS_DIR}/{stem}.png"


#: The longest plot file name's stem: with ``.png`` and the partial file's ``.`` and ``.partial``, under 255 bytes.
MAX_PLOT_STEM = 200


def _has_curve(run: dict) -> bool:
    history = run.get("history")
    return isinstance(history, list) and any(isinstance(h, dict) and "epoch" in h and "loss" in h for h in history)


def _in_results(base: str, path: str) -> str:
    """``path`` (relative to the results folder) as a link from the pages, which see the folder as ``base``."""
    return posixpath.normpath(base + path) if base else path


def _thumbnail(alt: str, path: str, width: Optional[int] = None) -> str:
    """An image shown at ``width`` pixels (a training plot's own width), which GitHub and the site (Sphinx's
    ``html_scaled_image_link``) link to its full size: a click opens it."""
    from zoo.evaluation.plots import THUMBNAIL_PIXELS
    return f'<img src="{path}" alt="{alt}" width="{width or THUMBNAIL_PIXELS[0]}">'


def _gallery(entries: Sequence[Tuple[str, dict]], base: str) -> str:
    """Below a section's table: each run's training curve (and a run folder's samples), thumbnails in the order
    of the table, each titled with its entry, so the table stays narrow and each plot is shown at a readable size."""
    images = []
    for name, run in entries:
        if _has_curve(run):
            images.append(_thumbnail(f"training of {run.get('label', '')}", plot_path(name, run)))
        if run.get("_user") and "samples.png" in run.get("_folder_files", ()):
            images.append(_thumbnail(f"samples of {run.get('label', '')}",
                                     _in_results(base, Path(name).parent.as_posix() + "/samples.png"), 240))
    return ("\n\n" + "\n".join(images)) if images else ""


def render_leaderboard(results: Results, archive: str = "README.md", config: ReportConfig = GENERIC) -> str:
    """The leaderboard page: per dataset, the best run per (model, guide, objective) with its figures, its PSIS
    flag and the published figure, reliable runs first, in a table narrow enough for a page's column; below it,
    a thumbnail of each run's training drawn from the result file's history, which opens full size. Its links reach the results
    from the page's folder (:attr:`ReportConfig.pages_to_results`)."""
    base = config.pages_to_results
    rows: Dict[str, list] = {}
    entries: Dict[str, list] = {}
    weights = _trained_by_entry(config)
    for name, run in leaderboard_runs(results, config):
        c = run["config"]
        user = bool(results[name].get(USER_RUN_KEY))
        where = (f"[`{run['label']}`]({_in_results(base, Path(name).parent.as_posix())}/) (your run)" if user
                 else f"[`{run['label']}`]({_in_results(base, name)})")
        dataset = str(c.get("dataset"))
        key = (dataset, model_label(c, config), c.get("guide"), c.get("objective"))
        rows.setdefault(dataset, []).append(
            [f"{key[1]} · {c.get('guide')} · {c.get('objective')}",
             _seed_mean(-run["elbo"], run, "elbo_seed_se"), _seed_mean(run.get("nll"), run, "nll_seed_se"),
             _num(run.get("bits_per_dim_nll"), ".4f"), reliability_cell(run, 0, short=True), _paper_cell(run, config),
             f"{where}, {run.get('num_data')} images, {_epochs(run)} epochs" + weights.get(key, "")])
        entries.setdefault(dataset, []).append((name, dict(run, _user=user)))
    # one column for what the entry is, words that wrap, no file name (the run's label links its file) and the
    # plots below the table: it fits a page's column of about 740 pixels
    head = ["model · guide · objective", f"{MINUS}ELBO", "NLL", "NLL bits/dim", "k̂>0.7", "paper", "run"]
    sections = []
    for dataset, table_rows in rows.items():
        title = config.leaderboard_datasets.get(dataset, f"`{dataset}`")
        bits = any(r[3] != "–" for r in table_rows)    # a column where some run's data are discrete levels
        keep = [i for i in range(len(head)) if i != 3 or bits]
        table = _table([head[i] for i in keep], [[r[i] for i in keep] for r in table_rows])
        sections.append(f"## {title}\n\n{table}{_gallery(entries[dataset], base)}")
    return (f"<!-- generated by 'pyro-zoo report' from the *.json result files beside it; do not edit -->\n"
            f"# Leaderboard\n\n"
            f"The best run per model, guide and objective: nats per test image, lower is better. {MINUS}ELBO is the "
            f"negated evidence lower bound, NLL the importance-sampled negative log-likelihood, which decides the "
            f"ranking (a run on all test images beats one on a subset). {reliability_legend()}. \"paper\" is the "
            f"published figure for the same model on the same data, met or missed by ours. Below each table, in its "
            f"order and titled with its entry, the training bound and the validation {MINUS}ELBO per epoch of each "
            f"run, from its result file's history (and a run folder's samples); click a plot to open it full size. "
            f"\"weights\" under a run: the committed trained model of the same entry (`pyro-zoo list`, "
            f"`zoo.load_trained(NAME)`), its own run, with its NLL by AIS: ✓ the figure to use, ≤ an upper bound only "
            f"([the trained models](" + _in_results(base, 'trained_models.md') + ") say why); the row's own run has "
            f"no committed weights, so its NLL stays the importance-sampled figure. "
            f"Every run, with its command or config: [the archive]({archive}).\n\n"
            + ("\n\n".join(sections) or "(no trained runs)") + "\n")


def _trained_by_entry(config: ReportConfig) -> Dict[tuple, str]:
    """Per leaderboard entry (dataset, model label, guide, objective): the committed trained models of that entry
    (:func:`zoo.core.catalogue.trained_models`), each named with its AIS figure."""
    from zoo.core.catalogue import short_figure, trained_models
    cells: Dict[tuple, List[str]] = {}
    for name, c, figures in trained_models():
        key = (str(c.get("dataset")), model_label(c, config), c.get("guide"), c.get("objective"))
        # plain words, not code: the run column wraps them (after a hyphen too), so the table keeps its width
        cells.setdefault(key, []).append(f"{name} {short_figure(figures)}")
    return {key: "; weights: " + "; ".join(names) for key, names in cells.items()}


def _plot_title(run: dict, config: ReportConfig) -> str:
    """A thumbnail's title: the leaderboard entry (its model variant, guide and objective)."""
    c = run["config"]
    return f"{model_label(c, config)} · {c.get('guide')} · {c.get('objective')}"


def leaderboard_plots(results: Results, config: ReportConfig = GENERIC) -> Dict[str, tuple]:
    """plot path (relative to the leaderboard) -> (the history it is drawn from, the run's config, its title), for
    each leaderboard run."""
    return {plot_path(name, run): (run["history"], run["config"], _plot_title(run, config))
            for name, run in leaderboard_runs(results, config) if _has_curve(run)}


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


#: where ``pyro-zoo report`` writes the pages of a folder of the user's own runs when no ``--out`` is given: a
#: folder of its own under the current directory, never the run folders themselves
USER_REPORTS = Path("reports")


def default_out(directory: Path, results: Results) -> Path:
    """The archive page when no ``--out`` is given: beside the result files of a results folder (whose pages
    are committed with them, as ``benchmarks/results``), but for a folder of the user's own runs (run folders of
    ``train`` or ``compare``, or one run folder) ``reports/NAME/README.md`` under the current directory, so a
    report never writes into a run folder unasked."""
    if results and all(d.get(USER_RUN_KEY) for d in results.values()):
        return USER_REPORTS / Path(directory).resolve().name / "README.md"
    return Path(directory) / "README.md"


def _page(out: Path) -> Path:
    """``--out``: the archive page (``PAGE.md``, in a folder that exists), or a folder to write the pages into
    (``README.md`` there; the folder is made when they are written)."""
    if out.suffix.lower() == ".md" and not out.is_dir():
        if not out.parent.is_dir():
            raise OptionError("out", f"{out}: the folder {out.parent} does not exist; create it or write elsewhere")
        return out
    blocker = next((p for p in [out, *out.parents] if p.exists()), None)
    if blocker is not None and not blocker.is_dir():
        raise OptionError("out", f"{blocker} is a file, not a folder; give another --out")
    return out / "README.md"


def report(directory: Path, out: Optional[Path] = None, readme: Optional[Path] = None,
           check: bool = False) -> List[Path]:
    """Render the results README, the leaderboard (and the top-level README's results block) from the
    result files and ``report.json`` of ``directory``; write them, or with ``check`` raise
    :class:`ZooError` if the files on disk differ. Everything is rendered before anything is written,
    and each file is replaced atomically, so an error leaves the files as they were.

    ``out`` is the archive page or a folder for the pages (:func:`_page`); without it, :func:`default_out`.
    The leaderboard and its plots go beside the archive page, and their links reach the runs from there.

    Returns the files written (or checked).
    """
    from zoo.training.checkpoint import atomic_write_text    # torch is only needed to write
    directory = Path(directory)
    results = load_results(directory)
    config = load_config(directory)
    out = _page(Path(out)) if out else default_out(directory, results)
    relative = Path(os.path.relpath(directory.resolve(), out.parent.resolve())).as_posix()
    config = dataclasses.replace(config, pages_to_results="" if relative == "." else relative + "/")
    pages = render_results_pages(directory, results, config, index=out.name)
    outputs = {out: pages.pop(out.name), **{out.parent / name: text for name, text in pages.items()},
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
    from zoo.training.checkpoint import atomic_write_bytes, write_error
    images = {path: history_png(*drawn) for path, drawn in plot_histories.items()}    # all drawn, then written
    folders = ([out.parent / PLOTS_DIR] if images else []) + [out.parent, *out.parent.parents]
    made = [f for f in folders if not f.exists()]           # innermost first: removed again if a write fails
    written = []
    try:
        for folder in reversed(made):
            try:
                folder.mkdir()
            except OSError as e:                            # a read-only or full disk
                raise write_error(folder, e) from None
        for path, png in images.items():
            if not (path.is_file() and path.read_bytes() == png):
                atomic_write_bytes(path, png)
                written.append(path)
        for path, text in outputs.items():
            if not _holds(path, text):
                atomic_write_text(path, text)
                written.append(path)
    except BaseException:
        for path in written:
            if path.parent in made:
                path.unlink(missing_ok=True)
        for folder in made:
            with contextlib.suppress(OSError):              # not made, or holds what another process put there
                folder.rmdir()
        raise
    return list(outputs) + list(images)
