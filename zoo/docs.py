"""``pyro-zoo docs``: build the documentation site (``docs/``) offline, warnings as errors.

The site's sources (``docs/conf.py``, the tutorials) are in a source checkout, not in the installed
package, so this works from a checkout (``pip install -e ".[docs]"`` or ``".[dev]"``) and refuses
in one line elsewhere. Sphinx runs with ``-W --keep-going`` (:func:`sphinx_command`): every warning (a
broken internal link, a docstring docutils cannot parse, a notebook cell that raises) is reported and fails
the build.

The tutorials are executed at every build, in kernels that inherit this process's environment:

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

Before it builds, it checks that everything the build imports is installed (:func:`check_requirements`):
the ``docs`` extra of the checkout's ``setup.cfg``, and every module that ``conf.py`` and the tutorials
import (:func:`build_imports`), including what the zoo modules a tutorial uses import where they use it
(tutorial 06 codes with ``constriction`` through :mod:`zoo.evaluation.bitsback`). A missing one is one line
naming it and the extra, not a failed notebook deep in Sphinx's report.

Sphinx runs in a child process of its own session (:func:`run_sphinx`), its stderr passed through, so that
SIGINT or SIGTERM (Ctrl-C) stops the build as it stops every other command (:mod:`zoo.training.interrupts`):
one line, exit 130 or 143. In Sphinx's own process an interrupt is not the zoo's to handle: nbclient's event
loop takes SIGINT and SIGTERM while a notebook runs (and leaves Python's defaults behind), and Sphinx turns
what reaches it into a crash report and exit status 2.
"""
from __future__ import annotations

import ast
import configparser
import contextlib
import importlib.util
import json
import logging
import os
import re
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Dict, Iterator, List, Optional

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

#: set for the Sphinx process :func:`build` starts: :func:`notebook_done` then writes its lines (nothing when
#: Sphinx is run directly)
PROGRESS_ENV = "PYRO_ZOO_DOCS_PROGRESS"


def notebook_done(docname: str, seconds: float, cached: bool = False) -> None:
    """One line of progress for a tutorial the build has executed (or taken from MyST-NB's cache)."""
    if os.environ.get(PROGRESS_ENV) == "1":
        name = docname.rsplit("/", 1)[-1]
        done = "unchanged, from the cache" if cached else f"{seconds:.1f} s"
        sys.stderr.write(f"pyro-zoo docs: tutorial {name}: {done}\n")
        sys.stderr.flush()


def quiet_kernel_logs() -> None:
    """Keep nbclient's INFO lines ("Executing notebook with kernel"), which a library's ``logging.basicConfig``
    at import can let through, out of the progress of a build :func:`build` started (``conf.py`` calls it)."""
    if os.environ.get(PROGRESS_ENV) == "1":
        logging.getLogger("traitlets").setLevel(logging.WARNING)


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


# -- what the build needs ---------------------------------------------------------------------------------
#: what runs the tutorials: MyST-NB executes each in a Jupyter kernel
KERNEL_MODULE = "ipykernel"


def docs_extra(root: Path) -> List[str]:
    """The requirement names of the ``docs`` extra in ``root/setup.cfg`` (``sphinx>=7.4`` -> ``sphinx``)."""
    setup = configparser.ConfigParser()
    setup.read(root / "setup.cfg")
    lines = setup.get("options.extras_require", "docs", fallback="").split("\n")
    return [re.match(r"[A-Za-z0-9_.-]+", line.strip()).group(0) for line in lines if line.strip()]


