"""Reports of the benchmark results: every figure in the docs is rendered from a result file.

``pyro-zoo report DIR`` reads every ``*.json`` in DIR (each benchmark script writes one, with the
command, the git commit and the hardware under ``provenance``) and renders ``DIR/README.md`` from
the template ``DIR/README.template.md``. It also rewrites the results block of the nearest
``README.md`` above DIR, between ``<!-- results:start -->`` and ``<!-- results:end -->``, and the
component tables (``<!-- registry:start -->`` ... ``<!-- registry:end -->``) of the user guide
``zoo/README.md`` from the registry. So no
figure is typed by hand twice, and none is typed by hand at all: the prose of the template may
not hold a decimal number; it names the figure instead, and the report fills it in.

Beside it the report writes ``DIR/LEADERBOARD.md`` (:func:`render_leaderboard`): the best run per
(model, guide, objective) on static binarized MNIST against the papers' figures, each with a small
plot of its training under ``DIR/plots/`` drawn from the result file's ``history``. DIR may also be a
folder of the user's own runs (run folders of ``pyro-zoo train`` or ``compare``, whose results.json
records the config, not a command): they get the same leaderboard, on any dataset (:func:`load_user_runs`).

Placeholders in the template:

- ``{{ table NAME }}``: one of the tables in :data:`TABLES` (``headline``, ``runs``, ``speed``, ...);
- ``{{ include FILE.json }}``: the Markdown tables the benchmark wrote to ``FILE.md`` beside ``FILE.json``;
- ``{{ FILE | PATH }}`` or ``{{ FILE | PATH | FORMAT }}``: one value of a result file. PATH walks
  the JSON by ``/``-separated keys; in a list, a segment selects the element with that ``label``
  (or that index). ``neg_elbo`` is −``elbo``. FORMAT is a Python format spec (default ``.2f``
  for floats), or ``x`` for a ratio such as ``1.09×``;
- ``{{ reference | KEY }}``: a figure from a paper, from :data:`REFERENCES`.

Example::

    >>> runs = {"a.json": {"provenance": {"command": "python a.py"},
    ...                    "runs": [{"label": "vae", "elbo": -88.123}]}}
    >>> render_template("NLL {{ a.json | runs/vae/neg_elbo }} nats", runs)
    'NLL 88.12 nats'
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from zoo.core.errors import ZooError
from zoo.core.files import read_json, read_text
from zoo.core.components import OptionError

__all__ = ["Reference", "REFERENCES", "HEADLINE", "TABLES", "load_results", "render_template",
           "render_results_readme", "render_readme_block", "headline_runs", "replace_readme_block", "report",
           "START", "END", "TEMPLATE_NAME"]

START, END = "<!-- results:start -->", "<!-- results:end -->"
TEMPLATE_NAME = "README.template.md"
MINUS = "−"

Results = Dict[str, dict]       # file name -> parsed JSON


@dataclass(frozen=True)
class Reference:
    """A figure published in a paper: not a measurement of ours, so it lives here, once, with its citation."""

    metric: str         # "nll" (test NLL) or "neg_elbo" (test −ELBO), nats per datum on binarized MNIST
    value: str          # as printed in the paper
    cite: str
    what: str

    @property
    def label(self) -> str:
        return {"nll": "NLL", "neg_elbo": f"{MINUS}ELBO"}[self.metric]


#: Published figures on static binarized MNIST that the benchmarks compare with.
REFERENCES: Dict[str, Reference] = {
    "burda-vae": Reference("nll", "88.71", "Burda et al. 2016", "VAE, 3280 epochs"),
    "burda-iwae": Reference("nll", "87.10", "Burda et al. 2016", "IWAE k = 50, 3280 epochs"),
    "jang-sbn-sf": Reference("neg_elbo", "112.2", "Jang et al. 2017", "Bernoulli SBN, score function"),
    "jang-sbn-gumbel": Reference("neg_elbo", "105.0", "Jang et al. 2017", "Bernoulli SBN, Gumbel-softmax"),
    "jang-cat-sf": Reference("neg_elbo", "110.6", "Jang et al. 2017", "categorical VAE, score function"),
    "jang-cat-gumbel": Reference("neg_elbo", "101.5", "Jang et al. 2017", "categorical VAE, Gumbel-softmax"),
    "mnih-nvil": Reference("nll", "113.1", "Mnih & Gregor 2014", "SBN-200, NVIL"),
    "tomczak-vae": Reference("nll", "88.56", "Tomczak & Welling 2018", "VAE, standard prior (z = 40, gated 300-300)"),
    "tomczak-vampprior": Reference("nll", "85.57", "Tomczak & Welling 2018", "VAE + VampPrior, 500 pseudo-inputs"),
    "tomczak-hvae-vampprior": Reference("nll", "83.19", "Tomczak & Welling 2018", "HVAE + VampPrior"),
    # Burda et al.'s two-stochastic-layer rows are on dynamic binarization: not directly comparable
    "burda-hvae": Reference("nll", "86.76", "Burda et al. 2016", "VAE, two stochastic layers, dynamic binarization"),
    "burda-hiwae5": Reference("nll", "85.54", "Burda et al. 2016",
                              "IWAE k = 5, two stochastic layers, dynamic binarization"),
}

#: The headline results: (result file, run label), in the order of the table.
HEADLINE: List[Tuple[str, str]] = [
    ("quality_mnist_elbo_warmup700.json", "elbo"),
    ("quality_mnist_iwae520.json", "iwae"),
    ("discrete_mnist_warmup_sbn_nvil_decay.json", "sbn200-nvil"),
    ("discrete_mnist_full_test.json", "sbn200-mlp-nvil"),
    ("discrete_mnist_mlp_rloo_k4_wd.json", "sbn200-mlp-rloo-k4"),
    ("discrete_mnist_full_test.json", "sbn200-reinforce"),
    ("discrete_mnist_sbn_mlp_gumbel_wd_tau02.json", "sbn200-mlp-gumbel"),
    ("discrete_mnist_cat_nvil_full_test.json", "cat20x10-nvil"),
    ("discrete_mnist_cat_rloo_wd.json", "cat20x10-rloo"),
    ("discrete_mnist_cat_gumbel_wd_decay.json", "cat20x10-gumbel"),
]

_MULTI_SAMPLE_BOUNDS = ("iwae", "dreg", "renyi", "renyi_pyro")


def references_for(config: dict) -> List[Reference]:
    """The published figures a run is compared with, from its model, guide and objective."""
    model, guide, objective = config.get("model"), config.get("guide"), config.get("objective")
    if config.get("dataset", "binarized_mnist") != "binarized_mnist":
        return []                           # the papers' figures are on static binarized MNIST only
    if _flat_config(config).get("prior") == "vampprior" and model in ("vae", "hvae"):
        return [REFERENCES["tomczak-vampprior" if model == "vae" else "tomczak-hvae-vampprior"]]
    if model == "vae":
        return [REFERENCES["burda-iwae" if objective in _MULTI_SAMPLE_BOUNDS else "burda-vae"]]
    if model == "sbn":
        return ([REFERENCES["jang-sbn-gumbel"]] if guide == "relaxed"
                else [REFERENCES["jang-sbn-sf"], REFERENCES["mnih-nvil"]])
    if model == "categorical_vae":
        return [REFERENCES["jang-cat-gumbel" if guide == "relaxed" else "jang-cat-sf"]]
    return []


# ---------------------------------------------------------------------------------------------
# reading


def load_results(directory: Path) -> Results:
    """Every ``*.json`` in ``directory``, by file name. A file that is not JSON, or records no
    command, is an error naming the file: every figure must come with the command that made it."""
    directory = Path(directory)
    if not directory.is_dir():
        raise ZooError(f"{directory} is not a folder of result files (e.g. 'pyro-zoo report benchmarks/results')")
    results: Results = {}
    for path in sorted(directory.glob("*.json")):
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
RUN_FILES = ("results.json", "config.json", "compare.json", "gaps.json", "gradients.json")
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


def _flat_config(config: dict) -> dict:
    flat = {k: v for k, v in config.items() if not k.endswith("_options")}
    for key in ("model_options", "guide_options", "objective_options"):
        flat.update(config.get(key) or {})
    return flat


def _find(results: Results, name: str, label: str) -> Optional[dict]:
    for file, run in _training_runs(results):
        if file == name and run.get("label") == label:
            return run
    return None


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


#: Settings shown for a run: (config key, flag, value that is not worth showing).
_SETTINGS = [("layers", "--layers", None), ("hidden", "--hidden", None), ("particles", "--particles", None),
             ("baseline", "--baseline", None), ("straight_through", "--straight-through", False),
             ("temperature_min", "--temperature-min", None), ("batch_size", "--batch-size", 100),
             ("lr", "--lr", 0.001), ("lr_decay", "--lr-decay", 1.0), ("kl_warmup", "--kl-warmup", None),
             ("weight_decay", "--weight-decay", None), ("adam_eps", "--adam-eps", None),
             ("keep_best", "--keep-best", False), ("jit", "--jit", False)]


def settings(config: dict) -> str:
    """The run's non-default training settings, as the flags that set them."""
    c = _flat_config(config)
    out = []
    for key, flag, boring in _SETTINGS:
        v = c.get(key)
        if v is None or v == boring or (key == "particles" and v == 1):
            continue
        if isinstance(v, bool):
            out.append(flag)
        else:
            v = ",".join(map(str, v)) if isinstance(v, (list, tuple)) else f"{v:g}" if isinstance(v, float) else v
            out.append(f"{flag} {v}")
    return "`" + " ".join(out) + "`" if out else "–"


