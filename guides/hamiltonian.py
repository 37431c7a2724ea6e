"""Hamiltonian guides: an amortized Normal draw moved by K leapfrog steps of Hamiltonian dynamics on the model's
own log-joint, with learned step sizes and tempering, trained by the augmented-space ELBO.

With U(z) = -log p(x, z) (the model, its parameters as they are), a momentum rho and a step size eps per unit::

    z_0 ~ q_0(z | x) = N(mu(x), diag sigma(x)^2),      rho_0 ~ N(0, I / beta_0)
    for k = 1..K:   rho' = rho - (eps/2) grad U(z);   z = z + eps rho';   rho = rho' - (eps/2) grad U(z)
                    rho = sqrt(beta_{k-1} / beta_k) rho                     (tempering; beta_K = 1)

with 1 / sqrt(beta_k) = (1 - 1 / sqrt(beta_0)) k^2 / K^2 + 1 / sqrt(beta_0), beta_0 in (0, 1) learned (Caterini,
Doucet & Sejdinovic 2018, the Hamiltonian VAE). Leapfrog preserves volume and the tempering scales rho by
prod_k sqrt(beta_{k-1}/beta_k) = sqrt(beta_0), a Jacobian of beta_0^(d/2), so with N(rho; 0, I) as the reverse
model of the final momentum the augmented bound (Salimans, Kingma & Welling 2015) is::

    ELBO_aug = E[ log p(x, z_K) + log N(rho_K; 0, I) - log q_0(z_0) - log N(rho_0; 0, I / beta_0) + (d/2) log beta_0 ]
             <= ELBO of the marginal q(z_K | x) <= log p(x)

**The guide has no density.** The marginal q(z_K | x) has no closed form. The guide's site gives z_K, and its
``log_prob`` at that draw is the augmented term L = log q_0(z_0) + log N(rho_0; 0, I/beta_0) - (d/2) log beta_0 -
log N(rho_K; 0, I), defined only at the draw it came with. So every estimator that uses log q at its own,
reparameterized draw computes the augmented bound, stated as such: the ELBO and its path gradient (``elbo``),
the IWAE and Renyi bounds, and the harness's importance-sampled log p(x), whose weight p(x, z_K) / exp(L) is an
unbiased estimate of p(x) (the reverse kernel is the deterministic inverse), with its k-hat a diagnostic of those
weights. What needs q(z | x) at another point, or its score at a fixed z, is refused in one line (``has_density``
is ``False``): score-function and wake-sleep estimators, closed-form KLs, the defensive proposal's wider copy (its
sites are kept as drawn), the amortization gap and bits-back compression. AIS and BDMC "from the guide" start at
q_0 instead (:meth:`Hamiltonian.initial_guide`), which has a density: any normalized start with one is valid.

A model with several latent sites is moved as one vector (every site's units share the dynamics); L is carried
by the first site and the others are ``Delta`` at their z_K with 0, so per-site KLs of this guide are not per-site
figures.
K = 0 is the amortized Normal guide exactly.

Training differentiates through the K gradients of U (``create_graph``), so a step costs about 2K + 1 passes of
the model; evaluation computes them without a graph.

References:
    T. Salimans, D. P. Kingma and M. Welling, "Markov Chain Monte Carlo and Variational Inference: Bridging the
    Gap", ICML 2015, https://arxiv.org/abs/1410.6460 (DLGM + HVI, 8 leapfrog steps: 85.51 nats on MNIST).
    A. L. Caterini, A. Doucet and D. Sejdinovic, "Hamiltonian Variational Auto-Encoder", NeurIPS 2018,
    https://arxiv.org/abs/1805.11328.
    C. Wolf, M. Karl and P. van der Smagt, "Variational Inference with Hamiltonian Monte Carlo", 2016,
    https://arxiv.org/abs/1609.08203.

Example::

    >>> import torch
    >>> from zoo.core.latents import LatentLayer
    >>> from zoo.models import VAE
    >>> g = Hamiltonian(VAE(16, LatentLayer(dim=2), hidden=(8,)), leapfrog_steps=2)
    >>> import pyro.poutine as poutine
    >>> site = poutine.trace(g).get_trace(torch.rand(3, 16)).nodes["z"]
    >>> site["value"].shape, site["fn"].log_prob(site["value"]).shape
    (torch.Size([3, 2]), torch.Size([3]))
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import ClassVar, Dict, Optional, Sequence, Tuple

import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import torch
import torch.nn.functional as F
from pyro.distributions import TorchDistribution
from pyro.poutine.util import site_is_subsample
from torch import nn
from torch.distributions import constraints

from guides.amortized import Amortized
from guides.base import site_distribution
from zoo.core.components import GUIDES, Options, option
from zoo.core.contract import Borrowed
from zoo.core.errors import ZooError
from zoo.core.leapfrog import leapfrog
from zoo.core.nn import ACTIVATIONS
from zoo.core.params import register_module
from zoo.core.plates import data_plate

__all__ = ["Hamiltonian", "HamiltonianOptions", "InitialGuide", "tempering_schedule"]


@dataclass
class HamiltonianOptions(Options):
    test_options: ClassVar[dict] = {"hidden": (16,), "leapfrog_steps": 2}

    hidden: Optional[Tuple[int, ...]] = option(None, "q_0's encoder hidden sizes, from x (default: mirror the "
                                               "decoder)", cli={"flag": "guide-hidden"}, minimum=1, checkpoint="shape")
    activation: Optional[str] = option(None, "q_0's encoder nonlinearity (default: the model's --activation)",
                                       cli={"flag": "guide-activation"}, choices=ACTIVATIONS, checkpoint="shape")
    leapfrog_steps: int = option(8, "K, leapfrog steps on log p(x, z) after the Normal draw (Salimans et al.: 8)",
                                 minimum=0, maximum=100, checkpoint="shape")
    tempering: bool = option(True, "temper the momentum from a learned beta_0 to 1 over the K steps (Caterini et "
                             "al. 2018)", checkpoint="shape")
    step_size: float = option(0.02, "the leapfrog step size each unit starts at (then learned)", positive=True,
                              maximum=1.0)


def tempering_schedule(beta_0: torch.Tensor, K: int) -> torch.Tensor:
    """beta_0..beta_K with 1 / sqrt(beta_k) = (1 - 1/sqrt(beta_0)) k^2 / K^2 + 1 / sqrt(beta_0), so beta_K = 1."""
    k = torch.arange(K + 1, dtype=beta_0.dtype, device=beta_0.device)
    inv = (1 - beta_0.rsqrt()) * (k / K) ** 2 + beta_0.rsqrt()
    return inv.pow(-2)


@GUIDES.register("hamiltonian", options=HamiltonianOptions, description="an amortized Normal moved by K leapfrog "
                 "steps on log p(x, z), learned step sizes and tempering, trained by the augmented ELBO (HVI, "
                 "Hamiltonian VAE); no marginal density")
class Hamiltonian(Amortized):
    """q_0 from the amortized encoder (mean-field Normals), then K tempered leapfrog steps (module docstring).

    Arguments:
        model: a zoo model whose local latents are real (no global latents).
        num_data: unused (amortized).
        hidden, activation, leapfrog_steps, tempering, step_size: see :class:`HamiltonianOptions`.
    """

    family = "hamiltonian"
    supports = ("real",)
    supports_globals = False
    enumerable = False
    normal_sites = False
    borrows_model = True
    has_density = False

    def __init__(self, model, num_data: Optional[int] = None, hidden: Optional[Sequence[int]] = None,
                 activation: Optional[str] = None, leapfrog_steps: int = 8, tempering: bool = True,
                 step_size: float = 0.02):
        super().__init__(model, num_data, hidden=hidden, activation=activation)
        self._model = Borrowed(model)
        self.leapfrog_steps = int(leapfrog_steps)
        self.tempering = bool(tempering) and self.leapfrog_steps > 0
        units = sum(s.numel for s in self.sites)
        self.raw_step = nn.Parameter(torch.full((units,), math.log(math.expm1(step_size))))
        if self.tempering:
            self.raw_beta_0 = nn.Parameter(torch.tensor(math.log(0.5 / 0.5)))     # beta_0 = sigmoid(0) = 0.5

    @property
    def step_size(self) -> torch.Tensor:
        return F.softplus(self.raw_step)

    @property
    def beta_0(self) -> torch.Tensor:
        return torch.sigmoid(self.raw_beta_0) if self.tempering else torch.ones(())

    def _split(self, flat: torch.Tensor) -> Dict[str, torch.Tensor]:
        parts = flat.split([s.numel for s in self.sites], dim=-1)
        return {s.name: p.reshape(p.shape[:-1] + tuple(s.event_shape)) for s, p in zip(self.sites, parts)}

    def log_joint(self, z: torch.Tensor, x, idx, N) -> torch.Tensor:
        """log p(x, z) per draw ``[..., B]`` for the flat latents ``z`` ``[..., B, units]``: the model run with its
        sites set to z, apart from any enclosing handler (:func:`_isolated`), each site's log-density unscaled."""
        model = self._model.module
        with _isolated():
            trace = poutine.trace(poutine.condition(model.model, data=self._split(z))).get_trace(x, idx=idx, N=N)
        total = torch.zeros(z.shape[:-1], dtype=z.dtype, device=z.device)
        for site in trace.nodes.values():
            if site["type"] == "sample" and not site_is_subsample(site):
                total = total + site["fn"].log_prob(site["value"])
        return total

    def _grad_U(self, z, x, idx, N, create_graph: bool) -> torch.Tensor:
        with torch.enable_grad():
            if not z.requires_grad:
                z = z.detach().requires_grad_(True)
            log_p = self.log_joint(z, x, idx, N)
            (grad,) = torch.autograd.grad(log_p.sum(), z, create_graph=create_graph)
        return -grad

    def move(self, z0: torch.Tensor, rho0: torch.Tensor, x, idx, N) -> Tuple[torch.Tensor, torch.Tensor]:
        """(z_K, rho_K) from (z_0, rho_0) by K tempered leapfrog steps (:func:`zoo.core.leapfrog.leapfrog`). The
        ELBO differentiates through the steps (their gradients are taken with ``create_graph``), and the momentum
        is cooled after each step (Salimans et al.'s tempering)."""
        create_graph = torch.is_grad_enabled()
        betas = tempering_schedule(self.beta_0, self.leapfrog_steps) if self.tempering else None

        def at(q):
            return None, [-self._grad_U(q[0], x, idx, N, create_graph)]

        def cool(k, p):
            return [p[0] * (betas[k] / betas[k + 1]).sqrt()]
        [z], [rho], _, _ = leapfrog([z0], [rho0], at([z0])[1], [self.step_size], self.leapfrog_steps, at,
                                    cool if betas is not None else None)
        if not create_graph:
            z, rho = z.detach(), rho.detach()
        return z, rho

    def draw(self, q0, x, idx, N) -> Dict[str, torch.Tensor]:
        """One draw of every site, {name: z_K}, and the augmented term L (under ``"log_density"``), from the q_0 of
        every site already broadcast to the batch shape Pyro samples at (particles, data)."""
        batch = q0[0].batch_shape
        z0 = torch.cat([q.rsample().reshape(batch + (-1,)) for q in q0], dim=-1)
        log_q0 = sum(q.log_prob(v) for q, v in zip(q0, self._split(z0).values()))
        beta_0 = self.beta_0.to(z0)
        rho0 = torch.randn_like(z0) * beta_0.rsqrt()
        zK, rhoK = self.move(z0, rho0, x, idx, N)
        # L = log q_0(z_0) + log N(rho_0; 0, I / beta_0) - (d/2) log beta_0 - log N(rho_K; 0, I), where the
        # first log-density is sum log phi(sqrt(beta_0) rho_0) + (d/2) log beta_0: the two (d/2) log beta_0 cancel
        phi = dist.Normal(torch.zeros((), dtype=z0.dtype, device=z0.device), 1.0)
        log_density = log_q0 + phi.log_prob(rho0 * beta_0.sqrt()).sum(-1) - phi.log_prob(rhoK).sum(-1)
        return {**self._split(zK), "log_density": log_density}

    def initial_guide(self) -> "InitialGuide":
        """q_0(z | x), the amortized Normal before the leapfrog steps, as a guide with a density: where AIS and BDMC
        anneal "from the guide", they start here (a normalized start with a density at any z is all they need)."""
        return InitialGuide(self)

    def forward(self, x, idx=None, N=None):
        register_module("hamiltonian", self)
        _, raw = self.encode(x)
        first = _HamiltonianDraw(self, [site_distribution(s, raw[s.name]) for s in self.sites], (x, idx, N), {})
        with data_plate(x, idx, N):
            pyro.sample(self.sites[0].name, first)
            drawn = first.cache                   # filled by the broadcast copy Pyro drew from
            for s in self.sites[1:]:
                pyro.sample(s.name, dist.Delta(drawn[s.name], log_density=torch.zeros_like(drawn["log_density"]),
                                               event_dim=len(s.event_shape)))


