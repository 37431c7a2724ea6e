"""The guide of a model's global latents, written once and used by every guide family.

A model's *global* latents theta (``model.global_latents``: sites outside the data plate,
such as Bayesian regression weights or a mixture's locations) have one value for the whole
data set. Each family samples them with a :class:`GlobalGuide`, outside the data plate and
before its own local sites, so its local machinery (per-datum tables, encoders, flows) sees
only the local latents z_n. The joint guide is q(theta) prod_n q(z_n | x_n), and the ELBO of
the data set is::

    ELBO(X) = E_q[ sum_n log p(x_n, z_n | theta) - log q(z_n | x_n) ] + E_q[ log p(theta) - log q(theta) ]

the local terms summed over the N data (a minibatch of B scaled by N/B), the global term once.

Two forms, chosen by the guide option ``global_guide`` (``--global-guide``):

- ``normal`` (default; Pyro's ``AutoNormal``): for each global site with support constraint c,
  u ~ N(m, diag(softplus(s)^2)) on the unconstrained space and theta = biject_to(c)(u), so
  log q(theta) carries the transform's log-Jacobian;
- ``delta`` (Pyro's ``AutoDelta``): a point mass at theta = biject_to(c)(m), so log q(theta) = 0
  and the objective's global term is log p(theta): maximum a posteriori (in the constrained space,
  as AutoDelta's) for theta, variational inference for the local z. Its "ELBO" is the MAP
  objective, not a bound on log p(X).

The point estimate theta_hat that the harness conditions on (:meth:`GlobalGuide.point_estimate`)
is biject_to(c)(m): the delta's value, or the Normal guide's median in the constrained space
(``AutoNormal.median()``; the mean of an elementwise-monotone transform of a Normal is not the
transform of its mean, the median is).

Initial values m come from the model's prior, the median of 15 draws per site (Pyro's
``init_to_median``), so that, e.g., a mixture's locations start apart; the Normal's scale starts at
0.1, as ``AutoNormal``'s.

Example::

    >>> import pyro, pyro.distributions as dist, torch
    >>> from zoo.core.contract import LatentSite
    >>> from torch.distributions import constraints
    >>> site = LatentSite("s", (3,), scope="global", constraint=constraints.positive)
    >>> g = GlobalGuide((site,), "normal", initial={"s": torch.ones(3)})
    >>> tuple(g()["s"].shape), bool((g.point_estimate()["s"] == 1).all())
    ((3,), True)
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Dict, Optional, Sequence

import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import torch
import torch.nn.functional as F
from pyro.infer.autoguide.initialization import init_to_median
from torch import nn
from torch.distributions import biject_to

from zoo.core.contract import LatentSite
from zoo.core.errors import ZooError
from zoo.core.components import Options, option

__all__ = ["GlobalGuide", "GlobalGuideOptions", "GLOBAL_GUIDES", "prior_initial_values"]

GLOBAL_GUIDES = ("normal", "delta")

#: the initial standard deviation of the Normal global guide on the unconstrained space (AutoNormal's)
INIT_SCALE = 0.1


@dataclass
class GlobalGuideOptions(Options):
    """The option of every family that can guide a model's global latents."""

    global_guide: Optional[str] = option(None, "guide of the global latents (outside the data plate), models that "
                                         "have them: normal (mean-field Normal on the unconstrained space, like "
                                         "AutoNormal) or delta (a point mass, MAP, like AutoDelta) (default normal)",
                                         choices=GLOBAL_GUIDES, checkpoint="shape")


def prior_initial_values(model, sites: Sequence[LatentSite]) -> Dict[str, torch.Tensor]:
    """Initial values of the global sites: Pyro's ``init_to_median`` on the model's prior (generation
    mode, ``model(None, N=1)``), in the constrained space. A model with covariate columns (a regression's
    features) cannot run without x: it runs on one row of its data (:attr:`~zoo.core.contract.ZooModel.example_rows`),
    or of zeros without them, which the global priors do not read."""
    x = None
    if getattr(model, "covariates", ()):
        x = model.example_rows[:1].to(model.device) if model.example_rows is not None else torch.zeros(1, model.x_dim)
    with torch.no_grad():
        trace = poutine.trace(model.model).get_trace(x, N=1)
        values = {s.name: init_to_median(trace.nodes[s.name]).detach() for s in sites}
    # a coordinate-wise median need not lie in the support (a simplex's does not sum to 1): such a site
    # starts where Pyro's init_to_feasible would, at the unconstrained 0
    return {s.name: v for s, v in ((s, values[s.name]) for s in sites) if bool(s.constraint.check(v).all())}


