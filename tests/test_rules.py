"""`pyro-zoo list` calls a run valid exactly when `pyro-zoo train` accepts it, for every (model, guide,
objective) the registry names; and each estimator's capabilities are declared once, refusing by default.

"Train accepts" is train's own path (:func:`zoo.experiments.run.train_run`) up to where training would
start: it is stopped right after :func:`~zoo.experiments.run.prepare` returns. "List says valid" is the
function ``pyro-zoo list MODEL --guide G --objective O ...`` prints (:func:`zoo.cli.run_verdict`) and,
for a sample, the command itself.
"""
import subprocess
import sys

import pytest
import torch

import zoo.experiments.run as run_module
from zoo.cli import _config, build_parser, main, run_verdict
from zoo.core.components import DATASETS, GUIDES, MODELS, OBJECTIVES
from zoo.core.errors import ZooError
from zoo.data import load_dataset
from zoo.experiments.config import RunConfig
from zoo.objectives.axes import Estimator
from zoo.objectives.base import PerDatumObjective
from zoo.rules import DataFacts, compatibility, model_options

#: the options a run may get wrong, one set per run checked beside the defaults (as train's flags)
OPTION_SETS = [["--structured"], ["--keep-best"], ["--kl-warmup", "2"], ["--jit"], ["--distributed"],
               ["--jit", "--distributed"], ["--global-guide", "delta"], ["--baseline", "neural"], ["--particles", "1"],
               ["--particles", "2"], ["--batch-size", "5000"], ["--free-bits", "0.5"], ["--insomnia", "0"],
               ["--dataset", "digits-gray"], ["--dataset", "synthetic"]]


class _Accepted(Exception):
    """Raised where train would start training: the run passed every check."""


@pytest.fixture(scope="module")
def datasets():
    """The datasets that need no download, loaded once."""
    return {name: load_dataset(name) for name, c in DATASETS.items() if not c.capability("needs_data_dir")}


def _home_dataset(model: str, datasets) -> str:
    """The first dataset the model can be built for (a multimodal model needs one with views)."""
    for name, data in datasets.items():
        try:
            config = RunConfig(model=model, dataset=name)
            MODELS.build(model, data.x_dim, **model_options(config, DataFacts.of(data)))
            return name
        except ZooError:
            continue
    raise AssertionError(f"no offline dataset fits {model}")


@pytest.fixture
def train_accepts(monkeypatch, tmp_path, datasets):
    """``train_accepts(args)``: None if train's path accepts the run of the parsed ``train`` command, else its
    error, on the preloaded data; under ``--distributed`` the rank's process group is a single CPU process."""
    real_prepare = run_module.prepare

    def prepared(config, data=None, device=None, distributed=False):
        real_prepare(config, data, device, distributed)
        raise _Accepted
    monkeypatch.setattr(run_module, "prepare", prepared)
    monkeypatch.setattr(run_module.ddp, "init", lambda device: (0, 1, torch.device("cpu")))

    def accepts(args):
        try:
            config = _config(args, args.model, args.guide, args.objective)
            run_module.train_run(config, tmp_path / "never", progress=False, data=datasets[config.dataset])
        except _Accepted:
            return None
        except ZooError as e:
            return e
        raise AssertionError("train_run returned without training")
    return accepts


def _argv(command, model, guide, objective, options, home):
    dataset = [] if "--dataset" in options else ["--dataset", home]
    return [command, model, "--guide", guide, "--objective", objective, "--device", "cpu", *dataset, *options]


@pytest.mark.slow
def test_list_says_valid_exactly_when_train_accepts(train_accepts, datasets):
    """Every registered triple at its defaults and with one set of options (each set in turn), on the
    model's dataset or the set's: list's verdict and train's agree; and where both refuse, with the same
    reason. Disagreements are collected and reported together."""
    parser = build_parser()
    homes = {m: _home_dataset(m, datasets) for m in MODELS}
    disagreements, checked, refused = [], 0, 0
    triples = [(m, g, o) for m in MODELS for g in GUIDES for o in OBJECTIVES]
    for i, (m, g, o) in enumerate(triples):
        for options in ([], OPTION_SETS[i % len(OPTION_SETS)]):
            argv = _argv("list", m, g, o, options, homes[m])
            dataset = options[options.index("--dataset") + 1] if "--dataset" in options else homes[m]
            listed = run_verdict(parser.parse_args(argv), m, g, o, datasets[dataset])
            trained = train_accepts(parser.parse_args(["train"] + argv[1:]))
            checked += 1
            refused += trained is not None
            if (listed is None) != (trained is None):
                disagreements.append(f"{' '.join(argv)}: list says {listed or 'valid'}; train says "
                                     f"{trained or 'valid'}")
    assert not disagreements, f"{len(disagreements)} of {checked} runs:\n" + "\n".join(disagreements[:20])
    assert 0 < refused < checked                   # the sweep meets both kinds of run


