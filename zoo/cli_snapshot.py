"""``pyro-zoo --help``, ``pyro-zoo COMMAND --help`` and ``pyro-zoo list`` without torch or Pyro.

The command line is generated from the registry and :class:`~zoo.experiments.config.RunConfig`
(:mod:`zoo.flags`), which takes importing every model, guide and objective: torch and Pyro, seconds
of CPU. A question about the command line needs none of that, so its answers are kept here, in
``cli_snapshot.json``: the parser's arguments (read off the parser :func:`zoo.cli.build_parser`
makes, so the registry stays their one source), the text of ``pyro-zoo list``, and the entry-point
groups through which installed packages add components.

:func:`answer` rebuilds a parser from the snapshot and lets argparse print the help at the
terminal's width, or prints the list. It answers only when the answer is the live one: the source
files the snapshot was read from are unchanged (it holds the SHA-256 of every module of ``zoo`` and
``guides`` that making it imported, :func:`is_fresh`, so a model added to the registry and not yet in
the snapshot sends ``list`` to the live registry instead of leaving it out), no package has added
components through an entry point (the snapshot cannot know them), and the request is a help request
or a bare ``list``. Anything else, a request the snapshot cannot parse included, goes to
:func:`zoo.cli.main`, whose error messages stay the only ones.

``tests/test_cli_snapshot.py`` compares the snapshot with the live parser and list, and says
to run ``python -m zoo.cli_snapshot`` (which rewrites the file) when they differ.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path
from typing import Dict, List, Optional

__all__ = ["SNAPSHOT", "answer", "load", "live", "is_fresh", "source_hashes", "parser_spec", "parser_from_spec",
           "write"]

#: The snapshot, beside this module (package data).
SNAPSHOT = Path(__file__).with_name("cli_snapshot.json")
#: The folder holding the packages ``zoo`` and ``guides``, whose modules the answers are read from.
ROOT = Path(__file__).resolve().parents[1]
#: The packages whose source files the snapshot's freshness is checked against.
PACKAGES = ("zoo", "guides")

#: argparse's action classes by what ``add_argument(action=...)`` calls them (the help action is
#: the parser's own: ``add_help``)
_KINDS = {argparse._StoreAction: "store", argparse._StoreTrueAction: "store_true",
          argparse._StoreFalseAction: "store_false", argparse._StoreConstAction: "store_const",
          argparse._AppendAction: "append", argparse._CountAction: "count"}
#: the types a rebuilt parser keeps: the rest read strings, which is all a help request needs
_TYPES = {int: "int", float: "float"}


class _Undecided(Exception):
    """The rebuilt parser found an error: the live parser will word it."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise _Undecided(message)


def _action_spec(action: argparse.Action) -> Dict:
    if isinstance(action, argparse._SubParsersAction):
        helps = {a.dest: a.help for a in action._choices_actions}
        return {"kind": "subparsers", "dest": action.dest, "required": action.required, "help": action.help,
                "metavar": action.metavar,
                "commands": [{"name": name, "help": helps.get(name), "parser": parser_spec(p)}
                             for name, p in action.choices.items()]}
    if type(action) not in _KINDS:
        raise TypeError(f"the snapshot cannot hold argparse's {type(action).__name__} ({action.dest}); "
                        f"teach zoo/cli_snapshot.py its kind")
    return {"kind": _KINDS[type(action)], "option_strings": action.option_strings, "dest": action.dest,
            "nargs": action.nargs, "const": action.const, "choices": list(action.choices) if action.choices else None,
            "required": action.required, "help": action.help,
            "metavar": list(action.metavar) if isinstance(action.metavar, tuple) else action.metavar,
            "type": _TYPES.get(action.type)}


def parser_spec(parser: argparse.ArgumentParser) -> Dict:
    """What help needs of ``parser``, as JSON: its texts, its argument groups, and each argument in the
    order it was added (the order of the usage line), with the group it is shown in."""
    groups = parser._action_groups
    group_of = {id(a): i for i, g in enumerate(groups) for a in g._group_actions}
    return {"prog": parser.prog, "description": parser.description, "epilog": parser.epilog,
            "groups": [{"title": g.title, "description": g.description} for g in groups],
            "arguments": [{**_action_spec(a), "group": group_of[id(a)]} for a in parser._actions
                          if not isinstance(a, argparse._HelpAction)]}


def _add(target, spec: Dict) -> None:
    names = spec["option_strings"] or [spec["dest"]]
    kwargs = {"help": spec["help"], "action": spec["kind"]}
    if spec["option_strings"]:
        kwargs.update(dest=spec["dest"], required=spec["required"])
    if spec["kind"] in ("store", "append"):
        kwargs.update(nargs=spec["nargs"], choices=spec["choices"],
                      metavar=tuple(spec["metavar"]) if isinstance(spec["metavar"], list) else spec["metavar"],
                      type={"int": int, "float": float}.get(spec["type"]))
    elif spec["kind"] == "store_const":
        kwargs["const"] = spec["const"]
    target.add_argument(*names, **kwargs)


