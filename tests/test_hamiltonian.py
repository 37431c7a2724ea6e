"""The hamiltonian guide (guides/hamiltonian.py), checked against exact answers: pPCA's closed-form log p(x), the
Jacobian of its tempered leapfrog map by autograd, and finite differences of its augmented bound."""
import math

import pyro
import pyro.poutine as poutine
import pytest
import torch

from guides.base import site_distribution
from zoo.core.errors import ZooError
from zoo.core.weights import per_datum_log_weights
from zoo.registry import build_guide, build_model
from zoo.rules import check_annealing, check_combination, check_compress, check_gaps


def ppca(latent_dim=1, x_dim=4, seed=0):
    torch.manual_seed(seed)
    return build_model("ppca", x_dim, latent_dim=latent_dim).double()


def test_with_no_leapfrog_step_the_site_s_density_is_the_normal_q0():
    """K = 0: z = z_0 and the augmented term L is log q_0(z_0) exactly (no momentum term survives)."""
    model = ppca(2)
    guide = build_guide("hamiltonian", model, hidden=(6,), leapfrog_steps=0).double()
    x = torch.randn(5, 4, dtype=torch.float64)
    site = poutine.trace(guide).get_trace(x).nodes["z"]
    q0 = site_distribution(guide.sites[0], guide.encode(x)[1]["z"])
    assert torch.allclose(site["fn"].log_prob(site["value"]), q0.log_prob(site["value"]), atol=1e-10)
    with pytest.raises(ZooError, match="no density q\\(z \\| x\\) at a value it did not draw"):
        site["fn"].log_prob(site["value"] + 1.0)


def test_the_tempered_leapfrog_map_has_the_jacobian_the_bound_assumes():
    """log |det d(z_K, rho_K) / d(z_0, rho_0)| = (d/2) log beta_0 (leapfrog preserves volume; tempering scales rho
    by sqrt(beta_0) in all), computed by autograd for d = 2, K = 3."""
    model = ppca(2)
    guide = build_guide("hamiltonian", model, hidden=(6,), leapfrog_steps=3, step_size=0.3).double()
    with torch.no_grad():
        guide.raw_beta_0.fill_(-1.0)
    x = torch.randn(1, 4, dtype=torch.float64)

    def flow(state):
        z, rho = guide.move(state[:2].reshape(1, 2), state[2:].reshape(1, 2), x, None, None)
        return torch.cat([z.reshape(-1), rho.reshape(-1)])
    jacobian = torch.autograd.functional.jacobian(flow, torch.tensor([0.3, -0.2, 0.5, 1.1], dtype=torch.float64))
    beta_0 = torch.sigmoid(torch.tensor(-1.0, dtype=torch.float64))
    assert abs(torch.linalg.slogdet(jacobian)[1].item() - math.log(beta_0.item())) < 1e-8     # (2/2) log beta_0


@pytest.mark.parametrize("tempering", [False, True])
def test_its_importance_weight_is_unbiased_for_p_x(tempering):
    """w = p(x, z_K) / exp(L) has E[w] = p(x) (pPCA's closed form): over 40,000 draws per datum the mean of
    w / p(x) is 1 within 4 standard errors, for K = 3 leapfrog steps."""
    model = ppca(1)
    guide = build_guide("hamiltonian", model, hidden=(6,), leapfrog_steps=3, step_size=0.2,
                        tempering=tempering).double()
    x = torch.randn(3, 4, dtype=torch.float64)
    torch.manual_seed(1)
    with torch.no_grad():
        log_w = torch.cat([per_datum_log_weights(model.model, guide, x, num_particles=4000).log_w
                           for _ in range(10)])                                         # [40000, 3]
    ratio = torch.exp(log_w - model.log_marginal(x))
    mean, se = ratio.mean(0), ratio.std(0) / math.sqrt(ratio.shape[0])
    assert ((mean - 1).abs() < 4 * se).all(), (mean, se)
    assert (log_w.mean(0) < model.log_marginal(x)).all()                         # the augmented ELBO is a bound


def test_the_bound_s_gradient_through_the_dynamics_matches_finite_differences():
    """d ELBO_aug / d(step size, beta_0) by autograd through K = 2 leapfrog steps (second derivatives of log p) equals
    central differences of the same draws (common random numbers), to 1e-5."""
    model = ppca(2)
    guide = build_guide("hamiltonian", model, hidden=(6,), leapfrog_steps=2, step_size=0.1).double()
    x = torch.randn(4, 4, dtype=torch.float64)

    def bound():
        pyro.set_rng_seed(3)
        return per_datum_log_weights(model.model, guide, x, num_particles=8).log_w.mean()
    for p in (guide.raw_step, guide.raw_beta_0):
        grad = torch.autograd.grad(bound(), p)[0]
        h = 1e-5
        for i in range(p.numel()):
            with torch.no_grad():
                p.view(-1)[i] += h
                up = bound().item()
                p.view(-1)[i] -= 2 * h
                down = bound().item()
                p.view(-1)[i] += h
            assert abs(grad.view(-1)[i].item() - (up - down) / (2 * h)) < 1e-5


