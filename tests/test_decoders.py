"""Autoregressive decoders (MADE, PixelCNN) and the free-bits ELBO, checked against their mathematics.

- the masks are autoregressive: d l_i / d x_j is exactly 0 for j >= i (raster order), and not for every j < i;
- log p(x | z) from one pass equals the sum of the D conditionals evaluated one pixel at a time;
- sampling is ancestral: the sample is the fixed point x_i = 1[u_i < sigmoid(l_i(x_<i, z))] of its noise u,
  pixel i depends on u_1..u_i only, and ``sample()`` is ``ancestral`` of torch's uniform draws;
- free bits: the loss is -(N/B sum_b log p(x_b|z) - N sum_j max(lambda, KL_j)) in closed form, units with
  KL_j < lambda get an exactly zero encoder gradient, and KL warm-up weights the KL term by beta;
- bad input is one line, exit 2, and no files.
"""
from __future__ import annotations

import pyro
import pyro.distributions as dist
import pytest
import torch

from zoo.cli import main
from zoo.core.autoregressive import (AutoregressiveBernoulli, ConditionalMADE, ConditionalPixelCNN, MaskedConv2d,
                                     image_side)
from zoo.core.plates import data_plate
from zoo.objectives import build_objective
from zoo.objectives.free_bits import FreeBitsELBO
from zoo.registry import build_guide, build_model
from zoo.training.warmup import KLWarmup

NETS = {
    "made": lambda: ConditionalMADE(x_dim=20, z_dim=3, hidden=(40, 30)),
    "pixelcnn8": lambda: ConditionalPixelCNN(side=8, z_dim=3, channels=(6, 6, 6)),      # 3x3 mask A
    "pixelcnn16": lambda: ConditionalPixelCNN(side=16, z_dim=3, channels=(4, 4)),       # 5x5 mask A
}


def _randomize(net):
    """Random weights and biases of scale 0.3 (no tanh saturates), so no connection is zero by chance."""
    torch.manual_seed(0)
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0.0, 0.3)
    return net


def _dim(net) -> int:
    return net.layers[-1].out_features if isinstance(net, ConditionalMADE) else net.side ** 2


@pytest.mark.parametrize("name", list(NETS))
def test_masks_are_autoregressive_in_raster_order(name):
    """The Jacobian d l_i / d x_j of the logits is exactly zero on and above the diagonal (j >= i), at random
    inputs; every l_i after the first depends on some earlier x_j, and l_1 depends on z."""
    net = _randomize(NETS[name]())
    D = _dim(net)
    x, z = torch.rand(1, D), torch.randn(1, 3)
    J = torch.autograd.functional.jacobian(lambda x_: net(x_, z)[0], x)[:, 0, :]          # [D, D]
    upper = torch.triu(torch.ones(D, D, dtype=torch.bool))
    assert (J[upper] == 0).all()
    assert (J[1:, :].abs().sum(1) > 0).all()                     # each l_i, i > 1, depends on some x_j, j < i
    Jz = torch.autograd.functional.jacobian(lambda z_: net(x, z_)[0], z)[:, 0, :]
    assert (Jz[0] != 0).any()


def test_mask_types():
    """Mask A hides the centre and everything after it; mask B hides only what comes after the centre."""
    a, b = MaskedConv2d("A", 1, 1, 3).mask[0, 0], MaskedConv2d("B", 1, 1, 3).mask[0, 0]
    assert a.tolist() == [[1, 1, 1], [1, 0, 0], [0, 0, 0]]
    assert b.tolist() == [[1, 1, 1], [1, 1, 0], [0, 0, 0]]


@pytest.mark.parametrize("name", list(NETS))
def test_log_prob_is_the_sum_of_sequential_conditionals(name):
    """log p(x | z) from one pass = sum_i log Bernoulli(x_i; sigmoid(l_i)), with l_i computed from an input that
    holds x_1..x_{i-1} and random junk from pixel i on (to 1e-5)."""
    net = _randomize(NETS[name]())
    D = _dim(net)
    torch.manual_seed(1)
    z = torch.randn(2, 3)
    x = (torch.rand(2, D) < 0.5).float()
    p = AutoregressiveBernoulli(net, z)
    sequential = torch.zeros(2)
    for i in range(D):
        prefix = torch.cat([x[:, :i], (torch.rand(2, D - i) < 0.5).float()], dim=1)
        l_i = net(prefix, z)[:, i]
        sequential += dist.Bernoulli(logits=l_i).log_prob(x[:, i])
    assert torch.allclose(p.log_prob(x), sequential, atol=1e-5)


