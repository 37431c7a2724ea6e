"""Build components by name, and decide which combinations are valid.

The entries themselves live in :mod:`zoo.core.registry` (each component registers itself
where it is defined); this module builds them and holds the one compatibility rule,
:func:`check_combination`, decided from what each entry declares (the model's latent
supports, the guide family's ``supports``, ``reparameterized`` and sharing, the objective's
capabilities), never from a hand-kept list of pairs.
"""
from __future__ import annotations

from typing import Dict, List, Mapping, Optional, Tuple

from zoo.core.contract import ZooModel
from zoo.core.distributions import ENUMERATION_LIMIT
from zoo.core.errors import ZooError
from zoo.core.registry import DATASETS, GUIDES, MODELS, OBJECTIVES
from zoo.objectives import build_objective, objective_capabilities

__all__ = ["MODELS", "GUIDES", "OBJECTIVES", "DATASETS", "build_model", "build_guide", "build_objective",
           "check_guide", "check_combination", "compatibility"]


def build_model(name: str, x_dim: int, **options) -> ZooModel:
    """Build a registered model for data of dimension ``x_dim``; options not given take their defaults."""
    return MODELS.build(name, x_dim, **options)


def build_guide(name: str, model: ZooModel, num_data: Optional[int] = None, **options):
    """Build a guide of family ``name`` for ``model``; refuses latents it cannot represent.

    A model that computes with its guide (``model.borrows_guide``, e.g. a VampPrior) is bound
    to the new guide (:meth:`~zoo.core.contract.ZooModel.bind_guide`).
    """
    component = GUIDES[name]
    component.resolve(options)                 # a bad option is reported before a bad fit
    check_guide(name, model)
    guide = component.build(model, num_data, **options)
    model.bind_guide(guide)
    return guide


def check_guide(guide: str, model: ZooModel) -> None:
    """Raise :class:`ZooError` unless the family ``guide`` can represent ``model``'s latents."""
    try:
        GUIDES[guide].factory.check(model)
    except ZooError as e:
        fits = [g for g, c in GUIDES.items() if _fits(c.factory, model)]
        raise ZooError(f"{e}; guides that fit this model: {', '.join(fits)}") from None


def _fits(cls, model) -> bool:
    try:
        cls.check(model)
        return True
    except ZooError:
        return False


def check_combination(model: ZooModel, guide: str, objective: str,
                      guide_options: Optional[Mapping[str, object]] = None,
                      objective_options: Optional[Mapping[str, object]] = None) -> None:
    """Raise :class:`ZooError` unless (model, guide, objective) is mathematically valid.

    The rules, from what each entry declares:

    - the guide must support the model's latents: ``iaf`` and ``exact`` take real latents only,
      ``relaxed`` discrete ones only, and ``exact`` needs a model with a closed-form posterior;
    - ``tracemeanfield``, ``renyi``, ``iwae`` and ``renyi_pyro`` need a reparameterizable guide: any
      guide over real latents, or ``relaxed`` over discrete ones, not a score-function guide
      (``amortized``/``meanfield`` over binary or categorical latents);
    - ``enum`` needs discrete latents, a guide with a discrete distribution and at most 2^16 joint
      latent configurations per datum; larger spaces are refused with their size;
    - ``stl`` and ``dreg`` evaluate log q at detached parameters, so they need a guide of Normal
      sites; ``dreg`` also needs guide parameters separate from the model's (not ``exact``);
    - ``--baseline`` applies to ``tracegraph`` only.
    """
    check_guide(guide, model)
    estimator = (objective_options or {}).get("estimator")
    caps = objective_capabilities(objective, estimator)
    gcls = GUIDES[guide].factory
    if caps.needs_reparam and not gcls.is_reparameterized(model):
        raise ZooError(f"objective {objective!r} needs a reparameterizable guide, and {guide!r} over "
                       f"{model.display_name}'s discrete latents is a score-function guide; use elbo, rloo, "
                       f"tracegraph, enum or rws, or the 'relaxed' guide")
    if caps.needs_enumeration:
        n = model.num_configurations
        if n is None:
            raise ZooError(f"'enum' sums over discrete latents, and {model.display_name} has real ones; "
                           f"use elbo, tracemeanfield or iwae")
        if not gcls.enumerable:
            raise ZooError(f"'enum' sums over the guide's discrete distribution, which the {guide!r} guide "
                           f"does not have while training; use the amortized or meanfield guide")
        if n > ENUMERATION_LIMIT:
            raise ZooError(f"'enum' would sum over {n:.3g} latent configurations per datum, more than the "
                           f"limit {ENUMERATION_LIMIT}; use tracegraph (with baseline 'neural'), rws or "
                           f"the relaxed guide")
    if caps.needs_normal_guide and not gcls.normal_sites:
        raise ZooError(f"{objective!r} evaluates log q at detached parameters, which needs a guide of Normal "
                       f"sites; the {guide!r} guide is not one: use meanfield or amortized")
    if caps.separate_surrogates and (gcls.borrows_model or model.borrows_guide):
        who = (f"the {guide!r} guide computes with the model's parameters" if gcls.borrows_model
               else f"{model.display_name} computes with its guide's parameters")
        raise ZooError(f"{objective!r} differentiates separate model and guide surrogates, which needs disjoint "
                       f"parameters, and {who}; use iwae" + (", or the meanfield or amortized guide"
                                                             if gcls.borrows_model else ""))
    baseline = (guide_options or {}).get("baseline")
    if baseline not in (None, "none") and not caps.uses_baselines:
        raise ZooError(f"baseline is used by the tracegraph objective only, not {objective!r}")


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


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def registry_markdown() -> str:
    """The README's tables of models, guides, objectives and datasets, from their registrations.

    Each row is the component's registered description (and a guide family's latent supports), so
    the README says what ``pyro-zoo list`` says; ``pyro-zoo report`` writes it between
    ``<!-- registry:start -->`` and ``<!-- registry:end -->``.
    """
    def table(head, rows):
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
        return "\n".join(lines)

    parts = [table(("model", "generative story"), [(f"`{n}`", c.description) for n, c in MODELS.items()]),
             table(("guide", "q(z \\| x)", "latents"),
                   [(f"`{n}`", c.description, ", ".join(c.factory.supports)) for n, c in GUIDES.items()]),
             table(("objective", "what it optimizes"), [(f"`{n}`", c.description) for n, c in OBJECTIVES.items()]),
             table(("dataset", "what"), [(f"`{n}`", c.description) for n, c in DATASETS.items()])]
    return "\n\n".join(parts)
