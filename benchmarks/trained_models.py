"""The zoo's trained models: train each by its recipe, export its weights, score it, and write its model card.

A trained model is a folder under ``benchmarks/checkpoints/`` named for it (:mod:`zoo.core.catalogue` says what it
holds). This script makes one, in steps that each resume where the last stopped (across short GPU leases too):

``train NAME``
    trains the run of :data:`RECIPES` into ``--runs-dir/NAME`` through ``pyro-zoo train`` (each stage resumes the
    run from its checkpoint with the next learning rate; a stage the folder already holds is not trained again);
``export NAME``
    copies its config and its weights (the model's and guide's tensors and the history, no optimizer state; a
    ``--keep-best`` run as its best epoch) into ``benchmarks/checkpoints/NAME/``;
``score NAME``
    the card's figures, through the commands a user types: ``pyro-zoo eval NAME --estimator ais --eval-limit 1000``
    (AIS on the fixed 1,000-image subset of the test split) and ``--estimator bdmc`` (BDMC's gap on data simulated
    from the model), in the working copy ``--runs-dir/NAME-score``; their ``ais.json``/``bdmc.json`` (and ``.md``) are
    copied beside the weights, and ``benchmarks/results/trained_models.json`` collects every model's figures with
    the command, commit and hardware;
``smc NAME``
    a second estimator where AIS is flagged: ``pyro-zoo eval NAME --estimator smc`` (sequential Monte Carlo with
    adaptive tempering and resampling, two whole runs from the guide and the prior, each with its SE from independent
    copies, pooled and judged) on the images AIS scored, in the same working copy; its ``smc.json`` (and ``.md``) is
    copied beside the weights and the card shows it beside AIS's. It is not a verdict: no BDMC gap bounds SMC's
    error;
``card NAME|all``
    renders each ``README.md`` (the card a person reads) from ``card.json`` and the result files;
    ``--check`` fails where a card is not what its files give;
``pending``
    names the recipes not yet committed (what ``benchmarks/gpu_checklist.sh``'s ``trained`` stage trains on across
    leases).

    python benchmarks/trained_models.py train vae-mnist-iwae --data-dir ../shared/data
    python benchmarks/trained_models.py export vae-mnist-iwae
    python benchmarks/trained_models.py score vae-mnist-iwae --data-dir ../shared/data
    python benchmarks/trained_models.py card all
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import fail, provenance, run_script, write_result_and_page, zoo_cli, RESULTS  # noqa: E402

CHECKPOINTS = Path(__file__).resolve().parent / "checkpoints"

#: NAME -> (model, training stages (epochs reached, lr, lr decay per epoch), the flags of every stage). The two
#: headline models were trained by benchmarks/ais_mnist.py's recipes, which these repeat.
RECIPES = {
    "vae-mnist-elbo": ("vae", [(150, "1e-3", "1.0"), (500, "1e-3", "0.99"), (700, "1e-4", "0.995")],
                       ["--kl-warmup", "100"]),
    "vae-mnist-iwae": ("vae", [(150, "1e-3", "1.0"), (500, "1e-3", "0.99")],
                       ["--objective", "iwae", "--particles", "5"]),
    # Burda et al.'s own schedule: 3^i epochs at the step 1e-3 10^(-i/7), i = 0..7 (3,280 in all), minibatches of 20,
    # Adam's epsilon 1e-4; one stochastic layer, k = 50. Half an hour on an H200: continued across GPU leases
    "vae-mnist-iwae50": ("vae", [(1, "1e-3", "1.0"), (4, "7.197e-4", "1.0"), (13, "5.179e-4", "1.0"),
                                 (40, "3.728e-4", "1.0"), (121, "2.683e-4", "1.0"), (364, "1.931e-4", "1.0"),
                                 (1093, "1.389e-4", "1.0"), (3280, "1e-4", "1.0")],
                         ["--objective", "iwae", "--particles", "50", "--batch-size", "20", "--adam-eps", "1e-4"]),
    # Tomczak & Welling's budget: at most 2,000 epochs, stopped 50 epochs after the best validation ELBO
    "vae-vampprior-mnist-elbo": ("vae", [(2000, "1e-3", "1.0")],
                                 ["--prior", "vampprior", "--prior-components", "500", "--activation", "gated",
                                  "--kl-warmup", "100", "--keep-best", "--patience", "50"]),
    "hvae-mnist-elbo": ("hvae", [(150, "1e-3", "1.0")],
                        ["--activation", "gated", "--structured", "--kl-warmup", "15", "--keep-best"]),
    "hvae-vampprior-mnist-elbo": ("hvae", [(2000, "1e-3", "1.0")],
                                  ["--activation", "gated", "--prior", "vampprior", "--prior-components", "500",
                                   "--structured", "--kl-warmup", "15", "--keep-best", "--patience", "50"]),
    "hvae-ladder-mnist-elbo": ("hvae", [(150, "1e-3", "1.0")],
                               ["--guide", "ladder", "--activation", "gated", "--kl-warmup", "15", "--keep-best"]),
    "vae-vmf-mnist-elbo": ("vae", [(100, "1e-3", "1.0")], ["--latent", "vmf", "--latent-dim", "20"]),
    "vae-wrapped-normal-mnist-elbo": ("vae", [(100, "1e-3", "1.0")],
                                      ["--latent", "wrapped-normal", "--latent-dim", "20"]),
    "sbn-mnist-rloo": ("sbn", [(300, "1e-3", "1.0")], ["--objective", "rloo", "--particles", "4",
                                                       "--weight-decay", "1e-4", "--keep-best"]),
    "categorical-vae-mnist-gumbel": ("categorical_vae", [(500, "1e-3", "1.0")],
                                     ["--guide", "relaxed", "--objective", "tracemeanfield", "--keep-best"]),
    "draw-mnist-elbo": ("draw", [(25, "1e-3", "1.0")], ["--guide", "recurrent", "--objective", "tracemeanfield",
                                                        "--eval-samples", "10", "--eval-limit", "1000"]),
}
#: NAME -> (stages, flag overrides) of ``--schedule cpu``: the same recipe cut to what a 2-core CPU trains in
#: about ten minutes, for the stops that have no GPU; its card says so (epochs, schedule). ``--schedule full``
#: (the default) resumes such a run to the full recipe where the run folder is kept.
CPU_SCHEDULE = {
    "vae-mnist-iwae": ([(80, "1e-3", "1.0")], {}),
    "vae-vmf-mnist-elbo": ([(60, "1e-3", "1.0")], {}),
    "vae-wrapped-normal-mnist-elbo": ([(60, "1e-3", "1.0")], {}),
    "categorical-vae-mnist-gumbel": ([(40, "1e-3", "1.0")], {}),
    "sbn-mnist-rloo": ([(40, "1e-3", "1.0")], {}),
    "vae-vampprior-mnist-elbo": ([(25, "1e-3", "1.0")], {"--kl-warmup": "10", "--patience": "10"}),
    "hvae-mnist-elbo": ([(25, "1e-3", "1.0")], {"--kl-warmup": "10"}),
    "hvae-ladder-mnist-elbo": ([(25, "1e-3", "1.0")], {"--kl-warmup": "10"}),
}
# DRAW has no CPU schedule: 3 epochs on one thread of a 2-core AMD EPYC (68 minutes) left its posterior collapsed
# (0 of 6,400 latent units active, -ELBO 200.2 on 1,000 test images, K = 10), a model not worth its 16 MB; it is
# trained by its recipe on a GPU (gpu_checklist.sh's trained stage), evaluated with K = 10 on 1,000 test images
# (K = 100 on all 10,000 is hours for DRAW's 64 steps)
#: NAME -> (title, architecture, the paper's figure with its reference, that figure as an NLL in nats or None) of
#: the model card :func:`export` writes; the rest of the card (command, training, epochs, data, hardware) is read
#: from the run itself.
CARDS = {
    "vae-mnist-iwae50": (
        "VAE, 50 Gaussian latents, tanh MLPs 784-200-200-50, trained with IWAE k = 50 by Burda et al.'s schedule "
        "(3,280 epochs)",
        "z ~ N(0, I_50); x | z ~ Bernoulli(f(z)), decoder 50-200-200-784 with tanh; amortized mean-field Gaussian "
        "guide, encoder 784-200-200-(50 means, 50 log-scales) with tanh",
        "NLL 87.10, Burda et al. 2016, appendix D (static binarization, one stochastic layer, IWAE k = 50, "
        "3,280 epochs)", 87.10),
    "vae-mnist-iwae": (
        "VAE, 50 Gaussian latents, tanh MLPs 784-200-200-50, trained with IWAE k = 5 (Burda et al. 2016)",
        "z ~ N(0, I_50); x | z ~ Bernoulli(f(z)), decoder 50-200-200-784 with tanh; amortized mean-field Gaussian "
        "guide, encoder 784-200-200-(50 means, 50 log-scales) with tanh",
        "NLL 87.10, Burda et al. 2016, appendix D (static binarization, one stochastic layer, IWAE k = 50, "
        "3,280 epochs; this model is trained with k = 5)", 87.10),
    "vae-vampprior-mnist-elbo": (
        "VAE with a VampPrior (500 pseudo-inputs) and gated MLPs, trained with the ELBO (Tomczak & Welling 2018)",
        "z ~ VampPrior, the mixture of q(z | u_k) over 500 learned pseudo-inputs u_k, 50 units; x | z ~ "
        "Bernoulli(f(z)), gated MLP decoder 50-200-200-784; amortized mean-field Gaussian guide, gated encoder "
        "784-200-200", "NLL 85.57, Tomczak & Welling 2018 (VAE + VampPrior)", 85.57),
    "hvae-mnist-elbo": (
        "Two-layer hierarchical VAE (z2: 50, z1: 100) with gated MLPs and a standard prior, trained with the ELBO",
        "z2 ~ N(0, I_50); z1 | z2 ~ N(mu(z2), sigma(z2)), 100 units; x | z1, z2 ~ Bernoulli(f(z1, z2)), gated MLPs "
        "of 200 units; structured guide q(z1 | x) q(z2 | z1, x) with a gated 784-200-200 trunk",
        "– (Tomczak & Welling 2018 report HVAE with a VampPrior, which is hvae-vampprior-mnist-elbo)", None),
    "hvae-ladder-mnist-elbo": (
        "Two-layer hierarchical VAE (z2: 50, z1: 100) with gated MLPs, trained with the ELBO and the ladder guide "
        "(Sønderby et al. 2016)",
        "z2 ~ N(0, I_50); z1 | z2 ~ N(mu(z2), sigma(z2)), 100 units; x | z1, z2 ~ Bernoulli(f(z1, z2)), gated MLPs of "
        "200 units; ladder guide: a bottom-up deterministic pass, then top-down precision-weighted merges with the "
        "generative path", "NLL 81.74, Sønderby et al. 2016 (ladder VAE, 5 layers)", 81.74),
    "vae-vmf-mnist-elbo": (
        "VAE with a von Mises-Fisher latent on the sphere S^19, tanh MLPs, trained with the ELBO (Davidson et al. "
        "2018)",
        "z ~ uniform on S^19 (unit vectors in R^20); x | z ~ Bernoulli(f(z)), decoder 20-200-200-784; guide "
        "q(z | x) = vMF(mu(x), kappa(x)), encoder 784-200-200", "– (Davidson et al. 2018 report dynamically "
        "binarized MNIST)", None),
    "vae-wrapped-normal-mnist-elbo": (
        "VAE with a wrapped-normal latent in hyperbolic space H^20 (the Lorentz model), tanh MLPs, trained with the "
        "ELBO (Nagano et al. 2019)",
        "z ~ wrapped normal at the origin of H^20 (points of R^21 on the hyperboloid); x | z ~ Bernoulli(f(z)), "
        "decoder 21-200-200-784; guide q(z | x) a wrapped normal at mu(x), encoder 784-200-200",
        "– (Nagano et al. 2019 report dynamically binarized MNIST)", None),
    "sbn-mnist-rloo": (
        "Sigmoid belief net, 200 binary latents, trained with the RLOO estimator, k = 4 (Kool et al. 2019)",
        "z ~ Bernoulli(sigmoid(b)), 200 units; x | z ~ Bernoulli(sigmoid(W z + c)), linear 200-784; amortized guide "
        "q(z | x), independent Bernoullis from an MLP encoder",
        "NLL 113.1, Mnih & Gregor 2014 (NVIL, SBN 200)", 113.1),
    "categorical-vae-mnist-gumbel": (
        "Categorical VAE, 20 ten-way latents, trained with the Gumbel-softmax relaxation (Jang et al. 2017)",
        "z: 20 independent one-hot variables of 10 classes, uniform prior; x | z ~ Bernoulli(f(z)), decoder MLP "
        "200-256-512-784; relaxed (concrete) guide, an MLP encoder to 20 x 10 logits",
        "−ELBO 101.5, Jang et al. 2017 (categorical VAE, Gumbel-softmax): a bound, not an NLL", None),
    "draw-mnist-elbo": (
        "DRAW, a recurrent VAE of 64 steps with 100 Gaussian latents each, trained with the ELBO (Gregor et al. 2015)",
        "64 steps: z_t ~ N(0, I_100); an LSTM decoder adds its write, through 5 x 5 Gaussian attention, to a canvas "
        "c_t; x | c_T ~ Bernoulli(sigmoid(c_T)); recurrent guide, an LSTM encoder reading x and the error image",
        "−ELBO 80.97, Gregor et al. 2015 (DRAW with attention): a bound, not an NLL", None),
}
#: what a weights-only checkpoint keeps of the one training wrote
KEPT = ("config", "model", "guide", "history", "epoch")


def recipe(name: str, schedule: str):
    """(model, stages, flags) of ``name`` under ``schedule`` ("full": :data:`RECIPES`; "cpu": :data:`CPU_SCHEDULE`)."""
    if name not in RECIPES:
        fail(f"no recipe for {name!r}; known: {', '.join(RECIPES)}")
    model, stages, flags = RECIPES[name]
    if schedule == "full":
        return model, stages, flags
    if name not in CPU_SCHEDULE:
        fail(f"{name!r} has no CPU schedule (it is trained with --schedule full); those with one: "
             f"{', '.join(CPU_SCHEDULE)}")
    stages, overrides = CPU_SCHEDULE[name]
    flags = list(flags)
    for flag, value in overrides.items():           # a recipe's flag given anew, or one it leaves at its default
        if flag in flags:
            flags[flags.index(flag) + 1] = value
        else:
            flags += [flag, value]
    return model, stages, flags


def train(name: str, args) -> Path:
    model, stages, flags = recipe(name, args.schedule)
    run = Path(args.runs_dir) / name
    for epochs, lr, decay in stages:
        results = run / "results.json"
        done = json.loads(results.read_text()).get("epochs_trained") if results.is_file() else None
        if done is not None and done >= epochs:
            continue
        # the run's evaluation: K = 100 on the test split unless the recipe says less (DRAW's K = 100 on all 10,000
        # images is hours of CPU); a resumed run keeps its own
        where = ["--resume", run] if (run / "checkpoint.pt").is_file() else [model, "--out", run, "--eval-samples",
                                                                             "100", *flags]
        run.mkdir(parents=True, exist_ok=True)      # who trains it, written first: a stop in its evaluation keeps it
        (run / "trained_by.json").write_text(json.dumps({"schedule": args.schedule, "hardware": _hardware()},
                                                        indent=2))
        t0 = time.perf_counter()
        zoo_cli(["train", *where, "--dataset", "binarized_mnist", "--epochs", epochs, "--lr", lr, "--lr-decay", decay,
                 "--data-dir", args.data_dir, "--no-progress"], check=True)
        print(f"{name}: trained to epoch {epochs} in {time.perf_counter() - t0:.0f} s", flush=True)
    return run


def _hardware() -> str:
    """Where this process trains: the GPU's name, or the CPU's with its cores and torch's threads."""
    import torch
    p = provenance()
    threads = torch.get_num_threads()
    return (f"{p['gpu']} GPU" if p["gpu"] else
            f"{p['logical_cores']}-core {p['cpu']}, {threads} torch thread{'s' * (threads > 1)}, CPU only")


