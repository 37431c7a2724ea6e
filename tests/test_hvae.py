"""The hierarchical VAE: its latent declaration, its guides, and, on a linear-Gaussian two-layer hvae, the
exact posterior and log p(x) in closed form against the structured guide and the harness."""
import math

import pytest
import torch

import zoo
from zoo.core.contract import posterior_order
from zoo.registry import build_guide, build_model

# A linear-Gaussian hvae: z2 ~ N(0, I), z1 | z2 ~ N(A z2, D1), x | z1 ~ N(C z1, s^2 I). A and D1 are diagonal
# and C has orthogonal columns, so p(z1 | x) and p(z2 | z1) are diagonal Gaussians: the posterior
# p(z1 | x) p(z2 | z1, x) is exactly of the structured guide's form q(z1 | x) q(z2 | z1, x), while z1 and z2
# are strongly correlated in it, which no mean-field q(z1 | x) q(z2 | x) can represent.
A = torch.tensor([1.5, -1.2], dtype=torch.float64)             # diagonal of A
D1 = torch.tensor([0.3, 0.4], dtype=torch.float64) ** 2        # diagonal of D1
C = torch.tensor([[1.0, 1.0], [1.0, -1.0], [0.0, 0.0]], dtype=torch.float64) * 1.5
SIGMA_X = 0.5
EPS = 1e-3          # tanh(EPS v) = EPS v (1 + O(1e-5)): the guide's tanh layers are linear to float64 accuracy


def inverse_softplus(y):
    return y + torch.log(-torch.expm1(-y))


def closed_form(x):
    """log p(x), the posterior p(z1 | x) = N(m1, diag v1), p(z2 | z1) = N(G z1, diag v2), and the joint
    posterior precision of (z1, z2) (for the best mean-field q)."""
    cov_z1 = torch.diag(A ** 2 + D1)
    cov_x = C @ cov_z1 @ C.T + SIGMA_X ** 2 * torch.eye(3, dtype=torch.float64)
    log_px = torch.distributions.MultivariateNormal(torch.zeros(3, dtype=torch.float64), cov_x).log_prob(x)
    prec1 = 1 / (A ** 2 + D1) + torch.diag(C.T @ C) / SIGMA_X ** 2           # diagonal by construction
    v1 = 1 / prec1
    m1 = (x @ C / SIGMA_X ** 2) * v1
    v2 = 1 / (1 + A ** 2 / D1)
    G = v2 * A / D1
    # joint precision of (z1, z2) given x: prior p(z2) p(z1 | z2) plus the likelihood's on z1
    precision = torch.zeros(4, 4, dtype=torch.float64)
    precision[:2, :2] = torch.diag(1 / D1 + torch.diag(C.T @ C) / SIGMA_X ** 2)
    precision[2:, 2:] = torch.diag(1 + A ** 2 / D1)
    precision[:2, 2:] = precision[2:, :2] = torch.diag(-A / D1)
    return log_px, m1, v1, G, v2, precision


def linear_gaussian_hvae():
    model = build_model("hvae", 3, layers=(2, 2), hidden=(), transition_hidden=(), likelihood="gaussian").double()
    with torch.no_grad():
        t = model.transitions[0][0]                              # z2 -> (loc, raw scale) of z1
        t.weight.zero_(), t.bias.zero_()
        t.weight[:2] = torch.diag(A)
        t.bias[2:] = inverse_softplus(D1.sqrt() - 1e-5)
        model.decoder[0].weight.copy_(C), model.decoder[0].bias.zero_()
        model.px.log_scale.fill_(math.log(SIGMA_X))
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def set_exact_structured_guide(guide, x_dim=3):
    """q(z1 | x) = N(M x, v1), q(z2 | z1, x) = N(G z1, v2): the exact posterior, through tanh layers run in
    their linear range (inputs scaled by EPS, outputs by 1 / EPS)."""
    _, _, v1, G, v2, _ = closed_form(torch.zeros(1, 3, dtype=torch.float64))
    M = (C / SIGMA_X ** 2 * v1).T                                # m1 = M x
    with torch.no_grad():
        for p in guide.parameters():
            p.zero_()
        guide.trunk[0].weight.copy_(EPS * torch.eye(x_dim, dtype=torch.float64))      # h = tanh(EPS x)
        head1 = guide.heads["z1"]
        head1.weight[:2] = M / EPS
        head1.bias[2:] = inverse_softplus(v1.sqrt() - 1e-5)
        first, last = guide.heads["z2"][0], guide.heads["z2"][2]       # reads [h, z1]
        first.weight[0, x_dim] = first.weight[1, x_dim + 1] = EPS     # hidden_j = tanh(EPS z1_j)
        last.weight[:2, :2] = torch.diag(G) / EPS
        last.bias[2:] = inverse_softplus(v2.sqrt() - 1e-5)


