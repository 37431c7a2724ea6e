"""The tiny sigmoid belief net of assignment 2, and its ELBO and ELBO gradient computed exactly.

A one-layer SBN (the zoo's :class:`~zoo.models.sbn.SBN`) with K = 4 binary latents and D = 6
binary pixels, B = 3 data points, and a mean-field Bernoulli guide with free logits phi_b
per datum::

    p_theta(x, z) = prod_k Bern(z_k; sigmoid(beta_k)) prod_d Bern(x_d; sigmoid(W z + c)_d)
    q_phi(z | x_b) = prod_k Bern(z_k; sigmoid(phi_bk))
    ELBO(theta, phi) = sum_b E_{q_phi(z|x_b)}[ f(z) ],   f_b(z) = log p_theta(x_b, z) - log q_phi(z | x_b)

2^4 = 16 configurations per datum: the expectation is a finite sum, so the ELBO and its
gradient in all of (theta, phi) are exact (:meth:`Problem.exact_gradient`). Every estimator
of the assignment estimates that gradient from samples; the grader compares them to it.

Example::

    >>> problem = make_problem()
    >>> problem.exact_gradient().shape       # 4 prior logits + 24 + 6 decoder + 12 guide logits
    torch.Size([46])
    >>> bool(problem.exact_elbo() <= problem.log_marginal())
    True
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List

import torch
from torch.distributions import Bernoulli

from zoo.core.distributions import joint_configurations
from zoo.models.sbn import SBN
from zoo.testing import gradient_of

__all__ = ["Problem", "make_problem", "NUM_LATENTS", "NUM_PIXELS", "NUM_DATA"]

NUM_LATENTS, NUM_PIXELS, NUM_DATA = 4, 6, 3


@dataclass
class Problem:
    """The SBN, its data ``x [B, D]`` and the guide's ``logits [B, K]`` (a leaf that requires grad)."""

    sbn: SBN
    x: torch.Tensor
    logits: torch.Tensor

    @property
    def params(self) -> List[torch.Tensor]:
        """theta (prior logits, decoder weight and bias) then phi (the guide's logits)."""
        return [*self.sbn.parameters(), self.logits]

    def log_joint(self, z: torch.Tensor) -> torch.Tensor:
        """log p_theta(x_b, z) for z ``[..., B, K]`` (binary, or relaxed in [0, 1]): ``[..., B]``."""
        prior = Bernoulli(logits=self.sbn.prior_logits, validate_args=False).log_prob(z).sum(-1)
        likelihood = Bernoulli(logits=self.sbn.decoder(z), validate_args=False).log_prob(self.x).sum(-1)
        return prior + likelihood

    def log_guide(self, z: torch.Tensor) -> torch.Tensor:
        """log q_phi(z | x_b) for z ``[..., B, K]``: ``[..., B]``."""
        return Bernoulli(logits=self.logits, validate_args=False).log_prob(z).sum(-1)

    def f(self, z: torch.Tensor) -> torch.Tensor:
        """The ELBO integrand f_b(z) = log p_theta(x_b, z) - log q_phi(z | x_b), ``[..., B, K] -> [..., B]``;
        it depends on theta and on phi (through log q)."""
        return self.log_joint(z) - self.log_guide(z)

    def exact_elbo(self) -> torch.Tensor:
        """sum_b sum_z q_phi(z | x_b) f_b(z) over all 2^K configurations (differentiable)."""
        z = joint_configurations("binary", (NUM_LATENTS,)).unsqueeze(1).expand(-1, NUM_DATA, -1)   # [2^K, B, K]
        return (self.log_guide(z).exp() * self.f(z)).sum()

    def exact_gradient(self) -> torch.Tensor:
        """The exact gradient of the ELBO in (theta, phi), flattened: ``[46]``."""
        return gradient_of(self.exact_elbo, self.params)

    @torch.no_grad()
    def log_marginal(self) -> torch.Tensor:
        """sum_b log p_theta(x_b), by the zoo's enumeration (the ELBO is below it)."""
        return self.sbn.log_marginal(self.x).sum()


def make_problem(seed: int = 0) -> Problem:
    """The fixed problem: an SBN with weights drawn at ``seed`` (decoder scaled so that the
    posterior is far from uniform), data sampled from it, and random guide logits."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        sbn = SBN(x_dim=NUM_PIXELS, layers=(NUM_LATENTS,))
        with torch.no_grad():
            sbn.prior_logits.copy_(torch.randn(NUM_LATENTS))
            for p in sbn.decoder.parameters():
                p.mul_(4.0)
            z = torch.bernoulli(torch.sigmoid(sbn.prior_logits).expand(NUM_DATA, -1))
            x = torch.bernoulli(torch.sigmoid(sbn.decoder(z)))
        logits = torch.randn(NUM_DATA, NUM_LATENTS).requires_grad_()
    return Problem(sbn, x, logits)
