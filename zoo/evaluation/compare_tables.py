"""``compare.md``: a grid's cells over seeds (mean ± SE), and each cell's paired difference from a baseline cell.

Everything here is for a person to read, so it uses the papers' convention: −ELBO and NLL in nats per datum,
positive, lower is better. ``compare.json`` keeps the harness's fields and signs (``elbo``, ``log_likelihood``)
for every cell at every seed; this module only reads those rows.

A row of ``compare.json`` is one cell at one seed: a run's ``results.json`` without its history, with
``cell`` (``GUIDE/OBJECTIVE``) and ``epoch_seconds`` (its training time summed over the recorded epochs, so a
resumed cell counts each epoch once) added.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

from zoo.evaluation.reliability import collapse_warning
from zoo.evaluation.seed_stats import UNRELIABLE_SHARE, PairedDifference, paired_difference, pooled_se, summarize

__all__ = ["compare_markdown", "cell_rows", "cell_summaries", "cell_of", "default_baseline", "MINUS",
           "UNRELIABLE_MARK"]

MINUS = "−"
#: marks a cell whose importance-sampled NLL is unreliable (too many data with PSIS k-hat > 0.7)
UNRELIABLE_MARK = "⚠"


def cell_of(row: Dict) -> str:
    """A row's cell, ``GUIDE/OBJECTIVE`` (a guide file by its NAME), from ``cell`` or else its config."""
    if row.get("cell"):
        return row["cell"]
    config = row["config"]
    estimator = (config.get("objective_options") or {}).get("estimator")
    return f"{config['guide'].rpartition(':')[2]}/{config['objective']}" + (f":{estimator}" if estimator else "")


def cell_rows(rows: Sequence[Dict]) -> Dict[str, List[Dict]]:
    """The rows of each cell, cells in the grid's order, each cell's rows in seed order."""
    cells: Dict[str, List[Dict]] = {}
    for r in rows:
        cells.setdefault(cell_of(r), []).append(r)
    return {c: sorted(rs, key=lambda r: r["config"].get("seed", 0)) for c, rs in cells.items()}


def _neg(v: Optional[float]) -> Optional[float]:
    return None if v is None else -v


def _figures(r: Dict) -> Dict[str, Optional[float]]:
    """A row's figures in the person-facing convention: −ELBO, NLL, gap, and the rest as they are."""
    return {"neg_elbo": _neg(r.get("elbo")), "nll": _neg(r.get("log_likelihood")), "gap": r.get("elbo_gap"),
            "au": r.get("active_units"), "khat": r.get("psis_khat_frac_over_0_7"), "seconds": r.get("epoch_seconds"),
            "is_se": r.get("log_likelihood_se"), "data_se": r.get("log_likelihood_data_se")}


def cell_summaries(rows: Sequence[Dict]) -> Dict[str, Dict]:
    """Per cell: the seeds, the mean ± SE across seeds of each figure, the pooled IS standard error of the
    mean NLL, the mean data SE and k-hat share, and whether its NLL is reliable."""
    out = {}
    for cell, rs in cell_rows(rows).items():
        figs = [_figures(r) for r in rs]

        def summary(key, figs=figs):
            vals = [f[key] for f in figs]
            return summarize(vals) if all(isinstance(v, (int, float)) for v in vals) else None
        is_ses = [f["is_se"] for f in figs]
        khat = summary("khat")
        out[cell] = {"seeds": [r["config"].get("seed", 0) for r in rs], **{k: summary(k) for k in
                     ("neg_elbo", "nll", "gap", "au", "seconds", "data_se")},
                     "is_se": pooled_se(is_ses) if all(isinstance(v, (int, float)) for v in is_ses) else None,
                     "khat": khat, "unreliable": khat is not None and khat.mean > UNRELIABLE_SHARE}
    return out


def _num(v: Optional[float]) -> str:
    return "–" if v is None else f"{v:.3f}" if abs(v) < 10 else f"{v:.2f}"


def _mean_se(s) -> str:
    if s is None:
        return "–"
    return _num(s.mean) if s.se is None else f"{_num(s.mean)} ± {_num(s.se)}"


