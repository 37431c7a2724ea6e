"""Pyro's Gaussian mixture model tutorial, as written: global weights, scale and locations, a local assignment.

Source: pyro-ppl/pyro, tutorial/source/gmm.ipynb ("Gaussian Mixture Model"). The generative story,
for K components and data x_n in R^D::

    weights ~ Dirichlet(0.5 * 1_K)                        global
    scale   ~ LogNormal(0, 2)                             global
    locs_k  ~ N(0, 10^2 I_D),  k = 1..K                   global, in plate "components"
    assignment_n ~ Categorical(weights)                   local, in plate "data"
    x_n | assignment_n ~ N(locs[assignment_n], scale^2 I_D)

Changed from the tutorial only as the zoo's contract asks: the signature ``model(x, idx=None, N=None)``,
the subsampled data plate, and the observation named ``"x"`` with its D features one event
(``.to_event(1)``; the tutorial's data are 1-D). The zoo guides the globals with its global guide
(``--global-guide normal`` or ``delta``, the tutorial's AutoDelta) and the assignment with any local family.

Usage::

    pyro-zoo train benchmarks/pyro_models/gmm.py:gmm --guide amortized --global-guide delta --objective elbo \\
        --dataset digits-gray --epochs 2
"""
import pyro
import pyro.distributions as dist
import torch


def gmm(x_dim, K=3):
    """Pyro's GMM tutorial: global weights, scale and locs; a local Categorical assignment."""
    def model(x, idx=None, N=None):
        # Global variables.
        weights = pyro.sample("weights", dist.Dirichlet(0.5 * torch.ones(K)))
        scale = pyro.sample("scale", dist.LogNormal(0.0, 2.0))
        with pyro.plate("components", K):
            locs = pyro.sample("locs", dist.Normal(torch.zeros(x_dim), 10.0).to_event(1))
        with pyro.plate("data", N, subsample=idx):
            # Local variables.
            assignment = pyro.sample("assignment", dist.Categorical(weights))
            pyro.sample("x", dist.Normal(locs[assignment], scale).to_event(1), obs=x)
    return model
