"""Bidirectional Monte Carlo (BDMC): log p(x) bounded from both sides, on data simulated from the model.

On a datum simulated from the model, (x, z) ~ p(x, z), the simulated z is an exact sample of the posterior
p(z | x). Annealed importance sampling run forward from pi_0 to the posterior (:mod:`zoo.evaluation.ais`)
gives w with E[w] = p(x); run in reverse, from that exact posterior sample back to pi_0 through the same
kernels, it gives w_r with E[w_r] = 1 / p(x) (Grosse, Ghahramani & Adams 2015). By Jensen's inequality::

    E[log (1/C) sum_c w_c]  <=  log p(x)  <=  E[-log (1/C) sum_c w_r,c]

so forward AIS is a stochastic lower bound and reverse AIS a stochastic upper bound, and the gap between
them bounds the error of both. The gap shrinks as the number of temperatures T grows; the T at which it is
small (below a nat on a decoder model, Wu et al. 2017) is the T to trust AIS with on real data, where no
exact posterior sample exists. The C reverse chains of a datum all start from its one exact sample: each
is an unbiased estimate of 1 / p(x), and their mean too, but they are not independent, so the upper bound's
standard error from their spread is a rough one.

Global latents are held at the guide's point estimate theta_hat, while simulating and while annealing, so
both bounds are of log p(x | theta_hat).

References: R. Grosse, Z. Ghahramani and R. P. Adams, "Sandwiching the marginal likelihood using
bidirectional Monte Carlo", https://arxiv.org/abs/1511.02543, 2015. R. Grosse, S. Ancha and D. Roy,
"Measuring the reliability of MCMC inference with bidirectional Monte Carlo", NeurIPS 2016.
Y. Wu, Y. Burda, R. Salakhutdinov and R. Grosse, "On the quantitative analysis of decoder-based generative
models", ICLR 2017.

Example::

    >>> import torch, zoo
    >>> from zoo.evaluation.bdmc import bidirectional_monte_carlo
    >>> from zoo.evaluation.ais import AnnealedImportanceSampling
    >>> model = zoo.build_model("ppca", 4, latent_dim=2)
    >>> guide = zoo.build_guide("amortized", model, hidden=(8,))
    >>> rows = bidirectional_monte_carlo(model, guide, AnnealedImportanceSampling(num_chains=4), num_data=5,
    ...                                  temperatures=(10, 20))
    >>> [row["num_temperatures"] for row in rows], rows[0]["gap"] >= 0 or rows[0]["gap"] < 0
    ([10, 20], True)
"""
from __future__ import annotations

import contextlib
import dataclasses
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import pyro.poutine as poutine
import torch

from zoo.core.errors import ZooError
from zoo.core.memory import refuse_oversized_annealing
from zoo.core.modes import held_fixed
from zoo.core.weights import dreamt_data
from zoo.evaluation.ais import (AnnealedImportanceSampling, _Chains, annealing_start, coordinates_text,
                                log_mean_exp_and_se)
from zoo.rules import check_annealing

__all__ = ["simulate", "bounds", "bidirectional_monte_carlo", "bdmc_markdown"]


def simulate(model, num_data: int) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
    """(x ``[n, D]``, z ``{site: [n, *event]}``): n draws of (x, z) ~ p(x, z) from the model's generative
    run ``model(None, N=n)``, z an exact posterior sample for its x."""
    trace = poutine.trace(model).get_trace(None, N=num_data)
    x, _ = dreamt_data(trace)
    return x.detach(), {s.name: trace.nodes[s.name]["value"].detach() for s in model.latents}


def bounds(ais: AnnealedImportanceSampling, model, guide, x, z, progress=None) -> Dict[str, torch.Tensor]:
    """Per datum: forward AIS's lower bound and reverse AIS's upper bound, each with its chains' SE."""
    n, betas = x.shape[0], ais.betas
    out = {k: [] for k in ("lower", "lower_se", "upper", "upper_se")}
    for start in range(0, n, ais.batch_size):
        idx = torch.arange(start, min(start + ais.batch_size, n), device=x.device)
        xb = x[idx]
        step_sizes = ais.pilot(model, guide, xb, idx, n)
        chains = _Chains(model, guide, xb, idx, n, ais.num_chains, ais.path, ais.gibbs_max_states, ais.precondition,
                         ais.guide_moves)
        log_w, _, _ = ais.anneal(chains, chains.draw_initial(), betas, step_sizes)
        lower, lower_se, _ = log_mean_exp_and_se(log_w)
        exact = {name: v[idx].unsqueeze(0).expand(ais.num_chains, *v[idx].shape) for name, v in z.items()}
        log_w_reverse, _, _ = ais.anneal(chains, exact, betas.flip(0), step_sizes)
        # log w_r = -sum_t (beta_t - beta_{t-1}) g estimates 1 / p(x): the bound is -log mean w_r
        neg_upper, upper_se, _ = log_mean_exp_and_se(log_w_reverse)
        for key, value in (("lower", lower), ("lower_se", lower_se), ("upper", -neg_upper), ("upper_se", upper_se)):
            out[key].append(value.cpu())
        if progress is not None:
            progress(int(idx[-1]) + 1)
    return {k: torch.cat(v) for k, v in out.items()}


