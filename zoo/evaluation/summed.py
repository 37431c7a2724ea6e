"""Discrete latents summed out exactly, so that IS, AIS and SMC sample the real latents alone.

A model with local discrete latents d beside real ones z has

    log p(x, z) = log sum_d p(x, z, d)

and where Pyro can enumerate d (each site a ``Bernoulli``, ``Categorical`` or ``OneHotCategorical`` of its own,
a chain of them under ``pyro.markov`` included) that sum is exact and cheap: Pyro's parallel enumeration puts
every value of each d on a dimension of its own (reused along a Markov chain), and its tensor contraction
(``pyro.ops.contract.contract_to_tensor``, the variable elimination ``TraceEnum_ELBO`` and NUTS use) sums them out,
which on a chain is the forward algorithm. An estimator given the model :class:`SummedOut` builds then samples z
only: the discrete states that rarely switch (the stuck chains of a regime model, an expert that AIS never changes)
no longer need to be visited, and a model whose every latent is discrete is scored exactly (zero standard error).

**How.** :class:`SummedOut` is a zoo model (the contract of :mod:`zoo.core.contract`) whose ``model`` runs the
given one twice:

1. as it is, its real latents sampled (or replayed from a guide, broadcast over particles, exactly as before),
   while its discrete latents and observations are hidden from every handler outside (``poutine.block``);
2. hidden, with those real values conditioned and the discrete sites enumerated in parallel, over the same
   particles (:class:`~zoo.core.weights.LocalParticles`); the discrete sites' and observations' log-densities
   (masks and ``poutine.scale`` tempering as Pyro counts them, without the plate's N/B) are contracted over the
   enumerated dimensions to one ``[particles, data]`` tensor, log sum_d p(x, d | z),

and records that tensor as a ``pyro.factor`` in the data plate, which every estimator counts as the likelihood.
The prior of z is the model's own sites, so log w = log p(x, z) - log q(z | x) as before, with z alone.

A site is enumerated whatever its own ``infer`` says: Pyro's ``config_enumerate`` keeps a user's ``"sequential"``
or ``num_samples``, under which ``poutine.enum`` would draw the site once instead of summing it.

A discrete latent the model masks out (a padded step) is summed with its prior weights p(d), its sum one. Sampled
(``--sum-discrete off``), the zoo draws it from the guide and counts its density in neither p nor q, as Pyro's
ELBOs do; where a real step depends on a masked one (padding before the sequence), the two readings differ, and the
summed one is the model's generative story.

**The guide** is the given one with its discrete sites hidden. That is its marginal q(z | x) only where its real
sites do not depend on its discrete draws (the zoo's mean-field and amortized guides): :func:`sum_out_discrete`
checks this by running the guide with its discrete draws enumerated in parallel, where a real site that depends on
one gains an enumeration dimension; a draw that cannot be enumerated (a relaxed one) cannot be checked, and is not
summed out.

**Where it is not done**, :func:`sum_out_discrete` says why in one line, and the estimators sample d as before: no
local discrete latent; a real latent whose density depends on a discrete one (a switching state-space model's
state given its regime: summing d out would leave p(z) a mixture that no site holds); a site Pyro cannot enumerate
(the zoo's ``Bernoulli(...).to_event(1)`` blocks of SBN and the categorical VAE, 2^200 values); more enumerated
values at once than :data:`MAX_ENUMERATED` (a long chain written without ``pyro.markov``); a global discrete latent.

Checked against exact answers (closed form, enumeration, the forward algorithm) in ``tests/test_summed.py`` and
by the calibration exam (``benchmarks/calibration_exam.py --sum-discrete``).
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Optional, Tuple

import pyro
import pyro.poutine as poutine
import torch
from pyro.ops.contract import contract_to_tensor
from pyro.ops.packed import unpack
from pyro.poutine.runtime import _PYRO_STACK

from zoo.core.errors import ZooError
from zoo.core.plates import MAX_PLATE_NESTING, data_plate
from zoo.core.weights import LocalParticles, is_deterministic, is_subsample_site, masked_log_prob, vectorize

__all__ = ["SummedOut", "Summing", "sum_out_discrete", "summing_for", "exact_by_summing", "MODES", "MAX_ENUMERATED", "FACTOR"]

#: the most enumerated values held at once per particle and datum (the product of the sizes of the enumeration
#: dimensions alive together); beyond it the sum is refused rather than allowed to exhaust memory
MAX_ENUMERATED = 1 << 16
#: the name of the factor that holds log sum_d p(x, d | z)
FACTOR = "summed_out"
#: the first dimension parallel enumeration may take: left of the data plate (-1) and the particles (-2)
_FIRST_ENUM_DIM = -(MAX_PLATE_NESTING + 2)


def _enumerated(fn, names):
    """``fn`` with the sample sites ``names`` enumerated in parallel (unexpanded), whatever their own ``infer`` says:
    Pyro's ``config_enumerate`` leaves a site marked ``"sequential"`` (or given ``num_samples``) as it is, and
    ``poutine.enum`` then draws it once instead of summing it."""
    names = frozenset(names)
    return poutine.infer_config(fn, lambda msg: {"enumerate": "parallel", "expand": False, "num_samples": None}
                                if msg["name"] in names and not msg["is_observed"] else {})


def _particles() -> int:
    """The size of the particles the caller vectorizes over (:func:`~zoo.core.weights.vectorize`), 1 where none."""
    for messenger in _PYRO_STACK:
        if isinstance(messenger, LocalParticles):
            return messenger.frame.size
    return 1


class SummedOut:
    """The zoo model ``base`` with its local discrete latents ``summed`` summed out exactly (module docstring).

    Everything but the latents and the model function is the base model's (its data checks, its exact log p(x)
    where it has one, its parameters).
    """

    def __init__(self, base, summed: Tuple[str, ...]):
        self.base, self.summed = base, tuple(summed)
        self.latents = [s for s in base.latents if s.name not in self.summed]

    def __getattr__(self, name):
        if name == "base":                      # not yet set (copy, unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.base, name)

    @property
    def has_log_marginal(self) -> bool:
        """Exact where the base model is, or where every latent is summed out."""
        return self.base.has_log_marginal or not self.latents

    def log_marginal(self, x: torch.Tensor) -> torch.Tensor:
        """log p(x) per datum ``[B]``: the base model's closed form, or the contraction itself where nothing is left
        to sample."""
        if self.base.has_log_marginal:
            return self.base.log_marginal(x)
        if self.latents:
            raise ZooError("log p(x) is exact only where every latent is summed out; sample the rest (IS, AIS, SMC)")
        return summed_log_likelihood(self.base.model, self.summed, {}, 1, x, None, None)

    @property
    def observed_parents(self):
        return tuple(p for p in getattr(self.base, "observed_parents", ()) if p not in self.summed)

    def __call__(self, *args, **kwargs):
        return self.model(*args, **kwargs)

    def model(self, x=None, idx=None, N=None, **kwargs):
        if x is None:
            raise ZooError("a model with its discrete latents summed out scores data; it does not generate them "
                           "(sample from the model itself)")
        summed = set(self.summed)

        def hidden(msg):
            return msg["name"] in summed or msg["is_observed"] or (msg["name"] == "data" and is_subsample_site(msg))
        trace = poutine.trace(poutine.block(self.base.model, hide_fn=hidden)).get_trace(x, idx, N, **kwargs)
        # what the trace holds passed the block: the real latents (as a guide replayed or a caller conditioned them)
        real = {name: site["value"] for name, site in trace.nodes.items()
                if site["type"] == "sample" and not is_subsample_site(site) and not is_deterministic(site)}
        with poutine.block():
            value = summed_log_likelihood(self.base.model, self.summed, real, _particles(), x, idx, N, **kwargs)
        with data_plate(x, idx, N):
            pyro.factor(FACTOR, value)


def summed_log_likelihood(model, summed, real, particles: int, x, idx, N, **kwargs) -> torch.Tensor:
    """log sum_d p(x, d | z) ``[particles, B]`` (``[B]`` for one particle): ``model`` run with the real latents at
    ``real`` and the sites ``summed`` enumerated in parallel, contracted over the enumeration dimensions."""
    conditioned = poutine.condition(model, data=real)
    enumerated = _enumerated(conditioned, summed)
    fn = enumerated if particles == 1 else vectorize(enumerated, particles)
    trace = poutine.trace(poutine.enum(fn, first_available_dim=_FIRST_ENUM_DIM)).get_trace(x, idx, N, **kwargs)
    data_scale = _data_scale(trace)
    factors = []
    for name, site in trace.nodes.items():
        if site["type"] != "sample" or is_subsample_site(site) or is_deterministic(site) or name in real:
            continue
        if not any(f.name == "data" for f in site["cond_indep_stack"]):
            raise ZooError(f"site {name!r} lies outside the data plate; only local discrete latents are summed out")
        if not site["is_observed"] and name not in summed:
            raise ZooError(f"the model's latent {name!r} is neither real nor summed out; name every discrete latent")
        # an observation's mask drops its term; a summed latent's is not applied: where the model masks it out
        # (a padded step) it is an auxiliary variable drawn from its own conditional, whose sum is one, as the
        # weights count a masked latent (drawn from q, its density out of both p and q: zoo.core.weights)
        log_p = site["fn"].log_prob(site["value"])
        if site["is_observed"]:
            log_p = masked_log_prob(log_p, site["mask"])
        weight = site["scale"] / data_scale
        if not (isinstance(weight, float) and abs(weight - 1.0) < 1e-12):
            log_p = weight * log_p
        site["log_prob"] = site["unscaled_log_prob"] = log_p
        factors.append(name)
    for name in real:                 # a real site whose density has enumeration dimensions depends on a summed one
        site = trace.nodes.get(name)
        if site is not None and any(f.name == "data" for f in site["cond_indep_stack"]) \
                and len(site["fn"].batch_shape) > MAX_PLATE_NESTING + 1:
            raise ZooError(f"the real latent {name!r} depends on a discrete one, so the discrete latents cannot be "
                           f"summed out of its prior; evaluate with them sampled (--sum-discrete off)")
    trace.pack_tensors()
    tree = OrderedDict()
    for name in factors:
        site = trace.nodes[name]
        ordinal = frozenset(trace.plate_to_symbol[f.name] for f in site["cond_indep_stack"] if f.vectorized)
        tree.setdefault(ordinal, []).append(site["packed"]["log_prob"])
    enum_dims = set(trace.symbol_to_dim) - set(trace.plate_to_symbol.values())
    target = frozenset(trace.plate_to_symbol[n] for n in ("particles", "data") if n in trace.plate_to_symbol)
    result = unpack(contract_to_tensor(tree, enum_dims, target_ordinal=target), trace.symbol_to_dim)
    B = x.shape[0]
    shape = (particles, B) if particles > 1 else (B,)
    return result.reshape(result.shape[-2:] if result.dim() >= 2 else result.shape).expand(shape) \
        if result.dim() else result.expand(shape)


def _data_scale(trace) -> float:
    site = trace.nodes.get("data")
    if site is None or not is_subsample_site(site):
        return 1.0
    return float(site["fn"].size) / float(len(site["value"]))


@dataclass
class Summing:
    """What :func:`sum_out_discrete` did: the model and guide the estimators get, the sites summed out, and where
    none were, why (``note``)."""

    model: object
    guide: object
    summed: Tuple[str, ...]
    note: str

    def record(self) -> dict:
        """The result files' record of it."""
        return {"summed_out": list(self.summed), "summed_out_note": self.note}


