"""The defensive importance-sampling proposal of the evaluation harness (Hesterberg 1995).

Importance sampling of log p(x) with the trained guide q(z | x) as proposal is consistent, but where q
is narrower than the posterior (a mean-field q of a correlated posterior) or gives some discrete state
almost no probability, the weights w = p(x, z) / q(z | x) are heavy-tailed or miss mass that q never
draws: the estimate then sits many of its own delta-method standard errors below log p(x), and the
standard error says nothing of it. The defensive proposal mixes q with an over-dispersed copy::

    q_def(z | x) = (1 - alpha) q(z | x) + alpha q_wide(z | x)
    log w_k      = log p(x, z_k) - logsumexp(log(1 - alpha) + log q(z_k | x), log alpha + log q_wide(z_k | x))

so that w <= p(x, z) / (alpha q_wide(z | x)): bounded wherever q_wide's tails are heavier than the
posterior's. q_wide is q site by site, in the guide's own order and conditioning (a structured
guide's q(z2 | z1, x) is widened given the z1 drawn), hence a normalized density:

- a Normal (diagonal, full or low-rank covariance): a Student-t (``df`` degrees of freedom; a Normal if
  ``df`` is None) at the same location with the scale multiplied by ``inflation``. Its polynomial
  tails bound the weights against any Gaussian-tailed posterior, however correlated;
- a transformed Normal (an IAF, a constrained site's log-Normal): the base widened, the same transforms;
- Bernoulli, categorical, one-hot and joint discrete sites: uniform over the states, so that q_def gives
  every state at least alpha / (number of states);
- a site on the sphere (vMF, Power Spherical): the uniform on the sphere, so that w <= p(x, z) |S^(d-1)| / alpha;
- a wrapped normal on hyperbolic space: the wrapped normal at the same point with the scale multiplied by
  ``inflation`` (Gaussian tails in the tangent space);
- any other distribution (a point mass, a user's own): kept as q (named in ``sites_kept``).

**Deterministic allocation.** Of the K draws per datum, the first ``n_q = K - n_wide`` come from q and
the last ``n_wide = round(alpha K)`` from q_wide, and the weights use the mixture with
alpha = n_wide / K exactly: the balance-heuristic estimator of multiple importance sampling (Veach &
Guibas 1995; Owen & Zhou 2000), unbiased for p(x), with a variance no larger than that of i.i.d. draws
from q_def. Its delta-method standard error is the stratified one (:func:`log_mean_weight`). The
n_q draws from q are exact samples of the guide, so the figures that belong to q itself (ELBO,
reconstruction, KL, IWAE-k, active units) are computed from them alone and keep their meaning.

References: T. Hesterberg, "Weighted average importance sampling and defensive mixture distributions",
Technometrics 37(2), 1995. A. B. Owen and Y. Zhou, "Safe and effective importance sampling", JASA 95, 2000.

Example::

    >>> import torch
    >>> from zoo.models import PPCA
    >>> from zoo.registry import build_guide
    >>> model = PPCA(x_dim=5, latent_dim=2)
    >>> guide = build_guide("amortized", model, hidden=(8,))
    >>> draws = DefensiveProposal().draw(model, guide, torch.randn(3, 5), torch.arange(3), 3, num_samples=100)
    >>> draws.log_w.shape, draws.num_q
    (torch.Size([100, 3]), 90)
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Dict, List, Optional, Tuple

import pyro.distributions as dist
import torch
import torch.distributions as D
from pyro.distributions.torch_distribution import TorchDistribution
from pyro.poutine.messenger import Messenger

from zoo.core.distributions import JointDiscrete
from zoo.core.errors import ZooError
from zoo.core.hyperbolic import WrappedNormal
from zoo.core.spherical import HypersphericalUniform, PowerSpherical, VonMisesFisher
from zoo.core.plates import MAX_PLATE_NESTING
from zoo.core.weights import LogWeights, is_subsample_site, masked_log_prob, per_datum_log_weights
from zoo.rules import DEFENSIVE_NEEDS_PARTICLES

__all__ = ["DefensiveProposal", "GUIDE_PROPOSAL", "PROPOSALS", "Draws", "widen", "log_mean_weight",
           "as_proposal"]

#: the ``eval_proposal`` names: the defensive mixture (the default) or the guide itself
PROPOSALS = ("defensive", "guide")


def widen(q, inflation: float, df: Optional[float]):
    """q_wide for one site's q (module docstring), or ``None`` where no over-dispersed form is defined. Families
    are matched on torch's classes, which Pyro's subclass."""
    if isinstance(q, D.Independent):
        inner = widen(q.base_dist, inflation, df)
        return None if inner is None else dist.Independent(inner, q.reinterpreted_batch_ndims)
    if isinstance(q, D.TransformedDistribution):
        base = widen(q.base_dist, inflation, df)
        return None if base is None else dist.TransformedDistribution(base, q.transforms)
    if isinstance(q, D.Normal):
        scale = inflation * q.scale
        return dist.Normal(q.loc, scale) if df is None else StudentT(df, q.loc, scale)
    if isinstance(q, (D.MultivariateNormal, D.LowRankMultivariateNormal)):
        scale_tril = inflation * (q.scale_tril if isinstance(q, D.MultivariateNormal)
                                  else torch.linalg.cholesky(q.covariance_matrix))
        return (dist.MultivariateNormal(q.loc, scale_tril=scale_tril) if df is None
                else dist.MultivariateStudentT(df, q.loc, scale_tril))
    if isinstance(q, D.Bernoulli):
        return dist.Bernoulli(probs=torch.full_like(q.probs, 0.5))
    if isinstance(q, D.Categorical):
        return dist.Categorical(logits=torch.zeros_like(q.logits))
    if isinstance(q, D.OneHotCategorical):
        return dist.OneHotCategorical(logits=torch.zeros_like(q.logits))
    if isinstance(q, JointDiscrete):
        base = widen(q.base, inflation, df)
        return None if base is None else JointDiscrete(base)
    if isinstance(q, (VonMisesFisher, PowerSpherical)):
        return HypersphericalUniform(q.dim, q.batch_shape, q.loc.device, q.loc.dtype)
    if isinstance(q, WrappedNormal):
        return WrappedNormal(q.loc, q.scale * inflation)
    return None


class StudentT(dist.StudentT):
    """Pyro's Student-t with one number of degrees of freedom for every coordinate, scored with that number.

    torch broadcasts ``df`` to the batch shape, so its ``log_prob`` takes two ``lgamma`` and a ``log`` of a
    tensor the size of every draw (427 x 50 x 50 per chunk of IS on MNIST) to compute one constant. Here the
    normaliser's df terms are computed once, in Python; the density is the same to float rounding
    (``tests/test_defensive_is.py``)::

        log t_df(x; mu, s) = -(df + 1)/2 log(1 + y^2 / df) - log s - [log(df pi)/2 + lgamma(df/2) - lgamma((df + 1)/2)],
        y = (x - mu) / s
    """

    def __init__(self, df: float, loc, scale, validate_args=None):
        super().__init__(df, loc, scale, validate_args=validate_args)
        self._df = float(df)

    def expand(self, batch_shape, _instance=None):
        new = super().expand(batch_shape, self._get_checked_instance(StudentT, _instance))
        new._df = self._df
        return new

    def log_prob(self, value):
        if self._validate_args:
            self._validate_sample(value)
        df = self._df
        y = (value - self.loc) / self.scale
        constant = 0.5 * math.log(df * math.pi) + math.lgamma(0.5 * df) - math.lgamma(0.5 * (df + 1.0))
        return -0.5 * (df + 1.0) * torch.log1p(y * y / df) - self.scale.log() - constant


class _Stratified(TorchDistribution):
    """One guide site under the deterministic allocation: a draw comes from q_wide in the particle rows
    ``wide_rows`` and from q elsewhere; ``log_prob`` is q's own (the harness's figures of q read it), and
    q_wide's density at the same value is ``wide.log_prob``. A transformed distribution is stratified in
    its base space and pushed once through the shared transforms, so both densities reuse their cache."""

    arg_constraints = {}

    def __init__(self, q, wide, wide_rows: torch.Tensor, stratum: Optional[str] = None):
        self.q, self.wide, self.wide_rows = q, wide, wide_rows
        # "q" or "wide" where every row of the chunk comes from one of them (the chunks are cut at the strata's
        # border): only that one is drawn. A Student-t draw costs a Gamma variate per coordinate, so drawing q_wide
        # for every row and keeping a tenth would spend most of the sampling on draws thrown away
        self.stratum = stratum
        super().__init__(q.batch_shape, q.event_shape, validate_args=False)

    @property
    def support(self):
        return self.q.support

    @property
    def mean(self):
        return self.q.mean

    def expand(self, batch_shape, _instance=None):
        return _Stratified(self.q.expand(batch_shape), self.wide.expand(batch_shape), self.wide_rows, self.stratum)

    def _rows(self, like: torch.Tensor, event_dims: int) -> torch.Tensor:
        """``wide_rows`` ``[K]`` shaped to broadcast against a draw whose particle dim is the data plate's left."""
        batch_dims = like.dim() - event_dims
        lead = batch_dims - (MAX_PLATE_NESTING + 1)
        if lead < 0 or like.shape[lead] != self.wide_rows.numel():
            raise DEFENSIVE_NEEDS_PARTICLES.error(f"a guide site of batch shape {tuple(like.shape[:batch_dims])} "
                                                  f"has no dimension of the {self.wide_rows.numel()} particles")
        return self.wide_rows.reshape((1,) * lead + (-1,) + (1,) * (batch_dims - lead - 1 + event_dims))

    def sample(self, sample_shape=torch.Size()):
        if self.stratum is not None:
            return (self.q if self.stratum == "q" else self.wide).sample(sample_shape)
        if isinstance(self.q, D.TransformedDistribution):
            base_q, base_wide = self.q.base_dist.sample(sample_shape), self.wide.base_dist.sample(sample_shape)
            value = torch.where(self._rows(base_q, len(self.q.base_dist.event_shape)), base_wide, base_q)
            for t in self.q.transforms:
                value = t(value)
            return value
        value_q, value_wide = self.q.sample(sample_shape), self.wide.sample(sample_shape)
        return torch.where(self._rows(value_q, len(self.event_shape)), value_wide, value_q)

    def log_prob(self, value):
        return self.q.log_prob(value)


