"""How often each homework check fails a correct file by chance, and how often it catches a wrong one, over seeds.

A grade's inputs come from a secret seed; a check must not fail a correct submission because of the seed drawn
(``zoo/homework/INSTRUCTORS.md`` states at most 1e-4 per check). This sweep grades, for each assignment:

- the correct files, at ``--seeds`` seeds (default 1000): the reference solution and the correct alternatives in
  ``tests/homework_submissions/`` (``<assignment>_other_forms*.py``, ``ppca_float64_woodbury.py``), and at
  ``--mutant-seeds`` the mutants of the mutation suite that must lose nothing (``straight_through_other_algebraic_form``,
  the reference with one line written another way). Every check that fails one of them is a false alarm. The checks that train (homework 1's VAE on the digits, homework 3's SVI: the file's own
  training loop, a second or more each, which nothing can run for many seeds at once) run at ``--train-seeds``.
- the wrong files, at ``--mutant-seeds`` seeds (default 20): every mutant of ``tests/test_homework_assignments.py``
  (``MUTANTS``) and ``tests/test_homework_missed_bugs.py`` (``PARTICLE_BUGS``, the naive log-sigmoid), on the checks
  it must fail: the detection rate of each.
- a calibration pass: the statistical checks again on the correct files' same draws, with their design rate
  (``DESIGN_RATE``, 2.5e-5) raised to ``--calibration-rate``. A check whose thresholds come from its estimators'
  variances fails there at most that often (Bonferroni makes it conservative); failing more would mean the normal
  approximations are off in the tail, and the stated rate could not be trusted.

**In process, without the sandbox.** Each check runs as the grader runs it (its own seed, torch's RNG seeded with
it, the shared ``ctx.cache``, the same verdict code from the replies), through
:func:`zoo.homework.in_process.grade_in_process`: the file's functions and the kit's probes are called in this
process, each request seeded as the worker seeds it, instead of in a sandboxed worker (7 to 12 s a grade, far too
slow for thousands). **Vectorized where the law allows**: the score-function gradients of homework 2, the
reconstruction gradients of homework 1 and the phase and IWAE gradients of homework 4 are drawn by ``torch.func.vmap`` over the file's own function, all draws of a
request in one call (i.i.d. draws of the same estimator; the per-draw seeds the grader picks are not used, and a
replay returns the recorded draw, as a fresh worker running a correct file does; where vmap cannot run the file's function, the kit's probe draws
them one by one).

    OMP_NUM_THREADS=1 python benchmarks/homework_seed_sweep.py                 # the committed results (~40 min)
    OMP_NUM_THREADS=1 python benchmarks/homework_seed_sweep.py --seeds 20 --train-seeds 4 --mutant-seeds 2 --name try

Writes ``benchmarks/results/<name>.json`` and ``.md``.
"""
from __future__ import annotations

import argparse
import importlib
import json
import importlib.util
import os
import re
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import RESULTS, run_script, write_result  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
TESTS = ROOT / "tests"
#: The correct alternatives of each assignment, in tests/homework_submissions/.
ALTERNATIVES = {"bernoulli_vae": ("bernoulli_vae_other_forms.py",),
                "discrete_estimators": ("discrete_estimators_other_forms.py",),
                "ppca_three_ways": ("ppca_float64_woodbury.py",),
                "wake_sleep_and_iwae": ("wake_sleep_and_iwae_other_forms.py", "wake_sleep_and_iwae_other_forms_2.py",
                                        "wake_sleep_and_iwae_other_forms_3.py"),
                "expressive_posteriors": ("expressive_posteriors_other_forms.py", "expressive_posteriors_other_forms_2.py",
                                          "expressive_posteriors_other_forms_3.py")}
#: The checks that train with the file's own loop: run at --train-seeds.
TRAINING = {"bernoulli_vae": ("train_amortized", "amortization_gap"),
            "ppca_three_ways": ("svi_exact_guide", "svi_amortized_guide"),
            "wake_sleep_and_iwae": ("sleep_kl_direction", "digits_comparison"),
            "expressive_posteriors": ("iaf_closes_the_gap",)}
