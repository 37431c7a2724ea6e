"""Latent families: the space a model's top latent layer lives in, its prior, and the posterior a guide fits.

A family is an object, not a flag inside each model: a model takes ``--latent NAME`` (the :class:`LatentOptions`
mixin), declares its top site with :func:`latent_site`, and draws z from :meth:`LatentFamily.prior`; every
guide that supports the family's ``support`` makes q from its raw parameters with
:meth:`LatentFamily.posterior`. A new family is one class here and one line in :data:`LATENT_FAMILIES`.

``gaussian``
    z in R^d, p(z) = N(0, I), q = N(mu, diag(sigma^2)) (the zoo's real sites; learned priors apply).
``vmf``
    z on the unit sphere S^(d-1) in R^d, p(z) uniform, q = vMF(mu, kappa) (the S-VAE of Davidson et al. 2018).
``power-spherical``
    the same sphere and prior, q = PowerSpherical(mu, kappa) (De Cao & Aziz 2020): no rejection sampler,
    no Bessel functions.

For the two spherical families the guide's raw parameters per datum are d + 1 numbers:
mu = r / |r| from the first d, kappa = softplus(s) + 1 from the last (Davidson et al. add 1 so that q
cannot start at the uniform, where the direction's gradient vanishes). The KL to the uniform prior is in
closed form (``zoo.core.spherical``), so ``TraceMeanField_ELBO`` (``--objective meanfield``) uses it.

``d`` is the ambient dimension, as in the S-VAE paper's tables: ``--latent vmf --latent-dim 3`` is the
ordinary sphere S^2, and ``--latent-dim 2`` the circle.

References:
    T. R. Davidson, L. Falorsi, N. De Cao, T. Kipf and J. M. Tomczak, "Hyperspherical Variational
    Auto-Encoders", UAI 2018, https://arxiv.org/abs/1804.00891.
    N. De Cao and W. Aziz, "The Power Spherical distribution", 2020, https://arxiv.org/abs/2006.04437.

Example::

    >>> import torch
    >>> family = LATENT_FAMILIES["power-spherical"]
    >>> site = latent_site("z", 3, "power-spherical")
    >>> q = family.posterior(torch.zeros(5, family.raw_size(3)) + 1.0)
    >>> q.batch_shape, q.event_shape, site.support
    (torch.Size([5]), torch.Size([3]), 'sphere')
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, Optional

import torch
import torch.nn.functional as F
from torch import nn

from zoo.core.components import OptionError, Options, option
from zoo.core.contract import LatentSite
from zoo.core.spherical import HypersphericalUniform, PowerSpherical, VonMisesFisher

__all__ = ["LatentFamily", "Gaussian", "Sphere", "LATENT_FAMILIES", "LatentOptions", "latent_site",
           "UniformSpherePrior"]


class LatentFamily:
    """A latent space with its prior and its posterior family.

    Class attributes:
        name: the ``--latent`` name.
        support: the :class:`~zoo.core.contract.LatentSite` support of its sites (``"real"``, ``"sphere"``).
    """

    name: str = ""
    support: str = "real"

    def raw_size(self, dim: int) -> int:
        """How many unconstrained numbers one datum's q takes."""
        raise NotImplementedError

    def posterior(self, raw: torch.Tensor):
        """q from raw parameters ``[..., raw_size]``: batch shape ``raw.shape[:-1]``, event ``(d,)``."""
        raise NotImplementedError

    def initial_raw(self, rows: int, dim: int) -> torch.Tensor:
        """A per-datum guide's initial table of raw parameters, ``[rows, raw_size]``."""
        raise NotImplementedError


class Gaussian(LatentFamily):
    """z in R^d: N(0, I) prior (or a learned one, ``--prior``), q = N(mu, diag(softplus(s)^2)). The zoo's real
    sites are this family; guides build it in :func:`guides.base.site_distribution`."""

    name = "gaussian"
    support = "real"


class Sphere(LatentFamily):
    """z on S^(d-1): uniform prior, q from ``distribution`` (vMF or Power Spherical), kappa = softplus(s) + 1."""

    support = "sphere"

    def __init__(self, name: str, distribution):
        self.name = name
        self.distribution = distribution

    def raw_size(self, dim: int) -> int:
        return dim + 1

    def posterior(self, raw: torch.Tensor):
        direction, s = raw[..., :-1], raw[..., -1]
        loc = direction / direction.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        return self.distribution(loc, F.softplus(s) + 1.0)

    def initial_raw(self, rows: int, dim: int) -> torch.Tensor:
        # random directions, kappa = softplus(log(e^9 - 1)) + 1 = 10: spread around mu, not the uniform
        raw = torch.randn(rows, dim + 1)
        raw[:, -1] = math.log(math.expm1(9.0))
        return raw


#: every family by its ``--latent`` name
LATENT_FAMILIES: Dict[str, LatentFamily] = {
    "gaussian": Gaussian(),
    "vmf": Sphere("vmf", VonMisesFisher),
    "power-spherical": Sphere("power-spherical", PowerSpherical),
}


def latent_site(name: str, dim: int, family: str = "gaussian", parents=()) -> LatentSite:
    """The :class:`LatentSite` of a d-dimensional latent of ``family`` (a sphere's d is its ambient dimension)."""
    fam = LATENT_FAMILIES[family]
    return LatentSite(name, (int(dim),), fam.support, parents=tuple(parents),
                      family=None if fam.support == "real" else fam.name)


class UniformSpherePrior(nn.Module):
    """p(z) uniform on S^(d-1): the prior of the spherical families (it has no parameters, and no learned variant:
    the zoo's learned priors are Gaussian mixtures and flows on R^d)."""

    borrows_guide = False

    def __init__(self, site: LatentSite):
        super().__init__()
        self.site = site
        self.dim = site.event_shape[0]
        self.register_buffer("anchor", torch.zeros(()), persistent=False)    # follows .to(device, dtype)

    def check_guide(self, guide: nn.Module) -> None:
        pass

    def bind_guide(self, guide: nn.Module) -> None:
        pass

    def forward(self):
        return HypersphericalUniform(self.dim, device=self.anchor.device, dtype=self.anchor.dtype)


@dataclass
class LatentOptions(Options):
    """The latent-family option of a model whose top layer may live on another space than R^d."""

    latent: str = option("gaussian", "the top latent layer's family: gaussian (R^d, N(0, I)), vmf or "
                         "power-spherical (the unit sphere S^(d-1) in R^d, a uniform prior, a von Mises-Fisher or "
                         "Power Spherical posterior; Davidson et al. 2018, De Cao & Aziz 2020)",
                         choices=tuple(LATENT_FAMILIES), shape=True)

    def validate(self) -> None:
        super().validate()
        prior: Optional[str] = getattr(self, "prior", "standard")
        if LATENT_FAMILIES[self.latent].support != "real" and prior != "standard":
            raise OptionError("prior", f"{prior!r} is a learned prior on R^d, and latent {self.latent!r} lives on "
                              f"the sphere, whose prior is the uniform: drop --prior, or use --latent gaussian")
