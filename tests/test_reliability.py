"""What a person reads about a run says whether to trust it: results.md and the console carry the PSIS verdict
and a legend, in the papers' convention (−ELBO and NLL, positive, lower is better), and a collapsed model
gets a warning."""
import pytest
import torch

from zoo.evaluation import harness, reliability
from zoo.core import trust
from zoo.evaluation.tables import results_markdown, run_warnings

CONFIG = {"model": "vae", "guide": "meanfield", "objective": "elbo", "objective_options": {}}


def summary(**overrides):
    row = {"config": CONFIG, "elbo": -24.5, "reconstruction": -20.0, "kl": 4.5, "iwae_bound": -21.0,
           "log_likelihood": -20.42, "log_likelihood_se": 0.01, "log_likelihood_data_se": 0.3,
           "exact_log_likelihood": None, "elbo_gap": 4.08, "active_units": 2, "num_latent_units": 2,
           "psis_khat_frac_over_0_7": 0.922, "num_data": 270, "num_samples": 1000, "iwae_k": 50, "split": "test",
           "epochs_trained": 5}
    row.update(overrides)
    return row


def test_the_reliability_threshold_is_the_harness_threshold():
    assert reliability.KHAT_THRESHOLD == harness.PSIS_THRESHOLD


def test_results_md_is_in_the_nll_convention_and_flags_an_unreliable_nll():
    table = results_markdown([summary()])
    head, _, row = table.splitlines()[:3]
    cells = dict(zip([h.strip() for h in head.strip("|").split("|")], [c.strip() for c in row.strip("|").split("|")]))
    assert cells["−ELBO"] == "24.50" and cells["NLL (IS)"] == "20.42" and cells["−IWAE-k"] == "21.00"
    assert cells["−rec"] == "20.00" and cells["KL"] == "4.500"
    assert cells["k̂>0.7"] == "92.2% ⚠ unreliable"
    assert "ELBO |" not in head.replace("−ELBO", "") and "log p(x)" not in head
    assert "lower is better" in table and "exact NLL" not in head          # no row has one: the column is left out
    for abbreviation in ("−rec", "KL", "AU", "± se", "± data se", "gap", "k̂>0.7"):
        assert f"{abbreviation}: " in table, abbreviation                  # the legend explains every short head
    assert "**Warning**: 92.2% of data have PSIS k-hat > 0.7: the importance-sampled NLL is unreliable" in table


def test_a_reliable_run_gets_no_warning_and_no_mark():
    table = results_markdown([summary(psis_khat_frac_over_0_7=0.03)])
    assert "| 3.0% |" in table and "⚠" not in table.splitlines()[2] and "**Warning**" not in table
    assert not reliability.is_unreliable(summary(psis_khat_frac_over_0_7=0.03))
    assert not reliability.is_unreliable(summary(psis_khat_frac_over_0_7=None))         # no k-hat, no verdict
    assert "| – |" in results_markdown([summary(psis_khat_frac_over_0_7=None)]).splitlines()[2]


def test_a_collapsed_model_is_warned_about():
    assert run_warnings(summary(psis_khat_frac_over_0_7=0.0)) == []
    no_units = run_warnings(summary(psis_khat_frac_over_0_7=0.0, active_units=0, num_latent_units=50))
    assert len(no_units) == 1 and no_units[0].startswith("posterior collapse: 0 of 50 latent units are active")
    same_samples = run_warnings(summary(psis_khat_frac_over_0_7=0.0, sample_spread=0.02))
    assert len(same_samples) == 1 and "samples are near-identical (their spread is 2% of the data's" in same_samples[0]
    assert "**Warning**: posterior collapse" in results_markdown([summary(active_units=0)])


def test_the_spread_of_samples_tells_one_image_from_many():
    data = (torch.rand(200, 64) > 0.5).float()
    assert reliability.sample_spread(data[:64], data) > 0.8
    one = data[:1].expand(64, -1) + 0.001 * torch.randn(64, 64)
    assert reliability.sample_spread(one, data) < reliability.MIN_SAMPLE_SPREAD


def test_hvae_collapsed_on_digits_is_warned_about_in_the_console_and_results_md(tmp_path, capsys):
    """Burda et al.'s two-layer VAE, 5 epochs on the 8x8 digits: no active unit, and 64 samples of one digit."""
    from zoo.cli import main
    out = tmp_path / "hvae"
    assert main(["train", "hvae", "--dataset", "digits", "--epochs", "5", "--eval-samples", "20", "--iwae-k", "5",
                 "--no-progress", "--seed", "0", "--out", str(out)]) == 0
    stdout = capsys.readouterr().out
    head = next(line for line in stdout.splitlines() if line.startswith("|"))   # after "training ...: epochs 1 to 5"
    assert "| −ELBO |" in head and "| NLL (IS) |" in head and "| k̂>0.7 |" in head and "log p" not in head
    assert "lower is better" in stdout and "**Warning**" not in stdout      # the console prints them as lines
    assert "warning: posterior collapse: 0 of 150 latent units are active" in stdout
    assert "samples are near-identical" in stdout
    assert "**Warning**: posterior collapse: 0 of 150" in (out / "results.md").read_text()


