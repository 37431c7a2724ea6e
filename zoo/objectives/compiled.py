"""``--compile``: the whole training step captured as one graph of tensor operations and compiled.

:class:`CompiledObjective` turns the loss, the estimator *and the backward pass* into one function from
(parameters, buffers, x, idx) to (loss value, gradients), with no Python left in it, compiled by
``torch.compile``. On a CPU Inductor fuses it into C++ kernels; on CUDA it also records it in a CUDA
graph (``triton.cudagraphs``, what ``mode="reduce-overhead"`` turns on), so a step is one launch. The
optimizer step that follows is PyTorch's fused Adam (:func:`zoo.training.optimizer.make_optimizer`):
one kernel over all the parameters, so a compiled training step is two programs, the graph and Adam.

How the function is captured. ``torch.fx.experimental.proxy_tensor.make_fx`` runs one step of the
objective with every parameter and floating buffer of the model and the guide swapped for a tracing
tensor (``torch.nn.utils.stateless``), and records what reaches PyTorch's dispatcher: the networks,
the random draws (``aten.normal``, ``aten.bernoulli``, ...), the log-densities and, because the
captured function calls ``torch.autograd.grad`` itself, the backward pass. Pyro's handlers, traces
and distribution objects are ordinary Python and leave nothing in the graph.

The same estimator, bound and random draws as the eager step:

- The random operations stay PyTorch's own: Inductor's ``fallback_random`` is switched on for the
  compilation, so a compiled step draws from the global generator in the eager order, and the same seed
  gives the same latents (``tests/test_compiled.py`` compares value and gradients with the eager step's).
- What reads a tensor's value in Python cannot be recorded. While capturing, Pyro's distribution
  argument checks and ``warn_if_nan`` are off and ``torch_item`` returns a tensor;
  a non-finite loss is still caught, by the training loop, before the optimizer step.
  A step that reads a value anyway (sampling a categorical site, summing an enumerated one) is refused
  in one line before a run writes anything (``--jit`` runs it eagerly instead, :mod:`zoo.objectives.jit`).
- Buffers a step updates in place (a baseline's running average) are inputs of the graph, and the
  compiled function writes them back.

What a capture assumes (:mod:`zoo.objectives.capture`): the same control flow for the same shapes, so
captures are cached by input shapes, and a step under an outer Pyro handler (KL warm-up) runs eagerly.

Capturing and compiling take seconds (Inductor writes and builds C++ or Triton code) and happen once per
input shape; a run says how long they took. Inductor keeps the code it built in its on-disk cache
(``TORCHINDUCTOR_CACHE_DIR``, by default under the system's temporary directory), so a later run of the
same shapes compiles faster. Both run under ``torch.random.fork_rng`` and restore the buffers, so they draw
nothing from the run's random stream.
"""
from __future__ import annotations

import contextlib
import time
import warnings
from typing import Dict, List, Tuple

import pyro
import pyro.infer.trace_elbo
import pyro.util
import torch
from torch.fx.experimental.proxy_tensor import make_fx
from torch.nn.utils.stateless import _reparametrize_module

from zoo.core import params as model_base
from zoo.core.contract import Borrowed
from zoo.core.errors import ZooError
from zoo.core.distributions import capturing
from zoo.core.kernels import cpu_compiler, quiet_compiler
from zoo.objectives.capture import (CapturedObjective, _buffers, _Compiled, _step_inputs, _tensor_valued_bounds,
                              value_and_surrogate)

__all__ = ["CompiledObjective", "CaptureError", "check_compilable", "cpu_compiler"]


class CaptureError(ZooError):
    """A step that cannot be captured; ``reason`` says what in it stops the capture."""

    def __init__(self, reason: str):
        super().__init__(f"--compile cannot capture this step: {reason}; drop --compile, or use --jit (which runs it "
                         f"eagerly)")
        self.reason = reason


def check_compilable(device: torch.device, backend: str = "inductor") -> None:
    """Raise :class:`ZooError` where ``torch.compile`` cannot build the step: Inductor on a CPU needs a C++
    compiler."""
    if backend == "inductor" and torch.device(device).type == "cpu" and cpu_compiler() is None:
        raise ZooError("--compile on a CPU builds C++ kernels and no C++ compiler was found (g++, c++, clang++ or "
                       "$CXX): install one, or use --jit")


def _no_nan_check(value, *args, **kwargs):
    return value


