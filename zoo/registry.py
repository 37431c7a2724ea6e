"""The one registry of models, guides, objectives and datasets.

The CLI, the compare grid, the tests and the README's tables all read it: adding a
model is one file in ``zoo/models`` plus one line here. Compatibility is decided in
one place, :func:`check_combination`, from what each entry declares (the model's
latent supports, the guide family's ``supports`` and ``reparameterized``, the
objective's ``needs_reparam``), never from a hand-kept list of pairs.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Tuple

from guides import IAF, Amortized, Exact, MeanField, ZooGuide
from zoo.data import DATASETS
from zoo.errors import ZooError, unknown_name
from zoo.models import PPCA, VAE, ZooModel
from zoo.objectives import OBJECTIVES, build_objective

__all__ = ["MODELS", "GUIDES", "OBJECTIVES", "DATASETS", "build_model", "build_guide",
           "build_objective", "check_combination", "compatibility"]


@dataclass(frozen=True)
class ModelSpec:
    """A model entry: its constructor and the CLI options it accepts (name -> default)."""

    name: str
    description: str
    build: Callable[..., ZooModel]
    options: Dict[str, object] = field(default_factory=dict)


MODELS = {m.name: m for m in [
    ModelSpec("ppca", "probabilistic PCA (Tipping & Bishop 1999): exact log p(x) and posterior",
              lambda x_dim, latent_dim: PPCA(x_dim, latent_dim, noise="isotropic"), {"latent_dim": 2}),
    ModelSpec("fa", "factor analysis: pPCA with diagonal noise; exact log p(x) and posterior",
              lambda x_dim, latent_dim: PPCA(x_dim, latent_dim, noise="diagonal"), {"latent_dim": 2}),
    ModelSpec("vae", "VAE, Gaussian prior, tanh MLP decoder, Bernoulli or Gaussian likelihood "
              "(Burda et al. 2016: 784-200-200-50)", VAE,
              {"latent_dim": 50, "hidden": (200, 200), "likelihood": "bernoulli"}),
]}


@dataclass(frozen=True)
class GuideSpec:
    name: str
    description: str
    cls: type
    options: Dict[str, object] = field(default_factory=dict)


GUIDES = {g.name: g for g in [
    GuideSpec("meanfield", "per-datum diagonal Normal, parameters indexed by the data plate's idx",
              MeanField),
    GuideSpec("amortized", "MLP encoder giving a diagonal Normal (mirrors the decoder)", Amortized,
              {"hidden": None}),
    GuideSpec("iaf", "amortized encoder + K conditional inverse autoregressive flow steps "
              "(Kingma et al. 2016)", IAF, {"hidden": None, "num_flows": 2}),
    GuideSpec("exact", "the closed-form posterior p(z|x), the oracle (pPCA, FA)", Exact),
]}


def _lookup(table, kind, name):
    if name not in table:
        raise unknown_name(kind, name, table)
    return table[name]


def build_model(name: str, x_dim: int, **options) -> ZooModel:
    """Build a registered model for data of dimension ``x_dim``; unset options take defaults."""
    spec = _lookup(MODELS, "model", name)
    given = {k: v for k, v in options.items() if v is not None}
    unknown = sorted(set(given) - set(spec.options))
    if unknown:
        raise ZooError(f"model {name!r} takes no option {', '.join(unknown)}; "
                       f"its options are: {', '.join(spec.options) or 'none'}")
    kwargs = {**spec.options, **given}
    if "latent_dim" in kwargs and int(kwargs["latent_dim"]) < 1:
        raise ZooError(f"--latent-dim must be a positive integer, got {kwargs['latent_dim']}")
    if "hidden" in kwargs and any(int(h) < 1 for h in kwargs["hidden"]):
        raise ZooError(f"--hidden sizes must be positive integers, got {kwargs['hidden']}")
    if kwargs.get("likelihood") not in (None, "bernoulli", "gaussian"):
        raise ZooError(f"--likelihood must be 'bernoulli' or 'gaussian', got {kwargs['likelihood']!r}")
    return spec.build(x_dim, **kwargs)


def build_guide(name: str, model: ZooModel, num_data: Optional[int] = None, **options) -> ZooGuide:
    """Build a guide of family ``name`` for ``model``; refuses latents it cannot represent."""
    spec = _lookup(GUIDES, "guide", name)
    given = {k: v for k, v in options.items() if v is not None}
    unknown = sorted(set(given) - set(spec.options))
    if unknown:
        raise ZooError(f"guide {name!r} takes no option {', '.join(unknown)}; "
                       f"its options are: {', '.join(spec.options) or 'none'}")
    if given.get("num_flows") is not None and int(given["num_flows"]) < 1:
        raise ZooError(f"--flows must be a positive integer, got {given['num_flows']}")
    check_guide(name, model)
    return spec.cls(model, num_data, **given)


def check_guide(guide: str, model: ZooModel) -> None:
    spec = _lookup(GUIDES, "guide", guide)
    try:
        spec.cls.check(model)
    except ZooError as e:
        fits = [g for g, s in GUIDES.items() if _fits(s.cls, model)]
        raise ZooError(f"{e}; guides that fit this model: {', '.join(fits)}") from None


def _fits(cls, model) -> bool:
    try:
        cls.check(model)
        return True
    except ZooError:
        return False


def check_combination(model: ZooModel, guide: str, objective: str, model_name: str = "") -> None:
    """Raise :class:`ZooError` unless (model, guide, objective) is mathematically valid."""
    check_guide(guide, model)
    obj = _lookup(OBJECTIVES, "objective", objective)
    gcls = GUIDES[guide].cls
    if obj.needs_reparam and not gcls.reparameterized:
        raise ZooError(f"objective {objective!r} needs a reparameterizable guide and {guide!r} is not; "
                       f"use elbo or tracegraph")


def compatibility(x_dim: int = 64) -> List[Tuple[str, str, str, Optional[str]]]:
    """Every (model, guide, objective) with ``None`` if valid, else the reason it is not."""
    rows = []
    for m in MODELS:
        model = build_model(m, x_dim)
        for g in GUIDES:
            for o in OBJECTIVES:
                try:
                    check_combination(model, g, o)
                    rows.append((m, g, o, None))
                except ZooError as e:
                    rows.append((m, g, o, str(e)))
    return rows
