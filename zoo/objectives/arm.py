"""ARM and DisARM: unbiased gradients for Bernoulli latents from an antithetic pair of samples.

For a guide q_phi(b | x) of independent bits with logits phi and f(b) = log p(x, b) - log q(b | x), the ELBO's
gradient with respect to the logits is E_q[f(b) grad_phi log q(b)] (the score function: REINFORCE), whose variance
needs baselines. ARM (Yin & Zhou 2019) and DisARM (Dong, Mnih & Tucker 2020) instead draw one uniform u per bit
and evaluate f at two *antithetic* configurations, per bit i::

    ARM:     b = 1[u > sigma(-phi)],  b' = 1[u < sigma(phi)]
             g_i = (f(b) - f(b')) (u_i - 1/2)
    DisARM:  b = 1[u < sigma(phi)],   b' = 1[1 - u < sigma(phi)]
             g_i = 1/2 (f(b) - f(b')) (-1)^{b'_i} 1[b_i != b'_i] sigma(|phi_i|)

Both are unbiased for d/dphi E_q[f(b)]; DisARM is ARM with the uniform integrated out where the pair agrees, so it
has lower variance (and no gradient for a bit where b_i = b'_i). f is scored with q's parameters held (its own
dependence on phi has zero mean under q: E_q[grad_phi log q] = 0). The model's parameters get the ordinary
gradient averaged over the two configurations, each a draw from q. With K particles, K independent pairs are
averaged. :class:`MultiSampleDisARM` is DisARM for the K-sample IWAE bound (``--objective iwae --estimator
disarm``): one pair per sample, the others held.

What it assumes (a rule, :mod:`zoo.rules`): every latent of the model is binary and sampled by a guide of Bernoulli
bits that draws each site from x alone (the amortized family, not ``structured``, or the meanfield one): a single
stochastic layer such as the SBN-200, or several layers under q(z1 | x) q(z2 | x), whose bits are then one vector of
independent Bernoulli bits given x, to which the estimator applies as to one layer (the exact-gradient test covers
two layers). A structured guide, which samples its layers in turn (q(z1 | x) q(z2 | z1, x)), takes the papers'
per-layer treatment (Yin & Zhou's ARM for multiple stochastic layers, DisARM's hierarchical section): one draw b
from q; then for each layer t in the guide's order, the layers before t held at b, one uniform per bit of layer t
gives its pair (b_t, b'_t) from its logits phi_t(b_<t), and each side draws the layers after t afresh from q
given its b_t, so that f on each side is a one-sample estimate of F_t(b_<=t) = E_q[f | b_<=t]. The pair's
difference times the per-bit weight is the gradient for phi_t, and the chain rule through phi_t(b_<t) carries
it to the encoder: sum_t of these is E_q[f grad log q] split by layer, so it is unbiased (the exact-gradient test
by enumeration covers a structured two-layer SBN). It costs 2 evaluations per layer and the draw b; the model's
gradient and the bound are averaged over these 2L + 1 draws from q. Categorical latents take ARSM
(``zoo.objectives.arsm``); the multi-sample DisARM takes layers drawn from x alone.

References: M. Yin and M. Zhou, "ARM: Augment-REINFORCE-Merge Gradient for Stochastic Binary Networks", ICLR
2019, https://arxiv.org/abs/1807.11143. Z. Dong, A. Mnih and G. Tucker, "DisARM: An Antithetic Gradient
Estimator for Binary Latent Variables", NeurIPS 2020, https://arxiv.org/abs/2006.10680.
"""
from __future__ import annotations

import math
from typing import Dict

import torch
from pyro.poutine.messenger import Messenger

from zoo.core.weights import is_subsample_site, per_datum_log_weights
from zoo.objectives.base import PerDatumObjective, assumption_broken

__all__ = ["AntitheticBits", "LayerPair", "ARM", "DisARM", "MultiSampleDisARM"]


