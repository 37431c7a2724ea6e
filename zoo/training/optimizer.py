"""Adam (or AdamW) over a model's and a guide's parameters, and what a resumed run changes in it."""
from __future__ import annotations

from typing import Optional

import torch

__all__ = ["make_optimizer", "restore_optimizer", "change_schedule"]


def make_optimizer(model, guide, lr: float, guide_only: bool = False, betas=None,
                   eps: Optional[float] = None, weight_decay: Optional[float] = None) -> torch.optim.Adam:
    """Adam over the model's and the guide's parameters (only the guide's if ``guide_only``);
    a guide family's ``lr_multiplier`` (per-datum tables) scales the step of its *local* parameters, those of
    q(z_n | x_n): the guide of the model's global latents, q(theta) (:class:`~guides.globals.GlobalGuide`), is
    the same in every family and steps at ``lr``, so a grid's guide column compares posteriors of the local latents,
    not step sizes of q(theta). ``betas`` and ``eps`` are
    Adam's (default: torch's (0.9, 0.999) and 1e-8). Adam is invariant to the scale of the loss except
    through ``eps``, and the zoo's loss is the bound summed over all N data (N/B times the minibatch
    sum), so an ``eps`` quoted for a loss summed over a minibatch of B' data is ``eps * N / B'`` here:
    Burda et al. (2016) used 1e-4 on sums over 20 images, i.e. 0.25 for N = 50,000.

    ``weight_decay`` > 0 switches to AdamW (Loshchilov & Hutter 2019): each step shrinks every
    parameter by ``lr * weight_decay`` apart from the gradient. Decoupled, because an L2 term added
    to the gradient (Adam's own ``weight_decay``) would be weighed against a loss summed over N
    data, and Adam's normalisation would make its strength depend on N and the gradient noise.

    PyTorch's fused Adam: the same update rule in one kernel over all tensors. On CPU the
    default updates one tensor at a time from Python, a visible share of a small model's step
    (``benchmarks/speed.py`` times both: its ``hand`` and ``hand_fused`` loops; results in
    ``benchmarks/results/README.md``). Where fusing is unavailable (an old torch, an unsupported device) the default is used.
    """
    multiplier = getattr(guide, "lr_multiplier", 1.0)
    global_guide = getattr(guide, "global_guide", None)
    global_params = list(global_guide.parameters()) if global_guide is not None and multiplier != 1.0 else []
    taken = {id(p) for p in global_params}
    local_params = [p for p in guide.parameters() if id(p) not in taken]
    model_params = [] if guide_only else list(model.parameters())
    groups = [{"params": model_params, "lr": lr},
              {"params": local_params, "lr": lr * multiplier},
              {"params": global_params, "lr": lr}]       # only where the multiplier would tell them apart
    groups = [g for g in groups if g["params"]]
    options = {"betas": tuple(betas)} if betas is not None else {}
    if eps is not None:
        options["eps"] = float(eps)
    cls = torch.optim.Adam
    if weight_decay:
        cls, options["weight_decay"] = torch.optim.AdamW, float(weight_decay)
    try:
        return cls(groups, lr=lr, fused=True, **options)
    except (RuntimeError, TypeError, ValueError):
        return cls(groups, lr=lr, **options)


def restore_optimizer(optimizer, scheduler, state) -> list:
    """Load a checkpoint's optimizer and scheduler state into a freshly built ``optimizer``.

    Returns the fresh optimizer's step sizes (the config's lr times each group's multiplier),
    which :func:`change_schedule` restarts from when a resumed run changes ``--lr``. Whether
    Adam is fused is this process's implementation choice, not state: it is kept as built, and
    a fused Adam's ``step`` counters are moved to the parameters' device.
    """
    fused = [g.get("fused") for g in optimizer.param_groups]
    fresh_lrs = [g["lr"] for g in optimizer.param_groups]
    optimizer.load_state_dict(state["optimizer"])
    for group, flag in zip(optimizer.param_groups, fused):
        group["fused"] = flag
        for param in group["params"] if flag else ():
            if "step" in optimizer.state.get(param, {}):
                optimizer.state[param]["step"] = optimizer.state[param]["step"].to(param.device, torch.float32)
    if "scheduler" in state:            # checkpoints from before --lr-decay existed have none
        scheduler.load_state_dict(state["scheduler"])
    return fresh_lrs


def change_schedule(optimizer, scheduler, new_lr: bool, lr_decay: float, fresh_lrs) -> None:
    """A resumed run with a new --lr / --lr-decay: the restored Adam moments are kept. A new --lr
    restarts each parameter group's step size at the new --lr times that group's multiplier (a
    guide's ``lr_multiplier``), i.e. at ``fresh_lrs``, the step sizes of an optimizer just built
    with the new config; the new --lr-decay decays it from here on. (The step size is not derived
    from the checkpoint's groups: a checkpoint whose run began before schedules existed carries no
    ``initial_lr``, and scaling its decayed rate by new/old would restart far below the new --lr.)"""
    if new_lr:
        for group, lr in zip(optimizer.param_groups, fresh_lrs):
            group["initial_lr"] = group["lr"] = lr
        scheduler.base_lrs = list(fresh_lrs)
    scheduler.gamma = lr_decay