def test_a_second_estimator_turns_the_k_hat_warning_into_a_verdict():
    """With AIS recorded beside the IS figures, the flag is their agreement, not k-hat: a run whose k-hats are all
    over 0.7 but whose IS and AIS agree stands; one whose IS sits a nat below AIS is flagged, saying which is lower."""
    from zoo.evaluation.reliability import agreement_verdict, agrees, is_unreliable
    base = {"psis_khat_frac_over_0_7": 0.97, "log_likelihood": -88.64, "log_likelihood_se": 0.004}
    assert is_unreliable(base) and agreement_verdict(base) == "k̂ only: 97% ⚠"
    agreeing = dict(base, ais={"rows": [{"log_likelihood": -88.60, "log_likelihood_se": 0.01, "num_temperatures": 200}]},
                    bdmc={"rows": [{"gap": 0.4}]})
    assert agrees(agreeing) and not is_unreliable(agreeing)
    assert agreement_verdict(agreeing) == "✓ IS = AIS (Δ 0.04; BDMC gap 0.40)"
    apart = dict(base, ais={"rows": [{"log_likelihood": -87.5, "log_likelihood_se": 0.01}]})
    assert not agrees(apart) and is_unreliable(apart)
    assert agreement_verdict(apart) == "⚠ IS lower by 1.14; no BDMC gap bounds AIS"
    # AIS bounded by a narrow BDMC gap, its replicas agreeing: it is the figure to use, IS's shortfall beside it
    bounded = dict(apart, bdmc={"rows": [{"gap": 0.08}]},
                   ais={"rows": [{"log_likelihood": -87.5, "log_likelihood_se": 0.01, "frac_flagged": 0.02}]})
    assert agreement_verdict(bounded) == "✓ AIS 87.50 ± 0.01, replicas agree on 98%; BDMC gap 0.08; IS 1.14 short"
    assert agreement_verdict(dict(bounded, bdmc={"rows": [{"gap": 0.9}]})) == "⚠ IS lower by 1.14; BDMC gap 0.90 outside ±0.5"
    split = dict(bounded, ais={"rows": [{"log_likelihood": -87.5, "log_likelihood_se": 0.01, "frac_flagged": 0.3}]})
    assert agreement_verdict(split) == "⚠ IS lower by 1.14; replicas disagree on 30%"
    short = dict(base, ais={"rows": [{"log_likelihood": -90.0, "log_likelihood_se": 0.01}]})
    assert agreement_verdict(short) == "⚠ AIS lower by 1.36: its chains fall short"
    hand_edited = dict(base, ais={"rows": [{"log_likelihood": "high", "log_likelihood_se": 0.01}]})
    assert agrees(hand_edited) is None and is_unreliable(hand_edited)


def test_ais_of_a_subset_is_checked_against_is_of_that_subset_not_of_the_whole_split():
    """AIS scores 1,000 of the 10,000 test images: set beside IS of all 10,000 (88.64) an AIS of 89.50 on its subset
    would read as IS sitting 0.86 nats high, though the two subsets differ by the images drawn. With IS of the same
    1,000 images recorded (89.52), the check compares those, and the verdict names the subset."""
    from zoo.evaluation.reliability import agreement_verdict, agrees, ais_minus_is
    from zoo.evaluation.reports import _ais_nll
    whole = {"log_likelihood": -88.64, "log_likelihood_se": 0.004, "psis_khat_frac_over_0_7": 0.97}
    ais = {"num_data": 1000, "rows": [{"log_likelihood": -89.50, "log_likelihood_se": 0.01, "num_temperatures": 400}]}
    assert not agrees(dict(whole, ais=ais))                          # the wrong pairing: 0.86 nats apart
    paired = dict(whole, ais=dict(ais, is_same_images={"log_likelihood": -89.52, "log_likelihood_se": 0.005}),
                  bdmc={"rows": [{"gap": 0.08, "num_temperatures": 400}]})
    assert agrees(paired) and abs(ais_minus_is(paired) - 0.02) < 1e-9
    assert agreement_verdict(paired) == "✓ IS = AIS on 1,000 images (Δ 0.02; BDMC gap 0.08)"
    assert _ais_nll(paired) == "89.52 ± 0.005 / 89.50 ± 0.010 (T 400)"
    # AIS of every image the run scored (a GPU's run of all 10,000): no subset to name
    everything = dict(whole, num_data=10000, ais=dict(ais, num_data=10000, is_same_images=dict(whole, num_data=10000),
                                                      rows=[dict(ais["rows"][0], log_likelihood=-88.62)]),
                      bdmc=paired["bdmc"])
    assert agreement_verdict(everything) == "✓ IS = AIS (Δ 0.02; BDMC gap 0.08)"


