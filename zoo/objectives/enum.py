"""The ELBO with discrete guide sites summed exactly (Pyro's TraceEnum_ELBO)."""
from __future__ import annotations

from pyro.infer import TraceEnum_ELBO, config_enumerate

from zoo.core.plates import MAX_PLATE_NESTING

__all__ = ["EnumELBO"]


class EnumELBO(TraceEnum_ELBO):
    """The ELBO with the expectation over discrete guide sites summed exactly.

    Computes sum_z q(z | x) [log p(x, z) - log q(z | x)] per datum, and its exact
    gradient, by Pyro's TraceEnum_ELBO with the guide's sites enumerated in parallel
    (``config_enumerate(guide, "parallel")``). The discrete sites are Pyro's own ``Bernoulli``,
    ``OneHotCategorical`` and ``Categorical``, or :class:`~zoo.core.distributions.JointDiscrete`,
    whose support lists all joint configurations of a latent vector.

    Real sites beside them are not enumerated: the guide samples them, reparameterized, once for
    each enumerated value of the discrete sites they are drawn after (Pyro puts the enumerated
    values on a batch dimension of their own). For M2 (a categorical y, a Gaussian z) with
    q(y | x) q(z | x, y) this is Kingma et al.'s objective::

        sum_y q(y | x) [ log p(x, y, z_y) - log q(z_y | x, y) - log q(y | x) ],   z_y ~ q(z | x, y)

    exact in y, a one-sample reparameterized estimate in z (Pyro's ``examples/vae/ss_vae_M2.py``
    recipe). ``tests/test_discrete_sites.py`` checks it against a hand enumeration.

    Assumptions: the discrete latents' joint space has at most
    :data:`~zoo.core.distributions.ENUMERATION_LIMIT` configurations and real guide sites are
    reparameterized; otherwise the registry refuses the combination (and enumeration itself raises).
    """

    def __init__(self, max_plate_nesting: int = MAX_PLATE_NESTING):
        super().__init__(max_plate_nesting=max_plate_nesting)

    def loss(self, model, guide, *args, **kwargs):
        return super().loss(model, config_enumerate(guide, "parallel"), *args, **kwargs)

    def differentiable_loss(self, model, guide, *args, **kwargs):
        return super().differentiable_loss(model, config_enumerate(guide, "parallel"), *args, **kwargs)

    def loss_and_grads(self, model, guide, *args, **kwargs):
        return super().loss_and_grads(model, config_enumerate(guide, "parallel"), *args, **kwargs)
