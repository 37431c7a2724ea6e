"""REBAR and RELAX (zoo.objectives.relax): unbiased for the exact ELBO gradient, which enumeration gives, while
their control variate trains; and the control variate's training lowers the guide gradient's variance.

The same SBN, data and tolerance as ``test_arm.py`` (one layer of 3 bits over 6 pixels, an amortized guide; the mean
of S calls within Z = 4.5 of its standard errors of the ``enum`` gradient in every coordinate). Each call also
steps the control variate, which depends only on earlier calls' draws, so every call is unbiased and so is the
mean. An estimator that dropped grad c(z) - grad c(z~) (the correction that keeps the relaxed control variate
from biasing the score term) lies far outside.
"""
import json
import math

import pyro
import pytest
import torch

from test_arm import R, S, Z, _grads, _setup, estimate
from zoo.core.errors import ZooError
from zoo.objectives.relax import REBAR
from zoo.registry import build_model, build_objective
from zoo.rules import check_combination


@pytest.mark.parametrize("name", ["rebar", "relax"])
def test_the_relaxed_control_variate_gradient_is_unbiased_for_the_enumerated_elbo(name):
    mean, se, _, exact, n_model = estimate(name)
    varies = se > 0
    assert torch.allclose(mean[~varies], exact[~varies], atol=1e-12)
    z = ((mean - exact)[varies] / se[varies]).abs()
    assert z.max() < Z, f"|estimate - exact| / se: {z.tolist()}"


class WithoutCorrection(REBAR):
    """The wrong estimator: [f(b) - c(z~)] grad log q(b) alone, a control variate that is not corrected for."""

    def _surrogates(self, model, guide, *args, **kwargs):
        hard, value, theta_loss, phi_loss, passes = super()._surrogates(model, guide, *args, **kwargs)
        f = hard.log_w.detach()
        lw, zeta = passes["ztilde_held"]
        c = self.control(lw.log_w, zeta, f.shape).detach()
        bits = self.last_bits
        log_q = sum(-torch.nn.functional.binary_cross_entropy_with_logits(
            bits.logits[n].expand_as(bits.noise[n][2]), bits.noise[n][2], reduction="none").sum(-1)
            for n in bits.logits)
        return hard, value, theta_loss, -hard.scale * ((f - c) * log_q).mean(0).sum(), passes


def test_a_control_variate_left_uncorrected_is_caught():
    model, guide, x = _setup()
    exact, n_model = _grads(build_objective("enum"), model, guide, x)
    objective = WithoutCorrection(num_particles=1)
    pyro.set_rng_seed(1)
    draws = torch.stack([_grads(objective, model, guide, x.repeat(R, 1))[0] / R for _ in range(S)])
    mean, se = draws.mean(0), draws.std(0) / math.sqrt(S)
    varies = se > 0
    assert (((mean - exact)[varies] / se[varies]).abs()).max() > Z + 4


@pytest.mark.slow
def test_training_the_control_variate_lowers_the_encoder_gradient_variance():
    """The guide gradient's variance at a fixed model and guide (their gradients are computed, not applied): REBAR
    from a poor start (eta = 1/2: the relaxed objective at half its scale) before and after 300 steps of its variance
    objective, against the score function with no control variate (reinforce): training must cut the variance by
    more than 4x, and REBAR's untrained start must already be 4x below reinforce's."""
    model, guide, x = _setup()
    n_model = sum(p.numel() for p in model.parameters())

    def guide_variance(objective, calls=200):
        pyro.set_rng_seed(3)
        draws = torch.stack([_grads(objective, model, guide, x.repeat(R, 1))[0][n_model:] / R for _ in range(calls)])
        return draws.var(0).sum().item()

    def frozen(objective):
        for group in objective.cv_optimizer.param_groups:
            group["lr"] = 0.0
        return objective

    plain = guide_variance(build_objective("reinforce", 1))
    rebar = REBAR(num_particles=1, cv_lr=1e-2)
    _grads(rebar, model, guide, x)                              # builds the control variate
    with torch.no_grad():
        rebar.control.eta.fill_(0.5)
    state = rebar.state_dict()
    start = REBAR(num_particles=1)
    start.load_state_dict(state)
    _grads(start, model, guide, x)
    before = guide_variance(frozen(start))
    guide_variance(rebar, calls=300)                            # 300 steps of the variance objective
    after = guide_variance(frozen(rebar))
    assert after < before / 4 < plain / 4, (after, before, plain)
    assert rebar.control.eta.item() > 0.8