def export(name: str, args) -> Path:
    import torch
    from zoo.training.checkpoint import load_checkpoint
    source, target = Path(args.runs_dir) / name, CHECKPOINTS / name
    state = load_checkpoint(source / "checkpoint.pt")
    config = json.loads((source / "config.json").read_text())
    kept = {k: state[k] for k in KEPT if k in state}
    if config.get("keep_best"):                 # exported as the run of its best epoch, keep_best off
        best = load_checkpoint(source / "best.pt")
        epoch = int(best["epoch"])
        config = {**config, "keep_best": False, "patience": None}
        kept.update(model=best["model"], guide=best["guide"], epoch=epoch, history=list(state["history"])[:epoch])
    # the data folder as the recipe's command names it, not this machine's path (--data-dir overrides it anyway)
    config = {**config, "data_dir": "../shared/data"} if config.get("data_dir") else config
    kept["config"] = config
    target.mkdir(parents=True, exist_ok=True)
    torch.save(kept, target / "checkpoint.pt")
    (target / "config.json").write_text(json.dumps(config, indent=2))
    if name in CARDS and (args.card or not (target / "card.json").is_file()):
        (target / "card.json").write_text(json.dumps(model_card(name, source, kept, args), indent=2) + "\n")
    print(f"{name}: exported epoch {kept['epoch']} to {target} "
          f"({(target / 'checkpoint.pt').stat().st_size / 2 ** 20:.1f} MB)", flush=True)
    return target


