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
from typing import Optional, Sequence

import pyro
import pyro.distributions as dist
import torch
from pyro.poutine.messenger import Messenger

from dataclasses import dataclass

from guides.amortized import Amortized
from guides.base import EncoderOptions
from guides.globals import GlobalGuideOptions
from zoo.core.registry import GUIDES, OptionError, option
from guides.base import site_distribution
from zoo.core.contract import Borrowed
from zoo.core.distributions import JointDiscrete, discrete_kl
from zoo.core.errors import ZooError
from zoo.core.plates import data_plate
from zoo.core.params import register_module

__all__ = ["Relaxed", "RelaxDiscrete", "check_schedule", "relaxed_distribution", "ConcreteBernoulli",
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
    """The discrete distribution a Concrete relaxation stands for (same logits)."""
    if isinstance(d, dist.RelaxedBernoulli):
        return torch.distributions.Bernoulli(logits=d.logits)
    return torch.distributions.OneHotCategorical(logits=d.logits)


@torch.distributions.kl.register_kl(ConcreteBernoulli, ConcreteBernoulli)
@torch.distributions.kl.register_kl(ConcreteOneHotCategorical, ConcreteOneHotCategorical)
def _kl_concrete_discrete(q, p):
    return discrete_kl(_hard(q), _hard(p))


@torch.distributions.kl.register_kl(torch.distributions.Independent, JointDiscrete)
def _kl_straight_through_discrete(q, p):
    if not isinstance(q.base_dist, (ConcreteBernoulliST, ConcreteOneHotCategoricalST)) \
            or q.reinterpreted_batch_ndims != 1:
        raise NotImplementedError
    return discrete_kl(_hard(q.base_dist), p.base).sum(-1)


def check_schedule(temperature=None, temperature_min=None, anneal_rate=None) -> None:
    """Refuse a temperature schedule that is not one: tau_0, tau_min > 0 and r >= 0 (None: not given)."""
    for name, value in (("temperature", temperature), ("temperature_min", temperature_min)):
        if value is not None and not value > 0:
            raise OptionError(name, f"must be positive (the relaxed guide's Concrete temperature, e.g. 0.5), "
                              f"got {value}")
    if anneal_rate is not None and not anneal_rate >= 0:
        raise OptionError("anneal_rate", f"must be >= 0, got {anneal_rate}")


@dataclass
class RelaxedOptions(EncoderOptions, GlobalGuideOptions):
    temperature: float = option(1.0, "initial temperature tau_0", resumable=True)
    temperature_min: float = option(0.5, "annealing floor tau_min", resumable=True)
    anneal_rate: float = option(0.0, "r in tau = max(tau_min, tau_0 exp(-r step))", resumable=True)
    straight_through: bool = option(False, "hard samples forward, soft gradients backward")

    def validate(self) -> None:
        check_schedule(self.temperature, self.temperature_min, self.anneal_rate)


def relaxed_distribution(hard, temperature, straight_through: bool = False):
    """The Concrete relaxation of a :class:`JointDiscrete` ``hard`` at ``temperature``."""
    base = hard.base if isinstance(hard, JointDiscrete) else hard
    if isinstance(base, torch.distributions.Bernoulli):
        cls = ConcreteBernoulliST if straight_through else ConcreteBernoulli
    else:
        cls = ConcreteOneHotCategoricalST if straight_through else ConcreteOneHotCategorical
    return cls(temperature, logits=base.logits).to_event(1)


class RelaxDiscrete(Messenger):
    """Replace the named discrete latent sites of a model by their Concrete relaxations.

    Used around the model while a :class:`Relaxed` guide trains without straight-through,
    so that p~(z~) is a density on the same (continuous) space as q~(z~ | x).

    Arguments:
        guide: what holds the temperature, as ``guide.temperature``; read at every site, so it
            follows the annealed buffer, also after the guide moves device.
        names: the sites to relax.
    """

    def __init__(self, guide, names):
        super().__init__()
        self.guide = guide
        self.names = set(names)

    def _pyro_sample(self, msg):
        if msg["name"] in self.names and not msg["is_observed"] and isinstance(msg["fn"], JointDiscrete):
            msg["fn"] = relaxed_distribution(msg["fn"], self.guide.temperature)


@GUIDES.register("relaxed", options=RelaxedOptions, description="amortized Concrete / Gumbel-softmax for binary "
                 "and categorical latents, annealed temperature, optional straight-through; evaluated with hard "
                 "samples")
class Relaxed(Amortized):
    """Amortized Concrete / Gumbel-softmax guide for binary and categorical latents.

    Arguments:
        model: a zoo model with binary and/or categorical latents.
        num_data: unused (amortized).
        hidden: encoder hidden sizes (default: mirror the decoder).
        temperature: initial temperature tau_0 > 0 (default 1.0).
        temperature_min: floor of the annealing schedule (default 0.5).
        anneal_rate: r in tau_t = max(tau_min, tau_0 exp(-r t)) (default 0: constant tau_0).
        straight_through: use hard values in the forward pass (default False).
        structured: see :class:`~guides.amortized.Amortized`; a site's logits then read its
            children's relaxed (training) or hard (evaluation) values.
    """

    family = "relaxed"
    supports = ("binary", "categorical")
    enumerable = False
    normal_sites = False
    relaxes_model = True

    def __init__(self, model, num_data: Optional[int] = None, hidden: Optional[Sequence[int]] = None,
                 temperature: float = 1.0, temperature_min: float = 0.5, anneal_rate: float = 0.0,
                 straight_through: bool = False, structured: bool = False, activation: Optional[str] = None,
                 global_guide: Optional[str] = None):
        super().__init__(model, num_data, hidden, structured=structured, activation=activation,
                         global_guide=global_guide)
        check_schedule(temperature, temperature_min, anneal_rate)
        self.temperature_0 = float(temperature)
        self.temperature_min = min(float(temperature_min), float(temperature))
        self.anneal_rate = float(anneal_rate)
        self.straight_through = bool(straight_through)
        self.register_buffer("temperature", torch.tensor(float(temperature)))

    @classmethod
    def is_reparameterized(cls, model) -> bool:
        return True

    def on_step(self, step: int) -> None:
        """Anneal: tau_t = max(tau_min, tau_0 exp(-r t))."""
        tau = max(self.temperature_min, self.temperature_0 * math.exp(-self.anneal_rate * step))
        self.temperature.fill_(tau)

    def epoch_record(self):
        """The temperature tau of the last step."""
        return {"temperature": float(self.temperature)}

    def training_model(self, model):
        """The model as the training objective sees it (relaxed unless straight-through).

        One relaxed view per model, made on first use: every ``fit`` call on it then hands the
        objective the same callable, so a ``--jit`` trace keyed on it is reused across calls.
        """
        if self.straight_through:
            return model
        cached = self.__dict__.get("_relaxed_view")
        if cached is None or cached[0].module is not model:
            # the model is Borrowed: not a submodule, so not in this guide's state_dict
            self._relaxed_view = cached = (Borrowed(model), RelaxDiscrete(self, [s.name for s in self.sites])(model))
        return cached[1]

    def distribution(self, site, context):
        hard = super().distribution(site, context)
        return relaxed_distribution(hard, self.temperature, self.straight_through) if self.training else hard
