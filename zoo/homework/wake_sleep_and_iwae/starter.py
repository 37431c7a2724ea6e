"""Homework 4, wake-sleep and the importance-weighted bound: your submission. Fill in every TODO and upload this file.

The Helmholtz machine (given: ``HelmholtzMachine(K, D)``), binary latents h and pixels x:

    p(h)     = prod_k Bern(h_k; sigmoid(a_k))               a = machine.prior_logits
    p(x | h) = prod_d Bern(x_d; sigmoid(W h + c)_d)         W h + c = machine.decoder(h)
    q(h | x) = prod_k Bern(h_k; sigmoid(R x + b)_k)         R x + b = machine.encoder(x)

Each estimator is a *surrogate*: a scalar whose autograd gradient is the update (an ascent direction: the
grader and your training loop maximise it), averaged over the samples and summed over the data. Draw the binary
samples without gradient (``torch.bernoulli``).

See handout.md for the task and how it is graded; run `python selfcheck.py` to grade it locally.
"""
import torch

from zoo.homework.wake_sleep_and_iwae.problem import GaussianVAE, HelmholtzMachine

METHODS = ("wake_sleep", "rws", "iwae")


def log_joint(machine, x, h):
    """log p(x, h) for h ``[..., B, K]`` and x ``[B, D]``: ``[..., B]``."""
    raise NotImplementedError("TODO: log p(x, h), summed over the latents and the pixels")


def log_recognition(machine, h, x):
    """log q(h | x) for h ``[..., B, K]`` and x ``[..., B, D]``: ``[..., B]``."""
    raise NotImplementedError("TODO: log q(h | x), summed over the latents")


def wake_surrogate(machine, x, num_samples):
    """The wake phase: h_1..h_S ~ q(h | x) (S = num_samples), the surrogate mean_s log p(x, h_s) summed over the
    data. Its gradient in theta = (a, W, c) is the wake update; it must have none in phi = (R, b)."""
    raise NotImplementedError("TODO: the wake-phase surrogate")


def sleep_surrogate(machine, num_samples):
    """The sleep phase: dreams h_s ~ p(h), x_s ~ p(x | h_s), s = 1..S; the surrogate mean_s log q(h_s | x_s). Its
    gradient in phi is the sleep update; it must have none in theta."""
    raise NotImplementedError("TODO: the sleep-phase surrogate")


def rws_surrogate(machine, x, num_samples):
    """Reweighted wake-sleep: h_1..h_S ~ q(h | x), log w_s = log p(x, h_s) - log q(h_s | x), self-normalised
    weights w~ = softmax(log w) over s, held fixed; the surrogate sum_s w~_s [log p(x, h_s) + log q(h_s | x)],
    summed over the data."""
    raise NotImplementedError("TODO: the reweighted wake-sleep surrogate")


def iwae_bound(log_joint, loc, log_scale, num_samples):
    """The importance-weighted bound for each datum, reparameterised: z_k = loc + exp(log_scale) eps_k (k = 1..K,
    eps_k ~ N(0, I)), log w_k = log_joint(z_k) - log q(z_k | x), L_K = logsumexp_k(log w_k) - log K. ``loc`` and
    ``log_scale`` are ``[B, J]``; ``log_joint(z)`` maps z ``[K, B, J]`` to ``[K, B]``. Returns ``[B]``."""
    raise NotImplementedError("TODO: the importance-weighted bound")


def train(method, x, num_latents, steps, seed):
    """Fit ``method`` (``"wake_sleep"``, ``"rws"`` or ``"iwae"``) to the binary rows of ``x`` ``[N, D]`` with
    ``steps`` optimiser steps, from ``torch.manual_seed(seed)``; return ``model.state_dict()`` of a
    ``HelmholtzMachine(num_latents, D)`` (wake-sleep, RWS) or a ``GaussianVAE(num_latents, D)`` (IWAE)."""
    raise NotImplementedError("TODO: the training loop of the three methods")


def compare_on_digits(seed=0, num_latents=10, steps=400):
    """Train the three methods on the binarized 8x8 digits and print their test log-likelihood. (Given.)"""
    from zoo.data import load_digits
    from zoo.homework.wake_sleep_and_iwae.problem import sbn_log_likelihood, vae_log_likelihood
    data = load_digits()
    for method in METHODS:
        model = GaussianVAE(num_latents, 64) if method == "iwae" else HelmholtzMachine(num_latents, 64)
        model.load_state_dict(train(method, data.train, num_latents, steps, seed))
        torch.manual_seed(seed)
        ll = vae_log_likelihood(model, data.test) if method == "iwae" else sbn_log_likelihood(model, data.test)
        print(f"{method:>10}: test log-likelihood {ll:.2f} nats per digit")


if __name__ == "__main__":
    compare_on_digits()