@contextlib.contextmanager
def _capturable():
    """Pyro without the checks that read a tensor's value in Python, and the zoo's kept distributions made afresh
    (``zoo.core.distributions.capturing``), for the length of a capture."""
    validation = pyro.infer.util.is_validation_enabled()
    torch_default = torch.distributions.Distribution._validate_args
    modules = [m for m in (pyro.infer.trace_elbo, pyro.util) if hasattr(m, "warn_if_nan")]
    saved = [(m, m.warn_if_nan) for m in modules]
    pyro.enable_validation(False)
    torch.distributions.Distribution.set_default_validate_args(False)
    for m in modules:
        m.warn_if_nan = _no_nan_check
    try:
        with _tensor_valued_bounds(), capturing():
            yield
    finally:
        for m, fn in saved:
            m.warn_if_nan = fn
        torch.distributions.Distribution.set_default_validate_args(torch_default)
        pyro.enable_validation(validation)


def _modules(model, guide) -> List[torch.nn.Module]:
    """The modules whose tensors a step reads: the model and the guide, and what either borrows (a relaxed guide's
    view of the model, a VampPrior's encoder) or is a view of."""
    found: Dict[int, torch.nn.Module] = {}

    def add(obj, depth=0):
        if isinstance(obj, Borrowed):
            obj = obj.module
        if isinstance(obj, torch.nn.Module):
            found.setdefault(id(obj), obj)
            return
        if depth < 2 and isinstance(obj, (tuple, list)):
            for item in obj:
                add(item, depth + 1)

    for root in (model, guide):
        add(root)
        for value in getattr(root, "__dict__", {}).values():
            add(value, 1)
    return list(found.values())


def _culprit(error: Exception) -> str:
    """The innermost frame of the zoo's or Pyro's code in ``error``'s traceback, as file:line."""
    import traceback
    frames = [f for f in traceback.extract_tb(error.__traceback__) if "/torch/" not in f.filename]
    if not frames:
        return "unknown"
    f = frames[-1]
    return f"{'/'.join(f.filename.split('/')[-2:])}:{f.lineno}"


def _owners(tensors, modules) -> List[Tuple[torch.nn.Module, str]]:
    """For each tensor, the module that holds it and its name there (by identity)."""
    where: Dict[int, Tuple[torch.nn.Module, str]] = {}
    for module in modules:
        for name, t in list(module.named_parameters()) + list(module.named_buffers()):
            where.setdefault(id(t), (module, name))
    missing = [t for t in tensors if id(t) not in where]
    if missing:
        raise CaptureError(f"{len(missing)} tensor(s) of the step live outside the model's and the guide's modules "
                           f"(a pyro.param?), and a capture swaps only the modules' own")
    return [where[id(t)] for t in tensors]


