"""Which AIS kernel closes the categorical card's BDMC gap for less: more temperatures with the zoo's local moves, or
Gibbs updates of one categorical variable at a time?

The trained ``categorical-vae-mnist-gumbel`` (20 ten-way one-hot latents, 10^20 joint states: too many for the
zoo's joint Gibbs update, so AIS moves them by ``leapfrog_steps`` rounds of local Metropolis moves per temperature,
one variable given a class drawn uniformly) has a BDMC gap of 5.80 nats at T = 1,000 on its card. BDMC
(``zoo.evaluation.bdmc``) runs forward and reverse AIS on data simulated from the model, bounding log p(x) from
both sides; the gap bounds the error of either. Here, on the same ``--data`` simulated images and seeds:

- ``local``: the zoo's kernel (``zoo.evaluation.ais.local_mh``), L = 20 rounds per temperature, at T = 100 and at
  T = 1,000;
- ``gibbs``: a candidate kernel, not in the library: per round one variable chosen uniformly is drawn from its exact
  conditional over its 10 classes (10 evaluations of the model), L = 2 rounds at T = 100 (the evaluations of the
  local moves at T = 100) and L = 20 (those of the local moves at T = 1,000).

Each row gives the mean lower and upper bound, the mean and largest gap per image, and the seconds. The kernel that
reaches the smaller gap for the same number of model evaluations is the one to use.

    python benchmarks/categorical_kernels.py --data-dir ../shared/data     # results/categorical_kernels.json (~15 min)
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

from common import fail, run_script, write_result  # noqa: E402

import zoo  # noqa: E402
from zoo.evaluation import ais as ais_module  # noqa: E402
from zoo.evaluation.ais import AnnealedImportanceSampling  # noqa: E402
from zoo.evaluation.bdmc import bounds, simulate  # noqa: E402

NAME = "categorical-vae-mnist-gumbel"
#: (kernel, T, rounds per temperature L, model evaluations per temperature and chain)
ROWS = (("local", 100, 20, 20), ("gibbs", 100, 2, 20), ("local", 1000, 20, 20), ("gibbs", 100, 20, 200))


def gibbs_one_variable(chains, values, beta: float, sites, moves: int):
    """``moves`` rounds: per site, one categorical variable chosen uniformly per chain and datum is drawn from its
    exact conditional at temperature ``beta`` over its K classes (K evaluations of the model). Each update leaves
    f_beta invariant, as the local moves it stands in for do. Returns the new values and an acceptance of 1."""
    def log_f(state):
        g, log_pi0 = chains.g_and_log_pi0(chains.score(state))
        return torch.nan_to_num(log_pi0 + beta * g, nan=-math.inf)
    for _ in range(moves):
        for site in sites:
            current = values[site.name]
            C, B = current.shape[:2]
            K = int(site.num_classes)
            one_hot = current.reshape(C, B, -1, K)
            which = torch.nn.functional.one_hot(torch.randint(one_hot.shape[2], (C, B), device=current.device),
                                                one_hot.shape[2]).bool().unsqueeze(-1)          # [C, B, n, 1]
            rows = torch.eye(K, dtype=current.dtype, device=current.device)
            logs = torch.stack([log_f({**values, site.name: torch.where(which, rows[k], one_hot).reshape(current.shape)})
                                for k in range(K)], -1)                                        # [C, B, K]
            k = torch.distributions.Categorical(logits=logs).sample()
            values = {**values, site.name: torch.where(which, rows[k].unsqueeze(2), one_hot).reshape(current.shape)}
    return values, torch.ones(values[sites[0].name].shape[:2], device=values[sites[0].name].device)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default=None, help="where binarized_mnist.npz is (else $PYRO_ZOO_DATA)")
    p.add_argument("--data", type=int, default=8, help="images simulated from the model")
    p.add_argument("--chains", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--name", default="categorical_kernels")
    args = p.parse_args(argv)
    if args.data < 1 or args.chains < 2:
        fail("--data must be at least 1 and --chains at least 2")
    torch.set_num_threads(1)
    run = zoo.load_trained(NAME, data_dir=args.data_dir)
    model, guide = run.model.eval(), run.guide.eval()       # the guide's hard samples, as AIS evaluates it
    with torch.no_grad():
        torch.manual_seed(args.seed)
        x, z = simulate(model, args.data)
    local = ais_module.local_mh
    rows = []
    for kernel, T, L, evaluations in ROWS:
        sampler = AnnealedImportanceSampling(num_temperatures=T, num_chains=args.chains, leapfrog_steps=L, path="guide")
        ais_module.local_mh = gibbs_one_variable if kernel == "gibbs" else local
        try:
            torch.manual_seed(args.seed + 1)
            t0 = time.perf_counter()
            with torch.no_grad():
                b = bounds(sampler, model, guide, x, z)
            seconds = time.perf_counter() - t0
        finally:
            ais_module.local_mh = local
        gap = b["upper"] - b["lower"]
        rows.append({"kernel": kernel, "num_temperatures": T, "rounds": L, "evaluations_per_temperature": evaluations,
                     "evaluations": T * evaluations, "lower": b["lower"].mean().item(),
                     "upper": b["upper"].mean().item(), "gap": gap.mean().item(), "gap_max": gap.max().item(),
                     "gap_per_image": gap.tolist(), "seconds": seconds})
        print(f"{kernel} T={T} L={L}: lower {rows[-1]['lower']:.3f} upper {rows[-1]['upper']:.3f} "
              f"gap {rows[-1]['gap']:.3f} (max {rows[-1]['gap_max']:.2f}), {seconds:.0f} s", flush=True)
    table = ["| kernel | T | rounds L | evaluations per chain | lower | upper | gap (mean) | gap (max) | seconds |",
             "|---|---|---|---|---|---|---|---|---|"]
    table += [f"| {r['kernel']} | {r['num_temperatures']} | {r['rounds']} | {r['evaluations']} | {r['lower']:.2f} | "
              f"{r['upper']:.2f} | {r['gap']:.2f} | {r['gap_max']:.2f} | {r['seconds']:.0f} |" for r in rows]
    print("\n".join(table))
    settings = {"model": NAME, "data": args.data, "chains": args.chains, "seed": args.seed, "path": "guide"}
    path = write_result(args.name, {"settings": settings, "rows": rows, "table": "\n".join(table) + "\n"})
    print(f"wrote {path}")


if __name__ == "__main__":
    run_script(main)
