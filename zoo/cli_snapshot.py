"""``pyro-zoo --help``, ``pyro-zoo COMMAND --help`` and ``pyro-zoo list`` without torch or Pyro.

The command line is generated from the registry and :class:`~zoo.experiments.config.RunConfig`
(:mod:`zoo.flags`), which takes importing every model, guide and objective: torch and Pyro, seconds
of CPU. A question about the command line needs none of that, so its answers are cached: the parser's
arguments (read off the parser :func:`zoo.cli.build_parser` makes, so the registry stays their one source),
the text of ``pyro-zoo list``, the entry-point groups through which installed packages add components, and
the SHA-256 of every module of ``zoo`` and ``guides`` that making them imported.

The cache is one JSON file per checkout and Python version in the user's cache folder (:func:`cache_dir`),
built by the first help request or bare ``list`` that finds none, or finds one made from other sources (a model
added, a flag changed, a rule reworded: :func:`is_fresh`); that request loads the live registry, as any other
command does, writes the file atomically, and answers from what it wrote. Later ones rebuild a parser from the
file and let argparse print the help at the terminal's width, or print the list, and never import torch.

The file is someone else's input, like any file the zoo reads: it is parsed as JSON and nothing more, and one
that is unreadable, malformed, written for another checkout or Python, or for source files that changed is not
answered from (:func:`load`). Nor is any request while an installed package adds components through an entry
point (the cache cannot know them), nor any request but a help request or a bare ``list``: those go to
:func:`zoo.cli.main`, as does one the rebuilt parser cannot parse, so that its error messages stay the only
ones. Where the cache folder cannot be written, each such request pays for the live registry again.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path, PurePosixPath
from typing import Dict, List, Optional

from zoo.core.files import cache_dir

__all__ = ["answer", "load", "live", "build", "is_fresh", "cache_dir", "cache_file", "source_hashes", "parser_spec",
           "parser_from_spec"]

#: The folder holding the packages ``zoo`` and ``guides``, whose modules the answers are read from.
ROOT = Path(__file__).resolve().parents[1]
#: The packages whose source files the cache's freshness is checked against.
PACKAGES = ("zoo", "guides")
#: The layout of the cache file: a file of another layout is not read.
FORMAT = 1
#: What argparse prints depends on its version: a cache is kept per Python.
PYTHON = f"{sys.version_info[0]}.{sys.version_info[1]}"
#: A cache file bigger than this is not read (it is about 200 KB).
MAX_BYTES = 16 << 20

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
        raise TypeError(f"the cache cannot hold argparse's {type(action).__name__} ({action.dest}); "
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
    if spec["kind"] not in _KINDS.values():
        raise _Undecided(f"the cache names no argparse action of the zoo's: {spec['kind']!r}")
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


def cache_file() -> Path:
    """This checkout's cache for this Python: several checkouts (or installs) share one cache folder."""
    key = hashlib.sha256(f"{ROOT}\0{PYTHON}".encode()).hexdigest()[:16]
    return cache_dir() / f"cli-{key}.json"


def _is_source(path) -> bool:
    """A path of a module of :data:`PACKAGES`, relative to :data:`ROOT` and inside it."""
    if not isinstance(path, str):
        return False
    parts = PurePosixPath(path).parts
    return len(parts) > 1 and parts[0] in PACKAGES and ".." not in parts and path.endswith(".py")


def _is_sha256(digest) -> bool:
    return isinstance(digest, str) and len(digest) == 64 and all(c in "0123456789abcdef" for c in digest)


def _checked(snapshot) -> Optional[Dict]:
    """``snapshot`` where it has the cache's layout and was made for this checkout and Python, else ``None``."""
    if not (isinstance(snapshot, dict) and snapshot.get("format") == FORMAT and snapshot.get("root") == str(ROOT)
            and snapshot.get("python") == PYTHON):
        return None
    sources, groups = snapshot.get("sources"), snapshot.get("entry_point_groups")
    if not (isinstance(sources, dict) and sources and all(_is_source(p) and _is_sha256(d) for p, d in sources.items())
            and isinstance(groups, list) and all(isinstance(g, str) for g in groups)
            and isinstance(snapshot.get("list"), str) and isinstance(snapshot.get("parser"), dict)):
        return None
    return snapshot


