"""The CLI's flags, generated from the registry and from :class:`~zoo.experiments.config.RunConfig`.

Every component option and every run setting is declared once, as an
:func:`~zoo.core.components.option` field; this module turns those declarations into argparse
flags (name, type, choices, help with defaults and owners), reads the parsed flags back into
per-kind options, and translates the library's errors, which speak the Python API's names
(``latent_dim``), into the flags a CLI user typed (``--latent-dim``).
"""
from __future__ import annotations

import argparse
import dataclasses
import typing
from typing import Dict, Iterable, List, Optional, Sequence

from zoo.core.errors import ZooError
from zoo.core.components import REGISTRIES, OptionError, base_type
from zoo.experiments.config import COMPONENT_KINDS, RunConfig, flat_name

__all__ = ["add_component_flags", "add_run_flags", "given_run_settings", "given_options", "flag_of",
           "translate", "ints", "names"]

_RUN = "run"
_SEP = ":"


def ints(text: str) -> List[int]:
    """``200,200`` -> [200, 200]; an empty item (``,``, ``200,,200``, ``""``) is refused, not dropped."""
    try:
        return [int(t) for t in _items(text)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers (e.g. 200,200), got {text!r}") from None


def floats(text: str) -> List[float]:
    """``0.1,0.2`` -> [0.1, 0.2]; an empty item is refused, as by :func:`ints`."""
    try:
        return [float(t) for t in _items(text)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers (e.g. 0.1,0.2), got {text!r}") from None


def _items(text: str) -> List[str]:
    """The comma-separated items of ``text``; ValueError for an empty one (a list the user did not write)."""
    items = [t.strip() for t in text.split(",")]
    if not all(items):
        raise ValueError(text)
    return items


def names(text: str) -> List[str]:
    """``amortized,iaf`` -> ['amortized', 'iaf']."""
    out = [t.strip() for t in text.split(",") if t.strip()]
    if not out:
        raise argparse.ArgumentTypeError("expected at least one name")
    return out


def _flag(f: dataclasses.Field) -> str:
    return "--" + flat_name(f).replace("_", "-")


def _argparse_kwargs(cls: type, f: dataclasses.Field, help_text: str) -> Dict:
    elem, is_tuple = base_type(typing.get_type_hints(cls)[f.name])
    cli = f.metadata.get("cli") or {}
    kwargs: Dict = {"default": None, "help": help_text, "dest": None}
    if elem is bool:
        kwargs["action"] = "store_true"
    elif is_tuple and cli.get("nargs"):
        kwargs.update(type=elem, nargs=cli["nargs"])
    elif is_tuple:
        kwargs["type"] = ints if elem is int else floats if elem is float else names
    else:
        kwargs["type"] = elem if elem in (int, float) else str
    if f.metadata.get("choices") and not is_tuple:
        kwargs["choices"] = f.metadata["choices"]
    if cli.get("metavar"):
        kwargs["metavar"] = cli["metavar"]
    elif elem is not bool and "choices" not in kwargs:
        kwargs["metavar"] = flat_name(f).upper()
    return kwargs


def _default_text(values: Sequence) -> str:
    shown = [("none" if v is None or v == () else ",".join(map(str, v)) if isinstance(v, tuple) else str(v))
             for v in values]
    return shown[0] if len(set(shown)) == 1 else None


def add_component_flags(parser: argparse.ArgumentParser, kinds: Iterable[str] = COMPONENT_KINDS,
                        exclude: Iterable[str] = ()) -> None:
    """One flag per option name of each kind, help naming the components that take it."""
    exclude = set(exclude)
    for kind in kinds:
        group = parser.add_argument_group(f"{kind} options (see 'pyro-zoo list')")
        for name, (f, owners) in REGISTRIES[kind].options_fields().items():
            if flat_name(f) in exclude or any(REGISTRIES[kind][o].options.__dataclass_fields__[name].metadata
                                              .get("cli") is False for o in owners):
                continue
            defaults = [getattr(REGISTRIES[kind][o].options(), name) for o in owners]
            shown = _default_text(defaults)
            text = f.metadata.get("help", "")
            if shown is not None and "default" not in text:
                text += f" (default {shown})"
            text += f" [{', '.join(owners)}]"
            kwargs = _argparse_kwargs(REGISTRIES[kind][owners[0]].options, f, text)
            kwargs["dest"] = f"{kind}{_SEP}{name}"
            group.add_argument(_flag(f), **kwargs)


def add_run_flags(parser: argparse.ArgumentParser, only: Optional[Iterable[str]] = None) -> None:
    """The training, evaluation and data flags of :class:`RunConfig` (``only``: a subset by field name)."""
    groups: Dict[str, argparse._ArgumentGroup] = {}
    only = set(only) if only is not None else None
    defaults = RunConfig.__dataclass_fields__
    for f in dataclasses.fields(RunConfig):
        cli = f.metadata.get("cli")
        if cli is False or not f.metadata or (only is not None and f.name not in only):
            continue
        group_name = (cli or {}).get("group", "training")
        if group_name not in groups:
            groups[group_name] = parser.add_argument_group(group_name)
        text = f.metadata.get("help", "")
        default = defaults[f.name].default
        if default not in (None, False) and "default" not in text:
            text += f" (default {default})"
        kwargs = _argparse_kwargs(RunConfig, f, text)
        kwargs["dest"] = f"{_RUN}{_SEP}{f.name}"
        groups[group_name].add_argument(_flag(f), **kwargs)


def given_run_settings(args: argparse.Namespace) -> Dict:
    """The run settings given on the command line, by field name."""
    return {dest.split(_SEP, 1)[1]: v for dest, v in vars(args).items()
            if dest.startswith(_RUN + _SEP) and v is not None}


def given_options(args: argparse.Namespace, kind: str, chosen: Sequence[str]) -> Dict:
    """The ``kind`` options given on the command line, by option name; each must be taken by one of
    the ``chosen`` components (else: which components take it)."""
    given = {dest.split(_SEP, 1)[1]: v for dest, v in vars(args).items()
             if dest.startswith(kind + _SEP) and v is not None}
    fields = REGISTRIES[kind].options_fields()
    for name in given:
        f, owners = fields[name]
        # a FILE.py:NAME component (a guide file) is resolved, not listed: its own options decide
        taken = any(name in {g.name for g in REGISTRIES[kind][c].options.specs()} for c in chosen if c not in owners)
        if not set(owners) & set(chosen) and not taken:
            listed = ", ".join(repr(o) for o in owners)
            raise ZooError(f"{_flag(f)} applies to the {listed} {kind}{'s' if len(owners) > 1 else ''} only, "
                           f"not {', '.join(repr(c) for c in chosen)}")
    return {k: list(v) if isinstance(v, (list, tuple)) else v for k, v in given.items()}


def flag_of(kind: Optional[str], option: str) -> str:
    """The flag a CLI user types for the API option ``option`` of ``kind``."""
    if kind in (None, _RUN) and option in RunConfig.__dataclass_fields__:
        return _flag(RunConfig.__dataclass_fields__[option])
    for k in ([kind] if kind in REGISTRIES else list(REGISTRIES)):
        fields = REGISTRIES[k].options_fields()
        if option in fields:
            return _flag(fields[option][0])
    return "--" + option.replace("_", "-")


def translate(error: ZooError) -> str:
    """An error's message as the CLI shows it: an :class:`OptionError` names the flag."""
    if isinstance(error, OptionError):
        return f"{flag_of(error.kind, error.option)} {error.problem}"
    return str(error)


def component_summary(kind: str, name: str) -> str:
    """``latent_dim=50 (--latent-dim), hidden=200,200 (--hidden)`` for ``pyro-zoo list``."""
    component = REGISTRIES[kind][name]
    parts = []
    for f in component.options.specs():
        shown = _default_text([getattr(component.options(), f.name)])
        parts.append(f"{_flag(f)}={shown}")
    return ", ".join(parts)

