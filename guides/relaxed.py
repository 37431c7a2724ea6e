"""Relaxed guide: Concrete / Gumbel-softmax samples for binary and categorical latents.

The amortized encoder gives logits l(x) as for the ``amortized`` guide. In training
mode a sample is relaxed, and so differentiable in l::

    binary:       z~ = sigmoid((l + logistic noise) / tau)                   RelaxedBernoulli
    categorical:  z~ = softmax((l + Gumbel noise) / tau)                     RelaxedOneHotCategorical

How the relaxed guide meets the discrete model (what the ELBO is during training) depends
on the objective, because the relaxed sites carry two facts: they *sample* Concrete
values, and their KL to the model's site is the KL of the *discrete* distributions they
relax (registered for :class:`ConcreteBernoulli` / :class:`ConcreteOneHotCategorical`):

- ``tracemeanfield`` (analytic KL; Jang et al. 2017's objective):
  E_q~[log p(x | z~)] - KL(q(z | x) || p(z)), the reconstruction at a relaxed sample z~
  and the closed-form KL between the discrete q and the discrete prior. Only the
  reconstruction term is relaxed.
- ``elbo``, ``iwae``, ``renyi`` (Monte Carlo densities; Maddison et al. 2017): the model's
  discrete sites are relaxed too, by :class:`RelaxDiscrete`, to Concrete distributions
  with the same temperature and the model's own logits, and the bound is
  E_q~[log p(x | z~) + log p~(z~) - log q~(z~ | x)] with Concrete densities: a
  reparameterized, biased surrogate that tends to the discrete problem as tau -> 0.
- ``straight_through=True`` (ST Gumbel-softmax): the forward pass uses the hard value
  (rounded / argmax), so the discrete model scores a discrete z, while gradients flow
  through the soft sample; with ``tracemeanfield`` the KL is again the discrete one,
  with ``elbo`` log q is the Concrete density of the soft sample.

Every form of discrete site a model writes is relaxed (:func:`relaxed_distribution`): the zoo's
``.to_event(1)`` blocks, one ``Bernoulli`` (event ``()``), one ``OneHotCategorical`` (event
``(K,)``), and a ``Categorical``, whose integer value is relaxed to a Gumbel-softmax over its one-hot
values. A model cannot index with a relaxed one-hot vector, so its ``Categorical`` site hands the
model's code the hard index argmax(z~), which carries the straight-through gradient of z~ through
indexing (``locs[z]``; :class:`SoftIndex`), while the site's density terms are the Concrete ones at
z~ (and the discrete KL under ``tracemeanfield``). Real sites beside discrete ones (M2's z) keep
the amortized Normal.

The temperature is annealed as tau_t = max(tau_min, tau_0 exp(-r t)) over SVI steps t
(Jang et al.'s schedule). In evaluation mode (``guide.eval()``, which the harness
sets) the guide samples the *hard* distribution it relaxes, Bernoulli(sigmoid(l)) or
OneHotCategorical(softmax(l)), so reported bounds and log p(x) are those of the true
discrete model, never of the surrogate.

References:
    C. J. Maddison, A. Mnih and Y. W. Teh, "The Concrete Distribution", ICLR 2017,
    https://arxiv.org/abs/1611.00712.
    E. Jang, S. Gu and B. Poole, "Categorical Reparameterization with Gumbel-Softmax",
    ICLR 2017, https://arxiv.org/abs/1611.01144.

Example::

    >>> from zoo.models import SBN
    >>> g = Relaxed(SBN(x_dim=6, layers=(3,)), temperature=0.5)
    >>> float(g.temperature)
    0.5
"""
from __future__ import annotations

import math
from typing import Optional, Sequence, Union

import pyro.distributions as dist
import torch
from pyro.poutine.messenger import Messenger

from dataclasses import dataclass

from guides.amortized import Amortized
from guides.base import EncoderOptions
from guides.globals import GlobalGuideOptions
from zoo.core.components import GUIDES, OptionError, option
from zoo.core.contract import Borrowed
from zoo.core.distributions import JointDiscrete, discrete_kl
from zoo.core.errors import ZooError

