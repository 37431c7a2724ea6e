"""Pyro's ``Trace_ELBO`` with less bookkeeping per step: :class:`LeanTrace_ELBO`.

For a guide whose every latent is reparameterized, ``Trace_ELBO``'s loss and gradient reduce to the sum,
over the sites the guide and the model sample, of each site's scaled and masked ``log_prob``::

    surrogate = sum_{model sites} scale * log p(value) - sum_{guide sites} scale * log q(value)
    loss      = -surrogate / K          (K particles; vectorized in one outer plate or drawn in turn)

Pyro computes it by recording two full traces (the guide's, then the model's replayed against it), copying
both to prune the plates' subsample sites, walking them again for the log-densities and the score parts,
and calling ``.item()`` once per site. That bookkeeping costs more per step than the small models' own
arithmetic: on the digits' 2-latent VAE at batch 1 it is most of the difference between Pyro's step and a
hand-written one (``benchmarks/step_overhead.py --small``). :class:`LeanTrace_ELBO` runs the same guide and
model under one light messenger that adds each site's log-density as the site is sampled, replays the guide's
values into the model as ``poutine.replay`` does, and reads the loss with one ``.item()``.

It is ``Trace_ELBO`` (a subclass; the same ``loss``, ``loss_and_grads`` and ``differentiable_loss``, the same
random draws in the same order, so the same numbers) wherever it takes the short way, and it hands the step
to ``Trace_ELBO`` itself wherever that short way would not be the same estimator:

- a guide site that is not reparameterized (its gradient needs the score function and Pyro's ``log_r``),
  observed, or enumerated: every step goes to ``Trace_ELBO``. Seen in a step ``Trace_ELBO`` took anyway (the
  zoo's first step is a validated one), no step tries the short way; found in a short step, that step is
  redone by ``Trace_ELBO`` with new draws;
- Pyro's validation on (the zoo's first step of each epoch): ``Trace_ELBO`` checks that model and guide
  match and that every site's shape fits its plates;
- a ``GuideMessenger`` guide, or vectorized particles with an unknown plate nesting.

:class:`LeanTraceMeanField_ELBO` is ``TraceMeanField_ELBO`` the same way: each latent contributes
``-KL(q || p)`` in closed form where one is registered (``log p - log q`` of the draw where not), scaled and
masked as the guide site is, each observed site its ``log_prob``, and a guide-only (auxiliary) site ``-log q``.
"""
from __future__ import annotations

import pyro.util
import torch
from pyro import poutine
from pyro.distributions import Independent
from pyro.distributions.util import scale_and_mask
from pyro.distributions.kl import kl_divergence
from pyro.infer import Trace_ELBO, TraceMeanField_ELBO
from pyro.infer.util import is_validation_enabled
from pyro.poutine.messenger import Messenger
from pyro.poutine.runtime import _PYRO_STACK

from zoo.core import params
from zoo.core.distributions import ShapedIndependent
from zoo.core.weights import is_subsample_site

__all__ = ["LeanTrace_ELBO", "LeanTraceMeanField_ELBO"]


class _NotLean(Exception):
    """Raised inside a pass at a site the short way does not cover; the step goes to ``Trace_ELBO``."""


def _add(sums, scale, term, sign: int) -> None:
    """Add ``sign * term`` to ``sums[scale]``, kept as a (plus, minus) pair so that no negation is computed."""
    entry = sums.setdefault(scale, [None, None])
    i = 0 if sign > 0 else 1
    entry[i] = term if entry[i] is None else entry[i] + term


def _merge(into, sums, sign: int) -> None:
    """``into += sign * sums``, scale by scale."""
    for scale, (plus, minus) in sums.items():
        for s, term in ((sign, plus), (-sign, minus)):
            if term is not None:
                _add(into, scale, term, s)


#: Pyro's and torch's ``Independent``: their ``log_prob`` sums the base's over the event dims, which the pass sums anyway
_INDEPENDENT = (Independent, torch.distributions.Independent, ShapedIndependent)


