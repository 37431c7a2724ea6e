"""REBAR and RELAX: unbiased gradients for Bernoulli latents with a control variate from the relaxed sample.

For a guide q_phi(b | x) of independent bits with logits phi and f(b) = log p(x, b) - log q(b | x), the ELBO's
gradient with respect to the logits is E_q[f(b) grad_phi log q(b)] (f's own dependence on phi has zero mean
under q and is dropped, as in :mod:`zoo.objectives.arm`). Per bit, with u, v ~ U(0, 1) and theta = sigmoid(phi)::

    z  = phi + logit(u)                       (a logistic sample: b = H(z) = 1[z > 0] ~ Bernoulli(theta))
    z~ = phi + logit(v'),   v' = (1 - theta) + v theta  if b = 1,   v' = v (1 - theta)  if b = 0
                                              (z given b: the same logistic, conditioned on its sign)

and any differentiable control variate c, RELAX's estimator (Grathwohl et al. 2018, eq. 8) is::

    g = [f(b) - c(z~)] grad_phi log q(b)  +  grad_phi c(z)  -  grad_phi c(z~)

unbiased for grad_phi E_q[f(b)] whatever c is: the last two terms and c(z~)'s score term cancel in expectation
(E_b E_{z~|b}[c(z~) grad log q(b) + grad c(z~)] = grad E_z[c(z)]). REBAR (Tucker et al. 2017) takes c as the
objective itself at a Concrete relaxation of the bits, scaled::

    REBAR:  c(z) = eta f(sigmoid(z / lambda))
    RELAX:  c(z) = eta f(sigmoid(z / lambda)) + r_rho(z)       (r: a network, one hidden layer of 200 ELUs)

where f at soft bits s in (0, 1) is the model's and the guide's Bernoulli log-densities at s (their formula,
s log sigmoid(a) + (1 - s) log sigmoid(-a), is smooth in s), with q's logits held fixed (so c depends on phi only
through z). Since g is unbiased for any (eta, lambda, rho), they are chosen to minimise its variance, i.e. the
expected squared norm E||g||^2 of the minibatch gradient of the guide's parameters, by its own gradient (the
papers' variance objective, differentiated through g with ``create_graph``), each step, with an Adam of its own
(``cv_lr``). The model's parameters get the ordinary gradient of f(b).

Cost per step: four passes of the model and the guide (b, sigmoid(z / lambda), sigmoid(z~ / lambda), and the last
again with z~ held for the score term's coefficient) and a second-order backward pass through the guide, against
ARM's two passes.

State: (eta, lambda, rho) and their Adam are the objective's. A run's checkpoint carries them
(:meth:`ControlVariateObjective.state_dict`), so a resumed run continues with the control variate it had.

What it assumes (a rule, :mod:`zoo.rules`): every latent of the model is one binary site sampled by a mean-field
guide of Bernoulli bits (the amortized or meanfield family; a single stochastic layer such as the SBN-200), as ARM.
Several layers need the papers' per-layer treatment; refused in one line.

References: G. Tucker, A. Mnih, C. J. Maddison, D. Lawson and J. Sohl-Dickstein, "REBAR: Low-variance, unbiased
gradient estimates for discrete latent variable models", NeurIPS 2017, https://arxiv.org/abs/1703.07370.
W. Grathwohl, D. Choi, Y. Wu, G. Roeder and D. Duvenaud, "Backpropagation through the Void: Optimizing control
variates for black-box gradient estimation", ICLR 2018, https://arxiv.org/abs/1711.00123.
"""
from __future__ import annotations

import copy
import math
from typing import Dict, Optional

import pyro
import torch
import torch.nn.functional as F
from pyro.poutine.messenger import Messenger
from torch import nn

from zoo.core.errors import ZooError
from zoo.core.plates import MAX_PLATE_NESTING
from zoo.core.weights import per_datum_log_weights
from zoo.objectives.arm import inner_logits
from zoo.objectives.base import PerDatumObjective, assumption_broken

__all__ = ["RelaxedBits", "ControlVariate", "ControlVariateObjective", "REBAR", "RELAX"]

