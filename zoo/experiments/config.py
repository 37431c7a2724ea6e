"""A run's configuration: :class:`RunConfig`, its checks, and what a resumed run may change.

A run is (model, guide, objective, dataset), each component's own options, and the training
and evaluation settings. The component options live in the component's
:class:`~zoo.core.components.Options` dataclass, next to the component; ``RunConfig`` holds only
the values the user gave (``model_options``, ``guide_options``, ``objective_options``) and
resolves them through the registry, so defaults, checks and help text have one source.

Example::

    >>> c = RunConfig.make(model="vae", latent_dim=2, guide="iaf", flows=3, particles=5, epochs=2)
    >>> c.model_options, c.guide_options, c.objective_options
    ({'latent_dim': 2}, {'num_flows': 3}, {'particles': 5})
    >>> c.resolved("guide").num_flows, c.resolved("model").hidden
    (3, (200, 200))
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from dataclasses import dataclass, field
from typing import Any, Dict, Mapping, Optional, Tuple

import torch

from zoo.core.errors import ZooError
from zoo.core.components import REGISTRIES, OptionError, Options, option
from zoo.usercode.specs import absolute_spec

__all__ = ["RunConfig", "with_data_source", "resolve_device", "set_determinism", "refuse_mismatch", "route_flat", "flat_name",
           "resumable_changes", "refuse_other_shapes", "COMPONENT_KINDS"]

#: The components of a run that carry options, in the order they are built.
COMPONENT_KINDS = ("model", "guide", "objective")


def _group(name: str) -> dict:
    return {"group": name}


@dataclass
class RunConfig(Options):
    """Everything that defines a run. Plain JSON types only (it is stored in checkpoints).

    The training and evaluation fields below are declared once, with their help text and
    checks; the CLI's flags, ``pyro-zoo list``, the resume checks and the docs read them.
    """

    model: str = option("vae", "model name (see 'pyro-zoo list')", cli=False)
    guide: str = option("amortized", "guide family", cli=False)
    objective: str = option("elbo", "objective", cli=False)
    dataset: str = option("digits", "dataset name", cli=_group("data"))
    model_options: Dict[str, Any] = field(default_factory=dict)
    guide_options: Dict[str, Any] = field(default_factory=dict)
    objective_options: Dict[str, Any] = field(default_factory=dict)
    data_dir: Optional[str] = option(None, "folder (or .npz) holding binarized MNIST; default $PYRO_ZOO_DATA or "
                                     "~/.cache/pyro-zoo", checkpoint="resumable", cli=_group("data"))
    covariates: Optional[Tuple[str, ...]] = option(None, "for --dataset PATH: the CSV columns or .npz arrays that are "
                                                   "per-datum inputs, not data (e.g. age,dose), passed to a model file's "
                                                   "covariates= argument", cli=_group("data"))
    split: Optional[Tuple[float, ...]] = option(None, "for --dataset PATH holding one array: the valid and test "
                                                "fractions (default 0.1,0.1)", cli=_group("data"))
    split_seed: Optional[int] = option(None, "for --dataset PATH holding one array: the seed of its random split "
                                       "(default 0)", minimum=0, cli=_group("data"))
    levels: Optional[int] = option(None, "for --dataset PATH: its values are intensities 0..LEVELS-1 (checked; uint8 "
                                   "arrays and images have 256)", minimum=2, cli=_group("data"))
    #: what the run read (a data file's path, SHA-256 and shape), recorded when it is prepared; eval and --resume
    #: refuse a file whose SHA-256 differs
    data_source: Optional[Dict[str, Any]] = None
    epochs: int = option(20, "training epochs", minimum=1, checkpoint="resumable", cli=_group("training"))
    batch_size: int = option(100, "minibatch size", minimum=1, cli=_group("training"))
    lr: float = option(1e-3, "Adam learning rate", positive=True, checkpoint="resumable", cli=_group("training"))
    # numpy's legacy RNG, which pyro.set_rng_seed seeds, takes 0 <= seed < 2**32, and the zoo seeds its
    # evaluation and refits with seed + small offsets: so a seed is a 31-bit number.
    seed: int = option(0, "random seed, 0 to 2147483647", minimum=0, maximum=2 ** 31 - 1, cli=_group("training"))
    device: str = option("auto", "auto, cpu or cuda; cuda without a GPU is an error", checkpoint="resumable",
                         cli=_group("training"))
    checkpoint_every: Optional[int] = option(None, "also checkpoint every N steps (default: after every epoch only)",
                                             minimum=1, checkpoint="resumable", cli=_group("training"))
    clip_grad: Optional[float] = option(None, "clip the global gradient norm to this value", positive=True,
                                        cli=_group("training"))
    lr_decay: float = option(1.0, "multiply the learning rate by this after each epoch", checkpoint="resumable",
                             cli=_group("training"))
    kl_warmup: Optional[int] = option(None, "KL annealing: weight the latent terms by beta rising linearly to 1 "
                                      "over EPOCHS epochs", minimum=1, cli={"group": "training", "metavar": "EPOCHS"})
    adam_betas: Optional[Tuple[float, ...]] = option(None, "Adam's betas (default 0.9 0.999)",
                                                     cli={"group": "training", "nargs": 2, "metavar": ("B1", "B2")})
    adam_eps: Optional[float] = option(None, "Adam's epsilon (default 1e-8)", positive=True, cli=_group("training"))
    weight_decay: Optional[float] = option(None, "decoupled weight decay (AdamW): shrink every parameter by lr * this "
                                           "each step (default: none)", cli=_group("training"))
    jit: bool = option(False, "as --compile, but run the step eagerly where it cannot be captured, and without "
                       "generated code where no C++ compiler is found, saying so once (--jit used torch.jit.trace, "
                       "which PyTorch deprecated)", checkpoint="resumable", cli=_group("training"))
    compile: bool = option(False, "capture the training step, loss and backward pass, as one graph and compile it "
                           "with torch.compile (CUDA graphs on a GPU): the same estimator with no Python per step",
                           checkpoint="resumable", cli=_group("training"))
    keep_best: bool = option(False, "evaluate the epoch with the best validation ELBO (saved as OUT/best.pt), not the "
                             "last", cli=_group("training"))
    patience: Optional[int] = option(None, "early stopping: end training once the validation ELBO has not improved "
                                     "for N epochs (not counting --kl-warmup's; --epochs stays the most); needs "
                                     "--keep-best, which then scores the best epoch", minimum=1, checkpoint="resumable",
                                     cli={"group": "training", "metavar": "N"})
    fixed_model: Optional[str] = option(None, "a trained run folder or trained model's name ('pyro-zoo list'): its "
                                        "model is loaded and held fixed, bit for bit, and only the guide (and an "
                                        "estimator's own baselines) train; the model, its options and the data set "
                                        "are that run's", cli={"group": "training", "metavar": "RUN|NAME"})
    fixed_model_sha256: Optional[str] = option(None, "the SHA-256 of the fixed model's weights file when the run "
                                               "was made (recorded, not given)", cli=False)
    deterministic: bool = option(False, "use torch's deterministic algorithms (see zoo/README.md, \"Reproducibility\")",
                                 cli=_group("training"))
    distributed: bool = option(False, "data-parallel training under torchrun (automatic when torchrun starts "
                               "several ranks)", checkpoint="resumable", cli=_group("training"))
    tensorboard: bool = option(False, "log losses, gradient norms, bounds and sample grids to OUT/tensorboard",
                               checkpoint="resumable", cli=_group("training"))
    eval_samples: int = option(1000, "importance samples K per datum", minimum=1, checkpoint="resumable",
                               cli=_group("evaluation"))
    iwae_k: int = option(50, "k of the reported IWAE-k bound", minimum=1, checkpoint="resumable", cli=_group("evaluation"))
    eval_proposal: str = option("defensive", "the importance sampler's proposal for log p(x): defensive, the guide "
                                "mixed with a wider copy of itself so that the standard error means what it says "
                                "(Hesterberg 1995), or guide, the guide alone", choices=("defensive", "guide"),
                                checkpoint="resumable", cli=_group("evaluation"))
    eval_split: str = option("test", "the split to evaluate on", choices=("train", "valid", "test"), checkpoint="resumable",
                             cli=_group("evaluation"))
    eval_limit: Optional[int] = option(None, "evaluate on a fixed random subset of N data of the split "
                                       "(default: all)", minimum=1, checkpoint="resumable", cli=_group("evaluation"))
    refit_epochs: Optional[int] = option(None, "the most epochs of the refit of a per-datum guide to the test data "
                                         "(and of --gaps); it stops earlier when converged (default 2000)", minimum=1,
                                         checkpoint="resumable", cli=_group("evaluation"))
    refit_tol: Optional[float] = option(None, "the refit converges when the mean per-datum ELBO gains less than this, "
                                        "relative, over 10 epochs (default 1e-4)", positive=True, checkpoint="resumable",
                                        cli=_group("evaluation"))

    def __post_init__(self):
        # a FILE.py:NAME model or guide is recorded by its absolute path, so the run never depends on the
        # folder it was started from; this is the one place a spec is made absolute
        self.model, self.guide = absolute_spec(self.model, "model"), absolute_spec(self.guide, "guide")
        from zoo.data import data_path
        self.dataset = data_path(self.dataset)          # a data file, like a model file, by its absolute path
        if self.fixed_model is not None:                # a trained model's name, or a run folder: by its path
            from zoo.core.catalogue import is_trained_name, trained_folder
            self.fixed_model = str(trained_folder(self.fixed_model) if is_trained_name(self.fixed_model)
                                   else Path(self.fixed_model).absolute())
            if self.fixed_model_sha256 is None:         # which weights: a later change of them is then seen
                self.fixed_model_sha256 = fixed_weights_sha256(Path(self.fixed_model))
        super().__post_init__()

    def validate(self) -> None:
        if not 0 < self.lr_decay <= 1:
            raise OptionError("lr_decay", f"must be in (0, 1], got {self.lr_decay}")
        if self.adam_betas is not None and not (len(self.adam_betas) == 2 and all(0 <= b < 1 for b in self.adam_betas)):
            raise OptionError("adam_betas", f"takes two numbers in [0, 1), e.g. 0.9 0.999; got {list(self.adam_betas)}")
        if self.split is not None and not (len(self.split) == 2 and all(0 <= f < 1 for f in self.split)
                                           and sum(self.split) < 1):
            raise OptionError("split", f"takes the valid and test fractions, two numbers in [0, 1) that sum to less "
                              f"than 1, e.g. 0.1,0.1; got {list(self.split)}")
        if self.weight_decay is not None and not self.weight_decay >= 0:
            raise OptionError("weight_decay", f"must be zero or positive (AdamW's decoupled decay, e.g. 0.01), "
                              f"got {self.weight_decay}")
        for kind in COMPONENT_KINDS:
            self.resolved(kind)                  # unknown names and bad options fail here, before any data load
            pinned = self.component(kind).capability("pinned_options")
            if pinned:                           # e.g. a model file's SHA-256, checked when the run is rebuilt
                setattr(self, f"{kind}_options", {**pinned(), **getattr(self, f"{kind}_options")})
        REGISTRIES["dataset"][self.dataset]

    # -- the components ---------------------------------------------------------------
    def component(self, kind: str):
        """The registry entry of this run's ``kind`` ("model", "guide", "objective" or "dataset")."""
        return REGISTRIES[kind][getattr(self, kind)]

    def resolved(self, kind: str) -> Options:
        """The options of this run's ``kind`` with defaults filled in and checked."""
        return self.component(kind).resolve(getattr(self, f"{kind}_options"))

    def data_options(self) -> Dict[str, Any]:
        """The options of a data file (:data:`zoo.data.FILE_OPTIONS`), for :func:`zoo.data.load_dataset`."""
        from zoo.data import FILE_OPTIONS
        return {name: getattr(self, name) for name in FILE_OPTIONS}

    def load_data(self):
        """The run's :class:`~zoo.data.Dataset`: its dataset (a registered name or a file) with its options."""
        from zoo.data import load_dataset
        return load_dataset(self.dataset, self.data_dir, **self.data_options())

    def to_json(self) -> Dict:
        return dataclasses.asdict(self)

    @classmethod
    def make(cls, **settings) -> "RunConfig":
        """A config from flat keyword arguments, as the CLI's flags name them: ``latent_dim=2``,
        ``flows=3``, ``particles=5`` go to the chosen model's, guide's or objective's options."""
        run_fields = {f.name for f in dataclasses.fields(cls)}
        run = {k: v for k, v in settings.items() if k in run_fields}
        names = {kind: run.get(kind, cls.__dataclass_fields__[kind].default) for kind in COMPONENT_KINDS}
        nested = route_flat(names, {k: v for k, v in settings.items() if k not in run_fields})
        for kind in COMPONENT_KINDS:
            nested[kind] = {**run.pop(f"{kind}_options", {}), **nested[kind]}
        return cls(**run, **{f"{kind}_options": nested[kind] for kind in COMPONENT_KINDS})

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "RunConfig":
        """Read a stored config, also the flat form that checkpoints made before nesting carry."""
        run_fields = {f.name for f in dataclasses.fields(cls)}
        legacy = {k: v for k, v in d.items() if k not in run_fields and k in LEGACY_FLAT}
        run = {k: v for k, v in d.items() if k in run_fields}
        objective = run.get("objective", cls.__dataclass_fields__["objective"].default)
        taken = {f.name for f in REGISTRIES["objective"][objective].options.specs()}
        # Before objectives had options of their own, every objective took alpha and insomnia and
        # ignored them unless it used them: so they are dropped where the objective does not take them.
        legacy = {k: v for k, v in legacy.items() if k not in SHARED_OBJECTIVE_OPTIONS or k in taken}
        if "objective_options" in run:
            run["objective_options"] = {k: v for k, v in run["objective_options"].items()
                                        if k not in SHARED_OBJECTIVE_OPTIONS or k in taken}
        if legacy:
            names = {kind: run.get(kind, cls.__dataclass_fields__[kind].default) for kind in COMPONENT_KINDS}
            routed = route_flat(names, legacy, lenient=True)
            for kind in COMPONENT_KINDS:
                run[f"{kind}_options"] = {**routed[kind], **run.get(f"{kind}_options", {})}
        return cls(**run)


