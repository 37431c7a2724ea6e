"""The package layout has no import circles: every import, at module level or inside a function,
goes one way (core <- models, guides, objectives <- training, evaluation <- experiments <- cli).

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
