"""Discrete latents against exact enumeration: log p(x), the enum ELBO, estimator gradients, relaxations."""
import itertools
import math

import pyro
import pytest
import torch
from torch.distributions import Bernoulli, OneHotCategorical

from guides import Amortized, Relaxed
from guides.relaxed import Annealing
from zoo.evaluation.harness import evaluate
from zoo.models import SBN, CategoricalVAE
from zoo.objectives import EnumELBO, ReweightedWakeSleep, build_objective
from zoo.registry import build_guide


def binary_data(n=4, d=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, d, generator=g) < 0.4).float()


def small_sbn(seed=0, layers=(3,)):
    torch.manual_seed(seed)
    m = SBN(x_dim=6, layers=layers)
    with torch.no_grad():
        for p in m.parameters():
            p.normal_(0, 1.0)
    return m


def brute_force_log_marginal_sbn1(m, x):
    zs = torch.tensor(list(itertools.product((0.0, 1.0), repeat=m.layers[0])))
    lp = Bernoulli(logits=m.prior_logits).log_prob(zs).sum(-1)[:, None] \
        + Bernoulli(logits=m.decoder(zs)[:, None, :]).log_prob(x).sum(-1)
    return torch.logsumexp(lp, 0)


def test_enumerated_log_marginal_matches_brute_force():
    m = small_sbn()
    x = binary_data()
    assert torch.allclose(m.log_marginal(x), brute_force_log_marginal_sbn1(m, x), atol=1e-5)
    c = CategoricalVAE(x_dim=6, num_variables=2, num_classes=3, hidden=(5,))
    eye = torch.eye(3)
    zs = torch.stack([torch.stack([eye[i], eye[j]]) for i in range(3) for j in range(3)])    # [9, 2, 3]
    lp = math.log(1 / 9) + Bernoulli(logits=c.decoder(zs.flatten(-2))[:, None, :]).log_prob(x).sum(-1)
    assert torch.allclose(c.log_marginal(x), torch.logsumexp(lp, 0), atol=1e-5)


def test_importance_sampled_log_likelihood_agrees_with_enumeration():
    """On an SBN with 8 latent bits the IS estimate (K=3000) agrees with the exact log p(x) within 3 standard errors."""
    torch.manual_seed(1)
    m = SBN(x_dim=10, layers=(8,))
    x = binary_data(n=30, d=10, seed=1)
    g = Amortized(m, hidden=(16,))
    r = evaluate(m, g, x, num_samples=3000, iwae_k=10)
    assert abs(r["log_likelihood"] - r["exact_log_likelihood"]) < 3 * r["log_likelihood_se"] + 0.01
    assert r["elbo"] < r["iwae_bound"] < r["exact_log_likelihood"] + 1e-4


@pytest.mark.parametrize("model_kind", ["sbn", "categorical"])
def test_enum_elbo_equals_hand_computed_sum(model_kind):
    """sum_z q(z|x) [log p(x, z) - log q(z|x)] over all configurations, by hand."""
    x = binary_data()
    if model_kind == "sbn":
        m = small_sbn()
        zs = torch.tensor(list(itertools.product((0.0, 1.0), repeat=3)))                      # [8, 3]
        log_prior = Bernoulli(logits=m.prior_logits).log_prob(zs).sum(-1)[:, None]
        log_lik = Bernoulli(logits=m.decoder(zs)[:, None, :]).log_prob(x).sum(-1)
    else:
        torch.manual_seed(0)
        m = CategoricalVAE(x_dim=6, num_variables=2, num_classes=3, hidden=(5,))
        eye = torch.eye(3)
        zs = torch.stack([torch.stack([eye[i], eye[j]]) for i in range(3) for j in range(3)])  # [9, 2, 3]
        log_prior = torch.full((9, 1), math.log(1 / 9))
        log_lik = Bernoulli(logits=m.decoder(zs.flatten(-2))[:, None, :]).log_prob(x).sum(-1)
    g = Amortized(m, hidden=(8,))
    _, raw = g.encode(x)
    logits = raw["z1" if model_kind == "sbn" else "z"]
    if model_kind == "sbn":
        log_q = Bernoulli(logits=logits[None]).log_prob(zs[:, None, :]).sum(-1)                   # [8, B]
    else:
        log_q = OneHotCategorical(logits=logits.reshape(-1, 2, 3)[None]).log_prob(zs[:, None]).sum(-1)
    hand = (log_q.exp() * (log_prior + log_lik - log_q)).sum()
    assert EnumELBO().loss(m, g, x) == pytest.approx(-hand.item(), rel=1e-5)


