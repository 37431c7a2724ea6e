"""Gradient variance, signal-to-noise and cost of SVI estimators at fixed parameters.

1. The lecture toy: d/dtheta E_{N(theta,1)}[x^2] = 2 theta, REINFORCE against reparameterization,
   as a function of the number of samples S.
2. The 784-200-200-50 VAE on binarized MNIST (at initialization, or --vae-checkpoint): REINFORCE
   (score function) against the reparameterized ELBO, and IWAE against DReG, as K grows, for the
   decoder ("model") and encoder ("guide") parameters.
3. The SBN-200 on binarized MNIST (at initialization, or --sbn-checkpoint): REINFORCE (elbo),
   TraceGraph with decaying and NVIL baselines, RLOO (leave-one-out baseline, K = 2 and 5, against
   REINFORCE with the same K), VIMCO (K = 5 and 10), DisARM for the IWAE bound (K = 5 pairs: the cost of VIMCO at
   K = 10, the bound of VIMCO at K = 5), ARM and DisARM (one antithetic pair: two model evaluations, as RLOO with
   K = 2), REBAR and RELAX (their control variate first trained for 200 steps at the fixed parameters, then held),
   the TVO with S = 10 (the gradient of another bound: its cosine to the ELBO's reference is not a bias), and the
   relaxed (Gumbel) guide under the Concrete ELBO and under Jang et al.'s discrete-KL objective.
4. The cost of one gradient estimate of each objective, as a ratio to Trace_ELBO at the same K,
   measured in the same run.
5. ``cat``: the 20x10 categorical VAE (at initialization, or --cat-checkpoint): REINFORCE (elbo), RLOO with K = 2,
   ARSM (one Dirichlet draw per variable, 46 evaluations) and the TVO with S = 10, as the SBN rows.
6. ``tighter``: Rainforth et al. (2018)'s signal-to-noise figure on the same VAE: IWAE's encoder SNR falling as
   its K grows while the decoder's rises, beside MIWAE and PIWAE with M = 8 groups of K, at the same total of
   M K samples (8, 64 and 512); no reference is needed for the SNR.
7. ``weights``: at the tighter section's checkpoint and minibatch, what the paper's argument assumes: the IWAE bound at K = 1, 8, 64, 512 and 4096 (from 4096 draws per
   datum), the spread of log w, and the share of data whose PSIS k-hat exceeds 0.7. The encoder's expected IWAE
   gradient falls as 1/K only once K is past the weights' relative variance; while the gap to log p(x) closes more
   slowly than 1/K (heavy-tailed weights), the SNR need not fall.
8. ``budget``: the paper's MNIST comparison on the same VAE and minibatch, at a fixed budget of M K = 64 samples per
   datum: IWAE (M = 1, K = 64), and MIWAE and PIWAE with (M, K) = (16, 4), (4, 16) and MIWAE at (64, 1) (the VAE's
   ELBO averaged over 64 draws; PIWAE at K = 1 is IWAE_64 for the decoder and that ELBO for the encoder). At a fixed
   budget, moving samples from M into K buys the decoder a tighter bound and costs the encoder its signal, whatever
   the regime of the weights. Each row gives the mean and the median over coordinates of |mean g| / sd(g) (the
   paper draws the per-coordinate SNRs as histograms).
9. ``rainforth``: the same figure on the paper's own model, where its assumption holds: z ~ N(mu, I_20),
   x | z ~ N(z, I_20) (the zoo's pPCA with W = I, sigma = 1, 20 latents), the amortized guide affine
   (q(z | x) = N(A x + b, diag s(x)^2)), 1024 data drawn from the model with mu ~ N(0, I), every parameter of
   model and guide set to its optimum plus N(0, 0.01^2) noise, and the gradient taken on all 1024 data. IWAE at
   K = 1, 10 and 100, and PIWAE and MIWAE with M = 10 groups of K = 1 and 10, with the slope of log SNR against
   log K (the paper's +1/2 for the model, -1/2 for the guide). An SNR estimate has a floor: a coordinate of zero
   mean reads about sqrt(2 / pi) / sqrt(R) from R repeats (0.04 at R = 400), so the guide's SNR, which falls as
   1 / sqrt(K), is read up to K = 100 only.

--sections picks some of them (the cost needs the VAE), and --name the result file.

    python benchmarks/gradient_variance.py --data-dir ../shared/data --repeats 100 \
        --vae-checkpoint runs/quality_mnist/elbo --sbn-checkpoint runs/discrete_mnist/sbn200-nvil
    python benchmarks/gradient_variance.py --data-dir ../shared/data --repeats 30 --reference-repeats 3 \
        --sections sbn --name gradient_variance_sbn --sbn-checkpoint runs/discrete_mnist_rloo/sbn200-rloo
    python benchmarks/gradient_variance.py --data-dir ../shared/data --repeats 30 --reference-repeats 3 \
        --sections sbn --name gradient_variance_sbn_relax --sbn-checkpoint runs/discrete_mnist_arm/sbn200-disarm
    python benchmarks/gradient_variance.py --data-dir ../shared/data --repeats 400 --sections weights,rainforth \
        --name gradient_variance_rainforth --vae-checkpoint benchmarks/checkpoints/vae-mnist-elbo
    python benchmarks/gradient_variance.py --data-dir ../shared/data --repeats 400 --sections budget \
        --name gradient_variance_budget --vae-checkpoint benchmarks/checkpoints/vae-mnist-elbo
    python benchmarks/gradient_variance.py --data-dir ../shared/data --repeats 30 --reference-repeats 3 \
        --sections sbn --name gradient_variance_sbn_iwae --sbn-checkpoint runs/discrete_mnist_arm/sbn200-disarm
    python benchmarks/gradient_variance.py --data-dir ../shared/data --repeats 30 --reference-repeats 3 \
        --sections cat --name gradient_variance_cat --cat-checkpoint runs/discrete_mnist_arsm/cat20x10-rloo
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import RESULTS, provenance, provenance_lines, run_script, write_result  # noqa: E402

import zoo  # noqa: E402,F401
from zoo.data import load_dataset  # noqa: E402
from zoo.evaluation.gradients import GradientStudy, diagnose, toy_gradients  # noqa: E402
from zoo.registry import build_guide, build_model  # noqa: E402
from zoo.evaluation.tables import gradients_markdown  # noqa: E402


SECTIONS = ("toy", "vae", "sbn", "cat", "tighter", "budget", "weights", "rainforth")


def load(folder, model, *guides) -> bool:
    """Model and guides from a run's checkpoint; each guide takes the parameters it has
    (encoder always; the NVIL baseline net only where the guide has one). Returns whether the
    checkpoint held a trained NVIL baseline net (a run trained with ``--baseline neural``)."""
    if not folder:
        return True
    from zoo.training.checkpoint import load_checkpoint
    state = load_checkpoint(Path(folder) / "checkpoint.pt")
    model.load_state_dict(state["model"])
    for guide in guides:
        guide.load_state_dict(state["guide"], strict=False)
    return any(k.startswith("baselines.") for k in state["guide"])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--repeats", type=int, default=100)
    p.add_argument("--reference-repeats", type=int, default=20,
                   help="high-particle (K=1000) gradients averaged for the reference where no exact one exists")
    p.add_argument("--vae-checkpoint", default=None)
    p.add_argument("--sbn-checkpoint", default=None)
    p.add_argument("--cat-checkpoint", default=None)
    p.add_argument("--sections", default=",".join(SECTIONS),
                   help=f"comma-separated, from {', '.join(SECTIONS)} (default: all)")
    p.add_argument("--name", default="gradient_variance", help="result file name in benchmarks/results")
    args = p.parse_args(argv)
    sections = set(args.sections.split(","))
    if not sections or sections - set(SECTIONS):
        p.error(f"--sections takes {', '.join(SECTIONS)}, comma-separated; got {args.sections!r}")

    needs_mnist = bool(sections & {"vae", "sbn", "cat", "tighter", "budget", "weights"})         # the toy and rainforth make their own
    data = load_dataset("binarized_mnist", args.data_dir) if needs_mnist else None
    x = data.train[:args.batch_size] if needs_mnist else None
    toy = toy_gradients(theta=1.5, samples=(1, 10, 100, 1000), repeats=10000) if "toy" in sections else []
    vae_result = vae_section(data, x, args) if "vae" in sections else None
    sbn_rows = sbn_section(data, x, args) if "sbn" in sections else []
    cat_rows = cat_section(data, x, args) if "cat" in sections else []
    tighter_rows = tighter_section(data, x, args) if "tighter" in sections else []
    budget = budget_section(data, x, args) if "budget" in sections else None
    weights = log_weight_spread(data, x, args) if "weights" in sections else None
    rainforth = rainforth_section(args) if "rainforth" in sections else None
    cost = {}
    for r in vae_result["rows"] if vae_result else []:
        if r["group"] == "model":
            base = next(b["seconds"] for b in vae_result["rows"] if b["objective"] == "elbo"
                        and b["particles"] == r["particles"] and b["group"] == "model")
            cost[f"{r['objective']} K={r['particles']}"] = r["seconds"] / base
    write_result(args.name, {"toy": toy, "vae": vae_result, "sbn": sbn_rows, "cat": cat_rows, "tighter": tighter_rows,
                             "budget": budget, "tighter_log_weights": weights, "rainforth": rainforth, "cost_ratio_to_elbo": cost,
                             "batch_size": args.batch_size, "repeats": args.repeats, "sections": sorted(sections),
                             "vae_checkpoint": args.vae_checkpoint, "sbn_checkpoint": args.sbn_checkpoint,
                             "cat_checkpoint": args.cat_checkpoint})
    md = (markdown(toy, vae_result, sbn_rows, cost, args) + cat_markdown(cat_rows, args)
          + tighter_markdown(tighter_rows, args) + budget_markdown(budget, args) + weights_markdown(weights) + rainforth_markdown(rainforth))
    (RESULTS / f"{args.name}.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


def vae_section(data, x, args):
    vae = build_model("vae", data.x_dim)
    vae_guide = build_guide("amortized", vae)
    load(args.vae_checkpoint, vae, vae_guide)
    return diagnose(vae, vae_guide, x, ["elbo", "reinforce", "iwae", "dreg", "stl"], [1, 5, 50], args.repeats,
                    GradientStudy(reference_repeats=args.reference_repeats))


def sbn_section(data, x, args):
    sbn = build_model("sbn", data.x_dim, layers=(200,))
    sbn_guides = {b: build_guide("amortized", sbn, baseline=b) for b in ("none", "decaying", "neural")}
    trained_nvil = load(args.sbn_checkpoint, sbn, *sbn_guides.values())
    sbn_rows = []
    for label, guide, objective, k in (("REINFORCE (elbo)", sbn_guides["none"], "elbo", 1),
                                       ("tracegraph, decaying baseline", sbn_guides["decaying"], "tracegraph", 1),
                                       ("tracegraph, NVIL neural baseline", sbn_guides["neural"], "tracegraph", 1),
                                       ("REINFORCE (elbo) K=2", sbn_guides["none"], "elbo", 2),
                                       ("rloo K=2, leave-one-out baseline", sbn_guides["none"], "rloo", 2),
                                       ("REINFORCE (elbo) K=5", sbn_guides["none"], "elbo", 5),
                                       ("rloo K=5, leave-one-out baseline", sbn_guides["none"], "rloo", 5),
                                       ("vimco K=5 (IWAE bound)", sbn_guides["none"], "vimco", 5),
                                       ("vimco K=10 (IWAE bound K=10: 10 evaluations)", sbn_guides["none"], "vimco",
                                        10),
                                       ("iwae disarm K=5 pairs (IWAE bound K=5: 10 evaluations)", sbn_guides["none"],
                                        "iwae:disarm", 5),
                                       ("arm, one antithetic pair", sbn_guides["none"], "arm", 1),
                                       ("disarm, one antithetic pair", sbn_guides["none"], "disarm", 1),
                                       ("rebar, relaxed control variate", sbn_guides["none"], "rebar", 1),
                                       ("relax, relaxed control variate + network", sbn_guides["none"], "relax", 1),
                                       ("tvo S=10, P=5 (TVO bound)", sbn_guides["none"], "tvo", 10)):
        if guide.baseline == "neural" and not trained_nvil:
            print(f"skipped {label}: {args.sbn_checkpoint} was not trained with --baseline neural, so its baseline "
                  f"net would be untrained", file=sys.stderr)
            continue
        if objective == "tracegraph" and guide.baseline == "decaying":   # let the running average settle
            diagnose(sbn, guide, x, [objective], [k], 20, GradientStudy(reference=False))
        rows = diagnose(sbn, guide, x, [objective], [k], args.repeats,
                        GradientStudy(reference_repeats=args.reference_repeats))["rows"]
        sbn_rows += [dict(r, estimator=label) for r in rows]
    relaxed = build_guide("relaxed", sbn, temperature=0.5, temperature_min=0.5)
    relaxed.load_state_dict(sbn_guides["none"].state_dict(), strict=False)   # the same encoder
    for objective, label in (("elbo", "relaxed, Concrete ELBO (elbo), tau=0.5; a biased surrogate"),
                             ("tracemeanfield", "relaxed, discrete KL (tracemeanfield), tau=0.5; a biased surrogate")):
        sbn_rows += [dict(r, estimator=label) for r in diagnose(
            sbn, relaxed, x, [objective], [1], args.repeats, GradientStudy(reference_repeats=args.reference_repeats))["rows"]]
    return sbn_rows


#: (label, objective, K): the categorical section's rows
CATEGORICAL = (("REINFORCE (elbo)", "elbo", 1), ("rloo K=2, leave-one-out baseline", "rloo", 2),
               ("arsm, one Dirichlet draw (46 evaluations)", "arsm", 1), ("tvo S=10, P=5 (TVO bound)", "tvo", 10))


def cat_section(data, x, args):
    model = build_model("categorical_vae", data.x_dim)
    guide = build_guide("amortized", model)
    load(args.cat_checkpoint, model, guide)
    rows = []
    for label, objective, k in CATEGORICAL:
        rows += [dict(r, estimator=label) for r in diagnose(
            model, guide, x, [objective], [k], args.repeats, GradientStudy(reference_repeats=args.reference_repeats))["rows"]]
    return rows


def cat_markdown(rows, args):
    if not rows:
        return []
    md = [f"## Categorical VAE 20x10, minibatch of {args.batch_size}, "
          f"{'checkpoint ' + args.cat_checkpoint if args.cat_checkpoint else 'at initialization'}", "",
          "| estimator | group | variance | SNR | cosine to ref | s/estimate |", "|---|---|---|---|---|---|"]
    md += [f"| {r['estimator']} | {r['group']} | {r['variance']:.4g} | {r['snr']:.4f} | "
           f"{r.get('cosine', float('nan')):.4f} | {r['seconds']:.4f} |" for r in rows]
    return md + ["", f"Reference: {args.reference_repeats} x K=1000 VIMCO gradients for the model, RLOO ELBO gradients "
                 "for the guide (10^20 configurations: no exact gradient). The tvo rows estimate the TVO's gradient, "
                 "so their cosine to the ELBO reference is not a bias measure.", ""]


#: (label, objective, K values, M): the tighter section's rows, at M K = 1, 8, 64 and 512 samples per datum
TIGHTER = (("IWAE", "iwae", (1, 8, 64, 512), None), ("MIWAE, M = 8", "miwae", (1, 8, 64), 8),
           ("PIWAE, M = 8", "piwae", (1, 8, 64), 8))


def grouped_rows(model, guide, x, table, repeats: int, seed: int = 0):
    """SNR rows of each (label, objective, K values, M or None) of ``table`` at fixed parameters, each row with its
    label, M and its M K samples per datum."""
    rows = []
    for label, objective, ks, outer in table:
        options = {objective: {"outer": outer}} if outer else None
        result = diagnose(model, guide, x, [objective], list(ks), repeats,
                          GradientStudy(seed=seed, reference=False, objective_options=options))
        rows += [dict(r, label=label, outer=outer or 1, samples=r["particles"] * (outer or 1)) for r in result["rows"]]
    return rows


def checkpoint_vae(data, args):
    """The 784-200-200-50 VAE and its amortized guide, from --vae-checkpoint (or at initialization)."""
    vae = build_model("vae", data.x_dim)
    guide = build_guide("amortized", vae)
    load(args.vae_checkpoint, vae, guide)
    return vae, guide


def tighter_section(data, x, args):
    return grouped_rows(*checkpoint_vae(data, args), x, TIGHTER, args.repeats)


def tighter_markdown(rows, args):
    if not rows:
        return []
    md = [f"## Tighter bounds, encoder and decoder SNR (Rainforth et al. 2018), VAE 784-200-200-50, minibatch of "
          f"{args.batch_size}, {'checkpoint ' + args.vae_checkpoint if args.vae_checkpoint else 'at initialization'}",
          "", "| objective | K | M | samples M K | group | SNR | variance |", "|---|---|---|---|---|---|---|"]
    md += [f"| {r['label']} | {r['particles']} | {r['outer']} | {r['samples']} | {r['group']} | {r['snr']:.4f} | "
           f"{r['variance']:.4g} |" for r in rows]
    return md + [""]


#: the budget section's rows at M K = BUDGET samples per datum: (label, objective, K, M)
BUDGET = 64
BUDGET_ROWS = (("IWAE", "iwae", (64,), None), ("MIWAE", "miwae", (16,), 4), ("PIWAE", "piwae", (16,), 4),
               ("MIWAE", "miwae", (4,), 16), ("PIWAE", "piwae", (4,), 16),
               ("MIWAE (the VAE's ELBO, 64 draws)", "miwae", (1,), 64), ("PIWAE", "piwae", (1,), 64))


def budget_section(data, x, args):
    """Encoder and decoder SNR at a fixed budget of M K samples per datum (module docstring, 8.)."""
    rows = grouped_rows(*checkpoint_vae(data, args), x, BUDGET_ROWS, args.repeats)
    assert all(r["samples"] == BUDGET for r in rows)
    return {"rows": rows, "budget": BUDGET, "slopes": budget_slopes(rows)}


def budget_slopes(rows):
    """Least-squares slope of log SNR (mean over coordinates) against log K along IWAE and the MIWAE rows (M = 64 / K),
    for each group: the paper's asymptotic SNR_guide ~ sqrt(M / K) gives -1 at a fixed budget, of which -1/2 is the
    sqrt(M) of averaging M independent estimates."""
    import numpy as np
    slopes = {}
    for group in ("model", "guide"):
        pts = sorted((r["particles"], r["snr"]) for r in rows if r["group"] == group and r["objective"] in
                     ("iwae", "miwae"))
        slopes[group] = float(np.polyfit(np.log([k for k, _ in pts]), np.log([v for _, v in pts]), 1)[0])
    return slopes


def budget_markdown(budget, args):
    import math
    if not budget:
        return []
    rows = budget["rows"]
    md = [f"## A fixed budget of M K = {BUDGET} samples per datum (Rainforth et al. 2018's MNIST comparison), VAE "
          f"784-200-200-50, minibatch of {args.batch_size}, "
          f"{'checkpoint ' + args.vae_checkpoint if args.vae_checkpoint else 'at initialization'}", "",
          f"SNR: over coordinates, |mean g| / sd(g) from R = {args.repeats} estimates; a coordinate of zero mean reads "
          f"about sqrt(2/pi)/sqrt(R) = {math.sqrt(2 / math.pi / args.repeats):.3f}.", "",
          "| objective | M | K | group | mean SNR | median SNR | variance |", "|---|---|---|---|---|---|---|"]
    md += [f"| {r['label']} | {r['outer']} | {r['particles']} | {r['group']} | {r['snr']:.4f} | "
           f"{r['snr_median']:.4f} | {r['variance']:.4g} |" for r in rows]
    return md + ["", "Slope of log SNR against log K along IWAE and MIWAE (M = 64 / K): decoder "
                 f"{budget['slopes']['model']:+.2f}, encoder {budget['slopes']['guide']:+.2f} (the paper's "
                 "asymptotic sqrt(M / K) gives -1 for the encoder at a fixed budget; the sqrt(M) of averaging alone "
                 "gives -1/2).", ""]


def log_weight_spread(data, x, args, draws: int = 4096, ks=(1, 8, 64, 512, 4096)):
    """At the tighter section's checkpoint and minibatch: IWAE_K averaged over the minibatch (each from the draws
    split into groups of K), the mean per-datum sd of log w, and the share of data with PSIS k-hat > 0.7."""
    import math

    import torch

    from zoo.core.weights import per_datum_log_weights
    from zoo.evaluation.estimators.psis import psis_khat
    vae, guide = checkpoint_vae(data, args)
    idx = torch.arange(x.shape[0])
    with torch.no_grad():
        log_w = torch.cat([per_datum_log_weights(vae, guide, x, idx=idx, N=x.shape[0], num_particles=256).log_w
                           for _ in range(draws // 256)])                                   # [draws, B]
    bound = {k: (torch.logsumexp(log_w.reshape(draws // k, k, -1), 1) - math.log(k)).mean().item() for k in ks}
    khat, _ = psis_khat(log_w.T.double().numpy())
    return {"draws": draws, "iwae_bound": bound, "log_w_sd": log_w.std(0).mean().item(),
            "khat_over_0.7": float((khat > 0.7).mean())}


def weights_markdown(weights):
    if not weights:
        return []
    ks = sorted(weights["iwae_bound"], key=int)
    md = [f"### What the SNR argument assumes, at the same checkpoint and minibatch ({weights['draws']} draws per "
          "datum)", "", "| K | IWAE_K (mean over the minibatch) | gain over the previous K |", "|---|---|---|"]
    for i, k in enumerate(ks):
        gain = "" if i == 0 else f"{weights['iwae_bound'][k] - weights['iwae_bound'][ks[i - 1]]:.3f}"
        md.append(f"| {k} | {weights['iwae_bound'][k]:.3f} | {gain} |")
    return md + ["", f"Mean per-datum sd of log w: {weights['log_w_sd']:.3f} nats; PSIS k-hat > 0.7 for "
                 f"{100 * weights['khat_over_0.7']:.0f}% of the minibatch. In the 1/K regime each gain would be "
                 "about 1/8 of the one before.", ""]


#: the rainforth section: (label, objective, K values, M)
RAINFORTH = (("IWAE", "iwae", (1, 10, 100), None), ("MIWAE, M = 10", "miwae", (1, 10), 10),
             ("PIWAE, M = 10", "piwae", (1, 10), 10))


def rainforth_section(args, dim: int = 20, num_data: int = 1024, perturbation: float = 0.01, seed: int = 0):
    """Rainforth et al. (2018)'s Gaussian model (module docstring, 7.) at its optimum plus noise; SNR rows, and the
    slope of log SNR against log K for each objective and group."""
    import math

    import numpy as np
    import torch
    torch.manual_seed(seed)
    model = build_model("ppca", dim, latent_dim=dim)
    guide = build_guide("amortized", model, hidden=(dim,), activation="linear")
    mu = torch.randn(dim)
    x = mu + torch.randn(num_data, dim) + torch.randn(num_data, dim)            # z ~ N(mu, I), x | z ~ N(z, I)
    trunk = [m for m in guide.trunk.modules() if isinstance(m, torch.nn.Linear)]
    head = guide.heads["z"]
    with torch.no_grad():
        model.W.copy_(torch.eye(dim))
        model.mu.copy_(mu)
        model.log_noise_scale.zero_()
        trunk[0].weight.copy_(torch.eye(dim))                  # h = x
        trunk[0].bias.zero_()
        head.weight.zero_()                                    # the posterior: N((x - mu) / 2, I / 2)
        head.weight[:dim].copy_(0.5 * torch.eye(dim))
        head.bias.zero_()
        head.bias[:dim].copy_(-0.5 * mu)
        head.bias[dim:].fill_(math.log(math.expm1(math.sqrt(0.5))))   # softplus^-1 of the posterior sd, sqrt(1/2)
        for p in list(model.parameters()) + list(guide.parameters()):
            p.add_(perturbation * torch.randn_like(p))
    batch = x                                                   # the gradient of the whole data set
    rows = grouped_rows(model, guide, batch, RAINFORTH, args.repeats, seed=seed)
    slopes = {}
    for label, *_ in RAINFORTH:
        for group in ("model", "guide"):
            pts = [(r["particles"], r["snr"]) for r in rows if r["label"] == label and r["group"] == group]
            slopes[f"{label}, {group}"] = float(np.polyfit(np.log([k for k, _ in pts]), np.log([v for _, v in pts]),
                                                           1)[0])
    return {"rows": rows, "slopes": slopes, "dim": dim, "num_data": num_data, "perturbation": perturbation,
            "batch_size": batch.shape[0], "repeats": args.repeats}


def rainforth_markdown(result):
    import math
    if not result:
        return []
    md = [f"## Rainforth et al. (2018)'s Gaussian model, D = {result['dim']}: pPCA with W = I, sigma = 1 and an affine "
          f"amortized guide, every parameter at its optimum plus N(0, {result['perturbation']}^2), the gradient of all "
          f"{result['batch_size']} data", "", f"An SNR estimate has a floor: a coordinate of zero mean reads about "
          f"sqrt(2/pi)/sqrt(R) = {math.sqrt(2 / math.pi / result['repeats']):.3f} with R = {result['repeats']} "
          "repeats.", "", "| objective | K | M | group | SNR | variance |", "|---|---|---|---|---|---|"]
    md += [f"| {r['label']} | {r['particles']} | {r['outer']} | {r['group']} | {r['snr']:.4f} | {r['variance']:.4g} |"
           for r in result["rows"]]
    md += ["", "Slope of log SNR against log K (the paper: +1/2 for the model and -1/2 for the guide under IWAE):", "",
           "| objective, group | slope |", "|---|---|"]
    md += [f"| {k} | {v:+.3f} |" for k, v in result["slopes"].items()]
    return md + [""]


def markdown(toy, vae_result, sbn_rows, cost, args):
    prov = provenance()
    md = ["# Gradient variance, SNR and cost at fixed parameters", "",
          *provenance_lines(prov)]
    if toy:
        md += ["## The lecture toy: d/dθ E_{N(θ,1)}[x²] = 2θ at θ = 1.5 (10000 repeats)", "",
               "| estimator | samples S | mean | exact | ± se | variance |", "|---|---|---|---|---|---|"]
        md += [f"| {r['estimator']} | {r['samples']} | {r['mean']:.4f} | {r['exact']:.1f} | {r['bias_se']:.4f} | "
               f"{r['variance']:.4g} |" for r in toy] + [""]
    if vae_result:
        md += [f"## VAE 784-200-200-50, minibatch of {args.batch_size} MNIST images, "
               f"{'checkpoint ' + args.vae_checkpoint if args.vae_checkpoint else 'at initialization'}", "",
               gradients_markdown(vae_result)]
    if sbn_rows:
        md += [f"## SBN-200, minibatch of {args.batch_size}, "
               f"{'checkpoint ' + args.sbn_checkpoint if args.sbn_checkpoint else 'at initialization'}", "",
               "| estimator | group | variance | SNR | cosine to ref | s/estimate |", "|---|---|---|---|---|---|"]
        md += [f"| {r['estimator']} | {r['group']} | {r['variance']:.4g} | {r['snr']:.4f} | "
               f"{r.get('cosine', float('nan')):.4f} | {r['seconds']:.4f} |" for r in sbn_rows]
        md += ["", f"Reference for the SBN rows: a high-particle estimate ({args.reference_repeats} x K=1000 VIMCO "
               "gradients for the model, RLOO ELBO gradients for the guide, all of the discrete model: the "
               "relaxed rows are compared with the true discrete gradient, their guide's hard samples); no exact "
               "gradient exists at 2^200 configurations. The vimco rows estimate the IWAE-5 gradient, so their "
               "cosine to the ELBO reference is not a bias measure.", ""]
        if not any("NVIL" in r["estimator"] for r in sbn_rows):
            md += ["No NVIL row: the checkpoint was not trained with `--baseline neural`, so its baseline network "
                   "would be untrained.", ""]
    if cost:
        md += ["## Cost per gradient estimate, ratio to Trace_ELBO at the same K (VAE, same run)", "",
               "| objective | ratio |", "|---|---|"] + [f"| {k} | {v:.2f} |" for k, v in cost.items()]
    return md

if __name__ == "__main__":
    run_script(main)