def test_log_prob_broadcasts_particles_against_data():
    """With z of shape [K, B, d] and x of shape [B, D] (the harness's importance sampling), log p is [K, B] and
    each entry is the one-datum log-density, also when evaluated in chunks without a gradient."""
    net = _randomize(NETS["made"]())
    z, x = torch.randn(4, 2, 3), (torch.rand(2, 20) < 0.5).float()
    lp = AutoregressiveBernoulli(net, z).log_prob(x)
    assert lp.shape == (4, 2)
    assert torch.allclose(lp[3, 1], AutoregressiveBernoulli(net, z[3, 1:2]).log_prob(x[1:2])[0], atol=1e-5)
    chunked = AutoregressiveBernoulli(net, z)
    chunked.chunk = 3                            # without a gradient, the 8 images go through the net 3 at a time
    with torch.no_grad():
        assert torch.allclose(chunked.log_prob(x), lp, atol=1e-5)


@pytest.mark.parametrize("name", ["made", "pixelcnn8"])
def test_sampling_is_ancestral(name):
    """For noise u ~ U(0,1)^D the sample x satisfies x_i = 1[u_i < sigmoid(l_i(x, z))] for every i at once (each
    pixel drawn from its conditional given the earlier ones); changing u_j for j > i leaves x_1..x_i unchanged;
    and ``sample()`` is ``ancestral`` of torch's uniform draws."""
    net = _randomize(NETS[name]())
    D = _dim(net)
    torch.manual_seed(2)
    p = AutoregressiveBernoulli(net, torch.randn(3, 3))
    u = torch.rand(3, D)
    x = p.ancestral(u)
    with torch.no_grad():
        assert torch.equal(x, (u < torch.sigmoid(net(x, p.z))).float())
    i = D // 2
    u2 = torch.cat([u[:, :i + 1], torch.rand(3, D - i - 1)], dim=1)
    x2 = p.ancestral(u2)
    assert torch.equal(x2[:, :i + 1], x[:, :i + 1])
    assert not torch.equal(x2, x)                                   # later pixels did move with their noise
    torch.manual_seed(5)
    s = p.sample()
    torch.manual_seed(5)
    assert torch.equal(s, p.ancestral(torch.rand(3, D)))


def test_vae_with_autoregressive_decoder_scores_and_samples():
    """The vae model observes the decoder at site "x" (the model trace's log p(x|z) is the decoder's), its
    ``mean`` given the observation is the teacher-forced sigmoid(l_i(x_<i, z)), and ``sample(n, mean=False)``
    draws binary images ancestrally."""
    model = build_model("vae", 64, latent_dim=2, hidden=(8,), decoder="pixelcnn", channels=(4, 4))
    x = (torch.rand(5, 64) < 0.5).float()
    trace = pyro.poutine.trace(model.model).get_trace(x)
    site = trace.nodes["x"]
    assert isinstance(site["fn"], AutoregressiveBernoulli)
    assert torch.allclose(site["fn"].log_prob(x), AutoregressiveBernoulli(model.decoder, trace.nodes["z"]["value"])
                          .log_prob(x))
    with torch.no_grad():                        # the displayed reconstruction: teacher-forced, one pass
        assert torch.allclose(site["fn"].mean, torch.sigmoid(site["fn"].logits(x)))
    s = model.sample(3, mean=False)
    assert s.shape == (3, 64) and ((s == 0) | (s == 1)).all()
    assert image_side(784) == 28 and image_side(64) == 8 and image_side(10) is None


