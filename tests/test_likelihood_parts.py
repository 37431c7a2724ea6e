"""Likelihood parts (zoo.core.likelihoods): each maps a decoder's outputs to the distribution its docstring
states, the vae and hvae are composed from them, and checkpoints written before the parts existed still load.

The two run folders under ``tests/fixtures/legacy_runs`` were written by pyro-zoo at commit 3edbb72, when the
Gaussian scale was the model's own ``log_scale`` and a k-level likelihood was its ``pixels``:

    pyro-zoo train vae --dataset digits17 --likelihood dequant-uniform --latent-dim 2 --hidden 8 --guide-hidden 8 --epochs 1
    pyro-zoo train hvae --dataset digits --likelihood gaussian --layers 3,2 --hidden 8 --transition-hidden 4 --guide-hidden 8 --epochs 1

(config.json and checkpoint.pt kept).
"""
import math
import shutil
from pathlib import Path

import pytest
import torch

from zoo.cli import main
from zoo.core.errors import ZooError
from zoo.core.levels import LEVEL_LIKELIHOODS, levels_of
from zoo.core.likelihoods import LIKELIHOODS, build_likelihood
from zoo.core.components import MODELS
from zoo.experiments.run import prepare
from zoo.experiments.run_folder import load_run, load_weights
from zoo.training.optimizer import make_optimizer, restore_optimizer

LEGACY = Path(__file__).parent / "fixtures" / "legacy_runs"
D = 6


@pytest.mark.parametrize("name", LIKELIHOODS)
def test_each_part_gives_an_event_of_D_values_from_its_outputs(name):
    """The network has exactly ``outputs`` outputs, the distribution's event is (D,), and its levels are those of
    its support: k for a probability over k values per pixel, 2 for Bernoulli, none for a density."""
    torch.manual_seed(0)
    px = build_likelihood(name, "mlp", D, levels=5, mixtures=2)
    net = px.network(z_dim=3, hidden=(7,))
    assert net[-1].out_features == px.outputs
    p = px(net, torch.randn(4, 3))
    assert p.batch_shape == (4,) and p.event_shape == (D,)
    x = p.sample()
    assert torch.isfinite(p.log_prob(x)).all()
    if name.startswith("dequant"):                        # a bound on log P(x) with one u drawn: no enumerable support
        assert px.data_levels == 5
    else:
        assert px.data_levels == levels_of(p), name
    assert px.levels == (5 if name in LEVEL_LIKELIHOODS else None)


def test_bernoulli_and_gaussian_parts_are_the_closed_forms():
    """log p(x | z) of the bernoulli part is sum_i x_i l_i - log(1 + e^l_i); of the gaussian part the sum of
    N(x_i; f_i, sigma_i^2) log-densities with sigma = exp(log_scale)."""
    torch.manual_seed(1)
    out, x = torch.randn(5, D), torch.bernoulli(torch.full((5, D), 0.4))
    bern = build_likelihood("bernoulli", "mlp", D)
    assert torch.allclose(bern.distribution(out).log_prob(x), (x * out - torch.nn.functional.softplus(out)).sum(-1),
                          atol=1e-5)
    gauss = build_likelihood("gaussian", "mlp", D)
    with torch.no_grad():
        gauss.log_scale.copy_(torch.linspace(-1, 1, D))
    s = gauss.log_scale.exp()
    expected = (-0.5 * ((x - out) / s) ** 2 - gauss.log_scale - 0.5 * math.log(2 * math.pi)).sum(-1)
    assert torch.allclose(gauss.distribution(out).log_prob(x), expected, atol=1e-5)


@pytest.mark.parametrize("decoder", ["made", "pixelcnn"])
def test_an_autoregressive_part_scores_x_with_the_logits_its_network_gives_x(decoder):
    """log p(x | z) = sum_i x_i l_i - log(1 + e^l_i) with l = net(x, z): the part hands the network the observed x.
    A non-Bernoulli likelihood is refused in one line."""
    torch.manual_seed(2)
    px = build_likelihood("bernoulli", decoder, 16, channels=(4, 4))
    net = px.network(z_dim=2, hidden=(20,))
    z, x = torch.randn(3, 2), torch.bernoulli(torch.full((3, 16), 0.5))
    logits = net(x, z)
    expected = (x * logits - torch.nn.functional.softplus(logits)).sum(-1)
    assert torch.allclose(px(net, z, observed=x).log_prob(x), expected, atol=1e-5)
    with pytest.raises(ZooError, match="autoregressive Bernoulli likelihood, for binary data"):
        build_likelihood("gaussian", decoder, 16)


