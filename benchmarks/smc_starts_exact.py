"""SMC from two starts against the closed form of a two-mode posterior: does the replicas' agreement test make the
data it calls reliable trustworthy where one SMC run's own SE does not?

The two-mode model of ``benchmarks/smc_exact.py`` (z ~ N(0, 1), x | z ~ 1/2 N(2 z, 0.4^2) + 1/2 N(-2 z, 0.4^2),
p(x) = N(x; 0, 4.16) in closed form), its eight data ``--repeat`` times over, and a Normal guide on one of the two
modes with 3 % of its mass past z = 0. SMC with few particles (``--particles`` x ``--copies`` copies, the default
schedule) is run from the guide and from the prior (:func:`zoo.evaluation.replicas.replicated_smc`), over
``--seeds`` seeds. The table gives, against the closed form:

- one run from the guide alone: the coverage of its interval estimate +- 1.96 SE (its SE from its own copies) and the
  share of data it calls precise (one copy carrying the estimate is its only check);
- the two runs judged together (Cochran's Q against Welch's threshold): the share called reliable, the coverage of
  the pooled estimate +- 1.96 pooled SE among them, and how many of them lie more than 3 pooled SEs off.

    python benchmarks/smc_starts_exact.py                 # benchmarks/results/smc_starts_exact.json (~1 min)
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import fail, run_script, write_result  # noqa: E402
from smc_exact import TWO_X, one_mode_guide_with, two_mode, two_mode_log_marginal  # noqa: E402

import zoo  # noqa: E402
from zoo.evaluation.replicas import Replication, replicated_smc  # noqa: E402
from zoo.evaluation.smc import SequentialMonteCarlo  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, default=50)
    p.add_argument("--repeat", type=int, default=3, help="the eight data, this many times over")
    p.add_argument("--particles", type=int, default=32)
    p.add_argument("--copies", type=int, default=4, help="each SMC run's own copies, whose spread is its SE")
    p.add_argument("--guide-share", type=float, default=0.03)
    p.add_argument("--name", default="smc_starts_exact")
    args = p.parse_args(argv)
    if min(args.seeds, args.repeat, args.particles) < 1 or args.copies < 2:
        fail("--seeds, --repeat and --particles must be at least 1, --copies at least 2")
    if not 0.0 < args.guide_share < 0.5:
        fail("--guide-share must lie in (0, 0.5)")
    torch.set_num_threads(1)
    model, guide = zoo.from_pyro(two_mode, 1), one_mode_guide_with(args.guide_share)
    x = TWO_X.repeat(args.repeat, 1)
    exact = two_mode_log_marginal(x)
    counts = dict(data=0, alone_covered=0, alone_precise=0, alone_precise_beyond_3se=0, reliable=0,
                  reliable_covered=0, reliable_beyond_3se=0)
    t0 = time.perf_counter()
    for seed in range(args.seeds):
        verdict = replicated_smc(SequentialMonteCarlo(num_particles=args.particles, num_replicas=args.copies), model,
                                 guide, x, Replication(replicas=2, seed=seed, starts=("guide", "prior")))
        alone = verdict.replicas[0]
        z_alone = (alone.log_likelihood - exact) / alone.se
        z = (verdict.log_likelihood - exact) / verdict.log_likelihood_se
        ok = verdict.reliable
        counts["data"] += len(z)
        counts["alone_covered"] += int((z_alone.abs() <= 1.96).sum())
        counts["alone_precise"] += int(alone.alone.sum())
        counts["alone_precise_beyond_3se"] += int((alone.alone & (z_alone.abs() > 3)).sum())
        counts["reliable"] += int(ok.sum())
        counts["reliable_covered"] += int((z[ok].abs() <= 1.96).sum())
        counts["reliable_beyond_3se"] += int((z[ok].abs() > 3).sum())
    n = counts["data"]
    row = {**counts, "alone_coverage": counts["alone_covered"] / n, "alone_share_precise": counts["alone_precise"] / n,
           "share_reliable": counts["reliable"] / n,
           "coverage_given_reliable": counts["reliable_covered"] / max(counts["reliable"], 1),
           "seconds": time.perf_counter() - t0}
    table = ("| data (seeds x data) | one run from the guide: coverage | called precise | precise but > 3 SE off | "
             "guide + prior: called reliable | coverage among reliable | reliable but > 3 SE off |\n"
             "|---|---|---|---|---|---|---|\n"
             f"| {n} ({args.seeds} x {len(x)}) | {row['alone_coverage']:.3f} | {row['alone_share_precise']:.3f} | "
             f"{counts['alone_precise_beyond_3se']} | {row['share_reliable']:.3f} | {row['coverage_given_reliable']:.3f} | "
             f"{counts['reliable_beyond_3se']} |\n")
    print(table)
    settings = {"particles": args.particles, "copies": args.copies, "guide_share": args.guide_share,
                "repeat": args.repeat, "seeds": args.seeds, "starts": ["guide", "prior"]}
    path = write_result(args.name, {"settings": settings, "row": row, "table": table})
    print(f"wrote {path}")


if __name__ == "__main__":
    run_script(main)
