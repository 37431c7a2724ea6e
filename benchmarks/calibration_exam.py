"""The calibration exam: are the data that replica agreement calls reliable covered by their intervals, and are
the data whose estimate is far off flagged? Against exact answers.

Each exam model has its log p(x) computed another way than by sampling:

- ``two_mode``: z ~ N(0, 1), x ~ 1/2 N(a z + c1, 0.4^2 I) + 1/2 N(-a z + c2, 0.4^2 I) in R^2: a posterior with
  two modes; exact by quadrature over z.
- ``regimes``: a sticky two-state switching chain of 8 steps (stay 0.95) with weak emissions N(+-0.5, 1): the
  posterior holds the whole sequence in one regime or the other, and single-site moves rarely cross; exact by
  the forward algorithm.
- ``padded_hmm``: :func:`zoo.exact_models.padded_hmm`, sequences of 2 to 5 steps padded and masked; the
  forward algorithm over each sequence's own steps.
- ``funnel``: Neal's funnel in three dimensions, v ~ N(0, 1.5^2), z_i | v ~ N(0, e^v), x_i | z_i ~ N(z_i, 0.5^2);
  x_i | v ~ N(0, e^v + 0.25), exact by quadrature over v.
- ``experts``: a mixture of three linear experts, each datum a group of 4 (u, y) pairs, the expert c gated on
  the mean of u and a group offset w ~ N(0, 1): y | c ~ N(beta_c u + alpha_c, 0.3^2 I + 1 1^T), exact by
  enumerating c.
- ``ppca``: the zoo's pPCA at its maximum-likelihood solution, in closed form.
- ``bits``: one layer of a sigmoid belief net, z ~ Bernoulli(1/2)^12, x | z ~ Bernoulli(sigmoid(W z + b)) in
  {0, 1}^30 with strong weights: 4,096 values, too many for AIS's Gibbs update, so its chains move by the guide's
  independent proposals and local bit flips (the SBN-200 models' case in small); exact by enumeration
  (:func:`zoo.exact_models.sbn_layer`).

The guide is the zoo's amortized guide (a diagonal Normal per real site, independent categoricals per discrete
site: one mode, mean-field), trained with the ELBO for ``--guide-epochs`` on 500 data, as a user's is. For each of
``--seeds`` seeds, ``--data`` fresh data are drawn (all seeds' data in one batched call: each datum's estimate uses
its own draws or chains only). Each estimator runs ``--replicas`` independent replicas
(:mod:`zoo.evaluation.replicas`): IS (the guide through the harness, the prior, the harness's defensive mixture,
the prior; K = ``--samples``) and AIS (from the guide, the prior, the widened guide, the prior; T =
``--temperatures``, C = ``--chains``, ``--leapfrog`` steps). The table gives, per model and estimator:

- **coverage | reliable**: among the data the replicas call reliable, how often pooled estimate ± 1.96 pooled SE
  holds the exact log p(x) (goal >= 90 %);
- **flagged | >3 SE**: among the data whose pooled estimate is more than 3 of its SEs from the truth, the share
  flagged (goal >= 95 %);
- the share flagged, the mean error, and the same two figures for one run alone judged by today's rule (IS: the
  defensive mixture with its PSIS verdict; AIS: from the guide, its final weights' ESS >= a tenth of the chains and >= 2).

    python benchmarks/calibration_exam.py                      # the committed exam
    python benchmarks/calibration_exam.py --quick --models two_mode --name calibration_exam_quick
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import pyro  # noqa: E402
import pyro.distributions as dist  # noqa: E402
import pyro.poutine as poutine  # noqa: E402
from common import fail, run_script, write_result, RESULTS  # noqa: E402

import zoo  # noqa: E402
import zoo.data  # noqa: E402
from zoo import exact_models as E  # noqa: E402
from zoo.evaluation.ais import AnnealedImportanceSampling  # noqa: E402
from zoo.evaluation.estimators.importance import rounding_floor  # noqa: E402
from zoo.evaluation.summed import summing_for  # noqa: E402
from zoo.evaluation.replicas import (ALPHA, AIS_STARTS, IS_STARTS, Replication, replicated_ais,  # noqa: E402
                                     replicated_importance_sampling)

MODELS = ("two_mode", "regimes", "padded_hmm", "funnel", "experts", "ppca", "bits")
ESTIMATORS = ("is", "ais")


# --- two modes ---------------------------------------------------------------------------------------------------
TWO = {"a": torch.tensor([2.0, 1.0]), "c1": torch.tensor([0.5, 0.0]), "c2": torch.tensor([-0.5, 0.3]), "s": 0.4}


def two_mode(x, idx=None, N=None):
    p = TWO
    with pyro.plate("data", N, subsample=idx):
        z = pyro.sample("z", dist.Normal(torch.zeros(1), 1.0).to_event(1))
        locs = torch.stack([z * p["a"] + p["c1"], -z * p["a"] + p["c2"]], -2)             # [..., 2, D]
        mixing = dist.Categorical(torch.full(locs.shape[:-1], 0.5))
        pyro.sample("x", dist.MixtureSameFamily(mixing, dist.Normal(locs, p["s"]).to_event(1)), obs=x)


def two_mode_log_marginal(x: torch.Tensor) -> torch.Tensor:
    p = {k: (v.double() if torch.is_tensor(v) else v) for k, v in TWO.items()}
    z = torch.linspace(-10.0, 10.0, 20001, dtype=torch.float64)
    log_prior = dist.Normal(0.0, 1.0).log_prob(z)
    zz, xx = z[:, None, None], x.double()[None]
    first = dist.Normal(zz * p["a"] + p["c1"], p["s"]).log_prob(xx).sum(-1)
    second = dist.Normal(-zz * p["a"] + p["c2"], p["s"]).log_prob(xx).sum(-1)
    log_lik = torch.logaddexp(first, second) - math.log(2)
    return torch.logsumexp(log_prior[:, None] + log_lik, 0) + math.log(float(z[1] - z[0]))


def two_mode_data(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    p = TWO
    z = torch.randn(n, 1, generator=g)
    first = torch.rand(n, 1, generator=g) < 0.5
    loc = torch.where(first, z * p["a"] + p["c1"], -z * p["a"] + p["c2"])
    return (loc + p["s"] * torch.randn(n, 2, generator=g)).float()


# --- a sticky switching chain --------------------------------------------------------------------------------------
REG = {"init": torch.tensor([0.5, 0.5]), "trans": torch.tensor([[0.95, 0.05], [0.05, 0.95]]),
       "locs": torch.tensor([-0.5, 0.5]), "scale": 1.0, "steps": 8}


def regimes(x, idx=None, N=None):
    p = REG
    with pyro.plate("data", N, subsample=idx):
        state = None
        for t in range(p["steps"]):
            probs = p["init"] if state is None else p["trans"][state]
            state = pyro.sample(f"s{t}", dist.Categorical(probs))
            pyro.sample(f"x{t}", dist.Normal(p["locs"][state], p["scale"]), obs=None if x is None else x[..., t])


def regimes_log_marginal(x: torch.Tensor) -> torch.Tensor:
    p = {k: (v.double() if torch.is_tensor(v) else v) for k, v in REG.items()}
    emit = dist.Normal(p["locs"], p["scale"])
    alpha = p["init"].log() + emit.log_prob(x.double()[:, :1])                          # [n, 2]
    for t in range(1, p["steps"]):
        alpha = torch.logsumexp(alpha.unsqueeze(-1) + p["trans"].log(), -2) + emit.log_prob(x.double()[:, t:t + 1])
    return torch.logsumexp(alpha, -1)


def _simulate(fn, n: int, seed: int, *args) -> torch.Tensor:
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        with torch.no_grad():
            return poutine.trace(fn).get_trace(None, *args, N=n)


def regimes_data(n: int, seed: int) -> torch.Tensor:
    trace = _simulate(regimes, n, seed)
    return torch.stack([trace.nodes[f"x{t}"]["value"] for t in range(REG["steps"])], -1).float()


# --- Neal's funnel -------------------------------------------------------------------------------------------------
FUNNEL = {"v_scale": 1.5, "noise": 0.5, "dim": 2}


def funnel(x, idx=None, N=None):
    p = FUNNEL
    with pyro.plate("data", N, subsample=idx):
        v = pyro.sample("v", dist.Normal(torch.zeros(1), p["v_scale"]).to_event(1))
        # the clamp only acts 40 prior SDs out, where a diverging leapfrog step may take v
        z = pyro.sample("z", dist.Normal(torch.zeros(p["dim"]), (0.5 * v).clamp(-60.0, 60.0).exp()).to_event(1))
        pyro.sample("x", dist.Normal(z, p["noise"]).to_event(1), obs=x)


def funnel_log_marginal(x: torch.Tensor) -> torch.Tensor:
    p = FUNNEL
    v = torch.linspace(-12.0, 12.0, 24001, dtype=torch.float64)
    log_prior = dist.Normal(0.0, p["v_scale"]).log_prob(v)
    scale = (v.exp() + p["noise"] ** 2).sqrt()[:, None, None]
    log_lik = dist.Normal(0.0, scale).log_prob(x.double()[None]).sum(-1)
    return torch.logsumexp(log_prior[:, None] + log_lik, 0) + math.log(float(v[1] - v[0]))


def funnel_data(n: int, seed: int) -> torch.Tensor:
    return _simulate(funnel, n, seed).nodes["x"]["value"].float()


# --- a mixture of experts ------------------------------------------------------------------------------------------
EXPERTS = {"gate": torch.tensor([-2.5, 0.0, 2.5]), "gate_bias": torch.tensor([0.0, 0.5, 0.0]),
           "slope": torch.tensor([-1.5, 0.2, 1.8]), "bias": torch.tensor([0.5, -0.5, 0.0]), "noise": 0.3, "pairs": 4}


def experts(x, covariates=None, idx=None, N=None):
    """x: [B, pairs] responses y; covariates: [B, pairs] inputs u."""
    p = EXPERTS
    u = covariates
    with pyro.plate("data", N, subsample=idx):
        c = pyro.sample("c", dist.Categorical(logits=u.mean(-1, keepdim=True) * p["gate"] + p["gate_bias"]))
        w = pyro.sample("w", dist.Normal(torch.zeros(1), 1.0).to_event(1))
        loc = p["slope"][c].unsqueeze(-1) * u + p["bias"][c].unsqueeze(-1) + w
        pyro.sample("y", dist.Normal(loc, p["noise"]).to_event(1), obs=x)


def experts_log_marginal(data: torch.Tensor) -> torch.Tensor:
    p = {k: (v.double() if torch.is_tensor(v) else v) for k, v in EXPERTS.items()}
    m = p["pairs"]
    y, u = data.double()[:, :m], data.double()[:, m:]
    log_gate = torch.log_softmax(u.mean(-1, keepdim=True) * p["gate"] + p["gate_bias"], -1)   # [n, 3]
    cov = p["noise"] ** 2 * torch.eye(m, dtype=torch.float64) + torch.ones(m, m, dtype=torch.float64)
    terms = [torch.distributions.MultivariateNormal(p["slope"][k] * u + p["bias"][k], cov).log_prob(y)
             for k in range(3)]
    return torch.logsumexp(log_gate + torch.stack(terms, -1), -1)


def experts_data(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    u = 2.0 * torch.randn(n, EXPERTS["pairs"], generator=g)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        with torch.no_grad():
            trace = poutine.trace(experts).get_trace(None, covariates=u, N=n)
    return torch.cat([trace.nodes["y"]["value"], u], -1).float()


# --- the exam -------------------------------------------------------------------------------------------------------
def build(name: str):
    """(model, draw(n, seed) -> data, exact(data) -> log p(x) [n])."""
    if name == "two_mode":
        return zoo.from_pyro(two_mode, 2), two_mode_data, two_mode_log_marginal
    if name == "regimes":
        return zoo.from_pyro(regimes, REG["steps"], name="regimes"), regimes_data, regimes_log_marginal
    if name == "padded_hmm":
        def draw(n, seed):
            x, lengths = E.padded_hmm_data(n, seed)
            return torch.cat([x, lengths.float().unsqueeze(-1)], -1)
        return (zoo.from_pyro(E.padded_hmm, 6, covariate_dim=1, data=draw(8, 0)), draw,
                lambda d: E.padded_hmm_log_marginal(d[:, :-1], d[:, -1]))
    if name == "bits":
        model, log_marginal, data = E.sbn_layer(latent=12, dim=30, scale=2.0, seed=7)
        return zoo.from_pyro(model, 30), lambda n, seed: data(n, seed), log_marginal
    if name == "funnel":
        return zoo.from_pyro(funnel, FUNNEL["dim"]), funnel_data, funnel_log_marginal
    if name == "experts":
        m = EXPERTS["pairs"]
        return zoo.from_pyro(experts, 2 * m, covariate_dim=m, data=experts_data(8, 0)), experts_data, \
            experts_log_marginal
    data = zoo.data.synthetic_ppca(x_dim=6, latent_dim=2, sigma=0.5, sizes=(500, 10, 10), seed=1)
    model = zoo.build_model("ppca", 6, latent_dim=2)
    model.set_ml_solution(data.train)

    def draw(n, seed):
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            with torch.no_grad():
                return model.sample(n, mean=False).float()
    return model, draw, lambda x: model.log_marginal(x).double()


def _figures(value, se, reliable, exact) -> dict:
    z = (value - exact) / se.clamp(min=1e-12)
    covered, far = z.abs() < 1.96, z.abs() > 3
    return {"coverage_where_reliable": covered[reliable].double().mean().item() if reliable.any() else None,
            "share_flagged": 1.0 - reliable.double().mean().item(),
            "far_off": int(far.sum()),
            "flagged_where_far_off": (~reliable)[far].double().mean().item() if far.any() else None,
            "coverage": covered.double().mean().item(), "mean_error": (value - exact).mean().item()}


def exam(names, estimators, args, log=print):
    rows = []
    for name in names:
        pyro.clear_param_store()
        pyro.set_rng_seed(0)
        model, draw, exact_fn = build(name)
        guide = zoo.build_guide("amortized", model)
        zoo.fit(model, guide, zoo.build_objective("elbo"), draw(500, 10_000), epochs=args.guide_epochs,
                batch_size=50, lr=3e-3, progress=False)
        x = torch.cat([draw(args.data, seed) for seed in range(1, args.seeds + 1)])
        exact = exact_fn(x)
        summing = summing_for(model, guide, x, "auto" if args.sum_discrete else "off")
        if args.sum_discrete:
            log(f"{name}: {summing.note}")
        model_e, guide_e = summing.model, summing.guide
        for i, estimator in enumerate(estimators):
            t0 = time.perf_counter()
            if summing.summed and not model_e.latents:       # nothing left to sample: exact, for both estimators
                rows.append(_exact_row(name, estimator, model_e, x, exact, summing, t0))
                log(f"{name:10} {estimator:3} exact by summing out: largest error "
                    f"{rows[-1]['max_abs_error']:.2e} nats, coverage {rows[-1]['coverage']:.3f}", flush=True)
                continue
            if estimator == "ais":
                sampler = AnnealedImportanceSampling(num_temperatures=args.temperatures, num_chains=args.chains,
                                                     leapfrog_steps=args.leapfrog, batch_size=x.shape[0],
                                                     local_moves=not args.no_local_moves,
                                                     guide_moves=args.guide_moves)
                verdict = replicated_ais(sampler, model_e, guide_e, x, Replication(args.replicas, 1000 + 100 * i))
                alone = verdict.replicas[0]                 # from the guide, today's rule
            else:
                verdict = replicated_importance_sampling(model_e, guide_e, x, num_samples=args.samples,
                                                         replication=Replication(args.replicas, 1000 + 100 * i),
                                                         batch_size=x.shape[0])
                alone = next((r for r in verdict.replicas if r.start == "defensive"), verdict.replicas[0])
            pooled = _figures(verdict.log_likelihood, verdict.log_likelihood_se, verdict.reliable, exact)
            single = _figures(alone.log_likelihood, alone.se, alone.alone, exact)
            # the data one run gets wrong (more than 3 of its SEs off): how many the replicas flag, and how many of
            # the rest their pooled estimate covers within 3 pooled SEs
            wrong = ((alone.log_likelihood - exact) / alone.se.clamp(min=1e-12)).abs() > 3
            pooled_z = ((verdict.log_likelihood - exact) / verdict.log_likelihood_se.clamp(min=1e-12)).abs()
            single["replicas_flag_where_far_off"] = (~verdict.reliable)[wrong].double().mean().item() \
                if wrong.any() else None
            single["replicas_flag_or_cover_where_far_off"] = ((~verdict.reliable) | (pooled_z <= 3))[wrong] \
                .double().mean().item() if wrong.any() else None
            reasons = verdict.summary()["flag_counts"]
            row = {"model": name, "estimator": estimator, "intervals": int(x.shape[0]), **pooled, **summing.record(),
                   "single_run": {"start": alone.start, **single}, "flag_counts": reasons,
                   "replica_mean_error": {r.start + f"#{k}": (r.log_likelihood - exact).mean().item()
                                          for k, r in enumerate(verdict.replicas)},
                   "example_reasons": sorted({r for r in verdict.reasons if r}, key=len)[:3],
                   "seconds": time.perf_counter() - t0}
            rows.append(row)
            log(f"{name:10} {estimator:3} cov|rel {_fmt(row['coverage_where_reliable'])}  flagged "
                f"{row['share_flagged']:.3f}  flagged|>3SE {_fmt(row['flagged_where_far_off'])} ({row['far_off']})  "
                f"mean err {row['mean_error']:+.3f}  | alone: cov|rel {_fmt(single['coverage_where_reliable'])} "
                f"flagged|>3SE {_fmt(single['flagged_where_far_off'])} ({single['far_off']})  {row['seconds']:.0f} s",
                flush=True)
    return rows


def _exact_row(name, estimator, model, x, exact, summing, t0) -> dict:
    """The row of a model whose every latent is summed out: its contraction, exact up to float32 rounding (the
    standard error is that rounding floor), called reliable everywhere."""
    with torch.no_grad():
        value = model.log_marginal(x).double()
    se = rounding_floor(torch.zeros_like(value), value, torch.float32)
    reliable = torch.ones_like(value, dtype=torch.bool)
    figures = _figures(value, se, reliable, exact)
    single = {**figures, "replicas_flag_where_far_off": None, "replicas_flag_or_cover_where_far_off": None}
    return {"model": name, "estimator": estimator, "intervals": int(x.shape[0]), **figures, **summing.record(),
            "single_run": {"start": "exact", **single}, "flag_counts": {}, "replica_mean_error": {},
            "example_reasons": [], "max_abs_error": (value - exact).abs().max().item(),
            "seconds": time.perf_counter() - t0}


def _fmt(v):
    return "–" if v is None else f"{v:.3f}"


def _cycle(starts, replicas: int) -> str:
    return ", ".join(starts[r % len(starts)] for r in range(replicas))


def _share(v):
    return "–" if v is None else f"{v:.1%}"


def _pass(v, goal):
    return "–" if v is None else (f"{v:.1%}" + ("" if v >= goal else " ✗"))


def markdown(rows, args, provenance) -> str:
    lines = ["# Calibration exam: replica agreement against exact log p(x)", "",
             f"Command: `{provenance['command']}`  ", f"Commit: `{provenance['git_commit']}`  ",
             f"Hardware: {provenance['cpu']}, {provenance['cpu_threads']} threads  ", "",
             f"{args.seeds} seeds × {args.data} data per model; {args.replicas} replicas per estimator "
             f"(IS: {_cycle(IS_STARTS, args.replicas)}; AIS: {_cycle(AIS_STARTS, args.replicas)}), agreement by "
             f"Cochran's Q against Welch's threshold at a {ALPHA:.0%} false-alarm rate; IS K = {args.samples}; "
             f"AIS T = {args.temperatures}, "
             f"{args.chains} chains, {args.leapfrog} leapfrog steps"
             f"{' (and no local moves of discrete sites: the independent MH step alone)' if args.no_local_moves else ''}"
             f"{' with guide moves (an independent proposal from the guide and the prior at every temperature)' if args.guide_moves else ''}"
             f"; amortized guides trained for {args.guide_epochs} "
             "epochs of the ELBO. Goals: coverage of the nominal 95 % interval among data called reliable >= 90 %; "
             "share flagged among data more than 3 SE off >= 95 % (✗: missed). 'alone': one run (IS: the defensive "
             "mixture, PSIS verdict; AIS: from the guide, ESS rule), judged by its own rule; of the data it puts more than "
             "3 of its SEs from the truth, the share the replicas flag, and the share they flag or whose pooled "
             "estimate is within 3 pooled SEs. Under exact calibration 0.27 % of data lie beyond 3 SE by chance "
             "alone (1.35 of 500), so the goal on 'flagged | >3 SE' is read on counts of that size with care.", "",
             "| model | estimator | coverage \\| reliable | flagged \\| >3 SE (n) | flagged | mean error | "
             "alone: coverage \\| reliable | alone: flagged \\| >3 SE (n) | alone: flagged | "
             "alone >3 SE: flagged by replicas | … or pooled within 3 SE | seconds |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        s = r["single_run"]
        lines.append(f"| {r['model']} | {r['estimator']} | {_pass(r['coverage_where_reliable'], 0.9)} | "
                     f"{_pass(r['flagged_where_far_off'], 0.95)} ({r['far_off']}) | {r['share_flagged']:.1%} | "
                     f"{r['mean_error']:+.3f} | {_pass(s['coverage_where_reliable'], 0.9)} | "
                     f"{_pass(s['flagged_where_far_off'], 0.95)} ({s['far_off']}) | {s['share_flagged']:.1%} | "
                     f"{_share(s['replicas_flag_where_far_off'])} | {_share(s['replicas_flag_or_cover_where_far_off'])} | "
                     f"{r['seconds']:.0f} |")
    lines += ["", "Reasons given (counts of data; a datum may have several):", ""]
    for r in rows:
        lines.append(f"- {r['model']} {r['estimator']}: " + (", ".join(f"{k} {v}" for k, v in r["flag_counts"].items())
                                                             or "none"))
    return "\n".join(lines) + "\n"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--estimators", default=",".join(ESTIMATORS))
    p.add_argument("--seeds", type=int, default=50)
    p.add_argument("--data", type=int, default=10, help="data per seed and model")
    p.add_argument("--replicas", type=int, default=4)
    p.add_argument("--samples", type=int, default=1000, help="IS samples K per datum and replica")
    p.add_argument("--temperatures", type=int, default=100)
    p.add_argument("--chains", type=int, default=16)
    p.add_argument("--leapfrog", type=int, default=5)
    p.add_argument("--guide-epochs", type=int, default=20)
    p.add_argument("--quick", action="store_true", help="a smoke run: 2 seeds x 3 data, K = 50, T = 5, 4 chains, "
                   "2 guide epochs")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1: the models are small, and "
                   "more threads on a shared machine only wait for each other)")
    p.add_argument("--sum-discrete", action="store_true", help="sum the discrete latents out exactly where the model "
                   "allows (zoo.evaluation.summed), so that IS and AIS sample the real latents alone")
    p.add_argument("--no-local-moves", action="store_true", help="AIS without its local moves of discrete sites too "
                   "large for Gibbs (the independent MH step alone moves them): what the moves buy")
    p.add_argument("--guide-moves", action="store_true", help="AIS with guide moves (zoo.evaluation.ais: an "
                   "independent proposal from the defensive mixture of the guide and the prior at every temperature, "
                   "before HMC; models with discrete latents take the guide's proposal anyway): what they buy")
    p.add_argument("--name", default="calibration_exam")
    args = p.parse_args(argv)
    torch.set_num_threads(max(1, args.threads))
    if args.quick:
        args.seeds, args.data, args.samples, args.temperatures, args.chains, args.guide_epochs = 2, 3, 50, 5, 4, 2
    names = [m for m in args.models.split(",") if m]
    estimators = [e for e in args.estimators.split(",") if e]
    if not names or any(m not in MODELS for m in names):
        fail(f"--models takes names from {','.join(MODELS)}, got {args.models!r}")
    if not estimators or any(e not in ESTIMATORS for e in estimators):
        fail(f"--estimators takes names from {','.join(ESTIMATORS)}, got {args.estimators!r}")
    for flag in ("seeds", "data", "samples", "temperatures", "chains", "leapfrog", "guide_epochs"):
        if getattr(args, flag) < 1:
            fail(f"--{flag.replace('_', '-')} must be a whole number >= 1")
    if args.replicas < 2:
        fail("--replicas must be at least 2 (agreement needs two)")
    rows = exam(names, estimators, args)
    settings = {k: getattr(args, k) for k in ("seeds", "data", "replicas", "samples", "temperatures", "chains",
                                              "leapfrog", "guide_epochs", "quick", "sum_discrete", "no_local_moves",
                                              "guide_moves")}
    path = write_result(args.name, {"settings": settings, "rows": rows, "nominal": 0.95, "alpha": ALPHA,
                                    "goals": {"coverage_where_reliable": 0.90, "flagged_where_far_off": 0.95}})
    provenance = json.loads(path.read_text())["provenance"]
    (RESULTS / f"{args.name}.md").write_text(markdown(rows, args, provenance))
    print(f"wrote {path} and {RESULTS / (args.name + '.md')}")
    return rows


if __name__ == "__main__":
    run_script(main)
