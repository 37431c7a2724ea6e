"""The M2 generative model of Kingma et al. (2014), unsupervised, as Pyro's semi-supervised VAE example writes it.

Source: pyro-ppl/pyro ``examples/vae/ss_vae_M2.py`` (``SSVAE.model``), whose generative story is::

    z ~ N(0, I)                       (z_dim "style" units)
    y ~ Categorical(1/K)              (the class, one-hot)
    x | y, z ~ Bernoulli(f_theta(z, y))

with f_theta an MLP of [z, y] through ``hidden`` softplus layers and a sigmoid output. What changed, and
only what the zoo's contract asks for:

- the data plate is ``pyro.plate("data", N, subsample=idx)`` and the signature ``model(x, idx=None, N=None)``;
  the prior's parameters are made without the minibatch's size, so ``model(None, N=n)`` generates;
- ``y`` is always latent (this is M2 without labels, where its posterior matters), and is written
  ``OneHotCategorical(probs.unsqueeze(-2)).to_event(1)``, the one-hot form the contract accepts, event
  shape ``(1, K)``, instead of ``OneHotCategorical(probs)`` with event shape ``(K,)``;
- the decoder's input [z, y] is concatenated over the broadcast batch shape of z and y, as the example's
  ``ConcatModule(allow_broadcast=True)`` does, so that ``enum`` (Pyro's TraceEnum_ELBO) can put y's K values
  on a dimension of their own; with y sampled the two shapes are equal and nothing changes.

y and z are independent a priori and both parents of x, so given x they are coupled (explaining away):
the posterior's graph, which ``--structured`` follows, gives the guide the example writes by hand,
q(y | x) q(z | x, y), where the prior's arrows alone give the mean-field q(y | x) q(z | x).

Reference: D. P. Kingma, D. J. Rezende, S. Mohamed, M. Welling, "Semi-Supervised Learning with Deep
Generative Models", NeurIPS 2014, https://arxiv.org/abs/1406.5298.

Usage::

    pyro-zoo train benchmarks/pyro_models/m2_structured.py:m2 --guide amortized --structured --dataset digits
"""
import pyro
import pyro.distributions as dist
import torch
from torch import nn


def m2(x_dim, z_dim=8, num_classes=10, hidden=(200,)):
    """M2 (Kingma et al. 2014) without labels: z ~ N(0, I), y ~ Cat(1/K), x | y, z ~ Bernoulli(f(z, y))."""
    sizes = (z_dim + num_classes, *hidden)
    layers = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(a, b), nn.Softplus()]
    decoder = nn.Sequential(*layers, nn.Linear(sizes[-1], x_dim), nn.Sigmoid())

    def model(x, idx=None, N=None):
        pyro.module("decoder", decoder)
        with pyro.plate("data", N, subsample=idx):
            zs = pyro.sample("z", dist.Normal(torch.zeros(z_dim), torch.ones(z_dim)).to_event(1))
            alpha_prior = torch.ones(num_classes) / (1.0 * num_classes)
            ys = pyro.sample("y", dist.OneHotCategorical(alpha_prior.unsqueeze(-2)).to_event(1))
            # the example's ConcatModule(allow_broadcast=True): [z, y] over their broadcast batch shape, so an
            # enumerated y (a leading dimension of its K values) meets the minibatch's z
            y_flat = ys.flatten(-2)
            batch = torch.broadcast_shapes(zs.shape[:-1], y_flat.shape[:-1])
            loc = decoder(torch.cat([zs.expand(batch + zs.shape[-1:]), y_flat.expand(batch + y_flat.shape[-1:])],
                                    dim=-1))
            pyro.sample("x", dist.Bernoulli(loc, validate_args=False).to_event(1), obs=x)

    return model
