"""Homework 3 (probabilistic PCA three ways): the grader is trustworthy.

- The reference solution scores full marks, hidden check included, at the grader's default seed
  and at another one.
- The untouched starter scores 0, every check failing with a one-line reason, and the grader
  does not crash.
- Mutation tests: each mutant is one bug students really write, a textual edit of
  ``solution.py``; grading it must take the points of exactly the checks that certify the
  mathematics it breaks and leave every other check at full points.
- The references the checks use are the closed forms: the zoo's ML solution is a stationary
  point of EM, and its log-likelihood is scikit-learn's.

All submissions are graded once, two at a time (the grader runs each in its own worker process).
"""

import pytest
import torch

from zoo.homework.mutation import (Mutant, assert_full_marks, assert_loses_exactly, assert_starter_scores_zero,
                                   grade_with_mutants, reference_key)
from zoo.homework.ppca_three_ways.problem import LATENT_DIM, average_log_likelihood, make_data, reference_ml
from zoo.testing import assert_close

NAME = "ppca_three_ways"
ML = {"ml_closed_form", "ml_matches_sklearn"}
EM = {"em_update", "em_monotone", "em_converges", "em_on_other_data"}
SVI = {"svi_minibatch_scale", "svi_exact_guide", "svi_amortized_guide"}

#: name -> (old text, new text, the checks it must fail)
MUTANTS = {
    # M^-1 for sigma^2 M^-1: the posterior is too wide, and EM's E-step with it is no longer EM
    "posterior_covariance_without_sigma2": ("cov = sigma2 * Minv", "cov = Minv", {"posterior"} | EM),
    # W^T (x - mu) without M^-1
    "posterior_mean_without_M_inverse": ("mean = (x - mu) @ W @ Minv", "mean = (x - mu) @ W", {"posterior"} | EM),
    # W = U_q: the principal directions without the rotation-free (L_q - sigma^2 I)^{1/2} scaling
    "ml_W_without_scaling": ("W = U[:, :latent_dim] * torch.sqrt(evals[:latent_dim] - sigma2)",
                             "W = U[:, :latent_dim]", ML),
    # sigma^2 averaged over all D eigenvalues instead of the D - q discarded ones
    "sigma2_over_all_eigenvalues": ("sigma2 = evals[latent_dim:].mean()", "sigma2 = evals.mean()", ML),
    # the scatter matrix of the raw data instead of the covariance
    "mean_not_subtracted": ("xc = x - mu\n    S = xc.T @ xc", "xc = x\n    S = xc.T @ xc", ML),
    # eigenvectors taken as the rows of the eigenvector matrix (they are its columns)
    "eigenvectors_as_rows": ("W = U[:, :latent_dim] * torch.sqrt", "W = U[:latent_dim].T * torch.sqrt", ML),
    # E[z z^T] = E[z] E[z]^T: the posterior covariance forgotten in the M-step
    "em_second_moment_without_covariance": ("sum_Ezz = N * cov + Ez.T @ Ez", "sum_Ezz = Ez.T @ Ez", EM),
    # EM slips that still climb to the maximum likelihood (full marks when only EM's end point was graded):
    # sigma^2's cross term with the old W where W_new belongs (the handout: "the sigma^2 update uses W_new")
    "sigma2_cross_term_with_old_W": ("(Ez * (xc @ W_new))", "(Ez * (xc @ W))", {"em_update"}),
    # the whole sigma^2 update with the old W
    "sigma2_update_with_old_W": ("- 2 * (Ez * (xc @ W_new)).sum() + torch.trace(sum_Ezz @ W_new.T @ W_new)",
                                 "- 2 * (Ez * (xc @ W)).sum() + torch.trace(sum_Ezz @ W.T @ W)", {"em_update"}),
    # the plate without subsample: the minibatch is not scaled by N / B (nor the guide's matching term)
    "plate_scale_forgotten": ('with pyro.plate("data", num_data, subsample=idx):\n        z = pyro.sample("z", dist.N',
                              'with pyro.plate("data", x.shape[0]):\n        z = pyro.sample("z", dist.N', SVI),
    # sigma = log sigma in the likelihood
    "log_sigma_used_as_sigma": ("torch.exp(log_sigma)).to_event(1), obs=x)", "log_sigma).to_event(1), obs=x)", SVI),
    # C = W W^T + sigma I
    "log_likelihood_with_sigma_for_sigma2": ("C = W @ W.T + sigma2 * torch.eye",
                                             "C = W @ W.T + torch.sqrt(sigma2) * torch.eye", {"log_likelihood"}),
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


def test_the_ml_solution_is_a_fixed_point_of_em_and_matches_sklearn():
    """At (W, mu, sigma^2)_ML the EM step of the reference solution leaves W W^T and sigma^2 unchanged, and the
    average log-likelihood is sklearn's PCA.score (which uses 1/(N-1), hence within 1e-3)."""
    from sklearn.decomposition import PCA

    import importlib.util

    from zoo.homework import get_assignment
    from zoo.homework.kit import solution_path

    spec = importlib.util.spec_from_file_location("ppca_solution", solution_path(get_assignment(NAME)))
    solution = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(solution)
    x = make_data().double()
    W, mu, sigma2 = reference_ml(x, LATENT_DIM)
    W_new, sigma2_new = solution.em_step(x, W, mu, torch.tensor(sigma2, dtype=torch.float64))
    assert_close(W_new @ W_new.T, W @ W.T, atol=1e-5, what="W W^T after one EM step from the ML")
    assert_close(sigma2_new, torch.tensor(sigma2, dtype=torch.float64), atol=1e-7, what="sigma^2 after one EM step")
    score = PCA(n_components=LATENT_DIM).fit(x.numpy()).score(x.numpy())
    assert abs(average_log_likelihood(x, W, mu, sigma2) - score) < 1e-3
