"""Trained models by name: the weights committed under ``benchmarks/checkpoints/``, each with its model card, as
``torchvision.models`` or ``timm`` give weights by name.

A trained model is a run folder named for it (``vae-mnist-elbo``: model, data set, objective) holding:

- ``config.json`` and ``checkpoint.pt``: the run, its weights only (float32, no optimizer state), read as any run
  folder is (:mod:`zoo.experiments.run_folder`: a checkpoint is data, ``torch.load(weights_only=True)``);
- ``card.json``: what the figures cannot say: a title, the architecture, the command that trained it, how long,
  on which split, and the paper's figure to hold it against;
- ``ais.json`` (and ``bdmc.json`` where run): its log p(x) by annealed importance sampling on the fixed
  1,000-image subset of the test split, and the BDMC gap that bounds AIS's own error on data from the model:
  the result files the card's figures are read from, written by ``pyro-zoo eval --estimator ais|bdmc``;
- ``smc.json`` where AIS is flagged: sequential Monte Carlo on the same images, a second estimator the card shows
  beside AIS's replica from the guide, never as its verdict (no BDMC gap bounds it);
- ``README.md``: the card as a person reads it, rendered from those files (:func:`card_markdown`).

Where they are: the folder ``$PYRO_ZOO_CHECKPOINTS`` names, else ``benchmarks/checkpoints`` of the source
checkout the zoo runs from, else that of the current directory (an installed wheel carries no weights: run it in a
checkout, or point the variable at a checkout's folder).

Everything here reads JSON and no tensor, so ``pyro-zoo list`` names the trained models without loading torch;
:func:`zoo.experiments.trained.load_trained` opens one.

Example::

    >>> import zoo
    >>> run = zoo.load_trained("vae-mnist-elbo", data_dir="../shared/data")    # doctest: +SKIP
    >>> run.model, run.guide, run.evaluation_data()[0].shape                     # doctest: +SKIP
"""
from __future__ import annotations

import difflib
import filecmp
import math
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Tuple

from zoo.core.errors import ZooError, unknown_name
from zoo.core.files import read_json
from zoo.core.trust import SAMPLER_AT_MOST, SAMPLER_FLAGS, SAMPLER_SAME, ais_untrusted, finite

__all__ = ["checkpoints_dir", "trained_names", "trained_folder", "is_trained_name", "read_card", "card_figures",
           "smc_figures", "card_markdown", "catalogue_text", "working_copy", "CARD_KEYS", "ENV"]

#: The environment variable that names the folder of trained models.
ENV = "PYRO_ZOO_CHECKPOINTS"
#: A trained model's name: lower-case words joined by hyphens (it is also its folder's name).
_NAME = re.compile(r"[a-z0-9]+(?:[-_.][a-z0-9]+)*")
#: The files every trained model holds.
_FILES = ("config.json", "checkpoint.pt", "card.json")

#: card.json's keys, each a string unless said: what a reader needs besides the figures.
CARD_KEYS = {
    "name": "the model's name, its folder's",
    "title": "one line: the model and how it was trained",
    "architecture": "the networks and latents, in the paper's terms",
    "command": "the command that trained it (a benchmark script anyone can re-run)",
    "training": "the optimizer, its schedule and what else shaped training (warm-up, early stopping)",
    "epochs": "epochs trained (an integer); with early stopping, the epoch whose weights these are",
    "data": "the data set and its split: what it trained on, what chose the epoch, what the figures score",
    "hardware": "where it trained",
    "paper": "the published figure it is held against, with its reference (or '–' where none matches)",
    "paper_nll": "that figure in nats per image (a number), or null",
}


def checkpoints_dir() -> Optional[Path]:
    """The folder of trained models: ``$PYRO_ZOO_CHECKPOINTS``, else the source checkout's ``benchmarks/checkpoints``,
    else the current directory's (None where none exists)."""
    given = os.environ.get(ENV)
    if given:
        return Path(given).absolute()           # recorded in configs (--fixed-model): never relative
    here = Path(__file__).resolve().parents[2] / "benchmarks" / "checkpoints"
    if here.is_dir():
        return here
    # installed as a wheel (pip install .), run inside the checkout it came from
    there = Path.cwd() / "benchmarks" / "checkpoints"
    return there.absolute() if there.is_dir() else None


