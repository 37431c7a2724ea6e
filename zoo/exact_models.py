"""Models whose log p(x) is known exactly, for checking estimators of log p(x) against the truth.

The zoo's tests and its coverage study of standard errors (``benchmarks/se_coverage.py``) use them; a course or
a user checking an estimator of their own can too.

Each is an ordinary Pyro model under the zoo's contract (``model(x, idx=None, N=None)``, every local latent and
observation in ``pyro.plate("data", N, subsample=idx)``), with fixed parameters, and comes with its exact
log p(x) per datum computed another way:

- :func:`linear_gaussian_hierarchy`: z2 ~ N(0, I), z1 | z2 ~ N(A z2 + a, s1^2 I), x | z1 ~ N(B z1 + b, s0^2 I);
  x is Gaussian, x ~ N(B a + b, B (A A^T + s1^2 I) B^T + s0^2 I) (conjugacy).
- :func:`binary_latent_model`: three Bernoulli latents and Bernoulli pixels; log p(x) by enumerating the 8
  states.
- :func:`poisson_1d`: one real latent z ~ N(0, 1) and Poisson counts x_j | z ~ Poisson(exp(a_j + b_j z)); log p(x)
  by quadrature on a fine grid.
- :func:`padded_hmm`: a two-state HMM over sequences padded to a common length, the padded steps masked out
  with ``poutine.mask`` (latent and observation alike); log p(x) by the forward algorithm over each sequence's
  own steps.
- :func:`ridge`: z2 ~ N(0, 1), z1 | z2 ~ N(z2, 0.05^2), x | z1 ~ N(z1, 1): a posterior 0.05 wide along a ridge
  about 0.7 long, with :func:`ridge_guide`, the exact posterior p(z1 | x) p(z2 | z1) widened by half; x ~ N(0,
  2 + 0.05^2). It holds no tensor of its own, so it runs wherever its data are (a GPU too).
- :func:`sbn_layer`: one layer of a sigmoid belief net, z ~ Bernoulli(1/2)^K, x | z ~ Bernoulli(sigmoid(W z + b))
  with strong weights: 2^K values, more than AIS's Gibbs update takes; log p(x) by enumerating them.
"""
from __future__ import annotations

import itertools
import math

import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import torch

__all__ = ["linear_gaussian_hierarchy", "linear_gaussian_hierarchy_log_marginal", "linear_gaussian_hierarchy_data",
           "binary_latent_model", "binary_latent_log_marginal", "binary_latent_data", "poisson_1d",
           "poisson_1d_log_marginal", "poisson_1d_data", "padded_hmm", "padded_hmm_log_marginal", "padded_hmm_data",
           "ridge", "ridge_guide", "ridge_log_marginal", "ridge_data", "RIDGE_S1", "sbn_layer"]

G = torch.Generator().manual_seed(1234)


def _fixed(*shape, scale=1.0):
    return scale * torch.randn(*shape, generator=G)


# --- a two-layer linear-Gaussian hierarchy ----------------------------------------------------------------
HIER = {"A": _fixed(3, 2), "a": _fixed(3, scale=0.5), "s1": 0.7, "B": _fixed(5, 3), "b": _fixed(5, scale=0.5),
        "s0": 0.4}


def linear_gaussian_hierarchy(x, idx=None, N=None):
    p = HIER
    with pyro.plate("data", N, subsample=idx):
        z2 = pyro.sample("z2", dist.Normal(torch.zeros(2), 1.0).to_event(1))
        z1 = pyro.sample("z1", dist.Normal(z2 @ p["A"].T + p["a"], p["s1"]).to_event(1))
        pyro.sample("x", dist.Normal(z1 @ p["B"].T + p["b"], p["s0"]).to_event(1), obs=x)


def linear_gaussian_hierarchy_log_marginal(x: torch.Tensor) -> torch.Tensor:
    p = HIER
    A, B = p["A"].double(), p["B"].double()
    cov1 = A @ A.T + p["s1"] ** 2 * torch.eye(3, dtype=torch.float64)
    cov = B @ cov1 @ B.T + p["s0"] ** 2 * torch.eye(5, dtype=torch.float64)
    mean = B @ p["a"].double() + p["b"].double()
    return torch.distributions.MultivariateNormal(mean, cov).log_prob(x.double())


def linear_gaussian_hierarchy_data(n: int, seed: int = 0) -> torch.Tensor:
    torch.manual_seed(seed)
    with torch.no_grad():
        trace = poutine.trace(linear_gaussian_hierarchy).get_trace(None, N=n)
    return trace.nodes["x"]["value"].float()


