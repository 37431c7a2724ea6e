"""Global latents (outside the data plate): the global guide, the objectives' scaling, the harness.

The reference model with closed forms: mu ~ N(0, tau^2 I) global, z_n ~ N(0, I) local,
x_n | mu, z_n ~ N(mu + z_n, sigma^2 I). Given mu, x_n ~ N(mu, (1 + sigma^2) I); over mu, each
coordinate d of the data vector x_{.d} is N(0, a I_N + tau^2 1 1^T), a = 1 + sigma^2, so
log p(X) = sum_d [-N/2 log 2 pi - 1/2 ((N-1) log a + log(a + N tau^2))
                  - 1/(2a) (|x_{.d}|^2 - tau^2 (sum_n x_nd)^2 / (a + N tau^2))].
"""
import math

import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import pytest
import torch
import torch.nn.functional as F

import zoo
from zoo.evaluation.harness import EvaluationSettings
from zoo.core.weights import per_datum_log_weights, vectorize

TAU, SIGMA, D = 2.0, 0.5, 3


def shift(x_dim):
    def model(x, idx=None, N=None):
        mu = pyro.sample("mu", dist.Normal(torch.zeros(x_dim), TAU).to_event(1))
        with pyro.plate("data", N, subsample=idx):
            z = pyro.sample("z", dist.Normal(torch.zeros(x_dim), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(mu + z, SIGMA).to_event(1), obs=x)
    return model


def log_evidence(x):
    N, a = x.shape[0], 1 + SIGMA ** 2
    quad = (x.pow(2).sum(0) - TAU ** 2 * x.sum(0).pow(2) / (a + N * TAU ** 2)) / a
    per_dim = -N / 2 * math.log(2 * math.pi) - 0.5 * ((N - 1) * math.log(a) + math.log(a + N * TAU ** 2)) - quad / 2
    return per_dim.sum().item()


def data(n=60, seed=0):
    g = torch.Generator().manual_seed(seed)
    mu = TAU * torch.randn(D, generator=g)
    return mu + math.sqrt(1 + SIGMA ** 2) * torch.randn(n, D, generator=g)


def test_from_pyro_reads_global_latents_with_their_shape_constraint_and_plates():
    def gmm_like(x_dim, K=3):
        def model(x, idx=None, N=None):
            weights = pyro.sample("weights", dist.Dirichlet(0.5 * torch.ones(K)))
            scale = pyro.sample("scale", dist.LogNormal(0.0, 2.0))
            with pyro.plate("components", K):
                locs = pyro.sample("locs", dist.Normal(torch.zeros(x_dim), 10.0).to_event(1))
            with pyro.plate("data", N, subsample=idx):
                s = pyro.sample("s", dist.Gamma(2.0 * torch.ones(x_dim), 1.0).to_event(1))
                pyro.sample("x", dist.Normal(locs[0] * weights[0] + s, scale).to_event(1), obs=x)
        return model
    model = zoo.from_pyro(gmm_like, 2)
    sites = {s.name: s for s in model.global_latents}
    assert [s.name for s in model.latents] == ["s"] and model.latents[0].constrained
    assert sites["weights"].event_shape == (3,) and sites["weights"].unconstrained_shape == (2,)
    assert sites["scale"].event_shape == () and sites["locs"].event_shape == (3, 2)
    assert sites["locs"].plates == (("components", 3, -1),) and sites["locs"].event_dim == 1
    assert not model.is_enumerable


def test_the_particle_plate_shares_theta_and_leaves_a_global_unbroadcast():
    """K particles of the local sites, one theta: a model indexing a global by a local sees the global as written."""
    def indexed(x_dim):
        def model(x, idx=None, N=None):
            with pyro.plate("components", 2):
                locs = pyro.sample("locs", dist.Normal(torch.zeros(x_dim), 3.0).to_event(1))
            with pyro.plate("data", N, subsample=idx):
                c = pyro.sample("c", dist.Bernoulli(0.5 * torch.ones(1)).to_event(1))
                pyro.sample("x", dist.Normal(locs[c.squeeze(-1).long()], 1.0).to_event(1), obs=x)
        return model
    model = zoo.from_pyro(indexed, D)
    guide = zoo.build_guide("amortized", model)
    x = data(10)
    lw = per_datum_log_weights(model.model, guide, x, num_particles=4)
    assert lw.log_w.shape == (4, 10) and lw.global_values["locs"].shape == (2, D)
    for objective in ("elbo", "vimco", "tracegraph"):            # elbo --particles 2 among them
        zoo.fit(model, guide, zoo.build_objective(objective, 2), x, epochs=1, batch_size=5, lr=1e-2, progress=False)


@pytest.mark.parametrize("global_guide", ["normal", "delta"])
def test_iwae_loss_is_n_over_b_times_the_per_datum_bounds_plus_the_global_term_once(global_guide):
    """loss = -(N/B) sum_b log (1/K) sum_k w_kb(theta) - [log p(theta) - log q(theta)], by hand at the same samples."""
    model = zoo.from_pyro(shift, D)
    guide = zoo.build_guide("amortized", model, global_guide=global_guide)
    x, N, K = data(8), 40, 5
    idx = torch.tensor([3, 9, 17, 21, 30, 33, 38, 39])
    pyro.set_rng_seed(1)
    trace = poutine.trace(vectorize(guide, K)).get_trace(x, idx=idx, N=N)
    pyro.set_rng_seed(1)
    loss = zoo.build_objective("iwae", K).loss(model.model, guide, x, idx=idx, N=N)
    mu, z = trace.nodes["mu"]["value"], trace.nodes["z"]["value"]
    assert mu.shape == (D,) and z.shape == (K, 8, D)          # theta shared by the K particles
    log_q_z = trace.nodes["z"]["fn"].log_prob(z)
    log_w = (dist.Normal(mu + z, SIGMA).log_prob(x).sum(-1) + dist.Normal(0.0, 1.0).log_prob(z).sum(-1) - log_q_z)
    log_q_mu = trace.nodes["mu"]["fn"].log_prob(mu).sum()
    global_term = dist.Normal(0.0, TAU).log_prob(mu).sum() - log_q_mu
    expected = -(N / 8) * (torch.logsumexp(log_w, 0) - math.log(K)).sum() - global_term
    assert loss == pytest.approx(expected.item(), rel=1e-5)


@pytest.mark.parametrize("objective", ["elbo", "tracemeanfield", "iwae", "vimco"])
def test_the_global_kl_gradient_does_not_depend_on_the_batch_size(objective):
    """A global theta that the data do not see: the loss's gradient in q(theta)'s location is that of
    KL(q(theta) || p(theta)) alone, d/dm = m / tau^2 per coordinate, for B = 2 and B = 10 alike (it would be
    N/B times that if the global term were scaled like the local ones)."""
    def unseen(x_dim):
        def model(x, idx=None, N=None):
            pyro.sample("theta", dist.Normal(torch.zeros(2), TAU).to_event(1))
            with pyro.plate("data", N, subsample=idx):
                z = pyro.sample("z", dist.Normal(torch.zeros(x_dim), 1.0).to_event(1))
                pyro.sample("x", dist.Normal(z, 1.0).to_event(1), obs=x)
        return model
    model = zoo.from_pyro(unseen, D)
    guide = zoo.build_guide("amortized", model, global_guide="delta")     # a point mass: the gradient is exact
    with torch.no_grad():
        guide.globals.loc["theta"].copy_(torch.tensor([1.0, -2.0]))
    x = data(20)
    grads = []
    for B in (2, 10):
        guide.zero_grad()
        zoo.build_objective(objective, 2).loss_and_grads(model.model, guide, x[:B], idx=torch.arange(B), N=20)
        grads.append(guide.globals.loc["theta"].grad.clone())
    # the delta's objective term is log p(theta) alone: d/dm [-log N(m; 0, tau^2)] = m / tau^2
    for g in grads:
        assert torch.allclose(g, torch.tensor([1.0, -2.0]) / TAU ** 2, atol=1e-5)


@pytest.mark.parametrize("guide_name", ["meanfield", "amortized"])
def test_harness_reports_log_p_x_given_the_point_estimate_and_a_data_set_elbo_below_the_evidence(guide_name):
    """log_likelihood is IS of log p(x_n | mu_hat) = log N(x_n; mu_hat, (1 + sigma^2) I), within 0.03 nats of the
    closed form at the guide's own mu_hat; data_elbo <= log p(X) / N, and (amortized) within 0.5 nats of it."""
    x = data(60)
    model = zoo.from_pyro(shift, D)
    pyro.set_rng_seed(0)
    guide = zoo.build_guide(guide_name, model, num_data=60)
    zoo.fit(model, guide, zoo.build_objective("elbo"), x, epochs=300, batch_size=60,
            lr=3e-3 if guide_name == "meanfield" else 3e-2, progress=False)          # meanfield: x10 (lr_multiplier)
    pyro.set_rng_seed(0)
    r = zoo.evaluate(model, guide, x, num_samples=500, settings=EvaluationSettings(global_samples=20))
    mu_hat = guide.globals.point_estimate()["mu"]
    exact = dist.Normal(mu_hat, math.sqrt(1 + SIGMA ** 2)).log_prob(x).sum(-1).mean().item()
    assert r["log_likelihood"] == pytest.approx(exact, abs=0.03)
    assert r["global_latents"] == ["mu"] and r["global_guide"] == "normal" and "median" in r["global_point_estimate"]
    evidence = log_evidence(x) / 60
    assert r["data_elbo"] <= evidence
    if guide_name == "amortized":                     # trained to near the mean-field optimum in 300 steps
        assert r["data_elbo"] > evidence - 0.5
    assert set(zoo.evaluation.harness.RESULT_KEYS) >= {"global_latents", "global_guide", "global_point_estimate",
                                                       "data_elbo", "data_elbo_samples"}


def mean_only(x_dim):
    """x_n ~ N(mu, I), mu ~ N(0, tau^2 I): the only latent is global."""
    def model(x, idx=None, N=None):
        mu = pyro.sample("mu", dist.Normal(torch.zeros(x_dim), TAU).to_event(1))
        with pyro.plate("data", N, subsample=idx):
            pyro.sample("x", dist.Normal(mu, 1.0).to_event(1), obs=x)
    return model


def test_a_model_with_only_global_latents_trains_and_is_scored():
    """Bayesian inference of a mean alone: x_n ~ N(mu, 1), mu ~ N(0, tau^2); given mu_hat the IS estimate is exact."""
    model = zoo.from_pyro(mean_only, D)
    assert model.latents == () and [s.name for s in model.global_latents] == ["mu"]
    x = data(30)
    pyro.set_rng_seed(0)
    guide = zoo.build_guide("meanfield", model, num_data=30)       # q(theta) steps at lr, not lr x 10
    zoo.fit(model, guide, zoo.build_objective("iwae"), x, epochs=200, batch_size=10, lr=3e-2, progress=False)
    r = zoo.evaluate(model, guide, x, num_samples=4)
    mu_hat = guide.globals.point_estimate()["mu"]
    assert r["log_likelihood"] == pytest.approx(dist.Normal(mu_hat, 1.0).log_prob(x).sum(-1).mean().item(), abs=1e-4)
    # the posterior mean of mu is sum_n x_n / (N + 1 / tau^2)
    assert torch.allclose(mu_hat, x.sum(0) / (30 + 1 / TAU ** 2), atol=0.1)


def test_bad_combinations_are_refused_in_one_line():
    model = zoo.from_pyro(shift, D)
    with pytest.raises(zoo.ZooError, match="'exact' guide has no global part"):
        zoo.build_guide("exact", model)
    plain = zoo.from_pyro(lambda x_dim: (lambda x, idx=None, N=None: _local(x, idx, N, x_dim)), D, name="plain")
    with pytest.raises(zoo.ZooError, match="--global-guide applies to models with global latents"):
        zoo.build_guide("amortized", plain, global_guide="delta")


def _local(x, idx, N, x_dim):
    with pyro.plate("data", N, subsample=idx):
        z = pyro.sample("z", dist.Normal(torch.zeros(x_dim), 1.0).to_event(1))
        pyro.sample("x", dist.Normal(z, 1.0).to_event(1), obs=x)


def test_a_per_datum_refit_fits_the_local_posterior_given_theta_hat_and_keeps_q_theta():
    """The refit (test-time inference of a meanfield guide) is of q(z_n) given mu = mu_hat: the posterior
    p(z_n | x_n, mu_hat) = N((x_n - mu_hat) / (1 + sigma^2), sigma^2 / (1 + sigma^2) I), so each datum's refitted
    loc lands on (x_n - mu_hat) / (1 + sigma^2); q(mu) was fitted to the training data and stays as it was."""
    from zoo.training.refit import RefitSchedule, refit_local_guide
    x = data(20, seed=3)
    model = zoo.from_pyro(shift, D)
    guide = zoo.build_guide("meanfield", model, num_data=20)
    with torch.no_grad():
        guide.globals.loc["mu"].copy_(torch.tensor([1.0, -2.0, 0.5]))
    before = {k: v.clone() for k, v in guide.globals.state_dict().items()}
    result = refit_local_guide(model, guide, x, RefitSchedule(max_epochs=1500), seed=0)
    assert result.converged
    assert all(torch.equal(before[k], v) for k, v in guide.globals.state_dict().items())
    mu_hat = guide.globals.point_estimate()["mu"]
    assert torch.allclose(guide.z_loc.detach(), (x - mu_hat) / (1 + SIGMA ** 2), atol=0.05)


def test_gradients_of_a_global_model_share_theta_across_the_particles_as_training_does():
    """A Bayesian output layer W (global) used as F.linear(h(z), W), as a user writes it: Pyro's vectorized particles
    would give W a particle dimension the model never wrote for (F.linear refuses a 4-d weight; with h(z) @ W
    it is a [K, K, B, D] likelihood, an allocation of 25 GB at the reference's K = 1000). The gradient diagnostic runs the objectives as training does; its elbo estimates
    agree in direction with the guide's reference (the per-datum ELBO over 1000 particles sharing theta)."""
    from zoo.evaluation.gradients import diagnose

    def bayesian_output(x_dim, hidden=3):
        body = torch.nn.Linear(2, hidden)

        def model(x, idx=None, N=None):
            pyro.module("body", body)
            W = pyro.sample("W", dist.Normal(torch.zeros(x_dim, hidden), 1.0).to_event(2))
            with pyro.plate("data", N, subsample=idx):
                z = pyro.sample("z", dist.Normal(torch.zeros(2), 1.0).to_event(1))
                pyro.sample("x", dist.Normal(F.linear(torch.tanh(body(z)), W), 1.0).to_event(1), obs=x)
        return model
    model = zoo.from_pyro(bayesian_output, D)
    pyro.set_rng_seed(0)
    guide = zoo.build_guide("amortized", model)
    result = diagnose(model, guide, data(8), ["elbo"], [50], repeats=10)
    rows = {r["group"]: r for r in result["rows"]}
    assert rows["guide"]["cosine"] > 0.95          # the model's reference is an IWAE-1000 gradient, not the ELBO's


def test_the_closed_form_kl_note_names_the_global_guide_for_a_global_site(tmp_path, capsys):
    """tracemeanfield on a model with a positive global scale: the global guide's q(scale) is a transformed Normal
    with no closed-form KL from the LogNormal prior, so the note says so of the global guide, not of the local
    family (which has a closed form for z here)."""
    from zoo.cli import main
    (tmp_path / "m.py").write_text(
        "import pyro, pyro.distributions as dist, torch\n\n\ndef scaled(x_dim):\n"
        "    def model(x, idx=None, N=None):\n"
        "        scale = pyro.sample('scale', dist.LogNormal(0.0, 1.0))\n"
        "        with pyro.plate('data', N, subsample=idx):\n"
        "            z = pyro.sample('z', dist.Normal(torch.zeros(x_dim), 1.0).to_event(1))\n"
        "            pyro.sample('x', dist.Bernoulli(logits=scale * z).to_event(1), obs=x)\n"
        "    return model\n")
    code = main(["train", f"{tmp_path / 'm.py'}:scaled", "--guide", "amortized", "--objective", "tracemeanfield",
                 "--dataset", "digits", "--epochs", "1", "--eval-samples", "4", "--iwae-k", "2", "--eval-limit", "10",
                 "--no-progress", "--out", str(tmp_path / "run")])
    out = capsys.readouterr().out
    assert code == 0
    assert "the normal global guide has no closed-form KL for scale (a transformed Normal)" in out
    assert "amortized has no closed-form KL" not in out


def test_a_model_with_only_global_latents_is_scored_without_warnings():
    """No local latent, so no active unit and nothing for var() over units: the harness warns nothing
    (torch's 'var(): degrees of freedom is <= 0' came from the variance of zero columns)."""
    import warnings

    model = zoo.from_pyro(mean_only, D)
    guide = zoo.build_guide("amortized", model)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        r = zoo.evaluate(model, guide, data(10), num_samples=4)
    assert r["active_units"] == 0 and r["num_latent_units"] == 0


@pytest.mark.parametrize("flag", ["jit", "compile"])
def test_a_captured_objective_draws_a_global_models_particles_one_after_another_as_the_eager_one_does(flag):
    """--jit and --compile wrap the objective: the sequential-particles copy a model with global latents needs is made
    of the objective inside the wrapper, in a fresh wrapper, and the caller's objective is left as it was (before, the
    wrapped Trace_ELBO vectorized its particles and the GMM failed its first step with a shape error)."""
    from zoo.objectives.base import for_model
    from zoo.objectives.capture import CapturedObjective
    model = zoo.from_pyro(shift, D)
    objective = zoo.build_objective("elbo", 3, **{flag: True})
    assert isinstance(objective, CapturedObjective) and objective.objective.vectorize_particles
    used = for_model(objective, model)
    assert isinstance(used, type(objective)) and used is not objective
    assert used.objective.vectorize_particles is False and used.objective.num_particles == 3
    assert objective.objective.vectorize_particles                     # the caller's objective is untouched
    local = zoo.build_model("vae", D, latent_dim=2, hidden=(4,))
    assert for_model(objective, local) is objective                   # no global latents: nothing to change


@pytest.mark.slow
def test_the_pyro_gmm_trains_with_particles_under_compile_as_it_does_eagerly(tmp_path):
    """The command a user types: Pyro's GMM tutorial with three particles of Trace_ELBO, eagerly and with --compile,
    gives the same bound (the same draws, one after another)."""
    import json
    from pathlib import Path
    from zoo.cli import main
    gmm = Path(__file__).resolve().parent.parent / "benchmarks" / "pyro_models" / "gmm.py"
    bounds = {}
    for flags in ([], ["--compile"]):
        out = tmp_path / ("compiled" if flags else "eager")
        assert main(["train", f"{gmm}:gmm", "--guide", "amortized", "--global-guide", "delta", "--dataset",
                     "digits-gray", "--objective", "elbo", "--particles", "3", "--epochs", "1", "--eval-samples", "20",
                     "--out", str(out), "--no-progress", *flags]) == 0
        bounds[bool(flags)] = json.loads((out / "results.json").read_text())["elbo"]
    assert bounds[True] == pytest.approx(bounds[False], rel=1e-4)