class _Pass(Messenger):
    """One run of the guide (``values`` None: record each latent's value) or of the model (replay ``values``
    into its latent sites), adding up every sample site's scaled, masked ``log_prob`` sum.

    The sums are kept per scale (``sums``: scale -> (plus, minus)): every site of the data plate carries the
    same scale N/B, so a step multiplies by it once, after adding the sites, rather than once per site; an
    unmasked ``Independent`` site's base density is summed directly, since the pass sums over the event dims
    anyway. A site with a mask or a tensor scale is scaled and masked on its own, as ``Trace_ELBO`` does.

    With no handler outside it (the training loop's step), nothing reads the zoo modules' ``param`` sites, and
    :func:`zoo.core.params.register_module` leaves them out for the pass (``params.quiet``). Under an outer
    handler (a trace collecting the parameters, a capture) they are emitted as always."""

    #: the pass skips the plates' subsample sites (:class:`zoo.core.plates.DataPlate` need not send them)
    ignores_subsample_sites = True

    def __init__(self, values=None):
        super().__init__()
        self.replaying = values is not None
        self.values = values if values is not None else {}
        self.sums = {}
        self.quiet = False

    @staticmethod
    def log_prob_sum(fn, msg):
        """``(scale, sum)``: the site's log-density summed over every dim, to be multiplied by ``scale``."""
        scale, mask = msg["scale"], msg["mask"]
        if mask is None and isinstance(scale, (int, float)):
            while type(fn) in _INDEPENDENT:
                fn = fn.base_dist
            return float(scale), fn.log_prob(msg["value"], *msg["args"], **msg["kwargs"]).sum()
        return 1.0, scale_and_mask(fn.log_prob(msg["value"], *msg["args"], **msg["kwargs"]), scale, mask).sum()

    def add(self, fn, msg, sign: int = 1) -> None:
        _add(self.sums, *self.log_prob_sum(fn, msg), sign)

    def __enter__(self):
        self.quiet = not _PYRO_STACK
        if self.quiet:
            params.quiet += 1
        return super().__enter__()

    def __exit__(self, *exc):
        if self.quiet:
            params.quiet -= 1
        return super().__exit__(*exc)

    def _pyro_sample(self, msg) -> None:
        if self.replaying and not msg["is_observed"]:
            recorded = self.values.get(msg["name"])
            if recorded is not None:                   # as poutine.replay: the guide's value and infer
                msg["value"], msg["infer"], msg["done"] = recorded[0], recorded[1], True

    def _pyro_post_sample(self, msg) -> None:
        fn = msg["fn"]
        if is_subsample_site(msg):                     # a plate's indices, pruned by Trace_ELBO too
            return
        if not self.replaying:
            if msg["is_observed"] or not getattr(fn, "has_rsample", False) or msg["infer"].get("enumerate"):
                raise _NotLean(msg["name"])
            self.values[msg["name"]] = (msg["value"], msg["infer"])
        self.add(fn, msg)

    def finish(self, guide_pass: "_Pass"):
        """The particle's ELBO (log p - log q) as per-scale sums, this being the model's pass after ``guide_pass``."""
        sums = {}
        _merge(sums, self.sums, 1)
        _merge(sums, guide_pass.sums, -1)
        return sums


class _MeanFieldPass(_Pass):
    """A pass of :class:`LeanTraceMeanField_ELBO`: the guide's pass keeps each latent's message (its log-density
    is needed only where no closed-form KL is); the model's adds -KL(q || p) per latent, log p per observation."""

    def __init__(self, values=None):
        super().__init__(values)
        self.seen = set()

    def _pyro_post_sample(self, msg) -> None:
        fn = msg["fn"]
        if is_subsample_site(msg):
            return
        if not self.replaying:
            if msg["is_observed"] or not getattr(fn, "has_rsample", False) or msg["infer"].get("enumerate"):
                raise _NotLean(msg["name"])
            self.values[msg["name"]] = (msg["value"], msg["infer"], msg)
            return
        if msg["is_observed"]:
            self.add(fn, msg)
            return
        recorded = self.values.get(msg["name"])
        if recorded is None:                            # a model latent the guide lacks: TraceMeanField_ELBO's error
            raise _NotLean(msg["name"])
        self.seen.add(msg["name"])
        q = recorded[2]
        try:
            kl = kl_divergence(q["fn"], fn)
        except NotImplementedError:
            self.add(fn, msg)
            self.add(q["fn"], q, -1)
            return
        if torch.is_tensor(kl):
            _add(self.sums, 1.0, scale_and_mask(kl, q["scale"], q["mask"]).sum(), -1)
        else:
            _add(self.sums, 1.0, scale_and_mask(kl, q["scale"], q["mask"]) * q["fn"].batch_shape.numel(), -1)

    def finish(self, guide_pass: "_Pass"):
        for name, recorded in guide_pass.values.items():
            if name not in self.seen:                   # an auxiliary guide site: its entropy term
                self.add(recorded[2]["fn"], recorded[2], -1)
        sums = {}
        _merge(sums, self.sums, 1)
        return sums


