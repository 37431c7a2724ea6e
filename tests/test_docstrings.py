"""The Example sections of the zoo's docstrings run, and say what they print (doctests).

One case per module whose docstrings hold an example (``>>>``): a module without one is no case (it used
to count as a passing one that ran nothing), and a case that runs no example fails."""
import ast
import doctest
import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCSTRING_OWNERS = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)


def has_examples(path: Path) -> bool:
    tree = ast.parse(path.read_text())
    return any(">>>" in (ast.get_docstring(node, clean=False) or "") for node in ast.walk(tree)
               if isinstance(node, DOCSTRING_OWNERS))


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = sorted(module_name(p) for package in ("zoo", "guides") for p in (ROOT / package).rglob("*.py")
                 if has_examples(p))


def test_the_collection_finds_the_examples():
    assert len(MODULES) > 20 and "zoo.testing" in MODULES


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False)
    assert result.attempted > 0, f"{name} has '>>>' in a docstring that doctest does not run (a nested function's?)"
    assert result.failed == 0, f"{result.failed} of {result.attempted} doctest lines in {name} failed"