class CompiledObjective(CapturedObjective):
    """An objective whose training step is one compiled function, loss and gradients (see module docstring).

    Everything but ``loss_and_grads`` is the wrapped objective's own (:class:`~zoo.objectives.capture.CapturedObjective`).

    Arguments:
        objective: a built objective whose estimator declares ``jit`` (one surrogate loss, one backward).
        mode: ``torch.compile``'s mode; ``None`` picks ``"reduce-overhead"`` (CUDA graphs) on CUDA and
            the default on a CPU.
        backend: ``torch.compile``'s backend (default Inductor; the tests also use ``"aot_eager"``, which
            runs the captured graph through the same functionalization without generating code).
        say: where one-line notes go (how long a capture and its compilation took); None: nowhere.
    """

    def __init__(self, objective, mode=None, backend="inductor", say=None):
        super().__init__(objective, say=say)
        self.mode = mode
        self.backend = backend

    def _run(self, compiled, model, guide, args):
        tensors, params = compiled.inputs
        if compiled.fresh:                           # compiling runs the step once: not a step of the run
            devices = sorted({a.device.index or 0 for a in args if a.device.type == "cuda"})
            buffers = _buffers(model, guide)
            saved = [b.clone() for b in buffers]
            with torch.random.fork_rng(devices=devices), quiet_compiler(), torch.no_grad():
                compiled.fn(tensors, *args)
            with torch.no_grad():
                for b, value in zip(buffers, saved):
                    b.copy_(value)
            compiled.fresh = False
            self._note(f"{compiled.how} the training step in {time.perf_counter() - compiled.started:.1f} s "
                       f"(once per batch shape{'; Inductor caches the code for later runs' if compiled.cached else ''})",
                       once=False)
        with torch.no_grad():        # the graph computes its gradients itself: nothing of it for autograd to record
            value, grads = compiled.fn(tensors, *args)
        # A gradient the graph returns is a tensor of its own and becomes .grad as it is, without a copy, unless
        # it shares memory with another gradient or an input, or a CUDA graph will write over it at the next step.
        taken = set() if compiled.reused else {t.untyped_storage().data_ptr() for t in tensors}
        with torch.no_grad():
            for p, g in zip(params, grads):
                if g is None:
                    continue
                if p.grad is not None:
                    p.grad.add_(g)
                    continue
                where = g.untyped_storage().data_ptr()
                if compiled.reused or where in taken or g.stride() != p.stride():
                    g = g.clone(memory_format=torch.contiguous_format) if g.stride() != p.stride() else g.clone()
                taken.add(where)
                p.grad = g
        return value.item()

    def check(self, model, guide, x, idx=None, N=None, device=None) -> None:
        """Capture one step on ``x`` (nothing compiled, nothing kept): raise :class:`ZooError` if this model, guide
        and objective cannot be captured, or ``torch.compile`` cannot build the step on ``device`` (default:
        ``x``'s), so a run can refuse ``--compile`` before it writes anything."""
        check_compilable(x.device if device is None else device, self.backend)
        if hasattr(self.objective, "check"):
            self.objective.check(getattr(model, "model", model), guide, x, idx=idx, N=N)
        args = (x,) if idx is None else (x, idx)
        self._graph(model, guide, args, N)

    def _graph(self, model, guide, args, N):
        """The step as an FX graph from (tensors, x[, idx]) to (value, gradients), with its tensors and parameters."""
        objective = self.objective
        x, idx = args[0], args[1] if len(args) > 1 else None
        devices = sorted({a.device.index or 0 for a in args if a.device.type == "cuda"})
        buffers = _buffers(model, guide)
        saved = [b.clone() for b in buffers]
        modules = _modules(model, guide)
        with torch.random.fork_rng(devices=devices):
            tensors = _step_inputs(objective, model, guide, x, idx, N)
            owners = _owners(tensors, modules)
            wants_grad = [t.requires_grad for t in tensors]
            params = [t for t, w in zip(tensors, wants_grad) if w]

            def step(swapped, *data):
                per_module: Dict[int, Dict[str, torch.Tensor]] = {}
                for (module, name), t in zip(owners, swapped):
                    per_module.setdefault(id(module), {})[name] = t
                with contextlib.ExitStack() as stack:
                    for module in modules:
                        stack.enter_context(_reparametrize_module(module, per_module.get(id(module), {})))
                    value, surrogate = value_and_surrogate(objective, model, guide, data[0],
                                                           data[1] if len(data) > 1 else None, N)
                leaves = [t for t, w in zip(swapped, wants_grad) if w]
                grads = torch.autograd.grad(surrogate, leaves, allow_unused=True)
                return value.detach(), grads

            try:
                with _capturable(), warnings.catch_warnings():
                    warnings.simplefilter("ignore", UserWarning)
                    graph = make_fx(step)(list(tensors), *args)
            except RuntimeError as e:
                if "data-dependent" not in str(e) and "_local_scalar_dense" not in str(e):
                    raise
                raise CaptureError(f"something in it ({_culprit(e)}) reads a tensor's value in Python, which a graph "
                                   f"cannot hold") from None
            finally:
                with torch.no_grad():
                    for b, value in zip(buffers, saved):
                        b.copy_(value)
        return graph, tensors, params

    def _capture(self, model, guide, args, N) -> _Compiled:
        started = time.perf_counter()
        check_compilable(args[0].device, self.backend)
        graph, tensors, params = self._graph(model, guide, args, N)
        on_cuda = any(a.device.type == "cuda" for a in args)
        if self.backend == "inductor":
            # Inductor keeps PyTorch's random ops (the eager draws); on CUDA the step is one CUDA graph
            mode = self.mode if self.mode is not None else ("reduce-overhead" if on_cuda else "default")
            options = {**torch._inductor.list_mode_options(mode, dynamic=False), "fallback_random": True}
            fn = torch.compile(graph, backend="inductor", options=options, dynamic=False)
        else:
            options = {}
            fn = torch.compile(graph, backend=self.backend, dynamic=False)
        compiled = _Compiled(fn, (tensors, params), model, guide, model_base.parameter_generation)
        compiled.fresh, compiled.started = True, started
        compiled.reused = bool(options.get("triton.cudagraphs"))     # a CUDA graph's outputs are its own buffers
        compiled.cached = self.backend == "inductor"
        compiled.how = "captured and compiled" if self.backend == "inductor" else f"captured ({self.backend})"
        return compiled