def flat_grad(params):
    return torch.cat([p.grad.reshape(-1) if p.grad is not None else torch.zeros(p.numel()) for p in params])


def elbo_params(m, g):
    """Model and guide parameters, without NVIL's baseline net (trained on its own squared-error loss)."""
    return list(m.parameters()) + [p for n, p in g.named_parameters() if not n.startswith("baselines.")]


def exact_gradient(m, g, x):
    params = elbo_params(m, g)
    for p in params:
        p.grad = None
    EnumELBO().loss_and_grads(m, g, x)
    return flat_grad(params)


def estimator_gradients(objective, m, g, x, chunks, particles):
    params = elbo_params(m, g)
    means = []
    for c in range(chunks):
        for p in params:
            p.grad = None
        pyro.set_rng_seed(100 + c)
        objective.loss_and_grads(m, g, x)
        means.append(flat_grad(params))
    means = torch.stack(means)
    return means.mean(0), means.std(0) / math.sqrt(chunks)


def z_scores(objective_name, baseline="none", chunks=200, particles=100):
    m = small_sbn(seed=2)
    x = binary_data(seed=2)
    g = build_guide("amortized", m, hidden=(8,), baseline=baseline)
    exact = exact_gradient(m, g, x)
    if baseline == "decaying":                       # let the running average settle first
        warm = build_objective("tracegraph", particles)
        for _ in range(20):
            warm.loss(m, g, x)
            warm.loss_and_grads(m, g, x)
    mean, se = estimator_gradients(build_objective(objective_name, particles), m, g, x, chunks, particles)
    keep = se > 1e-6                                 # parameters with no gradient at all (e.g. a baseline net)
    return ((mean - exact)[keep] / se[keep]).abs(), exact, mean


@pytest.mark.parametrize("objective_name,baseline,particles", [
    ("elbo", "none", 100), ("tracegraph", "none", 100), ("tracegraph", "decaying", 100), ("tracegraph", "neural", 100),
    ("reinforce", "none", 100), ("rloo", "none", 100), ("rloo", "none", 2)])
@pytest.mark.slow
def test_score_function_gradients_are_unbiased(objective_name, baseline, particles):
    """The mean of 200 x 100 single-sample gradients matches the exact gradient of the enumerated ELBO:
    at least 97% of coordinates within 3 standard errors and none beyond 5. RLOO also with K = 2,
    where each sample's baseline is the other sample (1000 steps of 2)."""
    chunks = 200 if particles == 100 else 1000
    z, exact, mean = z_scores(objective_name, baseline, chunks=chunks, particles=particles)
    assert (z < 3).float().mean() >= 0.97 and z.max() < 5, z.max()


def test_rloo_needs_the_baseline_to_leave_its_own_sample_out():
    """Negative control: a baseline that includes the sample's own signal (the mean of all K) is
    correlated with the score and scales the score term by (K-1)/K; with K = 2 the check fails."""
    from zoo.objectives.estimators import LeaveOneOutReinforce
    from zoo.core.weights import per_datum_log_weights

    class LeaveInReinforce(LeaveOneOutReinforce):
        def value_and_surrogate(self, model, guide, *args, **kwargs):
            lw = per_datum_log_weights(model, guide, *args, num_particles=self.num_particles,
                                       detach_latents=True, **kwargs)
            lw_ = lw.log_w.detach()
            surrogate = (lw.log_w + (lw_ - lw_.mean(0, keepdim=True)) * lw.log_q).mean(0)
            return -lw_.mean(0).sum(), -surrogate.sum()

    m = small_sbn(seed=2)
    x = binary_data(seed=2)
    g = build_guide("amortized", m, hidden=(8,))
    exact = exact_gradient(m, g, x)
    mean, se = estimator_gradients(LeaveInReinforce(2), m, g, x, chunks=1000, particles=2)
    z = ((mean - exact) / se.clamp_min(1e-12)).abs()
    assert not ((z < 3).float().mean() >= 0.97 and z.max() < 5)


