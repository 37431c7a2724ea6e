"""The statistics across seeds (zoo.evaluation.seed_stats) against closed forms and published t tables."""
import math

import pytest

from zoo.evaluation.seed_stats import (paired_difference, pool_seeds, pooled_se, summarize, t_interval_mass,
                                       t_quantile)

#: two-sided Student t critical values (Fisher & Yates's table; any statistics textbook's appendix)
T_TABLE = {(0.95, 1): 12.706, (0.95, 2): 4.303, (0.95, 3): 3.182, (0.95, 4): 2.776, (0.95, 5): 2.571,
           (0.95, 9): 2.262, (0.95, 10): 2.228, (0.95, 20): 2.086, (0.95, 30): 2.042, (0.99, 4): 4.604,
           (0.99, 10): 3.169, (0.90, 9): 1.833, (0.90, 2): 2.920}


@pytest.mark.parametrize("confidence,df", sorted(T_TABLE))
def test_t_quantiles_equal_the_published_table_to_its_three_decimals(confidence, df):
    assert round(t_quantile(confidence, df), 3) == T_TABLE[confidence, df]


@pytest.mark.parametrize("confidence", [0.5, 0.9, 0.95, 0.99, 0.999])
def test_t_quantiles_with_one_and_two_degrees_of_freedom_equal_their_closed_forms(confidence):
    """df = 1 is the Cauchy: t = tan(pi c / 2); df = 2: P(|T| <= t) = t / sqrt(2 + t^2), so t = c sqrt(2 / (1 - c^2))."""
    assert t_quantile(confidence, 1) == pytest.approx(math.tan(math.pi * confidence / 2), rel=1e-9)
    assert t_quantile(confidence, 2) == pytest.approx(confidence * math.sqrt(2 / (1 - confidence ** 2)), rel=1e-9)


def test_the_t_distribution_tends_to_the_normal():
    """P(|Z| <= 1.959964) = 0.95 for the normal, which t with many degrees of freedom approaches."""
    assert t_interval_mass(1.959964, 2000) == pytest.approx(0.95, abs=2e-4)
    assert t_interval_mass(1.959964, 2001) == pytest.approx(0.95, abs=2e-4)   # odd and even sums agree


def test_mean_and_standard_error_across_seeds():
    s = summarize([1.0, 2.0, 3.0, 6.0])
    assert s.mean == 3.0 and s.n == 4
    assert s.se == pytest.approx(math.sqrt(((4 + 1 + 0 + 9) / 3) / 4))
    assert summarize([2.5]).se is None


def test_pooled_se_is_the_se_of_a_mean_of_independent_estimates():
    assert pooled_se([0.3, 0.4]) == pytest.approx(0.25)          # sqrt(0.09 + 0.16) / 2
    assert pooled_se([0.2]) == 0.2


def test_paired_difference_removes_what_a_seed_does_to_both_cells():
    """A seed that shifts both cells by the same amount leaves the paired difference exact: a constant
    difference has SE 0, while the unpaired spread of each cell is large."""
    baseline = [10.0, 20.0, 30.0]
    d = paired_difference([v - 0.3 for v in baseline], baseline)
    assert d.mean == pytest.approx(-0.3) and d.se == pytest.approx(0.0, abs=1e-12)
    assert d.contains_zero is False and d.high < 0


def test_paired_t_interval_by_hand():
    """Differences 0.1, 0.3, -0.1: mean 0.1, sd 0.2, se 0.2/sqrt(3); half-width 4.303 * se = 0.4968."""
    d = paired_difference([1.1, 1.3, 0.9], [1.0, 1.0, 1.0])
    assert d.mean == pytest.approx(0.1) and d.se == pytest.approx(0.2 / math.sqrt(3))
    assert d.high - d.mean == pytest.approx(4.3027 * 0.2 / math.sqrt(3), rel=1e-4)
    assert d.contains_zero is True
    single = paired_difference([1.5], [1.0])
    assert single.mean == 0.5 and single.low is None and single.contains_zero is None
    with pytest.raises(ValueError):
        paired_difference([1.0, 2.0], [1.0])


def test_pool_seeds_merges_runs_that_differ_only_in_the_seed():
    def run(seed, elbo, ll, guide="amortized"):
        return {"config": {"guide": guide, "seed": seed}, "elbo": elbo, "log_likelihood": ll, "label": f"s{seed}"}
    pooled = pool_seeds([("a", run(0, -10.0, -9.0)), ("b", run(1, -12.0, -11.0)), ("c", run(0, -5.0, -4.0, "iaf"))])
    assert [name for name, _ in pooled] == ["a", "c"]
    merged = pooled[0][1]
    assert merged["elbo"] == -11.0 and merged["nll"] == 10.0 and merged["seeds"] == [0, 1]
    assert merged["nll_seed_se"] == pytest.approx(1.0) and merged["elbo_seed_se"] == pytest.approx(1.0)
    assert pooled[1][1] == run(0, -5.0, -4.0, "iaf")


