"""zoo.from_pyro on models with several observed sites, pyro.factor and pyro.deterministic sites,
covariates, the two-particle trial run, forward-only modules and non-factory classes."""
import json
import math
import re

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.nn import PyroModule
from torch import nn

import zoo
from zoo.cli import main
from zoo.core.errors import ZooError
from zoo.core.weights import per_datum_log_weights
from zoo.models.pyro_model import from_pyro

T, d, Z = 3, 2, 2           # three steps of two features each: D = 6


def sequence(x_dim, factor=True):
    """z ~ N(0, I); step t's emission x_t = x[:, (T-1-t)d:(T-t)d] (stored back to front) ~ N(W_t z, 0.5^2);
    a pyro.factor -|z|^2 / 4 and a pyro.deterministic record of W_0 z."""
    emitters = nn.ModuleList(nn.Linear(Z, d) for _ in range(T))

    def model(x, idx=None, N=None):
        pyro.module("emitters", emitters)
        with pyro.plate("data", N, subsample=idx):
            z = pyro.sample("z", dist.Normal(torch.zeros(Z), 1.0).to_event(1))
            pyro.deterministic("w0z", emitters[0](z), event_dim=1)
            if factor:
                pyro.factor("shrink", -z.pow(2).sum(-1) / 4)
            for t in range(T):
                a = (T - 1 - t) * d
                pyro.sample(f"obs_x_{t}", dist.Normal(emitters[t](z), 0.5).to_event(1),
                            obs=None if x is None else x[:, a:a + d])
    return model


def _fixed_z_guide(z0):
    def guide(x, idx=None, N=None):
        with pyro.plate("data", N, subsample=idx):
            pyro.sample("z", dist.Delta(z0[idx], event_dim=1))
    return guide


def test_every_observed_site_and_the_factor_are_scored_and_the_deterministic_site_is_not():
    """log p(x | z) = sum_t log N(x_t; W_t z, 0.5^2 I) + (-|z|^2 / 4) at a fixed z, by hand; log p(z) is the
    N(0, I) density alone (the factor counts in the likelihood term, so the KL stays a KL)."""
    torch.manual_seed(0)
    model = from_pyro(sequence, T * d)
    assert [s.name for s in model.latents] == ["z"]                 # w0z is no latent
    assert [(o.name, o.columns) for o in model.observed] == [("obs_x_0", (4, 5)), ("obs_x_1", (2, 3)),
                                                             ("obs_x_2", (0, 1))]
    assert model.factors == ("shrink",) and model.covariates == () and model.likelihood == "gaussian"
    x, z0 = torch.randn(5, T * d), torch.randn(5, Z)
    idx = torch.arange(5)
    lw = per_datum_log_weights(model.model, _fixed_z_guide(z0), x, idx=idx, N=5, num_particles=2)
    emitters = model.networks["emitters"]
    by_hand = sum(torch.distributions.Normal(emitters[t](z0), 0.5).log_prob(x[:, (T - 1 - t) * d:(T - t) * d]).sum(-1)
                  for t in range(T)) - z0.pow(2).sum(-1) / 4
    torch.testing.assert_close(lw.log_likelihood, by_hand.expand(2, 5).detach(), rtol=0, atol=1e-5)
    torch.testing.assert_close(lw.log_prior, torch.distributions.Normal(0.0, 1.0).log_prob(z0).sum(-1).expand(2, 5),
                               rtol=0, atol=1e-5)
    # E[x | z] for the reconstructions: each step's mean in its own columns
    x_mean = lw.x_mean
    torch.testing.assert_close(x_mean[0, :, 0:2], emitters[2](z0).detach(), rtol=0, atol=1e-6)
    torch.testing.assert_close(x_mean[1, :, 4:6], emitters[0](z0).detach(), rtol=0, atol=1e-6)