def trained_names() -> List[str]:
    """The names of the trained models in :func:`checkpoints_dir`, sorted (a folder counts once it holds its
    config, weights and card)."""
    root = checkpoints_dir()
    if root is None or not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir()
                  if p.is_dir() and not p.is_symlink() and _NAME.fullmatch(p.name)
                  and all((p / f).is_file() for f in _FILES))


def is_trained_name(spec: str) -> bool:
    """Is ``spec`` (what a user typed where a run folder goes) the name of a trained model rather than a folder?
    A path that exists is a folder, whatever its name."""
    return isinstance(spec, str) and not os.path.lexists(spec) and _NAME.fullmatch(spec) is not None \
        and spec in trained_names()


def trained_folder(name: str) -> Path:
    """The folder of the trained model ``name``; an unknown name is refused with the known ones."""
    names = trained_names()
    if name not in names:
        if not names:
            raise ZooError(f"no trained model {name!r}: no folder of trained models was found (set {ENV} to a source "
                           f"checkout's benchmarks/checkpoints)")
        raise unknown_name("trained model", name, names)
    return checkpoints_dir() / name


def neither_folder_nor_name(spec: str) -> ZooError:
    """The refusal of ``spec`` where a command takes a run folder or a trained model's name and it is neither (no
    such path, no such name), naming the nearest trained model where one is close (a typo, another case)."""
    names = trained_names()
    close = difflib.get_close_matches(spec.lower(), names, n=1)
    hint = f"; did you mean the trained model {close[0]!r}?" if close else ""
    where = ("'pyro-zoo list' names the trained models" if names else
             f"no folder of trained models was found (set {ENV} to a source checkout's benchmarks/checkpoints)")
    return ZooError(f"{spec} is neither a run folder nor a trained model's name{hint} ({where}; 'pyro-zoo train ... "
                    f"--out FOLDER' makes a run folder)")


def _text(card: Mapping, key: str, folder: Path) -> str:
    value = card.get(key)
    if not isinstance(value, str) or len(value) > 2000 or any(not c.isprintable() for c in value):
        raise ZooError(f"{folder / 'card.json'}: {key!r} must be one line of at most 2000 printable characters (no "
                       f"control characters); restore the model card")
    return value


def read_card(folder: Path) -> Dict:
    """The model card of the trained model in ``folder``, read as untrusted data and checked key by key."""
    folder = Path(folder)
    card = read_json(folder / "card.json", "model card", fix="restore it from the repository")
    if not isinstance(card, dict):
        raise ZooError(f"{folder / 'card.json'} is not a model card (a JSON object); restore it from the repository")
    checked = {key: _text(card, key, folder) for key in CARD_KEYS if key not in ("epochs", "paper_nll")}
    epochs, paper_nll = card.get("epochs"), card.get("paper_nll")
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 0:
        raise ZooError(f"{folder / 'card.json'}: 'epochs' must be a whole number; restore the model card")
    if paper_nll is not None and (isinstance(paper_nll, bool) or not isinstance(paper_nll, (int, float))
                                  or not math.isfinite(paper_nll)):
        raise ZooError(f"{folder / 'card.json'}: 'paper_nll' must be a number or null; restore the model card")
    if checked["name"] != folder.name:
        raise ZooError(f"{folder / 'card.json'} names the model {checked['name']!r}, but its folder is "
                       f"{folder.name!r}; restore the model card")
    return {**checked, "epochs": epochs, "paper_nll": paper_nll}


def _number(value) -> Optional[float]:
    """``value`` as a float where it is a finite number (:func:`zoo.core.trust.finite`), else None."""
    return float(value) if finite(value) else None


