"""What AIS's and SMC's resumable evaluations share: the key a kept minibatch must have been computed with, the
digest written beside its figures, the largest log p(x) a figure may hold, and the discrete latents summed out
before either runs. Their progress files are untrusted input (a run folder may come from anyone): the key says
which evaluation the figures belong to, the digest that they were not damaged since they were written (a digest
without a secret catches damage and careless edits, not a deliberate one, which can recompute it), and each estimator
checks its own figures against what it can have computed: that check, not the digest, is what holds against a file
made on purpose."""
from __future__ import annotations

import hashlib
import json
from typing import Dict

import numpy as np
import torch

from zoo.core.errors import ZooError
from zoo.evaluation.summed import summing_for

__all__ = ["summed_for_annealing", "resume_key", "figures_digest", "log_p_bound"]


def summed_for_annealing(run, guide, x_eval, sum_discrete: str):
    """:func:`~zoo.evaluation.summed.summing_for` of the run's model and ``guide``, refused where it would leave
    nothing to sample (every latent discrete and summed out: the exact log p(x) is ``pyro-zoo eval``'s)."""
    with torch.no_grad():
        summing = summing_for(run.model, guide, x_eval, sum_discrete)
    if summing.summed and not summing.model.latents:
        raise ZooError(f"every latent of {run.model.display_name} is discrete and summed out exactly, so log p(x) "
                       f"needs no sampling: 'pyro-zoo eval RUN' reports it in its exact column (or add "
                       f"--sum-discrete off to anneal the discrete states anyway)")
    return summing


def resume_key(run, guide, x_eval, temperatures, sampler, seed: int,
               replicas: int = 1, summed=()) -> str:
    """What kept minibatches must have been computed with to be taken: a hash of the model's and guide's tensors
    (the guide after any refit) and of the evaluation data, every setting of the sampler, the Ts, the seed and the
    discrete sites summed out."""
    hashed = hashlib.sha256()
    for module in (run.model, guide):
        for name, tensor in sorted(module.state_dict().items()):
            hashed.update(name.encode())
            hashed.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    hashed.update(x_eval.detach().cpu().contiguous().numpy().tobytes())
    return json.dumps({"sha256": hashed.hexdigest(), "temperatures": list(temperatures), "seed": seed,
                       **({"replicas": replicas} if replicas > 1 else {}),
                       **({"summed_out": list(summed)} if summed else {}),
                       "batch_size": sampler.batch_size, "device": str(run.device), **sampler.settings()},
                      sort_keys=True)


def figures_digest(key: str, arrays: Dict[str, np.ndarray]) -> np.ndarray:
    """SHA-256 of the key and of every kept array (name, dtype, shape, bytes), written with them so that a figure
    damaged or edited by hand since is seen as such (one edited together with its digest is left to the estimator's
    own checks of what it can have computed): the key alone says which evaluation the figures belong to, not that
    they are still the ones it computed."""
    hashed = hashlib.sha256(key.encode())
    for name in sorted(arrays):
        array = np.ascontiguousarray(arrays[name])
        hashed.update(f"{name}|{array.dtype.str}|{array.shape}|".encode())
        hashed.update(array.tobytes())
    return np.frombuffer(hashed.digest(), dtype=np.uint8)


def log_p_bound(model) -> float:
    """The largest log p(x) a minibatch of kept figures may hold: a log-probability of data with levels is at
    most 0 (the slack is for a stochastic estimate of a mass near 1); a density is given a bound no trained model
    reaches (50 nats per value), so that only a figure no evaluation can have computed is refused."""
    return 1.0 if model.data_levels is not None else 50.0 * model.x_dim
