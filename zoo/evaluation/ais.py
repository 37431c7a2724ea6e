"""Annealed importance sampling (AIS): log p(x) for any zoo model, checked by its own chains.

For each datum x, C independent chains carry a latent state z through T + 1 distributions that bridge
an initial distribution pi_0 and the posterior p(z | x) geometrically (Neal 2001)::

    f_t(z) = pi_0(z) [p(x, z) / pi_0(z)]^(beta_t),      0 = beta_0 < beta_1 < ... < beta_T = 1
    z_0 ~ pi_0,     z_t ~ K_t(. | z_{t-1}),   K_t leaving f_t invariant
    log w = sum_{t=1..T} (beta_t - beta_{t-1}) g(z_{t-1}),        g(z) = log p(x, z) - log pi_0(z)
    log p^(x) = log (1/C) sum_c w_c

E[w] = p(x) exactly, whatever the kernels, as long as they are fixed before the chains run, so log p^(x)
is a stochastic lower bound on log p(x), like importance sampling (which is AIS with T = 1). Unlike
importance sampling its variance does not grow with the mismatch between pi_0 and the posterior: it falls
as T grows, and the gap left is what bidirectional Monte Carlo measures (:mod:`zoo.evaluation.bdmc`).

- ``path="guide"`` (default): pi_0 = q(z | x), the trained guide, so g is the importance weight log w of
  :mod:`zoo.core.weights`; ``path="prior"``: pi_0 = p(z), g = log p(x | z) (Wu et al. 2017).
- The schedule is Wu et al.'s sigmoid: beta_t = (s(t) - s(0)) / (s(T) - s(0)), s(t) = sigmoid(delta (2t/T - 1)),
  delta = 4, which spends more temperatures near both ends where f_t changes fastest.
- **Real latents** move by Hamiltonian Monte Carlo in the unconstrained space (``biject_to`` of the site's
  constraint, its log-Jacobian added to f_t): ``leapfrog_steps`` L steps with identity mass and a step size
  eps_{t,n} per temperature and datum. On the guide's path the chains move in the **guide's own reparameterization**
  (``precondition="transport"``, the default; the transport-map HMC of NeuTra, Hoffman et al. 2019): each site whose
  guide distribution is a Normal (reinterpreted with ``to_event``, or pushed through bijections, as a LogNormal or an
  IAF is) is written z_s = T_s(u_s; x, z_<s) = t(mu_s + sigma_s u_s), with mu_s, sigma_s and t the guide's at the
  values of the sites it drew before (the ladder guide's top-down pass, a structured guide's parents). The map is
  triangular, so log|det dz/du| = sum_s log|det dT_s/du_s| and log q(z | x) + log|det dz/du| = log N(u; 0, I):
  f_0 is a standard normal in u, and where the guide is close to the posterior, so is f_1, whatever the coupling
  between the sites. The map depends on x alone (the guide is fixed before the chains run), so every kernel still
  leaves its f_t invariant. Each gradient evaluation runs the guide forward and backward; scoring a state needs
  the guide's log q anyway. A site the map does not cover (another family, a guide without such a distribution)
  moves in the whitened coordinates of ``precondition="diagonal"``: z = mu(x) + sigma(x) u, with mu and sigma
  the guide's per-datum mean and scale, a diagonal mass matrix fixed per datum (its Jacobian constant, so it
  cancels); a constrained one on ``biject_to`` of its constraint. The map depends on x, and on the values of the
  discrete and charted sites the guide conditions on, never on the transported sites' own chains. On the ladder hvae of ``benchmarks/results`` the diagonal left the pilot's step size below 0.01 and
  the chains barely moving (BDMC's gap above 10 nats); ``ais_ladder_transport_*`` measures the transport map there.
  ``"none"``: identity mass in the site's own coordinates.
  The step sizes come from a **separate pilot run** (``pilot_chains`` chains over the same schedule, adapting log eps by (acceptance - ``target_accept``) after each
  temperature) and are **frozen** during the measured run: a kernel that adapted to the measured chains'
  own states would no longer leave f_t invariant, and E[w] = p(x) would not hold. log f_beta = b + beta g with
  b = log pi_0 + the log-Jacobian, so a state's value and gradient at *any* temperature follow from (b, g) and
  their two gradients (:class:`_Point`): the state a transition ends in starts the next one, at the next beta,
  without a new evaluation, and the weight's g(z_{t-1}) is that state's. A temperature so costs the L gradient
  evaluations of its leapfrog steps, not L + 2 (``benchmarks/eval_throughput.py`` measures it).
- **Latents on the sphere or in hyperbolic space** move by the same HMC in a chart of R^k
  (:meth:`~zoo.core.latents.LatentFamily.chart`): the stereographic projection of S^(d-1), its pole opposite the
  guide's mean direction for each datum, and geodesic polar coordinates at the origin of H^d, each with the
  log-Jacobian of the manifold's volume added to f_t, as a constrained real site's is.
- **Discrete latents** move by **Metropolis-Hastings with the guide as an independent proposal** of the whole
  discrete state (z' ~ q(z | x), accepted with probability min(1, f_t(z') q(z) / (f_t(z) q(z')))), which leaves
  f_t invariant for any q. A site with few values per datum (at most ``gibbs_max_states``: an HMM's state, a
  label, a handful of bits) then takes a **Gibbs** update: every value of the site is scored under f_t given the
  rest of the state and one is drawn in proportion, which also leaves f_t invariant and moves the chains where a
  proposal of the whole state is rarely accepted (a posterior that couples the sites). A larger site (a sigmoid
  belief net's 200 bits) takes instead L rounds of **local Metropolis moves**: one bit flipped, or one categorical
  variable given a uniformly drawn class, accepted with probability min(1, f_t(z') / f_t(z)) (the proposal is
  symmetric), which walk the chains toward the posterior where every proposal of the guide is refused. A model
  with both kinds takes the MH step, the Gibbs sweep or the local moves, then the HMC step at each temperature.
- **Guide moves** (``guide_moves=True``, ``pyro-zoo eval --ais-guide-moves``): a model whose latents are all real
  takes the same independent MH step before its HMC step, with the defensive mixture (1 - a) q(z | x) + a p(z),
  a = :data:`GUIDE_MOVE_DEFENSIVE`, as proposal. HMC's moves are local: a chain that starts in a part of the
  space the posterior barely weighs (a mode the guide misses, on the guide's path; a far component of a mixture
  prior such as the VampPrior, on the prior's) cannot cross to where the posterior's mass is once the likelihood's
  weight has raised the barrier, and its weight is lost. A proposal from q alone does not free it either: where q
  has lighter tails than f_t, f_t / q is largest exactly there, and every proposal is refused; with the prior in
  the mixture, f_t / m <= p(x | z)^beta / a, and the chain jumps. On a 25-component mixture prior, AIS from the
  prior goes from 2.3 nats below the closed form to within its SE, and on the two-mode model from the guide that
  misses a mode, from 46 % to 3 % of data beyond 3 SE (``tests/test_ais.py``, ``tests/test_smc.py``).
- **Global latents** theta are held at the guide's point estimate theta_hat, as the rest of the harness holds
  them (:func:`zoo.evaluation.harness.evaluate`): the estimate is then of log p(x_n | theta_hat).
- ``poutine.mask`` and ``poutine.scale`` count as in Pyro's ELBOs (:func:`zoo.core.weights.per_datum_log_weights`).

Per datum it reports log p^(x), the delta-method standard error over the C chains,
sqrt((mean w^2 / (mean w)^2 - 1) / C), the effective sample size (sum w)^2 / sum w^2 of the final weights,
and the mean acceptance rate of its chains; what its chains' moves say of their mixing (the HMC steps' mean
acceptance, the share of transitions at beta >= 1/2 that changed a chain's discrete state, and how many distinct
discrete states the chains end in: :mod:`zoo.evaluation.replicas` reads them); per temperature, the acceptance
rate over all data and chains and the pilot's step size. The whole batch of data and chains is one tensor program (no Python loop
over data). The standard error is a precision only where the final weights are not heavy-tailed: where
the ESS is below :data:`MIN_ESS_FRACTION` of the chains or below :data:`MIN_ESS`, the result says the SE is not one
(``se_reliable``), and more temperatures are the remedy.

References: R. M. Neal, "Annealed importance sampling", Statistics and Computing 11, 2001.
M. Hoffman, P. Sountsov, J. V. Dillon, I. Langmore, D. Tran and S. Vasudevan, "NeuTra-lizing bad geometry in
Hamiltonian Monte Carlo using neural transport", 2019, https://arxiv.org/abs/1903.03704.
Y. Wu, Y. Burda, R. Salakhutdinov and R. Grosse, "On the quantitative analysis of decoder-based generative
models", ICLR 2017, https://arxiv.org/abs/1611.04273.

Example::

    >>> import torch, zoo
    >>> from zoo.evaluation.ais import AnnealedImportanceSampling
    >>> model = zoo.build_model("ppca", 4, latent_dim=2)
    >>> guide = zoo.build_guide("amortized", model, hidden=(8,))
    >>> result = AnnealedImportanceSampling(num_temperatures=20, num_chains=4).estimate(model, guide, torch.randn(3, 4))
    >>> result.log_likelihood.shape, len(result.acceptance_per_temperature)
    (torch.Size([3]), 19)
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Tuple

import pyro
import pyro.poutine as poutine
import torch
from pyro.poutine.messenger import Messenger
from torch.distributions import biject_to
from torch.distributions.transforms import AffineTransform

from zoo.core.distributions import joint_configurations
from zoo.core.process import map_torch_constants
from zoo.core.memory import refuse_oversized_annealing
from zoo.core.errors import ZooError
from zoo.core.latents import LATENT_FAMILIES, MANIFOLDS
from zoo.core.leapfrog import leapfrog
from zoo.usercode.errors import user_code_errors
from zoo.core.modes import evaluation_mode, held_fixed
from zoo.core.weights import per_datum_log_weights, vectorize
from zoo.evaluation.estimators.importance import rounding_floor
from zoo.rules import check_annealing

__all__ = ["AnnealedImportanceSampling", "AISResult", "local_mh", "sigmoid_schedule", "log_mean_exp_and_se", "PATHS",
           "PRECONDITIONERS", "COORDINATES", "coordinates_text", "MIN_ESS_FRACTION", "MIN_ESS", "GIBBS_MAX_STATES",
           "MIXING_FIELDS", "SWITCH_FROM_BETA"]

PATHS = ("guide", "prior")
#: the coordinates HMC moves the real sites in, on the guide's path (module docstring)
PRECONDITIONERS = ("transport", "diagonal", "none")
#: how the tables name each preconditioner's coordinates
COORDINATES = {"transport": " in the guide's reparameterization", "diagonal": " in the guide's whitened coordinates",
               "none": ""}


def coordinates_text(precondition, transported=None) -> str:
    """What the tables say of the coordinates the chains moved in: the preconditioner asked for, and on the
    transport map's, the sites it covered (``transported``; None: not recorded, as in files before it was)."""
    if precondition == "transport" and transported is not None:
        if not transported:
            return " in the guide's whitened coordinates (no site's guide distribution a Normal to transport)"
        return f" in the guide's reparameterization ({', '.join(transported)})"
    return COORDINATES.get(precondition, "")
