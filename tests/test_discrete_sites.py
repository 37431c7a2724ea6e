"""Pyro's discrete sites as Pyro users write them: ``Categorical`` (an integer index),
``OneHotCategorical`` with event shape (K,), ``Bernoulli`` with event shape ().

What is checked, against hand computations:

- each form is read as written (its :attr:`LatentSite.form`), and every guide family samples values of
  the model site's own event shape and support;
- exact log p(x) by enumeration equals log sum_k p(k) N(x; mu_k, I) computed by hand;
- the ``enum`` objective over each form equals -sum_n sum_k q(k | x_n) [log p(x_n, k) - log q(k | x_n)];
- ``enum`` beside a reparameterized real site (M2: y summed, z sampled per value of y): with
  q(z | x, y) the exact posterior of a linear-Gaussian M2, log p(x, y, z) - log q(z | x, y) = log p(x, y)
  for every z, so the loss is -sum_n sum_y q(y | x_n) [log p(x_n, y) - log q(y | x_n)] exactly;
- the relaxed guide: a Categorical site's index carries the straight-through gradient of the relaxed
  one-hot sample (table[z] = table[argmax z~], d/dz~ = table), and the CLI trains a user's GMM with
  a categorical assignment through ``--guide relaxed`` (it used to stop at the first step).
"""
import json
import math
import sys
from pathlib import Path

import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import pytest
import torch

import zoo
from zoo.cli import main
from zoo.rules import check_combination
from zoo.objectives.enum import EnumELBO

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks" / "pyro_models"))

D, K = 4, 3
LOCS = torch.tensor([[1.0, -0.5, 0.3, 2.0], [-1.0, 0.7, 0.0, -0.4], [0.2, 0.2, -1.5, 0.9]])
PRIOR_LOGITS = torch.tensor([0.3, -0.2, 0.5])
BIT_LOGIT = 0.4
FORMS = ("index", "one_hot", "bit")


def mixture(form):
    """A two- or three-component mixture of unit Gaussians, its assignment written in ``form``."""
    def factory(x_dim):
        def model(x, idx=None, N=None):
            shift = pyro.param("shift", torch.zeros(()))         # 0 at build time: the hand formulas use LOCS
            with pyro.plate("data", N, subsample=idx):
                if form == "index":
                    z = pyro.sample("z", dist.Categorical(logits=PRIOR_LOGITS))
                    mean = LOCS[z]
                elif form == "one_hot":
                    z = pyro.sample("z", dist.OneHotCategorical(logits=PRIOR_LOGITS))
                    mean = z @ LOCS
                else:
                    z = pyro.sample("z", dist.Bernoulli(logits=torch.tensor(BIT_LOGIT)))
                    mean = z.unsqueeze(-1) * LOCS[0] + (1 - z.unsqueeze(-1)) * LOCS[1]
                pyro.sample("x", dist.Normal(mean + shift, 1.0).to_event(1), obs=x)
        return model
    return factory


def hand_log_joint(form, x):
    """log p(x_n, k) for every value k of the assignment, ``[B, C]``, written out by hand."""
    log_lik = dist.Normal(LOCS.unsqueeze(1), 1.0).log_prob(x).sum(-1).T              # [B, K]
    if form == "bit":                                 # z = 1 picks LOCS[0], z = 0 picks LOCS[1]; order (0, 1)
        log_prior = torch.tensor([-math.log1p(math.exp(BIT_LOGIT)), -math.log1p(math.exp(-BIT_LOGIT))])
        return log_prior + log_lik[:, [1, 0]]
    return PRIOR_LOGITS.log_softmax(-1) + log_lik


def data(n=6, seed=0):
    return torch.randn(n, D, generator=torch.Generator().manual_seed(seed)) + 0.5