def test_the_control_variate_state_round_trips():
    model, guide, x = _setup()
    a = build_objective("relax", 1)
    assert a.state_dict() == {}
    for _ in range(3):
        _grads(a, model, guide, x)
    c = build_objective("relax", 1)
    c.load_state_dict(a.state_dict())                           # kept until its first step builds the control variate
    pyro.set_rng_seed(5)
    _grads(a, model, guide, x)
    pyro.set_rng_seed(5)
    _grads(c, model, guide, x)
    for (k, va), (_, vc) in zip(a.state_dict()["control"].items(), c.state_dict()["control"].items()):
        assert torch.equal(va, vc), k


@pytest.mark.parametrize("model_name,options,guide,says", [
    ("vae", {}, "amortized", "takes one layer of binary latents"),
    ("sbn", {"layers": (3, 2)}, "amortized", "takes one layer of binary latents"),
    ("sbn", {"layers": (3,)}, "relaxed", "does not sample"),
])
def test_other_latents_and_guides_are_refused_in_one_line(model_name, options, guide, says):
    for name in ("rebar", "relax"):
        with pytest.raises(ZooError, match=says) as e:
            check_combination(build_model(model_name, 6, **options), guide, name)
        assert "\n" not in str(e.value)


def test_a_relax_run_stopped_and_resumed_ends_where_an_uninterrupted_one_does(tmp_path):
    """The control variate and its Adam are in the checkpoint: 1 + 1 epochs resumed equal 2 uninterrupted ones."""
    from test_robustness import same_parameters
    from zoo.experiments.config import RunConfig
    from zoo.experiments.run import train_run
    from zoo.training.checkpoint import load_checkpoint

    config = RunConfig.make(model="sbn", layers=[8], guide="amortized", objective="relax", dataset="digits", epochs=2,
                            batch_size=200, eval_samples=10, iwae_k=5, seed=3)
    train_run(config, tmp_path / "whole", progress=False)
    train_run(RunConfig.make(**{**config.to_json(), "epochs": 1}), tmp_path / "parts", progress=False)
    train_run(config, tmp_path / "parts", resume=True, progress=False)
    assert same_parameters(tmp_path / "whole", tmp_path / "parts")
    a, b = (load_checkpoint(tmp_path / d / "checkpoint.pt")["objective"]["control"] for d in ("whole", "parts"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_the_gradient_diagnostics_train_the_control_variate_first_then_hold_it():
    from zoo.evaluation.gradients import GradientStudy, diagnose
    model, guide, x = _setup()
    result = diagnose(model, guide, x, ["rebar", "relax"], [1], repeats=4,
                      study=GradientStudy(reference=False, control_variate_steps=3))
    assert {r["objective"] for r in result["rows"]} == {"rebar", "relax"}
    assert all(r["control_variate_steps"] == 3 and r["variance"] > 0 for r in result["rows"])
    held = REBAR(num_particles=1)
    _grads(held, model, guide, x)
    held.train_control_variate = False
    before = {k: v.clone() for k, v in held.control.state_dict().items()}
    _grads(held, model, guide, x)
    assert all(torch.equal(before[k], v) for k, v in held.control.state_dict().items())


@pytest.mark.parametrize("objective_state,says", [
    ({"control": {"eta": torch.ones(3)}, "optimizer": {}}, "does not fit this model's latents"),
    pytest.param({"control": 5}, "holds 'control' and 'optimizer' dicts", marks=pytest.mark.slow),
])
def test_a_doctored_control_variate_in_a_checkpoint_is_one_line_and_changes_nothing(tmp_path, capsys, objective_state,
                                                                                   says):
    from zoo.cli import main
    out = tmp_path / "run"
    assert main(["train", "sbn", "--layers", "8", "--objective", "rebar", "--dataset", "digits", "--epochs", "1",
                 "--batch-size", "200", "--eval-samples", "5", "--iwae-k", "2", "--out", str(out),
                 "--no-progress"]) == 0
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    state["objective"] = objective_state
    torch.save(state, out / "checkpoint.pt")
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    capsys.readouterr()
    assert main(["train", "--resume", str(out), "--epochs", "2", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert says in err and "\n" not in err
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before


@pytest.mark.slow
def test_the_gradient_diagnostics_of_a_rebar_run_use_the_run_s_own_control_variate(tmp_path, capsys):
    """``pyro-zoo gradients --checkpoint RUN`` of a REBAR run measures REBAR with the control variate the run trained
    (no steps of a fresh one), and trains one afresh, as at any checkpoint, for RELAX (another estimator's net)."""
    from zoo.cli import main
    from zoo.training.checkpoint import load_checkpoint
    out = tmp_path / "run"
    assert main(["train", "sbn", "--layers", "8", "--objective", "rebar", "--dataset", "digits", "--epochs", "1",
                 "--batch-size", "200", "--eval-samples", "5", "--iwae-k", "2", "--out", str(out),
                 "--no-progress"]) == 0
    assert "eta" in load_checkpoint(out / "checkpoint.pt")["objective"]["control"]      # the run saved its state
    assert main(["gradients", "sbn", "--layers", "8", "--dataset", "digits", "--objectives", "rebar,relax",
                 "--particles", "1", "--repeats", "3", "--batch-size", "20", "--checkpoint", str(out),
                 "--out", str(tmp_path / "g"), "--no-progress"]) == 0
    rows = {r["objective"]: r for r in json.loads((tmp_path / "g" / "gradients.json").read_text())["rows"]}
    assert rows["rebar"]["control_variate"] == "checkpoint" and rows["rebar"]["control_variate_steps"] == 0
    assert rows["relax"]["control_variate"] == "trained here" and rows["relax"]["control_variate_steps"] == 200
    # a doctored control variate in the checkpoint: one line, exit 2, no output folder, the run folder unchanged
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    state["objective"] = {"control": {"eta": torch.ones(3)}, "optimizer": {}}
    torch.save(state, out / "checkpoint.pt")
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    capsys.readouterr()
    assert main(["gradients", "sbn", "--layers", "8", "--dataset", "digits", "--objectives", "rebar",
                 "--particles", "1", "--repeats", "3", "--batch-size", "20", "--checkpoint", str(out),
                 "--out", str(tmp_path / "g2"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert "does not fit this model's latents" in err and "\n" not in err
    assert not (tmp_path / "g2").exists()
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before


def test_a_control_variate_given_to_the_diagnostics_is_the_one_measured():
    """With the control variate switched off (eta = 0: REBAR is then the bare score function), the held state that
    ``diagnose`` is given shows in the variance: several times that of REBAR with its control variate on."""
    from zoo.evaluation.gradients import GradientStudy, diagnose
    model, guide, x = _setup()
    off = REBAR(num_particles=1)
    _grads(off, model, guide, x)
    with torch.no_grad():
        off.control.eta.zero_()
    state = off.state_dict()

    def guide_variance(trained):
        rows = diagnose(model, guide, x, ["rebar"], [1], repeats=40,
                        study=GradientStudy(reference=False, control_variate_steps=3,
                                            trained_control_variate=trained))["rows"]
        return next(r for r in rows if r["group"] == "guide")

    held, fresh = guide_variance((REBAR, state)), guide_variance(None)
    assert held["control_variate_steps"] == 0 and fresh["control_variate_steps"] == 3
    assert held["variance"] > 3 * fresh["variance"], (held["variance"], fresh["variance"])
