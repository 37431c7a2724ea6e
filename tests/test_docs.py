"""The documentation site: ``pyro-zoo docs`` builds it offline with warnings as errors, every internal
link and image of the built HTML resolves, nothing loads from another host, flags keep their two
hyphens, the public API page documents ``import zoo``, and a real headless Chromium renders the home
page and every tutorial offline, with no missing image, no broken link and no formula left as TeX.

The site is built once per module, with ``--setting ci``; this build is also how CI executes the
tutorials (``docs/tutorials/*.ipynb``): a cell that raises fails the build and so these tests.
"""
from __future__ import annotations

import functools
import http.server
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from html import unescape
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urldefrag, urlsplit

import pytest

ROOT = Path(__file__).resolve().parent.parent
TUTORIALS = sorted((ROOT / "docs" / "tutorials").glob("*.ipynb"))
SPHINX_WARNING = re.compile(r"(^|: )(WARNING|ERROR|CRITICAL): ", re.M)


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """The site built by the real command, in the ci setting; (output folder, stderr, seconds)."""
    out = tmp_path_factory.mktemp("site") / "html"
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "zoo", "docs", "--setting", "ci", "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=900)
    seconds = time.perf_counter() - start
    assert proc.returncode == 0, f"pyro-zoo docs failed ({seconds:.0f} s):\n{proc.stderr[-6000:]}"
    return out, proc.stderr, seconds


@pytest.mark.slow
def test_site_builds_without_warnings(site):
    """-W makes any Sphinx warning fail the build; the log holds none either (MyST-NB and docutils
    report through Sphinx's logger), and every page of the site is there."""
    out, stderr, seconds = site
    assert not SPHINX_WARNING.search(stderr), stderr
    for page in ("index", "guide", "contract", "tutorials", "instructors", "results/index", "api/zoo",
                 "api/guides", "api/testing"):
        assert (out / f"{page}.html").is_file(), page
    for notebook in TUTORIALS:
        assert (out / "tutorials" / f"{notebook.stem}.html").is_file(), notebook.name
    print(f"docs build (ci setting, {len(TUTORIALS)} tutorials): {seconds:.1f} s")


class _Links(HTMLParser):
    """The link targets (``href``, ``src``) of one HTML page and the ids it defines."""

    def __init__(self):
        super().__init__()
        self.targets, self.ids = [], set()

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if attrs.get("id"):
            self.ids.add(attrs["id"])
        if tag == "a" and attrs.get("name"):
            self.ids.add(attrs["name"])
        for key in ("href", "src"):
            if attrs.get(key) is not None and not (tag == "link" and attrs.get("rel") == "canonical"):
                self.targets.append((tag, attrs[key]))


@functools.lru_cache(maxsize=None)
def _parse(path: Path) -> _Links:
    parser = _Links()
    parser.feed(path.read_text(encoding="utf-8"))
    return parser


@pytest.mark.slow
def test_every_internal_link_and_image_resolves(site):
    """Every relative href/src of every built page names a file of the site, and its #fragment an id
    on that page (the in-page links of the results page, the API reference's cross-references)."""
    out, _, _ = site
    broken = []
    pages = sorted(out.rglob("*.html"))
    assert len(pages) > 20
    for page in pages:
        for tag, target in _parse(page).targets:
            url, fragment = urldefrag(target)
            parts = urlsplit(url)
            if parts.scheme or parts.netloc:
                continue                                   # external: the browser test checks none is loaded
            path = (page.parent / unquote(parts.path)).resolve() if parts.path else page
            if path.is_dir():
                path = path / "index.html"
            if not path.is_file():
                broken.append(f"{page.relative_to(out)}: <{tag}> {target}")
            elif fragment and path.suffix == ".html" and unquote(fragment) not in _parse(path).ids:
                broken.append(f"{page.relative_to(out)}: <{tag}> {target} (no such id)")
    assert not broken, "\n".join(broken[:40])


def _remote_assets(page: Path) -> list:
    """The scripts and stylesheets a page would load from another host."""
    remote = []
    for tag, target in _parse(page).targets:
        parts = urlsplit(target)
        if tag in ("script", "link") and (parts.scheme in ("http", "https") or parts.netloc):
            remote.append(target)
    return remote