@pytest.mark.parametrize("argv", [
    ["vae", "--guide", "amortized", "--objective", "elbo", "--compile"],
    ["vae", "--guide", "amortized", "--objective", "dreg", "--compile"],
    ["categorical_vae", "--guide", "amortized", "--objective", "rloo", "--compile"],
    ["sbn", "--layers", "4", "--guide", "amortized", "--objective", "enum", "--compile"],
    ["vae", "--guide", "amortized", "--objective", "elbo", "--jit", "--compile"],
    ["vae", "--prior", "mog", "--guide", "amortized", "--objective", "elbo", "--free-bits", "0.5"],
    ["ppca", "--guide", "exact", "--objective", "elbo", "--free-bits", "0.5"],
], ids=["compile", "compile-dreg", "compile-categorical-rloo", "compile-enum", "jit-and-compile", "free-bits-mog",
        "free-bits-exact"])
def test_what_only_a_trial_step_shows_is_listed_as_train_finds_it(argv, train_accepts, capsys):
    """A step --compile cannot capture, and free bits over a site that is no Normal, show only in a trial
    step: the real `pyro-zoo list` runs the same trial as train, so it agrees."""
    options = ["--device", "cpu", "--dataset", "digits"]
    trained = train_accepts(build_parser().parse_args(["train", *argv, *options]))
    assert main(["list", *argv, *options]) == 0
    out = capsys.readouterr().out.strip()
    assert out.startswith("valid:" if trained is None else "invalid:"), (out, trained)
    if trained is not None:
        from zoo import flags
        assert flags.translate(trained) in out


