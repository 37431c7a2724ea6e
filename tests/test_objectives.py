"""The per-datum Renyi/IWAE objectives against hand computations; objectives as bound x estimator."""
import copy
import math

import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import pytest
import torch

from guides import Amortized, MeanField
from zoo.core.weights import per_datum_log_weights, vectorize
from zoo.models import PPCA
from zoo.objectives import IWAEBound, RenyiBound, build_objective
from zoo.training.warmup import KLWarmup


def small_ppca(x_dim=3, latent_dim=2, seed=0):
    torch.manual_seed(seed)
    m = PPCA(x_dim, latent_dim)
    with torch.no_grad():
        m.W.normal_()
        m.mu.normal_()
    return m


def hand_log_weights(m, guide, x, idx, N, K, seed):
    """Redraw the guide's particles with the same seed and score them with torch.distributions directly."""
    pyro.set_rng_seed(seed)
    tr = poutine.trace(vectorize(guide, K)).get_trace(x, idx=idx, N=N)
    z = tr.nodes["z"]["value"]                                      # [K, B, q]
    q = tr.nodes["z"]["fn"]
    sigma = torch.exp(m.log_noise_scale)
    log_prior = torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(-1)
    log_lik = torch.distributions.Normal(z @ m.W.T + m.mu, sigma).log_prob(x).sum(-1)
    return log_lik + log_prior - q.log_prob(z)


def subsampled_ppca():
    """A small pPCA, 50 data, a per-datum guide with spread-out means, and a minibatch of 4 of them."""
    m = small_ppca()
    x_all = torch.randn(50, 3)
    g = MeanField(m, num_data=50)
    with torch.no_grad():
        g.z_loc.normal_()
    return m, g, x_all, torch.tensor([3, 17, 22, 40])


@pytest.mark.parametrize("alpha", [0.0, 0.5])
def test_renyi_matches_hand_computation_under_subsampling(alpha):
    """-(N/B) sum_b 1/(1-a) log mean_k w_kb^(1-a), with w from the same particles, for a minibatch of 4 out of 50."""
    m, g, x_all, idx = subsampled_ppca()
    K, N, B = 7, 50, 4
    pyro.set_rng_seed(11)
    ours = RenyiBound(alpha=alpha, num_particles=K).loss(m, g, x_all[idx], idx=idx, N=N)
    log_w = hand_log_weights(m, g, x_all[idx], idx, N, K, seed=11)
    per_datum = (torch.logsumexp((1 - alpha) * log_w, 0) - math.log(K)) / (1 - alpha)
    assert ours == pytest.approx(-(N / B) * per_datum.sum().item(), rel=1e-5)


def test_iwae_is_renyi_at_alpha_zero_and_elbo_at_alpha_one():
    m = small_ppca()
    x = torch.randn(5, 3)
    g = Amortized(m, hidden=(8,))
    pyro.set_rng_seed(3)
    iwae = IWAEBound(num_particles=6).loss(m, g, x)
    pyro.set_rng_seed(3)
    renyi0 = RenyiBound(alpha=0.0, num_particles=6).loss(m, g, x)
    assert iwae == pytest.approx(renyi0, rel=1e-6)
    log_w = hand_log_weights(m, g, x, None, None, 6, seed=4)
    pyro.set_rng_seed(4)
    renyi1 = RenyiBound(alpha=1.0, num_particles=6).loss(m, g, x)
    assert renyi1 == pytest.approx(-log_w.mean(0).sum().item(), rel=1e-5)


def test_iwae_gradient_matches_hand_gradient():
    m = small_ppca()
    x = torch.randn(4, 3)
    g = Amortized(m, hidden=(8,))
    pyro.set_rng_seed(5)
    IWAEBound(num_particles=5).loss_and_grads(m, g, x)
    ours = [p.grad.clone() for p in m.parameters()]
    m.zero_grad()
    g.zero_grad()
    log_w = hand_log_weights(m, g, x, None, None, 5, seed=5)
    (-(torch.logsumexp(log_w, 0) - math.log(5)).sum()).backward()
    for a, p in zip(ours, m.parameters()):
        assert torch.allclose(a, p.grad, rtol=1e-4, atol=1e-5)


