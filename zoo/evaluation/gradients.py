"""Gradient diagnostics: bias, variance and signal-to-noise of SVI estimators at fixed parameters.

For an objective with K particles, R independent gradient estimates g_1..g_R of the
loss (the negative, N/B-scaled bound) are drawn on one minibatch with the parameters
held fixed. Separately for the model (decoder) parameters and the guide (encoder)
parameters we report, with P coordinates in the group:

``variance``
    mean over coordinates of the per-coordinate variance of g.
``snr``
    mean over coordinates of |mean g| / sd(g) (Rainforth et al. 2018: as K grows it rises
    for the model and falls for the guide under the IWAE gradient), over the coordinates
    whose gradient varies at all (sd > 1e-6 x the group's largest sd): a numerically
    deterministic coordinate, e.g. the bias of a saturated always-off pixel, has no
    meaningful ratio and would swamp the mean.
``snr_median``
    the median over the same coordinates (the paper draws their SNRs as histograms; the mean is pulled up by a
    few coordinates of large SNR).
``cosine``
    cosine similarity of mean g to the reference gradient.
``bias_norm``, ``bias_se``
    || mean g - reference || and the norm of the per-coordinate standard errors of mean g
    (a bias_norm well above bias_se is real bias, or a reference of a different bound).
``seconds``
    median wall time of one estimate.

The reference is the exact gradient where one exists:

- a model with a closed-form or enumerable log p(x) (pPCA, small discrete models): for the
  model group, grad_theta of -(N/B) sum_b log p(x_b), the target every bound approaches
  (with the exact guide it is also the exact gradient of every bound);
- a discrete model small enough to enumerate with a discrete guide: for the guide group,
  the exact gradient of the enumerated ELBO (:class:`~zoo.objectives.EnumELBO`);
- otherwise a high-particle estimate: the mean of 20 IWAE gradients with K = 1000 for the
  model group, and of 20 ELBO gradients with K = 1000 for the guide group. For a
  score-function guide the ELBO gradient is RLOO's (the score function with leave-one-out
  baselines: the same expectation as plain REINFORCE at a small fraction of its variance,
  so 20 x 1000 samples pin it down). For a relaxed guide both are the *discrete* model's
  (VIMCO for the model, and RLOO with the guide's hard samples for the encoder), so the
  cosine and bias show how far the relaxed surrogate's gradient is from the true one.

:func:`toy_gradients` is the lecture's one-line example, d/dtheta E_{x ~ N(theta, 1)}[x^2] = 2 theta,
by REINFORCE and by reparameterization.
"""
from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Mapping, Optional, Sequence

import pyro
import torch

from zoo.core.errors import ZooError
from zoo.objectives import OBJECTIVES, EnumELBO, build_objective, split_objective
from zoo.objectives.base import for_model

__all__ = ["parameter_groups", "gradient_samples", "reference_gradients", "summarize", "diagnose", "GradientStudy",
           "toy_gradients"]


def parameter_groups(model, guide) -> Dict[str, List[torch.nn.Parameter]]:
    """Model and guide parameters; auxiliary baseline nets (trained on their own loss) are left out."""
    return {"model": [p for p in model.parameters() if p.requires_grad],
            "guide": [p for n, p in guide.named_parameters() if p.requires_grad and not n.startswith("baselines.")]}


def _flat(params):
    return torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in params]) \
        if params else torch.zeros(0)


def _zero(groups):
    for params in groups.values():
        for p in params:
            p.grad = None


def gradient_samples(objective, model, guide, batch, repeats: int, groups, train_model=None):
    """R = ``repeats`` gradient estimates per group on the minibatch ``batch`` = ``(x, idx, N)`` (data, their
    indices, the data set's size), ``{group: [R, P]}``, and the wall time of each (``train_model``: the model as the
    objective sees it; default the guide's training view)."""
    x, idx, N = batch
    if train_model is None:
        train_model = guide.training_model(model)
    # as training runs it: Pyro's vectorized particles would draw a theta per particle, which a model with
    # global latents never wrote its shapes for (see for_model)
    objective = for_model(objective, model)
    samples = {g: [] for g in groups}
    seconds = []
    for _ in range(repeats):
        _zero(groups)
        t0 = time.perf_counter()
        objective.loss_and_grads(train_model, guide, x, idx=idx, N=N)
        seconds.append(time.perf_counter() - t0)
        for g, params in groups.items():
            samples[g].append(_flat(params).detach().clone())
    _zero(groups)
    return {g: torch.stack(v) for g, v in samples.items()}, seconds


def _exact_log_likelihood_gradient(model, x, N, groups):
    _zero(groups)
    if model.is_enumerable:
        from zoo.core.enumeration import enumerated_log_marginal
        log_p = enumerated_log_marginal(model, x, differentiable=True)
    else:
        log_p = model.log_marginal(x)
    (-(N / x.shape[0]) * log_p.sum()).backward()
    return _flat(groups["model"]).detach().clone()


