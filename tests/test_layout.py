"""The package layout: every import, at module level or inside a function, points down the layers of
``docs/architecture.md`` (core <- usercode <- objectives <- models, guides, data <- rules <- registry
<- training <- evaluation <- experiments, homework <- flags, docs, cli_process <- cli <- cli_snapshot), and
there are no import circles. The page itself stays the tree's: every path and module it names exists, it names every
package and module of ``zoo/`` and ``guides/``, and its diagram holds every layer.

A circle that only works because one side imports lazily is still a circle: it means two modules
each need the other, so neither can be read (or tested) alone.
"""
import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("zoo", "guides")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def import_graph():
    files = [p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")]
    modules = {module_name(p): p for p in files}
    graph = {}
    for name, path in modules.items():
        edges = set()
        for node in ast.walk(ast.parse(path.read_text())):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            for t in targets:
                if t in modules and t != name and not name.startswith(t + "."):
                    edges.add(t)          # a package's own __init__ is imported on the way to a submodule
        graph[name] = edges
    return graph


def find_cycle(graph):
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        state[node] = "done"
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_no_import_circles():
    graph = import_graph()
    assert len(graph) > 30                      # the walk found the packages
    # the lazy public API of ``zoo/__init__`` maps names to modules by string, so it has no edges
    cycle = find_cycle(graph)
    assert cycle is None, " -> ".join(cycle)


def test_the_checker_finds_a_circle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_core_imports_nothing_above_it():
    graph = import_graph()
    for name, edges in graph.items():
        if name.startswith("zoo.core"):
            above = [e for e in edges if not e.startswith("zoo.core")]
            assert not above, f"{name} imports {above}"


def test_usercode_imports_only_core():
    """``zoo.usercode`` is the zoo's boundary with a user's code; ``from_pyro`` and user guides build on it,
    so it builds on ``zoo.core`` alone."""
    graph = import_graph()
    assert any(name.startswith("zoo.usercode.") for name in graph)
    for name, edges in graph.items():
        if name.startswith("zoo.usercode"):
            above = [e for e in edges if not e.startswith(("zoo.core", "zoo.usercode"))]
            assert not above, f"{name} imports {above}"


#: The layers of ``docs/architecture.md``, lowest first. A module may import its own package and the
#: packages of lower layers; packages that share a layer do not import each other.
LAYERS = (
    ("zoo.core",),
    ("zoo.usercode",),
    ("zoo.objectives",),
    ("zoo.models", "guides", "zoo.data", "zoo.testing", "zoo.exact_models"),
    ("zoo.rules",),
    ("zoo.registry",),
    ("zoo.training",),
    ("zoo.evaluation",),
    ("zoo.experiments", "zoo.homework"),
    ("zoo.flags", "zoo.docs", "zoo.cli_process"),
    ("zoo.cli",),
    ("zoo.cli_snapshot",),
    ("zoo.__main__", "zoo"),
)


def home(module: str) -> str:
    """The package of ``module`` in :data:`LAYERS` (``zoo`` itself, its lazy ``__init__``, is the top)."""
    for layer in LAYERS:
        for package in layer:
            if package != "zoo" and (module == package or module.startswith(package + ".")):
                return package
    assert module == "zoo", f"{module} is in no layer of LAYERS: give it one (and a line in docs/architecture.md)"
    return "zoo"


def layer_of(module: str) -> int:
    package = home(module)
    return next(i for i, layer in enumerate(LAYERS) if package in layer)


def upward_edges(graph):
    """The edges (a, b) where a imports b and b's package is not below a's (its own package is fine)."""
    return sorted((a, b) for a, edges in graph.items() for b in edges
                  if home(a) != home(b) and layer_of(b) >= layer_of(a))


def test_no_import_points_up():
    graph = import_graph()
    bad = upward_edges(graph)
    assert not bad, "imports that point up or sideways: " + ", ".join(f"{a} -> {b}" for a, b in bad)


def test_the_checker_finds_an_upward_edge():
    """Training importing the evaluation harness (as ``fit`` once did for its validation ELBO) is upward;
    the harness importing training is down; models importing guides is sideways, refused too."""
    graph = {"zoo.training.loop": {"zoo.evaluation.harness", "zoo.core.errors"},
             "zoo.evaluation.harness": {"zoo.training.refit"}, "zoo.models.vae": {"guides.amortized"}}
    assert upward_edges(graph) == [("zoo.models.vae", "guides.amortized"),
                                   ("zoo.training.loop", "zoo.evaluation.harness")]


# -- docs/architecture.md is the tree's ------------------------------------------------------------------
PAGE = ROOT / "docs" / "architecture.md"
#: where a path the page names may start
TOP_FOLDERS = ("zoo/", "guides/", "tests/", "docs/", "benchmarks/", "examples/")


def named_on_page(text: str):
    """The repository paths (``zoo/core/levels.py``, ``zoo/evaluation/estimators/``) and dotted names
    (``zoo.rules``, ``zoo.evaluation.estimators.ESTIMATORS``) that the page writes as code."""
    spans = re.findall(r"`([^`\n]+)`", text)
    paths = {s for s in spans if s.startswith(TOP_FOLDERS)}
    dotted = {s for s in spans if re.fullmatch(r"(zoo|guides)(\.\w+)+", s)}
    return paths, dotted


def resolves(dotted: str) -> bool:
    """Whether ``dotted`` is a module of the tree, or a name its longest module prefix defines at top level."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        base = ROOT.joinpath(*parts[:cut])
        source = base / "__init__.py" if (base / "__init__.py").is_file() else base.with_suffix(".py")
        if source.is_file():
            rest = parts[cut:]
            if not rest:
                return True
            defined = set()
            for node in ast.parse(source.read_text()).body:
                if isinstance(node, (ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef)):
                    defined.add(node.name)
                elif isinstance(node, (ast.Assign, ast.AnnAssign)):
                    targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                    defined |= {t.id for t in targets if isinstance(t, ast.Name)}
                elif isinstance(node, (ast.Import, ast.ImportFrom)):
                    defined |= {(a.asname or a.name).split(".")[0] for a in node.names}
            return len(rest) == 1 and rest[0] in defined
    return False


def test_every_path_and_module_the_architecture_page_names_exists():
    """The page named zoo/data.py, gone since the data loaders became a package: each path it names (a file, or a
    folder ending in /) exists, and each dotted name is a module or a name its module defines."""
    paths, dotted = named_on_page(PAGE.read_text())
    missing = sorted(p for p in paths if not ((ROOT / p).is_dir() if p.endswith("/") else (ROOT / p).is_file()))
    assert not missing, f"docs/architecture.md names paths that do not exist: {missing}"
    unresolved = sorted(d for d in dotted if not resolves(d))
    assert not unresolved, f"docs/architecture.md names modules or names that do not exist: {unresolved}"
    assert resolves("zoo.evaluation.estimators.ESTIMATORS") and not resolves("zoo.evaluation.estimators.NOTHING")
    assert not resolves("zoo.data.files.load") and resolves("zoo.rules")


def test_the_architecture_page_names_every_package_and_module():
    """The page lacked the defensive proposal, the k-level likelihoods, bits-back, the sandbox and the harness's
    estimators. Every package of zoo/ and guides/ is named as its folder (``zoo/evaluation/estimators/``) and
    every module as its path; a homework assignment's files (checks, probes, starter, ...) are named by their
    assignment's folder, and the reference solutions by theirs."""
    paths, _ = named_on_page(PAGE.read_text())
    unnamed = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            relative = path.relative_to(ROOT).as_posix()
            folder = path.parent.relative_to(ROOT).as_posix() + "/"
            if "__pycache__" in relative:
                continue
            if folder not in paths and (path.parent / "__init__.py").is_file() and folder != "zoo/":
                unnamed.append(folder)
            if path.name == "__init__.py" and folder != "zoo/":
                continue                                    # a package is named by its folder
            if re.match(r"zoo/homework/(?!\w+\.py$)", relative):
                continue                                    # an assignment's files, or a solution: by their folder
            if relative not in paths:
                unnamed.append(relative)
    assert not unnamed, f"docs/architecture.md does not name: {sorted(set(unnamed))}"


def test_the_architecture_page_draws_every_layer():
    """Each package of :data:`LAYERS` is in the page's diagram, in a row of its own layer (packages that share a
    row share a layer; an indented line continues the row above), from the top row down."""
    diagram = PAGE.read_text().split("```text", 1)[1].split("```", 1)[0]
    rows = []
    for line in diagram.strip("\n").splitlines():
        packages = re.split(r"\s{2,}", line.strip())[0]          # the left column; the description follows
        names = set(re.findall(r"\b(?:zoo|guides)(?:\.\w+)*", packages))
        if line.startswith("   ") and rows:
            rows[-1] |= names
        else:
            rows.append(names)
    assert rows[::-1] == [set(layer) for layer in LAYERS]


#: the widest public signature allowed (issue 81): where more is needed, a settings object
MAX_PARAMETERS = 8


def _wide_signatures(source: str, path: str = "<source>"):
    """(path, line, name, count) of each public function or method of ``source`` taking more than MAX_PARAMETERS
    parameters (``self``/``cls`` not counted; ``*args``/``**kwargs`` not counted); methods of private classes and
    private functions are left out, ``__init__`` of a public class is not."""
    wide = []

    def visit(node, private_class: bool):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.ClassDef):
                visit(child, private_class or child.name.startswith("_"))
            elif isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                public = not child.name.startswith("_") or child.name == "__init__"
                a = child.args
                names = [x.arg for x in (*a.posonlyargs, *a.args, *a.kwonlyargs)]
                count = len(names) - (names[:1] in (["self"], ["cls"]))
                if public and not private_class and count > MAX_PARAMETERS:
                    wide.append((path, child.lineno, child.name, count))
    visit(ast.parse(source), False)
    return wide


def test_no_public_signature_is_wider_than_eight_parameters():
    wide = [w for package in ("zoo", "guides") for p in sorted((ROOT / package).rglob("*.py"))
            for w in _wide_signatures(p.read_text(), str(p.relative_to(ROOT)))]
    assert not wide, "\n".join(f"{p}:{line} {name} takes {n} parameters; give it a settings object"
                               for p, line, name, n in wide)


def test_the_signature_checker_counts_what_it_should():
    source = '''
def f(a, b, c, d, e, f, g, h, i): pass
def ok(a, b, c, d, e, f, g, h, *args, **kwargs): pass
def _private(a, b, c, d, e, f, g, h, i): pass
class Public:
    def __init__(self, a, b, c, d, e, f, g, h, i): pass
    def method(self, a, b, c, d, e, f, g, h): pass
class _Private:
    def __init__(self, a, b, c, d, e, f, g, h, i): pass
'''
    assert [(name, n) for _, _, name, n in _wide_signatures(source)] == [("f", 9), ("__init__", 9)]
