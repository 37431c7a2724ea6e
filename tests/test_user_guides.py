"""Your own guide (guides/user.py): a Pyro guide function or ``--guide FILE.py:NAME``, scored by the
same harness as the zoo's guides, checked against the model on a trial run, and pinned like a model
file in a run folder."""
import copy
import json

import pyro
import pyro.distributions as dist
import pytest
import torch
import torch.nn.functional as F

import zoo
from guides.amortized import Amortized
from zoo.cli import main
from zoo.core.errors import ZooError

FAST = ["--latent-dim", "2", "--hidden", "16", "--epochs", "1", "--eval-samples", "10", "--iwae-k", "5",
        "--eval-limit", "20", "--batch-size", "200", "--dataset", "digits", "--no-progress", "--seed", "0"]

#: A hand-written amortized Normal guide, as a factory of the zoo model (fresh networks for each guide).
GUIDE_FILE = '''"""Hand-written guides for the zoo's vae."""
import pyro, pyro.distributions as dist, torch
from torch import nn


def my_guide(model):
    """q(z | x) = N(loc(x), softplus(s(x))^2), one tanh layer."""
    z_dim = model.latents[0].event_shape[0]
    encoder = nn.Sequential(nn.Linear(model.x_dim, 16), nn.Tanh(), nn.Linear(16, 2 * z_dim))

    def guide(x, idx=None, N=None):
        pyro.module("encoder", encoder)
        with pyro.plate("data", N, subsample=idx):
            loc, s = encoder(x).chunk(2, -1)
            pyro.sample("z", dist.Normal(loc, nn.functional.softplus(s) + 1e-5).to_event(1))
    return guide


def wrong_name(x, idx=None, N=None):
    with pyro.plate("data", N, subsample=idx):
        pyro.sample("w", dist.Normal(torch.zeros(2), 1.0).to_event(1))


def missing(x, idx=None, N=None):
    with pyro.plate("data", N, subsample=idx):
        pass


def outside_plate(x, idx=None, N=None):
    pyro.sample("z", dist.Normal(torch.zeros(2), 1.0).to_event(1))


def wrong_event(x, idx=None, N=None):
    with pyro.plate("data", N, subsample=idx):
        pyro.sample("z", dist.Normal(torch.zeros(3), 1.0).to_event(1))


def wrong_support(x, idx=None, N=None):
    with pyro.plate("data", N, subsample=idx):
        pyro.sample("z", dist.Bernoulli(torch.full((2,), 0.5)).to_event(1))


def fixed_batch(x, idx=None, N=None):
    with pyro.plate("data", N, subsample=idx):
        z = pyro.sample("z", dist.Normal(torch.zeros(x.shape[0], 2), 1.0).to_event(1))
    return z.view(x.shape[0], 2)
'''


def run_cli(args, capsys):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def one_line_refusal(code, err) -> bool:
    return code == 2 and err.startswith("pyro-zoo: error: ") and err.count("\n") == 1


# -- the Python API -----------------------------------------------------------------------------
def test_a_guide_function_with_the_zoo_guides_networks_scores_exactly_as_the_zoo_guide(digits):
    """The amortized family's q(z | x) = N(loc(h), softplus(s(h))^2), h = trunk(x), written by hand with
    copies of an Amortized guide's networks: the harness gives the same ELBO, IWAE and IS log p(x) with
    the same seed (the same computation, reached through a function instead of a zoo guide)."""
    model = zoo.build_model("vae", digits.x_dim, latent_dim=2, hidden=(16,))
    ours = Amortized(model)
    trunk, head = copy.deepcopy(ours.trunk), copy.deepcopy(ours.heads["z"])

    def my_guide(x, idx=None, N=None):
        pyro.module("trunk", trunk)
        pyro.module("head", head)
        with pyro.plate("data", N, subsample=idx):
            loc, s = head(trunk(x)).chunk(2, -1)
            pyro.sample("z", dist.Normal(loc, F.softplus(s) + 1e-5).to_event(1))

    x = digits.test[:40]
    pyro.set_rng_seed(3)
    reference = zoo.evaluate(model, ours, x, num_samples=20, iwae_k=5, psis=False)
    pyro.set_rng_seed(3)
    mine = zoo.evaluate(model, my_guide, x, num_samples=20, iwae_k=5, psis=False)
    for key in ("elbo", "iwae_bound", "log_likelihood", "kl"):
        assert mine[key] == pytest.approx(reference[key], abs=1e-5), key


