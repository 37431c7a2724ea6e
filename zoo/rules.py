"""Which runs are valid: every rule about a (model, guide, objective, options, data) combination.

``pyro-zoo list`` and ``pyro-zoo train`` ask the same functions, so ``list`` calls a run valid exactly
when ``train`` accepts it (``train`` asks :func:`check_run` and :func:`check_step` in
:func:`zoo.experiments.run.prepare`, ``list`` asks :func:`verdict` and :func:`compatibility`). Each
rule is decided from what the components declare, never from a hand-kept list of pairs:

- :func:`check_guide`: the guide family supports the model's latents (its ``supports``, ``check``);
- :func:`check_combination`: the estimator's assumptions (:class:`~zoo.objectives.axes.Estimator`:
  ``needs_reparam``, ``needs_enumeration``, ...) against what the guide family declares
  (``is_reparameterized``, ``enumerable``, ``normal_sites``, ``borrows_model``, ``amortized``) and the
  model's latents (discrete configurations, global latents), with the guide's and objective's options;
- :func:`check_guide_options`: a global guide needs global latents, a baseline needs discrete ones;
- :func:`check_capture`: ``--jit``, ``--compile`` and data-parallel training need the estimator's
  ``jit`` and ``ddp``;
- :func:`check_run`: all of the above for a run's config, with the run's own options (``structured``
  that changes nothing, ``keep_best``, ``kl_warmup``) and its data (:class:`DataFacts`: each
  observed column's likelihood against the kind of value it holds, :func:`check_data_kind`; covariates
  only for a model that takes them, :func:`check_covariates`; the batch size against the number of data);
- :func:`check_step`: what only a trial step shows (a step ``--compile`` cannot capture; free bits
  over a site that is not a Normal).

A component's own options (a choice, a range, the estimator's minimum particles, free bits with
another estimator) are checked by its :class:`~zoo.core.components.Options` when they are resolved,
before any rule here. Each error is one line that says what to use instead.

The rules of one command besides the combinations (compress's, the defensive proposal's, ``eval --gaps``'
and BDMC's, the batch size and the sleep phase that ``zoo.fit`` checks too) are :class:`Rule` objects in
:data:`RULES`, each stated once: ``pyro-zoo list`` prints their texts, and the checks that apply them
(:func:`check_compress`, :func:`check_gaps`, :func:`check_bdmc`, :func:`check_batch_size`,
:func:`check_sleep`, and the coder's and the defensive proposal's checks on their traces) raise
:meth:`Rule.error`, whose message ends in that text.
"""
from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

import torch

from zoo.core.components import DATASETS, GUIDES, MODELS, OBJECTIVES, OptionError
from zoo.core.contract import ZooModel, posterior_order
from zoo.core.distributions import ENUMERATION_LIMIT
from zoo.core.latents import MANIFOLDS
from zoo.core.levels import LEVEL_LIKELIHOODS
from zoo.core.errors import ZooError
from zoo.data.kinds import data_kind
from zoo.objectives import build_objective, objective_capabilities, objective_label

#: the latent supports summed or scored by their probabilities (what enumeration and baselines are for)
DISCRETE = ("binary", "categorical")

__all__ = ["DataFacts", "model_options", "build_run_model", "check_guide", "check_combination", "check_guide_options",
           "check_capture", "check_levels", "check_run", "check_data_dir", "check_covariates", "check_sleep",
           "check_batch_size", "check_data_kind", "observed_likelihoods", "likelihood_name", "likelihood_warning",
           "check_step", "verdict", "compatibility", "grid_axes_without_effect", "check_fit", "Rule", "RULES",
           "rules_text", "check_compress", "compress_levels", "check_gaps", "check_bdmc"]


@dataclass(frozen=True)
class DataFacts:
    """What the rules read of a data set: enough to decide a run without its tensors.

    Arguments:
        name: the dataset's name, for messages.
        x_dim: columns of a data row (covariates included).
        num_train: rows of the training split.
        binary: every value is 0 or 1 (a Bernoulli likelihood applies).
        views: the views of a datum as ``NAME:SIZE:LIKELIHOOD`` (empty: one view).
        kind: what the data columns hold (:data:`zoo.data.kinds.KINDS`): ``"binary"``, ``"levels"`` (integers
            0..levels-1 whose number of levels is declared: 17 for ``digits17``, 256 for 8-bit images),
            ``"counts"`` (non-negative integers) or ``"reals"``.
        levels: k of k-level intensities (2 for binary data), what a k-level likelihood (a Categorical over k
            levels, a discretized logistic) needs; ``None`` when the data declare none.
        column_kinds: per data column, its narrowest kind (``"binary"``, ``"counts"`` or ``"reals"``) and
            the value that rules out the narrower one (:class:`zoo.data.kinds.ColumnKinds`).
        maximum: the largest value of the data columns.
        covariates: the names of the per-datum inputs in the last ``covariate_dim`` columns.
        covariate_dim: how many of the last columns are covariates.
    """

    name: str
    x_dim: int
    num_train: int
    binary: bool
    views: Tuple[str, ...] = ()
    kind: str = "reals"
    levels: Optional[int] = None
    column_kinds: Tuple[Tuple[str, float], ...] = ()
    maximum: float = 0.0
    covariates: Tuple[str, ...] = ()
    covariate_dim: int = 0

    @classmethod
    def of(cls, data) -> "DataFacts":
        """The facts of a :class:`~zoo.data.Dataset`."""
        kinds = data.kinds()
        kind = data_kind(kinds.kinds, data.levels)
        levels = data.levels if data.levels is not None else (2 if kind == "binary" else None)
        return cls(data.name, data.x_dim, data.train.shape[0], data.binary, tuple(v.spec for v in data.views),
                   kind=kind, levels=levels, column_kinds=tuple(zip(kinds.kinds, kinds.witnesses)),
                   maximum=kinds.maximum, covariates=tuple(data.covariates), covariate_dim=data.covariate_dim)


