"""Wake-sleep, RWS and the IWAE bound, correct and written differently from the reference: log-probabilities as
x * logits - softplus(logits), particles drawn one at a time from torch.distributions, RWS weights as
exp(log w - logsumexp log w), the IWAE sample by Normal.rsample, and training by plain SGD with momentum."""
from functools import partial

import torch
from torch.distributions import Bernoulli, Normal
from torch.nn.functional import softplus

from zoo.homework.wake_sleep_and_iwae.problem import GaussianVAE, HelmholtzMachine

METHODS = ("wake_sleep", "rws", "iwae")


def _bernoulli_log_prob(value, logits):
    return value * logits - softplus(logits)


def log_joint(machine, x, h):
    return (_bernoulli_log_prob(h, machine.prior_logits).sum(-1)
            + _bernoulli_log_prob(x, machine.decoder(h)).sum(-1))


def log_recognition(machine, h, x):
    return _bernoulli_log_prob(h, machine.encoder(x)).sum(-1)


def _particles(machine, x, num_samples):
    q = Bernoulli(logits=machine.encoder(x).detach())
    return torch.stack([q.sample() for _ in range(num_samples)])


def wake_surrogate(machine, x, num_samples):
    h = _particles(machine, x, num_samples)
    return sum(log_joint(machine, x, h[s]).sum() for s in range(num_samples)) / num_samples


def sleep_surrogate(machine, num_samples):
    h = Bernoulli(logits=machine.prior_logits.detach().expand(num_samples, -1)).sample()
    x = Bernoulli(logits=machine.decoder(h).detach()).sample()
    return log_recognition(machine, h, x).sum() / num_samples


def rws_surrogate(machine, x, num_samples):
    h = _particles(machine, x, num_samples)
    log_p, log_q = log_joint(machine, x, h), log_recognition(machine, h, x)
    log_w = (log_p - log_q).detach()
    weights = torch.exp(log_w - torch.logsumexp(log_w, 0, keepdim=True))
    return (weights * log_p).sum() + (weights * log_q).sum()


def iwae_bound(log_joint, loc, log_scale, num_samples):
    q = Normal(loc, log_scale.exp())
    z = q.rsample((num_samples,))
    log_w = log_joint(z) - q.log_prob(z).sum(-1)
    return torch.logsumexp(log_w, 0) - torch.log(torch.tensor(float(num_samples), dtype=log_w.dtype))


def train(method, x, num_latents, steps, seed):
    torch.manual_seed(seed)
    model = GaussianVAE(num_latents, x.shape[1]) if method == "iwae" else HelmholtzMachine(num_latents, x.shape[1])
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01 if method == "iwae" else 0.1, momentum=0.9)
    order = torch.randperm(x.shape[0])
    for step in range(steps):
        start = (step * 50) % (x.shape[0] - 50)
        batch = x[order[start:start + 50]]
        if method == "iwae":
            loc, log_scale = model.guide(batch)
            ascent = iwae_bound(partial(model.log_joint, batch), loc, log_scale, 5).mean()
        elif method == "rws":
            ascent = rws_surrogate(model, batch, 5) / 50
        else:
            ascent = wake_surrogate(model, batch, 1) / 50 + sleep_surrogate(model, 50)
        optimizer.zero_grad()
        (-ascent).backward()
        optimizer.step()
    return model.state_dict()


def compare_on_digits(seed=0, num_latents=10, steps=400):
    from zoo.data import load_digits
    from zoo.homework.wake_sleep_and_iwae.problem import sbn_log_likelihood, vae_log_likelihood
    data = load_digits()
    for method in METHODS:
        model = GaussianVAE(num_latents, 64) if method == "iwae" else HelmholtzMachine(num_latents, 64)
        model.load_state_dict(train(method, data.train, num_latents, steps, seed))
        print(method, vae_log_likelihood(model, data.test) if method == "iwae" else sbn_log_likelihood(model, data.test))