def set_best_mean_field_guide(guide, x_dim=3):
    """The best q(z1 | x) q(z2 | x) of diagonal Normals: the posterior means, variances 1 / Lambda_ii."""
    _, _, v1, G, _, precision = closed_form(torch.zeros(1, 3, dtype=torch.float64))
    M = (C / SIGMA_X ** 2 * v1).T
    var = 1 / torch.diagonal(precision)
    with torch.no_grad():
        for p in guide.parameters():
            p.zero_()
        guide.trunk[0].weight.copy_(EPS * torch.eye(x_dim, dtype=torch.float64))
        guide.heads["z1"].weight[:2] = M / EPS
        guide.heads["z1"].bias[2:] = inverse_softplus(var[:2].sqrt() - 1e-5)
        guide.heads["z2"].weight[:2] = (G[:, None] * M) / EPS                 # E[z2 | x] = G E[z1 | x]
        guide.heads["z2"].bias[2:] = inverse_softplus(var[2:].sqrt() - 1e-5)


def data(n=200, seed=0):
    g = torch.Generator().manual_seed(seed)
    z2 = torch.randn(n, 2, generator=g, dtype=torch.float64)
    z1 = A * z2 + D1.sqrt() * torch.randn(n, 2, generator=g, dtype=torch.float64)
    return z1 @ C.T + SIGMA_X * torch.randn(n, 3, generator=g, dtype=torch.float64)


def test_the_latents_form_a_chain_and_structured_guides_go_bottom_up():
    model = build_model("hvae", 64, layers=(8, 6, 4), hidden=(16,), transition_hidden=(12,))
    assert [(s.name, s.parents, s.event_shape) for s in model.latents] == [
        ("z3", (), (4,)), ("z2", ("z3",), (6,)), ("z1", ("z2",), (8,))]
    assert [s.name for s, _ in posterior_order(model.latents)] == ["z1", "z2", "z3"]
    default = build_model("hvae", 784)
    assert default.layers == (100, 50) and default.hidden == (200, 200) and default.transition_hidden == (100, 100)
    assert [m.out_features for m in default.transitions[0] if isinstance(m, torch.nn.Linear)] == [100, 100, 200]
    assert build_guide("amortized", default).hidden == (200, 200)      # the encoder mirrors 200-200


def test_the_structured_guide_holds_the_exact_posterior_and_its_elbo_is_log_px():
    """ELBO = log p(x) - KL(q || p(z | x)) is the closed-form log p(x) to 1e-3 when q is the exact posterior."""
    model = linear_gaussian_hvae()
    x = data()
    log_px, m1, v1, G, v2, _ = closed_form(x)
    guide = build_guide("amortized", model, hidden=(3,), structured=True).double()
    set_exact_structured_guide(guide)
    h = guide.trunk(x)
    q1 = guide.distribution(guide.order[0], guide.context(guide.order[0], h, {}))
    assert torch.allclose(q1.mean, m1, atol=1e-4) and torch.allclose(q1.variance, v1.expand_as(m1), atol=1e-6)
    z1 = q1.sample()
    q2 = guide.distribution(guide.order[1], guide.context(guide.order[1], h, {"z1": z1}))
    assert torch.allclose(q2.mean, G * z1, atol=1e-4) and torch.allclose(q2.variance, v2.expand_as(z1), atol=1e-6)
    result = zoo.evaluate(model, guide, x, num_samples=20, iwae_k=5, psis=False)
    assert abs(result["elbo"] - log_px.mean().item()) < 1e-3
    assert torch.allclose(result["per_datum"]["elbo"], log_px, atol=1e-3)


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.slow
def test_training_the_structured_guide_recovers_the_exact_posterior(seed):
    """Trained from a random start (linear units, so that the family holds the exact posterior; the
    sticking-the-landing gradient, whose variance vanishes there), the structured guide reaches
    q(z1 | x) = N(m1, v1) and q(z2 | z1, x) = N(G z1, v2), and its ELBO is the closed-form log p(x) to 1e-3."""
    model = linear_gaussian_hvae()
    x = data()
    log_px, m1, v1, G, v2, _ = closed_form(x)
    torch.manual_seed(seed)
    guide = build_guide("amortized", model, hidden=(4,), structured=True, activation="linear").double()
    for lr in (3e-2, 3e-3, 3e-4):
        zoo.fit(model, guide, zoo.build_objective("stl", particles=4), x, epochs=100, batch_size=50, lr=lr,
                progress=False)
    result = zoo.evaluate(model, guide, x, num_samples=200, iwae_k=5, psis=False)
    assert 0 <= log_px.mean().item() - result["elbo"] < 1e-3
    with torch.no_grad():
        h = guide.trunk(x)
        q1 = guide.distribution(guide.order[0], guide.context(guide.order[0], h, {}))
        z1 = q1.sample()
        q2 = guide.distribution(guide.order[1], guide.context(guide.order[1], h, {"z1": z1}))
    assert torch.allclose(q1.mean, m1, atol=0.02) and torch.allclose(q1.variance, v1.expand_as(m1), rtol=0.05)
    assert torch.allclose(q2.mean, G * z1, atol=0.02) and torch.allclose(q2.variance, v2.expand_as(z1), rtol=0.05)