def test_rloo_has_lower_variance_than_reinforce_with_the_same_samples():
    """Same K = 4 samples per datum: the leave-one-out baseline cuts the guide gradient's variance."""
    from zoo.evaluation.gradients import gradient_samples, parameter_groups
    m = small_sbn(seed=2)
    x = binary_data(seed=2)
    g = build_guide("amortized", m, hidden=(8,))
    variance = {}
    for name in ("reinforce", "rloo"):
        pyro.set_rng_seed(0)
        samples, _ = gradient_samples(build_objective(name, 4), m, g, (x, torch.arange(x.shape[0]), x.shape[0]),
                                      300, parameter_groups(m, g))
        variance[name] = samples["guide"].var(0).sum().item()
    assert variance["rloo"] < 0.5 * variance["reinforce"], variance


def test_gradient_check_detects_a_biased_estimator():
    """Negative control: the estimator that drops the score term of the cost (differentiating
    log p(x, z) - log q(z|x) at fixed samples, so E[grad_phi] = -E[grad log q] = 0) fails the same check."""
    from zoo.core.weights import per_datum_log_weights

    class PathwiseOnly:
        def loss_and_grads(self, model, guide, x):
            lw = per_datum_log_weights(model, guide, x, num_particles=100, detach_latents=True)
            (-lw.log_w.mean(0).sum()).backward()

    m = small_sbn(seed=2)
    x = binary_data(seed=2)
    g = build_guide("amortized", m, hidden=(8,))
    exact = exact_gradient(m, g, x)
    mean, se = estimator_gradients(PathwiseOnly(), m, g, x, chunks=200, particles=100)
    z = ((mean - exact) / se.clamp_min(1e-12)).abs()
    assert not ((z < 3).float().mean() >= 0.97 and z.max() < 5)


def test_relaxed_guide_approaches_the_discrete_one_as_temperature_goes_to_zero():
    torch.manual_seed(0)
    m = SBN(x_dim=6, layers=(4,))
    g = Relaxed(m, hidden=(8,), temperature=1e-3)
    x = binary_data(n=200, seed=3)
    g.train()
    tr = pyro.poutine.trace(g).get_trace(x)
    z = tr.nodes["z1"]["value"]
    assert ((z - z.round()).abs() < 1e-2).float().mean() > 0.99        # samples sit on the cube's vertices
    _, raw = g.encode(x)
    p = torch.sigmoid(raw["z1"])
    draws = torch.stack([pyro.poutine.trace(g).get_trace(x).nodes["z1"]["value"].round() for _ in range(300)])
    assert (draws.mean(0) - p).abs().max() < 0.12                       # with Bernoulli(sigmoid(l)) frequencies
    g.eval()                                                            # evaluation samples hard values
    hard = pyro.poutine.trace(g).get_trace(x).nodes["z1"]["value"]
    assert set(hard.unique().tolist()) <= {0.0, 1.0}


def test_relaxed_reconstruction_term_tends_to_the_discrete_one():
    """E_q~[log p(x | z~)] at tau = 0.01 matches E_q[log p(x | z)] with hard samples, and differs at tau = 5."""
    torch.manual_seed(0)
    m = SBN(x_dim=6, layers=(4,))
    with torch.no_grad():
        m.decoder[0].weight.normal_(0, 2.0)           # a decoder that cares which vertex z is on
    x = binary_data(n=100, seed=4)

    torch.manual_seed(1)
    g = Relaxed(m, hidden=(8,), temperature=0.01)
    from zoo.core.weights import per_datum_log_weights
    with torch.no_grad():
        g.train()
        soft = per_datum_log_weights(g.training_model(m), g, x, num_particles=2000).log_likelihood.mean().item()
        g.eval()
        hard = per_datum_log_weights(m, g, x, num_particles=2000).log_likelihood.mean().item()
        g.train()
        g.temperature.fill_(5.0)
        hot = per_datum_log_weights(g.training_model(m), g, x, num_particles=2000).log_likelihood.mean().item()
    assert abs(soft - hard) < 0.05 and abs(hot - hard) > 0.1