def inner_logits(fn, family=torch.distributions.Bernoulli):
    """The logits of the ``family`` distribution (Bernoulli, OneHotCategorical) inside a guide site's distribution
    (through Independent and JointDiscrete wrappers), or None."""
    while True:
        if isinstance(fn, family):
            return fn.logits
        inner = getattr(fn, "base_dist", None) or getattr(fn, "base", None)
        if inner is None or inner is fn:
            return None
        fn = inner


class AntitheticBits(Messenger):
    """Sets each binary guide site to one side of an antithetic pair drawn from shared uniforms (module docstring).

    ``side`` is 0 or 1; ``pair(logits, u, side)`` maps the logits and the site's uniforms to that side's bits. The
    uniforms are drawn the first time a site is met and kept, so the second side sees the first side's u. Used
    around :func:`~zoo.core.weights.per_datum_log_weights`: a site whose value is already set (the model's replay)
    or observed is left alone; the logits of each guide site are kept (``logits``) for the surrogate."""

    def __init__(self, pair):
        super().__init__()
        self.pair, self.side = pair, 0
        self.uniforms: Dict[str, torch.Tensor] = {}
        self.logits: Dict[str, torch.Tensor] = {}

    def _pyro_sample(self, msg):
        if msg["is_observed"] or msg["value"] is not None or is_subsample_site(msg):   # a plate's indices
            return
        logits = inner_logits(msg["fn"])
        if logits is None:
            raise assumption_broken(type(self).__name__, f"a guide of Bernoulli bits (site {msg['name']!r} is not one)")
        u = self.uniforms.get(msg["name"])
        if u is None:
            u = self.uniforms[msg["name"]] = torch.rand_like(logits.detach())
        self.logits[msg["name"]] = logits
        msg["value"] = self.pair(logits.detach(), u, self.side).to(logits.dtype)


class LayerPair(Messenger):
    """One side of the pair of layer ``target`` of a guide that samples its layers in turn (module docstring): the
    sites in ``prefix`` (the layers before it) replayed from a draw of q, ``target``'s bits set to ``side`` of
    the pair from its logits and the kept uniforms, the sites after it drawn from q as usual. As
    :class:`AntitheticBits`, a site already set (the model's replay) or observed is left alone."""

    def __init__(self, pair, prefix: Dict[str, torch.Tensor], target: str):
        super().__init__()
        self.pair, self.prefix, self.target, self.side = pair, prefix, target, 0
        self.uniform = None
        self.logits = None

    def _pyro_sample(self, msg):
        if msg["is_observed"] or msg["value"] is not None or is_subsample_site(msg):
            return
        name = msg["name"]
        if name in self.prefix:
            msg["value"] = self.prefix[name]
            return
        if name != self.target:
            return
        logits = inner_logits(msg["fn"])
        if logits is None:
            raise assumption_broken(type(self).__name__, f"a guide of Bernoulli bits (site {name!r} is not one)")
        if self.uniform is None:
            self.uniform = torch.rand_like(logits.detach())
        self.logits = logits
        msg["value"] = self.pair(logits.detach(), self.uniform, self.side).to(logits.dtype)