def _table(head: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    if not rows:
        return "(no result files of this kind)"
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    lines += ["| " + " | ".join(str(c).replace("|", "\\|") if "`" not in str(c) else str(c) for c in row) + " |"
              for row in rows]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# tables


def _reference_cells(run: dict, short: bool = False) -> Tuple[str, str]:
    refs = references_for(run["config"])
    if not refs:
        return "–", "–"
    measured = {"nll": run.get("nll"), "neg_elbo": -run["elbo"]}
    ref = "; ".join(f"{r.label} {r.value}, {r.cite}" + ("" if short else f" ({r.what})") for r in refs)
    met = "; ".join(f"{r.label} {_delta(measured[r.metric], r)}" for r in refs)
    return ref, met


def headline_runs(results: Results) -> List[Tuple[str, dict]]:
    """(file, run) of the :data:`HEADLINE` runs present in ``results``."""
    found = [(name, _find(results, name, label)) for name, label in HEADLINE]
    return [(name, run) for name, run in found if run is not None]


def _headline_cells(name: str, run: dict, base: str) -> List[str]:
    c = run["config"]
    ref, met = _reference_cells(run, short=bool(base))
    return [f"`{run['label']}`", f"`{c['model']}`", f"`{c['guide']}`", f"`{c['objective']}`", _epochs(run),
            _num(-run["elbo"]), _num(run["nll"]), ref, met, _source(name, base)]


_HEADLINE_HEAD = ["run", "model", "guide", "objective", "epochs", f"test {MINUS}ELBO", "test NLL (IS)",
                  "reference", "met", "source"]


def table_headline(results: Results) -> str:
    rows = []
    for name, run in headline_runs(results):
        cells = _headline_cells(name, run, "")
        rows.append(cells[:7] + [_num(run.get("log_likelihood_data_se")), str(run.get("num_data")),
                                 settings(run["config"])] + cells[7:])
    return _table(_HEADLINE_HEAD[:7] + ["± data se", "test images", "settings"] + _HEADLINE_HEAD[7:], rows)


def render_readme_block(results: Results, base: str = "benchmarks/results/") -> str:
    """The compact headline table for the top-level README (links relative to the repository root)."""
    table = _table(_HEADLINE_HEAD, [_headline_cells(name, run, base) for name, run in headline_runs(results)])
    return (f"{START}\n<!-- generated by 'pyro-zoo report' from the result files; do not edit -->\n"
            f"{table}\n{END}")


def table_runs(results: Results) -> str:
    order = {"vae": 0, "sbn": 1, "categorical_vae": 2}
    runs = sorted(_training_runs(results), key=lambda fr: (order.get(fr[1]["config"].get("model"), 9), fr[0]))
    rows = []
    for name, run in runs:
        c = run["config"]
        ref, met = _reference_cells(run)
        rows.append([f"`{run.get('label', '')}`", f"`{c.get('model')}`", f"`{c.get('guide')}`",
                     f"`{c.get('objective')}`", settings(c), _epochs(run), str(run.get("num_data")),
                     str(run.get("num_samples")), _num(-run["elbo"]), _num(run.get("nll")),
                     _num(run.get("log_likelihood_data_se")), str(run.get("active_units")),
                     _num(run.get("psis_khat_frac_over_0_7"), ".0%"), met, _source(name)])
    return _table(["run", "model", "guide", "objective", "settings", "epochs", "test images", "K",
                   f"{MINUS}ELBO", "NLL (IS)", "± data se", "active units", "k̂ > 0.7", "vs reference", "source"],
                  rows)


def table_speed(results: Results) -> str:
    rows = []
    for name, d in results.items():
        if "ratio_zoo_over_hand" not in d:
            continue
        rows.append([f"`{d.get('model', 'vae')}`", d.get("objective") or d.get("architecture", ""),
                     str(d.get("batch_size")), str(d.get("threads") or d["provenance"].get("cpu_threads", "–")),
                     _num(d.get("median_zoo_s")), _num(d.get("median_zoo_jit_s")),
                     _num(d.get("median_zoo_compiled_s")), _num(d.get("median_hand_s")),
                     _num(d.get("median_hand_fused_s")), _num(d.get("ratio_zoo_over_hand"), "x"),
                     _num(d.get("ratio_zoo_over_hand_same_optimizer"), "x"),
                     _num(d.get("ratio_zoo_jit_over_hand"), "x"),
                     _num(d.get("ratio_zoo_jit_over_hand_same_optimizer"), "x"),
                     _num(d.get("ratio_zoo_compiled_over_hand"), "x"),
                     _num(d.get("ratio_zoo_compiled_over_hand_same_optimizer"), "x"), _source(name)])
    return _table(["model", "objective", "batch", "threads", "zoo s/epoch", "zoo `--jit` s/epoch", "zoo `--compile` s/epoch",
                   "hand-written s/epoch", "hand-written, zoo's Adam", "zoo / hand", "zoo / hand, same Adam",
                   "`--jit` / hand", "`--jit` / hand, same Adam", "`--compile` / hand", "`--compile` / hand, same Adam",
                   "source"], rows)


def table_step_overhead(results: Results) -> str:
    rows = []
    for name, d in results.items():
        for loop, ms in (d.get("ms_per_step") or {}).items():
            rows.append([loop, _num(ms), _source(name)])
    return _table(["loop", "ms per step", "source"], rows)


def table_jit(results: Results) -> str:
    rows = []
    for name, d in results.items():
        runs = d.get("runs")
        if not isinstance(runs, dict):
            continue
        for label, r in runs.items():
            k = r.get("particles") or 1
            rows.append([f"`{label}`", f"`{r.get('objective')}`" + (f" K={k}" if k > 1 else ""),
                         _num(r.get("eager_ms_per_step")), _num(r.get("jit_ms_per_step")),
                         _num(r.get("speedup"), "x"), _source(name)])
    return _table(["configuration", "objective", "eager ms/step", "`--jit` ms/step", "speed-up", "source"], rows)


def table_gradient_toy(results: Results) -> str:
    rows = []
    for name, d in results.items():
        for r in d.get("toy") or []:
            rows.append([r["estimator"], str(r["samples"]), _num(r["mean"], ".3f"), _num(r["exact"], ".3f"),
                         _num(r["bias_se"], ".3f"), _num(r["variance"], ".4g"), _source(name)])
    return _table(["estimator", "samples", "mean", "exact", "± se", "variance", "source"], rows)


def _gradient_rows(name: str, rows: Sequence[dict], cost: Optional[dict] = None):
    out = []
    for r in rows:
        est = r.get("estimator") or f"`{r['objective']}`"
        ratio = (cost or {}).get(f"{r['objective']} K={r['particles']}")
        out.append([est, str(r["particles"]), r["group"], _num(r["variance"], ".4g"), _num(r["snr"], ".3f"),
                    _num(r.get("cosine"), ".3f"), _num(r.get("bias_norm"), ".4g"), _num(r.get("bias_se"), ".3g"),
                    _num(r["seconds"], ".4f")] + ([_num(ratio, "x")] if cost is not None else []) + [_source(name)])
    return out


def table_gradient_vae(results: Results) -> str:
    rows = []
    for name, d in results.items():
        if isinstance(d.get("vae"), dict):
            rows += _gradient_rows(name, d["vae"]["rows"], d.get("cost_ratio_to_elbo") or {})
    return _table(["objective", "K", "parameters", "variance", "SNR", "cosine to ref", "bias norm", "± se",
                   "s/estimate", "cost / `elbo`", "source"], rows)


def table_gradient_sbn(results: Results) -> str:
    rows = []
    for name, d in results.items():
        if isinstance(d.get("sbn"), list):
            rows += _gradient_rows(name, d["sbn"])
    return _table(["estimator", "K", "parameters", "variance", "SNR", "cosine to ref", "bias norm", "± se",
                   "s/estimate", "source"], rows)


def table_relaxed(results: Results) -> str:
    rows = []
    for name, d in results.items():
        for r in d.get("runs") or []:
            if isinstance(r, dict) and "surrogate_neg_elbo" in r:
                rows.append([f"`{r['label']}`", "yes" if r.get("straight_through") else "no",
                             str(r.get("epochs_trained")), _num(r.get("temperature")),
                             _num(r["surrogate_neg_elbo"]), _num(r.get("surrogate_se")),
                             _num(r.get("discrete_neg_elbo")), _num(r.get("discrete_nll")), _source(name)])
    return _table(["run", "straight-through", "epochs", "τ", f"surrogate {MINUS}ELBO", "± se",
                   f"discrete {MINUS}ELBO", "discrete NLL (IS)", "source"], rows)


def table_sources(results: Results) -> str:
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


TABLES: Dict[str, Callable[[Results], str]] = {
    "headline": table_headline, "runs": table_runs, "speed": table_speed, "step_overhead": table_step_overhead,
    "jit": table_jit, "gradient_toy": table_gradient_toy, "gradient_vae": table_gradient_vae,
    "gradient_sbn": table_gradient_sbn, "relaxed": table_relaxed, "sources": table_sources,
}


# ---------------------------------------------------------------------------------------------
# templates

_PLACEHOLDER = re.compile(r"\{\{(.*?)\}\}")
_HAND_FIGURE = re.compile(r"(?<![\w.])\d+\.\d+")


def _value(results: Results, name: str, path: str):
    if name not in results:
        raise KeyError(f"no result file {name}")
    v = results[name]
    for seg in [s for s in path.split("/") if s]:
        if isinstance(v, dict) and seg == "neg_elbo" and "elbo" in v:
            v = -v["elbo"]
        elif isinstance(v, dict) and seg in v:
            v = v[seg]
        elif isinstance(v, list):
            hits = [e for e in v if isinstance(e, dict) and e.get("label") == seg]
            if hits:
                v = hits[0]
            elif seg.isdigit() and int(seg) < len(v):
                v = v[int(seg)]
            else:
                raise KeyError(f"no element {seg!r} in {name}")
        else:
            raise KeyError(f"no key {seg!r} in {name}")
    return v


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


def _fill(results: Results, expr: str) -> str:
    parts = [p.strip() for p in expr.split("|")]
    if len(parts) == 1 and parts[0].startswith("include "):
        return included_tables(results, parts[0].split(None, 1)[1].strip())
    if len(parts) == 1 and parts[0].startswith("table "):
        table = parts[0].split(None, 1)[1].strip()
        if table not in TABLES:
            raise KeyError(f"no table {table!r} (known: {', '.join(TABLES)})")
        return TABLES[table](results)
    if len(parts) == 2 and parts[0] == "reference":
        if parts[1] not in REFERENCES:
            raise KeyError(f"no reference {parts[1]!r} (known: {', '.join(REFERENCES)})")
        return REFERENCES[parts[1]].value
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


def render_template(template: str, results: Results, where: str = "template") -> str:
    """Fill the placeholders of ``template`` from ``results``; refuse figures typed by hand."""
    _check_no_hand_figures(template, where)

    def fill(match):
        try:
            return _fill(results, match.group(1))
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


def render_results_readme(directory: Path, results: Results) -> str:
    directory = Path(directory)
    template_path = directory / TEMPLATE_NAME
    template = read_text(template_path, "template") if template_path.exists() else DEFAULT_TEMPLATE
    body = render_template(template, results, where=str(template_path))
    return GENERATED_NOTE + body.rstrip("\n") + "\n"


# ---------------------------------------------------------------------------------------------
# the leaderboard

LEADERBOARD_NAME = "LEADERBOARD.md"
#: the folder, beside the leaderboard, of the small plots the report draws from the result files' histories
PLOTS_DIR = "plots"
_MODEL_ORDER = {"vae": 0, "hvae": 1, "sbn": 2, "categorical_vae": 3}


def _model_label(config: dict) -> str:
    """The model as the leaderboard groups it: a VAE with a VampPrior is not the VAE of the papers."""
    prior = _flat_config(config).get("prior")
    return config.get("model", "?") + (f" + {prior}" if prior not in (None, "standard") else "")


def _score(run: dict) -> float:
    """What 'best' means: the lowest importance-sampled NLL (the −ELBO where a run has none)."""
    return run["nll"] if isinstance(run.get("nll"), (int, float)) else -run["elbo"]


def leaderboard_runs(results: Results) -> List[Tuple[str, dict]]:
    """(file, run): the best run per (dataset, model, guide, objective). The benchmarks count on static
    binarized MNIST only (the papers' dataset); the user's own runs on any dataset. A run scored on more
    test images beats one scored on a subset (``--eval-limit``), whatever their figures: only runs on the
    same images compare."""
    best: Dict[tuple, Tuple[str, dict]] = {}
    for name, run in _training_runs(results):
        c = run["config"]
        dataset = c.get("dataset", "binarized_mnist")
        if dataset != "binarized_mnist" and not results[name].get(USER_RUN_KEY):
            continue
        key = (dataset, _model_label(c), c.get("guide"), c.get("objective"))
        rank = (-(run.get("num_data") or 0), _score(run))
        if key not in best or rank < (-(best[key][1].get("num_data") or 0), _score(best[key][1])):
            best[key] = (name, run)
    order = sorted(best, key=lambda k: (k[0] != "binarized_mnist", k[0], _MODEL_ORDER.get(k[1].split(" ")[0], 9),
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


def render_leaderboard(results: Results, archive: str = "README.md") -> str:
    """The leaderboard page: per dataset, the best run per (model, guide, objective) with its figures
    against the papers', and a small plot of its training from the result file's history."""
    rows: Dict[str, list] = {}
    for name, run in leaderboard_runs(results):
        c = run["config"]
        user = bool(results[name].get(USER_RUN_KEY))
        ref, met = _reference_cells(run, short=True)
        source = (f"[`{run['label']}`]({Path(name).parent.as_posix()}/) (your run)" if user
                  else f"`{run['label']}` in [{name.removesuffix('.json')}]({name})")
        rows.setdefault(c.get("dataset", "binarized_mnist"), []).append(
            [f"`{_model_label(c)}`", f"`{c.get('guide')}`", f"`{c.get('objective')}`", _num(-run["elbo"]),
             _num(run.get("nll")), str(run.get("num_data")), _epochs(run), ref, met, source,
             _plot_cell(name, run, user)])
    head = ["model", "guide", "objective", f"test {MINUS}ELBO", "test NLL (IS)", "test images", "epochs",
            "paper", "met", "run", "training"]
    sections = []
    for dataset, table_rows in rows.items():
        title = "Static binarized MNIST" if dataset == "binarized_mnist" else f"`{dataset}`"
        sections.append(f"## {title}\n\n{_table(head, table_rows)}")
    return (f"<!-- generated by 'pyro-zoo report' from the *.json result files beside it; do not edit -->\n"
            f"# Leaderboard\n\n"
            f"The best run per model, guide and objective: nats per datum on the test images, lower is better "
            f"(the importance-sampled NLL decides; a run on all test images beats one on a subset). \"paper\" is "
            f"the published figure for the same model on the same data, \"met\" the measured figure minus it. "
            f"\"training\" plots the training bound and the validation {MINUS}ELBO per epoch from the result "
            f"file's history (and a run folder's samples where it has them). Every run, with its command or config: "
            f"[the archive]({archive}).\n\n" + ("\n\n".join(sections) or "(no trained runs)") + "\n")


def leaderboard_plots(results: Results) -> Dict[str, list]:
    """plot path (relative to the leaderboard) -> the history it is drawn from, for each leaderboard run."""
    return {plot_path(name, run): run["history"] for name, run in leaderboard_runs(results) if _has_curve(run)}


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
    """Render the results README (and the top-level README's results block); write them, or with
    ``check`` raise :class:`ZooError` if the files on disk differ. Everything is rendered before
    anything is written, and each file is replaced atomically, so an error leaves the files as they were.

    Returns the files written (or checked).
    """
    from zoo.training.checkpoint import atomic_write_text    # torch is only needed to write
    directory = Path(directory)
    results = load_results(directory)
    out = Path(out) if out else directory / "README.md"
    if out.is_dir():
        raise OptionError("out", f"{out} is a folder; give the page's file name, e.g. {out / 'README.md'}")
    if not out.parent.is_dir():
        raise OptionError("out", f"{out}: the folder {out.parent} does not exist; create it or write elsewhere")
    outputs = {out: render_results_readme(directory, results),
               out.parent / LEADERBOARD_NAME: render_leaderboard(results, archive=out.name)}
    plot_histories = {out.parent / p: h for p, h in leaderboard_plots(results).items()}
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
        current = replace_readme_block(current, render_readme_block(results, base), str(readme))
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
