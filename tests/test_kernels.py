"""zoo.core.kernels: the compiled Bernoulli score is torch's Bernoulli log-density, summed, to float rounding."""
import pyro.distributions as dist
import pytest
import torch

import zoo.core.distributions as distributions
from zoo.core import kernels
from zoo.core.distributions import IndependentBernoulli


def _reference(logits, x):
    """torch's own Bernoulli, in float64, summed over the last dimension."""
    return dist.Bernoulli(logits=logits.double()).to_event(1).log_prob(x.double())


@pytest.mark.parametrize("compiled", [False, True])
def test_the_score_is_the_bernoulli_log_density_for_broadcast_shapes(compiled, monkeypatch):
    if compiled and kernels.cpu_compiler() is None:
        pytest.skip("no C++ compiler to build the kernel with")
    monkeypatch.setattr(kernels, "_BUILT", {} if compiled else {("bernoulli", "cpu"): None})
    torch.manual_seed(0)
    for k_shape, b, d in (((7,), 5, 13), ((3, 2), 4, 64), ((), 6, 784)):
        logits = 4 * torch.randn(*k_shape, b, d)
        x = torch.bernoulli(torch.full((b, d), 0.3))                  # one datum per row, broadcast over the draws
        with torch.no_grad():
            score = kernels.bernoulli_log_prob(logits, x)
        assert score.shape == k_shape + (b,)
        assert torch.allclose(score.double(), _reference(logits, x), rtol=1e-5, atol=1e-3)
    assert (kernels._BUILT[("bernoulli", "cpu")] is not None) == compiled


def test_big_chunks_outside_autograd_take_the_kernel_and_the_training_path_keeps_torchs(monkeypatch):
    calls = []
    monkeypatch.setattr(distributions, "FUSED_MIN_ELEMENTS", 100)
    monkeypatch.setattr(distributions, "bernoulli_log_prob", lambda l, x: calls.append(l.shape) or
                        kernels._eager_bernoulli(l, x))
    torch.manual_seed(1)
    logits, x = torch.randn(20, 3, 10, requires_grad=True), torch.bernoulli(torch.full((3, 10), 0.5))
    with torch.no_grad():
        fast = IndependentBernoulli(logits).log_prob(x)
        small = IndependentBernoulli(logits[:1, :1, :]).log_prob(x[:1])       # 10 elements: torch's path
    assert calls == [torch.Size([20, 3, 10])]
    trained = IndependentBernoulli(logits).log_prob(x)                          # with autograd: torch's path
    assert len(calls) == 1 and trained.requires_grad
    assert torch.allclose(fast, trained.detach(), atol=1e-5) and torch.allclose(small, trained[:1, :1].detach())
    trained.sum().backward()
    assert torch.allclose(logits.grad, x - torch.sigmoid(logits.detach()), atol=1e-6)


@pytest.mark.parametrize("compiled", [False, True])
def test_the_kernels_softplus_is_softplus_to_2_ulps_from_minus_150_to_150(compiled):
    """The kernel's softplus (e^l below l = -17) against float64's, term by term: within 2 float32 ulps for
    l >= -87, as torch's own, and within 1.7e-38 below, where e^l is at most a denormal float32 away from 0."""
    if compiled and kernels.cpu_compiler() is None:
        pytest.skip("no C++ compiler to build the kernel with")
    logits = torch.cat([torch.linspace(-150, 150, 300_001), torch.tensor([0.0, -17.0, 17.0, -87.0, 87.0, -1e-7, 1e-7])])
    zeros = torch.zeros_like(logits)
    fn = torch.compile(kernels._kernel_bernoulli) if compiled else kernels._kernel_bernoulli
    with torch.no_grad():
        ours = -fn(logits[:, None], zeros[:, None]).double()           # x = 0: the term is -softplus(l)
    exact = torch.nn.functional.softplus(logits.double())
    normal = logits >= -87
    ulps = ((ours - exact).abs() / (exact * 2.0 ** -24))[normal]
    assert ulps.max() <= 2.0
    assert (ours - exact)[~normal].abs().max() < 1.7e-38
    ones = torch.ones_like(logits)
    with torch.no_grad():
        positive = fn(logits[:, None], ones[:, None]).double()          # x = 1: l - softplus(l) = -softplus(-l)
    assert torch.allclose(positive, -torch.nn.functional.softplus(-logits.double()), rtol=2 * 2.0 ** -24, atol=1e-6)


def test_the_kernel_scores_a_decoders_chunk_as_torch_does():
    """Logits as a trained MNIST decoder gives them (most far below zero, where torch's log1p is slow) and a few far
    above: the kernel's sum is torch's Bernoulli log-density, summed, to float32 rounding of 784 terms."""
    if kernels.cpu_compiler() is None:
        pytest.skip("no C++ compiler to build the kernel with")
    torch.manual_seed(2)
    logits = torch.cat([-60 * torch.rand(6, 20, 700), 30 * torch.rand(6, 20, 84)], -1)
    x = torch.bernoulli(torch.full((20, 784), 0.2))
    with torch.no_grad():
        score = kernels.bernoulli_log_prob(logits, x)
    assert torch.allclose(score.double(), _reference(logits, x), rtol=1e-6, atol=1e-3)