def _fill(parser: argparse.ArgumentParser, spec: Dict) -> None:
    # the first two groups are every parser's own (positional arguments, options): add_argument picks
    # between them as the original did
    groups = [parser, parser] + [parser.add_argument_group(g["title"], g["description"]) for g in spec["groups"][2:]]
    for argument in spec["arguments"]:
        if argument["kind"] == "subparsers":
            sub = parser.add_subparsers(dest=argument["dest"], required=argument["required"], help=argument["help"],
                                        metavar=argument["metavar"], parser_class=_Parser)
            for command in argument["commands"]:
                child = command["parser"]
                _fill(sub.add_parser(command["name"], help=command["help"], description=child["description"],
                                     epilog=child["epilog"]), child)
        else:
            _add(groups[argument["group"]], argument)


def parser_from_spec(spec: Dict) -> argparse.ArgumentParser:
    """A parser that prints the same help as the one :func:`parser_spec` read (and parses strings)."""
    parser = _Parser(prog=spec["prog"], description=spec["description"], epilog=spec["epilog"])
    _fill(parser, spec)
    return parser


def load() -> Optional[Dict]:
    """The snapshot, or ``None`` where there is none to trust (not installed, unreadable)."""
    try:
        return json.loads(SNAPSHOT.read_text())
    except (OSError, ValueError):
        return None


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def source_hashes() -> Dict[str, str]:
    """The SHA-256 of the source file of every module of :data:`PACKAGES` imported so far, by its path relative to
    :data:`ROOT`: what the answers were read from, once :func:`live` has made them in a fresh process."""
    hashes = {}
    for module in list(sys.modules.values()):
        path = getattr(module, "__file__", None)
        if not path or not path.endswith(".py"):
            continue
        path = Path(path).resolve()
        if path.is_relative_to(ROOT) and path.relative_to(ROOT).parts[0] in PACKAGES:
            hashes[path.relative_to(ROOT).as_posix()] = _sha256(path)
    return dict(sorted(hashes.items()))


def is_fresh(snapshot: Dict) -> bool:
    """Whether every source file ``snapshot`` was made from is as it was then (a file changed, added to the
    registry's imports, or gone makes it stale); hashing them costs milliseconds, torch and Pyro seconds."""
    sources = snapshot.get("sources")
    if not isinstance(sources, dict) or not sources:
        return False
    try:
        return all(_sha256(ROOT / path) == digest for path, digest in sources.items())
    except OSError:
        return False


def _components_added_by_packages(groups: List[str]) -> bool:
    from importlib.metadata import entry_points
    installed = entry_points()
    return any(installed.select(group=g) for g in groups)


def answer(argv: List[str]) -> Optional[int]:
    """Answer a help request or a bare ``list`` from the snapshot: the exit code, or ``None`` when
    :func:`zoo.cli.main` must (any other request, no snapshot, components added by packages)."""
    words = argv[:argv.index("--")] if "--" in argv else argv
    if argv != ["list"] and not {"-h", "--help"} & set(words):
        return None
    snapshot = load()
    if snapshot is None or not is_fresh(snapshot) or _components_added_by_packages(snapshot["entry_point_groups"]):
        return None
    code = None
    if argv == ["list"]:
        sys.stdout.write(snapshot["list"])
        code = 0
    else:
        try:
            parser_from_spec(snapshot["parser"]).parse_args(argv)
        except SystemExit as done:              # argparse printed the help
            code = done.code or 0
        except _Undecided:
            return None
    sys.stdout.flush()                          # a closed pipe (`| head`) raises here, for the caller
    return code


def live() -> Dict:
    """The snapshot as the registry makes it now (this imports torch and Pyro)."""
    import contextlib
    import io

    from zoo import cli
    from zoo.core.components import REGISTRIES
    parser = cli.build_parser()
    listed = io.StringIO()
    with contextlib.redirect_stdout(listed):
        cli.cmd_list(parser.parse_args(["list"]))
    return {"entry_point_groups": [r.entry_point_group for r in REGISTRIES.values() if r.entry_point_group],
            "parser": parser_spec(parser), "list": listed.getvalue()}


def write() -> Path:
    """Rewrite ``cli_snapshot.json`` from the live registry, with the SHA-256 of the source files it was read from
    (:func:`source_hashes`; run in a process of its own, ``python -m zoo.cli_snapshot``, so that they are the
    modules the answers import and no more)."""
    snapshot = live()
    snapshot["sources"] = source_hashes()
    SNAPSHOT.write_text(json.dumps(snapshot, indent=1, ensure_ascii=False) + "\n")
    return SNAPSHOT


if __name__ == "__main__":
    print(f"wrote {write()}")