def card_figures(folder: Path) -> Dict:
    """The figures of a trained model, read from its result files: AIS's NLL ± its standard error on its images
    (``ais.json``: the largest T's row) and the BDMC gap that bounds it (``bdmc.json``: the row at the most
    temperatures not above AIS's), each None where the file is missing or does not hold it; ``unreadable`` names
    the fields a file holds that are not finite numbers (a figure that cannot be read is not one that was not run);
    ``ais_sampler`` and ``bdmc_sampler``, the two runs' sampler settings as recorded, for
    :func:`zoo.core.trust.bdmc_stronger` to compare."""
    folder = Path(folder)
    out = {"nll": None, "nll_se": None, "num_data": None, "num_temperatures": None, "num_chains": None,
           "nll_data_se": None, "frac_flagged": None, "bdmc_gap": None, "bdmc_temperatures": None, "unreadable": [],
           "ais_sampler": {}, "bdmc_sampler": {}, "nll_guide_replica": None}
    sampler_keys = (*SAMPLER_AT_MOST, *SAMPLER_SAME, *SAMPLER_FLAGS)

    def read(record: Mapping, key: str, name: str) -> Optional[float]:
        value = record.get(key)
        if value is not None and _number(value) is None:
            out["unreadable"].append(name)
        return _number(value)
    if (folder / "ais.json").is_file():
        ais = read_json(folder / "ais.json", "AIS result", fix="run 'pyro-zoo eval --estimator ais' again")
        if isinstance(ais, dict):
            ll = read(ais, "log_likelihood", "ais.json's log_likelihood")
            out.update(nll=-ll if ll is not None else None,
                       nll_se=read(ais, "log_likelihood_se", "ais.json's log_likelihood_se"),
                       num_data=ais.get("num_data") if isinstance(ais.get("num_data"), int) else None,
                       num_temperatures=read(ais, "num_temperatures", "ais.json's num_temperatures"),
                       num_chains=read(ais, "num_chains", "ais.json's num_chains"),
                       frac_flagged=read(ais, "frac_flagged", "ais.json's frac_flagged"),
                       nll_data_se=read(ais, "log_likelihood_data_se", "ais.json's log_likelihood_data_se"),
                       ais_sampler={k: ais[k] for k in sampler_keys if k in ais})
            # the replica from the guide alone (where replicas ran from several starts): what SMC from the guide is
            # held against, as a figure of its own, never a verdict
            reliability = ais.get("reliability") if isinstance(ais.get("reliability"), dict) else {}
            first, starts = ais.get("first_replica"), reliability.get("starts")
            if isinstance(first, dict) and isinstance(starts, list) and starts[:1] == ["guide"] and len(starts) > 1:
                guide_ll = _number(first.get("log_likelihood"))
                out["nll_guide_replica"] = -guide_ll if guide_ll is not None else None
    if (folder / "bdmc.json").is_file():
        bdmc = read_json(folder / "bdmc.json", "BDMC result", fix="run 'pyro-zoo eval --estimator bdmc' again")
        rows = bdmc.get("rows") if isinstance(bdmc, dict) else None
        rows = [r for r in rows if isinstance(r, dict)] if isinstance(rows, list) else []
        timed = [r for r in rows if _number(r.get("num_temperatures")) is not None]
        within = [r for r in timed if out["num_temperatures"] is None or r["num_temperatures"] <= out["num_temperatures"]]
        row = (max(within, key=lambda r: r["num_temperatures"]) if within else
               min(timed, key=lambda r: r["num_temperatures"]) if timed else rows[-1] if rows else None)
        if row is not None:
            out.update(bdmc_gap=read(row, "gap", "bdmc.json's gap"),
                       bdmc_temperatures=read(row, "num_temperatures", "bdmc.json's num_temperatures"))
            settings = bdmc.get("settings") if isinstance(bdmc.get("settings"), dict) else {}
            out["bdmc_sampler"] = {**{k: settings[k] for k in sampler_keys if k in settings},
                                   "num_temperatures": out["bdmc_temperatures"]}
    out["smc"] = smc_figures(folder)
    return out