def test_an_exact_posterior_guide_function_gives_the_exact_log_marginal_on_ppca(synthetic):
    """On pPCA the posterior is Gaussian, p(z | x) = N(M^-1 W^T (x - mu) / s2, M^-1), M = I + W^T W / s2
    (Tipping & Bishop 1999). A guide that proposes exactly it makes log w = log p(x) for every z, so the
    ELBO equals the closed-form log p(x) (the model's MultivariateNormal marginal, an independent
    computation) and the importance weights have zero variance. The guide computes with the model's
    weights (it borrows them; they stay the model's)."""
    model = zoo.build_model("ppca", synthetic.x_dim, latent_dim=2)
    model.set_ml_solution(synthetic.train)

    def exact(model):
        def guide(x, idx=None, N=None):
            W, mu, s2 = model.W, model.mu, model.noise_variance
            cov = torch.linalg.inv(torch.eye(W.shape[1]) + W.T @ (W / s2[:, None]))
            with pyro.plate("data", N, subsample=idx):
                pyro.sample("z", dist.MultivariateNormal(((x - mu) / s2) @ W @ cov, covariance_matrix=cov))
        return guide

    guide = zoo.from_pyro_guide(exact, model)
    assert guide.borrows_model and list(guide.state_dict()) == []
    result = zoo.evaluate(model, guide, synthetic.test, num_samples=50, proposal="guide")   # every weight is p(x)
    exact_log_px = model.log_marginal(synthetic.test).mean().item()
    assert result["elbo"] == pytest.approx(exact_log_px, abs=1e-4)
    assert result["log_likelihood"] == pytest.approx(exact_log_px, abs=1e-4)
    assert result["log_likelihood_se"] < 1e-4


def test_zoo_fit_trains_a_guide_function_and_evaluate_scores_what_it_trained(digits):
    """fit and evaluate wrap the same function once for the model, so its pyro.param sites (the wrapper's
    own parameters, never Pyro's global param store) are the trained ones when it is scored."""
    pyro.clear_param_store()        # what another test in this worker left there is not this test's to judge
    model = zoo.build_model("vae", digits.x_dim, latent_dim=2, hidden=(16,))
    encoder = torch.nn.Linear(digits.x_dim, 4)

    def my_guide(x, idx=None, N=None):
        pyro.module("encoder", encoder)
        scale = pyro.param("scale", torch.tensor(1.0), constraint=dist.constraints.positive)
        with pyro.plate("data", N, subsample=idx):
            loc, s = encoder(x).chunk(2, -1)
            pyro.sample("z", dist.Normal(loc, scale * F.softplus(s)).to_event(1))

    x = digits.train[:300]
    before = zoo.evaluate(model, my_guide, x, num_samples=10, psis=False)["elbo"]
    zoo.fit(model, my_guide, zoo.build_objective("elbo"), x, epochs=5, batch_size=100, lr=1e-2, progress=False)
    after = zoo.evaluate(model, my_guide, x, num_samples=10, psis=False)["elbo"]
    assert after > before + 1.0
    wrapped = zoo.from_pyro_guide.__globals__["as_zoo_guide"](my_guide, model)
    assert sorted(wrapped.state_dict()) == ["networks.encoder.bias", "networks.encoder.weight", "params.scale"]
    assert wrapped.params["scale"].item() != 0.0           # unconstrained log 1 = 0 at the start; trained since
    assert list(pyro.get_param_store().keys()) == []


def test_a_bad_guide_function_is_refused_in_one_line_naming_the_site(digits):
    model = zoo.build_model("vae", digits.x_dim, latent_dim=2, hidden=(16,))

    def extra(x, idx=None, N=None):
        with pyro.plate("data", N, subsample=idx):
            pyro.sample("z", dist.Normal(torch.zeros(2), 1.0).to_event(1))
            pyro.sample("u", dist.Normal(0.0, 1.0))
    with pytest.raises(ZooError, match=r"guide extra samples 'u', which is not a latent of VAE \(its latents: 'z'\)"):
        zoo.evaluate(model, extra, digits.test[:5])


# -- the command line ------------------------------------------------------------------------------
@pytest.fixture
def guide_file(tmp_path):
    path = tmp_path / "my_guides.py"
    path.write_text(GUIDE_FILE)
    return path


