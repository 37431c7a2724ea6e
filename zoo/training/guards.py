"""What stops training before a non-finite state reaches a checkpoint, and the one-line errors of a step.

A non-finite loss or gradient stops the run before the optimizer step, non-finite parameters right after
it, a non-finite validation ELBO before the epoch's checkpoint (:class:`~zoo.training.callbacks.NonFiniteGuard`
and :class:`~zoo.training.callbacks.ValidationELBO` call the checks here). Each raises
:class:`NonFiniteError`, naming where it happened.
"""
from __future__ import annotations

import contextlib
import math
import warnings
from typing import Optional, Tuple

import torch

from zoo.core.errors import ZooError
from zoo.usercode.errors import user_code_errors

__all__ = ["NonFiniteError", "check_finite", "check_parameters", "check_validation", "step_errors",
           "invalid_values_refusal"]

#: Pyro's ``warn_if_nan`` warnings ("Encountered NaN: loss"): the loop reports a non-finite loss itself, in one line.
_NAN_WARNINGS = r"Encountered (NaN|[+-]?inf)"

ADVICE = ("likely causes: too large a step (lower --lr or set --clip-grad), a high-variance score-function gradient "
          "(try --baseline neural), or extreme data values")


class NonFiniteError(ZooError):
    """Training produced NaN or inf (a loss, a gradient, the parameters after a step, the validation
    ELBO); raised before that state reaches a checkpoint. ``epoch`` and ``step`` (1-based; step None:
    the validation pass after the epoch) say where."""

    def __init__(self, message: str, epoch: int, step: Optional[int]):
        super().__init__(message)
        self.epoch, self.step = epoch, step


def check_finite(loss: float, params, epoch: int, step: int, global_step: int, objective) -> None:
    """Stop before a non-finite loss or gradient reaches the parameters (or a checkpoint)."""
    bad = None
    if not math.isfinite(loss):
        bad = f"loss {loss}"
    else:
        grads = [p.grad for p in params if p.grad is not None]
        # one fused norm per tensor and a single sync: any NaN/inf makes the sum non-finite
        if grads and not math.isfinite(torch.stack(torch._foreach_norm(grads)).sum().item()):
            bad = "gradient"
    if bad:
        raise NonFiniteError(f"non-finite {bad} at epoch {epoch + 1}, step {step + 1} (global step {global_step + 1}) "
                             f"with {type(objective).__name__}; {ADVICE}", epoch + 1, step + 1)


def check_parameters(params, epoch: int, step: int, global_step: int) -> None:
    """Stop when the optimizer step has made a parameter NaN or inf, before it can be checkpointed."""
    if params and not math.isfinite(torch.stack(torch._foreach_norm(params)).sum().item()):
        raise NonFiniteError(f"non-finite parameters after the optimizer step at epoch {epoch + 1}, step {step + 1} "
                             f"(global step {global_step + 1}); {ADVICE}", epoch + 1, step + 1)


def check_validation(valid_elbo: float, epoch: int) -> None:
    """Stop when the validation ELBO after ``epoch`` (from 0) is NaN or inf, before the epoch's checkpoint."""
    if not math.isfinite(valid_elbo):
        raise NonFiniteError(f"non-finite validation ELBO ({valid_elbo}) after epoch {epoch + 1}; {ADVICE}",
                             epoch + 1, None)


def invalid_values_refusal(error: ValueError) -> Optional[Tuple[str, str]]:
    """torch.distributions' refusal of invalid arguments, recognised from its message (torch raises a plain
    ``ValueError``): ``("value", SUPPORT)`` for a value outside the distribution's support (its text),
    ``("parameters", "")`` for invalid (NaN, inf) parameters, and None for any other error."""
    text = str(error)
    if "found invalid values" not in text:
        return None
    if text.startswith("Expected value argument"):
        return "value", text.split("within the support (", 1)[-1].split(") of the distribution")[0]
    return "parameters", ""


@contextlib.contextmanager
def step_errors(name: str, objective, epoch: int, step: Optional[int]):
    """One training step (``step``) or the validation pass after ``epoch`` (``step`` None), with Pyro's
    NaN warnings silenced and its failures in one line: a distribution refusing NaN arguments is a
    :class:`NonFiniteError`; a value outside its site's support says the guide and model disagree; an
    exception raised in the user's own model code names its file and line (as the trial run of
    :mod:`zoo.models.pyro_model` does); anything else is a bug and keeps its traceback."""
    where = (f"epoch {epoch + 1}, step {step + 1}" if step is not None
             else f"the validation pass after epoch {epoch + 1}")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_NAN_WARNINGS)
        try:
            with user_code_errors(name, f"at {where}"):
                yield
        except ValueError as e:
            refusal = invalid_values_refusal(e)
            if refusal is None:
                raise
            kind, support = refusal
            if kind == "value":                     # a value, not a parameter: no NaN involved
                raise ZooError(f"{name} at {where} with {type(objective).__name__}: a latent's value is outside "
                               f"the support {support} of its model site's distribution, so the guide samples "
                               f"values of another form than the model declares; give the guide and the model's "
                               f"site the same support") from None
            raise NonFiniteError(f"non-finite values in a distribution's parameters at {where} with "
                                 f"{type(objective).__name__}; {ADVICE}", epoch + 1,
                                 None if step is None else step + 1) from None
