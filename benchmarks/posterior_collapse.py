"""Posterior collapse with autoregressive decoders, and two remedies: free bits and KL warm-up.

The lecture's point (CSE599i "Expressive VAEs"; Bowman et al. 2016, Chen et al. 2017): a decoder
that can model x on its own, p(x | z) = prod_i p(x_i | x_<i, z) (MADE, PixelCNN), lets the ELBO
reach a good value with q(z | x) = p(z): the KL term goes to 0 and so do the active units. Free bits
(Kingma et al. 2016, ``--free-bits``: each unit's minibatch-average KL counts as at least lambda)
and KL warm-up (``--kl-warmup``: the KL weighted by beta rising to 1) are the remedies.

One VAE (amortized Gaussian encoder mirroring the decoder, Gaussian prior, ``--latent-dim`` units)
with three decoders, each trained three ways (no remedy, free bits lambda, warm-up), through the
zoo's own train/evaluate path (``zoo.experiments.run.train_run``), each run one process with one
torch thread (``--jobs`` at a time). Reported on the test split: KL = E_q[log q - log p(z)], active
units (Cov_x E_q[z_u | x] > 0.01), -ELBO and the IS estimate of -log p(x) with ``--eval-samples``.

Decoders: ``mlp`` (the factorized Bernoulli MLP, ``--hidden``), ``made`` (a conditional MADE with
``--made-hidden`` masked units) and ``pixelcnn`` (one 5x5 mask-A and 3x3 mask-B layers with
``--channels``; 3x3 mask A on 8x8 digits).

The committed tables (CPU only, 2 cores shared with other jobs; the issue's protocol, all 10,000 test
images with IS K = 5000, would take the PixelCNN runs hours on CPU, so MNIST is scored on a fixed
subset of 1000 test images with K = 200, after 3 epochs):

    python benchmarks/posterior_collapse.py --dataset binarized_mnist --data-dir /work/shared/data --epochs 3 \
        --warmup-epochs 2 --eval-samples 200 --eval-limit 1000 --jobs 4
    python benchmarks/posterior_collapse.py --dataset digits --epochs 100 --warmup-epochs 50 --eval-samples 5000 \
        --jobs 1 --out runs/posterior_collapse_digits --name posterior_collapse_digits

Over training on MNIST (``--trajectory``; KL, active units and NLL on 1000 test and 1000 training images):

    python benchmarks/posterior_collapse.py --dataset binarized_mnist --data-dir /work/shared/data --decoders made \
        --remedies none,free_bits --epochs 150 --trajectory 10,30,60,100,150 --eval-samples 200 --eval-limit 1000 \
        --jobs 2 --name posterior_collapse_mnist_trajectory_150
    python benchmarks/posterior_collapse.py --dataset binarized_mnist --data-dir /work/shared/data --decoders pixelcnn \
        --remedies none,free_bits --epochs 30 --trajectory 3,10,20,30 --eval-samples 200 --eval-limit 1000 \
        --jobs 2 --name posterior_collapse_mnist_trajectory_pixelcnn
"""
from __future__ import annotations

import json
import os
import sys
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import RESULTS, grid_parser, provenance, run_script, write_result  # noqa: E402

from zoo.experiments.config import RunConfig  # noqa: E402

DECODERS = ("mlp", "made", "pixelcnn")
REMEDIES = ("none", "free_bits", "warmup")


def configs(args):
    """(label, RunConfig) of every requested run, the slowest decoders first."""
    runs = []
    for decoder in sorted(args.decoders.split(","), key=lambda d: -DECODERS.index(d)):
        for remedy in args.remedies.split(","):
            hidden = {"mlp": args.hidden, "made": args.made_hidden}.get(decoder, args.hidden)
            config = RunConfig.make(
                model="vae", guide="amortized", objective="elbo", dataset=args.dataset, data_dir=args.data_dir,
                epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=0, device="cpu",
                eval_samples=args.eval_samples, eval_limit=args.eval_limit, iwae_k=min(50, args.eval_samples),
                latent_dim=args.latent_dim, hidden=hidden, decoder=decoder, channels=args.channels,
                free_bits=args.free_bits if remedy == "free_bits" else None,
                kl_warmup=args.warmup_epochs if remedy == "warmup" else None)
            runs.append((f"{decoder}-{remedy}", config))
    return runs


