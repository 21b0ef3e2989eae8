"""What no circuit protects: listed, named in a warning, fixed after the first task
(``unprotected="fix"``) or left to train (``"train"``), for hlop.HLOP and a user's network
in the harness."""

import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import hlop
from hlop.layers.unprotected import find_unprotected, layer_parameters
from hlop.models.external import ExternalModel


class Scale(nn.Module):  # a learnable neuron parameter, as PLIF's time constant
    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.tensor(1.0))

    def forward(self, x):
        return x * self.w


def net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8), Scale(), nn.ReLU(), nn.Linear(8, 3))


def train_steps(model, steps=3):
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    model.train()
    for _ in range(steps):
        x, y = torch.randn(16, 6) * 2 + 1, torch.randint(0, 3, (16,))
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()


def test_found_lists_norms_and_neuron_parameters_not_the_protected_layers():
    model = net()
    found = find_unprotected(model, layer_parameters(model))
    assert found.parameters == {"1.weight": "BatchNorm1d", "1.bias": "BatchNorm1d", "2.w": "Scale"}
    assert found.statistics == {"1": "BatchNorm1d"}
    assert found.describe() == (
        "BatchNorm1d (2 parameters, the running statistics of 1 module); Scale (1 parameter)"
    )


def test_hlop_warns_what_is_unprotected_and_what_it_chose():
    with pytest.warns(UserWarning, match=r"BatchNorm1d .*fixed after the first task.*'train'"):
        hlop.HLOP(net())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        hlop.HLOP(nn.Sequential(nn.Linear(4, 2)))  # everything protected: no warning
        hlop.HLOP(net(), unprotected=None)  # the caller's business
    with pytest.raises(ValueError, match="unprotected must be one of"):
        hlop.HLOP(net(), unprotected="freeze")


@pytest.mark.filterwarnings("ignore:hlop.HLOP")
@pytest.mark.parametrize("choice", ["fix", "train"])
def test_fixed_after_the_first_task_or_left_to_train(choice):
    model = net()
    hl = hlop.HLOP(model, unprotected=choice)
    bn, scale = model[1], model[2]
    hl.begin_task()
    train_steps(model)
    hl.end_task()
    first = [t.clone() for t in (bn.weight, bn.bias, scale.w, bn.running_mean, bn.running_var)]
    hl.begin_task()
    train_steps(model)
    after = [bn.weight, bn.bias, scale.w, bn.running_mean, bn.running_var]
    same = [torch.equal(a, b) for a, b in zip(first, after, strict=True)]
    assert same == ([True] * 5 if choice == "fix" else [False] * 5)
    assert bn.training  # the model's mode is left as it was; the norm reads its statistics
    hl.end_task()
    hl.detach()  # released: trains again
    assert bn.weight.requires_grad and scale.w.requires_grad
    train_steps(model, 1)
    assert not torch.equal(bn.running_mean, first[3])


def test_a_users_network_in_the_harness_fixes_them_for_every_method():
    model = ExternalModel(net(), "nets.py:f", num_classes=3, classes_per_task=3)
    assert "BatchNorm1d" in model.unprotected_message()
    assert "--set unprotected=train" in model.unprotected_message()
    model.begin_task(0, 3)
    assert all(p.requires_grad for p in model.parameters())
    model.begin_task(1, 3)
    frozen = {n for n, p in model.net.named_parameters() if not p.requires_grad}
    assert frozen == {"1.weight", "1.bias", "2.w"}
    model.train()
    assert model.training and not model.net[1].training  # the first task's statistics
    free = ExternalModel(net(), "nets.py:f", 3, 3, unprotected="train")
    free.begin_task(1, 3)
    free.train()
    assert all(p.requires_grad for p in free.parameters()) and free.net[1].training
    plain = ExternalModel(nn.Sequential(nn.Linear(6, 3)), "nets.py:g", 3, 3)
    assert plain.unprotected_message() is None
