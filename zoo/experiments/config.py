"""A run's configuration: :class:`RunConfig`, its checks, and what a resumed run may change."""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Dict, List, Optional

import torch

from guides.relaxed import check_schedule
from zoo.core.errors import ZooError

__all__ = ["RunConfig", "resolve_device", "set_determinism", "check_config", "refuse_mismatch",
           "MODEL_OPTION_FIELDS", "GUIDE_OPTION_FIELDS", "RESUMABLE_CHANGES"]


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


def check_config(config: RunConfig) -> None:
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


#: Config fields that may change when a run is resumed or re-evaluated; all others must match.
#: ``lr`` and ``lr_decay`` take effect from the resumed step on (e.g. a lower --lr after a non-finite loss);
#: ``jit`` changes how a step is computed, not what. The relaxed guide's temperature schedule
#: tau_t = max(tau_min, tau_0 exp(-r t)) is a function of the global step t, so a new ``temperature``,
#: ``temperature_min`` or ``anneal_rate`` gives the new schedule's tau from the resumed step on (e.g. a
#: lower floor after the run has plateaued at the old one).
RESUMABLE_CHANGES = ("epochs", "device", "eval_samples", "iwae_k", "eval_split", "eval_limit", "refit_epochs",
                     "data_dir", "checkpoint_every", "distributed", "tensorboard", "lr", "lr_decay", "jit",
                     "temperature", "temperature_min", "anneal_rate")


def refuse_mismatch(stored: RunConfig, given: RunConfig) -> None:
    for key in RunConfig.__dataclass_fields__:
        if key not in RESUMABLE_CHANGES and getattr(stored, key) != getattr(given, key):
            raise ZooError(f"the checkpoint was made with {key}={getattr(stored, key)!r}, not "
                           f"{getattr(given, key)!r}; resume with the same {key} or use a new --out")
