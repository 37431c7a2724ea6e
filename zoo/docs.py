"""``pyro-zoo docs``: build the documentation site (``docs/``) offline, warnings as errors.

The site's sources (``docs/conf.py``, the tutorials) are in a source checkout, not in the installed
package, so this works from a checkout (``pip install -e ".[docs]"`` or ``".[dev]"``) and refuses
in one line elsewhere. Sphinx runs in this process (:func:`sphinx.cmd.build.build_main`) with
``-W --keep-going``: every warning (a broken internal link, a docstring docutils cannot parse, a
notebook cell that raises) is reported and fails the build.

The tutorials are executed at every build, in a kernel that inherits this process's environment:

- ``PYRO_ZOO_TUTORIAL_SETTING`` is ``--setting`` (``full``: the lecture's figures; ``ci``: small and
  fast, what CI runs), read by each notebook's first cell;
- ``MPLBACKEND`` is removed for the kernels, so that they show figures inline (CI sets it to ``Agg``,
  which would draw no figure into the notebook);
- ``full`` reuses the outputs of an unchanged notebook (MyST-NB's cache in ``docs/_build``), ``ci``
  executes every notebook afresh;
- in the ``ci`` setting a cell may run ``CI_CELL_TIMEOUT`` seconds and ``OMP_NUM_THREADS`` is 2 unless
  set, the CI machine's cores.
"""
from __future__ import annotations

import contextlib
import io
import os
import re
from pathlib import Path
from typing import Iterator, List, Optional

from zoo.core.errors import ZooError

SETTINGS = ("ci", "full")
CI_CELL_TIMEOUT = 300
FULL_CELL_TIMEOUT = 1800


_KIND_TITLES = {"model": "models", "guide": "guide families", "objective": "objectives", "dataset": "datasets"}


def _rst(text: str) -> str:
    """Plain text as reStructuredText: the characters docutils would read as markup, escaped."""
    return re.sub(r"([\\*`|_])", r"\\\1", str(text))


def options_reference(kind: str) -> List[str]:
    """reStructuredText lines for the API page: each registered component of ``kind`` (``model``,
    ``guide``, ``objective``, ``dataset``), its description and its options with their defaults,
    choices and help, read from the registry as ``pyro-zoo list`` reads it, so the page cannot fall
    behind a new component or option."""
    from zoo.core.components import REGISTRIES
    registry = REGISTRIES[kind]
    lines = [f"**The registered {_KIND_TITLES[kind]} and their options** (from the registry; "
             f"``pyro-zoo list`` prints the same):", ""]
    for name, component in registry.items():
        lines += [f"``{name}``", f"   {_rst(component.description)}", ""]
        for spec in component.options.specs():
            choices = spec.metadata.get("choices")
            detail = f"default ``{spec.default!r}``" + (
                f"; one of {', '.join(f'``{c!r}``' for c in choices)}" if choices else "")
            lines += [f"   - ``{spec.name}`` ({detail}): {_rst(spec.metadata.get('help', ''))}"]
        if component.options.specs():
            lines.append("")
    return lines


def docs_folder() -> Path:
    """``docs/`` of the source checkout this zoo was imported from; a one-line error when there is none."""
    folder = Path(__file__).resolve().parent.parent / "docs"
    if not (folder / "conf.py").is_file():
        raise ZooError("the documentation sources (docs/conf.py) are not in an installed pyro-zoo; run "
                       "'pyro-zoo docs' from a source checkout (git clone, then pip install -e \".[docs]\")")
    return folder


@contextlib.contextmanager
def _environment(setting: str) -> Iterator[None]:
    """The tutorials' kernels inherit these; restored afterwards (in-process callers, tests)."""
    saved = dict(os.environ)
    os.environ["PYRO_ZOO_TUTORIAL_SETTING"] = setting
    os.environ.pop("MPLBACKEND", None)
    os.environ["PYRO_ZOO_DOCS_EXECUTION"] = "force" if setting == "ci" else "cache"
    os.environ["PYRO_ZOO_DOCS_CELL_TIMEOUT"] = str(CI_CELL_TIMEOUT if setting == "ci" else FULL_CELL_TIMEOUT)
    if setting == "ci":
        os.environ.setdefault("OMP_NUM_THREADS", "2")
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def build(out: Optional[str] = None, setting: str = "full", quiet: bool = True) -> Path:
    """Build the HTML site into ``out`` (default ``docs/_build/html``); return ``out/index.html``.

    Raises :class:`ZooError` when Sphinx is not installed, ``setting`` is unknown, or the build
    reports a warning or an error (Sphinx has printed them on stderr, one per line).
    """
    if setting not in SETTINGS:
        raise ZooError(f"unknown --setting {setting!r}; use one of {', '.join(SETTINGS)}")
    source = docs_folder()
    try:
        from sphinx.cmd.build import build_main
        import myst_nb  # noqa: F401
    except ImportError as e:
        raise ZooError(f"building the docs needs Sphinx and MyST-NB ({e.name} is missing): "
                       "pip install \"pyro-zoo[docs]\"") from None
    target = Path(out) if out else source / "_build" / "html"
    args = ["-b", "html", "-W", "--keep-going", str(source), str(target)]
    with _environment(setting), contextlib.redirect_stdout(io.StringIO()) if quiet else contextlib.nullcontext():
        status = build_main((["-q"] if quiet else []) + args)
    if status != 0:
        raise ZooError(f"the documentation build failed (the warnings and errors are above; warnings are "
                       f"errors); partial output in {target}")
    return target / "index.html"
