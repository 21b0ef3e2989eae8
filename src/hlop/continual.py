"""The continual-learning loop.  Methods, outputs and progress plug into its events.

before_run               (a method may change the stream; Multitask: one joint step)
For each step ``k`` of the stream (by default task ``k``)::

    model.begin_task(k)   (a head for a new task; from task 1 on, only weight matrices train)
    before_task           (HLOP: add a circuit block; project from task 1 on)
    for each epoch:
        before_epoch      (HLOP: circuits learn once ``start_epochs`` have passed)
        for each batch:   the training rule's forward/backward, after_backward (gradients
                          may be changed here), an optimiser step, after_batch
        evaluate the current task; after_epoch (a metrics row)
    after_training        (HLOP: circuits stop learning)
    evaluate every seen task (its own head, no projection) -> row k of the accuracy matrix
    after_evaluation      (HLOP: merge the circuits; replay: retrain on memory, re-evaluate)
    after_task            (outputs: checkpoint, results)
    ...
    after_run             (status "complete", or "failed" when an error stops the run)

The stream lists the tasks trained at each step: one task per step (continual learning),
or every task in one step (joint training, Multitask: batches mix tasks and each sample
goes through its own task's head).  Each step gets a fresh optimiser and scheduler.  How a
batch is simulated and backpropagated (DSR, BPTT, OTTT) is the network's training rule
(:mod:`hlop.training`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from .config import Config
from .data.benchmarks import Benchmark, JointSplit, Split, Task, joint_task
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
    #: the tasks trained at each step (``task`` is the step); default: task k at step k
    stream: list[list[int]] = field(default_factory=list)
    #: one entry per finished task when circuits are measured (:mod:`hlop.diagnostics`)
    circuit_diagnostics: list[dict] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.stream:
            self.stream = [[k] for k in range(self.cfg.tasks)]

    def learnt(self) -> int:
        """How many tasks the rows of the accuracy matrix have learnt."""
        return sum(len(step) for step in self.stream[: len(self.acc_matrix)])


class Plugin:
    """Reacts to the loop's events (override those it needs): a continual-learning method,
    the run's outputs, its progress display."""

    name = "plugin"
    #: a method whose projection lives in the model's lateral circuits (HLOP, GPM): the
    #: circuits are measured after each task (:mod:`hlop.diagnostics`)
    uses_circuits = False

    def before_run(self, run: RunState) -> None:
        """Before the first step (also when a run resumes); a method may set ``run.stream``."""

    def before_task(self, run: RunState) -> None: ...

    def before_epoch(self, run: RunState) -> None: ...

    def after_backward(self, run: RunState) -> None:
        """Gradients of the batch are in ``.grad``; the optimiser steps next (a penalty's
        gradient or a gradient mask goes here).  Not called between the per-step updates of
        OTTT's online update."""

    def after_batch(self, run: RunState, batch: int, batches: int, loss: float, acc: float):
        """``loss`` and ``acc`` (percent) are the epoch's running means."""

    def after_epoch(self, run: RunState, row: dict) -> None:
        """``row``: task, epoch (from 1), train_loss, train_acc, test_acc."""

    def after_training(self, run: RunState) -> None: ...

    def after_evaluation(self, run: RunState) -> None: ...

    def after_task(self, run: RunState) -> None: ...

    def after_run(self, run: RunState, status: str) -> None:
        """``status``: ``"complete"``, or ``"failed"`` when an error stops the run."""


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


def heads_of(split: Split | JointSplit, index: torch.Tensor, task: int) -> int | torch.Tensor:
    """The head of the samples at ``index``: ``task``, or one per sample in a joint split."""
    ids = split.task_ids(index)
    return task if ids is None else ids


def step_task(run: RunState) -> Task:
    """The task trained at step ``run.task``: one of the benchmark's, or the union of several."""
    ids = run.stream[run.task]
    tasks = run.benchmark.tasks
    return tasks[ids[0]] if len(ids) == 1 else joint_task([tasks[t] for t in ids], ids)


@torch.no_grad()
def evaluate(
    model: SpikingNetwork, split: Split | JointSplit, task: int, batch_size: int, device
) -> float:
    """Accuracy (percent) on ``split``, batches in data order, no projection."""
    model.eval()
    correct = 0
    for start in range(0, len(split), batch_size):
        index = torch.arange(start, min(start + batch_size, len(split)))
        x, y = split.batch(index)
        out = model(x.to(device), heads_of(split, index, task))
        correct += int((out.argmax(1) == y.to(device)).sum())
    return 100.0 * correct / max(len(split), 1)