__all__ = ["Relaxed", "Annealing", "RelaxDiscrete", "SoftIndex", "check_schedule", "relaxed_distribution", "ConcreteBernoulli",
           "ConcreteOneHotCategorical", "ConcreteBernoulliST", "ConcreteOneHotCategoricalST"]


def _inside(value: torch.Tensor, upper: bool) -> torch.Tensor:
    """A relaxed sample kept strictly inside the simplex / unit interval for its log-density.

    In float32 a Concrete sample at a low temperature can round to exactly 0 (or 1), where
    the Concrete log-density is log(0) - log(0) = NaN. Clamping by the smallest normal
    number changes only coordinates below it (0 or subnormal), where float32 has already
    lost the density.

    A float32 Gumbel-softmax sample (torch computes it as exp of a log-softmax) can also
    sum to 1 +- 2e-6 at tau = 0.1, outside the 1e-6 tolerance of torch's simplex check, so
    with validation on its log-density raised a ValueError (a 20 x 10 categorical VAE
    annealed towards tau = 0.1 stopped at tau = 0.23, at the first step of an epoch). Renormalizing moves such a value by
    about 1e-6 and leaves valid ones unchanged to float32 precision.
    """
    value = getattr(value, "_unquantize", value)          # straight-through: the soft value
    tiny = torch.finfo(value.dtype).tiny
    if upper:
        return value.clamp(tiny, 1 - torch.finfo(value.dtype).eps / 2)
    value = value.clamp_min(tiny)
    return value / value.sum(-1, keepdim=True)


class ConcreteBernoulli(dist.RelaxedBernoulli):
    """Pyro's RelaxedBernoulli (Concrete), tagged as the relaxation of a Bernoulli: its KL
    to another one is the KL of the two discrete Bernoullis they relax (see the module doc)."""

    def log_prob(self, value):
        return super().log_prob(_inside(value, upper=True))


class ConcreteOneHotCategorical(dist.RelaxedOneHotCategorical):
    """Pyro's RelaxedOneHotCategorical (Gumbel-softmax), tagged as the relaxation of a
    OneHotCategorical: its KL to another one is the discrete categorical KL."""

    def log_prob(self, value):
        return super().log_prob(_inside(value, upper=False))


class ConcreteBernoulliST(dist.RelaxedBernoulliStraightThrough):
    """Straight-through Concrete: hard forward value, soft gradient; KL to the discrete prior is discrete."""

    def log_prob(self, value):
        return super().log_prob(_inside(value, upper=True))


class ConcreteOneHotCategoricalST(dist.RelaxedOneHotCategoricalStraightThrough):
    """Straight-through Gumbel-softmax: hard one-hot forward value; KL to the discrete prior is discrete."""

    def log_prob(self, value):
        return super().log_prob(_inside(value, upper=False))


def _hard(d):
    """The discrete distribution a Concrete relaxation stands for (same logits); a discrete one as it
    is, with a ``Categorical`` as the ``OneHotCategorical`` of its one-hot values."""
    if isinstance(d, dist.RelaxedBernoulli):
        return torch.distributions.Bernoulli(logits=d.logits)
    if isinstance(d, (dist.RelaxedOneHotCategorical, torch.distributions.Categorical)):
        return torch.distributions.OneHotCategorical(logits=d.logits)
    return d


_RELAXED_BINARY = (ConcreteBernoulli, ConcreteBernoulliST)
_RELAXED_CATEGORICAL = (ConcreteOneHotCategorical, ConcreteOneHotCategoricalST)


def _kl_concrete_discrete(q, p):
    return discrete_kl(_hard(q), _hard(p))


# KL(q~ || p) between a Concrete site and the model's site (relaxed or not) is the KL of the discrete
# distributions they stand for (see the module doc): every pairing a relaxed guide meets.
for _q in _RELAXED_BINARY:
    for _p in _RELAXED_BINARY + (torch.distributions.Bernoulli,):
        torch.distributions.kl.register_kl(_q, _p)(_kl_concrete_discrete)
