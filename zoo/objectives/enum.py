"""The ELBO with discrete guide sites summed exactly (Pyro's TraceEnum_ELBO)."""
from __future__ import annotations

from pyro.infer import TraceEnum_ELBO, config_enumerate

from zoo.core.plates import MAX_PLATE_NESTING

__all__ = ["EnumELBO"]


class EnumELBO(TraceEnum_ELBO):
    """The ELBO with the expectation over discrete guide sites summed exactly.

    Computes sum_z q(z | x) [log p(x, z) - log q(z | x)] per datum, and its exact
    gradient, by Pyro's TraceEnum_ELBO with the guide's sites enumerated in parallel
    (``config_enumerate(guide, "parallel")``). The discrete sites are
    :class:`~zoo.core.distributions.JointDiscrete`, whose support lists all joint
    configurations of a latent vector.

    Assumptions: every guide site is discrete and the joint latent space has at most
    :data:`~zoo.core.distributions.ENUMERATION_LIMIT` configurations; otherwise the registry
    refuses the combination (and enumeration itself raises).
    """

    def __init__(self, max_plate_nesting: int = MAX_PLATE_NESTING):
        super().__init__(max_plate_nesting=max_plate_nesting)

    def loss(self, model, guide, *args, **kwargs):
        return super().loss(model, config_enumerate(guide, "parallel"), *args, **kwargs)

    def differentiable_loss(self, model, guide, *args, **kwargs):
        return super().differentiable_loss(model, config_enumerate(guide, "parallel"), *args, **kwargs)

    def loss_and_grads(self, model, guide, *args, **kwargs):
        return super().loss_and_grads(model, config_enumerate(guide, "parallel"), *args, **kwargs)
