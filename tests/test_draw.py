"""DRAW (zoo.models.draw), its attention (zoo.core.attention) and its recurrent guide (guides.recurrent), checked
against exact answers:

- the attention's filters are exact where their algebra says so: an N = side grid with unit stride and a tiny blur
  is the identity (read gives the image back, write pastes the patch unchanged), and write is read's adjoint,
  <read(x), w> = <x, write(w)> at gamma = 1, since F_Y x F_X^T . w = x . F_Y^T w F_X;
- the decoder's canvas is the LSTM recurrence written out by hand (the gate equations), for Pyro's
  [particles, batch] shapes;
- with T = 2 steps of one latent each, log p(x) = log int int N(z1) N(z2) p(x | z1, z2) dz1 dz2 is a 2-d
  Gauss-Hermite quadrature, and importance sampling with the recurrent guide (whose density must match its draws,
  step by step) covers it as often as its stated standard error says;
- tracemeanfield's per-step analytic KL at the sampled past is an unbiased term of the ELBO for the recurrent guide.
"""
import math

import numpy as np
import pytest
import torch

import zoo
from zoo.core.attention import GaussianAttention, filterbanks
from zoo.core.errors import ZooError
from zoo.core.weights import per_datum_log_weights
from zoo.registry import build_guide, build_model


def identity_grid(side):
    """The five raw numbers that place an N = side grid on the pixels: centre g~ = 0, stride delta~ = 1 (delta = 1),
    a blur sigma^2 = e^-8, intensity gamma = 1."""
    return torch.tensor([0.0, 0.0, -8.0, 0.0, 0.0], dtype=torch.float64)


@pytest.mark.parametrize("side", [2, 5, 8])
def test_a_unit_stride_grid_of_side_filters_reads_and_writes_the_image_itself(side):
    fx, fy, gamma = filterbanks(identity_grid(side), side, side)
    eye = torch.eye(side, dtype=torch.float64)
    assert torch.allclose(fx, eye, atol=1e-12) and torch.allclose(fy, eye, atol=1e-12) and gamma.item() == 1.0
    attention = GaussianAttention(side, side, 3).double()
    with torch.no_grad():
        attention.where.weight.zero_()
        attention.where.bias.copy_(identity_grid(side))
    h, x = torch.zeros(4, 3, dtype=torch.float64), torch.rand(4, side * side, dtype=torch.float64)
    assert torch.allclose(attention.read(x, h), x, atol=1e-12)
    assert torch.allclose(attention.write(x, h), x, atol=1e-12)


def test_write_is_read_s_adjoint_and_every_filter_sums_to_one():
    torch.manual_seed(0)
    side, n = 7, 3
    params = torch.randn(6, 5, dtype=torch.float64) * 0.5
    params[:, 4] = 0.0                                              # gamma = 1
    fx, fy, gamma = filterbanks(params, side, n)
    assert torch.allclose(fx.sum(-1), torch.ones(6, n, dtype=torch.float64))
    attention = GaussianAttention(side, n, 5).double()
    with torch.no_grad():
        attention.where.weight.copy_(torch.eye(5, dtype=torch.float64))
        attention.where.bias.zero_()
    x, w = torch.rand(6, side * side, dtype=torch.float64), torch.rand(6, n * n, dtype=torch.float64)
    lhs = (attention.read(x, params) * w).sum(-1)
    rhs = (x * attention.write(w, params)).sum(-1)
    assert torch.allclose(lhs, rhs, atol=1e-12)


def lstm_by_hand(cell, z, h, c):
    """torch's LSTMCell gate equations: i, f, g, o = split(W_ih z + b_ih + W_hh h + b_hh)."""
    i, f, g, o = (z @ cell.weight_ih.T + cell.bias_ih + h @ cell.weight_hh.T + cell.bias_hh).chunk(4, -1)
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    return torch.sigmoid(o) * torch.tanh(c), c


