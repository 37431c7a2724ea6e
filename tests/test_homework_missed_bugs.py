"""Student bugs the checks used to miss (issue 42), each a textual edit of a reference solution.

``log(sigmoid(l))`` computed naively is ``log(0) = -inf`` at large logits, where ``Bernoulli(logits=l)``
(a softplus) is finite: it used to get full marks in both assignments that compute it.
"""
import json
from pathlib import Path

import pytest

from zoo.cli import main

SOLUTIONS = Path(__file__).resolve().parents[1] / "zoo" / "homework" / "solutions"

MUTANTS = {
    "bernoulli_vae": ("reconstruction_unbiased", "    log_px = dist.Bernoulli(logits=decoder(z)).log_prob(x).sum(-1)    # [S, B]\n",
                      "    p = torch.sigmoid(decoder(z))\n    log_px = (x * torch.log(p) + (1 - x) * torch.log(1 - p)).sum(-1)\n"),
    "discrete_estimators": ("log_q", "    return Bernoulli(logits=logits, validate_args=False).log_prob(z).sum(-1)\n",
                            "    p = torch.sigmoid(logits)\n    return (z * torch.log(p) + (1 - z) * torch.log(1 - p)).sum(-1)\n"),
}


@pytest.mark.parametrize("assignment", sorted(MUTANTS))
@pytest.mark.slow
def test_naive_log_sigmoid_fails_at_large_logits(tmp_path, capsys, assignment):
    check, old, new = MUTANTS[assignment]
    source = (SOLUTIONS / f"{assignment}.py").read_text()
    assert old in source
    scores = {}
    for name, text in (("reference", source), ("naive", source.replace(old, new))):
        (tmp_path / f"{name}.py").write_text(text)
        out = tmp_path / f"{name}.json"
        assert main(["grade", assignment, str(tmp_path / f"{name}.py"), "--only", check, "--json", str(out)]) == 0
        capsys.readouterr()
        scores[name] = json.loads(out.read_text())["checks"][0]
    assert scores["reference"]["passed"], scores["reference"]
    assert not scores["naive"]["passed"] and "1e3" in scores["naive"]["message"], scores["naive"]


#: Student bugs a Monte Carlo check let through with full marks: (assignment, the check that must catch it, the
#: reference's text, the bug's text). Each is graded alone on that check against the reference.
PARTICLE_BUGS = {
    # b_s = 1/S sum_{j != s} f(z_j): still unbiased, but at S = 2 the baseline is half of f(z_j), and the variance
    # is far from a leave-one-out's
    "loo_divided_by_S": ("discrete_estimators", "reinforce_loo_unbiased",
                         "baseline = (fz.sum(0, keepdim=True) - fz) / (num_particles - 1)",
                         "baseline = (fz.sum(0, keepdim=True) - fz) / num_particles"),
    # leaving out the other data of the same particle, not the other particles
    "loo_over_the_data": ("discrete_estimators", "reinforce_loo_unbiased",
                          "baseline = (fz.sum(0, keepdim=True) - fz) / (num_particles - 1)",
                          "baseline = (fz.sum(1, keepdim=True) - fz) / (fz.shape[1] - 1)"),
    # one particle, whatever num_particles says: unbiased, S times the variance
    "reinforce_ignores_num_particles": ("discrete_estimators", "reinforce_unbiased",
                                        "    z = torch.bernoulli(torch.sigmoid(logits.detach()).expand(num_particles, "
                                        "*logits.shape))\n    fz = f(z)\n    return (fz.detach()",
                                        "    z = torch.bernoulli(torch.sigmoid(logits.detach()).expand(1, "
                                        "*logits.shape))\n    fz = f(z)\n    return (fz.detach()"),
    # S copies of one particle
    "reinforce_identical_particles": ("discrete_estimators", "reinforce_unbiased",
                                      "    z = torch.bernoulli(torch.sigmoid(logits.detach()).expand(num_particles, "
                                      "*logits.shape))\n    fz = f(z)\n    return (fz.detach()",
                                      "    z = torch.bernoulli(torch.sigmoid(logits.detach())).expand(num_particles, "
                                      "*logits.shape)\n    fz = f(z)\n    return (fz.detach()"),
    # the exact gradient by enumeration, times (1 + noise): unbiased, its variance does not shrink as 1/S, and on a
    # problem of 60 latents there are 2^60 configurations to enumerate
    "reinforce_by_enumeration": ("discrete_estimators", "reinforce_unbiased",
                                 "def reinforce(logits, f, num_particles):\n",
                                 "def reinforce(logits, f, num_particles):\n"
                                 "    K = logits.shape[-1]\n"
                                 "    z = torch.cartesian_prod(*[torch.tensor([0.0, 1.0])] * K).reshape(-1, 1, K)\n"
                                 "    elbo = (log_q(logits, z).exp() * f(z.expand(-1, *logits.shape))).sum()\n"
                                 "    return elbo * (1 + 2 * torch.randn(()))\n\n\n"
                                 "def reinforce_by_sampling(logits, f, num_particles):\n"),
    # u clamped to [0.01, 0.99]: the Gumbel noise lies in [-1.53, 4.6]; its tails are gone
    "gumbel_uniform_clamped": ("discrete_estimators", "gumbel_softmax_distribution",
                               "clamp(1e-10, 1.0 - 1e-7)", "clamp(1e-2, 1.0 - 1e-2)"),
    # the ELBO from one particle whatever num_particles says
    "elbo_ignores_num_particles": ("bernoulli_vae", "elbo_lower_bound",
                                   "return reconstruction(decoder, encoder, x, num_particles) - kl_normal",
                                   "return reconstruction(decoder, encoder, x, 1) - kl_normal"),
    # the answer another way: the reconstruction from 50 times the particles asked for, nearly exact; its
    # variance is a fiftieth of a 200-particle Monte Carlo estimate's
    "elbo_from_more_particles": ("bernoulli_vae", "elbo_lower_bound",
                                 "return reconstruction(decoder, encoder, x, num_particles) - kl_normal",
                                 "return reconstruction(decoder, encoder, x, 50 * num_particles) - kl_normal"),
    # S copies of one reparameterized sample
    "reconstruction_identical_particles": ("bernoulli_vae", "reconstruction_unbiased",
                                           "z = q.rsample((num_particles,))",
                                           "z = q.rsample().expand(num_particles, *mu.shape)"),
}