def test_annealing_schedule():
    g = Relaxed(SBN(x_dim=6, layers=(3,)), temperature=Annealing(1.0, 0.5, 1e-2))
    g.on_step(0)
    assert float(g.temperature) == pytest.approx(1.0)
    g.on_step(50)
    assert float(g.temperature) == pytest.approx(math.exp(-0.5))
    g.on_step(10_000)
    assert float(g.temperature) == pytest.approx(0.5)


def test_rws_wake_theta_gradient_is_the_iwae_model_gradient():
    """With the same (detached) samples, RWS's model gradient equals that of (N/B) x the per-datum IWAE bound."""
    m = small_sbn(seed=5)
    x = binary_data(seed=5)
    g = Amortized(m, hidden=(8,))
    pyro.set_rng_seed(7)
    ReweightedWakeSleep(num_particles=6).loss_and_grads(m, g, x)
    ours = flat_grad(list(m.parameters()))
    for p in m.parameters():
        p.grad = None
    from zoo.core.weights import per_datum_log_weights
    pyro.set_rng_seed(7)
    lw = per_datum_log_weights(m, g, x, num_particles=6, detach_latents=True)
    (-(torch.logsumexp(lw.log_likelihood + lw.log_prior - lw.log_q.detach(), 0) - math.log(6)).sum()).backward()
    assert torch.allclose(ours, flat_grad(list(m.parameters())), atol=1e-5)


@pytest.mark.parametrize("objective_name", ["rws", "rws_pyro"])
def test_wake_sleep_trains_a_helmholtz_machine(objective_name):
    """K=1 (2 for Pyro's), insomnia=0 (classic wake-sleep) raises the exact log-likelihood of a small SBN; with Pyro's
    estimator too, whose sleep phase hands the guide the dreamt x as ``observations``."""
    from zoo.training.loop import fit
    torch.manual_seed(0)
    m = SBN(x_dim=10, layers=(6,))
    x = binary_data(n=200, d=10, seed=6)
    g = Amortized(m, hidden=(16,))
    before = m.log_marginal(x).mean().item()
    particles = 1 if objective_name == "rws" else 2           # Pyro's needs K >= 2 for its wake phase
    fit(m, g, build_objective(objective_name, particles, insomnia=0.0), x, epochs=60, batch_size=50, lr=2e-2,
        progress=False)
    assert m.log_marginal(x).mean().item() > before + 0.3


def test_pyro_sleep_phase_encodes_the_dream():
    """rws_pyro's sleep-phi scores q(z' | x') at the dreamt x', not at the minibatch: a guide that records
    its inputs sees the model's sampled x' (different from the data) on the sleep pass."""
    m = SBN(x_dim=10, layers=(4,))
    g = Amortized(m, hidden=(8,))
    seen = []
    g.trunk.register_forward_hook(lambda mod, inp, out: seen.append(inp[0].detach().clone()))
    x = binary_data(n=50, d=10, seed=2)
    build_objective("rws_pyro", 2, insomnia=0.0).loss(m.model, g, x, torch.arange(50), 50)
    assert any(v.shape[-2:] == x.shape and not torch.equal(v.expand_as(v), x.expand_as(v)) for v in seen)


# -- baselines (zoo.objectives.baselines) and the relaxed guide's discrete KL ------------------------------

def test_baselines_survive_a_smaller_last_minibatch_and_are_checkpointed():
    """250 data in minibatches of 100 (the last has 50): Pyro's per-position decaying average
    fails here; ours is one scalar per site, and it is part of the guide's state_dict."""
    from zoo.training.loop import fit
    x = binary_data(n=250, seed=3)
    for baseline in ("decaying", "neural"):
        m = small_sbn(seed=3)
        g = build_guide("amortized", m, hidden=(8,), baseline=baseline)
        fit(m, g, build_objective("tracegraph"), x, epochs=2, batch_size=100, lr=1e-2, progress=False)
        state = g.state_dict()
        assert "baselines.z1.average" in state and state["baselines.z1.average"] != 0


