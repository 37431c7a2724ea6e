"""The multimodal VAE, its product-of-experts guide and the conditional log-likelihoods, against closed forms."""
import json
import math

import pyro
import pytest
import torch

from guides.poe import ProductOfExperts, gaussian_product
from zoo.cli import main
from zoo.core.errors import ZooError
from zoo.core.views import ViewsLikelihood, parse_views
from zoo.core.weights import per_datum_log_weights
from zoo.evaluation.harness import conditional_log_likelihoods, evaluate, evaluation_mode
from zoo.models import MVAE
from zoo.objectives.free_bits import FreeBitsELBO
from zoo.registry import build_guide, build_model, build_objective
from zoo.training.loop import fit


def normal_log_density(z, loc, scale):
    return -0.5 * ((z - loc) / scale) ** 2 - torch.log(scale) - 0.5 * math.log(2 * math.pi)


def test_product_of_gaussians_is_the_renormalized_product_of_densities():
    """p(z) prod_i N(z; mu_i, s_i^2), normalized numerically on a grid, equals the precision-weighted
    Gaussian N(mu_S, s_S^2): 1/s_S^2 = 1 + sum 1/s_i^2, mu_S = s_S^2 sum mu_i / s_i^2 (to 1e-6 in density)."""
    locs = [torch.tensor([1.5, -2.0, 0.3]), torch.tensor([-0.5, 0.7, 3.0])]
    scales = [torch.tensor([0.8, 2.0, 0.3]), torch.tensor([1.2, 0.5, 4.0])]
    loc, scale = gaussian_product(locs, scales)
    z = torch.linspace(-12, 12, 48001, dtype=torch.float64).unsqueeze(-1)          # [G, 1] over each unit
    dz = z[1, 0] - z[0, 0]
    log_product = normal_log_density(z, 0.0, torch.tensor(1.0, dtype=torch.float64)) + sum(
        normal_log_density(z, m.double(), s.double()) for m, s in zip(locs, scales))
    density = torch.exp(log_product - torch.logsumexp(log_product, 0) - torch.log(dz))       # renormalized, [G, 3]
    closed = torch.exp(normal_log_density(z, loc.double(), scale.double()))
    assert (density - closed).abs().max() < 1e-6
    # and its moments: the mean and variance of the normalized product
    mean = (density * z).sum(0) * dz
    var = (density * (z - mean) ** 2).sum(0) * dz
    assert torch.allclose(mean.float(), loc, atol=1e-5) and torch.allclose(var.float(), scale ** 2, atol=1e-5)


def test_one_view_is_the_prior_times_that_views_expert():
    """With one view, q(z | x_1) = p(z) q_1(z | x_1) renormalized: precision 1 + 1/s_1^2, mean mu_1 / (1 + s_1^2);
    and the guide's pyro site under given(('image',)) is that Gaussian."""
    model = MVAE(x_dim=74, views=("image:64:bernoulli", "label:10:categorical"), latent_dim=3, hidden=(16,))
    guide = ProductOfExperts(model)
    x = torch.cat([torch.bernoulli(torch.full((5, 64), 0.4)), torch.eye(10)[torch.arange(5)]], dim=1)
    (mu1,), (s1,) = guide.experts_of(x, ["image"])["z"]
    loc, scale = guide.product(x, ["image"])["z"]
    assert torch.allclose(scale, (1 + s1 ** -2).rsqrt(), atol=1e-6)
    assert torch.allclose(loc, mu1 / (1 + s1 ** 2), atol=1e-6)
    import pyro.poutine as poutine
    guide.eval()
    site = poutine.trace(guide.given(("image",))).get_trace(x).nodes["z"]["fn"]
    assert torch.allclose(site.base_dist.loc, loc) and torch.allclose(site.base_dist.scale, scale)
    # both views: the prior expert and both experts
    (m_a, m_b), (s_a, s_b) = guide.experts_of(x, ["image", "label"])["z"]
    loc2, scale2 = guide.product(x)["z"]
    precision = 1 + s_a ** -2 + s_b ** -2
    assert torch.allclose(scale2, precision.rsqrt(), atol=1e-6)
    assert torch.allclose(loc2, (m_a * s_a ** -2 + m_b * s_b ** -2) / precision, atol=1e-5)