@pytest.mark.parametrize("form", FORMS)
def test_pyro_discrete_sites_are_taken_as_written(form):
    site, = zoo.from_pyro(mixture(form), D).latents
    expected = {"index": ((), "categorical", K), "one_hot": ((K,), "categorical", K), "bit": ((), "binary", None)}
    assert (site.event_shape, site.support, site.num_classes, site.form) == expected[form] + (form,)
    assert site.num_configurations == (2 if form == "bit" else K)


@pytest.mark.parametrize("form", FORMS)
def test_exact_log_marginal_by_enumeration_matches_the_hand_sum(form):
    """log p(x) = log sum_k p(k) N(x; mu_k, I), over each form's own values."""
    x = data()
    model = zoo.from_pyro(mixture(form), D)
    assert torch.allclose(model.log_marginal(x), torch.logsumexp(hand_log_joint(form, x), -1), atol=1e-5)


def _check_value(form, value, batch):
    if form == "index":
        assert value.dtype == torch.long and value.shape == batch and ((value >= 0) & (value < K)).all()
    elif form == "one_hot":
        assert value.shape == batch + (K,) and (value.sum(-1) == 1).all() and ((value == 0) | (value == 1)).all()
    else:
        assert value.shape == batch and ((value == 0) | (value == 1)).all()


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("guide_name,objectives", [("meanfield", ("elbo", "enum")), ("amortized", ("elbo", "enum")),
                                                   ("relaxed", ("elbo", "tracemeanfield"))])
def test_every_guide_samples_the_sites_own_form_and_trains(form, guide_name, objectives):
    """Evaluation samples have the model site's event shape and support; training runs and the
    harness's ELBO stays below the exact log p(x), and its IS estimate is within 4 standard errors of it."""
    x = data(8)
    for objective in objectives:
        pyro.set_rng_seed(0)
        model = zoo.from_pyro(mixture(form), D)
        guide = zoo.build_guide(guide_name, model, num_data=len(x))
        check_combination(model, guide_name, objective)
        zoo.fit(model, guide, zoo.build_objective(objective), x, epochs=3, batch_size=4, lr=1e-2, progress=False)
        guide.eval()
        with torch.no_grad():
            trace = poutine.trace(guide).get_trace(x, idx=torch.arange(len(x)), N=len(x))
        _check_value(form, trace.nodes["z"]["value"], (len(x),))
        result = zoo.evaluate(model, guide, x, num_samples=300)
        exact = result["exact_log_likelihood"]
        assert result["elbo"] <= exact + 1e-4
        assert abs(result["log_likelihood"] - exact) < 4 * result["log_likelihood_se"] + 0.01


@pytest.mark.parametrize("form", FORMS)
def test_enum_objective_sums_each_form_exactly(form):
    """-sum_n sum_k q(k | x_n) [log p(x_n, k) - log q(k | x_n)] with the amortized guide's own q."""
    pyro.set_rng_seed(1)
    x = data()
    model = zoo.from_pyro(mixture(form), D)
    guide = zoo.build_guide("amortized", model)
    site, = model.latents
    with torch.no_grad():
        q = guide.distribution(site, guide.trunk(x))
        probs = torch.stack([1 - q.probs, q.probs], -1) if form == "bit" else q.probs
        hand = -(probs * (hand_log_joint(form, x) - probs.log())).sum()
        loss = EnumELBO().loss(model.model, guide, x, idx=torch.arange(len(x)), N=len(x))
    assert loss == pytest.approx(hand.item(), abs=1e-4)


