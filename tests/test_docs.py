"""The documentation site: ``pyro-zoo docs`` builds it offline with warnings as errors, every internal
link and image of the built HTML resolves, and a real headless Chromium renders the home page and a
tutorial page with no missing image and no broken link.

The site is built once per module, with ``--setting ci``; this build is also how CI executes the
tutorials (``docs/tutorials/*.ipynb``): a cell that raises fails the build and so these tests.
"""
from __future__ import annotations

import functools
import http.server
import re
import shutil
import subprocess
import sys
import threading
import time
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


# the page's own links that resolve (HEAD, same origin), its images' natural sizes, and where its
# resources came from; MathJax (formulas only, shown as TeX offline) is the one remote script allowed
_RENDER_CHECK = """
const done = arguments[arguments.length - 1];
const links = [...new Set([...document.querySelectorAll('a[href]')].map(a => a.href)
    .filter(h => h.startsWith(location.origin)).map(h => h.split('#')[0]))];
Promise.all(links.map(h => fetch(h, {method: 'HEAD'}).then(r => [h, r.status]).catch(e => [h, String(e)])))
  .then(statuses => done({
    title: document.title,
    heading: (document.querySelector('article h1') || {}).textContent || '',
    links: statuses.length,
    broken: statuses.filter(([h, s]) => s !== 200),
    images: document.images.length,
    missing: [...document.images].filter(i => !i.complete || i.naturalWidth === 0).map(i => i.src),
    remote: performance.getEntriesByType('resource').map(r => r.name)
      .filter(n => !n.startsWith(location.origin) && !n.startsWith('data:') && !/mathjax/i.test(n)),
  }));
"""


def _pages_to_open(out: Path):
    pages = ["index.html"]
    built = sorted((out / "tutorials").glob("*.html"))
    if built:
        pages.append(f"tutorials/{built[0].name}")
    return pages


def test_browser_renders_home_and_tutorial(site, served, tmp_path):
    """A headless Chromium opens the home page and the first tutorial: each has its title, its
    heading, no image that failed to load (a notebook's figures are images), no link that does not
    resolve, and loaded nothing from outside the site."""
    out, _, _ = site
    assert TUTORIALS, "no tutorial in docs/tutorials/ to open"
    pages = _pages_to_open(out)
    assert len(pages) == 2
    start = time.perf_counter()
    browser = _chromium(tmp_path)
    try:
        browser.set_script_timeout(60)
        for page in pages:
            browser.get(f"{served}/{page}")
            seen = browser.execute_async_script(_RENDER_CHECK)
            assert "pyro-zoo" in seen["title"], (page, seen["title"])
            assert seen["heading"].strip(), (page, "no <h1>")
            assert seen["links"] > 10, (page, seen)
            assert not seen["broken"], (page, seen["broken"])
            assert not seen["missing"], (page, seen["missing"])
            assert not seen["remote"], (page, seen["remote"])
            if page.startswith("tutorials/"):
                assert seen["images"] > 0, (page, "a tutorial with no figure")
    finally:
        browser.quit()
    print(f"browser check of {pages}: {time.perf_counter() - start:.1f} s")


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
