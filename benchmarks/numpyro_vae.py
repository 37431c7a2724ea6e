"""The speed benchmark's NumPyro loop: the same VAE, objective, optimizer and minibatches in NumPyro.

The peer a speed-conscious user picks: NumPyro's ``Trace_ELBO`` with ``svi.update`` compiled by ``jax.jit``,
so XLA fuses the loss, its gradients and the Adam update into one executable. The networks are the zoo's
784-200-200-50 VAE written with ``jax.example_libraries.stax`` (as in NumPyro's own VAE example):

    encoder  x (784) -> 200 tanh -> 200 tanh -> (loc, raw) (2 x 50),  scale = softplus(raw) + 1e-5
    decoder  z (50)  -> 200 tanh -> 200 tanh -> 784 Bernoulli logits

    loss = -(N/B) * sum_b [ log p(x_b | z_b) + log N(z_b; 0, I) - log q(z_b | x_b) ],   z_b ~ q(z | x_b)

with Adam (lr 1e-3) and the minibatch order of the zoo's loop (``zoo.training.loop.epoch_order``).

Three loops, as NumPyro's users write them (:data:`LOOPS`):

- ``numpyro``: ``jax.jit(svi.update)`` with the loss read after every step (``float(loss)``), as a loop that
  prints or checks each loss does, and as the zoo's loop does;
- ``numpyro_async``: the same compiled step without a read, so JAX dispatches ahead; one block at the epoch's end;
- ``numpyro_scan``: ``svi.run(progress_bar=False)``'s own loop, ``lax.scan`` over ``svi.update``, compiled once for
  an epoch's steps (``svi.run`` traces it again at each call; one call for all epochs pays that once). Its model
  draws each minibatch itself (``numpyro.plate(..., subsample_size=B)`` over the whole segment, as a user of
  ``svi.run`` writes it): random minibatches rather than the epoch's permutation, the same work per step.

JAX and
NumPyro are an optional benchmark extra (``pip install ".[bench]"``), never a dependency of the zoo; this
module is imported only when ``speed.py --numpyro`` asks for it.
"""
from __future__ import annotations

import os

# on a GPU, JAX would otherwise take 75% of its memory at the first array, leaving the torch loops of the same
# process little; allocate as needed instead
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import numpyro  # noqa: E402
import numpyro.distributions as dist  # noqa: E402
from jax import lax  # noqa: E402
from jax.example_libraries import stax  # noqa: E402
from numpyro.infer import SVI, Trace_ELBO  # noqa: E402
from numpyro.optim import Adam  # noqa: E402


#: loop name -> what it is, for the result file
LOOPS = {"numpyro": "NumPyro Trace_ELBO, jax.jit(svi.update), the loss read every step",
         "numpyro_async": "NumPyro Trace_ELBO, jax.jit(svi.update), no read per step, one block per epoch",
         "numpyro_scan": "NumPyro Trace_ELBO, svi.run(progress_bar=False)'s lax.scan of svi.update, compiled once "
                         "per epoch length, minibatches drawn by the model's plate"}


def _networks(x_dim: int, z_dim: int, hidden: int):
    encoder = stax.serial(stax.Dense(hidden), stax.Tanh, stax.Dense(hidden), stax.Tanh, stax.Dense(2 * z_dim))
    decoder = stax.serial(stax.Dense(hidden), stax.Tanh, stax.Dense(hidden), stax.Tanh, stax.Dense(x_dim))
    return encoder, decoder


class NumPyroVAE:
    """One NumPyro SVI state for the VAE; :meth:`epoch` trains one pass over ``x`` in the given order."""

    def __init__(self, num_data: int, batch_size: int, x_dim: int = 784, z_dim: int = 50, hidden: int = 200,
                 lr: float = 1e-3, seed: int = 0):
        encoder, decoder = _networks(x_dim, z_dim, hidden)
        self.batch_size, self.z_dim = batch_size, z_dim

        def model(x, whole=False):
            decode = numpyro.module("decoder", decoder, (batch_size, z_dim))
            # a minibatch given (scale N / B), or the whole segment and the plate draws the minibatch (svi.run)
            with numpyro.plate("data", num_data, subsample_size=batch_size if whole else x.shape[0]):
                x = numpyro.subsample(x, event_dim=1) if whole else x
                z = numpyro.sample("z", dist.Normal(0.0, 1.0).expand([z_dim]).to_event(1))
                numpyro.sample("x", dist.Bernoulli(logits=decode(z)).to_event(1), obs=x)

        def guide(x, whole=False):
            encode = numpyro.module("encoder", encoder, (batch_size, x_dim))
            with numpyro.plate("data", num_data, subsample_size=batch_size if whole else x.shape[0]):
                x = numpyro.subsample(x, event_dim=1) if whole else x
                loc, raw = jnp.split(encode(x), 2, axis=-1)
                numpyro.sample("z", dist.Normal(loc, jax.nn.softplus(raw) + 1e-5).to_event(1))

        self.svi = SVI(model, guide, Adam(lr), Trace_ELBO())
        self.state = self.svi.init(jax.random.PRNGKey(seed), jnp.zeros((batch_size, x_dim), jnp.float32))
        self.update = jax.jit(self.svi.update)
        self.state, loss = self.update(self.state, jnp.zeros((batch_size, x_dim), jnp.float32))   # compile now
        float(loss)
        self._scans = {}

    def _scan(self, steps: int):
        """svi.run(progress_bar=False)'s loop for ``steps`` steps, compiled once for that length."""
        if steps not in self._scans:
            self._scans[steps] = jax.jit(lambda state, whole: lax.scan(
                lambda s, _: self.svi.update(s, whole, whole=True), state, None, length=steps))
        return self._scans[steps]

    def run(self, loop: str, x, order: np.ndarray) -> None:
        """One epoch of ``loop`` (:data:`LOOPS`) over ``x`` in ``order`` (``numpyro_scan``: its own draws)."""
        if loop == "numpyro":
            self.epoch(x, order)
        elif loop == "numpyro_async":
            self.epoch(x, order, read_every_step=False)
        elif loop == "numpyro_scan":
            steps = len(order) // self.batch_size
            self.state, losses = self._scan(steps)(self.state, jnp.asarray(x))
            losses.block_until_ready()
        else:
            raise ValueError(f"no NumPyro loop {loop!r}; the loops: {', '.join(LOOPS)}")

    def epoch(self, x, order: np.ndarray, read_every_step: bool = True) -> None:
        """One pass over ``x`` (float32, [N, 784]; a JAX array already on JAX's device, or a NumPy array) in
        ``order``, reading the loss every step as the zoo loop does (or, ``read_every_step=False``, once at the
        end). The minibatches are gathered on JAX's device, as the torch loops gather theirs on theirs. Only full
        minibatches: a last partial one would make XLA compile the step again for its shape."""
        batches = jnp.asarray(x)[jnp.asarray(order[:len(order) // self.batch_size * self.batch_size])]
        batches = batches.reshape(-1, self.batch_size, x.shape[1])
        loss = None
        for b in range(batches.shape[0]):
            self.state, loss = self.update(self.state, batches[b])
            if read_every_step:
                float(loss)
        if loss is not None:
            float(loss)                             # the epoch's work done before the clock stops
