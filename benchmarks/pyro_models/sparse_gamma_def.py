"""Pyro's sparse gamma deep exponential family (Ranganath et al. 2015): global Gamma weights, local Gamma layers.

Source: pyro-ppl/pyro, examples/sparse_gamma_def.py (``SparseGammaDEF.model``). For a datum x_n of D
counts, with layer widths top > mid > bottom::

    w_top    ~ Gamma(0.1, 0.3),  shape (top, mid)         global, in plate "w_top_plate"
    w_mid    ~ Gamma(0.1, 0.3),  shape (mid, bottom)      global, in plate "w_mid_plate"
    w_bottom ~ Gamma(0.1, 0.3),  shape (bottom, D)        global, in plate "w_bottom_plate"
    z_top_n    ~ Gamma(0.1, 0.1)                          local, (top,)
    z_mid_n    ~ Gamma(0.1, 0.1 / (z_top_n w_top))        local, (mid,)
    z_bottom_n ~ Gamma(0.1, 0.1 / (z_mid_n w_mid))        local, (bottom,)
    x_n        ~ Poisson(z_bottom_n w_bottom)             (D,)

Changed from the example only as the zoo's contract asks: the signature, the subsampled data plate
(at dim -1, over rows), the observation named ``"x"`` with D = ``x_dim`` (the example's 64 x 64 Olivetti
faces), and widths that default to the example's. The example's own guide (a per-datum
log-normal for every local, a global one for every weight) is the zoo's ``meanfield`` guide with the
``normal`` global guide; ``amortized`` and ``iaf`` give amortized local parts. The counts must be
non-negative integers, e.g. the binary ``digits`` data set.

Usage::

    pyro-zoo train benchmarks/pyro_models/sparse_gamma_def.py:sparse_gamma_def --guide meanfield \\
        --objective elbo --dataset digits --epochs 2
"""
import pyro
import torch
from pyro.distributions import Gamma, Poisson


def sparse_gamma_def(x_dim, top_width=100, mid_width=40, bottom_width=15):
    """Pyro's sparse gamma DEF: global Gamma weights, three local Gamma layers, Poisson counts."""
    alpha_z, beta_z = torch.tensor(0.1), torch.tensor(0.1)
    alpha_w, beta_w = torch.tensor(0.1), torch.tensor(0.3)

    def model(x, idx=None, N=None):
        with pyro.plate("w_top_plate", top_width * mid_width):
            w_top = pyro.sample("w_top", Gamma(alpha_w, beta_w))
        with pyro.plate("w_mid_plate", mid_width * bottom_width):
            w_mid = pyro.sample("w_mid", Gamma(alpha_w, beta_w))
        with pyro.plate("w_bottom_plate", bottom_width * x_dim):
            w_bottom = pyro.sample("w_bottom", Gamma(alpha_w, beta_w))
        with pyro.plate("data", N, subsample=idx):
            z_top = pyro.sample("z_top", Gamma(alpha_z, beta_z).expand([top_width]).to_event(1))
            mean_mid = torch.matmul(z_top, w_top.reshape(top_width, mid_width))
            z_mid = pyro.sample("z_mid", Gamma(alpha_z, beta_z / mean_mid).to_event(1))
            mean_bottom = torch.matmul(z_mid, w_mid.reshape(mid_width, bottom_width))
            z_bottom = pyro.sample("z_bottom", Gamma(alpha_z, beta_z / mean_bottom).to_event(1))
            mean_obs = torch.matmul(z_bottom, w_bottom.reshape(bottom_width, x_dim))
            pyro.sample("x", Poisson(mean_obs).to_event(1), obs=x)
    return model