@pytest.mark.slow
def test_no_page_loads_a_script_or_stylesheet_from_another_host(site):
    """The site reads offline: every script (MathJax included, bundled under ``_static/mathjax``) and
    stylesheet is the site's own; Sphinx's default MathJax would come from a CDN and, offline, leave
    every formula as TeX source."""
    out, _, _ = site
    remote = {str(page.relative_to(out)): _remote_assets(page) for page in sorted(out.rglob("*.html"))}
    assert not {page: found for page, found in remote.items() if found}
    tutorial = (out / "tutorials" / f"{TUTORIALS[0].stem}.html").read_text(encoding="utf-8")
    mathjax = re.search(r'<script[^>]*src="([^"]*mathjax[^"]*)"', tutorial)
    assert mathjax, "the tutorial page loads no MathJax"
    assert (out / "tutorials" / urlsplit(mathjax.group(1)).path).resolve().is_file(), mathjax.group(1)


def _text(page: Path) -> str:
    """What a reader sees of a page's content: the HTML without its tags, scripts and styles."""
    html = page.read_text(encoding="utf-8")
    html = re.sub(r"<(script|style)\b.*?</\1>", " ", html, flags=re.S)
    return unescape(re.sub(r"<[^>]+>", "", html))


_EN_DASHED = re.compile(r"\u2013[A-Za-z]\w*")


def _written_en_dashes() -> set:
    """The en dashes before a letter that the sources write themselves (a range of Roman numerals)."""
    found = set()
    for pattern in ("*.md", "*.py", "*.ipynb"):
        for path in ROOT.rglob(pattern):
            if not {"_build", ".git", "node_modules"} & set(path.parts):
                found.update(_EN_DASHED.findall(path.read_text(encoding="utf-8", errors="replace")))
    return found


@pytest.mark.slow
def test_flags_keep_their_two_hyphens(site):
    """Smart quotes would print the prose's ``--baseline`` with an en dash, which fails when copied: no
    page shows an en dash before a letter that its source does not write, and the flags of the user
    guide's tables are there as written."""
    out, _, _ = site
    written = _written_en_dashes()
    dashed = {}
    for page in sorted(out.rglob("*.html")):
        found = [m for m in _EN_DASHED.findall(_text(page)) if m not in written]
        if found:
            dashed[str(page.relative_to(out))] = found[:5]
    assert not dashed, dashed
    guide = _text(out / "guide.html")
    assert "the guide's --baseline" in guide and "--particles 1 --insomnia 0" in guide


def _objects(page: Path) -> dict:
    """The API page's documented objects: id -> the HTML of its own description (up to the next one)."""
    html = page.read_text(encoding="utf-8")
    starts = [(m.start(), m.group(1)) for m in re.finditer(r'<dt class="sig sig-object py" id="([^"]+)"', html)]
    return {name: html[start:end] for (start, name), (end, _) in zip(starts, starts[1:] + [(len(html), "")])}


@pytest.mark.slow
def test_public_api_page_documents_import_zoo(site):
    """"The public API: zoo" documents every name ``import zoo`` gives as ``zoo.NAME``, once on that page
    (not again under its module)."""
    import zoo
    out, _, _ = site
    objects = _objects(out / "api" / "zoo.html")
    assert set(zoo.__all__) <= {name[len("zoo."):] for name in objects if name.startswith("zoo.")}
    for name in zoo.__all__:
        module = getattr(zoo, name).__module__
        assert f"{module}.{name}" not in objects, f"{name} shown twice on the public page"


@pytest.mark.slow
def test_each_argument_is_listed_once(site):
    """No API entry has both an Arguments and a Parameters list (the docstring's text in one, the
    signature's types in the other), and no argument is named twice in its list."""
    out, _, _ = site
    twice = []
    for page in sorted((out / "api").glob("*.html")):
        for name, html in _objects(page).items():
            fields = re.findall(r'<dt class="field-(?:odd|even)">(Arguments|Parameters)<', html)
            if len(fields) > 1:
                twice.append(f"{page.name} {name}: {fields}")
            arguments = re.search(r'>Parameters<.*?</dd>', html, flags=re.S)
            listed = re.findall(r"<strong>(\w+)</strong>", arguments.group(0)) if arguments else []
            if len(listed) != len(set(listed)):
                twice.append(f"{page.name} {name}: {listed}")
    assert not twice, "\n".join(twice[:20])
    from_pyro = _objects(out / "api" / "zoo.html")["zoo.from_pyro"]
    assert re.search(r"<strong>x_dim</strong>.*?int.*?the number of features", from_pyro, flags=re.S)


