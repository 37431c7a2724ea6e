"""Build components by name, and decide which combinations are valid.

The entries themselves live in :mod:`zoo.core.components` (each component registers itself
where it is defined); this module builds them and holds the one compatibility rule,
:func:`check_combination`, decided from what each entry declares (the model's latent
supports, the guide family's ``supports``, ``reparameterized`` and sharing, the objective's
capabilities), never from a hand-kept list of pairs.
"""
from __future__ import annotations

from typing import Callable, Dict, List, Mapping, Optional, Tuple

from zoo.core.contract import ZooModel
from zoo.core.distributions import ENUMERATION_LIMIT
from zoo.core.errors import ZooError
from zoo.core.components import DATASETS, GUIDES, MODELS, OBJECTIVES
from zoo.objectives import build_objective, objective_capabilities, objective_label

__all__ = ["MODELS", "GUIDES", "OBJECTIVES", "DATASETS", "build_model", "build_guide", "build_objective",
           "check_guide", "check_combination", "compatibility"]


def build_model(name: str, x_dim: int, **options) -> ZooModel:
    """Build a registered model for data of dimension ``x_dim``; options not given take their defaults."""
    return MODELS.build(name, x_dim, **options)


def build_guide(name: str, model: ZooModel, num_data: Optional[int] = None, bind: bool = True, **options):
    """Build a guide of family ``name`` for ``model``; refuses latents it cannot represent.

    A model that computes with its guide (``model.borrows_guide``, e.g. a VampPrior) is bound
    to the new guide (:meth:`~zoo.core.contract.ZooModel.bind_guide`), unless ``bind=False``: a
    guide that works beside the model's own and must not replace it, as the per-datum q* of the
    inference gaps (:mod:`zoo.evaluation.gaps`) does beside the encoder a VampPrior computes with.
    """
    component = GUIDES[name]
    component.resolve(options)                 # a bad option is reported before a bad fit
    check_guide(name, model)
    guide = component.build(model, num_data, **options)
    if bind:
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

    ``objective`` is a bound with ``objective_options["estimator"]`` (default: the bound's own),
    or a preset that fixes both; the decision reads only what the estimator declares
    (:class:`~zoo.objectives.axes.Estimator`) and what the guide family declares. The error is
    one line that says what to use instead: the objectives that do fit this model and guide.

    The rules, from what each entry declares:

    - the guide must support the model's latents: ``iaf`` and ``exact`` take real latents only,
      ``relaxed`` needs discrete ones (real ones beside them keep a Normal), and ``exact`` needs a model with a closed-form posterior;
    - ``tracemeanfield``, ``renyi``, ``iwae`` and ``renyi_pyro`` need a reparameterizable guide: any
      guide over real latents, or ``relaxed`` over discrete ones, not a score-function guide
      (``amortized``/``meanfield`` over binary or categorical latents);
    - ``enum`` needs discrete latents, a guide with a discrete distribution and at most 2^16 joint
      configurations of the discrete latents per datum (larger spaces are refused with their size);
      real latents beside them are sampled by the guide, reparameterized, once per enumerated value;
    - ``stl`` and ``dreg`` evaluate log q at detached parameters, so they need a guide of Normal
      sites; ``dreg`` also needs model and guide parameters kept apart: neither may borrow the other's
      (the ``exact`` guide, a model that ``borrows_guide``);
    - ``--baseline`` applies to ``tracegraph`` only;
    - the analytic-KL estimator (``tracemeanfield``) needs a guide that is mean-field across sites: with
      ``structured`` guides q(z2 | z1, x) its per-site closed-form KLs would be biased;
    - wake-sleep's sleep phase (``rws`` with ``insomnia`` < 1) fits q to dreamt data, so it needs an
      amortized guide;
    - our per-datum ``rws`` has no wake update for global latents (outside the data plate): refused for
      models that have them;
    - the ELBO with ``free_bits`` takes each latent unit's KL in closed form: a reparameterized,
      mean-field guide of Normal sites (its estimator's capabilities as refined by the options).
    """
    check_guide(guide, model)
    estimator = (objective_options or {}).get("estimator")
    caps = objective_capabilities(objective, estimator, objective_options)
    problem = _problem(model, guide, caps, objective_label(objective, estimator), guide_options)
    if problem is not None:
        raise ZooError(problem(lambda: _fitting(model, guide)))
    insomnia = (objective_options or {}).get("insomnia")
    if insomnia is not None and insomnia < 1 and not GUIDES[guide].factory.amortized:
        raise ZooError(f"insomnia {insomnia} < 1 trains the guide on dreamt data (sleep-phi), which needs an "
                       f"amortized guide, and {guide!r} is per-datum; use insomnia 1 or an amortized guide")


def _discrete_configurations(model: ZooModel) -> Optional[int]:
    """How many joint values one datum's *discrete* latents take (``None`` if it has none): what ``enum``
    sums over. Real latents beside them are sampled, reparameterized, once per enumerated value
    (Pyro's TraceEnum_ELBO; the M2 recipe q(y | x) q(z | x, y) with y summed)."""
    sizes = [s.num_configurations for s in model.latents if s.support != "real"]
    if not sizes:
        return None
    total = 1
    for n in sizes:
        total *= n
    return total


def _fitting(model: ZooModel, guide: str) -> str:
    """The registered objectives valid for (model, guide), for "use ..." advice."""
    fits = [o for o in OBJECTIVES if _problem(model, guide, objective_capabilities(o), repr(o), None) is None]
    return ", ".join(fits) if fits else "no objective"


def _problem(model: ZooModel, guide: str, caps, label: str, guide_options) -> Optional[Callable[[Callable], str]]:
    """None if the estimator ``caps`` fits (model, guide); else the error, given the "use ..." advice lazily."""
    gcls = GUIDES[guide].factory
    if caps.needs_reparam and not gcls.is_reparameterized(model):
        return lambda fits: (f"objective {label} needs a reparameterizable guide, and {guide!r} over "
                             f"{model.display_name}'s discrete latents is a score-function guide; use {fits()}, "
                             f"or the 'relaxed' guide")
    if caps.needs_enumeration:
        n = _discrete_configurations(model)
        if n is None:
            return lambda fits: (f"objective {label} sums over discrete latents, and {model.display_name} has "
                                 f"none; use {fits()}")
        if not gcls.enumerable:
            return lambda fits: (f"objective {label} sums over the guide's discrete distribution, which the "
                                 f"{guide!r} guide does not have while training; use the amortized or meanfield "
                                 f"guide")
        tangled = [s for s in model.latents if s.support != "real" and any(
            p.support == "real" for p in model.latents if p.name in s.parents)]
        if tangled and (guide_options or {}).get("structured"):
            site = tangled[0]
            return lambda fits: (f"objective {label} sums over {site.name!r}, whose prior reads the real latent(s) "
                                 f"{', '.join(site.parents)} that a structured guide samples given {site.name!r}; "
                                 f"Pyro's TraceEnum_ELBO cannot sum over a site its own prior depends on through "
                                 f"such a sample: drop structured, or use {fits()}")
        if n > ENUMERATION_LIMIT:
            return lambda fits: (f"objective {label} would sum over {n:.3g} latent configurations per datum, more "
                                 f"than the limit {ENUMERATION_LIMIT}; use tracegraph (with baseline 'neural'), rws "
                                 f"or the relaxed guide")
    if caps.needs_normal_guide and not gcls.normal_sites:
        return lambda fits: (f"objective {label} evaluates log q at detached parameters, which needs a guide of "
                             f"Normal sites; the {guide!r} guide is not one: use meanfield or amortized, or {fits()}")
    if caps.separate_surrogates and (gcls.borrows_model or model.borrows_guide):
        who = (f"the {guide!r} guide computes with the model's parameters" if gcls.borrows_model
               else f"{model.display_name} computes with its guide's parameters")
        return lambda fits: (f"objective {label} differentiates separate model and guide surrogates, which needs "
                             f"disjoint parameters, and {who}; use {fits()}"
                             + (", or the meanfield or amortized guide" if gcls.borrows_model else ""))
    if caps.needs_mean_field_guide and (guide_options or {}).get("structured"):
        return lambda fits: (f"objective {label} takes each site's KL in closed form, which is biased for a "
                             f"structured guide q(z2 | z1, x); drop structured, or use {fits()}")
    if caps.needs_unit_kl and (not gcls.normal_sites or (guide_options or {}).get("structured")):
        what = "is structured, q(z2 | z1, x)" if gcls.normal_sites else "does not have Normal sites"
        return lambda fits: (f"objective {label} with free_bits takes each latent unit's KL in closed form, which "
                             f"needs a mean-field guide of Normal sites, and the {guide!r} guide {what}; use "
                             f"meanfield or amortized (not structured), or drop free_bits")
    if caps.local_latents_only and getattr(model, "global_latents", ()):
        names = ", ".join(s.name for s in model.global_latents)
        return lambda fits: (f"objective {label} has no wake update for a guide of global latents ({names}, "
                             f"outside the data plate) of {model.display_name}; use {fits()}")
    baseline = (guide_options or {}).get("baseline")
    if baseline not in (None, "none") and not caps.uses_baselines:
        return lambda fits: (f"baseline is used by the tracegraph objective only (elbo with estimator "
                             f"'tracegraph'), not {label}; use tracegraph or drop baseline")
    return None


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
