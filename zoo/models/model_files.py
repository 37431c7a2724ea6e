"""``FILE.py:NAME`` as a model name: the registry's resolver for a user's model file.

``pyro-zoo train my_models.py:my_vae`` (and ``compare``, ``eval``, ``gradients``) names a Pyro
model in a file; :data:`~zoo.core.components.MODELS` resolves the spec here to an entry whose
builder imports the file afresh for every zoo model (fresh module-level networks) and wraps NAME
with :func:`~zoo.models.pyro_model.from_pyro`. The file's SHA-256 is recorded in the run's config
and checked before the file runs again (:mod:`zoo.usercode.loading`).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Optional

import torch

from zoo.core.components import MODELS, Component, option
from zoo.models.pyro_model import PyroModel, from_pyro
from zoo.usercode.loading import FileOptions, load_user_file, make_component
from zoo.usercode.specs import is_file_spec, split_spec

__all__ = ["ModelFileOptions", "build_from_file", "resolve_model_file"]


@dataclass
class ModelFileOptions(FileOptions):
    """A model file's options: its fingerprint, and how many covariate columns the run's data give it."""

    covariate_dim: int = option(0, "how many of the last columns of a data row are covariates (set from the data's "
                                "--covariates)", minimum=0, cli=False)


def build_from_file(spec: str, x_dim: int, source_sha256: Optional[str] = None, covariate_dim: int = 0,
                    example: Optional[torch.Tensor] = None) -> PyroModel:
    """The zoo model of the model file ``spec``, imported afresh (with ``source_sha256``: only if its
    bytes hash to it); ``example``: the run's data rows ``[n, x_dim]``, whose first rows feed the trial run
    (:func:`~zoo.models.pyro_model.from_pyro`'s ``data``; zeros without them, which a model that reads a
    column as a scale cannot take)."""
    obj, _ = load_user_file(spec, expected_sha256=source_sha256)       # checked before it runs
    return from_pyro(obj, x_dim, data=example, name=split_spec(spec)[1], covariate_dim=covariate_dim)


def resolve_model_file(spec: str) -> Optional[Component]:
    """The registry entry of a ``FILE.py:NAME`` model (the file is imported once here, to fail early)."""
    if not is_file_spec(spec):
        return None
    return make_component(spec, "model", ModelFileOptions, lambda file: functools.partial(build_from_file, file.spec),
                          reads_example_rows=True)


MODELS.add_resolver(resolve_model_file)