def test_baseline_average_tracks_the_unscaled_per_datum_learning_signal():
    """With N = 10,000 declared and B = 4 every log-probability in the trace is scaled by 2,500.
    The running average must still converge to the per-datum ELBO (a few nats), not 2,500 times it."""
    m = small_sbn(seed=4)
    x = binary_data(n=4, seed=4)
    g = build_guide("amortized", m, hidden=(8,), baseline="decaying")
    objective = build_objective("tracegraph", 50)
    idx, N = torch.arange(4), 10_000
    pyro.set_rng_seed(0)
    for _ in range(100):
        objective.loss_and_grads(m, g, x, idx=idx, N=N)
    elbo_per_datum = -EnumELBO().loss(m, g, x) / 4             # exact, no subsampling scale
    assert float(g.baselines["z1"].average) == pytest.approx(elbo_per_datum, abs=0.3)


@pytest.mark.slow
def test_nvil_baseline_network_learns_the_input_dependent_part():
    """NVIL's b(x) + c approaches E_q[log p(x, z) - log q(z | x)] per datum (the optimal
    input-dependent baseline for the squared error it is trained on), here computed exactly."""
    m = small_sbn(seed=5)
    x = binary_data(n=4, seed=5)
    g = build_guide("amortized", m, hidden=(8,), baseline="neural")
    # only b(x) is trained: the model and the encoder stay where they are
    objective = build_objective("tracegraph", 20)
    opt = torch.optim.Adam(g.baselines.parameters(), lr=2e-2)
    pyro.set_rng_seed(0)
    for _ in range(400):
        opt.zero_grad()
        objective.loss_and_grads(m, g, x)
        opt.step()
    _, raw = g.encode(x)
    zs = torch.tensor(list(itertools.product((0.0, 1.0), repeat=3)))
    log_q = Bernoulli(logits=raw["z1"][None]).log_prob(zs[:, None, :]).sum(-1)             # [8, B]
    log_p = (Bernoulli(logits=m.prior_logits).log_prob(zs).sum(-1)[:, None]
             + Bernoulli(logits=m.decoder(zs)[:, None, :]).log_prob(x).sum(-1))
    exact = (log_q.exp() * (log_p - log_q)).sum(0)                                             # per datum
    site = g.baselines["z1"]
    with torch.no_grad():
        predicted = site.average + site.input_dependent(x)
    assert torch.allclose(predicted, exact, atol=0.5), (predicted, exact)


@pytest.mark.parametrize("model_kind,straight_through", [("sbn", False), ("sbn", True),
                                                         ("categorical", False), ("categorical", True)])
def test_relaxed_tracemeanfield_is_reconstruction_minus_the_discrete_kl(model_kind, straight_through):
    """Jang et al.'s objective: the loss equals -(log p(x | z~) - KL(q || p)) computed by hand at the
    same relaxed (or straight-through hard) sample, with the KL of the discrete distributions."""
    from pyro import poutine
    x = binary_data(n=5, seed=6)
    if model_kind == "sbn":
        m = small_sbn(seed=6)
        name, prior = "z1", Bernoulli(logits=m.prior_logits)
    else:
        torch.manual_seed(6)
        m = CategoricalVAE(x_dim=6, num_variables=2, num_classes=3, hidden=(5,))
        name, prior = "z", None
    g = build_guide("relaxed", m, hidden=(8,), temperature=0.7, straight_through=straight_through)
    g.train()
    train_model = g.training_model(m)
    pyro.set_rng_seed(7)
    loss = build_objective("tracemeanfield").loss(train_model, g, x)
    pyro.set_rng_seed(7)
    z = poutine.trace(g).get_trace(x).nodes[name]["value"]
    if straight_through:
        assert set(z.unique().tolist()) <= {0.0, 1.0}
    _, raw = g.encode(x)
    if model_kind == "sbn":
        q = Bernoulli(logits=raw[name])
        kl = torch.distributions.kl_divergence(q, prior.expand(q.batch_shape)).sum(-1)
        logits = m.decoder(z)
    else:
        q = OneHotCategorical(logits=raw[name].reshape(-1, 2, 3))
        kl = (q.probs * (q.logits - math.log(1 / 3))).sum((-1, -2))
        logits = m.decoder(z.flatten(-2))
    rec = Bernoulli(logits=logits).log_prob(x).sum(-1)
    assert loss == pytest.approx(-(rec - kl).sum().item(), rel=1e-5)