# --- three binary latents, summed out by enumeration ------------------------------------------------------
BIN = {"W": _fixed(6, 3, scale=2.0), "b": _fixed(6), "prior": torch.tensor([0.3, 0.6, 0.45])}


def binary_latent_model(x, idx=None, N=None):
    p = BIN
    with pyro.plate("data", N, subsample=idx):
        z = pyro.sample("z", dist.Bernoulli(p["prior"]).to_event(1))
        pyro.sample("x", dist.Bernoulli(logits=z @ p["W"].T + p["b"]).to_event(1), obs=x)


def binary_latent_log_marginal(x: torch.Tensor) -> torch.Tensor:
    p = BIN
    states = torch.tensor(list(itertools.product([0.0, 1.0], repeat=3)))               # [8, 3]
    log_prior = dist.Bernoulli(p["prior"]).log_prob(states).sum(-1)                   # [8]
    logits = states @ p["W"].T + p["b"]                                               # [8, 6]
    log_lik = dist.Bernoulli(logits=logits.unsqueeze(1)).log_prob(x.unsqueeze(0)).sum(-1)   # [8, n]
    return torch.logsumexp(log_prior.unsqueeze(1) + log_lik, 0).double()


def binary_latent_data(n: int, seed: int = 0) -> torch.Tensor:
    torch.manual_seed(seed)
    with torch.no_grad():
        trace = poutine.trace(binary_latent_model).get_trace(None, N=n)
    return trace.nodes["x"]["value"].float()


# --- one real latent, Poisson counts, by quadrature --------------------------------------------------------
POIS = {"a": torch.tensor([0.5, 1.0, -0.5, 0.2]), "b": torch.tensor([1.0, -0.7, 1.5, 0.4])}


def poisson_1d(x, idx=None, N=None):
    p = POIS
    with pyro.plate("data", N, subsample=idx):
        z = pyro.sample("z", dist.Normal(torch.zeros(1), 1.0).to_event(1))
        pyro.sample("x", dist.Poisson((p["a"] + p["b"] * z).exp()).to_event(1), obs=x)


def poisson_1d_log_marginal(x: torch.Tensor) -> torch.Tensor:
    p = {k: v.double() for k, v in POIS.items()}
    z = torch.linspace(-12.0, 12.0, 48001, dtype=torch.float64)
    dz = float(z[1] - z[0])
    log_prior = -0.5 * z ** 2 - 0.5 * math.log(2 * math.pi)                        # [G]
    rate = (p["a"] + p["b"] * z.unsqueeze(-1)).exp()                                # [G, 4]
    log_lik = torch.distributions.Poisson(rate.unsqueeze(1)).log_prob(x.double().unsqueeze(0)).sum(-1)  # [G, n]
    return torch.logsumexp(log_prior.unsqueeze(1) + log_lik, 0) + math.log(dz)


def poisson_1d_data(n: int, seed: int = 0) -> torch.Tensor:
    torch.manual_seed(seed)
    with torch.no_grad():
        trace = poutine.trace(poisson_1d).get_trace(None, N=n)
    return trace.nodes["x"]["value"].float()


# --- a padded-sequence HMM, masked steps --------------------------------------------------------------------
HMM = {"init": torch.tensor([0.6, 0.4]), "trans": torch.tensor([[0.8, 0.2], [0.3, 0.7]]),
       "locs": torch.tensor([-1.0, 1.5]), "scale": 0.8, "steps": 5}


def padded_hmm(x, covariates=None, idx=None, N=None):
    """x: [B, steps] observations, zero past each sequence's end; covariates: [B, 1], the sequence's length."""
    p = HMM
    lengths = covariates[..., 0]
    with pyro.plate("data", N, subsample=idx):
        state = None
        for t in range(p["steps"]):
            probs = p["init"] if state is None else p["trans"][state]
            with poutine.mask(mask=lengths > t):
                state = pyro.sample(f"s{t}", dist.Categorical(probs))
                pyro.sample(f"x{t}", dist.Normal(p["locs"][state], p["scale"]), obs=x[..., t])


