"""Evaluation: the harness (IS log p(x), bounds, PSIS, active units), gradient diagnostics, tables, plots.

The harness sees only the model/guide/data contract, never a specific model.
"""
