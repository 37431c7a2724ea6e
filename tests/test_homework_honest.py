"""Correct submissions keep every point, whatever the grade's secret seed (issues 43 and 53).

A tolerance tuned to the reference's own form fails honest students: ``ppca_float64_woodbury.py`` computes
pPCA with loops, the Woodbury identity and float64 throughout, and trains SVI with a constant learning rate;
it used to lose ``svi_exact_guide`` / ``svi_amortized_guide`` at some seeds (the last iterate's noise of a
constant-rate SVI, and a run that had not converged in 400 steps).

A threshold that does not come from the estimator's own variance fails correct submissions at some seeds: the
reference solutions lost a check at each seed below (a 3-sigma test with 11 directions fails 1 grade in 370; a
t-test of 10 draws at 5 sigma, 1 in 400; a Kolmogorov-Smirnov test at 0.001, 1 in 500). Each check's false-alarm
rate is now at most 1e-4 (``zoo/homework/INSTRUCTORS.md``; ``benchmarks/results/homework_seed_sweep.md`` measures
it over 1000 seeds).
"""
import json
from pathlib import Path

import pytest

from zoo.cli import main

SUBMISSIONS = Path(__file__).resolve().parent / "homework_submissions"
SOLUTIONS = Path(__file__).resolve().parents[1] / "zoo" / "homework" / "solutions"


def _grade(tmp_path, capsys, assignment, submission, seed, checks):
    out = tmp_path / "r.json"
    assert main(["grade", assignment, str(submission), "--seed", str(seed), "--only", ",".join(checks),
                 "--json", str(out)]) == 0
    capsys.readouterr()
    return json.loads(out.read_text())


@pytest.mark.parametrize("seed", ["514817024748999770", "3", "8"])
@pytest.mark.slow
def test_ppca_in_float64_with_woodbury_and_loops_keeps_the_svi_points(tmp_path, capsys, seed):
    """Seed 8: its SVI with the per-datum guide ended 0.39 nats/datum short of the maximum in 400 steps."""
    result = _grade(tmp_path, capsys, "ppca_three_ways", SUBMISSIONS / "ppca_float64_woodbury.py", seed,
                    ["svi_exact_guide", "svi_amortized_guide", "log_likelihood", "em_update"])
    assert result["score"] == result["max_score"], [c["message"] for c in result["checks"]]


#: (assignment, check, a seed at which the reference solution lost the check by chance)
CHANCE_FAILURES = [
    ("discrete_estimators", "reinforce_unbiased", 199),                # 3.72 > 3.67 standard errors, 11 directions
    ("discrete_estimators", "gumbel_softmax_distribution", 426),        # Kolmogorov-Smirnov 0.032 > 0.031
    ("ppca_three_ways", "svi_minibatch_scale", 144),                   # the mean 3.18 standard errors off
    ("bernoulli_vae", "elbo_lower_bound", 958),                        # 10 draws' t-test at 5 sigma
]


@pytest.mark.parametrize("assignment, check, seed", CHANCE_FAILURES)
@pytest.mark.slow
def test_the_reference_keeps_a_check_at_a_seed_where_it_lost_it_by_chance(tmp_path, capsys, assignment, check, seed):
    result = _grade(tmp_path, capsys, assignment, SOLUTIONS / f"{assignment}.py", seed, [check])
    assert result["checks"][0]["passed"], result["checks"][0]["message"]


@pytest.mark.parametrize("assignment, alternative", [
    ("bernoulli_vae", "bernoulli_vae_other_forms.py"),
    ("discrete_estimators", "discrete_estimators_other_forms.py"),
    ("wake_sleep_and_iwae", "wake_sleep_and_iwae_other_forms.py"),
    ("wake_sleep_and_iwae", "wake_sleep_and_iwae_other_forms_2.py"),
    ("wake_sleep_and_iwae", "wake_sleep_and_iwae_other_forms_3.py"),
    ("expressive_posteriors", "expressive_posteriors_other_forms.py"),
    ("expressive_posteriors", "expressive_posteriors_other_forms_2.py"),
    ("expressive_posteriors", "expressive_posteriors_other_forms_3.py")])
@pytest.mark.slow
def test_correct_submissions_written_another_way_keep_every_point(tmp_path, capsys, assignment, alternative):
    """torch.distributions where the reference writes the formula, a softplus scale, particles one at a time, the
    leave-one-out signal as S/(S-1) (f - mean f), Gumbel noise as -log(Exponential); for homework 4 samples as
    uniform < probability, RWS as the IWAE bound's theta gradient plus the weighted log q, the log-mean-exp with the
    maximum subtracted, float64 inside, SGD with momentum or RWS with an extra sleep phase; for homework 5 MADE's
    masks as booleans or degree differences, z' = m + sigma (z - m), the VampPrior as MixtureSameFamily or a
    hand-made logsumexp, the particles folded into the batch: full marks, hidden checks included (the sweep grades
    them at 1000 seeds)."""
    out = tmp_path / "r.json"
    assert main(["grade", assignment, str(SUBMISSIONS / alternative), "--seed", "11", "--hidden",
                 "--json", str(out)]) == 0
    capsys.readouterr()
    result = json.loads(out.read_text())
    assert result["score"] == result["max_score"], {c["name"]: c["message"] for c in result["checks"] if not c["passed"]}