def test_compare_scores_a_user_guide_file_beside_the_zoos_guides(guide_file, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "cmp"
    code, stdout, err = run_cli(["compare", "vae", "--guides", "amortized,my_guides.py:my_guide", "--objectives",
                                 "elbo,iwae", "--particles", "2", "--out", out] + FAST, capsys)
    assert code == 0, err
    rows = json.loads((out / "compare.json").read_text())
    spec = f"{guide_file.resolve()}:my_guide"
    assert [(r["config"]["guide"], r["config"]["objective"]) for r in rows] == [
        ("amortized", "elbo"), ("amortized", "iwae"), (spec, "elbo"), (spec, "iwae")]
    assert all(r["elbo"] <= r["iwae_bound"] + 1e-6 and r["num_samples"] == 10 for r in rows)
    assert {p.name for p in out.iterdir() if p.is_dir()} == {"amortized-elbo", "amortized-iwae", "my_guide-elbo",
                                                           "my_guide-iwae"}
    assert len(rows[2]["config"]["guide_options"]["source_sha256"]) == 64


def test_gradients_takes_a_user_guide_file(guide_file, tmp_path, capsys):
    out = tmp_path / "grad"
    code, _, err = run_cli(["gradients", "vae", "--guide", f"{guide_file}:my_guide", "--objectives", "elbo,iwae",
                            "--particles", "1,2", "--repeats", "3", "--batch-size", "20", "--latent-dim", "2",
                            "--hidden", "16", "--dataset", "digits", "--no-progress", "--out", out], capsys)
    assert code == 0, err
    result = json.loads((out / "gradients.json").read_text())
    guide_rows = [r for r in result["rows"] if r["group"] == "guide"]
    assert {(r["objective"], r["particles"]) for r in guide_rows} == {("elbo", 1), ("elbo", 2), ("iwae", 1), ("iwae", 2)}
    # the guide's parameters are the file's encoder, Linear(64, 16) and Linear(16, 4): 1040 + 68 numbers
    assert all(r["num_parameters"] == 1108 and r["variance"] > 0 for r in guide_rows)


@pytest.mark.parametrize("name,message", [
    ("wrong_name", r"guide wrong_name samples 'w', which is not a latent of VAE \(its latents: 'z'\); name each "
                   r"guide site after the model's latent"),
    ("missing", r"guide missing does not sample VAE's latent 'z'; a guide proposes every latent"),
    ("outside_plate", r"guide outside_plate's site 'z' is outside the data plate"),
    ("wrong_event", r"guide wrong_event's site 'z' has event shape \(3,\), and VAE's latent has \(2,\)"),
    ("wrong_support", r"guide wrong_support's site 'z' has support boolean, and VAE's latent 'z' has real"),
    ("fixed_batch", r"guide fixed_batch failed under a plate of 2 particles .* \(my_guides.py, line \d+\): "
                    r"RuntimeError"),
])
def test_a_bad_guide_file_is_refused_in_one_line_and_writes_nothing(guide_file, tmp_path, capsys, name, message):
    import re
    for command in (["train", "vae", "--guide", f"{guide_file}:{name}", "--out", tmp_path / "run"] + FAST,
                    ["compare", "vae", "--guides", f"amortized,{guide_file}:{name}", "--objectives", "elbo",
                     "--out", tmp_path / "cmp"] + FAST):
        code, _, err = run_cli(command, capsys)
        assert one_line_refusal(code, err), err
        assert re.search(message, err), err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["my_guides.py"]


def test_a_run_of_a_guide_file_is_evaluated_only_when_the_file_is_named_and_unchanged(guide_file, tmp_path, capsys):
    marker = tmp_path / "marker"
    source = f"open({str(marker)!r}, 'w').write('ran')\n" + GUIDE_FILE
    guide_file.write_text(source)
    run = tmp_path / "run"
    code, _, err = run_cli(["train", "vae", "--guide", f"{guide_file}:my_guide", "--out", run] + FAST, capsys)
    assert code == 0, err
    config = json.loads((run / "config.json").read_text())
    assert config["guide"] == f"{guide_file.resolve()}:my_guide" and len(config["guide_options"]["source_sha256"]) == 64
    marker.unlink()
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file() and p.name != ".pyro-zoo.lock"}
    for command in (["eval", run], ["train", "--resume", run, "--epochs", "2"], ["eval", run, "--gaps"],
                    ["gradients", "vae", "--objectives", "elbo", "--checkpoint", run, "--out", tmp_path / "g"]):
        code, _, err = run_cli(command, capsys)
        assert one_line_refusal(code, err) and "never imports" in err and "FILE.py:my_guide" in err, (command, err)
        assert not marker.exists(), command
    guide_file.write_text(source + "\n# changed\n")
    for command in (["eval", run, "--guide", f"{guide_file}:my_guide"],
                    ["train", "vae", "--guide", f"{guide_file}:my_guide", "--resume", run, "--epochs", "2"]):
        code, _, err = run_cli(command, capsys)
        assert one_line_refusal(code, err) and "guide file" in err and "changed since this run was made" in err, err
        assert not marker.exists(), command
    after = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file() and p.name != ".pyro-zoo.lock"}
    assert after == before
    guide_file.write_text(source)
    code, _, err = run_cli(["eval", run, "--guide", f"{guide_file}:my_guide", "--eval-samples", "12"], capsys)
    assert code == 0, err
    assert json.loads((run / "results.json").read_text())["num_samples"] == 12
    code, _, err = run_cli(["train", "vae", "--guide", f"{guide_file}:my_guide", "--resume", run, "--epochs", "2",
                            "--no-progress"], capsys)
    assert code == 0, err
    assert json.loads((run / "results.json").read_text())["epochs_trained"] == 2