def test_the_subsampled_objective_is_the_joint_elbo_plus_each_views_elbo():
    """In training, log w = log w(x_1, x_2) + log w(x_1) + log w(x_2), each term with its own z: the trace
    holds z, z|image, z|label, and its log-weight equals the three single-term log-weights recomputed by hand."""
    model = MVAE(x_dim=74, views=("image:64:bernoulli", "label:10:categorical"), latent_dim=3, hidden=(16,))
    guide = build_guide("poe", model)
    x = torch.cat([torch.bernoulli(torch.full((6, 64), 0.3)), torch.eye(10)[torch.arange(6) + 2]], dim=1)
    guide.train()
    lw = per_datum_log_weights(guide.training_model(model), guide, x, num_particles=4)
    assert set(lw.latents) == {"z", "z|image", "z|label"}

    def log_w(z, views):
        loc, scale = guide.product(x, views)["z"]
        p_x = ViewsLikelihood(model.views, [model.decoders[v.name](z) for v in model.views], observed=views)
        return (p_x.log_prob(x) + normal_log_density(z, 0.0, torch.tensor(1.0)).sum(-1)
                - normal_log_density(z, loc, scale).sum(-1))
    expected = log_w(lw.latents["z"], None) + log_w(lw.latents["z|image"], ["image"]) + log_w(
        lw.latents["z|label"], ["label"])
    assert torch.allclose(lw.log_w, expected, atol=1e-4)
    # in eval mode (validation, the harness) the guide and model are the joint pair only
    guide.eval()
    assert set(per_datum_log_weights(model, guide, x).latents) == {"z"}
    # joint_only: the training model is the model itself
    assert build_guide("poe", model, joint_only=True).training_model(model) is model


def test_free_bits_at_zero_is_the_mean_field_elbo_of_the_subsampled_objective():
    """Free bits with lambda = 0 is TraceMeanField_ELBO on every model, the mvae's sub-sampled one too, which
    observes three sites (x, x|image, x|label) and has three latents: each observed site's log-likelihood and
    each latent's KL is counted, none dropped. With lambda > 0 only the KL terms change."""
    model = MVAE(x_dim=74, views=("image:64:bernoulli", "label:10:categorical"), latent_dim=3, hidden=(16,))
    guide = build_guide("poe", model)
    guide.train()
    x = torch.cat([torch.bernoulli(torch.full((6, 64), 0.3)), torch.eye(10)[torch.arange(6) + 2]], dim=1)
    args = (x, torch.arange(6), 60)
    training_model = guide.training_model(model)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        free_bits = FreeBitsELBO(0.0, num_particles=2).loss(training_model, guide, *args)
        torch.manual_seed(0)
        mean_field = pyro.infer.TraceMeanField_ELBO(num_particles=2, vectorize_particles=True,
                                                   max_plate_nesting=2).loss(training_model, guide, *args)
    assert free_bits == pytest.approx(mean_field, rel=1e-5)
    observed, latents = FreeBitsELBO(0.0).terms(training_model, guide, *args)
    assert len(observed) == 3 and len(latents) == 3


def test_the_two_view_datasets_lay_out_their_views():
    """digits_labels: 64 pixels then the one-hot label of the same digit; mnist_halves: top and bottom 392 pixels."""
    from zoo.data import load_digits, load_digits_labels
    data, digits = load_digits_labels(), load_digits()
    assert [v.spec for v in data.views] == ["image:64:bernoulli", "label:10:categorical"]
    assert torch.equal(data.test[:, :64], digits.test)
    assert torch.equal(data.test[:, 64:].argmax(1), digits.labels["test"].long())


def test_mnist_halves_splits_the_image_at_row_14(tmp_path):
    import numpy as np
    from zoo.data import load_mnist_halves
    arrays = {s: (np.random.RandomState(0).rand(5, 784) < 0.5).astype(np.uint8) for s in ("train", "valid", "test")}
    np.savez(tmp_path / "binarized_mnist.npz", **arrays)
    data = load_mnist_halves(str(tmp_path), expected_sha256=None)
    top, bottom = data.views
    assert (top.start, top.stop, bottom.start, bottom.stop) == (0, 392, 392, 784) and data.image_shape == (28, 28)
    assert torch.equal(bottom.of(data.test), torch.from_numpy(arrays["test"][:, 14 * 28:]).float())


