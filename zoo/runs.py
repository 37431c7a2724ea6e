"""Runs: train, evaluate and compare, writing results to a folder. The CLI is a thin shell over this.

A run folder holds::

    config.json          the RunConfig (everything needed to rebuild the run)
    checkpoint.pt        model, guide, optimizer, RNG state, history (atomic, weights_only)
    results.json         evaluation (keys documented in zoo.harness.RESULT_KEYS) + history
    results.md           the same as a Markdown table
    per_datum.npz        per-datum log p(x), its standard error, ELBO, PSIS k-hat
    training_curves.png, samples.png, reconstructions.png, latent_scatter.png (2-D latents)

Everything the user can get wrong is checked in :func:`prepare` before anything
is written, so bad input leaves no half-written folder behind.
"""
from __future__ import annotations

import dataclasses
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import pyro
import torch

from guides.relaxed import check_schedule
from zoo import plots
from zoo.checkpoint import (atomic_write_bytes, atomic_write_text, load_checkpoint, rng_state,
                            save_checkpoint, set_rng_state)
from zoo.data import Dataset, load_dataset
from zoo.errors import ZooError
from zoo.harness import RESULT_KEYS, evaluate
from zoo.registry import (GUIDES, MODELS, OBJECTIVES, build_guide, build_model, build_objective,
                          check_combination)
from zoo.train import fit, fit_local_guide, make_optimizer

__all__ = ["RunConfig", "Prepared", "prepare", "train_run", "evaluate_run", "compare", "resolve_device"]


@dataclass
class RunConfig:
    """Everything that defines a run. Plain JSON types only (it is stored in checkpoints)."""

    model: str = "vae"
    guide: str = "amortized"
    objective: str = "elbo"
    dataset: str = "digits"
    latent_dim: Optional[int] = None
    hidden: Optional[List[int]] = None
    likelihood: Optional[str] = None
    layers: Optional[List[int]] = None
    num_variables: Optional[int] = None
    num_classes: Optional[int] = None
    guide_hidden: Optional[List[int]] = None
    flows: Optional[int] = None
    baseline: Optional[str] = None
    temperature: Optional[float] = None
    temperature_min: Optional[float] = None
    anneal_rate: Optional[float] = None
    straight_through: bool = False
    particles: Optional[int] = None
    alpha: float = 0.0
    insomnia: float = 1.0
    epochs: int = 20
    batch_size: int = 100
    lr: float = 1e-3
    seed: int = 0
    device: str = "auto"
    data_dir: Optional[str] = None
    eval_samples: int = 1000
    iwae_k: int = 50
    eval_split: str = "test"
    eval_limit: Optional[int] = None
    refit_epochs: Optional[int] = None
    checkpoint_every: Optional[int] = None
    clip_grad: Optional[float] = None
    lr_decay: float = 1.0
    kl_warmup: Optional[int] = None
    adam_betas: Optional[List[float]] = None
    adam_eps: Optional[float] = None
    weight_decay: Optional[float] = None
    jit: bool = False
    keep_best: bool = False
    deterministic: bool = False
    distributed: bool = False
    tensorboard: bool = False

    def to_json(self) -> Dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, d: Dict) -> "RunConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA if present else CPU; ``cuda`` without a GPU is an error, never a silent fallback."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ZooError("--device cuda was asked for but no CUDA GPU is available; use --device cpu or auto")
        return torch.device(name)
    if name != "cpu":
        raise ZooError(f"--device must be auto, cpu or cuda, got {name!r}")
    return torch.device("cpu")


def set_determinism(on: bool) -> None:
    """``--deterministic``: torch's deterministic algorithms (and cuBLAS's fixed workspace on CUDA)."""
    if on:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.benchmark = False
    torch.use_deterministic_algorithms(on)