def padded_hmm_log_marginal(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """The forward algorithm over each sequence's own steps."""
    p = {k: (v.double() if torch.is_tensor(v) else v) for k, v in HMM.items()}
    out = []
    for row, length in zip(x.double(), lengths.long()):
        alpha = p["init"].log()
        for t in range(int(length)):
            if t > 0:
                alpha = torch.logsumexp(alpha.unsqueeze(-1) + p["trans"].log(), 0)
            alpha = alpha + torch.distributions.Normal(p["locs"], p["scale"]).log_prob(row[t])
        out.append(torch.logsumexp(alpha, 0))
    return torch.stack(out)


def padded_hmm_data(n: int, seed: int = 0):
    """(x [n, steps] zero-padded, lengths [n]) of n sequences of 2 to 5 steps."""
    g = torch.Generator().manual_seed(seed)
    p = HMM
    lengths = torch.randint(2, p["steps"] + 1, (n,), generator=g)
    x = torch.zeros(n, p["steps"])
    for i in range(n):
        s = int(torch.multinomial(p["init"], 1, generator=g))
        for t in range(int(lengths[i])):
            if t > 0:
                s = int(torch.multinomial(p["trans"][s], 1, generator=g))
            x[i, t] = p["locs"][s] + p["scale"] * torch.randn((), generator=g)
    return x, lengths


# --- a ridge: two real latents coupled 0.05 apart, and a structured guide ---------------------------------------
RIDGE_S1 = 0.05
_RIDGE_V1 = 1 / (1 / (1 + RIDGE_S1 ** 2) + 1)             # Var(z1 | x)
_RIDGE_V2 = 1 / (1 + 1 / RIDGE_S1 ** 2)                   # Var(z2 | z1)


def ridge(x, idx=None, N=None):
    with pyro.plate("data", N, subsample=idx):
        z2 = pyro.sample("z2", dist.Normal(torch.zeros(1), 1.0).to_event(1))
        z1 = pyro.sample("z1", dist.Normal(z2, RIDGE_S1).to_event(1))
        pyro.sample("x", dist.Normal(z1, 1.0).to_event(1), obs=x)


def ridge_guide(x, idx=None, N=None):
    """The exact posterior p(z1 | x) p(z2 | z1), each scale widened by half (so the importance weights vary)."""
    with pyro.plate("data", N, subsample=idx):
        z1 = pyro.sample("z1", dist.Normal(_RIDGE_V1 * x, 1.5 * _RIDGE_V1 ** 0.5).to_event(1))
        pyro.sample("z2", dist.Normal(_RIDGE_V2 * z1 / RIDGE_S1 ** 2, 1.5 * _RIDGE_V2 ** 0.5).to_event(1))


def ridge_log_marginal(x: torch.Tensor) -> torch.Tensor:
    return dist.Normal(0.0, math.sqrt(2 + RIDGE_S1 ** 2)).log_prob(x.double()).sum(-1)


def ridge_data(n: int, seed: int = 0) -> torch.Tensor:
    torch.manual_seed(seed)
    return torch.randn(n, 1) * math.sqrt(2 + RIDGE_S1 ** 2)


# --- one layer of a sigmoid belief net, by enumeration -------------------------------------------------------------
def sbn_layer(latent: int, dim: int, scale: float = 2.0, seed: int = 7):
    """(model, log_marginal, data): z ~ Bernoulli(1/2)^latent, x | z ~ Bernoulli(sigmoid(W z + b)) in {0, 1}^dim,
    W = ``scale`` times standard normal draws and b standard normal ones (a generator seeded with ``seed``);
    ``log_marginal(x)`` enumerates the 2^latent values (float64), ``data(n, seed)`` simulates n data."""
    g = torch.Generator().manual_seed(seed)
    W = scale * torch.randn(dim, latent, generator=g)
    b = torch.randn(dim, generator=g)

    def model(x, idx=None, N=None):
        with pyro.plate("data", N, subsample=idx):
            z = pyro.sample("z", dist.Bernoulli(0.5 * torch.ones(latent)).to_event(1))
            pyro.sample("x", dist.Bernoulli(logits=z @ W.T + b).to_event(1), obs=x)

    def log_marginal(x: torch.Tensor) -> torch.Tensor:
        states = torch.tensor(list(itertools.product([0.0, 1.0], repeat=latent)), dtype=torch.float64)
        logits = (states @ W.double().T + b.double()).unsqueeze(1)                          # [S, 1, D]
        log_lik = dist.Bernoulli(logits=logits).log_prob(x.double().unsqueeze(0)).sum(-1)  # [S, n]
        return torch.logsumexp(log_lik, 0) - latent * math.log(2.0)

    def data(n: int, seed: int = 0) -> torch.Tensor:
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            with torch.no_grad():
                return poutine.trace(model).get_trace(None, N=n).nodes["x"]["value"].float()
    return model, log_marginal, data
