"""Homework 2 (gradient estimators for discrete latents): the grader is trustworthy.

- The reference solution scores full marks, hidden check included, at the grader's default seed
  and at another one.
- The untouched starter scores 0, every check failing with a one-line reason, and the grader
  does not crash.
- Mutation tests: each mutant is one bug students really write, a textual edit of
  ``solution.py``; grading it must take the points of exactly the checks that certify the
  mathematics it breaks and leave every other check at full points.
- The problem the checks use is what the handout says: the enumerated ELBO is below the exact
  log p(x), and its gradient is the limit of finite differences.

All submissions are graded once, two at a time (the grader runs each in its own worker process).
"""

import pytest
import torch

from zoo.homework.discrete_estimators.problem import make_problem
from zoo.homework.mutation import (Mutant, assert_full_marks, assert_loses_exactly, assert_starter_scores_zero,
                                   grade_with_mutants, reference_key)
from zoo.testing import assert_close, assert_lower_bound

NAME = "discrete_estimators"
UNBIASED = {"reinforce_unbiased", "reinforce_loo_unbiased", "unbiased_on_a_new_problem"}

#: name -> (old text, new text, the checks it must fail)
MUTANTS = {
    # only the pathwise part: E[grad f] = grad theta only; the guide's gradient is lost, and the
    # "estimator" has almost no variance, so the baseline cannot lower it
    "score_function_term_missing": ("return (fz.detach() * log_q(logits, z) + fz).mean(0).sum()",
                                    "return fz.mean(0).sum()",
                                    {"reinforce_unbiased", "unbiased_on_a_new_problem", "variance_order"}),
    # summing over the S particles: S times the gradient
    "particles_summed_not_averaged": ("return (fz.detach() * log_q(logits, z) + fz).mean(0).sum()",
                                      "return (fz.detach() * log_q(logits, z) + fz).sum(0).sum()",
                                      {"reinforce_unbiased", "unbiased_on_a_new_problem"}),
    # the baseline carries gradient: -log q(z_s) grad_theta b_s has mean H(q) E[grad_theta log p] != 0
    "baseline_not_detached": ("signal = fz.detach() - baseline.detach()", "signal = fz.detach() - baseline",
                              {"reinforce_loo_unbiased", "unbiased_on_a_new_problem", "variance_order"}),
    # the baseline includes f(z_s) itself: the gradient shrinks by (S - 1) / S
    "baseline_depends_on_z": ("baseline = (fz.sum(0, keepdim=True) - fz) / (num_particles - 1)",
                              "baseline = fz.mean(0, keepdim=True)",
                              {"reinforce_loo_unbiased", "unbiased_on_a_new_problem"}),
    # log q summed over the particles instead of the latents: wrong shape everywhere it is used
    "log_prob_summed_over_particles": (".log_prob(z).sum(-1)", ".log_prob(z).sum(0)",
                                       {"log_q", "variance_order"} | UNBIASED),
    # softmax((l + g) / tau^2): the argmax law survives, the temperature does not
    "tau_applied_twice": ("torch.softmax((logits + g) / tau, dim=-1)",
                          "torch.softmax((logits + g) / tau / tau, dim=-1)", {"gumbel_softmax_distribution"}),
    # log(-log u) is minus a Gumbel: argmax no longer follows softmax(logits) (invisible with 2 classes)
    "gumbel_noise_sign_flipped": ("g = -torch.log(-torch.log(u))", "g = torch.log(-torch.log(u))",
                                  {"gumbel_softmax_distribution"}),
    # normalizing over the sample axis
    "softmax_over_wrong_axis": ("torch.softmax((logits + g) / tau, dim=-1)", "torch.softmax((logits + g) / tau, dim=0)",
                                {"gumbel_softmax_distribution", "relaxation_converges"}),
    # straight-through forward pass left soft
    "straight_through_returns_soft_sample": ("return y_hard - y_soft.detach() + y_soft", "return y_soft",
                                             {"straight_through"}),
    # NOT a bug: the same straight-through sample written in another order differs from one-hot by ~6e-8 in
    # float32, and must keep every point (it lost the check's 2 points when it demanded exact equality)
    "straight_through_other_algebraic_form": ("return y_hard - y_soft.detach() + y_soft",
                                              "return y_hard + y_soft - y_soft.detach()", set()),
    # the hard sample without the straight-through gradient
    "straight_through_without_gradient": ("return y_hard - y_soft.detach() + y_soft", "return y_hard",
                                          {"straight_through"}),
}


@pytest.fixture(scope="module")
def grades(tmp_path_factory):
    mutants = {name: Mutant(old, new, frozenset(fails)) for name, (old, new, fails) in MUTANTS.items()}
    return grade_with_mutants(NAME, mutants, tmp_path_factory.mktemp("submissions"), seeds=(0, 1))


@pytest.mark.parametrize("seed", [0, 1])
def test_reference_solution_scores_full_marks(grades, seed):
    assert_full_marks(grades[reference_key(seed)], NAME)


def test_starter_scores_zero_with_one_line_reasons(grades):
    assert_starter_scores_zero(grades["starter"], NAME)


@pytest.mark.parametrize("name", sorted(MUTANTS))
def test_mutant_loses_exactly_its_checks(grades, name):
    assert_loses_exactly(grades[name], MUTANTS[name][2])


def test_the_enumerated_elbo_is_below_log_p_x_and_its_gradient_is_the_finite_difference_one():
    """ELBO <= log p(x) (the zoo's SBN.log_marginal); d ELBO / d phi_00 matches a central difference."""
    problem = make_problem()
    assert_lower_bound(problem.exact_elbo().detach(), problem.log_marginal(), what="the enumerated ELBO")
    gradient = problem.exact_gradient()
    h = 1e-2
    with torch.no_grad():
        values = []
        for sign in (1, -1):
            problem.logits[0, 0] += sign * h
            values.append(float(problem.exact_elbo()))
            problem.logits[0, 0] -= sign * h
    phi_00 = sum(p.numel() for p in problem.sbn.parameters())            # the guide's logits come last
    assert_close(gradient[phi_00], torch.tensor((values[0] - values[1]) / (2 * h)), atol=1e-3,
                 what="d ELBO / d phi_00")