def loss_check(run: RunState, batch: int):
    """A check that stops the run when a batch's loss is NaN or infinite."""

    def check(loss: torch.Tensor) -> None:
        if not torch.isfinite(loss):
            raise TrainingDiverged(
                f"the loss became {loss.item()} in task {run.task}, epoch {run.epoch + 1}, "
                f"batch {batch}; try a smaller learning rate (--lr)"
            )

    return check


def train_epoch(run: RunState, optimizer, plugins: Sequence[Plugin]) -> tuple[float, float]:
    """One pass over the current step's training split (shuffled with the run's generator)."""
    cfg, model, task = run.cfg, run.model, step_task(run)
    rule = model.rule
    model.train()
    order = torch.randperm(len(task.train), generator=run.generator)
    n_batches = math.ceil(len(order) / cfg.batch_size)
    total_loss = total_correct = seen = 0.0
    for b in range(n_batches):
        index = order[b * cfg.batch_size : (b + 1) * cfg.batch_size]
        x, y = task.train.batch(index)
        x, y = x.to(run.device), y.to(run.device)
        heads = heads_of(task.train, index, run.task)
        optimizer.zero_grad(set_to_none=True)
        out, loss = rule.train_batch(model, x, y, heads, loss_check(run, b + 1), optimizer)
        if not rule.updates_within_batch:
            for p in plugins:
                p.after_backward(run)
            optimizer.step()
        total_loss += loss * len(y)
        total_correct += float((out.argmax(1) == y).sum())
        seen += len(y)
        for p in plugins:
            p.after_batch(run, b + 1, n_batches, total_loss / seen, 100 * total_correct / seen)
    # a NaN weight can hide behind silent neurons (NaN never crosses the threshold)
    bad = [n for n, p in model.named_parameters() if not torch.isfinite(p).all()]
    if bad:
        raise TrainingDiverged(
            f"parameters {', '.join(bad)} became NaN or infinite in task {run.task}, "
            f"epoch {run.epoch + 1}; try a smaller learning rate (--lr)"
        )
    return total_loss / seen, 100.0 * total_correct / seen


def run_task(run: RunState, plugins: Sequence[Plugin]) -> None:
    """Train step ``run.task``, evaluate every seen task, and fire the plugins' events."""
    cfg, model, k = run.cfg, run.model, run.task
    task = step_task(run)
    start = time.perf_counter()
    model.begin_task(k, task.num_classes)
    for p in plugins:
        p.before_task(run)
    lr = cfg.lr if k == 0 or cfg.lr_later is None else cfg.lr_later
    optimizer = make_optimizer(cfg, model.trainable_parameters(), lr)
    scheduler = make_scheduler(cfg, optimizer)
    for epoch in range(cfg.epochs):
        run.epoch = epoch
        for p in plugins:
            p.before_epoch(run)
        loss, acc = train_epoch(run, optimizer, plugins)
        scheduler.step()
        test_acc = evaluate(model, task.test, k, cfg.test_batch_size, run.device)
        row = {"task": k, "epoch": epoch + 1, "train_loss": loss, "train_acc": acc}
        for p in plugins:
            p.after_epoch(run, {**row, "test_acc": test_acc})
    for p in plugins:
        p.after_training(run)
    run.acc_matrix.append(evaluate_seen(run))
    for p in plugins:
        p.after_evaluation(run)
    run.seconds.append(time.perf_counter() - start)
    for p in plugins:
        p.after_task(run)


def evaluate_seen(run: RunState) -> list[float]:
    """Accuracy on every task seen so far, each with its own head (a row of the matrix)."""
    seen = [t for step in run.stream[: run.task + 1] for t in step]
    bs, dev, tasks = run.cfg.test_batch_size, run.device, run.benchmark.tasks
    return [evaluate(run.model, tasks[t].test, t, bs, dev) for t in seen]


def run_continual(run: RunState, plugins: Sequence[Plugin]) -> RunState:
    """Learn the benchmark's tasks (``cfg.tasks`` of them) step by step along the stream,
    from the first step not yet in the accuracy matrix."""
    try:
        for p in plugins:
            p.before_run(run)
        for k in range(len(run.acc_matrix), len(run.stream)):
            run.task = k
            run_task(run, plugins)
    except BaseException:
        for p in plugins:
            p.after_run(run, "failed")
        raise
    for p in plugins:
        p.after_run(run, "complete")
    return run
