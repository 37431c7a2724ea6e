"""A Deep Markov Model from the networks of Pyro's example (pyro-ppl/pyro ``examples/dmm.py``;
Krishnan, Shalit and Sontag 2017, "Structured Inference Networks for Nonlinear State Space Models",
arXiv:1609.09869), under the zoo's contract.

Each row of x is a sequence of T steps of d = x_dim / T features, x_t = x[:, (t-1)d : td]
(the ``digits`` images as 8 steps of 8 pixels, one image row per step)::

    z_t | z_{t-1} ~ N(loc(z_{t-1}), scale(z_{t-1}))      (GatedTransition; z_0 a learned vector)
    x_t | z_t     ~ Bernoulli(Emitter(z_t))               t = 1..T

The Emitter, the GatedTransition and the model's loop are the example's: per-step latents
``z_t`` and per-step observation sites ``obs_x_t``, each reading its slice of x. What the
README's contract asked for changed: the signature ``model(x, idx=None, N=None)``; the data plate
``pyro.plate("data", N, subsample=idx)`` (the example's ``pyro.plate("z_minibatch", len(mini_batch))``);
z_0 expanded to the plate's size ``len(batch)`` (not ``mini_batch.size(0)``: to generate, the zoo
calls ``model(None, idx=None, N=n)``); ``obs=x[:, (t-1)d : td]`` for the example's
``mini_batch[:, t - 1, :]``; and a factory ``dmm(x_dim, T, ...)`` that sizes the networks. All sequences
have length T, so the example's mask and KL annealing factor are left out; the example's guide
(a Combiner on a backward RNN) is left out too: the zoo's guide families take its place.

Usage::

    python -m zoo compare benchmarks/pyro_models/dmm.py:dmm --dataset digits --epochs 1 \\
        --guides meanfield,amortized --objectives elbo,iwae
"""
import pyro
import pyro.distributions as dist
import torch
import torch.nn as nn


class Emitter(nn.Module):
    """p(x_t | z_t): the Bernoulli probabilities of one step's features."""

    def __init__(self, input_dim, z_dim, emission_dim):
        super().__init__()
        self.lin_z_to_hidden = nn.Linear(z_dim, emission_dim)
        self.lin_hidden_to_hidden = nn.Linear(emission_dim, emission_dim)
        self.lin_hidden_to_input = nn.Linear(emission_dim, input_dim)
        self.relu = nn.ReLU()

    def forward(self, z_t):
        h1 = self.relu(self.lin_z_to_hidden(z_t))
        h2 = self.relu(self.lin_hidden_to_hidden(h1))
        return torch.sigmoid(self.lin_hidden_to_input(h2))


class GatedTransition(nn.Module):
    """p(z_t | z_{t-1}): a gate mixes a linear map of z_{t-1} (the identity at first) with a nonlinear
    proposal; the scale is a softplus of the proposal (section 5 of the reference)."""

    def __init__(self, z_dim, transition_dim):
        super().__init__()
        self.lin_gate_z_to_hidden = nn.Linear(z_dim, transition_dim)
        self.lin_gate_hidden_to_z = nn.Linear(transition_dim, z_dim)
        self.lin_proposed_mean_z_to_hidden = nn.Linear(z_dim, transition_dim)
        self.lin_proposed_mean_hidden_to_z = nn.Linear(transition_dim, z_dim)
        self.lin_sig = nn.Linear(z_dim, z_dim)
        self.lin_z_to_loc = nn.Linear(z_dim, z_dim)
        self.lin_z_to_loc.weight.data = torch.eye(z_dim)
        self.lin_z_to_loc.bias.data = torch.zeros(z_dim)
        self.relu = nn.ReLU()
        self.softplus = nn.Softplus()

    def forward(self, z_t_1):
        _gate = self.relu(self.lin_gate_z_to_hidden(z_t_1))
        gate = torch.sigmoid(self.lin_gate_hidden_to_z(_gate))
        _proposed_mean = self.relu(self.lin_proposed_mean_z_to_hidden(z_t_1))
        proposed_mean = self.lin_proposed_mean_hidden_to_z(_proposed_mean)
        loc = (1 - gate) * self.lin_z_to_loc(z_t_1) + gate * proposed_mean
        scale = self.softplus(self.lin_sig(self.relu(proposed_mean)))
        return loc, scale


def dmm(x_dim, T=8, z_dim=8, emission_dim=32, transition_dim=32):
    """A Deep Markov Model of sequences of T steps of x_dim / T Bernoulli features."""
    if x_dim % T:
        raise ValueError(f"dmm: x_dim={x_dim} is not T={T} steps of equal size; give T dividing x_dim")
    input_dim = x_dim // T
    emitter = Emitter(input_dim, z_dim, emission_dim)
    trans = GatedTransition(z_dim, transition_dim)
    z_0 = nn.Parameter(torch.zeros(z_dim))

    def model(x, idx=None, N=None):
        pyro.module("emitter", emitter)
        pyro.module("trans", trans)
        z_init = pyro.param("z_0", z_0)
        with pyro.plate("data", N, subsample=idx) as batch:
            z_prev = z_init.expand(len(batch), z_dim)
            for t in pyro.markov(range(1, T + 1)):
                z_loc, z_scale = trans(z_prev)
                z_t = pyro.sample("z_%d" % t, dist.Normal(z_loc, z_scale).to_event(1))
                emission_probs_t = emitter(z_t)
                pyro.sample("obs_x_%d" % t, dist.Bernoulli(emission_probs_t).to_event(1),
                            obs=None if x is None else x[:, (t - 1) * input_dim:t * input_dim])
                z_prev = z_t
    return model
