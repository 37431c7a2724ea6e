"""LeanTrace_ELBO gives Pyro's Trace_ELBO's loss and gradients, draw for draw, and hands Trace_ELBO the steps it
does not cover (zoo.objectives.lean)."""
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine

from zoo.objectives import build_objective
from zoo.objectives.lean import LeanTrace_ELBO, LeanTraceMeanField_ELBO
from zoo.registry import build_guide, build_model
from zoo.training.warmup import KLWarmup


@pytest.fixture(autouse=True)
def empty_param_store():
    """The hand-written models here keep pyro.param sites in Pyro's global store: emptied before and after each test,
    so no other test sees them."""
    pyro.clear_param_store()
    yield
    pyro.clear_param_store()


def loss_and_grads(objective, model, guide, *args, seed=3, **kwargs):
    """The loss and the flat gradient of every parameter of ``model`` and ``guide`` after one step."""
    params = [p for m in (model, guide) for p in m.parameters()]
    for p in params:
        p.grad = None
    pyro.set_rng_seed(seed)
    loss = objective.loss_and_grads(model, guide, *args, **kwargs)
    grads = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in params])
    return loss, grads


#: each lean ELBO and the Pyro class whose numbers it gives
PAIRS = {"trace": (LeanTrace_ELBO, pyro.infer.Trace_ELBO),
         "meanfield": (LeanTraceMeanField_ELBO, pyro.infer.TraceMeanField_ELBO)}

#: the lean pass adds the same float32 terms in another order (all dims at once, the plate's scale applied once):
#: a few float32 roundings of the loss apart, far below any missing term, scale or sign
LOSS_REL = 64 * torch.finfo(torch.float32).eps


def assert_same(model, guide, *args, lean_expected=True, num_particles=1, vectorize=False, pair="trace", **kwargs):
    options = dict(num_particles=num_particles, vectorize_particles=vectorize, max_plate_nesting=1)
    lean_class, pyro_class = PAIRS[pair]
    lean = lean_class(**options)
    loss, grads = loss_and_grads(lean, model, guide, *args, **kwargs)
    assert lean.lean is lean_expected
    expected_loss, expected_grads = loss_and_grads(pyro_class(**options), model, guide, *args, **kwargs)
    assert loss == pytest.approx(expected_loss, rel=LOSS_REL)
    assert grads.abs().sum() > 0
    torch.testing.assert_close(grads, expected_grads, rtol=1e-5, atol=1e-5)
    pyro.set_rng_seed(4)
    differentiable = lean.differentiable_loss(model, guide, *args, **kwargs)
    pyro.set_rng_seed(4)
    assert float(differentiable.detach()) == pytest.approx(float(pyro_class(
        **options).differentiable_loss(model, guide, *args, **kwargs).detach()), rel=LOSS_REL)
    pyro.set_rng_seed(5)
    value = lean.loss(model, guide, *args, **kwargs)
    pyro.set_rng_seed(5)
    assert value == pytest.approx(pyro_class(**options).loss(model, guide, *args, **kwargs), rel=LOSS_REL)


def binary_data(n=7, d=12, seed=0):
    return torch.bernoulli(torch.full((n, d), 0.3), generator=torch.Generator().manual_seed(seed))


def zoo_cases():
    """(model, guide, model options) x (K, vectorized) x (lean class); a few of the grid in the default suite."""
    models = [("vae", "amortized", {}), ("hvae", "amortized", {}),
              ("vae", "iaf", {}),                                          # no closed-form KL: log p - log q
              ("vae", "meanfield", {}),
              ("hvae", "amortized", {"prior": "vampprior", "prior_components": 3})]   # a mixture prior on top
    particles = [(1, False), (3, True), (2, False)]
    quick = {(0, 0), (2, 0), (3, 1), (1, 2)}
    return [pytest.param(*m, *k, pair, marks=() if (i, j) in quick else pytest.mark.slow)
            for i, m in enumerate(models) for j, k in enumerate(particles) for pair in PAIRS]