#: the most whole SMC runs an evaluation makes (zoo.evaluation.replicas.MAX_REPLICAS, not imported: this module is
#: read without torch); a file saying more is not read as a figure
_MAX_RUNS = 64
#: smc.json's figures a card reads: (key in the file, name on the card's side, whole number?)
_SMC_KEYS = (("log_likelihood", "log_likelihood", False), ("log_likelihood_se", "se", False),
             ("num_data", "num_data", True), ("num_particles", "particles", True), ("num_replicas", "replicas", True),
             ("target_ess", "target_ess", False), ("frac_se_unreliable", "frac_se_unreliable", False),
             ("frac_forced", "frac_forced", False))


def smc_figures(folder: Path) -> Optional[Dict]:
    """SMC's figures of a trained model (``smc.json``, written by ``pyro-zoo eval --estimator smc``: a second
    estimator, run where AIS is flagged), or None where it was not run. A field the file holds but not as a finite
    number (a whole one for the counts) is named in ``unreadable`` and left None: it never passes for a figure, and it
    never makes AIS's figure untrusted, which it says nothing about."""
    path = Path(folder) / "smc.json"
    if not path.is_file():
        return None
    smc = read_json(path, "SMC result", fix="run 'pyro-zoo eval --estimator smc' again")
    smc = smc if isinstance(smc, dict) else {}
    out: Dict = {"unreadable": [], "path": smc.get("path") if smc.get("path") in ("guide", "prior") else None}
    for key, name, whole in _SMC_KEYS:
        value = smc.get(key)
        ok = finite(value) and (not whole or (isinstance(value, int) and value > 0))
        out[name] = (int(value) if whole else float(value)) if ok else None
        if not ok:
            out["unreadable"].append(f"smc.json's {key}")
    # whole runs from different starts, pooled (zoo.experiments.sequential); a file from before them holds one run.
    # Where they cannot be read, the figure is no one start's either: runs stays None, and the card says so
    runs, starts, flagged = smc.get("runs", 1), smc.get("starts"), smc.get("frac_flagged")
    runs = runs if isinstance(runs, int) and not isinstance(runs, bool) and 1 <= runs <= _MAX_RUNS else None
    starts = (starts if isinstance(starts, list) and runs is not None and len(starts) == runs
              and all(s in ("guide", "prior", "wide") for s in starts) else None)
    flagged = float(flagged) if finite(flagged) and 0 <= flagged <= 1 else None
    if runs is None or (runs > 1 and (starts is None or flagged is None)):
        runs = None
        out["unreadable"].append("smc.json's runs, starts or frac_flagged")
    # each run's own estimate, where they are pooled: what the share flagged is about
    each = (smc.get("reliability") or {}).get("replica_log_likelihood") if isinstance(smc.get("reliability"), dict) \
        else None
    each = ([float(v) for v in each] if runs is not None and runs > 1 and isinstance(each, list) and len(each) == runs
            and all(finite(v) for v in each) else None)
    out.update(runs=runs, starts=starts, frac_flagged=flagged, run_log_likelihoods=each)
    return out


def untrusted(figures: Mapping) -> Optional[str]:
    """Why the card's NLL is not yet the figure to use (:func:`zoo.core.trust.ais_untrusted`), or None; a figure the
    rule reads that a file holds but not as a number, or AIS's temperatures unrecorded beside a BDMC gap, is a
    reason too."""
    if figures["nll"] is None:
        return None
    if figures.get("unreadable"):
        return f"{', '.join(figures['unreadable'])} not a number"
    if figures["bdmc_gap"] is not None and figures["num_temperatures"] is None:
        return "AIS's temperatures are not recorded, so no BDMC gap is known to bound it"
    return ais_untrusted(figures["bdmc_gap"], figures["frac_flagged"], figures.get("ais_sampler"),
                         figures.get("bdmc_sampler"))


