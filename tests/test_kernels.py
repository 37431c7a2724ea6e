"""zoo.core.kernels: the compiled Bernoulli score is torch's Bernoulli log-density, summed, to float rounding."""
import pyro.distributions as dist
import pytest
import torch

import zoo.core.distributions as distributions
from zoo.core import kernels
from zoo.core.distributions import IndependentBernoulli


@pytest.fixture(autouse=True)
def _fresh_compiler_caches():
    """Each test compiles afresh: torch.compile keeps a few graphs per function (8 by default) and runs it
    uncompiled past them, so tests that add shapes and dtypes could end up testing the eager twin."""
    torch._dynamo.reset()
    yield


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


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("compiled", [False, True])
def test_the_kernels_softplus_is_torchs_to_float_rounding_from_far_below_to_150(compiled, dtype):
    """The kernel's softplus (e^l below l = -17, or -37 in float64) term by term against torch's softplus in
    float64: within 2 units of float32 rounding (2**-24, relative) in float32, as torch's own float32 softplus is, and
    within 4 units of float64 rounding in float64 (two roundings); below the bound where e^l stops being a normal
    number, within the smallest normal number."""
    if compiled and kernels.cpu_compiler() is None:
        pytest.skip("no C++ compiler to build the kernel with")
    tiny, underflow = kernels._GUARDS[dtype]
    logits = torch.cat([torch.linspace(1.05 * underflow, 150, 300_001, dtype=torch.float64),
                        torch.tensor([0.0, tiny, -tiny, underflow, -1e-7, 1e-7], dtype=torch.float64)]).to(dtype)
    unit, bound = torch.finfo(dtype).eps / 2, (2.0 if dtype == torch.float32 else 4.0)
    reference = torch.nn.functional.softplus(logits.double())
    fn = torch.compile(kernels._kernel_bernoulli) if compiled else kernels._kernel_bernoulli
    with torch.no_grad():
        ours = -fn(logits[:, None], torch.zeros_like(logits)[:, None]).double()      # x = 0: the term is -softplus(l)
        positive = fn(logits[:, None], torch.ones_like(logits)[:, None]).double()   # x = 1: -softplus(-l)
    normal = logits >= underflow
    assert ((ours - reference).abs() / (reference * unit))[normal].max() <= bound
    assert (ours - reference)[~normal].abs().max() < torch.finfo(dtype).tiny * 1.5
    assert torch.allclose(positive, -torch.nn.functional.softplus(-logits.double()), rtol=bound * unit, atol=1e-6)


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


