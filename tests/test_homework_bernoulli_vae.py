"""Homework 1 (the Bernoulli VAE by SVI): the grader is trustworthy.

- The reference solution scores full marks, hidden checks included, at the grader's default seed
  and at another one.
- The untouched starter scores 0, every check failing with a one-line reason, and the grader
  does not crash.
- Mutation tests: each mutant is one bug students really write, a textual edit of
  ``solution.py``; grading it must take the points of exactly the checks that certify the
  mathematics it breaks and leave every other check at full points.

All submissions are graded once, two at a time (the grader runs each in its own worker process).
"""
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from zoo.homework import get_assignment
from zoo.homework.grader import grade

SOLUTION = Path(__file__).resolve().parents[1] / "zoo" / "homework" / "bernoulli_vae" / "solution.py"
STARTER = SOLUTION.with_name("starter.py")

#: name -> (old text, new text, the checks it must fail)
MUTANTS = {
    # KL(q || p) >= 0; returning its negative makes the "ELBO" exceed log p(x)
    "kl_sign_flipped": ("return 0.5 * (mu ** 2", "return -0.5 * (mu ** 2",
                        {"kl_closed_form", "elbo_lower_bound"}),
    # sigma = log sigma: the KL is nan where log sigma < 0
    "log_sigma_used_as_sigma": ("sigma = torch.exp(log_sigma)", "sigma = log_sigma",
                                {"kl_closed_form", "elbo_lower_bound"}),
    # the plate without subsample: the minibatch is not scaled by N / B
    "plate_scale_forgotten": ('pyro.module("decoder", decoder)\n    with pyro.plate("data", N, subsample=idx):',
                              'pyro.module("decoder", decoder)\n    with pyro.plate("data", x.shape[0]):',
                              {"model_matches_story", "train_amortized", "amortization_gap"}),
    # z drawn without the reparameterization: no pathwise gradient to the encoder
    "sample_instead_of_rsample": ("z = q.rsample((num_particles,))", "z = q.sample((num_particles,))",
                                  {"reconstruction_unbiased"}),
    "reparameterized_sample_detached": ("z = q.rsample((num_particles,))",
                                        "z = q.rsample((num_particles,)).detach()",
                                        {"reconstruction_unbiased"}),
    # summing over the particles: S times E_q[log p(x|z)]
    "particles_summed_not_averaged": ("return log_px.mean(0)", "return log_px.sum(0)",
                                      {"reconstruction_unbiased", "elbo_lower_bound"}),
    # the decoder's logits passed as Bernoulli probabilities
    "probs_where_logits_meant": ('dist.Bernoulli(logits=decoder(z)).to_event(1), obs=x)',
                                 'dist.Bernoulli(decoder(z)).to_event(1), obs=x)',
                                 {"model_matches_story", "train_amortized", "amortization_gap"}),
    # p(z) = N(0, 0.1^2 I): the model's check sees it, and the trained model falls short of the target ELBO
    "prior_scale_wrong": ("dist.Normal(torch.zeros(decoder.z_dim), 1.0)",
                          "dist.Normal(torch.zeros(decoder.z_dim), 0.1)", {"model_matches_story", "train_amortized"}),
    # q(z|x) that does not look at x
    "encoder_ignores_x": ("mu, log_sigma = encoder(x)\n    with pyro.plate",
                          "mu, log_sigma = encoder(torch.zeros_like(x))\n    with pyro.plate",
                          {"amortized_guide", "train_amortized"}),
    # the per-datum parameters indexed by position in the minibatch instead of by idx
    "meanfield_rows_by_position": ("loc, log_sigma = q_loc[idx], q_log_sigma[idx]",
                                   "loc, log_sigma = q_loc[:len(x)], q_log_sigma[:len(x)]",
                                   {"meanfield_guide", "amortization_gap"}),
    # the ELBO without its KL term is not a lower bound
    "kl_missing_from_elbo": ("return reconstruction(decoder, encoder, x, num_particles) - kl_normal(mu, log_sigma)",
                             "return reconstruction(decoder, encoder, x, num_particles)",
                             {"elbo_lower_bound"}),
}


@pytest.fixture(scope="module")
def grades(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bernoulli_vae_submissions")
    source = SOLUTION.read_text()
    jobs = {"reference": (SOLUTION, 0), "reference_seed_1": (SOLUTION, 1), "starter": (STARTER, 0)}
    for name, (old, new, _) in MUTANTS.items():
        assert source.count(old) == 1, f"mutant {name}: {old!r} must occur exactly once in solution.py"
        path = folder / f"{name}.py"
        path.write_text(source.replace(old, new))
        jobs[name] = (path, 0)
    with ThreadPoolExecutor(2) as pool:
        futures = {name: pool.submit(grade, "bernoulli_vae", path, hidden=True, seed=seed)
                   for name, (path, seed) in jobs.items()}
        return {name: f.result() for name, f in futures.items()}


@pytest.mark.parametrize("name", ["reference", "reference_seed_1"])
def test_reference_solution_scores_full_marks(grades, name):
    result = grades[name]
    failed = {c.name: c.message for c in result.checks if not c.passed}
    assert not failed, failed
    assert result.score == result.max_score == get_assignment("bernoulli_vae").max_points
    assert any(c.hidden for c in result.checks)      # the hidden check ran and counted


def test_starter_scores_zero_with_one_line_reasons(grades):
    result = grades["starter"]
    assert result.score == 0 and len(result.checks) == len(get_assignment("bernoulli_vae").checks)
    for c in result.checks:
        assert c.status == "error" and "NotImplementedError: TODO" in c.message and "\n" not in c.message, c


@pytest.mark.parametrize("name", sorted(MUTANTS))
def test_mutant_loses_exactly_its_checks(grades, name):
    expected = MUTANTS[name][2]
    result = grades[name]
    failed = {c.name for c in result.checks if not c.passed}
    assert failed == expected, {c.name: c.message for c in result.checks if c.name in failed ^ expected}
    for c in result.checks:
        assert c.points == (0 if c.name in expected else c.max_points)
        assert c.passed or (c.message and "\n" not in c.message)