def fixed_weights_sha256(folder: Path) -> Optional[str]:
    """The SHA-256 of the weights file a trained run's figures score (``best.pt`` for a ``--keep-best`` run, else
    ``checkpoint.pt``), read from its config.json as data; None where the folder holds no such run."""
    import hashlib
    import json
    try:
        stored = json.loads((folder / "config.json").read_text())
        name = "best.pt" if isinstance(stored, dict) and stored.get("keep_best") is True else "checkpoint.pt"
        return hashlib.sha256((folder / name).read_bytes()).hexdigest()
    except (OSError, ValueError, RecursionError):
        return None


#: The options that every objective took before the bound x estimator split (zoo.objectives.axes).
SHARED_OBJECTIVE_OPTIONS = ("alpha", "insomnia")


#: The option names of the flat RunConfig of earlier versions (stored in old checkpoints), with
#: the values it stored when the option was not given.
LEGACY_FLAT = {"latent_dim": None, "hidden": None, "likelihood": None, "layers": None, "num_variables": None,
               "num_classes": None, "guide_hidden": None, "flows": None, "baseline": None, "temperature": None,
               "temperature_min": None, "anneal_rate": None, "straight_through": False, "particles": None,
               "alpha": 0.0, "insomnia": 1.0}


def flat_name(f: dataclasses.Field) -> str:
    """The flat (CLI) name of an option: its ``flag`` metadata, else its field name."""
    return (f.metadata.get("flag") or f.name).replace("-", "_")


