"""HLOP: Hebbian learning based orthogonal projection (the paper's method)."""

from __future__ import annotations

from ..continual import Plugin, RunState


class HLOP(Plugin):
    """Each task adds a block of lateral neurons to every circuit (``hlop.sizes[task]``);
    they learn from the layer's input while the task trains (from epoch
    ``hlop.start_epochs`` on); from task 1 on, weight updates are projected orthogonally to
    the merged old subspace.  After the task's evaluation the circuits merge."""

    name = "hlop"
    uses_circuits = True

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
