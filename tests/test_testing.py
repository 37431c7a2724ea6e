"""The public certifiers of ``zoo.testing`` can fail, and fail at the rate they state.

Each certifier is shown (a) rejecting a wrong claim it exists to catch (a biased estimator,
a bound above the exact value, a value off its closed form, a variance ordering that does not
hold) and (b) accepting a right one, at its stated false-alarm rate over many seeds.
"""
import math

import pytest
import torch

from zoo.testing import (assert_close, assert_lower_bound, assert_unbiased, assert_variance_order, gradient_of,
                         two_sided_threshold)


# -- assert_unbiased --------------------------------------------------------------------------------

def test_a_bias_of_six_standard_errors_of_a_1000_sample_mean_is_rejected():
    exact = torch.tensor(1.0)
    bias = 6.0 / math.sqrt(1000)                     # noise std 1, so one standard error is 1/sqrt(1000)
    with pytest.raises(AssertionError, match=r"biased: along the only coordinate .* standard errors from 0"):
        assert_unbiased(lambda: exact + bias + torch.randn(()), exact, num_samples=1000)


def test_a_bias_in_one_coordinate_of_a_vector_is_found_along_the_random_directions():
    exact = torch.zeros(8)
    bias = torch.zeros(8)
    bias[3] = 0.5                                    # hidden from the mean direction by an opposite bias
    bias[5] = -0.5
    with pytest.raises(AssertionError, match="random direction"):
        assert_unbiased(lambda: exact + bias + torch.randn(8), exact, num_samples=1000)


def test_a_shared_bias_is_found_along_the_mean_direction():
    exact = torch.zeros(50)
    with pytest.raises(AssertionError, match="the mean over all coordinates"):
        assert_unbiased(lambda: exact + 0.03 + torch.randn(50), exact, num_samples=1000)


def test_an_unbiased_estimator_passes_at_the_stated_false_alarm_rate():
    """Over 200 seeds at 2 sigma (family-wise false alarm at most 4.55%, less since 11 directions in 3
    dimensions are correlated), an unbiased, skewed estimator (exponential noise) is rejected at most
    about 9 times; 20 is beyond 3.5 binomial standard deviations."""
    exact = torch.tensor([1.0, 2.0, 3.0])
    rejections = 0
    for seed in range(200):
        try:
            assert_unbiased(lambda: exact + torch.empty(3).exponential_() - 1.0, exact, num_samples=200,
                            sigmas=2.0, seed=seed)
        except AssertionError:
            rejections += 1
    assert rejections <= 20, rejections


def test_a_sequence_of_tensors_is_one_estimate_and_shapes_must_agree():
    exact = [torch.zeros(2, 2), torch.ones(3)]
    assert_unbiased(lambda: [torch.randn(2, 2), 1 + torch.randn(3)], exact, num_samples=100)
    with pytest.raises(AssertionError, match="estimate has 6 numbers but exact has 7"):
        assert_unbiased(lambda: [torch.randn(2, 2), torch.randn(2)], exact, num_samples=10)


def test_a_deterministic_estimator_is_certified_exactly():
    exact = torch.tensor([0.5, -1.0])
    assert "max |z| = 0 " in assert_unbiased(lambda: exact.clone(), exact, num_samples=10)
    with pytest.raises(AssertionError, match="inf standard errors"):
        assert_unbiased(lambda: exact + 1e-3, exact, num_samples=10)


def test_nan_estimates_fail_with_a_reason():
    with pytest.raises(AssertionError, match="nan or inf in 10 of 10 draws"):
        assert_unbiased(lambda: torch.tensor([math.nan]), torch.zeros(1), num_samples=10)


def test_the_draws_are_seeded_and_leave_the_callers_rng_alone():
    torch.manual_seed(123)
    before = torch.get_rng_state()
    a = assert_unbiased(lambda: torch.randn(4), torch.zeros(4), num_samples=50, seed=7)
    assert torch.equal(before, torch.get_rng_state())
    assert a == assert_unbiased(lambda: torch.randn(4), torch.zeros(4), num_samples=50, seed=7)


def test_the_reinforce_gradient_of_a_bernoulli_expectation_is_unbiased_and_the_pathwise_part_alone_is_not():
    """d/dp E_{z~Bern(p)} f(z) = f(1) - f(0); the score-function estimator f(z) d log q(z) is unbiased."""
    p = torch.tensor(0.3, requires_grad=True)
    f = lambda z: (z - 0.2) ** 2               # noqa: E731
    exact = f(torch.tensor(1.0)) - f(torch.tensor(0.0))

    def reinforce():
        z = torch.bernoulli(p.detach())
        return gradient_of(lambda: f(z) * torch.distributions.Bernoulli(probs=p).log_prob(z), [p])

    def zero_gradient():                        # what a sample that is not reparameterized gives by autograd
        z = torch.bernoulli(p.detach())
        return gradient_of(lambda: f(z) + 0 * p, [p])

    assert_unbiased(reinforce, exact, num_samples=1000)
    with pytest.raises(AssertionError, match="biased"):
        assert_unbiased(zero_gradient, exact, num_samples=1000)