def test_enum_beside_a_reparameterized_site_matches_the_hand_enumeration_of_m2():
    """A linear-Gaussian M2: z ~ N(0, I_2), y ~ OneHotCategorical(pi) (event (K,)), x ~ N(W z + B y, s^2 I).
    With q(z | x, y) = p(z | x, y) (precision I + W^T W / s^2), every z gives log p(x, y, z) - log q(z | x, y)
    = log p(x, y) = log pi_y + log N(x; B y, W W^T + s^2 I), so the enum loss is exact:
    -sum_n sum_y q(y | x_n) [log p(x_n, y) - log q(y | x_n)]. It is so only if z is drawn for each
    enumerated y: one z shared by all y would score under the posteriors of the other y's."""
    g = torch.Generator().manual_seed(3)
    W, B, A = torch.randn(D, 2, generator=g), 2 * torch.randn(D, K, generator=g), torch.randn(D, K, generator=g)
    pi, s = torch.tensor([0.5, 0.3, 0.2]), 0.7
    precision = torch.eye(2) + W.T @ W / s ** 2
    cov = torch.linalg.inv(precision)
    x = data(5)

    def model(x, idx=None, N=None):
        with pyro.plate("data", N, subsample=idx):
            z = pyro.sample("z", dist.Normal(torch.zeros(2), 1.0).to_event(1))
            y = pyro.sample("y", dist.OneHotCategorical(pi))
            pyro.sample("x", dist.Normal(z @ W.T + y @ B.T, s).to_event(1), obs=x)

    def guide(x, idx=None, N=None):
        with pyro.plate("data", N, subsample=idx):
            y = pyro.sample("y", dist.OneHotCategorical(logits=x @ A))
            mean = (x - y @ B.T) @ (cov @ W.T / s ** 2).T
            pyro.sample("z", dist.MultivariateNormal(mean, cov))

    def linear_m2(x_dim):
        return model

    zoo_model = zoo.from_pyro(linear_m2, D)
    check_combination(zoo_model, "amortized", "enum")            # the registry takes enum beside a real z
    loss = EnumELBO().loss(zoo_model.model, guide, x, idx=torch.arange(5), N=5)
    q = torch.softmax(x @ A, -1)
    log_p_x_given_y = dist.MultivariateNormal(B.T, W @ W.T + s ** 2 * torch.eye(D)).log_prob(x.unsqueeze(1))
    hand = -(q * (pi.log() + log_p_x_given_y - q.log())).sum()
    assert loss == pytest.approx(hand.item(), rel=1e-4)


def test_enum_trains_pyros_ss_vae_m2_with_y_summed_and_z_reparameterized():
    """The registry takes enum for M2 as Pyro's example writes it (a real z beside the categorical y),
    and an epoch of it with the amortized guide gives a bound below the IS estimate."""
    from ss_vae_m2 import m2
    x = (torch.rand(40, 12, generator=torch.Generator().manual_seed(0)) > 0.5).float()
    pyro.set_rng_seed(0)
    model = zoo.from_pyro(m2, 12)
    assert [(s.name, s.support, s.form) for s in model.latents] == [("z", "real", "block"),
                                                                   ("y", "categorical", "one_hot")]
    check_combination(model, "amortized", "enum")
    guide = zoo.build_guide("amortized", model)
    history = zoo.fit(model, guide, zoo.build_objective("enum"), x, epochs=1, batch_size=20, lr=1e-3, progress=False)
    assert all(math.isfinite(row["loss"]) for row in history)
    result = zoo.evaluate(model, guide, x, num_samples=50)
    assert result["elbo"] <= result["log_likelihood"] + 1e-6


def test_relaxed_categorical_index_carries_the_straight_through_gradient():
    """The model's ``Categorical`` value under the relaxed guide: table[z] is the hard row in the
    forward pass, and its gradient with respect to the relaxed one-hot z~ is the table (ST Gumbel)."""
    from guides.relaxed import SoftIndex
    table = torch.randn(K, 2)
    soft = torch.softmax(torch.randn(5, K), -1).requires_grad_()
    rows = table[SoftIndex(soft)]
    assert torch.equal(rows, table[soft.argmax(-1)])
    upstream = torch.randn(5, 2)
    (rows * upstream).sum().backward()
    assert torch.allclose(soft.grad, upstream @ table.T)

    # ... and through a training step of a relaxed guide on the index form, the reconstruction reaches the encoder
    pyro.set_rng_seed(0)
    x = data()
    model = zoo.from_pyro(mixture("index"), D)
    guide = zoo.build_guide("relaxed", model)
    guide.train()
    guide_trace = poutine.trace(guide).get_trace(x, idx=torch.arange(6), N=6)
    assert guide_trace.nodes["z"]["value"].shape == (6, K)            # relaxed one-hot in training
    view = guide.training_model(model)
    model_trace = poutine.trace(poutine.replay(view, trace=guide_trace)).get_trace(x, idx=torch.arange(6), N=6)
    assert model_trace.nodes["z"]["value"] is guide_trace.nodes["z"]["value"]     # scored at z~, as relaxed
    model_trace.nodes["x"]["fn"].log_prob(x).sum().backward()
    assert guide.heads["z"].weight.grad.abs().sum() > 0


