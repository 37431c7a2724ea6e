"""Sphinx configuration of the pyro-zoo documentation site (build it with ``pyro-zoo docs``).

Why Sphinx with MyST-NB, and not MkDocs:

- the API reference is generated from the docstrings by ``autodoc``, and ``napoleon`` reads their
  **References** / **Arguments** / **Example** sections as Pyro's and zuko's documentation do;
- ``myst-nb`` executes the tutorials (``docs/tutorials/*.ipynb``, committed without outputs) as part of
  the build and renders their figures natively, with no pandoc (which ``nbsphinx`` needs); an error in
  a cell fails the build, so a tutorial that stops working fails CI;
- ``myst-parser`` includes the project's Markdown pages (README, user guide, instructors' guide,
  results) where they live, so nothing is copied and nothing goes stale. MkDocs' mkdocstrings and
  mkdocs-jupyter are weaker at executing notebooks within the build and at cross-references.

The site builds and reads offline: no intersphinx, the furo theme ships its CSS, JavaScript and fonts,
and ``sphinx-mathjax-offline`` copies MathJax into ``_static/mathjax`` (Sphinx's default loads it from a
CDN, and offline every formula would show as TeX source); nothing loads from another host, which
``tests/test_docs.py`` checks in the HTML and in a browser. Warnings are errors (``pyro-zoo docs``
passes ``-W --keep-going``). Smart quotes are off: docutils would turn a flag's ``--`` into an en dash
in prose, and a copied flag with an en dash fails.

The API reference's first page documents the names ``import zoo`` gives under ``zoo.`` (the
``zoo-public-api`` directive, from ``zoo.__all__``), and ``build_model`` and its kin list every
registered component's options (:func:`zoo.docs.options_reference`, from the registry).

The Markdown pages live outside ``docs/`` and link to each other and to source files by relative
paths. :func:`rewrite_links` (on Sphinx's ``include-read`` event) turns a link to another page of the
site into a link to that page, a link to a file that is not in the site (a result's JSON, a source
file) into plain text, an ``<img>``'s path into one from the including page, and an in-page link to a
raw-HTML anchor (``<a id="...">``, which MyST does not know) into an HTML link, which the tests of
``tests/test_docs.py`` check in the built HTML.

The tutorials read ``PYRO_ZOO_TUTORIAL_SETTING`` (``ci``: small and fast; ``full``: the lecture's
figures), which ``pyro-zoo docs --setting`` sets for the kernels.
"""
from __future__ import annotations

import os
import re
import sys
import time
from pathlib import Path

from docutils import nodes
from sphinx.util.docutils import SphinxDirective

_BUILD_STARTED = time.time()
DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
RESULTS = ROOT / "benchmarks" / "results"
sys.path.insert(0, str(ROOT))           # autodoc imports the checkout's zoo and guides

import zoo  # noqa: E402

project = "pyro-zoo"
author = "the pyro-zoo authors"
copyright = "the pyro-zoo authors"
release = version = zoo.__version__

extensions = ["myst_nb", "sphinx.ext.autodoc", "sphinx.ext.napoleon", "sphinx.ext.mathjax",
              "sphinx-mathjax-offline"]
html_theme = "furo"
html_title = f"pyro-zoo {release}"
smartquotes = False
exclude_patterns = ["_build", "README.md", "**.ipynb_checkpoints", "tutorials/_*"]

# MyST: heading anchors for in-page links of the included READMEs ([Run folders](#run-folders)).
myst_heading_anchors = 4
# html_image: the leaderboard's <img width=...> thumbnails are images of the site, which Sphinx links to their
# full size (html_scaled_image_link), as GitHub does
myst_enable_extensions = ["dollarmath", "amsmath", "html_image"]

# Notebooks: executed at every build, a cell error or timeout is a build error.
nb_execution_mode = os.environ.get("PYRO_ZOO_DOCS_EXECUTION", "force")
nb_execution_raise_on_error = True
nb_execution_in_temp = True      # a notebook that writes files writes them in a temporary folder, not docs/
nb_execution_timeout = int(os.environ.get("PYRO_ZOO_DOCS_CELL_TIMEOUT", "600"))
nb_execution_show_tb = True
nb_merge_streams = True

# autodoc: members in source order; the docstrings' own sections through napoleon.
autodoc_member_order = "bysource"
autodoc_default_options = {"members": True, "show-inheritance": True}
# "Arguments:" is one of napoleon's own names of the parameters section, so a docstring's arguments and
# the signature's types merge into one list; types go to documented arguments only.
autodoc_typehints = "description"
autodoc_typehints_description_target = "documented"
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_custom_sections = [("References", "notes_style"), ("Class attributes", "params_style")]


# --------------------------------------------------------------------------------------------------
# The Markdown pages of the checkout that are pages of the site: repository path -> document name.