def trained_models() -> List[Tuple[str, Dict, Dict]]:
    """(name, config, figures) of each trained model of :func:`checkpoints_dir`: the run's ``config.json`` and
    :func:`card_figures`; a model whose files cannot be read is left out (``trained_models.py card all --check``
    and ``pyro-zoo list`` name it)."""
    out = []
    for name in trained_names():
        folder = checkpoints_dir() / name
        try:
            config = read_json(folder / "config.json", "trained model's config")
            if isinstance(config, dict):
                out.append((name, config, card_figures(folder)))
        except (ZooError, OSError, ValueError, TypeError, AttributeError):
            continue
    return out


def short_figure(figures: Mapping) -> str:
    """A trained model's AIS NLL in a few characters: ``87.40 ± 0.05 ✓`` where it is the figure to use
    (:func:`untrusted`), ``≤ 114.51 ⚠`` where it is an upper bound only, ``not scored`` without AIS."""
    if figures.get("nll") is None:
        return "not scored"
    if untrusted(figures) is not None:
        return f"≤ {figures['nll']:.2f} ⚠"
    se = f" ± {figures['nll_se']:.2f}" if figures.get("nll_se") is not None else ""
    return f"{figures['nll']:.2f}{se} ✓"


def _nll_text(figures: Mapping) -> str:
    if figures["nll"] is None:
        return "not yet scored by AIS"
    why = untrusted(figures)
    # a standard error is a precision only where the figure is trusted: replicas that disagree show it is not
    text = (f"{figures['nll']:.2f} ± {figures['nll_se']:.2f}" if figures["nll_se"] is not None and why is None else
            f"{figures['nll']:.2f}")
    at = f", T = {figures['num_temperatures']:.0f}" if figures["num_temperatures"] is not None else ""
    at += ", guide moves" if figures.get("ais_sampler", {}).get("guide_moves") is True else ""
    # AIS's NLL is a stochastic upper bound; where its error is not bounded, that is all it is
    replicas = " and its replicas agree" if figures["frac_flagged"] is not None else " (one run: no replicas)"
    caveat = (f"; ⚠ an upper bound only, not yet the figure to use: {why}" if why else
              f"; ✓ the figure to use: its BDMC gap bounds its error{replicas}")
    return text + f" (AIS, {figures['num_data'] or '?'} test images{at}){caveat}"


def _paper_comparison(figures: Mapping, paper_nll: float) -> str:
    """How the card's NLL stands against the paper's: met or missed only beyond twice the data standard error of
    the card's few images (the error of comparing them with the paper's whole test set), and only where the figure
    is trusted; an upper bound is compared only where it already meets the paper's."""
    diff, noise = figures["nll"] - paper_nll, figures["nll_data_se"]
    if untrusted(figures) is not None:
        if noise is not None and diff <= -2 * noise:
            return f"met by at least {abs(diff):.2f} nats (an upper bound, beyond 2 data se {2 * noise:.2f})"
        return f"not yet compared (the NLL above is an upper bound only, {diff:+.2f} nats from the paper's)"
    if noise is None:
        return f"not compared: no data standard error is recorded for the {figures['num_data'] or '?'} images"
    if abs(diff) <= 2 * noise:
        return (f"within the sampling error of {figures['num_data'] or '?'} test images ({diff:+.2f} nats, 2 data se "
                f"{2 * noise:.2f})")
    return f"{'met' if diff <= 0 else 'missed'} by {abs(diff):.2f} nats"


