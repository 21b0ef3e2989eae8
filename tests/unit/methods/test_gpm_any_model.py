"""GPM on a network of the user's own (``--model``): circuits through hlop.HLOP's hooks, bases
against an SVD of rows computed here, old responses kept by SGD, momentum and Adam steps."""

import warnings

import pytest
import torch
import torch.nn.functional as F
from helpers import run_state
from torch import nn

from hlop.data.containers import Benchmark, DataSplit, Task
from hlop.loop.state import RunState
from hlop.methods.gpm import GPM, representation_statistics
from hlop.models.external import ExternalModel
from hlop.run.config import Config
from hlop.run.diagnostics import circuit_diagnostics

N = 30  # training samples per task


def conv_net() -> nn.Sequential:
    """1x8x8 -> conv 3x3 stride 2 (3 channels, 4x4) -> ReLU -> Linear(48, 3)."""
    return nn.Sequential(
        nn.Conv2d(1, 3, 3, stride=2, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(48, 3)
    )


def user_run(net: nn.Module | None = None, seed: int = 0) -> RunState:
    """Two tasks of N images 1x8x8 (the second task's brighter and shifted) and the user's
    network in the loop's adapter, at task 0."""
    torch.manual_seed(seed)
    torch.set_num_threads(1)
    net = conv_net() if net is None else net
    tasks = []
    for k in range(2):
        x = torch.rand(N, 1, 8, 8) * (1 + k)
        x[:, :, : 4 * k] = 0  # task 1 leaves the top half dark
        y = torch.arange(N) % 3
        split = DataSplit(x, y, lambda b: b)
        tasks.append(Task(f"t{k}", 3, split, split))
    cfg = Config(tasks=2, batch_size=N)
    model = ExternalModel(net, "tests:conv_net", 3, 3)
    model.begin_task(0, 3)
    return run_state(cfg, model, Benchmark("tiny", tasks, True, (1, 8, 8)), torch.device("cpu"))


def with_ones(rows: torch.Tensor) -> torch.Tensor:
    """The rows with the bias's constant 1 appended (biases are protected)."""
    return torch.cat([rows, torch.ones(rows.shape[0], 1, dtype=rows.dtype)], dim=1)


def first_samples(run: RunState, n: int) -> torch.Tensor:
    """The first ``n`` training samples of the run's seeded permutation of the task."""
    g = torch.Generator().manual_seed(run.seed * 1019 + run.task)
    split = run.benchmark.tasks[run.task].train
    return split.images[torch.randperm(len(split), generator=g)[:n]]


def reference_bases(r: torch.Tensor, eps: float) -> torch.Tensor:
    """Task 0's bases of R (N x rows) from its SVD: the first k directions with
    ``sum_{i<=k} s_i^2 < eps ||R||^2`` (the reference code's count)."""
    u, s, _ = torch.linalg.svd(r, full_matrices=False)
    k = int(((s**2).cumsum(0) / (s**2).sum() < eps).sum())
    return u[:, :k]


def projector(u: torch.Tensor) -> torch.Tensor:
    return u @ u.t()


def flat(layer: nn.Module) -> torch.Tensor:
    """``[W, b]`` as one C_out x N+1 matrix (a conv's weight on its C_in k k axis)."""
    w = layer.weight.detach()
    return torch.cat([w.reshape(w.shape[0], -1), layer.bias.detach().view(-1, 1)], dim=1)


@pytest.mark.parametrize("samples", [N, 7])
def test_bases_after_task_zero_span_the_svd_of_the_layers_rows(samples):
    run = user_run()
    gpm = GPM(thresholds=[0.9], samples=[samples])
    gpm.check(run)  # attaches the circuits
    conv, fc = run.model.net[0], run.model.net[3]
    assert [n for n, _ in run.model.projected_layers()] == ["0", "3"]
    assert [c.in_features for c in run.model.circuits()] == [10, 49]  # with the bias's 1
    gpm.before_task(run)
    gpm.after_training(run)
    x = first_samples(run, samples)
    # the conv's rows: its unfolded patches (stride 2, padding 1), one per output position
    patches = F.unfold(x, 3, padding=1, stride=2).transpose(1, 2).reshape(-1, 9).double()
    with torch.no_grad():
        hidden = run.model.net[:3](x).double()  # the Linear's input
    for layer, c, r in zip((conv, fc), run.model.circuits(), (patches, hidden), strict=True):
        assert run.model.circuits_attached.layers[c.name] is layer
        expected = reference_bases(with_ones(r).t(), 0.9)
        assert c.old_rows == c.rows == expected.shape[1] >= 1
        assert c.rows < c.in_features  # room left for later tasks
        torch.testing.assert_close(
            projector(c.weight.t().double()), projector(expected), atol=1e-5, rtol=0
        )
        assert not (c.learning or c.projecting)


def test_the_bias_column_counts():
    """Without the constant 1 (a network whose biases do not train) the circuit is N wide and
    its bases span the SVD of the patches alone."""
    run = user_run()
    run.model.net[0].bias.requires_grad_(False)
    gpm = GPM(thresholds=[0.9], samples=[N])
    gpm.check(run)
    gpm.after_training(run)
    c = run.model.circuits()[0]
    assert c.in_features == 9
    x = first_samples(run, N).double()
    patches = F.unfold(x, 3, padding=1, stride=2).transpose(1, 2).reshape(-1, 9)
    expected = reference_bases(patches.t(), 0.9)
    torch.testing.assert_close(
        projector(c.weight.t().double()), projector(expected), atol=1e-5, rtol=0
    )


def optimizer(kind: str, params) -> torch.optim.Optimizer:
    if kind == "sgd":
        return torch.optim.SGD(params, lr=0.5)
    if kind == "momentum":
        return torch.optim.SGD(params, lr=0.2, momentum=0.9, weight_decay=1e-3)
    return torch.optim.Adam(params, lr=0.05)


def later_task_steps(run: RunState, gpm: GPM, kind: str, protect: bool = True, steps: int = 3):
    """Task 0's bases, then ``steps`` optimiser steps on task 1 (the plugin's events as the
    loop fires them); returns the layers' ``[W, b]`` before task 1."""
    gpm.check(run)
    gpm.before_task(run)
    gpm.after_training(run)
    run.task = 1
    run.model.begin_task(1, 3)
    gpm.before_task(run)
    assert all(c.projecting and c.old_rows for c in run.model.circuits())
    before = [flat(layer) for _, layer in run.model.projected_layers()]
    run.optimizer = optimizer(kind, run.model.trainable_parameters())
    if protect:
        gpm.before_epoch(run)
    x, y = run.benchmark.tasks[1].train.batch(torch.arange(N))
    run.model.train()
    for _ in range(steps):
        run.optimizer.zero_grad()
        F.cross_entropy(run.model(x), y).backward()
        run.optimizer.step()
    return before


@pytest.mark.parametrize("kind", ["sgd", "momentum", "adam"])
def test_steps_of_a_later_task_keep_the_responses_to_the_old_span(kind):
    run, gpm = user_run(), GPM(thresholds=[0.9], samples=[N])
    before = later_task_steps(run, gpm, kind)
    g = torch.Generator().manual_seed(1)
    for (name, layer), c, w0 in zip(
        run.model.projected_layers(), run.model.circuits(), before, strict=True
    ):
        w1 = flat(layer)
        assert (w1 - w0).abs().max() > 1e-3, name  # the steps did train the layer
        # rows in the old span (with their bias coordinate): the same responses
        probes = torch.randn(5, c.old_rows, generator=g) @ c.weight
        torch.testing.assert_close(probes @ w1.t(), probes @ w0.t(), atol=1e-5, rtol=0)
        assert float(((w1 - w0) @ c.weight.t()).abs().max()) < 1e-5  # change orthogonal to M


def test_adam_without_the_optimisers_protection_moves_the_old_responses():
    """The control of the test above: projected gradients alone do not keep Adam's steps
    orthogonal (its elementwise scaling); the plugin's protection does."""
    run, gpm = user_run(), GPM(thresholds=[0.9], samples=[N])
    before = later_task_steps(run, gpm, "adam", protect=False)
    c, w0 = run.model.circuits()[1], before[1]
    probes = torch.randn(5, c.old_rows) @ c.weight
    assert (probes @ (flat(run.model.net[3]) - w0).t()).abs().max() > 1e-3


class StepConv(nn.Conv2d):
    """A multi-step convolution as SpikingJelly's ``step_mode="m"``: ``[T, B, C, H, W]``."""

    step_mode = "m"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = super().forward(x.flatten(0, 1))
        return y.view(*x.shape[:2], *y.shape[1:])


class StepLinear(nn.Linear):
    step_mode = "m"


class MultiStep(nn.Module):
    """T steps of a rising input through multi-step layers; scores are the mean over time."""

    T = 3

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.fc = StepConv(1, 2, 3, stride=2, padding=1), StepLinear(32, 3)

    def steps(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([x * (t + 1) / self.T for t in range(self.T)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.conv(self.steps(x))).flatten(2)  # [T, B, 32]
        return self.fc(h).mean(0)


def test_every_step_of_a_multi_step_layer_counts_and_samples_are_samples():
    run = user_run(MultiStep())
    GPM(samples=[5, 7]).check(run)
    net, t = run.model.net, MultiStep.T
    covs, counts = representation_statistics(run, [5, 7])
    assert counts == [5 * t * 16, 7 * t]  # 16 patches per step; one row per step and sample
    with torch.no_grad():
        seq = net.steps(first_samples(run, 7))
        patches = F.unfold(seq[:, :5].flatten(0, 1), 3, padding=1, stride=2)
        conv_rows = with_ones(patches.transpose(1, 2).reshape(-1, 9).double())
        fc_rows = with_ones(F.relu(net.conv(seq)).flatten(2).reshape(-1, 32).double())
    for cov, r in zip(covs, (conv_rows, fc_rows), strict=True):
        torch.testing.assert_close(cov, r.t() @ r, rtol=1e-6, atol=1e-6)


def test_per_circuit_lists_for_another_network_give_way_with_a_warning():
    run = user_run()
    # the pmnist preset's thresholds (fc1, fc2, head) and three counts: not these 2 layers
    gpm = GPM(thresholds=[0.95, 0.99, 0.99], samples=[300, 200, 100])
    with pytest.warns(UserWarning, match="2 layers with circuits") as caught:
        gpm.check(run)
    message = str(caught[0].message)
    assert "gpm.thresholds=[0.95, 0.99, 0.99] -> [0.97]" in message
    assert "gpm.samples=[300, 200, 100] -> [125]" in message
    assert gpm.thresholds(run) == [0.97, 0.97] and gpm.samples(run) == [125, 125]
    # lists that fit are kept, silently
    fits = GPM(thresholds=[0.9, 0.95], samples=[10])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fits.check(user_run())
    assert fits.settings.thresholds == [0.9, 0.95] and fits.settings.samples == [10]


def test_circuit_diagnostics_of_a_user_network():
    run = user_run()
    gpm = GPM(thresholds=[0.9], samples=[N])
    gpm.check(run)
    gpm.after_training(run)
    out = circuit_diagnostics(run, N)
    assert list(out) == ["0", "3"]
    for d, c, rows in zip(out.values(), run.model.circuits(), (N * 16, N), strict=True):
        assert d["rows"] == d["old_rows"] == c.rows and d["activity_rows"] == rows
        assert d["orthonormality_error"] < 1e-5
        assert d["captured"] < 0.9 + 1e-6  # task 0's count: below eps
        if d["optimal"] is not None:  # the top principal directions: all one can hold
            assert d["captured"] == pytest.approx(d["optimal"], abs=1e-6)
