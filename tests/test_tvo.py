"""The thermodynamic variational objective (zoo.objectives.thermodynamic) against its exact value and gradient.

An SBN with one layer of 3 bits over 6 pixels and an amortized guide: each datum's 8 configurations z are
enumerated, so every pi_beta(z) = q(z) w(z)^beta / Z_beta is exact, the exact TVO is a finite sum, and autograd
gives its exact gradient. Checks:

- the bound: ELBO <= TVO <= log p(x) (the enumerated marginal), exactly, and the estimate at S draws converges
  to it;
- P = 1 (the TVO is the ELBO): the estimator is unbiased for the ELBO gradient at any S >= 2 (the S/(S-1)
  covariance correction), so the mean of many calls lies within Z standard errors (the calls' own spread) of
  the exact gradient in every coordinate;
- continuous latents (pPCA with one latent and a mean-field Normal guide, ``test_tighter_bounds.py``'s setting):
  each E_{pi_beta}[log w] = E_q[w^beta log w] / E_q[w^beta] by 1-D Gauss-Hermite quadrature, the exact TVO and
  its gradient by autograd; the score-function estimator at S = 512, as below, within Z of it;
- P = 3: the self-normalized estimator is consistent, its bias O(1/S). At S = 512 draws the mean of 600 calls
  (ten times the test's) lies within 0.63 of the test's standard error of the exact gradient in every coordinate
  (``python tests/test_tvo.py`` prints it): the bias, with that mean's own noise, takes at most that share of the
  Z = 4.5 margin. A gradient without the covariance term (the naive derivative of the estimate with the samples
  held) must lie more than Z + 4 standard errors away in some coordinate.
"""
import copy
import math

import pyro
import pytest
import torch
from pyro.poutine.messenger import Messenger

from test_arm import _setup
from zoo.core.enumeration import enumerated_log_marginal
from zoo.core.weights import per_datum_log_weights
from zoo.objectives.thermodynamic import ThermodynamicObjective, partition, tvo_bound
from zoo.registry import build_objective

Z, N = 4.5, 4
CONFIGS = torch.tensor([[float(b) for b in f"{i:03b}"] for i in range(8)], dtype=torch.float64)   # [8, 3]


class AllConfigurations(Messenger):
    """Sets the guide's one site to the 8 configurations, one per particle (the particle plate has size 8), for
    each of B data."""

    def __init__(self, B):
        super().__init__()
        self.B = B

    def _pyro_sample(self, msg):
        if msg["is_observed"] or msg["value"] is not None:
            return
        msg["value"] = CONFIGS[:, None, :].expand(8, self.B, 3)


def enumerated(model, guide, x):
    """log w(z) and log q(z | x) of every configuration, ``[8, B]`` each, differentiable."""
    with AllConfigurations(x.shape[0]):
        lw = per_datum_log_weights(model, guide, x, idx=torch.arange(x.shape[0]), N=x.shape[0], num_particles=8)
    return lw.log_w, lw.log_q


def exact_tvo(log_w, log_q, betas):
    """sum_j (beta_{j+1} - beta_j) E_{pi_beta_j}[log w] per datum, pi_beta(z) proportional to q(z) w(z)^beta."""
    pi = torch.softmax(log_q[..., None] + log_w[..., None] * betas, 0)           # [8, B, P + 1]
    expected = (pi * log_w[..., None]).sum(0)
    return (expected[..., :-1] * (betas[1:] - betas[:-1])).sum(-1)


def _params(model, guide):
    return list(model.parameters()) + list(guide.parameters())


def exact_gradient(partitions):
    model, guide, x = _setup()
    params = _params(model, guide)
    log_w, log_q = enumerated(model, guide, x)
    loss = -exact_tvo(log_w, log_q, partition(partitions).double()).sum()
    return torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, params)])


def estimates(partitions, S, calls, R, objective=None):
    """``calls`` gradients, each of the TVO on the N data replicated R times (divided by R: one datum's worth)."""
    model, guide, x = _setup()
    objective = objective or ThermodynamicObjective(num_particles=S, partitions=partitions)
    params = _params(model, guide)
    pyro.set_rng_seed(1)
    draws = []
    for _ in range(calls):
        for p in params:
            p.grad = None
        xs = x.repeat(R, 1)
        objective.loss_and_grads(model, guide, xs, idx=torch.arange(xs.shape[0]), N=xs.shape[0])
        draws.append(torch.cat([p.grad.reshape(-1) for p in params]) / R)
    return torch.stack(draws)


def z_scores(draws, exact):
    mean, se = draws.mean(0), draws.std(0) / math.sqrt(draws.shape[0])
    varies = se > 0
    assert torch.allclose(mean[~varies], exact[~varies], atol=1e-10)
    return ((mean - exact)[varies] / se[varies]).abs(), se


