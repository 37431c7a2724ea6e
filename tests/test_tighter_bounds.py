"""MIWAE, CIWAE and PIWAE (zoo.objectives.tighter): each gradient estimate is unbiased for its bound's exact gradient.

The exact gradient: on pPCA with one latent dimension and a mean-field Normal guide, a bound over P = M K draws per
datum is E_t[F(log w(m + s t_1), ..., log w(m + s t_P))], t ~ N(0, I_P), an integral that Gauss-Hermite quadrature
on P dimensions computes to float64 precision; autograd of the quadrature sum is the exact gradient with respect to
the same parameter tensors. The estimate: the mean of S independent ``loss_and_grads`` calls on the three data
replicated R times, which must lie within Z standard errors of the mean (the calls' own spread / sqrt(S)) of the
exact gradient in every coordinate, Z = 4.5 (a Bonferroni bound over the coordinates at a 1e-4 false-alarm rate). Each test also checks that it could
fail: the nearest wrong target (IWAE_{MK} for PIWAE's guide, IWAE_K for CIWAE, the ELBO for MIWAE) lies outside.
"""
import math

import numpy as np
import pyro
import pytest
import torch

from zoo.objectives.tighter import iwae, miwae
from zoo.registry import build_guide, build_model, build_objective

Z, S, N, R = 4.5, 200, 3, 100


def _setup():
    """pPCA (one latent), its mean-field guide at a point away from the posterior, three data; and the same guide
    and data replicated R times, whose per-datum gradients are R independent draws per call."""
    torch.manual_seed(0)
    pyro.set_rng_seed(0)
    model = build_model("ppca", 2, latent_dim=1).double()
    guide = build_guide("meanfield", model, num_data=N).double()
    replicated = build_guide("meanfield", model, num_data=N * R).double()
    with torch.no_grad():
        model.W.copy_(torch.tensor([[1.5], [-0.7]]))
        model.mu.copy_(torch.tensor([0.2, -0.1]))
        model.log_noise_scale.fill_(math.log(0.6))
        guide.z_loc.copy_(torch.tensor([[0.4], [-1.0], [0.1]]))       # not the posterior: the bounds differ
        guide.z_log_scale.fill_(math.log(0.45))
        replicated.z_loc.copy_(guide.z_loc.repeat(R, 1))
        replicated.z_log_scale.copy_(guide.z_log_scale.repeat(R, 1))
    x = torch.tensor([[1.0, -0.5], [-1.2, 0.9], [0.3, 0.2]], dtype=torch.float64)
    return model, guide, replicated, x


def _log_w(model, guide, x, t):
    """log w at z = m + s t for quadrature nodes t ``[Q, P]``: ``[Q, P, N]``."""
    m, s = guide.z_loc[:, 0], guide.z_log_scale[:, 0].exp()
    z = m + s * t.unsqueeze(-1)                                        # [Q, P, N]
    noise = model.log_noise_scale.exp()
    x_loc = z.unsqueeze(-1) * model.W[:, 0] + model.mu                # [Q, P, N, 2]
    log_lik = (-0.5 * ((x - x_loc) / noise).pow(2) - torch.log(noise) - 0.5 * math.log(2 * math.pi)).sum(-1)
    log_prior = -0.5 * z.pow(2) - 0.5 * math.log(2 * math.pi)
    log_q = -0.5 * t.unsqueeze(-1).pow(2) - torch.log(s) - 0.5 * math.log(2 * math.pi)
    return log_lik + log_prior - log_q


def exact_gradient(model, guide, x, P, reduce, params, nodes=14):
    """d/dparams of sum_n E[reduce(log w_1..P)] (Gauss-Hermite on P dimensions), flattened."""
    t1, w1 = np.polynomial.hermite_e.hermegauss(nodes)                 # weight exp(-t^2 / 2)
    t1, w1 = torch.tensor(t1), torch.tensor(w1 / math.sqrt(2 * math.pi))
    t = torch.cartesian_prod(*[t1] * P).reshape(-1, P)                 # [Q, P], Q = nodes^P
    w = torch.cartesian_prod(*[w1] * P).reshape(-1, P).prod(-1)
    log_w = _log_w(model, guide, x, t)                                 # [Q, P, N]
    Q = log_w.shape[0]
    per_node = reduce(log_w.permute(1, 0, 2).reshape(P, Q * N)).reshape(Q, N)   # the bound of each node's P draws
    value = (w.unsqueeze(-1) * per_node).sum()
    return torch.cat([g.reshape(-1) for g in torch.autograd.grad(value, params)])


