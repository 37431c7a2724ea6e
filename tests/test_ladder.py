"""The ladder (top-down) guide, checked against the linear-Gaussian two-layer hvae of test_hvae.py, whose posterior
and log p(x) are in closed form.

There, per coordinate j: z2_j ~ N(0, 1), z1_j | z2_j ~ N(A_j z2_j, D1_j), and x tells z1 a Gaussian message
N(z1_j; m_j(x), 1 / lam_j), lam = diag(C^T C) / sigma_x^2, m = C^T x / (sigma_x^2 lam). So the exact posterior, read
top-down, is

    p(z2_j | x) = N(mean_j, 1 / prec_j),   prec_j = 1 + A_j^2 / (D1_j + 1 / lam_j),   mean_j = A_j m_j / ((D1_j + 1/lam_j) prec_j)
    p(z1_j | z2_j, x) = the precision-weighted product of N(A_j z2_j, D1_j) and N(m_j, 1 / lam_j),

which is the ladder guide's form with mu_hat = m(x), sigma_hat^2 = 1 / lam (Sonderby et al. 2016, eq. 19-21).
"""
import math
import warnings

import pytest
import torch

import zoo
from test_hvae import (A, C, D1, SIGMA_X, closed_form, data, inverse_softplus, linear_gaussian_hvae,
                       set_exact_structured_guide)
from zoo.core.errors import ZooError
from zoo.core.weights import per_datum_log_weights
from zoo.registry import build_guide, build_model, build_objective

LAM = torch.diag(C.T @ C) / SIGMA_X ** 2
M = (C / (SIGMA_X ** 2 * LAM)).T                                 # m(x) = M x
PREC2 = 1 + A ** 2 / (D1 + 1 / LAM)


def exact_ladder(model):
    """The ladder guide (identity bottom-up blocks) holding the exact posterior."""
    guide = build_guide("ladder", model, hidden=(), ladder_hidden=()).double()
    with torch.no_grad():
        for p in guide.parameters():
            p.zero_()
        guide.heads["z1"].weight[:2] = M                                        # mu_hat = m(x)
        guide.heads["z1"].bias[2:] = inverse_softplus((1 / LAM).sqrt() - 1e-5)  # sigma_hat^2 = 1 / lam
        guide.heads["z2"].weight[:2] = (A / ((D1 + 1 / LAM) * PREC2))[:, None] * M
        guide.heads["z2"].bias[2:] = inverse_softplus(PREC2.rsqrt() - 1e-5)
    return guide


def test_the_guide_samples_top_down_in_the_model_s_order_and_shares_its_top_down_pass():
    model = build_model("hvae", 64, layers=(8, 6, 4), hidden=(16,), transition_hidden=(12,))
    guide = build_guide("ladder", model)
    assert [s.name for s in guide.sites] == ["z3", "z2", "z1"] and [s.name for s in guide.bottom_up] == ["z1", "z2", "z3"]
    assert guide.hidden == (16,) and guide.ladder_hidden == (12,)
    own = {id(p) for p in guide.parameters()}
    assert not own & {id(p) for p in model.parameters()}          # borrowed, not owned: one optimizer group each
    x = torch.rand(5, 64)
    log_w = per_datum_log_weights(model.model, guide, x).log_w
    log_w.sum().backward()
    assert model.transitions[0][0].weight.grad is not None      # log q reaches p(z_l | z_l+1)'s parameters


def test_with_the_exact_posterior_every_draw_s_log_weight_is_log_px():
    """log p(x, z) - log q(z | x) = log p(x) (closed form) for every draw: the merge formula and the model's
    conditional prior are used exactly as the posterior's algebra says."""
    model = linear_gaussian_hvae()
    x = data()
    log_px = closed_form(x)[0]
    torch.manual_seed(0)
    log_w = per_datum_log_weights(model.model, exact_ladder(model), x, num_particles=50).log_w     # [50, 200]
    assert torch.allclose(log_w, log_px.expand_as(log_w), atol=1e-8)
    result = zoo.evaluate(model, exact_ladder(model), x, num_samples=20, iwae_k=5, psis=False)
    assert abs(result["elbo"] - log_px.mean().item()) < 1e-6


def elbo_minus_meanfield_in_se(model, guide, x, draws=200, particles=20):
    """(mean elbo loss - mean tracemeanfield loss) / its standard error, over ``draws`` estimates each, every one the
    mean of ``particles`` vectorized draws."""
    torch.manual_seed(1)
    losses = {}
    for name in ("elbo", "tracemeanfield"):
        objective = build_objective(name, particles=particles)
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)      # Pyro's mean-field order check (the control's)
            losses[name] = torch.tensor([objective.loss(model.model, guide, x) for _ in range(draws)],
                                        dtype=torch.float64)
    diff = losses["elbo"].mean() - losses["tracemeanfield"].mean()
    return (diff / math.sqrt(losses["elbo"].var() / draws + losses["tracemeanfield"].var() / draws)).item()


@pytest.mark.slow
def test_tracemeanfield_is_unbiased_for_the_top_down_guide():
    """Each analytic KL, KL(q(z1 | z2, x) || p(z1 | z2)) at the sampled z2, is an unbiased term of the ELBO in the
    top-down order, so tracemeanfield's loss and elbo's agree in expectation (within 4 standard errors over
    200 x 20 draws) for a guide that is not the posterior. Control: for the bottom-up structured guide q(z1 | x) q(z2 | z1, x),
    perturbed alike, the same comparison is off by more than 10 standard errors, and the rules refuse it."""
    model = linear_gaussian_hvae()
    x = data(n=20)
    guide = exact_ladder(model)
    with torch.no_grad():
        guide.heads["z1"].weight.mul_(0.7)
        guide.heads["z2"].bias.add_(0.4)
    assert abs(elbo_minus_meanfield_in_se(model, guide, x)) < 4
    bottom_up = build_guide("amortized", model, hidden=(3,), structured=True).double()
    set_exact_structured_guide(bottom_up)
    with torch.no_grad():
        bottom_up.heads["z1"].weight.mul_(0.7)
        bottom_up.heads["z2"][2].bias.add_(0.4)
    assert abs(elbo_minus_meanfield_in_se(model, bottom_up, x)) > 10
    from zoo.rules import check_combination
    with pytest.raises(ZooError, match="structured"):
        check_combination(model, "amortized", "tracemeanfield", guide_options={"structured": True})
    check_combination(model, "ladder", "tracemeanfield")


