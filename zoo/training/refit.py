"""Test-time inference for a per-datum guide, run until it converges: the model fixed, q fitted to each datum.

With the model fixed the problem separates over data: datum n's variational parameters lambda_n enter
only its own bound, so ::

    max_lambda  (1/n) sum_n ELBO_n(lambda_n),    ELBO_n(lambda_n) = E_q(z | lambda_n)[log p(x_n, z) - log q(z | lambda_n)]

is n independent problems. For a model with global latents theta (outside the data plate) the refit is
of the local guide only, given theta = theta_hat, the global guide's point estimate (the one the harness
reports the per-datum figures at): q(theta) was fitted to the training data and belongs to them, like the
model's parameters, so its parameters stay fixed, and with theta held the problem separates over the data
as above. (Letting q(theta) move would fit the global posterior to the evaluation data, and each step
would carry the noise of a fresh theta for every datum at once.) Minibatches buy nothing here (a row of a per-datum table gets one
gradient per pass over the data whatever the batch size), so every epoch is *one* Adam step for
every row at once: the data are scored in chunks that bound memory, the gradients accumulate, and
the step follows the last chunk.

The gradient estimator is chosen from the guide: for a guide of Normal sites (diagonal or full
covariance) the sticking-the-landing path derivative (Roeder et al. 2017), whose variance vanishes
where q is the exact posterior, so near the optimum the steps are not noise; for other
reparameterizable guides (a flow) the reparameterized ELBO gradient; for discrete latents the
leave-one-out score-function estimator over ``particles >= 2`` samples (Kool et al. 2019).

Convergence criterion. After every ``monitor_every``-th epoch (every second, by default) the mean per-datum
ELBO E_t is estimated with common random numbers: ``monitor_particles`` samples per datum drawn from one
fixed seed every time, so the difference between two estimates measures the change of the parameters, not
sampling noise. A stage ends when the mean of E over the last ``window`` epochs gains less than ``tol``,
relative, on the mean over the ``window`` epochs before (the estimates made in them):

    (mean(E_{t-W+1..t}) - mean(E_{t-2W+1..t-W})) / max(|mean(E_{t-2W+1..t-W})|, 1)  <  tol.

Estimating E after every second epoch rather than every one halves what the monitor costs (a forward pass of
``monitor_particles`` draws per datum, against the step's forward and backward of ``particles``) and leaves five
estimates in each window of ten epochs. A refit stopped by ``max_epochs`` between two estimates makes one more at
its last epoch, for its result, and does not test the criterion on it.

Adam on a noisy gradient does not settle at the optimum: it hovers about it at a distance set by its
step size and by the gradient's signal-to-noise ratio (on pPCA with K = 1 and lr 0.02 the mean-field
variances stayed 40% off). So the first ``lr_drops`` plateaus each cut the step size by ``LR_DROP``
and double the particles per datum; the refit stops (``converged``) at the plateau after that, or at
``max_epochs`` (``converged`` is then ``False``).

Example::

    >>> import torch
    >>> from zoo.models import PPCA
    >>> from zoo.registry import build_guide
    >>> model, x = PPCA(x_dim=5, latent_dim=2), torch.randn(20, 5)
    >>> result = refit_local_guide(model, build_guide("meanfield", model, num_data=20), x, RefitSchedule(max_epochs=40))
    >>> result.epochs <= 40, result.converged or result.epochs == 40
    (True, True)
"""
from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from typing import List

import pyro
import torch

from zoo.core.errors import ZooError
from zoo.core.latents import MANIFOLDS
from zoo.core.weights import per_datum_log_weights
from zoo.core.modes import evaluation_mode
from zoo.objectives import build_objective

__all__ = ["refit_local_guide", "model_held_fixed", "RefitResult", "RefitSchedule", "REFIT_TOL", "REFIT_MAX_EPOCHS",
           "REFIT_LR", "REFIT_LR_FROM_ENCODER", "refit_objective", "refit_settings"]

