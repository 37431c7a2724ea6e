"""Sequential Monte Carlo (zoo.evaluation.smc) against exact log p(x): does its replica standard error cover the
truth as often as it claims, and does it recover the mode that AIS from a one-mode guide misses?

**Coverage.** For each of ``--seeds`` seeds, ``--data`` fresh data are drawn from a model with an exact log p(x)
and SMC estimates each datum's log p(x) with R replicas (each of ``--replicas``) of ``--particles`` particles; the nominal
95 % interval estimate +- 1.96 SE covers the exact value or not. The models: pPCA (closed form) from an untrained
amortized guide (the guide's path), and zoo.exact_models.poisson_1d (quadrature) from the prior. The table gives the
coverage over all seeds and data, with a binomial standard error, and also that of the interval with Student's
t quantile at R - 1 degrees of freedom (the SE is estimated from R numbers).

**The two-mode model** (as tests/test_smc.py): z ~ N(0, 1), x | z ~ 1/2 N(2 z, 0.4^2) + 1/2 N(-2 z, 0.4^2), eight
data whose posteriors have two modes of equal mass, and a Normal guide on one mode with ``--guide-share`` of its mass
past z = 0. SMC (256 particles x 8 replicas, conditional ESS 0.98, one move of 5 leapfrog steps per temperature)
against AIS at T = 400 with 16 chains (the issue's setting) and with 64 chains (about SMC's gradient evaluations),
over ``--two-mode-seeds`` seeds: per-datum coverage and the share of data more than 3 SE off, with the gradient
evaluations per datum and the wall time.

    python benchmarks/smc_exact.py                       # the committed result, benchmarks/results/smc_exact.json
    python benchmarks/smc_exact.py --seeds 3 --two-mode-seeds 1 --name smc_exact_smoke
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import pyro  # noqa: E402
import pyro.distributions as dist  # noqa: E402
from common import fail, run_script, write_result  # noqa: E402

import zoo  # noqa: E402
import zoo.data  # noqa: E402
from zoo import exact_models as E  # noqa: E402
from zoo.evaluation.ais import AnnealedImportanceSampling  # noqa: E402
from zoo.evaluation.smc import SequentialMonteCarlo  # noqa: E402

TWO_A, TWO_S = 2.0, 0.4
TWO_X = torch.tensor([-3.0, -2.5, -2.0, -1.5, 1.5, 2.0, 2.5, 3.0]).unsqueeze(-1)


def two_mode(x, idx=None, N=None):
    with pyro.plate("data", N, subsample=idx):
        z = pyro.sample("z", dist.Normal(torch.zeros(1), 1.0).to_event(1))
        locs = torch.stack([TWO_A * z, -TWO_A * z], -1)
        mix = dist.MixtureSameFamily(dist.Categorical(torch.ones(2) / 2), dist.Normal(locs, TWO_S))
        pyro.sample("x", mix.to_event(1), obs=x)


def one_mode_guide_with(share: float):
    quantile = -dist.Normal(0.0, 1.0).icdf(torch.tensor(share))

    def one_mode_guide(x, idx=None, N=None):
        m = TWO_A * x / (TWO_A ** 2 + TWO_S ** 2)
        with pyro.plate("data", N, subsample=idx):
            pyro.sample("z", dist.Normal(m, m.abs() / quantile + 0.05).to_event(1))
    return one_mode_guide


def two_mode_log_marginal(x):
    return dist.Normal(0.0, math.sqrt(TWO_A ** 2 + TWO_S ** 2)).log_prob(x.double()[:, 0])


def _ppca():
    data = zoo.data.synthetic_ppca(x_dim=6, latent_dim=2, sigma=0.5, sizes=(500, 10, 10), seed=1)
    model = zoo.build_model("ppca", 6, latent_dim=2)
    model.set_ml_solution(data.train)
    torch.manual_seed(0)
    guide = zoo.build_guide("amortized", model, hidden=(8,))

    def draw(n, seed):
        torch.manual_seed(seed)
        with torch.no_grad():
            return model.sample(n, mean=False).float()
    return model, guide, "guide", draw, lambda x: model.log_marginal(x).double()


def _poisson():
    model = zoo.from_pyro(E.poisson_1d, 4)
    guide = zoo.build_guide("amortized", model, hidden=(8,))
    return model, guide, "prior", lambda n, seed: E.poisson_1d_data(n, seed=1000 + seed), E.poisson_1d_log_marginal


MODELS = {"ppca": _ppca, "poisson": _poisson}


def _t_quantile(dof: int) -> float:
    """Student's t 0.975 quantile (torch has no t icdf): by bisection on the regularized incomplete beta's CDF."""
    t_dist = torch.distributions.StudentT(float(dof))
    lo, hi = 0.0, 50.0
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        # P(T <= mid) by a fine trapezoid of the density (smooth, light enough tails at these dofs)
        grid = torch.linspace(-200.0, mid, 200001, dtype=torch.float64)
        cdf = torch.trapezoid(t_dist.log_prob(grid).exp(), grid).item()
        lo, hi = (mid, hi) if cdf < 0.975 else (lo, mid)
    return 0.5 * (lo + hi)


def coverage(name, replicas, args):
    model, guide, path, draw, exact_fn = MODELS[name]()
    t_q = _t_quantile(replicas - 1)
    hits, hits_t, z_all, seconds = 0, 0, [], 0.0
    for seed in range(args.seeds):
        x = draw(args.data, seed)
        exact = exact_fn(x)
        pyro.set_rng_seed(10_000 + seed)
        t0 = time.perf_counter()
        r = SequentialMonteCarlo(num_particles=args.particles, num_replicas=replicas, path=path).estimate(
            model, guide, x)
        seconds += time.perf_counter() - t0
        z = (r.log_likelihood - exact) / r.log_likelihood_se
        hits += int((z.abs() <= 1.96).sum())
        hits_t += int((z.abs() <= t_q).sum())
        z_all.append(z)
    z = torch.cat(z_all)
    n = z.numel()
    cov = hits / n
    return {"model": name, "path": path, "num_particles": args.particles, "num_replicas": replicas,
            "seeds": args.seeds, "data_per_seed": args.data, "intervals": n,
            "coverage_1.96": cov, "coverage_se": math.sqrt(cov * (1 - cov) / n),
            "t_quantile": t_q, "coverage_t": hits_t / n, "mean_z": z.mean().item(), "max_abs_z": z.abs().max().item(),
            "seconds": seconds}


def two_mode_comparison(args):
    model = zoo.from_pyro(two_mode, 1)
    guide = one_mode_guide_with(args.guide_share)
    exact = two_mode_log_marginal(TWO_X)
    L = 5
    runs = {
        "smc_256x8": lambda: SequentialMonteCarlo(num_particles=256, num_replicas=8, num_moves=1, target_ess=0.98,
                                                  leapfrog_steps=L),
        "ais_T400_C16": lambda: AnnealedImportanceSampling(num_temperatures=400, num_chains=16, leapfrog_steps=L),
        "ais_T400_C64": lambda: AnnealedImportanceSampling(num_temperatures=400, num_chains=64, leapfrog_steps=L),
    }
    rows = []
    for label, make in runs.items():
        zs, errors, seconds, evaluations = [], [], 0.0, []
        for seed in range(args.two_mode_seeds):
            sampler = make()
            pyro.set_rng_seed(seed)
            t0 = time.perf_counter()
            r = sampler.estimate(model, guide, TWO_X)
            seconds += time.perf_counter() - t0
            zs.append((r.log_likelihood - exact) / r.log_likelihood_se)
            errors.append((r.log_likelihood - exact).mean().item())
            if isinstance(sampler, SequentialMonteCarlo):      # one HMC move per temperature after the first
                evaluations.append((r.steps - 1).clamp(min=0).mean().item() * sampler.num_replicas
                                   * sampler.num_particles * sampler.num_moves * L)
            else:
                evaluations.append((sampler.num_chains + sampler.pilot_chains) * (sampler.num_temperatures - 1) * L)
        z = torch.cat(zs)
        rows.append({"run": label, "seeds": args.two_mode_seeds, "data": TWO_X.shape[0] * args.two_mode_seeds,
                     "coverage_1.96": (z.abs() <= 1.96).double().mean().item(),
                     "share_beyond_3se": (z.abs() > 3).double().mean().item(), "worst_z": z.min().item(),
                     "mean_error_nats": sum(errors) / len(errors),
                     "gradient_evaluations_per_datum": sum(evaluations) / len(evaluations),
                     "seconds_per_run": seconds / args.two_mode_seeds})
        print(rows[-1], flush=True)
    return {"guide_share": args.guide_share, "rows": rows}


def markdown(cover, two) -> str:
    lines = ["| model | path | N x R | intervals | coverage (1.96 SE) | coverage (t, R-1 dof) | mean z | max abs z |",
             "|---|---|---|---|---|---|---|---|"]
    for c in cover:
        lines.append(f"| {c['model']} | {c['path']} | {c['num_particles']} x {c['num_replicas']} | {c['intervals']} | "
                     f"{c['coverage_1.96']:.3f} +- {c['coverage_se']:.3f} | {c['coverage_t']:.3f} | "
                     f"{c['mean_z']:.2f} | {c['max_abs_z']:.1f} |")
    lines += ["", f"Two-mode posterior, guide on one mode with {two['guide_share']:.0%} of its mass past z = 0:", "",
              "| run | data | coverage (1.96 SE) | beyond 3 SE | worst z | mean error (nats) | gradient evals / datum "
              "| seconds / run |", "|---|---|---|---|---|---|---|---|"]
    for r in two["rows"]:
        lines.append(f"| {r['run']} | {r['data']} | {r['coverage_1.96']:.2f} | {r['share_beyond_3se']:.2f} | "
                     f"{r['worst_z']:.1f} | {r['mean_error_nats']:.3f} | {r['gradient_evaluations_per_datum']:,.0f} | "
                     f"{r['seconds_per_run']:.1f} |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, default=50)
    p.add_argument("--data", type=int, default=20)
    p.add_argument("--particles", type=int, default=64)
    p.add_argument("--replicas", default="4,8", help="numbers of replicas R, each a coverage study")
    p.add_argument("--models", default="ppca,poisson")
    p.add_argument("--two-mode-seeds", type=int, default=5)
    p.add_argument("--guide-share", type=float, default=0.03)
    p.add_argument("--name", default="smc_exact")
    args = p.parse_args(argv)
    if args.seeds < 1 or args.data < 1 or args.two_mode_seeds < 0:
        fail("--seeds and --data must be at least 1, --two-mode-seeds at least 0")
    try:
        replicas = [int(r) for r in args.replicas.split(",")]
    except ValueError:
        fail(f"--replicas takes comma-separated whole numbers, got {args.replicas!r}")
    if min(replicas) < 2:
        fail("--replicas must be at least 2 (the SE is their spread)")
    if not 0.0 < args.guide_share < 0.5:
        fail("--guide-share must lie in (0, 0.5)")
    names = [m for m in args.models.split(",") if m]
    unknown = [m for m in names if m not in MODELS]
    if unknown:
        fail(f"unknown model {unknown[0]!r}; choose from {', '.join(MODELS)}")
    torch.set_num_threads(1)
    cover = []
    for name in names:
        for R in replicas:
            cover.append(coverage(name, R, args))
            print(cover[-1], flush=True)
    two = two_mode_comparison(args) if args.two_mode_seeds else {"guide_share": args.guide_share, "rows": []}
    table = markdown(cover, two)
    print(table)
    path = write_result(args.name, {"coverage": cover, "two_mode": two, "table": table})
    print(f"wrote {path}")


if __name__ == "__main__":
    run_script(main)
