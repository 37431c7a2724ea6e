"""Probes of assignment 3: what must run next to the student's code, in the grader's worker.

A probe is called as ``probe(submission, *args)`` with arguments the grader chose and returns plain
values (tensors, numbers). It decides nothing: the grader validates what it returns and computes
every verdict itself (:mod:`zoo.homework.ppca_three_ways.checks`, which the worker does not import).
A submission can replace a probe; it then has to produce the right values for the grader's secret
inputs, which is the assignment.
"""
from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from pyro.infer import Trace_ELBO

__all__ = ["minibatch_elbos", "train_svi"]


def minibatch_elbos(sub, x, W, mu, sigma2, post_mean, post_cov, batch: int, num_samples: int):
    """``num_samples`` minibatch ELBOs ``[num_samples]`` of the student's ``model`` with the parameters
    (W, mu, sigma2) in Pyro's param store and the exact posterior N(post_mean[idx], post_cov) as guide."""
    N, latent_dim = x.shape[0], W.shape[1]
    pyro.clear_param_store()
    pyro.param("W", W)
    pyro.param("mu", mu)
    pyro.param("log_sigma", 0.5 * torch.log(torch.as_tensor(sigma2)))

    def exact_posterior_guide(x, idx, num_data, latent_dim):
        with pyro.plate("data", num_data, subsample=idx):
            pyro.sample("z", dist.MultivariateNormal(post_mean[idx], covariance_matrix=post_cov))

    elbo = Trace_ELBO()
    values = []
    for _ in range(num_samples):
        idx = torch.randperm(N)[:batch]
        values.append(-elbo.differentiable_loss(sub.model, exact_posterior_guide, x[idx], idx, N,
                                                latent_dim).detach())
    return torch.stack(values)


def train_svi(sub, guide_name: str, x, latent_dim: int):
    """The student's ``train_svi(x, guide, latent_dim)`` with their guide ``guide_name``: its (W, mu, sigma2)."""
    return sub.train_svi(x, getattr(sub, guide_name), latent_dim)