def model_card(name: str, source: Path, kept: dict, args) -> dict:
    """card.json of ``name``: :data:`CARDS`' words, and what the run folder ``source`` says of how it was trained
    (the schedule it was trained on, recorded by :func:`train`; its epochs; the hardware of its results)."""
    title, architecture, paper, paper_nll = CARDS[name]
    trained = json.loads((source / "trained_by.json").read_text()) if (source / "trained_by.json").is_file() else {}
    schedule = trained.get("schedule", "full")
    _, stages, flags = recipe(name, schedule)
    results = json.loads((source / "results.json").read_text()) if (source / "results.json").is_file() else {}
    config = kept["config"]
    parts, reached = [], 0
    for epochs, lr, decay in stages:
        part = f"to epoch {epochs} at lr {lr}" if reached else f"{epochs} epochs at lr {lr}"
        parts.append(part + ("" if float(decay) == 1.0 else f" decayed by {decay} per epoch"))
        reached = epochs
    training = f"Adam, batch {config['batch_size']}, " + "; then ".join(parts)
    if config.get("kl_warmup"):
        training += f"; KL warm-up over the first {config['kl_warmup']} epochs"
    if config.get("weight_decay"):
        training += f"; weight decay {config['weight_decay']:g}"
    objective = config.get("objective")
    if objective and objective not in ("elbo",):
        particles = config.get("objective_options", {}).get("particles")
        training += f"; objective {objective}" + (f" with {particles} particles" if particles else "")
    if "--keep-best" in flags:
        training += f"; --keep-best: the weights of the epoch with the best validation ELBO ({kept['epoch']})"
    if schedule == "cpu":
        training += (f"; the recipe's CPU schedule (CPU_SCHEDULE), cut from its full {RECIPES[name][1][-1][0]} "
                     f"epochs to what a 2-core CPU trains in minutes: short of the paper's training")
    hardware = trained.get("hardware") or "unrecorded"
    # a run that pyro-zoo before its resume fix timed in its last part only: its epochs' steps bound it below
    seconds = max(results.get("train_seconds") or 0.0, sum(row.get("seconds", 0.0) for row in results["history"]))
    return {"name": name, "title": title, "architecture": architecture,
            "command": f"python benchmarks/trained_models.py train {name}"
                       + (" --schedule cpu" if schedule == "cpu" else "") + " --data-dir ../shared/data",
            "training": training, "epochs": int(kept["epoch"]),
            # the last epoch of the schedule this run finished (stopped early or not): what pending() compares with
            "recipe_epochs": stages[-1][0] if results.get("stopped_early") or
            (results.get("epochs_trained") or 0) >= stages[-1][0] else int(results.get("epochs_trained") or 0),
            "data": "static binarized MNIST (Larochelle & Murray): trained on the 50,000 training images"
                    + (", the epoch chosen on the 10,000 validation images" if "--keep-best" in flags else
                       ", the 10,000 validation images held out")
                    + "; figures on the fixed random subset of 1,000 of the 10,000 test images (seed 0, pyro-zoo's "
                      "--eval-limit 1000)",
            "hardware": hardware + (f", {seconds:.0f} s of training" if seconds and schedule == "cpu" else ""),
            "paper": paper, "paper_nll": paper_nll}