class InitialGuide(nn.Module):
    """The q_0 of a :class:`Hamiltonian` guide as a guide: each site drawn from its mean-field Normal, with its
    density (:meth:`Hamiltonian.initial_guide`). Its parameters are the hamiltonian guide's, under the same name."""

    has_density = True
    amortized = True

    def __init__(self, guide: Hamiltonian):
        super().__init__()
        self.guide = guide
        self.family = f"{guide.family} q_0"
        self.train(guide.training)          # so that leaving an evaluation restores the guide's own mode

    def forward(self, x, idx=None, N=None):
        g = self.guide
        register_module("hamiltonian", g)
        _, raw = g.encode(x)
        with data_plate(x, idx, N):
            for s in g.sites:
                pyro.sample(s.name, site_distribution(s, raw[s.name]))


@contextlib.contextmanager
def _isolated():
    """Run Pyro code as at top level: no enclosing handler sees its messages, and its plates take their names and
    dims afresh. The dynamics run where Pyro draws the guide's first site, inside the guide's ``"data"`` plate (and
    the objective's particle handler), where the model's own ``"data"`` plate could not be entered (Pyro refuses a
    duplicate plate name); so the handler stack and the plate allocator's state are set aside and restored."""
    from pyro.poutine import runtime
    stack, plates = list(runtime._PYRO_STACK), list(runtime._DIM_ALLOCATOR._stack)
    runtime._PYRO_STACK.clear()
    runtime._DIM_ALLOCATOR._stack.clear()
    try:
        yield
    finally:
        runtime._PYRO_STACK[:] = stack
        runtime._DIM_ALLOCATOR._stack[:] = plates