def test_pyro_renyi_elbo_is_not_the_per_datum_bound_under_subsampling():
    """The issue's measurement, reproduced: with N=1000, B=4 and K=2000, our IWAE estimate is (N/B) x the
    per-datum bound (close to (N/B) sum_b log p(x_b) for this K), while Pyro's RenyiELBO(alpha=0) is not."""
    m = small_ppca(x_dim=2, latent_dim=1, seed=3)
    N, B, K = 1000, 4, 2000
    x_all = m.sample(N, mean=False).detach()
    idx = torch.arange(B)
    g = MeanField(m, num_data=N, init_scale=1.0)            # the prior as proposal: inexact but wide
    exact = (N / B) * m.log_marginal(x_all[idx]).sum().item()
    pyro.set_rng_seed(0)
    ours = -build_objective("iwae", K).loss(m, g, x_all[idx], idx=idx, N=N)
    pyro.set_rng_seed(0)
    pyros = -build_objective("renyi_pyro", K, alpha=0.0).loss(m, g, x_all[idx], idx=idx, N=N)
    assert abs(ours - exact) < 0.01 * abs(exact)
    assert abs(pyros - exact) > 5 * abs(ours - exact) and abs(pyros - ours) > 10


def test_objective_refuses_bad_settings():
    from zoo.core.errors import ZooError
    with pytest.raises(ZooError, match="alpha"):
        build_objective("renyi", 2, alpha=-1.0)
    with pytest.raises(ZooError, match="particles"):
        build_objective("iwae", 0)
    with pytest.raises(ZooError, match="alpha != 1"):
        build_objective("renyi_pyro", 2, alpha=1.0)
    with pytest.raises(ZooError, match="Did you mean 'iwae'"):
        build_objective("iwea")


def test_renyi_refuses_a_score_function_guide():
    """A guide whose samples are not reparameterizable would give a silently wrong IWAE gradient."""
    from zoo.core.errors import ZooError
    m = small_ppca()

    class ScoreFunctionNormal(dist.Normal):
        has_rsample = False

    def score_function_guide(x, idx=None, N=None):
        d = ScoreFunctionNormal(torch.zeros(x.shape[0], 2), 1.0).to_event(1)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", d)

    with pytest.raises(ZooError, match="IWAEBound assumes a guide that reparameterizes its samples.*check_combination"):
        IWAEBound(num_particles=3).loss(m, score_function_guide, torch.randn(4, 3))


def test_kl_warmup_weights_the_latent_terms_of_each_log_weight_under_subsampling():
    """Under KLWarmup(beta), log w = log p(x | z) + beta (log p(z) - log q(z | x)) for the same particles,
    with the observation's N/B still read as the subsample scale, and the IWAE loss is built from it."""
    m, g, x_all, idx = subsampled_ppca()
    K, N, B, beta = 6, 50, 4, 0.3
    pyro.set_rng_seed(5)
    plain = per_datum_log_weights(m, g, x_all[idx], idx=idx, N=N, num_particles=K)
    pyro.set_rng_seed(5)
    with KLWarmup(beta):
        warm = per_datum_log_weights(m, g, x_all[idx], idx=idx, N=N, num_particles=K)
    assert warm.scale == plain.scale == N / B
    assert torch.allclose(warm.log_w, plain.log_likelihood + beta * (plain.log_prior - plain.log_q), atol=1e-5)
    assert not torch.allclose(warm.log_w, plain.log_w, atol=1e-2)
    pyro.set_rng_seed(5)
    with KLWarmup(beta):
        ours = IWAEBound(num_particles=K).loss(m, g, x_all[idx], idx=idx, N=N)
    hand = torch.logsumexp(plain.log_likelihood + beta * (plain.log_prior - plain.log_q), 0) - math.log(K)
    assert ours == pytest.approx(-(N / B) * hand.sum().item(), rel=1e-5)