def route_flat(names: Mapping[str, str], flat: Mapping[str, Any], lenient: bool = False) -> Dict[str, Dict]:
    """Send flat option values to the component of each kind that takes them.

    ``names`` maps kind -> the chosen component. A value no chosen component takes is an
    error that names who does take it. With ``lenient`` (old stored configs), values equal to what
    the old flat config stored when an option was unset are dropped (they are the defaults).
    """
    nested = {kind: {} for kind in COMPONENT_KINDS}
    for key, value in flat.items():
        if value is None or (lenient and LEGACY_FLAT.get(key, object()) == value):
            continue
        owners = []
        for kind in COMPONENT_KINDS:
            component = REGISTRIES[kind][names[kind]]
            for f in component.options.specs():
                if flat_name(f) == key:
                    owners.append((kind, f.name))
        if owners:
            kind, name = owners[0]
            nested[kind][name] = list(value) if isinstance(value, tuple) else value
            continue
        raise not_applicable(key, names)
    return nested


def not_applicable(key: str, names: Mapping[str, str]) -> OptionError:
    """The error for an option that the chosen components do not take: who does take it."""
    for kind in COMPONENT_KINDS:
        owners = [c.name for c in REGISTRIES[kind].values()
                  if any(flat_name(f) == key for f in c.options.specs())]
        if owners:
            listed = ", ".join(repr(o) for o in owners)
            err = OptionError(key, f"applies to the {listed} {kind}{'s' if len(owners) > 1 else ''} only, "
                              f"not {names[kind]!r}")
            err.kind = "flat"
            return err
    err = OptionError(key, "is not an option of any model, guide or objective")
    err.kind = "flat"
    return err


