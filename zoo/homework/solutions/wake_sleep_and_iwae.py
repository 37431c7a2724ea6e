"""Homework 4, reference solution: wake-sleep, reweighted wake-sleep and the importance-weighted bound.

Each estimator is a *surrogate*: a scalar whose autograd gradient is the update (an ascent direction), averaged
over the particles and summed over the data. The binary samples are drawn without gradient: the Helmholtz
machine's updates never differentiate through a sample.
"""
import math

import torch
from torch.distributions import Bernoulli, Normal

from zoo.homework.wake_sleep_and_iwae.problem import GaussianVAE, HelmholtzMachine

METHODS = ("wake_sleep", "rws", "iwae")


def log_joint(machine, x, h):
    """log p(x, h) = sum_k log Bern(h_k; sigmoid(a_k)) + sum_d log Bern(x_d; sigmoid(W h + c)_d): ``[..., B]``."""
    prior = Bernoulli(logits=machine.prior_logits, validate_args=False).log_prob(h).sum(-1)
    return prior + Bernoulli(logits=machine.decoder(h), validate_args=False).log_prob(x).sum(-1)


def log_recognition(machine, h, x):
    """log q(h | x) = sum_k log Bern(h_k; sigmoid(R x + b)_k): ``[..., B]``."""
    return Bernoulli(logits=machine.encoder(x), validate_args=False).log_prob(h).sum(-1)


def _recognise(machine, x, num_samples):
    """h_1..h_S ~ q(h | x), without gradient: ``[S, B, K]``."""
    probs = torch.sigmoid(machine.encoder(x)).detach()
    return torch.bernoulli(probs.expand(num_samples, *probs.shape))


def wake_surrogate(machine, x, num_samples):
    """The wake phase: mean_s log p(x, h_s), h_s ~ q(h | x), summed over the data. Its gradient in theta is the
    wake update; it has none in phi."""
    h = _recognise(machine, x, num_samples)
    return log_joint(machine, x, h).mean(0).sum()


def sleep_surrogate(machine, num_samples):
    """The sleep phase: mean_s log q(h_s | x_s) over dreams h_s ~ p(h), x_s ~ p(x | h_s). Its gradient in phi is
    E_p[grad log q(h | x)] = -grad E_p(x) KL(p(h | x) || q(h | x)); it has none in theta."""
    with torch.no_grad():
        prior = torch.sigmoid(machine.prior_logits)
        h = torch.bernoulli(prior.expand(num_samples, *prior.shape))
        x = torch.bernoulli(torch.sigmoid(machine.decoder(h)))
    return log_recognition(machine, h, x).mean()


def rws_surrogate(machine, x, num_samples):
    """Reweighted wake-sleep (Bornschein & Bengio 2015): h_1..h_S ~ q(h | x), log w_s = log p(x, h_s) - log q(h_s | x),
    w~ = softmax(log w) over s, held fixed:  sum_s w~_s [log p(x, h_s) + log q(h_s | x)],  summed over the data.
    Its theta gradient is the wake update of p (the gradient of the IWAE bound L_S in theta), its phi gradient the
    wake-phase update of q (toward KL(p(h | x) || q(h | x)))."""
    h = _recognise(machine, x, num_samples)
    log_p, log_q = log_joint(machine, x, h), log_recognition(machine, h, x)
    weights = torch.softmax((log_p - log_q).detach(), dim=0)
    return (weights * (log_p + log_q)).sum(0).sum()


def iwae_bound(log_joint, loc, log_scale, num_samples):
    """The importance-weighted bound's estimate for each datum, reparameterised:

        z_k = loc + exp(log_scale) eps_k,  eps_k ~ N(0, I),  log w_k = log p(x, z_k) - log q(z_k | x),
        L_K = logsumexp_k(log w_k) - log K.                                                       ``[B]``
    """
    scale = torch.exp(log_scale)
    eps = torch.randn((num_samples, *loc.shape), dtype=loc.dtype)
    z = loc + scale * eps
    log_w = log_joint(z) - Normal(loc, scale).log_prob(z).sum(-1)
    return torch.logsumexp(log_w, dim=0) - math.log(num_samples)


def train(method, x, num_latents, steps, seed):
    """Fit ``method`` on the binary rows of ``x`` for ``steps`` Adam steps of minibatches of 100, from ``seed``;
    return the model's ``state_dict()``: a :class:`HelmholtzMachine` for wake-sleep and RWS (5 particles), a
    :class:`GaussianVAE` for IWAE (K = 5)."""
    torch.manual_seed(seed)
    if method == "iwae":
        vae = GaussianVAE(num_latents, x.shape[1])
        optimizer = torch.optim.Adam(vae.parameters(), lr=0.02)
        for _ in range(steps):
            batch = x[torch.randint(0, x.shape[0], (100,))]
            loc, log_scale = vae.guide(batch)
            loss = -iwae_bound(lambda z, batch=batch: vae.log_joint(batch, z), loc, log_scale, 5).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        return vae.state_dict()
    if method not in METHODS:
        raise ValueError(f"no method {method}")
    machine = HelmholtzMachine(num_latents, x.shape[1])
    optimizer = torch.optim.Adam(machine.parameters(), lr=0.02)
    for _ in range(steps):
        batch = x[torch.randint(0, x.shape[0], (100,))]
        if method == "wake_sleep":
            ascent = wake_surrogate(machine, batch, 1) / 100 + sleep_surrogate(machine, 100)
        else:
            ascent = rws_surrogate(machine, batch, 5) / 100
        optimizer.zero_grad()
        (-ascent).backward()
        optimizer.step()
    return machine.state_dict()


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