def test_the_exact_tvo_lies_between_the_elbo_and_log_p_x_and_the_estimate_converges_to_it():
    model, guide, x = _setup()
    with torch.no_grad():
        log_w, log_q = enumerated(model, guide, x)
        log_px = torch.logsumexp(log_q + log_w, 0)
        # the 8 configurations are all of them: the zoo's enumerated marginal (in float32) agrees
        assert torch.allclose(enumerated_log_marginal(copy.deepcopy(model).float(), x.float()).double(), log_px,
                              atol=1e-4)
        elbo = (log_q.exp() * log_w).sum(0)
        previous = elbo
        for partitions in (1, 2, 5, 20):
            tvo = exact_tvo(log_w, log_q, partition(partitions, "linear").double())
            assert (tvo >= previous - 1e-12).all() and (tvo <= log_px).all()
            previous = tvo
        assert torch.allclose(exact_tvo(log_w, log_q, partition(1).double()), elbo)
        betas = partition(3).double()
        exact = exact_tvo(log_w, log_q, betas)
        pyro.set_rng_seed(2)
        lw = per_datum_log_weights(model, guide, x.repeat(100, 1), num_particles=1000)
        estimate = tvo_bound(lw.log_w, betas).reshape(100, N).mean(0)
        assert (estimate - exact).abs().max() < 0.01, (estimate, exact)


def test_with_one_interval_the_estimator_is_unbiased_for_the_elbo_gradient():
    exact = exact_gradient(1)
    z, _ = z_scores(estimates(1, S=4, calls=150, R=50), exact)
    assert z.max() < Z, z.tolist()


def test_with_three_intervals_the_estimator_converges_to_the_exact_gradient():
    exact = exact_gradient(3)
    draws = estimates(3, S=512, calls=60, R=20)
    z, se = z_scores(draws, exact)
    assert z.max() < Z, z.tolist()


@pytest.mark.slow
def test_on_a_continuous_latent_the_estimator_converges_to_the_quadrature_gradient():
    from test_tighter_bounds import _log_w, _setup as ppca_setup, estimated_gradient
    import numpy as np
    model, guide, replicated, x = ppca_setup()
    theta = list(model.parameters())
    t, a = np.polynomial.hermite_e.hermegauss(80)                 # weight exp(-t^2 / 2): E_q by quadrature in t
    t, a = torch.tensor(t), torch.tensor(a / math.sqrt(2 * math.pi))
    log_w = _log_w(model, guide, x, t[:, None])[:, 0, :]          # [Q, N]
    betas = partition(3).double()
    pi = torch.softmax(torch.log(a)[:, None, None] + log_w[..., None] * betas, 0)      # [Q, N, P + 1]
    expected = (pi * log_w[..., None]).sum(0)
    tvo = (expected[..., :-1] * (betas[1:] - betas[:-1])).sum()
    exact = torch.cat([g.reshape(-1) for g in torch.autograd.grad(tvo, theta + list(guide.parameters()),
                                                                  retain_graph=True)])
    elbo = (a[:, None] * log_w).sum()
    elbo_gradient = torch.cat([g.reshape(-1) for g in torch.autograd.grad(elbo, theta + list(guide.parameters()))])
    mean, se = estimated_gradient(ThermodynamicObjective(num_particles=512, partitions=3), model, replicated, x,
                                  theta)
    z = ((mean - exact) / se).abs()
    assert z.max() < Z, z.tolist()
    assert ((elbo_gradient - exact) / se).abs().max() > Z + 4          # the test tells the TVO from the ELBO


class WithoutCovariance(ThermodynamicObjective):
    """The wrong estimator: the derivative of the estimate with the samples held, no covariance term."""

    def per_datum(self, lw):
        return self.bound(lw.log_w), self.bound(lw.log_w)


def test_a_gradient_without_the_covariance_term_is_caught():
    exact = exact_gradient(3)
    z, _ = z_scores(estimates(3, S=512, calls=60, R=20, objective=WithoutCovariance(num_particles=512,
                                                                                     partitions=3)), exact)
    assert z.max() > Z + 4


@pytest.mark.parametrize("options,says", [({"particles": 1}, "at least 2 particles"),
                                          ({"schedule": "cubic"}, "schedule"),
                                          ({"partitions": 0}, "partitions"),
                                          ({"log_beta_min": 1.0}, "log_beta_min"),
                                          ({"log_beta_min": 0.0}, "log_beta_min 0 puts every beta")])
def test_bad_options_are_refused_in_one_line(options, says):
    """log_beta_min 0 puts every beta of the log schedule at 1: it trained the plain ELBO without a word."""
    from zoo.core.errors import ZooError
    with pytest.raises(ZooError, match=says) as e:
        build_objective("tvo", **options)
    assert "\n" not in str(e.value)


def test_the_partition_schedules():
    assert partition(1).tolist() == [0.0, 1.0]
    log = partition(3, "log", -2.0)
    assert torch.allclose(log, torch.tensor([0.0, 0.01, 0.1, 1.0], dtype=torch.float64))
    assert torch.allclose(partition(4, "linear"), torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0], dtype=torch.float64))


if __name__ == "__main__":        # the bias at S = 512 against the test's standard error
    exact = exact_gradient(3)
    long = estimates(3, S=512, calls=600, R=20)
    _, se = z_scores(estimates(3, S=512, calls=60, R=20), exact)
    bias_bound = (long.mean(0) - exact).abs()
    varies = se > 0
    print("max |mean of 600 calls - exact| / se of 60 calls:", (bias_bound[varies] / se[varies]).max().item())
