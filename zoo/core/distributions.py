"""Discrete latent distributions whose joint support can be enumerated.

A binary latent z in {0,1}^K is ``Bernoulli(logits).to_event(1)`` and a block of N
categorical latents with K classes is ``OneHotCategorical(logits).to_event(1)``.
torch's ``Independent`` cannot enumerate its support (it would have to list the
joint configurations of the event), so Pyro's TraceEnum_ELBO cannot sum over it.
:class:`JointDiscrete` is the same distribution with that one ability added:
``enumerate_support`` lists all 2^K (or K^N) joint configurations, so exact sums
over small latent spaces (the ``enum`` objective, exact log p(x)) work through
Pyro's own enumeration machinery.

Example::

    >>> import torch
    >>> d = JointDiscrete(torch.distributions.Bernoulli(logits=torch.zeros(3)))
    >>> d.enumerate_support().shape
    torch.Size([8, 3])

Three distributions are here for speed alone: :class:`IndependentBernoulli`, the likelihood of binary pixels,
and :class:`StandardNormal`, the N(0, I) prior, each with torch's numbers in fewer operations, and
:class:`ShapedIndependent`, the guides' ``Normal(loc, scale).to_event(n)``, which a plate does not copy.
"""
from __future__ import annotations

import contextlib
import functools
import itertools
import math

import pyro.distributions as dist
import torch
import torch.nn.functional as F
from pyro.distributions import TorchDistribution
from torch.distributions import Bernoulli, OneHotCategorical, constraints

from zoo.core.errors import ZooError
from zoo.core.kernels import FUSED_GRAD_MIN_ELEMENTS, FUSED_MIN_ELEMENTS, bernoulli_log_prob

__all__ = ["JointDiscrete", "IndependentBernoulli", "ShapedIndependent", "StandardNormal", "capturing", "is_capturing", "ENUMERATION_LIMIT", "discrete_kl", "joint_configurations",
           "num_configurations"]

#: The largest joint latent space summed exactly (2^16 configurations).
ENUMERATION_LIMIT = 2 ** 16


def num_configurations(base) -> int:
    """How many joint values one event of ``base`` (Bernoulli or OneHotCategorical, event = last
    batch dim for Bernoulli, last two dims for a block of categoricals) can take."""
    if isinstance(base, Bernoulli):
        return 2 ** base.batch_shape[-1]
    return base.event_shape[-1] ** base.batch_shape[-1]


def joint_configurations(kind: str, shape, device=None, dtype=torch.float32) -> torch.Tensor:
    """All joint values of a binary vector of length ``shape[0]`` (kind ``"binary"``) or of
    ``shape[0]`` one-hot vectors of length ``shape[1]`` (kind ``"categorical"``): ``[C, *shape]``."""
    if kind == "binary":
        (k,) = shape
        bits = torch.tensor(list(itertools.product((0.0, 1.0), repeat=k)), dtype=dtype, device=device)
        return bits.reshape(-1, k)
    n, k = shape
    eye = torch.eye(k, dtype=dtype, device=device)
    index = torch.tensor(list(itertools.product(range(k), repeat=n)), device=device).reshape(-1, n)
    return eye[index]


