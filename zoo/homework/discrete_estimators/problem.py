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

__all__ = ["Problem", "make_problem", "QuadraticProblem", "make_large_problem", "NUM_LATENTS", "NUM_PIXELS",
           "NUM_DATA", "LARGE_LATENTS"]

NUM_LATENTS, NUM_PIXELS, NUM_DATA = 4, 6, 3
#: Latents of the large problem: 2^60 configurations per datum, which no estimator enumerates in its time limit.
LARGE_LATENTS = 60


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

    def exact_variance(self, estimator: str, num_particles: int) -> float:
        """The total variance of the gradient ``estimator`` computes with S = ``num_particles``: the sum of
        :meth:`exact_variances`."""
        return float(self.exact_variances(estimator, num_particles).sum())

    def exact_variances(self, estimator: str, num_particles: int) -> torch.Tensor:
        """The variance of each coordinate of the gradient that ``estimator`` (``reinforce`` or
        ``reinforce_loo``) computes with S = ``num_particles`` (``[P]``, float64), exactly, from the moments of one particle over the
        2^K configurations of each datum (the data's particles are independent, so their variances add). It is
        what a correct estimator's draws show: one that ignores S, draws identical particles, divides the baseline
        by S instead of S - 1 or averages it over the data instead of the particles has another.

        With u = f psi + h (psi = grad log q, h = grad f at fixed z; E psi = 0), REINFORCE's g = 1/S sum_s u_s has
        Var = tr Cov(u) / S. The leave-one-out estimator is g = 1/S sum_s u_s - T / (S (S - 1)),
        T = sum_{s != j} f_j psi_s, and expanding E|g|^2 over which particles coincide::

            E|U|^2   = S E|u|^2 + S (S-1) |E u|^2                      (U = sum_s u_s)
            E[U . T] = S (S-1) E[f] E[u . psi]
            E|T|^2   = S (S-1) (E[f^2] E|psi|^2 + |E[f psi]|^2) + S (S-1) (S-2) E[f]^2 E|psi|^2
            Var      = E|U|^2 / S^2 - 2 E[U . T] / (S^2 (S-1)) + E|T|^2 / (S (S-1))^2 - |E u|^2
        """
        if estimator not in ("reinforce", "reinforce_loo"):
            raise ValueError(f"no estimator {estimator}")
        if estimator == "reinforce_loo" and num_particles < 2:
            raise ValueError("the leave-one-out baseline needs num_particles >= 2")
        z = joint_configurations("binary", (NUM_LATENTS,)).unsqueeze(1).expand(-1, NUM_DATA, -1)   # [C, B, K]
        C = z.shape[0]
        f = self.f(z)
        log_q = self.log_guide(z)
        grad_f, score = (_jacobian(values, self.params).double().reshape(C, NUM_DATA, -1) for values in (f, log_q))
        f, q = f.detach().double(), log_q.detach().double().exp()
        S = num_particles

        def expect(values):                                   # E_q over the configurations, per datum
            return torch.einsum("cb,cb...->b...", q, values)

        u = f.unsqueeze(-1) * score + grad_f                  # [C, B, P]
        mean_u = expect(u)
        variance_u = expect(u ** 2) - mean_u ** 2                            # Var(u_p), per datum [B, P]
        if estimator == "reinforce":
            return variance_u.sum(0) / S
        mean_f, mean_f2 = expect(f).unsqueeze(-1), expect(f ** 2).unsqueeze(-1)
        psi2, f_psi = expect(score ** 2), expect(f.unsqueeze(-1) * score)
        u_psi = expect(u * score)
        UU = S * (variance_u + mean_u ** 2) + S * (S - 1) * mean_u ** 2
        UT = S * (S - 1) * mean_f * u_psi
        TT = S * (S - 1) * (mean_f2 * psi2 + f_psi ** 2) + S * (S - 1) * (S - 2) * mean_f ** 2 * psi2
        variance = UU / S ** 2 - 2 * UT / (S ** 2 * (S - 1)) + TT / (S * (S - 1)) ** 2 - mean_u ** 2
        return variance.sum(0)

    @torch.no_grad()
    def log_marginal(self) -> torch.Tensor:
        """sum_b log p_theta(x_b), by the zoo's enumeration (the ELBO is below it)."""
        return self.sbn.log_marginal(self.x).sum()


def _jacobian(values: torch.Tensor, params: List[torch.Tensor]) -> torch.Tensor:
    """The gradient of each element of ``values`` in ``params``, flattened: ``[values.numel(), P]``."""
    flat = values.reshape(-1)
    basis = torch.eye(flat.numel(), dtype=flat.dtype)             # one backward pass per element, batched
    grads = torch.autograd.grad(flat, params, grad_outputs=basis, retain_graph=True, allow_unused=True,
                                is_grads_batched=True)
    return torch.cat([(torch.zeros(flat.numel(), p.numel(), dtype=p.dtype) if g is None else g.reshape(flat.numel(), -1))
                      for p, g in zip(params, grads)], 1)


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


@dataclass
class QuadraticProblem:
    """A problem too large to enumerate (2^60 configurations per datum) whose ELBO gradient still has a closed
    form: a quadratic (Boltzmann-machine) log joint with a mean-field Bernoulli guide,

        f_b(z) = h_b . z + 1/2 z^T J z - log q_phi(z | b),   J symmetric with a zero diagonal,
        E_q[f_b] = h_b . p_b + 1/2 p_b^T J p_b + H(q_b),      p_b = sigmoid(phi_b),

    because the latents of q are independent. A Monte Carlo estimator is unbiased here as anywhere; an
    "estimator" that enumerates the configurations to compute the exact gradient cannot finish."""

    h: torch.Tensor
    J: torch.Tensor
    logits: torch.Tensor

    @property
    def params(self) -> List[torch.Tensor]:
        """theta (the fields h) then phi (the guide's logits)."""
        return [self.h, self.logits]

    def f(self, z: torch.Tensor) -> torch.Tensor:
        """f_b(z) for z ``[..., B, K]``: ``[..., B]``."""
        log_q = Bernoulli(logits=self.logits, validate_args=False).log_prob(z).sum(-1)
        return (z * self.h).sum(-1) + 0.5 * ((z @ self.J) * z).sum(-1) - log_q

    def exact_elbo(self) -> torch.Tensor:
        """sum_b E_q[f_b(z)] in closed form (differentiable)."""
        p = torch.sigmoid(self.logits)
        entropy = Bernoulli(logits=self.logits, validate_args=False).entropy().sum()
        return (p * self.h).sum() + 0.5 * ((p @ self.J) * p).sum() + entropy

    def exact_gradient(self) -> torch.Tensor:
        """The exact gradient of the ELBO in (h, phi), flattened: ``[2 B K]``."""
        return gradient_of(self.exact_elbo, self.params)


def make_large_problem(seed: int = 0, num_latents: int = LARGE_LATENTS, num_data: int = 2) -> QuadraticProblem:
    """The quadratic problem at ``seed``: fields h ~ N(0, 0.5^2), couplings J ~ N(0, 1 / K) (symmetric, zero
    diagonal), guide logits ~ N(0, 1)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        h = (0.5 * torch.randn(num_data, num_latents)).requires_grad_()
        J = torch.randn(num_latents, num_latents) / num_latents ** 0.5
        J = torch.triu(J, 1) + torch.triu(J, 1).T
        logits = torch.randn(num_data, num_latents).requires_grad_()
    return QuadraticProblem(h, J, logits)