@pytest.mark.slow
def test_builders_list_every_registered_option(site):
    """``zoo.build_model`` and its kin list each registered component of their kind with every option
    it takes, read from the registry."""
    from zoo.core.components import REGISTRIES
    out, _, _ = site
    objects = _objects(out / "api" / "zoo.html")
    for builder, kind in (("zoo.build_model", "model"), ("zoo.build_guide", "guide"),
                          ("zoo.build_objective", "objective"), ("zoo.load_dataset", "dataset")):
        text = unescape(re.sub(r"<[^>]+>", "", objects[builder]))
        for name, component in REGISTRIES[kind].items():
            assert name in text, (builder, name)
            for spec in component.options.specs():
                assert f"{spec.name} (default {spec.default!r}" in text, (builder, name, spec.name)


def test_options_reference_is_valid_restructuredtext():
    """The generated option lists parse without a docutils warning (an option's help may hold ``*``,
    ``|`` or ``_``, which would otherwise be markup)."""
    import docutils.core
    import docutils.utils
    from zoo.docs import options_reference
    for kind in ("model", "guide", "objective", "dataset"):
        lines = options_reference(kind)
        doctree = docutils.core.publish_doctree("\n".join(lines), settings_overrides={
            "report_level": docutils.utils.Reporter.SEVERE_LEVEL + 1, "halt_level": 5})
        problems = [m.astext() for m in doctree.findall(docutils.nodes.system_message)]
        assert not problems, (kind, problems)
        assert "options" in lines[0]


@pytest.fixture(scope="module")
def served(site):
    """The built site over a loopback HTTP server (what a person's browser would see)."""
    out, _, _ = site
    handler = functools.partial(_QuietHandler, directory=str(out))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def _chromium(tmp_path):
    """Debian's chromium and chromium-driver (installed by .ci/run), headless, and offline: every
    host but the loopback is unresolvable, so a page that needs a CDN shows it."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not (binary and driver):
        pytest.skip("needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver; "
                    ".ci/run installs them)")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
                 f"--user-data-dir={tmp_path / 'chromium-profile'}",
                 "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(driver), options=options)


# after MathJax has typeset the page (its startup promise; a page whose MathJax did not load has none):
# the page's own links that resolve (HEAD, same origin), its images' natural sizes, the prose a reader
# sees, and every script, stylesheet and resource that did not come from the site. On a loaded machine the
# check could run before MathJax had started or drawn anything (seen twice under pytest -n 2, never alone),
# so it waits, up to a minute, for a page with a MathJax script and TeX in it to show a typeset formula
_RENDER_CHECK = """
const done = arguments[arguments.length - 1];
const until = Date.now() + 60000;
const typeset = new Promise(resolve => {
  const poll = () => {
    const started = window.MathJax && MathJax.startup && MathJax.startup.promise;
    const waiting = document.querySelector('script[src*="mathjax"]') && document.querySelector('.math')
        && !document.querySelector('mjx-container') && Date.now() < until;
    if (started && !waiting) started.then(resolve, resolve);
    else if (!started && !document.querySelector('script[src*="mathjax"]')) resolve();
    else if (Date.now() >= until) resolve();
    else setTimeout(poll, 200);
  };
  poll();
});
const links = () => [...new Set([...document.querySelectorAll('a[href]')].map(a => a.href)
    .filter(h => h.startsWith(location.origin)).map(h => h.split('#')[0]))];