def _train(label: str, config_json: dict, folder: str) -> dict:
    import torch
    torch.set_num_threads(1)
    from zoo.experiments.run import train_run
    summary = train_run(RunConfig.from_json(config_json), Path(folder), force=True, progress=False)
    summary["label"] = label
    return summary


def _trajectory(label: str, config_json: dict, at) -> dict:
    """Train one run with ``zoo.fit`` (the same model, guide, objective and settings that ``train_run`` builds with
    ``prepare``) and, after each epoch in ``at``, score the test split and the training data: KL, active units,
    ELBO and the IS log-likelihood. The scoring draws under ``torch.random.fork_rng``, so the training is the one a
    run without it would do."""
    import time

    import torch
    torch.set_num_threads(1)
    import zoo
    from zoo.experiments.run import prepare
    from zoo.experiments.trained import fixed_subset
    run = prepare(RunConfig.from_json(config_json))
    c, data, points = run.config, run.data, []
    test_x, train_x = fixed_subset(data.test, c.eval_limit), fixed_subset(data.train, c.eval_limit)

    def log(kind, i, row=None, **_):
        if kind != "epoch" or row["epoch"] not in at:
            return
        with torch.random.fork_rng():
            torch.manual_seed(0)
            test = zoo.evaluate(run.model, run.guide, test_x, num_samples=c.eval_samples,
                                iwae_k=min(50, c.eval_samples), psis=False)
            train = zoo.evaluate(run.model, run.guide, train_x, num_samples=10, iwae_k=2, psis=False)
        points.append({"epoch": row["epoch"], "kl": test["kl"], "active_units": test["active_units"],
                       "elbo": test["elbo"], "nll": -test["log_likelihood"], "train_kl": train["kl"],
                       "train_active_units": train["active_units"], "train_elbo": train["elbo"],
                       "seconds": time.perf_counter() - t0})
        print(f"{label} epoch {row['epoch']}: KL {test['kl']:.3f}, AU {test['active_units']}, train KL "
              f"{train['kl']:.3f}, NLL {-test['log_likelihood']:.2f}", flush=True)

    t0 = time.perf_counter()
    zoo.fit(run.model, run.guide, run.objective, data.train, epochs=c.epochs, batch_size=c.batch_size, lr=c.lr,
            seed=c.seed, progress=False, log=log, kl_warmup=c.kl_warmup)
    return {"label": label, "config": config_json, "num_latent_units": latent_units(run.model), "points": points}


def latent_units(model) -> int:
    return sum(s.numel for s in model.latents)