@pytest.mark.parametrize("name,guide_name,model_kw,particles,vectorize,pair", zoo_cases())
def test_same_as_pyro_on_zoo_models(name, guide_name, model_kw, particles, vectorize, pair):
    x = binary_data()
    with pyro.validation_enabled(False):
        pyro.set_rng_seed(0)
        model = build_model(name, x.shape[1], **model_kw)
        guide = build_guide(guide_name, model, num_data=20)
        idx = torch.tensor([0, 3, 4, 8, 11, 15, 19])
        assert_same(model, guide, x, idx=idx, N=20, num_particles=particles, vectorize=vectorize, pair=pair)


@pytest.mark.parametrize("pair", ["trace", "meanfield"])
def test_kl_warmup_scale_is_applied(pair):
    x = binary_data()
    with pyro.validation_enabled(False), KLWarmup(0.3):
        pyro.set_rng_seed(0)
        model = build_model("vae", x.shape[1])
        guide = build_guide("amortized", model)
        assert_same(model, guide, x, idx=torch.arange(7), N=7, pair=pair)


def masked_model(x):
    """A model-only latent (sampled from its prior in both ELBOs), a mask, a scale and a factor."""
    loc = pyro.param("loc", torch.zeros(3))
    extra = pyro.sample("extra", dist.Normal(0.0, 1.0))
    with pyro.plate("data", x.shape[0], dim=-1):
        z = pyro.sample("z", dist.Normal(loc, 1.0).to_event(1))
        with poutine.mask(mask=torch.arange(x.shape[0]) % 2 == 0), poutine.scale(scale=2.5):
            pyro.sample("x", dist.Normal(z + extra, 1.0).to_event(1), obs=x)
        pyro.factor("penalty", -0.1 * z.pow(2).sum(-1))


def masked_guide(x):
    q_loc = pyro.param("q_loc", torch.full((x.shape[0], 3), 0.2))
    with pyro.plate("data", x.shape[0], dim=-1):
        pyro.sample("z", dist.Normal(q_loc, 0.5).to_event(1))


def test_masks_scales_factors_and_model_only_sites():
    x = torch.randn(6, 3)
    with pyro.validation_enabled(False):
        masked_model(x), masked_guide(x)                 # create the params
        model, guide = poutine.trace(masked_model), poutine.trace(masked_guide)
        store = pyro.get_param_store()
        params = [store["loc"], store["q_loc"]]
        lean, pyro_elbo = LeanTrace_ELBO(), pyro.infer.Trace_ELBO()
        results = []
        for objective in (lean, pyro_elbo):
            for p in params:
                p.unconstrained().grad = None
            pyro.set_rng_seed(1)
            loss = objective.loss_and_grads(masked_model, masked_guide, x)
            results.append((loss, [p.unconstrained().grad.clone() for p in params]))
        assert lean.lean is True
        assert results[0][0] == pytest.approx(results[1][0], rel=LOSS_REL)
        for a, b in zip(results[0][1], results[1][1]):
            torch.testing.assert_close(a, b)
    del model, guide


def auxiliary_model(x):
    with pyro.plate("data", x.shape[0], dim=-1):
        z = pyro.sample("z", dist.Normal(0.0, 1.0).expand([2]).to_event(1))
        pyro.sample("x", dist.Normal(z.sum(-1), 1.0), obs=x)


def auxiliary_guide(x):
    scale = pyro.param("aux_scale", torch.tensor(0.7), constraint=dist.constraints.positive)
    with pyro.plate("data", x.shape[0], dim=-1):
        u = pyro.sample("u", dist.Normal(torch.zeros(x.shape[0]), scale), infer={"is_auxiliary": True})
        pyro.sample("z", dist.Normal(u[:, None].expand(-1, 2), scale).to_event(1))


