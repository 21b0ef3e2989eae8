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
    after_training        (HLOP: the blocks are fitted, stop learning and merge)
    evaluate every seen task (no projection) -> row k of the accuracy matrix (task-aware:
                          its own head) and, with a head per task, of the task-agnostic one
                          (the argmax over every seen head's scores)
    after_evaluation      (replay: retrain on memory, re-evaluate; circuit diagnostics)
    after_task            (outputs: checkpoint, results)
    ...
    after_run             (status "complete", "interrupted" (KeyboardInterrupt, a signal),
                          or "failed" when an error stops the run)

A saved run continues at a :class:`Resume` point (``run_continual(run, plugins, resume)``):
at the start of a step (the step runs as above), or inside a step after ``epoch`` epochs
(``begin_task`` and ``before_task`` are not run again: their effects are part of the
restored model and plugins; the optimiser and scheduler continue from their saved states).

The stream lists the tasks trained at each step: one task per step (continual learning),
or every task in one step (joint training, Multitask: batches mix tasks and each sample
goes through its own task's head).  Each step gets a fresh optimiser and scheduler.  How a
batch is simulated and backpropagated (DSR, BPTT, OTTT) is the network's training rule
(:mod:`hlop.spiking.training`).
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

from hlop.core.circuit import LateralCircuit
from hlop.data.containers import DataSplit, JointSplit, Task, joint_task
from hlop.loop import distributed, memory
from hlop.loop.state import AccuracyRow, Plugin, Resume, RunState, set_rng_state

if TYPE_CHECKING:  # the loop drives the network by its names
    from hlop.models.base import SpikingNetwork

__all__ = [
    "TrainingDiverged",
    "evaluate",
    "evaluate_among",
    "evaluate_seen",
    "loss_check",
    "run_continual",
    "run_task",
    "train_epoch",
]


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; results of completed tasks are kept."""


def heads_of(split: DataSplit | JointSplit, index: torch.Tensor, task: int) -> int | torch.Tensor:
    """The head of the samples at ``index``: ``task``, or one per sample in a joint split."""
    ids = split.task_ids(index)
    return task if ids is None else ids


def step_task(run: RunState) -> Task:
    """The task trained at step ``run.task``: one of the benchmark's, or the union of several."""
    ids = run.stream[run.task]
    tasks = run.benchmark.tasks
    return tasks[ids[0]] if len(ids) == 1 else joint_task([tasks[t] for t in ids], ids)


def model_version(model: torch.nn.Module) -> tuple:
    """Changes whenever a parameter or buffer is replaced or changed in place (optimiser
    steps, loads): equal versions mean equal weights, so equal evaluations.  The lateral
    circuits' buffers are left out: an evaluation never reads them (no projection, no
    learning), so a task's blocks fitted and merged after its training keep its last test."""
    circuits = {
        id(b) for m in model.modules() if isinstance(m, LateralCircuit) for b in m.buffers()
    }
    tensors = itertools.chain(model.parameters(), model.buffers())
    return tuple((id(t), t._version) for t in tensors if id(t) not in circuits)


@torch.no_grad()
def evaluate(
    model: SpikingNetwork, split: DataSplit | JointSplit, task: int, batch_size: int, device
) -> float:
    """Accuracy (percent) on ``split``, batches in data order, no projection."""
    model.eval()
    correct = 0
    # several workers: each takes a part of the batches, and the counts are summed
    for start in distributed.shard(range(0, len(split), batch_size)):
        index = torch.arange(start, min(start + batch_size, len(split)))
        x, y = split.batch(index)
        out = model(x.to(device), heads_of(split, index, task))
        correct += int((out.argmax(1) == y.to(device)).sum())
    correct = distributed.sum_over_workers(correct)
    return 100.0 * correct / max(len(split), 1)


@torch.no_grad()
def evaluate_among(
    model: SpikingNetwork,
    split: DataSplit,
    heads: Sequence[int],
    widths: Sequence[int],
    own: int,
    batch_size: int,
    device,
) -> tuple[float, float]:
    """Task-aware and task-agnostic accuracy (percent) on ``split``, the data of task
    ``heads[own]``, from one pass through the heads of the tasks ``heads`` (``widths``: their
    classes), their scores concatenated in that order (``model(x, heads)``).

    Task-aware: the argmax over the task's own head's scores (:func:`evaluate`'s).
    Task-agnostic: the argmax over all of them, against the sample's label shifted by the
    classes of the heads before its own, ``sum(widths[:own]) + y``.  Batches in data order,
    no projection."""
    lo = sum(widths[:own])
    hi = lo + widths[own]
    model.eval()
    aware = agnostic = 0
    # several workers: each takes a part of the batches, and the counts are summed
    for start in distributed.shard(range(0, len(split), batch_size)):
        index = torch.arange(start, min(start + batch_size, len(split)))
        x, y = split.batch(index)
        y = y.to(device)
        scores = model(x.to(device), list(heads))
        if scores.shape[1] != sum(widths):
            raise ValueError(
                f"the heads of tasks {list(heads)} gave {scores.shape[1]} scores; their tasks "
                f"have {sum(widths)} classes"
            )
        aware += int((scores[:, lo:hi].argmax(1) == y).sum())
        agnostic += int((scores.argmax(1) == y + lo).sum())
    aware, agnostic = distributed.sum_over_workers(aware, agnostic)
    n = max(len(split), 1)
    return 100.0 * aware / n, 100.0 * agnostic / n


def loss_check(run: RunState, batch: int):
    """A check that stops the run when a batch's loss is NaN or infinite."""

    def check(loss: torch.Tensor) -> None:
        if not torch.isfinite(loss):
            raise TrainingDiverged(
                f"the loss became {loss.item()} in task {run.task}, epoch {run.epoch + 1}, "
                f"batch {batch}; try a smaller learning rate (--lr)"
            )

    return check


@torch.no_grad()
def non_finite_parameters(model: torch.nn.Module) -> list[str]:
    """The names of the parameters holding a NaN or an infinity.  A parameter's sum is
    finite when all its values are (a NaN or an infinity carries through a sum); only a sum
    that is not (a non-finite value, or finite ones that overflow) is checked value by value:
    one pass of a reduction instead of a mask per parameter, and one read of the results."""
    named = list(model.named_parameters())
    floating = [(n, p) for n, p in named if p.is_floating_point()]
    suspects = [(n, p) for n, p in named if not p.is_floating_point()]
    if len({p.device for _, p in floating}) == 1:  # one device: one stack, one read
        sums = torch.stack([p.sum(dtype=torch.float32) for _, p in floating])
        if not bool(torch.isfinite(sums).all()):
            finite = torch.isfinite(sums).tolist()
            suspects += [np for np, ok in zip(floating, finite, strict=True) if not ok]
    else:
        suspects += floating
    bad = {n for n, p in suspects if not torch.isfinite(p).all()}
    return [n for n, _ in named if n in bad]


def train_epoch(run: RunState, optimizer, plugins: Sequence[Plugin]) -> tuple[float, float]:
    """One pass over the current step's training split (shuffled with the run's generator).

    ``run.settings.batch_size`` is the global batch: several workers each train on their part of
    every batch (:mod:`hlop.loop.distributed`), and average their gradients before the plugins
    see them; loss and accuracy are those of the global batches."""
    bs, model, task = run.settings.batch_size, run.model, step_task(run)
    rule = model.rule
    model.train()
    order = torch.randperm(len(task.train), generator=run.generator)
    n_batches = math.ceil(len(order) / bs)
    total_loss = total_correct = seen = 0.0
    for b in range(n_batches):
        index, share = distributed.shard_batch(order[b * bs : (b + 1) * bs])
        x, y = task.train.batch(index)
        x, y = x.to(run.device), y.to(run.device)
        heads = heads_of(task.train, index, run.task)
        optimizer.zero_grad(set_to_none=True)
        with distributed.sharing(share):
            out, loss = rule.train_batch(model, x, y, heads, loss_check(run, b + 1), optimizer)
        if not rule.updates_within_batch:
            if distributed.is_distributed():  # (the parameters' list costs a walk of the model)
                distributed.average_gradients(model.trainable_parameters(), share)
            for p in plugins:
                p.after_backward(run)
            optimizer.step()
        rows = len(y) if share else 0  # a stand-in row (share 0) counts for nothing
        correct = float((out.argmax(1) == y).sum()) if share else 0.0
        loss_sum, correct, rows = distributed.sum_over_workers(loss * rows, correct, rows)
        total_loss += loss_sum
        total_correct += correct
        seen += rows
        for p in plugins:
            p.after_batch(run, b + 1, n_batches, total_loss / seen, 100 * total_correct / seen)
    # a NaN weight can hide behind silent neurons (NaN never crosses the threshold)
    bad = non_finite_parameters(model)
    if bad:
        raise TrainingDiverged(
            f"parameters {', '.join(bad)} became NaN or infinite in task {run.task}, "
            f"epoch {run.epoch + 1}; try a smaller learning rate (--lr)"
        )
    return total_loss / seen, 100.0 * total_correct / seen


def run_task(run: RunState, plugins: Sequence[Plugin], resume: Resume | None = None) -> None:
    """Train step ``run.task``, evaluate every seen task, and fire the plugins' events;
    ``resume``: continue the step from a saved point inside it."""
    settings, model, k = run.settings, run.model, run.task
    task = step_task(run)
    memory.release_freed_memory()
    within = resume is not None and resume.within_step
    run.task_started = time.perf_counter() - (resume.elapsed if resume else 0.0)
    if not within:
        model.begin_task(k, task.num_classes)
        for p in plugins:
            p.before_task(run)
    optimizer = run.optimisation.make_optimizer(model.trainable_parameters(), step=k)
    scheduler = run.optimisation.make_scheduler(optimizer)
    first = 0
    if within:
        optimizer.load_state_dict(resume.optimizer)
        scheduler.load_state_dict(resume.scheduler)
        first = resume.epoch
    run.optimizer, run.scheduler = optimizer, scheduler
    if model.rule.updates_within_batch:  # OTTT's online update: average before each step
        distributed.average_before_steps(optimizer)
    for epoch in range(first, settings.epochs):
        run.epoch = epoch
        for p in plugins:
            p.before_epoch(run)
        loss, acc = train_epoch(run, optimizer, plugins)
        scheduler.step()
        test_acc = evaluate(model, task.test, k, settings.test_batch_size, run.device)
        if len(run.stream[k]) == 1:
            run.last_test = (model_version(model), run.stream[k][0], test_acc)
        row = {"task": k, "epoch": epoch + 1, "train_loss": loss, "train_acc": acc}
        for p in plugins:
            p.after_epoch(run, {**row, "test_acc": test_acc})
    for p in plugins:
        p.after_training(run)
    run.record_row(evaluate_seen(run))
    memory.release_freed_memory()
    for p in plugins:
        p.after_evaluation(run)
    run.seconds.append(time.perf_counter() - run.task_started)
    run.optimizer = run.scheduler = None
    for p in plugins:
        p.after_task(run)


def evaluate_seen(run: RunState) -> AccuracyRow:
    """Accuracy on every task seen so far, in the stream's order: a row of each accuracy
    matrix.  Task-aware: each task through its own head.  Task-agnostic, where the run
    records it (``run.acc_matrix_agnostic`` is not None: a head per task): the argmax over
    the scores of every seen task's head (:func:`evaluate_among`), in the same pass."""
    seen = [t for step in run.stream[: run.task + 1] for t in step]
    bs, dev, tasks = run.settings.test_batch_size, run.device, run.benchmark.tasks
    known = {}  # the current task's last epoch was tested on these very weights
    same = run.last_test is not None and run.last_test[0] == model_version(run.model)
    if distributed.is_distributed():  # evaluation is collective: every worker decides alike
        same = distributed.sum_over_workers(int(same)) == distributed.world_size()
    if same:
        known[run.last_test[1]] = run.last_test[2]
    if run.acc_matrix_agnostic is None:
        return AccuracyRow(
            [
                known[t] if t in known else evaluate(run.model, tasks[t].test, t, bs, dev)
                for t in seen
            ]
        )
    widths = [tasks[t].num_classes for t in seen]
    aware, agnostic = [], []
    for i, t in enumerate(seen):  # the agnostic figure needs every task's pass, its own too
        own, among = evaluate_among(run.model, tasks[t].test, seen, widths, i, bs, dev)
        aware.append(known.get(t, own))
        agnostic.append(among)
    return AccuracyRow(aware, agnostic)


def run_continual(
    run: RunState, plugins: Sequence[Plugin], resume: Resume | None = None
) -> RunState:
    """Learn the benchmark's tasks (``run.settings.tasks`` of them) step by step along the stream,
    from the first step not yet in the accuracy matrix.

    ``resume``: the point where a saved run continues; its model, records and plugins are
    already restored into ``run`` and ``plugins``, and the random generators are restored
    here, after ``before_run``."""
    if resume is not None and resume.task != len(run.acc_matrix):
        raise ValueError(
            f"resume point at step {resume.task}, but {len(run.acc_matrix)} steps are done"
        )
    if distributed.is_distributed():  # each Hebbian update is that of the global batch
        for c in run.model.circuits():
            c.reducer = distributed.reduce_hebbian
    try:
        for p in plugins:
            p.before_run(run)
        if run.acc_matrix_agnostic is None and not run.acc_matrix and run.model.task_heads:
            run.acc_matrix_agnostic = []  # a head per task: the task-agnostic matrix too
        if resume is not None and resume.rng is not None:
            set_rng_state(resume.rng, run.generator)
        for k in range(len(run.acc_matrix), len(run.stream)):
            run.task = k
            run_task(run, plugins, resume if resume is not None and resume.task == k else None)
    except BaseException as e:
        status = "interrupted" if isinstance(e, KeyboardInterrupt) else "failed"
        for p in plugins:
            p.after_run(run, status)
        raise
    for p in plugins:
        p.after_run(run, "complete")
    return run