#: The defaults of ``--refit-tol``, ``--refit-epochs`` (the cap) and the per-datum Adam step.
REFIT_TOL = 1e-4
REFIT_MAX_EPOCHS = 2000
#: One Adam step per row per epoch moves each variational parameter by about this much while the
#: gradient's sign is steady (Adam normalizes it), against latent posteriors whose scales are O(0.1-1). The
#: step size drops twice on plateaus (LR_DROP), so the last stage steps at 0.0036. Against the earlier 0.02, with
#: rows started at training's 0.1 and the ELBO monitored every epoch, ``benchmarks/refit_start.py`` measures fewer
#: epochs and less CPU time on each of its models, and a final ELBO higher on five of the six and lower on the
#: hierarchical VAE by less than the spread of its seeds (``benchmarks/results/refit_start.json``). The per-datum
#: refit of the inference gaps (:mod:`zoo.evaluation.gaps`), which starts from the encoder, keeps 0.02.
REFIT_LR = 4e-2
#: The step size the refit took before REFIT_LR, which the inference gaps' refit from an encoder's outputs keeps.
REFIT_LR_FROM_ENCODER = 2e-2
REFIT_WINDOW = 10
#: Samples per datum for each gradient in the first stage (doubled at each plateau, see LR_DROP).
REFIT_PARTICLES = 8
#: On a plateau the step size drops by this factor, ``lr_drops`` times, before the refit may stop
#: (see the module docstring) ...
LR_DROP = 0.3
#: ... and the particles per datum grow by this factor.
PARTICLE_GROWTH = 2
#: Adam's epsilon against per-datum gradients (the loss is each datum's own negative bound): gradients far
#: below it (float round-off where q is already optimal) make steps far below lr instead of steps of lr.
ADAM_EPS = 1e-4
#: The seed of the common random numbers of the monitored ELBO.
MONITOR_SEED = 20240417
#: The monitored ELBO is estimated after every this many epochs (module docstring).
MONITOR_EVERY = 2


@dataclass
class RefitResult:
    """What a refit did: its epochs, whether its criterion stopped it, and the monitored ELBO after every
    ``monitor_every``-th epoch (and the last), from the start."""

    epochs: int
    converged: bool
    elbo: float                      # the last monitored mean per-datum ELBO (common random numbers)
    seconds: float
    tol: float
    max_epochs: int
    lr: float
    estimator: str
    monitor: List[float] = field(default_factory=list)
    monitor_every: int = MONITOR_EVERY
    window: int = REFIT_WINDOW

    def to_json(self) -> dict:
        return {"epochs": self.epochs, "converged": self.converged, "monitored_elbo": self.elbo,
                "seconds": self.seconds, "tol": self.tol, "max_epochs": self.max_epochs, "lr": self.lr,
                "estimator": self.estimator, "window": self.window, "monitor_every": self.monitor_every}


def _mean(values: List[float]) -> float:
    return sum(values) / len(values)


@dataclass(frozen=True)
class RefitSchedule:
    """How a per-datum refit runs (module docstring): it stops when the monitored mean ELBO improves by less than
    ``tol`` (relative) over ``window`` epochs after ``lr_drops`` drops of the Adam step ``lr`` (each plateau drops it
    by :data:`LR_DROP` and grows the ``particles`` per datum by :data:`PARTICLE_GROWTH`), or at ``max_epochs``; the
    ELBO is monitored with ``monitor_particles`` per datum after every ``monitor_every``-th epoch, which must divide
    ``window``. ``progress``: print the monitored ELBO every 50 epochs."""

    tol: float = REFIT_TOL
    max_epochs: int = REFIT_MAX_EPOCHS
    lr: float = REFIT_LR
    particles: int = REFIT_PARTICLES
    monitor_particles: int = 4
    window: int = REFIT_WINDOW
    lr_drops: int = 2
    monitor_every: int = MONITOR_EVERY
    progress: bool = False