@pytest.mark.slow
def test_the_residual_merge_starts_at_the_prior_and_trains():
    """NVAE's q(z1 | z2, x) = N(mu_p + Delta_mu, sigma_p * (softplus(Delta_s) + 1e-3)) starts at p(z1 | z2)."""
    model = linear_gaussian_hvae()
    guide = build_guide("ladder", model, hidden=(4,), ladder_hidden=(4,), merge="residual").double()
    x = data(n=10)
    import pyro.poutine as poutine
    trace = poutine.trace(guide).get_trace(x)
    z2 = trace.nodes["z2"]["value"]
    prior = model.conditional_prior("z1", {"z2": z2})
    q = trace.nodes["z1"]["fn"]
    assert torch.allclose(q.base_dist.loc, prior.base_dist.loc) and torch.allclose(q.base_dist.scale,
                                                                                   prior.base_dist.scale, atol=1e-6)
    torch.manual_seed(0)
    before = zoo.evaluate(model, guide, x, num_samples=200, iwae_k=5, psis=False)["elbo"]
    zoo.fit(model, guide, build_objective("elbo", particles=4), x, epochs=100, batch_size=10, lr=1e-2, progress=False)
    after = zoo.evaluate(model, guide, x, num_samples=200, iwae_k=5, psis=False)["elbo"]
    assert after > before + 0.5 and after <= closed_form(x)[0].mean().item() + 0.05


def test_models_it_cannot_merge_are_refused_in_one_line():
    with pytest.raises(ZooError, match="supports real/sphere/hyperbolic latents only"):
        build_guide("ladder", build_model("sbn", 16))
    from zoo.core.contract import LatentSite, ZooModel

    class TwoLayers(ZooModel):                   # parents declared, no conditional_prior
        latents = (LatentSite("a", (2,), "real"), LatentSite("b", (2,), "real", parents=("a",)))

        def model(self, x=None, idx=None, N=None):
            pass
    with pytest.raises(ZooError, match="does not give it \\(conditional_prior\\); use amortized --structured"):
        build_guide("ladder", TwoLayers(4))
    vae = build_model("vae", 16, latent_dim=2, hidden=(8,))
    assert build_guide("ladder", vae).bottom_up[0].name == "z"      # one layer: an amortized encoder


def test_a_vampprior_on_top_is_the_mixture_of_the_ladder_s_top_posteriors():
    """p(z2) = (1/K) sum_k q(z2 | u_k), q(z2 | u) the ladder's top layer from the bottom-up pass over the
    pseudo-input u (its blocks and top head, written out here): the prior's log-density at random z2 is that
    log-mean-exp, and gradients of log p(x, z) reach the pseudo-inputs and the bottom-up blocks."""
    import torch.nn.functional as F
    torch.manual_seed(0)
    model = build_model("hvae", 16, layers=(4, 3), hidden=(8,), transition_hidden=(6,), prior="vampprior",
                        prior_components=5).double()
    guide = build_guide("ladder", model).double()
    u = model.prior.pseudo_inputs
    d1 = guide.blocks[0](u)
    d2 = guide.blocks[1](d1)
    loc, s = guide.heads["z2"](d2).chunk(2, dim=-1)
    components = torch.distributions.Normal(loc, F.softplus(s) + 1e-5)
    z2 = torch.randn(7, 3, dtype=torch.float64)
    by_hand = torch.logsumexp(components.log_prob(z2[:, None, :]).sum(-1), dim=1) - math.log(5)
    assert torch.allclose(model.prior().log_prob(z2), by_hand, atol=1e-10)
    x = (torch.rand(4, 16, dtype=torch.float64) < 0.5).double()
    per_datum_log_weights(model.model, guide, x, num_particles=2).log_w.sum().backward()
    assert model.prior.raw_pseudo_inputs.grad is not None and guide.blocks[1][0].weight.grad is not None


def test_compare_sets_the_top_down_and_hamiltonian_guides_beside_the_bottom_up_one_on_the_same_hvae(tmp_path, capsys):
    """Issue 52's "the new hierarchical and Hamiltonian guides on the same model", from the command a user types:
    one cell per guide, each a trained and scored run of the same hvae on the same data, in one table."""
    import json
    from zoo.cli import main
    out = tmp_path / "grid"
    guides = ["amortized", "ladder", "hamiltonian"]
    assert main(["compare", "hvae", "--guides", ",".join(guides), "--objectives", "elbo", "--dataset", "digits",
                 "--epochs", "1", "--hidden", "16", "--leapfrog-steps", "1", "--eval-samples", "10",
                 "--eval-limit", "50", "--out", str(out), "--no-progress"]) == 0, capsys.readouterr().err
    configs = {g: json.loads((out / f"{g}-elbo" / "results.json").read_text())["config"] for g in guides}
    assert {g: c["guide"] for g, c in configs.items()} == {g: g for g in guides}
    assert len({json.dumps(c["model_options"], sort_keys=True) for c in configs.values()}) == 1
    table = (out / "compare.md").read_text()
    assert all(f"{g}/elbo" in table for g in guides)
