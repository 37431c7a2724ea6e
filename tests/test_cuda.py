"""CUDA: parameters, data and sampling all live on the GPU (skipped where there is none)."""
import json

import pytest
import torch

import zoo
from zoo.experiments.config import RunConfig
from zoo.experiments.run import train_run

pytestmark = pytest.mark.cuda


@pytest.mark.parametrize("guide_name,objective", [("amortized", "elbo"), ("iaf", "iwae"), ("meanfield", "tracemeanfield")])
def test_training_and_evaluation_stay_on_the_gpu(guide_name, objective, digits):
    device = torch.device("cuda")
    x = digits.train[:200].to(device)
    model = zoo.build_model("vae", x.shape[1], latent_dim=4, hidden=(32,)).to(device)
    guide = zoo.build_guide(guide_name, model, num_data=x.shape[0]).to(device)
    history = zoo.fit(model, guide, zoo.build_objective(objective, 3), x, epochs=2, batch_size=50, lr=1e-3,
                      progress=False)
    assert all(p.is_cuda for p in list(model.parameters()) + list(guide.parameters()))
    assert model.sample(8).is_cuda
    assert torch.isfinite(torch.tensor(history[-1]["loss"]))
    r = zoo.evaluate(model, guide, x[:50], num_samples=20, iwae_k=5)
    assert r["per_datum"]["log_likelihood"].shape == (50,) and torch.isfinite(torch.tensor(r["log_likelihood"]))


def test_ppca_closed_forms_on_the_gpu(synthetic):
    m = zoo.build_model("ppca", synthetic.x_dim).cuda()
    m.set_ml_solution(synthetic.train.cuda())
    r = zoo.evaluate(m, zoo.build_guide("exact", m), synthetic.test.cuda(), num_samples=20, iwae_k=5)
    assert abs(r["elbo"] - r["exact_log_likelihood"]) < 1e-3


def test_cli_run_on_cuda(tmp_path):
    cfg = RunConfig.make(model="vae", guide="amortized", objective="iwae", dataset="digits", latent_dim=2,
                    hidden=[32], epochs=1, eval_samples=20, device="cuda")
    summary = train_run(cfg, tmp_path / "run", progress=False)
    assert summary["device"].startswith("cuda")
    assert json.loads((tmp_path / "run" / "results.json").read_text())["device"].startswith("cuda")


def test_jit_step_on_the_gpu_matches_the_eager_step(digits):
    """--jit on CUDA: the trace forks the GPU's random stream too, so the replayed steps draw what the
    eager steps draw, and report the same bound."""
    device = torch.device("cuda")
    x = digits.train[:100].to(device)
    model = zoo.build_model("vae", x.shape[1], latent_dim=4, hidden=(32,)).to(device)
    guide = zoo.build_guide("amortized", model).to(device)
    values = {}
    for jit in (False, True):
        objective = zoo.build_objective("iwae", 3, jit=jit)
        torch.manual_seed(7)
        values[jit] = [objective.loss_and_grads(model, guide, x) for _ in range(3)]
    assert values[True] == pytest.approx(values[False], rel=1e-4)


@pytest.mark.parametrize("mode", [None, "default"])
def test_compiled_step_on_the_gpu_matches_the_eager_step(digits, mode):
    """--compile on CUDA (mode None: reduce-overhead, a CUDA graph per step): the compiled step draws from the
    GPU's generator in the eager order, so it reports the eager bound and gradients, step after step."""
    device = torch.device("cuda")
    x = digits.train[:100].to(device)
    model = zoo.build_model("vae", x.shape[1], latent_dim=4, hidden=(32,)).to(device)
    guide = zoo.build_guide("amortized", model).to(device)
    params = list(model.parameters()) + list(guide.parameters())
    values, grads = {}, {}
    for compile in (False, True):
        objective = zoo.build_objective("iwae", 3, compile=compile)
        if compile:
            objective.mode = mode
        torch.manual_seed(7)
        values[compile], grads[compile] = [], []
        for _ in range(3):
            for p in params:
                p.grad = None
            values[compile].append(objective.loss_and_grads(model, guide, x))
            grads[compile].append([p.grad.clone() for p in params])
    assert values[True] == pytest.approx(values[False], rel=1e-4)
    for eager, compiled in zip(grads[False], grads[True]):
        for a, b in zip(eager, compiled):
            assert (a - b).abs().max() <= 1e-3 * a.abs().max() + 1e-5


@pytest.mark.parametrize("precondition", ["transport", "diagonal"])
def test_ais_on_the_gpu_reaches_the_exact_marginal_of_a_ridge_posterior(precondition):
    """AIS's chains, the pilot's step sizes and the guide's transport map all on the GPU, on zoo.exact_models' ridge (a
    posterior 0.05 wide along a 0.7-long ridge, a structured guide): within 3 SE of the closed form."""
    import pyro
    from zoo import exact_models as E
    from zoo.evaluation.ais import AnnealedImportanceSampling
    x = E.ridge_data(50)
    model = zoo.from_pyro(E.ridge, 1).cuda()
    pyro.set_rng_seed(0)
    result = AnnealedImportanceSampling(num_temperatures=30, num_chains=16, leapfrog_steps=5,
                                        precondition=precondition).estimate(model, E.ridge_guide, x.cuda())
    exact = E.ridge_log_marginal(x)
    error = (result.log_likelihood - exact).mean().item()
    se = (result.log_likelihood_se.pow(2).sum().sqrt() / x.shape[0]).item()
    assert abs(error) < 3 * se + 0.01, f"AIS ({precondition}) on the GPU is off by {error:.4f} nats ({se:.4f} SE)"
    assert result.step_size_per_temperature[-1] > (0.5 if precondition == "transport" else 0.0)


