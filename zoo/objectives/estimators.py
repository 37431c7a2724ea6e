"""Gradient estimators beyond Pyro's: STL, DReG, VIMCO, REINFORCE and RLOO, as drop-in :class:`pyro.infer.ELBO` classes.

All of them are :class:`~zoo.objectives.base.PerDatumObjective` s: they work on the per-datum
log-weights of :mod:`zoo.core.weights`, for K samples z_k ~ q(z | x_b) per datum::

    log w_kb = log p(x_b, z_kb) - log q(z_kb | x_b)

and scale per-datum quantities by N/B like every zoo objective. Their ``loss`` is
the bound they estimate (the ELBO for STL, REINFORCE and RLOO; IWAE-K for DReG and VIMCO), negated and scaled;
what each changes is the surrogate it differentiates (:meth:`~zoo.objectives.base.PerDatumObjective.per_datum`).
"""
from __future__ import annotations

import math

import torch

from zoo.objectives.base import PerDatumObjective, assumption_broken, detach_parameters

__all__ = ["StickingTheLanding", "TwoSurrogates", "DReGIWAE", "VIMCO", "Reinforce", "LeaveOneOutReinforce", "detach_parameters"]


class StickingTheLanding(PerDatumObjective):
    """The ELBO with the path-derivative gradient of Roeder, Wu and Duvenaud (2017).

    The reparameterized ELBO gradient for the guide is
    grad_phi [log p(x, z(phi)) - log q_phi(z(phi))]; its score term -grad_phi log q_phi(z)|_{z fixed}
    has mean zero. STL drops it by evaluating log q with parameters cut from the graph
    (z still depends on phi). The estimator stays unbiased, and where q is the exact
    posterior the integrand is constant in z, so the guide gradient is exactly zero for
    every sample: zero variance at the optimum.

    Model gradients are those of the ordinary ELBO.

    Assumptions: a reparameterizable guide of Normal sites (meanfield, amortized, exact);
    flows and relaxed guides are refused.

    Reference: G. Roeder, Y. Wu, D. Duvenaud, "Sticking the Landing: Simple, Lower-Variance
    Gradient Estimators for Variational Inference", NeurIPS 2017, https://arxiv.org/abs/1703.09194.
    """

    path_derivative = True
    needs_reparam = True


class TwoSurrogates(PerDatumObjective):
    """An estimator whose model and guide gradients come from two surrogates, each differentiated only with respect
    to its own parameters (read from the traces' param sites): ``_surrogates`` returns (the log-weights, the model's
    surrogate loss, the local guide's), the first also the loss reported. DReG and PIWAE are such estimators."""

    def _surrogates(self, model, guide, *args, **kwargs):
        raise NotImplementedError

    def value_and_surrogate(self, model, guide, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__}'s model and guide gradients come from different "
                                  f"surrogates; use loss_and_grads")

    def loss_and_grads(self, model, guide, *args, **kwargs):
        """Model parameters, and a global guide's (theta's q, whose samples are shared by the K particles, so a
        local guide's surrogate does not apply to them), follow the model's surrogate, which holds the global term;
        the local guide's parameters follow the guide's."""
        lw, theta_loss, phi_loss = self._surrogates(model, guide, *args, **kwargs)
        global_guide = getattr(guide, "global_guide", None)
        global_ids = {id(p) for p in global_guide.parameters()} if global_guide is not None else set()
        bound_params = lw.model_params + [p for p in lw.guide_params if id(p) in global_ids]
        local_params = [p for p in lw.guide_params if id(p) not in global_ids]
        for params, surrogate in ((bound_params, theta_loss), (local_params, phi_loss)):
            params = [p for p in params if p.requires_grad]
            if not params:
                continue
            grads = torch.autograd.grad(surrogate, params, retain_graph=True, allow_unused=True)
            through = []
            for p, g in zip(params, grads):
                if g is None:
                    continue
                if p.is_leaf:
                    p.grad = g if p.grad is None else p.grad + g
                else:           # a constrained pyro.param's value, transform_to(c) of its leaf: g goes on to the leaf
                    through.append((p, g))
            if through:
                torch.autograd.backward([p for p, _ in through], [g for _, g in through], retain_graph=True)
        return theta_loss.item()


class DReGIWAE(TwoSurrogates):
    """The IWAE bound with the doubly-reparameterized guide gradient of Tucker et al. (2019).

    For the model parameters theta, the ordinary IWAE gradient
    sum_k w~_k grad_theta log p(x, z_k). For the guide parameters phi::

        sum_k w~_k^2 * d log w_k / d z_k * d z_k / d phi,      w~_k = w_k / sum_j w_j

    with log q evaluated at detached parameters. It has the IWAE gradient's expectation
    and, unlike it, a guide signal-to-noise ratio that does not vanish as K grows
    (Rainforth et al. 2018). Model and guide gradients come from two surrogates, each
    differentiated only with respect to its own parameters (read from the traces' param sites).

    Assumptions: a reparameterizable guide of Normal sites with parameters of its own
    (meanfield, amortized); not the exact guide, whose parameters are the model's.

    Reference: G. Tucker, D. Lawson, S. Gu, C. J. Maddison, "Doubly Reparameterized Gradient
    Estimators for Monte Carlo Objectives", ICLR 2019, https://arxiv.org/abs/1810.04152.
    """

    alpha = 0.0
    default_particles = 5
    path_derivative = True
    needs_reparam = True

    def _surrogates(self, model, guide, *args, **kwargs):
        lw = self.log_weights(model, guide, *args, **kwargs)
        shared = {id(p) for p in lw.model_params} & {id(p) for p in lw.guide_params}
        if shared:
            raise assumption_broken("dreg", "model and guide parameters apart")
        log_w = lw.log_w                                  # z carries d z / d phi; q's parameters are cut
        normalized = torch.softmax(log_w.detach(), 0)
        theta_loss = -lw.scale * self.bound(log_w).sum() - lw.global_term
        phi_loss = -lw.scale * (normalized.pow(2) * log_w).sum()
        return lw, theta_loss, phi_loss