def test_the_canvas_is_the_bias_plus_every_step_s_write_of_the_hand_written_recurrence():
    torch.manual_seed(0)
    model = build_model("draw", 16, steps=3, latent_dim=2, decoder_size=5, write_glimpse=0).double()
    with torch.no_grad():
        model.canvas_bias.normal_()
    zs = torch.randn(3, 4, 6, 2, dtype=torch.float64)             # steps, particles, batch, latents
    state = model.decoder_start()
    h = c = torch.zeros(4, 6, 5, dtype=torch.float64)
    canvas = model.canvas_bias
    for z in zs:
        state = model.decoder_step(state, z)
        h, c = lstm_by_hand(model.rnn, z, h, c)
        canvas = canvas + h @ model.patch.weight.T + model.patch.bias
    assert state.canvas.shape == (4, 6, 16)
    assert torch.allclose(state.h, h, atol=1e-12) and torch.allclose(state.canvas, canvas, atol=1e-12)
    assert torch.allclose(model.decoder_mean(state), torch.sigmoid(canvas))


SCALE = 2.0


def two_step_draw(seed):
    """DRAW on 2 x 2 binary images, T = 2 steps of one latent, 2 x 2 write and read attention, random weights
    scaled up so that p(x | z) varies over z; the recurrent guide's q(z_t | x, z_<t) a little wider than the prior,
    so that the importance weights have a variance and a standard error means what it says."""
    torch.manual_seed(seed)
    model = build_model("draw", 4, steps=2, latent_dim=1, decoder_size=4, write_glimpse=2).double()
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(SCALE)
    guide = build_guide("recurrent", model, encoder_size=4, read_glimpse=2).double()
    with torch.no_grad():                     # q's mean still moves with x and z_<t; its sd ~1.3 keeps w light-tailed
        for head in guide.heads.values():
            head.weight.mul_(0.5)
            head.bias[1] = math.log(math.expm1(1.3))
    return model, guide


def quadrature_log_px(model, x, nodes=80):
    """log p(x) = log sum_ij w_i w_j p(x | z1_i, z2_j): probabilists' Gauss-Hermite on each step's latent."""
    t, w = np.polynomial.hermite_e.hermegauss(nodes)
    t, log_w = torch.tensor(t), torch.tensor(np.log(w / math.sqrt(2 * math.pi)))
    z1, z2 = t[:, None, None, None].expand(nodes, nodes, 1, 1), t[None, :, None, None].expand(nodes, nodes, 1, 1)
    with torch.no_grad():
        state = model.decoder_step(model.decoder_step(model.decoder_start(), z1), z2)
        log_lik = model.px.distribution(state.canvas).log_prob(x)          # [nodes, nodes, n]
    return torch.logsumexp(log_lik + log_w[:, None, None] + log_w[None, :, None], dim=(0, 1))


def test_importance_sampling_with_the_recurrent_guide_covers_the_quadrature_log_px():
    """Over 24 models and data, the IS estimate of mean log p(x) (K = 400, the recurrent guide as proposal) lies
    within 2 stated standard errors of the quadrature in at least 80% of them (a 95% interval), and its z-scores
    average near 0. A guide whose log q did not match its own draws (the decoder state one step off, say) would
    be off by many standard errors."""
    z_scores = []
    for seed in range(24):
        model, guide = two_step_draw(seed)
        x = (torch.rand(6, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(seed)) < 0.5).double()
        truth = quadrature_log_px(model, x).mean().item()
        torch.manual_seed(100 + seed)
        result = zoo.evaluate(model, guide, x, num_samples=400, iwae_k=5, psis=False, proposal="guide")
        z_scores.append((result["log_likelihood"] - truth) / result["log_likelihood_se"])
    z = torch.tensor(z_scores)
    assert (z.abs() < 2).float().mean() >= 0.8, z
    assert abs(z.mean().item()) < 0.8, z


def test_quadrature_is_converged():
    model, _ = two_step_draw(0)
    x = torch.tensor([[1.0, 0.0, 0.0, 1.0]], dtype=torch.float64)
    assert abs((quadrature_log_px(model, x, 80) - quadrature_log_px(model, x, 160)).item()) < 1e-8


