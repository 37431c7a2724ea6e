"""What ``--compile`` and ``--jit`` share: a training step captured once per input shapes and replayed.

A Pyro training step runs the model and the guide under poutine handlers, builds two traces,
makes distribution objects and sums their log-densities: about a thousand Python calls per
step whatever the size of the networks, a sizeable share of a small model's step on a CPU
(``benchmarks/results/step_overhead_small.json``). A captured step runs the objective once while
recording the tensor operations it reaches, and every later step with the same shapes replays
the record. The estimator is unchanged: same bound, same gradient, and the same random draws in
the same order as the eager step. :mod:`zoo.objectives.compiled` captures and compiles;
:mod:`zoo.objectives.jit` is ``--jit``, the same capture with a fallback where it cannot be had.

Why not Pyro's ``JitTrace_ELBO``: it reads every parameter from Pyro's global ``ParamStore``
by name, and the zoo keeps parameters in the modules (:func:`zoo.core.params.register_module`
explains why), so it fails with a ``KeyError``. Here the parameters (collected from the
``param`` sites of one step) and the guide's and model's buffers (a relaxed guide's annealed
temperature) are inputs of the captured function, so a replay sees their current values.

What a capture assumes, and how these classes keep to it:

- **The same Python control flow every step.** Everything the flow depends on is in the cache
  key: the shapes, dtypes and devices of ``x`` and ``idx``, ``N``, train/eval mode, and the
  parameter objects (any parameter registration or ``.to()`` starts a new capture).
- **No per-step state in Python.** State kept in tensors is fine: a baseline's running average
  and a relaxed guide's annealed temperature are buffers, so they are inputs of the capture, and
  the in-place updates of the averages are replayed. Objectives that need Python between steps
  or a second backward pass (``dreg``, ``rws_pyro``, ``renyi_pyro``) are not
  offered: each estimator declares ``jit`` (:class:`zoo.objectives.axes.Estimator`), which
  :func:`zoo.rules.check_capture` checks, and :data:`JIT_OBJECTIVES` lists the names it allows. A step that runs
  under an outer Pyro handler, such as :class:`~zoo.training.warmup.KLWarmup` whose beta changes every step,
  runs eagerly: the capture would freeze the handler's effect.
- **The loss value as a tensor.** The captured function returns the loss's value as a tensor
  (:func:`value_and_surrogate`): the zoo's estimators say so themselves,
  ``TraceGraph_ELBO`` keeps both as tensors, and Pyro's ``Trace_ELBO`` adds the value up in
  Python floats (``torch_item``), which a capture would freeze at the first step's; while capturing,
  ``torch_item`` is replaced by ``detach``, so the value is that of the step replayed.

Why not ``torch.compile`` on the step itself: TorchDynamo cannot follow Pyro's handler stack. On a
VAE's ``Trace_ELBO`` step ``torch._dynamo.explain`` finds a graph break at the handlers, and compiling
hits the recompile limit at Pyro's ``poutine.runtime`` wrappers. The capture happens below Pyro, at
the dispatcher (:mod:`zoo.objectives.compiled`), and ``torch.compile`` is handed that graph.

Collecting the inputs and capturing each run the step once for real. Neither counts as a step: the
buffers are restored afterwards, and both run under ``torch.random.fork_rng``, drawing nothing from the
run's random stream: a captured run and an eager run with the same seed sample the same latents, and a
resumed run continues its stream exactly.
"""
from __future__ import annotations

import contextlib
import weakref
from typing import Dict, List, Tuple

import pyro.infer.trace_elbo
import pyro.infer.trace_mean_field_elbo
import pyro.poutine as poutine
import torch
from pyro.infer import TraceGraph_ELBO
from pyro.poutine.runtime import _PYRO_STACK

from zoo.core import params as model_base

__all__ = ["CapturedObjective", "JIT_OBJECTIVES", "value_and_surrogate"]  # noqa: F822 (JIT_OBJECTIVES: module __getattr__)


def __getattr__(name):
    # JIT_OBJECTIVES: the objectives whose step is one surrogate loss and one backward pass (see
    # :func:`value_and_surrogate`), read from what their estimators declare, when asked for (the
    # registry fills itself on first lookup).
    if name == "JIT_OBJECTIVES":
        from zoo.core.components import OBJECTIVES
        return tuple(n for n, c in OBJECTIVES.items() if c.capability("caps").jit)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def value_and_surrogate(objective, model, guide, x, idx=None, N=None):
    """One step of ``objective`` as two tensors: the loss's value (detached) and the surrogate
    loss whose gradient is the estimator (what ``loss_and_grads`` backpropagates)."""
    if hasattr(objective, "value_and_surrogate"):           # the zoo's own bounds and estimators
        return objective.value_and_surrogate(model, guide, x, idx=idx, N=N)
    if isinstance(objective, TraceGraph_ELBO):              # with the zoo's baselines (zoo.objectives.baselines)
        elbo, surrogate = objective._loss_and_surrogate_loss(model, guide, (x,), {"idx": idx, "N": N})
        return -elbo.detach(), surrogate
    loss = objective.differentiable_loss(model, guide, x, idx=idx, N=N)   # Trace_ELBO, TraceMeanField_ELBO
    return loss.detach(), loss


def _detach(x):
    return x.detach() if torch.is_tensor(x) else x