@pytest.mark.parametrize("name", ["elbo", "tracemeanfield"])
def test_kl_warmup_tempers_pyros_elbos_to_reconstruction_minus_beta_kl(name):
    """With the same particle, loss(beta) = -(N/B) sum_b [rec_b - beta KL_b]: at beta = 1 the plain loss,
    and loss(1) - loss(0) = (N/B) sum_b KL_b, where KL_b is the closed-form KL(q(z | x_b) || N(0, I)) for
    tracemeanfield and its one-sample estimate log q(z_b | x_b) - log p(z_b) for elbo."""
    m = small_ppca()
    g = Amortized(m, hidden=(8,))
    x, idx, N = torch.randn(6, 3), torch.arange(6), 30

    def loss(beta=None):
        pyro.set_rng_seed(2)
        objective = build_objective(name)
        if beta is None:
            return objective.loss(m, g, x, idx=idx, N=N)
        with KLWarmup(beta):
            return objective.loss(m, g, x, idx=idx, N=N)

    full, l0, l1, half = loss(), loss(0.0), loss(1.0), loss(0.5)
    if name == "tracemeanfield":
        q = poutine.trace(g).get_trace(x, idx=idx, N=N).nodes["z"]["fn"]
        kl = torch.distributions.kl_divergence(q.base_dist, torch.distributions.Normal(0.0, 1.0)).sum().item()
    else:
        pyro.set_rng_seed(2)
        lw = per_datum_log_weights(m, g, x, idx=idx, N=N, num_particles=1)
        kl = (lw.log_q - lw.log_prior).sum().item()
    assert l1 == pytest.approx(full, rel=1e-6)
    assert full - l0 == pytest.approx(N / 6 * kl, rel=1e-4)
    assert half == pytest.approx((l0 + full) / 2, rel=1e-5)


def test_kl_warmup_is_refused_where_there_is_no_kl_to_weight(tmp_path):
    from zoo.core.errors import ZooError
    from zoo.experiments.config import RunConfig
    from zoo.experiments.run import prepare
    for objective in ("enum", "rws"):
        with pytest.raises(ZooError, match="kl_warmup weights the latent terms"):
            prepare(RunConfig.make(model="sbn", layers=[4], objective=objective, dataset="digits", kl_warmup=5))


# --- bound x estimator: presets are pairs, and a pair is checked from what its estimator declares ---------

def test_every_registered_name_is_a_bound_or_a_preset_of_a_valid_pair():
    """Each registered name is (bound, estimator) of a registered bound; a
    bound's own name is its default estimator; a preset takes exactly its bound's options but ``estimator``."""
    from zoo.core.components import OBJECTIVES
    from zoo.objectives import bounds, objective_capabilities, preset_of
    assert {"elbo", "tracemeanfield", "tracegraph", "enum", "rws", "rws_pyro", "reinforce", "rloo", "stl", "dreg",
            "vimco", "renyi", "iwae", "renyi_pyro"} <= set(OBJECTIVES)
    assert {"elbo", "iwae", "renyi", "rws"} <= set(bounds())
    for name in OBJECTIVES:
        bound, estimator = preset_of(name)
        assert bound in bounds() and estimator in OBJECTIVES[bound].capability("estimators"), name
        caps = objective_capabilities(name)
        assert caps == objective_capabilities(bound, estimator) and (caps.bound, caps.name) == (bound, estimator)
        options = {f.name for f in OBJECTIVES[name].options.specs()}
        assert options | {"estimator"} == {f.name for f in OBJECTIVES[bound].options.specs()}, name
    assert preset_of("dreg") == ("iwae", "dreg") and preset_of("tracemeanfield") == ("elbo", "analytic_kl")
    assert preset_of("iwae") == ("iwae", "reparam") and preset_of("renyi_pyro") == ("renyi", "pyro")


