"""``--compile`` (zoo.objectives.compiled.CompiledObjective): the compiled step is the eager step.

The loss and its backward pass are captured as one graph and compiled. With the same seed a compiled
step must draw the same latents as the eager step, so it must report the same bound and the same
gradient, step after step, while the parameters move (the comparisons of tests/test_jit.py). Most cases
run the captured graph through ``aot_eager`` (the same capture and functionalization, no code generated,
fast); two run Inductor, the default, which generates and builds C++ (where a C++ compiler is installed).
"""
import copy

import pyro
import pytest
import torch

from test_jit import (CASE_IDS, CASES, D, N, _data, _trajectory, assert_same_trajectory, objective_of,  # the same cases
                      case, fit_eager_and)
from zoo.core.errors import ZooError
from zoo.registry import build_guide, build_model, build_objective
from zoo.objectives.compiled import CompiledObjective, cpu_compiler

#: steps that read a tensor's value in Python (sampling a categorical: torch.multinomial; summing an enumerated site):
#: refused by CompiledObjective.check, which a run calls before it writes anything
UNCAPTURABLE = {("categorical_vae", "rloo"), ("sbn", "enum")}
INDUCTOR = {("vae", "amortized", "elbo"), ("vae", "iaf", "iwae")}


def _compiled(name, backend, **kw):
    objective = build_objective(name, compile=True, **kw)
    objective.backend = backend
    return objective


@pytest.mark.parametrize("model_name,guide_name,objective_name,model_kw,guide_kw", CASES, ids=CASE_IDS)
@pytest.mark.slow
def test_compiled_steps_match_the_eager_steps(model_name, guide_name, objective_name, model_kw, guide_kw):
    x, model, guide, settings, lr = case(model_name, guide_name, objective_name, model_kw, guide_kw)
    backend = "inductor" if (model_name, guide_name, objective_name) in INDUCTOR and cpu_compiler() else "aot_eager"
    if (model_name, objective_name) in UNCAPTURABLE:
        objective = _compiled(objective_of(objective_name), "aot_eager", **settings)
        train_model = guide.training_model(model) if hasattr(guide, "training_model") else model
        with pytest.raises(ZooError, match="--compile cannot capture this step: .* use --jit \\(which runs it eagerly\\)"):
            objective.check(train_model, guide, x[:2], idx=torch.arange(2), N=N)
        return
    runs = []
    name = objective_of(objective_name)
    for objective in (build_objective(name, **settings), _compiled(name, backend, **settings)):
        m, g = copy.deepcopy((model, guide))
        runs.append(_trajectory(objective, m, g, x, lr=lr))
    assert_same_trajectory(*runs)


def test_buffers_updated_in_the_step_are_written_back():
    """A decaying baseline's running average is updated in place by each step, inside the compiled graph."""
    x = _data("sbn")
    pyro.set_rng_seed(1)
    model = build_model("sbn", D)
    guide = build_guide("amortized", model, baseline="decaying")
    ends = []
    for objective in (build_objective("tracegraph"), _compiled("tracegraph", "aot_eager")):
        m, g = copy.deepcopy((model, guide))
        _trajectory(objective, m, g, x)
        ends.append([b.clone() for b in g.buffers() if b.is_floating_point()])
    assert ends[0] and all(torch.allclose(a, b, rtol=1e-5, atol=1e-6) for a, b in zip(*ends))
    assert any(not torch.equal(a, torch.zeros_like(a)) for a in ends[1])      # moved from their start


@pytest.mark.slow
def test_fit_with_compile_follows_the_eager_run_and_a_warmup_step_runs_eagerly():
    objective = _compiled("iwae", "inductor" if cpu_compiler() else "aot_eager", particles=2)
    eager, compiled = fit_eager_and(objective, kl_warmup=1)        # epoch 1 tempered (eager), then compiled
    assert compiled == pytest.approx(eager, rel=1e-5)
    assert len(objective._compiled) == 1                            # epochs 2 and 3: one shape, one capture