def results_pages() -> dict:
    """``benchmarks/results/README.md`` and every other page there that is not one result's page
    (a result's page has a ``.json`` of the same name): the leaderboard and archive when
    ``pyro-zoo report`` writes them, the scaling estimate."""
    pages = {"benchmarks/results/README.md": "results/index"}
    for page in sorted(RESULTS.glob("*.md")):
        if page.name not in ("README.md", "README.template.md") and not page.with_suffix(".json").exists():
            pages[f"benchmarks/results/{page.name}"] = f"results/{page.stem}"
    return pages


SITE_PAGES = {"README.md": "index", "zoo/README.md": "guide", "zoo/homework/INSTRUCTORS.md": "instructors",
              "zoo/core/contract.py": "contract", "docs/architecture.md": "architecture", **results_pages()}


def write_results_wrappers() -> None:
    """One small page per results page under ``docs/results/`` (generated, gitignored), each an include
    of the file ``pyro-zoo report`` wrote, so a new results page joins the site without an edit here."""
    folder = DOCS / "results"
    folder.mkdir(exist_ok=True)
    wanted = {}
    others = [doc.split("/")[1] for doc in SITE_PAGES.values() if doc.startswith("results/") and doc != "results/index"]
    for source, doc in SITE_PAGES.items():
        if not doc.startswith("results/"):
            continue
        text = f"```{{include}} ../../{source}\n:relative-images:\n```\n"
        if doc == "results/index" and others:
            text += "\n```{toctree}\n:hidden:\n\n" + "\n".join(others) + "\n```\n"
        wanted[f"{doc.split('/')[1]}.md"] = text
    for stale in folder.glob("*.md"):
        if stale.name not in wanted:
            stale.unlink()
    for name, text in wanted.items():
        path = folder / name
        if not path.exists() or path.read_text() != text:      # unchanged files keep Sphinx's cache valid
            path.write_text(text)


write_results_wrappers()

_LINK = re.compile(r"(?<!!)\[((?:[^\[\]]|\[[^\]]*\])*)\]\(([^()\s]+)\)")
_ANCHOR = re.compile(r'<a id="([^"]+)"></a>')
_IMG = re.compile(r'<img src="(?![a-z][a-z0-9+.-]*:)([^"]+)"')


def rewrite_links(app, relative_path, parent_docname, content) -> None:
    """Resolve the relative links of an included Markdown page against the repository (see the module
    docstring): a page of the site becomes a link to it, any other file plain text, a link to a raw
    HTML anchor an HTML link. Images (``![..](..)``) are left to MyST's ``:relative-images:``."""
    source = (Path(app.srcdir) / relative_path).resolve()
    text = content[0]
    html_anchors = set(_ANCHOR.findall(text))

    def replace(match):
        label, target = match.group(1), match.group(2)
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):          # https:, mailto:, project:
            return match.group(0)
        path, _, fragment = target.partition("#")
        if not path:
            if fragment in html_anchors:
                return f'<a href="#{fragment}">{_inline_html(label)}</a>'
            return match.group(0)                              # a heading anchor: MyST checks it
        try:
            repo_path = (source.parent / path).resolve().relative_to(ROOT).as_posix()
        except ValueError:
            return label
        doc = SITE_PAGES.get(repo_path)
        if doc is None:
            return label                                       # a file that is not a page of the site
        if fragment and fragment in _raw_anchors(repo_path):    # a raw HTML anchor of another page: an HTML link
            here = (Path(app.srcdir) / app.env.docname).parent
            href = os.path.relpath(Path(app.srcdir) / f"{doc}.html", here)
            return f'<a href="{href}#{fragment}">{_inline_html(label)}</a>'
        return f"[{label}](/{doc}.md{'#' + fragment if fragment else ''})"

    content[0] = _LINK.sub(replace, text)
    # MyST's :relative-images: reaches Markdown images only; an <img> (html_image) is made relative here
    including = (Path(app.srcdir) / app.env.docname).parent      # parent_docname comes bare from MyST
    content[0] = _IMG.sub(lambda m: f'<img src="{os.path.relpath(source.parent / m.group(1), including)}"',
                          content[0])


_RAW_ANCHORS: dict = {}


def _raw_anchors(repo_path: str) -> set:
    """The raw HTML anchors (``<a id="...">``) of a page of the site, read once."""
    if repo_path not in _RAW_ANCHORS:
        _RAW_ANCHORS[repo_path] = set(_ANCHOR.findall((ROOT / repo_path).read_text()))
    return _RAW_ANCHORS[repo_path]


def _inline_html(label: str) -> str:
    """The few Markdown constructs link labels of the results page use, as HTML."""
    label = label.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return re.sub(r"`([^`]*)`", r"<code>\1</code>", label)


_LITERAL = re.compile(r"``.*?``")