def _difference(d: Optional[PairedDifference]) -> Tuple[str, str]:
    """A paired difference's cell ("−0.31 [−0.52, −0.10]") and its verdict, said plainly."""
    if d is None:
        return "–", "–"
    sign = lambda v: f"{v:+.3f}".replace("-", MINUS)   # noqa: E731
    if d.low is None:
        return sign(d.mean), "one seed: no interval"
    text = f"{sign(d.mean)} [{sign(d.low)}, {sign(d.high)}]"
    if d.contains_zero:
        return text, "interval contains 0: not distinguishable"
    return text, "lower (better) than the baseline" if d.high < 0 else "higher (worse) than the baseline"


def _paired(rs: List[Dict], base: List[Dict], key: str, confidence: float) -> Optional[PairedDifference]:
    """The paired difference of figure ``key`` over the seeds both cells have."""
    theirs = {r["config"]["seed"]: _figures(r)[key] for r in base}
    pairs = [(_figures(r)[key], theirs[r["config"]["seed"]]) for r in rs if r["config"]["seed"] in theirs]
    pairs = [(a, b) for a, b in pairs if a is not None and b is not None]
    if not pairs:
        return None
    return paired_difference([a for a, _ in pairs], [b for _, b in pairs], confidence)


def default_baseline(summaries: Dict[str, Dict]) -> Tuple[str, Optional[str]]:
    """The cell the paired differences are taken from when none is named, and why, if it is not a reliable one:
    the first cell whose importance-sampled NLL is reliable (a difference from an unreliable baseline is itself
    unreliable, so every NLL row would be marked); the first cell, said so, where none is."""
    cells = list(summaries)
    reliable = [c for c in cells if not summaries[c]["unreliable"]]
    if reliable:
        return reliable[0], None if reliable[0] == cells[0] else (
            f"The baseline is {reliable[0]}, the first cell whose importance-sampled NLL is reliable "
            f"(--baseline-cell names another)")
    return cells[0], (f"No cell's importance-sampled NLL is reliable (each has k̂ > 0.7 on over "
                      f"{UNRELIABLE_SHARE:.0%} of its data), so the baseline is the first cell and every NLL "
                      f"difference is marked {UNRELIABLE_MARK}; compare the −ELBO, or evaluate with more samples")


def _collapsed(cells: Dict[str, List[Dict]]) -> List[str]:
    """One line per cell and seed whose model collapsed (:func:`~zoo.evaluation.reliability.collapse_warning`)."""
    lines = []
    for cell, rs in cells.items():
        for r in rs:
            warning = collapse_warning(r)
            if warning:
                seed = r["config"].get("seed", 0)
                lines.append(f"- {cell}{f' seed {seed}' if len(rs) > 1 else ''}: {warning}")
    return lines


def _likelihoods(rows: Sequence[Dict]) -> str:
    """The likelihood(s) the grid's figures are densities or probabilities under, as results.json names them."""
    names = list(dict.fromkeys(str(r["likelihood"]) for r in rows if r.get("likelihood")))
    return "; ".join(names)


