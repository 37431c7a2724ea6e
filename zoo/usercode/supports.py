"""A distribution's support as the zoo's guides see it.

A site's ``support`` may be wrapped in ``constraints.independent`` (by ``.to_event``, or by a
multivariate distribution); the guides care about the constraint inside, :func:`base_support`.

Example::

    >>> import pyro.distributions as dist, torch
    >>> support_name(dist.LogNormal(torch.zeros(3), 1.0).to_event(1).support)
    'positive'
    >>> same_support(dist.Bernoulli(0.5).support, dist.Bernoulli(torch.ones(4) / 2).to_event(1).support)
    True
"""
from __future__ import annotations

import re

import torch
from torch.distributions import constraints

__all__ = ["base_support", "support_name", "same_support", "is_discrete", "has_bijection"]


def base_support(support: constraints.Constraint) -> constraints.Constraint:
    """The constraint inside any ``constraints.independent`` wrappers: what one element of a value obeys."""
    while isinstance(support, constraints.independent):
        support = support.base_constraint
    return support


def support_name(support: constraints.Constraint) -> str:
    """``positive``, ``simplex``, ``integer_interval``: Pyro's name for a support."""
    support = base_support(support)
    for public in dir(constraints):
        if not public.startswith("_") and getattr(constraints, public) is support:
            return public
    return re.sub(r"(?<!^)(?=[A-Z])", "_", type(support).__name__.lstrip("_")).lower()


def same_support(a: constraints.Constraint, b: constraints.Constraint) -> bool:
    """Whether two constraints are the same support (``independent`` wrappers aside)."""
    a, b = base_support(a), base_support(b)
    return a is b or (type(a) is type(b) and vars(a) == vars(b))


def is_discrete(support: constraints.Constraint) -> bool:
    """Whether a support is discrete; a dependent one (known only with the site's parameters) is not."""
    try:
        return bool(support.is_discrete)
    except NotImplementedError:
        return False


def has_bijection(support: constraints.Constraint) -> bool:
    """Whether torch's ``biject_to`` maps the reals onto ``support`` (what a guide's Normal is pushed through)."""
    try:
        torch.distributions.biject_to(support)
        return True
    except NotImplementedError:
        return False