def test_views_likelihood_scores_the_observed_views_only():
    views = parse_views(["a:3:bernoulli", "b:4:categorical"])
    logits = [torch.randn(2, 3), torch.randn(2, 4)]
    x = torch.cat([torch.tensor([[1., 0., 1.], [0., 0., 1.]]), torch.eye(4)[[1, 3]]], dim=1)
    per_view = ViewsLikelihood(views, logits).log_prob_views(x)
    bern = torch.distributions.Bernoulli(logits=logits[0]).log_prob(x[:, :3]).sum(-1)
    cat = torch.log_softmax(logits[1], -1)[torch.arange(2), torch.tensor([1, 3])]
    assert torch.allclose(per_view, torch.stack([bern, cat], -1))
    assert torch.allclose(ViewsLikelihood(views, logits).log_prob(x), bern + cat)
    assert torch.allclose(ViewsLikelihood(views, [None, logits[1]], observed=["b"]).log_prob(x), cat)


def quadrature_log_marginals(model, x, views):
    """log p(x_S) = log int N(z; 0, 1) prod_{v in S} p(x_v | z) dz on a grid (a 1-D latent)."""
    z = torch.linspace(-10, 10, 20001).unsqueeze(-1)                        # [G, 1]
    dz = (z[1] - z[0]).item()
    p_x = ViewsLikelihood(model.views, [model.decoders[v.name](z).unsqueeze(1) for v in model.views])
    per_view = p_x.log_prob_views(x.unsqueeze(0))                           # [G, n, V]
    names = [v.name for v in model.views]
    log_lik = sum(per_view[..., names.index(v)] for v in views)
    log_prior = normal_log_density(z, 0.0, torch.tensor(1.0))              # [G, 1]
    return torch.logsumexp(log_lik + log_prior, 0) + math.log(dz)


@torch.no_grad()
def test_conditional_log_likelihood_matches_quadrature_on_a_one_dimensional_latent():
    """log p(x_b | x_a), self-normalized IS with q(z | x_a) and the difference of the IS estimates log p^(x_a, x_b)
    - log p^(x_a) (K = 20000), is within 0.02 nats of log p(x_a, x_b) - log p(x_a) by quadrature over the 1-D
    latent, and so is log p^(x_a); the label prediction argmax p(x_b | x_a) is the exact one."""
    torch.manual_seed(0)
    model = MVAE(x_dim=7, views=("a:3:bernoulli", "b:4:categorical"), latent_dim=1, hidden=(8,))
    for p in model.parameters():
        p.mul_(3.0)                                                         # a posterior worth computing
    guide = ProductOfExperts(model, hidden=(8,))
    for name, loc in (("a", 0.3), ("b", -0.2)):
        # broad experts (sigma_v = 3), so that q(z | x_v) = N(mu, 0.95^2) has tails no lighter than the
        # posterior's and the importance weights have a finite variance (a narrow untrained expert would not)
        last = guide.experts[name][-1]
        last.weight.zero_()
        last.bias.copy_(torch.tensor([loc, math.log(math.expm1(3.0))]))
    x = torch.cat([torch.tensor([[1., 0., 1.], [0., 0., 0.], [1., 1., 0.], [0., 1., 1.]]),
                   torch.eye(4)[[0, 2, 3, 1]]], dim=1)
    with evaluation_mode(model, guide):
        out = conditional_log_likelihoods(model, guide, x, num_samples=20000)
    result = evaluate(model, guide, x, num_samples=20000, psis=False)     # log p^(x) - log p^(x_v), averaged
    joint = quadrature_log_marginals(model, x, ["a", "b"])
    for given, target in (("a", "b"), ("b", "a")):
        exact = joint - quadrature_log_marginals(model, x, [given])
        assert (out["conditional"][f"{target}|{given}"] - exact).abs().max() < 0.02
        assert (out["marginal"][given] - quadrature_log_marginals(model, x, [given])).abs().max() < 0.02
        assert abs(result["conditional_log_likelihood"][f"{target}|{given}"] - exact.mean().item()) < 0.02
        assert result["conditional_log_likelihood_self_normalized"][f"{target}|{given}"] == pytest.approx(
            exact.mean().item(), abs=0.02)
    # the exact predictive over the 4 classes of view b given view a
    classes = torch.eye(4)
    exact_predictive = torch.stack([quadrature_log_marginals(model, torch.cat([x[:, :3], classes[c].expand(4, 4)], 1),
                                                             ["a", "b"]) for c in range(4)], -1)
    exact_correct = exact_predictive.argmax(-1) == x[:, 3:].argmax(-1)
    assert torch.equal(out["correct"]["b|a"], exact_correct)
    assert "a|b" not in out["correct"]                                      # a Bernoulli view has no accuracy


