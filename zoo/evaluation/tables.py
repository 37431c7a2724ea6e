"""Markdown tables of evaluation summaries and gradient diagnostics."""
from __future__ import annotations

from typing import Dict, Sequence

from zoo.objectives import objective_capabilities

__all__ = ["COLUMNS", "BITS_COLUMNS", "results_markdown", "gradients_markdown"]


COLUMNS = [("model", "model"), ("guide", "guide"), ("objective", "objective"), ("K", "particles"),
           ("epochs", "epochs_trained"), ("ELBO", "elbo"), ("rec", "reconstruction"), ("KL", "kl"),
           ("IWAE-k", "iwae_bound"), ("log p(x) (IS)", "log_likelihood"), ("± se", "log_likelihood_se"),
           ("± data se", "log_likelihood_data_se"),
           ("exact log p(x)", "exact_log_likelihood"), ("gap", "elbo_gap"), ("AU", "active_units"),
           ("KL per site", "kl_per_site"), ("AU per site", "active_units_per_site"),
           ("k̂>0.7", "psis_khat_frac_over_0_7"), ("train s", "train_seconds")]

#: Shown when some run's data are discrete levels (``bits_per_dim_*``, :mod:`zoo.evaluation.harness`).
BITS_COLUMNS = [("−ELBO bits/dim", "bits_per_dim_elbo"), ("NLL bits/dim", "bits_per_dim_nll")]


def results_markdown(rows: Sequence[Dict]) -> str:
    """A Markdown table of evaluation summaries (one row per run), nats per datum."""
    def cell(row, key):
        config = row.get("config", {})
        v = row.get(key, config.get(key))
        objective_options = config.get("objective_options", {})
        estimator = objective_options.get("estimator")                          # a bound's, if given
        if key == "particles" and v is None:
            v = objective_options.get("particles") or objective_capabilities(config["objective"],
                                                                             estimator).default_particles
        if key == "objective" and estimator:
            v = f"{v} ({estimator})"
        if v is None:
            return "–"
        if isinstance(v, dict):                                 # per latent site, in the model's order
            return ", ".join(f"{name} {x:.2f}" if isinstance(x, float) else f"{name} {x}" for name, x in v.items()) or "–"
        if isinstance(v, float):
            return f"{v:.1%}" if key == "psis_khat_frac_over_0_7" else f"{v:.3f}" if abs(v) < 10 else f"{v:.2f}"
        return str(v)
    columns = COLUMNS + (BITS_COLUMNS if any(r.get("bits_per_dim_nll") is not None for r in rows) else [])
    head = "| " + " | ".join(c for c, _ in columns) + " |"
    sep = "|" + "|".join("---" for _ in columns) + "|"
    lines = [head, sep] + ["| " + " | ".join(cell(r, k) for _, k in columns) + " |" for r in rows]
    first = rows[0] if rows else {}
    note = (f"\nAll figures in nats per datum on the {first.get('split', 'test')} split "
            f"({first.get('num_data', '?')} data), K = {first.get('num_samples', '?')} importance samples, "
            f"IWAE-k with k = {first.get('iwae_k', '?')}.{_proposal_text(first.get('proposal'))}\n")
    if columns is not COLUMNS:
        note += ("Bits/dim (discrete data: nats / (D ln 2)), -ELBO and NLL = -log p(x), lower is better; – where "
                 "the likelihood is a density.\n")
    return "\n".join(lines) + "\n" + note + _globals_markdown(rows) + _conditional_markdown(rows)


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
                     f"its {r.get('global_guide')} guide over {r.get('data_elbo_samples')} draws: "
                     f"{r.get('data_elbo'):.3f}"
                     + (f" ± {r['data_elbo_se']:.3f} (Monte Carlo se)" if r.get("data_elbo_se") is not None else "")
                     + f" ({bound}).")
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
    head = (["model", "guide", "objective"] + [f"log p({p})" for p in pairs] + [f"SNIS log p({p})" for p in pairs]
            + [f"acc argmax p({p})" for p in accuracies] + [f"log p({v})" for v in views])

    def number(table, key, percent=False):
        v = (table or {}).get(key)
        return "–" if v is None else f"{v:.1%}" if percent else f"{v:.3f}" if abs(v) < 10 else f"{v:.2f}"
    lines = ["| " + " | ".join(h.replace("|", "\\|") for h in head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        config = r.get("config", {})
        cells = [str(config.get(k, "–")) for k in ("model", "guide", "objective")]
        cells += [number(r["conditional_log_likelihood"], p) for p in pairs]
        cells += [number(r.get("conditional_log_likelihood_self_normalized"), p) for p in pairs]
        cells += [number(r.get("conditional_accuracy"), p, percent=True) for p in accuracies]
        cells += [number(r.get("view_log_likelihood"), v) for v in views]
        lines.append("| " + " | ".join(cells) + " |")
    return ("\nConditional log-likelihoods of one view given another (nats per datum): log p(u|v) = "
            "log p^(x_u, x_v) - log p^(x_v), IS with the joint and with the single-view posterior q(z | x_v); SNIS: "
            "self-normalized IS with q(z | x_v) alone, log sum_k w_k p(x_u | z_k) - log sum_k w_k; log p(v) is the "
            "single view's IS estimate.\n\n" + "\n".join(lines) + "\n")


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
