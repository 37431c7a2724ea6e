"""Structured guides from the posterior's graph, against mean-field and the prior's arrows, at the same budget.

Three amortized guides (the same encoder trunk and heads; only what each head reads besides h = g(x) differs):

- **mean-field**: q(z_1 | x) ... q(z_n | x);
- **prior-parents**: each site reads its children in the model (what ``--structured`` did before issue 33);
- **posterior**: each site reads what the posterior couples it with, the faithful inverse of the model's
  graph (``--structured`` now, :func:`zoo.core.contract.posterior_order`, NaMI, Webb et al. 2018).

on two models: M2 without labels (``benchmarks/pyro_models/m2_structured.py``, Pyro's ss_vae_M2 model through
``zoo.from_pyro``), where y and z are independent a priori and coupled given x, so prior-parents is mean-field
and posterior is q(y | x) q(z | x, y); and the two-layer hvae z2 -> z1 -> x, a chain, where prior-parents and
posterior are the same q(z1 | x) q(z2 | z1, x). Two guides with the same structure are the same guide: it is
trained once and its row says which one it equals.

Each (model, guide, seed) trains model and guide together with --objective (Adam, --lr, batch 100, --epochs
epochs, the seed for initialization and data order) on the training split of --dataset, then is scored on the
test split (all of it, or a fixed random subset of --eval-limit images): the ELBO, the IWAE bound with --iwae-k
samples and the importance-sampled log p(x) with --eval-samples samples, nats per datum. A table's ± is the
standard error over the seeds (sd / sqrt(seeds)); "paired" is posterior minus mean-field, seed by seed, with its
standard error.

The objectives (--objective): ``elbo``, the ELBO with a score-function gradient for y, one y and one z drawn
per datum; ``enum``, the ELBO with y summed exactly over its K values (Pyro's TraceEnum_ELBO, the M2 recipe),

    -loss = sum_n sum_y q(y | x_n) E_q(z | x_n, y) [log p(x_n, y, z) - log q(y | x_n) - log q(z | x_n, y)],

where z is drawn, reparameterized, once per value of y. There the posterior's guide proposes a z for each y,
while mean-field's one q(z | x) must serve all K of them at once. ``enum`` needs a discrete latent, so it runs
on M2 only (the default --models is the models that fit --objective; a pair that does not fit is refused).

    OMP_NUM_THREADS=1 python benchmarks/structured_posterior.py
    OMP_NUM_THREADS=1 python benchmarks/structured_posterior.py --objective enum
    OMP_NUM_THREADS=1 python benchmarks/structured_posterior.py --dataset binarized_mnist --data-dir ../shared/data \
        --num-train 10000 --eval-limit 1000 --epochs 20 --name structured_posterior_mnist
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

from common import RESULTS, provenance, run_script, write_result  # noqa: E402

MODELS = ("m2", "hvae")
OBJECTIVES = ("elbo", "enum")
#: what each --objective is, for the result's protocol
OBJECTIVE_TEXT = {
    "elbo": "Objective elbo: the ELBO, with a score-function gradient for y (one y and one z drawn per datum).",
    "enum": "Objective enum: the ELBO with y summed exactly over its K values (Pyro's TraceEnum_ELBO), z drawn, "
            "reparameterized, once per value of y: the posterior's guide proposes a z for each y, mean-field's "
            "one q(z | x) serves all of them.",
}
GUIDES = ("mean-field", "prior-parents", "posterior")
METRICS = (("elbo", "ELBO"), ("iwae_bound", "IWAE"), ("log_likelihood", "log p(x) (IS)"))


def prior_parents_order(latents):
    """The latents with every site after its model children (a reverse topological order of the prior's arrows)."""
    order, pending = [], list(latents)
    while pending:
        ready = [s for s in pending if not any(s.name in c.parents for c in pending if c is not s)]
        order += ready
        pending = [s for s in pending if s not in ready]
    return tuple(order)


def prior_parents_guide():
    """The amortized guide whose structure reads the prior's arrows only: each site reads its model children
    (the structure the posterior-structured guides are compared against)."""
    from guides import Amortized
    from zoo.core.contract import children_of

    class PriorParentsAmortized(Amortized):
        def structure(self, model):
            return prior_parents_order(self.sites), {s.name: children_of(s, self.sites) for s in self.sites}
    return PriorParentsAmortized


def build(model_name: str, guide_name: str, x_dim: int):
    import zoo
    from guides import Amortized
    from zoo.registry import build_model
    if model_name == "m2":
        from pyro_models.m2_structured import m2
        model = zoo.from_pyro(m2, x_dim, name="m2")
    else:
        model = build_model("hvae", x_dim)
    cls = prior_parents_guide() if guide_name == "prior-parents" else Amortized
    return model, cls(model, structured=guide_name != "mean-field")


def misfit(model_name: str, objective: str):
    """Why the amortized guides cannot train ``model_name`` with ``objective`` (the registry's reason), or None."""
    from zoo.core.errors import ZooError
    from zoo.rules import check_combination
    model, _ = build(model_name, "mean-field", 64)
    try:
        check_combination(model, "amortized", objective, guide_options={"structured": True})
    except ZooError as e:
        return str(e).split("; use ")[0]
    return None


def structure_of(guide) -> tuple:
    """What distinguishes the three guides: the sampling order and each site's conditioning sites."""
    return tuple((s.name, tuple(c.name for c in guide.conditioning[s.name])) for s in guide.order) \
        if guide.structured else tuple((s.name, ()) for s in guide.sites)


def describe(structure) -> str:
    """``q(y \\| x) q(z \\| x, y)``: the bar escaped, as a Markdown table cell needs."""
    return " ".join(f"q({name} \\| {', '.join(('x',) + given)})" for name, given in structure)


def mean_se(values):
    """The mean and its standard error sd / sqrt(n) (``None`` for one value): the grid's statistics across seeds
    (:func:`zoo.evaluation.seed_stats.summarize`, what ``pyro-zoo compare --seeds`` reports)."""
    from zoo.evaluation.seed_stats import summarize
    s = summarize(values)
    return s.mean, s.se


def pm(mean, se, sign="") -> str:
    return f"{mean:{sign}.2f} ± {se:.2f}" if se is not None else f"{mean:{sign}.2f}"


def main(argv=None):
    import pyro
    import zoo
    from zoo.core.errors import ZooError
    from zoo.data import load_dataset
    from zoo.experiments.trained import fixed_subset

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--dataset", default="digits")
    p.add_argument("--models", default=None,
                   help=f"comma-separated, from {', '.join(MODELS)} (default: those that fit --objective)")
    p.add_argument("--objective", default="elbo", help=f"the training objective: {', '.join(OBJECTIVES)}")
    p.add_argument("--seeds", default="0,1,2,3,4")
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--num-train", type=int, default=None, help="the first N training images (default all)")
    p.add_argument("--eval-limit", type=int, default=None, help="a fixed random subset of the test images")
    p.add_argument("--eval-samples", type=int, default=500)
    p.add_argument("--iwae-k", type=int, default=50)
    p.add_argument("--name", default=None, help="result file name in benchmarks/results (default "
                   "structured_posterior, or structured_posterior_OBJECTIVE for another --objective)")
    args = p.parse_args(argv)
    if args.epochs < 1 or args.eval_samples < 1 or args.iwae_k < 1:
        raise ZooError("--epochs, --eval-samples and --iwae-k must be at least 1")
    if args.objective not in OBJECTIVES:
        raise ZooError(f"unknown objective {args.objective!r}; choose from {', '.join(OBJECTIVES)}")
    name = args.name or ("structured_posterior" if args.objective == "elbo"
                         else f"structured_posterior_{args.objective}")
    fitting = [m for m in MODELS if misfit(m, args.objective) is None]
    models = fitting if args.models is None else [m for m in args.models.split(",") if m]
    unknown = [m for m in models if m not in MODELS]
    if unknown or not models:
        raise ZooError(f"unknown model {unknown[0] if unknown else args.models!r}; choose from {', '.join(MODELS)}")
    for model_name in models:
        if misfit(model_name, args.objective):
            raise ZooError(f"model {model_name!r} does not fit --objective {args.objective}: "
                           f"{misfit(model_name, args.objective)}; use --models {','.join(fitting)}")
    try:
        seeds = [int(s) for s in args.seeds.split(",") if s]
    except ValueError:
        raise ZooError(f"--seeds must be comma-separated integers, got {args.seeds!r}") from None
    if not seeds:
        raise ZooError("--seeds needs at least one seed")
    torch.set_num_threads(1)
    data = load_dataset(args.dataset, args.data_dir)
    x = data.train[:args.num_train] if args.num_train else data.train
    test = fixed_subset(data.test, args.eval_limit) if args.eval_limit else data.test

    rows, summary = [], []
    for model_name in models:
        structures, same_as = {}, {}
        for guide_name in GUIDES:
            structures[guide_name] = structure_of(build(model_name, guide_name, data.x_dim)[1])
            same_as[guide_name] = next((g for g in GUIDES[:GUIDES.index(guide_name)]
                                        if structures[g] == structures[guide_name]), None)
        scores = {}
        for guide_name in GUIDES:
            if same_as[guide_name]:
                scores[guide_name] = scores[same_as[guide_name]]
                continue
            scores[guide_name] = []
            for seed in seeds:
                pyro.set_rng_seed(seed)
                model, guide = build(model_name, guide_name, data.x_dim)
                start = time.time()
                zoo.fit(model, guide, zoo.build_objective(args.objective), x, epochs=args.epochs, batch_size=100,
                        lr=args.lr, progress=False, seed=seed)
                seconds = time.time() - start
                pyro.set_rng_seed(seed)
                result = zoo.evaluate(model, guide, test, num_samples=args.eval_samples, iwae_k=args.iwae_k,
                                      psis=False)
                row = {"model": model_name, "guide": guide_name, "seed": seed, "train_seconds": seconds,
                       **{k: result[k] for k, _ in METRICS}, "log_likelihood_se": result["log_likelihood_se"]}
                rows.append(row)
                scores[guide_name].append(row)
                print(f"{model_name} {guide_name} seed {seed}: ELBO {row['elbo']:.2f}, IWAE {row['iwae_bound']:.2f}, "
                      f"log p(x) {row['log_likelihood']:.2f} ({seconds:.0f} s)", flush=True)
        for guide_name in GUIDES:
            entry = {"label": f"{model_name}-{guide_name}", "model": model_name, "guide": guide_name,
                     "structure": describe(structures[guide_name]),
                     "same_as": same_as[guide_name]}
            for key, _ in METRICS:
                entry[key], entry[f"{key}_se"] = mean_se([r[key] for r in scores[guide_name]])
                entry[f"{key}_paired_vs_mean_field"], entry[f"{key}_paired_se"] = mean_se(
                    [a[key] - b[key] for a, b in zip(scores[guide_name], scores["mean-field"])])
            summary.append(entry)

    protocol = " ".join(next(p for p in __doc__.split("\n\n") if p.startswith("Each")).split()) \
        + " " + OBJECTIVE_TEXT[args.objective]
    write_result(name, {"objective": args.objective, "dataset": args.dataset, "num_train": int(x.shape[0]),
                        "num_test": int(test.shape[0]), "epochs": args.epochs, "lr": args.lr, "batch_size": 100,
                        "seeds": seeds,
                        "eval_samples": args.eval_samples, "iwae_k": args.iwae_k, "protocol": protocol,
                        "summary": summary, "runs": rows})
    prov = provenance()
    md = [f"# Structured guides from the posterior's graph ({args.dataset}, {args.epochs} epochs, "
          f"{len(seeds)} seeds, objective {args.objective})", "", f"Command: `{prov['command']}`  ",
          f"Commit: `{prov['git_commit']}`  ",
          f"Hardware: {prov['cpu']} ({prov['cpu_threads']} torch thread)", "", f"Protocol: {protocol}", "",
          "Test figures, nats per datum, mean ± standard error over the seeds:", "",
          "| model | guide | structure | test ELBO | test IWAE | test log p(x) | log p(x) − mean-field, paired |",
          "|---|---|---|---|---|---|---|"]
    for e in summary:
        cells = [pm(e[k], e[k + "_se"]) for k, _ in METRICS]
        paired = "–" if e["guide"] == "mean-field" else \
            pm(e["log_likelihood_paired_vs_mean_field"], e["log_likelihood_paired_se"], "+")
        guide = e["guide"] + (f" (= {e['same_as']}: same structure)" if e["same_as"] else "")
        md.append(f"| {e['model']} | {guide} | {e['structure']} | " + " | ".join(cells) + f" | {paired} |")
    md += ["", f"Test images: {int(test.shape[0])}; training images: {int(x.shape[0])}. ± is the standard error "
           f"over the seeds; the Monte Carlo error of each log p(x) estimate is below "
           f"{max(r['log_likelihood_se'] for r in rows):.2f} nats."]
    Path(RESULTS / f"{name}.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    run_script(main)
