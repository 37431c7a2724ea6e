"""The registry of models, guides, objectives and datasets, and their builders by name.

The entries themselves live in :mod:`zoo.core.components` (each component registers itself
where it is defined); this module builds them, refusing what :mod:`zoo.rules` refuses (a guide
that cannot represent the model's latents, an option the model gives nothing to do, a step
``jit`` or ``compile`` cannot capture), and writes the README's tables of them.
"""
from __future__ import annotations

from typing import Optional

from zoo import objectives
from zoo.core.components import DATASETS, GUIDES, MODELS, OBJECTIVES
from zoo.core.contract import ZooModel
from zoo.rules import check_capture, check_guide, check_guide_options

__all__ = ["MODELS", "GUIDES", "OBJECTIVES", "DATASETS", "build_model", "build_guide", "build_objective",
           "registry_markdown"]


def build_model(name: str, x_dim: int, **options) -> ZooModel:
    """Build a registered model for data of dimension ``x_dim``; options not given take their defaults."""
    return MODELS.build(name, x_dim, **options)


def build_guide(name: str, model: ZooModel, num_data: Optional[int] = None, bind: bool = True, **options):
    """Build a guide of family ``name`` for ``model``; refuses latents it cannot represent.

    A model that computes with its guide (``model.borrows_guide``, e.g. a VampPrior) is bound
    to the new guide (:meth:`~zoo.core.contract.ZooModel.bind_guide`), unless ``bind=False``: a
    guide that works beside the model's own and must not replace it, as the per-datum q* of the
    inference gaps (:mod:`zoo.evaluation.gaps`) does beside the encoder a VampPrior computes with.
    """
    component = GUIDES[name]
    component.resolve(options)                 # a bad option is reported before a bad fit
    check_guide(name, model)
    check_guide_options(model, name, options)
    guide = component.build(model, num_data, **options)
    if bind:
        model.bind_guide(guide)
    return guide


def build_objective(name: str, particles: Optional[int] = None, alpha: Optional[float] = None,
                    insomnia: Optional[float] = None, jit: bool = False, compile: bool = False, **options):
    """Build the objective ``name`` (:func:`zoo.objectives.build_objective`), refusing ``jit`` or ``compile``
    where the estimator's step cannot be captured (:func:`zoo.rules.check_capture`)."""
    if jit or compile:
        takes = {f.name for f in OBJECTIVES[name].options.specs()}
        given = {k: v for k, v in (("particles", particles), ("alpha", alpha), ("insomnia", insomnia))
                 if v is not None and k in takes}
        check_capture(name, {**given, **options}, jit=jit, compile=compile)
    return objectives.build_objective(name, particles, alpha, insomnia, jit=jit, compile=compile, **options)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def registry_markdown() -> str:
    """The README's tables of models, guides, objectives and datasets, from their registrations.

    Each row is the component's registered description (and a guide family's latent supports), so
    the README says what ``pyro-zoo list`` says; ``pyro-zoo report`` writes it between
    ``<!-- registry:start -->`` and ``<!-- registry:end -->``.
    """
    def table(head, rows):
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
        return "\n".join(lines)

    parts = [table(("model", "generative story"), [(f"`{n}`", c.description) for n, c in MODELS.items()]),
             table(("guide", "q(z \\| x)", "latents"),
                   [(f"`{n}`", c.description, ", ".join(c.factory.supports)) for n, c in GUIDES.items()]),
             table(("objective", "what it optimizes"), [(f"`{n}`", c.description) for n, c in OBJECTIVES.items()]),
             table(("dataset", "what"), [(f"`{n}`", c.description) for n, c in DATASETS.items()])]
    return "\n\n".join(parts)