class _Lean:
    """What the lean ELBOs share: the short way where it applies (module docstring), the Pyro class's own
    methods elsewhere. ``lean`` says whether the last step took the short way."""

    passes = _Pass

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.lean = None
        self._pyro_only = False

    def _get_trace(self, model, guide, args, kwargs):
        model_trace, guide_trace = super()._get_trace(model, guide, args, kwargs)
        if not self._pyro_only:                         # a step Trace_ELBO took: does the guide allow the short way?
            self._pyro_only = any(
                site["type"] == "sample" and not is_subsample_site(site) and (
                    site["is_observed"] or not getattr(site["fn"], "has_rsample", False)
                    or site["infer"].get("enumerate")) for site in guide_trace.nodes.values())
        return model_trace, guide_trace

    def _surrogate(self, model, guide, args, kwargs):
        """-(the surrogate ELBO) over the K particles, a tensor; raises :class:`_NotLean` where it does not apply."""
        if self._pyro_only or is_validation_enabled() or isinstance(poutine.unwrap(guide), Messenger) or (
                self.vectorize_particles and self.max_plate_nesting == float("inf")):
            raise _NotLean(None)
        if self.vectorize_particles:
            model, guide, draws = self._vectorized_num_particles(model), self._vectorized_num_particles(guide), 1
        else:
            draws = self.num_particles
        sums = {}
        for _ in range(draws):
            q = self.passes()
            try:
                with q:
                    guide(*args, **kwargs)
            except _NotLean:
                self._pyro_only = True                  # a guide's kinds of sites do not change between steps
                raise
            p = self.passes(q.values)
            with p:
                model(*args, **kwargs)
            _merge(sums, p.finish(q), 1)
        total = None                                    # -(1/K) sum_scale scale * (plus - minus), one product per scale
        for scale, (plus, minus) in sums.items():
            term = plus if minus is None else (-minus if plus is None else plus - minus)
            term = term * (-scale / self.num_particles)
            total = term if total is None else total + term
        return total if total is not None else 0.0

    def differentiable_loss(self, model, guide, *args, **kwargs):
        try:
            loss = self._surrogate(model, guide, args, kwargs)
        except _NotLean:
            self.lean = False
            return super().differentiable_loss(model, guide, *args, **kwargs)
        self.lean = True
        pyro.util.warn_if_nan(loss, "loss")
        return loss

    def loss(self, model, guide, *args, **kwargs):
        try:
            with torch.no_grad():
                loss = self._surrogate(model, guide, args, kwargs)
        except _NotLean:
            self.lean = False
            return super().loss(model, guide, *args, **kwargs)
        self.lean = True
        loss = float(loss)
        pyro.util.warn_if_nan(loss, "loss")
        return loss

    def loss_and_grads(self, model, guide, *args, **kwargs):
        try:
            surrogate = self._surrogate(model, guide, args, kwargs)
        except _NotLean:
            self.lean = False
            return super().loss_and_grads(model, guide, *args, **kwargs)
        self.lean = True
        if getattr(surrogate, "requires_grad", False):
            surrogate.backward(retain_graph=self.retain_graph)
            surrogate = surrogate.detach()
        loss = float(surrogate)
        pyro.util.warn_if_nan(loss, "loss")
        return loss


class LeanTrace_ELBO(_Lean, Trace_ELBO):
    """``Trace_ELBO`` without the traces where every guide latent is reparameterized (module docstring)."""


class LeanTraceMeanField_ELBO(_Lean, TraceMeanField_ELBO):
    """``TraceMeanField_ELBO`` without the traces (module docstring): closed-form KLs where registered."""

    passes = _MeanFieldPass
