"""Top-down (ladder) inference: the guide samples a hierarchy in the model's own order, top layer first, and
merges at each layer what x says bottom-up with what the generative model says top-down.

For a model z_L -> ... -> z_1 -> x, a deterministic bottom-up pass reads x once::

    d_1 = f_1(x),   d_l = f_l(d_{l-1}),   (mu_hat_l, sigma_hat_l) = heads_l(d_l)      l = 1 .. L

and the guide then runs top-down, sharing the generative model's top-down pass p(z_l | z_{l+1})
(:meth:`~zoo.core.contract.ZooModel.conditional_prior`, with the model's own parameters)::

    q(z_L | x) = N(mu_hat_L, sigma_hat_L^2)                                (or the top family's posterior)
    q(z_l | z_{l+1}, x) = N(mu_q, sigma_q^2),  (mu_p, sigma_p) of p(z_l | z_{l+1}), and

``merge="precision"`` (Ladder VAE, Sonderby et al. 2016, eq. 19-21)::

    sigma_q^2 = 1 / (sigma_hat^-2 + sigma_p^-2),      mu_q = (mu_hat sigma_hat^-2 + mu_p sigma_p^-2) sigma_q^2

the product of the prior's Gaussian and a Gaussian "likelihood message" from x. For a linear-Gaussian
hierarchy with one unit per layer this is the exact posterior's form, so the guide can reach log w = log p(x) for
every draw (``tests/test_ladder.py``).

``merge="residual"`` (NVAE, Vahdat & Kautz 2020, at MLP scale)::

    mu_q = mu_p + Delta_mu,      sigma_q = sigma_p * (softplus(Delta_s) + 1e-3),      (Delta_mu, Delta_s) = g_l([d_l, z_{l+1}])

q is parameterized relative to the prior, so the KL of a layer the data says nothing about starts near 0.

A VampPrior on the top layer (``--prior vampprior``) is built from :meth:`Ladder.marginal_posterior`, q(z_L | u) by
the bottom-up pass over each pseudo-input u, as Tomczak & Welling's hierarchical VampPrior uses the encoder's
q(z_2 | x).

A site without latent parents (the top) takes the bottom-up head alone, through its family
(:func:`~guides.base.site_distribution`: a Normal, or a vMF / wrapped normal with ``--latent``). The order is the
model's sampling order, so each analytic KL that ``tracemeanfield`` takes, KL(q(z_l | z_{l+1}, x) || p(z_l | z_{l+1}))
at the sampled z_{l+1}, is an unbiased term of the ELBO (a bottom-up guide's is not, which is why ``amortized
--structured`` refuses ``tracemeanfield``). The guide computes with the model's parameters (``borrows_model``), so
gradients of log q reach the generative top-down pass: dreg, which needs disjoint parameters, refuses it.

Bottom-up blocks: f_1 has the hidden sizes ``hidden`` (default: mirror the decoder, Burda et al.'s 784-200-200 for
the hvae), each f_l above it ``ladder_hidden`` (default: the model's ``transition_hidden`` reversed, 100-100 for the
hvae; empty: d_l = d_{l-1}). The sizes differ from Sonderby et al.'s 512-256-128-64-32 MLPs with batch norm, so
their figure (81.74 nats on permutation-invariant MNIST, 5 layers, warm-up and batch norm) is a reference, not this
configuration's expected result.

References:
    C. K. Sonderby, T. Raiko, L. Maaloe, S. K. Sonderby and O. Winther, "Ladder Variational Autoencoders",
    NeurIPS 2016, https://arxiv.org/abs/1602.02282.
    A. Vahdat and J. Kautz, "NVAE: A Deep Hierarchical Variational Autoencoder", NeurIPS 2020,
    https://arxiv.org/abs/2007.03898.

Example::

    >>> import torch
    >>> from zoo.models import HVAE
    >>> m = HVAE(x_dim=64, layers=(8, 4), hidden=(32,), transition_hidden=(16,))
    >>> g = Ladder(m)
    >>> [s.name for s in g.bottom_up], [tuple(p.name for p in g.parents[s.name]) for s in g.sites]
    (['z1', 'z2'], [(), ('z2',)])
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, Dict, Optional, Sequence, Tuple

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from torch import nn

from guides.amortized import default_encoder_activation, default_encoder_hidden
from guides.base import ZooGuide, raw_size, site_distribution
from zoo.core.components import GUIDES, Options, option
from zoo.core.contract import Borrowed, LatentSite
from zoo.core.errors import ZooError
from zoo.core.nn import ACTIVATIONS, mlp
from zoo.core.params import register_module
from zoo.core.plates import data_plate

__all__ = ["Ladder", "LadderOptions", "MERGES", "precision_weighted"]

MERGES = ("precision", "residual")


@dataclass
class LadderOptions(Options):
    test_options: ClassVar[dict] = {"hidden": (16,), "ladder_hidden": (8,)}

    hidden: Optional[Tuple[int, ...]] = option(None, "hidden sizes of the first bottom-up block, from x (default: "
                                               "mirror the decoder)", cli={"flag": "guide-hidden"}, minimum=1, checkpoint="shape")
    ladder_hidden: Optional[Tuple[int, ...]] = option(None, "hidden sizes of each bottom-up block above the first "
                                                      "(default: the model's transition_hidden reversed)", minimum=1,
                                                      checkpoint="shape")
    merge: str = option("precision", "how a layer's q joins the bottom-up message with p(z_l | z_l+1): precision "
                        "(Ladder VAE's precision-weighted mean and variance) or residual (NVAE: the prior shifted "
                        "and scaled)", choices=MERGES, checkpoint="shape")
    activation: Optional[str] = option(None, "bottom-up nonlinearity: tanh, relu, gated or linear (default: the "
                                       "model's --activation, else tanh)", cli={"flag": "guide-activation"},
                                       choices=ACTIVATIONS, checkpoint="shape")


def precision_weighted(mu_hat: torch.Tensor, sigma_hat: torch.Tensor, mu_p: torch.Tensor,
                       sigma_p: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """(mu_q, sigma_q) of N(mu_hat, sigma_hat^2) N(mu_p, sigma_p^2), normalized: precisions add, means weigh by
    precision."""
    lam_hat, lam_p = sigma_hat.pow(-2), sigma_p.pow(-2)
    lam = lam_hat + lam_p
    return (mu_hat * lam_hat + mu_p * lam_p) / lam, lam.rsqrt()


@GUIDES.register("ladder", options=LadderOptions, description="top-down inference for hierarchies (Ladder VAE's "
                 "precision-weighted merge, or NVAE's residual one) sharing the model's p(z_l | z_l+1)")
class Ladder(ZooGuide):
    """Bottom-up deterministic pass, then top-down sampling merged with the model's conditional priors.

    Arguments:
        model: a zoo model whose sites with latent parents are real and whose ``conditional_prior`` gives their
            diagonal Normal p(z_l | parents) (hvae); a model without parents in its latents (vae) gets an
            amortized encoder.
        num_data: unused (amortized).
        hidden, ladder_hidden, merge, activation: see :class:`LadderOptions`.
    """

    family = "ladder"
    supports = ("real", "sphere", "hyperbolic")
    supports_globals = False
    borrows_model = True

    def __init__(self, model, num_data: Optional[int] = None, hidden: Optional[Sequence[int]] = None,
                 ladder_hidden: Optional[Sequence[int]] = None, merge: str = "precision",
                 activation: Optional[str] = None):
        super().__init__(model, num_data)
        self._model = Borrowed(model)          # its top-down pass; its parameters stay the model's
        self.merge = merge
        self.activation = activation or default_encoder_activation(model)
        self.hidden = tuple(hidden) if hidden is not None else default_encoder_hidden(model)
        above = getattr(model, "transition_hidden", None)
        self.ladder_hidden = tuple(ladder_hidden) if ladder_hidden is not None else \
            tuple(reversed(above)) if above else ()
        by_name = {s.name: s for s in self.sites}
        self.parents: Dict[str, Tuple[LatentSite, ...]] = {s.name: tuple(by_name[p] for p in s.parents)
                                                           for s in self.sites}
        #: the sites from x upwards: the reverse of the model's (top-down) sampling order
        self.bottom_up = tuple(reversed(self.sites))
        blocks, widths, width = [], [], self.x_dim
        for i, _ in enumerate(self.bottom_up):
            sizes = (width, *(self.hidden if i == 0 else self.ladder_hidden))
            blocks.append(mlp(sizes, self.activation, final_activation=True))
            width = sizes[-1]
            widths.append(width)
        self.blocks = nn.ModuleList(blocks)
        self.heads = nn.ModuleDict({s.name: self._head(s, w) for s, w in zip(self.bottom_up, widths)})

    def _head(self, site: LatentSite, width: int) -> nn.Module:
        if self.merge == "residual" and self.parents[site.name]:
            given = sum(p.value_size for p in self.parents[site.name])
            head = mlp((width + given, width, raw_size(site)), self.activation)
            nn.init.zeros_(head[-1].weight)                   # q starts at the prior: Delta_mu = 0,
            nn.init.constant_(head[-1].bias[raw_size(site) // 2:], math.log(math.expm1(1 - 1e-3)))   # sigma_q = sigma_p
            nn.init.zeros_(head[-1].bias[:raw_size(site) // 2])
            return head
        return nn.Linear(width, raw_size(site))

    @classmethod
    def check(cls, model) -> None:
        super().check(model)
        below = [s for s in model.latents if s.parents]
        if below and not model.has_conditional_prior:
            raise ZooError(f"the 'ladder' guide merges each layer with the model's p(z_l | z_l+1), and "
                           f"{model.display_name} does not give it (conditional_prior); use amortized --structured")
        bad = [s for s in below if s.support != "real" or s.constrained]
        if bad:
            raise ZooError(f"the 'ladder' guide merges Gaussians, and {model.display_name}'s site {bad[0].name!r} "
                           f"below the top is {bad[0].support}; use amortized --structured")

    def merged(self, site: LatentSite, d: torch.Tensor, values: Dict[str, torch.Tensor]):
        """q(site | parents, x) from the bottom-up features ``d`` of its layer and the model's p(site | parents)."""
        prior = self._model.module.conditional_prior(site.name, {p.name: values[p.name]
                                                                 for p in self.parents[site.name]})
        base = prior.base_dist if isinstance(prior, torch.distributions.Independent) else prior
        if not isinstance(base, torch.distributions.Normal):
            raise ZooError(f"the 'ladder' guide merges Gaussians, and {self._model.module.display_name}'s "
                           f"p({site.name} | parents) is a {type(base).__name__}; use amortized --structured")
        mu_p, sigma_p = base.loc, base.scale
        if self.merge == "precision":
            mu_hat, s = self.heads[site.name](d).chunk(2, dim=-1)
            loc, scale = precision_weighted(mu_hat, F.softplus(s) + 1e-5, mu_p, sigma_p)
        else:
            given = [p.features(values[p.name]).to(d.dtype) for p in self.parents[site.name]]
            batch = torch.broadcast_shapes(d.shape[:-1], *[g.shape[:-1] for g in given])
            context = torch.cat([d.expand(batch + d.shape[-1:])] + [g.expand(batch + g.shape[-1:]) for g in given], -1)
            delta_mu, delta_s = self.heads[site.name](context).chunk(2, dim=-1)
            loc, scale = mu_p + delta_mu, sigma_p * (F.softplus(delta_s) + 1e-3)
        return dist.Normal(loc, scale).to_event(len(site.event_shape))

    module_name = "ladder"

    def bottom_up_features(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        """d_l for each layer: the deterministic bottom-up pass over x."""
        d, features = x, {}
        for site, block in zip(self.bottom_up, self.blocks):
            d = features[site.name] = block(d)
        return features

    def marginal_posterior(self, name: str, x: torch.Tensor):
        """q(z_L | x) of the top layer (a site without latent parents), from the bottom-up pass alone; a layer below
        is conditioned on the one above it, and has none."""
        site = next((s for s in self.sites if s.name == name), None)
        if site is None or self.parents[name]:
            raise ZooError(f"the 'ladder' guide gives q(z | x) from x alone for its top layer only, not {name!r}")
        return site_distribution(site, self.heads[name](self.bottom_up_features(x)[name]))

    def forward(self, x, idx=None, N=None):
        register_module(self.module_name, self)
        features = self.bottom_up_features(x)
        values: Dict[str, torch.Tensor] = {}
        with data_plate(x, idx, N):
            for s in self.sites:                               # the model's order: top first
                d = features[s.name]
                q = self.merged(s, d, values) if self.parents[s.name] else site_distribution(s, self.heads[s.name](d))
                values[s.name] = pyro.sample(s.name, q)