def test_an_invalid_pair_is_refused_in_one_line_naming_the_bound_s_estimators():
    from zoo.core.errors import ZooError
    from zoo.core.components import OptionError
    from zoo.objectives import objective_capabilities
    with pytest.raises(OptionError) as info:
        build_objective("elbo", estimator="dreg")
    assert str(info.value) == ("estimator 'dreg' is not one of the elbo bound's estimators: auto, analytic_kl, "
                               "tracegraph, reinforce, rloo, stl, enum, arm, disarm, arsm, rebar, relax (dreg is an estimator of iwae)")
    with pytest.raises(ZooError, match="renyi bound's estimators: reparam, pyro"):
        objective_capabilities("renyi", "vimco")            # VIMCO is derived for alpha = 0 only
    with pytest.raises(ZooError, match="'dreg' is iwae with estimator 'dreg'; for estimator 'vimco' use objective"):
        objective_capabilities("dreg", "vimco")
    with pytest.raises(OptionError, match="is not an option of the objective 'dreg'"):
        build_objective("dreg", estimator="dreg")          # a preset has no estimator to choose


def _preset_cases():
    """Each objective with the options it declares for tests (a Renyi order other than 0, a sleep phase)."""
    from zoo.core.components import OBJECTIVES
    from zoo.objectives import preset_of
    return [(name, *preset_of(name), dict(OBJECTIVES[name].options.test_options)) for name in OBJECTIVES]


@pytest.mark.parametrize("name,bound,estimator,options", _preset_cases(), ids=[c[0] for c in _preset_cases()])
def test_a_preset_is_its_bound_and_estimator_spelled_out(name, bound, estimator, options):
    """On a fixed seed, --objective NAME and --objective BOUND --estimator E give the same loss and the
    same gradient of every parameter, to the bit (the same estimator object, the same random draws)."""
    from zoo.registry import build_guide, build_model
    from zoo.training.loop import fit
    torch.manual_seed(0)
    x = (torch.rand(24, 8) < 0.4).float()
    discrete = name in ("enum", "arm", "disarm", "rebar", "relax")          # estimators for discrete latents only
    model0 = build_model("sbn", 8, layers=(3,)) if discrete else build_model("vae", 8, latent_dim=2, hidden=(6,))
    if name == "arsm":                                                       # for categorical latents only
        model0 = build_model("categorical_vae", 8, num_variables=2, num_classes=3, hidden=(6,))
    guide0 = build_guide("amortized", model0, hidden=(6,))
    results = []
    for objective in (build_objective(name, **options), build_objective(bound, estimator=estimator, **options)):
        model, guide = copy.deepcopy((model0, guide0))
        pyro.set_rng_seed(3)
        history = fit(model, guide, objective, x, epochs=2, batch_size=8, lr=1e-2, seed=3, progress=False)
        for p in list(model.parameters()) + list(guide.parameters()):
            p.grad = None
        pyro.set_rng_seed(4)
        loss = objective.loss_and_grads(model, guide, x[:8], idx=torch.arange(8), N=24)
        grads = [p.grad.clone() for p in list(model.parameters()) + list(guide.parameters()) if p.grad is not None]
        results.append(([h["loss"] for h in history] + [loss], grads))
    (losses_a, grads_a), (losses_b, grads_b) = results
    assert losses_a == losses_b and len(grads_a) == len(grads_b) > 0
    assert all(torch.equal(a, b) for a, b in zip(grads_a, grads_b))


def test_jit_and_ddp_support_are_read_from_the_estimators():
    """The names --jit and --distributed accept are those whose estimator declares it."""
    from zoo.core.components import OBJECTIVES
    from zoo.training.distributed import DDP_OBJECTIVES
    from zoo.objectives.jit import JIT_OBJECTIVES
    from zoo.objectives import objective_capabilities
    flat = {"elbo", "tracemeanfield", "tracegraph", "enum", "rws", "rws_pyro", "reinforce", "rloo", "stl", "dreg",
            "vimco", "renyi", "iwae", "renyi_pyro"}
    assert set(JIT_OBJECTIVES) == {n for n in OBJECTIVES if objective_capabilities(n).jit}
    assert set(JIT_OBJECTIVES) & flat == {
        "elbo", "tracemeanfield", "tracegraph", "reinforce", "rloo", "stl", "vimco", "rws", "enum", "renyi", "iwae"}
    assert set(DDP_OBJECTIVES) == {n for n in OBJECTIVES if objective_capabilities(n).ddp}
    assert set(DDP_OBJECTIVES) & flat == {
        "elbo", "tracemeanfield", "enum", "iwae", "renyi", "renyi_pyro", "stl", "vimco", "reinforce", "rloo"}
    assert not objective_capabilities("iwae", "dreg").jit and objective_capabilities("iwae", "vimco").jit