def _ais_run(ais_ll, ais_se, is_ll, gap=None, flagged=None, t_ais=100, t_bdmc=100):
    row = {"num_temperatures": t_ais, "log_likelihood": ais_ll, "log_likelihood_se": ais_se}
    if flagged is not None:
        row["frac_flagged"] = flagged
    run = {"log_likelihood": is_ll, "log_likelihood_se": 0.05, "num_data": 100, "ais": {"rows": [row]}}
    if gap is not None:
        run["bdmc"] = {"rows": [{"num_temperatures": t_bdmc, "gap": gap}]}
    return run


@pytest.mark.parametrize("run,verdict", [
    (_ais_run(-88.0, 0.01, -90.0, gap=0.1, flagged=0.0), "✓ AIS 88.00 ± 0.01, replicas agree on 100%; BDMC gap 0.10; IS "
                                                          "2.00 short"),
    (_ais_run(-90.0, 0.01, -90.02, gap=0.1), "✓ IS = AIS (Δ 0.02; BDMC gap 0.10)"),
    # found by review: each was ✓, or a traceback
    (_ais_run(-90.0, 0.01, -90.02, gap=32.2, flagged=1.0), "⚠ IS = AIS (Δ 0.02), but BDMC gap 32.20 outside ±0.5"),
    (_ais_run(-90.0, 0.01, -90.02), "⚠ IS = AIS (Δ 0.02), but no BDMC gap bounds AIS"),
    (_ais_run(-90.0, 10.0, -115.0), "⚠ IS and AIS within their errors (Δ +25.00); no BDMC gap bounds AIS"),
    # errors too wide to tell agreement from disagreement (review: called a disagreement, 'AIS lower: its chains fall
    # short', and the run ranked unreliable); with BDMC and replicas bounding AIS, AIS's figure is the one to use
    (_ais_run(-90.05, 0.2, -90.0, gap=0.1, flagged=0.0), "✓ AIS 90.05 ± 0.20, replicas agree on 100%; BDMC gap 0.10; "
                                                         "IS within their errors"),
    (_ais_run(-89.95, 0.2, -90.0, gap=0.1), "✓ AIS 89.95 ± 0.20; BDMC gap 0.10; IS within their errors"),
    # the BDMC row that bounds AIS is the one at the most temperatures not above AIS's (review: the largest T's)
    ({**_ais_run(-88.0, 0.01, -90.0, flagged=0.0, t_ais=50), "bdmc": {"rows": [{"num_temperatures": 50, "gap": 0.2},
                                                                             {"num_temperatures": 100, "gap": 0.1}]}},
     "✓ AIS 88.00 ± 0.01, replicas agree on 100%; BDMC gap 0.20; IS 2.00 short"),
    (_ais_run(-88.0, 0.01, -90.0, gap=-30.0, flagged=0.0), "⚠ IS lower by 2.00; BDMC gap -30.00 outside ±0.5"),
    (_ais_run(-88.0, 0.01, -90.0, gap=float("nan")), "⚠ IS lower by 2.00; no BDMC gap bounds AIS"),
    (_ais_run(-88.0, 0.01, -90.0, gap=0.1, flagged=float("nan")), "⚠ IS lower by 2.00; the replicas' agreement is "
                                                                  "not a number"),
    (_ais_run(-88.0, 0.01, -90.0, gap=0.1, flagged=0.0, t_ais=5, t_bdmc=1000),
     "⚠ IS lower by 2.00; AIS ran at T = 5, below the T = 1000 of BDMC's gap"),
    (_ais_run(-88.0, float("nan"), -90.0, gap=0.1, flagged=0.0), "–")])
def test_the_verdict_names_a_figure_only_where_bdmc_at_its_temperatures_and_the_replicas_bound_it(run, verdict):
    """Two stochastic lower bounds that agree can both miss a mode (AIS and IS from the same guide), and an
    agreement within three standard errors of 10 nats is none: ✓ needs BDMC's gap within ±0.5 nats at no more
    temperatures than AIS ran, and replicas that agree; a non-finite figure is not a figure."""
    assert reliability.agreement_verdict(run) == verdict


def test_errors_too_wide_to_tell_leave_the_reliability_cell_to_k_hat():
    """Review: IS at k-hat 0% beside AIS ± 0.20 within 0.05 nats read as a disagreement and the run was marked
    '⚠ unreliable' and ranked last; too wide to tell is k-hat's call, as without AIS."""
    run = {**_ais_run(-90.05, 0.2, -90.0, gap=0.1), "psis_khat_frac_over_0_7": 0.0}
    assert reliability.agrees(run) is None and not reliability.is_unreliable(run)
    assert reliability.reliability_cell(run) == "0.0%"