@pytest.mark.slow
def test_training_improves_the_conditional_log_likelihood_on_digits():
    """On digits + labels, 30 epochs (KL warm-up 15) take log p(label | image) from log(1/10) = -2.30 to above
    -1.2 nats and the label accuracy from chance to above 60%; log p(image | label) improves by over 5 nats."""
    from zoo.data import load_dataset
    data = load_dataset("digits_labels")
    model = build_model("mvae", data.x_dim, views=[v.spec for v in data.views], latent_dim=8, hidden=(64,))
    guide = build_guide("poe", model)
    test = data.test[:150]

    def scores():
        with evaluation_mode(model, guide):
            out = conditional_log_likelihoods(model, guide, test, num_samples=64)
        return ({k: v.mean().item() for k, v in out["conditional"].items()},
                out["correct"]["label|image"].double().mean().item())
    before, accuracy_before = scores()
    fit(model, guide, build_objective("elbo"), data.train, epochs=30, batch_size=100, lr=3e-3, kl_warmup=15,
        progress=False)
    after, accuracy_after = scores()
    assert before["label|image"] < -2.2 and after["label|image"] > -1.2
    assert accuracy_before < 0.3 and accuracy_after > 0.6
    assert after["image|label"] > before["image|label"] + 5


def run_cli(args, capsys):
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


def test_train_and_eval_show_the_conditional_log_likelihoods(tmp_path, capsys):
    out = tmp_path / "run"
    code, stdout, err = run_cli(["train", "mvae", "--guide", "poe", "--dataset", "digits_labels", "--epochs", "2",
                                 "--kl-warmup", "1", "--latent-dim", "2", "--hidden", "16", "--eval-samples", "16",
                                 "--iwae-k", "4", "--no-progress", "--out", str(out)], capsys)
    assert code == 0, err
    assert "−log p(label\\|image)" in stdout and "acc argmax p(label\\|image)" in stdout
    assert "SNIS −log p(image\\|label)" in stdout
    results = json.loads((out / "results.json").read_text())
    assert set(results["conditional_log_likelihood"]) == {"label|image", "image|label"}
    assert 0 <= results["conditional_accuracy"]["label|image"] <= 1
    assert results["config"]["model_options"].get("views") is None        # read from the dataset again on eval
    code, stdout, err = run_cli(["eval", str(out), "--eval-samples", "8", "--force", "--no-progress"], capsys)
    assert code == 0, err
    assert "−log p(image\\|label)" in stdout


def test_views_given_on_the_command_line(tmp_path, capsys):
    """--views makes any dataset multimodal: the digits as top and bottom halves."""
    out = tmp_path / "halves"
    code, stdout, err = run_cli(["train", "mvae", "--guide", "poe", "--dataset", "digits", "--views",
                                 "top:32:bernoulli", "bottom:32:bernoulli", "--epochs", "1", "--latent-dim", "2",
                                 "--hidden", "16", "--eval-samples", "8", "--iwae-k", "4", "--no-progress",
                                 "--out", str(out)], capsys)
    assert code == 0, err
    assert set(json.loads((out / "results.json").read_text())["conditional_log_likelihood"]) == {
        "bottom|top", "top|bottom"}


@pytest.mark.parametrize("args, says", [
    (["mvae", "--guide", "poe", "--dataset", "digits"], "dataset 'digits' has one"),
    (["vae", "--guide", "poe", "--dataset", "digits_labels"], "the 'poe' guide multiplies one expert per view"),
    (["mvae", "--guide", "poe", "--dataset", "digits", "--views", "top:32:bernoulli", "bottom:30:bernoulli"],
     "make the sizes add up to 64"),
    (["mvae", "--guide", "poe", "--dataset", "digits", "--views", "top:32", "bottom:32:bernoulli"],
     "a view is NAME:SIZE:LIKELIHOOD"),
    (["mvae", "--guide", "poe", "--dataset", "digits", "--views", "top:32:bernoulli", "bottom:32:poisson"],
     "likelihood must be one of bernoulli, categorical"),
    (["mvae", "--guide", "poe", "--dataset", "digits", "--views", "image:54:bernoulli", "label:10:categorical"],
     "each row needs exactly one 1"),
])
def test_bad_input_is_one_line_exit_2_and_no_files(tmp_path, capsys, args, says):
    out = tmp_path / "run"
    code, stdout, err = run_cli(["train", *args, "--epochs", "1", "--no-progress", "--out", str(out)], capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pyro-zoo: error:") and says in lines[0], err
    assert not out.exists()


def test_poe_refuses_a_model_without_views():
    with pytest.raises(ZooError, match="declares 0 views"):
        build_guide("poe", build_model("vae", 64))