def _smc_text(figures: Mapping) -> Optional[str]:
    """The card's SMC row (:func:`smc_figures`), or None where SMC was not run: its NLL, a stochastic upper bound as
    AIS's is, with its replicas' SE and how many images that SE is not a precision for, beside AIS from the same
    start, its replica from the guide (the lower of two upper bounds is the tighter one); never a verdict, which no
    BDMC gap bounds."""
    smc = figures.get("smc")
    if smc is None:
        return None
    if smc["log_likelihood"] is None:
        return f"not readable ({', '.join(smc['unreadable'])} not a number); run the SMC score again"
    text = f"{-smc['log_likelihood']:.2f}" + (f" ± {smc['se']:.2f}" if smc["se"] is not None else "")
    how = [f"from the {smc['path']}" if smc["path"] else None,
           f"{smc['particles']} particles × {smc['replicas']} copies" if smc["particles"] and smc["replicas"]
           else None,
           f"conditional ESS {smc['target_ess']:g}" if smc["target_ess"] is not None else None,
           f"{smc['num_data']} test images" if smc["num_data"] else None]
    one_start = smc.get("runs", 1) == 1        # an old file holds one run; None: its runs could not be read
    if smc.get("runs") is None:
        how[0] = None
    elif not one_start:
        how[0] = f"{smc['runs']} runs pooled, from the {' and the '.join(dict.fromkeys(smc['starts']))}"
    text += f" (SMC, {', '.join(h for h in how if h)})"
    if smc.get("runs") not in (None, 1):
        text += f"; {smc['frac_flagged']:.0%} of images flagged (the runs disagree, or a run's checks fail)"
        if smc.get("run_log_likelihoods"):
            text += "; the runs alone: " + ", ".join(f"{-v:.2f} from the {start}" for v, start in
                                                     zip(smc["run_log_likelihoods"], smc["starts"]))
    elif one_start and smc["frac_se_unreliable"]:
        text += f"; its SE is not a precision on {smc['frac_se_unreliable']:.0%} of images (one copy dominates)"
    if smc["frac_forced"]:
        text += f"; {smc['frac_forced']:.0%} of images reached its step limit"
    guide = figures.get("nll_guide_replica")
    if guide is not None and smc["path"] == "guide" and one_start:
        # the same start: where the two differ, it is the sampler, not the start (the card's NLL pools every start)
        gap = guide - (-smc["log_likelihood"])
        text += (f"; AIS from the same start (its replica from the guide): {guide:.2f}, SMC {abs(gap):.2f} nats "
                 f"{'tighter' if gap > 0 else 'looser'} (both upper bounds in expectation: the lower is the tighter)")
    if smc["unreadable"]:
        text += f"; {', '.join(smc['unreadable'])} not a number"
    return _cell(text)


def _cell(text: str) -> str:
    """``text`` as one cell of a Markdown table: its pipes escaped, on one line."""
    return " ".join(text.replace("|", "\\|").split())


def card_markdown(folder: Path) -> str:
    """The model card of the trained model in ``folder`` as Markdown: the card's facts and the figures of its
    result files (:func:`card_figures`; SMC's where it ran), with the paper's figure beside them."""
    folder = Path(folder)
    card, figures = read_card(folder), card_figures(folder)
    gap = (f"{figures['bdmc_gap']:.2f} nats" + (f" (T = {figures['bdmc_temperatures']:.0f})"
                                                   if figures["bdmc_temperatures"] is not None else "")
           if figures["bdmc_gap"] is not None else "not run")
    paper = card["paper"]
    if card["paper_nll"] is not None and figures["nll"] is not None:
        paper += ": " + _paper_comparison(figures, card["paper_nll"])
    sources = "card.json, ais.json, bdmc.json and smc.json" if figures["smc"] is not None else \
        "card.json, ais.json and bdmc.json"
    lines = [f"<!-- generated from {sources} by benchmarks/trained_models.py card; do not edit -->", f"# {card['name']}", "", card["title"], "",
             "| | |", "|---|---|",
             f"| load it | `zoo.load_trained({card['name']!r})`, `pyro-zoo eval {card['name']}` |",
             f"| architecture | {_cell(card['architecture'])} |",
             f"| trained by | `{card['command']}` |",
             f"| training | {_cell(card['training'])} |",
             f"| epochs | {card['epochs']} |",
             f"| data | {_cell(card['data'])} |",
             f"| hardware | {_cell(card['hardware'])} |",
             f"| test NLL | {_nll_text(figures)} |",
             f"| BDMC gap | {gap} |",
             *([f"| SMC | {_smc_text(figures)} |"] if figures.get("smc") is not None else []),
             f"| paper | {_cell(paper)} |", ""]
    return "\n".join(lines)