class _Defended(Messenger):
    """Replaces each guide site inside the data plate by its :class:`_Stratified` form and records q_wide's
    log-density at the value drawn, per site (``log_q_wide``)."""

    def __init__(self, proposal: "DefensiveProposal", wide_rows: torch.Tensor, stratum: Optional[str] = None):
        super().__init__()
        self.proposal, self.wide_rows, self.stratum = proposal, wide_rows, stratum
        self.log_q_wide: Dict[str, torch.Tensor] = {}
        self.widened: Dict[str, str] = {}
        self.kept: List[str] = []

    def _process_message(self, msg):
        if msg["type"] != "sample" or msg["is_observed"] or is_subsample_site(msg) \
                or not any(f.name == "data" for f in msg["cond_indep_stack"]):
            return
        wide = widen(msg["fn"], self.proposal.inflation, self.proposal.df)
        if wide is None:
            self.kept.append(msg["name"])
            return
        self.widened[msg["name"]] = type(wide.base_dist if isinstance(wide, dist.Independent) else wide).__name__
        msg["fn"] = _Stratified(msg["fn"], wide, self.wide_rows, self.stratum)

    def _postprocess_message(self, msg):
        if isinstance(msg["fn"], _Stratified):
            self.log_q_wide[msg["name"]] = msg["fn"].wide.log_prob(msg["value"])


