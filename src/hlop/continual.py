"""The continual-learning loop.  Methods plug into its events; none forks the loop.

For each task ``k``::

    before_task      (HLOP: add a circuit block; project from task 1 on)
    for each epoch:
        before_epoch (HLOP: circuits learn once ``start_epochs`` have passed)
        train one epoch; evaluate the current task; one metrics row
    after_training   (HLOP: circuits stop learning)
    evaluate every seen task without projection -> row k of the accuracy matrix
    after_evaluation (HLOP: merge the circuits; replay: retrain on memory, re-evaluate)
    checkpoint, results

Task 0 trains every parameter; later tasks train weight matrices only (biases,
thresholds and batch-norm frozen, batch-norm statistics fixed).  Each task gets a
fresh optimiser and scheduler.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from .config import Config
from .data.benchmarks import Benchmark, Split
from .networks import SpikingNetwork


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; results of completed tasks are kept."""


@dataclass
class RunState:
    """What the loop and its plugins share."""

    cfg: Config
    model: SpikingNetwork
    benchmark: Benchmark
    device: torch.device
    task: int = 0
    epoch: int = 0
    acc_matrix: list[list[float]] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    generator: torch.Generator = field(default_factory=torch.Generator)


class Plugin:
    """A continual-learning method: override the events it reacts to."""

    name = "plugin"

    def before_task(self, run: RunState) -> None: ...

    def before_epoch(self, run: RunState) -> None: ...

    def after_training(self, run: RunState) -> None: ...

    def after_evaluation(self, run: RunState) -> None: ...


class HLOP(Plugin):
    """Hebbian learning based orthogonal projection (the paper's method)."""

    name = "hlop"

    def before_task(self, run: RunState) -> None:
        run.model.add_subspaces(run.cfg.hlop.sizes[run.task])
        for c in run.model.circuits():
            c.projecting = run.task > 0

    def before_epoch(self, run: RunState) -> None:
        learning = run.epoch >= run.cfg.hlop.start_epochs
        for c in run.model.circuits():
            c.learning = learning

    def after_training(self, run: RunState) -> None:
        for c in run.model.circuits():
            c.learning = False
            c.projecting = False

    def after_evaluation(self, run: RunState) -> None:
        run.model.merge_circuits()


class Replay(Plugin):
    """Memory replay: after each task k >= 1 (and after HLOP's merge), train on a memory of
    ``memory_size`` samples per class of every seen task, without projection, then
    re-evaluate the task's row.  The memory is drawn at random per class with the run's
    seed (the reference code keeps the first samples of each class)."""

    name = "replay"

    def __init__(self) -> None:
        self.memory: list[torch.Tensor] = []  # indices into each task's training split

    def select(self, run: RunState, task: int) -> torch.Tensor:
        """Indices of ``memory_size`` random samples of each class of ``task``."""
        split = run.benchmark.tasks[task].train
        g = torch.Generator().manual_seed(run.cfg.seed * 1009 + task)
        size = run.cfg.replay.memory_size
        chosen = [
            idx[torch.randperm(len(idx), generator=g)[:size]]
            for _, idx in sorted(split.class_indices().items())
        ]
        return torch.cat(chosen)

    def before_task(self, run: RunState) -> None:
        while len(self.memory) <= run.task:
            self.memory.append(self.select(run, len(self.memory)))

    def after_evaluation(self, run: RunState) -> None:
        if run.task == 0:
            return
        cfg, r = run.cfg, run.cfg.replay
        optimizer = make_optimizer(cfg, trainable_parameters(run.model, run.task), lr=r.lr)
        if cfg.scheduler == "cosine":
            scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, r.t_max)
        else:
            scheduler = make_scheduler(cfg, optimizer)
        longest = max(len(m) for m in self.memory)
        for _ in range(r.epochs):
            run.model.train()
            order = torch.randperm(longest, generator=run.generator)
            for start in range(0, longest, r.batch_size):
                optimizer.zero_grad(set_to_none=True)
                for j, memory in enumerate(self.memory[: run.task + 1]):
                    pick = order[start : start + r.batch_size]
                    pick = pick[pick < len(memory)]
                    if len(pick):
                        x, y = run.benchmark.tasks[j].train.batch(memory[pick])
                        backward_batch(run, x.to(run.device), y.to(run.device), j)
                optimizer.step()
            scheduler.step()
        run.acc_matrix[-1] = evaluate_seen(run)