class _HiddenGuide:
    """The guide with the summed-out sites hidden from every handler: it still draws them (its real sites may be
    computed beside them), but no estimator sees or scores them. Everything else is the guide's own."""

    def __init__(self, guide, summed):
        self.guide, self.summed = guide, tuple(summed)

    def __getattr__(self, name):
        if name == "guide":
            raise AttributeError(name)
        return getattr(self.guide, name)

    def __call__(self, *args, **kwargs):
        return poutine.block(self.guide, hide=list(self.summed))(*args, **kwargs)


def sum_out_discrete(model, guide, x: torch.Tensor, idx: Optional[torch.Tensor] = None,
                     N: Optional[int] = None) -> Summing:
    """The model and guide with every local discrete latent summed out, where the model allows it; else the two
    as given, with the reason in ``note``. ``x`` (a few data, with their ``idx`` out of ``N``) is what the checks
    run on."""
    discrete = [s for s in model.latents if s.support in ("binary", "categorical")]
    if not discrete:
        return Summing(model, guide, (), "no discrete latents")
    if any(s.support in ("binary", "categorical") for s in model.global_latents):
        return Summing(model, guide, (), "a global discrete latent is not summed out")
    names = tuple(s.name for s in discrete)
    with torch.no_grad():
        trace = poutine.trace(model.model).get_trace(x, idx, N)
        for name in names:
            fn = trace.nodes[name]["fn"]
            if not fn.has_enumerate_support:
                return Summing(model, guide, (), f"not summed out: Pyro cannot enumerate site {name!r} "
                                                 f"({type(fn).__name__}, event shape {tuple(fn.event_shape)})")
        try:
            reason = _too_many(model, names, x, idx, N)
            if reason:
                return Summing(model, guide, (), reason)
            summed = SummedOut(model, names)
            poutine.trace(vectorize(summed.model, 2)).get_trace(x, idx, N)
        except ZooError as e:
            return Summing(model, guide, (), f"not summed out: {e}")
        except (RuntimeError, ValueError, IndexError, TypeError) as e:      # a model that does not broadcast
            first = (str(e).strip().splitlines() or [""])[0][:200]
            return Summing(model, guide, (), f"not summed out: the model fails with its discrete sites enumerated in "
                                             f"parallel ({type(e).__name__}: {first}); write it to broadcast over "
                                             f"them (Pyro's enumeration tutorial)")
        if guide is not None:
            reason = _guide_depends(guide, names, x, idx, N)
            if reason:
                return Summing(model, guide, (), reason)
    hidden = None if guide is None else _HiddenGuide(guide, names)
    return Summing(summed, hidden, names, f"summed out exactly: {', '.join(names)}")