class _Antithetic(PerDatumObjective):
    """The ELBO with an antithetic-pair gradient for the logits of its binary sites (module docstring)."""

    detach_latents = True

    @staticmethod
    def pair(logits, u, side):
        raise NotImplementedError

    @staticmethod
    def weight(logits, u, b, b_other):
        """Per bit, what (f(b) - f(b')) is multiplied by."""
        raise NotImplementedError

    def draw_pair(self, model, guide, *args, **kwargs):
        """The two sides' log-weights (K pairs per datum, latents cut from the graph), and the messenger that set
        them (its ``logits`` and ``uniforms`` per site)."""
        bits = AntitheticBits(self.pair)
        sides = []
        for side in (0, 1):
            bits.side = side
            with bits:
                lw = per_datum_log_weights(model, guide, *args, num_particles=self.num_particles,
                                           detach_latents=True, **kwargs)
            sides.append(lw)
        if set(bits.logits) != set(sides[0].latents) or sides[0].global_values:
            raise assumption_broken(type(self).__name__, "a model whose latents are all local binary sites")
        return bits, sides

    def logit_surrogate(self, logits_of, uniforms, sides, signal):
        """Per pair and datum ``[K, B]``: sum over the bits of the sites in ``logits_of`` (name: logits, with their
        ``uniforms``) of ``signal * weight`` (detached) times the logits, whose gradient is the estimator's for the
        guide; ``signal`` is f(b) - f(b') per pair, ``[K, B]``."""
        surrogate = 0.0
        for name, logits in logits_of.items():
            b, b_other = sides[0].latents[name], sides[1].latents[name]
            shape = signal.shape + (1,) * (logits.dim() - signal.dim())
            per_bit = signal.reshape(shape) * self.weight(logits.detach(), uniforms[name], b, b_other)
            surrogate = surrogate + (per_bit * logits).reshape(signal.shape + (-1,)).sum(-1)
        return surrogate

    def layer_by_layer(self, model, guide, *args, **kwargs):
        """The per-layer pairs of a guide that samples its layers in turn (module docstring): the bound and the
        surrogate, as :meth:`value_and_surrogate` returns them."""
        draw = per_datum_log_weights(model, guide, *args, num_particles=self.num_particles, detach_latents=True,
                                     **kwargs)
        if draw.global_values:
            raise assumption_broken(type(self).__name__, "a model whose latents are all local binary sites")
        order = [site.name for site in guide.order]
        # the draw counts too (a draw from q), so that every random number drawn is used: a captured step (--jit,
        # --compile) would otherwise drop the unused draws of the top layer and draw the others out of turn
        f, model_terms, surrogate_phi = [draw.log_w.detach()], [draw.log_likelihood + draw.log_prior], 0.0
        for t, target in enumerate(order):
            layer = LayerPair(self.pair, {name: draw.latents[name] for name in order[:t]}, target)
            sides = []
            for side in (0, 1):
                layer.side = side
                with layer:
                    sides.append(per_datum_log_weights(model, guide, *args, num_particles=self.num_particles,
                                                       detach_latents=True, **kwargs))
            if layer.logits is None:
                raise assumption_broken(type(self).__name__, f"a guide that samples its layer {target!r}")
            f += [lw.log_w.detach() for lw in sides]
            model_terms += [lw.log_likelihood + lw.log_prior for lw in sides]
            signal = sides[0].log_w.detach() - sides[1].log_w.detach()
            surrogate_phi = surrogate_phi + self.logit_surrogate({target: layer.logits}, {target: layer.uniform}, sides,
                                                                 signal)
        bound = torch.stack(f).mean(0)                                 # 2L + 1 draws from q: the ELBO, [K, B]
        surrogate = torch.stack(model_terms).mean(0) + surrogate_phi
        return -draw.scale * bound.mean(0).sum(), -draw.scale * surrogate.mean(0).sum()

    def value_and_surrogate(self, model, guide, *args, **kwargs):
        if getattr(guide, "structured", False):
            return self.layer_by_layer(model, guide, *args, **kwargs)
        bits, sides = self.draw_pair(model, guide, *args, **kwargs)
        f = [lw.log_w.detach() for lw in sides]                      # [K, B]
        surrogate_phi = self.logit_surrogate(bits.logits, bits.uniforms, sides, f[0] - f[1])
        model_terms = [lw.log_likelihood + lw.log_prior for lw in sides]
        surrogate = 0.5 * (model_terms[0] + model_terms[1]) + surrogate_phi
        bound = 0.5 * (f[0] + f[1])                                    # two draws from q: the ELBO, [K, B]
        scale = sides[0].scale
        return -scale * bound.mean(0).sum(), -scale * surrogate.mean(0).sum()

    def loss(self, model, guide, *args, **kwargs):
        with torch.no_grad():
            return self.value_and_surrogate(model, guide, *args, **kwargs)[0].item()