def test_concrete_log_density_is_finite_on_the_boundary():
    """float32 Concrete samples can round to exact 0/1 at low temperatures; torch's density is NaN there."""
    from guides.relaxed import ConcreteBernoulli, ConcreteOneHotCategorical
    tau = torch.tensor(0.1)
    cat = ConcreteOneHotCategorical(tau, logits=torch.tensor([0.0, 50.0, -50.0]))
    bern = ConcreteBernoulli(tau, logits=torch.tensor([3.0, -3.0]))
    assert torch.isnan(torch.distributions.RelaxedOneHotCategorical(tau, logits=cat.logits).log_prob(
        torch.tensor([0.0, 1.0, 0.0])))
    assert torch.isfinite(cat.log_prob(torch.tensor([0.0, 1.0, 0.0])))
    assert torch.isfinite(bern.log_prob(torch.tensor([1.0, 0.0]))).all()
    inner = torch.tensor([0.3, 0.6])                  # unchanged away from the boundary
    assert torch.allclose(bern.log_prob(inner), torch.distributions.RelaxedBernoulli(tau, logits=bern.logits).log_prob(inner))


def test_low_temperature_gumbel_softmax_samples_pass_the_simplex_check():
    """At tau = 0.1 about 0.1% of float32 Gumbel-softmax samples (10 classes) sum to 1 +- >1e-6, outside
    torch's simplex tolerance; with validation on, our log-density accepts them (and the straight-through
    one its soft value) and agrees with torch's density of the raw sample."""
    from guides.relaxed import ConcreteOneHotCategorical, ConcreteOneHotCategoricalST
    pyro.set_rng_seed(0)
    tau, logits = torch.tensor(0.1), torch.randn(2000, 20, 10) * 2
    for cls in (ConcreteOneHotCategorical, ConcreteOneHotCategoricalST):
        d = cls(tau, logits=logits, validate_args=True)
        z = d.rsample()
        soft = getattr(z, "_unquantize", z)
        assert not torch.distributions.constraints.simplex.check(soft).all()     # the float32 problem is real
        lp = d.log_prob(z)                                                        # used to raise ValueError
        assert torch.isfinite(lp).all()
        # where no coordinate is below the smallest normal float (the boundary clamp's business, tested
        # above), renormalizing leaves torch's density of the raw sample unchanged
        interior = (soft >= torch.finfo(soft.dtype).tiny).all(-1)
        reference = torch.distributions.RelaxedOneHotCategorical(tau, logits=logits, validate_args=False)
        assert interior.sum() > 10000
        assert torch.allclose(lp[interior], reference.log_prob(soft)[interior], rtol=1e-5, atol=1e-2)