def test_with_autograd_big_logits_take_the_kernel_and_get_torchs_gradients(monkeypatch):
    """Logits that need a gradient, from FUSED_GRAD_MIN_ELEMENTS up: the kernel forward and x - sigmoid(l) backward
    (first and second derivatives as torch's path gives them); not while a step is captured, not for data that
    need a gradient, and not for logits smaller than the broadcast shape, which keep torch's path."""
    if kernels.cpu_compiler() is None:
        pytest.skip("no C++ compiler to build the kernel with")
    monkeypatch.setattr(distributions, "FUSED_GRAD_MIN_ELEMENTS", 100)
    torch.manual_seed(3)
    logits = torch.cat([-60 * torch.rand(20, 3, 7), 30 * torch.randn(20, 3, 3)], -1).requires_grad_()
    x = torch.bernoulli(torch.full((3, 10), 0.4))
    fused = IndependentBernoulli(logits).log_prob(x)
    assert type(fused.grad_fn).__name__ == "_BernoulliScoreBackward"
    with monkeypatch.context() as m:
        m.setattr(distributions, "FUSED_GRAD_MIN_ELEMENTS", 10 ** 9)
        torchs = IndependentBernoulli(logits).log_prob(x)
    assert "_BernoulliScore" not in type(torchs.grad_fn).__name__
    assert torch.allclose(fused, torchs, rtol=1e-6, atol=1e-4)
    weights = torch.randn(20, 3)
    (g_fused,) = torch.autograd.grad((weights * fused).sum(), logits, create_graph=True)
    (g_torch,) = torch.autograd.grad((weights * torchs).sum(), logits, create_graph=True)
    assert torch.allclose(g_fused, g_torch, atol=1e-6)
    (h_fused,) = torch.autograd.grad(g_fused.sum(), logits)
    (h_torch,) = torch.autograd.grad(g_torch.sum(), logits)
    assert torch.allclose(h_fused, h_torch, atol=1e-6)
    with distributions.capturing():
        assert "_BernoulliScore" not in type(IndependentBernoulli(logits).log_prob(x).grad_fn).__name__
    y = x.clone().requires_grad_()
    assert "_BernoulliScore" not in type(IndependentBernoulli(logits).log_prob(y).grad_fn).__name__
    small = logits[:1, :1].detach().requires_grad_()                # [1, 1, 10] against data [3, 10]
    with torch.no_grad():
        expected = IndependentBernoulli(small.expand(1, 3, 10)).log_prob(x)
    scored = kernels.bernoulli_log_prob(small, x)
    assert "_BernoulliScore" not in type(scored.grad_fn).__name__ and torch.allclose(scored, expected, atol=1e-4)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_the_gradient_is_compiled_exact_and_falls_back_to_torchs_operations(monkeypatch, dtype):
    """A plain backward takes the compiled gradient, x - sigmoid(l) times the incoming gradient, for logits from -200
    to 200, whether that gradient is per datum (weights) or the stride-0 ones of ``.sum().backward()``; one whose
    kernel cannot be built takes the same formula in torch's operations from then on."""
    if kernels.cpu_compiler() is None:
        pytest.skip("no C++ compiler to build the kernel with")
    monkeypatch.setattr(distributions, "FUSED_GRAD_MIN_ELEMENTS", 100)
    monkeypatch.setattr(kernels, "_BUILT", {})
    torch.manual_seed(5)
    logits = torch.cat([torch.linspace(-200, 200, 40).expand(6, 4, 40), 8 * torch.randn(6, 4, 24)], -1).to(dtype)
    x = torch.bernoulli(torch.full((4, 64), 0.4, dtype=dtype))
    tol = {"rtol": 1e-5, "atol": 1e-6} if dtype == torch.float32 else {"rtol": 1e-12, "atol": 1e-14}

    def expected(weights):
        return (weights.double().unsqueeze(-1) * (x.double() - torch.sigmoid(logits.double()))).to(dtype)

    leaf = logits.clone().requires_grad_()
    for weights in (torch.randn(6, 4, dtype=dtype), torch.ones(6, 4, dtype=dtype)):
        leaf.grad = None
        score = IndependentBernoulli(leaf).log_prob(x)
        (score.sum() if weights.eq(1).all() else (weights * score).sum()).backward()
        assert kernels._BUILT[("bernoulli_gradient", "cpu")] is not None
        assert torch.isfinite(leaf.grad).all() and torch.allclose(leaf.grad, expected(weights), **tol)

    def cannot_build(*args):
        raise torch._dynamo.exc.TorchDynamoException("cannot build")

    monkeypatch.setitem(kernels._BUILT, ("bernoulli_gradient", "cpu"), cannot_build)
    leaf.grad = None
    IndependentBernoulli(leaf).log_prob(x).sum().backward()
    assert kernels._BUILT[("bernoulli_gradient", "cpu")] is None
    assert torch.allclose(leaf.grad, expected(torch.ones(6, 4)), **tol)


def test_an_error_that_is_not_a_failed_build_is_raised_and_the_kernels_stay_built(monkeypatch):
    """The exception with which ``torch.utils.checkpoint`` stops a recomputation early passes through the kernel's
    call, as any error of the caller's own does, instead of being taken for a kernel that cannot be built (which
    switched the kernel off and broke the checkpoint's backward)."""
    if kernels.cpu_compiler() is None:
        pytest.skip("no C++ compiler to build the kernel with")
    from torch.utils.checkpoint import checkpoint, set_checkpoint_early_stop
    monkeypatch.setattr(distributions, "FUSED_GRAD_MIN_ELEMENTS", 1)
    monkeypatch.setattr(kernels, "_BUILT", {})
    torch.manual_seed(6)
    x = torch.bernoulli(torch.full((3, 8), 0.4))
    layer = torch.nn.Linear(4, 8)
    z, weights = torch.randn(5, 3, 4, requires_grad=True), torch.randn(5, 3)

    def block(z):
        return IndependentBernoulli(10 * layer(z)).log_prob(x)

    with set_checkpoint_early_stop(True):
        out = checkpoint(block, z, use_reentrant=False)
        (weights * out).sum().backward()
    assert kernels._BUILT[("bernoulli", "cpu")] is not None
    assert kernels._BUILT[("bernoulli_gradient", "cpu")] is not None
    leaf = z.detach().requires_grad_()
    (weights * block(leaf)).sum().backward()
    assert torch.allclose(z.grad, leaf.grad, rtol=1e-5, atol=1e-6)


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning")   # torch.func's own import
def test_forward_mode_ad_and_torch_func_get_torchs_path_and_the_kernel_stays_built(monkeypatch):
    """_BernoulliScore has no forward-mode rule and no torch.func rule: under either, torch's own operations answer,
    with the right derivatives, and the compiled kernel stays in use for everything else."""
    if kernels.cpu_compiler() is None:
        pytest.skip("no C++ compiler to build the kernel with")
    monkeypatch.setattr(distributions, "FUSED_GRAD_MIN_ELEMENTS", 100)
    monkeypatch.setattr(kernels, "_BUILT", {})
    torch.manual_seed(4)
    logits = 10 * torch.randn(20, 3, 10)
    x = torch.bernoulli(torch.full((3, 10), 0.4))
    expected = x - torch.sigmoid(logits)

    def total(l):
        return IndependentBernoulli(l).log_prob(x).sum()

    with torch.no_grad():
        kernels.bernoulli_log_prob(logits, x)                       # builds the kernel
    assert kernels._BUILT[("bernoulli", "cpu")] is not None
    assert torch.allclose(torch.func.grad(total)(logits), expected, atol=1e-6)
    tangent = torch.randn_like(logits)
    import torch.autograd.forward_ad as fwad
    with fwad.dual_level():
        out = total(fwad.make_dual(logits, tangent))
        assert torch.allclose(fwad.unpack_dual(out).tangent, (expected * tangent).sum(), rtol=1e-5, atol=1e-4)
    assert kernels._BUILT[("bernoulli", "cpu")] is not None
    leaf = logits.clone().requires_grad_()
    assert type(IndependentBernoulli(leaf).log_prob(x).grad_fn).__name__ == "_BernoulliScoreBackward"



