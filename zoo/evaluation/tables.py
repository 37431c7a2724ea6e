"""Markdown tables of evaluation summaries and gradient diagnostics."""
from __future__ import annotations

from typing import Dict, List, Sequence

from zoo.evaluation.reliability import KHAT_THRESHOLD, collapse_warning, is_unreliable, khat_share, reliability_cell, \
    reliability_legend
from zoo.objectives import objective_capabilities

__all__ = ["COLUMNS", "BITS_COLUMNS", "LEGEND", "results_markdown", "run_warnings", "gradients_markdown"]


#: (head, key, sign): the columns of results.md and the console summary, in the papers' NLL convention: a
#: figure of the harness (``elbo``, ``log_likelihood``, ..., higher is better in the JSON) is shown times ``sign``,
#: so that the bounds and the NLL are positive and lower is better
COLUMNS = [("model", "model", 1), ("guide", "guide", 1), ("objective", "objective", 1), ("K", "particles", 1),
           ("epochs", "epochs_trained", 1), ("−ELBO", "elbo", -1), ("−rec", "reconstruction", -1), ("KL", "kl", 1),
           ("−IWAE-k", "iwae_bound", -1), ("NLL (IS)", "log_likelihood", -1), ("± se", "log_likelihood_se", 1),
           ("± data se", "log_likelihood_data_se", 1),
           ("exact NLL", "exact_log_likelihood", -1), ("gap", "elbo_gap", 1), ("AU", "active_units", 1),
           ("KL per site", "kl_per_site", 1), ("AU per site", "active_units_per_site", 1),
           ("k̂>0.7", "psis_khat_frac_over_0_7", 1), ("train s", "train_seconds", 1)]

#: what each abbreviated column means, for the legend under the table
LEGEND = {
    "K": "particles of the training objective",
    "−rec": "−E_q[log p(x | z)], the reconstruction term",
    "KL": "E_q[log q(z | x) − log p(z)]",
    "−IWAE-k": "the IWAE bound with k samples, negated",
    "NLL (IS)": "−log p(x), importance-sampled",
    "± se": "its Monte Carlo standard error (⚠: not a precision for some data, whose weights are heavy-tailed: "
            "results.json's log_likelihood_se_note)",
    "± data se": "its standard error over the choice of data",
    "exact NLL": "−log p(x) in closed form",
    "gap": "−ELBO − NLL (the exact one where known): KL(q || posterior)",
    "AU": "active units, Cov_x(E_q[z_u | x]) > 0.01",
    "AU per site": "active units per latent site",
    "train s": "training seconds",
    "NLL bits/dim": "−ELBO and NLL in bits per dimension, nats / (D ln 2), for data of discrete levels (– where the "
                    "likelihood is a density)",
}
#: columns shown even when no row has them
_ALWAYS = {"model", "guide", "objective", "−ELBO", "NLL (IS)", "k̂>0.7"}

#: Shown when some run's data are discrete levels (``bits_per_dim_*``, :mod:`zoo.evaluation.harness`).
BITS_COLUMNS = [("−ELBO bits/dim", "bits_per_dim_elbo", 1), ("NLL bits/dim", "bits_per_dim_nll", 1)]


def _cell(row: Dict, key: str, sign: int) -> str:
    config = row.get("config", {})
    v = row.get(key, config.get(key))
    objective_options = config.get("objective_options", {})
    estimator = objective_options.get("estimator")                          # a bound's, if given
    if key == "particles" and v is None and "objective" in config:
        v = objective_options.get("particles") or objective_capabilities(config["objective"],
                                                                         estimator).default_particles
    if key == "objective" and estimator:
        v = f"{v} ({estimator})"
    if key == "psis_khat_frac_over_0_7":
        return reliability_cell(row)
    if key == "log_likelihood_se" and v is not None and (row.get("log_likelihood_se_reliable") or 1.0) < 1.0:
        return f"{_number(v)} ⚠"                    # not a precision for some data (log_likelihood_se_note)
    if v is None:
        return "–"
    if isinstance(v, dict) and len(v) < 2:                  # one site: the total says it
        return "–"
    if isinstance(v, dict):                                 # per latent site, in the model's order
        return ", ".join(f"{name} {_number(sign * x)}" if isinstance(x, float) else f"{name} {x}"
                         for name, x in v.items()) or "–"
    if isinstance(v, float):
        return _number(sign * v)
    return str(v)


