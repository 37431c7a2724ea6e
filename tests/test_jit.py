"""``--jit`` (zoo.objectives.jit.JitObjective): the captured step is the eager step, and where it cannot be
captured it is the eager step.

With the same seed, a replayed step must draw the same latents as the eager step, so it must
report the same bound and the same gradient, step after step, while the parameters move. A
capture that froze anything (a parameter, the loss value, an annealed temperature, the random
draws) would fail these comparisons. The cases run the captured graph through ``aot_eager`` (the
capture and functionalization of ``--compile``, no code generated, fast); Inductor's code is compared
with the eager step in tests/test_compiled.py and in a ``pyro-zoo train --jit`` run below.
"""
import copy

import pyro
import pytest
import torch

from zoo.core.errors import ZooError
from zoo.objectives.jit import JIT_OBJECTIVES, JitObjective
from zoo.training.warmup import KLWarmup
from zoo.registry import build_guide, build_model, build_objective
from zoo.training.loop import fit

N, D = 40, 12

CASES = [
    ("vae", "amortized", "elbo", {}, {}),
    ("vae", "meanfield", "elbo", {}, {"num_data": N}),
    ("vae", "iaf", "iwae", {}, {}),
    ("vae", "amortized", "tracemeanfield", {}, {}),
    ("vae", "amortized", "renyi", {}, {}),
    ("ppca", "exact", "elbo", {"latent_dim": 2}, {}),
    ("sbn", "amortized", "elbo", {}, {}),                                  # score-function terms
    ("sbn", "amortized", "tracegraph", {}, {"baseline": "decaying"}),      # running average, updated in place
    ("sbn", "amortized", "tracegraph", {}, {"baseline": "neural"}),        # NVIL: b_psi(x) and its own loss
    ("sbn", "meanfield", "vimco", {}, {"num_data": N}),
    ("categorical_vae", "amortized", "rloo", {"num_variables": 3, "num_classes": 4}, {}),   # leave-one-out baselines
    ("vae", "amortized", "stl", {}, {}),
    ("sbn", "amortized", "enum", {"layers": (4,)}, {}),                    # all 16 configurations summed
    ("sbn", "amortized", "rws", {}, {}),                                   # wake and sleep phases in one step
    ("vae", "amortized", "rws", {"likelihood": "gaussian"}, {}),           # a reparameterized dream x'
    ("vae", "amortized", "reinforce", {}, {}),
    ("sbn", "relaxed", "elbo", {}, {"anneal_rate": 0.05}),                 # temperature annealed each step
    ("categorical_vae", "relaxed", "iwae", {"num_variables": 3, "num_classes": 4}, {}),
    ("sbn", "amortized", "arm", {}, {}),                                   # an antithetic pair from kept uniforms
    ("sbn", "amortized", "disarm", {"layers": (6, 4)}, {}),                # two layers of bits drawn from x
    ("sbn", "amortized", "iwae:disarm", {}, {}),                           # multi-sample DisARM: a swap per sample
    ("sbn", "amortized", "arm", {"layers": (6, 4)}, {"structured": True}),   # a pair per layer, upper layers redrawn
]


def _data(model_name):
    torch.manual_seed(0)
    if model_name == "ppca":
        return torch.randn(N, D)
    return torch.bernoulli(torch.full((N, D), 0.4))


def _trajectory(objective, model, guide, x, steps=4, lr=0.05):
    """Loss values and gradients of ``steps`` SGD steps on minibatches of 10 (the same for every caller)."""
    train_model = guide.training_model(model) if hasattr(guide, "training_model") else model
    params = list(model.parameters()) + list(guide.parameters())
    optimizer = torch.optim.SGD(params, lr=lr / N)
    pyro.set_rng_seed(5)
    values, grads = [], []
    for step in range(steps):
        if hasattr(guide, "on_step"):
            guide.on_step(10 * step)
        idx = torch.arange(10 * (step % 4), 10 * (step % 4) + 10)
        optimizer.zero_grad(set_to_none=True)
        values.append(objective.loss_and_grads(train_model, guide, x[idx], idx=idx, N=N))
        grads.append([p.grad.clone() if p.grad is not None else None for p in params])
        optimizer.step()
    return values, grads