class GlobalGuide(nn.Module):
    """q(theta) for a model's global latents: mean-field Normal on the unconstrained space, or a point mass.

    Arguments:
        sites: the model's global latents (``scope="global"``, real, any ``constraint``).
        kind: ``"normal"`` or ``"delta"``.
        initial: each site's initial value in the constrained space (default: the unconstrained 0).
    """

    def __init__(self, sites: Sequence[LatentSite], kind: str = "normal",
                 initial: Optional[Dict[str, torch.Tensor]] = None):
        super().__init__()
        if kind not in GLOBAL_GUIDES:
            raise ZooError(f"--global-guide must be one of {', '.join(GLOBAL_GUIDES)}, got {kind!r}")
        bad = [s.name for s in sites if s.support != "real" or s.scope != "global"]
        if bad:
            raise ZooError(f"the global guide takes real global latents only; {bad} are not")
        self.sites = tuple(sites)
        self.kind = kind
        self._held: Optional[Dict[str, torch.Tensor]] = None
        self.loc = nn.ParameterDict()
        self.scale = nn.ParameterDict()
        for s in self.sites:
            value = (initial or {}).get(s.name)
            loc = (biject_to(s.constraint).inv(value.reshape(s.event_shape)) if value is not None
                   else torch.zeros(s.unconstrained_shape))
            self.loc[s.name] = nn.Parameter(loc.detach().clone().float())
            if kind == "normal":
                self.scale[s.name] = nn.Parameter(torch.full(s.unconstrained_shape,
                                                             math.log(math.expm1(INIT_SCALE))))

    def distribution(self, site: LatentSite) -> dist.TorchDistribution:
        """q(theta_site): the transformed Normal, or the point mass; a point mass at the held value
        while :meth:`held_at` (or :meth:`at_point_estimate`) is open."""
        loc = self.loc[site.name]
        event_dim = len(site.event_shape) if site.event_dim is None else site.event_dim
        if self._held is not None:
            return dist.Delta(self._held[site.name], event_dim=event_dim)
        if self.kind == "delta":
            return dist.Delta(biject_to(site.constraint)(loc), event_dim=event_dim)
        base = dist.Normal(loc, F.softplus(self.scale[site.name]) + 1e-5).to_event(event_dim)
        if not site.constrained:
            return base
        return dist.TransformedDistribution(base, [biject_to(site.constraint)])

    def forward(self) -> Dict[str, torch.Tensor]:
        """Sample every global site (call it outside the data plate), each inside the model's own plates
        of it; return their values."""
        values = {}
        for s in self.sites:
            with contextlib.ExitStack() as plates:
                for name, size, dim in s.plates:
                    plates.enter_context(pyro.plate(name, size, dim=dim))
                values[s.name] = pyro.sample(s.name, self.distribution(s))
        return values

    @torch.no_grad()
    def point_estimate(self) -> Dict[str, torch.Tensor]:
        """theta_hat per site, in the constrained space: biject_to(c)(m) (the delta's value, the Normal's median)."""
        return {s.name: biject_to(s.constraint)(self.loc[s.name]).detach() for s in self.sites}

    @property
    def point_kind(self) -> str:
        """What :meth:`point_estimate` is, in words (the harness reports it)."""
        return ("the MAP value of the delta global guide" if self.kind == "delta" else
                "the median of the Normal global guide, biject_to(c)(loc)")

    @contextlib.contextmanager
    def at_point_estimate(self):
        """Within the block, every global site is sampled as a point mass at :meth:`point_estimate`."""
        with self.held_at(self.point_estimate()) as values:
            yield values

    @contextlib.contextmanager
    def held_at(self, values: Dict[str, torch.Tensor]):
        """Within the block, every global site is a point mass at ``values`` (constrained space): the model
        and the local guide then see that theta, and the weights are those given theta."""
        before, self._held = self._held, {k: v.detach() for k, v in values.items()}
        try:
            yield self._held
        finally:
            self._held = before

    @torch.no_grad()
    def draw(self) -> Dict[str, torch.Tensor]:
        """theta ~ q(theta) (outside any trace) and log q(theta), as ``(values, log_q)``."""
        values = {s.name: self.distribution(s).sample() for s in self.sites}
        log_q = sum(self.distribution(s).log_prob(values[s.name]).sum() for s in self.sites)
        return values, log_q
