"""Helpers for tests and benchmarks: put a network in the state it has during a task."""

from __future__ import annotations

from collections.abc import Sequence

from hlop.models.base import SpikingNetwork


def as_during_task(model: SpikingNetwork, sizes: Sequence[Sequence[int]]) -> SpikingNetwork:
    """Put the circuits in their state during the last task of ``sizes``: every earlier
    block added and merged, the last one added; circuits learning and, after task 0,
    projecting.  Returns ``model``."""
    for k, block in enumerate(sizes):
        if k:
            model.merge_circuits()
        model.add_subspaces(list(block))
    for c in model.circuits():
        c.learning = True
        c.projecting = len(sizes) > 1
    return model