def reference_gradients(model, guide, x, idx, N, groups, reference_repeats: int = 20):
    """``({group: reference vector}, {group: description})``; see the module docstring."""
    ref, how = {}, {}
    if model.has_log_marginal:
        ref["model"] = _exact_log_likelihood_gradient(model, x, N, groups)
        how["model"] = "exact: grad of -(N/B) sum log p(x) (closed form or enumeration)"
    if model.is_enumerable and guide.enumerable and groups["guide"]:
        _zero(groups)
        EnumELBO().loss_and_grads(model, guide, x, idx=idx, N=N)
        ref["guide"] = _flat(groups["guide"]).detach().clone()
        how["guide"] = "exact: grad of the enumerated ELBO"
    reparam = type(guide).is_reparameterized(model) and not guide.relaxes_model
    for group, name in (("model", "iwae" if reparam else "vimco"), ("guide", "elbo" if reparam else "rloo")):
        if group in ref or not groups[group]:
            continue
        relaxed, was_training = guide.relaxes_model, guide.training
        if relaxed:                     # the true discrete model's bounds: the guide's hard samples
            guide.eval()
        try:
            # a model with global latents: the per-datum ELBO (Renyi order 1), whose K particles share one theta,
            # runs vectorized and has the same expected gradient; Pyro's ELBO would run 1000 particles one by one
            reference = (build_objective("renyi", alpha=1.0, particles=1000)
                         if name == "elbo" and model.global_latents else build_objective(name, 1000))
            samples, _ = gradient_samples(reference, model, guide, (x, idx, N),
                                          reference_repeats, {group: groups[group]}, train_model=model)
        finally:
            guide.train(was_training)
        ref[group] = samples[group].mean(0)
        how[group] = f"estimate: mean of {reference_repeats} {name} gradients with K = 1000" + (
            " of the discrete model (hard samples)" if relaxed else "")
    return ref, how


def _snrs(mean: torch.Tensor, sd: torch.Tensor) -> torch.Tensor:
    """|mean| / sd of the coordinates whose gradient varies (sd > 1e-6 max sd)."""
    varies = sd > 1e-6 * sd.max() if sd.numel() and sd.max() > 0 else torch.zeros_like(sd, dtype=torch.bool)
    return mean[varies].abs() / sd[varies]


def summarize(samples: torch.Tensor, reference: Optional[torch.Tensor]) -> Dict[str, float]:
    """Statistics of ``[R, P]`` gradient samples against a reference vector."""
    R = samples.shape[0]
    mean, sd = samples.mean(0), samples.std(0)
    snrs = _snrs(mean, sd)
    out = {"repeats": R, "num_parameters": samples.shape[1], "variance": sd.pow(2).mean().item(),
           "snr": snrs.mean().item() if snrs.numel() else float("nan"),
           "snr_median": snrs.median().item() if snrs.numel() else float("nan"), "mean_norm": mean.norm().item()}
    if reference is not None:
        denom = mean.norm() * reference.norm()
        out["cosine"] = (mean @ reference / denom).item() if denom > 0 else float("nan")
        out["bias_norm"] = (mean - reference).norm().item()
        out["bias_se"] = (sd / math.sqrt(R)).norm().item()
    return out


def _refuse_oversized(groups, x: torch.Tensor, particles: Sequence[int], repeats: int) -> None:
    """Refuse, naming the option, a table whose tensors cannot fit the device (lower bounds, whatever the model):
    the R gradient estimates of P parameters it keeps (``R x P`` floats, twice while they are stacked), and a
    step of K particles (``K x N x D`` likelihood terms with their gradients)."""
    from zoo.core.memory import FLOAT_BYTES, refuse_oversized
    num_params = sum(p.numel() for params in groups.values() for p in params)
    refuse_oversized("repeats", None, repeats * num_params * 2 * FLOAT_BYTES,
                     f"the gradient estimates it keeps (R x {num_params} parameters)", x.device,
                     advice="use fewer repeats")
    refuse_oversized("particles", "objective", max(particles) * x.shape[0] * x.shape[1] * 2 * FLOAT_BYTES,
                     f"the likelihood terms of one step (K x batch {x.shape[0]} x {x.shape[1]} values, with their "
                     f"gradients)", x.device, advice="use fewer particles or a smaller batch size")