def _imported(tree: ast.AST) -> List[str]:
    """The absolute modules an AST imports anywhere (a function's own imports too)."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found += [node.module] + [f"{node.module}.{a.name}" for a in node.names]
    return found


def _zoo_modules(tree: ast.AST) -> List[str]:
    """The zoo modules a tutorial names: those it imports, and ``zoo.a.b.name`` chains it reads."""
    named = [m for m in _imported(tree) if m.split(".")[0] in ("zoo", "guides")]
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            chain = []
            while isinstance(node, ast.Attribute):
                chain.append(node.attr)
                node = node.value
            if isinstance(node, ast.Name) and node.id == "zoo":
                chain.reverse()
                named.append(_public_home(chain[0]) or ".".join(["zoo", *chain]))
    return named


def _public_home(name: str) -> Optional[str]:
    """The module a name of ``import zoo`` comes from (``fit``: ``zoo.training.loop``), or None."""
    import zoo
    return getattr(zoo, name).__module__ if name in zoo.__all__ else None


def _module_source(name: str, root: Path) -> Optional[Path]:
    """The source file of the zoo module ``name`` in the checkout ``root`` (None for a name in a module)."""
    base = root.joinpath(*name.split("."))
    for path in (base / "__init__.py", base.with_suffix(".py")):
        if path.is_file():
            return path
    return None


def build_imports(source: Path) -> Dict[str, str]:
    """Every top-level module beyond the standard library and the zoo that building the site in ``source``
    (``docs/``) imports, with what imports it: ``conf.py`` (its imports, its extensions, its theme), the
    tutorials' kernel, each tutorial's imports, and the imports of each zoo module a tutorial names, those
    inside its functions included (an optional dependency is imported where it is used)."""
    root = source.parent
    needs: Dict[str, str] = {}

    def need(module: str, why: str) -> None:
        top = module.split(".")[0]
        if top not in sys.stdlib_module_names and top not in ("zoo", "guides", "__future__"):
            needs.setdefault(top, why)
    conf = ast.parse((source / "conf.py").read_text())
    for module in _imported(conf):
        need(module, "docs/conf.py imports it")
    for node in conf.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id in ("extensions", "html_theme")
                                                for t in node.targets):
            values = ast.literal_eval(node.value)
            for name in [values] if isinstance(values, str) else values:
                need(name, "a Sphinx extension or theme of docs/conf.py")
    need(KERNEL_MODULE, "the tutorials' Jupyter kernel")
    for notebook in sorted((source / "tutorials").glob("*.ipynb")):
        cells = json.loads(notebook.read_text(encoding="utf-8"))["cells"]
        code = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
        tree = ast.parse("\n".join(line for line in code.splitlines() if not line.lstrip().startswith(("%", "!"))))
        where = f"tutorial {notebook.stem}"
        for module in _imported(tree):
            need(module, f"{where} imports it")
        for zoo_module in dict.fromkeys(_zoo_modules(tree)):
            path = _module_source(zoo_module, root)
            if path is not None:
                for module in _imported(ast.parse(path.read_text(encoding="utf-8"))):
                    need(module, f"{where} uses {zoo_module}, which imports it")
    return needs


def check_requirements(source: Path) -> None:
    """Refuse in one line, naming the package and the extra, unless every requirement of the checkout's
    ``docs`` extra and every module the build imports (:func:`build_imports`) is installed."""
    from importlib import metadata
    fix = 'install the docs extra from the checkout: pip install -e ".[docs]"'
    for name in docs_extra(source.parent):
        try:
            metadata.distribution(name)
        except metadata.PackageNotFoundError:
            raise ZooError(f"building the docs needs {name}, of pyro-zoo's [docs] extra, and it is not installed; "
                           f"{fix}") from None
    for module, why in build_imports(source).items():
        if importlib.util.find_spec(module) is None:
            raise ZooError(f"building the docs needs the package {module} ({why}), and it is not installed; {fix}")


# -- Sphinx in a child process, stopped by the zoo ------------------------------------------------------------
#: how long the Sphinx process has to end after SIGTERM before it is killed
STOP_GRACE_SECONDS = 5


def sphinx_command(source: Path, target: Path, quiet: bool) -> List[str]:
    """The command line of the Sphinx build: HTML, warnings as errors, every warning reported."""
    return [sys.executable, "-m", "sphinx", *(["-q"] if quiet else []), "-b", "html", "-W", "--keep-going",
            str(source), str(target)]


def run_sphinx(command: List[str], quiet: bool, stopped_note: str) -> int:
    """The exit status of ``command`` (:func:`sphinx_command`), run in a child process of its own session with
    this process's environment, its stderr passed through line by line (its stdout dropped when ``quiet``).

    The terminal's Ctrl-C reaches this process only. Its handler (:func:`~zoo.training.interrupts.handle_stop_signals`)
    raises here; then what the child writes is dropped, the child is stopped (SIGTERM, then SIGKILL after
    :data:`STOP_GRACE_SECONDS`; its kernels end with it, as ipykernel's do when their parent goes) and the stop
    goes on with ``stopped_note``, what is left, for its one line."""
    import threading

    from zoo.training.checkpoint import signals_deferred
    child = subprocess.Popen(command, stdout=subprocess.DEVNULL if quiet else None, stderr=subprocess.PIPE,
                             start_new_session=True)
    stopping = threading.Event()

    def pass_through() -> None:
        for line in iter(child.stderr.readline, b""):
            if not stopping.is_set():
                sys.stderr.write(line.decode("utf-8", errors="replace"))
                sys.stderr.flush()
    reader = threading.Thread(target=pass_through, daemon=True)
    reader.start()
    try:
        status = child.wait()
    except BaseException as e:
        stopping.set()
        with signals_deferred():            # a second Ctrl-C waits until the child is gone
            _stop(child)
        if isinstance(e, KeyboardInterrupt):
            e.zoo_note = stopped_note
        raise
    reader.join(STOP_GRACE_SECONDS)        # a kernel that outlived Sphinx would hold its stderr open
    return status


def _stop(child: subprocess.Popen) -> None:
    """End the process group of ``child``: SIGTERM, then SIGKILL if it is still there after the grace period."""
    for signum in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(child.pid, signum)
        except ProcessLookupError:
            break
        try:
            child.wait(STOP_GRACE_SECONDS)
            break
        except subprocess.TimeoutExpired:
            continue
    child.wait()


def build(out: Optional[str] = None, setting: str = "full", quiet: bool = True) -> Path:
    """Build the HTML site into ``out`` (default ``docs/_build/html``); return ``out/index.html``.

    Raises :class:`ZooError` when Sphinx is not installed, ``setting`` is unknown, or the build
    reports a warning or an error (Sphinx has printed them on stderr, one per line).
    """
    if setting not in SETTINGS:
        raise ZooError(f"unknown --setting {setting!r}; use one of {', '.join(SETTINGS)}")
    source = docs_folder()
    try:
        import sphinx.cmd.build  # noqa: F401
        import myst_nb  # noqa: F401
    except ImportError as e:
        raise ZooError(f"building the docs needs Sphinx and MyST-NB ({e.name} is missing): "
                       "pip install \"pyro-zoo[docs]\"") from None
    check_requirements(source)
    target = Path(out) if out else source / "_build" / "html"
    tutorials = len(list((source / "tutorials").glob("*.ipynb")))
    sys.stderr.write(f"pyro-zoo docs: building {target} with {SETTING_NOTES[setting]}; "
                     f"{tutorials} tutorials to run\n")
    sys.stderr.flush()
    with kernel_environment(setting):
        os.environ[PROGRESS_ENV] = "1"
        status = run_sphinx(sphinx_command(source, target, quiet), quiet,
                            f"the site in {target} is partial: build it again")
    if status != 0:
        raise ZooError(f"the documentation build failed (the warnings and errors are above; warnings are "
                       f"errors); partial output in {target}")
    return target / "index.html"
