"""Wake-sleep, RWS and the IWAE bound, correct and written differently again: samples as uniform < probability,
RWS as the gradient of the importance-weighted bound in theta (log q held fixed inside it) plus the weighted
log q, the Gaussian log density and the log-mean-exp written out with the maximum subtracted, and training
with separate optimisers for the generative and the recognition parameters."""
import math

import torch

from zoo.homework.wake_sleep_and_iwae.problem import GaussianVAE, HelmholtzMachine

METHODS = ("wake_sleep", "rws", "iwae")


def log_joint(machine, x, h):
    prior = torch.distributions.Bernoulli(logits=machine.prior_logits).log_prob(h)
    likelihood = torch.distributions.Bernoulli(logits=machine.decoder(h)).log_prob(x.expand(*h.shape[:-1], -1))
    return prior.sum(-1) + likelihood.sum(-1)


def log_recognition(machine, h, x):
    logits = machine.encoder(x)
    return (h * torch.nn.functional.logsigmoid(logits) + (1 - h) * torch.nn.functional.logsigmoid(-logits)).sum(-1)


def _bits(probs):
    return (torch.rand(probs.shape) < probs).to(probs.dtype)


def wake_surrogate(machine, x, num_samples):
    with torch.no_grad():
        h = _bits(torch.sigmoid(machine.encoder(x)).expand(num_samples, -1, -1))
    return log_joint(machine, x, h).mean(0).sum()


def sleep_surrogate(machine, num_samples):
    with torch.no_grad():
        h = _bits(torch.sigmoid(machine.prior_logits).repeat(num_samples, 1))
        x = _bits(torch.sigmoid(machine.decoder(h)))
    return log_recognition(machine, h, x).mean(0)


def rws_surrogate(machine, x, num_samples):
    with torch.no_grad():
        h = _bits(torch.sigmoid(machine.encoder(x)).expand(num_samples, -1, -1))
    log_p, log_q = log_joint(machine, x, h), log_recognition(machine, h, x)
    bound = torch.logsumexp(log_p - log_q.detach(), 0) - math.log(num_samples)      # its theta gradient: sum w~ grad log p
    weights = torch.softmax(log_p.detach() - log_q.detach(), 0)
    return bound.sum() + (weights * log_q).sum()


def iwae_bound(log_joint, loc, log_scale, num_samples):
    eps = torch.randn(num_samples, *loc.shape, dtype=loc.dtype)
    z = loc + eps * torch.exp(log_scale)
    log_q = (-0.5 * eps ** 2 - log_scale - 0.5 * math.log(2 * math.pi)).sum(-1)
    log_w = log_joint(z) - log_q
    top = log_w.max(0).values.detach()
    return top + torch.log(torch.exp(log_w - top).mean(0))


def train(method, x, num_latents, steps, seed):
    torch.manual_seed(seed)
    if method == "iwae":
        model = GaussianVAE(num_latents, x.shape[1])
        optimizers = [torch.optim.Adam(model.decoder.parameters(), lr=0.02),
                      torch.optim.Adam(model.encoder.parameters(), lr=0.02)]
    else:
        model = HelmholtzMachine(num_latents, x.shape[1])
        optimizers = [torch.optim.Adam(model.generative_parameters(), lr=0.02),
                      torch.optim.Adam(model.recognition_parameters(), lr=0.02)]
    for _ in range(steps):
        batch = x[torch.randint(0, x.shape[0], (128,))]
        for optimizer in optimizers:
            optimizer.zero_grad()
        if method == "iwae":
            loc, log_scale = model.guide(batch)
            loss = -iwae_bound(lambda z, batch=batch: model.log_joint(batch, z), loc, log_scale, 5).mean()
        elif method == "rws":
            loss = -rws_surrogate(model, batch, 5) / 128
        else:
            loss = -wake_surrogate(model, batch, 1) / 128 - sleep_surrogate(model, 128)
        loss.backward()
        for optimizer in optimizers:
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