def _check_positive(config: RunConfig) -> None:
    for key in ("epochs", "batch_size", "eval_samples", "iwae_k"):
        if int(getattr(config, key)) < 1:
            raise ZooError(f"--{key.replace('_', '-')} must be a positive integer, got {getattr(config, key)}")
    if not config.lr > 0:
        raise ZooError(f"--lr must be positive, got {config.lr}")
    if config.particles is not None and config.particles < 1:
        raise ZooError(f"--particles must be a positive integer, got {config.particles}")
    if config.checkpoint_every is not None and config.checkpoint_every < 1:
        raise ZooError(f"--checkpoint-every must be a positive number of steps, got {config.checkpoint_every}")
    if config.clip_grad is not None and not config.clip_grad > 0:
        raise ZooError(f"--clip-grad must be a positive gradient norm, got {config.clip_grad}")
    if not 0 < config.lr_decay <= 1:
        raise ZooError(f"--lr-decay must be in (0, 1], got {config.lr_decay}")
    if config.kl_warmup is not None and int(config.kl_warmup) < 1:
        raise ZooError(f"--kl-warmup must be a positive number of epochs, got {config.kl_warmup}")
    if config.adam_betas is not None and not (len(config.adam_betas) == 2
                                              and all(0 <= b < 1 for b in config.adam_betas)):
        raise ZooError(f"--adam-betas takes two numbers in [0, 1), e.g. 0.9 0.999; got {config.adam_betas}")
    if config.adam_eps is not None and not config.adam_eps > 0:
        raise ZooError(f"--adam-eps must be positive, got {config.adam_eps}")
    if config.weight_decay is not None and not config.weight_decay >= 0:
        raise ZooError(f"--weight-decay must be zero or positive (AdamW's decoupled decay, e.g. 0.01), "
                       f"got {config.weight_decay}")
    check_schedule(config.temperature, config.temperature_min, config.anneal_rate)
    if config.eval_limit is not None and config.eval_limit < 1:
        raise ZooError(f"--eval-limit must be a positive integer, got {config.eval_limit}")
    if config.refit_epochs is not None and config.refit_epochs < 1:
        raise ZooError(f"--refit-epochs must be a positive integer, got {config.refit_epochs}")


#: RunConfig fields passed to the model, and to the guide (config field -> guide argument).
MODEL_OPTION_FIELDS = ("latent_dim", "hidden", "likelihood", "layers", "num_variables", "num_classes")
GUIDE_OPTION_FIELDS = {"guide_hidden": "hidden", "flows": "num_flows", "baseline": "baseline",
                       "temperature": "temperature", "temperature_min": "temperature_min",
                       "anneal_rate": "anneal_rate", "straight_through": "straight_through"}


@dataclass
class Prepared:
    """A run's live objects, built and checked from a :class:`RunConfig`."""

    config: RunConfig
    data: Dataset
    model: object
    guide: object
    objective: object
    device: torch.device


def prepare(config: RunConfig, data: Optional[Dataset] = None, device: Optional[torch.device] = None) -> Prepared:
    """Build and check data, model, guide and objective; raises ZooError before any output exists."""
    _check_positive(config)
    set_determinism(config.deterministic)
    for table, kind, name in ((MODELS, "model", config.model), (GUIDES, "guide", config.guide),
                              (OBJECTIVES, "objective", config.objective)):
        if name not in table:
            from zoo.errors import unknown_name
            raise unknown_name(kind, name, table)
    device = device if device is not None else resolve_device(config.device)
    data = data if data is not None else load_dataset(config.dataset, config.data_dir)
    model_options = {k: getattr(config, k) for k in MODEL_OPTION_FIELDS if getattr(config, k) is not None}
    model_options = {k: tuple(v) if isinstance(v, list) else v for k, v in model_options.items()}
    if "likelihood" in MODELS[config.model].options and config.likelihood is None:
        model_options["likelihood"] = "bernoulli" if data.binary else "gaussian"
    pyro.set_rng_seed(config.seed)
    model = build_model(config.model, data.x_dim, **model_options)
    model.validate_data(data.train, what=f"dataset {data.name!r}")
    guide_options = {option: getattr(config, field) for field, option in GUIDE_OPTION_FIELDS.items()
                     if getattr(config, field) is not None and getattr(config, field) is not False}
    guide_options = {k: tuple(v) if isinstance(v, list) else v for k, v in guide_options.items()}
    check_combination(model, config.guide, config.objective, guide_options)
    guide = build_guide(config.guide, model, num_data=data.train.shape[0], **guide_options)
    if config.keep_best and not getattr(guide, "amortized", True):
        raise ZooError(f"--keep-best picks the epoch with the best validation ELBO, which needs an amortized "
                       f"guide; {config.guide!r} is per-datum: drop --keep-best or use amortized")
    objective = build_objective(config.objective, config.particles, config.alpha, config.insomnia, jit=config.jit)
    if config.kl_warmup and not OBJECTIVES[config.objective].warmup:
        raise ZooError(f"--kl-warmup weights the latent terms of a bound; {config.objective!r} has none to weight "
                       f"(it sums or sleeps its latents): drop --kl-warmup, or use elbo, tracegraph or iwae")
    if config.batch_size > data.train.shape[0]:
        raise ZooError(f"--batch-size {config.batch_size} is larger than the {data.train.shape[0]} "
                       f"training data of {data.name!r}; use at most {data.train.shape[0]}")
    return Prepared(config, data, model.to(device), guide.to(device), objective, device)