def assert_same_trajectory(eager, other):
    """Two runs of ``_trajectory`` took the same steps: a fresh bound every step (not a frozen one), equal bounds,
    and equal gradients up to float32 sums taken in another order."""
    (eager_values, eager_grads), (values, grads) = eager, other
    assert len(set(values)) == len(values)
    assert values == pytest.approx(eager_values, rel=1e-5, abs=1e-4)
    for eager_step, step in zip(eager_grads, grads):
        for a, b in zip(eager_step, step):
            assert (a is None) == (b is None)
            if a is not None:
                assert (a - b).abs().max() <= 1e-4 * a.abs().max() + 1e-5


def case(model_name, guide_name, objective_name, model_kw, guide_kw):
    """One of CASES built: data, model, guide, and the settings of its objective and its steps (an objective
    named ``BOUND:ESTIMATOR`` is the bound with that estimator; build it by :func:`objective_of`)."""
    x = _data(model_name)
    pyro.set_rng_seed(1)
    model = build_model(model_name, D, **model_kw)
    guide = build_guide(guide_name, model, **guide_kw)
    bound, _, estimator = objective_name.partition(":")
    settings = {"particles": 3 if bound in ("iwae", "renyi", "vimco", "rws", "rloo") else 1,
                "insomnia": 0.5 if bound == "rws" else 1.0,                    # rws: wake-phi and sleep-phi
                **({"estimator": estimator} if estimator else {})}
    lr = 1e-3 if objective_name == "reinforce" else 0.05       # REINFORCE's raw gradients are huge
    return x, model, guide, settings, lr


def objective_of(objective_name: str) -> str:
    """The objective a CASES name builds: its bound (the estimator is in :func:`case`'s settings)."""
    return objective_name.partition(":")[0]


CASE_IDS = [f"{m}-{g}-{o}-{gk.get('baseline', '')}" for m, g, o, _, gk in CASES]
#: the cases the default suite runs (a reparameterized step, a buffer updated in place, an annealed temperature, and
#: both fallbacks to the eager step); the others, which tests/test_compiled.py also runs, are slow
QUICK = {"vae-amortized-elbo-", "sbn-amortized-tracegraph-decaying", "sbn-relaxed-elbo-",
         "categorical_vae-amortized-rloo-", "sbn-amortized-enum-"}
JIT_CASES = [pytest.param(*c, id=i, marks=() if i in QUICK else pytest.mark.slow) for c, i in zip(CASES, CASE_IDS)]


def jit_objective(name, *args, jit=True, **kw):
    """``build_objective(name, jit=jit)``; a captured step runs through ``aot_eager`` and keeps its notes."""
    objective = build_objective(name, *args, jit=jit, **kw)
    if jit:
        objective.backend, objective.notes = "aot_eager", []
        objective.say = objective.notes.append
    return objective


#: steps that read a tensor's value in Python (sampling a categorical: torch.multinomial; summing an enumerated site)
UNCAPTURABLE = {("categorical_vae", "rloo"), ("sbn", "enum")}


@pytest.mark.parametrize("model_name,guide_name,objective_name,model_kw,guide_kw", JIT_CASES)
def test_replayed_steps_match_the_eager_steps(model_name, guide_name, objective_name, model_kw, guide_kw):
    x, model, guide, settings, lr = case(model_name, guide_name, objective_name, model_kw, guide_kw)
    runs = []
    for jit in (False, True):
        m, g = copy.deepcopy((model, guide))        # together: the exact guide reads its model
        objective = jit_objective(objective_of(objective_name), jit=jit, **settings)
        runs.append(_trajectory(objective, m, g, x, lr=lr))
        assert not any(b.requires_grad for b in g.buffers())          # a replayed update stays out of the graph
    assert_same_trajectory(*runs)
    (capture,) = objective._compiled.values()                          # 4 steps of one shape: one capture
    if (model_name, objective_name) in UNCAPTURABLE:                   # run eagerly, and said once, with the reason
        assert capture.fn is None and len(objective.notes) == 1
        assert objective.notes[0].startswith("note: --jit runs this step eagerly: something in it (")
        assert "reads a tensor's value in Python" in objective.notes[0]
    else:
        assert capture.fn is not None and len(objective.notes) == 1 and "captured (aot_eager)" in objective.notes[0]