def test_discrete_kl_stays_finite_where_float32_probabilities_saturate():
    """torch's Bernoulli KL is +inf once sigmoid(prior logit) rounds to 1 (logit >= ~17 in float32);
    ours is the exact KL, computed from logits, and agrees with torch wherever torch is finite."""
    from torch.distributions import Bernoulli, OneHotCategorical, kl_divergence
    from zoo.core.distributions import discrete_kl
    lp, lq = torch.tensor([0.0, 3.0, -2.0, 1.0]), torch.tensor([30.0, -120.0, 20.0, 0.5])
    ours = discrete_kl(Bernoulli(logits=lp), Bernoulli(logits=lq))
    p64, lq64 = torch.sigmoid(lp.double()), lq.double()
    exact = p64 * (-torch.log(torch.sigmoid(lq64)) + torch.log(p64)) + (1 - p64) * (
        -torch.log(torch.sigmoid(-lq64)) + torch.log(1 - p64))
    assert torch.isinf(kl_divergence(Bernoulli(logits=lp), Bernoulli(logits=lq))[:3]).all()
    assert torch.allclose(ours.double(), exact, rtol=1e-5)
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(50, 10, generator=g) * 3, torch.randn(50, 10, generator=g) * 3
    assert torch.allclose(discrete_kl(Bernoulli(logits=a), Bernoulli(logits=b)),
                          kl_divergence(Bernoulli(logits=a), Bernoulli(logits=b)), atol=1e-5)
    assert torch.allclose(discrete_kl(OneHotCategorical(logits=a), OneHotCategorical(logits=b)),
                          kl_divergence(OneHotCategorical(logits=a), OneHotCategorical(logits=b)), atol=1e-5)


def test_relaxed_objective_is_finite_with_a_saturated_learned_prior():
    """The failure it fixes: the SBN's learned prior logit of an always-on unit drifts past 17."""
    from zoo.registry import build_guide, build_model, build_objective
    model = build_model("sbn", 12, layers=(4,))
    with torch.no_grad():
        model.prior_logits.fill_(30.0)
    guide = build_guide("relaxed", model)
    x = torch.bernoulli(torch.full((8, 12), 0.5))
    loss = build_objective("tracemeanfield").loss(guide.training_model(model), guide, x, idx=torch.arange(8), N=8)
    assert math.isfinite(loss)


def test_independent_bernoulli_is_torchs_bernoulli_to_event():
    """The pixel likelihood sums before it negates; value, gradient, broadcasting and plates are torch's."""
    from zoo.core.distributions import IndependentBernoulli
    torch.manual_seed(0)
    logits = torch.randn(5, 3, 7, requires_grad=True)           # [K, B, D] against data [B, D]
    x = (torch.rand(3, 7) < 0.5).float()
    ours, ref = IndependentBernoulli(logits), Bernoulli(logits=logits).expand((5, 3, 7))
    lp, lp_ref = ours.log_prob(x), ref.log_prob(x).sum(-1)
    assert ours.batch_shape == (5, 3) and ours.event_shape == (7,) and lp.shape == (5, 3)
    assert torch.allclose(lp, lp_ref, atol=1e-6)
    g, = torch.autograd.grad(lp.sum(), logits)
    g_ref, = torch.autograd.grad(lp_ref.sum(), logits)
    assert torch.allclose(g, g_ref, atol=1e-6)
    assert torch.allclose(ours.mean, torch.sigmoid(logits))
    wide = IndependentBernoulli(logits[0, :1]).expand((4, 3))   # what a plate does to a smaller batch
    assert wide.batch_shape == (4, 3)
    assert torch.allclose(wide.log_prob(x), Bernoulli(logits=logits[0, :1]).log_prob(x).sum(-1).expand(4, 3))
    with pyro.plate("data", 3):
        trace = pyro.poutine.trace(lambda: pyro.sample("x", IndependentBernoulli(logits[0, 0]), obs=x)).get_trace()
    assert torch.allclose(trace.nodes["x"]["fn"].log_prob(x), Bernoulli(logits=logits[0, 0]).log_prob(x).sum(-1))


