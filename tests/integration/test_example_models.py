"""examples/models.py, the factories the documentation's studies run with --model: each builds for
permuted MNIST, returns the classes' scores, and the harness sees what it protects."""

import pytest
import torch
from helpers import REPO

from hlop.models.external import external_model

pytest.importorskip("spikingjelly.activation_based")

FACTORIES = ["ann", "spikingjelly_cnn", "spikingjelly_zoo"]


@pytest.mark.parametrize("name", FACTORIES)
def test_factory_builds_for_pmnist_and_returns_scores(name):
    torch.manual_seed(0)
    model = external_model(f"{REPO}/examples/models.py:{name}", (784,), 10, 10, True, 2)
    out = model(torch.rand(3, 784))
    assert out.shape == (3, 10) and torch.isfinite(out).all()
    found = model.unprotected_found
    if name == "spikingjelly_zoo":  # batch norm and learnable time constants
        assert set(found.parameters.values()) == {"BatchNorm2d", "ParametricLIFNode"}
        assert set(found.statistics.values()) == {"BatchNorm2d"}
    else:
        assert not found
