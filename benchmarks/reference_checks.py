"""Independent computations the zoo's figures on two reference models are checked against.

Written by hand from the models' equations, sharing no code with the zoo's harness or objectives
(only torch's densities), so a wrong harness or objective shows as a mismatch:

GMM (benchmarks/pyro_models/gmm.py), given theta = (w, s, mu) the K assignments are summed exactly::

    log p(x_n | theta) = logsumexp_k [ log w_k + log N(x_n; mu_k, s^2 I) ]

Bayesian regression (benchmarks/pyro_models/bayesian_regression.py), with F_1 = [F, 1] and
Sigma_0 = diag(1, ..., 1, 10^2) the prior covariance of beta = (w, b)::

    log p(y | F, sigma)        = log N(y; 0, sigma^2 I + F_1 Sigma_0 F_1^T)                 (evidence)
    p(beta | y, F, sigma)      = N(m, A^-1),  A = Sigma_0^-1 + F_1^T F_1 / sigma^2,  m = A^-1 F_1^T y / sigma^2
    ELBO(q)                    = evidence - KL(q || p(beta | y, F, sigma))                   (any q)
    log p(y_n | f_n, beta_hat) = log N(y_n; f_n . w_hat + b_hat, sigma^2)

For a Gaussian q = N(mu_q, diag(s_q^2)) the KL is closed form, so the data-set ELBO the harness
estimates by Monte Carlo has an exact value to meet.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Dict, Tuple

import torch
from torch.distributions import MultivariateNormal, Normal

__all__ = ["gmm_log_likelihood", "regression_evidence", "regression_posterior", "kl_diagonal_to_full",
           "regression_log_likelihood", "regression_elbo_draws", "trained_run", "regression_check", "gmm_check"]


def gmm_log_likelihood(x: torch.Tensor, weights: torch.Tensor, scale: torch.Tensor, locs: torch.Tensor) -> torch.Tensor:
    """log p(x_n | weights, scale, locs) per datum, the K assignments summed by hand: ``[n]``."""
    x, weights, scale, locs = (t.double() for t in (x, weights, scale, locs))
    log_component = Normal(locs.unsqueeze(0), scale).log_prob(x.unsqueeze(1)).sum(-1)      # [n, K]
    return torch.logsumexp(weights.log() + log_component, dim=-1)


def _design(x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """F_1 = [features, 1], y = the last column, and the prior covariance diag(1, ..., 1, 10^2)."""
    x = x.double()
    f1 = torch.cat([x[:, :-1], torch.ones(x.shape[0], 1, dtype=x.dtype)], dim=1)
    prior_var = torch.ones(f1.shape[1], dtype=x.dtype)
    prior_var[-1] = 10.0 ** 2
    return f1, x[:, -1], prior_var


def regression_evidence(x: torch.Tensor, sigma: float) -> float:
    """log N(y; 0, sigma^2 I + F_1 Sigma_0 F_1^T) for the whole data set ``x`` (features, then y)."""
    f1, y, prior_var = _design(x)
    cov = sigma ** 2 * torch.eye(y.shape[0], dtype=y.dtype) + (f1 * prior_var) @ f1.T
    return MultivariateNormal(torch.zeros_like(y), covariance_matrix=cov).log_prob(y).item()


def regression_posterior(x: torch.Tensor, sigma: float) -> Tuple[torch.Tensor, torch.Tensor]:
    """The exact posterior of beta = (w, b) given the data set and sigma: mean m and covariance A^-1."""
    f1, y, prior_var = _design(x)
    precision = torch.diag(1.0 / prior_var) + f1.T @ f1 / sigma ** 2
    cov = torch.linalg.inv(precision)
    return cov @ f1.T @ y / sigma ** 2, cov


def kl_diagonal_to_full(mean_q: torch.Tensor, scale_q: torch.Tensor, mean_p: torch.Tensor, cov_p: torch.Tensor) -> float:
    """KL(N(mean_q, diag(scale_q^2)) || N(mean_p, cov_p)) in closed form."""
    mean_q, scale_q = mean_q.double(), scale_q.double()
    precision_p = torch.linalg.inv(cov_p)
    diff = mean_p - mean_q
    d = mean_q.shape[0]
    return 0.5 * ((precision_p.diagonal() * scale_q ** 2).sum() + diff @ precision_p @ diff - d
                  + torch.logdet(cov_p) - (scale_q ** 2).log().sum()).item()


def regression_log_likelihood(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, sigma: float) -> torch.Tensor:
    """log N(y_n; f_n . w + b, sigma^2) per datum: ``[n]``."""
    x = x.double()
    return Normal(x[:, :-1] @ weight.double() + bias.double(), sigma).log_prob(x[:, -1])


def regression_elbo_draws(x: torch.Tensor, mean_q: torch.Tensor, scale_q: torch.Tensor, sigma: float,
                          draws: int = 4000, seed: int = 0) -> torch.Tensor:
    """Single-draw ELBO estimates log p(y, beta) - log q(beta), beta ~ q, of the whole data set: their
    spread is the Monte Carlo error of an ELBO estimated from a few draws of beta."""
    f1, y, prior_var = _design(x)
    g = torch.Generator().manual_seed(seed)
    beta = mean_q.double() + scale_q.double() * torch.randn(draws, mean_q.shape[0], generator=g, dtype=torch.float64)
    log_lik = Normal(beta @ f1.T, sigma).log_prob(y).sum(-1)
    log_prior = Normal(0.0, prior_var.sqrt()).log_prob(beta).sum(-1)
    log_q = Normal(mean_q.double(), scale_q.double()).log_prob(beta).sum(-1)
    return log_lik + log_prior - log_q


def trained_run(folder: Path, model_file: str):
    """The trained model and guide of a run folder and the data the harness scored (the split's fixed
    subset), rebuilt as ``pyro-zoo evaluate`` rebuilds them."""
    from zoo.experiments.trained import open_trained
    run = open_trained(Path(folder), model_file=model_file)
    x_eval, _ = run.evaluation_data()
    return run.model, run.guide, x_eval


def _sigma(model) -> float:
    """The trained noise scale sigma, the model's ``pyro.param("sigma")`` (positive: exp of the stored value)."""
    (key,) = [k for k in model.params if k.endswith("sigma")]
    return torch.exp(model.params[key].detach()).item()


