"""Multitask: joint training on every task at once, the upper bound of continual learning."""

from __future__ import annotations

from hlop.loop.state import Plugin, RunState


class Multitask(Plugin):
    """One training step on the union of all the run's tasks' training data: batches
    mix tasks, each sample keeps its own task's input transform (PMNIST: its permutation)
    and goes through its own task's head (multi-head benchmarks; PMNIST shares one head).

    Budget: the run's ``epochs`` over the union, i.e. as many samples and optimiser steps
    in total as a sequential run of as many tasks with as many epochs each.
    The accuracy matrix has one row (every task, its own head); BWT is undefined (null)."""

    name = "multitask"

    def before_run(self, run: RunState) -> None:
        run.stream = [list(range(run.tasks))]
        model = run.model
        if not model.shared_head:  # a head per task, before the step's optimiser is built
            for task in run.benchmark.tasks[len(model.heads) : run.tasks]:
                model.add_head(task.num_classes)