def method_plugins(cfg: Config) -> list[Plugin]:
    """The plugins of a run: HLOP (``--method hlop``) and memory replay (``--replay``)."""
    plugins: list[Plugin] = [HLOP()] if cfg.method == "hlop" else []
    if cfg.replay.enabled:
        plugins.append(Replay())
    return plugins


def trainable_parameters(model: SpikingNetwork, task: int) -> list[torch.nn.Parameter]:
    """Task 0: everything.  Later tasks: weight matrices only (the rest is frozen)."""
    model.consolidated = task > 0
    params = []
    for p in model.parameters():
        p.requires_grad_(task == 0 or p.dim() > 1)
        if p.requires_grad:
            params.append(p)
    return params


def make_optimizer(cfg: Config, params: Sequence[torch.nn.Parameter], lr: float | None = None):
    lr = cfg.lr if lr is None else lr
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(params, lr=lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


def make_scheduler(cfg: Config, optimizer) -> torch.optim.lr_scheduler.LRScheduler:
    """Stepped once per epoch: step decay, or cosine with linear warmup."""
    if cfg.scheduler == "cosine":
        warmup, t_max = cfg.warmup, cfg.t_max

        def factor(e: int) -> float:
            if e < warmup:
                return (e + 1) / warmup
            return 0.5 * (1 + math.cos(math.pi * (e - warmup) / (t_max - warmup)))

        return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    return torch.optim.lr_scheduler.StepLR(optimizer, cfg.step_size, cfg.gamma)


@torch.no_grad()
def evaluate(model: SpikingNetwork, split: Split, task: int, batch_size: int, device) -> float:
    """Accuracy (percent) on ``split``, batches in data order, no projection."""
    model.eval()
    correct = 0
    for start in range(0, len(split), batch_size):
        index = torch.arange(start, min(start + batch_size, len(split)))
        x, y = split.batch(index)
        out = model(x.to(device), task)
        correct += int((out.argmax(1) == y.to(device)).sum())
    return 100.0 * correct / max(len(split), 1)


class Events:
    """Callbacks of the runner (outputs, progress); all optional."""

    def __init__(
        self,
        on_batch: Callable[[RunState, int, int, float, float], None] | None = None,
        on_epoch: Callable[[RunState, dict], None] | None = None,
        on_task: Callable[[RunState], None] | None = None,
    ) -> None:
        self.on_batch, self.on_epoch, self.on_task = on_batch, on_epoch, on_task


def _check_loss(run: RunState, loss: torch.Tensor, batch: int) -> None:
    if not torch.isfinite(loss):
        raise TrainingDiverged(
            f"the loss became {loss.item()} in task {run.task}, epoch {run.epoch + 1}, "
            f"batch {batch}; try a smaller learning rate (--lr)"
        )


def backward_batch(
    run: RunState, x: torch.Tensor, y: torch.Tensor, task: int, optimizer=None, batch: int = 0
) -> tuple[torch.Tensor, float]:
    """Forward and backward of one batch (gradients accumulate); returns (scores, loss).

    DSR and BPTT: one backward through the whole simulation.  OTTT: a forward and a
    backward at every time step, loss ``CE / T`` each; with ``online_update`` and an
    ``optimizer``, an optimiser step at every time step.
    """
    model, cfg = run.model, run.cfg
    if cfg.training != "ottt":
        out = model(x, task)
        loss = F.cross_entropy(out, y)
        _check_loss(run, loss, batch)
        loss.backward()
        return out.detach(), loss.item()
    steps, total, loss_sum = model.timesteps, 0.0, 0.0
    online = cfg.online_update and optimizer is not None
    for t in range(steps):
        if online and t > 0:
            optimizer.zero_grad(set_to_none=True)
        out = model(x, task, step=t)
        loss = F.cross_entropy(out, y) / steps
        _check_loss(run, loss, batch)
        loss.backward()
        if online:
            optimizer.step()
        total = total + out.detach()
        loss_sum += loss.item()
    return total / steps, loss_sum


def train_epoch(run: RunState, optimizer, events: Events) -> tuple[float, float]:
    """One pass over the current task's training split (shuffled with the run's generator)."""
    cfg, model, task = run.cfg, run.model, run.benchmark.tasks[run.task]
    model.train()
    order = torch.randperm(len(task.train), generator=run.generator)
    n_batches = math.ceil(len(order) / cfg.batch_size)
    total_loss = total_correct = seen = 0.0
    for b in range(n_batches):
        x, y = task.train.batch(order[b * cfg.batch_size : (b + 1) * cfg.batch_size])
        x, y = x.to(run.device), y.to(run.device)
        optimizer.zero_grad(set_to_none=True)
        out, loss = backward_batch(run, x, y, run.task, optimizer, b + 1)
        if not (cfg.training == "ottt" and cfg.online_update):
            optimizer.step()
        total_loss += loss * len(y)
        total_correct += float((out.argmax(1) == y).sum())
        seen += len(y)
        if events.on_batch:
            events.on_batch(run, b + 1, n_batches, total_loss / seen, 100 * total_correct / seen)
    # a NaN weight can hide behind silent neurons (NaN never crosses the threshold)
    bad = [n for n, p in model.named_parameters() if not torch.isfinite(p).all()]
    if bad:
        raise TrainingDiverged(
            f"parameters {', '.join(bad)} became NaN or infinite in task {run.task}, "
            f"epoch {run.epoch + 1}; try a smaller learning rate (--lr)"
        )
    return total_loss / seen, 100.0 * total_correct / seen


def run_task(run: RunState, plugins: Sequence[Plugin], events: Events) -> None:
    """Train task ``run.task``, evaluate every seen task, and fire the plugins' events."""
    cfg, model, k = run.cfg, run.model, run.task
    task = run.benchmark.tasks[k]
    start = time.perf_counter()
    if not model.shared_head:
        while len(model.heads) <= k:
            model.add_head(task.num_classes)
    for p in plugins:
        p.before_task(run)
    lr = cfg.lr if k == 0 or cfg.lr_later is None else cfg.lr_later
    optimizer = make_optimizer(cfg, trainable_parameters(model, k), lr)
    scheduler = make_scheduler(cfg, optimizer)
    for epoch in range(cfg.epochs):
        run.epoch = epoch
        for p in plugins:
            p.before_epoch(run)
        loss, acc = train_epoch(run, optimizer, events)
        scheduler.step()
        test_acc = evaluate(model, task.test, k, cfg.test_batch_size, run.device)
        if events.on_epoch:
            row = {"task": k, "epoch": epoch + 1, "train_loss": loss, "train_acc": acc}
            events.on_epoch(run, {**row, "test_acc": test_acc})
    for p in plugins:
        p.after_training(run)
    run.acc_matrix.append(evaluate_seen(run))
    for p in plugins:
        p.after_evaluation(run)
    run.seconds.append(time.perf_counter() - start)
    if events.on_task:
        events.on_task(run)


def evaluate_seen(run: RunState) -> list[float]:
    """Accuracy on every task seen so far (one row of the accuracy matrix)."""
    tasks = run.benchmark.tasks[: run.task + 1]
    bs, dev = run.cfg.test_batch_size, run.device
    return [evaluate(run.model, t.test, j, bs, dev) for j, t in enumerate(tasks)]


def run_continual(
    run: RunState, plugins: Sequence[Plugin], events: Events | None = None
) -> RunState:
    """Learn the benchmark's tasks one after another (``cfg.tasks`` of them)."""
    events = events or Events()
    for k in range(len(run.acc_matrix), run.cfg.tasks):
        run.task = k
        run_task(run, plugins, events)
    return run