class JointDiscrete(TorchDistribution):
    """``base.to_event(1)`` for a Bernoulli or OneHotCategorical ``base``, with an enumerable joint support.

    Arguments:
        base: ``Bernoulli`` with batch shape ``[..., K]`` (K bits per event) or
            ``OneHotCategorical`` with batch shape ``[..., N]`` and event ``[K]``.
    """

    arg_constraints = {}
    has_enumerate_support = True

    def __init__(self, base, validate_args=None):
        if not isinstance(base, (Bernoulli, OneHotCategorical)):
            raise TypeError("JointDiscrete wraps a Bernoulli or OneHotCategorical")
        self.base = base
        self.kind = "binary" if isinstance(base, Bernoulli) else "categorical"
        batch_shape = base.batch_shape[:-1]
        event_shape = base.batch_shape[-1:] + base.event_shape
        super().__init__(batch_shape, event_shape, validate_args=False)

    @property
    def support(self):
        return constraints.independent(self.base.support, 1)

    @property
    def logits(self):
        return self.base.logits

    @property
    def mean(self):
        return self.base.mean

    def expand(self, batch_shape, _instance=None):
        batch_shape = torch.Size(batch_shape)
        return JointDiscrete(self.base.expand(batch_shape + self.base.batch_shape[-1:]))

    def sample(self, sample_shape=torch.Size()):
        return self.base.sample(sample_shape)

    def log_prob(self, value):
        return self.base.log_prob(value).sum(-1)

    def entropy(self):
        return self.base.entropy().sum(-1)

    def enumerate_support(self, expand=True):
        count = num_configurations(self.base)
        if count > ENUMERATION_LIMIT:
            raise ZooError(f"exact enumeration of this latent needs {count:.3g} configurations, more than the "
                           f"limit {ENUMERATION_LIMIT}; use a sampling objective (elbo, tracegraph, rws) instead")
        values = joint_configurations(self.kind, tuple(self.event_shape), self.base.logits.device,
                                      self.base.logits.dtype)
        values = values.reshape((values.shape[0],) + (1,) * len(self.batch_shape) + tuple(self.event_shape))
        if expand:
            values = values.expand((values.shape[0],) + self.batch_shape + self.event_shape)
        return values


class IndependentBernoulli(dist.Independent):
    """``Bernoulli(logits=logits).to_event(1)``: independent binary pixels, scored summed over the last dim.

    The same distribution; only ``log_prob`` is computed differently. torch's Bernoulli scores each
    element as ``-binary_cross_entropy_with_logits(logits, x)`` and Independent sums afterwards, so
    the minus sign is a pass over the whole ``[K, B, D]`` array, forward and backward. Here the
    sum comes first and the sign is applied to ``[K, B]``::

        log p(x | logits) = -sum_d BCE(l_d, x_d) = sum_d [x_d l_d - softplus(l_d)]

    For the IWAE bound with K = 50 on MNIST this brought the zoo's epoch close to a hand-written
    loop's (``benchmarks/speed.py --objective iwae --particles 50``; the figure is in
    ``benchmarks/results/README.md``); for one-particle ELBOs the array is K times smaller and the
    saving small. Outside autograd, an array of :data:`~zoo.core.kernels.FUSED_MIN_ELEMENTS` logits or more (the
    evaluation's chunks of K draws on MNIST) is scored by one compiled kernel instead
    (:func:`zoo.core.kernels.bernoulli_log_prob`; ``benchmarks/bernoulli_kernel.py`` times it against torch's on a
    214 x 100 x 784 chunk: ``benchmarks/results/bernoulli_kernel.json``), and so, with its gradient x - sigmoid(l),
    is an array of :data:`~zoo.core.kernels.FUSED_GRAD_MIN_ELEMENTS` logits or more that need one (AIS's gradient
    evaluations, many-particle bounds). Torch's own path answers where the kernel does not apply: while a step is
    captured or compiled, for data that need a gradient, logits smaller than the data's shape, dtypes other than
    float32 and float64, and under forward-mode AD or ``torch.func`` transforms.
    ``mean`` (E[x | z] = sigmoid(logits)), ``sample`` and supports are torch's.

    Example::

        >>> import torch
        >>> logits, x = torch.randn(3, 5), torch.randint(0, 2, (3, 5)).float()
        >>> d = IndependentBernoulli(logits)
        >>> torch.allclose(d.log_prob(x), dist.Bernoulli(logits=logits).to_event(1).log_prob(x))
        True
    """

    def __init__(self, logits: torch.Tensor, validate_args=None):
        # Independent's own __init__ would build the base Bernoulli first, which only sampling, ``mean``, the
        # support and the like use (the likelihood of every training step is built and scored, never sampled):
        # ``base_dist`` is made when something other than ``log_prob`` first asks for it. The shapes are those Independent(Bernoulli(logits), 1) has. The validation
        # flag is this object's own (Pyro's Independent keeps it on the base): off unless validate_args=True,
        # as it was when it was read from the base built with validate_args=False.
        if logits.dim() < 1:
            raise ValueError(f"IndependentBernoulli needs logits with a pixel dim, got shape {tuple(logits.shape)}")
        self._logits, self.reinterpreted_batch_ndims = logits, 1
        TorchDistribution.__init__(self, logits.shape[:-1], logits.shape[-1:], validate_args=validate_args)

    _validate_args = False              # a plain attribute here, not Pyro's Independent's property of the base
    has_rsample = False                 # a Bernoulli's; read by every plate's broadcast, so not from the base

    @functools.cached_property
    def base_dist(self) -> dist.Bernoulli:
        return dist.Bernoulli(logits=self._logits, validate_args=self._validate_args)

    @property
    def logits(self) -> torch.Tensor:
        return self._logits

    def expand(self, batch_shape, _instance=None):
        shape = torch.Size(batch_shape) + self.event_shape
        if shape == self.logits.shape:                 # already so: the plate's broadcast (ShapedIndependent)
            return self
        return IndependentBernoulli(self.logits.expand(shape), validate_args=False)

    def _fused(self, value: torch.Tensor) -> bool:
        """Whether the compiled kernel scores ``value``: the evaluation's big chunks, and big arrays of logits that
        need a gradient (AIS, many-particle bounds) outside a captured step (whose own compilation fuses the sum)."""
        n = self._logits.numel()
        if not torch.is_grad_enabled():
            return n >= FUSED_MIN_ELEMENTS
        return (n >= FUSED_GRAD_MIN_ELEMENTS and self._logits.requires_grad and not value.requires_grad
                and not is_capturing() and not torch.compiler.is_compiling() and not torch.jit.is_tracing())

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        if self._validate_args:
            self._validate_sample(value)
        if self._fused(value):
            return bernoulli_log_prob(self.logits, value)
        logits = self._logits
        if logits.shape != value.shape:
            logits, value = torch.broadcast_tensors(logits, value)
        return -F.binary_cross_entropy_with_logits(logits, value, reduction="none").sum(-1)


