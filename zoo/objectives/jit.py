"""``--jit``: the captured and compiled training step, and the eager step wherever it cannot be had.

``--jit`` is the capture of ``--compile`` (:mod:`zoo.objectives.compiled`): ``torch.compile`` takes the loss,
the estimator and the backward pass as one graph. It differs in one thing: where ``--compile`` refuses, ``--jit``
falls back and says why, once. It does not use ``torch.jit.trace``: PyTorch has deprecated TorchScript, and a trace
leaves the backward pass to autograd, which is slower (``benchmarks/results/speed_cpu_numpyro.json``: 1.51 s an
epoch against 1.33 captured, on the MNIST VAE).

- No C++ compiler on a CPU (Inductor builds its kernels with one): the captured graph runs without
  generated code (``torch.compile``'s ``aot_eager`` backend), still without Pyro's Python per step.
- A step that cannot be captured (it reads a tensor's value in Python, as sampling a categorical site and
  summing an enumerated one do): that step runs eagerly, the same estimator.

A run with ``--jit`` says so in one line (``pyro-zoo train``); the Python API takes ``jit=True``.
"""
from __future__ import annotations

from zoo.core import params as model_base
from zoo.objectives.capture import _Compiled
from zoo.objectives.compiled import CaptureError, CompiledObjective, cpu_compiler

__all__ = ["JitObjective", "JIT_OBJECTIVES"]  # noqa: F822 (JIT_OBJECTIVES: module __getattr__)

#: What ``pyro-zoo train --jit`` says once, before the run.
JIT_NOTICE = ("--jit now captures the step with torch.compile, as --compile does (torch.jit.trace is deprecated), "
              "and runs it eagerly where it cannot be captured")


def __getattr__(name):
    # JIT_OBJECTIVES: the objectives whose step is one surrogate loss and one backward pass, read from what their
    # estimators declare, when asked for (the registry fills itself on first lookup).
    if name == "JIT_OBJECTIVES":
        from zoo.core.components import OBJECTIVES
        return tuple(n for n, c in OBJECTIVES.items() if c.capability("caps").jit)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class JitObjective(CompiledObjective):
    """``--jit``: a :class:`~zoo.objectives.compiled.CompiledObjective` that falls back where it cannot compile or
    capture, and says so once (see module docstring).

    Example::

        >>> import torch, zoo
        >>> model = zoo.build_model("vae", 6, latent_dim=2, hidden=(8,))
        >>> guide = zoo.build_guide("amortized", model)
        >>> objective = zoo.build_objective("elbo", jit=True)
        >>> x = torch.bernoulli(torch.full((5, 6), 0.5))
        >>> loss = objective.loss_and_grads(model, guide, x)      # captured and compiled on this first call
        >>> loss = objective.loss_and_grads(model, guide, x)      # replayed
        >>> all(p.grad is not None for p in guide.parameters())
        True
    """

    def _capture(self, model, guide, args, N) -> _Compiled:
        if self.backend == "inductor" and args[0].device.type == "cpu" and cpu_compiler() is None:
            self.backend = "aot_eager"
            self._note("--jit: no C++ compiler (g++, c++, clang++ or $CXX), so the captured step runs without "
                       "Inductor's generated kernels; install one for the compiled step")
        try:
            return super()._capture(model, guide, args, N)
        except CaptureError as e:
            self._note(f"--jit runs this step eagerly: {e.reason}")
            return _Compiled(None, None, model, guide, model_base.parameter_generation)

    def check(self, model, guide, x, idx=None, N=None, device=None) -> None:
        """What the wrapped objective checks (free bits' sites); nothing of the capture, which falls back."""
        if hasattr(self.objective, "check"):
            self.objective.check(model, guide, x, idx=idx, N=N)