def resumable_changes(config: RunConfig) -> Dict[str, Tuple[str, ...]]:
    """What a resumed run may change: the run fields and each component's options declared ``resumable``."""
    out = {"run": tuple(f.name for f in dataclasses.fields(RunConfig) if f.metadata.get("resumable"))}
    for kind in COMPONENT_KINDS:
        out[kind] = tuple(f.name for f in config.component(kind).options.specs() if f.metadata.get("resumable"))
    return out


def refuse_mismatch(stored: RunConfig, given: RunConfig) -> None:
    """Raise unless ``given`` differs from the checkpoint's ``stored`` config only where resuming allows."""
    allowed = resumable_changes(stored)
    for key in ("model", "guide", "objective", "dataset"):
        if getattr(stored, key) != getattr(given, key):
            raise ZooError(f"the checkpoint was made with {key}={getattr(stored, key)!r}, not "
                           f"{getattr(given, key)!r}; resume with the same {key} or start a new run folder")
    for f in dataclasses.fields(RunConfig):
        if f.metadata and f.name not in allowed["run"] and f.name not in ("model", "guide", "objective", "dataset") \
                and getattr(stored, f.name) != getattr(given, f.name):
            raise _mismatch("run", f.name, getattr(stored, f.name), getattr(given, f.name))
    for kind in COMPONENT_KINDS:
        old, new = stored.resolved(kind).to_dict(), given.resolved(kind).to_dict()
        for name in old:
            if name not in allowed[kind] and old[name] != new[name]:
                raise _mismatch(kind, name, old[name], new[name])


