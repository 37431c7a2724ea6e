"""Your own Pyro model (``zoo.from_pyro``, ``--model FILE.py:NAME``): a model written here, in the
user's style, trains and evaluates through the zoo's guides and objectives from the Python API
and the CLI; its inferred latents are right; models outside the contract are refused in one line."""
import itertools
import json
import sys
import textwrap

import pyro
import pyro.distributions as dist
import pytest
import torch
from torch import nn

import zoo
from clitools import run_cli
from zoo.core.errors import ZooError
from zoo.core.components import MODELS
from zoo.evaluation.harness import bound_per_datum
from zoo.models.pyro_model import PyroModel, from_pyro

from user_models import USER_FILE, user_vae       # tests/user_models.py

FAST = ["--epochs", "1", "--eval-samples", "10", "--iwae-k", "5", "--eval-limit", "30", "--refit-epochs", "1",
        "--batch-size", "200", "--no-progress", "--seed", "0"]

def user_sbn(x_dim, k=3):
    """A tiny sigmoid belief net: a learned prior (a constrained pyro.param), K binary latents."""
    decoder = nn.Linear(k, x_dim)

    def model(x, idx=None, N=None):
        pyro.module("decoder", decoder)
        prior = pyro.param("prior", torch.full((k,), 0.3), constraint=dist.constraints.unit_interval)
        with pyro.plate("data", N, subsample=idx):
            z = pyro.sample("z", dist.Bernoulli(probs=prior).to_event(1))
            pyro.sample("x", dist.Bernoulli(logits=decoder(z)).to_event(1), obs=x)
    return model


@pytest.fixture(scope="module")
def small_digits():
    return zoo.load_dataset("digits").train[:200]


@pytest.mark.parametrize("guide,objective", list(itertools.product(("meanfield", "amortized", "iaf"),
                                                                      ("elbo", "iwae"))))
def test_a_user_model_trains_through_every_guide_and_objective(small_digits, guide, objective):
    """Training reaches the user's own decoder and raises the ELBO on the data (3 epochs, lr 1e-2);
    the harness then reports ELBO <= IS log p(x), both finite."""
    x = small_digits
    model = zoo.from_pyro(user_vae, x.shape[1])
    q = zoo.build_guide(guide, model, num_data=x.shape[0])
    decoder_before = {k: v.clone() for k, v in model.state_dict().items()}
    elbo_before = bound_per_datum(model, q, x, num_particles=5)
    zoo.fit(model, q, zoo.build_objective(objective), x, epochs=3, batch_size=50, lr=1e-2, progress=False)
    assert all(not torch.equal(decoder_before[k], v) for k, v in model.state_dict().items())
    assert bound_per_datum(model, q, x, num_particles=5) > elbo_before + 1.0
    result = zoo.evaluate(model, q, x, num_samples=20, iwae_k=5)
    assert torch.isfinite(torch.tensor(result["log_likelihood"]))
    assert result["elbo"] <= result["log_likelihood"] + 1e-6


def test_the_inferred_declaration_of_a_user_vae():
    model = zoo.from_pyro(user_vae, 64)
    (z,) = model.latents
    assert (z.name, z.event_shape, z.support, z.parents) == ("z", (2,), "real", ())
    assert model.likelihood == "bernoulli" and model.x_dim == 64 and model.display_name == "my_vae"
    # the decoder is the zoo model's own: parameters, state_dict, device moves
    assert sorted(model.state_dict()) == ["networks.decoder.0.bias", "networks.decoder.0.weight",
                                          "networks.decoder.2.bias", "networks.decoder.2.weight"]
    assert model.sample(5).shape == (5, 64)
    assert not model.has_log_marginal


def test_parents_are_read_from_the_trace():
    """z2 -> z1 -> x and c -> x, z3 <- (z1, c): each latent's parents are the latents its distribution reads."""
    def hierarchy(x_dim):
        decoder = nn.Linear(2, x_dim)

        def model(x, idx=None, N=None):
            with pyro.plate("data", N, subsample=idx):
                z2 = pyro.sample("z2", dist.Normal(torch.zeros(2), 1.0).to_event(1))
                z1 = pyro.sample("z1", dist.Normal(2 * z2, 1.0).to_event(1))
                c = pyro.sample("c", dist.OneHotCategorical(logits=torch.zeros(1, 3)).to_event(1))
                z3 = pyro.sample("z3", dist.Normal(z1 + c.sum(-1), 1.0).to_event(1))
                pyro.sample("x", dist.Normal(decoder(z3), 1.0).to_event(1), obs=x)
        return model

    model = from_pyro(hierarchy, x_dim=5)
    assert [(s.name, s.parents) for s in model.latents] == [("z2", ()), ("z1", ("z2",)), ("c", ()),
                                                             ("z3", ("z1", "c"))]
    assert [s.support for s in model.latents] == ["real", "real", "categorical", "real"]
    assert model.latents[2].event_shape == (1, 3) and model.latents[2].num_classes == 3
    assert model.likelihood == "gaussian"