def test_the_refits_monitor_on_the_gpu_draws_the_same_numbers_and_leaves_both_streams_alone():
    """The monitor restores the CPU and the data's CUDA generator states it keeps (common random numbers), inside
    ``fork_rng``: the same value twice, and the caller's CPU and CUDA streams go on as if it had not run."""
    from zoo.models import PPCA
    from zoo.registry import build_guide
    from zoo.training.refit import _Monitor
    model = PPCA(x_dim=6, latent_dim=2).cuda()
    x = torch.randn(20, 6, device="cuda")
    guide = build_guide("meanfield", model, num_data=20).cuda()
    monitor = _Monitor(model, guide, x, [torch.arange(20, device="cuda")], particles=4)
    torch.manual_seed(3)
    expected = torch.rand(2), torch.rand(2, device="cuda")
    torch.manual_seed(3)
    first = monitor()
    assert torch.equal(torch.rand(2), expected[0]) and torch.equal(torch.rand(2, device="cuda"), expected[1])
    second = monitor()                                        # after the caller drew on both: the same numbers
    assert first.device.type == "cuda" and torch.equal(first, second)


def test_the_fused_finite_check_and_the_kept_prior_on_the_gpu():
    """The NaN guard's fused check runs on CUDA parameters that require grad (no ``no_grad`` block), on a mix of
    devices too, and leaves values and version counters alone; the N(0, I) prior kept on the CPU is made again on
    the GPU after ``.cuda()``, and a step there has finite gradients."""
    from zoo.registry import build_guide, build_model, build_objective
    from zoo.training.guards import any_non_finite
    params = [torch.nn.Parameter(torch.randn(3, device="cuda")), torch.nn.Parameter(torch.randn(2, device="cuda"))]
    versions = [p._version for p in params]
    assert not any_non_finite(params) and [p._version for p in params] == versions
    assert not any_non_finite(params + [torch.zeros(2)])                  # two devices, each checked
    bad = torch.tensor([1.0, float("nan")], device="cuda")
    assert any_non_finite([torch.zeros(2), bad]) and any_non_finite(params + [bad])
    model = build_model("vae", 8, latent_dim=2, hidden=(4,))
    on_cpu = model.prior()
    model.cuda()
    prior = model.prior()
    assert prior is not on_cpu and prior.base_dist.loc.device.type == "cuda" and model.prior() is prior
    guide = build_guide("amortized", model).cuda()
    x = (torch.rand(5, 8, device="cuda") < 0.5).float()
    loss = build_objective("elbo").loss_and_grads(guide.training_model(model), guide, x, idx=torch.arange(5, device="cuda"), N=5)
    grads = [p.grad for p in list(model.parameters()) + list(guide.parameters()) if p.grad is not None]
    assert grads and torch.isfinite(torch.tensor(loss)) and not any_non_finite(grads)


def test_the_bernoulli_kernel_and_its_gradient_on_the_gpu(monkeypatch):
    """The compiled Bernoulli score and its compiled gradient (Triton on CUDA), without and with autograd, against
    torch's own path on the GPU, on logits far below zero (where the CPU's guards matter) and above."""
    from zoo.core import distributions, kernels
    from zoo.core.distributions import IndependentBernoulli
    monkeypatch.setattr(distributions, "FUSED_MIN_ELEMENTS", 100)
    monkeypatch.setattr(distributions, "FUSED_GRAD_MIN_ELEMENTS", 100)
    torch.manual_seed(5)
    logits = torch.cat([-100 * torch.rand(8, 5, 50), 30 * torch.randn(8, 5, 14)], -1).cuda()
    x = torch.bernoulli(torch.full((5, 64), 0.3)).cuda()
    reference = -torch.nn.functional.binary_cross_entropy_with_logits(
        logits.double(), x.double().expand(8, 5, 64), reduction="none").sum(-1)
    with torch.no_grad():
        fast = IndependentBernoulli(logits).log_prob(x)
    assert fast.is_cuda and torch.allclose(fast.double(), reference, rtol=1e-5, atol=1e-3)
    leaf = logits.clone().requires_grad_()
    scored = IndependentBernoulli(leaf).log_prob(x)
    assert type(scored.grad_fn).__name__ == "_BernoulliScoreBackward"
    scored.sum().backward()
    assert torch.allclose(leaf.grad, x - torch.sigmoid(logits), atol=1e-6)
    assert kernels._BUILT[("bernoulli", "cuda")] is not None
    assert kernels._BUILT[("bernoulli_gradient", "cuda")] is not None      # the gradient too was Triton's, not eager