def _row(cell, seed, elbo, ll, khat=0.0):
    guide, objective = cell.split("/")
    return {"cell": cell, "config": {"model": "vae", "guide": guide, "objective": objective, "seed": seed},
            "elbo": elbo, "log_likelihood": ll, "log_likelihood_se": 0.01, "log_likelihood_data_se": 0.5,
            "elbo_gap": ll - elbo, "active_units": 2, "psis_khat_frac_over_0_7": khat, "epoch_seconds": 1.0,
            "split": "test", "num_data": 270, "num_samples": 100}


def test_compare_markdown_says_which_differences_the_seeds_can_tell_apart():
    """A cell 0.3 nats better at every seed (± 0.01) is called better; one that is ± 0.5 around the baseline is
    'not distinguishable'; a cell with half its data at k-hat > 0.7 is marked; figures are −ELBO and NLL > 0."""
    from zoo.evaluation.compare_tables import compare_markdown
    base = [-26.3, -26.8, -25.9]
    rows = ([_row("amortized/elbo", s, b - 0.2, b) for s, b in enumerate(base)]
            + [_row("iaf/elbo", s, b - 0.2 + 0.3 + 0.01 * s, b + 0.3 + 0.01 * s) for s, b in enumerate(base)]
            + [_row("amortized/iwae", s, b - 0.2 + d, b + d) for s, (b, d) in enumerate(zip(base, (0.5, -0.5, 0.1)))]
            + [_row("meanfield/elbo", s, b - 30, b - 29, khat=0.5) for s, b in enumerate(base)])
    md = compare_markdown(rows, baseline="amortized/elbo")
    lines = {line.split(" | ")[0].lstrip("| "): line for line in md.splitlines() if line.startswith("| ")}
    assert "| amortized/elbo (baseline) | 3 | 26.53 ± 0.260 | 26.33 ± 0.260 |" in md
    assert "lower (better) than the baseline" in lines["iaf/elbo"].split(" | ")[4]
    assert "interval contains 0: not distinguishable" in lines["amortized/iwae"]
    assert "higher (worse) than the baseline" in lines["meanfield/elbo"] and "⚠" in lines["meanfield/elbo"]
    assert "50.0% ⚠" in md and "lower is better" in md
    for term in ("gap:", "AU:", "± data se:", "k̂>0.7:", "± IS se:"):
        assert f"- {term}" in md, term


def test_pool_seeds_keeps_sources_apart_and_never_pools_a_repeated_seed():
    def run(seed):
        return {"config": {"guide": "amortized", "seed": seed}, "elbo": -10.0 - seed, "log_likelihood": -9.0}
    twice = [("a.json", run(0)), ("b.json", run(0))]            # one run published in two result files
    assert pool_seeds(twice) == twice
    apart = [("grid1/x", run(0)), ("grid2/y", run(1))]
    assert pool_seeds(apart, source=lambda name: name.split("/")[0]) == apart


def test_a_pooled_run_recomputes_every_derived_figure_from_the_means_over_seeds():
    """Pooling two seeds of a cell on 64 binary pixels: NLL, bits/dim, the ELBO gap and the IS error are those of
    the mean log p(x) and mean ELBO (nats / (64 ln 2) for bits), not the first seed's (issue 53, 5a)."""
    import math
    from zoo.evaluation.estimators.bits_per_dim import bits_per_dim

    def run(seed, elbo, ll, exact):
        return {"config": {"guide": "amortized", "seed": seed}, "elbo": elbo, "log_likelihood": ll, "nll": -ll,
                "exact_log_likelihood": exact, "elbo_gap": exact - elbo, "is_error": ll - exact,
                "log_likelihood_se": 0.3, **bits_per_dim(2, 64, -elbo, -ll)}
    (_, pooled), = pool_seeds([("a", run(0, -34.0, -32.3, -32.0)), ("b", run(1, -36.0, -33.3, -33.0))])
    assert pooled["log_likelihood"] == -32.8 and pooled["nll"] == 32.8 and pooled["elbo"] == -35.0
    assert pooled["bits_per_dim_nll"] == pytest.approx(32.8 / (64 * math.log(2)), rel=1e-12)
    assert pooled["bits_per_dim_elbo"] == pytest.approx(35.0 / (64 * math.log(2)), rel=1e-12)
    assert pooled["elbo_gap"] == pytest.approx(-32.5 + 35.0) and pooled["is_error"] == pytest.approx(-0.3)
    assert pooled["log_likelihood_se"] == pytest.approx(math.sqrt(2 * 0.3 ** 2) / 2)