#: the prior's share of the guide moves' proposal (:func:`_independent_mh`), where a model's latents are all real
GUIDE_MOVE_DEFENSIVE = 0.5
#: a discrete site with at most this many values per datum also takes a Gibbs update, a larger one local Metropolis
#: moves (all take the independent MH step)
GIBBS_MAX_STATES = 64
#: below this fraction of the chains, the effective sample size of a datum's final weights says that one or two
#: chains carry the estimate: its delta-method standard error is then not a precision
MIN_ESS_FRACTION = 0.1
#: and below this ESS whatever the number of chains: at about 1, one chain carries all the weight and the spread of the
#: weights says nothing (with 10 chains or fewer, a tenth of them is at most 1, which every ESS meets)
MIN_ESS = 2.0


def sigmoid_schedule(num_temperatures: int, delta: float = 4.0) -> torch.Tensor:
    """beta_0 = 0 < ... < beta_T = 1, Wu et al.'s sigmoid schedule (module docstring), float64 ``[T + 1]``."""
    if num_temperatures < 1:
        raise ZooError(f"AIS needs at least one temperature, got {num_temperatures}")
    if num_temperatures == 1:
        return torch.tensor([0.0, 1.0], dtype=torch.float64)
    s = torch.sigmoid(torch.linspace(-delta, delta, num_temperatures + 1, dtype=torch.float64))
    return (s - s[0]) / (s[-1] - s[0])