GMM_ONE_HOT = """
import pyro, pyro.distributions as dist, torch

def gmm(x_dim, K=3):
    def model(x, idx=None, N=None):
        locs = pyro.param("locs", 0.1 * torch.randn(K, x_dim))
        with pyro.plate("data", N, subsample=idx):
            a = pyro.sample("a", dist.OneHotCategorical(logits=torch.zeros(1, K)).to_event(1))
            pyro.sample("x", dist.Normal(a[..., 0, :] @ locs, 1.0).to_event(1), obs=x)
    return model

def gmm_index(x_dim, K=3):
    def model(x, idx=None, N=None):
        locs = pyro.param("locs", 0.1 * torch.randn(K, x_dim))
        with pyro.plate("data", N, subsample=idx):
            a = pyro.sample("a", dist.Categorical(logits=torch.zeros(K)))
            pyro.sample("x", dist.Normal(locs[a], 1.0).to_event(1), obs=x)
    return model
"""


@pytest.mark.parametrize("name", ["gmm", "gmm_index"])
def test_the_cli_trains_a_user_gmm_with_the_relaxed_guide(tmp_path, capsys, name):
    """pyro-zoo train gmm.py:gmm --guide relaxed --objective tracemeanfield --dataset digits-gray stopped
    at the first step (the model's OneHotCategorical refused the guide's relaxed value)."""
    (tmp_path / "gmm.py").write_text(GMM_ONE_HOT)
    out = tmp_path / "run"
    code = main(["train", f"{tmp_path / 'gmm.py'}:{name}", "--guide", "relaxed", "--objective", "tracemeanfield",
                 "--dataset", "digits-gray", "--epochs", "1", "--eval-samples", "10", "--iwae-k", "5",
                 "--eval-limit", "30", "--batch-size", "200", "--no-progress", "--seed", "0", "--out", str(out)])
    _, err = capsys.readouterr()
    assert code == 0, err
    result = json.loads((out / "results.json").read_text())
    assert result["elbo"] <= result["log_likelihood"] + 1e-6


def test_enum_with_a_structured_guide_over_a_discrete_child_of_a_real_latent_is_refused_in_one_line():
    """z -> c -> x with c ~ Categorical(f(z)): a structured guide samples z given the enumerated c, and
    Pyro's TraceEnum_ELBO then stops with 'Enumeration dim conflict'; the registry says so first."""
    from zoo.core.errors import ZooError
    W = torch.randn(2, K)

    def chain(x_dim):
        def model(x, idx=None, N=None):
            with pyro.plate("data", N, subsample=idx):
                z = pyro.sample("z", dist.Normal(torch.zeros(2), 1.0).to_event(1))
                c = pyro.sample("c", dist.Categorical(logits=z @ W))
                pyro.sample("x", dist.Normal(LOCS[c], 1.0).to_event(1), obs=x)
        return model

    model = zoo.from_pyro(chain, D)
    check_combination(model, "amortized", "enum")                        # mean-field: c and z apart, fine
    with pytest.raises(ZooError, match="sums over 'c', whose prior reads the real latent") as error:
        check_combination(model, "amortized", "enum", guide_options={"structured": True})
    assert "\n" not in str(error.value)
