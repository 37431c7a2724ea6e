"""The standard errors the harness prints cover the truth as often as they claim.

The coverage study of ``benchmarks/se_coverage.py``, smaller: on five models whose log p(x) is exact (pPCA's
closed form, a linear-Gaussian two-layer hierarchy by conjugacy, binary latents by enumeration, a one-dimensional
Poisson model by quadrature, a padded HMM by the forward algorithm), 100 seeds of 5 fresh data each, every estimator
(IS with the defensive proposal, IS with the guide alone, AIS) gives per datum an estimate and its SE. Among the data
whose SE the harness calls a precision, the nominal 95 % interval estimate ± 1.96 SE must hold the exact log p(x)
at least 90 % of the time (with 500 intervals per row, a true coverage of 95 % falls below 90 % with probability
under 1e-5); the others are flagged per datum, so no figure that excludes the truth is printed as a precision
without its warning.

AIS runs 64 chains here: its SE is the spread of the chains' weights, estimated from those C draws, and at the
default 16 its interval covers a little less often than nominal (0.90 to 0.92 on these models, 0.94 at 64). The
committed studies (100 seeds × 20 data, AIS at T = 200) are ``benchmarks/results/se_coverage.md`` (16 chains) and
``se_coverage_64_chains.md``.
"""
import importlib.util
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def _study_module():
    sys.path.insert(0, str(BENCHMARKS))
    try:
        spec = importlib.util.spec_from_file_location("se_coverage", BENCHMARKS / "se_coverage.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(BENCHMARKS))


@pytest.mark.slow
def test_the_nominal_95_percent_interval_covers_the_exact_log_likelihood_at_least_90_percent_of_the_time():
    study = _study_module()
    args = SimpleNamespace(seeds=100, data=5, samples=1000, temperatures=100, chains=64, leapfrog=5, guide_epochs=20)
    threads = torch.get_num_threads()
    try:
        rows = study.study(study.MODELS, study.ESTIMATORS, args, log=lambda line: None)
    finally:
        torch.set_num_threads(threads)
    assert {(r["model"], r["estimator"]) for r in rows} == {(m, e) for m in study.MODELS for e in study.ESTIMATORS}
    for r in rows:
        assert r["intervals"] == 500
        assert r["coverage_where_reliable"] is not None and r["coverage_where_reliable"] >= 0.90, r
