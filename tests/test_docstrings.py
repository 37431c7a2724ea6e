"""The Example sections of the zoo's docstrings run, and say what they print (doctests)."""
import doctest
import importlib
import pkgutil

import pytest

import guides
import zoo

MODULES = sorted(name for package in (zoo, guides)
                 for _, name, _ in pkgutil.walk_packages(package.__path__, package.__name__ + ".")
                 if not name.endswith("__main__"))           # running it would start the CLI


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} doctest lines in {name} failed"
