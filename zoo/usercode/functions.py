"""Reading a user's callable: whether it is a factory, what it takes, and the networks it names.

A user gives a function (or an ``nn.Module``) that holds its networks itself, in a closure or in
its module's globals; the zoo finds them there to make them the wrapper's sub-modules. A *factory*
builds fresh networks for each wrapper; it is told apart by the name of its first parameter.
"""
from __future__ import annotations

import inspect
from typing import Dict, Optional

from torch import nn

__all__ = ["first_parameter", "takes_argument", "named_modules"]


def first_parameter(obj) -> Optional[str]:
    """The name of the first parameter of a callable that is not an ``nn.Module`` (a class: its
    ``__init__``'s), what tells a factory (``x_dim``, ``model``) from the function itself; else None."""
    if not callable(obj) or isinstance(obj, nn.Module):
        return None
    try:
        params = list(inspect.signature(obj).parameters)
    except (TypeError, ValueError):
        return None
    return params[0] if params else None


def takes_argument(obj, argument: str) -> bool:
    """Whether ``obj`` can be called with the keyword ``argument`` (by name, or through ``**kwargs``)."""
    try:
        params = inspect.signature(obj).parameters
    except (TypeError, ValueError):
        return False
    return argument in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


def named_modules(fn) -> Dict[str, nn.Module]:
    """The ``nn.Module`` objects a function names: its closure variables and the globals it uses."""
    code = getattr(fn, "__code__", None)
    if code is None:
        return {}
    found = {}
    for var, cell in zip(code.co_freevars, fn.__closure__ or ()):
        try:
            value = cell.cell_contents
        except ValueError:                     # an empty cell
            continue
        if isinstance(value, nn.Module):
            found[var] = value
    module_globals = getattr(fn, "__globals__", {})
    for var in code.co_names:
        if isinstance(module_globals.get(var), nn.Module) and var not in found:
            found[var] = module_globals[var]
    seen, unique = set(), {}
    for var, module in found.items():          # one module under two names: keep the first
        if id(module) not in seen and var.isidentifier():
            seen.add(id(module))
            unique[var] = module
    return unique
