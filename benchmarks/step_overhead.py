"""Where the zoo's per-step time goes: hand-written PyTorch vs a bare Pyro SVI loop vs zoo.fit.

Same 784-200-200-50 VAE, Trace_ELBO K=1, the zoo's (fused) Adam, batch 100, on 20,000 binarized-MNIST
images; the bare Pyro loop runs Pyro's own ``Trace_ELBO``, ``zoo.fit`` the zoo's ``elbo`` objective
(:class:`zoo.objectives.lean.LeanTrace_ELBO`: the same numbers without Pyro's traces), and ``zoo.fit --jit``
replays the step captured once by :class:`zoo.objectives.jit.JitObjective`. The loops alternate for --rounds
rounds (the first is warm-up), median ms per step. Three more loops evaluate the minibatch ELBO without
gradients, by hand, with Pyro's ``Trace_ELBO.loss`` and with the zoo's: the differences are the cost of each
one's Python alone (no backward pass, no optimizer).

    python benchmarks/step_overhead.py --data-dir ../shared/data --rounds 4

``--small`` measures the fixed cost of a step instead, at negligible compute: the digits, a VAE with 2 latents
and 16 hidden units, batch 1 and batch 32, the zoo's fused Adam for every loop. Six loops, interleaved, each
timed over ``--steps`` steps per round: hand-written PyTorch, Pyro's own ``pyro.infer.Trace_ELBO`` with the
same model and guide (twice: with Pyro's argument validation as Pyro ships it, on, and with it off, as ``zoo.fit``
runs after its first step, the like-for-like comparison), and ``zoo.fit`` eager, ``--jit`` and ``--compile``. The overhead of a loop is its
median microseconds per step minus the hand-written loop's, and, paired (``paired_*``, the figures to compare), the
median over rounds of each round's difference from the same round's hand-written loop::

    python benchmarks/step_overhead.py --small --rounds 11 --steps 300 --name step_overhead_small

``--threads N`` sets torch's threads for every loop (the result records them): at these sizes each kernel's
parallel region costs more than its work, so the figures depend on it; ``pyro-zoo`` itself trains such models on one.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import pyro  # noqa: E402
import torch  # noqa: E402
from common import fail, run_script, write_result  # noqa: E402
from speed import hand_epoch, hand_loss  # noqa: E402

from zoo.core.process import map_torch_constants  # noqa: E402
from zoo.data import load_dataset  # noqa: E402
from zoo.registry import build_guide, build_model, build_objective  # noqa: E402
from zoo.training.loop import epoch_order, fit
from zoo.training.optimizer import make_optimizer  # noqa: E402
from zoo.core.errors import ZooError  # noqa: E402
from zoo.objectives.compiled import check_compilable  # noqa: E402


class SmallLoops:
    """The ``--small`` setting (the digits, a VAE with 2 latents and 16 hidden units, the amortized guide, one fused
    Adam for every loop) and its loops: :meth:`loops` gives, for a batch size, each loop as a function that runs
    one round of ``steps`` steps and returns its seconds. ``benchmarks/step_instructions.py`` counts the same
    loops' instructions. ``compiled``: with the ``--jit`` and ``--compile`` loops."""

    def __init__(self, compiled: bool = True):
        self.x_all = load_dataset("digits").train
        pyro.set_rng_seed(0)
        self.model = build_model("vae", self.x_all.shape[1], latent_dim=2, hidden=16)
        self.guide = build_guide("amortized", self.model)
        self.opt = make_optimizer(self.model, self.guide, 1e-3)
        self.pyro_elbo = pyro.infer.Trace_ELBO()
        self.objectives = {"zoo.fit": build_objective("elbo", 1)}
        if compiled:
            self.objectives["zoo.fit --jit"] = build_objective("elbo", 1, jit=True)
            try:
                check_compilable(torch.device("cpu"))
                self.objectives["zoo.fit --compile"] = build_objective("elbo", 1, compile=True)
            except ZooError as e:
                print(f"no --compile loop: {e}", flush=True)

    def loops(self, B: int, steps: int) -> dict:
        model, guide, opt, pyro_elbo = self.model, self.guide, self.opt, self.pyro_elbo
        N = steps * B                               # one epoch of fit is exactly `steps` steps
        x = self.x_all[torch.arange(N) % self.x_all.shape[0]]
        order = epoch_order(N, 0, 0)

        def hand():
            t = time.perf_counter()
            hand_epoch(x, guide, model, opt, order, B)
            return time.perf_counter() - t

        def pyro_trace_elbo(validation: bool):
            def run():
                t = time.perf_counter()
                with pyro.validation_enabled(validation):
                    for idx in order.split(B):
                        opt.zero_grad(set_to_none=True)
                        pyro_elbo.loss_and_grads(model, guide, x[idx], idx=idx, N=N)
                        opt.step()
                return time.perf_counter() - t
            return run

        def zoo(objective):
            return lambda: fit(model, guide, objective, x, epochs=1, batch_size=B, lr=1e-3, progress=False,
                               optimizer=opt)[-1]["seconds"]

        return {"hand-written": hand, "Pyro Trace_ELBO": pyro_trace_elbo(True),
                "Pyro Trace_ELBO, validation off": pyro_trace_elbo(False),
                **{name: zoo(objective) for name, objective in self.objectives.items()}}


