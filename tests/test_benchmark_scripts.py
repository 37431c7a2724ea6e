"""The benchmark scripts treat bad input as the CLI does: one line on stderr, exit code 2, nothing written.

Each script runs as ``python benchmarks/SCRIPT.py ARGS`` would (``runpy`` with ``__name__ == "__main__"``),
but inside the test process, so the suite pays torch's import once rather than once per case; one case,
the last, runs in a subprocess, to keep the command-line entry itself under test.
"""
import math
import runpy
import subprocess
import sys
from pathlib import Path

import pytest
import torch

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def run_benchmark(script, args, monkeypatch, capsys):
    """Run ``benchmarks/SCRIPT`` as its command line would, in this process: its exit code and stderr."""
    monkeypatch.setattr(sys, "argv", [str(BENCHMARKS / script), *args])
    monkeypatch.setattr(sys, "path", list(sys.path))         # the scripts put benchmarks/ on it
    threads = torch.get_num_threads()
    try:
        runpy.run_path(str(BENCHMARKS / script), run_name="__main__")
        code = 0
    except SystemExit as e:
        code = e.code
    finally:
        torch.set_num_threads(threads)                        # some scripts train on one thread
    return code, capsys.readouterr().err


@pytest.mark.parametrize("script, args, says", [
    ("discrete_mnist.py", ["--lr-decay", "0", "--runs", "cat20x10-nvil", "--epochs", "1"], "--lr-decay must be in (0, 1]"),
    ("discrete_mnist.py", ["--temperature-min", "0", "--runs", "cat20x10-gumbel", "--epochs", "1"],
     "--temperature-min must be positive"),
    ("quality_mnist.py", ["--runs", "elbo", "--elbo-epochs", "1"], "binarized MNIST is not in"),
    ("relaxed_surrogate.py", ["--runs", "cat20x10-gumbel"], "no trained and evaluated run"),
    ("posterior_collapse.py", ["--decoders", "mlp,lstm"], "unknown decoder 'lstm'"),
    ("pyro_models_grid.py", ["--models", "gmm,lda"], "unknown model 'lda'"),
    ("pyro_models_grid.py", ["--global-guides", "auto"], "--global-guides takes normal and/or delta"),
    ("posterior_collapse.py", ["--remedies", "dropout"], "unknown remedy 'dropout'"),
    ("posterior_collapse.py", ["--free-bits", "-1"], "--free-bits must be at least 0"),
    ("posterior_collapse.py", ["--epochs", "5", "--trajectory", "3,9"], "--trajectory epochs must lie in 1..--epochs (5)"),
    ("posterior_collapse.py", ["--decoders", "mlp", "--remedies", "none", "--epochs", "2", "--trajectory", "1,2"],
     "binarized MNIST is not in"),
    ("posterior_collapse.py", ["--decoders", "mlp", "--remedies", "none", "--epochs", "1"], "binarized MNIST is not in"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, monkeypatch, capsys, script, args, says):
    out = tmp_path / "out"
    empty = tmp_path / "no_data"
    empty.mkdir()
    monkeypatch.chdir(tmp_path)
    code, err = run_benchmark(script, ["--data-dir", str(empty), "--out", str(out), *args], monkeypatch, capsys)
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and says in lines[0], err
    assert "Traceback" not in err
    assert not out.exists()


@pytest.mark.parametrize("script, args, says", [
    ("eval_throughput.py", ["--chains", "0"], "--limit, --is-samples, --ais-limit, --temperatures, --chains and "
                                              "--ais-batch must be at least 1"),
    ("eval_throughput.py", [], "binarized MNIST is not in"),
    ("hvae_saturation.py", ["--epochs", "0"], "--epochs must be at least 1"),
    ("hvae_saturation.py", ["--variants", "tanh,relu"], "unknown variant 'relu'; choose from tanh, gated"),
    ("hvae_saturation.py", ["--epochs", "1"], "binarized MNIST is not in"),
    ("mixture_precision.py", ["--samples", "0"], "--epochs, --eval-limit and --samples must be at least 1"),
    ("mixture_precision.py", ["--epochs", "1"], "binarized MNIST is not in"),
    ("structured_posterior.py", ["--epochs", "0"], "--epochs, --eval-samples and --iwae-k must be at least 1"),
    ("structured_posterior.py", ["--models", "m2,vae"], "unknown model 'vae'; choose from m2, hvae"),
    ("structured_posterior.py", ["--seeds", "0,a"], "--seeds must be comma-separated integers"),
    ("structured_posterior.py", ["--dataset", "binarized_mnist"], "binarized MNIST is not in"),
    ("structured_posterior.py", ["--objective", "tracegraph"], "unknown objective 'tracegraph'; choose from elbo, enum"),
    ("structured_posterior.py", ["--objective", "enum", "--models", "m2,hvae"],
     "model 'hvae' does not fit --objective enum: objective 'enum' sums over discrete latents"),
    ("latent_families.py", ["--families", "gaussian,hyperbolic"], "unknown latent family 'hyperbolic'"),
    ("latent_families.py", ["--dims", "1,5"], "a sphere needs d >= 2"),
    ("latent_families.py", ["--dims", "2,x"], "--dims takes whole numbers"),
    ("latent_families.py", ["--dataset", "cifar"], "unknown --dataset 'cifar'"),
    ("latent_families.py", ["--patience", "0"], "--patience must be at least 1 epoch"),
    ("expressive_mnist.py", ["--patience", "0"], "--patience must be at least 1 epoch"),
    ("expressive_mnist.py", ["--runs", "vae_hvi9"], "unknown run 'vae_hvi9'; choose from"),
    ("latent_families.py", ["--epochs", "1", "--dims", "2"], "binarized MNIST is not in"),
    ("step_overhead.py", ["--small", "--threads", "0"], "--threads must be at least 1, got 0"),
])
def test_named_result_scripts_refuse_bad_input_in_one_line(tmp_path, monkeypatch, capsys, script, args, says):
    empty = tmp_path / "no_data"
    empty.mkdir()
    code, err = run_benchmark(script, ["--data-dir", str(empty), "--name", str(tmp_path / "result"), *args],
                              monkeypatch, capsys)
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and says in lines[0], err
    assert not list(tmp_path.glob("result*"))


@pytest.mark.parametrize("script, args, says", [
    ("refit_start.py", ["--runs", "vae-elbo,sbn-elbo"], "unknown run 'sbn-elbo'; pick from vae-elbo"),
    ("refit_start.py", ["--runs", ","], "--runs names no run"),
    ("refit_start.py", ["--seeds", "0"], "--seeds must be at least 1"),
    ("quickstart_cost.py", ["--repeats", "0"], "--repeats must be at least 1"),
    ("step_instructions.py", ["--steps", "0"], "--steps must be at least 1"),
    ("step_instructions.py", ["--jobs", "0"], "--jobs must be at least 1"),
    ("homework_seed_sweep.py", ["--seeds", "0"], "--seeds must be at least 1"),
    ("homework_seed_sweep.py", ["--mutant-seeds", "0"], "--mutant-seeds must be at least 1"),
    ("homework_seed_sweep.py", ["--calibration-rate", "2"], "--calibration-rate must be in (0, 1)"),
    ("homework_seed_sweep.py", ["--assignments", "bernoulli_vae,hw9"], "unknown assignment 'hw9'"),
    ("homework_seed_sweep.py", ["--assignments", "wake_sleep_and_iwae", "--only", "reference,iwae_scale_detach"],
     "--only names no file of wake_sleep_and_iwae: iwae_scale_detach"),
    ("homework_seed_sweep.py", ["--rewrite-page"], "is not a sweep's result file"),
    ("homework_seed_sweep.py", ["--assignments", "wake_sleep_and_iwae", "--files", "correct", "--only",
                                "iwae_scale_detached"], "--only names no correct file"),
    ("fault_injection.py", ["--families", "sigkill,flood"], "--families takes names from sigkill, full_disk"),
    ("fault_injection.py", ["--kills", "0"], "--kills must be at least 1"),
    ("fault_injection.py", ["--flips", "-1"], "--flips at least 0"),
    ("fault_injection.py", ["--free-kib", "16,a"], "--free-kib takes comma-separated KiB from 0 to 1024"),
    ("fault_injection.py", ["--free-kib", "-4"], "--free-kib takes comma-separated KiB from 0 to 1024"),
    ("bernoulli_kernel.py", ["--repeats", "0"], "--repeats must be at least 1"),
    ("fixed_model_gradients.py", ["--stages", "1,x"], "--stages takes comma-separated epochs"),
    ("fixed_model_gradients.py", ["--stages", "0,5"], "--stages must be epochs >= 1"),
    ("calibration_exam.py", ["--models", "two_mode,nine_modes"], "--models takes names from"),
])
def test_scripts_without_data_refuse_bad_input_in_one_line(tmp_path, monkeypatch, capsys, script, args, says):
    """The scripts that take no ``--data-dir`` (a refit comparison on the embedded digits, the homework sweep, the
    fault run)."""
    code, err = run_benchmark(script, ["--name", str(tmp_path / "result"), *args], monkeypatch, capsys)
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and says in lines[0], err
    assert not list(tmp_path.glob("result*"))


def test_hvae_saturation_counts_saturated_tanh_units():
    """The saturation counter sees every tanh module of a network: a layer driven far past |h| = 0.99 counts
    as all saturated, one at h = 0 as none, and a network without tanh units is left out."""
    sys.path.insert(0, str(BENCHMARKS))
    try:
        from hvae_saturation import saturation
    finally:
        sys.path.remove(str(BENCHMARKS))
    from torch import nn
    import torch
    hot = nn.Sequential(nn.Linear(3, 4), nn.Tanh())
    cold = nn.Sequential(nn.Linear(3, 4), nn.Tanh())
    for net, bias in ((hot, 10.0), (cold, 0.0)):
        nn.init.zeros_(net[0].weight)
        nn.init.constant_(net[0].bias, bias)
    with saturation({"hot": hot, "cold": cold, "relu": nn.Sequential(nn.Linear(3, 4), nn.ReLU())}) as saturated:
        hot(torch.randn(5, 3)), cold(torch.randn(5, 3))
    assert saturated == {"hot": 1.0, "cold": 0.0}


def test_structured_posterior_trains_each_structure_once_and_tables_it(tmp_path, monkeypatch, capsys):
    """The structured-vs-mean-field benchmark, one epoch: M2's prior-parents guide is its mean-field one and the
    posterior's is q(y | x) q(z | x, y); the hvae's two structured guides are one (a chain); equal structures
    are trained once and share their figures, and every figure is a finite score of the test images."""
    import json
    code, err = run_benchmark("structured_posterior.py", ["--epochs", "1", "--seeds", "0,1", "--eval-samples", "4",
                                                          "--iwae-k", "2", "--eval-limit", "20",
                                                          "--name", str(tmp_path / "result")], monkeypatch, capsys)
    assert code == 0, err
    result = json.loads((tmp_path / "result.json").read_text())
    summary = {(e["model"], e["guide"]): e for e in result["summary"]}
    assert summary[("m2", "prior-parents")]["same_as"] == "mean-field"
    assert summary[("m2", "posterior")]["structure"] == "q(y \\| x) q(z \\| x, y)"
    assert summary[("hvae", "posterior")]["same_as"] == "prior-parents"
    assert summary[("hvae", "prior-parents")]["structure"] == "q(z1 \\| x) q(z2 \\| x, z1)"
    assert summary[("m2", "prior-parents")]["elbo"] == summary[("m2", "mean-field")]["elbo"]
    trained = {(r["model"], r["guide"]) for r in result["runs"]}
    assert trained == {("m2", "mean-field"), ("m2", "posterior"), ("hvae", "mean-field"), ("hvae", "prior-parents")}
    assert len(result["runs"]) == 8 and result["num_test"] == 20
    assert all(math.isfinite(r[k]) for r in result["runs"] for k in ("elbo", "iwae_bound", "log_likelihood"))
    table = [line for line in (tmp_path / "result.md").read_text().splitlines() if line.startswith("| m2 |")
             or line.startswith("| hvae |")]
    assert len(table) == 6 and all(len(line.replace("\\|", "").strip("|").split("|")) == 7 for line in table)


def test_structured_posterior_under_enum_runs_m2_alone_and_records_its_objective(tmp_path, monkeypatch, capsys):
    """``--objective enum`` (y summed exactly, Pyro's TraceEnum_ELBO) on M2, the models that fit it by default:
    the hvae has no discrete latent and is left out, the objective is in the JSON and the Markdown, and each
    guide's ELBO on the test images (which sums y in expectation too) is a finite bound below its log p(x)."""
    import json
    code, err = run_benchmark("structured_posterior.py", ["--objective", "enum", "--epochs", "1", "--seeds", "0",
                                                          "--eval-samples", "8", "--iwae-k", "2", "--eval-limit", "20",
                                                          "--name", str(tmp_path / "result")], monkeypatch, capsys)
    assert code == 0, err
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["objective"] == "enum" and "TraceEnum_ELBO" in result["protocol"]
    assert {(r["model"], r["guide"]) for r in result["runs"]} == {("m2", "mean-field"), ("m2", "posterior")}
    assert all(r["elbo"] <= r["log_likelihood"] + 0.5 and math.isfinite(r["elbo"]) for r in result["runs"])
    assert "objective enum" in (tmp_path / "result.md").read_text().splitlines()[0]


def test_m2_under_enum_draws_z_for_each_y_only_with_the_posteriors_guide():
    """Why the benchmark's enum run can tell the guides apart: with y enumerated (its K values on a dimension of
    their own), the posterior's guide q(y | x) q(z | x, y) draws a z for each value of y, mean-field's q(z | x)
    one z for all of them; and M2's enum loss with the mean-field guide equals the hand sum
    -sum_n sum_y q(y | x_n) [log p(x_n | y, z_n) + log p(z_n) - log q(z_n | x_n) + log(1/K) - log q(y | x_n)]
    at the guide's one z_n."""
    import pyro
    import pyro.distributions as dist
    from pyro import poutine
    from pyro.infer import config_enumerate
    from zoo.objectives.enum import EnumELBO
    sys.path.insert(0, str(BENCHMARKS))
    try:
        from structured_posterior import build
    finally:
        sys.path.remove(str(BENCHMARKS))
    x = (torch.rand(6, 12, generator=torch.Generator().manual_seed(0)) > 0.5).float()
    idx, K = torch.arange(6), 10
    shapes = {}
    for name in ("mean-field", "posterior"):
        pyro.set_rng_seed(0)
        model, guide = build("m2", name, 12)
        trace = poutine.trace(poutine.enum(config_enumerate(guide, "parallel"), first_available_dim=-2)).get_trace(
            x, idx=idx, N=6)
        shapes[name] = tuple(trace.nodes["z"]["value"].shape)
        if name == "mean-field":
            pyro.set_rng_seed(1)
            loss = EnumELBO().loss(model.model, guide, x, idx=idx, N=6)
            pyro.set_rng_seed(1)
            guide_trace = poutine.trace(poutine.enum(config_enumerate(guide, "parallel"), first_available_dim=-2)
                                        ).get_trace(x, idx=idx, N=6)
            with torch.no_grad():
                z = guide_trace.nodes["z"]["value"]                                      # (6, z_dim)
                log_q_z = guide_trace.nodes["z"]["fn"].log_prob(z)
                ys = guide_trace.nodes["y"]["value"]                                      # y's K values
                log_q_y = guide_trace.nodes["y"]["fn"].log_prob(ys).reshape(K, 6).T         # log q(y | x_n)
                assert torch.equal(ys.reshape(K, K), torch.eye(K)[ys.reshape(K, K).argmax(-1)])
                q_y = log_q_y.exp()
                assert torch.allclose(q_y.sum(-1), torch.ones(6))
                conditioned = poutine.condition(model.model, data={"z": z, "y": ys})
                model_trace = poutine.trace(conditioned).get_trace(x, idx=idx, N=6)
                log_p_x = model_trace.nodes["x"]["fn"].log_prob(x).reshape(K, 6).T         # log p(x_n | y, z_n)
                log_p_z = dist.Normal(0., 1.).log_prob(z).sum(-1)
                hand = -(q_y * (log_p_x + (log_p_z - log_q_z).unsqueeze(-1) - math.log(K) - log_q_y)).sum()
            assert loss == pytest.approx(hand.item(), rel=1e-5)
    assert shapes["posterior"] == (K, 6, 8) and shapes["mean-field"] == (6, 8)


def test_run_grid_table_with_one_scored_image(tmp_path, monkeypatch):
    """Scoring a single image leaves no data standard error: the benchmark table shows a dash there
    and the JSON a null, instead of failing after the training."""
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import common
    finally:
        sys.path.remove(str(BENCHMARKS))
    from zoo.experiments.config import RunConfig
    monkeypatch.setattr(common, "RESULTS", tmp_path / "results")
    config = RunConfig.make(model="vae", dataset="digits", epochs=1, latent_dim=2, hidden=[16],
                       eval_samples=8, iwae_k=4, eval_limit=1, device="cpu")
    rows = common.run_grid("one_image", "one image", [("vae", config, None)], tmp_path / "runs", protocol="test")
    assert rows[0]["log_likelihood_data_se"] is None and rows[0]["num_data"] == 1
    row = next(line for line in (tmp_path / "results" / "one_image.md").read_text().splitlines()
               if line.startswith("| vae |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[7] == "–"          # the "± data se" column
    assert cells[6] != "–"          # the Monte Carlo se is still there


def test_run_grid_with_keep_best_scores_and_names_the_best_epoch(tmp_path, monkeypatch):
    """With keep_best the grid scores the epoch of the best validation ELBO and its table says which one."""
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import common
    finally:
        sys.path.remove(str(BENCHMARKS))
    from zoo.experiments.config import RunConfig
    monkeypatch.setattr(common, "RESULTS", tmp_path / "results")
    config = RunConfig.make(model="vae", dataset="digits", epochs=3, latent_dim=2, hidden=[16], lr=1e-2,
                       eval_samples=8, iwae_k=4, eval_limit=20, device="cpu", keep_best=True)
    rows = common.run_grid("best", "best", [("vae", config, None)], tmp_path / "runs", protocol="test")
    valid = [h["valid_elbo"] for h in rows[0]["history"]]
    best = max(range(len(valid)), key=lambda i: (valid[i], i)) + 1
    assert rows[0]["best_epoch"] == best
    row = next(line for line in (tmp_path / "results" / "best.md").read_text().splitlines()
               if line.startswith("| vae |"))
    assert [c.strip() for c in row.strip("|").split("|")][3] == f"3 (best {best})"


def test_gradient_variance_refuses_an_unknown_section(tmp_path):
    r = subprocess.run([sys.executable, str(BENCHMARKS / "gradient_variance.py"), "--sections", "sbn,vea",
                        "--name", "never_written"], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert r.returncode == 2 and "--sections takes toy, vae, sbn, cat, tighter, budget, weights, rainforth" in r.stderr.strip().splitlines()[-1], r.stderr
    assert not (BENCHMARKS / "results" / "never_written.json").exists()


def test_a_mutant_of_the_training_checks_alone_is_counted_over_the_seeds_they_ran():
    """Homework 5's fit_* mutants must fail a training check only, which the sweep runs at --mutant-train-seeds (5)
    of its --mutant-seeds (100): "any of its checks" read 5 / 100 detected where all 5 graded seeds caught it."""
    sys.path.insert(0, str(BENCHMARKS))
    try:
        from homework_seed_sweep import _detections
    finally:
        sys.path.remove(str(BENCHMARKS))
    from zoo.homework import get_assignment

    def outcome(runs, failures, lost):
        check = {"runs": runs, "failures": failures, "failing_seeds": [], "messages": [], "calibration_runs": 0,
                 "calibration_failures": 0, "margins": []}
        return {"correct": False, "seconds": 1.0, "seeds": 100, "seeds_losing_points": lost,
                "checks": {"iaf_closes_the_gap": check}}
    rows = _detections(get_assignment("expressive_posteriors"), {"fit_without_optimizer_step": outcome(5, 5, 5),
                                                                 "fit_half_caught": outcome(5, 3, 3)})
    rows = [r for r in rows if "any of its checks" in r]
    assert "| 5 / 5 |" in rows[0] and "| 3 / 5 |" in rows[1], rows


def test_a_sweeps_kept_outcomes_are_resumed_only_where_their_figures_can_be_true(tmp_path):
    """The homework sweep continues from runs/sweeps/NAME.partial.json; a file in the right shape whose figures no
    sweep with these arguments could give (more failures than runs, more runs than seeds, a count that is not a
    whole number) is started over rather than added into the committed rates."""
    import json
    sys.path.insert(0, str(BENCHMARKS))
    try:
        from homework_seed_sweep import _resumed
    finally:
        sys.path.remove(str(BENCHMARKS))
    key = {"assignments": "a", "seeds": 10, "train_seeds": 2, "mutant_seeds": 5, "mutant_train_seeds": 2,
           "calibration_rate": 0.1, "first_seed": 0, "checks": None}
    good = {"runs": 10, "failures": 1, "failing_seeds": [3], "messages": ["m"], "calibration_runs": 2,
            "calibration_failures": 0, "margins": [0.1]}
    partial = tmp_path / "s.partial.json"

    def resumed(**change):
        partial.write_text(json.dumps({"key": key, "assignments": {"a": {"ref": {"checks": {"c": {**good, **change}}}}}}))
        return _resumed(partial, key, lambda line: None)
    assert resumed()["a"]["ref"]["checks"]["c"]["runs"] == 10
    for bad in ({"failures": 11}, {"runs": 11, "failures": 0}, {"runs": 9.5}, {"runs": True}, {"failures": -1},
                {"calibration_failures": 3}, {"failing_seeds": [1, 2]}, {"failing_seeds": "3"}, {"margins": 0.1}):
        assert resumed(**bad) == {}, bad


def test_the_sweeps_vectorized_homework_4_draws_are_the_kits_draws_in_law():
    """The seed sweep draws homework 4's gradients by vmap over the file's own function; on the reference solution
    each row is laid out as the kit's probe lays it out (a surrogate without randomness gives the same rows to the
    last bit) and the draws agree with the kit's in mean (a two-sample z-test per coordinate, 300 draws each)."""
    import types

    from zoo.homework.in_process import load_file
    from zoo.homework.wake_sleep_and_iwae import probes
    sys.path.insert(0, str(BENCHMARKS))
    try:
        from homework_seed_sweep import _Memo, fast_probes
    finally:
        sys.path.remove(str(BENCHMARKS))
    fast = fast_probes("wake_sleep_and_iwae", _Memo())
    phase, iwae = (fast[f"zoo.homework.wake_sleep_and_iwae.probes:{name}"] for name in ("phase_gradients",
                                                                                         "iwae_gradients"))
    weights = torch.linspace(-1, 1, 200)

    def fixed(machine, *args):
        flat = torch.cat([p.reshape(-1) for p in machine.parameters()])
        return (flat * weights[:flat.numel()].repeat(flat.numel() // 200 + 1)[:flat.numel()] * flat).sum()
    plain = types.SimpleNamespace(wake_surrogate=fixed, iwae_bound=lambda log_joint, loc, log_scale, K:
                                  (log_joint(loc) - log_scale.sum(-1) * K))
    assert torch.equal(phase(plain, "wake_surrogate", 3, 4, [1, 2]),
                       probes.phase_gradients(plain, "wake_surrogate", 3, 4, [1, 2]))
    assert torch.allclose(iwae(plain, 3, 5, [1, 2]), probes.iwae_gradients(plain, 3, 5, [1, 2]), atol=1e-5)

    module = load_file(Path(probes.__file__).parents[1] / "solutions" / "wake_sleep_and_iwae.py", "sweep_vmap_test")
    seeds = list(range(300))
    for vectorized, kit in ((phase(module, "rws_surrogate", 7, 3, seeds),
                             probes.phase_gradients(module, "rws_surrogate", 7, 3, seeds)),
                            (iwae(module, 7, 5, seeds), probes.iwae_gradients(module, 7, 5, seeds))):
        assert vectorized.shape == kit.shape
        se = (vectorized.var(0) / len(seeds) + kit.var(0) / len(seeds)).sqrt().clamp_min(1e-6)
        z = (vectorized.mean(0) - kit.mean(0)) / se
        assert z.abs().max() < 5, z.abs().max()


def test_a_scoring_whose_figure_is_not_one_to_use_never_replaces_a_trusted_card(tmp_path, monkeypatch, capsys):
    """trained_models.py score copied a new scoring's files over the card whatever they said: a scoring on more
    images with a sampler too weak for them would have turned a ✓ card into an upper bound. It fails in one line and
    leaves the card as it was, unless --replace-trusted; a card that is no figure to use yet takes any scoring."""
    import json
    import shutil
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import trained_models
    finally:
        sys.path.remove(str(BENCHMARKS))
    source = BENCHMARKS / "checkpoints"
    catalogue = tmp_path / "checkpoints"
    for name in ("vae-vmf-mnist-elbo", "hvae-ladder-mnist-elbo"):
        shutil.copytree(source / name, catalogue / name, ignore=shutil.ignore_patterns("checkpoint.pt"))
    monkeypatch.setattr(trained_models, "CHECKPOINTS", catalogue)
    monkeypatch.setenv("PYRO_ZOO_CHECKPOINTS", str(catalogue))
    flagged = tmp_path / "work"
    flagged.mkdir()
    ais = json.loads((source / "vae-vmf-mnist-elbo" / "ais.json").read_text())
    ais["reliability"] = {**ais["reliability"], "frac_flagged": 0.4}
    (flagged / "ais.json").write_text(json.dumps({**ais, "frac_flagged": 0.4}))
    with pytest.raises(SystemExit) as stop:
        trained_models._refuse_a_worse_card("vae-vmf-mnist-elbo", flagged, replace_trusted=False)
    err = capsys.readouterr().err
    assert stop.value.code == 2 and "holds a figure to use" in err and len(err.strip().splitlines()) == 1, err
    trained_models._refuse_a_worse_card("vae-vmf-mnist-elbo", flagged, replace_trusted=True)
    trained_models._refuse_a_worse_card("hvae-ladder-mnist-elbo", flagged, replace_trusted=False)
    as_good = tmp_path / "same"
    as_good.mkdir()
    shutil.copyfile(source / "vae-vmf-mnist-elbo" / "ais.json", as_good / "ais.json")
    trained_models._refuse_a_worse_card("vae-vmf-mnist-elbo", as_good, replace_trusted=False)
