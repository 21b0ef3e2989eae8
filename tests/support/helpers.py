"""Shared helpers of the tests (imported as ``from helpers import ...``: tests/conftest.py puts
this folder on the import path)."""

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from hlop import NetworkSettings, SpikingCNN, SpikingMLP, SpikingResNet18
from hlop.data.containers import Benchmark, DataSplit, Task
from hlop.loop.state import LoopSettings, RunState
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


class FixedScores(nn.Module):
    """A network whose heads return fixed scores: input ``[[code]]`` gets row ``code`` of
    ``table``, whose columns are the heads' scores side by side (head ``t``: ``widths[t]``
    columns).  ``forward(x, t)`` gives head t's columns, ``forward(x, [tasks])`` theirs
    concatenated in that order (what the loop asks of a network with a head per task)."""

    task_heads = True

    def __init__(self, table: list[list[float]], widths: list[int]) -> None:
        super().__init__()
        self.register_buffer("table", torch.tensor(table, dtype=torch.float32))
        self.widths = widths
        assert self.table.shape[1] == sum(widths)

    def columns(self, t: int) -> list[int]:
        lo = sum(self.widths[:t])
        return list(range(lo, lo + self.widths[t]))

    def forward(self, x: torch.Tensor, task=0) -> torch.Tensor:
        rows = self.table[x[:, 0].long()]
        tasks = task if isinstance(task, list | tuple) else [task]
        return rows[:, [c for t in tasks for c in self.columns(t)]]


#: FixedScores' scores: 3 tasks of 2, 3 and 2 classes (columns 0-1, 2-4, 5-6); each test
#: sample (a row) is marked with its task, label, and whether the argmax is right over its own
#: head (aware) and over the heads seen after steps 0, 1, 2 (agnostic; "-": not seen yet)
FIXED_WIDTHS = [2, 3, 2]
FIXED_TABLE = [
    # task 0                              aware  after 0 1 2
    [5, 1, 0, 0, 0, 0, 0],  # y=0           yes   yes yes yes
    [3, 1, 0, 0, 0, 0, 0],  # y=1           no    no  no  no
    [4, 2, 0, 6, 0, 0, 0],  # y=0           yes   yes no  no  (head 1 is larger)
    [0, 4, 0, 0, 0, 7, 0],  # y=1           yes   yes yes no  (head 2 is larger)
    # task 1
    [0, 0, 5, 1, 1, 0, 0],  # y=0           yes   -   yes yes
    [9, 0, 1, 5, 1, 0, 0],  # y=1           yes   -   no  no  (head 0 is larger)
    [0, 0, 1, 1, 5, 0, 8],  # y=2           yes   -   yes no  (head 2 is larger)
    [0, 0, 0, 3, 1, 0, 0],  # y=1           yes   -   yes yes
    # task 2
    [0, 0, 0, 0, 0, 2, 1],  # y=0           yes   -   -   yes
    [0, 0, 0, 9, 0, 1, 3],  # y=1           yes   -   -   no  (head 1 is larger)
]
FIXED_LABELS = [[0, 1, 0, 1], [0, 1, 2, 1], [0, 1]]
#: the accuracy matrices these scores give (percent), by hand from the table's marks
FIXED_AWARE = [[75.0], [75.0, 100.0], [75.0, 100.0, 100.0]]
FIXED_AGNOSTIC = [[75.0], [50.0, 75.0], [25.0, 50.0, 50.0]]


def fixed_scores_run(test_batch_size: int = 3) -> RunState:
    """A run of :class:`FixedScores` on 3 tasks whose test samples are the table's rows (the
    task-agnostic matrix recorded, as the loop starts it for a head per task)."""
    tasks, code = [], 0
    for t, labels in enumerate(FIXED_LABELS):
        codes = torch.arange(code, code + len(labels), dtype=torch.uint8).view(-1, 1)
        split = DataSplit(codes, torch.tensor(labels), lambda b: b.float())
        tasks.append(Task(f"t{t}", FIXED_WIDTHS[t], split, split))
        code += len(labels)
    bench = Benchmark("fixed", tasks, False, (1,))
    settings = LoopSettings(tasks=3, test_batch_size=test_batch_size)
    run = RunState(settings, FixedScores(FIXED_TABLE, FIXED_WIDTHS), bench, torch.device("cpu"))
    run.acc_matrix_agnostic = []
    return run


__all__ = [
    "FIXED_AGNOSTIC",
    "FIXED_AWARE",
    "FIXED_LABELS",
    "FIXED_TABLE",
    "FIXED_WIDTHS",
    "REPO",
    "FixedScores",
    "SMALL_PMNIST",
    "SUPPORT",
    "TINY_PMNIST",
    "as_during_task",
    "fixed_scores_run",
    "later_task",
    "net_settings",
    "network",
    "run_state",
    "step_gradients",
]