def test_the_bonferroni_threshold():
    assert two_sided_threshold(3.0, 1) == pytest.approx(3.0)
    assert two_sided_threshold(3.0, 11) == pytest.approx(3.667, abs=1e-3)
    assert two_sided_threshold(2.0, 5) > two_sided_threshold(2.0, 1)


# -- assert_lower_bound ------------------------------------------------------------------------------

def test_a_bound_above_the_exact_value_is_rejected_and_one_below_passes():
    with pytest.raises(AssertionError, match=r"ELBO is above the exact value: ELBO -2.99 > exact -3"):
        assert_lower_bound(-2.99, -3.0)
    assert "below the exact" in assert_lower_bound(-3.01, -3.0)


def test_the_monte_carlo_error_of_a_bound_is_allowed_for_and_no_more():
    assert_lower_bound(-2.99, -3.0, stderr=0.005, sigmas=3.0)          # 0.01 above, 0.015 allowed
    with pytest.raises(AssertionError, match="0.01 allowed"):
        assert_lower_bound(-2.98, -3.0, stderr=0.005, sigmas=2.0)


def test_a_per_datum_bound_names_the_worst_datum():
    exact = torch.tensor([-1.0, -2.0, -3.0])
    with pytest.raises(AssertionError, match="at index 2"):
        assert_lower_bound(torch.tensor([-1.5, -2.5, -2.9]), exact, what="IWAE bound")
    with pytest.raises(AssertionError, match="nan or inf"):
        assert_lower_bound(torch.tensor([math.nan, -3.0, -4.0]), exact)
    with pytest.raises(AssertionError, match="shape"):
        assert_lower_bound(torch.zeros(2), exact)


# -- assert_close ------------------------------------------------------------------------------------

def test_assert_close_rejects_a_value_off_its_closed_form_and_names_the_entry():
    expected = torch.eye(3)
    assert_close(expected + 1e-7, expected)
    wrong = expected.clone()
    wrong[1, 2] = 0.01
    with pytest.raises(AssertionError, match=r"posterior covariance does not match the closed form: at index \(1, 2\)"):
        assert_close(wrong, expected, atol=1e-3, what="posterior covariance")
    with pytest.raises(AssertionError, match=r"has shape \(3,\), expected \(3, 3\)"):
        assert_close(torch.ones(3), expected)
    with pytest.raises(AssertionError, match="nan"):
        assert_close(torch.full((3, 3), math.nan), expected)


def test_assert_close_tolerance_is_absolute_plus_relative():
    assert_close(torch.tensor(101.0), torch.tensor(100.0), atol=0.0, rtol=0.011)
    with pytest.raises(AssertionError):
        assert_close(torch.tensor(101.0), torch.tensor(100.0), atol=0.0, rtol=0.009)


# -- assert_variance_order ---------------------------------------------------------------------------

def test_a_true_variance_order_passes_and_the_reverse_fails():
    loud, quiet = (lambda: 3.0 * torch.randn(4)), (lambda: torch.randn(4))
    assert "ratio" in assert_variance_order({"loud": loud, "quiet": quiet}, ["loud", "quiet"], num_samples=300)
    with pytest.raises(AssertionError, match="variance of quiet .* is not demonstrably above that of loud"):
        assert_variance_order({"loud": loud, "quiet": quiet}, ["quiet", "loud"], num_samples=300)


def test_equal_variances_fail_at_the_stated_rate_even_with_heavy_tails():
    """Two identical Laplace estimators are not ordered: at 2 sigma one-sided a false claim passes 2.3% of the
    time, about 2 of 100 seeds. (A plain F test, blind to the Laplace's kurtosis of 6, would pass about 10%.)"""
    laplace = torch.distributions.Laplace(0.0, 1.0)
    same = lambda: laplace.sample((2,))            # noqa: E731
    passes = 0
    for seed in range(100):
        try:
            assert_variance_order({"a": same, "b": same}, ["a", "b"], num_samples=200, sigmas=2.0, seed=seed)
            passes += 1
        except AssertionError:
            pass
    assert passes <= 7, passes


def test_min_ratio_and_unknown_names():
    loud, quiet = (lambda: 3.0 * torch.randn(2)), (lambda: torch.randn(2))
    assert_variance_order({"loud": loud, "quiet": quiet}, ["loud", "quiet"], num_samples=300, min_ratio=5.0)
    with pytest.raises(AssertionError, match="above 20"):
        assert_variance_order({"loud": loud, "quiet": quiet}, ["loud", "quiet"], num_samples=300, min_ratio=20.0)
    with pytest.raises(ValueError, match="not among the estimators"):
        assert_variance_order({"loud": loud}, ["loud", "quiet"])


# -- gradient_of -------------------------------------------------------------------------------------

def test_gradient_of_flattens_and_fills_unused_parameters_with_zeros():
    a = torch.tensor([[1.0, 2.0]], requires_grad=True)
    b = torch.tensor(3.0, requires_grad=True)
    unused = torch.ones(2, requires_grad=True)
    g = gradient_of(lambda: (a ** 2).sum() * b, [a, b, unused])
    assert torch.equal(g, torch.tensor([6.0, 12.0, 5.0, 0.0, 0.0]))
    with pytest.raises(AssertionError, match="scalar"):
        gradient_of(lambda: a * 2, [a])