class ARM(_Antithetic):
    """The ELBO with ARM's gradient for Bernoulli latents (Yin & Zhou 2019; module docstring)."""

    @staticmethod
    def pair(logits, u, side):
        return u > torch.sigmoid(-logits) if side == 0 else u < torch.sigmoid(logits)

    @staticmethod
    def weight(logits, u, b, b_other):
        return u - 0.5


class DisARM(_Antithetic):
    """The ELBO with DisARM's gradient for Bernoulli latents (Dong, Mnih & Tucker 2020; module docstring)."""

    @staticmethod
    def pair(logits, u, side):
        return u < torch.sigmoid(logits) if side == 0 else 1 - u < torch.sigmoid(logits)

    @staticmethod
    def weight(logits, u, b, b_other):
        return 0.5 * (1 - 2 * b_other) * (b != b_other).to(logits.dtype) * torch.sigmoid(logits.abs())


class MultiSampleDisARM(DisARM):
    """The K-sample IWAE bound with a DisARM pair for each of its samples: the local multi-sample DisARM.

    The bound is L = log (1/K) sum_k w(b_k) with b_1..b_K ~ q independent (Burda et al.'s, as ``iwae`` trains).
    Its gradient with respect to the logits of sample k is that of E_{b_k}[f_k(b_k)], where f_k(b) is L with b in
    place of b_k and the other K - 1 samples held: a function of one Bernoulli vector, which DisARM differentiates
    from an antithetic pair (b_k, b'_k) drawn from one uniform. So K pairs are drawn, 2K model evaluations, and
    for pair k::

        f_k(b_k) - f_k(b'_k) = log sum_j w_j - log (sum_{j != k} w_j + w(b'_k))          (others: side 0)

    averaged with the same difference taken with side 1 as the others (by symmetry, also unbiased), times
    DisARM's per-bit weight. The learning signal of sample k is local: it is how much swapping that one sample
    moves the bound, as VIMCO's is, with no baseline to choose. Unlike the ELBO, the bound also depends on the
    guide directly, through log q(b_k) inside w_k; that term, sum_k w~_k grad(-log q(b_k)), has no zero mean
    here and is kept (as in VIMCO). The model's gradient is the IWAE bound's, averaged over the two sides; the
    reported bound is the mean of the two sides' K-sample bounds, an unbiased estimate of IWAE_K.

    With K = 1 it is DisARM for the ELBO. It is the construction of Dong, Mnih & Tucker (2020)'s section on the
    multi-sample bound ("a local version of DisARM", compared there with VIMCO at the same number of
    evaluations), written out here from its definition; its unbiasedness is checked against the exact K-sample
    gradient by enumeration (``tests/test_arm.py``).
    """

    alpha = 0.0
    default_particles = 5

    def value_and_surrogate(self, model, guide, *args, **kwargs):
        if getattr(guide, "structured", False):
            raise assumption_broken(type(self).__name__, "layers drawn from x alone (not a structured guide)")
        bits, sides = self.draw_pair(model, guide, *args, **kwargs)
        log_w = [lw.log_w for lw in sides]                            # [K, B]; gradients to theta and, via log q, phi
        f = [lw.detach() for lw in log_w]
        K = f[0].shape[0]
        bound = [torch.logsumexp(lw, 0) - math.log(K) for lw in log_w]          # [B]
        swap = torch.eye(K, dtype=torch.bool, device=f[0].device)[:, :, None]   # [k, j, 1]: j == k
        # row k: the bound with sample k taken from the other side, the rest held, [K, B]
        swapped = [torch.logsumexp(torch.where(swap, f[1 - s][None], f[s][None]), 1) - math.log(K) for s in (0, 1)]
        signal = 0.5 * ((bound[0].detach() - swapped[0]) + (swapped[1] - bound[1].detach()))   # f_k(b) - f_k(b')
        surrogate = 0.5 * (bound[0] + bound[1]) + self.logit_surrogate(bits.logits, bits.uniforms, sides, signal).sum(0)
        scale = sides[0].scale
        value = 0.5 * (bound[0] + bound[1]).detach()
        return -scale * value.sum(), -scale * surrogate.sum()