def refit_settings(config, lr: float = REFIT_LR, progress: bool = False) -> RefitSchedule:
    """The refit's schedule from a :class:`~zoo.experiments.config.RunConfig` (its ``--refit-tol`` and
    ``--refit-epochs``, the defaults here where it leaves them out), with the Adam step ``lr``."""
    return RefitSchedule(tol=config.refit_tol or REFIT_TOL, max_epochs=config.refit_epochs or REFIT_MAX_EPOCHS, lr=lr,
                         progress=progress)


def refit_objective(model, guide, particles: int = 1):
    """The gradient estimator for a per-datum refit of ``guide`` (see the module docstring)."""
    if not type(guide).is_reparameterized(model):
        return build_objective("rloo", particles=max(2, particles))
    if getattr(guide, "normal_sites", False) and not any(s.support in MANIFOLDS for s in model.latents):
        return build_objective("stl", particles=particles)    # STL needs Normal sites: not a vMF or wrapped normal
    return build_objective("renyi", alpha=1.0, particles=particles)      # the ELBO (Renyi order 1), per datum


def _chunks(n: int, x_dim: int, particles: int, max_elements: int, device) -> List[torch.Tensor]:
    size = max(1, min(n, max_elements // max(1, particles * x_dim)))
    return list(torch.arange(n, device=device).split(size))


class _Monitor:
    """The per-datum ELBO ``[n]`` from ``particles`` samples drawn from the same random numbers every call (common
    random numbers): the generator state after seeding with :data:`MONITOR_SEED` is kept and restored, inside
    ``fork_rng``, so the caller's stream goes on as if the monitor had not run. Restoring it costs microseconds;
    seeding afresh costs a stack trace each time on a CUDA build of torch (``torch.manual_seed`` queues CUDA's
    seeding with one)."""

    def __init__(self, model, guide, x, chunks, particles: int):
        self.model, self.guide, self.x, self.chunks, self.particles = model, guide, x, chunks, particles
        self.devices = [x.device] if x.device.type == "cuda" else []
        # the states a generator seeded with MONITOR_SEED starts from (those torch.manual_seed gives the global
        # ones), taken from generators of their own: seeding the global ones would also seed every CUDA device
        self.state = torch.Generator().manual_seed(MONITOR_SEED).get_state()
        self.cuda_state = (torch.Generator(device=x.device).manual_seed(MONITOR_SEED).get_state()
                           if self.devices else None)

    @torch.no_grad()
    def __call__(self) -> torch.Tensor:
        with torch.random.fork_rng(devices=self.devices):
            torch.set_rng_state(self.state)
            if self.cuda_state is not None:
                torch.cuda.set_rng_state(self.cuda_state, self.x.device)
            with evaluation_mode(self.model, self.guide):
                n = self.x.shape[0]
                return torch.cat([per_datum_log_weights(self.model, self.guide, self.x[idx], idx=idx, N=n,
                                                        num_particles=self.particles).log_w.mean(0)
                                  for idx in self.chunks])


@contextlib.contextmanager
def model_held_fixed(model, guide):
    """Within the block the model's parameters and the guide's global part q(theta) are fixed (their
    ``requires_grad`` off) and the model is in eval mode; afterwards they are as they were. q(theta) of
    global latents belongs to the training data, like the model's parameters, so a refit holds it too,
    and its point estimate theta_hat is what the local guide is refitted given."""
    held = guide.global_guide if getattr(guide, "global_guide", None) is not None else None
    frozen = [p for p in list(model.parameters()) + list(held.parameters() if held is not None else ())
              if p.requires_grad]
    for p in frozen:
        p.requires_grad_(False)
    was_training = model.training
    model.train(False)
    try:
        yield
    finally:
        for p in frozen:
            p.requires_grad_(True)
        model.train(was_training)


def refit_local_guide(model, guide, x: torch.Tensor, schedule: RefitSchedule = RefitSchedule(), *, seed: int = 0,
                      max_elements: int = 1 << 23) -> RefitResult:
    """Fit the per-datum ``guide`` (one row per datum of ``x``) with ``model`` fixed as ``schedule`` says
    (:class:`RefitSchedule`: until the monitored mean ELBO stops improving by its ``tol`` over its ``window``
    epochs, or its ``max_epochs``), holding at most ``max_elements`` decoder outputs at once.

    ``guide`` may start anywhere (e.g. from an amortized encoder's outputs; a fresh per-datum guide where its
    :meth:`~guides.base.ZooGuide.refit_start` puts it, as the evaluations start it). Returns a :class:`RefitResult`.
    """
    tol, max_epochs, lr, particles = schedule.tol, schedule.max_epochs, schedule.lr, schedule.particles
    monitor_particles, window, lr_drops = schedule.monitor_particles, schedule.window, schedule.lr_drops
    monitor_every = schedule.monitor_every
    if tol <= 0:
        raise ZooError(f"the refit's tolerance must be positive, got {tol}")
    if max_epochs < 1:
        raise ZooError(f"the refit needs at least one epoch, got max_epochs={max_epochs}")
    if monitor_every < 1 or window % monitor_every:
        raise ZooError(f"the refit's monitor_every must be a positive divisor of its window ({window}), "
                       f"got {monitor_every}")
    model.validate_data(x, what="refit data")
    n = x.shape[0]
    objective = refit_objective(model, guide, particles)
    growth = [particles * PARTICLE_GROWTH ** k for k in range(lr_drops + 1)]
    held = guide.global_guide if getattr(guide, "global_guide", None) is not None else None
    chunks = _chunks(n, x.shape[1], max(growth[-1], monitor_particles), max_elements, x.device)
    # the data were validated above and the tables' values are finite by construction: no per-call
    # distribution checks in the loop (they cost more than the step for small models)
    with model_held_fixed(model, guide), pyro.validation_enabled(False), \
            (held.at_point_estimate() if held is not None else contextlib.nullcontext()):
        params = [p for p in guide.parameters() if p.requires_grad]
        if not params:
            raise ZooError(f"the {type(guide).__name__} guide has no parameters to refit")
        optimizer = torch.optim.Adam(params, lr=lr, eps=ADAM_EPS)
        t0 = time.perf_counter()
        pyro.set_rng_seed(seed + 1)
        monitored = _Monitor(model, guide, x, chunks, monitor_particles)
        monitor, points = [monitored().mean().item()], window // monitor_every      # points: estimates per window
        converged, epoch, stage, stage_start = False, 0, 0, 0
        while epoch < max_epochs:
            epoch += 1
            guide.train()
            optimizer.zero_grad(set_to_none=True)
            for idx in chunks:
                # each datum's own bound: the per-row gradient does not depend on the chunk size
                _, surrogate = objective.value_and_surrogate(model, guide, x[idx], idx=idx, N=n)
                (surrogate * (idx.numel() / n)).backward()
            optimizer.step()
            if epoch % monitor_every:
                if epoch == max_epochs:                 # the cap between two estimates: one more, for the result
                    monitor.append(monitored().mean().item())
                continue
            monitor.append(monitored().mean().item())
            if schedule.progress and epoch % 50 == 0:
                print(f"refit epoch {epoch}: monitored ELBO {monitor[-1]:.4f}", flush=True)
            if epoch - stage_start >= 2 * window:
                recent, before = _mean(monitor[-points:]), _mean(monitor[-2 * points:-points])
                if (recent - before) / max(abs(before), 1.0) < tol:
                    if stage == lr_drops:
                        converged = True
                        break
                    # a plateau: Adam hovers about the optimum at a distance set by its step size and the
                    # gradient's signal-to-noise ratio; a smaller step and more particles per datum shrink it
                    stage, stage_start = stage + 1, epoch
                    objective = refit_objective(model, guide, growth[stage])
                    for group in optimizer.param_groups:
                        group["lr"] *= LR_DROP
    return RefitResult(epochs=epoch, converged=converged, elbo=monitor[-1],
                       seconds=time.perf_counter() - t0, tol=tol, max_epochs=max_epochs, lr=lr,
                       estimator=type(objective).__name__, monitor=monitor, monitor_every=monitor_every,
                       window=window)
