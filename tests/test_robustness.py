"""Training that loses nothing: exact resume after SIGKILL, determinism, NaN guards, malformed input."""
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyro
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import zoo
from zoo.training.checkpoint import load_checkpoint
from zoo.core.errors import ZooError
from zoo.experiments.config import RunConfig
from zoo.experiments.run import train_run

SMALL_RUN = dict(model="vae", guide="amortized", objective="elbo", dataset="digits", latent_dim=2, hidden=[64],
                 epochs=3, batch_size=10, eval_samples=10, iwae_k=5, seed=3)


def same_parameters(a: Path, b: Path) -> bool:
    sa, sb = load_checkpoint(a / "checkpoint.pt"), load_checkpoint(b / "checkpoint.pt")
    return all(torch.equal(sa[part][k], sb[part][k]) for part in ("model", "guide") for k in sa[part])


@pytest.mark.slow
def test_sigkill_at_a_random_step_then_resume_is_bitwise_identical(tmp_path):
    """A real `pyro-zoo train` process is SIGKILLed at a random moment after its first step checkpoint; resumed,
    it ends with exactly the parameters of an uninterrupted run with the same seed (CPU kernels are deterministic)."""
    args = ["--dataset", "digits", "--latent-dim", "2", "--hidden", "64", "--epochs", "3", "--batch-size", "10",
            "--eval-samples", "10", "--iwae-k", "5", "--seed", "3", "--checkpoint-every", "7", "--no-progress"]
    cmd = [sys.executable, "-m", "zoo", "train", "vae"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    full = subprocess.run(cmd + args + ["--out", str(tmp_path / "full")], capture_output=True, text=True, env=env,
                          timeout=300)
    assert full.returncode == 0, full.stderr
    killed_dir = tmp_path / "killed"
    proc = subprocess.Popen(cmd + args + ["--out", str(killed_dir)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=env)
    deadline = time.time() + 120
    while not (killed_dir / "checkpoint.pt").exists() and time.time() < deadline:
        time.sleep(0.01)
    time.sleep(random.Random().uniform(0.0, 1.0))
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    state = load_checkpoint(killed_dir / "checkpoint.pt")          # the kill left a readable checkpoint
    resumed = subprocess.run(cmd[:-1] + ["--resume", str(killed_dir), "--no-progress"], capture_output=True,
                             text=True, env=env, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert same_parameters(tmp_path / "full", killed_dir), (state["epoch"], state["step"])
    assert json.loads((killed_dir / "results.json").read_text())["history"] == \
        [dict(h, seconds=pytest.approx(h["seconds"], abs=1e9)) for h in
         json.loads((tmp_path / "full" / "results.json").read_text())["history"]]


@pytest.mark.slow
def test_same_seed_same_device_same_result(tmp_path):
    for name in ("a", "b"):
        train_run(RunConfig.make(**SMALL_RUN), tmp_path / name, progress=False)
    assert same_parameters(tmp_path / "a", tmp_path / "b")
    train_run(RunConfig.make(**{**SMALL_RUN, "seed": 4}), tmp_path / "c", progress=False)
    assert not same_parameters(tmp_path / "a", tmp_path / "c")


def test_set_determinism_switches_torch_on_a_change_and_clears_warn_only():
    """Off when off: no call to torch (the call imports torch._inductor, checked in a fresh process); on, strict even
    after a warn-only setting; off again."""
    from zoo.experiments.config import set_determinism
    probe = ("import sys, torch; from zoo.experiments.config import set_determinism; set_determinism(False); "
             "print('torch._inductor' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          check=True).stdout.split() == ["False"]
    try:
        torch.use_deterministic_algorithms(True, warn_only=True)
        set_determinism(True)
        assert torch.are_deterministic_algorithms_enabled()
        assert not torch.is_deterministic_algorithms_warn_only_enabled()
        set_determinism(False)
        assert not torch.are_deterministic_algorithms_enabled()
    finally:
        torch.use_deterministic_algorithms(False)


def test_deterministic_flag(tmp_path):
    try:
        train_run(RunConfig.make(**{**SMALL_RUN, "epochs": 1, "deterministic": True}), tmp_path / "d", progress=False)
        assert torch.are_deterministic_algorithms_enabled()
    finally:
        torch.use_deterministic_algorithms(False)


class NaNAtStep:
    """Trace_ELBO that turns into NaN at one step: stands in for a diverging run."""

    def __init__(self, at):
        self.inner, self.at, self.calls = pyro.infer.Trace_ELBO(), at, 0

    def loss_and_grads(self, model, guide, *args, **kwargs):
        self.calls += 1
        loss = self.inner.loss_and_grads(model, guide, *args, **kwargs)
        return float("nan") if self.calls == self.at else loss


def test_nan_aborts_naming_the_step_and_keeps_the_last_good_checkpoint(tmp_path, digits):
    from zoo.training.checkpoint import save_checkpoint
    from zoo.training.loop import fit
    model = zoo.build_model("vae", 64, latent_dim=2, hidden=(16,))
    guide = zoo.build_guide("amortized", model)
    path = tmp_path / "checkpoint.pt"
    saved = []

    def on_checkpoint(epoch, step, total, optimizer, scheduler, history):
        save_checkpoint(path, config={}, model=model.state_dict(), guide=guide.state_dict(), epoch=epoch, step=step)
        saved.append((epoch, step))

    with pytest.raises(ZooError, match=r"non-finite loss nan at epoch 1, step 12 \(global step 12\) with NaNAtStep"):
        fit(model, guide, NaNAtStep(12), digits.train, epochs=2, batch_size=50, lr=1e-3, progress=False,
            on_checkpoint=on_checkpoint, checkpoint_every=5)
    assert saved == [(0, 5), (0, 10)]
    state = load_checkpoint(path)
    assert state["step"] == 10 and all(torch.isfinite(v).all() for v in state["model"].values())


def test_gradient_clipping_bounds_the_step(digits):
    from zoo.training.loop import fit
    moved = {}
    for clip in (None, 1e-6):
        pyro.set_rng_seed(0)
        model = zoo.build_model("vae", 64, latent_dim=2, hidden=(16,))
        before = [p.detach().clone() for p in model.parameters()]
        guide = zoo.build_guide("amortized", model)
        fit(model, guide, zoo.build_objective("elbo"), digits.train[:100], epochs=1, batch_size=100, lr=1.0,
            optimizer=torch.optim.SGD(list(model.parameters()) + list(guide.parameters()), lr=1.0),
            clip_grad=clip, progress=False)
        moved[clip] = sum((p - b).norm() ** 2 for p, b in zip(model.parameters(), before)).sqrt().item()
    assert moved[1e-6] <= 1e-6 + 1e-9 < moved[None]


def test_learning_rate_schedule_is_recorded(tmp_path):
    s = train_run(RunConfig.make(**{**SMALL_RUN, "batch_size": 200, "lr_decay": 0.5}), tmp_path / "r", progress=False)
    assert [h["lr"] for h in s["history"]] == pytest.approx([1e-3, 5e-4, 2.5e-4])


def test_kl_warmup_schedule_is_recorded_and_resumes_exactly(tmp_path):
    """beta rises linearly over the first --kl-warmup epochs (recorded as each epoch's last beta), is a
    function of the step, so a run stopped during warm-up and resumed ends where an uninterrupted one does,
    and the optimizer gets --adam-betas and --adam-eps."""
    config = RunConfig.make(**{**SMALL_RUN, "epochs": 3, "batch_size": 200, "kl_warmup": 2, "adam_eps": 1e-3,
                          "adam_betas": [0.8, 0.99]})
    s = train_run(config, tmp_path / "whole", progress=False)
    assert [h.get("kl_weight") for h in s["history"]] == [0.5, 1.0, None]
    groups = load_checkpoint(tmp_path / "whole" / "checkpoint.pt")["optimizer"]["param_groups"]
    assert all(g["eps"] == 1e-3 and tuple(g["betas"]) == (0.8, 0.99) for g in groups)
    train_run(RunConfig.make(**{**config.to_json(), "epochs": 1}), tmp_path / "parts", progress=False)
    train_run(config, tmp_path / "parts", resume=True, progress=False)
    assert same_parameters(tmp_path / "whole", tmp_path / "parts")
    plain = train_run(RunConfig.make(**{**SMALL_RUN, "epochs": 1, "batch_size": 200}), tmp_path / "plain", progress=False)
    assert plain["history"][0]["loss"] != pytest.approx(s["history"][0]["loss"], rel=1e-3)


def test_resume_with_a_lower_learning_rate_and_a_new_decay(tmp_path):
    """What the NaN guard advises: resume the last good checkpoint with a lower --lr. The new rate
    applies from the resumed epoch on and the new --lr-decay schedules it from there."""
    out = tmp_path / "r"
    train_run(RunConfig.make(**{**SMALL_RUN, "epochs": 1, "batch_size": 200}), out, progress=False)
    s = train_run(RunConfig.make(**{**SMALL_RUN, "epochs": 3, "batch_size": 200, "lr": 1e-4, "lr_decay": 0.5}), out,
                  resume=True, progress=False)
    assert [h["lr"] for h in s["history"]] == pytest.approx([1e-3, 1e-4, 5e-5])


def test_a_new_learning_rate_restarts_at_that_rate_even_from_a_checkpoint_without_initial_lr(tmp_path):
    """A decayed run resumed with a new --lr restarts at the new --lr, also when its checkpoint
    was written by a run that began before learning-rate schedules existed (its optimizer groups
    carry no ``initial_lr``): the step size must not be the decayed rate scaled by new/old."""
    from zoo.training.checkpoint import save_checkpoint
    out = tmp_path / "r"
    train_run(RunConfig.make(**{**SMALL_RUN, "epochs": 2, "batch_size": 200, "lr_decay": 0.1}), out, progress=False)
    state = load_checkpoint(out / "checkpoint.pt")
    for group in state["optimizer"]["param_groups"]:
        del group["initial_lr"]
    save_checkpoint(out / "checkpoint.pt", **state)
    s = train_run(RunConfig.make(**{**SMALL_RUN, "epochs": 4, "batch_size": 200, "lr": 5e-4, "lr_decay": 0.5}), out,
                  resume=True, progress=False)
    assert [h["lr"] for h in s["history"]] == pytest.approx([1e-3, 1e-4, 5e-4, 2.5e-4])


def test_resume_a_checkpoint_of_the_unfused_adam(tmp_path, monkeypatch):
    """Checkpoints written before the optimizer was fused (PyTorch's default Adam) still resume,
    and the resumed run uses the fused update again."""
    import zoo.training.optimizer
    from zoo.training.checkpoint import save_checkpoint
    out = tmp_path / "r"
    train_run(RunConfig.make(**{**SMALL_RUN, "epochs": 1, "batch_size": 200}), out, progress=False)
    state = load_checkpoint(out / "checkpoint.pt")
    for group in state["optimizer"]["param_groups"]:
        group["fused"] = None
    save_checkpoint(out / "checkpoint.pt", **state)
    made = []

    def recording_make_optimizer(*args, **kwargs):
        made.append(make_optimizer(*args, **kwargs))
        return made[-1]
    make_optimizer = zoo.training.optimizer.make_optimizer
    monkeypatch.setattr("zoo.experiments.run.make_optimizer", recording_make_optimizer)
    s = train_run(RunConfig.make(**{**SMALL_RUN, "epochs": 2, "batch_size": 200}), out, resume=True, progress=False)
    assert [h["epoch"] for h in s["history"]] == [1, 2] and all(g["fused"] for g in made[0].param_groups)


def test_resume_refuses_a_checkpoint_with_another_config(tmp_path, capsys):
    from zoo.cli import main
    out = tmp_path / "run"
    train_run(RunConfig.make(**{**SMALL_RUN, "epochs": 1, "batch_size": 200}), out, progress=False)
    assert main(["train", "vae", "--resume", str(out), "--latent-dim", "3"]) == 2
    assert "--latent-dim was 2 when the checkpoint was made, not 3" in capsys.readouterr().err


def test_corrupt_npz_data_values(tmp_path, capsys):
    from zoo.cli import main
    arrays = {s: np.zeros((3, 4)) for s in ("train", "valid", "test")}
    arrays["valid"][1, 2] = np.nan
    np.savez(tmp_path / "binarized_mnist.npz", **arrays)
    assert main(["train", "vae", "--dataset", "binarized_mnist", "--data-dir", str(tmp_path),
                 "--out", str(tmp_path / "o")]) == 2
    assert "NaN" in capsys.readouterr().err
    np.savez(tmp_path / "binarized_mnist.npz", **{**arrays, "valid": np.zeros((0, 4))})
    assert main(["train", "vae", "--dataset", "binarized_mnist", "--data-dir", str(tmp_path),
                 "--out", str(tmp_path / "o")]) == 2
    assert "non-empty" in capsys.readouterr().err and not (tmp_path / "o").exists()


ARRAYS = st.one_of(
    hnp.arrays(st.sampled_from([np.float32, np.float64, np.int64, np.bool_, np.uint8]),
               hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=5),
               elements=None),
    hnp.arrays(np.float32, st.tuples(st.integers(0, 6), st.just(6)),
               elements=st.floats(allow_nan=True, allow_infinity=True, width=32)),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(a=ARRAYS)
def test_malformed_arrays_get_our_error_and_nothing_else(a, tmp_path_factory):
    """Random arrays into the loaders and the model entry points: either accepted, or a ZooError; never a
    deep exception from torch or numpy."""
    folder = tmp_path_factory.mktemp("npz")
    np.savez(folder / "binarized_mnist.npz", train=a, valid=a, test=a)
    try:
        from zoo.data import load_binarized_mnist
        load_binarized_mnist(folder, download=False, expected_sha256=None, num_features=6)
    except ZooError:
        pass
    x = torch.from_numpy(np.array(a))
    for name, options in (("vae", {"latent_dim": 2, "hidden": (4,)}), ("sbn", {"layers": (3,)}),
                          ("ppca", {"latent_dim": 2})):
        model = zoo.build_model(name, 6, **options)
        guide = zoo.build_guide("amortized", model, hidden=(4,))
        for call in (lambda model=model, guide=guide: zoo.fit(model, guide, zoo.build_objective("elbo"), x, epochs=1,
                                     batch_size=max(1, min(2, x.shape[0] if x.dim() else 1)), lr=1e-3, progress=False),
                     lambda model=model, guide=guide: zoo.evaluate(model, guide, x, num_samples=2, iwae_k=1)):
            try:
                call()
            except ZooError:
                pass


def test_tensorboard_logging(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    train_run(RunConfig.make(**{**SMALL_RUN, "epochs": 2, "batch_size": 200, "tensorboard": True}), tmp_path / "tb",
              progress=False)
    events = EventAccumulator(str(tmp_path / "tb" / "tensorboard"))
    events.Reload()
    tags = events.Tags()
    assert {"train/loss_per_datum", "train/grad_norm", "epoch/valid_elbo"} <= set(tags["scalars"])
    assert "samples" in tags["images"] and len(events.Scalars("train/loss_per_datum")) == 2 * 7


def test_a_non_finite_gradient_is_caught_even_when_the_loss_is_finite():
    from zoo.training.guards import check_finite
    p, q = torch.nn.Parameter(torch.ones(3)), torch.nn.Parameter(torch.ones(2))
    p.grad, q.grad = torch.ones(3), torch.tensor([1.0, float("inf")])
    with pytest.raises(ZooError, match="non-finite gradient at epoch 2, step 4"):
        check_finite(1.0, [p, q], epoch=1, step=3, global_step=10, objective=pyro.infer.Trace_ELBO())
    q.grad = torch.ones(2)
    check_finite(1.0, [p, q], epoch=1, step=3, global_step=10, objective=pyro.infer.Trace_ELBO())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf"), None])
def test_the_finiteness_check_finds_every_non_finite_value_and_changes_none(dtype, bad):
    from zoo.training.guards import any_non_finite
    tensors = [torch.randn(4, 3, dtype=dtype), torch.randn(5, dtype=dtype), torch.randn(2, 2, dtype=dtype)[:, 0]]
    if bad is not None:
        tensors[2][1] = bad                            # in the last tensor, a non-contiguous view
    before = [t.clone() for t in tensors]
    assert any_non_finite(tensors) is (bad is not None)
    for a, b in zip(tensors, before):
        torch.testing.assert_close(a, b, rtol=0, atol=0, equal_nan=True)
    assert any_non_finite([]) is False


@pytest.mark.parametrize("bad", [float("nan"), float("-inf"), None])
def test_the_finiteness_check_works_without_the_fused_kernel(monkeypatch, bad):
    from zoo.training.guards import any_non_finite

    def missing(*args, **kwargs):
        raise NotImplementedError("no such kernel on this device")
    monkeypatch.setattr(torch, "_amp_foreach_non_finite_check_and_unscale_", missing)
    tensors = [torch.randn(3), torch.randn(2, 2)]
    if bad is not None:
        tensors[1][1, 0] = bad
    assert any_non_finite(tensors) is (bad is not None)


def test_a_checkpoint_names_each_non_finite_tensor_and_writes_nothing(tmp_path):
    """The fused check finds the non-finite tensors of a nested state of mixed dtypes (an optimizer's float step
    counters, a float64 buffer, integers that are not checked); save_checkpoint names the first of them, says how
    many, and leaves the previous checkpoint as it was."""
    from zoo.core.errors import ZooError
    from zoo.training.checkpoint import load_checkpoint, non_finite_tensors, save_checkpoint
    state = {"config": {}, "guide": {"loc": torch.zeros(2)},
             "model": {"w": torch.randn(3, 2), "counts": torch.arange(4), "empty": torch.zeros(0)},
             "optimizer": {"state": {0: {"step": torch.tensor(3.0), "exp_avg": torch.randn(2).double()}},
                           "param_groups": [{"lr": 0.1}]}}
    assert non_finite_tensors(state) == []
    save_checkpoint(tmp_path / "c.pt", **state)
    state["model"]["w"][1, 0] = float("nan")
    state["optimizer"]["state"][0]["exp_avg"][1] = float("-inf")
    assert non_finite_tensors(state) == ["model.w", "optimizer.state.0.exp_avg"]
    with pytest.raises(ZooError, match=r"model.w holds NaN or inf \(2 tensor\(s\)\)"):
        save_checkpoint(tmp_path / "c.pt", **state)
    assert torch.isfinite(load_checkpoint(tmp_path / "c.pt")["model"]["w"]).all()


def test_keep_best_scores_the_epoch_with_the_best_validation_elbo(tmp_path, monkeypatch):
    """Validation ELBOs scripted to peak at epoch 2 of 4: best.pt holds exactly the model and guide
    after epoch 2 (a 2-epoch run of the same config is the reference), and both the run's own
    evaluation and a later `eval` score that state, not the last one."""
    import zoo.experiments.run
    from zoo.experiments.run import evaluate_run
    from zoo.experiments.trained import Invocation
    scripted = iter([-30.0, -20.0, -25.0, -20.5])
    monkeypatch.setattr(zoo.experiments.run, "bound_per_datum", lambda *a, **k: next(scripted))
    config = RunConfig.make(**{**SMALL_RUN, "epochs": 4, "batch_size": 200, "keep_best": True})
    s = train_run(config, tmp_path / "best", progress=False)
    assert s["best_epoch"] == 2 and s["epochs_trained"] == 4
    best = load_checkpoint(tmp_path / "best" / "best.pt")
    last = load_checkpoint(tmp_path / "best" / "checkpoint.pt")
    monkeypatch.setattr(zoo.experiments.run, "bound_per_datum", lambda *a, **k: 0.0)
    reference = train_run(RunConfig.make(**{**SMALL_RUN, "epochs": 2, "batch_size": 200}), tmp_path / "two", progress=False)
    two = load_checkpoint(tmp_path / "two" / "checkpoint.pt")
    for part in ("model", "guide"):
        assert all(torch.equal(best[part][k], two[part][k]) for k in two[part])
        assert not all(torch.equal(best[part][k], last[part][k]) for k in last[part])
    assert s["elbo"] == pytest.approx(reference["elbo"]) and evaluate_run(tmp_path / "best", Invocation(progress=False))[
        "elbo"] == pytest.approx(reference["elbo"])
    # eval, AIS, BDMC, the gaps and compress open the run one way: with best.pt's weights
    from zoo.experiments.trained import open_trained
    opened = open_trained(tmp_path / "best")
    assert opened.weights_file == tmp_path / "best" / "best.pt" and opened.best_epoch == 2
    for part, module in (("model", opened.model), ("guide", opened.guide)):
        state = module.state_dict()
        assert all(torch.equal(state[k], best[part][k]) for k in best[part])


def test_keep_best_needs_an_amortized_guide(tmp_path):
    with pytest.raises(ZooError, match="keep_best .* needs an amortized guide"):
        train_run(RunConfig.make(**{**SMALL_RUN, "guide": "meanfield", "keep_best": True}), tmp_path / "r", progress=False)
    assert not (tmp_path / "r").exists()


def test_keep_best_run_without_its_best_checkpoint_is_a_clear_error(tmp_path):
    from zoo.experiments.run import evaluate_run
    from zoo.experiments.trained import Invocation
    train_run(RunConfig.make(**{**SMALL_RUN, "epochs": 1, "batch_size": 200, "keep_best": True}), tmp_path / "r",
              progress=False)
    (tmp_path / "r" / "best.pt").unlink()
    before = (tmp_path / "r" / "results.json").read_text()
    with pytest.raises(ZooError, match="trained with --keep-best but .*best.pt is missing"):
        evaluate_run(tmp_path / "r", Invocation(progress=False))
    assert (tmp_path / "r" / "results.json").read_text() == before


def test_patience_stops_training_that_many_epochs_after_the_best_and_scores_the_best(tmp_path, monkeypatch, capsys):
    """Validation ELBOs scripted to peak at epoch 2: with patience 3 the run of at most 10 epochs stops after
    epoch 5, says so, records it, and scores epoch 2 (--keep-best's best.pt)."""
    import zoo.experiments.run
    scripted = iter([-30.0, -20.0, -25.0, -20.5, -21.0] + [-10.0] * 5)
    monkeypatch.setattr(zoo.experiments.run, "bound_per_datum", lambda *a, **k: next(scripted))
    config = RunConfig.make(**{**SMALL_RUN, "epochs": 10, "batch_size": 200, "keep_best": True, "patience": 3})
    s = train_run(config, tmp_path / "r", progress=False)
    assert s["epochs_trained"] == 5 and s["best_epoch"] == 2
    assert s["stopped_early"].startswith("early stopping after epoch 5: the validation ELBO has not improved for 3")
    assert "early stopping after epoch 5" in capsys.readouterr().out
    assert load_checkpoint(tmp_path / "r" / "checkpoint.pt")["epoch"] == 5


def test_a_stopped_run_resumed_with_the_same_patience_trains_no_more_and_with_more_patience_trains_on(
        tmp_path, monkeypatch):
    """Early stopping is a function of the history: resuming a stopped run with the same patience adds no epoch
    (an uninterrupted run would have stopped there too); a larger patience trains on, up to --epochs."""
    import zoo.experiments.run
    values = [-30.0, -20.0, -25.0, -26.0, -21.0, -22.0, -23.0, -24.0]
    scripted = iter(values)
    monkeypatch.setattr(zoo.experiments.run, "bound_per_datum", lambda *a, **k: next(scripted))
    make = lambda patience: RunConfig.make(**{**SMALL_RUN, "epochs": 8, "batch_size": 200, "keep_best": True,  # noqa: E731
                                              "patience": patience})
    out = tmp_path / "r"
    assert train_run(make(2), out, progress=False)["epochs_trained"] == 4
    again = train_run(make(2), out, resume=True, progress=False)
    assert again["epochs_trained"] == 4 and again["stopped_early"].startswith("early stopping after epoch 4")
    more = train_run(make(5), out, resume=True, progress=False)
    assert more["epochs_trained"] == 7 and more["best_epoch"] == 2
    assert more["stopped_early"].startswith("early stopping after epoch 7")
    before = {f: (out / f).read_bytes() for f in ("config.json", "checkpoint.pt", "results.json")}
    with pytest.raises(ZooError, match="--patience 3 would stop the run .* its record says --patience 5"):
        train_run(make(3), out, resume=True, progress=False)     # nothing would train: the record would disagree
    assert {f: (out / f).read_bytes() for f in before} == before


def test_no_stop_while_the_validation_elbo_improves_ties_count_as_improvement():
    from zoo.training.loop import early_stop
    rows = lambda *v: [{"epoch": i + 1, "valid_elbo": x} for i, x in enumerate(v)]  # noqa: E731
    assert early_stop(rows(-3.0, -2.0, -1.0), 1) is None
    assert early_stop(rows(-3.0, -2.0, -2.0, -2.0), 2) is None            # a tie is the later epoch's
    assert early_stop(rows(-3.0, -2.0, -2.5, -2.5), 2).startswith("early stopping after epoch 4")
    assert early_stop(rows(-3.0, -2.0, -2.5, -2.5), None) is None
    assert early_stop(rows(-1.0, -2.0, -3.0, -4.0), 2, warmup=3) is None    # warm-up epochs never count
    assert "not improved for 2 epochs after the warm-up" in early_stop(rows(-1.0, -2.0, -3.0, -4.0, -5.0), 2, warmup=3)
    assert early_stop([{"epoch": 1, "valid_elbo": None}], 1) is None


def test_patience_needs_keep_best_and_one_process(tmp_path, digits):
    from zoo.rules import verdict
    with pytest.raises(ZooError, match="patience .* add --keep-best"):
        train_run(RunConfig.make(**{**SMALL_RUN, "patience": 2}), tmp_path / "r", progress=False)
    assert not (tmp_path / "r").exists()
    config = RunConfig.make(**{**SMALL_RUN, "patience": 2, "keep_best": True})
    assert verdict(config, digits) is None
    assert "only rank 0" in str(verdict(config, digits, distributed=True))


def test_patience_in_zoo_fit_without_a_validation_elbo_is_refused(digits):
    from zoo.training.config import TrainConfig
    from zoo.training.loop import fit
    model = zoo.build_model("vae", digits.train.shape[1], latent_dim=2, hidden=(16,))
    guide = zoo.build_guide("amortized", model)
    optimizer = torch.optim.Adam(list(model.parameters()) + list(guide.parameters()))
    with pytest.raises(ZooError, match="early stopping .* computes none"):
        fit(model, guide, zoo.build_objective("elbo"), digits.train[:100],
            TrainConfig(epochs=2, batch_size=50, lr=1e-3, patience=1, progress=False), optimizer)
    with pytest.raises(ZooError, match="patience must be at least 1 epoch, got 0"):
        fit(model, guide, zoo.build_objective("elbo"), digits.train[:100],
            TrainConfig(epochs=2, batch_size=50, lr=1e-3, patience=0, progress=False), optimizer)


@pytest.mark.slow
def test_a_jit_run_resumes_where_it_would_have_been_and_follows_the_eager_run(tmp_path):
    """--jit captures its step afresh after a resume without drawing from the run's random stream, so
    1 + 2 epochs resumed end where 3 uninterrupted epochs do; and a --jit run samples what the eager
    run samples, so it ends at (numerically) the eager run's parameters."""
    config = RunConfig.make(**{**SMALL_RUN, "objective": "iwae", "particles": 3, "batch_size": 100, "jit": True})
    whole = train_run(config, tmp_path / "whole", progress=False)
    train_run(RunConfig.make(**{**config.to_json(), "epochs": 1}), tmp_path / "parts", progress=False)
    train_run(config, tmp_path / "parts", resume=True, progress=False)
    a, b = (load_checkpoint(tmp_path / d / "checkpoint.pt") for d in ("whole", "parts"))
    for part in ("model", "guide"):
        for k in a[part]:
            assert torch.allclose(a[part][k], b[part][k], rtol=1e-4, atol=1e-6), k
    eager = train_run(RunConfig.make(**{**config.to_json(), "jit": False}), tmp_path / "eager", progress=False)
    assert [h["loss"] for h in whole["history"]] == pytest.approx([h["loss"] for h in eager["history"]], rel=1e-4)


def test_weight_decay_is_decoupled_and_resumes_with_the_run(tmp_path):
    """--weight-decay is AdamW's: with a zero gradient a step shrinks every parameter by exactly
    lr * decay (an L2 term in Adam's gradient would move it by lr instead, whatever its size);
    a trained run keeps it in its config and resumes with it."""
    from guides import Amortized
    from zoo.models import SBN
    from zoo.training.optimizer import make_optimizer
    torch.manual_seed(0)
    m = SBN(x_dim=6, layers=(3,))
    g = Amortized(m, hidden=(4,))
    before = [p.detach().clone() for p in list(m.parameters()) + list(g.parameters())]
    opt = make_optimizer(m, g, lr=0.1, weight_decay=0.5)
    assert isinstance(opt, torch.optim.AdamW)
    for p in list(m.parameters()) + list(g.parameters()):
        p.grad = torch.zeros_like(p)
    opt.step()
    after = list(m.parameters()) + list(g.parameters())
    for b, a in zip(before, after):
        assert torch.allclose(a, b * (1 - 0.1 * 0.5), atol=1e-7)
    assert type(make_optimizer(m, g, lr=0.1)) is torch.optim.Adam

    out = tmp_path / "r"
    train_run(RunConfig.make(**{**SMALL_RUN, "epochs": 1, "batch_size": 200, "weight_decay": 0.01}), out, progress=False)
    s = train_run(RunConfig.make(**{**SMALL_RUN, "epochs": 2, "batch_size": 200, "weight_decay": 0.01}), out,
                  resume=True, progress=False)
    assert [h["epoch"] for h in s["history"]] == [1, 2]
    assert load_checkpoint(out / "checkpoint.pt")["optimizer"]["param_groups"][0]["weight_decay"] == 0.01


def test_resume_with_a_lower_temperature_floor_anneals_on_from_the_resumed_step(tmp_path):
    """The relaxed guide's tau_t = max(tau_min, tau_0 exp(-r t)) is a function of the step: each epoch
    records the tau of its last step, and a run resumed with a new --temperature-min follows the new
    schedule from there (here: the floor drops from 0.5 to 0.2 once exp(-r t) is below both)."""
    config = dict(model="sbn", layers=[8], guide="relaxed", objective="tracemeanfield", dataset="digits",
                  temperature=1.0, temperature_min=0.5, anneal_rate=1.0, epochs=1, batch_size=200,
                  eval_samples=10, iwae_k=5, seed=3)
    out = tmp_path / "r"
    first = train_run(RunConfig.make(**config), out, progress=False)
    assert [h["temperature"] for h in first["history"]] == pytest.approx([0.5])
    s = train_run(RunConfig.make(**{**config, "epochs": 3, "temperature_min": 0.2}), out, resume=True, progress=False)
    assert [h["temperature"] for h in s["history"]] == pytest.approx([0.5, 0.2, 0.2])
    assert load_checkpoint(out / "checkpoint.pt")["guide"]["temperature"].item() == pytest.approx(0.2)
    with pytest.raises(ZooError, match="straight_through"):
        train_run(RunConfig.make(**{**config, "epochs": 4, "straight_through": True}), out, resume=True, progress=False)


def test_the_non_finite_check_works_inside_and_after_inference_mode():
    """Its reused flag is an ordinary tensor even when the first check ran under torch.inference_mode."""
    from zoo.training import guards
    guards._CHECK_BUFFERS.clear()
    with torch.inference_mode():
        assert guards.any_non_finite([torch.tensor([1.0, float("nan")])])
    assert guards.any_non_finite([torch.tensor([float("inf")])]) and not guards.any_non_finite([torch.ones(3)])
    assert not guards.any_non_finite([])


def test_the_non_finite_flag_is_reset_after_each_finding_and_a_known_device_gives_the_same_answers():
    """The reused flag is left set by nothing: check after check, with the device given (as the training loop gives
    it) or found, each answer is that call's own."""
    from zoo.training.guards import any_non_finite, one_device
    cpu = torch.device("cpu")
    finite, bad = [torch.ones(3), torch.zeros(2, 2)], [torch.ones(3), torch.tensor([float("nan")])]
    answers = [any_non_finite(t, device) for t in (bad, finite, bad, bad, finite) for device in (None, cpu)]
    assert answers == [True, True, False, False, True, True, True, True, False, False]
    assert one_device(finite) == cpu and one_device([]) is None


def test_an_interrupted_non_finite_check_leaves_no_finding_behind(monkeypatch):
    """A Ctrl-C that lands right after the fused kernel has flagged a NaN: the next check of finite tensors is
    still answered for itself (the flag reset before the interrupt goes on)."""
    from zoo.training import guards
    kernel = torch._amp_foreach_non_finite_check_and_unscale_

    def interrupted(*args):
        kernel(*args)
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "_amp_foreach_non_finite_check_and_unscale_", interrupted)
    with pytest.raises(KeyboardInterrupt):
        guards.any_non_finite([torch.tensor([float("nan")])])
    monkeypatch.setattr(torch, "_amp_foreach_non_finite_check_and_unscale_", kernel)
    assert not guards.any_non_finite([torch.ones(3)])