#: The checks whose thresholds come from DESIGN_RATE: recomputed at --calibration-rate.
STATISTICAL = {"bernoulli_vae": ("reconstruction_unbiased", "elbo_lower_bound"),
               "discrete_estimators": ("reinforce_unbiased", "reinforce_loo_unbiased", "variance_order",
                                       "gumbel_softmax_distribution", "relaxation_converges",
                                       "unbiased_on_a_new_problem"),
               "wake_sleep_and_iwae": ("wake_phase", "sleep_phase", "reweighted_wake_sleep", "iwae_bound_values",
                                       "iwae_gradient"),
               "expressive_posteriors": ("elbo_estimator", "vamp_prior_buys")}
#: A number a passing or failing check reports, to show how far from its threshold a correct file stays.
MARGINS = {"svi_exact_guide": (r"ELBO (?:was )?([0-9.e+-]+) nats/datum below", "ELBO gap (nats/datum), allowed 0.5"),
           "svi_amortized_guide": (r"ELBO (?:was )?([0-9.e+-]+) nats/datum below", "ELBO gap (nats/datum), allowed 0.5"),
           "train_amortized": (r"test ELBO (-?[0-9.]+)", "test ELBO (nats), target -23.5"),
           "amortization_gap": (r"= (-?[0-9.]+) nats", "per-datum minus amortized ELBO, allowed down to -1"),
           "iaf_closes_the_gap": (r"the IAF buys (-?[0-9.]+)",
                                  "ELBO the IAF buys (nats/digit), needed: 4.06 standard errors, about 0.055"),
           "em_converges": (r"([0-9.e+-]+) nats/datum below the maximum after",
                            "nats/datum below the maximum after 60 EM steps, allowed 1e-4"),
           "sleep_kl_direction": (r"\((-?[0-9]+)% of the gap closed", "% of the KL(p || q) gap closed, allowed down to 90"),
           "digits_comparison": (r"wake_sleep (-?[0-9.]+)", "wake-sleep's test log-likelihood (nats), target -22.5")}


