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
  set, the CI machine's cores;
- ``IPYTHONDIR`` is a fresh folder whose kernel configuration filters one line out of the kernels' log:
  ipykernel warns that a kernel "is running over TCP without encryption ... susceptible to
  eavesdropping", which concerns a kernel reached over a network. These kernels are started by this
  build on the loopback and talk only to it (MyST-NB gives no way to choose Jupyter's IPC transport),
  so the warning says nothing about them; every other kernel message still shows.

To run one tutorial yourself (``docs/tutorials.md`` says the same on the site): ``pip install -e ".[docs]"``
(it installs ``nbconvert``), then ``PYRO_ZOO_TUTORIAL_SETTING=ci jupyter nbconvert --to notebook --execute
docs/tutorials/NAME.ipynb --output-dir runs/tutorials`` (``full``, the default, for the lecture's figures).

While it builds, ``pyro-zoo docs`` says which setting it runs (and the other one), then one line per
tutorial with its seconds (:func:`notebook_done`, called from ``docs/conf.py``), on stderr.
"""
from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import sys
import tempfile
from pathlib import Path
from typing import Iterator, List, Optional, TextIO

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


SETTING_NOTES = {
    "full": "the tutorials' full setting, the lectures' figures: minutes of CPU per tutorial; "
            "'pyro-zoo docs --setting ci' is the small, fast build that CI runs",
    "ci": "the tutorials' ci setting, small and fast (what CI runs); "
          "'pyro-zoo docs' (--setting full, the default) draws the lectures' figures",
}

#: where :func:`notebook_done` writes while :func:`build` runs (nothing when Sphinx is run directly)
_progress: Optional[TextIO] = None


def notebook_done(docname: str, seconds: float, cached: bool = False) -> None:
    """One line of progress for a tutorial the build has executed (or taken from MyST-NB's cache)."""
    if _progress is not None:
        name = docname.rsplit("/", 1)[-1]
        done = "unchanged, from the cache" if cached else f"{seconds:.1f} s"
        _progress.write(f"pyro-zoo docs: tutorial {name}: {done}\n")
        _progress.flush()


KERNEL_CONFIG = """\
# Written by 'pyro-zoo docs' for the tutorials' kernels. Each is started by the build on the loopback, so
# ipykernel's warning that TCP is unencrypted (it concerns a kernel reached over a network) is dropped.
import logging


class LocalKernel(logging.Filter):
    def filter(self, record):
        return "without encryption" not in record.getMessage()


c.IPKernelApp.logging_config = {"filters": {"local_kernel": {"()": LocalKernel}},
                                "handlers": {"console": {"filters": ["local_kernel"]}}}
"""


@contextlib.contextmanager
def kernel_environment(setting: str) -> Iterator[None]:
    """The environment the tutorials' kernels inherit (see the module docstring) for ``setting``;
    restored afterwards (in-process callers, tests)."""
    saved = dict(os.environ)
    profile = tempfile.TemporaryDirectory(prefix="pyro-zoo-ipython-")
    (Path(profile.name) / "profile_default").mkdir()
    (Path(profile.name) / "profile_default" / "ipython_kernel_config.py").write_text(KERNEL_CONFIG)
    os.environ["IPYTHONDIR"] = profile.name
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
        profile.cleanup()


@contextlib.contextmanager
def _progress_to(stream: TextIO) -> Iterator[None]:
    """:func:`notebook_done` writes to ``stream``; nbclient's INFO lines ("Executing notebook with
    kernel"), which a library's ``logging.basicConfig`` at import can let through, stay out."""
    global _progress
    traitlets_log = logging.getLogger("traitlets")
    saved, level = _progress, traitlets_log.level
    _progress = stream
    traitlets_log.setLevel(logging.WARNING)
    try:
        yield
    finally:
        _progress = saved
        traitlets_log.setLevel(level)


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
    tutorials = len(list((source / "tutorials").glob("*.ipynb")))
    sys.stderr.write(f"pyro-zoo docs: building {target} with {SETTING_NOTES[setting]}; "
                     f"{tutorials} tutorials to run\n")
    with kernel_environment(setting), _progress_to(sys.stderr), \
            contextlib.redirect_stdout(io.StringIO()) if quiet else contextlib.nullcontext():
        status = build_main((["-q"] if quiet else []) + args)
    if status != 0:
        raise ZooError(f"the documentation build failed (the warnings and errors are above; warnings are "
                       f"errors); partial output in {target}")
    return target / "index.html"
