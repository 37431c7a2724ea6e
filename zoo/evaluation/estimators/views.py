"""Conditional log-likelihoods between the views of a multi-view model (a product-of-experts guide).

``conditional_log_likelihood``, ``conditional_accuracy``, ``view_log_likelihood``
    For a model that declares two or more ``views`` and a guide that encodes any subset of them
    (``encodes_views``, the product of experts): per ordered pair of views, "u|v", the conditional
    log-likelihood of view u given view v, as the difference of two IS estimates::

        log p(x_u | x_v)  ~=  log p^(x_u, x_v)  -  log p^(x_v)

    where p^(x_v) = (1/K) sum_k w_k, with z_k ~ q(z | x_v) (the single-view posterior) and
    w_k = p(x_v | z_k) p(z_k) / q(z_k | x_v), and p^(x_u, x_v) is ``log_likelihood`` above (the joint
    proposal q(z | x_u, x_v)). ``conditional_log_likelihood_self_normalized`` uses the single-view
    proposal for both terms, over the same samples::

        log p(x_u | x_v)  ~=  log sum_k w_k p(x_u | z_k)  -  log sum_k w_k

    the self-normalized IS estimate of E_{p(z | x_v)}[p(x_u | z)]. Both are consistent as K grows and,
    as differences of log-estimates, neither is a bound at finite K. The first is the more accurate
    when q(z | x_v) is much broader than p(z | x_u, x_v) (MNIST halves): both of its terms are then
    estimated with a proposal close to their own posterior, while the self-normalized form estimates
    p(x_u, x_v) with the broad single-view proposal and comes out low (tens of nats on MNIST halves at
    K = 500). For a categorical view u, ``conditional_accuracy["u|v"]`` is how
    often argmax_c p(x_u = c | x_v), with p(x_u = c | x_v) ~= sum_k w_k p(x_u = c | z_k) / sum_k w_k,
    is the datum's class. ``view_log_likelihood[v]`` is log p^(x_v), the IS estimate of a single
    view's marginal (a stochastic lower bound, like ``log_likelihood``). ``None`` for other models.
"""
from __future__ import annotations

import math
from typing import Dict

import torch

from zoo.core.weights import per_datum_log_weights
from zoo.evaluation.estimators.base import Estimator

__all__ = ["ViewLikelihoods", "conditional_log_likelihoods"]


def _log_weight_chunks(model, guide, x, idx, N, num_samples: int, max_elements: int):
    """Yield LogWeights for the minibatch ``x = data[idx]`` in particle chunks of at most
    ``max_elements`` decoder outputs. Passing ``idx`` lets per-datum guides find their rows."""
    per_particle = x.shape[0] * max(1, x.shape[1])
    chunk = max(1, min(num_samples, max_elements // per_particle))
    done = 0
    while done < num_samples:
        k = min(chunk, num_samples - done)
        yield per_datum_log_weights(model, guide, x, idx=idx, N=N, num_particles=k)
        done += k


@torch.no_grad()
def conditional_log_likelihoods(model, guide, x: torch.Tensor, num_samples: int = 1000, batch_size: int = 100,
                                max_elements: int = 1 << 24) -> Dict[str, Dict[str, torch.Tensor]]:
    """Per datum, the self-normalized log p(x_u | x_v) for every ordered pair of the model's views, and
    each view's log p^(x_v) (module docstring).

    ``guide.given((v,))`` is the proposal q(z | x_v); the model observes every view, and its
    likelihood's ``log_prob_views`` gives each view's log p(x_u | z_k) at the same samples.
    Returns ``{"conditional": {"u|v": [n]}, "correct": {"u|v": [n] bool, u categorical},
    "marginal": {"v": [n]}}``. Call it in eval mode (:func:`evaluate` does).
    """
    views = model.views
    n = x.shape[0]
    out = {"conditional": {}, "correct": {}, "marginal": {}}
    for j, given in enumerate(views):
        proposal = guide.given((given.name,))
        cond = {u.name: [] for u in views if u is not given}
        correct = {u.name: [] for u in views if u is not given and u.likelihood == "categorical"}
        marginal = []
        for i in range(0, n, batch_size):
            idx = torch.arange(i, min(i + batch_size, n), device=x.device)
            xb = x[idx]
            parts = list(_log_weight_chunks(model, proposal, xb, idx, n, num_samples, max_elements))
            per_view = torch.cat([p.x_dist.log_prob_views(xb) for p in parts])               # [K, b, V]
            log_w = per_view[..., j] + torch.cat([p.log_prior - p.log_q for p in parts])     # log w_k, [K, b]
            K = log_w.shape[0]
            log_norm = torch.logsumexp(log_w, 0)
            marginal.append(log_norm - math.log(K))
            for t, target in enumerate(views):
                if target is given:
                    continue
                cond[target.name].append(torch.logsumexp(log_w + per_view[..., t], 0) - log_norm)
                if target.likelihood == "categorical":
                    probs = torch.cat([p.x_dist.parts[t].probs for p in parts])              # [K, b, C]
                    predictive = (torch.softmax(log_w, 0).unsqueeze(-1) * probs).sum(0)      # [b, C]
                    correct[target.name].append(predictive.argmax(-1) == target.of(xb).argmax(-1))
        out["marginal"][given.name] = torch.cat(marginal)
        for u, values in cond.items():
            out["conditional"][f"{u}|{given.name}"] = torch.cat(values)
        for u, values in correct.items():
            out["correct"][f"{u}|{given.name}"] = torch.cat(values)
    return out


class ViewLikelihoods(Estimator):
    """Draws its own samples (each single view's posterior q(z | x_v)) in :meth:`finish`, and reads the IS
    estimate of the joint (``per_datum["log_likelihood"]``)."""
    name = "views"
    keys = {
        "conditional_log_likelihood": "per pair of views 'u|v': log p(x_u | x_v) = log p^(x_u, x_v) - log p^(x_v), "
                                      "IS with the joint and the single-view posteriors (models with views)",
        "conditional_log_likelihood_self_normalized": "per pair 'u|v': log p(x_u | x_v), self-normalized IS with "
                                                      "q(z | x_v) only (models with views)",
        "conditional_accuracy": "per pair 'u|v' with u categorical: accuracy of argmax p(x_u | x_v) "
                                "(models with views)",
        "view_log_likelihood": "per view v: log p(x_v), IS with q(z | x_v) (models with views)",
    }

    @classmethod
    def applies(cls, ctx) -> bool:
        return len(ctx.model.views) >= 2 and getattr(ctx.guide, "encodes_views", False)

    def finish(self, result, per_datum):
        ctx = self.ctx
        out = conditional_log_likelihoods(ctx.model, ctx.guide, ctx.x, ctx.num_samples, ctx.batch_size,
                                          ctx.max_elements)
        joint = per_datum["log_likelihood"]
        difference = {pair: joint - out["marginal"][pair.split("|")[1]].double().cpu() for pair in out["conditional"]}
        columns = {f"conditional_log_likelihood[{k}]": v for k, v in difference.items()}
        columns.update({f"conditional_log_likelihood_self_normalized[{k}]": v.double().cpu()
                        for k, v in out["conditional"].items()})
        return ({"conditional_log_likelihood": {k: v.mean().item() for k, v in difference.items()},
                 "conditional_log_likelihood_self_normalized": {k: v.mean().item()
                                                                for k, v in out["conditional"].items()},
                 "conditional_accuracy": {k: v.double().mean().item() for k, v in out["correct"].items()},
                 "view_log_likelihood": {k: v.mean().item() for k, v in out["marginal"].items()}},
                columns)
