"""Training: the SVI loop, the optimizer, KL warm-up, checkpoints, the traced step, DDP, TensorBoard."""