def test_flags_are_checked_before_anything_runs(tmp_path, capsys):
    with pytest.raises(ZooError, match="two ways of capturing the same step"):
        build_objective("elbo", jit=True, compile=True)
    with pytest.raises(ZooError, match="--compile captures .*'dreg' is not one of them"):
        build_objective("dreg", compile=True)
    objective = build_objective("iwae", 7, compile=True)
    assert isinstance(objective, CompiledObjective) and objective.num_particles == 7
    from zoo.cli import main
    out = tmp_path / "run"
    assert main(["train", "vae", "--dataset", "digits", "--epochs", "1", "--jit", "--compile", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "--jit and --compile" in err and len(err.splitlines()) == 1 and not out.exists()


def test_a_cpu_without_a_compiler_is_told_so_in_one_line(tmp_path, capsys, monkeypatch):
    import shutil
    monkeypatch.delenv("CXX", raising=False)
    monkeypatch.setattr(shutil, "which", lambda name: None)
    from zoo.cli import main
    out = tmp_path / "run"
    assert main(["train", "vae", "--dataset", "digits", "--epochs", "1", "--compile", "--device", "cpu",
                 "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "no C++ compiler was found" in err and len(err.splitlines()) == 1 and not out.exists()


def test_an_uncapturable_step_is_refused_before_the_run_writes_anything(tmp_path, capsys):
    from zoo.cli import main
    out = tmp_path / "run"
    assert main(["train", "sbn", "--layers", "4", "--objective", "enum", "--dataset", "digits", "--epochs", "1",
                 "--compile", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "--compile cannot capture this step" in err and len(err.splitlines()) == 1 and not out.exists()


@pytest.mark.parametrize("objective_name", ["elbo", "tracemeanfield"])
def test_a_captured_step_makes_the_kept_prior_from_its_inputs(objective_name):
    """The N(0, I) prior kept between eager steps (zoo.models.priors.StandardPrior) is made afresh while a step is
    captured: the graph reads the prior's buffers as inputs and holds no tensor made before the capture."""
    x = _data("vae")[:5]
    pyro.set_rng_seed(1)
    model = build_model("vae", D, latent_dim=2, hidden=(8,))
    guide = build_guide("amortized", model)
    objective = _compiled(objective_name, "aot_eager")
    with pyro.validation_enabled(False):            # as the loop's steps after the first: the eager prior stays kept
        kept = model.prior()
        graph, _, _ = objective._graph(guide.training_model(model), guide, (x, torch.arange(5)), N)
        assert model.prior() is kept
    constants = [node.target for node in graph.graph.nodes if node.op == "get_attr"]
    assert not constants, constants


@pytest.mark.parametrize("backend", ["aot_eager", "inductor"])
def test_a_decoder_with_logits_far_from_zero_gets_the_eager_steps_finite_gradients(backend):
    """Logits of +-100 and +-30 (a trained decoder's background and a confident pixel): the captured step gives the
    eager step's loss and finite gradients (a likelihood written with a where over exp(l) gave NaN there once)."""
    if backend == "inductor" and cpu_compiler() is None:
        pytest.skip("no C++ compiler for Inductor")
    torch.manual_seed(0)
    model = build_model("vae", 12, latent_dim=2, hidden=(8,))
    guide = build_guide("amortized", model)
    with torch.no_grad():
        model.decoder[-1].bias.copy_(torch.tensor([100.0, -100.0, 95.0, 30.0, -30.0] + [0.0] * 7))
    x = torch.bernoulli(torch.full((5, 12), 0.5))
    results = []
    for objective in (build_objective("elbo"), _compiled("elbo", backend)):
        m, g = copy.deepcopy((model, guide))
        objective.loss_and_grads(m, g, x)                      # the compiled objective's first step runs eagerly
        for p in list(m.parameters()) + list(g.parameters()):
            p.grad = None
        torch.manual_seed(1)
        loss = objective.loss_and_grads(m, g, x)
        grads = [p.grad for p in list(m.parameters()) + list(g.parameters())]
        assert all(torch.isfinite(v).all() for v in grads)
        results.append((loss, grads))
    (eager_loss, eager_grads), (loss, grads) = results
    assert loss == pytest.approx(eager_loss, rel=1e-5)
    assert all(torch.allclose(a, b, rtol=1e-4, atol=1e-4) for a, b in zip(eager_grads, grads))
