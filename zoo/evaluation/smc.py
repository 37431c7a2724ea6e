"""Sequential Monte Carlo (SMC) with adaptive tempering: log p(x) for any zoo model, with a standard error from
independent replicas.

For each datum x, N particles are carried through the same geometric bridge as AIS's (:mod:`zoo.evaluation.ais`)::

    f_beta(z) = pi_0(z) [p(x, z) / pi_0(z)]^beta = pi_0(z) exp(beta g(z)),      g(z) = log p(x, z) - log pi_0(z)

but the temperatures are not fixed in advance, and the particles are reweighted, resampled and moved as a
population (Del Moral, Doucet and Jasra 2006). With normalized weights W_i (sum_i W_i = 1), one step from beta to
beta' = beta + delta is::

    w_i = exp(delta g(z_i))                                        incremental weights (z_i ~ f_beta, weighted)
    log Z_beta' / Z_beta  ~=  log sum_i W_i w_i                    this step's factor of the normalizer
    W_i <- W_i w_i / sum_j W_j w_j
    resample (systematic) where ESS = 1 / sum_i W_i^2 < resample_threshold N, then W_i = 1 / N
    z_i <- K_beta'(. | z_i)                                        ``num_moves`` moves that leave f_beta' invariant

    log p^(x) = sum over steps of log sum_i W_i w_i                (Z_0 = 1: pi_0 is normalized)

**The adaptive schedule** (Zhou, Johansen and Aston 2016; blackjax's ``adaptive_tempered_smc``): delta is the
largest step whose conditional ESS, CESS(delta) = (sum_i W_i w_i)^2 / sum_i W_i w_i^2 (a fraction of 1: 1 when
the incremental weights are equal), is at least ``target_ess``, found by bisection on [0, 1 - beta]; the last step
goes to beta = 1 as soon as CESS(1 - beta) >= ``target_ess``. CESS decreases as delta grows, so the bisection
finds the one crossing. Every datum has its own schedule: ``beta`` is a vector over the minibatch, the bisection runs
on all data at once, and the loop ends when every datum has reached beta = 1; the data that have keep moving at
beta = 1 (their estimate is final) until the last one arrives.

**The moves** are AIS's kernels, run at each datum's own beta: HMC of the real sites in the coordinates AIS moves
them in (the guide's transport map on the guide's path, :func:`zoo.evaluation.ais._hmc`), Metropolis-Hastings with
the guide as independent proposal of the discrete sites and Gibbs updates of the small ones. The HMC step size of
each datum adapts to the population: after each move, log eps += (acceptance - ``target_accept``), the acceptance
averaged over the datum's particles. A kernel chosen from the particles of the step before (its step size and its
beta) still leaves its f_beta invariant given them, so the estimate is consistent as N grows; like every adaptive
SMC it is no longer exactly unbiased at a finite N (the bias is O(1/N), against the O(1/sqrt N) noise).

**Where SMC differs from AIS.** AIS's C chains never interact, so where the posterior's mass shifts between
regions along the path (a second mode that the guide barely covers, whose share of f_beta grows from ~0 to a
half), the few chains that reached it carry the estimate through enormous weights, and with C = 16 chains the
usual run has none there: the estimate misses that mass and its SE, read from the same chains, does not say so.
Resampling copies the particles where f_beta's mass grows as it grows, and the adaptive steps spend the
temperatures where the weights change, so the same budget of gradient evaluations goes into far more particles
(``tests/test_smc.py`` shows SMC recovering such a mode where AIS from the same guide is more than 3 SE off).
SMC cannot find a mode that pi_0 and the moves never reach: a particle must get there first. Nor does it with large
steps: the particles in pi_0's tail that would reach the second mode sit between the modes, where g is low, and a
big step's resampling discards them before a move carries them on. Small steps (``target_ess`` near 1: 0.98 in the
test, about 16 temperatures) reweight them gently while the moves work. On the test's two-mode data (256 particles x
8 replicas, 3 seeds) the average error is -0.05 to +0.01 nats at 0.98, -0.01 to -0.05 at 0.9 and -0.11 to -0.17 at
the default 0.5 (about 3 temperatures), against AIS's -0.27 (T = 400, 16 chains); raise ``target_ess`` where modes
are the worry. Over 5 seeds (``benchmarks/smc_exact.py``), SMC at 0.98 covers 93 % of the 40 data's exact values with
+- 1.96 SE, where AIS at T = 400 covers 42 % with 16 chains and 75 % with 64 (about SMC's gradient evaluations,
136,000 against 161,000 per datum; AIS in ten times SMC's time, its temperatures one tensor program each).

**The standard error** comes from R = ``num_replicas`` independent runs of the whole algorithm per datum (own
random streams, own schedules, own step sizes): the replica estimates Z^_r are i.i.d., so, with
``log_mean_exp_and_se`` (:func:`zoo.evaluation.ais.log_mean_exp_and_se`) over r::

    log p^(x) = log (1/R) sum_r Z^_r,      SE = sd_r(Z^_r) / (sqrt(R) mean_r Z^_r)      (sd with R - 1: the delta method)

The replicas are copies of the minibatch's data in one tensor program, so they cost no Python loop. The SE counts
every source of noise (resampling, the random schedule, the moves) because replicas repeat all of it; one run's own
particles would not give it (they are dependent after resampling; Lee and Whiteley 2018 give a one-run estimator).
It is an estimate from R numbers, so at R = 4 it is itself uncertain by about 40 %; where the Z^_r are heavy-tailed
(a mode that only some replicas find) it understates the error, and ``se_reliable`` says so where the largest
replica's Z^_r carries more than :data:`MAX_REPLICA_SHARE` of their sum. ``benchmarks/smc_exact.py`` measures how often
the estimate +- 1.96 SE covers exact values (1,000 intervals each, 64 particles): 0.86 on pPCA from an untrained guide
and 0.85 on a Poisson model from the prior at R = 4; 0.89 and 0.90 at R = 8. The SE is estimated from R numbers, so
Student's t quantile at R - 1 degrees of freedom (3.18 at R = 4, 2.36 at R = 8) is the honest multiplier: it covers
0.94 to 0.96 on both.

What it assumes: the moves mix within f_beta over the region the particles are in (check ``acceptance``); pi_0 puts
particles wherever the posterior has mass, or the moves carry them there. Wrong answers come from modes that no
particle reaches (the estimate is then too low in every replica alike, and the SE does not see it: runs from other
starts, :func:`zoo.evaluation.replicas.replicated_smc`, and their agreement test see it), and from
``max_steps`` reached before beta = 1 (the last step then jumps to 1 at any CESS, and the datum's ``forced`` flag
says so).

Global latents are held at the guide's point estimate theta_hat, as AIS holds them; ``poutine.mask`` and
``poutine.scale`` count as in Pyro's ELBOs.

References: P. Del Moral, A. Doucet and A. Jasra, "Sequential Monte Carlo samplers", JRSS B 68, 2006,
https://arxiv.org/abs/cond-mat/0212648. Y. Zhou, A. M. Johansen and J. A. D. Aston, "Toward automatic model
comparison: an adaptive sequential Monte Carlo approach", JCGS 25, 2016, https://arxiv.org/abs/1303.3123.
A. Lee and N. Whiteley, "Variance estimation in the particle filter", Biometrika 105, 2018,
https://arxiv.org/abs/1509.00394. N. Chopin and O. Papaspiliopoulos, "An Introduction to Sequential Monte Carlo",
Springer 2020 (systematic resampling, ch. 9).

Example::

    >>> import torch, zoo
    >>> from zoo.evaluation.smc import SequentialMonteCarlo
    >>> model = zoo.build_model("ppca", 4, latent_dim=2)
    >>> guide = zoo.build_guide("amortized", model, hidden=(8,))
    >>> result = SequentialMonteCarlo(num_particles=16, num_replicas=2).estimate(model, guide, torch.randn(3, 4))
    >>> result.log_likelihood.shape, result.replicas.shape
    (torch.Size([3]), torch.Size([2, 3]))
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Dict, Optional

import pyro
import torch

from zoo.core.errors import ZooError
from zoo.core.latents import MANIFOLDS
from zoo.usercode.errors import user_code_errors
from zoo.core.modes import held_fixed
from zoo.core.process import map_torch_constants
from zoo.evaluation.ais import (GIBBS_MAX_STATES, PATHS, PRECONDITIONERS, _broadcast, _Chains, _gibbs, _hmc,
                                _independent_mh, local_mh, _Point, annealing_start, log_mean_exp_and_se)
from zoo.rules import check_annealing

__all__ = ["SequentialMonteCarlo", "SMCResult", "conditional_ess", "next_temperatures", "systematic_resample",
           "MAX_REPLICA_SHARE", "FIELDS"]

#: where one replica's Z^_r is more than this share of the R replicas' sum, the SE (from R numbers) is not a precision
MAX_REPLICA_SHARE = 0.5
#: bisection steps of the next temperature: the step is found to within 2^-40 of 1 - beta
BISECTION_STEPS = 40
#: the per-datum figures of a minibatch (:meth:`SequentialMonteCarlo.minibatch`)
FIELDS = ("log_likelihood", "se", "replicas", "steps", "resamples", "acceptance", "forced")


def conditional_ess(log_W: torch.Tensor, log_increment: torch.Tensor) -> torch.Tensor:
    """CESS = (sum_i W_i w_i)^2 / sum_i W_i w_i^2 over dim 0, a fraction in (0, 1], from normalized log-weights
    ``log_W`` and incremental log-weights ``log_increment`` ``[N, B]`` (Zhou et al. 2016)."""
    a = torch.logsumexp(log_W + log_increment, 0)
    b = torch.logsumexp(log_W + 2 * log_increment, 0)
    return torch.exp(2 * a - b).nan_to_num(nan=0.0)


def next_temperatures(beta: torch.Tensor, log_W: torch.Tensor, g: torch.Tensor, target_ess: float,
                      steps: int = BISECTION_STEPS) -> torch.Tensor:
    """Each datum's next inverse temperature ``[B]``: beta + delta with CESS(delta g) = ``target_ess`` by bisection
    (module docstring), or 1 where CESS(1 - beta) is at least ``target_ess``. ``g`` ``[N, B]`` may hold -inf (a
    particle outside the model's support) but not NaN."""
    room = 1.0 - beta
    whole = conditional_ess(log_W, room * g) >= target_ess
    lo, hi = torch.zeros_like(beta), room.clone()
    for _ in range(steps):
        mid = 0.5 * (lo + hi)
        ok = conditional_ess(log_W, mid * g) >= target_ess
        lo, hi = torch.where(ok, mid, lo), torch.where(ok, hi, mid)
    # lo keeps CESS >= target; a step of 0 (g all -inf but one) would never end, so take at least hi's
    delta = torch.where(lo > 0, lo, hi)
    return torch.where(whole | (room <= 0), torch.ones_like(beta), (beta + delta).clamp(max=1.0))


def systematic_resample(log_W: torch.Tensor) -> torch.Tensor:
    """Ancestor indices ``[N, B]`` of systematic resampling of each column of normalized log-weights ``log_W``:
    one uniform per datum, particle i drawn floor(N W_i) or ceil(N W_i) times (Chopin and Papaspiliopoulos ch. 9)."""
    N, B = log_W.shape
    cumulative = torch.cumsum(log_W.exp(), 0).T.contiguous()                  # [B, N]
    cumulative = cumulative / cumulative[:, -1:]
    u = (torch.rand(B, 1, dtype=cumulative.dtype, device=log_W.device)
         + torch.arange(N, dtype=cumulative.dtype, device=log_W.device)) / N
    return torch.searchsorted(cumulative, u).clamp(max=N - 1).T


class _TemperedPoint(_Point):
    """AIS's state of the chains with one inverse temperature per datum: ``beta`` ``[B]``, broadcast over the
    particles and each site's event dimensions."""

    def log_f(self, beta) -> torch.Tensor:
        f = self.base + beta.to(self.g.dtype) * self.g
        return f.masked_fill(~torch.isfinite(f), -math.inf)

    def grad(self, beta):
        return [gb + _broadcast(beta.to(gb.dtype), gb[0]) * gg for gb, gg in zip(self.grad_base, self.grad_g)]

    @classmethod
    def of(cls, point: _Point) -> "_TemperedPoint":
        return point if isinstance(point, cls) else cls(**vars(point))

    def take(self, ancestors: torch.Tensor) -> "_TemperedPoint":
        """The particles ``ancestors`` ``[N, B]`` name, datum by datum."""
        columns = torch.arange(ancestors.shape[1], device=ancestors.device).expand_as(ancestors)

        def pick(t):
            return t[ancestors.to(t.device), columns.to(t.device)]
        return _TemperedPoint({k: pick(v) for k, v in self.values.items()}, [pick(u) for u in self.u],
                              pick(self.base), pick(self.g), [pick(t) for t in self.grad_base],
                              [pick(t) for t in self.grad_g])


class _TemperedChains(_Chains):
    """AIS's chains whose points carry one temperature per datum (:class:`_TemperedPoint`)."""

    def point(self, values, u=None) -> _TemperedPoint:
        return _TemperedPoint.of(super().point(values, u))


def _nanmean(t: torch.Tensor) -> Optional[float]:
    finite = t[~torch.isnan(t)]
    return finite.mean().item() if finite.numel() else None


@dataclass
class SMCResult:
    """What :meth:`SequentialMonteCarlo.estimate` returns: per-datum ``[n]`` tensors (float64), and the R replicas'
    own estimates ``[R, n]``."""

    log_likelihood: torch.Tensor
    log_likelihood_se: torch.Tensor
    replicas: torch.Tensor                      # log Z^_r per replica and datum
    steps: torch.Tensor                         # per datum, the temperatures of its schedule, mean over replicas
    resamples: torch.Tensor                     # per datum, how many steps resampled, mean over replicas
    acceptance: torch.Tensor                    # per datum, the HMC moves' mean acceptance (NaN: no HMC move)
    forced: torch.Tensor                        # per datum, whether a replica reached max_steps before beta = 1
    settings: Dict = field(default_factory=dict)

    @property
    def se_reliable(self) -> torch.Tensor:
        """Per datum: no replica's Z^_r is more than :data:`MAX_REPLICA_SHARE` of their sum, and none was forced."""
        share = torch.exp(self.replicas.max(0).values - torch.logsumexp(self.replicas, 0))
        return (share <= MAX_REPLICA_SHARE) & ~self.forced

    def summary(self) -> Dict:
        """The figures of the data set, in nats per datum (for results files)."""
        n = self.log_likelihood.shape[0]
        reliable = self.se_reliable
        out = {"estimator": "smc", **self.settings, "num_data": n,
               "log_likelihood": self.log_likelihood.mean().item(),
               "log_likelihood_se": (self.log_likelihood_se.pow(2).sum().sqrt() / n).item(),
               "log_likelihood_data_se": (self.log_likelihood.std() / math.sqrt(n)).item() if n > 1 else None,
               "nll": -self.log_likelihood.mean().item(),
               "steps_mean": self.steps.mean().item(), "steps_max": self.steps.max().item(),
               "resamples_mean": self.resamples.mean().item(),
               "acceptance_mean": _nanmean(self.acceptance),
               "frac_forced": self.forced.double().mean().item(),
               "frac_se_unreliable": 1.0 - reliable.double().mean().item()}
        if not bool(reliable.all()):
            out["se_warning"] = (f"{1 - reliable.double().mean().item():.1%} of data have one replica carrying more "
                                 f"than {MAX_REPLICA_SHARE:.0%} of the estimate, or reached max_steps: their standard "
                                 f"error is not a precision; run more particles (--smc-particles) or copies (--smc-replicas)")
        return out

    def per_datum(self) -> Dict[str, torch.Tensor]:
        return {"log_likelihood": self.log_likelihood, "log_likelihood_se": self.log_likelihood_se,
                "replicas": self.replicas, "steps": self.steps, "resamples": self.resamples,
                "acceptance": self.acceptance, "forced": self.forced, "se_reliable": self.se_reliable}


@dataclass
class SequentialMonteCarlo:
    """SMC with adaptive tempering over the latents of any zoo model (module docstring: the algorithm, what it
    assumes, and its measured coverage).

    .. warning:: The SE is the spread of R whole runs: it sees every source of noise, but not a mode that no
        replica's particles reach, where every replica is low alike. Raise ``target_ess`` toward 1 where the
        posterior may have modes the start barely covers.

    References: Del Moral, Doucet and Jasra 2006, https://arxiv.org/abs/cond-mat/0212648; Zhou, Johansen and
    Aston 2016, https://arxiv.org/abs/1303.3123.

    Arguments:
        num_particles: N, particles per datum and replica.
        num_replicas: R, independent runs of the whole SMC per datum; the standard error comes from their spread
            (at least 2).
        target_ess: the conditional ESS (a fraction of N) each step's temperature is chosen to keep.
        resample_threshold: resample a datum's particles where their ESS falls below this fraction of N.
        num_moves: MCMC moves (each: the discrete sites' MH and Gibbs updates, then one HMC transition) per step.
        path: ``"guide"`` (pi_0 = q(z | x)) or ``"prior"`` (pi_0 = p(z)).
        leapfrog_steps: L, leapfrog steps per HMC transition, and rounds of local Metropolis moves per move of a
            discrete site too large for Gibbs (:func:`zoo.evaluation.ais.local_mh`; ``local_moves=False``: none).
        target_accept: the acceptance rate each datum's step size adapts toward.
        initial_step_size: every datum's first step size.
        max_steps: the most temperatures a datum may take; the one after jumps to beta = 1 (flagged ``forced``).
        batch_size: data per tensor program (each holds ``batch_size x num_replicas x num_particles`` states).
        gibbs_max_states: discrete sites of at most this many values per datum also take a Gibbs update.
        precondition: the coordinates the real sites move in on the guide's path, as AIS's
            (:class:`~zoo.evaluation.ais.AnnealedImportanceSampling`).

    Example::

        >>> import pyro, zoo
        >>> from zoo import exact_models as E
        >>> model, x = zoo.from_pyro(E.poisson_1d, 4), E.poisson_1d_data(5)
        >>> guide = zoo.build_guide("amortized", model)    # the prior's path reads only its global latents: none here
        >>> pyro.set_rng_seed(0)
        >>> result = SequentialMonteCarlo(num_particles=32, path="prior").estimate(model, guide, x)
        >>> bool(((result.log_likelihood - E.poisson_1d_log_marginal(x)).abs() < 5 * result.log_likelihood_se + 0.05).all())
        True
    """

    num_particles: int = 64
    num_replicas: int = 4
    target_ess: float = 0.5
    resample_threshold: float = 0.5
    num_moves: int = 2
    path: str = "guide"
    leapfrog_steps: int = 5
    target_accept: float = 0.65
    initial_step_size: float = 0.25
    max_steps: int = 1000
    batch_size: int = 100
    gibbs_max_states: int = GIBBS_MAX_STATES
    precondition: str = "transport"
    local_moves: bool = True

    def __post_init__(self):
        if not isinstance(self.local_moves, bool):
            raise ZooError(f"SMC local_moves must be True or False, got {self.local_moves!r}")
        for name in ("num_particles", "num_moves", "leapfrog_steps", "max_steps", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ZooError(f"SMC {name} must be a whole number >= 1, got {value!r}")
        from zoo.evaluation.replicas import check_replicas
        check_replicas(self.num_replicas, "SMC num_replicas", 2, " (the standard error is their spread)")
        if isinstance(self.gibbs_max_states, bool) or not isinstance(self.gibbs_max_states, int) \
                or self.gibbs_max_states < 0:
            raise ZooError(f"SMC gibbs_max_states must be a whole number >= 0, got {self.gibbs_max_states!r}")
        for name in ("target_ess", "resample_threshold", "target_accept"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 < float(value) < 1.0:
                raise ZooError(f"SMC {name} must lie in (0, 1), got {value!r}")
        if not isinstance(self.initial_step_size, (int, float)) or isinstance(self.initial_step_size, bool) \
                or not math.isfinite(float(self.initial_step_size)) or not float(self.initial_step_size) > 0.0:
            raise ZooError(f"SMC initial_step_size must be a positive number, got {self.initial_step_size!r}")
        if self.path not in PATHS:
            raise ZooError(f"SMC path must be one of {', '.join(PATHS)}, got {self.path!r}")
        if isinstance(self.precondition, bool):
            self.precondition = "transport" if self.precondition else "none"
        if self.precondition not in PRECONDITIONERS:
            raise ZooError(f"SMC precondition must be one of {', '.join(PRECONDITIONERS)}, got {self.precondition!r}")

    def settings(self) -> Dict:
        return {"num_particles": self.num_particles, "num_replicas": self.num_replicas, "target_ess": self.target_ess,
                "resample_threshold": self.resample_threshold, "num_moves": self.num_moves, "path": self.path,
                "leapfrog_steps": self.leapfrog_steps, "target_accept": self.target_accept,
                "initial_step_size": self.initial_step_size, "max_steps": self.max_steps,
                "gibbs_max_states": self.gibbs_max_states,
                "precondition": self.precondition if self.path == "guide" else "none", "local_moves": self.local_moves}

    # --- one population of particles per datum ------------------------------------------------------------
    def _move(self, chains: _TemperedChains, point: _TemperedPoint, beta: torch.Tensor, eps: torch.Tensor):
        """``num_moves`` moves at each datum's ``beta``; returns (the point, the step sizes adapted, the HMC moves'
        acceptance summed over moves ``[B]``)."""
        accepted = torch.zeros_like(eps)
        for _ in range(self.num_moves):
            if chains.discrete:
                values, _ = _independent_mh(chains, point.values, beta)
                for site in chains.gibbs:
                    values, _ = _gibbs(chains, values, beta, site)
                if chains.proposed and self.local_moves:    # sites too large for Gibbs: AIS's local moves
                    values, _ = local_mh(chains, values, beta, chains.proposed, self.leapfrog_steps)
                point = chains.point(values)
            if chains.real:
                moved, a = _hmc(chains, point, beta, eps.to(chains.x.device), self.leapfrog_steps)
                point = _TemperedPoint.of(moved)
                rate = a.double().mean(0).cpu()
                accepted = accepted + rate
                eps = eps * torch.exp(rate - self.target_accept)
        return point, eps, accepted

    def populations(self, chains: _TemperedChains) -> Dict[str, torch.Tensor]:
        """Run SMC on every datum of ``chains`` (each a replica's copy): per datum ``[B]``, log Z^, the number of
        temperatures, of resamplings, the HMC moves' mean acceptance, and whether ``max_steps`` forced the last."""
        B, N = chains.x.shape[0], chains.C
        device = chains.x.device
        point = chains.point(chains.draw_initial())
        beta = torch.zeros(B, dtype=torch.float64, device=device)
        log_W = torch.full((N, B), -math.log(N), dtype=torch.float64, device=device)
        log_Z = torch.zeros(B, dtype=torch.float64, device=device)
        steps, resamples = torch.zeros(B, dtype=torch.float64), torch.zeros(B, dtype=torch.float64)
        accepted, moved = torch.zeros(B, dtype=torch.float64), torch.zeros(B, dtype=torch.float64)
        forced = torch.zeros(B, dtype=torch.bool)
        eps = torch.full((B,), float(self.initial_step_size), dtype=torch.float64)
        while bool((beta < 1).any()):
            g = torch.nan_to_num(point.g.double(), nan=-math.inf)
            running = (beta < 1).cpu()
            last = (steps >= self.max_steps - 1).to(device) & (beta < 1)
            new_beta = torch.where(last, torch.ones_like(beta), next_temperatures(beta, log_W, g, self.target_ess))
            log_increment = (new_beta - beta) * g
            log_increment = torch.where((new_beta > beta).unsqueeze(0), log_increment, torch.zeros_like(log_increment))
            log_Z = log_Z + torch.logsumexp(log_W + log_increment, 0)
            log_W = log_W + log_increment
            log_W = log_W - torch.logsumexp(log_W, 0)
            forced |= last.cpu()
            steps += running.double()
            beta = new_beta
            ess = torch.exp(-torch.logsumexp(2 * log_W, 0))
            resample = (ess < self.resample_threshold * N) & running.to(device)
            if bool(resample.any()):
                keep = torch.arange(N, device=device).unsqueeze(1).expand(N, B)
                ancestors = torch.where(resample.unsqueeze(0), systematic_resample(log_W), keep)
                point = point.take(ancestors)
                log_W = torch.where(resample.unsqueeze(0), torch.full_like(log_W, -math.log(N)), log_W)
                resamples += resample.cpu().double()
            below = (beta < 1).cpu()
            if bool(below.any()):
                point, eps, a = self._move(chains, point, beta, eps)
                accepted, moved = accepted + a * below.double(), moved + self.num_moves * below.double()
        # NaN: no HMC move (no real site, or a single step from pi_0 to the posterior)
        acceptance = (accepted / moved if chains.real else torch.full((B,), math.nan, dtype=torch.float64))
        return {"log_Z": log_Z.cpu(), "steps": steps, "resamples": resamples, "acceptance": acceptance,
                "forced": forced}

    # --- the data ---------------------------------------------------------------------------------------------
    def minibatch(self, model, guide, x: torch.Tensor, idx: torch.Tensor, N: int) -> Dict[str, torch.Tensor]:
        """The figures of one minibatch ``x[idx]`` (CPU tensors, :data:`FIELDS`): per datum ``log_likelihood``,
        ``se``, ``steps``, ``resamples``, ``acceptance``, ``forced``; ``replicas`` ``[R, B]``. The R replicas are R
        copies of the minibatch in one tensor program, each with its own particles, schedule and step sizes."""
        R, B = self.num_replicas, idx.shape[0]
        copies = idx.repeat(R)
        chains = _TemperedChains(model, guide, x[copies], copies, N, self.num_particles, self.path,
                                 self.gibbs_max_states, self.precondition)
        run = self.populations(chains)
        replicas = run["log_Z"].reshape(R, B)
        ll, se, _ = log_mean_exp_and_se(replicas)

        def mean(key):
            return run[key].reshape(R, B).double().nanmean(0)
        return {"log_likelihood": ll, "se": se, "replicas": replicas, "steps": mean("steps"),
                "resamples": mean("resamples"), "acceptance": mean("acceptance"),
                "forced": run["forced"].reshape(R, B).any(0)}

    def estimate(self, model, guide, x: torch.Tensor, progress: Optional[Callable[[int], None]] = None, *,
                 seed: Optional[int] = None, done: Optional[Dict[int, Dict[str, torch.Tensor]]] = None,
                 on_batch: Optional[Callable[[int, Dict[str, torch.Tensor]], None]] = None) -> SMCResult:
        """log p(x_n) per datum of ``x`` ``[n, D]`` (module docstring). ``progress(done)`` is called after each
        minibatch. With ``seed`` each minibatch draws from a seed of its own (``seed`` + its first index), so that
        ``done`` ({first index: figures}, as ``on_batch(first index, figures)`` got them) resumes a stopped run
        with the figures of a run without a stop, as AIS's :meth:`~zoo.evaluation.ais.AnnealedImportanceSampling.estimate`."""
        from guides.user import as_zoo_guide
        if x.shape[0] == 0:
            raise ZooError("SMC got no data to evaluate")
        guide = as_zoo_guide(guide, model)
        check_annealing(model, "SMC", guide, self.path)
        map_torch_constants()
        guide, start = annealing_start(guide, self.path)
        global_guide = getattr(guide, "global_guide", None)
        with held_fixed(model, guide), torch.no_grad(), user_code_errors(model.display_name, "in SMC"):
            if global_guide is None:
                result = self._estimate(model, guide, x, progress, seed, done or {}, on_batch)
            else:
                with global_guide.at_point_estimate():
                    result = self._estimate(model, guide, x, progress, seed, done or {}, on_batch)
        result.settings["start"] = start
        return result

    def _estimate(self, model, guide, x, progress, seed, done, on_batch) -> SMCResult:
        n = x.shape[0]
        batches = []
        for start in range(0, n, self.batch_size):
            idx = torch.arange(start, min(start + self.batch_size, n), device=x.device)
            figures = done.get(start)
            if figures is None:
                if seed is not None:
                    pyro.set_rng_seed(seed + start)
                figures = self.minibatch(model, guide, x, idx, n)
                if on_batch is not None:
                    on_batch(start, figures)
            batches.append(figures)
            if progress is not None:
                progress(int(idx[-1]) + 1)

        def joined(key, dim=0):
            return torch.cat([b[key] for b in batches], dim)
        real = any(s.support == "real" or s.support in MANIFOLDS for s in model.latents)
        return SMCResult(joined("log_likelihood"), joined("se"), joined("replicas", 1), joined("steps"),
                         joined("resamples"), joined("acceptance"), joined("forced").bool(),
                         {**self.settings(), "moves_real_sites": real})