def small(args) -> None:
    """The fixed cost per step at negligible compute (module docstring, ``--small``)."""
    setting = SmallLoops()
    result = {"model": "vae, 2 latents, 16 hidden units, amortized guide, digits (64 pixels)",
              "objective": "Trace_ELBO, K=1", "optimizer": "make_optimizer (fused Adam) for every loop",
              "steps_per_round": args.steps, "threads": torch.get_num_threads(), "batches": {}}

    def measure(B: int) -> None:
        loops = setting.loops(B, args.steps)
        times = {name: [] for name in loops}
        names = list(loops)
        for r in range(args.rounds):                # round 0 is warm-up (the trace, the compilation)
            for name in names[r % len(names):] + names[:r % len(names)]:
                seconds = loops[name]()
                if r > 0:
                    times[name].append(seconds / args.steps * 1e6)
        us = {k: statistics.median(v) for k, v in times.items()}
        overhead = {k: v - us["hand-written"] for k, v in us.items() if k != "hand-written"}
        # paired: each round's loop minus the same round's hand-written loop, then the median over rounds; the
        # machine's speed drifts between rounds (by a third on a shared VM), and a difference of two medians
        # taken over different rounds carries that drift
        paired = {k: statistics.median(a - b for a, b in zip(v, times["hand-written"]))
                  for k, v in times.items() if k != "hand-written"}
        result["batches"][str(B)] = {"us_per_step": us, "overhead_us_per_step": overhead, "all_us_per_step": times,
                                     "paired_overhead_us_per_step": paired,
                                     "paired_zoo_overhead_over_pyro": paired["zoo.fit"] / paired["Pyro Trace_ELBO"],
                                     "paired_zoo_overhead_over_pyro_validation_off":
                                         paired["zoo.fit"] / paired["Pyro Trace_ELBO, validation off"],
                                     "zoo_overhead_over_pyro": overhead["zoo.fit"] / overhead["Pyro Trace_ELBO"],
                                     "zoo_overhead_over_pyro_validation_off":
                                         overhead["zoo.fit"] / overhead["Pyro Trace_ELBO, validation off"],
                                     **({"compiled_over_hand": us["zoo.fit --compile"] / us["hand-written"]}
                                        if "zoo.fit --compile" in us else {})}
        for k, v in us.items():
            print(f"batch {B}: {k}: {v:.0f} us/step" + (f" (overhead {overhead[k]:+.0f} us, paired {paired[k]:+.0f} us)"
                                                       if k in overhead else ""), flush=True)
    for B in (1, 32):
        measure(B)
    write_result(args.name or "step_overhead_small", result)