def _check_out_dir(out: Path, force: bool, resume: bool) -> None:
    if out.exists() and not out.is_dir():
        raise ZooError(f"--out {out} exists and is not a folder; choose another path")
    if out.exists() and (out / "results.json").exists() and not (force or resume):
        raise ZooError(f"{out} already holds results; pass --force to overwrite or choose another --out")
    probe = out if out.exists() else next((p for p in out.parents if p.exists()), Path("."))
    if not probe.is_dir():
        raise ZooError(f"cannot create --out {out}: {probe} is a file; choose another path")
    if not os.access(probe, os.W_OK):
        raise ZooError(f"cannot write to {probe}; choose a writable --out")


def _make_out_dir(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ZooError(f"cannot create --out {out} ({e.strerror}); choose a writable path") from None


def _checkpoint(run: Prepared, path: Path, epoch: int, step: int, epoch_total: float, optimizer, scheduler,
                history) -> None:
    if run.config.keep_best and step == 0 and _is_best_epoch(history):
        # written before the run's checkpoint: a crash in between redoes this epoch and rewrites it
        save_checkpoint(path.parent / BEST, config=run.config.to_json(), model=run.model.state_dict(),
                        guide=run.guide.state_dict(), epoch=epoch, valid_elbo=history[-1]["valid_elbo"])
    save_checkpoint(path, config=run.config.to_json(), model=run.model.state_dict(),
                    guide=run.guide.state_dict(), optimizer=optimizer.state_dict(),
                    scheduler=scheduler.state_dict(), epoch=epoch, step=step, epoch_total=epoch_total,
                    history=history, rng=rng_state())


#: With ``keep_best``, the model and guide of the epoch with the best validation ELBO.
BEST = "best.pt"


def _is_best_epoch(history) -> bool:
    """Did the last epoch reach the best validation ELBO so far (ties go to the later epoch)?"""
    if not history or history[-1].get("valid_elbo") is None:
        return False
    return all(history[-1]["valid_elbo"] >= h["valid_elbo"] for h in history[:-1] if h.get("valid_elbo") is not None)


def _json_ready(obj):
    if isinstance(obj, dict):
        return {k: _json_ready(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_ready(v) for v in obj]
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    return obj


def train_run(config: RunConfig, out: Path, force: bool = False, resume: bool = False,
              progress: bool = True, data: Optional[Dataset] = None) -> Dict:
    """Train a run into folder ``out`` (resuming from its checkpoint if ``resume``), then evaluate it."""
    out = Path(out)
    ckpt_path = out / "checkpoint.pt"
    if resume:
        if not ckpt_path.is_file():
            raise ZooError(f"--resume: no checkpoint in {out}; start the run without --resume")
        state = load_checkpoint(ckpt_path)
        _refuse_mismatch(RunConfig.from_json(state["config"]), config)
    _check_out_dir(out, force, resume)
    from zoo import distributed as ddp
    world = 1
    if config.distributed or (ddp.launched_by_torchrun() and int(os.environ["WORLD_SIZE"]) > 1):
        if config.objective not in ddp.DDP_OBJECTIVES:
            raise ZooError(f"distributed training needs an objective with one differentiable loss; "
                           f"{config.objective!r} is not one: use one of {', '.join(ddp.DDP_OBJECTIVES)}")
        if config.jit:
            raise ZooError("--jit traces the single-process training step; a --distributed step is DDP's: drop --jit")
        rank, world, device = ddp.init(config.device)
        run = prepare(config, data, device=device)
    else:
        run = prepare(config, data)
    optimizer = make_optimizer(run.model, run.guide, config.lr, betas=config.adam_betas, eps=config.adam_eps,
                               weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=config.lr_decay)
    history, start_epoch, start_step, epoch_total = [], 0, 0, 0.0
    if resume:
        try:
            run.model.load_state_dict(state["model"])
            run.guide.load_state_dict(state["guide"])
            fused = [g.get("fused") for g in optimizer.param_groups]
            fresh_lrs = [g["lr"] for g in optimizer.param_groups]      # config.lr times each group's multiplier
            optimizer.load_state_dict(state["optimizer"])
            for group, flag in zip(optimizer.param_groups, fused):
                group["fused"] = flag         # a checkpoint's implementation choice is not its state
                for param in group["params"] if flag else ():
                    if "step" in optimizer.state.get(param, {}):      # fused Adam keeps it on the device
                        optimizer.state[param]["step"] = optimizer.state[param]["step"].to(param.device,
                                                                                           torch.float32)
            if "scheduler" in state:            # checkpoints from before --lr-decay existed have none
                scheduler.load_state_dict(state["scheduler"])
        except (RuntimeError, KeyError, ValueError):
            raise ZooError(f"the checkpoint in {out} does not match this run's model and guide; "
                           f"start a new run with a new --out") from None
        stored = RunConfig.from_json(state["config"])
        if (stored.lr, stored.lr_decay) != (config.lr, config.lr_decay):
            _change_schedule(optimizer, scheduler, config, stored, fresh_lrs)
        history, start_epoch = list(state["history"]), int(state["epoch"])
        start_step, epoch_total = int(state.get("step", 0)), float(state.get("epoch_total", 0.0))
        set_rng_state(state["rng"])
    main = ddp.is_main()
    if main:
        _make_out_dir(out)
        atomic_write_text(out / "config.json", json.dumps(config.to_json(), indent=2))
    x = run.data.train.to(run.device)
    valid = run.data.valid.to(run.device)
    hooks = {}
    if world > 1:
        pyro.set_rng_seed(config.seed * 7919 + 101 * ddp.dist.get_rank() + start_epoch * 1009 + start_step)
        hooks = {"batches": ddp.shard_batches(x.shape[0], config.batch_size, config.seed, run.device),
                 "step_fn": ddp.ddp_step(run.model, run.guide, run.objective, x.shape[0], run.device)}
    logger = None
    if config.tensorboard and main:
        from zoo.monitor import TensorBoardLogger
        logger = TensorBoardLogger(out / "tensorboard", run.model, run.data.image_shape)
    t0 = time.perf_counter()
    try:
        fit(run.model, run.guide, run.objective, x, epochs=config.epochs, batch_size=config.batch_size, log=logger,
            lr=config.lr, seed=config.seed, valid=valid if main else None, progress=progress and main,
            optimizer=optimizer, scheduler=scheduler, start_epoch=start_epoch, start_step=start_step,
            epoch_total=epoch_total, history=history, checkpoint_every=config.checkpoint_every,
            clip_grad=config.clip_grad, kl_warmup=config.kl_warmup, **hooks,
            on_checkpoint=(lambda e, st, tot, opt, sch, h: _checkpoint(run, ckpt_path, e, st, tot, opt, sch, h))
            if main else None)
    finally:
        if logger is not None:
            logger.close()
        if world > 1:
            ddp.finish()
    if not main:
        return {"rank": "worker", "history": history}
    train_seconds = time.perf_counter() - t0
    return _evaluate_and_write(run, out, history, progress, train_seconds=train_seconds)


#: Config fields that may change when a run is resumed or re-evaluated; all others must match.
#: ``lr`` and ``lr_decay`` take effect from the resumed step on (e.g. a lower --lr after a non-finite loss);
#: ``jit`` changes how a step is computed, not what. The relaxed guide's temperature schedule
#: tau_t = max(tau_min, tau_0 exp(-r t)) is a function of the global step t, so a new ``temperature``,
#: ``temperature_min`` or ``anneal_rate`` gives the new schedule's tau from the resumed step on (e.g. a
#: lower floor after the run has plateaued at the old one).
RESUMABLE_CHANGES = ("epochs", "device", "eval_samples", "iwae_k", "eval_split", "eval_limit", "refit_epochs",
                     "data_dir", "checkpoint_every", "distributed", "tensorboard", "lr", "lr_decay", "jit",
                     "temperature", "temperature_min", "anneal_rate")


def _change_schedule(optimizer, scheduler, config: RunConfig, stored: RunConfig, fresh_lrs) -> None:
    """A resumed run with a new --lr / --lr-decay: the restored Adam moments are kept. A new --lr
    restarts each parameter group's step size at the new --lr times that group's multiplier (a
    guide's ``lr_multiplier``), i.e. at ``fresh_lrs``, the step sizes of an optimizer just built
    with the new config; the new --lr-decay decays it from here on. (The step size is not derived
    from the checkpoint's groups: a checkpoint whose run began before schedules existed carries no
    ``initial_lr``, and scaling its decayed rate by new/old would restart far below the new --lr.)"""
    if stored.lr != config.lr:
        for group, lr in zip(optimizer.param_groups, fresh_lrs):
            group["initial_lr"] = group["lr"] = lr
        scheduler.base_lrs = list(fresh_lrs)
    scheduler.gamma = config.lr_decay


def _refuse_mismatch(stored: RunConfig, given: RunConfig) -> None:
    for key in RunConfig.__dataclass_fields__:
        if key not in RESUMABLE_CHANGES and getattr(stored, key) != getattr(given, key):
            raise ZooError(f"the checkpoint was made with {key}={getattr(stored, key)!r}, not "
                           f"{getattr(given, key)!r}; resume with the same {key} or use a new --out")


def _evaluate_and_write(run: Prepared, out: Path, history, progress: bool, train_seconds=None) -> Dict:
    cfg = run.config
    best_epoch = None
    if cfg.keep_best:
        if not (out / BEST).is_file():
            raise ZooError(f"this run was trained with --keep-best but {out / BEST} is missing; restore it, or "
                           f"train the run again")
        best = load_checkpoint(out / BEST)
        run.model.load_state_dict(best["model"])
        run.guide.load_state_dict(best["guide"])
        best_epoch = int(best["epoch"])
    x_eval, labels = _eval_subset(run.data, cfg)
    x_eval = x_eval.to(run.device)
    guide = run.guide
    if not getattr(guide, "amortized", True):
        # A per-datum guide has no posterior for held-out data: fit a fresh one, model fixed.
        guide = build_guide(cfg.guide, run.model, num_data=x_eval.shape[0],
                            **({"baseline": cfg.baseline} if cfg.baseline else {})).to(run.device)
        fit_local_guide(run.model, guide, build_objective("elbo", 1, jit=cfg.jit), x_eval,
                        epochs=cfg.refit_epochs or max(cfg.epochs, 50), batch_size=cfg.batch_size, lr=cfg.lr,
                        seed=cfg.seed, progress=progress)
    pyro.set_rng_seed(cfg.seed + 12345)
    t0 = time.perf_counter()
    result = evaluate(run.model, guide, x_eval, num_samples=cfg.eval_samples, iwae_k=cfg.iwae_k,
                      keep_reconstructions=32 if run.data.image_shape else 0)
    eval_seconds = time.perf_counter() - t0
    per_datum = result.pop("per_datum")
    recon = result.pop("reconstructions", None)
    summary = {"config": cfg.to_json(), "device": str(run.device), "split": cfg.eval_split,
               "epochs_trained": len(history), "best_epoch": best_epoch, "train_seconds": train_seconds,
               "eval_seconds": eval_seconds, **result, "history": history}
    atomic_write_text(out / "results.json", json.dumps(_json_ready(summary), indent=2))
    atomic_write_text(out / "results.md", results_markdown([summary]))
    import io
    buf = io.BytesIO()
    np.savez(buf, **{k: v.numpy() for k, v in per_datum.items() if v is not None})
    atomic_write_bytes(out / "per_datum.npz", buf.getvalue())
    plots.training_curves(history, out / "training_curves.png")
    if run.data.image_shape:
        plots.image_grid(run.model.sample(64), run.data.image_shape, out / "samples.png")
        plots.image_grid(torch.cat([recon[0], recon[1]]), run.data.image_shape, out / "reconstructions.png",
                         nrow=recon[0].shape[0] // 2 if recon[0].shape[0] >= 2 else 1)
    if per_datum["z_mean"].shape[1] == 2:
        plots.latent_scatter(per_datum["z_mean"], labels, out / "latent_scatter.png")
    return summary


def _eval_subset(data: Dataset, cfg: RunConfig):
    """The evaluation data: the whole split, or with ``eval_limit`` a fixed random subset of it.

    The subset is drawn with a fixed generator (seed 0), so every run and every model is
    scored on the same data. Not the first N: dataset files can be ordered (the first
    1000 images of the binarized MNIST test file have mean pixel 0.170 against 0.132
    overall, and a VAE's ELBO on them is 9.6 nats lower than on the whole split).
    """
    x = data.split(cfg.eval_split)
    labels = data.labels.get(cfg.eval_split)
    if cfg.eval_limit is None or cfg.eval_limit >= x.shape[0]:
        return x, labels
    rows = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(0))[:cfg.eval_limit].sort().values
    return x[rows], (labels[rows] if labels is not None else None)


def evaluate_run(out: Path, eval_samples: Optional[int] = None, iwae_k: Optional[int] = None,
                 eval_limit: Optional[int] = None,
                 device: Optional[str] = None, data_dir: Optional[str] = None,
                 progress: bool = True) -> Dict:
    """Re-evaluate a trained run folder (optionally with more samples or another device)."""
    out = Path(out)
    state = load_checkpoint(out / "checkpoint.pt")
    config = RunConfig.from_json(state["config"])
    for key, value in (("eval_samples", eval_samples), ("iwae_k", iwae_k), ("eval_limit", eval_limit),
                       ("device", device),
                       ("data_dir", data_dir)):
        if value is not None:
            setattr(config, key, value)
    run = prepare(config)
    try:
        run.model.load_state_dict(state["model"])
        run.guide.load_state_dict(state["guide"])
    except RuntimeError:
        raise ZooError(f"checkpoint in {out} does not match its config (parameter shapes differ); "
                       f"retrain the run") from None
    return _evaluate_and_write(run, out, list(state["history"]), progress)


COLUMNS = [("model", "model"), ("guide", "guide"), ("objective", "objective"), ("K", "particles"),
           ("epochs", "epochs_trained"), ("ELBO", "elbo"), ("rec", "reconstruction"), ("KL", "kl"),
           ("IWAE-k", "iwae_bound"), ("log p(x) (IS)", "log_likelihood"), ("± se", "log_likelihood_se"),
           ("± data se", "log_likelihood_data_se"),
           ("exact log p(x)", "exact_log_likelihood"), ("gap", "elbo_gap"), ("AU", "active_units"),
           ("k̂>0.7", "psis_khat_frac_over_0_7"), ("train s", "train_seconds")]


def results_markdown(rows: Sequence[Dict]) -> str:
    """A Markdown table of evaluation summaries (one row per run), nats per datum."""
    def cell(row, key):
        v = row.get(key, row.get("config", {}).get(key))
        if key == "particles" and v is None:
            v = OBJECTIVES[row["config"]["objective"]].default_particles
        if v is None:
            return "–"
        if isinstance(v, float):
            return f"{v:.1%}" if key == "psis_khat_frac_over_0_7" else f"{v:.3f}" if abs(v) < 10 else f"{v:.2f}"
        return str(v)
    head = "| " + " | ".join(c for c, _ in COLUMNS) + " |"
    sep = "|" + "|".join("---" for _ in COLUMNS) + "|"
    lines = [head, sep] + ["| " + " | ".join(cell(r, k) for _, k in COLUMNS) + " |" for r in rows]
    first = rows[0] if rows else {}
    note = (f"\nAll figures in nats per datum on the {first.get('split', 'test')} split "
            f"({first.get('num_data', '?')} data), K = {first.get('num_samples', '?')} importance samples, "
            f"IWAE-k with k = {first.get('iwae_k', '?')}.\n")
    return "\n".join(lines) + "\n" + note


def compare(model: str, guides: Sequence[str], objectives: Sequence[str], base: RunConfig, out: Path,
            force: bool = False, progress: bool = True) -> List[Dict]:
    """Train and evaluate every (guide, objective) cell with the same seed, budget and evaluation."""
    out = Path(out)
    _check_out_dir(out, force, resume=False)
    if (out / "compare.json").exists() and not force:
        raise ZooError(f"{out} already holds a comparison; pass --force to overwrite or choose another --out")
    data = load_dataset(base.dataset, base.data_dir)
    cells = [(g, o) for g in guides for o in objectives]
    for g, o in cells:                              # check the whole grid before training anything
        prepare(dataclasses.replace(base, model=model, guide=g, objective=o), data)
    rows = []
    for g, o in cells:
        cfg = dataclasses.replace(base, model=model, guide=g, objective=o)
        if progress:
            print(f"== {model} / {g} / {o} ==", flush=True)
        rows.append(train_run(cfg, out / f"{g}-{o}", force=True, progress=progress, data=data))
    _make_out_dir(out)
    table = results_markdown(rows)
    atomic_write_text(out / "compare.md", table)
    atomic_write_text(out / "compare.json", json.dumps(_json_ready(
        [{k: v for k, v in r.items() if k != "history"} for r in rows]), indent=2))
    plots.compare_plot(rows, out / "compare.png")
    return rows


def gradients_run(model: str, guide: str, objectives: Sequence[str], particles: Sequence[int], repeats: int,
                  base: RunConfig, out: Path, checkpoint: Optional[Path] = None, force: bool = False) -> Dict:
    """``pyro-zoo gradients``: gradient diagnostics at fixed parameters (initialization or a checkpoint)."""
    from zoo.gradients import diagnose
    out = Path(out)
    _check_out_dir(out, force, resume=False)
    if (out / "gradients.json").exists() and not force:
        raise ZooError(f"{out} already holds gradient diagnostics; pass --force to overwrite or choose another --out")
    if repeats < 2:
        raise ZooError(f"--repeats must be at least 2 to estimate a variance, got {repeats}")
    if not particles or any(k < 1 for k in particles):
        raise ZooError(f"--particles must be positive integers, got {list(particles)}")
    config = dataclasses.replace(base, model=model, guide=guide, objective=objectives[0])
    data = load_dataset(config.dataset, config.data_dir)
    for name in objectives:
        check = prepare(dataclasses.replace(config, objective=name), data)
    run = check
    if checkpoint is not None:
        state = load_checkpoint(Path(checkpoint) / "checkpoint.pt" if Path(checkpoint).is_dir() else Path(checkpoint))
        stored = RunConfig.from_json(state["config"])
        for key in ("model", "guide", "dataset", "latent_dim", "hidden", "layers", "num_variables", "num_classes",
                    "guide_hidden", "flows"):
            if getattr(stored, key) != getattr(config, key):
                raise ZooError(f"the checkpoint was made with {key}={getattr(stored, key)!r}, not "
                               f"{getattr(config, key)!r}; pass the same options")
        run.model.load_state_dict(state["model"])
        run.guide.load_state_dict(state["guide"])
    x = run.data.train[:config.batch_size].to(run.device)
    if not getattr(run.guide, "amortized", True):
        run.guide = build_guide(guide, run.model, num_data=x.shape[0]).to(run.device)
    result = diagnose(run.model, run.guide, x, objectives, particles, repeats, alpha=config.alpha, seed=config.seed)
    result.update(config=config.to_json(), objectives=list(objectives), particles=list(particles),
                  repeats=repeats, checkpoint=str(checkpoint) if checkpoint else None, device=str(run.device))
    _make_out_dir(out)
    atomic_write_text(out / "gradients.json", json.dumps(_json_ready(result), indent=2))
    atomic_write_text(out / "gradients.md", gradients_markdown(result))
    plots.gradient_plot(result["rows"], out / "gradients.png")
    return result


def gradients_markdown(result: Dict) -> str:
    head = ("| objective | K | group | variance | SNR | cosine to ref | bias norm | ± se | s/estimate |\n"
            "|---|---|---|---|---|---|---|---|---|")
    def f(v, fmt):
        return "–" if v is None else format(v, fmt)
    lines = [head] + [f"| {r['objective']} | {r['particles']} | {r['group']} | {f(r['variance'], '.3g')} | "
                      f"{f(r['snr'], '.3f')} | {f(r.get('cosine'), '.4f')} | {f(r.get('bias_norm'), '.3g')} | "
                      f"{f(r.get('bias_se'), '.3g')} | {f(r['seconds'], '.4f')} |" for r in result["rows"]]
    refs = "; ".join(f"{g}: {h}" for g, h in result["reference"].items())
    return "\n".join(lines) + (f"\n\nReference gradients — {refs}. Minibatch of {result['batch_size']} data, "
                               f"{result['rows'][0]['repeats'] if result['rows'] else 0} repeats.\n")
