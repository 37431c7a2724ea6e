"""Inverse autoregressive flow guide: the amortized encoder plus K IAF steps.

For each real latent site (event shape ``(D,)``)::

    h, mu, sigma = encoder(x)
    z_0 = mu + sigma * eps,              eps ~ N(0, I)
    z_k = sigma_k * z_{k-1} + (1 - sigma_k) * m_k,   (m_k, s_k) = AR-NN_k(z_{k-1}, h),
                                         sigma_k = sigmoid(s_k)          k = 1..K
    log q(z_K | x) = log N(z_0; mu, sigma^2) - sum_k sum_i log sigma_{k,i}

Each step is autoregressive in z and conditioned on the encoder's hidden state h,
as in Kingma et al. (2016), with the order of the latent units reversed between
steps. Built from :func:`pyro.distributions.transforms.conditional_affine_autoregressive`
(the ``stable=True`` gated update above), so sampling is one parallel pass and
the density of a sample the guide just drew is read from the transform's cache.

Reference: D. P. Kingma, T. Salimans, R. Jozefowicz, X. Chen, I. Sutskever and
M. Welling, "Improved Variational Inference with Inverse Autoregressive Flow",
NeurIPS 2016, https://arxiv.org/abs/1606.04934.

Example::

    >>> import torch
    >>> from zoo.core.latents import LatentLayer
    >>> from zoo.models import VAE
    >>> g = IAF(VAE(64, LatentLayer(dim=4), hidden=(32,)), num_flows=2)
    >>> len(g.flows["z"])
    2
"""
from __future__ import annotations

from typing import Optional, Sequence

import pyro.distributions as dist
import torch
from pyro.distributions.transforms import Permute, conditional_affine_autoregressive
from torch import nn

from dataclasses import dataclass
from typing import Tuple

from guides.amortized import Amortized
from guides.base import EncoderOptions
from guides.globals import GlobalGuideOptions
from zoo.core.components import GUIDES, option
from zoo.core.errors import ZooError

__all__ = ["IAF"]


@dataclass
class IAFOptions(EncoderOptions, GlobalGuideOptions):
    num_flows: int = option(2, "number of IAF steps", cli={"flag": "flows"}, minimum=1, checkpoint="shape")
    flow_hidden: Optional[Tuple[int, ...]] = option(None, "hidden sizes of each autoregressive network "
                                                    "(default two layers of max(2 D, 32))", minimum=1, checkpoint="shape")


@GUIDES.register("iaf", options=IAFOptions, description="amortized encoder + K conditional inverse autoregressive "
                 "flow steps (Kingma et al. 2016)")
class IAF(Amortized):
    """Amortized Gaussian base followed by ``num_flows`` conditional IAF steps.

    Arguments:
        model: the zoo model (real latents with 1-D event shapes).
        num_data: unused (amortized).
        hidden: encoder hidden sizes (default: mirror the decoder).
        num_flows: K, the number of IAF steps (default 2).
        flow_hidden: hidden sizes of each autoregressive network (default two
            layers of max(2 D, 32) units).
        structured: see :class:`~guides.amortized.Amortized`; the flows of a site are then
            conditioned on its children's values too.
    """

    family = "iaf"
    supports = ("real",)
    enumerable = False
    normal_sites = False

    def __init__(self, model, num_data: Optional[int] = None, hidden: Optional[Sequence[int]] = None,
                 num_flows: int = 2, flow_hidden: Optional[Sequence[int]] = None, structured: bool = False,
                 activation: Optional[str] = None, global_guide: Optional[str] = None):
        super().__init__(model, num_data, hidden, structured=structured, activation=activation,
                         global_guide=global_guide)
        if num_flows < 1:
            raise ZooError(f"the 'iaf' guide needs at least one flow step, got num_flows={num_flows}")
        self.num_flows = int(num_flows)
        self.flows = nn.ModuleDict()
        for s in self.sites:
            (D,) = s.unconstrained_shape
            width = tuple(flow_hidden) if flow_hidden else (max(2 * D, 32),) * 2
            self.flows[s.name] = nn.ModuleList([
                conditional_affine_autoregressive(D, self.context_size(s), hidden_dims=list(width), stable=True)
                for _ in range(self.num_flows)])
            self.register_buffer(f"{s.name}_reverse", torch.arange(D - 1, -1, -1))

    @classmethod
    def check(cls, model) -> None:
        super().check(model)
        bad = [s.name for s in model.latents if len(s.event_shape) != 1]
        if bad:
            raise ZooError(f"the 'iaf' guide needs latents with a 1-D event shape; {bad} are not")

    def posterior_distribution(self, name: str, context, base):
        """q(z | x) for one site: the Normal ``base`` pushed through the IAF steps conditioned on
        ``context`` (the encoder's h, and in structured mode the site's children)."""
        transforms = []
        for k, flow in enumerate(self.flows[name]):
            if k > 0:
                transforms.append(Permute(getattr(self, f"{name}_reverse")))
            transforms.append(flow.condition(context))
        return dist.TransformedDistribution(base, transforms)

    def distribution(self, site, context):
        """The flows act on the unconstrained space; a constrained site's support transform comes last."""
        q = super().distribution(site, context)
        if not site.constrained:
            return self.posterior_distribution(site.name, context, q)
        flowed = self.posterior_distribution(site.name, context, q.base_dist)
        return dist.TransformedDistribution(flowed.base_dist, flowed.transforms + q.transforms)
