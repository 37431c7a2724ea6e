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

import pytest

from zoo.homework.mutation import (Mutant, assert_full_marks, assert_loses_exactly, assert_starter_scores_zero,
                                   grade_with_mutants, reference_key)


#: name -> (old text, new text, the checks it must fail)
MUTANTS = {
    # KL(q || p) >= 0; returning its negative makes the "ELBO" exceed log p(x)
    "kl_sign_flipped": ("return 0.5 * (mu ** 2", "return -0.5 * (mu ** 2",
                        {"kl_closed_form", "elbo_lower_bound"}),
    # sigma = log sigma: the KL is nan where log sigma < 0
    "log_sigma_used_as_sigma": ("sigma = torch.exp(log_sigma)", "sigma = log_sigma",
                                {"kl_closed_form", "elbo_lower_bound"}),
    # the plate without subsample: the minibatch is not scaled by N / B (the hidden check fits the per-datum
    # guide on the whole test set at once, where N / B = 1, so it does not see this bug)
    "plate_scale_forgotten": ('pyro.module("decoder", decoder)\n    with pyro.plate("data", N, subsample=idx):',
                              'pyro.module("decoder", decoder)\n    with pyro.plate("data", x.shape[0]):',
                              {"model_matches_story", "train_amortized"}),
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
    mutants = {name: Mutant(old, new, frozenset(fails)) for name, (old, new, fails) in MUTANTS.items()}
    return grade_with_mutants("bernoulli_vae", mutants, tmp_path_factory.mktemp("submissions"), seeds=(0, 1))


@pytest.mark.parametrize("seed", [0, 1])
def test_reference_solution_scores_full_marks(grades, seed):
    assert_full_marks(grades[reference_key(seed)], "bernoulli_vae")


def test_starter_scores_zero_with_one_line_reasons(grades):
    assert_starter_scores_zero(grades["starter"], "bernoulli_vae")


@pytest.mark.parametrize("name", sorted(MUTANTS))
def test_mutant_loses_exactly_its_checks(grades, name):
    assert_loses_exactly(grades[name], MUTANTS[name][2])