def test_a_discrete_user_model_gets_the_exact_log_marginal():
    """log p(x) = log sum_{z in {0,1}^3} p(z) p(x | z), summed by hand from the user's own parameters,
    equals the wrapped model's log_marginal; and the constrained pyro.param trains (never via the store)."""
    model = from_pyro(user_sbn, 6)
    assert [(s.name, s.support, s.event_shape) for s in model.latents] == [("z", "binary", (3,))]
    assert model.has_log_marginal and model.likelihood == "bernoulli"
    x = torch.randint(0, 2, (5, 6)).float()
    prior = torch.sigmoid(model.params["prior"])               # stored unconstrained (logit), used as probs
    assert torch.allclose(prior, torch.full((3,), 0.3))
    decoder = model.networks["decoder"]
    with torch.no_grad():
        terms = [dist.Bernoulli(probs=prior).log_prob(torch.tensor(z)).sum()
                 + dist.Bernoulli(logits=decoder(torch.tensor(z))).log_prob(x).sum(-1)
                 for z in itertools.product((0.0, 1.0), repeat=3)]
        direct = torch.logsumexp(torch.stack(terms), 0)
    assert torch.allclose(model.log_marginal(x), direct, atol=1e-5)

    guide = zoo.build_guide("amortized", model)
    zoo.check_combination(model, "amortized", "enum")
    before = model.params["prior"].detach().clone()
    zoo.fit(model, guide, zoo.build_objective("enum"), x, epochs=2, batch_size=5, lr=0.05, progress=False)
    assert not torch.equal(before, model.params["prior"])
    assert "prior" not in pyro.get_param_store()


def test_state_dict_round_trips_into_a_fresh_model():
    a, b = from_pyro(user_sbn, 6), from_pyro(user_sbn, 6)
    x = torch.randint(0, 2, (4, 6)).float()
    assert not torch.allclose(a.log_marginal(x), b.log_marginal(x))      # fresh networks for each
    b.load_state_dict(a.state_dict())
    assert torch.allclose(a.log_marginal(x), b.log_marginal(x))


