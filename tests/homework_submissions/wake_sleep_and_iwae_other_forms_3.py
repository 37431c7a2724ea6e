"""Wake-sleep, RWS and the IWAE bound, correct and written a third way: float64 inside every estimator (the result
cast back), the particles looped over one at a time, Independent(Normal) for q with torch.special.logsumexp, the
RWS weights by a stable division, and RWS trained with an extra sleep phase for q (Bornschein & Bengio's
"wake + sleep" variant), wake-sleep with two phases per step."""
import math

import torch
from torch.distributions import Independent, Normal

from zoo.homework.wake_sleep_and_iwae.problem import GaussianVAE, HelmholtzMachine

METHODS = ("wake_sleep", "rws", "iwae")


def log_joint(machine, x, h):
    a, W, c = machine.prior_logits.double(), machine.decoder.weight.double(), machine.decoder.bias.double()
    h, x = h.double(), x.double()
    logits = h @ W.T + c
    value = (h * a - torch.logaddexp(torch.zeros_like(a), a)).sum(-1) \
        + (x * logits - torch.logaddexp(torch.zeros_like(logits), logits)).sum(-1)
    return value.to(machine.prior_logits.dtype)


def log_recognition(machine, h, x):
    R, b = machine.encoder.weight.double(), machine.encoder.bias.double()
    logits = x.double() @ R.T + b
    value = (h.double() * logits - torch.logaddexp(torch.zeros_like(logits), logits)).sum(-1)
    return value.to(machine.prior_logits.dtype)


def wake_surrogate(machine, x, num_samples):
    probs = torch.sigmoid(machine.encoder(x)).detach()
    total = 0.0
    for _ in range(num_samples):
        total = total + log_joint(machine, x, torch.bernoulli(probs)).sum()
    return total / num_samples


def sleep_surrogate(machine, num_samples):
    prior = torch.sigmoid(machine.prior_logits.detach())
    h = torch.bernoulli(prior.repeat(num_samples, 1))
    x = torch.bernoulli(torch.sigmoid(machine.decoder(h)).detach())
    return log_recognition(machine, h, x).mean()


def rws_surrogate(machine, x, num_samples):
    probs = torch.sigmoid(machine.encoder(x)).detach()
    h = torch.stack([torch.bernoulli(probs) for _ in range(num_samples)])
    log_p, log_q = log_joint(machine, x, h), log_recognition(machine, h, x)
    log_w = (log_p - log_q).detach().double()
    w = torch.exp(log_w - log_w.max(0).values)
    weights = (w / w.sum(0)).to(log_p.dtype)
    return (weights * (log_p + log_q)).sum()


def iwae_bound(log_joint, loc, log_scale, num_samples):
    q = Independent(Normal(loc.double(), log_scale.double().exp()), 1)
    z = q.rsample(torch.Size([num_samples]))
    log_w = log_joint(z.to(loc.dtype)).double() - q.log_prob(z)
    return (torch.special.logsumexp(log_w, 0) - math.log(num_samples)).to(loc.dtype)


def train(method, x, num_latents, steps, seed):
    torch.manual_seed(seed)
    if method == "iwae":
        model = GaussianVAE(num_latents, x.shape[1])
        optimizer = torch.optim.Adam(model.parameters(), lr=0.03)
    else:
        model = HelmholtzMachine(num_latents, x.shape[1])
        optimizer = torch.optim.Adam(model.parameters(), lr=0.03)
    for _ in range(steps):
        batch = x[torch.randint(0, x.shape[0], (100,))]
        if method == "iwae":
            loc, log_scale = model.guide(batch)
            ascent = iwae_bound(lambda z, batch=batch: model.log_joint(batch, z), loc, log_scale, 5).mean()
        elif method == "rws":
            # the wake update of p and of q from the weighted particles, and a sleep update of q on dreams
            ascent = rws_surrogate(model, batch, 5) / 100 + 0.5 * sleep_surrogate(model, 100)
        else:
            ascent = wake_surrogate(model, batch, 1) / 100 + sleep_surrogate(model, 100)
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