def bidirectional_monte_carlo(model, guide, ais: AnnealedImportanceSampling, num_data: int = 100,
                              temperatures: Sequence[int] = (100, 200, 400), seed: int = 0,
                              progress: Optional[Callable[[str], None]] = None) -> List[Dict]:
    """BDMC on ``num_data`` data simulated from ``model`` (module docstring), once for each number of
    temperatures in ``temperatures`` (the same simulated data, the other settings of ``ais``). Returns one row
    per T: the mean lower and upper bound in nats per datum, their standard errors, the gap and the largest
    gap of a datum, and the per-datum arrays under ``"per_datum"``."""
    from guides.user import as_zoo_guide
    if isinstance(num_data, bool) or not isinstance(num_data, int) or num_data < 1:
        raise ZooError(f"BDMC needs a whole number >= 1 of simulated data, got {num_data!r}")
    temperatures = [int(t) for t in temperatures]
    if not temperatures or min(temperatures) < 1:
        raise ZooError("BDMC needs one or more numbers of temperatures, each >= 1")
    guide = as_zoo_guide(guide, model)
    check_annealing(model, "BDMC", guide, ais.path, ais.guide_moves)
    refuse_oversized_annealing(max(temperatures), ais.num_chains, min(ais.batch_size, num_data), model.x_dim,
                               next(model.parameters(), torch.empty(0)).device, simulated=num_data)
    guide, start = annealing_start(guide, ais.path)
    global_guide = getattr(guide, "global_guide", None)
    rows = []
    with held_fixed(model, guide), torch.no_grad():
        held = global_guide.at_point_estimate() if global_guide is not None else contextlib.nullcontext()
        with held:
            torch.manual_seed(seed)
            x, z = simulate(model, num_data)
            transported = ais.transported_sites(model, guide, x, num_data)
            for T in temperatures:
                run = dataclasses.replace(ais, num_temperatures=T)
                b = bounds(run, model, guide, x, z)
                gap = b["upper"] - b["lower"]
                rows.append({"num_temperatures": T, "num_data": num_data, "start": start, "transported": transported,
                             "lower": b["lower"].mean().item(),
                             "lower_se": (b["lower_se"].pow(2).sum().sqrt() / num_data).item(),
                             "upper": b["upper"].mean().item(),
                             "upper_se": (b["upper_se"].pow(2).sum().sqrt() / num_data).item(),
                             "gap": gap.mean().item(), "gap_max": gap.max().item(),
                             "per_datum": {"lower": b["lower"], "upper": b["upper"], "gap": gap}})
                if progress is not None:
                    progress(f"BDMC T={T}: lower {rows[-1]['lower']:.3f}, upper {rows[-1]['upper']:.3f}, "
                             f"gap {rows[-1]['gap']:.3f} nats")
    return rows


def bdmc_markdown(summary: Dict) -> str:
    """The BDMC table of a results file (``bdmc.json``): one row per number of temperatures."""
    lines = [f"BDMC on {summary['num_data']} data simulated from the model ({summary['settings']['num_chains']} "
             f"chains, path {summary['settings']['path']}, {summary['settings']['leapfrog_steps']} leapfrog steps"
             f"{coordinates_text(summary['settings'].get('precondition'), summary['rows'][-1].get('transported'))}): "
             f"forward AIS bounds log p(x) from below, reverse AIS from above.", "",
             "| T | lower (forward AIS) | upper (reverse AIS) | gap | largest gap |", "|---|---|---|---|---|"]
    for row in summary["rows"]:
        lines.append(f"| {row['num_temperatures']} | {row['lower']:.3f} ± {row['lower_se']:.3f} | "
                     f"{row['upper']:.3f} ± {row['upper_se']:.3f} | {row['gap']:.3f} | {row['gap_max']:.3f} |")
    lines += ["", "Nats per datum. The gap bounds the error of both estimates on these data; where it is small, "
              "AIS with that T can be trusted on real data from the same model."]
    return "\n".join(lines) + "\n"

