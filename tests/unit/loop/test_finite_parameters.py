"""The check that stops a run whose weights became NaN or infinite (once per epoch)."""

import pytest
import torch
from torch import nn

from hlop.loop.continual import non_finite_parameters


def net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 2))


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_a_non_finite_value_names_its_parameters_in_order(value):
    m = net()
    with torch.no_grad():
        m[1].bias[1] = value
        m[0].weight[2, 3] = value
    assert non_finite_parameters(m) == ["0.weight", "1.bias"]


def test_finite_values_whose_sum_overflows_are_finite():
    m = net()
    with torch.no_grad():
        m[0].weight.fill_(3e38)  # the float32 sum overflows; every value is finite
        m[1].weight.fill_(-3e38)
    assert non_finite_parameters(m) == []
    m = net().double()
    with torch.no_grad():
        m[0].bias.fill_(1e300)  # finite in float64, not in float32
    assert non_finite_parameters(m) == []
    with torch.no_grad():
        m[0].bias[0] = float("nan")
    assert non_finite_parameters(m) == ["0.bias"]


def test_finite_network_and_other_dtypes():
    m = net()
    assert non_finite_parameters(m) == []
    m.half()
    with torch.no_grad():
        m[1].weight.fill_(60000.0)  # near half's largest value: summed in float32
    assert non_finite_parameters(m) == []
    m[1].weight.data[0, 0] = float("inf")
    assert non_finite_parameters(m) == ["1.weight"]