@pytest.mark.slow
def test_the_command_prints_the_verdict_train_gives(train_accepts, capsys):
    """A sample through the command line, in process and as a program: one line per run named, the
    reason train gives when it refuses, and a grid of every guide when none is named."""
    for argv in (["sbn", "--guide", "meanfield", "--objective", "rws", "--insomnia", "0"],
                 ["vae", "--guide", "amortized", "--objective", "iwae", "--particles", "3"],
                 ["vae", "--guide", "amortized", "--objective", "rloo", "--particles", "1"],
                 ["ppca", "--guide", "amortized", "--objective", "elbo", "--batch-size", "5000"]):
        trained = train_accepts(build_parser().parse_args(["train", *argv, "--device", "cpu"]))
        assert main(["list", *argv, "--device", "cpu"]) == 0
        out = capsys.readouterr().out.strip().splitlines()
        assert len(out) == 1 and out[0].startswith("valid:" if trained is None else "invalid:"), (out, trained)
    assert main(["list", "sbn", "--keep-best"]) == 0
    rows = capsys.readouterr().out.strip().splitlines()[1:]
    assert [r.split()[0] for r in rows] == list(GUIDES)
    assert next(r for r in rows if r.split()[0] == "meanfield").split()[1] == "-"     # per-datum: no keep_best
    r = subprocess.run([sys.executable, "-m", "zoo", "list", "vae", "--guide", "meanfield", "--objective", "elbo",
                        "--keep-best"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and r.stdout.startswith("invalid:") and "--keep-best" in r.stdout, r.stdout + r.stderr


@pytest.mark.slow
def test_the_grid_for_any_data_is_train_s_verdict_at_the_defaults(train_accepts, datasets):
    """`pyro-zoo list` without a model prints each triple's verdict at the default options
    (:func:`zoo.rules.compatibility`): train agrees on the model's own dataset."""
    parser = build_parser()
    homes = {m: _home_dataset(m, datasets) for m in MODELS}
    wrong = []
    for m, g, o, why in compatibility():
        trained = train_accepts(parser.parse_args(_argv("train", m, g, o, [], homes[m])))
        if (why is None) != (trained is None):
            wrong.append(f"{m} × {g} × {o}: list says {why or 'valid'}; train says {trained or 'valid'}")
    assert not wrong, "\n".join(wrong[:20])


def test_list_prints_no_history(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "before the split" not in out and "presets (a bound with its estimator fixed" in out


def test_each_estimator_capability_is_declared_once():
    """A row whose estimator is a zoo class reads the class's particles and reparameterization (a class
    and its row cannot disagree); a row may not restate them."""
    rows = [row for c in OBJECTIVES.values() if c.capability("estimators") for row in c.capability("estimators").values()]
    for row in rows:
        built = row.build(row.default_particles, **({"alpha": 0.0} if row.bound == "renyi" else {})
                          | ({"insomnia": 1.0} if row.bound == "rws" else {}))
        if isinstance(built, PerDatumObjective):
            for name in Estimator.CLASS_DECLARED:
                assert getattr(row, name) == getattr(type(built), name), (row.bound, row.name, name)
            assert built.num_particles == row.default_particles
    with pytest.raises(ValueError, match="declared by DReGIWAE"):
        from zoo.objectives.estimators import DReGIWAE
        Estimator.of(DReGIWAE, "dreg", "restated", lambda k: DReGIWAE(k), default_particles=5)


def test_a_new_estimator_supports_nothing_it_does_not_declare():
    """Defaults refuse rather than promise: traced (--jit, --compile), data-parallel and KL warm-up are off."""
    row = Estimator("new", "a new estimator", lambda k: None)
    assert (row.jit, row.ddp, row.warmup) == (False, False, False)


# -- the rules of one command: stated once in zoo.rules, listed, and raised in those words -------------------------
def test_list_prints_every_rule_of_one_command(capsys):
    """compress's, the defensive proposal's, eval --gaps' and BDMC's refusals were raised in their own modules,
    and `pyro-zoo list` could not show them: each is now a Rule, and list prints its text, as the light path
    (`python -m zoo list`, from its cache) does too."""
    from zoo.rules import RULES
    assert {"batch_size", "sleep_needs_amortized", "compress_needs_amortized", "compress_needs_levels",
            "defensive_needs_particles", "gaps_needs_amortized", "bdmc_needs_generation"} <= set(RULES)
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    listed = subprocess.run([sys.executable, "-m", "zoo", "list"], capture_output=True, text=True, timeout=300)
    for rule in RULES.values():
        assert f"  {rule.text}" in out and rule.text in listed.stdout, rule.name


def _refusal(call) -> str:
    with pytest.raises(ZooError) as error:
        call()
    assert "\n" not in str(error.value)
    return str(error.value)


def _global_only(x_dim):
    """A model with a global latent only, theta outside the data plate, over binary data."""
    import pyro
    import pyro.distributions as dist

    def model(x, idx=None, N=None):
        theta = pyro.sample("theta", dist.Normal(torch.zeros(x_dim), 1.0).to_event(1))
        with pyro.plate("data", N, subsample=idx):
            pyro.sample("x", dist.Bernoulli(logits=theta).to_event(1), obs=x)
    return model


def _global_mean(x_dim):
    """A model with a global latent, theta outside the data plate, over binary data."""
    import pyro
    import pyro.distributions as dist

    def model(x, idx=None, N=None):
        theta = pyro.sample("theta", dist.Normal(torch.zeros(x_dim), 1.0).to_event(1))
        with pyro.plate("data", N, subsample=idx):
            z = pyro.sample("z", dist.Normal(torch.zeros(x_dim), 1.0).to_event(1))
            pyro.sample("x", dist.Bernoulli(logits=theta + z).to_event(1), obs=x)
    return model


def test_compress_gaps_bdmc_and_the_defensive_proposal_refuse_in_their_rules_words():
    """The refusal each of them raises at run time ends in its rule's text, the one list prints (compress's
    amortized-guide rule was stated twice before, in compress and in the coder, in other words)."""
    from zoo.evaluation.bitsback import BitsBackCoder
    from zoo.evaluation.defensive import DefensiveProposal, _Stratified
    from zoo.evaluation.gaps import same_family
    from zoo.models.pyro_model import from_pyro
    from zoo.registry import build_guide, build_model
    from zoo import rules
    vae = build_model("vae", 8, latent_dim=2, hidden=(4,))
    gaussian = build_model("vae", 8, latent_dim=2, hidden=(4,), likelihood="gaussian")
    hvae = build_model("hvae", 8, layers=(2, 2), hidden=(4,), transition_hidden=(4,))
    globals_model = from_pyro(_global_mean, 8)
    cases = [(lambda: BitsBackCoder(vae, build_guide("meanfield", vae, 10)), rules.COMPRESS_NEEDS_AMORTIZED),
             (lambda: BitsBackCoder(hvae, build_guide("amortized", hvae, structured=True)),
              rules.COMPRESS_NEEDS_MEAN_FIELD),
             (lambda: BitsBackCoder(globals_model, build_guide("amortized", globals_model)),
              rules.COMPRESS_NEEDS_LOCAL_LATENTS),
             (lambda: BitsBackCoder(gaussian, build_guide("amortized", gaussian)), rules.COMPRESS_NEEDS_LEVELS),
             (lambda: same_family(build_guide("meanfield", vae, 10)), rules.GAPS_NEEDS_AMORTIZED),
             (lambda: same_family(build_guide("amortized", hvae, structured=True)), rules.GAPS_NEEDS_MEAN_FIELD),
             (lambda: rules.check_bdmc(gaussian, build_guide("meanfield", gaussian, 10), "guide"),
              rules.BDMC_NEEDS_AMORTIZED)]
    from zoo.evaluation.ais import AnnealedImportanceSampling
    from zoo.evaluation.bdmc import bidirectional_monte_carlo
    global_only = from_pyro(_global_only, 8)
    globals_guide = build_guide("meanfield", global_only, 10)
    cases += [(lambda: AnnealedImportanceSampling(num_temperatures=2).estimate(global_only, globals_guide,
                                                                               torch.zeros(10, 8)),
               rules.ANNEALING_NEEDS_LOCAL_LATENTS),
              (lambda: bidirectional_monte_carlo(global_only, globals_guide, AnnealedImportanceSampling(),
                                                 num_data=2, temperatures=[2]),
               rules.ANNEALING_NEEDS_LOCAL_LATENTS)]
    mog = build_model("vae", 8, latent_dim=2, hidden=(4,), prior="mog")
    coder = BitsBackCoder(mog, build_guide("amortized", mog))
    cases.append((lambda: coder.encode(torch.ones(1, 8)), rules.COMPRESS_NEEDS_NORMAL))
    q = torch.distributions.Normal(torch.zeros(3, 2), 1.0)       # a site without the 5 particles' dimension
    cases.append((lambda: _Stratified(q, q, torch.arange(5) > 2).sample(), rules.DEFENSIVE_NEEDS_PARTICLES))
    for call, rule in cases:
        assert _refusal(call).endswith(f": {rule.text}"), rule.name
    assert DefensiveProposal is not None


def test_train_list_and_zoo_fit_refuse_a_sleep_phase_and_a_batch_size_in_the_same_words(capsys):
    """The batch size and the sleep phase's need of an amortized guide were each stated twice, by the rules
    (train, list) and by zoo.fit's own checks or the objective mid-step, in other words: now zoo.fit asks the
    rules, so the three say the same line; and a sleep phase on a model that cannot generate, found only
    mid-training before, is refused by list and train."""
    import zoo
    from zoo import rules
    data = load_dataset("digits")
    sbn = zoo.build_model("sbn", data.x_dim, layers=(3,))
    meanfield = zoo.build_guide("meanfield", sbn, num_data=20)
    fitted = _refusal(lambda: zoo.fit(sbn, meanfield, zoo.build_objective("rws", insomnia=0.0), data.train[:20],
                                      epochs=1, batch_size=10, lr=1e-3, progress=False))
    assert fitted.endswith(rules.SLEEP_NEEDS_AMORTIZED.text)
    assert main(["list", "sbn", "--guide", "meanfield", "--objective", "rws", "--insomnia", "0"]) == 0
    assert capsys.readouterr().out.strip().endswith(rules.SLEEP_NEEDS_AMORTIZED.text)
    amortized = zoo.build_guide("amortized", sbn)
    fitted = _refusal(lambda: zoo.fit(sbn, amortized, zoo.build_objective("elbo"), data.train[:20], epochs=1,
                                      batch_size=50, lr=1e-3, progress=False))
    assert main(["train", "sbn", "--layers", "3", "--batch-size", "5000", "--out", "never"]) == 2
    trained = capsys.readouterr().err
    assert rules.BATCH_SIZE.text in fitted and rules.BATCH_SIZE.text in trained
    covariates = from_pyro_regression()
    assert _refusal(lambda: rules.check_sleep(covariates, amortized, 0.0)).endswith(
        rules.SLEEP_NEEDS_GENERATION.text)


def from_pyro_regression():
    """A model whose last column is a covariate it reads and does not observe: it cannot generate x."""
    import pyro
    import pyro.distributions as dist
    from zoo.models.pyro_model import from_pyro

    def regression(x, idx=None, N=None):
        with pyro.plate("data", N, subsample=idx):
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
            pyro.sample("y", dist.Normal(z * x[..., 1], 1.0), obs=x[..., 0])
    return from_pyro(regression, data=torch.ones(4, 2))
