"""Objectives on two axes: the bound that is maximized, and the estimator of its gradient.

A **bound** is what a run maximizes per datum: ``elbo`` (E_q[log w]), ``iwae``
(E[log (1/K) sum_k w_k]), ``renyi`` (order alpha, IWAE at 0 and the ELBO at 1), and
``rws``, reweighted wake-sleep, which is not one bound but a pair of updates (the IWAE
bound for the model, wake and sleep phases for the guide). An **estimator** is how a
gradient of that bound is formed from samples: reparameterized, score function,
leave-one-out baselines, path derivatives, exact sums. Each bound registers itself in
:data:`zoo.core.components.OBJECTIVES` (:func:`register_bound`) with a typed options
dataclass whose ``estimator`` field picks one row of the bound's table of
:class:`Estimator` s, and each row declares what it assumes of the guide and the model
and what it supports (``--jit``, data-parallel training, KL warm-up). The rules
(:mod:`zoo.rules`: the combinations, ``--jit``, ``--compile``, DDP) and ``pyro-zoo list`` read
those declarations and nothing else.

**Presets** (:func:`register_preset`: ``dreg``, ``tracemeanfield``, ``renyi_pyro``, ...) are
registered objectives that fix (bound, estimator) and take the bound's other options, so
``--objective dreg`` is ``--objective iwae --estimator dreg``, sample for sample. A bound's own name means its
default estimator (``iwae`` is ``iwae --estimator reparam``).

Example::

    >>> objective_capabilities("dreg") == objective_capabilities("iwae", "dreg")
    True
    >>> preset_of("tracemeanfield"), preset_of("iwae")
    (('elbo', 'analytic_kl'), ('iwae', 'reparam'))
    >>> objective_capabilities("elbo", "dreg")
    Traceback (most recent call last):
    ...
    zoo.core.errors.ZooError: estimator 'dreg' is not one of the elbo bound's estimators: auto, analytic_kl, tracegraph, reinforce, rloo, stl, enum, arm, disarm, arsm, rebar, relax (dreg is an estimator of iwae)
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Dict, Mapping, Optional, Sequence, Tuple

from zoo.core.errors import ZooError
from zoo.core.components import OBJECTIVES, OptionError, Options, option

__all__ = ["Estimator", "Particles", "BoundOptions", "register_bound", "register_preset", "preset_of",
           "objective_capabilities", "objective_label", "bounds", "presets", "build_objective",
           "split_objective"]


@dataclass(frozen=True)
class Estimator:
    """One gradient estimator of a bound: how to build it, what it assumes and what it supports.

    Arguments:
        name: its value of the bound's ``estimator`` option (``"dreg"``).
        description: one line for ``pyro-zoo list``.
        build: ``build(num_particles, **the bound's other options)``, a :class:`pyro.infer.ELBO`.
        default_particles: K when ``particles`` is not given.
        min_particles: the smallest K it accepts (2 for leave-one-out baselines).
        needs_reparam: differentiates through the samples, so the guide must reparameterize them.
        needs_enumeration: sums over the discrete latents: a discrete guide and a small latent space.
        uses_baselines: uses the guide's ``baseline`` (score-function control variates).
        needs_normal_guide: evaluates log q at detached parameters, which needs a guide of Normal sites.
        needs_guide_density: evaluates or differentiates log q(z | x) at a z held fixed (score-function terms, a
            wake update, a closed-form KL), which a guide without a marginal density (``has_density`` False: the
            hamiltonian guide) cannot give.
        separate_surrogates: differentiates model and guide parameters by separate surrogates, so
            neither may borrow the other's modules.
        needs_mean_field_guide: takes each site's KL in closed form, exact only for a guide that is
            mean-field across sites (not a ``structured`` one).
        needs_unit_kl: takes each latent unit's KL in closed form (free bits): a guide of Normal sites,
            mean-field across sites, over a model whose latent sites are Normal too.
        local_latents_only: has no update for global latents (outside the data plate): refused for models
            that have them.
        needs_bernoulli_latents: sets the guide's bits itself, to an antithetic pair (ARM, DisARM) or to relaxed
            samples (REBAR, RELAX): the model's latents one binary site, sampled by a guide of Bernoulli bits.
        several_bernoulli_layers: with ``needs_bernoulli_latents``, the model's latents may be several binary
            sites (the layers of an SBN), sampled by a guide that draws each from x alone: then all the layers'
            bits are one vector of independent Bernoulli bits, to which the estimator applies as to one layer.
        structured_bernoulli_layers: with ``several_bernoulli_layers``, a guide that samples the layers in turn
            (``structured``, q(z2 | z1, x)) too, by a pair per layer (ARM, DisARM: :mod:`zoo.objectives.arm`).
        needs_categorical_latents: sets the guide's categoricals itself, to swapped Dirichlet actions (ARSM): the
            model's latents one categorical site in one-hot form, sampled by a guide of categoricals.
        warmup: ``kl_warmup`` is defined (the latent terms are weighted, not summed or slept).
        jit: one surrogate loss and one backward pass per step, which ``--jit`` and ``--compile`` can capture.
        ddp: one differentiable loss, which data-parallel training needs.
        bound: the bound it estimates (filled in by :func:`register_bound`).

    What an estimator supports (``warmup``, ``jit``, ``ddp``) defaults to ``False``: a new estimator is
    refused those until its author says it supports them. An estimator class that declares its own
    particles and reparameterization (a :class:`~zoo.objectives.base.PerDatumObjective`) gets its row
    from :meth:`of`, which reads them, so they are declared once.
    """

    name: str
    description: str
    build: Callable[..., Any] = dataclasses.field(compare=False)
    default_particles: int = 1
    min_particles: int = 1
    needs_reparam: bool = False
    needs_enumeration: bool = False
    uses_baselines: bool = False
    needs_normal_guide: bool = False
    needs_guide_density: bool = False
    separate_surrogates: bool = False
    needs_mean_field_guide: bool = False
    needs_unit_kl: bool = False
    local_latents_only: bool = False
    needs_bernoulli_latents: bool = False
    several_bernoulli_layers: bool = False
    structured_bernoulli_layers: bool = False
    needs_categorical_latents: bool = False
    warmup: bool = False
    jit: bool = False
    ddp: bool = False
    bound: str = ""

    #: what an estimator class declares itself, and :meth:`of` reads
    CLASS_DECLARED: ClassVar[Tuple[str, ...]] = ("default_particles", "min_particles", "needs_reparam")

    @classmethod
    def of(cls, objective: type, name: str, description: str, build: Callable[..., Any],
           **capabilities) -> "Estimator":
        """The row of the estimator class ``objective``: its ``default_particles``, ``min_particles`` and
        ``needs_reparam`` read from the class, the rest of what it assumes and supports from ``capabilities``."""
        restated = sorted(set(cls.CLASS_DECLARED) & set(capabilities))
        if restated:
            raise ValueError(f"estimator {name!r}: {', '.join(restated)} is declared by {objective.__name__}; "
                             f"do not restate it on the row")
        return cls(name, description, build, **{k: getattr(objective, k) for k in cls.CLASS_DECLARED},
                   **capabilities)

    @property
    def estimator(self) -> str:
        return self.name


@dataclass
class Particles(Options):
    """The option every objective takes; a preset's options are its bound's without ``estimator``.

    ``particles`` is checked against the chosen estimator's ``min_particles`` here, where every
    caller resolves an objective's options (the CLI, a run's config, :func:`build_objective`).
    """

    #: the estimator a preset fixes (set by :func:`register_preset`; a bound's options name theirs)
    fixed_estimator: ClassVar[Optional[Estimator]] = None
    particles: Optional[int] = option(None, "K particles per datum (default: the estimator's: 1; 2 for rloo; 5 for "
                                      "iwae, renyi, rws and their estimators; not used by enum)", minimum=1)

    def chosen_estimator(self) -> Optional[Estimator]:
        """The row of the estimator these options choose (``None`` for options of no registered objective)."""
        return self.fixed_estimator

    def validate(self) -> None:
        super().validate()
        row = self.chosen_estimator()
        if row is not None and self.particles is not None and self.particles < row.min_particles:
            raise OptionError("particles", f"{self.particles}: the {row.bound} bound's estimator {row.name!r} needs "
                              f"at least {row.min_particles} particles per datum; pass --particles "
                              f"{row.min_particles} or more", kind="objective")

    def refine(self, caps: Estimator) -> Estimator:
        """What the estimator ``caps`` assumes and supports with these options (an option such as the
        ELBO's ``free_bits`` can add assumptions); by default, ``caps`` unchanged."""
        return caps


def estimator_option(default: str) -> Any:
    """The ``estimator`` field of a bound's options, defaulting to ``default``."""
    return option(default, "the bound's gradient estimator (each bound's estimators: 'pyro-zoo list')")


@dataclass
class BoundOptions(Particles):
    """Base of a bound's options: ``estimator`` names a row of the bound's table (:class:`Estimator`).

    A subclass sets ``bound`` and redeclares ``estimator`` with :func:`estimator_option` (its default).
    """

    bound: ClassVar[str] = ""
    estimator: str = estimator_option("")

    def chosen_estimator(self) -> Estimator:
        return _estimator_of(self.bound, self.estimator, OptionError)


def _estimators(name: str) -> Dict[str, Estimator]:
    return OBJECTIVES[name].capability("estimators")


def _estimator_of(bound: str, estimator: str, error: type = ZooError) -> Estimator:
    """The row ``estimator`` of ``bound``'s table; else one line naming the bound's estimators."""
    table = _estimators(bound)
    if estimator in table:
        return table[estimator]
    others = [b for b in bounds() if estimator in _estimators(b)]
    hint = f" ({estimator} is an estimator of {', '.join(others)})" if others else ""
    problem = f"{estimator!r} is not one of the {bound} bound's estimators: {', '.join(table)}{hint}"
    if error is OptionError:
        raise OptionError("estimator", problem, kind="objective")
    raise error(f"estimator {problem}")


def register_bound(name: str, *, options: type, default: str, description: str,
                   estimators: Sequence[Estimator]) -> Dict[str, Estimator]:
    """Register the bound ``name`` with its table of estimators; return the table.

    ``options`` is a :class:`BoundOptions` subclass whose ``bound`` is ``name`` and whose
    ``estimator`` defaults to ``default``. Every option other than ``particles`` and
    ``estimator`` is passed to the chosen estimator's ``build``.
    """
    table = {e.name: dataclasses.replace(e, bound=name) for e in estimators}
    declared = {f.name: f.default for f in dataclasses.fields(options)}.get("estimator")
    if default not in table or options.bound != name or declared != default:
        raise ValueError(f"bound {name!r}: its options must say bound={name!r} and default to an estimator "
                         f"of its table ({default!r})")

    def build(particles: Optional[int] = None, estimator: str = default, **bound_options):
        return _build(table[estimator], particles, bound_options)
    OBJECTIVES.register(name, options=options, description=description, bound=name, preset=None,
                        default_estimator=default, estimators=table, caps=table[default])(build)
    return table


def register_preset(name: str, estimator: Estimator, *, options: type = Particles,
                    description: Optional[str] = None) -> None:
    """Register ``name`` as the bound of ``estimator`` with that estimator fixed (a row of a
    :func:`register_bound` table). ``options``: the bound's options without ``estimator``."""
    if any(f.name == "estimator" for f in dataclasses.fields(options)):
        raise ValueError(f"preset {name!r} fixes its estimator; its options must not have one")
    options = dataclasses.make_dataclass(f"{options.__name__}_{name}", [], bases=(options,),
                                         namespace={"fixed_estimator": estimator, "__module__": options.__module__})

    def build(particles: Optional[int] = None, **bound_options):
        return _build(estimator, particles, bound_options)
    text = description or f"{estimator.description} (= {estimator.bound} with estimator {estimator.name})"
    OBJECTIVES.register(name, options=options, description=text, bound=estimator.bound, preset=estimator.name,
                        default_estimator=estimator.name, estimators=None, caps=estimator)(build)


def _build(estimator: Estimator, particles: Optional[int], bound_options: Mapping[str, Any]):
    """The estimator with K particles (its options, K included, were checked when they were resolved), marked with
    its row (``objective.estimator_row``), so that what is handed a built objective (``zoo.fit``) can ask
    :mod:`zoo.rules` whether it fits the guide."""
    objective = estimator.build(estimator.default_particles if particles is None else int(particles), **bound_options)
    objective.estimator_row = estimator
    return objective


def preset_of(name: str, estimator: Optional[str] = None) -> Tuple[str, str]:
    """(bound, estimator) of the objective ``name``, with ``estimator`` as given to a bound (None: its default)."""
    component = OBJECTIVES[name]
    bound, fixed = component.capability("bound"), component.capability("preset")
    if fixed is not None and estimator not in (None, fixed):
        raise ZooError(f"{name!r} is {bound} with estimator {fixed!r}; for estimator {estimator!r} use "
                       f"objective {bound!r} with estimator {estimator!r}")
    return bound, estimator or component.capability("default_estimator")


def objective_capabilities(name: str, estimator: Optional[str] = None,
                           options: Optional[Mapping[str, Any]] = None) -> Estimator:
    """What the objective ``name`` (with ``estimator``, for a bound) assumes and supports; with its
    ``options`` (a dict), as those options refine it (:meth:`Particles.refine`)."""
    if estimator is None:
        caps = OBJECTIVES[name].capability("caps")
    else:
        bound, estimator = preset_of(name, estimator)
        caps = _estimator_of(bound, estimator)
    if options:
        caps = OBJECTIVES[name].resolve(options).refine(caps)
    return caps


def objective_label(name: str, estimator: Optional[str] = None) -> str:
    """How messages name an objective: ``'dreg'``, or ``'iwae' with estimator 'dreg'``."""
    return repr(name) if estimator is None else f"{name!r} with estimator {estimator!r}"


def bounds() -> list:
    """The registered bounds, in registration order."""
    return [n for n, c in OBJECTIVES.items() if c.capability("preset") is None]


def presets() -> Dict[str, Tuple[str, str]]:
    """Every registered objective name -> its (bound, estimator); a bound's name means its default."""
    return {n: preset_of(n) for n in OBJECTIVES}


def build_objective(name: str, particles: Optional[int] = None, alpha: Optional[float] = None,
                    insomnia: Optional[float] = None, jit: bool = False, compile: bool = False, **options):
    """Build the objective ``name`` with K = ``particles`` (default: the estimator's own).

    ``options`` are the objective's other options (``estimator="dreg"`` for a bound). ``alpha``
    and ``insomnia`` may be given to any objective: each goes to the objectives that take it, and
    elsewhere must be left at its neutral value (alpha 0, insomnia 1).

    ``compile=True`` wraps it in :class:`zoo.objectives.compiled.CompiledObjective`: the loss and its backward
    pass captured as one graph and compiled by ``torch.compile`` (the same estimator with no Python per step).
    ``jit=True`` wraps it in :class:`zoo.objectives.jit.JitObjective`, the same capture that falls back (to the
    eager step, or to no generated code without a C++ compiler) where ``compile`` refuses. Which estimators either
    may capture is a rule
    (:func:`zoo.rules.check_capture`, which :func:`zoo.registry.build_objective` and a run ask first).
    """
    component = OBJECTIVES[name]
    takes = {f.name for f in dataclasses.fields(component.options)}
    given = {"particles": particles, **options}
    for key, value, neutral in (("alpha", alpha, 0.0), ("insomnia", insomnia, 1.0)):
        if value is not None and (key in takes or value != neutral):
            given[key] = value
    objective = component.build(**given)
    if compile:
        from zoo.objectives.compiled import CompiledObjective
        return CompiledObjective(objective)
    if jit:
        from zoo.objectives.jit import JitObjective
        return JitObjective(objective)
    return objective


def split_objective(name: str) -> Tuple[str, Optional[str]]:
    """A grid's objective: a registered name (``dreg``), or ``BOUND:ESTIMATOR`` (``iwae:dreg``) for any valid pair,
    including those without a preset name."""
    if ":" not in name:
        return name, None
    bound, estimator = name.split(":", 1)
    if bound not in bounds():
        raise ZooError(f"{name!r}: {bound!r} is not a bound; BOUND:ESTIMATOR takes one of {', '.join(bounds())} "
                       f"(see 'pyro-zoo list')")
    choices = list(OBJECTIVES[bound].capability("estimators"))
    if estimator not in choices:
        raise ZooError(f"{name!r}: {estimator!r} is not an estimator of the {bound} bound: {', '.join(choices)}")
    return bound, estimator
