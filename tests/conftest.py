import os

import pyro
import pytest
import torch

import zoo  # noqa: F401  (switches on module-local params)

if os.environ.get("PYTEST_XDIST_WORKER"):
    # under pytest -n N the N workers share the cores: one torch thread each, as compare --workers gives its
    # workers, and the same for the processes the tests start (they inherit the environment)
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def seeded():
    pyro.set_rng_seed(0)
    yield


@pytest.fixture(scope="session")
def synthetic():
    from zoo.data import synthetic_ppca
    return synthetic_ppca(x_dim=6, latent_dim=2, sigma=0.5, sizes=(400, 100, 100), seed=1)


@pytest.fixture(scope="session")
def digits():
    from zoo.data import load_digits
    return load_digits()


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)