_CAPTURES = [0]


@contextlib.contextmanager
def capturing():
    """While a step is captured as a graph (:mod:`zoo.objectives.compiled`): what the zoo keeps between steps (the
    N(0, I) prior, :class:`ShapedIndependent`'s expansion) is made afresh from the modules' tensors, so that the graph
    records how it is made from its inputs rather than holding the kept tensors as constants."""
    _CAPTURES[0] += 1
    try:
        yield
    finally:
        _CAPTURES[0] -= 1


def is_capturing() -> bool:
    """Whether a step is being captured (:func:`capturing`)."""
    return _CAPTURES[0] > 0


class ShapedIndependent(dist.Independent):
    """Pyro's ``Independent``, except that a plate's broadcast does not rebuild it on every step.

    Every ``pyro.plate`` broadcasts each sample site inside it: it calls ``fn.expand(batch_shape)`` with the
    plates' sizes, and torch's ``Independent.expand`` builds a new ``Independent`` around a new base (a new
    ``Normal`` with its ``loc`` and ``scale`` expanded) even when the shape is already that one. Here:

    - expanded to the batch shape it already has, it returns itself. A guide's q of a datum's latents is
      already shaped ``[B]`` by the encoder, so that copy was all the broadcast did;
    - another shape is torch's ``expand``, kept for the next call with the same shape. The N(0, I) prior is one
      such object per model (:class:`zoo.models.priors.StandardPrior`), expanded to ``[B]`` by every step's plate.

    Each costs a few microseconds a site on each step (``benchmarks/step_overhead.py --small``), for the zoo's loop
    and for Pyro's own ``Trace_ELBO`` alike. Nothing the zoo or Pyro's ELBOs run modifies a distribution once made, so
    the same object serves (Pyro's own ``ExpandedDistribution.expand`` returns itself too). What would not: wrapping
    one in Pyro's ``dist.Independent(...)`` and expanding that to its own shape, since Pyro's ``Independent`` sets its
    base's validation flag as it expands (``.to_event`` unwraps instead, and is safe). While a step is captured as a
    graph (:func:`capturing`), no expansion is kept.

    Example::

        >>> d = ShapedIndependent(dist.Normal(torch.zeros(4, 3), torch.ones(4, 3)), 1)
        >>> d.expand((4,)) is d, d.expand((2, 4)).batch_shape, d.expand((2, 4)) is d.expand((2, 4))
        (True, torch.Size([2, 4]), True)
    """

    _last_expansion = None

    def expand(self, batch_shape, _instance=None):
        batch_shape = torch.Size(batch_shape)
        if _instance is not None:
            return super().expand(batch_shape, _instance)
        if batch_shape == self.batch_shape:
            return self
        last = self._last_expansion
        if last is None or last[0] != batch_shape or is_capturing():
            last = (batch_shape, super().expand(batch_shape))
            if not is_capturing():
                self._last_expansion = last
        return last[1]