def test_a_sequence_model_trains_and_is_evaluated_through_the_harness():
    torch.manual_seed(0)
    x = torch.randn(40, T * d)
    model = from_pyro(sequence, T * d)
    guide = zoo.build_guide("amortized", model)
    zoo.fit(model, guide, zoo.build_objective("iwae"), x, epochs=2, batch_size=20, lr=1e-2, progress=False)
    result = zoo.evaluate(model, guide, x, num_samples=20, iwae_k=5)
    assert math.isfinite(result["log_likelihood"]) and result["elbo"] <= result["log_likelihood"] + 1e-6


def test_generation_puts_each_steps_draw_into_its_columns():
    """sample(n): model(None, N=n), each per-step site's E[x_t | z] written to the columns it observes."""
    def marked(x_dim):
        def model(x, idx=None, N=None):
            with pyro.plate("data", N, subsample=idx):
                z = pyro.sample("z", dist.Normal(torch.zeros(1), 1.0).to_event(1))
                for t in range(T):                 # step t lives in columns (T-1-t)d .. (T-t)d - 1; its mean is 10t + j
                    a = (T - 1 - t) * d
                    loc = 10.0 * t + torch.arange(d) + 0 * z
                    pyro.sample(f"obs_x_{t}", dist.Normal(loc, 1e-3).to_event(1),
                                obs=None if x is None else x[:, a:a + d])
                pyro.sample("last", dist.Normal(-1.0 + 0 * z[..., 0], 1e-3), obs=None if x is None else x[:, -1])
        return model

    model = from_pyro(marked, T * d + 1)
    assert model.observed[-1].columns == (T * d,) and model.observed[-1].event_shape == ()
    x = model.sample(4)
    expected = torch.tensor([20.0, 21.0, 10.0, 11.0, 0.0, 1.0, -1.0])
    torch.testing.assert_close(x, expected.expand(4, -1))
    assert torch.allclose(model.sample(4, mean=False), x, atol=0.01)


def regression(x_dim, noise=0.5):
    """y = x[:, -1] ~ N(f . w + u, noise^2), a random intercept u ~ N(0, 1) per datum, features f = x[:, :-1]."""
    def model(x, idx=None, N=None):
        w = pyro.param("w", torch.linspace(-1.0, 1.0, x_dim - 1))
        features = x[:, :-1]
        with pyro.plate("data", N, subsample=idx):
            u = pyro.sample("u", dist.Normal(torch.zeros(1), 1.0).to_event(1))
            pyro.sample("y", dist.Normal(features @ w + u[..., 0], noise), obs=x[:, -1])
    return model


def test_a_model_with_covariates_evaluates_p_y_given_features_and_refuses_to_generate():
    """log p(y | f) = log N(y; f . w, 1 + s^2) in closed form (s = 0.5). With the meanfield guide set to the exact
    posterior u | y, f ~ N(r / (1 + s^2), s^2 / (1 + s^2)), r = y - f . w, every importance weight equals p(y | f),
    so the harness's ELBO and IS log p(x) are that closed form; sampling is refused in one line."""
    torch.manual_seed(0)
    model = from_pyro(regression, 4)
    assert model.covariates == (0, 1, 2) and [(o.name, o.columns) for o in model.observed] == [("y", (3,))]
    assert "log p(x[:, 3] | x[:, 0-2])" in model.likelihood_note
    x = torch.randn(30, 4)
    w, s2 = torch.linspace(-1.0, 1.0, 3), 0.25
    residual = x[:, 3] - x[:, :3] @ w
    guide = zoo.build_guide("meanfield", model, num_data=30)
    with torch.no_grad():
        guide.u_loc.copy_((residual / (1 + s2)).unsqueeze(-1))
        guide.u_log_scale.fill_(0.5 * math.log(s2 / (1 + s2)))
    result = zoo.evaluate(model, guide, x, num_samples=50, iwae_k=5, proposal="guide")     # q = p(u | x): w = p(x)
    exact = torch.distributions.Normal(0.0, math.sqrt(1 + s2)).log_prob(residual).mean().item()
    assert abs(result["log_likelihood"] - exact) < 1e-4 and abs(result["elbo"] - exact) < 1e-4
    with pytest.raises(ZooError, match=r"cannot generate data: columns 0-2 of x are covariates") as error:
        model.sample(3)
    assert "\n" not in str(error.value)


