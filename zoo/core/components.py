"""Components and what they declare: options, capabilities, and the registries that hold them.

Every model, guide family, objective and dataset describes itself here.

A component registers itself where it is defined, with a decorator::

    @MODELS.register("vae", options=VAEOptions, description="VAE, Gaussian prior, MLP decoder")
    class VAE(ZooModel): ...

Its **options** are a dataclass (:class:`Options`) whose fields carry the default, the help
text and the checks (:func:`option`); its **capabilities** are keyword arguments of
``register`` (an objective's ``needs_reparam``, ``jit``, ``ddp``...) or, for guide families,
class attributes (``supports``, ``amortized``, ...). Everything else reads this one source:
the CLI's flags and ``pyro-zoo list`` (:mod:`zoo.cli`), the run configuration and its resume
checks (:mod:`zoo.experiments.config`), the rules that decide which runs are valid
(:mod:`zoo.rules`), the tests and the README's table. A new component is one new file that registers itself (and
one import line in its package's ``__init__``, which is what loads it); its options class
says, in :attr:`Options.test_options`, how the test suite builds a small one, so the suite
covers it with no edit of its own.

Installed packages add models, guides, objectives or datasets through the entry-point
groups ``pyro_zoo.models``, ``pyro_zoo.guides``, ``pyro_zoo.objectives`` and
``pyro_zoo.datasets``: each entry point names a module, and importing it registers its
components.

Names that are not registered can still be looked up through a *resolver*
(:meth:`Registry.add_resolver`): ``MODELS`` resolves ``FILE.py:NAME`` to the user's own Pyro
model (:mod:`zoo.models.model_files`), so the CLI, ``compare``, ``eval`` and ``gradients`` take it
wherever they take a model name. A component whose identity lives outside the zoo declares the
capability ``pinned_options``, a callable giving options that a run's config records when it is
made (a model file's SHA-256), so that a resumed or re-evaluated run can refuse a changed source.

Errors speak the Python API's names (``latent_dim``); only the CLI translates them into
flags (``--latent-dim``), using :attr:`OptionError.option`.

Example::

    >>> from zoo.core.components import Options, option, Registry
    >>> from dataclasses import dataclass
    >>> @dataclass
    ... class Toy(Options):
    ...     width: int = option(3, "hidden width", minimum=1)
    >>> toys = Registry("toy")
    >>> @toys.register("box", options=Toy, description="a toy", fast=True)
    ... def box(width):
    ...     return [0] * width
    >>> toys.build("box", width=2), toys["box"].capability("fast")
    ([0, 0], True)
    >>> toys.build("box", width=0)
    Traceback (most recent call last):
    ...
    zoo.core.errors.OptionError: width must be a positive integer, got 0
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import importlib
import math
import typing
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Dict, Iterator, Mapping, Optional, Sequence, Tuple

from zoo.core.errors import OptionError, ZooError, unknown_name

__all__ = ["Options", "NoOptions", "option", "OptionError", "Component", "Registry", "MAX_INT",
           "MODELS", "GUIDES", "OBJECTIVES", "DATASETS", "REGISTRIES"]


def option(default: Any, help: str, *, choices: Optional[Sequence] = None, minimum: Optional[float] = None,
           maximum: Optional[float] = None, positive: bool = False, checkpoint: str = "kept", cli: Any = None) -> Any:
    """A field of an :class:`Options` dataclass.

    Arguments:
        default: the value when the option is not given (``None``: decided by the component).
        help: one line for ``--help`` and ``pyro-zoo list``.
        choices: the allowed values.
        minimum: the smallest allowed number (for a tuple: of each element).
        maximum: the largest allowed number (for a tuple: of each element). An integer option
            without one is still bounded by :data:`MAX_INT` (torch's int64): a larger value
            cannot size or index anything, and would end in an ``OverflowError`` deep inside.
        positive: the number must be > 0; a tuple must have at least one element, each > 0.
        checkpoint: what a checkpoint made with another value means: ``"kept"``, a resumed run keeps the value it
            was started with (another is refused); ``"resumable"``, a resumed run may change it (it takes effect
            from the resumed step on); ``"shape"``, it changes parameter shapes, so the checkpoint cannot load.
        cli: ``False`` for no flag, or argparse details (``group``, ``nargs``, ``metavar``) and ``flag``, the CLI
            flag without dashes where it is not the field name with ``-`` for ``_`` (a guide's ``hidden`` is
            ``--guide-hidden``, since models have a ``hidden`` too).
    """
    if checkpoint not in CHECKPOINT_RULES:
        raise ValueError(f"checkpoint must be one of {CHECKPOINT_RULES}, got {checkpoint!r}")
    flag = cli.get("flag") if isinstance(cli, dict) else None
    if isinstance(cli, dict):
        cli = {k: v for k, v in cli.items() if k != "flag"} or None
    return field(default=default, metadata={"help": help, "flag": flag, "choices": tuple(choices) if choices else None,
                                            "minimum": minimum, "maximum": maximum, "positive": positive,
                                            "resumable": checkpoint == "resumable", "cli": cli,
                                            "shape": checkpoint == "shape"})


#: :func:`option`'s ``checkpoint`` rules
CHECKPOINT_RULES = ("kept", "resumable", "shape")


#: The largest integer any option may hold: torch's sizes, indices and seeds are int64.
MAX_INT = 2 ** 63 - 1


@functools.lru_cache(maxsize=None)
def _type_hints(cls) -> Dict[str, Any]:
    """An options class's resolved annotations: resolving them is most of the cost of making options."""
    return typing.get_type_hints(cls)


def _field_type(cls, f) -> Any:
    return _type_hints(cls).get(f.name, f.type)


def base_type(tp) -> Tuple[type, bool]:
    """(element type, is a tuple) of an annotation such as ``Optional[Tuple[int, ...]]``."""
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if typing.get_origin(tp) is typing.Union and len(args) == 1:
        tp = args[0]
    if typing.get_origin(tp) in (tuple, Tuple):
        return typing.get_args(tp)[0], True
    return tp, False


@dataclass
class Options:
    """Base class of a component's options: typed fields made with :func:`option`.

    Values are checked on construction (choices, minimum, positive), and by
    :meth:`validate`, which a subclass extends for checks that involve several fields.
    Tuples may be given as lists (JSON); they are stored as tuples.

    Class attributes:
        test_options: the option values the test suite builds the component with: sizes small
            enough for a quick run (a VAE's ``latent_dim`` 3 and ``hidden`` (16,)), and values that
            exercise what the defaults leave out (a Renyi order other than 0, a sleep phase). A
            component whose defaults serve already declares nothing.
    """

    test_options: ClassVar[Mapping[str, Any]] = {}

    def __post_init__(self):
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            elem, is_tuple = base_type(_field_type(type(self), f))
            if value is None:
                continue
            if is_tuple:
                if isinstance(value, (int, float, str)):
                    value = (value,)
                value = tuple(self._coerce(f.name, v, elem) for v in value)
            else:
                value = self._coerce(f.name, value, elem)
            object.__setattr__(self, f.name, value)
            self._check(f, value, is_tuple)
        self.validate()

    @staticmethod
    def _coerce(name: str, value, elem):
        if elem in (int, float) and isinstance(value, bool):
            raise OptionError(name, f"must be a number, got {value!r}")
        try:
            if elem is int:
                if isinstance(value, float) and not value.is_integer():
                    raise ValueError
                return int(value)
            if elem is float:
                value = float(value)
                if not math.isfinite(value):          # an inf or nan would pass a minimum check, then break a run
                    raise OptionError(name, f"must be a finite number, got {value}")
                return value
            if elem is bool:
                if not isinstance(value, bool):
                    raise ValueError
                return value
        except (TypeError, ValueError, OverflowError):      # OverflowError: int(inf) from a JSON 1e999
            kind = {int: "an integer", float: "a number", bool: "true or false"}[elem]
            raise OptionError(name, f"must be {kind}, got {value!r}") from None
        return value

    @staticmethod
    def _check(f, value, is_tuple: bool) -> None:
        meta = f.metadata
        values = value if is_tuple else (value,)
        if is_tuple and meta.get("positive") and not values:
            raise OptionError(f.name, "must not be empty")
        if meta.get("choices") and value not in meta["choices"]:
            raise OptionError(f.name, f"must be one of {', '.join(map(str, meta['choices']))}, got {value!r}")
        for v in values:
            if None not in (meta.get("minimum"), meta.get("maximum")) and not meta["minimum"] <= v <= meta["maximum"]:
                span = f"from {meta['minimum']} to {meta['maximum']}"
                raise OptionError(f.name, f"must be {span}, got {value!r}" if not is_tuple
                                  else f"must be numbers {span}, got {list(value)}")
            if meta.get("minimum") is not None and v < meta["minimum"]:
                what = ("a positive integer" if meta["minimum"] == 1 and isinstance(v, int)
                        else f"at least {meta['minimum']}")
                raise OptionError(f.name, f"must be {what}, got {value!r}" if not is_tuple
                                  else f"must be numbers of at least {meta['minimum']}, got {list(value)}")
            if meta.get("positive") and not v > 0:
                raise OptionError(f.name, f"must be positive, got {value!r}" if not is_tuple
                                  else f"must be positive numbers, got {list(value)}")
            maximum = meta.get("maximum")
            if maximum is None and isinstance(v, int) and not isinstance(v, bool):
                maximum = MAX_INT
            if maximum is not None and isinstance(v, (int, float)) and v > maximum:
                raise OptionError(f.name, f"must be at most {maximum}, got {value!r}" if not is_tuple
                                  else f"must be numbers of at most {maximum}, got {list(value)}")

    def validate(self) -> None:
        """Checks that involve several fields; raise :class:`OptionError`."""

    def floats_per_datum(self, x_dim: int) -> Sequence[Tuple[str, int, str]]:
        """Lower bounds of the numbers one datum of a training step holds per particle because of an option
        that sizes them (DRAW's steps, MIWAE's groups, TVO's partition), as ``(option, floats, what they
        are)``: :func:`zoo.core.memory.refuse_oversized_run` refuses a value whose bound exceeds the machine
        before anything is built. None by default: most options size parameters, which are checked as built."""
        return ()

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], owner: str = "this component") -> "Options":
        """Build from a (JSON) dict; an unknown key is an error that lists the known ones."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise OptionError(unknown[0], f"is not an option of {owner}; its options are: "
                              f"{', '.join(sorted(known)) or 'none'}")
        return cls(**values)

    def to_dict(self) -> Dict[str, Any]:
        """The options as JSON-ready values (tuples become lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def specs(cls) -> Sequence[dataclasses.Field]:
        return dataclasses.fields(cls)


@dataclass
class NoOptions(Options):
    """For components that take no options."""


@dataclass(frozen=True)
class Component:
    """One registry entry: how to build it, its options class and its capabilities."""

    kind: str
    name: str
    factory: Callable
    options: type
    description: str
    capabilities: Mapping[str, Any] = field(default_factory=dict)

    def capability(self, key: str, default: Any = None) -> Any:
        """A declared capability: a ``register`` keyword, else an attribute of the factory (a class)."""
        if key in self.capabilities:
            return self.capabilities[key]
        return getattr(self.factory, key, default)

    def resolve(self, options: Optional[Mapping[str, Any]] = None) -> Options:
        """The options with defaults filled in and checked."""
        try:
            return self.options.from_dict({k: v for k, v in (options or {}).items() if v is not None},
                                          owner=f"the {self.kind} {self.name!r}")
        except OptionError as e:
            e.kind = e.kind or self.kind
            raise

    def build(self, *args, **options):
        """Build it with ``options`` (checked); an allocation that fails is an :class:`OptionError`
        naming the option that sized it (:func:`zoo.core.memory.sized_by`), not a traceback."""
        from zoo.core.memory import refuse_oversized_parameters, sized_by
        resolved = self.resolve(options)
        sizing = self.sizing_options(resolved)
        # a component composed from parts turns its options' names into them (``from_options``); one whose
        # parameters are the options themselves takes them as keywords
        make = getattr(self.factory, "from_options", None)
        with sized_by(sizing, self.kind, f"the {self.kind} {self.name!r}"):
            built = make(*args, resolved) if make is not None else self.factory(*args, **dataclasses.asdict(resolved))
        refuse_oversized_parameters(built, sizing, self.kind, f"the {self.kind} {self.name!r}")
        return built

    def sizing_options(self, resolved: Options) -> list:
        """(name, value) of the integer options that shape parameters (``shape``), the one furthest
        above its default first: the likeliest cause when the parameters cannot be allocated."""
        try:
            defaults = self.options()
        except TypeError:                       # a required option: no defaults to compare with
            defaults = resolved
        ranked = []
        for f in resolved.specs():
            value = getattr(resolved, f.name)
            numbers = value if isinstance(value, tuple) else (value,)
            if not f.metadata.get("shape") or not numbers or \
                    not all(isinstance(v, int) and not isinstance(v, bool) for v in numbers):
                continue
            default = getattr(defaults, f.name)
            default = [v for v in (default if isinstance(default, tuple) else (default,)) if isinstance(v, int)]
            ranked.append((max(numbers) / max(default or [1]), f.name, value))
        return [(name, value) for _, name, value in sorted(ranked, key=lambda r: -r[0])]


class Registry:
    """Named components of one kind, filled by the modules that define them.

    Arguments:
        kind: ``"model"``, ``"guide"``, ``"objective"`` or ``"dataset"`` (for messages).
        modules: the modules whose import registers the built-in components; imported on
            first lookup (so that defining a component never imports the registry's users).
        entry_points: the entry-point group through which installed packages add components.
    """

    def __init__(self, kind: str, modules: Sequence[str] = (), entry_points: Optional[str] = None):
        self.kind = kind
        self._modules = tuple(modules)
        self.entry_point_group = entry_points
        self._entries: Dict[str, Component] = {}
        self._resolvers: list = []
        self._loaded = not modules and entry_points is None

    def register(self, name: str, *, options: type = NoOptions, description: str = "",
                 **capabilities) -> Callable:
        """Decorator: register a class or function as component ``name``."""
        if not (isinstance(options, type) and issubclass(options, Options)):
            raise TypeError(f"options of {self.kind} {name!r} must be an Options dataclass")

        def decorate(factory):
            if name in self._entries and self._entries[name].factory is not factory:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            text = description or (factory.__doc__ or "").strip().split("\n")[0]
            self._entries[name] = Component(self.kind, name, factory, options, text, dict(capabilities))
            return factory
        return decorate

    @contextlib.contextmanager
    def temporary(self) -> Iterator["Registry"]:
        """A scope for registrations: what is registered inside the ``with`` block is gone after it
        (the test suite's scratch components register themselves this way, as a new file would)."""
        self._load()
        entries = dict(self._entries)
        try:
            yield self
        finally:
            self._entries = entries

    def add_resolver(self, resolve: Callable[[str], Optional[Component]]) -> None:
        """Also look up names that are not registered: ``resolve(name)`` returns a :class:`Component`
        for names it understands (``FILE.py:NAME`` for models), else ``None``. Resolved names are not
        listed (iteration shows the registered components only)."""
        self._resolvers.append(resolve)

    def _load(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        for module in self._modules:
            importlib.import_module(module)
        if self.entry_point_group:
            from importlib.metadata import entry_points
            for ep in entry_points(group=self.entry_point_group):
                try:
                    ep.load()
                except Exception as e:      # a broken plug-in must not break the zoo
                    raise ZooError(f"the installed {self.kind} plug-in {ep.name!r} ({ep.value}) failed to "
                                   f"load: {type(e).__name__}: {e}; fix or uninstall it") from None

    def __getitem__(self, name: str) -> Component:
        self._load()
        if name not in self._entries:
            for resolve in self._resolvers:
                component = resolve(name)
                if component is not None:
                    return component
            error = unknown_name(self.kind, name, self._entries)
            if self._resolvers and self.kind == "model":
                from zoo.core.catalogue import is_trained_name
                if is_trained_name(name):
                    raise ZooError(f"{name!r} is a trained model, not a model family: hold it fixed with --fixed-model "
                                   f"{name} (train, compare), take its parameters with --checkpoint {name} "
                                   f"(gradients), or score it with 'pyro-zoo eval {name}'")
                error = ZooError(f"{error} Or give your own Pyro model as FILE.py:NAME.")
            raise error
        return self._entries[name]

    def __contains__(self, name: object) -> bool:
        self._load()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        self._load()
        return iter(list(self._entries))

    def __len__(self) -> int:
        self._load()
        return len(self._entries)

    def items(self):
        self._load()
        return list(self._entries.items())

    def values(self):
        self._load()
        return list(self._entries.values())

    def build(self, name: str, *args, **options):
        """Build component ``name``; options not given (or ``None``) take their defaults."""
        return self[name].build(*args, **options)

    def options_fields(self) -> Dict[str, Tuple[dataclasses.Field, list]]:
        """Every option name of this kind -> (its field, the components that take it)."""
        out: Dict[str, Tuple[dataclasses.Field, list]] = {}
        for component in self.values():
            for f in component.options.specs():
                out.setdefault(f.name, (f, []))[1].append(component.name)
        return out


MODELS = Registry("model", ["zoo.models"], entry_points="pyro_zoo.models")
GUIDES = Registry("guide", ["guides"], entry_points="pyro_zoo.guides")
OBJECTIVES = Registry("objective", ["zoo.objectives"], entry_points="pyro_zoo.objectives")
DATASETS = Registry("dataset", ["zoo.data"], entry_points="pyro_zoo.datasets")

#: kind -> registry, in the order the CLI and ``pyro-zoo list`` show them
REGISTRIES = {"model": MODELS, "guide": GUIDES, "objective": OBJECTIVES, "dataset": DATASETS}