def test_the_combination_check_reads_the_chosen_estimator():
    """iwae with reparam or dreg differentiates through the samples: refused for a score-function guide over
    binary latents, with the objectives that do fit named; iwae with vimco is valid there."""
    from zoo.core.errors import ZooError
    from zoo.registry import build_model
    from zoo.rules import check_combination
    sbn = build_model("sbn", 16, layers=(3,))
    check_combination(sbn, "amortized", "iwae", objective_options={"estimator": "vimco"})
    with pytest.raises(ZooError) as info:
        check_combination(sbn, "amortized", "iwae", objective_options={"estimator": "dreg"})
    message = str(info.value)
    assert "\n" not in message and message.startswith("objective 'iwae' with estimator 'dreg' needs a reparam")
    assert "use elbo, tracegraph, enum, reinforce, rloo, arm, disarm, rebar, relax, vimco, tvo, rws, rws_pyro" in message
    with pytest.raises(ZooError, match="objective 'iwae' needs a reparameterizable guide"):
        check_combination(sbn, "amortized", "iwae")


def test_a_new_bound_is_one_registration():
    """A bound registered with a table of one estimator gets its options, a CLI --estimator value and the
    combination check, with no other change."""
    from dataclasses import dataclass
    from typing import ClassVar

    from zoo.cli import build_parser
    from zoo.core.errors import ZooError
    from zoo.core.components import OBJECTIVES
    from zoo.objectives.axes import BoundOptions, Estimator, estimator_option, register_bound
    from zoo.registry import build_model
    from zoo.rules import check_combination

    @dataclass
    class ToyOptions(BoundOptions):
        bound: ClassVar[str] = "toy_bound"
        estimator: str = estimator_option("path")

    with OBJECTIVES.temporary():
        register_bound("toy_bound", options=ToyOptions, default="path", description="a test bound", estimators=[
            Estimator("path", "reparameterized IWAE", lambda k: IWAEBound(num_particles=k), default_particles=3,
                      needs_reparam=True)])
        assert build_objective("toy_bound").num_particles == 3
        args = build_parser().parse_args(["train", "vae", "--objective", "toy_bound", "--estimator", "path"])
        assert getattr(args, "objective:estimator") == "path"
        check_combination(build_model("vae", 16), "amortized", "toy_bound")
        with pytest.raises(ZooError, match="objective 'toy_bound' needs a reparameterizable guide"):
            check_combination(build_model("sbn", 16, layers=(3,)), "amortized", "toy_bound")
    assert "toy_bound" not in OBJECTIVES


def test_a_grid_names_any_valid_pair_as_bound_colon_estimator(tmp_path, capsys):
    """compare and gradients take BOUND:ESTIMATOR beside the registered names: 'iwae:dreg' is the cell
    (objective iwae, estimator dreg), in its own folder, next to 'dreg' and plain 'iwae'; a name that is
    not a bound, or an estimator of another bound, is refused in one line before anything is written."""
    from zoo.cli import main
    from zoo.experiments.compare import cell_name, grid_cells
    from zoo.experiments.config import RunConfig
    from zoo.objectives import split_objective
    cells = grid_cells("vae", ["amortized"], ["iwae", "iwae:dreg", "dreg", "elbo:stl"], RunConfig())
    assert [(c.objective, c.objective_options.get("estimator"), cell_name(c)) for c in cells] == [
        ("iwae", None, "amortized-iwae"), ("iwae", "dreg", "amortized-iwae-dreg"), ("dreg", None, "amortized-dreg"),
        ("elbo", "stl", "amortized-elbo-stl")]
    assert split_objective("rws:pyro") == ("rws", "pyro")
    for bad, message in (("dreg:reparam", "'dreg' is not a bound"), ("elbo:dreg", "not an estimator of the elbo")):
        code = main(["compare", "vae", "--guides", "amortized", "--objectives", bad, "--out", str(tmp_path / "x")])
        err = capsys.readouterr().err
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1
        assert not (tmp_path / "x").exists()
