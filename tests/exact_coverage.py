"""A check shared by the discrete latent families' tests: does the importance-sampled log p(x) cover the exact value
as often as its stated standard error says?"""
import torch

import zoo
from zoo.registry import build_guide


def assert_is_covers_exact_log_px(build_model, hand_log_px, data, seeds=20, num_samples=300):
    """Over ``seeds`` models (``build_model(seed)``, data ``data(seed=seed)``), the IS estimate (amortized guide, K =
    ``num_samples``, the guide itself as proposal) lies within 2 stated standard errors of the exact mean log p(x)
    (``hand_log_px(model, x)``, written out in the test) in at least 80% of them (a 95% interval), with z-scores
    averaging near 0; and the harness's own exact log p(x) (the model's enumeration) is that value."""
    z_scores = []
    for seed in range(seeds):
        model, x = build_model(seed), data(seed=seed)
        guide = build_guide("amortized", model).double()
        truth = hand_log_px(model, x).mean().item()
        torch.manual_seed(100 + seed)
        result = zoo.evaluate(model, guide, x, num_samples=num_samples, iwae_k=5, psis=False, proposal="guide")
        assert abs(result["exact_log_likelihood"] - truth) < 1e-8
        z_scores.append((result["log_likelihood"] - truth) / result["log_likelihood_se"])
    z = torch.tensor(z_scores)
    assert (z.abs() < 2).float().mean() >= 0.8 and abs(z.mean().item()) < 0.8, z