@pytest.mark.parametrize("objective", ["tracemeanfield", "reinforce", "rloo", "stl", "dreg", "vimco", "rws", "tvo"])
def test_what_needs_the_guide_s_density_is_refused_in_one_line(objective):
    model = build_model("vae", 16, latent_dim=2, hidden=(8,))
    with pytest.raises(ZooError) as err:
        check_combination(model, "hamiltonian", objective)
    assert len(str(err.value).splitlines()) == 1
    check_combination(model, "hamiltonian", "elbo")
    check_combination(model, "hamiltonian", "iwae")


def test_compression_and_the_gaps_refuse_it_and_annealing_starts_at_its_q0():
    model = build_model("vae", 64, latent_dim=2, hidden=(8,))
    guide = build_guide("hamiltonian", model, hidden=(8,), leapfrog_steps=1)
    check_annealing(model, "AIS", guide, "guide")          # from q_0 (the next test)
    check_annealing(model, "AIS", guide, "prior")

    class NoStart:                                         # a guide without a density that declares no start
        has_density, family = False, "opaque"
    with pytest.raises(ZooError, match="has no marginal density.*--ais-path prior"):
        check_annealing(model, "AIS", NoStart(), "guide")
    with pytest.raises(ZooError, match="has no marginal density") as err:
        check_compress(model, guide)
    # AIS's way round it (--ais-path prior) is no way for compress, which has no such flag
    assert "--ais-path" not in str(err.value) and "compress a run whose guide has one" in str(err.value)
    with pytest.raises(ZooError, match="refit a per-datum counterpart"):
        check_gaps(guide)


def test_ais_from_the_guide_starts_at_q0_and_reaches_the_ppca_closed_form(synthetic):
    """The guide's path anneals from the hamiltonian guide's q_0, the amortized Normal before its leapfrog steps:
    the same distribution its draws start from, with a density, so AIS is valid and reaches log p(x)."""
    from zoo.evaluation.ais import AnnealedImportanceSampling
    model = build_model("ppca", synthetic.x_dim)
    model.set_ml_solution(synthetic.train)
    guide = build_guide("hamiltonian", model, hidden=(8,), leapfrog_steps=2)
    x = synthetic.test[:20]
    start = poutine.trace(guide.initial_guide()).get_trace(x).nodes["z"]["fn"]
    q0 = poutine.trace(guide).get_trace(x).nodes["z"]["fn"].q0[0]      # what the guide's own draw starts from
    assert torch.equal(start.mean, q0.mean) and torch.equal(start.stddev, q0.stddev)
    pyro.set_rng_seed(5)
    result = AnnealedImportanceSampling(num_temperatures=200, num_chains=16, leapfrog_steps=5).estimate(model, guide, x)
    assert "q_0" in result.settings["start"] and result.settings["path"] == "guide"
    exact = model.log_marginal(x).double()
    error = (result.log_likelihood - exact).mean().item()
    se = (result.log_likelihood_se.pow(2).sum().sqrt() / x.shape[0]).item()
    assert abs(error) < 3 * se + 0.02 and abs(error) < 0.1, f"AIS from q_0 is off by {error:.4f} nats ({se:.4f} SE)"


@pytest.mark.slow
def test_the_harness_scores_it_with_its_sites_kept_as_drawn(tmp_path, capsys):
    """pyro-zoo train runs end to end and states what its figures are: the defensive proposal keeps the guide's
    site as drawn (widening none), and results.json says the ELBO and IWAE-k are augmented bounds."""
    from zoo.cli import main
    out = tmp_path / "run"
    assert main(["train", "vae", "--guide", "hamiltonian", "--leapfrog-steps", "2", "--latent-dim", "2", "--hidden",
                 "16", "--dataset", "digits", "--epochs", "1", "--eval-samples", "20", "--out", str(out),
                 "--no-progress"]) == 0, capsys.readouterr().err
    import json
    result = json.loads((out / "results.json").read_text())
    assert result["config"]["guide"] == "hamiltonian" and result["proposal"]["sites_kept"] == ["z"]
    assert "augmented bounds" in result["guide_density_note"]
    assert result["iwae_bound"] >= result["elbo"] and math.isfinite(result["log_likelihood"])


@pytest.mark.parametrize("path", ["guide", "prior"])
def test_pyro_zoo_eval_ais_runs_on_a_hamiltonian_run(tmp_path, capsys, path):
    """`pyro-zoo eval RUN --estimator ais` on a run trained with the hamiltonian guide: the guide's path was refused
    (no density) and the prior's crashed in the guide's forward; both run now, and ais.json says where AIS started."""
    import json
    from zoo.cli import main
    out = tmp_path / "run"
    assert main(["train", "vae", "--guide", "hamiltonian", "--leapfrog-steps", "1", "--latent-dim", "2", "--hidden",
                 "8", "--dataset", "digits", "--epochs", "1", "--eval-samples", "10", "--eval-limit", "20", "--out",
                 str(out), "--no-progress"]) == 0, capsys.readouterr().err
    assert main(["eval", str(out), "--estimator", "ais", "--ais-path", path, "--temperatures", "3", "--chains", "2",
                 "--eval-limit", "5", "--no-progress"]) == 0, capsys.readouterr().err
    ais = json.loads((out / "ais.json").read_text())
    assert math.isfinite(ais["log_likelihood"])
    assert ("q_0" in ais["start"]) if path == "guide" else ais["start"] == "the prior p(z)"
