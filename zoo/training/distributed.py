"""Data-parallel SVI on PyTorch's own distributed engine (``torchrun``, DistributedDataParallel).

Launch with the standard launcher; each process is one rank::

    torchrun --nproc_per_node=4 -m zoo train vae --dataset binarized_mnist --batch-size 100 ...
    torchrun --nnodes=2 --node_rank=0 --master_addr=HOST --master_port=29500 --nproc_per_node=8 -m zoo train ...

What each piece does:

- **Process group**: NCCL on CUDA (rank r uses ``cuda:LOCAL_RANK``), gloo on CPU, from the
  environment torchrun sets (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``).
- **Data**: every epoch each rank takes its shard from a ``DistributedSampler`` (shuffled
  with the run's seed and ``set_epoch``), cut into minibatches of ``--batch-size`` per rank,
  so the global batch is ``batch_size x world_size``.
- **Gradients**: a :class:`SVILoss` module holds the model and guide and returns
  ``objective.differentiable_loss(model, guide, x, idx=idx, N=N)``, the minibatch's
  negative bound scaled by N / batch_size. ``DistributedDataParallel`` wraps it and
  all-reduces (averages) the gradients during ``backward``; the average of the ranks'
  unbiased estimates is the estimate for the global batch, so a run on W ranks with
  batch B follows the same expected trajectory as one process with batch W x B.
- **Per-datum (meanfield) guides**: every rank holds the whole ``[N, ...]`` table. A row
  gets gradient only on the rank whose shard holds that datum; after the all-reduce every
  rank applies the same averaged gradient with the same optimizer, so the tables stay
  identical on all ranks without any extra communication. The averaged gradient of a row
  is (N / (W B)) grad l_n, exactly its gradient in a single process with batch W x B.
- **Side effects**: only rank 0 logs, computes the validation bound, writes checkpoints
  and evaluates; the others wait at a barrier at the end.

Objectives need a ``differentiable_loss`` (all the zoo's except ``tracegraph``, ``rws``,
``rws_pyro`` and ``dreg``, whose surrogate gradients are not one differentiable loss): each
estimator declares ``ddp`` (:class:`zoo.objectives.axes.Estimator`), and :data:`DDP_OBJECTIVES`
lists the names that allow it.
"""
from __future__ import annotations

import os

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data.distributed import DistributedSampler

from zoo.core.errors import ZooError

__all__ = ["launched_by_torchrun", "init", "SVILoss", "DataParallel", "is_main", "finish"]


def __getattr__(name):
    # DDP_OBJECTIVES: the objectives whose gradient is one differentiable loss, as DDP needs, read from
    # what their estimators declare.
    if name == "DDP_OBJECTIVES":
        from zoo.core.components import OBJECTIVES
        return tuple(n for n, c in OBJECTIVES.items() if c.capability("caps").ddp)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def init(device_name: str):
    """Join the process group torchrun prepared; return (rank, world_size, device)."""
    if not launched_by_torchrun():
        raise ZooError("--distributed needs torchrun's environment: launch with "
                       "'torchrun --nproc_per_node=N -m zoo train ...'")
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if device_name.startswith("cuda") or (device_name == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise ZooError("--device cuda was asked for but no CUDA GPU is available; use --device cpu")
        torch.cuda.set_device(local_rank)
        device, backend = torch.device("cuda", local_rank), "nccl"
    else:
        device, backend = torch.device("cpu"), "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
    return dist.get_rank(), dist.get_world_size(), device


def is_main() -> bool:
    return not dist.is_initialized() or dist.get_rank() == 0


class SVILoss(nn.Module):
    """The objective's differentiable loss as a module, so DDP can wrap model and guide together."""

    def __init__(self, model, guide, objective, train_model=None):
        super().__init__()
        self.model, self.guide = model, guide
        object.__setattr__(self, "objective", objective)
        object.__setattr__(self, "train_model", train_model or model)

    def forward(self, x, idx, N: int):
        return self.objective.differentiable_loss(self.train_model, self.guide, x, idx=idx, N=N)


class DataParallel:
    """The minibatches and the step of :func:`zoo.training.loop.fit` for one rank (its ``TrainConfig.parallel``): this
    rank's ``DistributedSampler`` shard of epoch e in minibatches, and the step forward through DDP, whose
    backward all-reduces the gradients."""

    def __init__(self, model, guide, objective, num_data: int, batch_size: int, seed: int, device):
        self.sampler = DistributedSampler(range(num_data), shuffle=True, seed=seed, drop_last=False)
        self.num_data, self.batch_size, self.device = num_data, batch_size, device
        module = SVILoss(model, guide, objective, guide.training_model(model))
        self.wrapped = DistributedDataParallel(module, device_ids=[device.index] if device.type == "cuda" else None)

    def batches(self, epoch: int):
        self.sampler.set_epoch(epoch)
        return torch.tensor(list(iter(self.sampler)), device=self.device).split(self.batch_size)

    def step(self, x, idx) -> float:
        loss = self.wrapped(x, idx, self.num_data)
        loss.backward()
        # the logged loss is the global batch's: average the ranks' (one scalar all-reduce)
        value = loss.detach().clone()
        dist.all_reduce(value, op=dist.ReduceOp.SUM)
        return value.item() / dist.get_world_size()


def finish() -> None:
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
