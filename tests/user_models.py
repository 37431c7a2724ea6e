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
