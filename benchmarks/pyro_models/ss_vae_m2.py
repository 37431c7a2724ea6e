"""The semi-supervised VAE "M2" of Kingma et al. (2014), as Pyro's example writes its model.

Source: pyro-ppl/pyro ``examples/vae/ss_vae_M2.py`` (class ``SSVAE``, method ``model``), with the
decoder of ``examples/vae/utils/custom_mlp.py`` (an MLP on the concatenation [z, y], softplus hidden
units, sigmoid output). The generative story, per datum::

    z ~ N(0, I)                          (z_dim,)
    y ~ OneHotCategorical(1/K, ..., 1/K)  one-hot, event shape (K,)
    x | y, z ~ Bernoulli(f_theta([z, y]))

Only the zoo contract's changes (README): the signature ``model(x, idx=None, N=None)``, the data
plate ``pyro.plate("data", N, subsample=idx)`` (the example's plate has no size), and y sampled for
every datum (the zoo's data sets are unlabelled, so the label is a latent: the example's
``obs=ys`` with ``ys=None``). The batch size comes from N when ``x`` is None (generation).
The example's guide networks (``encoder_y``, ``encoder_z``) are the zoo's guides here.

Reference: D. P. Kingma, D. J. Rezende, S. Mohamed and M. Welling, "Semi-Supervised Learning with
Deep Generative Models", NeurIPS 2014, https://arxiv.org/abs/1406.5298.

Usage::

    pyro-zoo compare benchmarks/pyro_models/ss_vae_m2.py:m2 --dataset digits --epochs 1 \\
        --guides amortized --objectives elbo,enum,tracegraph
"""
import pyro
import pyro.distributions as dist
import torch
from torch import nn


class SSVAE(nn.Module):
    """M2's generative model p(y) p(z) p(x | y, z); the decoder is the example's MLP on [z, y]."""

    def __init__(self, output_size=10, input_size=784, z_dim=50, hidden_layers=(500,)):
        super().__init__()
        self.output_size = output_size
        self.input_size = input_size
        self.z_dim = z_dim
        sizes = [z_dim + output_size, *hidden_layers]
        layers = []
        for a, b in zip(sizes[:-1], sizes[1:]):
            layers += [nn.Linear(a, b), nn.Softplus()]
        self.decoder = nn.Sequential(*layers, nn.Linear(sizes[-1], input_size), nn.Sigmoid())

    def model(self, xs, idx=None, N=None):
        pyro.module("ss_vae", self)
        batch_size = xs.size(0) if xs is not None else N
        options = dict(dtype=torch.get_default_dtype() if xs is None else xs.dtype,
                       device=self.decoder[0].weight.device)
        with pyro.plate("data", N, subsample=idx):
            prior_loc = torch.zeros(batch_size, self.z_dim, **options)
            prior_scale = torch.ones(batch_size, self.z_dim, **options)
            zs = pyro.sample("z", dist.Normal(prior_loc, prior_scale).to_event(1))
            alpha_prior = torch.ones(batch_size, self.output_size, **options) / (1.0 * self.output_size)
            ys = pyro.sample("y", dist.OneHotCategorical(alpha_prior))
            # the example's ConcatModule(allow_broadcast=True): [z, y] over their broadcast batch shape
            batch = torch.broadcast_shapes(zs.shape[:-1], ys.shape[:-1])
            loc = self.decoder(torch.cat([zs.expand(batch + zs.shape[-1:]), ys.expand(batch + ys.shape[-1:])], -1))
            pyro.sample("x", dist.Bernoulli(loc, validate_args=False).to_event(1), obs=xs)
            return loc


def m2(x_dim, num_classes=10, z_dim=8, hidden=(200,)):
    """Pyro's SS-VAE M2 generative model (examples/vae/ss_vae_M2.py), y a latent OneHotCategorical."""
    return SSVAE(output_size=num_classes, input_size=x_dim, z_dim=z_dim, hidden_layers=tuple(hidden))
