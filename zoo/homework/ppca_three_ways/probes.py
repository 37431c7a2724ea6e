"""Probes of assignment 3: what must run next to the student's code, in the grader's worker.

A probe is called as ``probe(submission, *args)`` with arguments the grader chose and returns plain
values (tensors, numbers). It decides nothing: the grader validates what it returns and computes
every verdict itself (:mod:`zoo.homework.ppca_three_ways.checks`, which the worker does not import).
A submission can replace a probe; it then has to produce the right values for the grader's secret
inputs, which is the assignment.
"""
from __future__ import annotations

import contextlib

import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import torch
from pyro.infer import SVI, Trace_ELBO

__all__ = ["minibatch_elbos", "train_svi"]


def minibatch_elbos(sub, x, W, mu, sigma2, post_mean, post_cov, batches):
    """The ELBO of the student's ``model`` on each minibatch ``x[idx]``, ``idx`` a row of ``batches`` ``[n, B]``
    (the grader's), with the parameters (W, mu, sigma2) in Pyro's param store and the exact posterior
    N(post_mean[idx], post_cov) as guide: ``[n]``."""
    N, latent_dim = x.shape[0], W.shape[1]
    pyro.clear_param_store()
    pyro.param("W", W)
    pyro.param("mu", mu)
    pyro.param("log_sigma", 0.5 * torch.log(torch.as_tensor(sigma2)))

    def exact_posterior_guide(x, idx, num_data, latent_dim):
        with pyro.plate("data", num_data, subsample=idx):
            pyro.sample("z", dist.MultivariateNormal(post_mean[idx], covariance_matrix=post_cov))

    elbo = Trace_ELBO()
    return torch.stack([-elbo.differentiable_loss(sub.model, exact_posterior_guide, x[idx], idx, N,
                                                  latent_dim).detach() for idx in batches.long()])


@contextlib.contextmanager
def _recorded_svi_steps():
    """While inside, every ``pyro.infer.SVI.step`` (whatever name the student imported it by) appends the loss it
    returns to the list yielded: the path of the student's loop."""
    losses, step = [], SVI.step

    def recording(self, *args, **kwargs):
        loss = step(self, *args, **kwargs)
        losses.append(float(loss))
        return loss

    SVI.step = recording
    try:
        yield losses
    finally:
        SVI.step = step


def train_svi(sub, guide_name: str, x, latent_dim: int, num_steps=None):
    """The student's ``train_svi(x, guide, latent_dim)`` with their guide ``guide_name`` (and ``num_steps`` when
    given), then that guide as it was left trained, read from Pyro's param store at every datum:
    ``{"parameters": (W, mu, sigma2), "loc": [N, q], "covariance": [N, q, q], "losses": [steps]}`` of q(z_n),
    ``losses`` being what each ``SVI.step`` of the student's loop returned (its path, which the grader checks)."""
    guide = getattr(sub, guide_name)
    steps = {} if num_steps is None else {"num_steps": num_steps}
    with _recorded_svi_steps() as losses:
        parameters = sub.train_svi(x, guide, latent_dim, **steps)
    N = x.shape[0]
    with torch.no_grad():
        sites = poutine.trace(guide).get_trace(x, torch.arange(N), N, latent_dim).nodes
        if "z" not in sites:
            raise ValueError(f"{guide_name} has no sample site 'z'")
        q = sites["z"]["fn"]
        loc = q.mean.expand(N, latent_dim)
        covariance = q.covariance_matrix if hasattr(q, "covariance_matrix") else torch.diag_embed(q.variance)
    return {"parameters": parameters, "loc": loc, "covariance": covariance.expand(N, latent_dim, latent_dim),
            "losses": torch.tensor(losses, dtype=torch.float64)}