def _with_samplers(ais: dict, bdmc: dict) -> dict:
    run = _ais_run(-88.0, 0.01, -90.0, gap=0.1, flagged=0.0)
    run["ais"].update(ais)
    run["bdmc"]["settings"] = {"num_temperatures": [100], **bdmc}
    return run


SAME = {"num_chains": 8, "leapfrog_steps": 5, "path": "guide", "schedule": "sigmoid", "precondition": "transport"}


@pytest.mark.parametrize("ais,bdmc,reason", [
    (SAME, SAME, None),
    # fewer chains or leapfrog steps in BDMC than in AIS: a wider gap, still a bound (the headline rows: 4 against 8)
    (SAME, {**SAME, "num_chains": 4, "leapfrog_steps": 2}, None),
    # results written before the preconditioner had names recorded a flag
    ({**SAME, "precondition": None}, {**SAME, "precondition": True}, None),
    ({**SAME, "precondition": False}, {**SAME, "precondition": "transport"},
     "BDMC's gap was measured with preconditioner 'transport', AIS ran 'none'"),
    (SAME, {**SAME, "num_chains": 64}, "AIS ran 8 chains, fewer than the 64 of BDMC's gap"),
    (SAME, {**SAME, "leapfrog_steps": 20}, "AIS ran 5 leapfrog steps, fewer than the 20 of BDMC's gap"),
    (SAME, {**SAME, "path": "prior"}, "BDMC's gap was measured with start 'prior', AIS ran 'guide'"),
    (SAME, {**SAME, "schedule": "linear"}, "BDMC's gap was measured with schedule 'linear', AIS ran 'sigmoid'"),
    # settings read from files are untrusted: a field that is not a number (or a name) is a reason, not skipped
    ({**SAME, "num_chains": "many"}, SAME, "AIS's chains is not a number"),
    (SAME, {**SAME, "leapfrog_steps": float("nan")}, "BDMC's leapfrog steps is not a number"),
    (SAME, {**SAME, "path": ["guide"]}, "BDMC's start is not a name"),
    # review: an integer too large for a float (JSON holds one) raised OverflowError; a count AIS does not record
    # could be anything, so BDMC's gap at that count bounds nothing
    (SAME, {**SAME, "leapfrog_steps": 10 ** 400}, "BDMC's leapfrog steps is not a number"),
    ({k: v for k, v in SAME.items() if k != "num_chains"}, SAME,
     "AIS's chains are not recorded, so no BDMC gap is known to bound it"),
    (SAME, {**SAME, "local_moves": True}, None),
    ({**SAME, "local_moves": False}, {**SAME, "local_moves": True},
     "BDMC's gap was measured with local discrete moves True, AIS ran False"),
    (SAME, {**SAME, "local_moves": "yes"}, "BDMC's local discrete moves is not true or false"),
    # guide moves are written only where switched on: BDMC with them bounds only an AIS with them; AIS with them and
    # BDMC without is a weaker BDMC, a wider gap, still a bound
    ({**SAME, "guide_moves": True}, SAME, None),
    ({**SAME, "guide_moves": True}, {**SAME, "guide_moves": True}, None),
    (SAME, {**SAME, "guide_moves": True}, "BDMC's gap was measured with guide moves, which AIS ran without"),
    (SAME, {**SAME, "guide_moves": "on"}, "BDMC's guide moves is not true or false")])
def test_a_bdmc_gap_bounds_ais_only_when_its_sampler_is_no_stronger(ais, bdmc, reason):
    """Review: BDMC's chains, leapfrog steps and start were never compared with AIS's, so a gap measured with 64
    chains and 20 leapfrog steps vouched for AIS run with 8 and 5. A gap shrinks as each grows, and another start,
    schedule or preconditioner is another sampler."""
    assert trust.bdmc_stronger(ais, bdmc) == reason
    verdict = reliability.agreement_verdict(_with_samplers(ais, bdmc))
    assert verdict.startswith("✓") if reason is None else verdict == f"⚠ IS lower by 2.00; {reason}"


@pytest.mark.parametrize("share", [float("nan"), 10 ** 400])
def test_a_k_hat_share_that_is_not_a_number_is_not_called_reliable(share):
    """Review: a NaN share (or an integer too large for a float, read as NaN) compared False with the limit, so the
    run lost its warning and ranked among the reliable ones."""
    run = {"psis_khat_frac_over_0_7": share, "log_likelihood": -90.0, "num_data": 10}
    assert reliability.is_unreliable(run)
    assert reliability.reliability_cell(run) == "not a number ⚠ unreliable"