def run_cli(args, capsys):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


FAST = ["--epochs", "1", "--eval-samples", "10", "--iwae-k", "5", "--eval-limit", "30", "--batch-size", "200",
        "--no-progress", "--seed", "0"]

COVARIATES_FILE = '''
import pyro, pyro.distributions as dist, torch

def logistic(x_dim):
    """The last pixel given the others: y ~ Bernoulli(sigmoid(f . w + u)), u ~ N(0, 1) per datum."""
    w = torch.nn.Linear(x_dim - 1, 1)
    def model(x, idx=None, N=None):
        pyro.module("w", w)
        with pyro.plate("data", N, subsample=idx):
            u = pyro.sample("u", dist.Normal(torch.zeros(1), 1.0).to_event(1))
            pyro.sample("y", dist.Bernoulli(logits=(w(x[:, :-1]) + u)[..., 0]), obs=x[:, -1])
    return model
'''


def test_the_cli_says_what_log_p_x_is_for_a_model_with_covariates_and_draws_no_samples(tmp_path, capsys):
    (tmp_path / "covariates.py").write_text(COVARIATES_FILE)
    out = tmp_path / "run"
    code, stdout, err = run_cli(["train", f"{tmp_path / 'covariates.py'}:logistic", "--guide", "amortized",
                                 "--objective", "elbo", "--dataset", "digits", "--out", out] + FAST, capsys)
    assert code == 0, err
    assert "note: log p(x) here is log p(x[:, 63] | x[:, 0-62])" in stdout
    assert "columns 0-62 of x are covariates" in json.loads((out / "results.json").read_text())["note"]
    assert (out / "reconstructions.png").is_file() and not (out / "samples.png").exists()


SHAPES_FILE = '''
import pyro, pyro.distributions as dist, torch
from torch import nn

def flat(x_dim, z_dim=2):
    decoder = nn.Linear(z_dim, x_dim)
    def model(x, idx=None, N=None):
        pyro.module("decoder", decoder)
        with pyro.plate("data", N, subsample=idx):
            z = pyro.sample("z", dist.Normal(torch.zeros(z_dim), 1.0).to_event(1))
            B = z.shape[0]
            loc = decoder(z).view(B, x_dim)
            pyro.sample("x", dist.Bernoulli(logits=loc).to_event(1), obs=x)
    return model

def ones(x_dim, z_dim=2):
    decoder = nn.Linear(z_dim, x_dim)
    def model(x, idx=None, N=None):
        pyro.module("decoder", decoder)
        with pyro.plate("data", N, subsample=idx):
            z = pyro.sample("z", dist.Normal(torch.zeros(z_dim), 1.0).to_event(1))
            pyro.sample("x", dist.Bernoulli(logits=decoder(z) * torch.ones(z.shape[0], 1)).to_event(1), obs=x)
    return model
'''


@pytest.mark.parametrize("name,culprit", [("flat", ".view(B, x_dim)"), ("ones", "torch.ones(z.shape[0], 1)")])
def test_a_shape_written_for_one_particle_is_refused_at_build_time_with_its_line(tmp_path, capsys, name, culprit):
    """loc.view(B, D) and torch.ones(z.shape[0], 1) pass one particle and fail under iwae's K particles:
    the two-particle trial run refuses them before training, in one line naming the file's line."""
    (tmp_path / "shapes.py").write_text(SHAPES_FILE)
    line = 1 + next(i for i, text in enumerate(SHAPES_FILE.splitlines()) if culprit in text)
    out = tmp_path / "run"
    code, stdout, err = run_cli(["train", f"{tmp_path / 'shapes.py'}:{name}", "--objective", "elbo",
                                 "--dataset", "digits", "--out", out] + FAST, capsys)
    assert code == 2 and stdout == "" and err.count("\n") == 1
    assert "under 2 vectorized particles per datum" in err and f"(shapes.py, line {line})" in err, err
    assert "never z.shape[0] or view(B, D)" in err
    assert not out.exists()


