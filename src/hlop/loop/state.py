"""What the continual loop and its plugins share: the run's state, the plugin events, the
point a saved run resumes from, and the random generators' states."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

import torch

from hlop.core.settings import Settings, require
from hlop.data.containers import Benchmark
from hlop.loop.optimisation import Optimisation

if TYPE_CHECKING:  # the loop drives the network by its names
    from hlop.models.base import SpikingNetwork


@dataclass
class LoopSettings(Settings):
    """The loop's own settings: how many tasks of the benchmark it learns, the epochs of each
    step, the (global) training and evaluation batch sizes, and the run's seed (shuffling;
    the methods' samples draw from generators seeded from it)."""

    tasks: int = 10
    epochs: int = 1
    batch_size: int = 64
    test_batch_size: int = 64
    seed: int = 2022

    def check(self) -> None:
        for name in ("tasks", "epochs", "batch_size", "test_batch_size"):
            value = getattr(self, name)
            require(value >= 1, f"{name} must be >= 1, got {value}")


class AccuracyRow(NamedTuple):
    """The accuracies (percent) of every task seen after a step, in the stream's order: a row
    of the accuracy matrices (``hlop.loop.continual.evaluate_seen``).

    ``aware``: task-aware (task-incremental), each task through its own head.  ``agnostic``:
    task-agnostic (class-incremental), the prediction the argmax over the scores of every
    seen task's head; None where it is not recorded (see :attr:`RunState.acc_matrix_agnostic`).
    """

    aware: list[float]
    agnostic: list[float] | None = None


@dataclass
class RunState:
    """What the loop and its plugins share.

    ``acc_matrix`` is the task-aware accuracy matrix, row ``k`` after step ``k``;
    ``acc_matrix_agnostic`` its task-agnostic twin (:class:`AccuracyRow`), which the loop
    records where the model has a head per task (``model.task_heads``).  It is None where it
    is not recorded: tasks that share one head (permuted MNIST, domain-incremental: the two
    matrices would be the same), or a run resumed from a state saved before hlop recorded it
    (its earlier rows cannot be evaluated again).
    """

    settings: LoopSettings
    model: SpikingNetwork
    benchmark: Benchmark
    device: torch.device
    #: the optimiser and learning-rate schedule of every step
    optimisation: Optimisation = field(default_factory=Optimisation)
    task: int = 0
    epoch: int = 0
    acc_matrix: list[list[float]] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    generator: torch.Generator = field(default_factory=torch.Generator)
    #: the tasks trained at each step (``task`` is the step); by default task k at step k
    stream: list[list[int]] = field(default_factory=list)
    #: the current step's optimiser and scheduler (None between steps)
    optimizer: torch.optim.Optimizer | None = None
    scheduler: Any = None
    #: ``time.perf_counter()`` when the current step started (earlier when it resumed)
    task_started: float = 0.0
    #: the rows each finished task added to each circuit (HLOP; sizes found or given)
    circuit_blocks: list[list[int]] = field(default_factory=list)
    #: one entry per finished task when circuits are measured (``hlop.run.diagnostics``)
    circuit_diagnostics: list[dict] = field(default_factory=list)
    #: the latest test accuracy of the current task, as (model version, task, accuracy)
    last_test: tuple[tuple, int, float] | None = None
    #: the task-agnostic accuracy matrix (see the class's docstring; the loop starts it
    #: where the model has a head per task)
    acc_matrix_agnostic: list[list[float]] | None = None

    def __post_init__(self) -> None:
        if not self.stream:
            self.stream = [[k] for k in range(self.settings.tasks)]

    def record_row(self, row: AccuracyRow) -> None:
        """Make ``row`` row ``task`` of the accuracy matrices: appended after the previous
        steps' rows, or replacing the step's own row (replay evaluates it again)."""
        k = self.task
        if not k <= len(self.acc_matrix) <= k + 1:
            raise ValueError(f"row {k} of an accuracy matrix of {len(self.acc_matrix)} rows")
        self.acc_matrix[k:] = [list(row.aware)]
        if self.acc_matrix_agnostic is None:
            return
        if row.agnostic is None or len(self.acc_matrix_agnostic) not in (k, k + 1):
            raise ValueError(
                f"step {k}: the task-agnostic matrix has {len(self.acc_matrix_agnostic)} rows "
                f"and the row is {'missing' if row.agnostic is None else 'given'}"
            )
        self.acc_matrix_agnostic[k:] = [list(row.agnostic)]

    @property
    def tasks(self) -> int:
        """The number of tasks the run learns."""
        return self.settings.tasks

    @property
    def seed(self) -> int:
        return self.settings.seed

    def learnt(self) -> int:
        """How many tasks the rows of the accuracy matrix have learnt."""
        return sum(len(step) for step in self.stream[: len(self.acc_matrix)])


class Plugin:
    """Reacts to the loop's events (override those it needs): a continual-learning method,
    the run's outputs, its progress display."""

    name = "plugin"
    #: a method whose projection lives in the model's lateral circuits (HLOP, GPM), whose
    #: circuits are measured after each task (``hlop.run.diagnostics``)
    uses_circuits = False

    def check(self, run: RunState) -> None:
        """Raise :class:`hlop.errors.ConfigError` if this plugin cannot run with ``run``'s
        network, training rule or settings; called once the network is built, before
        anything trains or is written."""

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
        """``status``: ``"complete"``, ``"interrupted"`` (KeyboardInterrupt, SIGINT or
        SIGTERM) or ``"failed"`` when an error stops the run."""

    def state_dict(self) -> dict:
        """What a resumed run needs of this plugin: plain tensors, lists, dicts, numbers and
        strings (saved with ``torch.save``, read back with ``weights_only=True``)."""
        return {}

    def load_state_dict(self, state: dict, run: RunState) -> None:
        """Take back :meth:`state_dict` (empty when the saved run had no such plugin).
        Called on a fresh ``run`` before the model's saved weights are loaded into it, so a
        plugin that attaches modules to the model rebuilds them here."""


@dataclass
class Resume:
    """Where a saved run continues: step ``task`` after ``epoch`` of its epochs.

    ``optimizer`` and ``scheduler`` are the step's saved states, None at the start of a
    step; ``rng`` the random generators' states (:func:`rng_state`); ``elapsed`` the
    seconds the step had already taken."""

    task: int
    epoch: int = 0
    optimizer: dict | None = None
    scheduler: dict | None = None
    rng: dict | None = None
    elapsed: float = 0.0

    @property
    def within_step(self) -> bool:
        return self.optimizer is not None


def rng_state(generator: torch.Generator) -> dict:
    """Every random generator a run draws from, as uint8 tensors: the run's (shuffling),
    torch's global one (initialisation of heads and circuit blocks) and CUDA's.  (Nothing
    draws from numpy's global generator: the data use seeded generators of their own.)"""
    state = {"run": generator.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict, generator: torch.Generator) -> None:
    """Restore :func:`rng_state`'s generators (CUDA's where this machine has as many devices)."""
    generator.set_state(state["run"])
    torch.set_rng_state(state["torch"])
    cuda = state.get("cuda")
    if cuda and torch.cuda.is_available() and torch.cuda.device_count() == len(cuda):
        torch.cuda.set_rng_state_all(cuda)