def _done(path: Path, **settings) -> bool:
    """Does the result file ``path`` of an earlier ``score`` (another lease's) hold these settings already? Each is
    read at the file's top level or under its ``settings`` (where ``bdmc.json`` keeps its sampler's)."""
    if not path.is_file():
        return False
    result = json.loads(path.read_text())
    kept = result.get("settings") if isinstance(result.get("settings"), dict) else {}
    return all(result.get(k, kept.get(k)) == v for k, v in settings.items())


def score(name: str, args) -> dict:
    from zoo.core.catalogue import card_figures
    work = Path(args.runs_dir) / f"{name}-score"
    data = ["--data-dir", args.data_dir, "--no-progress", "--out", work]
    timings = {}
    # guide moves on or off is another sampler: a file is done only where it says the same (absent: off)
    moves = (["--ais-guide-moves"] if args.guide_moves else []) + (
        ["--ais-batch-size", args.ais_batch_size] if args.ais_batch_size else [])
    ais_done = _done(work / "ais.json", num_data=args.limit, num_chains=args.chains, leapfrog_steps=args.leapfrog,
                     num_temperatures=max(int(t) for t in args.temperatures.split(",")),
                     guide_moves=True if args.guide_moves else None)
    if not ais_done:
        t0 = time.perf_counter()
        # --force: the working copy's files are this command's own, replaced by the settings it names now
        zoo_cli(["eval", name, "--estimator", "ais", "--eval-limit", args.limit, "--temperatures", args.temperatures,
                 "--chains", args.chains, "--leapfrog", args.leapfrog, "--replicas", args.replicas, *moves, "--force",
                 *data], check=True)
        timings["ais_seconds"] = time.perf_counter() - t0
    # BDMC again where its sampler differs from this command's: its gap bounds AIS only as strong as AIS's
    if args.bdmc_data and not _done(work / "bdmc.json", num_data=args.bdmc_data, num_chains=args.chains,
                                    leapfrog_steps=args.leapfrog,
                                    num_temperatures=[int(t) for t in args.bdmc_temperatures.split(",")]):
        t0 = time.perf_counter()
        zoo_cli(["eval", name, "--estimator", "bdmc", "--bdmc-data", args.bdmc_data, "--temperatures",
                 args.bdmc_temperatures, "--chains", args.chains, "--leapfrog", args.leapfrog, "--force", *data],
                check=True)
        timings["bdmc_seconds"] = time.perf_counter() - t0
    _refuse_a_worse_card(name, work, args.replace_trusted)
    for f in ("ais.json", "ais.md", "bdmc.json", "bdmc.md"):
        if (work / f).is_file():
            shutil.copyfile(work / f, CHECKPOINTS / name / f)
    if (work / "ais_per_datum.npz").is_file():      # per-datum figures as JSON: no binary array is committed
        per_datum_json(work / "ais_per_datum.npz", CHECKPOINTS / name / "ais_per_datum.json")
    figures = {**card_figures(CHECKPOINTS / name), **timings}
    path = RESULTS / "trained_models.json"
    rows = json.loads(path.read_text()).get("models", {}) if path.is_file() else {}
    rows[name] = {**rows.get(name, {}), **figures, "provenance": provenance()}
    write_result_and_page("trained_models", {"models": dict(sorted(rows.items()))}, markdown)
    card(name, args)
    return figures