for _q in _RELAXED_CATEGORICAL:
    for _p in _RELAXED_CATEGORICAL + (torch.distributions.OneHotCategorical, torch.distributions.Categorical):
        torch.distributions.kl.register_kl(_q, _p)(_kl_concrete_discrete)


@torch.distributions.kl.register_kl(torch.distributions.Independent, JointDiscrete)
def _kl_straight_through_discrete(q, p):
    if not isinstance(q.base_dist, (ConcreteBernoulliST, ConcreteOneHotCategoricalST)) \
            or q.reinterpreted_batch_ndims != 1:
        raise NotImplementedError
    return discrete_kl(_hard(q.base_dist), p.base).sum(-1)


class SoftIndex(torch.Tensor):
    """The integer value a model's ``Categorical`` site receives from a relaxed sample: the hard index
    argmax(z~), carrying the relaxed one-hot z~ (``weights``) for a straight-through gradient.

    A model uses a category by indexing with it, ``locs[z]``. Indexing is not differentiable in an
    integer, so a Concrete relaxation of a ``Categorical`` site needs the model to read the relaxed
    one-hot z~ somehow. Here ``table[z]`` (the index alone, into the first dimension of a tensor
    ``[K, ...]``) returns the hard row in the forward pass and the gradient of the soft mixture
    sum_k z~_k table[k] with respect to z~ in the backward pass (Jang et al.'s straight-through
    Gumbel-softmax estimator):

        table[z]  =  table[argmax z~]  +  (z~ . sg(table)  -  sg(z~ . table))

    where sg stops gradients (the table itself gets the hard row's gradient only). Every other use of
    the value (comparisons, ``F.one_hot(z, K)``, arithmetic) sees the plain hard index and passes no
    gradient to the guide: write such a model with ``OneHotCategorical`` to relax it fully.
    """

    @staticmethod
    def __new__(cls, relaxed: torch.Tensor):
        out = relaxed.argmax(-1).as_subclass(cls)
        out.weights = relaxed
        return out

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.Tensor.__getitem__ and len(args) == 2 and type(args[1]) is cls \
                and type(args[0]) is not cls:
            table, index = args
            hard = table[index.as_subclass(torch.Tensor)]
            if not torch.is_floating_point(table):
                return hard
            soft = torch.tensordot(index.weights.to(table.dtype), table.detach(), dims=([-1], [0]))
            return hard + (soft - soft.detach())
        plain = lambda a: a.as_subclass(torch.Tensor) if isinstance(a, cls) else a  # noqa: E731
        args = torch.utils._pytree.tree_map(plain, args)
        kwargs = torch.utils._pytree.tree_map(plain, kwargs)
        return func(*args, **kwargs)


def check_schedule(temperature=None, temperature_min=None, anneal_rate=None) -> None:
    """Refuse a temperature schedule that is not one: tau_0, tau_min > 0 and r >= 0 (None: not given)."""
    for name, value in (("temperature", temperature), ("temperature_min", temperature_min)):
        if value is not None and not value > 0:
            raise OptionError(name, f"must be positive (the relaxed guide's Concrete temperature, e.g. 0.5), "
                              f"got {value}")
    if anneal_rate is not None and not anneal_rate >= 0:
        raise OptionError("anneal_rate", f"must be >= 0, got {anneal_rate}")


@dataclass(frozen=True)
class Annealing:
    """The Concrete temperature's schedule: tau_t = max(``minimum``, ``start`` exp(-``rate`` t)) at step t
    (``rate`` 0: a constant ``start``); ``minimum`` above ``start`` is read as ``start``."""
    start: float = 1.0
    minimum: float = 0.5
    rate: float = 0.0

    def __post_init__(self):
        check_schedule(self.start, self.minimum, self.rate)

    def at(self, step: int) -> float:
        """tau at training step ``step``."""
        return max(min(self.minimum, self.start), self.start * math.exp(-self.rate * step))


