"""Do the harness's standard errors cover the truth as often as they claim? A coverage study on models with exact
log p(x) (zoo.exact_models and pPCA's closed form).

For each model, a guide is trained briefly (an amortized Gaussian or Bernoulli encoder, ``--guide-epochs`` of the
ELBO on 500 data: good, not exact, as a trained guide is), and then, for each of ``--seeds`` seeds, ``--data`` fresh
data are drawn from the model (all seeds' data estimated in one batched call: each datum's estimate uses its own
draws or chains only), and log p(x_n) of each datum is estimated by

- ``is``: importance sampling with the harness's default proposal (the defensive mixture), K = ``--samples``;
- ``is-guide``: importance sampling with the guide alone (``--eval-proposal guide``);
- ``ais``: annealed importance sampling, T = ``--temperatures``, C = ``--chains``.

Each estimate comes with its standard error; the nominal 95 % interval estimate ± 1.96 SE covers the exact value
or not. The table gives, per model and estimator, the coverage over all data, the share of data whose SE the
harness calls a precision (IS: k-hat <= 0.7, or an ESS of at least 10 without a k-hat; AIS: an ESS of the
final weights of at least a tenth of the chains), the coverage
among those, and the mean and largest |error| / SE. The claim under test: among the data whose SE is called a
precision, the interval covers the truth at least 90 % of the time; the others are flagged, per datum and per
run (``log_likelihood_se_reliable``, ``log_likelihood_se_note``).

    python benchmarks/se_coverage.py --seeds 100                     # the committed study
    python benchmarks/se_coverage.py --seeds 5 --name se_coverage_smoke
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import pyro  # noqa: E402
from common import fail, run_script, write_result, RESULTS  # noqa: E402

import zoo  # noqa: E402
import zoo.data  # noqa: E402
from zoo import exact_models as E  # noqa: E402
from zoo.evaluation.ais import AnnealedImportanceSampling  # noqa: E402

MODELS = ("ppca", "hierarchy", "binary", "poisson", "hmm")
ESTIMATORS = ("is", "is-guide", "ais")


def _ppca():
    data = zoo.data.synthetic_ppca(x_dim=6, latent_dim=2, sigma=0.5, sizes=(500, 10, 10), seed=1)
    model = zoo.build_model("ppca", 6, latent_dim=2)
    model.set_ml_solution(data.train)

    def draw(n, seed):
        torch.manual_seed(seed)
        with torch.no_grad():
            return model.sample(n, mean=False).float()
    return model, data.train, draw, lambda x: model.log_marginal(x).double()


def _from(fn, x_dim, draw_fn, exact_fn):
    model = zoo.from_pyro(fn, x_dim)
    return model, draw_fn(500, 10_000), draw_fn, exact_fn


def _hmm():
    def draw(n, seed):
        x, lengths = E.padded_hmm_data(n, seed)
        return torch.cat([x, lengths.float().unsqueeze(-1)], -1)
    train = draw(500, 10_000)
    model = zoo.from_pyro(E.padded_hmm, 6, covariate_dim=1, data=train)
    return model, train, draw, lambda d: E.padded_hmm_log_marginal(d[:, :-1], d[:, -1])


def build(name: str):
    """(model, training data, draw(n, seed) -> data, exact(data) -> log p(x) [n])."""
    if name == "ppca":
        return _ppca()
    if name == "hierarchy":
        return _from(E.linear_gaussian_hierarchy, 5, E.linear_gaussian_hierarchy_data,
                     E.linear_gaussian_hierarchy_log_marginal)
    if name == "binary":
        return _from(E.binary_latent_model, 6, E.binary_latent_data, E.binary_latent_log_marginal)
    if name == "poisson":
        return _from(E.poisson_1d, 4, E.poisson_1d_data, E.poisson_1d_log_marginal)
    return _hmm()


def estimates(estimator: str, model, guide, x, args):
    """(per-datum estimate, its SE, whether the SE is called a precision), each ``[n]``."""
    if estimator == "ais":
        r = AnnealedImportanceSampling(num_temperatures=args.temperatures, num_chains=args.chains,
                                       leapfrog_steps=args.leapfrog, batch_size=500).estimate(model, guide, x)
        return r.log_likelihood, r.log_likelihood_se, r.se_reliable
    r = zoo.evaluate(model, guide, x, num_samples=args.samples, iwae_k=10,
                     proposal="guide" if estimator == "is-guide" else "defensive")
    per = r["per_datum"]
    return (per["log_likelihood"].double(), per["log_likelihood_se"].double(),
            per["log_likelihood_se_reliable"].bool())


def study(names, estimators, args, log=print):
    rows = []
    for name in names:
        pyro.clear_param_store()
        pyro.set_rng_seed(0)
        model, train, draw, exact_fn = build(name)
        guide = zoo.build_guide("amortized", model)
        zoo.fit(model, guide, zoo.build_objective("elbo"), train, epochs=args.guide_epochs, batch_size=50, lr=3e-3,
                progress=False)
        # the seeds' data side by side: every datum's estimate is computed from its own draws or chains alone, so
        # one call over all of them is the seeds' separate calls batched (and ten times faster)
        x = torch.cat([draw(args.data, seed) for seed in range(1, args.seeds + 1)])
        exact = exact_fn(x)
        for i, estimator in enumerate(estimators):
            t0 = time.perf_counter()
            pyro.set_rng_seed(1000 + i)
            value, se, reliable = estimates(estimator, model, guide, x, args)
            errors = value - exact
            z = errors / se.clamp(min=1e-12)
            covered = z.abs() < 1.96
            row = {"model": name, "estimator": estimator, "intervals": int(z.numel()),
                   "coverage": covered.double().mean().item(),
                   "share_se_reliable": reliable.double().mean().item(),
                   "coverage_where_reliable": covered[reliable].double().mean().item() if reliable.any() else None,
                   "coverage_where_flagged": covered[~reliable].double().mean().item() if (~reliable).any() else None,
                   "mean_abs_z": z.abs().mean().item(), "max_abs_z": z.abs().max().item(),
                   "mean_error": errors.mean().item(), "seconds": time.perf_counter() - t0}
            rows.append(row)
            log(f"{name:9} {estimator:8} coverage {row['coverage']:.3f}  reliable {row['share_se_reliable']:.3f}  "
                f"coverage|reliable {_fmt(row['coverage_where_reliable'])}  max|z| {row['max_abs_z']:.1f}  "
                f"mean error {row['mean_error']:+.4f}  {row['seconds']:.0f} s")
    return rows


def _fmt(v):
    return "–" if v is None else f"{v:.3f}"


def markdown(rows, args, provenance) -> str:
    lines = ["# Standard-error coverage on models with exact log p(x)", "",
             f"Command: `{provenance['command']}`  ", f"Commit: `{provenance['git_commit']}`  ",
             f"Hardware: {provenance['cpu']}, {provenance['cpu_threads']} threads  ", "",
             f"{args.seeds} seeds × {args.data} data per model; IS K = {args.samples}; AIS T = {args.temperatures}, "
             f"{args.chains} chains, {args.leapfrog} leapfrog steps; guides trained for {args.guide_epochs} epochs. "
             "Coverage: how often estimate ± 1.96 SE holds the exact log p(x) (nominal 95 %).", "",
             "| model | estimator | coverage | SE called a precision | coverage there | coverage where flagged | "
             "mean \\|z\\| | max \\|z\\| | mean error (nats) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['estimator']} | {r['coverage']:.3f} | {r['share_se_reliable']:.3f} | "
                     f"{_fmt(r['coverage_where_reliable'])} | {_fmt(r['coverage_where_flagged'])} | "
                     f"{r['mean_abs_z']:.2f} | {r['max_abs_z']:.1f} | {r['mean_error']:+.4f} |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--estimators", default=",".join(ESTIMATORS))
    p.add_argument("--seeds", type=int, default=100)
    p.add_argument("--data", type=int, default=20, help="data per seed and model")
    p.add_argument("--samples", type=int, default=1000, help="IS samples K per datum")
    p.add_argument("--temperatures", type=int, default=200)
    p.add_argument("--chains", type=int, default=16)
    p.add_argument("--leapfrog", type=int, default=5)
    p.add_argument("--guide-epochs", type=int, default=20)
    p.add_argument("--name", default="se_coverage")
    args = p.parse_args(argv)
    names = [m for m in args.models.split(",") if m]
    estimators = [e for e in args.estimators.split(",") if e]
    if not names or any(m not in MODELS for m in names):
        fail(f"--models takes names from {','.join(MODELS)}, got {args.models!r}")
    if not estimators or any(e not in ESTIMATORS for e in estimators):
        fail(f"--estimators takes names from {','.join(ESTIMATORS)}, got {args.estimators!r}")
    for flag in ("seeds", "data", "samples", "temperatures", "chains", "leapfrog", "guide_epochs"):
        if getattr(args, flag) < 1:
            fail(f"--{flag.replace('_', '-')} must be a whole number >= 1")
    rows = study(names, estimators, args)
    settings = {k: getattr(args, k) for k in ("seeds", "data", "samples", "temperatures", "chains", "leapfrog",
                                              "guide_epochs")}
    path = write_result(args.name, {"settings": settings, "rows": rows,
                                    "nominal": 0.95, "claim": "coverage where the SE is called a precision >= 0.90"})
    provenance = json.loads(path.read_text())["provenance"]
    (RESULTS / f"{args.name}.md").write_text(markdown(rows, args, provenance))
    print(f"wrote {path} and {RESULTS / (args.name + '.md')}")
    return rows


if __name__ == "__main__":
    run_script(main)