def test_hvae_observes_x_given_z1_through_the_decoder():
    """hvae --decoder made: p(x | z1) is the conditional MADE of the bottom layer z1; log p(x | z1) is its log_prob."""
    model = build_model("hvae", 64, layers=(3, 2), hidden=(16,), transition_hidden=(8,), decoder="made")
    x = (torch.rand(4, 64) < 0.5).float()
    trace = pyro.poutine.trace(model.model).get_trace(x)
    site = trace.nodes["x"]
    assert isinstance(site["fn"], AutoregressiveBernoulli) and torch.equal(site["fn"].z, trace.nodes["z1"]["value"])
    assert torch.allclose(site["fn"].log_prob(x), AutoregressiveBernoulli(model.decoder, trace.nodes["z1"]["value"])
                          .log_prob(x))
    assert model.sample(2, mean=False).shape == (2, 64)


# -- free bits -------------------------------------------------------------------------------------------------

N, B, d = 50, 4, 3


def _free_bits_problem(x_depends_on_z: bool = False):
    """z ~ N(0, I_3), x | z ~ N(0, I_2) (or N(z_1 + z_2 + z_3, 1) with x_depends_on_z), q(z | x_b) = N(m_b, s_b^2)
    with m, s per datum; units 0 and 2 have minibatch-average KL below lambda = 0.5, unit 1 above it."""
    torch.manual_seed(3)
    m = torch.tensor([[0.1, 1.5, 0.0]] * B) + 0.05 * torch.randn(B, d)
    s = torch.tensor([[0.9, 0.5, 1.0]] * B)
    m.requires_grad_(), s.requires_grad_()
    x = torch.randn(B, 2)
    idx = torch.arange(B)

    def model(x, idx, N):
        with data_plate(x, idx, N):
            z = pyro.sample("z", dist.Normal(torch.zeros(d), 1.0).to_event(1))
            loc = z.sum(-1, keepdim=True).expand(z.shape[:-1] + (2,)) if x_depends_on_z else torch.zeros(2)
            pyro.sample("x", dist.Normal(loc, 1.0).to_event(1), obs=x)

    def guide(x, idx, N):
        with data_plate(x, idx, N):
            pyro.sample("z", dist.Normal(m, s).to_event(1))

    kl = (0.5 * (s ** 2 + m ** 2 - 1) - torch.log(s)).mean(0)          # KL_j, averaged over the minibatch
    return model, guide, (x, idx, N), m, s, kl


def test_free_bits_loss_is_the_closed_form():
    """loss = -(N/B sum_b log N(x_b; 0, I) - N sum_j max(lambda, KL_j)) exactly (the likelihood does not depend on
    z, so nothing is sampled), with units both under (0, 2) and over (1) lambda; under KLWarmup(beta) the KL
    term is multiplied by beta; at lambda = 0 it equals Pyro's TraceMeanField_ELBO."""
    lam = 0.5
    model, guide, args, m, s, kl = _free_bits_problem()
    assert kl[0] < lam and kl[2] < lam and kl[1] > lam
    x = args[0]
    log_lik = dist.Normal(0.0, 1.0).log_prob(x).sum()
    expected = -(N / B * log_lik - N * torch.clamp(kl, min=lam).sum())
    assert FreeBitsELBO(lam).loss(model, guide, *args) == pytest.approx(expected.item(), rel=1e-6)
    with KLWarmup(0.3):
        warm = FreeBitsELBO(lam).loss(model, guide, *args)
    assert warm == pytest.approx(-(N / B * log_lik - 0.3 * N * torch.clamp(kl, min=lam).sum()).item(), rel=1e-6)
    assert FreeBitsELBO(0.0, num_particles=3).loss(model, guide, *args) == pytest.approx(
        pyro.infer.TraceMeanField_ELBO().loss(model, guide, *args), rel=1e-6)


def test_free_bits_encoder_gradient_is_zero_on_units_under_lambda():
    """With a likelihood that depends on every unit, the encoder's gradient for units 0 and 2 (KL_j < lambda)
    comes from the reconstruction term only: it equals the gradient of -N/B sum_b E log p(x_b | z) alone,
    exactly zero KL part; for unit 1 (KL_1 > lambda) the KL part is there. With a likelihood free of z the
    gradient on units under lambda is exactly 0."""
    lam = 0.5
    model, guide, args, m, s, kl = _free_bits_problem()
    FreeBitsELBO(lam).differentiable_loss(model, guide, *args).backward()
    assert (m.grad[:, [0, 2]] == 0).all() and (s.grad[:, [0, 2]] == 0).all()
    assert (m.grad[:, 1] != 0).all() and (s.grad[:, 1] != 0).all()
    # the same with the reconstruction depending on z: the units under lambda get its gradient only
    model, guide, args, m, s, kl = _free_bits_problem(x_depends_on_z=True)
    pyro.set_rng_seed(0)
    FreeBitsELBO(lam).differentiable_loss(model, guide, *args).backward()
    g_free = m.grad.clone()
    m.grad = None
    pyro.set_rng_seed(0)
    FreeBitsELBO(1e6).differentiable_loss(model, guide, *args).backward()  # every unit under lambda: no KL gradient
    assert torch.allclose(g_free[:, [0, 2]], m.grad[:, [0, 2]], atol=1e-6)
    assert not torch.allclose(g_free[:, 1], m.grad[:, 1], atol=1e-3)


