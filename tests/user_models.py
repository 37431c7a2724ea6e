"""A user's own Pyro model, as a file and as a function, for the tests of zoo.from_pyro (and of --jit and
data-parallel training on it): the same text either way, so the CLI and the Python API see one model."""

USER_FILE = '''
import pyro, pyro.distributions as dist, torch
from torch import nn

def my_vae(x_dim, z_dim=2):
    """A user's VAE: a Gaussian prior and a Bernoulli decoder."""
    decoder = nn.Sequential(nn.Linear(z_dim, 16), nn.Tanh(), nn.Linear(16, x_dim))
    def model(x, idx=None, N=None):
        pyro.module("decoder", decoder)
        with pyro.plate("data", N, subsample=idx):
            z = pyro.sample("z", dist.Normal(torch.zeros(z_dim), 1.0).to_event(1))
            pyro.sample("x", dist.Bernoulli(logits=decoder(z)).to_event(1), obs=x)
    return model
'''


def _user_file_namespace() -> dict:
    namespace: dict = {}
    exec(compile(USER_FILE, "my_models.py", "exec"), namespace)
    return namespace


#: the user's model, as a factory (fresh networks for every zoo model): the very function USER_FILE defines
user_vae = _user_file_namespace()["my_vae"]


#: Eight schools (Rubin 1981; Gelman et al., BDA 5.5) as a user writes it: the observed effect y_j = x[:, 0]
#: and its known standard error sigma_j = x[:, 1], a covariate column read as the likelihood's scale (zeros
#: there are no valid Normal); and a guide file whose q(eta_j | x_j) reads sigma_j as a scale too.
SCHOOLS_FILE = '''
import pyro, pyro.distributions as dist, torch

def eight_schools(x, idx=None, N=None):
    """Eight schools: mu ~ N(0, 5), tau ~ HalfCauchy(5), eta_j ~ N(0, 1), y_j ~ N(mu + tau eta_j, sigma_j)."""
    mu = pyro.sample("mu", dist.Normal(0.0, 5.0))
    tau = pyro.sample("tau", dist.HalfCauchy(5.0))
    with pyro.plate("data", N, subsample=idx):
        eta = pyro.sample("eta", dist.Normal(0.0, 1.0))
        pyro.sample("y", dist.Normal(mu + tau * eta, x[..., 1]), obs=x[..., 0])

def schools_guide(x, idx=None, N=None):
    """q(eta_j | y_j, sigma_j) = N(a y_j / sigma_j, sigma_j / 10 + softplus(b))."""
    a = pyro.param("a", torch.tensor(0.1))
    b = pyro.param("b", torch.tensor(0.0))
    with pyro.plate("data", N, subsample=idx):
        pyro.sample("eta", dist.Normal(a * x[..., 0] / x[..., 1], x[..., 1] / 10 + torch.nn.functional.softplus(b)))
'''

#: the eight schools' effects and standard errors (Rubin 1981)
SCHOOLS = ((28, 15), (8, 10), (-3, 16), (7, 11), (-1, 9), (1, 11), (18, 10), (12, 18))


def schools_csv(path, copies: int = 5):
    """The eight schools ``copies`` times, each copy's effects shifted by its number, as ``y,sigma`` rows."""
    rows = [f"{y + i},{sigma}" for i in range(copies) for y, sigma in SCHOOLS]
    path.write_text("y,sigma\n" + "\n".join(rows) + "\n")
    return path


#: An AIR-style model (Eslami et al. 2016) written two ways: ``air_loop`` draws a number of steps per datum and
#: loops to the largest, so its set of latent sites z_0, z_1, ... depends on sampled values; ``air_masked``
#: loops over a fixed maximum number of steps and masks those not taken, the same sites on every run.
AIR_FILE = '''
import pyro, pyro.distributions as dist, torch
from torch import nn

MAX_STEPS = 3

def air_loop(x_dim):
    decoder = nn.Linear(2, x_dim)
    def model(x, idx=None, N=None):
        pyro.module("decoder", decoder)
        with pyro.plate("data", N, subsample=idx) as batch:
            steps = pyro.sample("steps", dist.Categorical(torch.ones(MAX_STEPS + 1) / (MAX_STEPS + 1)))
            canvas = torch.zeros(len(batch), x_dim)
            for i in range(int(steps.max())):
                canvas = canvas + decoder(pyro.sample(f"z_{i}", dist.Normal(torch.zeros(2), 1.0).to_event(1)))
            pyro.sample("x", dist.Bernoulli(logits=canvas).to_event(1), obs=x)
    return model

def air_masked(x_dim):
    decoder = nn.Linear(2, x_dim)
    def model(x, idx=None, N=None):
        pyro.module("decoder", decoder)
        with pyro.plate("data", N, subsample=idx):
            steps = pyro.sample("steps", dist.Categorical(torch.ones(MAX_STEPS + 1) / (MAX_STEPS + 1)))
            canvas = 0.0
            for i in range(MAX_STEPS):
                taken = i < steps
                z = pyro.sample(f"z_{i}", dist.Normal(torch.zeros(2), 1.0).to_event(1).mask(taken))
                canvas = canvas + taken.unsqueeze(-1) * decoder(z)
            pyro.sample("x", dist.Bernoulli(logits=canvas).to_event(1), obs=x)
    return model
'''