def _number(v: float) -> str:
    text = f"{v:.3f}" if abs(v) < 10 else f"{v:.2f}"
    return "−" + text[1:] if text.startswith("-") else text


def results_markdown(rows: Sequence[Dict], warnings: bool = True) -> str:
    """A Markdown table of evaluation summaries (one row per run), nats per datum in the papers' convention
    (−ELBO and NLL: lower is better), with a legend of its abbreviated columns, the PSIS verdict, and a
    warning under it for each run whose NLL is unreliable or whose model collapsed (:func:`run_warnings`).
    Columns no row has a figure for (an exact NLL, per-site figures, bits/dim) are left out. ``warnings=False`` leaves the
    warnings to the caller (the console prints each on its own line)."""
    columns = COLUMNS[:-2] + BITS_COLUMNS + COLUMNS[-2:]
    cells = [[_cell(r, key, sign) for _, key, sign in columns] for r in rows]
    shown = [j for j, (head, _, _) in enumerate(columns) if head in _ALWAYS or any(c[j] != "–" for c in cells)]
    lines = ["| " + " | ".join(columns[j][0] for j in shown) + " |", "|" + "|".join("---" for _ in shown) + "|"]
    lines += ["| " + " | ".join(c[j] for j in shown) + " |" for c in cells]
    first = rows[0] if rows else {}
    legend = "; ".join(f"{head}: {LEGEND[head]}" for head, _, _ in (columns[j] for j in shown) if head in LEGEND)
    note = (f"\nNats per datum on the {first.get('split', 'test')} split ({first.get('num_data', '?')} data), "
            f"K = {first.get('num_samples', '?')} importance samples, k = {first.get('iwae_k', '?')}; −ELBO, −IWAE-k "
            f"and NLL: lower is better.{_proposal_text(first.get('proposal'))} {legend}. {reliability_legend()}.\n")
    found = [f"{_label(r, len(rows))}{w}" for r in rows for w in run_warnings(r)] if warnings else []
    notes = ("\n" + "\n".join(f"**Warning**: {w}" for w in found) + "\n") if found else ""
    return "\n".join(lines) + "\n" + note + notes + _globals_markdown(rows) + _conditional_markdown(rows)


def _label(row: Dict, n: int) -> str:
    """In a table of several runs, which one a warning is about."""
    if n < 2:
        return ""
    c = row.get("config", {})
    return f"{c.get('model')}/{c.get('guide')}/{c.get('objective')}: "


def run_warnings(row: Dict) -> List[str]:
    """The sentences a reader must see beside a run's figures: an unreliable NLL (the PSIS verdict), a collapsed
    model (:mod:`zoo.evaluation.reliability`)."""
    out = []
    if is_unreliable(row):
        out.append(f"{khat_share(row):.1%} of data have PSIS k-hat > {KHAT_THRESHOLD}: the importance-sampled NLL "
                   f"is unreliable (compare the −ELBO instead, or evaluate with a better proposal)")
    collapse = collapse_warning(row)
    if collapse:
        out.append(collapse)
    return out


def _globals_markdown(rows: Sequence[Dict]) -> str:
    """For runs of models with global latents: what the per-datum figures are given, and the data-set ELBO."""
    lines = []
    for r in rows:
        if not r.get("global_latents"):
            continue
        bound = "the MAP objective, not a bound" if r.get("global_guide") == "delta" else "a lower bound on log p(X) / N"
        config = r.get("config", {})
        lines.append(f"{r.get('model', config.get('model', ''))} / {r.get('guide', config.get('guide', ''))}: global latents {', '.join(r['global_latents'])}; "
                     f"every figure above is per datum given theta = theta_hat, {r.get('global_point_estimate')} "
                     f"(log p(x) is the IS estimate of log p(x_n | theta_hat)); data-set ELBO per datum, theta from "
                     f"its {r.get('global_guide')} guide over {r.get('data_elbo_samples')} draws, negated: "
                     f"{_number(-r.get('data_elbo'))}"
                     + (f" ± {r['data_elbo_se']:.3f} (Monte Carlo se)" if r.get("data_elbo_se") is not None else "")
                     + f" ({bound}; lower is better).")
    return ("\n" + "\n".join(lines) + "\n") if lines else ""