def _import(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def files(assignment: str, folder: Path):
    """(label, path, the checks it must fail: None for a correct file, whether it is a mutant) of the assignment,
    mutants written to ``folder``."""
    from zoo.homework import get_assignment
    from zoo.homework.kit import solution_path
    solution = solution_path(get_assignment(assignment))
    source = solution.read_text()
    suite = _import(TESTS / "test_homework_assignments.py", "mutation_suite")
    missed = _import(TESTS / "test_homework_missed_bugs.py", "missed_bugs")
    mutants = {name: (old, new, set(fails)) for name, (old, new, fails) in suite.MUTANTS.get(assignment, {}).items()}
    mutants.update({name: (old, new, {check}) for name, (hw, check, old, new) in missed.PARTICLE_BUGS.items()
                    if hw == assignment})
    if assignment in missed.MUTANTS:
        check, old, new = missed.MUTANTS[assignment]
        mutants["naive_log_sigmoid"] = (old, new, {check})
    out = [("reference", solution, None, False)]
    out += [(Path(name).stem, TESTS / "homework_submissions" / name, None, False)
            for name in ALTERNATIVES.get(assignment, ())]
    for name, (old, new, fails) in mutants.items():
        path = folder / f"{assignment}__{name}.py"
        path.write_text(source.replace(old, new, 1))
        out.append((name, path, fails or None, True))
    return out


# -- vectorized probes: the same estimator, all draws of a request in one call -------------------------------
class _Block:
    """``n`` copies of a network of Linear layers (and Tanh) with their own parameters, applied to ``n`` blocks of
    rows: rows [..., n * B, in] -> [..., n * B, out], block k through copy k. It has the network's attributes
    (``z_dim``, ``x_dim``) and returns what it returns (the encoder's pair)."""

    def __init__(self, net, n: int):
        import torch
        self.n, self.z_dim, self.x_dim = n, net.z_dim, net.x_dim
        self.layers = {name: (torch.nn.Parameter(m.weight.detach().expand(n, *m.weight.shape).clone()),
                              torch.nn.Parameter(m.bias.detach().expand(n, *m.bias.shape).clone()))
                       for name, m in net.named_modules() if isinstance(m, torch.nn.Linear)}
        self.kind = "encoder" if hasattr(net, "mu") else "decoder"

    def parameters(self):
        for weight, bias in self.layers.values():
            yield weight
            yield bias

    def _linear(self, name, h):
        import torch
        weight, bias = self.layers[name]
        blocks = h.reshape(*h.shape[:-2], self.n, -1, h.shape[-1])
        out = torch.einsum("...nbi,noi->...nbo", blocks, weight) + bias.unsqueeze(-2)
        return out.reshape(*h.shape[:-2], -1, weight.shape[1])

    def __call__(self, h):
        import torch
        if self.kind == "decoder":
            return self._linear("net.2", torch.tanh(self._linear("net.0", h)))
        hidden = torch.tanh(self._linear("net.0", h))
        return self._linear("mu", hidden), self._linear("log_sigma", hidden)


class _Memo:
    """The draws handed out, by (request, seed): a replay (a subset of the seeds, in another order) gets them back."""

    def __init__(self):
        self.rows = {}

    def serve(self, key, seeds, vectorized, one_by_one):
        """The rows of ``seeds``: new ones from ``vectorized(n)``, or, where vmap cannot run the file's function (a
        branch on a tensor's value), from ``one_by_one(seeds)``, the kit's own probe."""
        missing = [s for s in seeds if (key, s) not in self.rows]
        if missing:
            try:
                fresh = vectorized(len(missing))
            except Exception:                    # vmap's limits, not the file's error: the kit's probe, draw by draw
                if one_by_one is None:
                    raise
                fresh = one_by_one(missing)
            for s, row in zip(missing, fresh):
                self.rows[key, s] = row
        return [self.rows[key, s] for s in seeds]


def fast_probes(assignment: str, memo: _Memo):
    """Replacements of the heavy Monte Carlo probes of ``assignment`` (name -> fn(module, *args)), or {}."""
    import torch
    from torch import nn
    from torch.func import functional_call, grad, vmap

    class _Call(nn.Module):                      # functional_call swaps the parameters of its children for fn()
        def __init__(self, **children):
            super().__init__()
            for name, child in children.items():
                self.add_module(name, child)

        def forward(self, fn):
            return fn()

    if assignment == "discrete_estimators":
        from zoo.homework.discrete_estimators import probes
        from zoo.homework.discrete_estimators.problem import (Problem, QuadraticProblem, make_large_problem,
                                                              make_problem)

        def gradient_draws(module, function, problem_seed, num_particles, seeds, large=False, offsets=None):
            surrogate = getattr(module, function)
            if large:
                problem = make_large_problem(problem_seed)
                names, theta = ["h"], (problem.h.detach(),)

                def value(theta, logits):
                    return surrogate(logits, QuadraticProblem(theta[0], problem.J, logits).f, num_particles)
            else:
                problem = make_problem(problem_seed)
                call = _Call(sbn=problem.sbn)
                names = [f"sbn.{k}" for k, _ in problem.sbn.named_parameters()]
                theta = tuple(v.detach() for _, v in problem.sbn.named_parameters())

                def value(theta, logits):
                    p = Problem(problem.sbn, problem.x, logits)
                    f = p.f if offsets is None else (lambda z: p.f(z) + offsets)
                    return functional_call(call, dict(zip(names, theta)), (lambda: surrogate(logits, f, num_particles),))
            gradient = grad(value, argnums=(0, 1))

            def one(_):
                g_theta, g_logits = gradient(theta, problem.logits.detach())
                return torch.cat([g.reshape(-1) for g in g_theta] + [g_logits.reshape(-1)])

            key = (function, problem_seed, num_particles, large, None if offsets is None else tuple(offsets.tolist()))
            return torch.stack(memo.serve(
                key, seeds, lambda n: vmap(one, randomness="different")(torch.arange(n)),
                lambda missing: probes.gradient_draws(module, function, problem_seed, num_particles, missing, large,
                                                      offsets)))

        return {"zoo.homework.discrete_estimators.probes:gradient_draws": gradient_draws}

    if assignment == "bernoulli_vae":
        from zoo.homework.bernoulli_vae.probes import network

        def reconstruction_draws(module, decoder_state, encoder_state, hidden, x, num_particles, seeds):
            """All draws at once: the file's reconstruction on x repeated once per draw, each copy of the data with
            its own copy of the networks (block networks), so that each draw's value [B] and gradient are its own.
            A correct estimator treats the data as independent; only correct files are swept this way."""
            decoder = network("decoder", 2, x.shape[1], hidden, decoder_state, double=True)
            encoder = network("encoder", 2, x.shape[1], hidden, encoder_state, double=True)

            def draw_all(n):
                block_decoder, block_encoder = _Block(decoder, n), _Block(encoder, n)
                value = module.reconstruction(block_decoder, block_encoder, x.repeat(n, 1), num_particles)
                params = [*block_decoder.parameters(), *block_encoder.parameters()]
                gradients = torch.autograd.grad(value.sum(), params, allow_unused=True)
                flat = [torch.zeros_like(p) if g is None else g for p, g in zip(params, gradients)]
                return torch.cat([value.detach().reshape(n, x.shape[0])] + [g.reshape(n, -1) for g in flat], 1)

            key = ("reconstruction", tuple(x.reshape(-1).tolist()), float(decoder_state["net.0.weight"].sum()))
            rows = torch.stack(memo.serve(key, seeds, draw_all, None))
            return {"values": rows[:, :x.shape[0]], "gradients": rows[:, x.shape[0]:]}

        return {"zoo.homework.bernoulli_vae.probes:reconstruction_draws": reconstruction_draws}

    if assignment == "wake_sleep_and_iwae":
        from zoo.homework.wake_sleep_and_iwae import probes
        from zoo.homework.wake_sleep_and_iwae.problem import load_machine, machine_state, make_sbn_problem

        def flat_draws(key, seeds, value, theta, one_by_one):
            """Each draw the gradient of the scalar ``value(theta)`` (a dict of the parameters, in the probe's
            order), flattened as ``gradient_of`` does; all of ``seeds`` in one vmap."""
            def one(_):
                return torch.cat([g.reshape(-1) for g in grad(value)(theta).values()])
            return torch.stack(memo.serve(key, seeds, lambda n: vmap(one, randomness="different")(torch.arange(n)),
                                          one_by_one))

        def phase_gradients(module, function, problem_seed, num_samples, seeds):
            if function not in probes.PHASES:
                raise ValueError(f"no phase {function}")
            problem = make_sbn_problem(problem_seed)
            machine = load_machine(machine_state(problem.machine))
            x, surrogate, call = problem.x.float(), getattr(module, function), _Call(machine=machine)
            args = (num_samples,) if function == "sleep_surrogate" else (x, num_samples)
            theta = {f"machine.{k}": v.detach() for k, v in machine.named_parameters()}

            def value(theta):
                return functional_call(call, theta, (lambda: surrogate(machine, *args),)).reshape(())
            return flat_draws((function, problem_seed, num_samples), seeds, value, theta,
                              lambda missing: probes.phase_gradients(module, function, problem_seed, num_samples,
                                                                     missing))

        def iwae_gradients(module, problem_seed, num_samples, seeds):
            problem, params = probes.gaussian_problem(problem_seed, False)
            names = ("W", "mu", "log_sigma", "A", "d", "e")
            theta = {name: p.detach() for name, p in zip(names, params)}

            def value(theta):
                p = type(problem)(*(theta[name] for name in names), problem.x)
                loc, log_scale = p.guide()
                return module.iwae_bound(p.log_joint, loc, log_scale, num_samples).sum()
            return flat_draws(("iwae", problem_seed, num_samples), seeds, value, theta,
                              lambda missing: probes.iwae_gradients(module, problem_seed, num_samples, missing))

        return {"zoo.homework.wake_sleep_and_iwae.probes:phase_gradients": phase_gradients,
                "zoo.homework.wake_sleep_and_iwae.probes:iwae_gradients": iwae_gradients}
    return {}


# -- the sweep ------------------------------------------------------------------------------------------------
def sweep_file(assignment, label, path, fails, seeds, train_seeds, calibration_rate, log, only_checks=None):
    """The file's outcomes: {check: {"runs", "failures", "failing_seeds", "calibration_failures", "margins"}}."""
    import torch
    from zoo.homework import get_assignment
    from zoo.homework.in_process import grade_in_process, load_file

    module = load_file(path, f"sweep_{assignment}_{label}")
    hw = get_assignment(assignment)
    checks_module = importlib.import_module(f"zoo.homework.{assignment}.checks")
    names = [c.name for c in hw.checks] if fails is None else [c.name for c in hw.checks if c.name in fails]
    names = [n for n in names if only_checks is None or n in only_checks]
    training = set(TRAINING.get(assignment, ()))
    statistical = set(STATISTICAL.get(assignment, ())) if fails is None else set()
    stats = {name: {"runs": 0, "failures": 0, "failing_seeds": [], "messages": [], "calibration_runs": 0,
                    "calibration_failures": 0, "margins": []} for name in names}
    start, design_rate = time.perf_counter(), getattr(checks_module, "DESIGN_RATE", None)
    lost = 0                                     # seeds at which the file lost points on any check it ran
    for k, seed in enumerate(seeds):
        only = [n for n in names if n not in training or k < train_seeds]
        if not only:                             # a mutant of the training checks alone, past --mutant-train-seeds
            continue
        memo = _Memo()
        probes = fast_probes(assignment, memo) if fails is None or assignment != "bernoulli_vae" else {}
        results = grade_in_process(assignment, module, seed, only=only, probes=probes)
        lost += any(not result.passed for result in results.values())
        for name, result in results.items():
            s = stats[name]
            s["runs"] += 1
            if not result.passed:
                s["failures"] += 1
                if len(s["failing_seeds"]) < 10:
                    s["failing_seeds"].append(seed)
                    s["messages"].append(result.message[:300])
            if name in MARGINS:
                found = re.search(MARGINS[name][0], result.message)
                if found:
                    s["margins"].append(float(found.group(1)))
        calibrated = [n for n in only if n in statistical]
        if calibrated:                           # the same draws (the memo), the thresholds at the calibration rate
            checks_module.DESIGN_RATE = calibration_rate
            try:
                again = grade_in_process(assignment, module, seed, only=calibrated, probes=probes)
            finally:
                checks_module.DESIGN_RATE = design_rate
            for name, result in again.items():
                stats[name]["calibration_runs"] += 1
                stats[name]["calibration_failures"] += int(not result.passed)
        if (k + 1) % max(1, len(seeds) // 10) == 0 or k + 1 == len(seeds):
            log(f"  {assignment} {label}: {k + 1}/{len(seeds)} seeds, {time.perf_counter() - start:.0f} s")
    torch.set_num_threads(1)
    return {"file": str(Path(path).relative_to(ROOT)) if Path(path).is_relative_to(ROOT) else Path(path).name,
            "correct": fails is None, "must_fail": sorted(fails or ()), "seconds": round(time.perf_counter() - start, 1),
            "seeds": len(seeds), "seeds_losing_points": lost,
            "checks": stats}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--assignments", default=None, help="comma-separated assignments (default: all)")
    p.add_argument("--seeds", type=int, default=1000, help="grade seeds for each correct file (default 1000)")
    p.add_argument("--train-seeds", type=int, default=100,
                   help="of those, how many also run the training checks (default 100)")
    p.add_argument("--mutant-seeds", type=int, default=20, help="grade seeds for each wrong file (default 20)")
    p.add_argument("--mutant-train-seeds", type=int, default=None,
                   help="of those, how many also run the training checks a mutant must fail (default: all)")
    p.add_argument("--calibration-rate", type=float, default=0.02,
                   help="the design rate of the calibration pass (default 0.02)")
    p.add_argument("--first-seed", type=int, default=10 ** 6, help="the seeds are first-seed, first-seed + 1, ...")
    p.add_argument("--checks", default=None,
                   help="comma-separated checks to sweep (default: all); the files that must fail none of them skip")
    p.add_argument("--files", choices=("all", "correct", "wrong"), default="all",
                   help="sweep every file, only the correct ones or only the mutants that must lose checks (two "
                        "processes, one result file each, where one core cannot hold the whole sweep)")
    p.add_argument("--only", default=None,
                   help="comma-separated files to sweep, by the names the results give them (e.g. "
                        "iwae_scale_detached,reference; default: every file --files selects)")
    p.add_argument("--name", default="homework_seed_sweep", help="result file name (default homework_seed_sweep)")
    p.add_argument("--rewrite-page", action="store_true",
                   help="grade nothing: write benchmarks/results/NAME.md again from NAME.json, after a change to how "
                        "the page reads a sweep's figures (its words on method are this script's: for a sweep "
                        "this version ran)")
    args = p.parse_args(argv)
    if args.rewrite_page:
        from zoo.core.errors import ZooError
        source = RESULTS / f"{args.name}.json"
        try:
            payload = json.loads(source.read_text())
            page = markdown(payload, source.name)
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
            raise ZooError(f"{source} is not a sweep's result file ({type(error).__name__}: {error}); run the sweep "
                           f"to write it") from None
        tmp = source.with_suffix(".md.tmp")
        tmp.write_text(page)
        os.replace(tmp, source.with_suffix(".md"))
        print(f"wrote {source.with_suffix('.md')}")
        return
    only_checks = set(args.checks.split(",")) if args.checks else None
    only_files = set(args.only.split(",")) if args.only else None
    import tempfile

    import torch
    from zoo.core.errors import ZooError
    from zoo.homework import ASSIGNMENTS, get_assignment
    from zoo.homework.base import DESIGN_RATE, FALSE_ALARM
    if args.mutant_train_seeds is None:
        args.mutant_train_seeds = args.mutant_seeds
    for flag in ("seeds", "train_seeds", "mutant_seeds", "mutant_train_seeds"):
        if getattr(args, flag) < 1:
            raise ZooError(f"--{flag.replace('_', '-')} must be at least 1")
    if not 0 < args.calibration_rate < 1:
        raise ZooError("--calibration-rate must be in (0, 1)")
    names = args.assignments.split(",") if args.assignments else list(ASSIGNMENTS)
    for name in names:
        get_assignment(name)                     # an unknown name is refused before anything runs
    if only_files is not None:
        with tempfile.TemporaryDirectory() as folder:
            listed = [(label, fails) for name in names for label, _, fails, _ in files(name, Path(folder))]
        known = {label for label, _ in listed}
        if only_files - known:
            raise ZooError(f"--only names no file of {', '.join(names)}: {', '.join(sorted(only_files - known))}; "
                           f"the files are {', '.join(sorted(known))}")
        if args.files != "all" and not any(label in only_files and (fails is None) == (args.files == "correct")
                                           for label, fails in listed):
            raise ZooError(f"--only names no {'correct file' if args.files == 'correct' else 'mutant'}, and "
                           f"--files {args.files} sweeps only those: drop --files or name one")
    torch.set_num_threads(1)
    torch.distributions.Distribution.set_default_validate_args(False)      # vmap cannot branch on a validation
    import warnings
    warnings.filterwarnings("ignore")            # Pyro's notes on frozen modules, vmap's on performance
    correct_seeds = [args.first_seed + k for k in range(args.seeds)]
    mutant_seeds = [args.first_seed + k for k in range(args.mutant_seeds)]
    start = time.perf_counter()

    def log(line):
        print(f"[{time.perf_counter() - start:7.0f} s] {line}", flush=True)

    # each file's outcome is kept in runs/sweeps/NAME.partial.json as it is done, so a sweep that is stopped (hours at 1000 seeds
    # per mutant) continues where it was, with the same arguments, instead of starting again
    key = {k: getattr(args, k) for k in ("assignments", "seeds", "train_seeds", "mutant_seeds", "mutant_train_seeds",
                                         "calibration_rate", "first_seed", "checks", "files", "only")}
    partial = ROOT / "runs" / "sweeps" / f"{args.name}.partial.json"     # not in results/: the report reads those
    partial.parent.mkdir(parents=True, exist_ok=True)
    report = _resumed(partial, key, log)
    with tempfile.TemporaryDirectory() as folder:
        for assignment in names:
            report.setdefault(assignment, {})
            for label, path, fails, mutant in files(assignment, Path(folder)):
                if only_checks is not None and fails is not None and not fails & only_checks:
                    continue
                if args.files != "all" and (fails is None) != (args.files == "correct"):
                    continue
                if only_files is not None and label not in only_files:
                    continue
                if label in report[assignment]:
                    continue                     # done before the sweep was stopped
                seeds = mutant_seeds if mutant else correct_seeds      # a mutant that must lose nothing: correct
                train = min(args.mutant_train_seeds if mutant else args.train_seeds, len(seeds))
                report[assignment][label] = sweep_file(assignment, label, path, fails, seeds, train,
                                                       args.calibration_rate, log, only_checks)
                tmp = partial.with_suffix(".tmp")
                tmp.write_text(json.dumps({"key": key, "assignments": report}))
                os.replace(tmp, partial)
    payload = {"false_alarm_stated": FALSE_ALARM, "design_rate": DESIGN_RATE, "calibration_rate": args.calibration_rate,
               "seeds": args.seeds, "train_seeds": args.train_seeds, "mutant_seeds": args.mutant_seeds,
               "mutant_train_seeds": args.mutant_train_seeds,
               "first_seed": args.first_seed, "files": args.files, "checks": sorted(only_checks) if only_checks else "all",
               "only": sorted(only_files) if only_files else "all", "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
               "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
               "seconds": round(time.perf_counter() - start, 1), "cpu_seconds": round(time.process_time(), 1),
               # the files' own times, those done before a stop included: this process's alone says little
               "files_seconds": round(sum(r["seconds"] for by_file in report.values() for r in by_file.values()), 1),
               "assignments": report}
    path = write_result(args.name, payload)
    (RESULTS / f"{args.name}.md").write_text(markdown(json.loads(path.read_text()), path.name))
    partial.unlink(missing_ok=True)
    log(f"wrote {path}")


def _resumed(partial: Path, key: dict, log) -> dict:
    """The outcomes a stopped sweep with the same arguments kept in ``partial`` (each file's a dict with its
    ``checks``), or nothing: a file made by other arguments, or one that does not read as such, is started over."""
    if not partial.is_file():
        return {}
    try:
        kept = json.loads(partial.read_text())
        report = kept["assignments"] if kept.get("key") == key else None
        most = max(key["seeds"], key["mutant_seeds"])
        ok = isinstance(report, dict) and all(
            isinstance(files, dict) and all(isinstance(r, dict) and isinstance(r.get("checks"), dict)
                                            and all(_plausible(c, most) for c in r["checks"].values())
                                            for r in files.values()) for files in report.values())
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        ok = False
    if not ok:
        log(f"{partial.name} is from other arguments or unreadable: starting over")
        return {}
    log(f"continuing from {partial.name}: {sum(len(f) for f in report.values())} files done")
    return report


def _plausible(check: dict, most: int) -> bool:
    """Whether one check's kept outcome is figures a sweep of at most ``most`` seeds can give: whole numbers with
    0 <= failures <= runs <= most, the same for the calibration runs, and no more failing seeds than failures."""
    def whole(v):
        return isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= most
    return (isinstance(check, dict) and all(whole(check.get(k)) for k in ("runs", "failures", "calibration_runs",
                                                                           "calibration_failures"))
            and check["failures"] <= check["runs"] and check["calibration_failures"] <= check["calibration_runs"]
            and isinstance(check.get("failing_seeds"), list) and len(check["failing_seeds"]) <= check["failures"]
            and isinstance(check.get("margins", []), list))


def _upper_95(failures: int, runs: int) -> float:
    """The one-sided 95% upper bound of a rate from ``failures`` in ``runs`` (Clopper-Pearson; 3/n at none)."""
    import math
    if runs == 0:
        return 1.0
    lo, hi = failures / runs, 1.0
    for _ in range(60):                          # P(Binomial(runs, p) <= failures) = 0.05
        mid = (lo + hi) / 2
        cdf = sum(math.comb(runs, k) * mid ** k * (1 - mid) ** (runs - k) for k in range(failures + 1))
        lo, hi = (mid, hi) if cdf > 0.05 else (lo, mid)
    return hi


def markdown(payload, json_name) -> str:
    """The result file's tables: per assignment, each check's false alarms on the correct files and its calibration,
    then each mutant's detection on the checks it must fail (each table with a caption line, for the report's
    ``{{ include }}``)."""
    from zoo.homework import get_assignment
    cpu = f" ({payload['cpu_seconds'] / 60:.0f} min of CPU)" if "cpu_seconds" in payload else ""
    files = payload.get("files", "all")
    md = ["# The homework checks over many secret seeds: false alarms and detections", "",
          f"Command: `OMP_NUM_THREADS={payload['omp_num_threads']} {payload['provenance']['command']}` "
          f"(result: `{json_name}`), "
          + (f"{payload['files_seconds'] / 60:.0f} min of grading at one thread in all (this process, which resumed "
             f"the files done before a stop: {payload['seconds'] / 60:.0f} min{cpu})"
             if payload.get("files_seconds", 0) > payload["seconds"] + 60 else
             f"{payload['seconds'] / 60:.0f} min at one thread{cpu}")
          + "; load average at the start "
          f"{payload['load_average_at_start']} on {os.cpu_count()} cores. In process, without the sandbox "
          f"(`zoo.homework.in_process`); the score-function, reconstruction, phase and IWAE gradient draws vectorized "
          f"by `torch.func.vmap` (see the script's docstring)."
          + {"all": "", "correct": " The correct files only (`--files correct`).",
             "wrong": " The mutants that must lose checks only (`--files wrong`)."}[files], "",
          f"The stated false-alarm rate is {payload['false_alarm_stated']:g} per check; each check's tests are designed "
          f"at {payload['design_rate']:g} together. "
          + ("" if files == "wrong" else f"Correct files: {payload['seeds']} seeds each (the training checks "
             f"{payload['train_seeds']}). ")
          + ("" if files == "correct" else f"Wrong files (mutants): {payload['mutant_seeds']} seeds each (the training "
             f"checks {payload.get('mutant_train_seeds', payload['mutant_seeds'])}), on the checks they must fail. ")
          + "*Upper 95%* "
          f"is the Clopper-Pearson bound of the false-alarm rate from what was seen, and *missed, upper 95%* that of "
          f"the share of seeds at which a mutant keeps the check's points (the goal: below 1%). "
          f"*Calibration*: the statistical checks' failures on the same draws with their design rate raised to "
          f"{payload['calibration_rate']:g}; a check calibrated in its tails fails at most that often.", ""]
    for assignment, by_file in payload["assignments"].items():
        hw = get_assignment(assignment)
        correct = {label: r for label, r in by_file.items() if r["correct"]}
        md += [f"## {hw.title} (`{assignment}`)", ""]
        if correct:
            md += _false_alarms(hw, correct, payload["calibration_rate"])
        if any(not r["correct"] for r in by_file.values()):
            md += _detections(hw, by_file)
        md.append("")
    return "\n".join(md) + "\n"


def _false_alarms(hw, correct, calibration_rate) -> list:
    md = ["Correct files: " +
          ", ".join(f"`{label}` ({r['file']}, {r['seconds']:.0f} s)" for label, r in correct.items()), "",
          f"{hw.title}: false alarms of the correct files:", "",
          "| check | runs | false alarms | upper 95% | calibration at " f"{calibration_rate:g} "
          "| margin of the correct files (min / median / max) |", "|---|---|---|---|---|---|"]
    for check in hw.checks:
        if not all(check.name in r["checks"] for r in correct.values()):
            continue                         # left out by --checks
        runs = sum(r["checks"][check.name]["runs"] for r in correct.values())
        alarms = sum(r["checks"][check.name]["failures"] for r in correct.values())
        c_runs = sum(r["checks"][check.name]["calibration_runs"] for r in correct.values())
        c_fail = sum(r["checks"][check.name]["calibration_failures"] for r in correct.values())
        margins = sorted(m for r in correct.values() for m in r["checks"][check.name]["margins"])
        margin = (f"{margins[0]:.4g} / {margins[len(margins) // 2]:.4g} / {margins[-1]:.4g}: "
                  f"{MARGINS[check.name][1]}" if margins else "")
        calibration = f"{c_fail} / {c_runs} ({c_fail / c_runs:.3g})" if c_runs else "deterministic or by margin"
        md.append(f"| `{check.name}` | {runs} | {alarms} | {_upper_95(alarms, runs):.2g} | {calibration} | "
                  f"{margin} |")
    failing = [(label, check, r["checks"][check]) for label, r in correct.items() for check in r["checks"]
               if r["checks"][check]["failures"]]
    if failing:
        md += ["", "False alarms seen: " + "; ".join(f"`{label}` `{check}` at seeds {s['failing_seeds']}: "
                                                     f"{s['messages'][0]}" for label, check, s in failing)]
    return md + [""]


def _detections(hw, by_file) -> list:
    md = [f"{hw.title}: detections of the mutants, on the checks each must fail:", "",
          "| mutant | check | detected | missed, upper 95% | seconds |", "|---|---|---|---|---|"]
    for label, r in by_file.items():
        if r["correct"]:
            continue
        if "seeds_losing_points" in r:
            # the seeds any of its checks ran at (a mutant of the training checks alone: their --mutant-train-seeds)
            graded = max((c["runs"] for c in r["checks"].values()), default=r["seeds"])
            missed = _upper_95(graded - r["seeds_losing_points"], graded)
            md.append(f"| `{label}` | any of its checks | {r['seeds_losing_points']} / {graded} | {missed:.2g}"
                      f"{'' if missed < 0.01 else ' ✗'} | {r['seconds']:.0f} |")
        for check, s in r["checks"].items():
            missed = _upper_95(s["runs"] - s["failures"], s["runs"])
            md.append(f"| `{label}` | `{check}` | {s['failures']} / {s['runs']} | {missed:.2g}"
                      f"{'' if missed < 0.01 else ' ✗'} | {r['seconds']:.0f} |")
    return md


if __name__ == "__main__":
    run_script(main)
