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

from guides import IAF, Amortized, Exact, MeanField, Relaxed, ZooGuide
from zoo.data import DATASETS
from zoo.core.errors import ZooError, unknown_name
from zoo.core.distributions import ENUMERATION_LIMIT
from zoo.models import PPCA, SBN, VAE, CategoricalVAE, ZooModel
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
    ModelSpec("sbn", "sigmoid belief net / Helmholtz machine: binary latent layers, learnable prior, "
              "Bernoulli decoder (affine by default, as in Mnih & Gregor 2014); exact log p(x) when small",
              SBN, {"layers": (200,), "hidden": ()}),
    ModelSpec("categorical_vae", "categorical VAE: N one-hot latents with K classes (Jang et al. 2017: 20x10), "
              "MLP decoder; exact log p(x) when small", CategoricalVAE,
              {"num_variables": 20, "num_classes": 10, "hidden": (256, 512)}),
]}


@dataclass(frozen=True)
class GuideSpec:
    name: str
    description: str
    cls: type
    options: Dict[str, object] = field(default_factory=dict)


GUIDES = {g.name: g for g in [
    GuideSpec("meanfield", "per-datum diagonal Normal or Bernoulli/categorical logits, indexed by the data "
              "plate's idx", MeanField, {"baseline": None}),
    GuideSpec("amortized", "MLP encoder giving a diagonal Normal, or Bernoulli/categorical logits "
              "(score function)", Amortized, {"hidden": None, "baseline": None}),
    GuideSpec("iaf", "amortized encoder + K conditional inverse autoregressive flow steps "
              "(Kingma et al. 2016)", IAF, {"hidden": None, "num_flows": 2}),
    GuideSpec("relaxed", "amortized Concrete / Gumbel-softmax for binary and categorical latents, annealed "
              "temperature, optional straight-through; evaluated with hard samples", Relaxed,
              {"hidden": None, "temperature": 1.0, "temperature_min": 0.5, "anneal_rate": 0.0,
               "straight_through": False}),
    GuideSpec("exact", "the closed-form posterior p(z|x), the oracle (pPCA, FA)", Exact),
]}


#: The CLI flag of each guide option, for error messages.
GUIDE_FLAGS = {"hidden": "--guide-hidden", "num_flows": "--flows", "baseline": "--baseline",
               "temperature": "--temperature", "temperature_min": "--temperature-min",
               "anneal_rate": "--anneal-rate", "straight_through": "--straight-through"}


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
    for key in ("num_variables", "num_classes"):
        if key in kwargs and int(kwargs[key]) < (2 if key == "num_classes" else 1):
            raise ZooError(f"--{key.replace('_', '-')} must be at least {2 if key == 'num_classes' else 1}, "
                           f"got {kwargs[key]}")
    if "layers" in kwargs and (not kwargs["layers"] or any(int(k) < 1 for k in kwargs["layers"])):
        raise ZooError(f"--layers must be positive layer sizes, e.g. 200 or 200,200; got {kwargs['layers']}")
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
        option = unknown[0]
        owners = [g for g, other in GUIDES.items() if option in other.options]
        raise ZooError(f"{GUIDE_FLAGS.get(option, option)} applies to the {', '.join(map(repr, owners))} "
                       f"guide{'s' if len(owners) > 1 else ''} only, not {name!r}")
    if spec.name == "relaxed":
        for key in ("temperature", "temperature_min"):
            if key in given and not float(given[key]) > 0:
                raise ZooError(f"--{key.replace('_', '-')} must be positive, got {given[key]}")
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


def check_combination(model: ZooModel, guide: str, objective: str,
                      guide_options: Optional[Dict[str, object]] = None) -> None:
    """Raise :class:`ZooError` unless (model, guide, objective) is mathematically valid."""
    check_guide(guide, model)
    obj = _lookup(OBJECTIVES, "objective", objective)
    gcls = GUIDES[guide].cls
    if obj.needs_reparam and not gcls.is_reparameterized(model):
        raise ZooError(f"objective {objective!r} needs a reparameterizable guide, and {guide!r} over "
                       f"{model.display_name}'s discrete latents is a score-function guide; use elbo, rloo, "
                       f"tracegraph, enum or rws, or the 'relaxed' guide")
    if obj.needs_enumeration:
        n = model.num_configurations
        if n is None:
            raise ZooError(f"'enum' sums over discrete latents, and {model.display_name} has real ones; "
                           f"use elbo, tracemeanfield or iwae")
        if not gcls.enumerable:
            raise ZooError(f"'enum' sums over the guide's discrete distribution, which the {guide!r} guide "
                           f"does not have while training; use the amortized or meanfield guide")
        if n > ENUMERATION_LIMIT:
            raise ZooError(f"'enum' would sum over {n:.3g} latent configurations per datum, more than the "
                           f"limit {ENUMERATION_LIMIT}; use tracegraph (with --baseline neural), rws or "
                           f"the relaxed guide")
    if obj.needs_normal_guide and not gcls.normal_sites:
        raise ZooError(f"{objective!r} evaluates log q at detached parameters, which needs a guide of Normal "
                       f"sites; the {guide!r} guide is not one: use meanfield or amortized")
    if obj.needs_own_guide_params and not gcls.own_parameters:
        raise ZooError(f"{objective!r} separates model and guide parameters, and the {guide!r} guide has none "
                       f"of its own; use iwae, or the meanfield or amortized guide")
    baseline = (guide_options or {}).get("baseline")
    if baseline not in (None, "none") and not obj.uses_baselines:
        raise ZooError(f"--baseline is used by the tracegraph objective only, not {objective!r}")


def compatibility(x_dim: int = 64, model_options: Optional[Dict[str, Dict]] = None
                  ) -> List[Tuple[str, str, str, Optional[str]]]:
    """Every (model, guide, objective) with ``None`` if valid, else the reason it is not.

    ``model_options`` (per model name) changes the models checked, e.g. a latent space
    small enough for ``enum``.
    """
    rows = []
    for m in MODELS:
        model = build_model(m, x_dim, **(model_options or {}).get(m, {}))
        for g in GUIDES:
            for o in OBJECTIVES:
                try:
                    check_combination(model, g, o)
                    rows.append((m, g, o, None))
                except ZooError as e:
                    rows.append((m, g, o, str(e)))
    return rows
