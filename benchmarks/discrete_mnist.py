"""Discrete-latent models on static binarized MNIST, every estimator through the same harness.

References (fixed binarization):
- Jang et al. 2017, Table 1: Bernoulli SBN 784-200-784, score function 112.2 / Gumbel-softmax 105.0;
  categorical VAE 784-(20x10)-200, score function 110.6 / Gumbel-softmax 101.5 (test -ELBO).
- Mnih & Gregor 2014 (NVIL): SBN-200, about 113.1 nats.

Protocol: Adam, batch 100, seed 0, amortized encoder mirroring the decoder's tanh layers (one tanh
layer of 200 for the linear SBN). Plain REINFORCE (elbo, no baseline) at lr 3e-4; every other run at
lr 1e-3, times --lr-decay per epoch from where a run starts or resumes; with --kl-warmup E the latent terms are
weighted by beta rising linearly to 1 over the first E epochs; with --keep-best a run is
scored at its epoch with the best validation ELBO (early stopping; the table gives that epoch); with
--weight-decay w, AdamW with decoupled decay w. NVIL = tracegraph with --baseline neural (a running average centring the per-datum learning
signal plus the input-dependent b(x), zoo.objectives.baselines). RLOO = the score function with a leave-one-out
baseline over K = 2 (or 4) samples per datum (objective rloo). ARM and DisARM = one antithetic pair of bit vectors
per datum (objectives arm, disarm; Jang et al.'s score-function figure is their reference). REBAR and RELAX = one
relaxed control variate per datum, trained on the gradient's variance (objectives rebar, relax); TVO = the
thermodynamic objective with S = 10 draws, P = 5, beta_1 = 10^-1.7 (objective tvo); ARSM = one Dirichlet draw
per variable and its 45 swapped pseudo actions (objective arsm); IWAE-DisARM = the K = 2 IWAE bound with a DisARM
pair for each sample (iwae --estimator disarm), beside VIMCO with K = 4 at the same four evaluations; the same
references. Relaxed runs train Jang et al.'s objective,
tracemeanfield with the relaxed guide: the reconstruction term at a Gumbel-softmax / Concrete sample
minus the closed-form KL of the discrete q(z|x) to the discrete prior, with tau = max(0.5, exp(-1e-4
t)) (floor 0.1 in the -tau0.1 runs, or --temperature-min, from the step a run starts or resumes); ST = straight-through (hard sample forward). Reported: test
-ELBO and IS NLL (K = --eval-samples) of the true discrete model with hard samples, never the
relaxed surrogate, on all 10,000 test images (the papers' protocol), or with --eval-limit n on a fixed
random subset (seed 0) of n, quicker but off the whole-test figure by up to a few "data se".

    python benchmarks/discrete_mnist.py --data-dir ../shared/data --epochs 50 --eval-samples 1000 --eval-limit 1000
    python benchmarks/discrete_mnist.py --data-dir ../shared/data --epochs 100 --eval-samples 1000 --eval-limit 1000 --resume
    python benchmarks/discrete_mnist.py --data-dir ../shared/data --epochs 100 --eval-samples 1000 --eval-limit 1000 \
        --runs sbn200-mlp-nvil,sbn200-mlp-gumbel --name discrete_mnist_mlp
    python benchmarks/discrete_mnist.py --data-dir ../shared/data --epochs 100 --eval-samples 1000 --eval-limit 1000 \
        --runs cat20x10-gumbel-tau0.1,sbn200-mlp-gumbel-tau0.1 --name discrete_mnist_low_tau
    python benchmarks/discrete_mnist.py --data-dir ../shared/data --epochs 700 --eval-samples 1000 --eval-limit 1000 \
        --resume --lr-decay 0.99 --runs cat20x10-nvil --name discrete_mnist_cat_nvil_decay
    python benchmarks/discrete_mnist.py --data-dir ../shared/data --epochs 150 --eval-samples 1000 --eval-limit 10000 \
        --kl-warmup 50 --keep-best --jit --runs cat20x10-gumbel,sbn200-mlp-gumbel --name discrete_mnist_gumbel_warmup \
        --out runs/discrete_mnist_gumbel_warmup
    python benchmarks/discrete_mnist.py --data-dir ../shared/data --evaluate-only --runs sbn200-nvil \
        --eval-samples 1000 --eval-limit 10000 --name discrete_mnist_nvil_full_test
    python benchmarks/discrete_mnist.py --data-dir ../shared/data --epochs 400 --eval-samples 1000 --eval-limit 1000 \
        --resume --lr-decay 0.995 --runs sbn200-nvil --name discrete_mnist_sbn_nvil_decay
    python benchmarks/discrete_mnist.py --data-dir ../shared/data --epochs 1000 --eval-samples 1000 --eval-limit 10000 \
        --lr-decay 0.997 --keep-best --jit --weight-decay 0.1 --runs sbn200-mlp-rloo-k4 \
        --name discrete_mnist_mlp_rloo_k4_wd --out runs/discrete_mnist_rloo_wd
    python benchmarks/discrete_mnist.py --data-dir ../shared/data --epochs 1000 --eval-samples 1000 --eval-limit 10000 \
        --keep-best --jit --weight-decay 0.1 --resume --lr-decay 0.99 --runs cat20x10-gumbel \
        --name discrete_mnist_cat_gumbel_wd_decay --out runs/discrete_mnist_gumbel_wd
    python benchmarks/discrete_mnist.py --data-dir ../shared/data --epochs 2000 --eval-samples 1000 --eval-limit 10000 \
        --keep-best --jit --weight-decay 0.1 --resume --lr-decay 0.997 --temperature-min 0.3 --runs sbn200-mlp-gumbel \
        --name discrete_mnist_sbn_mlp_gumbel_wd_tau03 --out runs/discrete_mnist_gumbel_wd_tau03
    python benchmarks/discrete_mnist.py --data-dir ../shared/data --epochs 2000 --eval-samples 1000 --eval-limit 10000 \
        --keep-best --jit --weight-decay 0.1 --resume --lr-decay 0.997 --temperature-min 0.2 --runs sbn200-mlp-gumbel \
        --name discrete_mnist_sbn_mlp_gumbel_wd_tau02 --out runs/discrete_mnist_gumbel_wd_tau02
    python benchmarks/discrete_mnist.py --data-dir ../shared/data --epochs 1000 --eval-samples 1000 --eval-limit 10000 \
        --lr-decay 0.997 --keep-best --jit --weight-decay 0.1 --runs cat20x10-rloo --name discrete_mnist_cat_rloo_wd \
        --out runs/discrete_mnist_rloo_wd
    python benchmarks/discrete_mnist.py --data-dir ../shared/data --epochs 100 --eval-samples 1000 --eval-limit 1000 \
        --runs sbn200-rebar,sbn200-relax,sbn200-tvo,cat20x10-tvo --name discrete_mnist_relax_tvo \
        --out runs/discrete_mnist_relax_tvo
    python benchmarks/discrete_mnist.py --data-dir ../shared/data --epochs 30 --eval-samples 1000 --eval-limit 1000 \
        --runs cat20x10-arsm,cat20x10-rloo --name discrete_mnist_arsm --out runs/discrete_mnist_arsm

The two tau branches resume a copy of the sbn200-mlp-gumbel folder of runs/discrete_mnist_gumbel_wd, taken after its
epoch 395 (see the notes in their result files).

A long run can be stopped by hand (its last epoch checkpoint and, with --keep-best, its best
epoch are kept) and then scored by the same command with --evaluate-only added.
"""
from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import grid_parser, run_grid, run_script  # noqa: E402