def catalogue_text() -> str:
    """``pyro-zoo list``'s section of trained models: a line each, with its NLL by AIS where scored."""
    names = trained_names()
    if not names:
        return (f"trained models: none found (a source checkout's benchmarks/checkpoints, or the folder {ENV} "
                f"names)\n")
    lines = ["trained models (load with zoo.load_trained(NAME); 'pyro-zoo eval NAME', 'compress NAME', "
             "'gradients --checkpoint NAME', '--fixed-model NAME'):"]
    width = max(len(name) for name in names)
    for name in names:
        folder = checkpoints_dir() / name
        try:
            card, figures = read_card(folder), card_figures(folder)
        except ZooError as e:
            lines.append(f"  {name:<{width}} unreadable card: {str(e)[:120]}")
            continue
        nll = ("NLL not yet scored" if figures["nll"] is None else f"NLL {figures['nll']:.2f}" if untrusted(figures) is None
               else f"NLL ≤ {figures['nll']:.2f}, not yet trusted")
        lines.append(f"  {name:<{width}} {card['title'][:70]}  [{nll}]")
    return "\n".join(lines) + "\n"


def refuse_inside_catalogue(path: Path, what: str = "a folder") -> None:
    """Refuse in one line to write ``path`` where it is the folder of trained models, a new entry of it, or inside
    one of its trained models (through links too): commands evaluate a trained model in a working copy and never
    write into the committed weights' folder, whether it was named by its path or by a file's. A folder deeper
    inside it that is no trained model's (the folder of trained models set by ``$PYRO_ZOO_CHECKPOINTS`` to a parent
    of one's work) is not the catalogue's, and is written as anywhere else. ``what`` says what the user names
    instead (``--out``'s)."""
    root = checkpoints_dir()
    if root is None:
        return
    root, where = root.resolve(), Path(path).resolve()
    if where == root or root in where.parents:
        entry = where.relative_to(root).parts[0] if where != root else None
        folder = root / entry if entry is not None else None
        if folder is not None and where.parent != root and entry not in trained_names() \
                and not any(os.path.lexists(folder / f) for f in _FILES):
            return                                  # deeper, in a folder that is no trained model's, whole or not
        raise ZooError(f"{path} is inside the folder of trained models ({root}), which commands never write into; "
                       f"name {what} elsewhere with --out (to score a trained model, name it: pyro-zoo eval NAME)")


def working_copy(name: str, out: Path) -> Path:
    """A run folder ``out`` to evaluate the trained model ``name`` in (its results are written there, never into the
    committed folder): made with a copy of its config and weights, or, where ``out`` exists, refused unless it holds
    those very weights (then it is used as it is, with the results already in it)."""
    source, out = trained_folder(name), Path(out)
    refuse_inside_catalogue(out)
    try:
        return _working_copy(name, source, out)
    except OSError as e:
        raise ZooError(f"cannot make the working copy {out} of the trained model {name!r} ({e.strerror or e}); name "
                       f"another folder with --out") from None


def _working_copy(name: str, source: Path, out: Path) -> Path:
    if os.path.lexists(out):
        if not (out.is_dir() and not out.is_symlink() and (out / "checkpoint.pt").is_file()
                and filecmp.cmp(source / "checkpoint.pt", out / "checkpoint.pt", shallow=False)
                and filecmp.cmp(source / "config.json", out / "config.json", shallow=False)):
            raise ZooError(f"{out} exists and does not hold the trained model {name!r}; name a new folder with --out "
                           f"(it is left as it was)")
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    staged = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        for f in ("config.json", "checkpoint.pt"):
            shutil.copyfile(source / f, staged / f)
        os.rename(staged, out)
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        raise
    return out