def load() -> Optional[Dict]:
    """The cache, or ``None`` where there is none to trust: missing, unreadable, not JSON, of another layout,
    made for another checkout or Python (its freshness is :func:`is_fresh`'s)."""
    try:
        with open(cache_file(), "rb") as f:
            data = f.read(MAX_BYTES + 1)
        return None if len(data) > MAX_BYTES else _checked(json.loads(data))
    except (OSError, RuntimeError, ValueError):         # RuntimeError: no home folder; RecursionError: deep JSON
        return None


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def source_hashes() -> Dict[str, str]:
    """The SHA-256 of the source file of every module of :data:`PACKAGES` imported so far, by its path relative to
    :data:`ROOT`: what the answers were read from, once :func:`live` has made them."""
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
    try:
        return all(_sha256(ROOT / path) == digest for path, digest in snapshot["sources"].items())
    except OSError:
        return False


def _components_added_by_packages(groups: List[str]) -> bool:
    from importlib.metadata import entry_points
    installed = entry_points()
    return any(installed.select(group=g) for g in groups)


def _is_question(argv: List[str]) -> bool:
    """A help request or a bare ``list``: what the cache answers."""
    words = argv[:argv.index("--")] if "--" in argv else argv
    return argv == ["list"] or bool({"-h", "--help"} & set(words))


def answer(argv: List[str]) -> Optional[int]:
    """Answer a help request or a bare ``list`` from the cache, building it first where it is missing or stale:
    the exit code, or ``None`` when :func:`zoo.cli.main` must (any other request, components added by packages,
    a cache that cannot be built or read)."""
    if not _is_question(argv):
        return None
    snapshot = load()
    if snapshot is None or not is_fresh(snapshot):
        snapshot = build()
    if snapshot is None or _components_added_by_packages(snapshot["entry_point_groups"]):
        return None
    code = None
    if argv == ["list"]:
        from zoo.core.catalogue import catalogue_text     # the folder of weights changes without the code: read afresh
        sys.stdout.write(snapshot["list"] + "\n" + catalogue_text())
        code = 0
    else:
        try:
            parser_from_spec(snapshot["parser"]).parse_args(argv)
        except SystemExit as done:              # argparse printed the help
            code = done.code or 0
        except Exception:                       # _Undecided, or a cache that is JSON but no parser's: nothing printed
            return None
    sys.stdout.flush()                          # a closed pipe (`| head`) raises here, for the caller
    return code


def live() -> Dict:
    """The answers as the registry makes them now (this imports torch and Pyro)."""
    import contextlib
    import io

    from zoo import cli
    from zoo.core.components import REGISTRIES
    parser = cli.build_parser()
    listed = io.StringIO()
    with contextlib.redirect_stdout(listed):
        cli.list_registry()                 # the sections the code decides; the trained models are read live
    return {"entry_point_groups": [r.entry_point_group for r in REGISTRIES.values() if r.entry_point_group],
            "parser": parser_spec(parser), "list": listed.getvalue()}


def build() -> Optional[Dict]:
    """Make the answers from the live registry and write them, with the SHA-256 of the source files they were read
    from (:func:`source_hashes`), to :func:`cache_file`, atomically. Returns them, or ``None`` where the registry
    could not make them (a plug-in that fails to load: :func:`zoo.cli.main` then says why); a cache folder that
    cannot be written costs only the speed of the next request."""
    from zoo.core.errors import ZooError
    try:
        snapshot = live()
        snapshot.update(format=FORMAT, root=str(ROOT), python=PYTHON, sources=source_hashes())
    except Exception:                           # OSError included: a source file gone while it was hashed
        return None
    from zoo.training.checkpoint import atomic_write_text
    try:
        target = cache_file()
        target.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(target, json.dumps(snapshot, ensure_ascii=False, separators=(",", ":")))
    except (OSError, RuntimeError, ZooError):       # RuntimeError: no home folder
        pass
    return snapshot
