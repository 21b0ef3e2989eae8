"""Shared helpers of the tests (imported as ``from helpers import ...``: tests/conftest.py puts
this folder on the import path)."""

from pathlib import Path

import torch
import torch.nn.functional as F

from hlop import NetworkSettings, SpikingCNN, SpikingMLP, SpikingResNet18
from hlop.loop.state import RunState
from hlop.models.testing import as_during_task

#: the repository's root, and this folder (the support scripts run as processes)
REPO = Path(__file__).resolve().parents[2]
SUPPORT = Path(__file__).resolve().parent

#: permuted MNIST in seconds: 2 tasks of 120 samples, a 40-unit MLP at T=3
TINY_PMNIST = [
    "tasks=2",
    "hidden=40",
    "timesteps=3",
    "train_limit=120",
    "test_limit=60",
    "hlop.sizes=[[10,10,5],[5,5,5]]",
]

# permuted MNIST at small scale (embedded subset): 3 tasks of 1000 samples, a 200-unit MLP,
# settings under which fine-tuning clearly forgets (lr 0.3, 4 epochs) and circuits converge
SMALL_PMNIST = [
    "tasks=3",
    "hidden=200",
    "epochs=4",
    "lr=0.3",
    "train_limit=1000",
    "test_limit=500",
    "hlop.lrs=[0.01,0.05,0.05]",
    "hlop.sizes=[[100,100,60],[50,50,40],[50,50,40]]",
]


def step_gradients(model, x, y, fast):
    """Scores, parameter gradients and circuit weights after one step on (x, y); the model's
    state is restored."""
    state = {k: v.clone() for k, v in model.state_dict().items()}
    model.fast = fast
    model.zero_grad()
    out = model(x)
    F.cross_entropy(out, y).backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    circuits = [c.weight.clone() for c in model.circuits()]
    model.load_state_dict(state)
    return out.detach(), grads, circuits


def net_settings(**kw) -> NetworkSettings:
    """NetworkSettings with the given fields."""
    return NetworkSettings(**kw)


def run_state(cfg, model, benchmark, device="cpu") -> RunState:
    """The loop's state of a run of ``cfg`` (its loop settings and optimisation)."""
    return RunState(cfg.loop_settings(), model, benchmark, device, cfg.optimisation())


def later_task(model):
    """As in task k > 0: circuits with an old block projecting, a new one learning, BN fixed."""
    # old blocks leave part of every input space free (else that gradient is exactly 0)
    old = [min(4, c.in_features // 2) for c in model.circuits()]
    as_during_task(model, [old, [1] * len(old)])
    model.train()
    model.begin_task(1, 10)  # the real freezing: BN statistics and affine, thresholds
    return model


def network(arch, **kw):
    torch.manual_seed(0)
    if arch == "cnn":
        model = SpikingCNN(channels=(8, 16, 32), settings=net_settings(timesteps=5, **kw))
        x = torch.randn(6, 3, 32, 32) * 2
    elif arch == "resnet":
        model = SpikingResNet18(width=4, settings=net_settings(timesteps=5, **kw))
        x = torch.randn(6, 3, 32, 32) * 2
    else:
        model = SpikingMLP(784, 50, settings=net_settings(timesteps=5, **kw))
        x = torch.rand(6, 784) * 2
    later_task(model)
    for c in model.circuits():
        c.learning = True
    return model, x, torch.randint(0, 10, (6,))


__all__ = [
    "REPO",
    "SMALL_PMNIST",
    "SUPPORT",
    "TINY_PMNIST",
    "as_during_task",
    "later_task",
    "net_settings",
    "network",
    "run_state",
    "step_gradients",
]