#: ``--sum-discrete``'s choices: where the model allows it, or never
MODES = ("auto", "off")


def summing_for(model, guide, x: torch.Tensor, mode: str = "auto") -> Summing:
    """:func:`sum_out_discrete` of ``model`` and ``guide``, its checks run on the first few data of ``x`` (``mode``
    "auto"), or the two as given ("off")."""
    if mode not in MODES:
        raise ZooError(f"--sum-discrete takes one of {', '.join(MODES)}, got {mode!r}")
    if mode == "off":
        return Summing(model, guide, (), "not summed out (--sum-discrete off)")
    n = min(4, x.shape[0])
    return sum_out_discrete(model, guide, x[:n], torch.arange(n, device=x.device), x.shape[0])


def exact_by_summing(model, x: torch.Tensor):
    """``log_marginal`` of ``model`` with every latent summed out (a chain of discrete states, a mixture's
    assignment: the forward algorithm, exactly), or None where a latent would be left to sample or none can be
    summed. The harness's exact column uses it for models with no closed form."""
    if not model.latents or any(s.support not in ("binary", "categorical") for s in model.latents):
        return None
    n = min(4, x.shape[0])
    summing = sum_out_discrete(model, None, x[:n], torch.arange(n, device=x.device), x.shape[0])
    if summing.summed and not summing.model.latents:
        return summing.model.log_marginal
    return None