class _HamiltonianDraw(TorchDistribution):
    """The first site of a :class:`Hamiltonian` guide: ``rsample`` runs the dynamics for every site at the batch
    shape Pyro broadcast it to (``expand``: particles and data), keeps every site's z_K and the augmented term L in
    ``cache`` (shared with the unexpanded original), and returns the first site's z_K; ``log_prob`` is L at that
    draw and refuses any other value: the guide has no marginal density."""

    arg_constraints = {}
    support = constraints.real_vector
    has_rsample = True

    def __init__(self, guide: Hamiltonian, q0, data, cache: Dict):
        self.guide, self.q0, self.data, self.cache = guide, q0, data, cache
        site = guide.sites[0]
        super().__init__(q0[0].batch_shape, torch.Size(site.event_shape), validate_args=False)

    def expand(self, batch_shape, _instance=None):
        return _HamiltonianDraw(self.guide, [q.expand(batch_shape) for q in self.q0], self.data, self.cache)

    def rsample(self, sample_shape=torch.Size()):
        if sample_shape != torch.Size():
            raise ValueError("the hamiltonian guide draws one z per batch element; broadcast with a plate instead")
        self.cache.clear()
        self.cache.update(self.guide.draw(self.q0, *self.data))
        return self.cache[self.guide.sites[0].name]

    def sample(self, sample_shape=torch.Size()):
        with torch.no_grad():
            return self.rsample(sample_shape)

    @property
    def mean(self):
        return self.cache.get(self.guide.sites[0].name, self.q0[0].mean)

    def log_prob(self, value):
        drawn = self.cache.get(self.guide.sites[0].name)
        if drawn is None or not (value is drawn or (value.shape == drawn.shape and torch.equal(value, drawn))):
            raise ZooError("the hamiltonian guide has no density q(z | x) at a value it did not draw itself (only the "
                           "augmented-space term of its own draws); use an estimator that scores q at its own draws")
        return self.cache["log_density"]