def test_mean_field_auxiliary_guide_sites():
    """A guide-only (auxiliary) site adds -log q, as in TraceMeanField_ELBO."""
    x = torch.randn(5)
    with pyro.validation_enabled(False):
        auxiliary_guide(x)
        scale = pyro.get_param_store()["aux_scale"].unconstrained()
        results = []
        for objective in (LeanTraceMeanField_ELBO(), pyro.infer.TraceMeanField_ELBO()):
            scale.grad = None
            pyro.set_rng_seed(2)
            results.append((objective.loss_and_grads(auxiliary_model, auxiliary_guide, x), scale.grad.clone()))
    assert results[0][0] == pytest.approx(results[1][0], rel=LOSS_REL)
    torch.testing.assert_close(results[0][1], results[1][1])


@pytest.mark.parametrize("validated_first", [True, False])
def test_score_function_guides_go_to_trace_elbo(validated_first):
    """A Bernoulli guide's gradient needs the score function: seen in a validated step (the zoo's first), no step
    tries the short way; found in a short step, that step is Trace_ELBO's with new draws, and so is every later one."""
    x = binary_data()
    pyro.set_rng_seed(0)
    model = build_model("sbn", x.shape[1])
    guide = build_guide("amortized", model)
    lean = LeanTrace_ELBO(max_plate_nesting=1)
    with pyro.validation_enabled(validated_first):
        loss_and_grads(lean, model, guide, x, idx=torch.arange(7), N=7)
    assert lean.lean is False and lean._pyro_only
    with pyro.validation_enabled(False):
        loss, grads = loss_and_grads(lean, model, guide, x, idx=torch.arange(7), N=7)
        assert lean.lean is False
        expected_loss, expected_grads = loss_and_grads(pyro.infer.Trace_ELBO(max_plate_nesting=1), model, guide, x,
                                                       idx=torch.arange(7), N=7)
    assert loss == pytest.approx(expected_loss, rel=LOSS_REL)
    torch.testing.assert_close(grads, expected_grads)


def test_validation_steps_go_to_trace_elbo():
    x = binary_data()
    pyro.set_rng_seed(0)
    model = build_model("vae", x.shape[1])
    guide = build_guide("amortized", model)
    with pyro.validation_enabled(True):
        assert_same(model, guide, x, idx=torch.arange(7), N=7, lean_expected=False)


def test_the_auto_and_analytic_kl_estimators_are_lean():
    assert isinstance(build_objective("elbo", 1), LeanTrace_ELBO)
    assert isinstance(build_objective("elbo", 4), pyro.infer.Trace_ELBO)
    assert isinstance(build_objective("tracemeanfield"), LeanTraceMeanField_ELBO)


def test_param_sites_are_left_out_only_where_no_handler_reads_them():
    """The training step's pass emits no param sites (nobody reads them); under an outer trace, such as the one a
    capture collects its inputs with, every parameter is there, and the switch is off again after the pass."""
    from zoo.core import params
    x = binary_data()
    pyro.set_rng_seed(0)
    model = build_model("vae", x.shape[1])
    guide = build_guide("amortized", model)
    lean = LeanTrace_ELBO(max_plate_nesting=1)
    with pyro.validation_enabled(False):
        with poutine.trace(param_only=True) as tracer:
            lean.differentiable_loss(model, guide, x, idx=torch.arange(7), N=7)
        seen = {id(site["value"]) for site in tracer.trace.nodes.values() if site["type"] == "param"}
        assert seen == {id(p) for m in (model, guide) for p in m.parameters()}
        assert params.quiet == 0

        class Boom(Exception):
            pass

        def failing_model(*args, **kwargs):
            assert params.quiet == 1            # the step's pass, with no handler outside it
            raise Boom

        with pytest.raises(Boom):
            lean.loss_and_grads(failing_model, guide, x, idx=torch.arange(7), N=7)
        assert params.quiet == 0