def test_a_mean_field_guide_cannot_reach_the_exact_posterior():
    """The best mean-field q falls short of log p(x) by 0.5 (sum_i log Lambda_ii - log det Lambda) per datum,
    Lambda the posterior precision of (z1, z2); training a mean-field guide does no better."""
    model = linear_gaussian_hvae()
    x = data()
    log_px, *_, precision = closed_form(x)
    floor = 0.5 * (torch.diagonal(precision).log().sum() - torch.logdet(precision)).item()
    assert floor > 0.3                                       # a strongly correlated posterior
    best = build_guide("amortized", model, hidden=(3,)).double()
    set_best_mean_field_guide(best)
    torch.manual_seed(0)
    result = zoo.evaluate(model, best, x, num_samples=400, iwae_k=5, psis=False)
    assert abs(log_px.mean().item() - result["elbo"] - floor) < 0.03
    trained = build_guide("amortized", model, hidden=(16,)).double()
    torch.manual_seed(1)
    zoo.fit(model, trained, zoo.build_objective("elbo", particles=4), x, epochs=30, batch_size=50, lr=3e-2,
            progress=False)
    gap = log_px.mean().item() - zoo.evaluate(model, trained, x, num_samples=400, iwae_k=5, psis=False)["elbo"]
    assert floor - 0.03 < gap < floor + 0.5, (gap, floor)


def test_per_site_kl_adds_up_and_matches_the_closed_form_layer_by_layer():
    """With q the exact posterior, KL_z1 = E[log q(z1|x) - log p(z1|z2)] and KL_z2 = E[log q(z2|z1) - log p(z2)]
    are Gaussian expectations in closed form; they add up to the harness's KL."""
    model = linear_gaussian_hvae()
    x = data(n=100, seed=1)
    _, m1, v1, G, v2, _ = closed_form(x)
    guide = build_guide("amortized", model, hidden=(3,), structured=True).double()
    set_exact_structured_guide(guide)
    torch.manual_seed(0)
    result = zoo.evaluate(model, guide, x, num_samples=4000, iwae_k=5, psis=False)
    kl = result["kl_per_site"]
    assert list(kl) == ["z2", "z1"] and abs(kl["z2"] + kl["z1"] - result["kl"]) < 1e-8
    # z2 | x ~ N(G m1, G^2 v1 + v2), z1 | x ~ N(m1, v1); E over q of the Gaussian log-densities:
    e_z2sq = (G * m1) ** 2 + G ** 2 * v1 + v2
    kl_z2 = (-0.5 * torch.log(2 * math.pi * math.e * v2) + 0.5 * math.log(2 * math.pi) + 0.5 * e_z2sq).sum(-1)
    # E[(z1 - A z2)^2] with z2 = G z1 + sqrt(v2) e: (1 - A G)^2 E[z1^2] + A^2 v2
    e_res = (1 - A * G) ** 2 * (m1 ** 2 + v1) + A ** 2 * v2
    kl_z1 = (-0.5 * torch.log(2 * math.pi * math.e * v1) + 0.5 * torch.log(2 * math.pi * D1) + e_res / (2 * D1)).sum(-1)
    assert abs(kl["z2"] - kl_z2.mean().item()) < 0.05 and abs(kl["z1"] - kl_z1.mean().item()) < 0.05
    assert result["active_units_per_site"] == {"z2": 2, "z1": 2} and result["active_units"] == 4


@pytest.mark.parametrize("guide, options", [("amortized", {}), ("amortized", {"structured": True}), ("iaf", {}),
                                            ("iaf", {"structured": True}), ("meanfield", {})])
def test_every_guide_family_trains_an_hvae(guide, options):
    torch.manual_seed(0)
    x = torch.bernoulli(torch.full((40, 12), 0.3))
    model = build_model("hvae", 12, layers=(4, 3), hidden=(8,), transition_hidden=(6,))
    g = build_guide(guide, model, num_data=40, **options)
    history = zoo.fit(model, g, zoo.build_objective("elbo"), x, epochs=3, batch_size=20, lr=1e-2, progress=False)
    assert len(history) == 3
    result = zoo.evaluate(model, g, x, num_samples=20, iwae_k=5, psis=False)
    assert set(result["kl_per_site"]) == {"z1", "z2"} and math.isfinite(result["log_likelihood"])
    assert sum(result["active_units_per_site"].values()) == result["active_units"]