def estimated_gradient(objective, model, replicated, x, theta):
    """Mean and standard error over S calls of the bound's estimated gradient (-grad loss) on the replicated data,
    flattened as ``exact_gradient``'s: the model's summed over the R copies and divided by R, each guide parameter's
    averaged over its R copies."""
    params = theta + list(replicated.parameters())
    data = x.repeat(R, 1)
    draws = []
    pyro.set_rng_seed(1)
    for _ in range(S):
        for p in params:
            p.grad = None
        objective.loss_and_grads(model, replicated, data, idx=torch.arange(N * R), N=N * R)
        draws.append(-torch.cat([p.grad.reshape(-1) / R for p in theta] +
                                [p.grad.reshape(R, N, -1).mean(0).reshape(-1) for p in replicated.parameters()]))
    draws = torch.stack(draws)
    return draws.mean(0), draws.std(0) / math.sqrt(S)


def assert_unbiased(mean, se, exact, wrong):
    """The estimate within Z of its standard errors of the exact gradient in every coordinate; and the nearest wrong
    target more than Z + 4 of them away in some coordinate, so an estimator of it (within ~4 SE of it) would fail."""
    z = ((mean - exact) / se).abs()
    assert z.max() < Z, f"|estimate - exact| / se = {z.tolist()}"
    assert ((exact - wrong) / se).abs().max() > Z + 4, "the test cannot tell the bound from its nearest wrong target"


@pytest.mark.slow
def test_miwae_is_unbiased_for_its_bound():
    model, guide, replicated, x = _setup()
    params = list(model.parameters()) + list(guide.parameters())
    mean, se = estimated_gradient(build_objective("miwae", 2, outer=2), model, replicated, x, list(model.parameters()))
    exact = exact_gradient(model, guide, x, 4, lambda lw: miwae(lw, 2), params)
    elbo = exact_gradient(model, guide, x, 1, lambda lw: lw.mean(0), params)
    assert_unbiased(mean, se, exact, elbo)


@pytest.mark.parametrize("beta", [pytest.param(0.0, marks=pytest.mark.slow), 0.3,
                                  pytest.param(1.0, marks=pytest.mark.slow)])
def test_ciwae_is_unbiased_for_its_bound(beta):
    model, guide, replicated, x = _setup()
    params = list(model.parameters()) + list(guide.parameters())
    mean, se = estimated_gradient(build_objective("ciwae", 3, ciwae_beta=beta), model, replicated, x,
                                  list(model.parameters()))
    exact = exact_gradient(model, guide, x, 3, lambda lw: beta * lw.mean(0) + (1 - beta) * iwae(lw), params)
    other = 0.7 if beta < 0.5 else 0.0
    wrong = exact_gradient(model, guide, x, 3, lambda lw: other * lw.mean(0) + (1 - other) * iwae(lw), params)
    assert_unbiased(mean, se, exact, wrong)


@pytest.mark.slow
def test_piwae_trains_the_model_on_iwae_and_the_guide_on_miwae():
    model, guide, replicated, x = _setup()
    theta, phi = list(model.parameters()), list(guide.parameters())
    mean, se = estimated_gradient(build_objective("piwae", 2, outer=2), model, replicated, x, theta)
    exact = torch.cat([exact_gradient(model, guide, x, 4, iwae, theta),
                       exact_gradient(model, guide, x, 4, lambda lw: miwae(lw, 2), phi)])
    all_iwae = exact_gradient(model, guide, x, 4, iwae, theta + phi)         # IWAE_4 for the guide too: wrong
    assert_unbiased(mean, se, exact, all_iwae)


def test_the_bounds_order_as_the_paper_says():
    """On the same i.i.d. log-weights: ELBO < MIWAE_{4,4} < IWAE_16, and CIWAE between the ELBO and IWAE_K."""
    torch.manual_seed(3)
    lw = 2.0 * torch.randn(16, 2500)                                 # 2500 data of 16 draws each
    assert lw.mean(0).mean() < miwae(lw, 4).mean() < iwae(lw).mean()
    four = lw[:4]
    ciwae = 0.5 * four.mean(0) + 0.5 * iwae(four)
    assert four.mean(0).mean() < ciwae.mean() < iwae(four).mean()