def model_options(config, data: Optional[DataFacts]) -> Dict[str, Any]:
    """The model's options for a run on ``data``: what the user left unset that the data decide (the
    likelihood from the data's kind, a multimodal model's views from the data's). Refuses a multimodal
    model on data with one view."""
    options = dataclasses.asdict(config.resolved("model"))
    if data is None:
        return options
    if options.get("likelihood", "") is None:
        options["likelihood"] = "bernoulli" if data.binary else "categorical" if data.levels else "gaussian"
    if options.get("likelihood") in LEVEL_LIKELIHOODS and options.get("levels", "") is None:
        options["levels"] = data.levels
    if "covariate_dim" in options:              # a model file: the data's covariates go to its covariates=
        options["covariate_dim"] = data.covariate_dim
    if "views" in options and options["views"] is None:
        if not data.views:
            with_views = [name for name, c in DATASETS.items() if c.capability("views")]
            raise ZooError(f"{config.model} models several views of each datum and dataset {data.name!r} has one; "
                           f"use a dataset with views ({', '.join(with_views)}) or give --views NAME:SIZE:LIKELIHOOD "
                           f"for each")
        options["views"] = data.views
    return options


def build_run_model(config, data, facts: Optional[DataFacts] = None) -> ZooModel:
    """The model of the run of ``config`` on ``data`` (a :class:`~zoo.data.Dataset`), as ``train`` and ``list``
    build it: from :func:`model_options`; a model that reads example rows while it is built (a model file,
    whose trial run :func:`~zoo.models.pyro_model.from_pyro` feeds) gets the training rows, so a model that
    reads a column as a scale (eight schools' per-datum sigma) is tried on its data, not on zeros."""
    facts = facts if facts is not None else DataFacts.of(data)
    component = MODELS[config.model]
    if component.capability("reads_example_rows"):
        component = dataclasses.replace(component, factory=functools.partial(component.factory, example=data.train))
    return component.build(facts.x_dim, **model_options(config, facts))


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
    or a preset that fixes both. The rules are :func:`_problem`'s, read from what the estimator and
    the guide family declare, and the sleep phase's need of an amortized guide. The error is one line
    that says what to use instead: the objectives that do fit this model and guide.
    """
    check_guide(guide, model)
    estimator = (objective_options or {}).get("estimator")
    caps = objective_capabilities(objective, estimator, objective_options)
    problem = _problem(model, guide, caps, objective_label(objective, estimator), guide_options)
    if problem is not None:
        raise ZooError(problem(lambda: _fitting(model, guide)))
    check_sleep(model, GUIDES[guide].factory, (objective_options or {}).get("insomnia"))


def check_sleep(model: ZooModel, guide, insomnia: Optional[float]) -> None:
    """Raise :class:`ZooError` unless the sleep phase of ``insomnia`` < 1 (rws) can run: the ``guide`` (a guide or
    its family) amortized, and the model able to dream every column of x."""
    if insomnia is None or insomnia >= 1:
        return
    if not getattr(guide, "amortized", True):
        raise SLEEP_NEEDS_AMORTIZED.error(f"insomnia {insomnia:g} with the per-datum {guide.family!r} guide")
    refusal = model.cannot_generate
    if refusal:
        raise SLEEP_NEEDS_GENERATION.error(f"insomnia {insomnia:g}: {refusal}")


def _discrete_configurations(model: ZooModel) -> Optional[int]:
    """How many joint values one datum's *discrete* latents take (``None`` if it has none): what ``enum``
    sums over. Real latents beside them are sampled, reparameterized, once per enumerated value
    (Pyro's TraceEnum_ELBO; the M2 recipe q(y | x) q(z | x, y) with y summed)."""
    sizes = [s.num_configurations for s in model.latents if s.support in DISCRETE]
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
    """None if the estimator ``caps`` fits (model, guide); else the error, given the "use ..." advice lazily.

    - ``needs_reparam``: every sample of the guide reparameterized (a score-function guide over discrete
      latents is refused; the relaxed guide is not one);
    - ``needs_enumeration``: discrete latents, a guide with a discrete distribution, at most
      :data:`~zoo.core.distributions.ENUMERATION_LIMIT` joint configurations per datum, and no
      structured guide over a discrete site whose prior reads a real latent;
    - ``needs_normal_guide``: a guide of Normal sites (log q at detached parameters);
    - ``needs_guide_density``: a guide with a marginal density (``has_density``);
    - ``separate_surrogates``: model and guide parameters apart (neither borrows the other's);
    - ``needs_mean_field_guide``, ``needs_unit_kl``: a guide that is not ``structured`` (and, for free
      bits, of Normal sites);
    - ``local_latents_only``: a model without global latents;
    - ``needs_bernoulli_latents``: one local binary site (or several, with ``several_bernoulli_layers``, drawn from x
      alone, or in turn by a structured guide with ``structured_bernoulli_layers``), and a guide of Bernoulli bits
      (amortized, meanfield);
    - ``needs_categorical_latents``: one local categorical site in one-hot form, and a guide of categoricals;
    - a guide's ``baseline`` only where the estimator ``uses_baselines``.
    """
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
        tangled = [s for s in model.latents if s.support in DISCRETE and any(
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
    manifold = [f"{s.name} ({s.support})" for s in model.latents if s.support in MANIFOLDS]
    if (caps.needs_normal_guide or caps.needs_unit_kl) and manifold:
        return lambda fits: (f"objective {label} needs Normal posteriors (log q at detached parameters, or each "
                             f"unit's KL in closed form), and {model.display_name}'s {', '.join(manifold)} is not in "
                             f"R^d; use {fits()}, or --latent gaussian")
    if caps.needs_guide_density and not getattr(gcls, "has_density", True):
        return lambda fits: (f"objective {label} evaluates log q(z | x) at a fixed z (a score, a wake update or a "
                             f"closed-form KL), and the {guide!r} guide has no marginal density, only the augmented "
                             f"term of its own draws; use {fits()}")
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
    for needed, several, support, layer, sets in (
            (caps.needs_bernoulli_latents, caps.several_bernoulli_layers, "binary",
             "binary latents (categorical ones take ARSM)",
             "Bernoulli bits itself (antithetic pairs, relaxed samples)"),
            (caps.needs_categorical_latents, False, "categorical", "categorical latents in one-hot form (several "
             "layers are not in the zoo yet)", "categoricals itself (swapped Dirichlet draws)")):
        if not needed:
            continue
        local = list(model.latents)
        if not local or (len(local) > 1 and not several) or model.global_latents \
                or any(s.support != support or s.form == "index" for s in local):
            what = ", ".join(f"{s.name} ({s.support})" for s in local) or "none"
            layers = "layers" if several else "one layer"
            return lambda fits: (f"objective {label} takes {layers} of {layer}, and {model.display_name}'s latents "
                                 f"are {what}; use {fits()}")
        structured = bool((guide_options or {}).get("structured"))
        if len(local) > 1 and structured and not caps.structured_bernoulli_layers:
            return lambda fits: (f"objective {label} draws every layer's bits as one antithetic pair, which needs "
                                 f"each layer drawn from x alone, and a structured guide draws q(z2 | z1, x); drop "
                                 f"structured, or use {fits()}")
        if not gcls.enumerable or (structured and not (len(local) > 1 and caps.structured_bernoulli_layers)):
            return lambda fits: (f"objective {label} sets the guide's {sets}, which the {guide!r} guide does not "
                                 f"sample; use the amortized or meanfield guide")
    if caps.local_latents_only and model.global_latents:
        names = ", ".join(s.name for s in model.global_latents)
        return lambda fits: (f"objective {label} has no wake update for a guide of global latents ({names}, "
                             f"outside the data plate) of {model.display_name}; use {fits()}")
    baseline = (guide_options or {}).get("baseline")
    if baseline not in (None, "none") and not caps.uses_baselines:
        return lambda fits: (f"baseline is used by the tracegraph objective only (elbo with estimator "
                             f"'tracegraph'), not {label}; use tracegraph or drop baseline")
    return None


def check_guide_options(model: ZooModel, guide: str, guide_options: Optional[Mapping[str, object]] = None) -> None:
    """Raise :class:`ZooError` for a guide option that ``model`` gives nothing to do: a global guide
    without global latents, a score-function baseline without discrete latents."""
    options = guide_options or {}
    if options.get("global_guide") is not None and not model.global_latents:
        raise ZooError(f"--global-guide applies to models with global latents (outside the data plate); "
                       f"{model.display_name} has none: drop it")
    if options.get("baseline") not in (None, "none") and not any(s.support in DISCRETE for s in model.latents):
        raise ZooError("baselines reduce the variance of score-function (discrete) sites; this model has none")


def check_capture(objective: str, objective_options: Optional[Mapping[str, Any]] = None, jit: bool = False,
                  compile: bool = False, distributed: bool = False) -> None:
    """Raise :class:`ZooError` unless the estimator's step can be run as asked: data-parallel training
    needs one differentiable loss (``ddp``) and a step of its own (not one ``--jit`` or ``--compile``
    captured); ``--jit`` and ``--compile`` are two ways of capturing one surrogate loss and one backward
    pass (``jit``), so one of them, and only for estimators that declare it."""
    estimator = (objective_options or {}).get("estimator")
    caps = objective_capabilities(objective, estimator, objective_options)
    label = objective_label(objective, estimator)
    if distributed:
        if not caps.ddp:
            ddp_objectives = [n for n, c in OBJECTIVES.items() if c.capability("caps").ddp]
            raise ZooError(f"distributed training needs an objective with one differentiable loss; {label} is not "
                           f"one: use one of {', '.join(ddp_objectives)}")
        for flag, given in (("jit", jit), ("compile", compile)):
            if given:
                raise OptionError(flag, "captures the single-process training step; a distributed step is DDP's: "
                                  "drop it", kind="run")
    if jit and compile:
        raise ZooError("--jit and --compile are two ways of capturing the same step: give one of them")
    if (jit or compile) and not caps.jit:
        flag = "--jit" if jit else "--compile"
        traced = [n for n, c in OBJECTIVES.items() if c.capability("caps").jit]
        raise ZooError(f"{flag} captures {', '.join(traced)}; {label} is not one of them (its step is not one "
                       f"surrogate loss and one backward pass): drop {flag}")


def check_run(config, model: ZooModel, data: Optional[DataFacts] = None, distributed: bool = False) -> None:
    """Raise :class:`ZooError` unless the run of ``config`` on ``data`` is valid, before anything is built
    but ``model`` (built from :func:`model_options`); ``data=None`` leaves out the rules about data.

    ``config`` is a :class:`~zoo.experiments.config.RunConfig` (its names and options already checked
    when it was made); ``distributed``: trained data-parallel (``--distributed`` or under torchrun).
    """
    guide_options = dataclasses.asdict(config.resolved("guide"))
    objective_options = dataclasses.asdict(config.resolved("objective"))
    estimator = objective_options.get("estimator")
    if data is not None:
        check_covariates(model, data)
        check_data_kind(model, data)
    check_levels(model, data)
    check_capture(config.objective, objective_options, config.jit, config.compile, distributed)
    check_combination(model, config.guide, config.objective, guide_options, objective_options)
    check_guide_options(model, config.guide, guide_options)
    if guide_options.get("structured") and not any(given for _, given in posterior_order(
            model.latents, model.observed_parents)):
        raise OptionError("structured", f"conditions each latent on the latents its posterior couples it with, "
                          f"and {model.display_name}'s {len(model.latents)} latent(s) ("
                          f"{', '.join(s.name for s in model.latents)}) have none, so it would change nothing: "
                          f"drop it (it applies to models with dependent latents, e.g. sbn, hvae)", kind="guide")
    if config.keep_best and not GUIDES[config.guide].factory.amortized:
        raise OptionError("keep_best", f"picks the epoch with the best validation ELBO, which needs an amortized "
                          f"guide; {config.guide!r} is per-datum: drop it or use amortized", kind="run")
    if config.patience and not config.keep_best:
        raise OptionError("patience", "stops training some epochs after the best validation ELBO, and only "
                          "--keep-best then scores that best epoch: add --keep-best (or drop --patience)", kind="run")
    if config.patience and distributed:
        raise OptionError("patience", "watches the validation ELBO, which only rank 0 computes in a distributed "
                          "run: drop it, or train in one process", kind="run")
    if config.kl_warmup and not objective_capabilities(config.objective, estimator).warmup:
        raise OptionError("kl_warmup", f"weights the latent terms of a bound; "
                          f"{objective_label(config.objective, estimator)} has none to weight "
                          f"(it sums or sleeps its latents): drop it, or use elbo, tracegraph or iwae", kind="run")
    if data is not None:
        check_batch_size(config.batch_size, data.num_train, repr(data.name))


def check_levels(model: ZooModel, data: Optional[DataFacts]) -> None:
    """A k-level likelihood needs data whose values are the integers 0..k-1."""
    if data is None or model.levels is None:
        return
    with_levels = [name for name, c in DATASETS.items() if c.capability("levels")]
    if data.levels is None:
        raise ZooError(f"{model.display_name}'s {model.likelihood} likelihood scores pixels with {model.levels} "
                       f"discrete levels, and dataset {data.name!r} is real-valued; use a dataset of levels "
                       f"({', '.join(with_levels)}) or a gaussian likelihood")
    if data.levels > model.levels:
        raise OptionError("levels", f"is {model.levels}, and dataset {data.name!r} has {data.levels} levels; "
                          f"drop --levels (the dataset's is the default)", kind="model")


def check_data_dir(dataset: str, data_dir: Optional[str]) -> None:
    """Raise :class:`ZooError` for a ``data_dir`` given with a dataset that reads nothing from it (the bundled
    digits, synthetic data, a file named by its path): it would be silently ignored. The command line asks this
    where ``--data-dir`` is given; a script may pass one ``data_dir`` for several datasets, some of which read it."""
    if data_dir is None:
        return
    component = DATASETS[dataset]
    if component.capability("needs_data_dir"):
        return
    readers = [name for name, c in DATASETS.items() if c.capability("needs_data_dir")]
    what = "is read from its own path" if component.capability("file") else "is built in"
    raise DATA_DIR_UNUSED.error(f"--data-dir {data_dir} with dataset {dataset!r}, which {what} (the datasets read "
                                f"from files: {', '.join(readers)})")


def check_covariates(model: ZooModel, data: DataFacts) -> None:
    """Raise :class:`ZooError` unless the model takes exactly the data's covariates: a model file declaring
    ``covariates=`` (:mod:`zoo.models.pyro_model`) gets the last ``covariate_dim`` columns there."""
    taken = getattr(model, "covariate_dim", 0)
    if data.covariate_dim and taken != data.covariate_dim:
        raise ZooError(f"--covariates {','.join(data.covariates)} are per-datum inputs for a model file whose model "
                       f"takes them, model(x, covariates=None, idx=None, N=None); {model.display_name} does not: "
                       f"drop --covariates or give such a model")


def observed_likelihoods(model: ZooModel, data: DataFacts) -> List[Tuple[str, Tuple[int, ...], str, Optional[int]]]:
    """(likelihood, columns, distribution, levels) of each observed part of the model's data row: a model file's
    observed sites (:class:`~zoo.usercode.trace.ObservedSite`), else the model's one likelihood over every data
    column (covariates aside)."""
    observed = getattr(model, "observed", None)
    if observed:
        return [(o.likelihood, tuple(o.columns), o.distribution or o.likelihood, o.levels) for o in observed]
    columns = tuple(range(data.x_dim - data.covariate_dim))
    return [(model.likelihood, columns, str(model.likelihood).capitalize(), getattr(model, "levels", None))]


def check_data_kind(model: ZooModel, data: DataFacts) -> None:
    """Raise :class:`ZooError` unless each column the model observes holds what its likelihood needs:
    0/1 for a Bernoulli (``"bernoulli"``), non-negative integers for a count likelihood (``"counts"``:
    Poisson, binomial, negative binomial...), the integers 0..k-1 for a k-level one (``"levels"``); a
    Gaussian takes any value. The error names a column and a value that breaks the assumption, and
    what to change. (Without per-column facts, e.g. made by hand, only ``binary`` is checked.)"""
    if not data.column_kinds:
        if model.likelihood == "bernoulli" and not data.binary:
            raise ZooError(f"dataset {data.name!r} has values other than 0 and 1: a Bernoulli likelihood needs 0/1; "
                           f"binarize the data or use a gaussian likelihood")
        return
    for likelihood, columns, distribution, levels in observed_likelihoods(model, data):
        for c in columns:
            kind, value = data.column_kinds[c]
            where = f"dataset {data.name!r}: column {c} holds {value:g}"
            if likelihood == "bernoulli" and kind != "binary":
                raise ZooError(f"{where}: a {distribution} likelihood needs 0/1; binarize the data or use a gaussian "
                               f"likelihood")
            if likelihood in ("counts", "levels") and kind == "reals":
                need = "counts 0, 1, 2, ..." if likelihood == "counts" else f"the integers 0..{levels - 1}"
                raise ZooError(f"{where}: a {distribution} likelihood needs {need}; round the data or use a gaussian "
                               f"likelihood")
        if likelihood == "levels" and levels is not None and data.maximum > levels - 1:
            raise ZooError(f"dataset {data.name!r} holds {data.maximum:g}: a {distribution} likelihood over {levels} "
                           f"levels needs the integers 0..{levels - 1}; use one with {int(data.maximum) + 1} levels "
                           f"or rescale the data")


def check_step(config, model: ZooModel, guide, objective, x: torch.Tensor, device: torch.device) -> None:
    """Raise :class:`ZooError` where one trial step on two rows of ``x`` (the training data) shows the run
    cannot go: ``--compile`` cannot capture the step (something in it reads a tensor's value in Python,
    or no C++ compiler for a CPU), or the objective's assumptions fail on the model's sites (free bits:
    a latent site that is not a Normal). Nothing is trained; random state is left as it was."""
    from zoo.objectives.base import for_model
    objective = for_model(objective, model)                 # the objective as the run will use it
    n, N = min(2, x.shape[0]), x.shape[0]
    if config.compile:
        step_model = guide.training_model(model) if hasattr(guide, "training_model") else model
        objective.check(step_model, guide, x[:n], idx=torch.arange(n), N=N, device=device)
    elif hasattr(objective, "check"):
        objective.check(model.model, guide, x[:n], idx=torch.arange(n), N=N)


def needs_step(config, objective) -> bool:
    """Whether :func:`check_step` has anything to try for this run (so :func:`verdict` builds the guide)."""
    return bool(config.compile) or hasattr(objective, "check")


def verdict(config, data, device: Optional[torch.device] = None, model: Optional[ZooModel] = None,
            distributed: Optional[bool] = None) -> Optional[ZooError]:
    """``None`` if ``pyro-zoo train`` accepts the run of ``config`` on ``data`` (a :class:`~zoo.data.Dataset`),
    else the error it refuses it with; what ``pyro-zoo list`` prints for a run.

    The checks are :func:`zoo.experiments.run.prepare`'s, in its order, up to where training would start:
    ``model`` (:func:`build_run_model`, when not given), :func:`check_run`, the data tensor
    against the model (:meth:`~zoo.core.contract.ZooModel.validate_data`: the data are what their
    :class:`DataFacts` say), and, where it has anything to try, :func:`check_step` on ``device``
    (default: the CPU).
    ``distributed`` defaults to ``config.distributed``.
    """
    distributed = config.distributed if distributed is None else distributed
    try:
        facts = DataFacts.of(data)
        if model is None:
            model = build_run_model(config, data, facts)
        check_run(config, model, facts, distributed)
        model.validate_data(data.train, what=f"dataset {data.name!r}")
        objective = build_objective(config.objective, **dataclasses.asdict(config.resolved("objective")),
                                    jit=config.jit, compile=config.compile)
        if needs_step(config, objective):
            guide = GUIDES[config.guide].build(model, facts.num_train, **dataclasses.asdict(config.resolved("guide")))
            model.bind_guide(guide)
            check_step(config, model, guide, objective, data.train, device or torch.device("cpu"))
    except ZooError as e:
        return e
    return None


def compatibility(x_dim: int = 64, model_options: Optional[Dict[str, Dict]] = None
                  ) -> List[Tuple[str, str, str, Optional[str]]]:
    """Every registered (model, guide, objective) at their default options, with ``None`` if valid, else
    the reason it is not: the grid ``pyro-zoo list`` prints, for any data (the rules about data need
    the data: :func:`verdict`).

    ``model_options`` (per model name) changes the models checked, e.g. a latent space
    small enough for ``enum``.
    """
    rows = []
    for m in MODELS:
        model = MODELS.build(m, x_dim, **(model_options or {}).get(m, {}))
        for g in GUIDES:
            for o in OBJECTIVES:
                try:
                    check_combination(model, g, o)
                    rows.append((m, g, o, None))
                except ZooError as e:
                    rows.append((m, g, o, str(e)))
    return rows


def grid_axes_without_effect(model: ZooModel) -> Dict[str, str]:
    """The axes of a grid (``"guide"``, ``"objective"``) that cannot change its figures on ``model``, each with
    the sentence that says why; {} where both can.

    A guide family is its q(z_n | x_n) of the *local* latents (inside the data plate): the global latents theta
    are guided by the one :class:`~guides.globals.GlobalGuide` in every family, stepping at the same rate
    (:func:`zoo.training.optimizer.make_optimizer`). And an objective is a bound on log p(x_n | theta) over the
    local latents: with none, each is E_q(theta)[log p(X | theta)] - KL(q(theta) || p(theta)), the ELBO of q(theta)
    (IWAE's K particles share theta, so its weights are all equal). So for a model whose latents are all global
    both columns of a grid differ by Monte Carlo noise alone (and an amortized family's encoder is unused)."""
    global_latents = tuple(model.global_latents)
    if model.latents or not global_latents:
        return {}
    names = ", ".join(s.name for s in global_latents)
    return {"guide": f"{model.display_name}'s latents ({names}) are all global, and the guide families differ only "
                     f"in q(z | x) of local latents: every cell fits the same q(θ) at the same step size, so the "
                     f"guide column differs by Monte Carlo noise alone (an amortized family's encoder is unused)",
            "objective": f"{model.display_name} has no local latents, so every objective is the ELBO of q(θ) "
                         f"({names}): the objective column differs by Monte Carlo noise alone"}


def likelihood_name(model: ZooModel, data: DataFacts) -> str:
    """The likelihood of the model's data, as results.json and compare.md name it: each observed part's
    distribution (:func:`observed_likelihoods`), with its columns where there are several, e.g. ``Bernoulli``,
    ``Poisson (columns 0-8); Normal (column 9)``."""
    parts = observed_likelihoods(model, data)

    def columns(cs):
        return f"column {cs[0]}" if len(cs) == 1 else f"columns {cs[0]}-{cs[-1]}"
    return "; ".join(f"{distribution}" + (f" ({columns(cs)})" if len(parts) > 1 and cs else "")
                     for _, cs, distribution, _ in parts)


def likelihood_warning(model: ZooModel, data: DataFacts) -> Optional[str]:
    """A sentence where the likelihood fits the data's values but not their kind: a Gaussian density over data
    whose observed columns are all counts (non-negative integers, :mod:`zoo.data.kinds`). It trains, but its
    NLL is a density of reals (it can be negative, and is no code length), and a count model says more; None
    otherwise. (Where a likelihood cannot score the values at all, :func:`check_data_kind` refuses the run.)"""
    parts = observed_likelihoods(model, data)
    if not data.column_kinds or data.levels is not None:
        return None
    for likelihood, columns, distribution, _ in parts:
        if likelihood == "gaussian" and columns and all(data.column_kinds[c][0] == "counts" for c in columns):
            return (f"dataset {data.name!r} holds counts (non-negative integers) and {model.display_name}'s "
                    f"likelihood is a {distribution} density over reals: its NLL is a density, not a probability of "
                    f"the counts; for counts use a count likelihood (a Poisson model file, e.g. "
                    f"examples/count_models.py:poisson_pca) or, for k levels, --likelihood categorical --levels k")
    return None


# -- rules of one command ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Rule:
    """A rule that one command checks besides the (model, guide, objective) combinations above, stated once.

    ``pyro-zoo list`` prints every rule of :data:`RULES` in its :attr:`text`, and the check that applies it
    raises :meth:`error`, whose message ends in that very text: what ``list`` says is what the command says.

    Arguments:
        name: its key in :data:`RULES`.
        command: where it is checked (``"train"``, ``"compress"``, ``"eval --gaps"``, ...).
        text: the rule and what to do instead, one line.
    """

    name: str
    command: str
    text: str

    def error(self, broken_by: str) -> ZooError:
        """The refusal of a run that breaks the rule: ``broken_by`` says what in the run breaks it, then the rule."""
        return ZooError(f"{broken_by}: {self.text}")


#: Every :class:`Rule`, by name, in the order ``pyro-zoo list`` prints them.
RULES: Dict[str, Rule] = {}


def _rule(name: str, command: str, text: str) -> Rule:
    RULES[name] = Rule(name, command, text)
    return RULES[name]


DATA_DIR_UNUSED = _rule("data_dir_unused", "train", "--data-dir is where the datasets stored in files live; a "
                        "dataset that reads nothing there would ignore it: drop --data-dir")
BATCH_SIZE = _rule("batch_size", "train", "a minibatch is drawn from the training data, so --batch-size is at most "
                   "their number: use a smaller one")
SLEEP_NEEDS_AMORTIZED = _rule(
    "sleep_needs_amortized", "train", "insomnia < 1 trains the guide on dreamt data (sleep-phi), which needs an "
    "amortized guide (a per-datum guide has no row for a dreamt x): use insomnia 1 or an amortized guide")
SLEEP_NEEDS_GENERATION = _rule(
    "sleep_needs_generation", "train", "insomnia < 1 trains the guide on data dreamt from the model, which must "
    "generate every column of x: use insomnia 1")
COMPRESS_NEEDS_AMORTIZED = _rule(
    "compress_needs_amortized", "compress", "compress codes new data with q(z | x), which needs an amortized guide: "
    "compress a run trained with --guide amortized")
COMPRESS_NEEDS_MEAN_FIELD = _rule(
    "compress_needs_mean_field", "compress", "bits-back coding pops the latents in the model's order (top-down), and "
    "a structured guide conditions them bottom-up: use a mean-field guide (amortized without --structured)")
COMPRESS_NEEDS_LOCAL_LATENTS = _rule(
    "compress_needs_local_latents", "compress", "bits-back coding codes each datum with its own latents, and a global "
    "latent (outside the data plate) belongs to no datum: compress a model without global latents")
COMPRESS_NEEDS_LEVELS = _rule(
    "compress_needs_levels", "compress", "compress codes discrete data, with a likelihood that is a probability over "
    "pixel levels, not a density: use a Bernoulli or k-level likelihood (categorical, dlogistic, dmol)")
COMPRESS_NEEDS_NORMAL = _rule(
    "compress_needs_normal", "compress", "bits-back coding discretizes each real latent under a diagonal Normal "
    "prior and posterior: use the standard prior and a Gaussian guide (amortized)")
DEFENSIVE_NEEDS_PARTICLES = _rule(
    "defensive_needs_particles", "eval", "the defensive proposal widens each guide site per particle, which needs "
    "every guide site inside the data plate to carry the particle dimension: write the guide's shapes from the right "
    "(z.shape[:-1]), or evaluate with --eval-proposal guide")
GAPS_NEEDS_AMORTIZED = _rule(
    "gaps_needs_amortized", "eval --gaps", "the inference gaps need an amortized guide (a per-datum guide's "
    "amortization gap is 0 by construction): use --gaps on an amortized, iaf or relaxed run")
GAPS_NEEDS_MEAN_FIELD = _rule(
    "gaps_needs_mean_field", "eval --gaps", "the per-datum counterpart of a structured guide q(z2 | z1, x) is not "
    "defined (its conditional heads read sampled values, not per-datum numbers): use --gaps on a mean-field run")
GAPS_NEEDS_COUNTERPART = _rule(
    "gaps_needs_counterpart", "eval --gaps", "the inference gaps refit a per-datum counterpart of the guide, defined "
    "for the amortized, relaxed, iaf and exact families: use --gaps on an amortized, iaf or relaxed run")
BDMC_NEEDS_GENERATION = _rule(
    "bdmc_needs_generation", "eval --estimator bdmc", "BDMC simulates data from the model, which must generate "
    "every column of x: use --estimator ais on the run's data instead")
ANNEALING_NEEDS_LOCAL_LATENTS = _rule(
    "annealing_needs_local_latents", "eval --estimator ais|bdmc", "AIS and BDMC anneal each datum's local latents, "
    "and without any log p(x_n | theta_hat) is exact: use the importance-sampling estimate (pyro-zoo eval)")
MANIFOLD_HAS_NO_COUNTERPART = _rule(
    "manifold_has_no_counterpart", "eval --gaps|compress", "the amortization gap's per-datum refit and bits-back "
    "coding's equal-mass bins are written for Normal and discrete posteriors, not for a latent on the sphere or in "
    "hyperbolic space: use --latent gaussian for them")
GUIDE_NEEDS_DENSITY = _rule(
    "guide_needs_density", "eval --estimator ais|bdmc", "AIS and BDMC from the guide start at q(z | x), which needs "
    "its density at any z, and a guide without a marginal density (nor a q_0 to start from, as the hamiltonian guide "
    "has) has one only at its own draws: use --ais-path prior, or the importance-sampling estimate (pyro-zoo eval)")
GUIDE_MOVES_NEED_DENSITY = _rule(
    "guide_moves_need_density", "eval --estimator ais|bdmc --ais-guide-moves", "guide moves propose from the guide "
    "and score each chain's state under it, which needs its density at any z: drop --ais-guide-moves")
COMPRESS_NEEDS_DENSITY = _rule(
    "compress_needs_density", "compress", "bits-back coding codes each datum's latents with q(z | x), which needs "
    "its density at any z, and a guide without a marginal density (the hamiltonian guide's augmented term) has one "
    "only at its own draws: compress a run whose guide has one (amortized, iaf), or score this run with pyro-zoo "
    "eval")
BDMC_NEEDS_AMORTIZED = _rule(
    "bdmc_needs_amortized", "eval --estimator bdmc", "BDMC's guide path starts at q(z | x) of simulated data, which "
    "needs an amortized guide: pass --ais-path prior")


def check_compress(model: ZooModel, guide) -> None:
    """Raise :class:`ZooError` unless ``pyro-zoo compress`` can code data with ``model`` and its trained ``guide``
    by bits-back ANS (:class:`~zoo.evaluation.bitsback.BitsBackCoder`): an amortized, mean-field guide, local
    latents only, and a likelihood over pixel levels. That each real latent's prior and posterior are diagonal
    Normals shows only on the coder's traces, which raise :data:`COMPRESS_NEEDS_NORMAL`."""
    family = getattr(guide, "family", type(guide).__name__)
    if not getattr(guide, "amortized", True):
        raise COMPRESS_NEEDS_AMORTIZED.error(f"the {family!r} guide is fitted per datum")
    if getattr(guide, "structured", False):
        raise COMPRESS_NEEDS_MEAN_FIELD.error(f"the {family!r} guide is structured")
    if not getattr(guide, "has_density", True):
        raise COMPRESS_NEEDS_DENSITY.error(f"the {family!r} guide has no marginal density")
    if model.global_latents:
        names = ", ".join(s.name for s in model.global_latents)
        raise COMPRESS_NEEDS_LOCAL_LATENTS.error(f"{model.display_name} has global latents ({names})")
    _check_euclidean(model.latents)
    compress_levels(model)


def compress_levels(model: ZooModel) -> int:
    """k, the levels of every column ``pyro-zoo compress`` codes, or :data:`COMPRESS_NEEDS_LEVELS` raised: a model's
    ``data_levels``; for a model file, those of each observed site (Bernoulli: 2, a k-level Categorical or binomial:
    k), the columns no site observes being covariates, given to the coder and not coded."""
    observed = getattr(model, "observed", None)
    if not observed:
        if model.data_levels is None:
            raise COMPRESS_NEEDS_LEVELS.error(f"{model.display_name}'s {model.likelihood} likelihood is a density")
        return model.data_levels
    levels = {o.name: 2 if o.likelihood == "bernoulli" else o.levels if o.likelihood == "levels" else None
              for o in observed}
    for o in observed:
        if levels[o.name] is None:
            raise COMPRESS_NEEDS_LEVELS.error(f"{model.display_name} observes site {o.name!r} with a "
                                              f"{o.distribution or o.likelihood}")
    if len(set(levels.values())) > 1:
        shown = ", ".join(f"{name!r}: {k}" for name, k in levels.items())
        raise COMPRESS_NEEDS_LEVELS.error(f"{model.display_name}'s observed sites have different levels ({shown}), "
                                          f"and a code has one k for every column")
    return next(iter(levels.values()))


def check_gaps(guide) -> None:
    """Raise :class:`ZooError` unless ``eval --gaps`` can refit a per-datum counterpart q* of ``guide``'s family:
    an amortized, mean-field guide of a family that has one."""
    family = getattr(guide, "family", type(guide).__name__)
    if not getattr(guide, "amortized", True):
        raise GAPS_NEEDS_AMORTIZED.error(f"this run's {family!r} guide is fitted per datum already")
    if getattr(guide, "structured", False):
        raise GAPS_NEEDS_MEAN_FIELD.error(f"this run's {family!r} guide is structured")
    if family not in ("amortized", "relaxed", "iaf", "exact"):
        raise GAPS_NEEDS_COUNTERPART.error(f"the {family!r} guide has none")
    _check_euclidean(getattr(guide, "sites", ()))


def _check_euclidean(sites) -> None:
    manifold = [f"{s.name} ({s.support})" for s in sites if s.support in MANIFOLDS]
    if manifold:
        raise MANIFOLD_HAS_NO_COUNTERPART.error(f"{', '.join(manifold)} is not in R^d")


def check_annealing(model: ZooModel, estimator: str, guide=None, path: str = "prior",
                    guide_moves: bool = False) -> None:
    """Raise :class:`ZooError` unless ``estimator`` (``"AIS"`` or ``"BDMC"``) has local latents of ``model`` to
    anneal (it moves exactly ``model.latents``; those on the sphere or in hyperbolic space through their family's
    chart of R^k), on the guide's path a ``guide`` with a density, and with ``guide_moves`` one with a density
    on either path."""
    if path == "guide" and guide is not None and not getattr(guide, "has_density", True) \
            and not hasattr(guide, "initial_guide"):
        raise GUIDE_NEEDS_DENSITY.error(f"the {getattr(guide, 'family', type(guide).__name__)!r} guide has no "
                                        f"marginal density")
    if guide_moves and guide is not None and not getattr(guide, "has_density", True):
        raise GUIDE_MOVES_NEED_DENSITY.error(f"the {getattr(guide, 'family', type(guide).__name__)!r} guide has no "
                                             f"marginal density")
    if not model.latents:
        raise ANNEALING_NEEDS_LOCAL_LATENTS.error(f"{model.display_name} has no local latents, so {estimator} has "
                                                  f"nothing to anneal")


def check_bdmc(model: ZooModel, guide, path: str) -> None:
    """Raise :class:`ZooError` unless BDMC (``eval --estimator bdmc``) can run on ``model``: it simulates data, so
    the model must generate them, and the guide path needs an amortized guide."""
    refusal = model.cannot_generate
    if refusal:
        raise BDMC_NEEDS_GENERATION.error(refusal)
    if path == "guide" and not getattr(guide, "amortized", True):
        raise BDMC_NEEDS_AMORTIZED.error(f"the {getattr(guide, 'family', type(guide).__name__)!r} guide is fitted "
                                         f"per datum")


def check_fit(model: ZooModel, guide, objective) -> None:
    """Raise :class:`ZooError` where ``zoo.fit`` is handed a guide and a built objective that ``train`` refuses
    together: the combination of a zoo guide family and an objective the zoo built (:func:`check_combination`,
    read off ``guide.family`` and ``objective.estimator_row``), and the sleep phase (:func:`check_sleep`). A
    guide of the user's own or an objective built elsewhere is checked by its trial run and its own guards."""
    check_sleep(model, guide, getattr(objective, "insomnia", None))
    row = getattr(objective, "estimator_row", None)
    family = getattr(guide, "family", None)
    if row is None or family not in GUIDES or type(guide) is not GUIDES[family].factory:
        return
    check_combination(model, family, row.bound, {"structured": bool(getattr(guide, "structured", False))},
                      {"estimator": row.name})


def check_batch_size(batch_size: int, num_data: int, name: str = "the training data") -> None:
    """Raise :class:`OptionError` for a minibatch larger than the ``num_data`` training data of ``name``."""
    if batch_size > num_data:
        raise OptionError("batch_size", f"{batch_size} is larger than the {num_data} training data of {name}: "
                          f"{BATCH_SIZE.text} (at most {num_data})", kind="run")


def rules_text() -> str:
    """Every rule of :data:`RULES`, one line each with its command: what ``pyro-zoo list`` prints."""
    width = max(len(r.command) for r in RULES.values())
    return "\n".join(f"  {r.command:<{width}}  {r.text}" for r in RULES.values())
