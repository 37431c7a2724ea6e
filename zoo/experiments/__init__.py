"""Experiments: a run (config, train, resume, evaluate, write), a compare grid, gradient diagnostics."""
from zoo.experiments.compare import compare
from zoo.experiments.config import RunConfig
from zoo.experiments.gradients import gradients_run
from zoo.experiments.run import evaluate_run, prepare, train_run

__all__ = ["RunConfig", "prepare", "train_run", "evaluate_run", "compare", "gradients_run"]