def write_trajectories(name: str, title: str, rows, protocol: str) -> None:
    rows = sorted(rows, key=lambda r: (DECODERS.index(r["label"].split("-")[0]),
                                       REMEDIES.index(r["label"].split("-", 1)[1])))
    write_result(name, {"protocol": protocol, "runs": rows})
    prov = provenance()
    epochs = [p["epoch"] for p in rows[0]["points"]]
    md = [f"# {title}", "", f"Command: `{prov['command']}`  ", f"Commit: `{prov['git_commit']}`  ",
          f"Hardware: {prov['cpu']} (1 torch thread per run, {prov['logical_cores']} cores shared), GPU: none used",
          "", f"Protocol: {protocol}", ""]
    head = "| decoder | remedy | " + " | ".join(f"epoch {e}" for e in epochs) + " |"
    rule = "|---|---|" + "---|" * len(epochs)
    for what, cell in (("KL on the test images, nats (active units)",
                        lambda p: f"{p['kl']:.2f} ({p['active_units']})"),
                       ("KL on the training images, nats (active units)",
                        lambda p: f"{p['train_kl']:.2f} ({p['train_active_units']})"),
                       ("Test NLL (IS), nats", lambda p: f"{p['nll']:.2f}")):
        md += [f"{what}:", "", head, rule]
        for r in rows:
            decoder, remedy = r["label"].split("-", 1)
            c = r["config"]
            remedy = {"none": "none", "free_bits": f"free bits λ={c['objective_options'].get('free_bits')}",
                      "warmup": f"warm-up {c.get('kl_warmup')} epochs"}[remedy]
            md.append(f"| {decoder} | {remedy} | " + " | ".join(cell(p) for p in r["points"]) + " |")
        md.append("")
    md += ["KL is E_q[log q(z|x) − log p(z)] per datum; active units are the latent units with Cov_x(E_q[z_u|x]) "
           "> 0.01 (Burda et al. 2016), of " + str(rows[0]["num_latent_units"]) + ". Every run is scored on the "
           "plain ELBO."]
    (RESULTS / f"{name}.md").write_text("\n".join(md) + "\n")