def compare_markdown(rows: Sequence[Dict], baseline: Optional[str] = None, confidence: float = 0.95,
                     timings: bool = True, notes: Sequence[str] = ()) -> str:
    """The grid's tables: per cell the mean ± SE over seeds, then the paired differences from ``baseline``
    (a cell, ``GUIDE/OBJECTIVE``; default :func:`default_baseline`, the first reliable one), the cells whose
    model collapsed, ``notes`` (what a reader must know to read the grid, e.g. an axis that cannot matter:
    :func:`zoo.rules.grid_axes_without_effect`), then a legend. ``timings=False`` leaves out the training
    time, the one figure that differs between two runs of the same grid."""
    if not rows:
        return "(no cell finished)\n"
    cells = cell_rows(rows)
    summaries = cell_summaries(rows)
    why_baseline = None
    if baseline not in cells:
        baseline, why_baseline = default_baseline(summaries)
    first = rows[0]
    model = first["config"]["model"].rpartition(":")[2]
    head = ["cell", "seeds", f"{MINUS}ELBO", "NLL (IS)", "± IS se", "± data se", "gap", "AU", "k̂>0.7"] + (
        ["train s"] if timings else [])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for cell, s in summaries.items():
        khat = "–" if s["khat"] is None else f"{s['khat'].mean:.1%}" + (f" {UNRELIABLE_MARK}" if s["unreliable"] else "")
        name = f"{cell} (baseline)" if cell == baseline else cell
        values = [name, str(len(s["seeds"])), _mean_se(s["neg_elbo"]), _mean_se(s["nll"]), _num(s["is_se"]),
                  _num(s["data_se"].mean if s["data_se"] else None), _mean_se(s["gap"]),
                  _mean_se(s["au"]) if s["au"] is None or s["au"].se else _num(s["au"].mean), khat]
        if timings:
            values.append(_mean_se(s["seconds"]))
        lines.append("| " + " | ".join(values) + " |")
    seeds = sorted({r["config"]["seed"] for r in rows})
    likelihood = _likelihoods(rows)
    text = [f"# {model}: {len(cells)} cells × {len(seeds)} seed{'s' if len(seeds) > 1 else ''} "
            f"({', '.join(map(str, seeds))})", "",
            f"Nats per datum on the {first.get('split', 'test')} split ({first.get('num_data', '?')} data, "
            f"K = {first.get('num_samples', '?')} importance samples" + (f", likelihood {likelihood}" if likelihood
                                                                         else "") +
            "), lower is better. Each figure is the mean over the seeds ± its standard error across them.", "",
            *[f"Note: {note}" + "\n" for note in notes], *lines, ""]
    collapsed = _collapsed(cells)
    if collapsed:
        text += ["## Collapsed cells", "", "Their figures are those of a model that ignores its latents:", "",
                 *collapsed, ""]
    others = [c for c in cells if c != baseline]
    if others:
        n = min(len(cells[c]) for c in cells)
        text += [f"## Paired differences from the baseline {baseline}", "",
                 f"Per seed, the cell's figure minus the baseline's at the same seed (same data splits, minibatch "
                 f"order and evaluation samples); mean [{confidence:.0%} t-interval] over the seeds. Negative: the "
                 f"cell is lower (better) than the baseline." + (" With one seed there is no interval: train more "
                                                                  "seeds (--seeds 0,1,2)." if n < 2 else "")
                 + (f" {why_baseline}." if why_baseline else ""), "",
                 f"| cell | Δ {MINUS}ELBO | {MINUS}ELBO | Δ NLL | NLL |", "|---|---|---|---|---|"]
        for cell in others:
            e_text, e_verdict = _difference(_paired(cells[cell], cells[baseline], "neg_elbo", confidence))
            n_text, n_verdict = _difference(_paired(cells[cell], cells[baseline], "nll", confidence))
            mark = f" {UNRELIABLE_MARK}" if summaries[cell]["unreliable"] or summaries[baseline]["unreliable"] else ""
            text.append(f"| {cell} | {e_text} | {e_verdict} | {n_text} | {n_verdict}{mark} |")
        text.append("")
    text += ["Legend:", "",
             f"- {MINUS}ELBO, NLL: the test ELBO and the importance-sampled log p(x), negated (the papers' "
             f"convention); lower is better. compare.json keeps the harness's signs (`elbo`, `log_likelihood`).",
             "- mean ± se: the mean over seeds and its standard error across them (sd / √n, n − 1 degrees of freedom).",
             "- ± IS se: the Monte Carlo standard error of the mean NLL from importance sampling, √(Σ se_s²) / n over "
             "the seeds (each seed draws its own samples).",
             "- ± data se: the standard error over the choice of test data (per-datum sd / √n); every cell is scored "
             "on the same data, so it cancels from the paired differences.",
             f"- gap: {MINUS}ELBO − NLL, how far the ELBO lies below log p(x) (≥ 0 up to Monte Carlo error).",
             "- AU: active units, latent dimensions with Cov_x(E_q[z | x]) > 0.01.",
             f"- k̂>0.7: the share of data whose PSIS k-hat exceeds 0.7 (Vehtari et al.; Yao et al. 2018), mean over "
             f"seeds. {UNRELIABLE_MARK}: over {UNRELIABLE_SHARE:.0%} of the data, so that cell's NLL (and a "
             f"difference involving it) is not to be trusted.",
             *(["- train s: seconds of training, summed over the epochs (a resumed cell counts each epoch once)."]
               if timings else [])]
    return "\n".join(text) + "\n"