def _too_many(model, names, x, idx, N) -> Optional[str]:
    """Why enumerating ``names`` in parallel would hold too many values at once, or None."""
    enumerated = _enumerated(model.model, names)
    try:
        trace = poutine.trace(poutine.enum(enumerated, first_available_dim=_FIRST_ENUM_DIM)).get_trace(x, idx, N)
    except ZooError as e:                 # a block of the zoo's own too large to enumerate (zoo.core.distributions)
        return f"not summed out: {e}".split("; ")[0]
    size = {}
    for name in names:
        value = trace.nodes[name]["value"]
        for dim in range(-value.dim(), _FIRST_ENUM_DIM + 1):
            if value.shape[dim] > 1:
                size[dim] = max(size.get(dim, 1), value.shape[dim])
    total = 1
    for n in size.values():
        total *= n
    if total > MAX_ENUMERATED:
        return (f"not summed out: enumerating {', '.join(names)} holds {total} values at once, more than "
                f"{MAX_ENUMERATED} (write a chain under pyro.markov to reuse its dimensions)")
    return None


def _guide_depends(guide, names, x, idx, N) -> Optional[str]:
    """Why the guide's real sites are not its marginal q(z | x) once ``names`` are hidden, or None: the guide run with
    its draws of ``names`` enumerated in parallel, where a real site whose distribution gains an enumeration
    dimension depends on one of them. That sees every dependence through the draws' tensors (indexing, arithmetic,
    broadcasting), not one through Python control flow on their values (``if (c == 2).all()``), which a vectorized
    guide does not have."""
    trace = poutine.trace(guide).get_trace(x, idx=idx, N=N)
    drawn = [n for n in names if n in trace.nodes]
    real = {n: s for n, s in trace.nodes.items() if s["type"] == "sample" and n not in names
            and not is_subsample_site(s) and not s["is_observed"]}
    if not real or not drawn:
        return None
    for name in drawn:
        fn = trace.nodes[name]["fn"]
        if not fn.has_enumerate_support:
            return (f"not summed out: the guide draws {name!r} from {type(fn).__name__}, which Pyro cannot enumerate, "
                    f"so whether its real sites depend on that draw cannot be checked")
    enumerated = poutine.trace(poutine.enum(_enumerated(guide, drawn), first_available_dim=_FIRST_ENUM_DIM))
    try:
        again = enumerated.get_trace(x, idx=idx, N=N)
    except Exception as e:        # the user's guide may fail in any way under enumeration: then nothing is summed
        first = (str(e).strip().splitlines() or [""])[0][:200]
        return (f"not summed out: the guide fails with its discrete draws enumerated in parallel ({type(e).__name__}: "
                f"{first}), so whether its real sites depend on them cannot be checked")
    for n, site in real.items():
        shape = again.nodes[n]["fn"].batch_shape if n in again.nodes else site["fn"].batch_shape
        if len(shape) > len(site["fn"].batch_shape):
            return (f"not summed out: the guide's real site {n!r} depends on its discrete draws, so hiding them "
                    f"would not leave its marginal q(z | x)")
    return None