def regression_check(model, guide, x: torch.Tensor, result: Dict) -> Dict:
    """The harness's figures on the regression against the closed forms above (nats; totals over the data)."""
    theta = guide.globals.point_estimate()
    sigma = _sigma(model)
    n = x.shape[0]
    evidence = regression_evidence(x, sigma)
    by_hand = regression_log_likelihood(x, theta["weight"], theta["bias"], sigma).mean().item()
    check = {"num_data": n, "sigma": sigma, "evidence": evidence, "data_elbo_total": result["data_elbo"] * n,
             "log_likelihood_by_hand": by_hand, "log_likelihood_harness": result["log_likelihood"],
             "log_likelihood_difference": result["log_likelihood"] - by_hand,
             "bound_holds": result["data_elbo"] * n <= evidence}
    if guide.globals.kind == "delta":          # the MAP objective log p(y | theta_hat) + log p(theta_hat)
        log_prior = (Normal(0.0, 1.0).log_prob(theta["weight"].double()).sum()
                     + Normal(0.0, 10.0).log_prob(theta["bias"].double())).item()
        map_objective = by_hand * n + log_prior
        check.update(map_objective_by_hand=map_objective, map_difference=result["data_elbo"] * n - map_objective)
    if guide.globals.kind == "normal":
        import torch.nn.functional as F
        mean_q = torch.cat([guide.globals.loc["weight"].detach(), guide.globals.loc["bias"].detach().reshape(1)])
        scale_q = torch.cat([F.softplus(guide.globals.scale[s].detach()).reshape(-1) + 1e-5 for s in ("weight", "bias")])
        mean_p, cov_p = regression_posterior(x, sigma)
        kl = kl_diagonal_to_full(mean_q, scale_q, mean_p, cov_p)
        draws = regression_elbo_draws(x, mean_q, scale_q, sigma)
        samples = result["data_elbo_samples"]
        check.update(kl=kl, elbo_closed_form=evidence - kl, elbo_draws_mean=draws.mean().item(),
                     elbo_mc_se=draws.std().item() / math.sqrt(samples),
                     elbo_difference=result["data_elbo"] * n - (evidence - kl))
    return check


def gmm_check(model, guide, x: torch.Tensor, result: Dict) -> Dict:
    """The harness's log p(x_n | theta_hat) on the GMM against the K assignments summed by hand (per datum)."""
    theta = guide.globals.point_estimate()
    by_hand = gmm_log_likelihood(x, theta["weights"], theta["scale"], theta["locs"]).mean().item()
    return {"num_data": x.shape[0], "log_likelihood_by_hand": by_hand,
            "log_likelihood_harness": result["log_likelihood"], "log_likelihood_se": result["log_likelihood_se"],
            "exact_log_likelihood_harness": result["exact_log_likelihood"],
            "log_likelihood_difference": result["log_likelihood"] - by_hand}