@dataclass(frozen=True)
class GradientStudy:
    """How :func:`diagnose` measures, beyond which estimators, K and repeats.

    Arguments:
        alpha: the order of the objectives that take one (Rényi).
        seed: the seed of the references' and the estimates' draws.
        reference: whether to compute the reference gradient (exact where enumerable, else ``reference_repeats``
            estimates with K = 1000); variance and SNR need none.
        reference_repeats: see ``reference``.
        objective_options: per objective name, its options other than ``particles`` (e.g. a bound's ``estimator``).
        control_variate_steps: an estimator that trains a control variate of its own (REBAR, RELAX:
            :mod:`zoo.objectives.relax`) would be measured at its untrained start; it first takes this many steps of
            its variance objective at the fixed parameters (their gradients discarded), as training keeps it
            tracking them, and is then measured with that control variate held.
        trained_control_variate: a pair ``(objective class, state_dict)`` from the checkpoint of a run that trained
            one, loaded instead into the objectives of that class (``control_variate_steps`` 0, ``control_variate``
            "checkpoint" in their rows).
    """

    alpha: float = 0.0
    seed: int = 0
    reference: bool = True
    reference_repeats: int = 20
    objective_options: Optional[Mapping[str, Mapping]] = None
    control_variate_steps: int = 200
    trained_control_variate: Optional[tuple] = None


def diagnose(model, guide, x, objectives: Sequence[str], particles: Sequence[int], repeats: int,
             study: GradientStudy = GradientStudy(), status: Optional[Callable[[str], None]] = None) -> Dict:
    """The full table: one row per (objective, K, group) of ``repeats`` gradient estimates each, plus the
    references used, measured as ``study`` says (:class:`GradientStudy`). ``status``, if given, is called with one
    line as each stage starts (the references, then each objective and K), for a command line's progress."""
    alpha, seed, reference, reference_repeats = study.alpha, study.seed, study.reference, study.reference_repeats
    objective_options, control_variate_steps = study.objective_options, study.control_variate_steps
    trained_control_variate = study.trained_control_variate
    status = status or (lambda line: None)
    from guides.user import as_zoo_guide
    guide = as_zoo_guide(guide, model)       # a Pyro guide function of your own is wrapped and checked
    if repeats < 2:
        raise ZooError(f"--repeats must be at least 2 to estimate a variance, got {repeats}")
    N = x.shape[0]
    idx = torch.arange(N, device=x.device)
    groups = parameter_groups(model, guide)
    _refuse_oversized(groups, x, particles, repeats)
    pyro.set_rng_seed(seed)
    if reference:
        status(f"reference gradients (exact where enumerable, else {reference_repeats} estimates with K = 1000)")
    ref, how = reference_gradients(model, guide, x, idx, N, groups, reference_repeats) if reference else ({}, {})
    rows = []
    for name in objectives:
        objective_name, estimator = split_objective(name)            # "iwae:dreg" -> ("iwae", "dreg")
        options = {k: v for k, v in (objective_options or {}).get(name, {}).items() if k != "particles"}
        if estimator is not None:
            options["estimator"] = estimator
        if "alpha" in {f.name for f in OBJECTIVES[objective_name].options.specs()}:
            options.setdefault("alpha", alpha)
        label = f"{objective_name} ({options['estimator']})" if options.get("estimator") else objective_name
        for k in particles:
            objective = build_objective(objective_name, k, **options)
            trains_own = hasattr(objective, "train_control_variate")
            pyro.set_rng_seed(seed + 1)
            steps = control_variate_steps
            if trains_own and trained_control_variate is not None and type(objective) is trained_control_variate[0]:
                objective.load_state_dict(trained_control_variate[1])
                steps = 0
            if trains_own and steps:
                status(f"{label}, K = {k}: {steps} steps of its control variate")
                gradient_samples(objective, model, guide, (x, idx, N), steps, groups)
            if trains_own:
                objective.train_control_variate = False
            status(f"{label}, K = {k}: {repeats} gradient estimates")
            samples, seconds = gradient_samples(objective, model, guide, (x, idx, N), repeats, groups)
            for group, s in samples.items():
                if s.shape[1] == 0:
                    continue
                rows.append({"objective": label, "particles": k, "group": group,
                             "seconds": statistics.median(seconds), **summarize(s, ref.get(group)),
                             **({"control_variate_steps": steps,
                                 "control_variate": "trained here" if steps else "checkpoint"} if trains_own else {})})
    return {"rows": rows, "reference": how, "batch_size": N}


def toy_gradients(theta: float = 1.5, samples: Sequence[int] = (1, 10, 100, 1000), repeats: int = 1000,
                  seed: int = 0) -> List[Dict]:
    """d/dtheta E_{N(theta,1)}[x^2] = 2 theta by REINFORCE, (x^2) d log N(x; theta, 1)/dtheta = x^2 (x - theta),
    and by reparameterization, x = theta + eps, d x^2/dtheta = 2 x, averaged over S samples; R repeats."""
    g = torch.Generator().manual_seed(seed)
    rows = []
    for S in samples:
        eps = torch.randn(repeats, S, generator=g, dtype=torch.float64)
        x = theta + eps
        for name, per_sample in (("reinforce", x.pow(2) * (x - theta)), ("reparameterized", 2 * x)):
            est = per_sample.mean(1)
            rows.append({"estimator": name, "samples": S, "mean": est.mean().item(), "exact": 2 * theta,
                         "bias_se": (est.std() / math.sqrt(repeats)).item(), "variance": est.var().item()})
    return rows