def _refuse_a_worse_card(name: str, work: Path, replace_trusted: bool) -> None:
    """Fail, leaving the committed card as it is, where its NLL is the figure to use (✓) and the new scoring's is not:
    a scoring with weaker settings, or on more images where the sampler falls short, would otherwise replace a
    trusted figure by an upper bound. The new files stay in the working copy ``work`` to read;
    ``--replace-trusted`` replaces the card anyway."""
    import tempfile
    from zoo.core.catalogue import card_figures, untrusted
    folder = CHECKPOINTS / name
    if replace_trusted or untrusted(card_figures(folder)) is not None or not (work / "ais.json").is_file():
        return
    with tempfile.TemporaryDirectory() as tmp:
        shutil.copyfile(folder / "card.json", Path(tmp) / "card.json")
        for f in ("ais.json", "bdmc.json"):
            source = work / f if (work / f).is_file() else folder / f
            if source.is_file():
                shutil.copyfile(source, Path(tmp) / f)
        why = untrusted(card_figures(Path(tmp)))
    if why is not None:
        fail(f"{name}'s card holds a figure to use and this scoring's is not one ({why}); its files are in {work}, "
             f"and the card is as it was (pass --replace-trusted to replace it anyway)")


def smc(name: str, args) -> dict:
    """The ``smc`` step (module docstring): SMC on the images the card's AIS scored (their number read from its
    ``ais.json``, else ``--limit``), through the command a user types, its result files copied beside the weights and
    its figures added to the model's row of ``trained_models.json``."""
    from zoo.core.catalogue import card_figures
    folder = CHECKPOINTS / name
    if not (folder / "card.json").is_file():
        fail(f"no trained model {name!r} in {CHECKPOINTS}; train, export and score it first")
    figures = card_figures(folder)
    # the images AIS scored, moved as AIS moved them (its leapfrog steps), so the two are held side by side
    limit = figures["num_data"] or args.limit
    leapfrog = figures["ais_sampler"].get("leapfrog_steps") or args.leapfrog
    work = Path(args.runs_dir) / f"{name}-score"
    t0 = time.perf_counter()
    # --force: the working copy's smc files are this command's own (AIS's and BDMC's beside them are left alone)
    zoo_cli(["eval", name, "--estimator", "smc", "--eval-limit", limit, "--smc-particles", args.smc_particles,
             "--smc-replicas", args.smc_replicas, "--replicas", args.smc_runs, "--smc-target-ess",
             args.smc_target_ess, "--leapfrog",
             leapfrog, "--ais-path", args.smc_path, "--force", "--data-dir", args.data_dir, "--no-progress",
             "--out", work], check=True)
    seconds = time.perf_counter() - t0
    for f in ("smc.json", "smc.md"):
        shutil.copyfile(work / f, folder / f)
    path = RESULTS / "trained_models.json"
    rows = json.loads(path.read_text()).get("models", {}) if path.is_file() else {}
    rows[name] = {**rows.get(name, {}), "smc": card_figures(folder)["smc"], "smc_seconds": seconds,
                  "smc_provenance": provenance()}
    write_result_and_page("trained_models", {"models": dict(sorted(rows.items()))}, markdown)
    card(name, args)
    return rows[name]