def test_a_step_under_kl_warmup_runs_eagerly_with_the_tempered_bound():
    x = _data("vae")
    pyro.set_rng_seed(1)
    model = build_model("vae", D)
    guide = build_guide("amortized", model)
    eager, jit = build_objective("elbo"), jit_objective("elbo")
    values = {}
    for name, objective in (("eager", eager), ("jit", jit)):
        for beta in (0.2, 1.0):
            pyro.set_rng_seed(3)
            with KLWarmup(beta) if beta < 1 else pyro.poutine.messenger.Messenger():
                values[name, beta] = objective.loss_and_grads(model, guide, x)
    assert values["jit", 0.2] == pytest.approx(values["eager", 0.2], rel=1e-6)
    assert values["jit", 1.0] == pytest.approx(values["eager", 1.0], rel=1e-5)
    assert values["jit", 0.2] < values["jit", 1.0]             # the tempered bound, not a frozen trace of beta = 1
    assert not jit._compiled                                   # no step was traced under a handler
    assert len(jit.notes) == 1 and "outer Pyro handler" in jit.notes[0]      # said, once for both steps


def test_a_step_found_uncapturable_is_said_once_however_many_batch_shapes():
    """An epoch's short last batch is another shape, so another capture is tried; its reason is not said again."""
    x, model, guide, settings, lr = case("sbn", "amortized", "enum", {"layers": (4,)}, {})
    objective = jit_objective(objective_of("enum"), **settings)
    for size in (10, 7, 10, 7):
        idx = torch.arange(size)
        objective.loss_and_grads(model, guide, x[idx], idx=idx, N=N)
    assert len(objective._compiled) == 2 and all(c.fn is None for c in objective._compiled.values())
    assert len(objective.notes) == 1 and "runs this step eagerly" in objective.notes[0]


def test_a_replaced_parameter_is_traced_afresh():
    x = _data("vae")
    model = build_model("vae", D)
    guide = build_guide("amortized", model)
    objective = jit_objective("elbo")
    objective.loss_and_grads(model, guide, x)
    objective.loss_and_grads(model, guide, x)
    old = model.decoder[0].weight
    model.decoder[0].weight = torch.nn.Parameter(old.detach().clone())     # a new tensor object
    guide.zero_grad(set_to_none=True)
    objective.loss_and_grads(model, guide, x)
    assert model.decoder[0].weight.grad is not None and old.grad is not None
    assert not torch.equal(model.decoder[0].weight.grad, old.grad)         # old.grad: from the earlier steps
    assert len(objective._compiled) == 1                                   # the stale trace was let go


def fit_eager_and(captured, **fit_kw):
    """The loss histories of fit with the eager IWAE (K = 2) and with ``captured``, from the same VAE and seeds."""
    x = _data("vae")
    pyro.set_rng_seed(1)
    model = build_model("vae", D)
    guide = build_guide("amortized", model)
    histories = []
    for objective in (build_objective("iwae", 2), captured):
        m, g = copy.deepcopy((model, guide))        # together: the exact guide reads its model
        pyro.set_rng_seed(2)
        history = fit(m, g, objective, x, epochs=3, batch_size=10, lr=1e-2, seed=0, progress=False, **fit_kw)
        histories.append([r["loss"] for r in history])
    return histories


def test_fit_with_jit_follows_the_eager_run():
    eager, jit = fit_eager_and(jit_objective("iwae", 2))
    assert jit == pytest.approx(eager, rel=1e-5)


def test_attributes_pass_through_and_stateful_objectives_are_refused():
    objective = build_objective("iwae", 7, jit=True)
    assert isinstance(objective, JitObjective) and objective.num_particles == 7
    for name in ("rws_pyro", "dreg", "renyi_pyro"):
        assert name not in JIT_OBJECTIVES
        with pytest.raises(ZooError, match="drop --jit"):
            build_objective(name, jit=True)


def test_the_relaxed_guide_hands_fit_one_view_of_a_model():
    """One relaxed view per model, so a --jit trace keyed on it survives repeated fit calls; it reads
    the temperature of its own guide, also in a copy."""
    model = build_model("sbn", D)
    guide = build_guide("relaxed", model, temperature=1.0)
    view = guide.training_model(model)
    assert guide.training_model(model) is view
    objective = jit_objective("elbo")
    x = _data("sbn")
    for _ in range(2):
        fit(model, guide, objective, x, epochs=1, batch_size=10, lr=1e-3, progress=False)
    assert len(objective._compiled) == 1
    m2, g2 = copy.deepcopy((model, guide))
    g2.temperature.fill_(0.25)
    pyro.set_rng_seed(0)
    trace = pyro.poutine.trace(g2.training_model(m2)).get_trace(x, None, None)
    assert float(trace.nodes["z1"]["fn"].base_dist.temperature) == 0.25 and float(guide.temperature) == 1.0