def refuse_other_shapes(stored: RunConfig, given: RunConfig) -> None:
    """Raise unless a checkpoint made with ``stored`` can load into ``given``'s model and guide: the same
    model, guide and dataset, and the same value of every option that shapes parameters."""
    for key in ("model", "guide", "dataset"):
        if getattr(stored, key) != getattr(given, key):
            raise ZooError(f"the checkpoint was made with {key}={getattr(stored, key)!r}, not "
                           f"{getattr(given, key)!r}; pass the same {key}")
    for kind in ("model", "guide"):
        old, new = stored.resolved(kind), given.resolved(kind)
        for f in old.specs():
            if f.metadata.get("shape") and getattr(old, f.name) != getattr(new, f.name):
                raise _mismatch(kind, f.name, getattr(old, f.name), getattr(new, f.name))


def _mismatch(kind: str, name: str, old, new) -> OptionError:
    err = OptionError(name, f"was {old!r} when the checkpoint was made, not {new!r}; resume with the same value "
                      f"or start a new run folder")
    err.kind = kind
    return err


def with_data_source(config: RunConfig, data) -> RunConfig:
    """``config`` recording what ``data`` was read from (a data file's path, SHA-256 and shapes); a config that
    recorded it already (``eval``, ``--resume``) must find the same bytes, or the run is refused."""
    if data.source is None:
        return config
    old = config.data_source
    if old is None:
        return dataclasses.replace(config, data_source=data.source)
    if old.get("sha256") != data.source["sha256"]:
        raise ZooError(f"dataset {data.source['path']} changed since this run was made (its SHA-256 differs from "
                       f"the run's; shape {data.source['shape']}, was {old.get('shape')}); restore the run's file or "
                       f"train a new run")
    return config


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA if present else CPU; ``cuda`` without a GPU is an error, never a silent fallback."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ZooError("device 'cuda' was asked for but no CUDA GPU is available; use device 'cpu' or 'auto'")
        return torch.device(name)
    if name != "cpu":
        raise OptionError("device", f"must be auto, cpu or cuda, got {name!r}")
    return torch.device("cpu")


def set_determinism(on: bool) -> None:
    """``deterministic``: torch's deterministic algorithms (and cuBLAS's fixed workspace on CUDA).

    The same seed on the same device gives the same result. On CUDA, without this, some kernels
    (atomic-add reductions such as ``index_add_``/scatter in the backward of indexing, as the
    per-datum ``meanfield`` tables use, and some cuBLAS reductions) are non-deterministic, so runs
    agree only to float rounding; with it they are reproducible on the same GPU model, driver and
    library versions, not across GPUs, CUDA versions or numbers of ranks.
    """
    if on:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.benchmark = False
    if on != torch.are_deterministic_algorithms_enabled() or torch.is_deterministic_algorithms_warn_only_enabled():
        # only on a change (or to clear a warn_only setting, which the call resets): the call imports
        # torch._inductor, seconds of CPU time that a run neither deterministic nor compiled never needs
        torch.use_deterministic_algorithms(on)