def test_free_bits_through_the_registry_on_a_vae():
    """``build_objective("elbo", free_bits=...)`` is the free-bits ELBO; on a VAE with an amortized guide a
    training loss is finite and its gradient reaches the encoder."""
    objective = build_objective("elbo", free_bits=0.25)
    assert isinstance(objective, FreeBitsELBO) and objective.free_bits == 0.25
    pyro.clear_param_store()
    model = build_model("vae", 64, latent_dim=2, hidden=(8,), decoder="made")
    guide = build_guide("amortized", model, num_data=10)
    x = (torch.rand(10, 64) < 0.5).float()
    loss = objective.differentiable_loss(model.model, guide, x, idx=torch.arange(10), N=10)
    loss.backward()
    assert torch.isfinite(loss)
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in guide.parameters())


def test_train_with_decoder_free_bits_and_warmup(tmp_path):
    """`train vae --decoder made --free-bits 0.2 --kl-warmup 1` runs end to end and records its options."""
    import json
    out = tmp_path / "run"
    assert main(["train", "vae", "--dataset", "digits", "--decoder", "made", "--latent-dim", "2", "--hidden", "8",
                 "--free-bits", "0.2", "--kl-warmup", "1", "--epochs", "2", "--batch-size", "200", "--eval-samples",
                 "5", "--iwae-k", "5", "--out", str(out), "--no-progress"]) == 0
    result = json.loads((out / "results.json").read_text())
    assert result["config"]["objective_options"]["free_bits"] == 0.2 and result["config"]["kl_warmup"] == 1
    assert result["config"]["model_options"]["decoder"] == "made"


# -- bad input ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("argv, message", [
    (["hvae", "--dataset", "synthetic", "--decoder", "pixelcnn"], "decoder 'pixelcnn' convolves over square images"),
    (["hvae", "--dataset", "digits-gray", "--decoder", "made"], "binarize the data or use decoder 'mlp'"),
    (["--dataset", "synthetic", "--decoder", "pixelcnn"], "decoder 'pixelcnn' convolves over square images"),
    (["--dataset", "digits", "--decoder", "lstm"], "invalid choice: 'lstm'"),
    (["--dataset", "digits-gray", "--decoder", "made"], "binarize the data or use decoder 'mlp'"),
    (["--dataset", "digits", "--free-bits", "-1"], "--free-bits must be at least 0"),
    (["--dataset", "digits", "--free-bits", "inf"], "--free-bits must be a finite number, got inf"),
    (["--dataset", "digits", "--free-bits", "nan"], "--free-bits must be a finite number, got nan"),
    (["--dataset", "digits", "--free-bits", "0.5", "--estimator", "reinforce"], "not estimator 'reinforce'"),
    (["--dataset", "digits", "--free-bits", "0.5", "--guide", "iaf"], "needs a mean-field guide of Normal sites"),
    (["--dataset", "digits", "--free-bits", "0.5", "--objective", "iwae"], "--free-bits"),
    (["--dataset", "digits", "--channels", "4,8", "--decoder", "pixelcnn"], "--channels must all be equal"),
    (["--dataset", "digits", "--prior", "mog", "--free-bits", "0.5"], "which needs Normal priors"),
])
def test_bad_input_is_one_line_exit_2_no_files(tmp_path, capsys, argv, message):
    out = tmp_path / "run"
    argv = argv if argv[0] == "hvae" else ["vae", *argv]
    assert main(["train", *argv, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err
    assert not out.exists()