@pytest.mark.parametrize("jit", [False, True])
@pytest.mark.slow
def test_the_sleep_phase_trains_only_the_guide(jit):
    """rws: the model's gradient is wake-theta's whatever --insomnia is. The dreamt (x', z') are data for the
    guide; a reparameterized x' (Gaussian decoder) must not pass sleep-phi's gradient back into the decoder,
    eagerly or replayed (where torch.no_grad would not hold: the trace does not record grad mode)."""
    x = _data("vae")
    model = build_model("vae", D, likelihood="gaussian")
    guide = build_guide("amortized", model)
    grads = {}
    for insomnia in (0.0, 1.0):
        objective = jit_objective("rws", 3, insomnia=insomnia, jit=jit)
        for _ in range(2):                                     # with --jit: the trace, then a replay
            model.zero_grad(set_to_none=True)
            pyro.set_rng_seed(4)
            objective.loss_and_grads(model, guide, x)
        grads[insomnia] = [p.grad.clone() for p in model.parameters()]
    for a, b in zip(grads[0.0], grads[1.0]):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("objective_name", ["elbo", "iwae", "tracemeanfield"])
def test_a_user_pyro_model_replays_as_it_runs_eagerly(objective_name):
    """A model wrapped by zoo.from_pyro (its network registered with pyro.module inside the user's function)
    traces and replays like a zoo model: the same bound and the same gradients, step after step."""
    import zoo
    from user_models import user_vae

    x = _data("vae")
    runs = []
    for jit in (False, True):
        pyro.set_rng_seed(1)                     # the same initial networks for both
        m = zoo.from_pyro(user_vae, D)
        g = build_guide("amortized", m)
        runs.append(_trajectory(jit_objective(objective_name, 3 if objective_name == "iwae" else 1, jit=jit),
                                m, g, x))
    assert_same_trajectory(*runs)


def test_train_with_jit_compiles_says_so_once_and_warns_nothing(tmp_path, capsys):
    """``pyro-zoo train --jit``: the notice that --jit is now a torch.compile capture, once; the capture's cost, once per
    batch shape (digits: 1,257 training images, batches of 100 and a last one of 57); no FutureWarning (the
    deprecated torch.jit.trace is gone) and none of torch's notes about its C++ builder."""
    import warnings
    from zoo.cli import main
    from zoo.objectives.jit import JIT_NOTICE
    out = tmp_path / "run"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main(["train", "vae", "--dataset", "digits", "--epochs", "1", "--jit", "--eval-samples", "20", "--iwae-k", "10",
                     "--no-progress", "--out", str(out)]) == 0
    printed = capsys.readouterr()
    lines = printed.out.splitlines()
    assert sum(JIT_NOTICE in line for line in lines) == 1
    captures = [line for line in lines if "the training step in" in line]
    assert len(captures) == 2 and all(line.startswith("note: captured") for line in captures)
    assert not [w for w in caught if issubclass(w.category, FutureWarning)]
    assert "CUDA" not in printed.err and "jit.trace" not in printed.err


def test_without_a_cpp_compiler_jit_runs_the_captured_graph_uncompiled_and_says_so(monkeypatch):
    """Where --compile refuses (no C++ compiler for Inductor on a CPU), --jit still captures the step, runs it through
    aot_eager, says why once, and takes the eager step's values."""
    import zoo.objectives.jit as jit_module
    monkeypatch.setattr(jit_module, "cpu_compiler", lambda: None)
    x, model, guide, settings, lr = case("vae", "amortized", "elbo", {}, {})
    runs = []
    for jit in (False, True):
        m, g = copy.deepcopy((model, guide))
        objective = build_objective("elbo", jit=jit)
        notes = []
        objective.say = notes.append
        runs.append(_trajectory(objective, m, g, x, lr=lr))
    assert objective.backend == "aot_eager" and objective._compiled
    assert notes[0].startswith("note: --jit: no C++ compiler") and len(notes) == 2      # the reason, then the capture
    assert_same_trajectory(*runs)


def test_a_capture_s_cost_is_said_per_batch_shape_even_when_two_take_the_same_time():
    """The cost note is one per shape, whatever its text; the once-per-run notes are the fallbacks'."""
    objective = jit_objective("elbo")
    objective._note("captured (aot_eager) the training step in 0.8 s (once per batch shape)", once=False)
    objective._note("captured (aot_eager) the training step in 0.8 s (once per batch shape)", once=False)
    objective._note("--jit runs this step eagerly: a reason")
    objective._note("--jit runs this step eagerly: a reason")
    assert len(objective.notes) == 3