def _proposal_text(proposal) -> str:
    """One sentence naming the importance sampler's proposal (results.json before it was recorded: the guide)."""
    if not proposal or proposal.get("kind") != "defensive":
        return " log p(x) by importance sampling with the guide as proposal."
    return (f" log p(x), its se and k-hat by importance sampling with the defensive proposal: the guide mixed with "
            f"a wider copy ({proposal['draws_wide']} of the K draws; Hesterberg 1995); ELBO, KL and IWAE-k from "
            f"the guide's {proposal['draws_q']} draws.")


def _conditional_markdown(rows: Sequence[Dict]) -> str:
    """For runs of models with views: log p(x_u | x_v) per pair of views, label accuracies, log p(x_v)."""
    rows = [r for r in rows if r.get("conditional_log_likelihood")]
    if not rows:
        return ""
    pairs = list(dict.fromkeys(k for r in rows for k in r["conditional_log_likelihood"]))
    accuracies = list(dict.fromkeys(k for r in rows for k in (r.get("conditional_accuracy") or {})))
    views = list(dict.fromkeys(k for r in rows for k in (r.get("view_log_likelihood") or {})))
    head = (["model", "guide", "objective"] + [f"−log p({p})" for p in pairs] + [f"SNIS −log p({p})" for p in pairs]
            + [f"acc argmax p({p})" for p in accuracies] + [f"−log p({v})" for v in views])

    def number(table, key, percent=False):
        v = (table or {}).get(key)
        return "–" if v is None else f"{v:.1%}" if percent else _number(-v)
    lines = ["| " + " | ".join(h.replace("|", "\\|") for h in head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        config = r.get("config", {})
        cells = [str(config.get(k, "–")) for k in ("model", "guide", "objective")]
        cells += [number(r["conditional_log_likelihood"], p) for p in pairs]
        cells += [number(r.get("conditional_log_likelihood_self_normalized"), p) for p in pairs]
        cells += [number(r.get("conditional_accuracy"), p, percent=True) for p in accuracies]
        cells += [number(r.get("view_log_likelihood"), v) for v in views]
        lines.append("| " + " | ".join(cells) + " |")
    return ("\nConditional negative log-likelihoods of one view given another (nats per datum, lower is better): "
            "log p(u|v) = log p^(x_u, x_v) - log p^(x_v), IS with the joint and with the single-view posterior "
            "q(z | x_v); SNIS: self-normalized IS with q(z | x_v) alone, log sum_k w_k p(x_u | z_k) - log sum_k w_k; "
            "log p(v) is the single view's IS estimate; acc: how often argmax_c p(x_u = c | x_v) is the datum's class "
            "(higher is better).\n\n" + "\n".join(lines) + "\n")


def gradients_markdown(result: Dict) -> str:
    head = ("| objective | K | group | variance | SNR | cosine to ref | bias norm | ± se | s/estimate |\n"
            "|---|---|---|---|---|---|---|---|---|")
    def f(v, fmt):
        return "–" if v is None else format(v, fmt)
    lines = [head] + [f"| {r['objective']} | {r['particles']} | {r['group']} | {f(r['variance'], '.3g')} | "
                      f"{f(r['snr'], '.3f')} | {f(r.get('cosine'), '.4f')} | {f(r.get('bias_norm'), '.3g')} | "
                      f"{f(r.get('bias_se'), '.3g')} | {f(r['seconds'], '.4f')} |" for r in result["rows"]]
    refs = "; ".join(f"{g}: {h}" for g, h in result["reference"].items())
    return "\n".join(lines) + (f"\n\nReference gradients — {refs}. Minibatch of {result['batch_size']} data, "
                               f"{result['rows'][0]['repeats'] if result['rows'] else 0} repeats.\n")
