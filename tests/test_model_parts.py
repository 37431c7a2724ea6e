"""Models composed from parts (issue 81, item 3): the VAE and HVAE take their latent layer, likelihood and prior as
objects; the command line's option names become those parts once, at the registry's boundary (``from_options``)."""
import inspect

import pytest
import torch

import zoo
from zoo.core.errors import ZooError
from zoo.core.latents import LATENT_FAMILIES, LatentLayer
from zoo.core.likelihoods import Bernoulli, build_likelihood
from zoo.models import HVAE, VAE
from zoo.models.priors import MixturePrior, prior_part


def _shapes(module):
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


@pytest.mark.parametrize("options", [
    {"latent_dim": 3, "hidden": (8,)},
    {"latent_dim": 3, "hidden": (8,), "latent": "categorical", "latent_classes": 4},
    {"latent_dim": 3, "hidden": (8,), "prior": "vampprior", "prior_components": 5},
    {"latent_dim": 2, "hidden": (8,), "decoder": "made"},
    {"latent_dim": 2, "hidden": (8, 6), "latent": "wrapped-normal", "latent_decoder": "gyroplane"}])
def test_a_vae_from_its_options_is_the_vae_from_its_parts(options):
    """The registry's model and the one built from the same parts by hand hold the same tensors (a checkpoint of
    one loads into the other), and the same latent sites."""
    built = zoo.build_model("vae", 16, **options)
    o = {"latent": "gaussian", "latent_classes": 10, "prior": "standard", "prior_components": None,
         "decoder": "mlp", "latent_decoder": "wrapped", **options}
    by_hand = VAE(16, LatentLayer.named(o["latent"], o["latent_dim"], o["latent_classes"]), o["hidden"],
                  build_likelihood("bernoulli", o["decoder"], 16),
                  prior_part(o["prior"], o["prior_components"]), latent_decoder=o["latent_decoder"])
    assert _shapes(built) == _shapes(by_hand) and built.latents == by_hand.latents
    by_hand.load_state_dict(built.state_dict())


def test_an_hvae_takes_a_top_layer_of_another_family_and_any_prior_callable():
    """The top of ``layers`` may be a LatentLayer part; a prior is any callable of (site, x_dim), here a user's
    three-component mixture the options have no name for."""
    model = HVAE(16, layers=(4, LatentLayer.named("vmf", 3)), hidden=(8,), transition_hidden=(5,))
    assert [(s.name, s.support, s.event_shape) for s in model.latents] == [("z2", "sphere", (3,)),
                                                                          ("z1", "real", (4,))]
    assert model.sample(2).shape == (2, 16)
    mixture = HVAE(16, layers=(4, 3), hidden=(8,), transition_hidden=(5,),
                   prior=lambda site, x_dim: MixturePrior(site, components=3))
    assert mixture.prior.logits.shape == (3,)
    assert torch.isfinite(mixture.prior().log_prob(torch.zeros(3)))


@pytest.mark.parametrize("model", [VAE, HVAE])
def test_the_models_take_at_most_eight_parameters(model):
    assert len(inspect.signature(model.__init__).parameters) - 1 <= 8


@pytest.mark.parametrize("build, says", [
    (lambda: LatentLayer(dim=0), "dim must be a whole number >= 1"),
    (lambda: LatentLayer(LATENT_FAMILIES["categorical"], 3, classes=1), "classes must be a whole number >= 2"),
    (lambda: LatentLayer("vmf", 3), "a latent layer's family is a LatentFamily"),
    (lambda: LatentLayer.named("poincare", 3), "unknown latent family 'poincare'"),
    (lambda: VAE(16, LatentLayer(dim=2), likelihood=Bernoulli(10)), "models 10 values per datum and the data have 16"),
    (lambda: VAE(16, LatentLayer(dim=2), hidden=(8,), latent_decoder="gyroplane"), "reads a hyperbolic z"),
    (lambda: HVAE(16, layers=(4, 3), likelihood=Bernoulli(9)), "models 9 values per datum")])
def test_parts_that_cannot_make_a_model_are_refused_in_one_line(build, says):
    """Review: built by hand, a zero-sized layer, one class, a family by name where a part goes, a likelihood for
    other data and a gyroplane reading a Euclidean z were accepted (or raised a bare KeyError)."""
    with pytest.raises(ZooError, match=None) as err:
        build()
    assert says in str(err.value) and "\n" not in str(err.value), str(err.value)