@pytest.mark.parametrize("bug", sorted(PARTICLE_BUGS))
@pytest.mark.slow
def test_a_monte_carlo_bug_loses_the_check_that_certifies_the_estimator(tmp_path, capsys, bug):
    """The reference keeps the check, the bug loses it (at two seeds: a lucky draw does not save it)."""
    assignment, check, old, new = PARTICLE_BUGS[bug]
    source = (SOLUTIONS / f"{assignment}.py").read_text()
    assert source.count(old) == 1, old
    results = {}
    for name, text in (("reference", source), (bug, source.replace(old, new))):
        (tmp_path / f"{name}.py").write_text(text)
        for seed in ("1", "2"):
            out = tmp_path / f"{name}-{seed}.json"
            assert main(["grade", assignment, str(tmp_path / f"{name}.py"), "--only", check, "--seed", seed,
                         "--json", str(out)]) == 0
            capsys.readouterr()
            results[name, seed] = json.loads(out.read_text())["checks"][0]
    assert all(results["reference", seed]["passed"] for seed in ("1", "2")), results
    assert not any(results[bug, seed]["passed"] for seed in ("1", "2")), results


#: train_svi without the algorithm (issue 80, item 7): no SVI step, the closed-form fit and the exact posterior written
#: into Pyro's param store. The SVI checks looked only at the end state, so it scored them in full.
_WRITE_THE_ANSWER = '''    pyro.clear_param_store()
    W, mu, sigma2 = ml_solution(x, latent_dim)
    mean, cov = posterior(x, W, mu, sigma2)
    pyro.param("W", W)
    pyro.param("mu", mu)
    pyro.param("log_sigma", 0.5 * torch.log(sigma2))
    if guide is exact_guide:
        pyro.param("m", mean)
    else:
        A = torch.linalg.solve(W.T @ W + sigma2 * torch.eye(latent_dim), W.T)
        pyro.param("A", A)
        pyro.param("b", -mu @ A.T)
    pyro.param("L", torch.linalg.cholesky(cov), constraint=constraints.lower_cholesky)
    return W, mu, sigma2
'''
SVI_WITHOUT_SVI = {
    "no_step": _WRITE_THE_ANSWER + "    pyro.clear_param_store()\n",
    # a short real run (the loop's loss still far from the maximum), then the answer written over its end
    "short_run_then_the_answer": "    num_steps = 120\n",
}