class _LeaveOneOutEstimator(PerDatumObjective):
    """Score-function estimators over K >= 2 samples per datum whose baselines leave each sample out."""

    min_particles = 2
    detach_latents = True

    @staticmethod
    def others_mean(log_w: torch.Tensor) -> torch.Tensor:
        """For each sample k, the mean of the other K - 1 detached log-weights, ``[K, B]``.

        The learning signal is a constant of the surrogate, so it is detached from the graph.
        """
        lw_ = log_w.detach()
        return (lw_.sum(0, keepdim=True) - lw_) / (lw_.shape[0] - 1)


class VIMCO(_LeaveOneOutEstimator):
    """VIMCO: the multi-sample score-function estimator of Mnih and Rezende (2016).

    For the per-datum IWAE bound L = log (1/K) sum_k w_k with K >= 2 samples that are
    not reparameterized (discrete latents)::

        grad L = sum_k (L - L_{-k}) grad log q(z_k | x) + sum_k w~_k grad log w_k

    where the leave-one-out baseline L_{-k} replaces w_k by the geometric mean of the
    other weights. The baseline does not depend on z_k, so the estimator is unbiased
    for the IWAE gradient, and it needs no learned baseline.

    Reference: A. Mnih and D. J. Rezende, "Variational Inference for Monte Carlo Objectives",
    ICML 2016, https://arxiv.org/abs/1602.06725.
    """

    alpha = 0.0
    default_particles = 5
    name = "vimco"

    def per_datum(self, lw):
        log_w = lw.log_w                                                   # [K, B]
        others_mean = self.others_mean(log_w)
        K = log_w.shape[0]
        L = self.bound(log_w)                                              # [B]
        # L_{-k}: w_k replaced by the geometric mean of the others
        eye = torch.eye(K, dtype=torch.bool, device=log_w.device)
        replaced = torch.where(eye[:, :, None], others_mean[:, None, :], log_w.detach()[None, :, :])  # [k, j, B]
        L_minus = torch.logsumexp(replaced, 1) - math.log(K)              # [K, B]
        learning_signal = L.detach()[None] - L_minus
        return L, L + (learning_signal * lw.log_q).sum(0)


class Reinforce(PerDatumObjective):
    """The ELBO with the pure score-function (REINFORCE) gradient, for every site.

    Samples are cut from the graph even when the guide could reparameterize them, so
    the guide gradient is E_q[(log w) grad log q(z | x)] (Williams 1992) with no
    baseline: the lecture's reference point against which reparameterization and
    control variates are compared. Model gradients are those of the ELBO.
    """

    detach_latents = True

    def per_datum(self, lw):
        log_w = lw.log_w
        return self.bound(log_w), (log_w + lw.log_q * log_w.detach()).mean(0)


class LeaveOneOutReinforce(_LeaveOneOutEstimator):
    """The ELBO with the score-function gradient and a leave-one-out baseline (RLOO), K >= 2.

    Draw K samples z_1..z_K ~ q(z | x) per datum, log w_k = log p(x, z_k) - log q(z_k | x).
    Each sample's learning signal is centred by the mean of the *other* samples' signals::

        grad ELBO ~ (1/K) sum_k [ (log w_k - b_k) grad log q(z_k | x) + grad log w_k ],
        b_k = 1/(K-1) sum_{j != k} log w_j

    b_k is independent of z_k, so E[b_k grad log q(z_k | x)] = 0 and the estimator is
    unbiased for the gradient of the single-sample ELBO (not of the IWAE bound, as VIMCO
    is). It is the NVIL idea, a baseline that tracks the per-datum learning signal, with a
    baseline that is free: no network to fit and no running average to lag. Its cost is
    K decoder passes per datum. All sites are scored (samples cut from the graph), as in
    :class:`Reinforce`; model gradients are those of the K-sample average ELBO.

    Why not Pyro's: ``TraceGraph_ELBO``'s baselines are per site and fitted (decaying
    average or a module); none uses the other particles, and its particles are not
    coupled at all.

    References: T. Salimans and D. A. Knowles, "On Using Control Variates with Stochastic
    Approximation for Variational Bayes and its Connection to Stochastic Linear
    Regression", 2014, https://arxiv.org/abs/1401.1022; W. Kool, H. van Hoof, M. Welling,
    "Buy 4 REINFORCE Samples, Get a Baseline for Free!", ICLR 2019 workshop,
    https://openreview.net/forum?id=r1lgTGL5DE.
    """

    default_particles = 2
    name = "rloo"

    def per_datum(self, lw):
        log_w = lw.log_w                                                   # [K, B]
        baseline = self.others_mean(log_w)
        return self.bound(log_w), (log_w + (log_w.detach() - baseline) * lw.log_q).mean(0)