@dataclass
class RelaxedOptions(EncoderOptions, GlobalGuideOptions):
    temperature: float = option(1.0, "initial temperature tau_0", checkpoint="resumable")
    temperature_min: float = option(0.5, "annealing floor tau_min", checkpoint="resumable")
    anneal_rate: float = option(0.0, "r in tau = max(tau_min, tau_0 exp(-r step))", checkpoint="resumable")
    straight_through: bool = option(False, "hard samples forward, soft gradients backward")

    def validate(self) -> None:
        check_schedule(self.temperature, self.temperature_min, self.anneal_rate)


def relaxed_distribution(hard, temperature, straight_through: bool = False):
    """The Concrete relaxation of a discrete distribution ``hard`` at ``temperature``, with its logits.

    Every form a zoo site takes: :class:`JointDiscrete` and ``.to_event(n)`` wrappers relax their base
    and keep the event dims; ``Bernoulli`` becomes a Concrete on (0, 1) and ``OneHotCategorical`` a
    Gumbel-softmax on the simplex, with the same event shapes; a ``Categorical`` (integer values)
    becomes the Gumbel-softmax of its one-hot values, event ``(K,)`` (see :class:`SoftIndex` for
    what the model's code then receives).
    """
    if isinstance(hard, JointDiscrete):
        return relaxed_distribution(hard.base, temperature, straight_through).to_event(1)
    if isinstance(hard, torch.distributions.Independent):
        return relaxed_distribution(hard.base_dist, temperature, straight_through).to_event(
            hard.reinterpreted_batch_ndims)
    if isinstance(hard, torch.distributions.Bernoulli):
        cls = ConcreteBernoulliST if straight_through else ConcreteBernoulli
    elif isinstance(hard, (torch.distributions.OneHotCategorical, torch.distributions.Categorical)):
        cls = ConcreteOneHotCategoricalST if straight_through else ConcreteOneHotCategorical
    else:
        raise ZooError(f"the relaxed guide relaxes Bernoulli, OneHotCategorical and Categorical sites, not "
                       f"{type(hard).__name__}; use the amortized guide for this model")
    return cls(temperature, logits=hard.logits)


def _is_discrete(fn) -> bool:
    while isinstance(fn, torch.distributions.Independent):
        fn = fn.base_dist
    return isinstance(fn, (JointDiscrete, torch.distributions.Bernoulli, torch.distributions.OneHotCategorical,
                           torch.distributions.Categorical))


class RelaxDiscrete(Messenger):
    """Replace the named discrete latent sites of a model by their Concrete relaxations.

    Used around the model while a :class:`Relaxed` guide trains, so that p~(z~) is a density on the
    same (continuous) space as q~(z~ | x), whatever form the model writes the site in
    (:func:`relaxed_distribution`). A ``Categorical`` site is scored as the Gumbel-softmax of its
    one-hot values at the relaxed sample z~, and its value, once the site is recorded, becomes the
    :class:`SoftIndex` argmax(z~) for the model's own code (``locs[z]``): the trace (applied outside
    this messenger, as every objective does) keeps z~.

    Arguments:
        guide: what holds the temperature, as ``guide.temperature``; read at every site, so it
            follows the annealed buffer, also after the guide moves device.
        names: the sites to relax.
        straight_through: relax to the straight-through Concrete distributions (the index sites of
            a straight-through guide, whose other sites the model scores as they are).
    """

    def __init__(self, guide, names, straight_through: bool = False):
        super().__init__()
        self.guide = guide
        self.names = set(names)
        self.straight_through = straight_through
        self._indices = set()

    def _pyro_sample(self, msg):
        if msg["name"] in self.names and not msg["is_observed"] and _is_discrete(msg["fn"]):
            if isinstance(msg["fn"], torch.distributions.Categorical):
                self._indices.add(msg["name"])     # not a flag in msg["infer"]: poutine.replay overwrites it
            msg["fn"] = relaxed_distribution(msg["fn"], self.guide.temperature, self.straight_through)

    def _pyro_post_sample(self, msg):
        if msg["name"] in self._indices and msg["value"] is not None:
            self._indices.discard(msg["name"])
            msg["value"] = SoftIndex(msg["value"])


