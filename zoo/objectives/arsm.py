"""ARSM: an unbiased gradient for categorical latents from swapped Dirichlet draws (the categorical ARM).

For a guide q_phi(z | x) of V independent categorical variables with C classes and logits phi_v, and
f(z) = log p(x, z) - log q(z | x) scored with q's parameters held (its own dependence on phi has zero mean, as in
:mod:`zoo.objectives.arm`), Yin, Yue and Zhou (2019) draw one pi_v ~ Dirichlet(1_C) per variable and set::

    z_v = argmin_i (log pi_vi - phi_vi)                       (a draw from Categorical(softmax(phi_v)))
    z^{m<->j}_v = the same argmin with entries m and j of pi_v swapped (the same (m, j) for every variable)

Augment-REINFORCE-swap-merge gives, per variable v and class c, the unbiased estimate (their eq. 13, multivariate)::

    g_vc = sum_j [ f(z^{c<->j}) - (1/C) sum_m f(z^{m<->j}) ] (1/C - pi_vj)

of d/dphi_vc E_q[f(z)]. The pseudo actions z^{m<->j} = z^{j<->m} and z^{m<->m} = z, so a step evaluates f at
1 + C (C - 1) / 2 configurations per datum (46 for C = 10), in one vectorized pass of the model and guide (the
configurations on the particle plate). The model's parameters get the ordinary gradient of f at z. With K
particles, K independent draws of pi are averaged.

What it assumes (a rule, :mod:`zoo.rules`): every latent of the model is one categorical site in one-hot form
(``OneHotCategorical`` per variable, as the categorical VAE), sampled by a mean-field guide of categoricals (the
amortized or meanfield family). Several layers are refused in one line.

Reference: M. Yin, Y. Yue and M. Zhou, "ARSM: Augment-REINFORCE-Swap-Merge Estimator for Gradient Backpropagation
Through Categorical Variables", ICML 2019, https://arxiv.org/abs/1905.01413.
"""
from __future__ import annotations

from typing import Optional

import torch
from pyro.poutine.messenger import Messenger

from zoo.core.weights import per_datum_log_weights
from zoo.objectives.arm import inner_logits
from zoo.objectives.base import PerDatumObjective, assumption_broken

__all__ = ["SwappedActions", "ARSM", "swap_pairs"]


def swap_pairs(C: int) -> torch.Tensor:
    """The pseudo actions' swaps: row 0 the identity (z itself), then each unordered pair m < j, as index
    permutations ``[1 + C (C - 1) / 2, C]``."""
    perms = [list(range(C))]
    for m in range(C):
        for j in range(m + 1, C):
            p = list(range(C))
            p[m], p[j] = j, m
            perms.append(p)
    return torch.tensor(perms)


def pair_index(C: int) -> torch.Tensor:
    """``[C, C]``: the row of :func:`swap_pairs` that gives z^{m<->j} (0 on the diagonal)."""
    index = torch.zeros(C, C, dtype=torch.long)
    row = 1
    for m in range(C):
        for j in range(m + 1, C):
            index[m, j] = index[j, m] = row
            row += 1
    return index


class SwappedActions(Messenger):
    """Sets the guide's categorical site to the true and pseudo actions of K Dirichlet draws (module docstring): the
    particle plate holds K x A configurations (A = 1 + C (C - 1) / 2), draw k's at rows k A .. k A + A - 1."""

    def __init__(self, draws: int):
        super().__init__()
        self.draws = draws
        self.name: Optional[str] = None
        self.logits: Optional[torch.Tensor] = None
        self.pi: Optional[torch.Tensor] = None

    def _pyro_sample(self, msg):
        if msg["is_observed"] or msg["value"] is not None:
            return
        logits = inner_logits(msg["fn"], torch.distributions.OneHotCategorical)
        if logits is None or self.name not in (None, msg["name"]):
            raise assumption_broken("ARSM", "one categorical site in one-hot form, sampled by a guide of categoricals")
        C = logits.shape[-1]
        perms = swap_pairs(C).to(logits.device)
        A = perms.shape[0]
        per_draw = logits.reshape(self.draws, A, *logits.shape[1:])[:, 0]          # [K, B, *V, C]: rows are copies
        shape = per_draw.shape
        flat = per_draw.reshape(shape[0], shape[1], -1, C)                        # [K, B, V, C], V >= 1 variables
        self.name, self.logits = msg["name"], flat
        e = torch.empty_like(flat.detach()).exponential_()
        self.pi = e / e.sum(-1, keepdim=True)                                     # Dirichlet(1_C), [K, B, V, C]
        swapped = self.pi.log()[..., perms]                                       # [K, B, V, A, C]
        actions = (swapped - flat.detach()[..., None, :]).argmin(-1)              # [K, B, V, A]
        one_hot = (actions[..., None] == torch.arange(C, device=actions.device)).to(logits.dtype)   # [K, B, V, A, C]
        msg["value"] = one_hot.permute(0, 3, 1, 2, 4).reshape(self.draws * A, *shape[1:])


class ARSM(PerDatumObjective):
    """The ELBO with ARSM's gradient for categorical latents (Yin, Yue & Zhou 2019; module docstring)."""

    detach_latents = True

    def _evaluate(self, model, guide, *args, **kwargs):
        actions = SwappedActions(self.num_particles)
        C = self._classes(model)                                                 # A configurations per draw
        A = 1 + C * (C - 1) // 2
        with actions:
            lw = per_datum_log_weights(model, guide, *args, num_particles=self.num_particles * A,
                                       detach_latents=True, **kwargs)
        if set(lw.latents) != {actions.name} or lw.global_values:
            raise assumption_broken("ARSM", "a model whose latents are one local categorical site")
        return lw, actions, C, A

    @staticmethod
    def _classes(model) -> int:
        """C, from the model's declared categorical latent."""
        for site in model.latents:
            if getattr(site, "num_classes", None):
                return int(site.num_classes)
        raise assumption_broken("ARSM", "a model that declares its categorical latent's number of classes")

    def value_and_surrogate(self, model, guide, *args, **kwargs):
        lw, actions, C, A = self._evaluate(model, guide, *args, **kwargs)
        K = self.num_particles
        f = lw.log_w.detach().reshape(K, A, -1)                                   # [K, A, B]
        F = f[:, pair_index(C).to(f.device)]                                      # [K, C (m), C (j), B]
        centred = F - F.mean(1, keepdim=True)                                      # f_Delta^{m<->j}
        pi = actions.pi                                                            # [K, B, V, C]
        # g_vc = sum_j centred[c, j] (1/C - pi_vj)
        g = torch.einsum("kcjb,kbvj->kbvc", centred, 1.0 / C - pi)
        surrogate_phi = (g * actions.logits).reshape(K, g.shape[1], -1).sum(-1)   # [K, B]
        true = lambda t: t.reshape(K, A, -1)[:, 0]                                 # noqa: E731  the rows of z itself
        model_terms = true(lw.log_likelihood + lw.log_prior)
        bound = true(lw.log_w.detach())
        scale = lw.scale
        return -scale * bound.mean(0).sum(), -scale * (model_terms + surrogate_phi).mean(0).sum()

    def loss(self, model, guide, *args, **kwargs):
        with torch.no_grad():
            lw = per_datum_log_weights(model, guide, *args, num_particles=self.num_particles, **kwargs)
            return -lw.scale * lw.log_w.mean(0).sum().item()