from zoo.experiments.config import RunConfig  # noqa: E402

#: Each run's reference: Jang et al.'s test -ELBO for the same estimator family, or NVIL's test NLL.
REFERENCES = {"sbn200-reinforce": 112.2, "sbn200-nvil": 113.1, "sbn200-gumbel": 105.0, "sbn200-st-gumbel": 105.0,
              "sbn200-mlp-nvil": 113.1, "sbn200-mlp-gumbel": 105.0, "cat20x10-nvil": 110.6, "cat20x10-gumbel": 101.5,
              "sbn200-mlp-gumbel-tau0.1": 105.0, "cat20x10-gumbel-tau0.1": 101.5,
              "sbn200-rloo": 112.2, "sbn200-mlp-rloo": 112.2, "sbn200-mlp-rloo-k4": 112.2, "cat20x10-rloo": 110.6,
              "sbn200-arm": 112.2, "sbn200-disarm": 112.2, "sbn200-rebar": 112.2, "sbn200-relax": 112.2,
              "sbn200-tvo": 112.2, "cat20x10-tvo": 110.6, "cat20x10-arsm": 110.6,
              "sbn200-iwae-disarm": 112.2, "sbn200-vimco": 112.2}


def main(argv=None):
    p = grid_parser(__doc__, "runs/discrete_mnist", eval_samples=1000, eval_limit=None)
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--runs", default=None, help="only these runs, comma-separated (default: all)")
    p.add_argument("--name", default="discrete_mnist", help="result file name in benchmarks/results")
    p.add_argument("--lr-decay", type=float, default=1.0,
                   help="learning-rate decay per epoch, from where a run starts or resumes (default 1: constant)")
    p.add_argument("--kl-warmup", type=int, default=None, metavar="EPOCHS",
                   help="KL annealing over the first EPOCHS epochs (default: none)")
    p.add_argument("--keep-best", action="store_true",
                   help="score each run at its epoch with the best validation ELBO (early stopping), not its last")
    p.add_argument("--weight-decay", type=float, default=None,
                   help="AdamW's decoupled weight decay (default: none, plain Adam)")
    p.add_argument("--temperature-min", type=float, default=None, metavar="TAU",
                   help="the relaxed runs' temperature floor (default: each run's own, 0.5 or 0.1); with --resume "
                        "it applies from the resumed step on")
    p.add_argument("--jit", action="store_true",
                   help="train with --jit (zoo.objectives.jit: each step captured once and compiled; same estimators, less Python)")
    args = p.parse_args(argv)

    common = dict(dataset="binarized_mnist", data_dir=args.data_dir, epochs=args.epochs, batch_size=100,
                  seed=0, device=args.device, eval_samples=args.eval_samples, eval_limit=args.eval_limit, iwae_k=50,
                  lr_decay=args.lr_decay, kl_warmup=args.kl_warmup, jit=args.jit,
                  keep_best=args.keep_best, weight_decay=args.weight_decay)
    relaxed = dict(guide="relaxed", objective="tracemeanfield", lr=1e-3, temperature=1.0, temperature_min=0.5,
                   anneal_rate=1e-4)
    nvil = dict(guide="amortized", objective="tracegraph", baseline="neural", lr=1e-3)
    rloo = dict(guide="amortized", objective="rloo", particles=2, lr=1e-3)
    runs = [(label, config, REFERENCES[label]) for label, config in [
        ("sbn200-reinforce", RunConfig.make(model="sbn", layers=[200], guide="amortized", objective="elbo", lr=3e-4, **common)),
        ("sbn200-nvil", RunConfig.make(model="sbn", layers=[200], **nvil, **common)),
        ("sbn200-gumbel", RunConfig.make(model="sbn", layers=[200], **relaxed, **common)),
        ("sbn200-st-gumbel", RunConfig.make(model="sbn", layers=[200], straight_through=True, **relaxed, **common)),
        # the same SBN-200 with tanh MLPs 200-256-512-784 (decoder) and 784-512-256-200 (encoder), as
        # the categorical VAE below: does architecture explain the gap to Jang et al.?
        ("sbn200-mlp-nvil", RunConfig.make(model="sbn", layers=[200], hidden=[256, 512], **nvil, **common)),
        ("sbn200-mlp-gumbel", RunConfig.make(model="sbn", layers=[200], hidden=[256, 512], **relaxed, **common)),
        ("cat20x10-nvil", RunConfig.make(model="categorical_vae", **nvil, **common)),
        ("cat20x10-gumbel", RunConfig.make(model="categorical_vae", **relaxed, **common)),
        # Jang et al.'s schedule floors tau at 0.5, where the decoder learns soft inputs and the discrete
        # -ELBO lags the relaxed surrogate by 6-12 nats (relaxed_surrogate.py); a floor of 0.1 narrows that
        ("sbn200-mlp-gumbel-tau0.1", RunConfig.make(model="sbn", layers=[200], hidden=[256, 512],
                                               **{**relaxed, "temperature_min": 0.1}, **common)),
        ("cat20x10-gumbel-tau0.1", RunConfig.make(model="categorical_vae", **{**relaxed, "temperature_min": 0.1}, **common)),
        # score function with a leave-one-out baseline over K samples per datum (rloo): no baseline to fit
        ("sbn200-rloo", RunConfig.make(model="sbn", layers=[200], **rloo, **common)),
        ("sbn200-mlp-rloo", RunConfig.make(model="sbn", layers=[200], hidden=[256, 512], **rloo, **common)),
        ("sbn200-mlp-rloo-k4", RunConfig.make(model="sbn", layers=[200], hidden=[256, 512], **{**rloo, "particles": 4},
                                         **common)),
        ("cat20x10-rloo", RunConfig.make(model="categorical_vae", **rloo, **common)),
        # antithetic pairs for the bits (zoo.objectives.arm): two model evaluations a step, no baseline to fit
        ("sbn200-arm", RunConfig.make(model="sbn", layers=[200], guide="amortized", objective="arm", lr=1e-3, **common)),
        ("sbn200-disarm", RunConfig.make(model="sbn", layers=[200], guide="amortized", objective="disarm", lr=1e-3,
                                         **common)),
        # the IWAE bound at the same four model evaluations a step: two DisARM pairs (the K = 2 bound, each sample's
        # pair with the other held) against VIMCO with K = 4, as Dong et al. compare them
        ("sbn200-iwae-disarm", RunConfig.make(model="sbn", layers=[200], guide="amortized", objective="iwae",
                                              estimator="disarm", particles=2, lr=1e-3, **common)),
        ("sbn200-vimco", RunConfig.make(model="sbn", layers=[200], guide="amortized", objective="vimco", particles=4,
                                        lr=1e-3, **common)),
        # a control variate from the relaxed sample (zoo.objectives.relax): four model evaluations a step and a
        # second-order pass for the variance objective
        ("sbn200-rebar", RunConfig.make(model="sbn", layers=[200], guide="amortized", objective="rebar", lr=1e-3,
                                        **common)),
        ("sbn200-relax", RunConfig.make(model="sbn", layers=[200], guide="amortized", objective="relax", lr=1e-3,
                                        **common)),
        # the thermodynamic objective (zoo.objectives.thermodynamic) at the paper's S = 10, P = 5, beta_1 = 10^-1.7
        ("sbn200-tvo", RunConfig.make(model="sbn", layers=[200], guide="amortized", objective="tvo", particles=10,
                                      lr=1e-3, **common)),
        ("cat20x10-tvo", RunConfig.make(model="categorical_vae", guide="amortized", objective="tvo", particles=10,
                                        lr=1e-3, **common)),
        # swapped Dirichlet actions for the categoricals (zoo.objectives.arsm): 46 evaluations a step for C = 10
        ("cat20x10-arsm", RunConfig.make(model="categorical_vae", guide="amortized", objective="arsm", lr=1e-3,
                                         **common)),
    ]]
    if args.temperature_min is not None:
        runs = [(label, dataclasses.replace(config, guide_options={**config.guide_options,
                                                                 "temperature_min": args.temperature_min})
                 if config.guide == "relaxed" else config, reference) for label, config, reference in runs]
    if args.runs:
        unknown = set(args.runs.split(",")) - {label for label, _, _ in runs}
        if unknown:
            p.error(f"unknown run(s) {', '.join(sorted(unknown))}; choose from {', '.join(l for l, _, _ in runs)}")
        runs = [r for r in runs if r[0] in args.runs.split(",")]
    run_grid(args.name, "Discrete latents on static binarized MNIST", runs, Path(args.out),
             __doc__.split("Protocol:")[1].split("\n\n")[0].strip().replace("\n", " "),
             evaluate_only=args.evaluate_only, resume=args.resume, reference_label="reference (Jang et al.: test −ELBO; NVIL: test NLL)")


if __name__ == "__main__":
    run_script(main)