@dataclass
class Draws:
    """K draws per datum of a minibatch: the chunks of :class:`~zoo.core.weights.LogWeights` (q's own
    log-densities), the first ``num_q`` draws from q, and ``log_w`` ``[K, B]``, the weights under the
    proposal (q_def, or q itself)."""

    parts: List[LogWeights]
    num_q: int
    log_w: torch.Tensor
    widened: Dict[str, str] = field(default_factory=dict)
    kept: List[str] = field(default_factory=list)

    def of_q(self, values: torch.Tensor) -> torch.Tensor:
        """The rows of a ``[K, ...]`` tensor drawn from q itself."""
        return values[:self.num_q]


@dataclass(frozen=True)
class DefensiveProposal:
    """q_def = (1 - alpha) q + alpha q_wide (module docstring); ``alpha = 0`` is the guide itself.

    Arguments:
        alpha: the share of draws from q_wide.
        inflation: q_wide's scale over q's, for continuous sites.
        df: q_wide's Student-t degrees of freedom for continuous sites (None: a Normal).
    """

    alpha: float = 0.1
    inflation: float = 2.0
    df: Optional[float] = 5.0

    def allocation(self, num_samples: int) -> Tuple[int, int]:
        """(n_q, n_wide): each stratum needs two draws for its variance, so fewer draws than that use q alone."""
        n_wide = int(round(self.alpha * num_samples))
        if n_wide < 2 or num_samples - n_wide < 2:
            return num_samples, 0
        return num_samples - n_wide, n_wide

    def to_json(self, num_samples: int) -> Dict:
        """What results.json records of the proposal behind ``log_likelihood``, its SE and k-hat."""
        n_q, n_wide = self.allocation(num_samples)
        if self.alpha == 0:
            return {"kind": "guide", "alpha": 0.0, "draws_q": n_q, "draws_wide": 0}
        return {"kind": "defensive", "alpha": self.alpha, "alpha_used": n_wide / num_samples,
                "inflation": self.inflation, "df": self.df,
                "continuous": (f"Student-t (df {self.df:g})" if self.df is not None else "Normal")
                + f" at q's location, scale x{self.inflation:g}",
                "discrete": "uniform over the states: each state has probability >= alpha / number of states",
                "sphere": "uniform on the sphere",
                "hyperbolic": f"wrapped normal at q's location, scale x{self.inflation:g}",
                "draws_q": n_q, "draws_wide": n_wide,
                "applies_to": "log_likelihood, its standard error and the PSIS k-hats; ELBO, KL and IWAE-k use the "
                              "draws from q alone, and a model's single-view estimates log p^(x_v) the proposal "
                              "q(z | x_v) alone",
                "reference": "Hesterberg 1995, defensive mixture; deterministic allocation, balance heuristic"}

    def draw(self, model, guide, x: torch.Tensor, idx: torch.Tensor, N: int, num_samples: int,
             max_elements: int = 1 << 24, keep_observations: Optional[int] = None) -> Draws:
        """K = ``num_samples`` draws per datum of ``x = data[idx]`` in particle chunks of at most ``max_elements``
        decoder outputs; the first n_q from q, the rest from q_wide (:meth:`allocation`).

        ``keep_observations``: how many of the first chunks keep p(x | z) (``x_dist``: for a Bernoulli decoder its
        ``K x B x D`` logits, 67 MB a chunk at the harness's bound); ``None``, all of them. The others drop it once
        their weights are formed, so each one's decoder output is freed as the next is made, and memory stays at a
        chunk's outputs, not K's."""
        n_q, n_wide = self.allocation(num_samples)
        per_particle = x.shape[0] * max(1, x.shape[1])
        chunk = max(1, min(num_samples, max_elements // per_particle))
        parts, log_w, widened, kept, done = [], [], {}, [], 0
        while done < num_samples:
            # a chunk ends at the border of the strata, so each chunk draws from q alone or from q_wide alone
            k = min(chunk, num_samples - done, *([n_q - done] if done < n_q else []))
            rows = torch.arange(done, done + k, device=x.device) >= n_q
            if not n_wide:
                lw = per_datum_log_weights(model, guide, x, idx=idx, N=N, num_particles=k)
                log_w.append(lw.log_w)
            else:
                defended = _Defended(self, rows, "q" if done < n_q else "wide")
                lw = per_datum_log_weights(model, defended(guide), x, idx=idx, N=N, num_particles=k)
                log_q_wide = _swap_sites(lw, {name: masked_log_prob(wide, lw.site_q_mask.get(name))   # masked where
                                              for name, wide in defended.log_q_wide.items()})      # q's density was
                log_q_def = torch.logaddexp(math.log1p(-n_wide / num_samples) + lw.log_q,
                                            math.log(n_wide / num_samples) + log_q_wide)
                log_w.append(lw.log_likelihood + lw.log_prior - log_q_def)
                widened.update(defended.widened)
                kept += [name for name in defended.kept if name not in kept]
            keep = keep_observations is None or len(parts) < keep_observations
            parts.append(lw if keep else replace(lw, x_dist=None))
            done += k
        return Draws(parts, n_q, torch.cat(log_w), widened, kept)


def _swap_sites(lw, wide: Dict[str, torch.Tensor]) -> torch.Tensor:
    """log q_wide(z | x): log q with each widened site's term replaced by q_wide's. Summed from the sites' terms
    rather than as log q - log q_s + log q_wide_s, which is inf - inf (NaN) where q gives a draw of q_wide no
    density at all (a Power Spherical at the antipode of its mean, a uniform draw landed there)."""
    terms = {**lw.site_log_q, **wide}
    total = sum(torch.broadcast_tensors(lw.log_q, *terms.values())[1:])
    rest = lw.log_q - sum(torch.broadcast_tensors(lw.log_q, *lw.site_log_q.values())[1:])   # terms of no site
    return total + torch.where(torch.isfinite(rest), rest, torch.zeros_like(rest))


#: the guide itself as the proposal (``--eval-proposal guide``)
GUIDE_PROPOSAL = DefensiveProposal(alpha=0.0)


def as_proposal(proposal) -> DefensiveProposal:
    """A :class:`DefensiveProposal` from one of :data:`PROPOSALS` or an instance."""
    if isinstance(proposal, DefensiveProposal):
        return proposal
    if proposal == "defensive":
        return DefensiveProposal()
    if proposal == "guide":
        return GUIDE_PROPOSAL
    raise ZooError(f"the evaluation proposal must be one of {', '.join(PROPOSALS)}, got {proposal!r}")


def log_mean_weight(log_w: torch.Tensor, num_q: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """log (1/K) sum_k w_k per datum and its delta-method standard error, from ``log_w`` ``[K, B]`` whose first
    ``num_q`` rows are one stratum and the rest the other.

    With strata j of n_j = f_j K draws, mu^ = sum_j f_j mu^_j and Var(mu^) = sum_j f_j^2 s_j^2 / n_j
    = (1/K) sum_j f_j s_j^2, so se(log mu^) = sqrt(sum_j f_j s_j^2 / K) / mu^; with one stratum this is
    sqrt((mean(w^2) / mean(w)^2 - 1) / K)."""
    K = log_w.shape[0]
    log_mean = torch.logsumexp(log_w, 0) - math.log(K)
    variance = torch.zeros_like(log_mean)
    for rows in ((log_w[:num_q], log_w[num_q:]) if 0 < num_q < K else (log_w,)):
        n = rows.shape[0]
        m1 = torch.logsumexp(rows, 0) - math.log(n)
        m2 = torch.logsumexp(2 * rows, 0) - math.log(n)
        # s_j^2 / mu^2 = (mu_j / mu)^2 (m2_j / mu_j^2 - 1), the difference taken by expm1 (nearly equal weights)
        relative = torch.exp(2 * (m1 - log_mean)) * torch.expm1(m2 - 2 * m1)
        variance = variance + (n / K) * torch.clamp(relative, min=0)
    return log_mean, torch.sqrt(variance / K)
