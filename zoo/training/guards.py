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
from zoo.usercode.errors import user_code_errors, user_line

__all__ = ["NonFiniteError", "any_non_finite", "one_device", "check_finite", "check_parameters", "check_validation",
           "step_errors",
           "nan_warnings_silenced",
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


#: per device, the flag and the inverse scale (exactly 1) of the fused check, made once: two fewer allocations a call
_CHECK_BUFFERS = {}


def _check_buffers(device: torch.device):
    buffers = _CHECK_BUFFERS.get(device)
    if buffers is None or buffers[0].is_inference():
        with torch.inference_mode(False):           # ordinary tensors even when first made under inference_mode
            buffers = _CHECK_BUFFERS[device] = (torch.zeros(1, device=device), torch.ones(1, device=device))
    return buffers


def any_non_finite(tensors, device: Optional[torch.device] = None) -> bool:
    """Whether any of the floating-point ``tensors`` holds NaN or inf, in one fused pass and one sync per device.

    The pass is ``torch._amp_foreach_non_finite_check_and_unscale_``, the kernel with which PyTorch's
    ``GradScaler`` checks gradients: it sets a flag where it meets a non-finite value and multiplies by an
    inverse scale, here exactly 1, which leaves every value (and the tensors' version counters) as it is; it
    is not differentiable, so it runs on parameters that require grad without a ``no_grad`` block.
    On a CPU at the small models' sizes it costs a fraction of a norm per tensor (``torch._foreach_norm``
    runs one kernel per tensor and reduces across threads), and the training loop checks twice a step, so what a
    call costs around the kernel is kept small (``benchmarks/step_overhead.py --small`` times the step): the flag
    and the scale are made once per device and reused, the flag is reset only after it has been set, and
    ``device``, where the caller knows that every tensor is on it (the training loop's parameters and gradients),
    spares looking. On a device without that kernel, each tensor is checked on its own."""
    tensors = tensors if isinstance(tensors, list) else list(tensors)
    if not tensors:
        return False
    if device is None:
        device = tensors[0].device
        if not all(t.device == device for t in tensors):
            by_device = {}
            for t in tensors:
                by_device.setdefault(t.device, []).append(t)
            return any([_non_finite_on(d, group) for d, group in by_device.items()])    # every device synced
    return _non_finite_on(device, tensors)


def _non_finite_on(device: torch.device, tensors) -> bool:
    """:func:`any_non_finite` of ``tensors``, all on ``device``. The flag is 0 between calls: only the kernel sets it,
    on finding a non-finite value, and it is reset here before this returns True or raises (a Ctrl-C during the
    check included). Like the flag it shares, a check is for one thread and one CUDA stream at a time."""
    found, inverse_scale = _check_buffers(device)
    try:
        torch._amp_foreach_non_finite_check_and_unscale_(tensors, found, inverse_scale)
        if not found.item():
            return False
    except (RuntimeError, NotImplementedError):     # a device without the fused check: one per tensor
        found.zero_()
        with torch.no_grad():
            return any(not bool(t.isfinite().all()) for t in tensors)
    except BaseException:
        found.zero_()
        raise
    found.zero_()
    return True


def one_device(tensors) -> Optional[torch.device]:
    """The device every one of ``tensors`` is on, or None (none, or several)."""
    devices = {t.device for t in tensors}
    return devices.pop() if len(devices) == 1 else None


def check_finite(loss: float, params, epoch: int, step: int, global_step: int, objective,
                 device: Optional[torch.device] = None) -> None:
    """Stop before a non-finite loss or gradient reaches the parameters (or a checkpoint). ``device``: the one
    device of ``params``, where the caller knows it (:func:`any_non_finite`)."""
    bad = None
    if not math.isfinite(loss):
        bad = f"loss {loss}"
    elif any_non_finite([p.grad for p in params if p.grad is not None], device):
        bad = "gradient"
    if bad:
        raise NonFiniteError(f"non-finite {bad} at epoch {epoch + 1}, step {step + 1} (global step {global_step + 1}) "
                             f"with {type(objective).__name__}; {ADVICE}", epoch + 1, step + 1)


def check_parameters(params, epoch: int, step: int, global_step: int, device: Optional[torch.device] = None) -> None:
    """Stop when the optimizer step has made a parameter NaN or inf, before it can be checkpointed. ``device``: as
    for :func:`check_finite`."""
    if any_non_finite(params, device):
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
def nan_warnings_silenced():
    """Pyro's NaN warnings ("Encountered NaN: loss") silenced: the training loop reports a non-finite loss
    itself, in one line (:func:`check_finite`). ``fit`` sets it once around its epochs, not once per step."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_NAN_WARNINGS)
        yield


class step_errors:
    """One training step (``step``) or the validation pass after ``epoch`` (``step`` None), its failures in one
    line: a distribution refusing NaN arguments is a :class:`NonFiniteError`; a value outside its site's
    support says the guide and model disagree; an exception raised in the user's own model code names its
    file and line (as the trial run of :mod:`zoo.models.pyro_model` does); anything else is a bug and keeps
    its traceback. A class, not a generator: entered every step, it costs nothing until something fails."""

    def __init__(self, name: str, objective, epoch: int, step: Optional[int]):
        self.name, self.objective, self.epoch, self.step = name, objective, epoch, step

    def __enter__(self):
        return self

    def __exit__(self, kind, error, traceback) -> bool:
        if error is None or isinstance(error, ZooError) or not isinstance(error, Exception):
            return False
        epoch, step, name = self.epoch, self.step, self.name
        where = (f"epoch {epoch + 1}, step {step + 1}" if step is not None
                 else f"the validation pass after epoch {epoch + 1}")
        if user_line(error):                            # raised in the user's own code: one line naming it
            with user_code_errors(name, f"at {where}"):
                raise error
        if isinstance(error, ValueError):
            refusal = invalid_values_refusal(error)
            if refusal is not None:
                kind, support = refusal
                if kind == "value":                     # a value, not a parameter: no NaN involved
                    raise ZooError(f"{name} at {where} with {type(self.objective).__name__}: a latent's value is "
                                   f"outside the support {support} of its model site's distribution, so the guide "
                                   f"samples values of another form than the model declares; give the guide and the "
                                   f"model's site the same support") from None
                raise NonFiniteError(f"non-finite values in a distribution's parameters at {where} with "
                                     f"{type(self.objective).__name__}; {ADVICE}", epoch + 1,
                                     None if step is None else step + 1) from None
        return False