@GUIDES.register("relaxed", options=RelaxedOptions, description="amortized Concrete / Gumbel-softmax for binary "
                 "and categorical latents, annealed temperature, optional straight-through; evaluated with hard "
                 "samples")
class Relaxed(Amortized):
    """Amortized Concrete / Gumbel-softmax guide for binary and categorical latents.

    Real latents beside them (M2's Gaussian z next to its categorical y) get the amortized guide's
    diagonal Normal, reparameterized as it is.

    Arguments:
        model: a zoo model with binary and/or categorical latents (and any real ones).
        num_data: unused (amortized).
        hidden: encoder hidden sizes (default: mirror the decoder).
        temperature: the Concrete temperature: a number tau > 0 (constant), or an :class:`Annealing` schedule
            tau_t = max(tau_min, tau_0 exp(-r t)) (default: 1.0).
        straight_through: use hard values in the forward pass (default False).
        structured: see :class:`~guides.amortized.Amortized`; a site's logits then read its
            children's relaxed (training) or hard (evaluation) values.
    """

    family = "relaxed"
    supports = ("real", "binary", "categorical")
    enumerable = False
    normal_sites = False
    relaxes_model = True

    def __init__(self, model, num_data: Optional[int] = None, hidden: Optional[Sequence[int]] = None,
                 temperature: Union[float, Annealing] = 1.0, straight_through: bool = False, structured: bool = False,
                 activation: Optional[str] = None, global_guide: Optional[str] = None):
        super().__init__(model, num_data, hidden, structured=structured, activation=activation,
                         global_guide=global_guide)
        if not isinstance(temperature, Annealing):
            check_schedule(temperature)
            temperature = Annealing(float(temperature), float(temperature), 0.0)
        self.annealing = temperature
        self.straight_through = bool(straight_through)
        self.register_buffer("temperature", torch.tensor(float(temperature.start)))

    @classmethod
    def from_options(cls, model, num_data: Optional[int], options: RelaxedOptions) -> "Relaxed":
        """The guide the command line's options name: its three temperature options made one schedule here."""
        o = options
        return cls(model, num_data, o.hidden, Annealing(o.temperature, o.temperature_min, o.anneal_rate),
                   o.straight_through, o.structured, o.activation, o.global_guide)

    @classmethod
    def check(cls, model) -> None:
        super().check(model)
        if all(s.support == "real" for s in model.latents):
            raise ZooError(f"the 'relaxed' guide relaxes discrete latents, and {model.display_name} has none; "
                           f"use the amortized guide")

    @classmethod
    def is_reparameterized(cls, model) -> bool:
        return True

    def on_step(self, step: int) -> None:
        """Anneal: tau_t = max(tau_min, tau_0 exp(-r t))."""
        self.temperature.fill_(self.annealing.at(step))

    def epoch_record(self):
        """The temperature tau of the last step."""
        return {"temperature": float(self.temperature)}

    def training_model(self, model):
        """The model as the training objective sees it: relaxed (unless straight-through, where only
        ``Categorical`` sites are, since the model cannot index with a one-hot value).

        One relaxed view per model, made on first use: every ``fit`` call on it then hands the
        objective the same callable, so a ``--jit`` trace keyed on it is reused across calls.
        """
        names = [s.name for s in self.sites if s.support != "real" and (not self.straight_through or s.form == "index")]
        if not names:
            return model
        cached = self.__dict__.get("_relaxed_view")
        if cached is None or cached[0].module is not model:
            # the model is Borrowed: not a submodule, so not in this guide's state_dict
            self._relaxed_view = cached = (Borrowed(model),
                                           RelaxDiscrete(self, names, self.straight_through)(model))
        return cached[1]

    def distribution(self, site, context):
        hard = super().distribution(site, context)
        if site.support == "real" or not self.training:      # real sites: the amortized Normal, as they are
            return hard
        return relaxed_distribution(hard, self.temperature, self.straight_through)
