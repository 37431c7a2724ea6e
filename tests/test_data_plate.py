"""The data plate (:class:`zoo.core.plates.DataPlate`): Pyro's ``pyro.plate`` with two steps skipped where they change
nothing. Every check here compares it with ``pyro.plate`` itself."""
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine

from zoo.core.plates import DataPlate, data_plate
from zoo.objectives.lean import LeanTrace_ELBO
from zoo.registry import build_guide, build_model


def _program(plate_fn, prior_batch=(), inner=False):
    """A model with a latent of the plate's shape, one to broadcast, a nested plate and an observation."""
    def program(x, idx, N):
        loc = torch.zeros(prior_batch + (2,))
        with plate_fn(x, idx, N):
            a = pyro.sample("a", dist.Normal(torch.zeros(x.shape[0], 2), 1.0).to_event(1))     # [B]: kept
            b = pyro.sample("b", dist.Normal(loc, 1.0).to_event(1))                           # []: broadcast
            if inner:
                with pyro.plate("pixels", x.shape[1], dim=-2):
                    pyro.sample("c", dist.Normal(0.0, 1.0).expand([x.shape[1], 1]))
            pyro.sample("x", dist.Normal(a.sum(-1, keepdim=True) + b.sum(-1, keepdim=True), 1.0).to_event(1), obs=x)
    return program


def _pyro_plate(x, idx, N):
    return pyro.plate("data", N, subsample=idx, dim=-1, device=idx.device)


def _sites(trace):
    return {name: (site["type"], tuple(site["cond_indep_stack"]), site["scale"],
                   tuple(getattr(site["fn"], "batch_shape", ())), site["value"].shape)
            for name, site in trace.nodes.items() if site["type"] in ("sample", "param")}


@pytest.mark.parametrize("inner", [False, True])
@pytest.mark.parametrize("particles", [None, 3])
def test_a_traced_data_plate_gives_pyro_plates_sites(inner, particles):
    """Under ``poutine.trace`` (a handler that reads subsample sites), with and without a particle plate outside it
    and a plate nested inside: the same sites, frames, scales, batch shapes and values' shapes as ``pyro.plate``."""
    x, idx = torch.randn(4, 5), torch.tensor([3, 0, 7, 2])
    traces = []
    for plate_fn in (_pyro_plate, data_plate):
        pyro.set_rng_seed(0)
        program = _program(plate_fn, inner=inner)
        if particles:
            program = pyro.plate("particles", particles, dim=-3)(program)
        traces.append(poutine.trace(program).get_trace(x, idx, 10))
    assert list(traces[0].nodes) == list(traces[1].nodes) and "data" in traces[1].nodes
    assert _sites(traces[0]) == _sites(traces[1])
    assert torch.equal(traces[1].nodes["data"]["value"], idx)
    for name in ("a", "b", "x"):
        assert torch.equal(traces[0].nodes[name]["value"], traces[1].nodes[name]["value"])
        assert torch.allclose(traces[0].nodes[name]["fn"].log_prob(traces[0].nodes[name]["value"]),
                              traces[1].nodes[name]["fn"].log_prob(traces[1].nodes[name]["value"]))


def test_the_data_plate_keeps_a_site_of_its_shape_and_broadcasts_the_others():
    """A site already of the plate's batch shape keeps its distribution object; one without the plate's dim, or with
    a 1 there, is expanded as Pyro expands it."""
    x, idx = torch.randn(4, 5), torch.tensor([3, 0, 7, 2])
    own, short, ones = (dist.Normal(torch.zeros(4, 2), 1.0).to_event(1), dist.Normal(torch.zeros(2), 1.0).to_event(1),
                        dist.Normal(torch.zeros(1, 2), 1.0).to_event(1))

    def program():
        with data_plate(x, idx, 10):
            for name, fn in (("own", own), ("short", short), ("ones", ones)):
                pyro.sample(name, fn)
    trace = poutine.trace(program).get_trace()
    assert trace.nodes["own"]["fn"] is own
    assert trace.nodes["short"]["fn"] is not short and trace.nodes["short"]["fn"].batch_shape == (4,)
    assert trace.nodes["ones"]["fn"].batch_shape == (4,)
    assert all(trace.nodes[n]["scale"] == 10 / 4 for n in ("own", "short", "ones"))


def test_under_the_lean_pass_alone_the_plate_sends_no_subsample_site():
    """The subsample site is left out only where every handler on the stack ignores such sites (the lean ELBO's
    passes); with any other handler beside them it is sent as ``pyro.plate`` sends it."""
    from zoo.objectives.lean import _Pass
    idx = torch.tensor([1, 2])
    seen = []

    class Spy(pyro.poutine.messenger.Messenger):
        def _pyro_sample(self, msg):
            seen.append(msg["name"])
    with _Pass():
        with Spy():
            with data_plate(torch.zeros(2, 3), idx, 5) as ind:
                pass
    assert seen == ["data"] and torch.equal(ind, idx)
    with _Pass():
        plate = data_plate(torch.zeros(2, 3), idx, 5)
        with plate as ind:
            pass
    assert isinstance(plate, DataPlate) and torch.equal(ind, idx) and plate.subsample_size == 2 and plate.size == 5
    with _Pass():                                           # indices as a list: Pyro's plate takes them as they are
        with data_plate(torch.zeros(2, 3), [1, 3], 5) as ind:
            pass
    assert list(ind) == [1, 3]


@pytest.mark.parametrize("name,guide_name,options", [("vae", "amortized", {"latent_dim": 2, "hidden": 5}),
                                                     ("hvae", "amortized", {"layers": (3, 2), "hidden": (5,),
                                                                             "transition_hidden": (4,)}),
                                                     ("vae", "iaf", {"latent_dim": 2, "hidden": 5}),
                                                     ("vae", "meanfield", {"latent_dim": 2, "hidden": 5})])
def test_the_lean_elbo_through_the_data_plate_is_pyros_elbo_through_pyros_plate(name, guide_name, options,
                                                                                  monkeypatch):
    """The lean ELBO's loss and gradients, with the data plate taking both short cuts, equal Pyro's ``Trace_ELBO``
    run through ``pyro.plate`` itself (the data plate swapped out)."""
    x = (torch.rand(6, 8) < 0.5).float()
    idx, N = torch.tensor([0, 3, 5, 9, 12, 19]), 20
    results = []
    for swap in (False, True):
        pyro.set_rng_seed(0)
        model = build_model(name, 8, **options)
        guide = build_guide(guide_name, model, num_data=N)
        if swap:
            import zoo.core.plates as plates
            monkeypatch.setattr(plates, "DataPlate", lambda name, size, subsample, dim, device=None: pyro.plate(
                name, size, subsample=subsample, dim=dim, device=device))
        elbo = LeanTrace_ELBO() if not swap else pyro.infer.Trace_ELBO()
        with pyro.validation_enabled(False):
            loss = elbo.loss_and_grads(guide.training_model(model), guide, x, idx=idx, N=N)
        results.append((loss, [p.grad.clone() for p in (*model.parameters(), *guide.parameters())]))
        if not swap:
            assert elbo.lean
    assert results[0][0] == pytest.approx(results[1][0], rel=1e-5)
    for a, b in zip(results[0][1], results[1][1]):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-6)
