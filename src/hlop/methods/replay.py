"""Memory replay, combinable with any method (``--replay``)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from hlop.core.settings import Settings, require
from hlop.loop import distributed
from hlop.loop.continual import evaluate_seen, loss_check
from hlop.loop.state import Plugin, RunState


@dataclass
class ReplaySettings(Settings):
    """The ``replay`` section (``--replay``: enabled)."""

    enabled: bool = False
    memory_size: int = 50  # samples kept per class of each task (chosen at random, seeded)
    epochs: int = 1
    batch_size: int = 50  # per task, in each replay step
    lr: float = 0.01
    t_max: int = 20  # cosine schedule of replay, when the run's scheduler is cosine

    def check(self) -> None:
        for name in ("memory_size", "epochs", "batch_size", "t_max"):
            value = getattr(self, name)
            require(value >= 1, f"replay.{name} must be >= 1, got {value}")
        require(self.lr > 0, f"replay.lr must be > 0, got {self.lr}")


class Replay(Plugin):
    """After each task k >= 1 (and after HLOP's merge), train on a memory of
    ``memory_size`` samples per class of every seen task, without projection, then
    re-evaluate the task's row (of the task-aware and the task-agnostic matrix).  One
    optimiser step accumulates a batch from every seen task's memory.  The memory is drawn
    at random per class with the run's seed (the reference code keeps the first samples of
    each class).

    Args: see :class:`ReplaySettings` (``memory_size``, ``epochs``, ``batch_size``, ``lr``,
    ``t_max``)."""

    name = "replay"

    def __init__(
        self,
        memory_size: int = 50,
        epochs: int = 1,
        batch_size: int = 50,
        lr: float = 0.01,
        t_max: int = 20,
    ) -> None:
        self.settings = ReplaySettings(True, memory_size, epochs, batch_size, lr, t_max)
        self.memory: list[torch.Tensor] = []  # indices into each task's training split

    def state_dict(self) -> dict:
        return {"memory": list(self.memory)}

    def load_state_dict(self, state: dict, run: RunState) -> None:
        self.memory = list(state.get("memory", []))

    def select(self, run: RunState, task: int) -> torch.Tensor:
        """Indices of ``memory_size`` random samples of each class of ``task``."""
        split = run.benchmark.tasks[task].train
        g = torch.Generator().manual_seed(run.seed * 1009 + task)
        size = self.settings.memory_size
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
        r, model, optimisation = self.settings, run.model, run.optimisation
        optimizer = optimisation.make_optimizer(model.trainable_parameters(), lr=r.lr)
        if optimisation.scheduler == "cosine":
            scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, r.t_max)
        else:
            scheduler = optimisation.make_scheduler(optimizer)
        longest = max(len(m) for m in self.memory)
        world = distributed.world_size()
        check = loss_check(run, 0)
        for _ in range(r.epochs):
            model.train()
            order = torch.randperm(longest, generator=run.generator)
            for start in range(0, longest, r.batch_size):
                optimizer.zero_grad(set_to_none=True)
                for j, memory in enumerate(self.memory[: run.task + 1]):
                    pick = order[start : start + r.batch_size]
                    pick = pick[pick < len(memory)]
                    if len(pick):
                        x, y = run.benchmark.tasks[j].train.batch(memory[pick])
                        model.rule.train_batch(model, x.to(run.device), y.to(run.device), j, check)
                # every worker replays the whole (small) memory: averaging the identical
                # gradients keeps the workers equal where kernels are not deterministic
                distributed.average_gradients(model.trainable_parameters(), share=1.0 / world)
                optimizer.step()
            scheduler.step()
        run.record_row(evaluate_seen(run))  # both matrices' rows of the step