@pytest.mark.parametrize("cheat", sorted(SVI_WITHOUT_SVI))
def test_svi_checks_ask_for_the_path_not_only_the_end_state(tmp_path, cheat):
    """The ELBO of the state train_svi left is within 0.5 nats/datum of the maximum for both cheats; the path of its
    own SVI steps is not: no step at all, or a loss that ended far above the state it left."""
    from zoo.homework import get_assignment
    from zoo.homework.in_process import grade_in_process, load_file
    from zoo.homework.kit import solution_path

    path = solution_path(get_assignment("ppca_three_ways"))
    source = path.read_text()
    head = "    pyro.clear_param_store()\n    N = x.shape[0]\n"
    assert source.count(head) == 1
    if cheat == "no_step":
        text = source.replace(head, SVI_WITHOUT_SVI[cheat] + "    N = x.shape[0]\n")
    else:
        tail = "    W, mu = pyro.param(\"W\").detach(), pyro.param(\"mu\").detach()\n"
        assert source.count(tail) == 1
        text = source.replace(head, SVI_WITHOUT_SVI[cheat] + head).replace(
            "    optim = ClippedAdam({\"lr\": 0.1, ", "    optim = ClippedAdam({\"lr\": 0.003, ").replace(
            tail, _WRITE_THE_ANSWER + tail)
    checks = ["svi_exact_guide", "svi_amortized_guide"]
    reference = grade_in_process("ppca_three_ways", load_file(path), seed=3, only=checks)
    assert all(r.passed for r in reference.values()), reference
    (tmp_path / "cheat.py").write_text(text)
    results = grade_in_process("ppca_three_ways", load_file(tmp_path / "cheat.py"), seed=3, only=checks)
    for name, r in results.items():
        assert not r.passed and "\n" not in r.message, (name, r)
        assert ("SVI steps" in r.message) if cheat == "no_step" else ("not where its SVI got" in r.message), r.message


#: Bugs a Monte Carlo check caught only at some seeds (issue 80): (assignment, check, the reference's text, the
#: bug's text). Graded in process at 8 seeds, each must fail every time, and the reference pass every time.
SOMETIMES_CAUGHT = {
    # the scale of the reparameterized sample detached: the log sigma head's expected gradient is 0; the 11 random
    # directions of the mean test saw that bias at about 6.8 standard errors with a threshold of 4.9 (11 of 20 seeds)
    "reparameterized_scale_detached": (
        "bernoulli_vae", "reconstruction_unbiased", "    z = q.rsample((num_particles,))",
        "    z = mu + log_sigma.exp().detach() * torch.randn((num_particles, *mu.shape), dtype=mu.dtype)"),
    # REINFORCE with 4 S particles for the leave-one-out estimator: its total variance ratio is 4, within 15% of the
    # leave-one-out baseline's exact ratio at some problems (2.9 to 9.4), not coordinate by coordinate
    "loo_is_reinforce_with_4x_particles": (
        "discrete_estimators", "variance_order",
        "    z = torch.bernoulli(torch.sigmoid(logits.detach()).expand(num_particles, *logits.shape))\n    fz = f(z)\n"
        "    baseline",
        "    return reinforce(logits, f, 4 * num_particles)\n"
        "    z = torch.bernoulli(torch.sigmoid(logits.detach()).expand(num_particles, *logits.shape))\n    fz = f(z)\n"
        "    baseline"),
}


#: the bugs whose check takes longest (9-17 s on the 2-core AMD EPYC, benchmarks/suite_time.py's machine): CI's slow step
SLOWEST_TO_CATCH = ("loo_is_reinforce_with_4x_particles", "reparameterized_scale_detached")


@pytest.mark.parametrize("bug", [pytest.param(b, marks=pytest.mark.slow) if b in SLOWEST_TO_CATCH else b
                                 for b in sorted(SOMETIMES_CAUGHT)])
def test_a_bug_caught_at_some_seeds_is_caught_at_every_seed(tmp_path, bug):
    from zoo.homework import get_assignment
    from zoo.homework.in_process import grade_in_process, load_file
    from zoo.homework.kit import solution_path

    assignment, check, old, new = SOMETIMES_CAUGHT[bug]
    path = solution_path(get_assignment(assignment))
    source = path.read_text()
    assert source.count(old) == 1
    (tmp_path / "bug.py").write_text(source.replace(old, new))
    reference, wrong = load_file(path, f"reference_{bug}"), load_file(tmp_path / "bug.py", f"bug_{bug}")
    for seed in range(8):
        assert grade_in_process(assignment, reference, seed=seed, only=[check])[check].passed, seed
        result = grade_in_process(assignment, wrong, seed=seed, only=[check])[check]
        assert not result.passed and "\n" not in result.message, (seed, result)
