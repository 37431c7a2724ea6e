"""Assignment 2, reference solution: gradient estimators for discrete latents.

Each estimator is a *surrogate*: a scalar whose autograd gradient is the estimate of
grad E_q[f(z)], the ELBO gradient of the handout (summed over the data, averaged over
``num_particles`` samples per datum).
"""
import torch
from torch.distributions import Bernoulli


def log_q(logits, z):
    """log q(z) = sum_k [z_k log sigmoid(l_k) + (1 - z_k) log sigmoid(-l_k)], for z ``[S, B, K]``: ``[S, B]``."""
    return Bernoulli(logits=logits, validate_args=False).log_prob(z).sum(-1)


def reinforce(logits, f, num_particles):
    """The score-function (REINFORCE) surrogate:  mean_s [ stop(f(z_s)) log q(z_s) + f(z_s) ],  summed over data.

    Its gradient is  mean_s f(z_s) grad log q(z_s)  (the score-function term) plus  mean_s grad f(z_s)
    (f's own dependence on the parameters, with z_s held fixed)."""
    z = torch.bernoulli(torch.sigmoid(logits.detach()).expand(num_particles, *logits.shape))
    fz = f(z)
    return (fz.detach() * log_q(logits, z) + fz).mean(0).sum()


def reinforce_loo(logits, f, num_particles):
    """REINFORCE with the leave-one-out baseline  b_s = mean_{j != s} f(z_j)  (Kool et al. 2019):

        mean_s [ stop(f(z_s) - b_s) log q(z_s) + f(z_s) ]

    b_s does not depend on z_s, so E[b_s grad log q(z_s)] = 0: unbiased, for any num_particles >= 2."""
    z = torch.bernoulli(torch.sigmoid(logits.detach()).expand(num_particles, *logits.shape))
    fz = f(z)
    baseline = (fz.sum(0, keepdim=True) - fz) / (num_particles - 1)
    signal = fz.detach() - baseline.detach()
    return (signal * log_q(logits, z) + fz).mean(0).sum()


def gumbel_softmax(logits, tau):
    """A Gumbel-softmax (Concrete) sample over the last axis:  softmax((logits + g) / tau),
    g_c = -log(-log u_c), u_c ~ Uniform(0, 1)."""
    u = torch.rand(logits.shape).clamp(1e-10, 1.0 - 1e-7)
    g = -torch.log(-torch.log(u))
    return torch.softmax((logits + g) / tau, dim=-1)


def straight_through(y_soft):
    """The straight-through sample: forward the one-hot of argmax(y_soft), backward the gradient of y_soft."""
    index = y_soft.argmax(-1, keepdim=True)
    y_hard = torch.zeros_like(y_soft).scatter_(-1, index, 1.0)
    return y_hard - y_soft.detach() + y_soft