class ForwardVAE(PyroModule):
    """Pyro's usual form: a PyroModule whose forward is the model."""

    def __init__(self, x_dim, z_dim=2):
        super().__init__()
        self.z_dim = z_dim
        self.decoder = nn.Linear(z_dim, x_dim)

    def forward(self, x, idx=None, N=None):
        pyro.module("decoder", self.decoder)
        with pyro.plate("data", N, subsample=idx):
            z = pyro.sample("z", dist.Normal(torch.zeros(self.z_dim), 1.0).to_event(1))
            pyro.sample("x", dist.Bernoulli(logits=self.decoder(z)).to_event(1), obs=x)


@pytest.mark.parametrize("given", ["class", "instance"])
def test_a_forward_only_pyro_module_is_the_model(given):
    torch.manual_seed(0)
    model = from_pyro(ForwardVAE if given == "class" else ForwardVAE(8), 8)
    assert sorted(model.state_dict()) == ["user.decoder.bias", "user.decoder.weight"]
    before = model.user.decoder.weight.detach().clone()
    x = torch.bernoulli(torch.full((20, 8), 0.3))
    guide = zoo.build_guide("amortized", model)
    zoo.fit(model, guide, zoo.build_objective("elbo"), x, epochs=1, batch_size=10, lr=1e-2, progress=False)
    assert not torch.equal(before, model.user.decoder.weight)          # trained through forward
    assert model.sample(3).shape == (3, 8)


class NoXDim(PyroModule):
    def __init__(self, z_dim=2):
        super().__init__()
        self.decoder = nn.Linear(z_dim, 8)

    def forward(self, x, idx=None, N=None):
        with pyro.plate("data", N, subsample=idx):
            z = pyro.sample("z", dist.Normal(torch.zeros(2), 1.0).to_event(1))
            pyro.sample("x", dist.Bernoulli(logits=self.decoder(z)).to_event(1), obs=x)


def test_a_class_that_does_not_take_x_dim_first_is_refused_in_one_line():
    with pytest.raises(ZooError, match=re.escape("NoXDim is a class whose __init__ does not take x_dim first")
                       + r".*pass an instance, from_pyro\(NoXDim\(...\), x_dim\), or make x_dim its first argument"
                       ) as error:
        from_pyro(NoXDim, 8)
    assert "\n" not in str(error.value)
    assert from_pyro(NoXDim(), 8).latents[0].name == "z"               # as the line says: an instance works


def test_the_reference_dmm_observes_each_step_in_its_columns_and_pyros_vae_builds():
    """benchmarks/pyro_models: the DMM's obs_x_t holds pixels 8(t-1)..8t-1 of a digit (one image row per step);
    Pyro's VAE example passes the two-particle trial run and generates."""
    from pathlib import Path
    from zoo.usercode.loading import load_user_file as load_model_file
    root = Path(__file__).resolve().parents[1] / "benchmarks" / "pyro_models"
    dmm, _ = load_model_file(f"{root / 'dmm.py'}:dmm")
    model = from_pyro(dmm, 64)
    assert [(o.name, o.columns) for o in model.observed] == [
        (f"obs_x_{t}", tuple(range(8 * (t - 1), 8 * t))) for t in range(1, 9)]
    assert [s.name for s in model.latents] == [f"z_{t}" for t in range(1, 9)] and model.likelihood == "bernoulli"
    assert model.sample(5).shape == (5, 64)
    vae, _ = load_model_file(f"{root / 'vae.py'}:VAE")
    assert from_pyro(vae, 64).sample(2).shape == (2, 64)
