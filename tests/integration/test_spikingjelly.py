"""hlop.HLOP on SpikingJelly's own multi-step layers (``step_mode="m"``, ``[T, B, ...]``
inputs, biases on, ``functional.reset_net``): a multi-step network trains with Adam and the
responses to the first task's inputs stay where they were while a second task trains."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import hlop

sj = pytest.importorskip("spikingjelly.activation_based")
from spikingjelly.activation_based import functional, layer, neuron  # noqa: E402


@pytest.fixture(autouse=True)
def one_thread():
    torch.set_num_threads(1)


def lif() -> nn.Module:
    return neuron.LIFNode(tau=2.0, decay_input=False, v_threshold=0.5, step_mode="m")


def mlp() -> nn.Module:
    return nn.Sequential(
        layer.Flatten(start_dim=1, step_mode="m"), layer.Linear(36, 24, step_mode="m"), lif(),
        layer.Linear(24, 5, step_mode="m"),
    )  # fmt: skip


def cnn() -> nn.Module:
    return nn.Sequential(
        layer.Conv2d(1, 4, 3, padding=1, step_mode="m"), lif(), layer.AvgPool2d(2, step_mode="m"),
        layer.Conv2d(4, 6, 3, padding=1, step_mode="m"), lif(),
        layer.Flatten(start_dim=1, step_mode="m"), layer.Linear(6 * 3 * 3, 5, step_mode="m"),
    )  # fmt: skip


def run(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    out = net(x)  # [T, B, 5]
    functional.reset_net(net)
    return out


def inputs(seed: int, b: int = 16) -> torch.Tensor:
    """``[T=3, B, 1, 6, 6]`` inputs of one task (a task: its own random 6-d subspace of
    pixel patterns, so that a circuit can hold it)."""
    g = torch.Generator().manual_seed(seed)
    basis = torch.randn(6, 36, generator=g)
    frames = (torch.randn(b, 6, generator=g) @ basis).view(b, 1, 6, 6)
    return frames.unsqueeze(0).repeat(3, 1, 1, 1, 1)


@pytest.mark.parametrize("make", [mlp, cnn], ids=["linear", "conv"])
def test_old_task_responses_unchanged_under_adam(make):
    torch.manual_seed(0)
    net = make()
    # task 0: sizes from the data (the default), allowed to grow to the whole input, with a
    # threshold that keeps every direction the activity has (48 rows: the last layer's room)
    dims = [m.weight[0].numel() + 1 for m in net.modules() if hasattr(m, "weight")]
    hl = hlop.HLOP(net, threshold=1 - 1e-9, max_rows=dims, lrs=0.1)
    old = inputs(0)
    hl.begin_task()
    for _ in range(60):
        run(net, old)  # circuits learn in the forward (training mode)
    hl.end_task()
    captured = hl.diagnostics([old], forward=run)
    assert all(d["captured"] > 1 - 1e-6 for d in captured.values()), captured
    net.eval()
    with torch.no_grad():
        before = run(net, old)
    net.train()
    hl.begin_task([0] * len(dims))
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    assert hl.protect(opt)  # Adam: the steps' changes are projected
    new, target = inputs(1), torch.arange(16) % 5
    moved = {n: p.detach().clone() for n, p in net.named_parameters()}
    for _ in range(5):
        opt.zero_grad()
        F.cross_entropy(run(net, new).mean(0), target).backward()
        opt.step()
    # where the old activity leaves room, the weights move
    assert any(not torch.equal(moved[n], p) for n, p in net.named_parameters())
    net.eval()
    with torch.no_grad():
        after = run(net, old)
    torch.testing.assert_close(after, before, rtol=0, atol=1e-4)
