"""Importing a user's ``FILE.py:NAME``, pinned by its SHA-256, and its registry entry.

The registry resolves a name it does not know through a resolver (:meth:`~zoo.core.components.Registry.add_resolver`):
a model file (:mod:`zoo.models.model_files`) and a guide file (:mod:`guides.user`) each get their
entry from :func:`make_component`, which imports the file once, fails early with one line, and
records the file's SHA-256 as an option of every run made with it (``source_sha256``). A run
folder is data: while one is read (:func:`only_named_files`), only a file the user named on the
command line resolves, and only if its bytes hash to the run's SHA-256, checked before they run.
"""
from __future__ import annotations

import contextlib
import contextvars
import hashlib
import importlib.util
import inspect
import itertools
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Tuple

from zoo.core.errors import ZooError
from zoo.core.components import Component, Options, option
from zoo.usercode.errors import first_line, user_line
from zoo.usercode.specs import absolute_spec, split_spec

__all__ = ["load_user_file", "file_sha256", "only_named_files", "UserFile", "FileOptions", "make_component"]

_loads = itertools.count()


def load_user_file(spec: str, expected_sha256: Optional[str] = None, kind: str = "model") -> Tuple[Any, str]:
    """Import ``FILE.py`` afresh and return ``(its NAME, the file's SHA-256)``; one ZooError for each failure.

    The file is read once; with ``expected_sha256`` those bytes are hashed and compared *before*
    anything in them runs, and the very bytes that were hashed are the ones executed. ``kind``
    ("model" or "guide") is what the file holds, for the messages.
    """
    path, attr = split_spec(spec, kind)
    if not path.is_file():
        raise ZooError(f"{kind} file {str(path)!r} not found ({kind} {spec!r}; relative paths start at "
                       f"{Path.cwd()})")
    source = path.read_bytes()
    digest = hashlib.sha256(source).hexdigest()
    if expected_sha256 is not None and digest != expected_sha256:
        raise ZooError(f"{kind} file {str(path)!r} changed since this run was made (its SHA-256 differs "
                       f"from the run's); nothing in it was run: give the run's own {kind} file, or train a new run")
    module_name = f"pyro_zoo_user_model_{next(_loads)}"
    loader_spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(loader_spec)
    sys.modules[module_name] = module           # dataclasses and the like look their module up while it runs
    try:
        exec(compile(source, str(path), "exec"), module.__dict__)
    except SyntaxError as e:
        if e.lineno:
            raise ZooError(f"{kind} file {str(path)!r} has a syntax error at line {e.lineno}: {e.msg}") from None
        # a null byte or an unknown encoding has no line: the file is not Python text at all
        raise ZooError(f"{kind} file {str(path)!r} is not Python source text ({e.msg}); save it as a UTF-8 .py "
                       f"file") from None
    except Exception as e:
        raise ZooError(f"importing {kind} file {str(path)!r} failed{user_line(e)}: {type(e).__name__}: "
                       f"{first_line(e)}") from None
    finally:
        sys.modules.pop(module_name, None)
    if not hasattr(module, attr):
        defined = sorted(n for n, v in vars(module).items() if callable(v) and not n.startswith("_")
                         and getattr(v, "__module__", None) == module_name)
        raise ZooError(f"{kind} file {str(path)!r} has no {attr!r}; it defines: "
                       f"{', '.join(defined) or 'nothing callable'}")
    return getattr(module, attr), digest


def file_sha256(spec: str, kind: str = "model") -> str:
    """The SHA-256 of the file of a ``FILE.py:NAME`` spec, read without importing it."""
    path, _ = split_spec(spec, kind)
    if not path.is_file():
        raise ZooError(f"{kind} file {str(path)!r} not found (relative paths start at {Path.cwd()})")
    return hashlib.sha256(path.read_bytes()).hexdigest()


#: While set (a run folder is being read), the files that may be imported: absolute spec -> expected SHA-256.
_NAMED_FILES: contextvars.ContextVar[Optional[Dict[str, str]]] = contextvars.ContextVar("named_files", default=None)


@contextlib.contextmanager
def only_named_files(named: Dict[str, str]):
    """Within the block, a ``FILE.py:NAME`` resolves only if it is in ``named`` (spec -> SHA-256
    recorded by the run; a spec as the user gave it on the command line), and its bytes are checked
    against that hash before they run.

    The reader of a run folder opens this block: a run folder is data, and nothing it names is
    imported unless the user named it on the command line (and it is the file the run was made with).
    """
    token = _NAMED_FILES.set({absolute_spec(spec): sha for spec, sha in named.items()})
    try:
        yield
    finally:
        _NAMED_FILES.reset(token)


@dataclass(frozen=True)
class UserFile:
    """A user's ``FILE.py:NAME``, imported.

    Arguments:
        spec: the ``FILE.py:NAME`` it was named by.
        obj: NAME, the object the file defines.
        digest: the SHA-256 of the bytes it was imported from.
        name: NAME.
        description: the first line of NAME's docstring (or where it comes from).
    """

    spec: str
    obj: Any
    digest: str
    name: str
    description: str


@dataclass
class FileOptions(Options):
    """The option of a user's file: its fingerprint, recorded in the run's config."""

    source_sha256: Optional[str] = option(None, "SHA-256 of the file when the run was made; a resumed or "
                                          "re-evaluated run refuses a changed file", cli=False)


_COMPONENTS: Dict[Tuple, Component] = {}
_DIGESTS: Dict[Tuple, str] = {}             # the SHA-256 of the bytes each cached component was imported from


def make_component(spec: str, kind: str, options: type, build: Callable[[UserFile], Callable],
                   **capabilities) -> Component:
    """The registry entry of the ``kind`` ("model" or "guide") file ``spec``: ``build(file)`` gives its
    factory (what builds a model or guide from the :class:`UserFile`), ``options`` its options class (a
    :class:`FileOptions`), ``capabilities`` what the entry declares besides, and the entry pins
    ``source_sha256``. The file is imported here, to fail early, and the entry is cached while the file
    is unchanged.

    While a run folder is read (:func:`only_named_files`), only a file the user named resolves (its
    spec absolute, as the run's :class:`~zoo.experiments.config.RunConfig` holds it), and its bytes are
    checked against the run's SHA-256 before they run."""
    path, attr = split_spec(spec, kind)
    named = _NAMED_FILES.get()
    if named is not None and spec not in named:
        raise ZooError(f"{kind} {spec!r} is named by a run folder, and the zoo does not import files a run folder "
                       f"names; name the {kind} file on the command line (--{kind} FILE.py:NAME)")
    expected = named.get(spec) if named is not None else None
    stat = path.stat() if path.is_file() else None
    key = (kind, spec, str(path.resolve()), stat and (stat.st_mtime_ns, stat.st_size))
    if key not in _COMPONENTS or (expected is not None and _DIGESTS[key] != expected):
        obj, digest = load_user_file(spec, expected_sha256=expected, kind=kind)
        if not callable(obj):
            raise ZooError(f"{attr!r} in {str(path)!r} is a {type(obj).__name__}, not a Pyro {kind} function or "
                           f"factory")
        description = (inspect.getdoc(obj) or f"Pyro {kind} {attr} from {path}").split("\n")[0]
        file = UserFile(spec, obj, digest, attr, description)
        _COMPONENTS[key] = Component(kind, spec, build(file), options, description,
                                     {**capabilities, "pinned_options": lambda: {"source_sha256": digest}})
        _DIGESTS[key] = digest
    return _COMPONENTS[key]