const prose = () => {            // the page's text without code (a plot label may be TeX) or MathML copies
  const article = (document.querySelector('article') || document.body).cloneNode(true);
  article.querySelectorAll('pre, code, mjx-assistive-mml, script, style').forEach(e => e.remove());
  return article.textContent;
};
const foreign = url => !url.startsWith(location.origin) && !url.startsWith('data:');
typeset.then(() => Promise.all(links().map(h => fetch(h, {method: 'HEAD'}).then(r => [h, r.status])
                                                    .catch(e => [h, String(e)]))))
  .then(statuses => done({
    title: document.title,
    heading: (document.querySelector('article h1') || {}).textContent || '',
    links: statuses.length,
    broken: statuses.filter(([h, s]) => s !== 200),
    images: document.images.length,
    missing: [...document.images].filter(i => !i.complete || i.naturalWidth === 0).map(i => i.src),
    typeset: document.querySelectorAll('mjx-container').length,
    prose: prose(),
    remote: [...[...document.querySelectorAll('script[src]')].map(s => s.src),
             ...[...document.querySelectorAll('link[rel~="stylesheet"]')].map(l => l.href),
             ...performance.getEntriesByType('resource').map(r => r.name)].filter(foreign),
  }));
"""

# TeX a reader should never see: what MathJax typesets is drawn, not printed as its source
_RAW_TEX = re.compile(r"\\[\[\]()]|\\(?:mathrm|mathbb|mathcal|frac|sum|log|mid|operatorname|big|left|right|"
                      r"underbrace|text|qquad|top)\b|\$\$")


def _pages_to_open(out: Path):
    return ["index.html"] + [f"tutorials/{page.name}" for page in sorted((out / "tutorials").glob("*.html"))]


@pytest.mark.slow
def test_browser_renders_home_and_tutorials(site, served, tmp_path):
    """A headless Chromium, with no network but the loopback, opens the home page and every tutorial:
    each has its title, its heading, no image that failed to load (a notebook's figures are images), no
    link that does not resolve, and loaded no script, stylesheet or other resource from outside the
    site; on the tutorials MathJax (bundled) has typeset the formulas, and no TeX source is left in
    the text a reader sees."""
    out, _, _ = site
    assert TUTORIALS, "no tutorial in docs/tutorials/ to open"
    pages = _pages_to_open(out)
    assert len(pages) == 1 + len(TUTORIALS)
    start = time.perf_counter()
    browser = _chromium(tmp_path)
    try:
        browser.set_script_timeout(120)
        for page in pages:
            browser.get(f"{served}/{page}")
            seen = browser.execute_async_script(_RENDER_CHECK)
            assert "pyro-zoo" in seen["title"], (page, seen["title"])
            assert seen["heading"].strip(), (page, "no <h1>")
            assert seen["links"] > 10, (page, seen["links"])
            assert not seen["broken"], (page, seen["broken"])
            assert not seen["missing"], (page, seen["missing"])
            assert not seen["remote"], (page, seen["remote"])
            if page.startswith("tutorials/"):
                assert seen["images"] > 0, (page, "a tutorial with no figure")
                assert seen["typeset"] > 0, (page, "no formula typeset")
                raw = sorted({m.group(0) for m in _RAW_TEX.finditer(seen["prose"])})
                assert not raw, (page, raw)
    finally:
        browser.quit()
    print(f"browser check of {len(pages)} pages: {time.perf_counter() - start:.1f} s")


# the leaderboard page as a reader's browser lays it out: each table's width against the article's column, and each
# training thumbnail's shown width, its link and the natural width of what the link opens
_LEADERBOARD_CHECK = """
const article = document.querySelector('article');
return {
  column: article.clientWidth,
  tables: [...article.querySelectorAll('table')].map(t => t.getBoundingClientRect().width),
  thumbnails: [...article.querySelectorAll('img')].filter(i => i.alt.startsWith('training of'))
    .map(i => ({shown: i.getBoundingClientRect().width, natural: i.naturalWidth,
                link: i.closest('a') ? i.closest('a').getAttribute('href') : null})),
};
"""


@pytest.mark.slow
def test_the_leaderboard_fits_its_column_and_its_thumbnails_open_full_size(site, served, tmp_path):
    """In a 1280-pixel window (the site's column is about 740 pixels) every table of the leaderboard, and the
    README's results table on the home page, fits the column, with no scroll, and each training plot is shown at
    its readable width (THUMBNAIL_PIXELS, 8-point type) and links to its image, which has more pixels than shown."""
    from zoo.evaluation.plots import THUMBNAIL_PIXELS
    browser = _chromium(tmp_path)
    try:
        browser.set_window_size(1280, 900)
        browser.get(f"{served}/index.html")
        home = browser.execute_script(_LEADERBOARD_CHECK)
        browser.get(f"{served}/results/LEADERBOARD.html")
        seen = browser.execute_script(_LEADERBOARD_CHECK)
    finally:
        browser.quit()
    assert home["tables"] and all(width <= home["column"] for width in home["tables"]), home
    assert seen["tables"] and all(width <= seen["column"] for width in seen["tables"]), seen
    assert seen["thumbnails"], seen
    for thumbnail in seen["thumbnails"]:
        assert thumbnail["shown"] == THUMBNAIL_PIXELS[0] and thumbnail["natural"] > thumbnail["shown"], thumbnail
        assert thumbnail["link"] and thumbnail["link"].endswith(".png"), thumbnail
        assert (site[0] / "results" / thumbnail["link"]).resolve().is_file(), thumbnail


def test_docs_outside_a_checkout_is_one_line(monkeypatch, tmp_path, capsys):
    """An installed pyro-zoo has no docs/ folder: 'pyro-zoo docs' says where to run it, in one line."""
    import zoo.docs
    from zoo.cli import main
    monkeypatch.setattr(zoo.docs, "__file__", str(tmp_path / "site-packages" / "zoo" / "docs.py"))
    assert main(["docs", "--out", str(tmp_path / "html")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("pyro-zoo: error: ") and "\n" not in err and "source checkout" in err, err
    assert not (tmp_path / "html").exists()


def test_docs_without_sphinx_says_what_to_install(monkeypatch, tmp_path, capsys):
    """Without the docs extra, one line names it."""
    from zoo.cli import main
    monkeypatch.setitem(sys.modules, "sphinx.cmd.build", None)       # import fails as if not installed
    assert main(["docs", "--out", str(tmp_path / "html")]) == 2
    err = capsys.readouterr().err.strip()
    assert 'pip install "pyro-zoo[docs]"' in err and "\n" not in err, err
    assert not (tmp_path / "html").exists()


@pytest.mark.slow
def test_build_says_which_setting_and_each_tutorial(site):
    """The build's log names its setting and the other one, then one line per tutorial with its seconds."""
    out, stderr, _ = site
    assert "ci setting" in stderr and "--setting full" in stderr, stderr[:2000]
    for notebook in TUTORIALS:
        assert re.search(rf"tutorial {notebook.stem}: \d+\.\d s", stderr), (notebook.stem, stderr[-3000:])
    assert "Executing notebook with kernel" not in stderr


def test_docs_help_and_default_build_name_the_ci_setting(monkeypatch, capsys, tmp_path):
    """``pyro-zoo docs`` runs the full tutorials by default: its --help and its first line say that
    ``--setting ci`` is the fast build (Sphinx is stubbed: only the start is checked here)."""
    import zoo.docs
    from zoo.cli import main
    with pytest.raises(SystemExit):
        main(["docs", "--help"])
    docs_help = capsys.readouterr().out
    assert "--setting ci" in " ".join(docs_help.split()), docs_help
    monkeypatch.setattr(zoo.docs, "run_sphinx", lambda command, quiet, note: 0)
    zoo.docs.build(str(tmp_path / "html"), setting="full")
    first = capsys.readouterr().err.splitlines()[0]
    assert "full setting" in first and "'pyro-zoo docs --setting ci'" in first, first


_KERNEL_RUN = """
import nbclient, nbformat
from zoo.docs import kernel_environment
notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("1 + 1")])
if {configured}:
    with kernel_environment("ci"):
        nbclient.NotebookClient(notebook, kernel_name="python3", timeout=120).execute()
else:
    nbclient.NotebookClient(notebook, kernel_name="python3", timeout=120).execute()
"""


@pytest.mark.slow
def test_tutorial_kernels_do_not_warn_about_tcp(tmp_path):
    """ipykernel warns that a kernel over TCP is open to eavesdropping; the tutorials' kernels are local
    (the loopback), and the kernel configuration the build writes drops that one line. A kernel started
    without it still warns, so the check can fail."""
    pytest.importorskip("nbclient")
    env = {k: v for k, v in os.environ.items() if k != "IPYTHONDIR"}
    env["IPYTHONDIR"] = str(tmp_path / "ipython")            # a plain profile, not the user's
    runs = {configured: subprocess.run([sys.executable, "-c", _KERNEL_RUN.format(configured=configured)],
                                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
            for configured in (False, True)}
    for run in runs.values():
        assert run.returncode == 0, run.stderr[-3000:]
    if "without encryption" not in runs[False].stderr:
        pytest.skip("this ipykernel does not warn about TCP")
    assert "without encryption" not in runs[True].stderr, runs[True].stderr


def test_tutorials_page_says_how_to_run_one_yourself():
    """The tutorials' index gives the command, the extra that installs it (setup.cfg's ``docs`` extra has
    nbconvert and a kernel) and the setting variable the notebooks read."""
    import configparser
    page = (ROOT / "docs" / "tutorials.md").read_text()
    assert 'pip install -e ".[docs]"' in page and "jupyter nbconvert --to notebook --execute docs/tutorials/" in page
    assert "PYRO_ZOO_TUTORIAL_SETTING=ci" in page
    setup = configparser.ConfigParser()
    setup.read(ROOT / "setup.cfg")
    docs_extra = setup["options.extras_require"]["docs"].split()
    assert "nbconvert" in docs_extra and "ipykernel" in docs_extra
    for notebook in TUTORIALS:
        assert "PYRO_ZOO_TUTORIAL_SETTING" in notebook.read_text(), notebook.name


# -- what the build needs, and a stop while it builds ---------------------------------------------------------
def _distribution_closure(names):
    """The distributions ``names`` need when installed, theirs included (installed ones only; extras left out)."""
    from importlib import metadata

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name
    seen, todo = set(), [canonicalize_name(n) for n in names]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue
        for text in requires:
            requirement = Requirement(text)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                todo.append(canonicalize_name(requirement.name))
    return seen


def _uncovered(needs, extra):
    """The modules of ``needs`` that no distribution of the zoo's requirements or of ``extra`` (theirs included)
    holds."""
    import configparser
    from importlib import metadata

    from packaging.utils import canonicalize_name
    setup = configparser.ConfigParser()
    setup.read(ROOT / "setup.cfg")
    core = [line.split(">")[0].split("=")[0].split("<")[0].strip()
            for line in setup["options"]["install_requires"].split("\n") if line.strip()]
    provided = _distribution_closure(core + list(extra))
    owners = metadata.packages_distributions()
    return {module: why for module, why in needs.items()
            if not any(canonicalize_name(d) in provided for d in owners.get(module, [module]))}


def test_the_docs_extra_covers_every_import_of_the_build():
    """`pip install -e ".[docs]" && pyro-zoo docs` could not succeed: tutorial 06 codes with constriction, through
    zoo.evaluation.bitsback, and the docs extra did not install it. Every module the build imports
    (zoo.docs.build_imports: conf.py, its extensions and theme, the tutorials' kernel, the tutorials and the zoo
    modules they use, the imports inside those modules' functions included) is held by a distribution of the docs
    extra or of the zoo's own requirements, or by one they require. The same check of the extra without constriction
    finds it missing, so the check can fail."""
    from zoo.docs import build_imports, docs_extra
    needs = build_imports(ROOT / "docs")
    assert "constriction" in needs and "06_discrete_intensities" in needs["constriction"], needs
    assert {"sphinx", "myst_nb", "furo", "ipykernel", "torch"} <= set(needs)
    extra = docs_extra(ROOT)
    assert not _uncovered(needs, extra), _uncovered(needs, extra)
    assert set(_uncovered(needs, [n for n in extra if n != "constriction"])) == {"constriction"}


@pytest.mark.parametrize("missing", ["a module a tutorial needs", "a package of the extra"])
def test_docs_with_a_missing_dependency_names_it_and_the_extra(monkeypatch, tmp_path, capsys, missing):
    """Without constriction the build ran five tutorials and then ended in Sphinx's crash report of the sixth. A
    package the build needs and a package of the docs extra are each one line, before anything is built, naming
    the package and the extra."""
    from importlib import metadata

    from zoo.cli import main
    if missing == "a module a tutorial needs":
        monkeypatch.setitem(sys.modules, "constriction", None)           # import fails as if not installed
        named = "the package constriction (tutorial 06_discrete_intensities uses zoo.evaluation.bitsback"
    else:
        real = metadata.distribution

        def distribution(name):
            if name == "furo":
                raise metadata.PackageNotFoundError(name)
            return real(name)
        monkeypatch.setattr(metadata, "distribution", distribution)
        named = "needs furo, of pyro-zoo's [docs] extra"
    assert main(["docs", "--setting", "ci", "--out", str(tmp_path / "html")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("pyro-zoo: error: building the docs needs") and "\n" not in err, err
    assert named in err and 'pip install -e ".[docs]"' in err, err
    assert not (tmp_path / "html").exists()


_STAND_IN = """
import pathlib, signal, sys, time
signal.signal(signal.SIGTERM, lambda *a: (print("Interrupted!", file=sys.stderr, flush=True), sys.exit(2)))
print("pyro-zoo docs: tutorial 01_lvm_and_vi: 1.0 s", file=sys.stderr, flush=True)
pathlib.Path(sys.argv[1]).write_text(str(__import__("os").getpid()))
time.sleep(600)
"""


def test_ctrl_c_while_sphinx_builds_is_one_line_and_exit_130(monkeypatch, tmp_path, capsys):
    """Ctrl-C of `pyro-zoo docs` printed Sphinx's report ("Interrupted!", or the crash report of the notebook it
    stopped) and exited 2 with "the documentation build failed". Here a stand-in for Sphinx (it passes a
    tutorial's line through, says "Interrupted!" when stopped, and would run ten minutes) is interrupted once it
    runs: the command says it stopped in one line, exits 130, and the stand-in is gone."""
    import signal
    import threading

    import zoo.docs
    from zoo.cli import main
    started = tmp_path / "started"
    monkeypatch.setattr(zoo.docs, "sphinx_command",
                        lambda source, target, quiet: [sys.executable, "-c", _STAND_IN, str(started)])

    def ctrl_c_once_it_runs():
        while not started.exists() or not started.read_text():     # the stand-in's own signal that it runs
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGINT)
    threading.Thread(target=ctrl_c_once_it_runs, daemon=True).start()
    out = tmp_path / "html"
    assert main(["docs", "--setting", "ci", "--out", str(out)]) == 130
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[0].startswith("pyro-zoo docs: building"), lines
    assert lines[-1] == f"pyro-zoo: stopped by SIGINT; the site in {out} is partial: build it again", lines
    assert set(lines[1:-1]) <= {"pyro-zoo docs: tutorial 01_lvm_and_vi: 1.0 s"}, lines      # no "Interrupted!"
    with pytest.raises(ProcessLookupError):
        os.kill(int(started.read_text()), 0)


# -- the docs from the [docs] extra alone, in a fresh environment ----------------------------------------------
def _core_install(folder: Path, names) -> None:
    """Links in ``folder`` to this environment's installed files of the distributions ``names`` and all they
    require: a site folder holding the zoo's own requirements and nothing else of this environment."""
    from importlib import metadata
    folder.mkdir()
    for name in sorted(_distribution_closure(names)):
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        for top in {f.parts[0] for f in dist.files or []} - {"..", "__pycache__"}:
            source, link = Path(dist.locate_file(top)), folder / top
            if source.exists() and not os.path.lexists(link):
                link.symlink_to(source)


@pytest.mark.slow
def test_the_site_builds_from_the_docs_extra_alone(tmp_path):
    """`pip install -e ".[docs]" && pyro-zoo docs`, as a new user runs it, in a virtual environment made without
    this one's site-packages. Installing torch and the zoo's other requirements from the registry would take
    gigabytes, so they are linked in from this environment (only the distributions setup.cfg's install_requires
    names and those they require); everything else comes from the registry through pip, so the build sees the
    [docs] extra and nothing of the dev tools. Before the install the venv has no Sphinx (so nothing leaks in);
    after it, constriction is the venv's own; hypothesis and ray (dev only) stay out; the site builds. Without
    constriction, the command says so in one line (and the build then never starts)."""
    import configparser
    import venv
    setup = configparser.ConfigParser()
    setup.read(ROOT / "setup.cfg")
    core = [line.split(">")[0].split("=")[0].split("<")[0].strip()
            for line in setup["options"]["install_requires"].split("\n") if line.strip()]
    checkout = tmp_path / "pyro-zoo"                # a fresh checkout: the tracked tree, no build outputs
    shutil.copytree(ROOT, checkout, ignore=shutil.ignore_patterns(".git", "_build", "__pycache__", "*.egg-info",
                                                                   "runs", "results", ".pytest_cache"))
    shutil.copytree(ROOT / "benchmarks" / "results", checkout / "benchmarks" / "results")
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True, system_site_packages=False)
    python = env_dir / "bin" / "python"
    _core_install(tmp_path / "core", core)
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    (site / "zoo-core.pth").write_text(str(tmp_path / "core") + "\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "JUPYTER", "IPYTHON", "VIRTUAL_ENV"))}
    env.update(HOME=str(tmp_path / "home"), PYTHONNOUSERSITE="1", OMP_NUM_THREADS="2",
               PIP_CACHE_DIR=env.get("PIP_CACHE_DIR", str(Path.home() / ".cache" / "pip")),      # downloads kept
               PATH=f"{env_dir / 'bin'}{os.pathsep}{env['PATH']}")

    def run(*command, timeout=1800):
        return subprocess.run([str(c) for c in command], cwd=checkout, env=env, capture_output=True, text=True,
                              timeout=timeout)
    assert run(python, "-c", "import sphinx").returncode != 0, "the venv sees this environment's Sphinx"
    assert run(python, "-c", "import torch, pyro, sklearn").returncode == 0
    install = run(python, "-m", "pip", "install", "-e", ".[docs]")
    assert install.returncode == 0, install.stdout[-3000:] + install.stderr[-3000:]
    where = run(python, "-c", "import constriction; print(constriction.__file__)")
    assert where.returncode == 0 and where.stdout.startswith(str(env_dir)), where
    for dev_only in ("hypothesis", "ray"):
        assert run(python, "-c", f"import {dev_only}").returncode != 0, f"{dev_only} leaked into the venv"
    out = tmp_path / "html"
    build = run(env_dir / "bin" / "pyro-zoo", "docs", "--setting", "ci", "--out", out)
    assert build.returncode == 0, build.stderr[-6000:]
    assert (out / "tutorials" / "06_discrete_intensities.html").is_file()
    assert run(python, "-m", "pip", "uninstall", "-y", "constriction").returncode == 0
    refused = run(env_dir / "bin" / "pyro-zoo", "docs", "--setting", "ci", "--out", tmp_path / "again")
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1, refused.stderr
    assert "constriction" in refused.stderr and 'pip install -e ".[docs]"' in refused.stderr, refused.stderr


@pytest.mark.slow
def test_ctrl_c_of_a_real_build_is_one_line_and_exit_130(tmp_path):
    """A terminal's Ctrl-C (SIGINT to the command's process group) once the first tutorial has run: Sphinx's
    "Interrupted!" or crash report and exit 2 before; now one line, exit 130, and no Sphinx or kernel left."""
    import signal
    out = tmp_path / "html"
    proc = subprocess.Popen([sys.executable, "-m", "zoo", "docs", "--setting", "ci", "--out", str(out)], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
    for line in proc.stderr:
        if "pyro-zoo docs: tutorial 01_" in line:
            break
    os.killpg(proc.pid, signal.SIGINT)
    rest = proc.stderr.read()
    assert proc.wait(timeout=120) == 130, rest
    assert rest == f"pyro-zoo: stopped by SIGINT; the site in {out} is partial: build it again\n", rest
    left = subprocess.run(["pgrep", "-f", str(out)], capture_output=True, text=True).stdout
    assert not left.strip(), left
