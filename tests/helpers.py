"""Shared helpers of the tests (imported as ``from helpers import ...``)."""

import torch.nn.functional as F

from hlop import NetworkSettings
from hlop.loop.state import RunState
from hlop.models.testing import as_during_task

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


__all__ = ["SMALL_PMNIST", "as_during_task", "net_settings", "run_state", "step_gradients"]