@pytest.mark.slow
def test_tracemeanfield_is_unbiased_for_the_recurrent_guide():
    """KL(q(z_t | x, z_<t) || N(0, I)) at the sampled past is an unbiased term of the ELBO in the model's order, so
    tracemeanfield's loss and elbo's agree in expectation (within 4 standard errors over 200 x 20 draws)."""
    from test_ladder import elbo_minus_meanfield_in_se
    model, guide = two_step_draw(3)
    x = (torch.rand(10, 4, dtype=torch.float64) < 0.5).double()
    assert abs(elbo_minus_meanfield_in_se(model, guide, x)) < 4


def test_the_guide_s_log_q_reaches_the_decoder_and_its_own_parameters_are_its_own():
    model, guide = two_step_draw(0)
    assert not {id(p) for p in guide.parameters()} & {id(p) for p in model.parameters()}
    log_w = per_datum_log_weights(model.model, guide, torch.ones(3, 4, dtype=torch.float64), num_particles=2).log_w
    log_w.sum().backward()
    assert model.rnn.weight_ih.grad is not None and guide.rnn.weight_ih.grad is not None
    assert guide.attention.where.weight.grad is not None


def test_what_draw_and_its_guide_cannot_do_is_refused_in_one_line():
    with pytest.raises(ZooError, match="use --write-glimpse 0"):
        build_model("draw", 10, steps=2, latent_dim=1, decoder_size=4)
    build_model("draw", 10, steps=2, latent_dim=1, decoder_size=4, write_glimpse=0)
    with pytest.raises(ZooError, match="use --likelihood bernoulli or gaussian"):
        build_model("draw", 16, likelihood="categorical", levels=4, steps=2, latent_dim=1, decoder_size=4)
    with pytest.raises(ZooError, match="does not write x over steps \\(draw does\\); use amortized"):
        build_guide("recurrent", build_model("vae", 16, latent_dim=2, hidden=(4,)))
    model = build_model("draw", 10, steps=2, latent_dim=1, decoder_size=4, write_glimpse=0)
    with pytest.raises(ZooError, match="use --read-glimpse 0"):
        build_guide("recurrent", model)
    build_guide("recurrent", model, read_glimpse=0, encoder_size=4)


@pytest.mark.slow
def test_train_and_eval_from_the_command_line_write_the_canvas_step_by_step(tmp_path, capsys):
    """pyro-zoo train draw --guide recurrent runs end to end on the digits and draws canvas.png, T columns of the
    canvas for 8 samples; eval re-scores the folder."""
    import json

    from PIL import Image

    from zoo.cli import main
    out = tmp_path / "run"
    assert main(["train", "draw", "--guide", "recurrent", "--objective", "tracemeanfield", "--steps", "4",
                 "--latent-dim", "3", "--decoder-size", "16", "--write-glimpse", "3", "--encoder-size", "16",
                 "--dataset", "digits", "--epochs", "1", "--eval-samples", "20", "--out", str(out),
                 "--no-progress"]) == 0, capsys.readouterr().err
    result = json.loads((out / "results.json").read_text())
    assert result["config"]["model"] == "draw" and math.isfinite(result["log_likelihood"])
    assert [k for k in result["kl_per_site"]] == ["z1", "z2", "z3", "z4"]
    width, height = Image.open(out / "canvas.png").size
    assert abs(height / width - 2) < 0.1                       # 4 steps across, 8 samples down (square images)
    assert main(["eval", str(out), "--eval-samples", "20", "--no-progress"]) == 0, capsys.readouterr().err


def test_canvas_steps_end_at_the_mean_the_model_samples():
    """The last column of the canvas figure is E[x | c_T] of the same latents the model drew."""
    import pyro.poutine as poutine
    torch.manual_seed(0)
    model = build_model("draw", 16, steps=3, latent_dim=2, decoder_size=8, write_glimpse=2)
    torch.manual_seed(1)
    frames = model.canvas_steps(5)
    torch.manual_seed(1)
    trace = poutine.trace(model.model).get_trace(None, N=5)
    assert frames.shape == (3, 5, 16)
    assert torch.allclose(frames[-1], trace.nodes["x"]["fn"].mean)