def markdown(result) -> str:
    """``trained_models.md``: each committed model's figures as its card gives them (its result files), one row each,
    with the verdict of :func:`zoo.core.catalogue.untrusted` and the command that scored it."""
    from zoo.core.catalogue import card_figures, read_card, untrusted
    lines = ["# Trained models: their NLL by AIS and BDMC's gap", "",
             "Each row is a model of `benchmarks/checkpoints/` (`pyro-zoo list`), scored by `trained_models.py score` "
             "through `pyro-zoo eval NAME --estimator ais` (a fixed random subset of the test split) and `--estimator "
             "bdmc` (data simulated from the model). AIS's NLL is an upper bound on the true one in expectation; it "
             "is the figure to use (✓) where BDMC's gap, measured with no more temperatures, chains or leapfrog steps "
             "than AIS and from the same start, is within ±0.5 nats and its "
             "replicas (from the guide and from the prior) agree on all but 10% of images. ± is the Monte Carlo "
             "standard error, given only then; data se: the spread over the images, the error of comparing a "
             "subset with a paper's whole test set.", "",
             "SMC: sequential Monte Carlo on the same images (`trained_models.py smc`, run where AIS is flagged), "
             "another upper bound in expectation, which no BDMC gap bounds; its card says more.", "",
             "| model | NLL (AIS) | images | T | chains | data se | BDMC gap (T) | flagged | verdict | SMC | paper | "
             "command |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, scored in result["models"].items():
        if not (CHECKPOINTS / name / "card.json").is_file():
            continue
        card, row = read_card(CHECKPOINTS / name), card_figures(CHECKPOINTS / name)
        why = untrusted(row)
        nll = "–" if row.get("nll") is None else f"{row['nll']:.2f}" + (
            f" ± {row['nll_se']:.2f}" if why is None and row.get("nll_se") is not None else "")
        def num(key, fmt, row=row):
            return "–" if row.get(key) is None else format(row[key], fmt)
        gap = "–" if row.get("bdmc_gap") is None else f"{row['bdmc_gap']:.2f} ({num('bdmc_temperatures', '.0f')})"
        paper = "–" if card.get("paper_nll") is None else f"{card['paper_nll']:.2f}"
        command = scored.get("provenance", {}).get("command", "")
        smc = row.get("smc") or {}
        smc = "–" if smc.get("log_likelihood") is None else f"{-smc['log_likelihood']:.2f}" + (
            f" ± {smc['se']:.2f}" if smc.get("se") is not None else "") + (
            f" ({smc['runs']} runs, {smc['frac_flagged']:.0%} flagged)"
            if (smc.get("runs") or 1) > 1 and smc.get("frac_flagged") is not None else "")
        lines.append(f"| `{name}` | {nll} | {num('num_data', 'd')} | {num('num_temperatures', '.0f')} | "
                     f"{num('num_chains', '.0f')} | {num('nll_data_se', '.2f')} | {gap} | {num('frac_flagged', '.0%')} "
                     f"| {'✓' if why is None else '⚠ ' + why} | {smc} | {paper} | `{command}` |")
    return "\n".join(lines) + "\n"


def per_datum_json(npz: Path, target: Path) -> None:
    """AIS's per-datum log p(x) and its SE (the figures a card and a fixed-model grid read) as JSON, with the first
    replica's (the one from the guide) where replicas ran: a rescoring from the guide is compared with that replica,
    whose SE is its own, not with the pooled figure, whose SE is wide where the replicas disagree."""
    import numpy as np
    keys = ("log_likelihood", "log_likelihood_se", "first_replica_log_likelihood", "first_replica_log_likelihood_se")
    with np.load(npz, allow_pickle=False) as arrays:
        figures = {k: [float(v) for v in arrays[k]] for k in keys if k in arrays.files}
    target.write_text(json.dumps(figures) + "\n")


def card(name: str, args) -> None:
    from zoo.core.catalogue import card_markdown, trained_names
    names = trained_names() if name == "all" else [name]
    stale = []
    for n in names:
        text = card_markdown(CHECKPOINTS / n)
        path = CHECKPOINTS / n / "README.md"
        if args.check:
            if not path.is_file() or path.read_text() != text:
                stale.append(n)
        else:
            path.write_text(text)
            print(f"wrote {path}")
    results = RESULTS / "trained_models.json"
    if name == "all" and results.is_file():               # the results page of every card, from the same files
        text, page = markdown(json.loads(results.read_text())), RESULTS / "trained_models.md"
        if args.check:
            if not page.is_file() or page.read_text() != text:
                stale.append(str(page.relative_to(RESULTS.parent.parent)))
        else:
            page.write_text(text)
            print(f"wrote {page}")
    if stale:
        fail(f"model cards not as their files give them: {', '.join(stale)}; run "
             f"'python benchmarks/trained_models.py card all'")


#: the runs the GPU checklist trains first: the published tables' long budgets (issue 83), which take several leases
FIRST = ("vae-mnist-iwae50", "vae-vampprior-mnist-elbo", "hvae-vampprior-mnist-elbo")


def _json_object(path: Path, what: str) -> dict:
    """``path`` read as a JSON object, or one line naming the file and exit 2 (a run folder may come from anyone)."""
    try:
        value = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as e:
        fail(f"{path} cannot be read as {what} ({type(e).__name__}); move it away and run again")
    if not isinstance(value, dict):
        fail(f"{path} is not {what} (a JSON {type(value).__name__}, not an object); move it away and run again")
    return value


def unfinished(name: str, runs_dir: Path) -> bool:
    """Whether ``name``'s full recipe is still to be trained: no committed weights, or weights from a shorter run (the
    CPU schedule, an older recipe) and no run folder here that reached the recipe's last epoch or stopped early."""
    final = RECIPES[name][1][-1][0]
    results = runs_dir / name / "results.json"
    if results.is_file():
        done = _json_object(results, "a run's results.json")
        epochs = done.get("epochs_trained") or 0
        if isinstance(epochs, bool) or not isinstance(epochs, int):
            fail(f"{results} says epochs_trained = {epochs!r}, not a whole number: it is not a run the zoo wrote; "
                 f"move {results.parent} away and run again")
        if done.get("stopped_early") is True or epochs >= final:
            return False
    card = CHECKPOINTS / name / "card.json"
    if not card.is_file():
        return True
    card = _json_object(card, "a model card")
    finished = card.get("recipe_epochs", card.get("epochs"))
    if isinstance(finished, bool) or not isinstance(finished, int):
        return True                              # a card that does not say how far it was trained: train it
    return "--schedule cpu" in str(card.get("command", "")) or finished < final


def pending(name: str, args) -> None:
    """Print the recipes whose full schedule is still to be trained, one line, the long budgets first (what the GPU
    checklist trains on, continuing each from its run folder across leases)."""
    names = [*FIRST, *(n for n in RECIPES if n not in FIRST)]
    print(" ".join(n for n in names if unfinished(n, Path(args.runs_dir))))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("step", choices=("train", "export", "score", "smc", "card", "pending"))
    p.add_argument("name", nargs="?", default="all", help="a trained model's name (RECIPES), or 'all' for card")
    p.add_argument("--data-dir", default="../shared/data")
    p.add_argument("--runs-dir", default="runs/trained")
    p.add_argument("--schedule", choices=("full", "cpu"), default="full",
                   help="train: the recipe's full schedule, or its cut for a 2-core CPU (CPU_SCHEDULE)")
    p.add_argument("--limit", type=int, default=1000, help="score: the fixed test subset's size (default 1000)")
    p.add_argument("--temperatures", default="500", help="score: AIS's numbers of temperatures (default 500)")
    p.add_argument("--chains", type=int, default=16, help="score: chains per datum (default 16)")
    p.add_argument("--leapfrog", type=int, default=10, help="score: HMC leapfrog steps per transition (default 10)")
    p.add_argument("--replicas", type=int, default=4, help="score: AIS replicas per datum, from different starts, "
                   "whose agreement calls each datum reliable (default 4)")
    p.add_argument("--replace-trusted", action="store_true",
                   help="score: replace a card whose NLL is the figure to use even by a scoring whose figure is not")
    p.add_argument("--guide-moves", action="store_true",
                   help="score: AIS with guide moves (pyro-zoo eval --ais-guide-moves: an independent proposal from the "
                        "guide and the prior at every temperature), for a model whose replicas disagree without them "
                        "(a VampPrior's prior-started chains); BDMC runs without them, a weaker sampler whose gap still "
                        "bounds AIS")
    p.add_argument("--ais-batch-size", type=int, default=None,
                   help="score: images per AIS tensor program (pyro-zoo eval --ais-batch-size; default 100): AIS keeps "
                        "each finished batch, so a smaller one lets a score stopped by the end of a lease continue "
                        "where it was")
    p.add_argument("--bdmc-data", type=int, default=100, help="score: BDMC's simulated data (0: no BDMC)")
    p.add_argument("--bdmc-temperatures", default="100,200,400")
    p.add_argument("--smc-particles", type=int, default=256, help="smc: particles per image and replica (default 256)")
    p.add_argument("--smc-replicas", type=int, default=4,
                   help="smc: independent copies per image within one run, from its start (default 4)")
    p.add_argument("--smc-runs", type=int, default=2,
                   help="smc: whole runs per image, from --smc-path's start and then the other's, pooled and judged "
                        "(default 2)")
    p.add_argument("--smc-target-ess", type=float, default=0.97,
                   help="smc: the conditional ESS each temperature keeps (default 0.97: many small steps, where modes "
                        "are the worry)")
    p.add_argument("--smc-path", choices=("guide", "prior"), default="guide",
                   help="smc: where the first run's particles start")
    p.add_argument("--check", action="store_true", help="card: write nothing, fail where a card is stale")
    p.add_argument("--card", action="store_true", help="export: write card.json anew even where one is committed")
    args = p.parse_args()
    {"train": train, "export": export, "score": score, "smc": smc, "card": card, "pending": pending}[args.step](
        args.name, args)


if __name__ == "__main__":
    run_script(main)