def write_tables(name: str, title: str, rows, protocol: str, pending) -> None:
    rows = sorted(rows, key=lambda r: (DECODERS.index(r["label"].split("-")[0]),
                                       REMEDIES.index(r["label"].split("-", 1)[1])))
    write_result(name, {"protocol": protocol, "runs": rows, "not_finished": sorted(pending)})
    prov = provenance()
    md = [f"# {title}", "", f"Command: `{prov['command']}`  ", f"Commit: `{prov['git_commit']}`  ",
          f"Hardware: {prov['cpu']} (1 torch thread per run, {prov['logical_cores']} cores shared), GPU: none used",
          "", f"Protocol: {protocol}", "",
          "| decoder | remedy | epochs | KL | active units | test −ELBO | test NLL (IS) | ± se | ± data se | "
          "k̂>0.7 | train s |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        decoder, remedy = r["label"].split("-", 1)
        c = r["config"]
        remedy = {"none": "none", "free_bits": f"free bits λ={c['objective_options'].get('free_bits')}",
                  "warmup": f"warm-up {c.get('kl_warmup')} epochs"}[remedy]
        data_se = r.get("log_likelihood_data_se")
        md.append(f"| {decoder} | {remedy} | {r['epochs_trained']} | {r['kl']:.2f} | "
                  f"{r['active_units']}/{r['num_latent_units']} | {-r['elbo']:.2f} | {r['nll']:.2f} | "
                  f"{r['log_likelihood_se']:.2f} | {'–' if data_se is None else f'{data_se:.2f}'} | "
                  f"{r.get('psis_khat_frac_over_0_7', float('nan')):.1%} | {r.get('train_seconds') or 0:.0f} |")
    if pending:
        md += ["", f"Not finished when this table was written: {', '.join(sorted(pending))}."]
    md += ["", "KL is E_q[log q(z|x) − log p(z)] per test datum (nats); active units are the latent units with "
           "Cov_x(E_q[z_u|x]) > 0.01 (Burda et al. 2016); the free-bits and warm-up runs are scored on the plain ELBO. "
           "± se is the Monte Carlo error of the importance sampling, ± data se the error from which test images "
           "were scored."]
    (RESULTS / f"{name}.md").write_text("\n".join(md) + "\n")


def main(argv=None):
    p = grid_parser(__doc__, "runs/posterior_collapse", eval_samples=1000, eval_limit=None)
    p.add_argument("--dataset", default="binarized_mnist")
    p.add_argument("--decoders", default=",".join(DECODERS))
    p.add_argument("--remedies", default=",".join(REMEDIES))
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--latent-dim", type=int, default=32)
    p.add_argument("--hidden", type=int, nargs="+", default=[200, 200], help="mlp decoder hidden sizes")
    p.add_argument("--made-hidden", type=int, nargs="+", default=[500], help="MADE masked hidden sizes")
    p.add_argument("--channels", type=int, nargs="+", default=[16, 16, 16], help="PixelCNN channels per layer")
    p.add_argument("--free-bits", type=float, default=0.25, help="lambda, nats per latent unit")
    p.add_argument("--warmup-epochs", type=int, default=None, help="KL warm-up epochs (default: half of --epochs)")
    p.add_argument("--jobs", type=int, default=1, help="runs trained at once, each a process with one torch thread")
    p.add_argument("--name", default="posterior_collapse", help="result file name in benchmarks/results")
    p.add_argument("--trajectory", default=None, metavar="E1,E2,...",
                   help="score KL, active units and NLL after each of these epochs instead of once at the end "
                        "(one table per quantity, epochs as columns; nothing is written to --out); with "
                        "--eval-limit N, on N test images and N training images")
    args = p.parse_args(argv)
    from zoo.core.errors import ZooError
    for kind, given, known in (("decoder", args.decoders, DECODERS), ("remedy", args.remedies, REMEDIES)):
        for name in given.split(","):
            if name not in known:
                raise ZooError(f"unknown {kind} {name!r}; choose from {', '.join(known)}")
    args.warmup_epochs = args.warmup_epochs or max(1, args.epochs // 2)
    runs = configs(args)
    protocol = (f"{args.dataset}, VAE with {args.latent_dim} latent units, amortized Gaussian encoder, decoders mlp "
                f"(hidden {args.hidden}), made (masked hidden {args.made_hidden}) and pixelcnn (channels "
                f"{args.channels}); Adam lr {args.lr}, batch {args.batch_size}, {args.epochs} epochs, seed 0; free "
                f"bits λ = {args.free_bits} nats per unit; warm-up over {args.warmup_epochs} epochs; test "
                f"{'all' if args.eval_limit is None else f'a fixed random subset (seed 0) of {args.eval_limit}'} "
                f"images, IS K = {args.eval_samples}.")
    title = f"Posterior collapse: decoder x remedy ({args.dataset})"
    out = Path(args.out)
    rows, pending = [], {label for label, _ in runs}
    if args.evaluate_only:              # collect the runs already trained in --out
        for label, _ in runs:
            f = out / label / "results.json"
            if f.exists():
                rows.append({**json.loads(f.read_text()), "label": label})
                pending.discard(label)
        write_tables(args.name, title, rows, protocol, pending)
        return
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    if args.trajectory:
        at = sorted({int(e) for e in args.trajectory.split(",")})
        if at[0] < 1 or at[-1] > args.epochs:
            raise ZooError(f"--trajectory epochs must lie in 1..--epochs ({args.epochs}), got {args.trajectory}")
        title = f"Posterior collapse over training: decoder x remedy ({args.dataset})"
        if args.eval_limit is not None:
            protocol += (f" The training-image columns score a fixed random subset (seed 0) of {args.eval_limit} "
                         "training images.")
        with ProcessPoolExecutor(max_workers=args.jobs) as pool:
            futures = [pool.submit(_trajectory, label, config.to_json(), at) for label, config in runs]
            rows = [f.result() for f in as_completed(futures)]
        write_trajectories(args.name, title, rows, protocol)
        return
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        futures = {pool.submit(_train, label, config.to_json(), str(out / label)): label for label, config in runs}
        for future in as_completed(futures):
            summary = future.result()
            rows.append(summary)
            pending.discard(summary["label"])
            print(f"{summary['label']}: KL {summary['kl']:.2f}, AU {summary['active_units']}, "
                  f"-ELBO {-summary['elbo']:.2f}, NLL {summary['nll']:.2f}", flush=True)
            write_tables(args.name, title, rows, protocol, pending)


if __name__ == "__main__":
    run_script(main)