def test_the_quiet_compiler_leaves_logging_alone_once_the_builders_note_is_past(monkeypatch):
    """After torch's C++ extension builder is imported (its note is logged at import), entering the context sets no
    logger's level: each setLevel clears every logger's cache, twice per kernel call."""
    import logging
    import sys
    calls = []
    monkeypatch.setattr(logging.Logger, "setLevel", lambda self, level: calls.append(level))
    import torch.utils.cpp_extension as builder
    monkeypatch.delitem(sys.modules, "torch.utils.cpp_extension")
    with kernels.quiet_compiler():
        pass
    assert len(calls) == 2 and calls[0] == logging.ERROR             # quieted, then restored
    monkeypatch.setitem(sys.modules, "torch.utils.cpp_extension", builder)     # imported: its note is past
    calls.clear()
    with kernels.quiet_compiler():
        pass
    assert calls == []


@pytest.mark.slow
def test_a_first_compilation_prints_none_of_the_builders_notes(tmp_path):
    """In a fresh process, the first kernel is built without torch's "No CUDA runtime is found" note, which torch's
    C++ builder logs at its import where CUDA_HOME is set and no GPU is (set here, so that the note is there to be
    silenced on any machine without a GPU)."""
    import os
    import subprocess
    import sys
    if kernels.cpu_compiler() is None:
        pytest.skip("no C++ compiler to build the kernel with")
    code = ("import torch\nfrom zoo.core import kernels\n"
            "x = torch.bernoulli(torch.full((3, 50), 0.5))\n"
            "with torch.no_grad():\n"
            "    for _ in range(2):\n"
            "        kernels.bernoulli_log_prob(torch.randn(4, 3, 50), x)\n"
            "assert kernels._BUILT[('bernoulli', 'cpu')] is not None\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=600,
                         env={**os.environ, "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "cache"), "CUDA_HOME": str(tmp_path)})
    assert out.returncode == 0, out.stderr
    assert "No CUDA runtime" not in out.stderr


@pytest.mark.slow
def test_a_compiler_that_fails_leaves_the_eager_score_and_gradient(tmp_path):
    """With a C++ compiler that fails every build (CXX=/bin/false, a fresh Inductor cache), the score and its
    gradient come from torch's operations, right, and the kernels are marked unbuildable: a real failed build is
    taken for one."""
    import os
    import subprocess
    import sys
    if not os.path.exists("/bin/false"):
        pytest.skip("no /bin/false")
    code = ("import torch\nimport zoo.core.distributions as d\nfrom zoo.core import kernels\n"
            "d.FUSED_MIN_ELEMENTS = d.FUSED_GRAD_MIN_ELEMENTS = 1\n"
            "torch.manual_seed(0)\n"
            "logits, x = 8 * torch.randn(4, 3, 50, dtype=torch.float64), torch.bernoulli(torch.full((3, 50), 0.5))\n"
            "x = x.double()\n"
            "reference = torch.distributions.Bernoulli(logits=logits).log_prob(x).sum(-1)\n"
            "with torch.no_grad():\n"
            "    assert torch.allclose(d.IndependentBernoulli(logits).log_prob(x), reference)\n"
            "assert kernels._BUILT[('bernoulli', 'cpu')] is None, kernels._BUILT\n"
            "kernels._BUILT.clear()\n"
            "leaf = logits.clone().requires_grad_()\n"
            "score = d.IndependentBernoulli(leaf).log_prob(x)\n"
            "assert torch.allclose(score, reference)\n"
            "score.sum().backward()\n"
            "assert torch.allclose(leaf.grad, x - torch.sigmoid(logits))\n"
            "assert kernels._BUILT[('bernoulli', 'cpu')] is None, kernels._BUILT\n"
            "print('fell back')\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=600,
                         env={**os.environ, "CXX": "/bin/false", "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "cache")})
    assert out.returncode == 0 and "fell back" in out.stdout, out.stderr[-3000:]
