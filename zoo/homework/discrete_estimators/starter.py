"""Homework 2, gradient estimators for discrete latents: your submission. Fill in every TODO and upload this file.

The ELBO of a sigmoid belief net with binary latents z in {0, 1}^K and a mean-field guide
q_phi(z) = prod_k Bernoulli(z_k; sigmoid(phi_k)):

    ELBO = E_{q_phi}[ f(z) ],    f(z) = log p_theta(x, z) - log q_phi(z)

z is discrete, so grad E_q[f] cannot be taken through the sample. Each estimator below is a
*surrogate*: a scalar whose autograd gradient is the estimate (summed over the data, averaged
over the particles).

See handout.md for the task and how it is graded; run `python selfcheck.py` to grade it locally.
"""


def log_q(logits, z):
    """log q(z) = sum_k [z_k log sigmoid(l_k) + (1 - z_k) log sigmoid(-l_k)], for z ``[S, B, K]``: ``[S, B]``."""
    raise NotImplementedError("TODO: log q(z), summed over the K latents")


def reinforce(logits, f, num_particles):
    """The score-function (REINFORCE) surrogate, with z_1..z_S ~ q (S = num_particles), averaged over s,
    summed over the data; its gradient must be  mean_s [ f(z_s) grad log q(z_s) + grad f(z_s) ]."""
    raise NotImplementedError("TODO: the REINFORCE surrogate")


def reinforce_loo(logits, f, num_particles):
    """REINFORCE with the leave-one-out baseline  b_s = mean_{j != s} f(z_j):
    gradient  mean_s [ (f(z_s) - b_s) grad log q(z_s) + grad f(z_s) ]."""
    raise NotImplementedError("TODO: the REINFORCE surrogate with a leave-one-out baseline")


def gumbel_softmax(logits, tau):
    """A Gumbel-softmax (Concrete) sample over the last axis:  softmax((logits + g) / tau),
    g_c = -log(-log u_c), u_c ~ Uniform(0, 1)."""
    raise NotImplementedError("TODO: a Gumbel-softmax sample")


def straight_through(y_soft):
    """The straight-through sample: forward the one-hot of argmax(y_soft), backward the gradient of y_soft."""
    raise NotImplementedError("TODO: the straight-through sample")
