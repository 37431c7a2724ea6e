"""The package layout: every import, at module level or inside a function, points down the layers of
``docs/architecture.md`` (core <- usercode <- objectives <- models, guides, data <- rules <- registry
<- training <- evaluation <- experiments, homework <- flags, docs <- cli <- cli_snapshot), and there are no
import circles.

A circle that only works because one side imports lazily is still a circle: it means two modules
each need the other, so neither can be read (or tested) alone.
"""
import ast
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
    ("zoo.models", "guides", "zoo.data", "zoo.testing"),
    ("zoo.rules",),
    ("zoo.registry",),
    ("zoo.training",),
    ("zoo.evaluation",),
    ("zoo.experiments", "zoo.homework"),
    ("zoo.flags", "zoo.docs"),
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