def test_two_zoo_models_never_share_a_network():
    decoder = nn.Linear(2, 4)

    def shared(x, idx=None, N=None):
        pyro.module("decoder", decoder)
        with pyro.plate("data", N, subsample=idx):
            z = pyro.sample("z", dist.Normal(torch.zeros(2), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(decoder(z), 1.0).to_event(1), obs=x)

    first = from_pyro(shared, 4)
    with pytest.raises(ZooError, match="already belong to another zoo model.*factory"):
        from_pyro(shared, 4)
    del first
    assert isinstance(from_pyro(shared, 4), PyroModel)       # once the first is gone, it is free again


def test_an_nn_module_with_a_model_method_is_accepted():
    class UserVAE(nn.Module):
        def __init__(self, x_dim):
            super().__init__()
            self.decoder = nn.Linear(2, x_dim)
            self.register_buffer("loc", torch.zeros(2))

        def model(self, x, idx=None, N=None):
            pyro.module("decoder", self.decoder)
            with pyro.plate("data", N, subsample=idx):
                z = pyro.sample("z", dist.Normal(self.loc, 1.0).to_event(1))
                pyro.sample("x", dist.Bernoulli(logits=self.decoder(z)).to_event(1), obs=x)

    model = from_pyro(UserVAE, 8)                 # a class taking x_dim is a factory
    assert sorted(model.state_dict()) == ["user.decoder.bias", "user.decoder.weight", "user.loc"]
    assert model.latents[0].event_shape == (2,)


# -- models outside the contract ----------------------------------------------------------------
def _bad(kind):
    def model(x, idx=None, N=None):
        if kind == "discrete global":
            pyro.sample("mu", dist.Bernoulli(0.5))
        plate = pyro.plate("data", N, subsample=None if kind == "unsubsampled" else idx)
        if kind == "no plate":
            pyro.sample("z", dist.Normal(torch.zeros(2), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(torch.zeros(4), 1.0).to_event(1), obs=x)
            return
        with plate:
            if kind == "count":
                pyro.sample("c", dist.Poisson(torch.full((2,), 3.0)).to_event(1))
            if kind == "sphere":
                pyro.sample("s", dist.ProjectedNormal(torch.ones(3)))
            if kind == "categorical":
                pyro.sample("c", dist.Categorical(logits=torch.zeros(2, 3)).to_event(1))   # one Categorical is fine
            if kind != "no latent":
                pyro.sample("z", dist.Normal(torch.zeros(2), 1.0).to_event(1))
            if kind == "no event":
                pyro.sample("x", dist.Normal(torch.zeros(4), 1.0), obs=x)
            elif kind == "copied":
                pyro.sample("y", dist.Normal(torch.zeros(4), 1.0).to_event(1), obs=None if x is None else 2 * x)
            elif kind == "twice":
                pyro.sample("x", dist.Normal(torch.zeros(4), 1.0).to_event(1), obs=x)
                pyro.sample("x_0", dist.Normal(0.0, 1.0), obs=None if x is None else x[:, 0])
            else:
                pyro.sample("x", dist.Normal(torch.zeros(4), 1.0).to_event(1), obs=x)
    return model


@pytest.mark.parametrize("kind,message", [
    ("discrete global", r"latent 'mu' is outside the data plate \(a global latent\) with discrete support boolean.*"
                        r"make it a pyro.param"),
    ("no plate", r"has no data plate; put every latent and the observation 'x' inside pyro.plate\('data'"),
    ("unsubsampled", r"data plate is not subsampled.*pyro.plate\('data', N, subsample=idx\)"),
    ("sphere", r"latent 's' has support sphere, which the zoo's guides do not cover \(real, binary, "
               r"categorical\): reparameterize it"),
    ("count", r"latent 'c' has support nonnegative_integer, which the zoo's guides do not cover"),
    ("categorical", r"latent 'c' has support integer_interval.*give one Categorical per site \(event shape \(\)\), "
                    r"or OneHotCategorical"),
    ("no latent", r"has no latent sample site"),
    ("no event", r"Shape mismatch inside plate\('data'\) at site x.*a datum's value must be one event: add "
                 r"\.to_event\(1\)"),
    ("copied", r"observed site 'y' holds a value that is not a slice of x.*obs=x\[:, a:b\]"),
    ("twice", r"observes column 0 of x twice \(sites 'x' and 'x_0'\)"),
])
def test_models_outside_the_contract_are_refused_in_one_line(kind, message):
    with pytest.raises(ZooError, match=message) as error:
        from_pyro(_bad(kind), 4)
    assert "\n" not in str(error.value)


def test_a_model_that_cannot_generate_is_refused_in_one_line():
    def needs_data(x, idx=None, N=None):
        with pyro.plate("data", N, subsample=idx):
            pyro.sample("z", dist.Normal(torch.zeros(2), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(x.mean() + torch.zeros(4), 1.0).to_event(1), obs=x)

    with pytest.raises(ZooError, match=r"failed on a trial run generating data \(x=None, N=2\) "
                                       r"\(test_from_pyro.py, line \d+\): AttributeError") as error:
        from_pyro(needs_data, 4)
    assert "\n" not in str(error.value)


# -- the CLI: FILE.py:NAME ---------------------------------------------------------------------

@pytest.mark.slow
def test_the_cli_compares_three_guides_and_two_objectives_on_a_user_file(tmp_path, capsys):
    (tmp_path / "my_models.py").write_text(USER_FILE)
    spec = f"{tmp_path / 'my_models.py'}:my_vae"
    out = tmp_path / "cmp"
    code, stdout, err = run_cli(["compare", spec, "--guides", "meanfield,amortized,iaf", "--objectives",
                                 "elbo,iwae", "--dataset", "digits", "--out", out] + FAST, capsys)
    assert code == 0, err
    rows = json.loads((out / "compare.json").read_text())
    assert [(r["config"]["guide"], r["config"]["objective"]) for r in rows] == list(
        itertools.product(("meanfield", "amortized", "iaf"), ("elbo", "iwae")))
    assert all(r["elbo"] <= r["log_likelihood"] + 1e-6 for r in rows)
    assert all(f"| {g}/{o}" in stdout for g, o in itertools.product(("meanfield", "amortized", "iaf"), ("elbo", "iwae")))


@pytest.mark.slow
def test_a_user_file_run_trains_evaluates_and_refuses_a_changed_file(tmp_path, capsys):
    source = tmp_path / "my_models.py"
    source.write_text(USER_FILE)
    out = tmp_path / "run"
    code, stdout, err = run_cli(["train", f"{source}:my_vae", "--guide", "iaf", "--objective", "iwae",
                                 "--dataset", "digits", "--out", out] + FAST, capsys)
    assert code == 0, err
    config = json.loads((out / "config.json").read_text())
    assert config["model"] == f"{source}:my_vae" and len(config["model_options"]["source_sha256"]) == 64
    code, _, err = run_cli(["eval", out, "--eval-samples", "12", "--no-progress"], capsys)
    assert code == 2 and "never imports a file that a run folder names" in err       # the user names it ...
    code, _, err = run_cli(["eval", out, "--eval-samples", "12", "--no-progress", "--model", f"{source}:my_vae"],
                           capsys)
    assert code == 0, err
    assert json.loads((out / "results.json").read_text())["num_samples"] == 12
    code, _, err = run_cli(["gradients", f"{source}:my_vae", "--objectives", "elbo,iwae", "--particles", "1,2",
                            "--repeats", "2", "--batch-size", "10", "--dataset", "digits", "--checkpoint", out,
                            "--guide", "iaf", "--out", tmp_path / "grad"], capsys)
    assert code == 0, err

    source.write_text(USER_FILE + "\n# an edit\n")
    code, _, err = run_cli(["eval", out, "--no-progress", "--model", f"{source}:my_vae"], capsys)
    assert code == 2 and err.count("\n") == 1
    assert "changed since this run was made" in err
    source.unlink()
    code, _, err = run_cli(["train", f"{source}:my_vae", "--resume", out, "--epochs", "2", "--no-progress"], capsys)
    assert code == 2 and err.count("\n") == 1 and "not found" in err


@pytest.mark.parametrize("content,name,message", [
    (None, "my_vae", r"model file '.*nowhere.py' not found"),
    (USER_FILE, "my_vea", r"has no 'my_vea'; it defines: my_vae"),
    ("import torch\nraise RuntimeError('the user broke it')\n", "my_vae",
     r"importing model file .* failed \(my_models.py, line 2\): RuntimeError: the user broke it"),
    ("def my_vae(x_dim:\n", "my_vae", r"has a syntax error at line 1"),
    (USER_FILE, None, r"name the model in the file too, FILE.py:NAME"),
], ids=["missing file", "missing name", "import error", "syntax error", "no name"])
def test_bad_model_files_are_one_line_with_exit_2_and_no_output(tmp_path, capsys, content, name, message):
    path = tmp_path / ("my_models.py" if content is not None else "nowhere.py")
    if content is not None:
        path.write_text(content)
    spec = f"{path}:{name}" if name else str(path)
    out = tmp_path / "out"
    for command in (["train", spec], ["compare", spec, "--guides", "amortized", "--objectives", "elbo"],
                    ["gradients", spec, "--objectives", "elbo"]):
        code, stdout, err = run_cli(command + ["--dataset", "digits", "--out", out, "--no-progress"], capsys)
        assert code == 2 and stdout == ""
        assert err.count("\n") == 1 and err.startswith("pyro-zoo: error: ")
        assert __import__("re").search(message, err), err
        assert not out.exists()


def test_an_installed_package_registers_a_pyro_model_through_the_entry_point(tmp_path, monkeypatch):
    """``[pyro_zoo.models] mine = zoo_pyro_plugin``: the package's module registers a from_pyro model."""
    (tmp_path / "zoo_pyro_plugin.py").write_text(USER_FILE + textwrap.dedent("""
        import functools
        from zoo.core.components import MODELS
        from zoo.models.pyro_model import from_pyro
        MODELS.register("plugged_vae", description="a user's VAE from a plug-in")(functools.partial(from_pyro, my_vae))
    """))
    info = tmp_path / "zoo_pyro_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: zoo-pyro-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[pyro_zoo.models]\nmine = zoo_pyro_plugin\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(MODELS, "_entries", dict(MODELS._entries))      # leave the real registry as it was
    monkeypatch.setattr(MODELS, "_loaded", False)
    monkeypatch.delitem(sys.modules, "zoo_pyro_plugin", raising=False)
    assert "plugged_vae" in list(MODELS)
    model = zoo.build_model("plugged_vae", 64)
    assert isinstance(model, PyroModel) and model.latents[0].name == "z"


def test_the_readme_example_runs_as_written(capsys):
    """The example in zoo.models.pyro_model's docstring (the README's), run exactly as it is written."""
    import zoo.models.pyro_model as module
    block = module.__doc__.split("(the README's example)::\n", 1)[1].split("\n\n(", 1)[0]
    exec(compile(textwrap.dedent(block), "README example", "exec"), {})
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split()[0] for line in lines] == ["meanfield", "amortized", "iaf"]
    for line in lines:
        elbo, log_px = float(line.split()[2]), float(line.split()[5])
        assert -40 < elbo <= log_px < -15                  # trained well past the 44 nats of an untrained decoder


def test_a_deep_copy_is_refused_and_a_second_model_from_the_factory_is_the_way():
    """copy.deepcopy would copy the networks but leave the user's function calling the originals; it is
    refused in one line, and a second from_pyro model with the first's state_dict is an exact copy."""
    import copy
    from zoo.core.errors import ZooError
    first = zoo.from_pyro(user_vae, 6)
    with pytest.raises(ZooError, match="cannot be deep-copied; build another with from_pyro"):
        copy.deepcopy(first)
    second = zoo.from_pyro(user_vae, 6)
    second.load_state_dict(first.state_dict())
    x = torch.ones(3, 6)
    pyro.set_rng_seed(0)
    a = pyro.poutine.trace(first.model).get_trace(x).log_prob_sum()
    pyro.set_rng_seed(0)
    b = pyro.poutine.trace(second.model).get_trace(x).log_prob_sum()
    assert torch.equal(a, b)


@pytest.mark.slow
def test_a_model_that_reads_a_column_as_a_scale_is_tried_on_the_data_on_the_cli_as_by_from_pyro(tmp_path, capsys):
    """Eight schools reads sigma_j = x[:, 1] as the Normal's scale: a trial run on zeros makes Normal(., 0), so
    the CLI refused the model that from_pyro(model, data=x) accepts. The CLI has the data and tries the model
    (and a guide file that reads sigma_j too) on their first rows: list calls the run valid, train, eval and a
    guide file's run and a compare grid go through."""
    from user_models import SCHOOLS_FILE, schools_csv
    source = tmp_path / "schools.py"
    source.write_text(SCHOOLS_FILE)
    data = schools_csv(tmp_path / "schools.csv")
    namespace: dict = {}
    exec(compile(SCHOOLS_FILE, str(source), "exec"), namespace)
    x = torch.tensor([[float(v) for v in line.split(",")] for line in data.read_text().splitlines()[1:]])
    assert [s.name for s in from_pyro(namespace["eight_schools"], data=x).latents] == ["eta"]

    model = f"{source}:eight_schools"
    code, listed, err = run_cli(["list", model, "--dataset", data, "--guide", "meanfield", "--objective", "elbo",
                                 "--batch-size", "8"], capsys)
    assert code == 0 and listed.startswith("valid:"), listed + err
    out = tmp_path / "run"
    fast = ["--epochs", "1", "--batch-size", "8", "--eval-samples", "10", "--iwae-k", "5", "--no-progress"]
    code, _, err = run_cli(["train", model, "--dataset", data, "--guide", "meanfield", "--out", out] + fast, capsys)
    assert code == 0, err
    code, _, err = run_cli(["eval", out, "--model", model, "--eval-samples", "12", "--no-progress"], capsys)
    assert code == 0, err
    code, _, err = run_cli(["train", model, "--dataset", data, "--guide", f"{source}:schools_guide",
                            "--out", tmp_path / "guided"] + fast, capsys)
    assert code == 0, err
    # a grid builds the model for its tables the same way (it tried it on zeros after training every cell)
    code, _, err = run_cli(["compare", model, "--dataset", data, "--guides", "meanfield,amortized", "--objectives",
                            "elbo", "--out", tmp_path / "grid"] + fast, capsys)
    assert code == 0 and (tmp_path / "grid" / "compare.md").is_file(), err


def test_a_model_whose_sites_depend_on_sampled_values_is_refused_by_from_pyro_list_and_train(tmp_path, capsys):
    """An AIR-style loop to a sampled number of steps samples z_0, z_1, ... on one run and fewer on the next; a
    guide built for one run's sites then misses or invents sites (a bare KeyError mid-training, or a run that
    trains by luck). Trial runs at several seeds differ, so from_pyro, list and train refuse it in the same
    line, which says to loop over a fixed maximum and mask; written that way the model is valid."""
    from user_models import AIR_FILE
    source = tmp_path / "air.py"
    source.write_text(AIR_FILE)
    namespace: dict = {}
    exec(compile(AIR_FILE, str(source), "exec"), namespace)
    with pytest.raises(ZooError, match=r"air_loop samples site\(s\) 'z_\d'.* in some trial runs and not in others.*"
                                       r"fixed maximum number of steps and mask the steps not taken") as error:
        from_pyro(namespace["air_loop"], 8)
    assert "\n" not in str(error.value)
    assert [s.name for s in from_pyro(namespace["air_masked"], 8).latents] == ["steps", "z_0", "z_1", "z_2"]

    run = ["--guide", "amortized", "--objective", "elbo", "--dataset", "digits"]
    code, listed, _ = run_cli(["list", f"{source}:air_loop", *run], capsys)
    assert code == 0 and listed.startswith("invalid:") and str(error.value) in listed
    out = tmp_path / "run"
    code, _, err = run_cli(["train", f"{source}:air_loop", *run, "--out", out] + FAST, capsys)
    assert code == 2 and err == f"pyro-zoo: error: {error.value}\n" and not out.exists()
    code, listed, _ = run_cli(["list", f"{source}:air_masked", *run], capsys)
    assert code == 0 and listed.startswith("valid:"), listed


def test_a_model_and_guide_of_fixed_constants_go_where_to_device_sends_them():
    """A model with no parameters at all (constants in its function) still has a device: ``.to(device)`` moves an
    empty anchor that is not in the state dict, so the tensors its function makes are made there, and the harness
    puts a guide function wrapped for it on the same device (on a GPU: tests/test_cuda.py's ridge)."""
    from guides.user import as_zoo_guide

    def fixed(x, idx=None, N=None):
        with pyro.plate("data", N, subsample=idx):
            z = pyro.sample("z", dist.Normal(torch.zeros(1), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(z, 1.0).to_event(1), obs=x)

    def fixed_guide(x, idx=None, N=None):
        with pyro.plate("data", N, subsample=idx):
            pyro.sample("z", dist.Normal(0.5 * x, 0.7).to_event(1))
    model = from_pyro(fixed, 1)
    assert model.device.type == "cpu" and list(model.state_dict()) == []
    guide = as_zoo_guide(fixed_guide, model)
    assert list(guide.state_dict()) == []
    assert model.to("meta").device.type == "meta" and guide.to("meta").device.type == "meta"


def _nan_past_the_trial(x, idx=None, N=None):
    with pyro.plate("data", N, subsample=idx):
        z = pyro.sample("z", dist.Normal(0., 1.))
        pyro.sample("x", dist.Normal(z, 1.), obs=None if x is None else x[..., 0])
        if x is not None:        # NaN only where x > 2: rows the trial run did not see
            nan = torch.full_like(x[..., 0], float("nan"))
            pyro.factor("f", torch.where(x[..., 0] > 2, nan, torch.zeros_like(nan)))


@pytest.mark.parametrize("estimator", ["evaluate", "ais", "smc"])
def test_a_user_model_failing_in_evaluation_from_python_is_one_line_naming_its_line(estimator):
    """A model whose log-density is NaN only at data the trial run did not reach: the command line said so in one
    line, but zoo.evaluate, AIS and SMC called from Python raised Pyro's ValueError with its tensors and trace
    (found by an independent check). Each now raises a ZooError naming the model's file and line."""
    from zoo.evaluation.ais import AnnealedImportanceSampling
    from zoo.evaluation.smc import SequentialMonteCarlo
    x = torch.cat([torch.zeros(30, 1), torch.full((2, 1), 3.0)])
    m = zoo.from_pyro(_nan_past_the_trial, 1, data=x[:30])
    g = zoo.build_guide("amortized", m, num_data=len(x))
    call = {"evaluate": lambda: zoo.evaluate(m, g, x, num_samples=10),
            "ais": lambda: AnnealedImportanceSampling(num_temperatures=5, num_chains=2).estimate(m, g, x, seed=0),
            "smc": lambda: SequentialMonteCarlo(num_particles=4, num_replicas=2).estimate(m, g, x, seed=0)}[estimator]
    with pytest.raises(ZooError) as e:
        call()
    assert "test_from_pyro.py, line" in str(e.value) and "\n" not in str(e.value), str(e.value)