@contextlib.contextmanager
def _tensor_valued_bounds():
    """While tracing, make Pyro's ELBOs keep the bound's value as a (detached) tensor, not a float."""
    modules = [m for m in (pyro.infer.trace_elbo, pyro.infer.trace_mean_field_elbo) if hasattr(m, "torch_item")]
    saved = [(m, m.torch_item) for m in modules]
    for m in modules:
        m.torch_item = _detach
    try:
        yield
    finally:
        for m, fn in saved:
            m.torch_item = fn


def _buffers(model, guide) -> List[torch.Tensor]:
    return [b for module in (model, guide) if isinstance(module, torch.nn.Module) for b in module.buffers()]


def _step_inputs(objective, model, guide, x, idx, N) -> List[torch.Tensor]:
    """The tensors a replay must read afresh: every parameter announced in a ``param`` site
    (one step run under a param-only trace; its graph is dropped) and the modules' floating buffers."""
    with poutine.block(), poutine.trace(param_only=True) as tracer:
        value_and_surrogate(objective, model, guide, x, idx, N)
    tensors = [site["value"] for site in tracer.trace.nodes.values() if site["type"] == "param"]
    tensors += [b for b in _buffers(model, guide) if b.is_floating_point()]
    unique: Dict[int, torch.Tensor] = {}
    for t in tensors:
        unique.setdefault(id(t), t)
    return list(unique.values())


class _Compiled:
    """One captured step: the captured function (None: this step runs eagerly), its tensor inputs, and what it
    was captured for."""

    def __init__(self, fn, inputs, model, guide, generation):
        self.fn = fn
        self.inputs = inputs
        self.model = weakref.ref(model)
        self.guide = weakref.ref(guide)
        self.generation = generation

    def valid_for(self, model, guide) -> bool:
        return (self.model() is model and self.guide() is guide
                and self.generation == model_base.parameter_generation)


class CapturedObjective:
    """What ``--jit`` and ``--compile`` share: an objective whose training step is captured once per model, guide and
    input shapes, and replayed. Everything but ``loss_and_grads`` is the wrapped objective's own: ``loss``,
    ``differentiable_loss`` and attributes such as ``num_particles`` pass through, so the evaluation harness and
    the validation bound never run captured code. Subclasses say how a step is captured (``_capture``) and run
    (``_run``); a step under an outer Pyro handler (KL warm-up) or without gradients runs eagerly.
    """

    def __init__(self, objective, say=None):
        self.objective = objective
        self.say = say                               # one-line notes (a capture's cost, a fallback); None: silent
        self._said: set = set()                      # each note once per run, however many batch shapes
        self._compiled: Dict[Tuple, _Compiled] = {}

    def around(self, objective) -> "CapturedObjective":
        """The same capture (its mode, its notes) around another objective, with nothing captured yet."""
        import copy
        wrapper = copy.copy(self)
        wrapper.objective, wrapper._compiled = objective, {}
        return wrapper

    def __getattr__(self, name):
        if name == "objective":                      # not yet set (unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.objective, name)

    def __repr__(self):
        return f"{type(self).__name__}({type(self.objective).__name__})"

    def loss(self, model, guide, *args, **kwargs):
        return self.objective.loss(model, guide, *args, **kwargs)

    def differentiable_loss(self, model, guide, *args, **kwargs):
        return self.objective.differentiable_loss(model, guide, *args, **kwargs)

    def loss_and_grads(self, model, guide, x, idx=None, N=None):
        """One step: the loss (a float, the negative bound scaled to N data), gradients accumulated."""
        if _PYRO_STACK or not torch.is_grad_enabled():
            if _PYRO_STACK and torch.is_grad_enabled():
                self._note("steps under an outer Pyro handler (such as KL warm-up's) run eagerly; the captured step "
                           "takes over once it is gone")
            return self.objective.loss_and_grads(model, guide, x, idx=idx, N=N)
        args = (x,) if idx is None else (x, idx)
        key = (id(model), id(guide), N, getattr(model, "training", None), getattr(guide, "training", None),
               *((tuple(a.shape), a.dtype, a.device) for a in args))
        compiled = self._compiled.get(key)
        if compiled is None or not compiled.valid_for(model, guide):
            # Captures of other modules or of replaced parameters are dropped: their closures hold the modules.
            self._compiled = {k: c for k, c in self._compiled.items() if c.valid_for(model, guide)}
            compiled = self._compiled[key] = self._capture(model, guide, args, N)
        if compiled.fn is None:                      # not capturable (said once, when found): the eager step
            return self.objective.loss_and_grads(model, guide, x, idx=idx, N=N)
        return self._run(compiled, model, guide, args)

    def _note(self, message: str, once: bool = True) -> None:
        """Say ``message``; with ``once``, only the first time (a fallback found again for another batch shape, an
        epoch's short last batch, is not said again). A capture's cost is said per shape (``once=False``): two
        shapes may well take the same time to the tenth of a second."""
        said = self.__dict__.setdefault("_said", set())     # (absent from a capture unpickled from before it)
        if self.say is not None and not (once and message in said):
            said.add(message)
            self.say(f"note: {message}")

    def _capture(self, model, guide, args, N) -> _Compiled:
        raise NotImplementedError

    def _run(self, compiled: _Compiled, model, guide, args) -> float:
        raise NotImplementedError