def test_independent_bernoulli_makes_its_base_only_when_asked_and_keeps_torchs_behaviour():
    """Built and scored (a training step's likelihood), no base Bernoulli is made; sampling, entropy, support, a
    mask, pickling and the validation flag (off unless asked for, as before) behave as torch's Bernoulli.to_event."""
    import pickle
    from zoo.core.distributions import IndependentBernoulli
    torch.manual_seed(1)
    logits, x = torch.randn(3, 7), (torch.rand(3, 7) < 0.5).float()
    d, ref = IndependentBernoulli(logits), pyro.distributions.Bernoulli(logits=logits).to_event(1)
    d.log_prob(x)
    assert "base_dist" not in d.__dict__ and not d._validate_args
    assert d.log_prob(torch.full((3, 7), 0.5)).shape == (3,)              # not validated, as before
    checked = IndependentBernoulli(logits, validate_args=True)
    for score in (checked.log_prob, checked.base_dist.log_prob, checked.to_event(1).log_prob):
        with pytest.raises(ValueError):
            score(torch.full((3, 7), 0.5))
    with pyro.plate("particles", 2, dim=-2):                  # a broadcast to another shape reads has_rsample only
        with pyro.plate("data", 3, dim=-1):
            trace = pyro.poutine.trace(lambda: pyro.sample("x", IndependentBernoulli(logits), obs=x)).get_trace()
    assert trace.nodes["x"]["fn"].batch_shape == (2, 3) and not trace.nodes["x"]["fn"].has_rsample
    assert "base_dist" not in trace.nodes["x"]["fn"].__dict__
    assert torch.allclose(d.entropy(), ref.entropy()) and d.support.event_dim == 1
    torch.manual_seed(2)
    s = d.sample((2,))
    torch.manual_seed(2)
    assert torch.equal(s, ref.sample((2,))) and "base_dist" in d.__dict__
    mask = torch.tensor([True, False, True])
    assert torch.allclose(d.mask(mask).log_prob(x), ref.mask(mask).log_prob(x))
    assert torch.allclose(pickle.loads(pickle.dumps(d)).log_prob(x), ref.log_prob(x))
    with pytest.raises(ValueError, match="pixel dim"):
        IndependentBernoulli(torch.tensor(0.3))


@pytest.mark.parametrize("objective_name", ["elbo", "tracegraph"])
def test_kl_warmup_tempers_the_score_function_elbo(objective_name):
    """For an SBN with a score-function guide, with the same samples, loss(beta) is linear in beta,
    loss(1) is the plain loss and loss(1) - loss(0) = sum_b [log q(z_b | x_b) - log p(z_b)]."""
    from zoo.core.weights import per_datum_log_weights
    from zoo.training.warmup import KLWarmup
    m, x = small_sbn(seed=1), binary_data(seed=1)
    g = build_guide("amortized", m, hidden=(8,))

    def loss(beta=None):
        pyro.set_rng_seed(4)
        objective = build_objective(objective_name)
        if beta is None:
            return objective.loss(m, g, x)
        with KLWarmup(beta):
            return objective.loss(m, g, x)

    full, l0, half, l1 = loss(), loss(0.0), loss(0.5), loss(1.0)
    pyro.set_rng_seed(4)
    lw = per_datum_log_weights(m, g, x, num_particles=1)
    assert l1 == pytest.approx(full, rel=1e-6)
    assert full - l0 == pytest.approx((lw.log_q - lw.log_prior).sum().item(), rel=1e-4, abs=1e-4)
    assert half == pytest.approx((l0 + full) / 2, rel=1e-5)


def test_rloo_is_the_sharper_high_particle_reference_for_a_score_function_guide():
    """zoo.evaluation.gradients' reference for a discrete guide without enumeration: 5 RLOO gradients with K = 1000
    are closer to the exact enumerated ELBO gradient than 5 plain score-function ones with the same samples."""
    from zoo.evaluation.gradients import gradient_samples, parameter_groups
    m = small_sbn(seed=2)
    x = binary_data(seed=2)
    g = build_guide("amortized", m, hidden=(8,))
    groups = parameter_groups(m, g)
    for p in elbo_params(m, g):
        p.grad = None
    EnumELBO().loss_and_grads(m, g, x)
    exact = torch.cat([p.grad.reshape(-1) for p in groups["guide"]])
    error = {}
    for name in ("elbo", "rloo"):
        pyro.set_rng_seed(0)
        samples, _ = gradient_samples(build_objective(name, 1000), m, g, (x, torch.arange(x.shape[0]), x.shape[0]),
                                      5, {"guide": groups["guide"]})
        error[name] = ((samples["guide"].mean(0) - exact).norm() / exact.norm()).item()
    assert error["rloo"] < 0.03 and error["rloo"] < error["elbo"] / 2, error