#: uniforms are kept this far from 0 and 1, so that logit(u) and logit(v') stay finite in float32
EPS = 1e-6


def _logit(p: torch.Tensor) -> torch.Tensor:
    return torch.log(p) - torch.log1p(-p)


def conditional_logistic(logits: torch.Tensor, b: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """z~ = phi + logit(v'): the logistic sample z = phi + logit(u) given b = H(z), drawn by v (module docstring)."""
    theta = torch.sigmoid(logits)
    v_prime = torch.where(b > 0, 1 - theta + v * theta, v * (1 - theta))
    return logits + _logit(v_prime.clamp(EPS, 1 - EPS))


class RelaxedBits(Messenger):
    """Sets each binary guide site to one of the four values of a REBAR/RELAX step (module docstring).

    ``mode``: ``"hard"`` (b), ``"z"`` (sigmoid(z / lambda)), ``"ztilde"`` (sigmoid(z~ / lambda)) or ``"ztilde_held"``
    (the same with z~ cut from phi). The uniforms u, v are drawn the first time a site is met and kept, so the four
    passes see the same draw; ``temperature(name)`` gives lambda. A site whose value is set (the model's replay) or
    observed is left alone. ``zeta`` keeps each site's logistic sample of the last relaxed pass (r's input)."""

    MODES = ("hard", "z", "ztilde", "ztilde_held")

    def __init__(self, temperature):
        super().__init__()
        self.temperature, self.mode = temperature, "hard"
        self.noise: Dict[str, tuple] = {}
        self.logits: Dict[str, torch.Tensor] = {}
        self.zeta: Dict[str, torch.Tensor] = {}

    def _pyro_sample(self, msg):
        if msg["is_observed"] or msg["value"] is not None:
            return
        name, logits = msg["name"], inner_logits(msg["fn"])
        if logits is None:
            raise assumption_broken(type(self).__name__, f"a guide of Bernoulli bits (site {name!r} is not one)")
        if name not in self.noise:
            held = logits.detach()
            u, v = (torch.rand_like(held).clamp(EPS, 1 - EPS) for _ in range(2))
            self.noise[name] = (u, v, (held + _logit(u) > 0).to(held.dtype))
        u, v, b = self.noise[name]
        self.logits[name] = logits
        if self.mode == "hard":
            msg["value"] = b
            return
        if self.mode == "z":
            zeta = logits + _logit(u)
        else:
            zeta = conditional_logistic(logits if self.mode == "ztilde" else logits.detach(), b, v)
        self.zeta[name] = zeta
        msg["value"] = torch.sigmoid(zeta / self.temperature(name))


class ControlVariate(nn.Module):
    """(eta, lambda per site) of REBAR, and RELAX's r_rho: the parameters the variance objective trains."""

    def __init__(self, sizes: Dict[str, int], network: bool, hidden: int = 200, initial_temperature: float = 0.5):
        super().__init__()
        self.eta = nn.Parameter(torch.ones(()))
        self.log_temperature = nn.ParameterDict({name: nn.Parameter(torch.tensor(math.log(initial_temperature)))
                                                 for name in sizes})
        self.sizes = dict(sizes)
        self.net = None
        if network:
            self.net = nn.Sequential(nn.Linear(sum(sizes.values()), hidden), nn.ELU(), nn.Linear(hidden, 1))
            nn.init.zeros_(self.net[-1].weight)        # RELAX starts as REBAR
            nn.init.zeros_(self.net[-1].bias)

    def temperature(self, name: str) -> torch.Tensor:
        return self.log_temperature[name].exp()

    def forward(self, relaxed_f: torch.Tensor, zeta: Dict[str, torch.Tensor], batch_shape) -> torch.Tensor:
        """c = eta f(sigmoid(zeta / lambda)) (+ r(zeta)), per particle and datum ``[K, B]``."""
        c = self.eta * relaxed_f
        if self.net is not None:
            inputs = torch.cat([zeta[name].expand(*batch_shape, *zeta[name].shape[len(batch_shape):])
                                .reshape(*batch_shape, -1) for name in self.sizes], -1)
            c = c + self.net(inputs).squeeze(-1)
        return c


class ControlVariateObjective(PerDatumObjective):
    """The ELBO with a REBAR/RELAX gradient for the logits of its binary sites (module docstring).

    Arguments:
        num_particles: K independent estimates per datum, averaged.
        cv_lr: the step size of the control variate's own Adam (the variance objective; default 1e-3).
    """

    detach_latents = True
    network = False
    #: whether :meth:`loss_and_grads` also steps the control variate; off, it is the estimator at a fixed control
    #: variate (as :func:`zoo.evaluation.gradients.diagnose` measures it, after letting it train at the parameters)
    train_control_variate = True

    def __init__(self, num_particles: int = None, cv_lr: float = 1e-3, max_plate_nesting: int = MAX_PLATE_NESTING):
        super().__init__(num_particles=num_particles, max_plate_nesting=max_plate_nesting)
        self.cv_lr = float(cv_lr)
        self.control: Optional[ControlVariate] = None
        self.cv_optimizer: Optional[torch.optim.Optimizer] = None
        self._pending: Optional[dict] = None

    # ---- the control variate's state: built at the first step, once the sites are known ----
    def _build(self, logits: Dict[str, torch.Tensor], event_dims: Dict[str, int]) -> None:
        sizes = {name: int(math.prod(t.shape[t.dim() - event_dims[name]:])) for name, t in logits.items()}
        anchor = next(iter(logits.values()))
        # built on a fork of the random stream: a resumed run, which builds it again at its first step, then draws
        # what the uninterrupted run draws
        with torch.random.fork_rng(devices=[]):
            self.control = ControlVariate(sizes, self.network).to(device=anchor.device, dtype=anchor.dtype)
        self.cv_optimizer = torch.optim.Adam(self.control.parameters(), lr=self.cv_lr)
        if self._pending is not None:
            try:
                self.load_state_dict(self._pending)
            except (RuntimeError, KeyError, ValueError, TypeError, AttributeError, IndexError):
                raise ZooError(f"the checkpoint's {type(self).__name__} control variate does not fit this model's "
                               f"latents ({', '.join(sizes)}): use a checkpoint that pyro-zoo train wrote for this model, or "
                               f"start the run afresh with a new --out") from None

    def state_dict(self) -> dict:
        """The control variate's parameters and its Adam state (empty before the first step)."""
        if self.control is None:
            return dict(self._pending or {})
        return {"control": self.control.state_dict(), "optimizer": self.cv_optimizer.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict`'s output; before the first step it is kept until the control variate is built."""
        if not state:
            return
        if not isinstance(state, dict) or not isinstance(state.get("control"), dict) \
                or not isinstance(state.get("optimizer"), dict):
            raise ZooError(f"a {type(self).__name__} state holds 'control' and 'optimizer' dicts; this one does not: "
                           f"resume from a checkpoint that pyro-zoo train wrote")
        if self.control is None:
            self._pending = copy.deepcopy(state)          # not the live tensors of another objective
            return
        self.control.load_state_dict(state["control"])
        self.cv_optimizer.load_state_dict(state["optimizer"])
        self._pending = None

    def _passes(self, model, guide, bits, *args, **kwargs):
        """mode -> (its log-weights, the logistic samples it set), for the four modes of :class:`RelaxedBits`."""
        out = {}
        for mode in RelaxedBits.MODES:
            bits.mode = mode
            with bits, pyro.validation_enabled(False):         # soft bits are outside the Bernoulli's support
                lw = per_datum_log_weights(model, guide, *args, num_particles=self.num_particles,
                                           detach_latents=mode == "hard",
                                           q_transform=_hold_logits if mode != "hard" else None, **kwargs)
            out[mode] = (lw, dict(bits.zeta))
            if mode == "hard":
                if set(bits.logits) != set(lw.latents) or lw.global_values:
                    raise assumption_broken(type(self).__name__, "a model whose latents are all local binary sites")
                if self.control is None:
                    # each site's event dims: its value's dims beyond the [K, B] batch
                    self._build(bits.logits, {name: lw.latents[name].dim() - 2 for name in bits.logits})
        return out

    def _surrogates(self, model, guide, *args, **kwargs):
        bits = self.last_bits = RelaxedBits(lambda name: self.control.temperature(name))
        passes = self._passes(model, guide, bits, *args, **kwargs)
        hard = passes["hard"][0]
        f = hard.log_w.detach()                                                     # [K, B]
        c_z, c_zt, c_held = (self.control(lw.log_w, zeta, f.shape) for lw, zeta in
                             (passes["z"], passes["ztilde"], passes["ztilde_held"]))
        log_q = sum(_bit_log_prob(bits.logits[n], bits.noise[n][2]) for n in bits.logits)   # [K, B], live in phi
        guide_surrogate = (f - c_held) * log_q + c_z - c_zt
        scale = hard.scale
        phi_loss = -scale * guide_surrogate.mean(0).sum()
        theta_loss = -scale * (hard.log_likelihood + hard.log_prior).mean(0).sum()
        value = -scale * f.mean(0).sum()
        return hard, value, theta_loss, phi_loss, passes

    def value_and_surrogate(self, model, guide, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} trains its control variate between the two surrogates' "
                                  f"gradients; use loss_and_grads")

    def loss(self, model, guide, *args, **kwargs):
        with torch.no_grad():
            lw = per_datum_log_weights(model, guide, *args, num_particles=self.num_particles, **kwargs)
            return -lw.scale * lw.log_w.mean(0).sum().item()

    def loss_and_grads(self, model, guide, *args, **kwargs):
        hard, value, theta_loss, phi_loss, _ = self._surrogates(model, guide, *args, **kwargs)
        model_params = [p for p in hard.model_params if p.requires_grad]
        model_ids = {id(p) for p in model_params}
        guide_params = [p for p in hard.guide_params if p.requires_grad and id(p) not in model_ids]
        if model_params:
            _accumulate(model_params, torch.autograd.grad(theta_loss, model_params, retain_graph=True,
                                                          allow_unused=True))
        grads = torch.autograd.grad(phi_loss, guide_params, create_graph=self.train_control_variate,
                                    allow_unused=True)
        used = [(p, g) for p, g in zip(guide_params, grads) if g is not None]
        variance = sum((g * g).sum() for _, g in used)
        cv_params = [p for p in self.control.parameters() if p.requires_grad]
        self.cv_optimizer.zero_grad(set_to_none=True)
        if self.train_control_variate and torch.is_tensor(variance) and variance.requires_grad:
            cv_grads = torch.autograd.grad(variance, cv_params, allow_unused=True)
            for p, g in zip(cv_params, cv_grads):
                p.grad = g
            self.cv_optimizer.step()
        _accumulate([p for p, _ in used], [g.detach() for _, g in used])
        return value.item()


class REBAR(ControlVariateObjective):
    """The ELBO with REBAR's gradient for Bernoulli latents (Tucker et al. 2017; module docstring)."""

    network = False


class RELAX(ControlVariateObjective):
    """The ELBO with RELAX's gradient for Bernoulli latents (Grathwohl et al. 2018; module docstring)."""

    network = True


def _accumulate(params, grads) -> None:
    for p, g in zip(params, grads):
        if g is not None:
            p.grad = g if p.grad is None else p.grad + g


def _hold_logits(fn):
    """The guide's distribution of bits with its Bernoulli logits cut from the graph (c depends on phi through z
    only): independent Bernoullis over the site's event dimensions, whatever wraps them (Independent, JointDiscrete)."""
    logits = inner_logits(fn)
    if logits is None:
        raise assumption_broken("rebar/relax", f"a guide of Bernoulli bits, not {type(fn).__name__}")
    held = torch.distributions.Bernoulli(logits=logits.detach(), validate_args=False)
    return torch.distributions.Independent(held, fn.event_dim, validate_args=False) if fn.event_dim else held


def _bit_log_prob(logits: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """log q(b) per particle and datum ``[K, B]``: the bits' Bernoulli log-probabilities summed over the event."""
    per_bit = -F.binary_cross_entropy_with_logits(logits.expand_as(b), b, reduction="none")
    return per_bit.reshape(*per_bit.shape[:2], -1).sum(-1) if per_bit.dim() > 2 else per_bit

