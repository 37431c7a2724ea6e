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
``bernoulli``
    z in {0, 1}^d, p(z) uniform (Bernoulli(1/2) per unit), q = Bernoulli(sigmoid(logits)) per unit: a VAE with
    binary latents (a one-layer sigmoid belief net's latents under an MLP decoder; Mnih & Gregor 2014). Its sites
    are the zoo's binary ones, so score-function objectives (tracegraph with baselines, rloo, vimco, arm, disarm,
    rebar, relax) and the relaxed guide train them, and with few units log p(x) is exact by enumeration.
``categorical``
    z = (z_1, ..., z_d), each one-hot over C classes (``--latent-classes``), p(z) uniform, q = OneHotCategorical
    per variable: the categorical VAE's latents (Jang et al. 2017) in any model that takes ``--latent``. The
    decoder reads the d one-hot vectors side by side, d x C numbers. Its sites are the zoo's categorical ones, so the
    same objectives train them as the binary family's (and the relaxed guide's Gumbel-softmax), and with few
    configurations C^d log p(x) is exact by enumeration.
``wrapped-normal``
    z in hyperbolic space H^d (the Lorentz model: points of R^(d+1), ``zoo.core.hyperbolic``), p(z) the wrapped
    normal at the origin with sigma = 1 and q a wrapped normal (Nagano et al. 2019), both with exact densities
    on H^d; the decoder reads log_(mu_0)(z) in R^d (Mathieu et al. 2019's "wrapped" decoder), so it is the same
    network as the Gaussian VAE's. The KL has no closed form: ``tracemeanfield`` estimates it by Monte Carlo.

For the two spherical families the guide's raw parameters per datum are d + 1 numbers:
mu = r / |r| from the first d, kappa = softplus(s) + 1 from the last (Davidson et al. add 1 so that q
cannot start at the uniform, where the direction's gradient vanishes). The KL to the uniform prior is in
closed form (``zoo.core.spherical``), so ``TraceMeanField_ELBO`` (``--objective meanfield``) uses it.

For the sphere ``d`` is the ambient dimension, as in the S-VAE paper's tables: ``--latent vmf --latent-dim 3`` is
the ordinary sphere S^2, and ``--latent-dim 2`` the circle. For hyperbolic space ``d`` is its dimension, and the
site's values have d + 1 coordinates. Either way the decoder takes d inputs.

References:
    A. Mnih and K. Gregor, "Neural Variational Inference and Learning in Belief Networks", ICML 2014,
    https://arxiv.org/abs/1402.0030.
    T. R. Davidson, L. Falorsi, N. De Cao, T. Kipf and J. M. Tomczak, "Hyperspherical Variational
    Auto-Encoders", UAI 2018, https://arxiv.org/abs/1804.00891.
    N. De Cao and W. Aziz, "The Power Spherical distribution", 2020, https://arxiv.org/abs/2006.04437.
    Y. Nagano, S. Yamaguchi, Y. Fujita and M. Koyama, "A Wrapped Normal Distribution on Hyperbolic Space for
    Gradient-Based Learning", ICML 2019, https://arxiv.org/abs/1902.02992.

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
from dataclasses import dataclass, field
from typing import Dict, Optional

import torch
import torch.nn.functional as F
from torch import nn

from zoo.core.components import OptionError, Options, option
from zoo.core.contract import LatentSite
from zoo.core.distributions import JointDiscrete
from zoo.core.errors import ZooError
from zoo.core.hyperbolic import OriginChart, WrappedNormal, exp_origin, log_origin
from zoo.core.spherical import HypersphericalUniform, PowerSpherical, StereographicChart, VonMisesFisher

__all__ = ["LatentFamily", "Gaussian", "Binary", "Categorical", "Sphere", "Hyperbolic", "LATENT_FAMILIES", "LatentOptions",
           "LatentLayer",
           "latent_site", "family_of", "FamilyPrior", "MANIFOLDS"]


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

    def prior(self, dim: int, device, dtype):
        """p(z) of one datum (batch shape ``()``) on this space."""
        raise NotImplementedError

    def value_size(self, dim: int) -> int:
        """How many coordinates one datum's z has (d, or d + 1 on the hyperboloid)."""
        return dim

    def dim_of(self, value_size: int) -> int:
        """d from the number of coordinates (the inverse of :meth:`value_size`)."""
        return value_size

    def decoder_input(self, z: torch.Tensor) -> torch.Tensor:
        """What the decoder reads of z: d numbers."""
        return z

    def decoder_size(self, dim: int, classes: Optional[int] = None) -> int:
        """How many numbers :meth:`decoder_input` gives for a d-dimensional latent."""
        return dim

    def prior_of(self, site: LatentSite, device, dtype):
        """p(z) of one datum at ``site`` (its event shape says d)."""
        return self.prior(self.dim_of(site.event_shape[0]), device, dtype)

    def chart(self, dim: int, pole: Optional[torch.Tensor] = None):
        """A bijection from a Euclidean space onto this family's space (up to a set of measure zero), with the
        log-Jacobian that turns its densities into densities there: what a sampler that moves in R^k (AIS's HMC)
        needs. ``pole``: where a chart that must leave out a point puts it (the sphere's; ``[..., dim]``)."""
        raise NotImplementedError(f"the {self.name!r} latent family has no Euclidean chart")


class Gaussian(LatentFamily):
    """z in R^d: N(0, I) prior (or a learned one, ``--prior``), q = N(mu, diag(softplus(s)^2)). The zoo's real
    sites are this family; guides build it in :func:`guides.base.site_distribution`."""

    name = "gaussian"
    support = "real"


class Binary(LatentFamily):
    """z in {0, 1}^d: uniform prior, q = Bernoulli(logits) per unit, from d logits (the zoo's binary sites; guides
    build q in :func:`guides.base.discrete_distribution`, the same form as :meth:`posterior`)."""

    name = "bernoulli"
    support = "binary"

    def raw_size(self, dim: int) -> int:
        return dim

    def posterior(self, raw: torch.Tensor):
        return JointDiscrete(torch.distributions.Bernoulli(logits=raw))

    def initial_raw(self, rows: int, dim: int) -> torch.Tensor:
        return torch.zeros(rows, dim)                      # q starts at the prior

    def prior(self, dim: int, device, dtype):
        return JointDiscrete(torch.distributions.Bernoulli(logits=torch.zeros(dim, device=device, dtype=dtype)))


class Categorical(LatentFamily):
    """z = d one-hot vectors of C classes: uniform prior, q = OneHotCategorical(softmax(logits)) per variable, from
    d x C logits (guides build q in :func:`guides.base.discrete_distribution`, as for the categorical VAE). The
    site's event shape is ``(d, C)``; the decoder reads it flattened, d x C numbers."""

    name = "categorical"
    support = "categorical"

    def raw_size(self, dim: int) -> int:
        raise NotImplementedError("a categorical site's q is built from its logits by the guide")

    def prior(self, dim: int, device, dtype, classes: int = 2):
        logits = torch.zeros(dim, classes, device=device, dtype=dtype)
        return JointDiscrete(torch.distributions.OneHotCategorical(logits=logits))

    def prior_of(self, site: LatentSite, device, dtype):
        return self.prior(site.event_shape[0], device, dtype, site.num_classes)

    def decoder_input(self, z: torch.Tensor) -> torch.Tensor:
        return z.flatten(-2)

    def decoder_size(self, dim: int, classes: Optional[int] = None) -> int:
        return dim * int(classes)


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

    def prior(self, dim: int, device, dtype):
        return HypersphericalUniform(dim, device=device, dtype=dtype)

    def chart(self, dim: int, pole: Optional[torch.Tensor] = None):
        if pole is None:
            pole = torch.zeros(dim)
            pole[-1] = 1.0
        return StereographicChart(pole)


class Hyperbolic(LatentFamily):
    """z in H^d (Lorentz coordinates in R^(d+1)): wrapped normal prior at the origin (sigma = 1) and posterior.
    The guide's raw parameters are 2d numbers: mu = exp_(mu_0)((0, m)) from the first d, sigma = softplus(s) from
    the rest."""

    name = "wrapped-normal"
    support = "hyperbolic"

    def raw_size(self, dim: int) -> int:
        return 2 * dim

    def posterior(self, raw: torch.Tensor):
        m, s = raw.chunk(2, dim=-1)
        return WrappedNormal(exp_origin(m), F.softplus(s) + 1e-5)

    def initial_raw(self, rows: int, dim: int) -> torch.Tensor:
        # mu at the origin, sigma = 0.1, as the meanfield guide starts its Normals
        return torch.cat([torch.zeros(rows, dim), torch.full((rows, dim), math.log(math.expm1(0.1)))], -1)

    def prior(self, dim: int, device, dtype):
        origin = torch.zeros(dim + 1, device=device, dtype=dtype)
        origin[0] = 1.0
        return WrappedNormal(origin, torch.ones(dim, device=device, dtype=dtype))

    def value_size(self, dim: int) -> int:
        return dim + 1

    def dim_of(self, value_size: int) -> int:
        return value_size - 1

    def chart(self, dim: int, pole: Optional[torch.Tensor] = None):
        return OriginChart()

    def decoder_input(self, z: torch.Tensor) -> torch.Tensor:
        return log_origin(z.double()).to(z.dtype)


#: every family by its ``--latent`` name
LATENT_FAMILIES: Dict[str, LatentFamily] = {
    "gaussian": Gaussian(),
    "vmf": Sphere("vmf", VonMisesFisher),
    "power-spherical": Sphere("power-spherical", PowerSpherical),
    "wrapped-normal": Hyperbolic(),
    "bernoulli": Binary(),
    "categorical": Categorical(),
}

#: the supports of the non-Euclidean families: reparameterized, continuous, and not R^d
MANIFOLDS = ("sphere", "hyperbolic")


def latent_site(name: str, dim: int, family: str = "gaussian", parents=(), classes: Optional[int] = None) -> LatentSite:
    """The :class:`LatentSite` of a d-dimensional latent of ``family`` (a sphere's d is its ambient dimension, a
    hyperbolic site's values have d + 1 coordinates, a categorical site is d variables of ``classes`` classes)."""
    fam = LATENT_FAMILIES[family]
    if fam.support == "categorical":
        return LatentSite(name, (int(dim), int(classes)), "categorical", int(classes), parents=tuple(parents))
    return LatentSite(name, (fam.value_size(int(dim)),), fam.support, parents=tuple(parents),
                      family=fam.name if fam.support in MANIFOLDS else None)


@dataclass(frozen=True)
class LatentLayer:
    """A model's top latent layer, the part a VAE or HVAE takes: its family (a :class:`LatentFamily` object), its
    d, and for a categorical family the classes C of each of its d variables.

    Example::

        >>> LatentLayer.named("categorical", 20, classes=10).site("z").event_shape
        (20, 10)
    """

    family: LatentFamily = field(default_factory=lambda: LATENT_FAMILIES["gaussian"])
    dim: int = 50
    classes: int = 10

    def __post_init__(self):
        if not isinstance(self.family, LatentFamily):
            raise ZooError(f"a latent layer's family is a LatentFamily (zoo.core.latents.LATENT_FAMILIES), got "
                           f"{self.family!r}; use LatentLayer.named(NAME, d) for a family by name")
        for name, least in (("dim", 1), ("classes", 2)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise ZooError(f"a latent layer's {name} must be a whole number >= {least}, got {value!r}")

    @classmethod
    def named(cls, family: str, dim: int, classes: int = 10) -> "LatentLayer":
        """The layer of the family called ``family`` (``--latent``): where a name becomes a part."""
        if family not in LATENT_FAMILIES:
            raise ZooError(f"unknown latent family {family!r}; choose from {', '.join(LATENT_FAMILIES)}")
        return cls(LATENT_FAMILIES[family], int(dim), int(classes))

    def site(self, name: str, parents=()) -> LatentSite:
        """The layer's :class:`LatentSite` under the model's name for it."""
        return latent_site(name, self.dim, self.family.name, parents, self.classes)

    @property
    def decoder_size(self) -> int:
        """How many numbers the network above reads of one value (d, or d x C one-hot)."""
        return self.family.decoder_size(self.dim, self.classes)


def family_of(site: LatentSite) -> LatentFamily:
    """The latent family of ``site``: the one it names (a sphere or hyperbolic site), else the family of its
    support (gaussian for a real site, bernoulli for a binary one)."""
    if site.family is not None:
        return LATENT_FAMILIES[site.family]
    for family in LATENT_FAMILIES.values():
        if family.support == site.support:
            return family
    raise KeyError(f"no latent family has {site.support!r} sites")


class FamilyPrior(nn.Module):
    """p(z) of a family other than the Gaussian (the uniform on the sphere or on {0, 1}^d, the wrapped normal at the
    hyperboloid's origin). It has no parameters and no learned variant: the zoo's learned priors are mixtures and
    flows on R^d."""

    borrows_guide = False

    def __init__(self, site: LatentSite):
        super().__init__()
        self.site = site
        self.family = family_of(site)
        self.dim = self.family.dim_of(site.event_shape[0])
        self.register_buffer("anchor", torch.zeros(()), persistent=False)    # follows .to(device, dtype)

    def check_guide(self, guide: nn.Module) -> None:
        pass

    def bind_guide(self, guide: nn.Module) -> None:
        pass

    def forward(self):
        return self.family.prior_of(self.site, self.anchor.device, self.anchor.dtype)


@dataclass
class LatentOptions(Options):
    """The latent-family option of a model whose top layer may live on another space than R^d."""

    latent: str = option("gaussian", "the top latent layer's family: gaussian (R^d, N(0, I)), vmf or "
                         "power-spherical (the unit sphere S^(d-1) in R^d, a uniform prior, a von Mises-Fisher or "
                         "Power Spherical posterior; Davidson et al. 2018, De Cao & Aziz 2020), or wrapped-normal "
                         "(hyperbolic space H^d, wrapped normal prior and posterior; Nagano et al. 2019), or "
                         "bernoulli ({0, 1}^d, a uniform prior, Bernoulli posteriors: binary latents), or "
                         "categorical (d one-hot variables of --latent-classes classes, a uniform prior)",
                         choices=tuple(LATENT_FAMILIES), checkpoint="shape")
    latent_classes: int = option(10, "classes of each variable of --latent categorical (its d is the latent "
                                 "dimension)", minimum=2, checkpoint="shape")

    def validate(self) -> None:
        super().validate()
        if self.latent != "categorical" and self.latent_classes != 10:
            raise OptionError("latent_classes", f"classes go with --latent categorical, and the latent is "
                              f"{self.latent!r}: drop --latent-classes, or add --latent categorical")
        # the top layer's d: a model's latent_dim, or the last of its layers (hvae)
        option, dims = ("latent_dim", getattr(self, "latent_dim", None)) if hasattr(self, "latent_dim") \
            else ("layers", (getattr(self, "layers", None) or (None,))[-1])
        if LATENT_FAMILIES[self.latent].support == "sphere" and isinstance(dims, int) and dims < 2:
            raise OptionError(option, f"gives the top latent d = {dims}, and latent {self.latent!r} lives on the "
                              f"sphere S^(d-1) in R^d, which needs d >= 2 (2 is the circle); give 2 or more")
        prior: Optional[str] = getattr(self, "prior", "standard")
        if LATENT_FAMILIES[self.latent].support != "real" and prior != "standard":
            raise OptionError("prior", f"{prior!r} is a learned prior on R^d, and latent {self.latent!r} is not in "
                              f"R^d (its prior is its family's own): drop --prior, or use --latent gaussian")