def escape_bars(app, what, name, obj, options, lines) -> None:
    """The docstrings write ``|x|`` for an absolute value or a norm, never a reStructuredText
    substitution: escape a bar outside inline literals, literal blocks and doctests."""
    literal_indent = None           # the indentation of the paragraph that opened a literal block
    for i, line in enumerate(lines):
        indent = len(line) - len(line.lstrip())
        if literal_indent is not None and line.strip() and indent <= literal_indent:
            literal_indent = None
        if literal_indent is None and "|" in line and not line.lstrip().startswith(">>>"):
            pieces = _LITERAL.split(line)
            literals = _LITERAL.findall(line) + [""]
            lines[i] = "".join(piece.replace("|", "\\|") + literal for piece, literal in zip(pieces, literals))
        if literal_indent is None and line.rstrip().endswith("::"):
            literal_indent = indent


class PublicAPI(SphinxDirective):
    """``.. zoo-public-api::``: each name of ``zoo.__all__``, documented as ``zoo.NAME``, so the public page
    shows what ``import zoo`` gives and a new public name joins it with no edit here."""

    def run(self):
        lines = []
        for name in zoo.__all__:
            obj = getattr(zoo, name)
            kind = ("autoexception" if isinstance(obj, type) and issubclass(obj, BaseException)
                    else "autoclass" if isinstance(obj, type) else "autofunction")
            lines += [f".. {kind}:: zoo.{name}", ""]
        return self.parse_text_to_nodes("\n".join(lines))


def _is_public(obj) -> bool:
    return any(obj is getattr(zoo, name) for name in zoo.__all__)


def public_once(app, what, name, obj, skip, options):
    """On the public page a module's member that ``import zoo`` also gives is shown once, as ``zoo.NAME``."""
    if what == "module" and app.env.docname == "api/zoo" and _is_public(obj):
        return True
    return None


def registry_options(app, what, name, obj, options, lines) -> None:
    """``build_model``, ``build_guide``, ``build_objective`` and ``load_dataset`` end with every registered
    component of their kind and its options, generated from the registry (:func:`zoo.docs.options_reference`)."""
    from zoo.docs import options_reference
    for builder, kind in ((zoo.build_model, "model"), (zoo.build_guide, "guide"),
                          (zoo.build_objective, "objective"), (zoo.load_dataset, "dataset")):
        if obj is builder:
            lines += ["", *options_reference(kind)]


def field_dashes(app, doctree) -> None:
    """Sphinx and napoleon separate an argument's name from its text by ``" -- "`` and leave the dash to
    smart quotes; with them off (a flag's ``--`` must stay two hyphens) that separator, a text right
    after the bold name in a field list, becomes the en dash here."""
    for text in list(doctree.findall(nodes.Text)):
        before = text.parent.index(text) - 1 if text.parent is not None else -1
        separator = text == " -- " or (text.startswith(" -- ") and before >= 0
                                       and isinstance(text.parent[before], nodes.strong))
        if separator and any(isinstance(a, nodes.field_body) for a in _ancestors(text)):
            text.parent.replace(text, nodes.Text(" \u2013 " + text[4:]))


def _ancestors(node):
    while node.parent is not None:
        node = node.parent
        yield node


_STARTED = {}


def notebook_started(app, docname, source) -> None:
    if app.env.doc2path(docname).suffix == ".ipynb":
        _STARTED[docname] = time.perf_counter()


def notebook_finished(app, doctree) -> None:
    """One line of progress per tutorial (:func:`zoo.docs.notebook_done`): its name and the seconds from
    reading it to its executed document; "from the cache" when MyST-NB ran it in an earlier build."""
    from myst_nb.sphinx_ import NbMetadataCollector
    from zoo.docs import notebook_done
    docname = app.env.docname
    if docname in _STARTED:
        executed = NbMetadataCollector.get_exec_data(app.env, docname) or {}
        cached = executed.get("mtime") is not None and executed["mtime"] < _BUILD_STARTED
        notebook_done(docname, time.perf_counter() - _STARTED.pop(docname), cached=cached)


def no_tutorials_yet(app, docname, source) -> None:
    """A checkout with no notebook in ``docs/tutorials/`` still builds: the empty glob says so in words."""
    if docname == "tutorials" and not any((DOCS / "tutorials").glob("*.ipynb")):
        source[0] = re.sub(r"```\{toctree\}.*?```", "No tutorial is in this checkout yet.", source[0], flags=re.S)


def setup(app):
    from zoo.docs import quiet_kernel_logs
    quiet_kernel_logs()
    app.connect("include-read", rewrite_links)
    app.connect("autodoc-process-docstring", escape_bars)
    app.connect("autodoc-process-docstring", registry_options, priority=600)   # after escape_bars: escapes its own
    app.connect("autodoc-skip-member", public_once)
    app.connect("doctree-read", field_dashes)
    app.connect("source-read", notebook_started)
    app.connect("doctree-read", notebook_finished)
    app.add_directive("zoo-public-api", PublicAPI)
    app.connect("source-read", no_tutorials_yet)