class StandardNormal(dist.Normal):
    """N(0, 1) elementwise, batched as its ``loc`` (zeros) and ``scale`` (ones): the VAE's N(0, I) prior.

    Why not ``Normal(0, 1)``: torch's ``Normal.log_prob`` takes nine operations for a general loc and scale
    (the scale squared, its log, the standardized square, ...), and as many nodes in the backward pass; at
    loc 0 and scale 1 the log-density is -z^2/2 - log sqrt(2 pi), three. At the small models' sizes each
    operation costs microseconds of fixed overhead, a step's share of them (``benchmarks/step_overhead.py
    --small``). Everything else (sampling, ``expand``, the registered KLs, ``mean``, ``entropy``) is
    ``Normal``'s, which this is (a subclass): construct it with loc 0 and scale 1 only.

    Example::

        >>> z = torch.randn(4, 3)
        >>> d = StandardNormal(torch.zeros(3), torch.ones(3))
        >>> torch.allclose(d.log_prob(z), dist.Normal(0.0, 1.0).log_prob(z))
        True
    """

    _LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        if self._validate_args:
            self._validate_sample(value)
        lp = value.pow(2).mul(-0.5).sub(self._LOG_SQRT_2PI)
        if lp.shape == self.batch_shape:
            return lp
        return lp.expand(torch.broadcast_shapes(lp.shape, self.batch_shape))


def discrete_kl(p, q) -> torch.Tensor:
    """KL(p || q) of two Bernoulli or two OneHotCategorical distributions, from their logits.

    Why not ``torch.distributions.kl_divergence``: it sets the KL to +inf wherever q's
    *probabilities* round to 0 or 1, and in float32 ``sigmoid(l)`` is exactly 1 from l ≈ 17 on.
    A learned prior of a unit the encoder always switches on (or off) drifts there, and the
    relaxed objective's loss became inf after 65,000 steps (SBN-200 with MLP maps, Gumbel-softmax).
    Written with softplus / log-softmax the KL stays finite for every finite logit:

        Bernoulli:    p * (softplus(-l_q) - softplus(-l_p)) + (1 - p) * (softplus(l_q) - softplus(l_p))
        categorical:  sum_k p_k * (log p_k - log q_k)
    """
    if isinstance(p, Bernoulli) and isinstance(q, Bernoulli):
        lp, lq = p.logits, q.logits
        return (torch.sigmoid(lp) * (F.softplus(-lq) - F.softplus(-lp))
                + torch.sigmoid(-lp) * (F.softplus(lq) - F.softplus(lp)))
    if isinstance(p, OneHotCategorical) and isinstance(q, OneHotCategorical):
        log_p, log_q = p.logits.log_softmax(-1), q.logits.log_softmax(-1)
        return (log_p.exp() * (log_p - log_q)).sum(-1)
    raise NotImplementedError(f"discrete_kl of {type(p).__name__} and {type(q).__name__}")


@torch.distributions.kl.register_kl(JointDiscrete, JointDiscrete)
def _kl_joint_discrete(p, q):
    return discrete_kl(p.base, q.base).sum(-1)