@pytest.mark.parametrize("model", ["vae", "hvae"])
@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian", "dmol"])
def test_the_models_observe_x_through_their_part(model, likelihood):
    """The site x of the vae and the hvae is the part's distribution of the decoder's output at the z the model drew
    (the models hold no likelihood code of their own)."""
    import pyro.poutine as poutine
    torch.manual_seed(3)
    options = dict(MODELS[model].options.test_options, likelihood=likelihood, levels=5, mixtures=2)
    m = MODELS.build(model, 8, **options)
    trace = poutine.trace(m.model).get_trace(None, N=3)
    bottom = "z" if model == "vae" else "z1"
    expected = m.px.distribution(m.decoder(trace.nodes[bottom]["value"]))
    x = trace.nodes["x"]["value"]
    assert torch.allclose(trace.nodes["x"]["fn"].log_prob(x), expected.log_prob(x))
    assert m.likelihood == likelihood and m.levels == (5 if likelihood == "dmol" else None)


# -- checkpoints from before the parts -------------------------------------------------------------------------

#: the model parameters in the order the old code registered them, which is the order of Adam's moments
LEGACY_ORDER = {
    "vae-dequant-uniform": ["pixels.log_scale", "decoder.0.weight", "decoder.0.bias", "decoder.2.weight",
                            "decoder.2.bias"],
    "hvae-gaussian": ["log_scale", "transitions.0.0.weight", "transitions.0.0.bias", "transitions.0.2.weight",
                      "transitions.0.2.bias", "decoder.0.weight", "decoder.0.bias", "decoder.2.weight",
                      "decoder.2.bias"],
}
NOW = {"pixels.log_scale": "px.pixels.log_scale", "log_scale": "px.log_scale"}


@pytest.mark.parametrize("folder", sorted(LEGACY_ORDER))
def test_a_checkpoint_from_before_the_parts_loads_with_each_moment_on_its_parameter(folder, tmp_path):
    """The old tensors land on the renamed parameters, and each parameter gets the Adam moments the old optimizer
    kept for it (the Gaussian's scale was the hvae's first parameter and is now after the decoder)."""
    old = torch.load(LEGACY / folder / "checkpoint.pt", weights_only=False)
    shutil.copytree(LEGACY / folder, tmp_path / "run")
    state, config = load_run(tmp_path / "run")
    run = prepare(config)
    optimizer = make_optimizer(run.model, run.guide, config.lr)
    load_weights(run.model, run.guide, state, tmp_path / "run" / "checkpoint.pt")
    restore_optimizer(optimizer, torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=config.lr_decay), state)
    params = dict(run.model.named_parameters())
    for position, name in enumerate(LEGACY_ORDER[folder]):
        new = NOW.get(name, name)
        assert torch.equal(params[new].detach(), old["model"][name]), name
        moments = old["optimizer"]["state"][old["optimizer"]["param_groups"][0]["params"][position]]
        assert torch.equal(optimizer.state[params[new]]["exp_avg"], moments["exp_avg"]), name
        assert torch.equal(optimizer.state[params[new]]["exp_avg_sq"], moments["exp_avg_sq"]), name


@pytest.mark.slow
@pytest.mark.parametrize("folder", sorted(LEGACY_ORDER))
def test_a_run_folder_from_before_the_parts_evaluates_and_resumes_from_the_command_line(folder, tmp_path, capsys):
    shutil.copytree(LEGACY / folder, tmp_path / "run")
    run = str(tmp_path / "run")
    assert main(["eval", run, "--eval-samples", "20", "--no-progress"]) == 0, capsys.readouterr().err
    assert main(["train", "--resume", run, "--epochs", "2", "--no-progress"]) == 0, capsys.readouterr().err
    saved = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=False)
    assert saved["epoch"] == 2 and any(k.startswith("px.") for k in saved["model"])