def main(argv=None):
    map_torch_constants()        # every loop in the state pyro-zoo and fit run in (zoo.core.process; speed.py)
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--small", action="store_true", help="the fixed cost per step at negligible compute (see above)")
    p.add_argument("--steps", type=int, default=300, help="steps per loop and round with --small")
    p.add_argument("--name", default=None, help="result file name with --small (default step_overhead_small)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads for every loop (default: torch's own, as the Python API runs; pyro-zoo's "
                        "commands take 1 for models this small, zoo.training.threads)")
    args = p.parse_args(argv)
    if args.threads is not None:
        if args.threads < 1:
            fail(f"--threads must be at least 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    if args.small:
        return small(args)
    x = load_dataset("binarized_mnist", args.data_dir).train[:20000]
    N, B = x.shape[0], 100
    pyro.set_rng_seed(0)
    model = build_model("vae", 784)
    guide = build_guide("amortized", model)
    opt = make_optimizer(model, guide, 1e-3)     # one optimizer for all three: the loops differ only above it
    elbo = build_objective("elbo", 1)            # the zoo's: zoo.objectives.lean.LeanTrace_ELBO
    elbo_jit = build_objective("elbo", 1, jit=True)
    pyro_elbo = pyro.infer.Trace_ELBO(max_plate_nesting=1)     # Pyro's own, for the bare Pyro loops

    def hand():
        t = time.perf_counter()
        hand_epoch(x, guide, model, opt, epoch_order(N, 0, 0), B)
        return time.perf_counter() - t

    def bare_pyro():
        t = time.perf_counter()
        with pyro.validation_enabled(False):
            for idx in epoch_order(N, 0, 0).split(B):
                opt.zero_grad(set_to_none=True)
                pyro_elbo.loss_and_grads(model, guide, x[idx], idx=idx, N=N)
                opt.step()
        return time.perf_counter() - t

    def zoo_fit():
        return fit(model, guide, elbo, x, epochs=1, batch_size=B, lr=1e-3, progress=False, optimizer=opt)[-1]["seconds"]

    def zoo_fit_jit():
        return fit(model, guide, elbo_jit, x, epochs=1, batch_size=B, lr=1e-3, progress=False,
                   optimizer=opt)[-1]["seconds"]

    @torch.no_grad()
    def hand_forward():
        t = time.perf_counter()
        for idx in epoch_order(N, 0, 0).split(B):
            hand_loss(x[idx], guide, model, N).item()
        return time.perf_counter() - t

    def forward(objective):
        @torch.no_grad()
        def run():
            t = time.perf_counter()
            with pyro.validation_enabled(False):
                for idx in epoch_order(N, 0, 0).split(B):
                    objective.loss(model, guide, x[idx], idx=idx, N=N)
            return time.perf_counter() - t
        return run

    loops = {"hand-written": hand, "bare Pyro SVI loop": bare_pyro, "zoo.fit": zoo_fit, "zoo.fit --jit": zoo_fit_jit,
             "hand-written ELBO, forward only": hand_forward,
             "Pyro Trace_ELBO.loss, forward only": forward(pyro_elbo),
             "zoo elbo (LeanTrace_ELBO).loss, forward only": forward(elbo)}
    times = {name: [] for name in loops}
    for r in range(args.rounds):
        for name, f in loops.items():
            seconds = f()
            if r > 0:
                times[name].append(seconds / (N / B) * 1000)
    ms = {k: statistics.median(v) for k, v in times.items()}
    write_result("step_overhead", {"ms_per_step": ms, "all_ms_per_step": times, "batch_size": B, "num_data": N})
    for k, v in ms.items():
        ref = "hand-written ELBO, forward only" if "forward" in k else "hand-written"
        print(f"{k}: {v:.2f} ms/step ({v / ms[ref]:.2f}x {ref})")


if __name__ == "__main__":
    run_script(main)