def log_mean_exp_and_se(log_w: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """From ``[C, B]`` log-weights: log (1/C) sum_c w_c, its delta-method standard error
    sqrt((mean w^2 / (mean w)^2 - 1) / C), and the effective sample size (sum w)^2 / sum w^2, each ``[B]``."""
    C = log_w.shape[0]
    log_w = log_w.double()
    lme = torch.logsumexp(log_w, 0) - math.log(C)
    ratio = torch.exp(torch.logsumexp(2 * log_w, 0) - math.log(C) - 2 * lme)      # mean w^2 / (mean w)^2
    se = ((ratio - 1).clamp(min=0) / max(C - 1, 1)).sqrt()     # C - 1: the unbiased variance of the chains
    ess = torch.exp(2 * torch.logsumexp(log_w, 0) - torch.logsumexp(2 * log_w, 0))
    return lme, se, ess


#: the seed of the one guide draw a structured guide's preconditioner is read from (:meth:`_Chains._whitened`)
PRECONDITION_SEED = 7919


def annealing_start(guide, path: str):
    """(the guide AIS and BDMC anneal from, what pi_0 is, in words). On the guide's path: the guide itself, or,
    for a guide without a marginal density, the start it declares (``initial_guide()``: the hamiltonian guide's
    q_0, before its leapfrog steps); on the prior's path the guide is kept only for its global latents."""
    if path != "guide":
        return guide, "the prior p(z)"
    if not getattr(guide, "has_density", True) and hasattr(guide, "initial_guide"):
        family = getattr(guide, "family", type(guide).__name__)
        return guide.initial_guide(), f"q_0 of the {family!r} guide (its draw before the leapfrog steps)"
    return guide, "the guide's q(z | x)"


class _FixedValues(Messenger):
    """Sets the value of every named sample site (as ``poutine.replay`` does, without a trace), so that a
    guide run under it scores the given state instead of drawing one."""

    def __init__(self, values: Dict[str, torch.Tensor]):
        super().__init__()
        self.values = values

    def _pyro_sample(self, msg) -> None:
        if msg["name"] in self.values and not msg["is_observed"]:
            msg["value"] = self.values[msg["name"]]
            msg["done"] = True


def _at(guide: Callable, values: Dict[str, torch.Tensor]) -> Callable:
    def fixed(*args, **kwargs):
        with _FixedValues(values):
            return guide(*args, **kwargs)
    return fixed


def _base_and_bijections(fn):
    """(the Normal, the bijections after it) of a guide distribution that is a Normal, reinterpreted (``to_event``)
    or pushed through bijections that keep its shape; None for any other."""
    transforms = []
    while True:
        if isinstance(fn, torch.distributions.Independent):
            fn = fn.base_dist
        elif isinstance(fn, torch.distributions.TransformedDistribution):
            transforms = list(fn.transforms) + transforms
            fn = fn.base_dist
        else:
            break
    if not isinstance(fn, torch.distributions.Normal) or not all(t.bijective for t in transforms):
        return None
    return fn, transforms


def _event_sum(term: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A per-element term of ``like`` ``[C, B, *event]`` summed to ``[C, B]``; a term that is not shaped so (a
    transform's log-Jacobian over its parameters, say) is refused, never broadcast."""
    if term.dim() < 2 or term.shape[:2] != like.shape[:2]:
        raise ValueError(f"a log-Jacobian of shape {tuple(term.shape)} for a value of shape {tuple(like.shape)}")
    return term.reshape(term.shape[:2] + (-1,)).sum(-1)


def _push(fn, u: torch.Tensor):
    """z = t(mu + sigma u) and log|det dz/du| ``[C, B]`` for the guide distribution ``fn`` (:func:`_base_and_bijections`)
    and the standard-normal noise ``u`` ``[C, B, *event]``."""
    normal, transforms = _base_and_bijections(fn)
    z = normal.loc + normal.scale * u
    log_det = _event_sum(normal.scale.log().expand(z.shape), z)
    for t in transforms:
        y = t(z)
        log_det = log_det + _event_sum(t.log_abs_det_jacobian(z, y), y)
        z = y
    return z, log_det


def _pull(fn, z: torch.Tensor) -> torch.Tensor:
    """The noise u that :func:`_push` maps to ``z``."""
    normal, transforms = _base_and_bijections(fn)
    for t in reversed(transforms):
        z = t.inv(z)
    return (z - normal.loc) / normal.scale


class _Transported(_FixedValues):
    """Runs a guide in its own reparameterization: each site of ``noise`` takes the value its distribution maps the
    noise to (:func:`_push`), the sites of ``values`` are set (:class:`_FixedValues`), and ``log_det`` sums
    log|det dz/du| ``[C, B]``."""

    def __init__(self, values: Dict[str, torch.Tensor], noise: Dict[str, torch.Tensor]):
        super().__init__(values)
        self.noise, self.log_det = noise, 0.0

    def _pyro_sample(self, msg) -> None:
        if msg["is_observed"] or msg["name"] not in self.noise:
            return super()._pyro_sample(msg)
        z, log_det = _push(msg["fn"], self.noise[msg["name"]])
        msg["value"], msg["done"] = z, True
        self.log_det = self.log_det + log_det


@dataclass
class AISResult:
    """What :meth:`AnnealedImportanceSampling.estimate` returns: per-datum ``[n]`` tensors (float64) and
    per-temperature lists."""

    log_likelihood: torch.Tensor
    log_likelihood_se: torch.Tensor
    ess: torch.Tensor
    acceptance: torch.Tensor                    # per datum, mean over chains and temperatures
    acceptance_per_temperature: List[float]     # per transition t = 1..T-1, mean over data and chains
    step_size_per_temperature: List[Optional[float]]   # the pilot's eps_t, median over data (None: no HMC)
    settings: Dict = field(default_factory=dict)
    #: per datum, the HMC steps' mean acceptance probability over chains and temperatures (NaN: no real site)
    hmc_acceptance: Optional[torch.Tensor] = None
    #: per datum, the share of transitions at beta >= 1/2 in which a chain's discrete state changed (NaN: none)
    switch_rate: Optional[torch.Tensor] = None
    #: per datum, how many distinct discrete states the C chains end in (0: no discrete site)
    final_states: Optional[torch.Tensor] = None

    @property
    def se_reliable(self) -> torch.Tensor:
        """Per datum: whether the final weights' ESS is at least :data:`MIN_ESS_FRACTION` of the chains and at least
        :data:`MIN_ESS`."""
        return self.ess >= max(MIN_ESS_FRACTION * self.settings.get("num_chains", 1), MIN_ESS)

    def summary(self) -> Dict:
        """The figures of the data set, in nats per datum (for results files)."""
        n = self.log_likelihood.shape[0]
        reliable = self.se_reliable
        out = {"estimator": "ais", **self.settings, "num_data": n,
               "log_likelihood": self.log_likelihood.mean().item(),
               "log_likelihood_se": (self.log_likelihood_se.pow(2).sum().sqrt() / n).item(),
               "log_likelihood_data_se": (self.log_likelihood.std() / math.sqrt(n)).item() if n > 1 else None,
               "nll": -self.log_likelihood.mean().item(),
               "ess_mean": self.ess.mean().item(), "ess_min": self.ess.min().item(),
               "frac_se_unreliable": 1.0 - reliable.double().mean().item(),
               "acceptance_mean": self.acceptance.mean().item(),
               "acceptance_per_temperature": self.acceptance_per_temperature,
               "step_size_per_temperature": self.step_size_per_temperature}
        chains = self.settings.get("num_chains")
        if isinstance(chains, int) and chains <= MIN_ESS and not bool(reliable.all()):
            # C weights have an ESS of at most C, reached only where all are equal: the rule passes almost nowhere,
            # and saying "more temperatures" would send the user the wrong way
            reach = (f"one chain's weights have an ESS of 1, below {MIN_ESS:g}" if chains == 1 else
                     f"{chains} chains' weights reach an ESS of {MIN_ESS:g} only where they are all equal")
            out["se_warning"] = (f"{1 - reliable.double().mean().item():.1%} of data have a standard error that is "
                                 f"not a precision: {reach}; run 4 or more chains (--chains)")
        elif not bool(reliable.all()):
            out["se_warning"] = (f"{1 - reliable.double().mean().item():.1%} of data have final weights whose ESS is "
                                 f"below {MIN_ESS_FRACTION:.0%} of the {self.settings.get('num_chains')} chains or below "
                                 f"{MIN_ESS:g}: their "
                                 f"standard error is not a precision; run more temperatures (--temperatures) or chains "
                                 f"(--chains)")
        return out

    def per_datum(self) -> Dict[str, torch.Tensor]:
        # a figure the model has no sites for (NaN throughout: no real site for HMC, no discrete one to switch) is left out
        mixing = {name: value for name in MIXING_FIELDS if (value := getattr(self, name)) is not None
                  and not bool(torch.isnan(value).all()) and not (name == "final_states" and not bool(value.any()))}
        return {"log_likelihood": self.log_likelihood, "log_likelihood_se": self.log_likelihood_se,
                "ess": self.ess, "acceptance": self.acceptance, "se_reliable": self.se_reliable, **mixing}


#: the per-datum figures of how the chains moved (:class:`_Mixing`), beside the estimate's
MIXING_FIELDS = ("hmc_acceptance", "switch_rate", "final_states")
#: the discrete states' switching is counted from this temperature on, where f_beta is close to the posterior
SWITCH_FROM_BETA = 0.5


@dataclass
class _Mixing:
    """What the chains' own moves say of their mixing, per chain and datum ``[C, B]``: the HMC steps' acceptance
    probabilities summed, and from beta >= :data:`SWITCH_FROM_BETA` on, how many discrete transitions changed a
    chain's state (MH and Gibbs together), with the state each chain ends in."""

    hmc: torch.Tensor
    hmc_steps: int
    switched: torch.Tensor
    discrete_steps: int
    last: Optional[torch.Tensor] = None

    @classmethod
    def empty(cls, C: int, B: int, device) -> "_Mixing":
        zeros = torch.zeros(C, B, dtype=torch.float64, device=device)
        return cls(zeros, 0, zeros.clone(), 0)

    def hmc_moved(self, accept: torch.Tensor) -> None:
        self.hmc, self.hmc_steps = self.hmc + accept.double(), self.hmc_steps + 1

    def discrete_moved(self, sites, before, after, beta: float) -> None:
        flat = torch.cat([after[s.name].reshape(after[s.name].shape[:2] + (-1,)).double() for s in sites], -1)
        self.last = flat
        if beta < SWITCH_FROM_BETA:
            return
        changed = torch.zeros_like(self.switched, dtype=torch.bool)
        for s in sites:
            diff = after[s.name] != before[s.name]
            changed |= diff.reshape(diff.shape[:2] + (-1,)).any(-1)
        self.switched, self.discrete_steps = self.switched + changed.double(), self.discrete_steps + 1

    def figures(self) -> Dict[str, torch.Tensor]:
        B = self.hmc.shape[1]
        nan = torch.full((B,), math.nan, dtype=torch.float64)
        hmc = (self.hmc / self.hmc_steps).mean(0).cpu() if self.hmc_steps else nan
        switch = (self.switched / self.discrete_steps).mean(0).cpu() if self.discrete_steps else nan
        if self.last is None:
            states = torch.zeros(B, dtype=torch.float64)
        else:
            states = torch.tensor([float(torch.unique(self.last[:, b], dim=0).shape[0]) for b in range(B)],
                                  dtype=torch.float64)
        return {"hmc_acceptance": hmc, "switch_rate": switch, "final_states": states}


class _Chains:
    """The state of C chains for a minibatch of B data: discrete site values, real sites on their unconstrained
    space, and how to score them under the model and pi_0."""

    def __init__(self, model, guide, x, idx, N, C: int, path: str, gibbs_max_states: int = GIBBS_MAX_STATES,
                 precondition: str = "transport", guide_moves: bool = False):
        self.model, self.guide, self.x, self.idx, self.N, self.C, self.path = model, guide, x, idx, N, C, path
        #: whether every temperature also proposes the whole state from the guide (:func:`_independent_mh`): always
        #: where there are discrete sites, on request (``AnnealedImportanceSampling.guide_moves``) where all are real
        self.guide_moves = bool(guide_moves)
        self.precondition = precondition if path == "guide" and guide is not None else "none"
        # "real": every site HMC moves, real ones on their unconstrained space, those on the sphere or in
        # hyperbolic space through their family's chart of R^k
        self.real = [s for s in model.latents if s.support == "real" or s.support in MANIFOLDS]
        self.discrete = [s for s in model.latents if s.support in ("binary", "categorical")]
        self.guide_moves = self.guide_moves or bool(self.discrete)
        self.gibbs = [s for s in self.discrete if s.num_configurations <= gibbs_max_states]
        self.proposed = [s for s in self.discrete if s.num_configurations > gibbs_max_states]
        #: the real sites moved in the guide's own reparameterization (module docstring); the rest through chart()
        self.transported = self._transportable() if self.precondition == "transport" else []
        self.transforms = {s.name: self.chart(s) for s in self.real if s.name not in self.transported}

    def _transportable(self) -> List[str]:
        """The real sites whose guide distribution is a Normal, or a bijection of one, of the site's own shape, and
        whose log q no mask hides nor scale weighs (a masked entry would add its log-Jacobian to f_t with no density
        beside it, a weighted one its log-Jacobian at another weight)."""
        real = [s.name for s in self.real if s.support == "real"]
        if not real:
            return []
        with torch.no_grad(), evaluation_mode(self.guide), \
                torch.random.fork_rng(devices=[self.x.device] if self.x.device.type == "cuda" else []):
            torch.manual_seed(PRECONDITION_SEED)
            trace = poutine.trace(vectorize(self.guide, 1)).get_trace(self.x, idx=self.idx, N=self.N)
            masked = per_datum_log_weights(self.model, self.guide, self.x, idx=self.idx, N=self.N).site_q_mask
            out = []
            for name in real:
                node = trace.nodes.get(name)
                if node is None or node.get("mask") is not None or node.get("scale", 1.0) != 1.0 or name in masked \
                        or _base_and_bijections(node["fn"]) is None:
                    continue
                try:
                    z, log_det = _push(node["fn"], torch.zeros_like(node["value"]))
                except (ValueError, RuntimeError, NotImplementedError):
                    continue
                if z.shape == node["value"].shape:
                    out.append(name)
        return out

    def chart(self, site):
        """How HMC sees ``site``: ``biject_to`` of a real site's constraint, or its latent family's chart of R^k
        (:meth:`~zoo.core.latents.LatentFamily.chart`). The sphere's stereographic chart leaves out one point, its
        pole: put opposite the guide's mean direction for each datum (a function of x alone, fixed before the
        chains run, as AIS's kernels must be), so the chains stay near u = 0."""
        if site.support == "real":
            if self.precondition in ("transport", "diagonal") and not site.constrained:
                whitened = self._whitened(site)
                if whitened is not None:
                    return whitened
            return biject_to(site.constraint)
        family = LATENT_FAMILIES[site.family]
        pole = None
        if site.support == "sphere" and self.guide is not None:
            with torch.no_grad(), evaluation_mode(self.guide):
                node = poutine.trace(self.guide).get_trace(self.x, idx=self.idx, N=self.N).nodes[site.name]
            loc = getattr(node["fn"], "loc", None)
            direction = loc if loc is not None and loc.shape == node["value"].shape else node["value"]
            pole = -direction.detach().to(self.x.dtype)
        return family.chart(family.dim_of(site.numel), pole)

    def _whitened(self, site):
        """z = mu + sigma u for a real, unconstrained ``site``, with the guide's mean and standard deviation of the
        site per datum ``[B, *event]`` (for a structured guide, q(site | x, the sites before it at their means where
        the guide says how: ``marginal_posterior``, else at one draw from a fixed seed). None where the guide gives
        neither."""
        with torch.no_grad(), evaluation_mode(self.guide):
            q = None
            marginal = getattr(self.guide, "marginal_posterior", None)
            if marginal is not None:
                try:
                    q = marginal(site.name, self.x)
                except (ZooError, NotImplementedError, AttributeError, TypeError):
                    q = None
            if q is None:                   # one draw of the guide, from a fixed seed: the same for the pilot and
                # the measured chains, and none of the run's random stream
                with torch.random.fork_rng(devices=[self.x.device] if self.x.device.type == "cuda" else []):
                    torch.manual_seed(PRECONDITION_SEED)
                    node = poutine.trace(self.guide).get_trace(self.x, idx=self.idx, N=self.N).nodes.get(site.name)
                q = None if node is None else node["fn"]
            try:
                loc, scale = q.mean, q.stddev
            except (AttributeError, NotImplementedError):
                return None
        shape = (self.x.shape[0],) + tuple(site.event_shape)
        if loc.shape != shape or scale.shape != shape or not bool(torch.isfinite(loc).all()) \
                or not bool((scale > 0).all()) or not bool(torch.isfinite(scale).all()):
            return None
        return AffineTransform(loc.detach().to(self.x.dtype), scale.detach().to(self.x.dtype),
                               event_dim=len(site.event_shape))

    # --- drawing and scoring -------------------------------------------------------------------------
    def draw_initial(self) -> Dict[str, torch.Tensor]:
        """z_0 ~ pi_0 for every chain: ``{site: [C, B, *event]}``."""
        if self.path == "guide":
            return dict(self.score(None).latents)
        return self.draw_prior()

    def draw_prior(self) -> Dict[str, torch.Tensor]:
        """z ~ p(z) for every chain: ``{site: [C, B, *event]}``."""
        trace = poutine.trace(vectorize(self.model, self.C)).get_trace(self.x, idx=self.idx, N=self.N)
        return {s.name: trace.nodes[s.name]["value"] for s in self.model.latents}

    def score(self, values: Optional[Dict[str, torch.Tensor]]):
        """The LogWeights of the state ``values`` (``None``: a fresh draw from the guide).

        On the prior's path log q is never used, so the state is scored with the model's own prior in the guide's
        place (its observations hidden): the guide need not be able to score a state it did not draw (the
        hamiltonian guide cannot), and no encoder runs. Not where the model has global latents, whose values come
        from the guide's point estimate, nor where the chains take the independent MH step (discrete latents,
        ``guide_moves``), which proposes from the guide and needs log q of the current state."""
        if values is not None and self.path == "prior" and not self.model.global_latents \
                and not self.guide_moves:
            prior = poutine.block(self.model, hide_fn=lambda msg: msg["is_observed"])
            return per_datum_log_weights(self.model, _at(prior, values), self.x, idx=self.idx, N=self.N,
                                         num_particles=self.C)
        guide = self.guide if values is None else _at(self.guide, values)
        lw = per_datum_log_weights(self.model, guide, self.x, idx=self.idx, N=self.N, num_particles=self.C)
        return lw

    def g_and_log_pi0(self, lw) -> Tuple[torch.Tensor, torch.Tensor]:
        """g = log p(x, z) - log pi_0(z) and log pi_0(z), each ``[C, B]``."""
        log_pi0 = lw.log_q if self.path == "guide" else lw.log_prior
        return lw.log_likelihood + lw.log_prior - log_pi0, log_pi0

    # --- the unconstrained space of the real sites ---------------------------------------------------
    def unconstrain(self, values) -> List[torch.Tensor]:
        """u of every real site of the state ``values``: a chart's inverse, or the noise the guide maps to the value."""
        fns = {}
        if self.transported:
            trace = poutine.trace(vectorize(_at(self.guide, values), self.C)).get_trace(self.x, idx=self.idx, N=self.N)
            fns = {name: trace.nodes[name]["fn"] for name in self.transported}
        return [(_pull(fns[s.name], values[s.name]) if s.name in fns else self.transforms[s.name].inv(values[s.name]))
                .detach() for s in self.real]

    def evaluate(self, values, u: List[torch.Tensor]):
        """(the state ``values`` with its real sites at ``u``, its LogWeights, log|det dz/du| ``[C, B]``)."""
        z, log_det = self.constrain(values, u)
        if not self.transported:
            return z, self.score(z), log_det
        noise = {s.name: u_s for s, u_s in zip(self.real, u) if s.name in self.transported}
        transported = _Transported({k: v for k, v in z.items() if k not in noise}, noise)

        def guide(*args, **kwargs):
            with transported:
                return self.guide(*args, **kwargs)
        lw = per_datum_log_weights(self.model, guide, self.x, idx=self.idx, N=self.N, num_particles=self.C)
        return {**z, **{name: lw.latents[name] for name in noise}}, lw, log_det + transported.log_det

    def constrain(self, values, u: List[torch.Tensor]):
        """The state with its charted real sites at ``u`` (the transported ones left to :meth:`evaluate`) and the
        charts' log|det dz/du| ``[C, B]``."""
        out, log_det = dict(values), 0.0
        for s, u_s in zip(self.real, u):
            if s.name in self.transported:
                continue
            t = self.transforms[s.name]
            z = t(u_s)
            out[s.name] = z
            if s.constrained or s.support in MANIFOLDS:
                ld = t.log_abs_det_jacobian(u_s, z)
                log_det = log_det + ld.reshape(ld.shape[:2] + (-1,)).sum(-1)
        return out, log_det

    def point(self, values, u: Optional[List[torch.Tensor]] = None) -> "_Point":
        """The state ``values`` (its real sites at the unconstrained ``u``, default: from ``values``) with b, g and
        their gradients with respect to ``u`` (:class:`_Point`)."""
        # A leapfrog step (``u`` given) may carry a chain where the model's own parameters leave their support (a
        # funnel's scale exp(v / 2) overflows to inf or underflows to 0): without validation such a point scores NaN
        # or -inf, and the Metropolis test rejects it (_Point.log_f), where Pyro's check would have raised out of the
        # estimator. A state the chains start from or moved to otherwise is scored with the caller's validation, so
        # data outside the likelihood's support (0.5 under a Bernoulli) are still refused, on every path.
        proposed = u is not None
        u = self.unconstrain(values) if u is None else u
        with torch.enable_grad(), pyro.validation_enabled(False) if proposed else contextlib.nullcontext():
            u = [u_s.detach().requires_grad_(True) for u_s in u]
            z, lw, log_det = self.evaluate(values, u)
            g, log_pi0 = self.g_and_log_pi0(lw)
            base = log_pi0 + log_det
            grad_g = _grad(g, u, retain_graph=True)
            grad_b = _grad(base, u)
        z = {k: v.detach() for k, v in z.items()}
        return _Point(z, [u_s.detach() for u_s in u], base.detach(), g.detach(), _finite(grad_b, u), _finite(grad_g, u))


def _grad(f: torch.Tensor, u: List[torch.Tensor], retain_graph: bool = False) -> List[Optional[torch.Tensor]]:
    """d sum(f) / du for each of ``u`` (None where f does not depend on it, and for every one where no u is given)."""
    if not u or not f.requires_grad:
        return [None] * len(u)
    return list(torch.autograd.grad(f.sum(), u, retain_graph=retain_graph, allow_unused=True))


def _finite(grads, like) -> List[torch.Tensor]:
    return [torch.zeros_like(u_s) if gr is None else torch.nan_to_num(gr.detach(), nan=0.0, posinf=0.0, neginf=0.0)
            for gr, u_s in zip(grads, like)]


@dataclass
class _Point:
    """A state of the chains with what a temperature needs of it: ``values`` (every site, real ones constrained), ``u``
    (the real sites unconstrained), b = log pi_0(z) + log|det dz/du| and g = log p(x, z) - log pi_0(z) ``[C, B]``, and
    their gradients with respect to ``u``. log f_beta = b + beta g (non-finite: -inf, where a proposal is rejected)."""

    values: Dict[str, torch.Tensor]
    u: List[torch.Tensor]
    base: torch.Tensor
    g: torch.Tensor
    grad_base: List[torch.Tensor]
    grad_g: List[torch.Tensor]

    def log_f(self, beta: float) -> torch.Tensor:
        f = self.base + beta * self.g
        return f.masked_fill(~torch.isfinite(f), -math.inf)

    def grad(self, beta: float) -> List[torch.Tensor]:
        return [gb + beta * gg for gb, gg in zip(self.grad_base, self.grad_g)]

    def where(self, accept: torch.Tensor, other: "_Point") -> "_Point":
        """This point where ``accept`` ``[C, B]``, ``other`` elsewhere."""
        def pick(a, b):
            return torch.where(_broadcast(accept, a), a, b)
        return _Point({k: pick(v, other.values[k]) for k, v in self.values.items()},
                      [pick(a, b) for a, b in zip(self.u, other.u)], pick(self.base, other.base), pick(self.g, other.g),
                      [pick(a, b) for a, b in zip(self.grad_base, other.grad_base)],
                      [pick(a, b) for a, b in zip(self.grad_g, other.grad_g)])


def _broadcast(per_chain: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A ``[C, B]`` (or ``[B]``) tensor shaped to broadcast against ``like`` ``[C, B, *event]``."""
    return per_chain.reshape(per_chain.shape + (1,) * (like.dim() - per_chain.dim()))


def _hmc(chains: _Chains, start: _Point, beta: float, eps: torch.Tensor, L: int):
    """One HMC transition at temperature ``beta`` of every chain's real sites from ``start``: L leapfrog steps of size
    ``eps`` ``[B]``, then a Metropolis correction. Returns the point it ends in and the acceptance probability
    ``[C, B]``. The integrator is :func:`zoo.core.leapfrog.leapfrog`; each point is a :class:`_Point`, which keeps
    the gradients of log pi_0 and of g apart, so the next temperature reuses them (one model evaluation per leapfrog
    step, none per temperature)."""
    p0 = [torch.randn_like(u_s) for u_s in start.u]
    step = [_broadcast(eps.to(u_s.dtype), u_s[0]).unsqueeze(0) for u_s in start.u]

    def at(u):
        point = chains.point(start.values, u)
        return point, point.grad(beta)
    _, p, end, _ = leapfrog(start.u, p0, start.grad(beta), step, L, at)
    end = start if end is None else end

    def kinetic(ps):
        return sum(0.5 * p_s.pow(2).reshape(p_s.shape[:2] + (-1,)).sum(-1) for p_s in ps)
    log_accept = (end.log_f(beta) - kinetic(p)) - (start.log_f(beta) - kinetic(p0))
    log_accept = torch.nan_to_num(log_accept, nan=-math.inf).clamp(max=0.0)
    accept = torch.rand_like(log_accept).log() < log_accept
    return end.where(accept, start), log_accept.exp()


def _site_states(site, like: torch.Tensor) -> List[torch.Tensor]:
    """Every value one datum's discrete ``site`` can take, each shaped as ``like`` ``[C, B, *event]``."""
    if site.form == "index":
        return [torch.full_like(like, k) for k in range(site.num_classes)]
    if site.form == "bit":
        return [torch.zeros_like(like), torch.ones_like(like)]
    if site.form == "one_hot":
        eye = torch.eye(site.num_classes, dtype=like.dtype, device=like.device)
        return [eye[k].expand_as(like) for k in range(site.num_classes)]
    kind, shape = ("binary", (site.numel,)) if site.support == "binary" else ("categorical", tuple(site.event_shape))
    values = joint_configurations(kind, shape, like.device, like.dtype)
    return [v.reshape(site.event_shape).expand_as(like) for v in values]


def _gibbs(chains: _Chains, values, beta: float, site):
    """One Gibbs update of the discrete ``site`` at temperature ``beta``: each of its values scored under f_beta
    given the rest of the state, one drawn in proportion. Returns the new values and the probability of leaving
    the current value ``[C, B]`` (what an acceptance rate says of the other kernels: how much the chains move)."""
    current = values[site.name]
    states = _site_states(site, current)
    log_f = []
    for state in states:
        g, log_pi0 = chains.g_and_log_pi0(chains.score({**values, site.name: state}))
        log_f.append(torch.nan_to_num(log_pi0 + beta * g, nan=-math.inf))
    probs = torch.softmax(torch.stack(log_f, -1).double(), -1)                      # [C, B, S]
    choice = torch.distributions.Categorical(probs=probs).sample()
    event_dims = tuple(range(2, current.dim()))
    new, stay = current, torch.zeros_like(probs[..., 0])
    for k, state in enumerate(states):
        is_current = (current == state).all(dim=event_dims) if event_dims else current == state
        stay = stay + torch.where(is_current, probs[..., k], torch.zeros_like(stay))
        new = torch.where(_broadcast(choice == k, current), state, new)
    return {**values, site.name: new.detach()}, (1.0 - stay).float()


def _independent_mh(chains: _Chains, values, beta: float, defensive: float = 0.0):
    """One Metropolis-Hastings transition at temperature ``beta`` with the guide as independent proposal of the
    whole state: accepted with probability min(1, f_beta(z') m(z) / (f_beta(z) m(z'))). With ``defensive`` = a > 0
    the proposal is the mixture m = (1 - a) q(z | x) + a p(z) (Hesterberg 1995), each chain drawing from the prior
    with probability a: an independent sampler cannot leave a state where f_beta / m is large, and where m = q a
    guide's light tails make that ratio huge wherever q is small (a chain in a VampPrior component far from the
    datum's posterior, on the prior's path); with the prior in m, f_beta / m <= p(x | z)^beta / a there, and the
    chain leaves. Returns the new values and the acceptance probability ``[C, B]``."""
    current, proposed = chains.score(values), chains.score(None)
    if defensive > 0.0:
        prior_draw = chains.draw_prior()
        from_prior = torch.rand(proposed.log_q.shape, device=proposed.log_q.device) < defensive
        proposed = chains.score({name: torch.where(_broadcast(from_prior, v), prior_draw[name], v)
                                 for name, v in proposed.latents.items()})

    def log_ratio_to_proposal(lw):                  # log f_beta(z) - log m(z)
        g, log_pi0 = chains.g_and_log_pi0(lw)
        log_m = lw.log_q if defensive <= 0.0 else torch.logaddexp(
            math.log1p(-defensive) + lw.log_q, math.log(defensive) + lw.log_prior)
        return log_pi0 + beta * g - log_m
    log_accept = torch.nan_to_num(log_ratio_to_proposal(proposed) - log_ratio_to_proposal(current),
                                  nan=-math.inf).clamp(max=0.0)
    accept = torch.rand_like(log_accept).log() < log_accept
    new = {name: torch.where(_broadcast(accept, v), proposed.latents[name], v) for name, v in values.items()}
    return new, log_accept.exp()


def _local_proposal(site, current: torch.Tensor) -> torch.Tensor:
    """A symmetric local move of a discrete ``site``'s values ``[C, B, *event]``: one bit flipped, or one
    categorical variable given a class drawn uniformly (possibly its own), chosen uniformly per chain and datum."""
    C, B = current.shape[:2]
    if site.support == "binary":
        flat = current.reshape(C, B, -1)
        j = torch.randint(flat.shape[-1], (C, B, 1), device=current.device)
        return flat.scatter(-1, j, 1 - flat.gather(-1, j)).reshape(current.shape)
    K = int(site.num_classes)
    if site.form == "index":
        return torch.randint(K, current.shape, device=current.device).to(current.dtype)
    one_hot = current.reshape(C, B, -1, K)
    which = torch.nn.functional.one_hot(torch.randint(one_hot.shape[2], (C, B), device=current.device),
                                        one_hot.shape[2]).bool().unsqueeze(-1)          # [C, B, n, 1]
    row = torch.nn.functional.one_hot(torch.randint(K, (C, B), device=current.device), K).to(current.dtype)
    return torch.where(which, row.unsqueeze(2), one_hot).reshape(current.shape)


def local_mh(chains: _Chains, values, beta: float, sites, moves: int):
    """``moves`` rounds of Metropolis updates at temperature ``beta``, each proposing :func:`_local_proposal` for
    each of ``sites`` in turn (the discrete sites too large for a Gibbs update): a symmetric proposal, so the
    acceptance probability is min(1, f_beta(z') / f_beta(z)). Where the guide is far from the posterior, its
    independent proposals are all refused and only such moves bring the chains there (a sigmoid belief net's 200
    bits). Returns the new values and the mean acceptance probability ``[C, B]``."""
    def log_f(state):
        g, log_pi0 = chains.g_and_log_pi0(chains.score(state))
        return torch.nan_to_num(log_pi0 + beta * g, nan=-math.inf)
    current = log_f(values)
    total = torch.zeros_like(current)
    for _ in range(moves):
        for site in sites:
            proposed = {**values, site.name: _local_proposal(site, values[site.name])}
            new = log_f(proposed)
            log_accept = torch.nan_to_num(new - current, nan=-math.inf).clamp(max=0.0)
            accept = torch.rand_like(log_accept).log() < log_accept
            values = {**values, site.name: torch.where(_broadcast(accept, values[site.name]),
                                                       proposed[site.name], values[site.name]).detach()}
            current = torch.where(accept, new, current)
            total = total + log_accept.exp()
    return values, (total / (moves * len(sites))).float()


@dataclass
class AnnealedImportanceSampling:
    """AIS over the latents of any zoo model (module docstring).

    Arguments:
        num_temperatures: T, the number of annealing steps (T - 1 transitions).
        num_chains: C, independent chains per datum; the standard error comes from their spread.
        path: ``"guide"`` (pi_0 = q(z | x)) or ``"prior"`` (pi_0 = p(z)).
        leapfrog_steps: L, leapfrog steps per HMC transition, and rounds of local Metropolis moves (one bit
            flipped, one categorical variable redrawn) per transition of each discrete site too large for Gibbs.
        target_accept: the acceptance rate the pilot run adapts each temperature's step size toward.
        initial_step_size: the pilot's first step size.
        pilot_chains: chains per datum in the pilot run (0: no pilot, ``initial_step_size`` throughout).
        batch_size: data per tensor program (each holds ``batch_size x num_chains`` states).
        schedule: ``"sigmoid"`` (Wu et al.) or ``"linear"``.
        gibbs_max_states: discrete sites of at most this many values per datum also take a Gibbs update after the
            independent MH step; larger ones take L rounds of local Metropolis moves instead (0: every discrete site
            takes the local moves).
        local_moves: whether discrete sites too large for Gibbs take the local moves (False: the independent MH
            step alone moves them; with ``gibbs_max_states=0``, every discrete site).
        guide_moves: whether a model whose latents are all real also takes the independent MH step with the guide
            as proposal at every temperature, before the HMC step (a model with discrete latents always does).
            HMC's moves are local: chains that start in a part of the space the posterior barely weighs (on the
            prior's path, a component of a VampPrior far from the datum's posterior) stay there while the
            likelihood's weight rises, and their weights spread. An independent proposal jumps where the guide
            puts mass, and the Metropolis correction keeps f_t invariant for any guide, so the estimate stays
            unbiased; a mode the guide misses is kept by the chains that are in it. It costs a draw and two
            scorings of the guide and the model per temperature, and needs a guide that can score a state
            (not the hamiltonian guide).
        precondition: the coordinates the real sites move in on the guide's path (module docstring): ``"transport"``
            (the guide's own reparameterization), ``"diagonal"`` (its per-datum mean and scale) or ``"none"``
            (the site's own); True and False stand for ``"transport"`` and ``"none"``.
    """

    num_temperatures: int = 500
    num_chains: int = 16
    path: str = "guide"
    leapfrog_steps: int = 10
    target_accept: float = 0.65
    initial_step_size: float = 0.05
    pilot_chains: int = 4
    batch_size: int = 100
    schedule: str = "sigmoid"
    gibbs_max_states: int = GIBBS_MAX_STATES
    precondition: str = "transport"
    local_moves: bool = True
    guide_moves: bool = False

    def __post_init__(self):
        for flag in ("local_moves", "guide_moves"):
            if not isinstance(getattr(self, flag), bool):
                raise ZooError(f"AIS {flag} must be True or False, got {getattr(self, flag)!r}")
        for name in ("num_temperatures", "num_chains", "leapfrog_steps", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ZooError(f"AIS {name} must be a whole number >= 1, got {value!r}")
        for name in ("pilot_chains", "gibbs_max_states"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ZooError(f"AIS {name} must be a whole number >= 0, got {value!r}")
        if self.path not in PATHS:
            raise ZooError(f"AIS path must be one of {', '.join(PATHS)}, got {self.path!r}")
        if isinstance(self.precondition, bool):
            self.precondition = "transport" if self.precondition else "none"
        if self.precondition not in PRECONDITIONERS:
            raise ZooError(f"AIS precondition must be one of {', '.join(PRECONDITIONERS)}, got {self.precondition!r}")
        if self.schedule not in ("sigmoid", "linear"):
            raise ZooError(f"AIS schedule must be sigmoid or linear, got {self.schedule!r}")
        if not (0.0 < float(self.target_accept) < 1.0) or not (float(self.initial_step_size) > 0.0) \
                or not math.isfinite(float(self.initial_step_size)):
            raise ZooError("AIS target_accept must lie in (0, 1) and initial_step_size be a positive number")

    @property
    def betas(self) -> torch.Tensor:
        if self.schedule == "linear":
            return torch.linspace(0.0, 1.0, self.num_temperatures + 1, dtype=torch.float64)
        return sigmoid_schedule(self.num_temperatures)

    def settings(self) -> Dict:
        return {"num_temperatures": self.num_temperatures, "num_chains": self.num_chains, "path": self.path,
                "schedule": self.schedule, "leapfrog_steps": self.leapfrog_steps,
                "target_accept": self.target_accept, "pilot_chains": self.pilot_chains,
                "initial_step_size": self.initial_step_size, "gibbs_max_states": self.gibbs_max_states,
                "precondition": self.precondition if self.path == "guide" else "none",
                "local_moves": self.local_moves, **({"guide_moves": True} if self.guide_moves else {})}

    # --- the annealing loop, for one minibatch ---------------------------------------------------------
    def anneal(self, chains: _Chains, values, betas: torch.Tensor, step_sizes: Optional[torch.Tensor] = None,
               adapt: bool = False):
        """Run the chains through ``betas`` (increasing for forward AIS, decreasing for reverse AIS) from the
        state ``values``: returns (sum_t (beta_t - beta_{t-1}) g(z_{t-1}) ``[C, B]``, acceptance per transition
        ``[T - 1, C, B]``, the step sizes used ``[T + 1, B]``). ``step_sizes`` are indexed by the position of
        the temperature in the forward schedule; with ``adapt`` they are learned as the chains go (the pilot)."""
        B = chains.x.shape[0]
        T = betas.shape[0] - 1
        forward = bool(betas[-1] >= betas[0])
        eps = (torch.full((T + 1, B), float(self.initial_step_size), dtype=torch.float64)
               if step_sizes is None else step_sizes.clone())
        current = torch.full((B,), float(self.initial_step_size), dtype=torch.float64)
        log_w = torch.zeros(chains.C, B, dtype=torch.float64, device=chains.x.device)
        accepts = []
        chains.mixing = _Mixing.empty(chains.C, B, chains.x.device)
        point = chains.point(values)                    # b, g and their gradients: the HMC steps carry it on
        for i in range(1, T + 1):
            log_w += (float(betas[i]) - float(betas[i - 1])) * point.g.double()
            if i == T:
                break
            beta = float(betas[i])
            position = i if forward else T - i          # this temperature's index in the forward schedule
            accept = torch.zeros(chains.C, B, device=chains.x.device)
            moves = 0
            if chains.guide_moves:
                before = point.values
                # a model with discrete latents proposes from the guide alone (as it always has); the requested guide
                # moves of real latents from the defensive mixture (_independent_mh)
                values, a = _independent_mh(chains, point.values, beta,
                                            GUIDE_MOVE_DEFENSIVE if not chains.discrete else 0.0)
                accept, moves = accept + a, moves + 1
                for site in chains.gibbs:
                    values, a = _gibbs(chains, values, beta, site)
                    accept, moves = accept + a, moves + 1
                if chains.proposed and self.local_moves:
                    values, a = local_mh(chains, values, beta, chains.proposed, self.leapfrog_steps)
                    accept, moves = accept + a, moves + 1
                if chains.discrete:
                    chains.mixing.discrete_moved(chains.discrete, before, values, beta)
                point = chains.point(values)            # the state moved: a new evaluation
            if chains.real:
                e = current if adapt else eps[position]
                point, a = _hmc(chains, point, beta, e.to(chains.x.device), self.leapfrog_steps)
                chains.mixing.hmc_moved(a)
                if adapt:
                    eps[position] = current
                    rate = a.double().mean(0).cpu()
                    current = current * torch.exp(rate - self.target_accept)
                accept, moves = accept + a, moves + 1
            accepts.append((accept / max(moves, 1)).detach())
        acceptance = torch.stack(accepts) if accepts else torch.zeros(0, chains.C, B)
        return log_w, acceptance, eps

    def pilot(self, model, guide, x, idx, N) -> Optional[torch.Tensor]:
        """The step size of each temperature and datum ``[T + 1, B]``, adapted in a separate run."""
        if not any(s.support == "real" or s.support in MANIFOLDS for s in model.latents) or self.pilot_chains == 0:
            return None
        chains = _Chains(model, guide, x, idx, N, self.pilot_chains, self.path, self.gibbs_max_states, self.precondition,
                         self.guide_moves)
        _, _, eps = self.anneal(chains, chains.draw_initial(), self.betas, adapt=True)
        return eps

    def estimate(self, model, guide, x: torch.Tensor, progress: Optional[Callable[[int], None]] = None, *,
                 seed: Optional[int] = None, done: Optional[Dict[int, Dict[str, torch.Tensor]]] = None,
                 on_batch: Optional[Callable[[int, Dict[str, torch.Tensor]], None]] = None) -> AISResult:
        """log p(x_n) per datum of ``x`` ``[n, D]`` (module docstring). ``progress(done)`` is called after each
        minibatch.

        With ``seed``, each minibatch draws from a seed of its own (``seed`` + the index of its first datum), so
        its figures do not depend on the minibatches before it. That makes a long run resumable: ``on_batch(first
        index, figures)`` is called after each minibatch run here, and ``done`` ({first index: figures}, as
        ``on_batch`` got them) are minibatches finished before, taken as they are; a run stopped and resumed so
        gives the figures of a run without a stop, bit for bit."""
        from guides.user import as_zoo_guide
        if x.shape[0] == 0:
            raise ZooError("AIS got no data to evaluate")
        guide = as_zoo_guide(guide, model)
        check_annealing(model, "AIS", guide, self.path, self.guide_moves)
        refuse_oversized_annealing(self.num_temperatures, self.num_chains, min(self.batch_size, x.shape[0]),
                                   x[0].numel(), x.device)
        map_torch_constants()                    # once per process: zoo.core.process
        guide, start = annealing_start(guide, self.path)
        global_guide = getattr(guide, "global_guide", None)
        # the chains differentiate with respect to the latents alone: the parameters record no graph
        with held_fixed(model, guide), torch.no_grad(), user_code_errors(model.display_name, "in AIS"):
            if global_guide is None:
                result = self._estimate(model, guide, x, progress, seed, done or {}, on_batch)
            else:
                with global_guide.at_point_estimate():
                    result = self._estimate(model, guide, x, progress, seed, done or {}, on_batch)
        result.settings["start"] = start
        return result

    def minibatch(self, model, guide, x: torch.Tensor, idx: torch.Tensor, N: int) -> Dict[str, torch.Tensor]:
        """The figures of one minibatch ``x[idx]`` (CPU tensors): per datum ``log_likelihood``, ``se``, ``ess``,
        ``acceptance``; ``acceptance_sum`` ``[T - 1]`` summed over its data and chains; the pilot's ``step_sizes``
        ``[T + 1, B]`` (empty without real latents)."""
        xb = x[idx]
        step_sizes = self.pilot(model, guide, xb, idx, N)
        chains = _Chains(model, guide, xb, idx, N, self.num_chains, self.path, self.gibbs_max_states, self.precondition,
                         self.guide_moves)
        log_w, acceptance, eps = self.anneal(chains, chains.draw_initial(), self.betas, step_sizes)
        ll, se, ess = log_mean_exp_and_se(log_w)
        se = rounding_floor(se, ll, xb.dtype)       # the weights are sums of float32 log-densities
        return {"log_likelihood": ll.cpu(), "se": se.cpu(), "ess": ess.cpu(),
                "acceptance": (acceptance.double().mean((0, 1)).cpu() if acceptance.numel()
                               else torch.ones(xb.shape[0], dtype=torch.float64)),
                **chains.mixing.figures(),
                "acceptance_sum": acceptance.double().sum(2).sum(1).cpu(),
                "step_sizes": eps.cpu() if step_sizes is not None else torch.zeros(0, dtype=torch.float64)}

    def transported_sites(self, model, guide, x: torch.Tensor, N: int) -> List[str]:
        """The real sites the chains move through the guide's reparameterization (module docstring), read on the
        first minibatch of ``x`` without touching the random stream; empty unless the preconditioner is the
        transport map and the path the guide's."""
        if self.precondition != "transport" or self.path != "guide":
            return []
        idx = torch.arange(min(self.batch_size, x.shape[0]), device=x.device)
        with torch.random.fork_rng(devices=[x.device] if x.device.type == "cuda" else []):
            return list(_Chains(model, guide, x[idx], idx, N, 1, self.path, self.gibbs_max_states,
                                self.precondition).transported)

    def _estimate(self, model, guide, x, progress, seed, done, on_batch) -> AISResult:
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

        def joined(key):
            return torch.cat([b[key] for b in batches])
        per_t = (torch.stack([b["acceptance_sum"] for b in batches]).sum(0) / (n * self.num_chains)
                 if batches[0]["acceptance_sum"].numel() else None)
        steps = (torch.cat([b["step_sizes"] for b in batches], dim=1).median(1).values.tolist()
                 if batches[0]["step_sizes"].numel() else [None] * (self.num_temperatures + 1))
        return AISResult(joined("log_likelihood"), joined("se"), joined("ess"), joined("acceptance"),
                         per_t.tolist() if per_t is not None else [], steps[1:self.num_temperatures],
                         {**self.settings(), "num_chains": self.num_chains,
                          "transported": self.transported_sites(model, guide, x, n)},
                         *(joined(k) if all(k in b for b in batches) else None for k in MIXING_FIELDS))


