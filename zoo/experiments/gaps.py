"""``pyro-zoo eval DIR --gaps``: the inference-suboptimality split of a trained amortized run folder.

Writes, into the run folder::

    gaps.json              the gaps (keys: zoo.evaluation.gaps.GAP_KEYS, each with _se and _data_se),
                           the refit's record, the config, the split and the timings
    gaps.md                the same as a Markdown table
    gaps_per_datum.npz     per-datum log p(x), ELBO[q_amortized], ELBO[q*] and both gaps

Everything that can be refused (no run there, a per-datum or structured guide) is refused before
the refit starts and before any file is written.
"""
from __future__ import annotations

import io
import json
import time
from pathlib import Path
from typing import Dict, Optional

import numpy as np

from zoo.core.errors import ZooError
from zoo.evaluation.gaps import gaps_markdown, inference_gaps, same_family
from zoo.experiments.outputs import json_ready, refuse_weaker, refuse_weaker_evaluation
from zoo.experiments.run import results_kept_on_stop
from zoo.experiments.run_folder import writer_lock
from zoo.experiments.trained import Invocation
from zoo.training.checkpoint import written_together
from zoo.training.refit import REFIT_LR_FROM_ENCODER, refit_settings

__all__ = ["gaps_run"]


def gaps_run(out: Path, invocation: Optional[Invocation] = None, reference=None) -> Dict:
    """Compute the approximation and amortization gaps of the run in ``out`` on its evaluation split (the run's
    settings as ``invocation`` changes them: ``eval_limit``, a fixed random subset; ``eval_samples``, ``iwae_k``,
    ``eval_proposal``, ``refit_tol``, ``refit_epochs``, ``device``, ``data_dir``), write ``gaps.{json,md}`` there and
    return the summary; ``reference``, an :class:`~zoo.evaluation.ais.AnnealedImportanceSampling` whose log p(x)
    is used in place of importance sampling's (the stronger estimate), or None.

    The folder is read as data and locked as ``eval`` does (:func:`~zoo.experiments.run.evaluate_run`)."""
    out = Path(out)
    invocation = invocation or Invocation()
    if not out.is_dir():
        raise ZooError(f"no run folder at {out}; train one there first ('pyro-zoo train ... --out {out}')")
    with results_kept_on_stop(out), writer_lock(out):       # a stop once the lock is held says the results are kept
        return _gaps_locked(out, invocation, reference)


def _gaps_locked(out: Path, invocation: Invocation, reference) -> Dict:
    run, progress, force = invocation.open(out), invocation.progress, invocation.force
    config = run.config
    same_family(run.guide)                       # refuse a per-datum or structured guide before any work
    x_eval, _ = run.evaluation_data()
    # a weaker split does not replace a stronger one, as for results.json
    refuse_weaker_evaluation(out, config.to_json(), config.eval_samples, x_eval.shape[0], force, name="gaps.json")
    # an AIS reference for log p(x) is another estimate than an IS one, and the stronger of the two
    refuse_weaker(out / "gaps.json", {}, {"reference": "ais" if reference is not None else "is"}, force,
                  lambda old: {"reference": "ais" if str(old.get("log_likelihood_proposal", "")).startswith("AIS")
                               else "is"})
    x_eval = x_eval.to(run.device)
    t0 = time.perf_counter()
    result = inference_gaps(run.model, run.guide, x_eval, num_samples=config.eval_samples,
                            seed=config.seed, proposal=config.eval_proposal, reference=reference,
                            schedule=refit_settings(config, lr=REFIT_LR_FROM_ENCODER, progress=progress))
    per_datum = result.pop("per_datum")
    summary = {"config": config.to_json(), "device": str(run.device), "split": config.eval_split,
               "seconds": time.perf_counter() - t0, **result}
    buf = io.BytesIO()
    np.savez(buf, **{k: v.numpy() for k, v in per_datum.items()})
    with written_together(out) as files:         # the three files are one group: all replaced, or none
        files.write_bytes(out / "gaps_per_datum.npz", buf.getvalue())
        files.write_text(out / "gaps.md", f"# Inference gaps: {config.model} × {config.guide} × {config.objective}, "
                                          f"{config.dataset} ({config.eval_split})\n\n{gaps_markdown(summary)}\n")
        files.write_text(out / "gaps.json", json.dumps(json_ready(summary), indent=2))
    return summary