def _global_shift(x_dim):
    """mu ~ N(0, 2^2 I) global; z_n ~ N(0, I); x_n ~ N(mu + z_n, 0.5^2 I): given mu, x_n ~ N(mu, 1.25 I)."""
    def model(x, idx=None, N=None):
        mu = pyro.sample("mu", dist.Normal(torch.zeros(x_dim), 2.0).to_event(1))
        with pyro.plate("data", N, subsample=idx):
            z = pyro.sample("z", dist.Normal(torch.zeros(x_dim), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(mu + z, 0.5).to_event(1), obs=x)
    return model


def test_a_user_guide_of_the_local_latents_runs_beside_the_zoos_global_guide():
    """A model with a global mu: your guide proposes z_n, the zoo's global guide (--global-guide) proposes mu,
    and the harness reports log p(x_n | mu_hat) at its point estimate, checked against the closed form
    N(x_n; mu_hat, 1.25 I) (the exact posterior q(z_n | x_n, mu_hat) makes each weight exact; here q is learned,
    so within 0.05 nats with 500 samples). A guide that samples mu itself is refused in one line."""
    torch.manual_seed(0)
    x = torch.tensor([1.0, -1.0, 0.5]) + 1.1 * torch.randn(40, 3)
    model = zoo.from_pyro(_global_shift, 3)
    encoder = torch.nn.Linear(3, 6)

    def local_guide(x, idx=None, N=None):
        with pyro.plate("data", N, subsample=idx):
            loc, s = encoder(x).chunk(2, -1)
            pyro.sample("z", dist.Normal(loc, F.softplus(s) + 1e-3).to_event(1))

    from guides.user import as_zoo_guide
    pyro.set_rng_seed(0)
    start = as_zoo_guide(local_guide, model, num_data=40).globals.point_estimate()["mu"].clone()
    zoo.fit(model, local_guide, zoo.build_objective("elbo"), x, epochs=300, batch_size=40, lr=3e-2, progress=False)
    r = zoo.evaluate(model, local_guide, x, num_samples=500)
    mu_hat = as_zoo_guide(local_guide, model).globals.point_estimate()["mu"].clone()
    assert (mu_hat - start).abs().max() > 0.1                 # q(mu) was trained with the user's q(z | x)
    exact = dist.Normal(mu_hat, 1.25 ** 0.5).log_prob(x).sum(-1).mean().item()
    assert r["global_latents"] == ["mu"] and r["log_likelihood"] == pytest.approx(exact, abs=0.05)

    def full_guide(x, idx=None, N=None):
        pyro.sample("mu", dist.Normal(torch.zeros(3), 1.0).to_event(1))
        local_guide(x, idx, N)
    with pytest.raises(ZooError, match=r"samples 'mu', a global latent of .* sample only the local latents \('z'\)"):
        zoo.evaluate(model, full_guide, x, num_samples=5)


def test_global_guide_is_an_option_of_a_guide_file_on_the_command_line(tmp_path, capsys):
    """--global-guide delta with --guide FILE.py:NAME on a global-latent model: the run's q(theta) is the delta
    (results.json says so), where the flag was refused as 'applies to the amortized, ... guides only'."""
    (tmp_path / "m.py").write_text(
        "import pyro, pyro.distributions as dist, torch\n\n\ndef shift(x_dim):\n"
        "    def model(x, idx=None, N=None):\n"
        "        mu = pyro.sample('mu', dist.Normal(torch.zeros(x_dim), 2.0).to_event(1))\n"
        "        with pyro.plate('data', N, subsample=idx):\n"
        "            z = pyro.sample('z', dist.Normal(torch.zeros(x_dim), 1.0).to_event(1))\n"
        "            pyro.sample('x', dist.Bernoulli(logits=mu + z).to_event(1), obs=x)\n"
        "    return model\n")
    (tmp_path / "g.py").write_text(
        "import pyro, pyro.distributions as dist, torch\n\n\ndef local(x_dim):\n"
        "    encoder = torch.nn.Linear(x_dim, 2 * x_dim)\n\n"
        "    def guide(x, idx=None, N=None):\n"
        "        with pyro.plate('data', N, subsample=idx):\n"
        "            loc, s = encoder(x).chunk(2, -1)\n"
        "            pyro.sample('z', dist.Normal(loc, s.exp()).to_event(1))\n"
        "    return guide\n")
    out = tmp_path / "run"
    code, _, err = run_cli(["train", tmp_path / "m.py:shift", "--guide", tmp_path / "g.py:local", "--global-guide",
                            "delta", "--out", out, *[a for a in FAST if a not in ("--latent-dim", "2", "--hidden", "16")]],
                           capsys)
    assert code == 0, err
    assert json.loads((out / "results.json").read_text())["global_guide"] == "delta"
