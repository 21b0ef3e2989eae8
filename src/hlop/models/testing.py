"""Helpers for tests and benchmarks: put a network in the state it has during a task."""

from __future__ import annotations

from collections.abc import Sequence

from hlop.core.lifecycle import TaskLifecycle
from hlop.models.base import SpikingNetwork


def as_during_task(model: SpikingNetwork, sizes: Sequence[Sequence[int]]) -> SpikingNetwork:
    """Put the circuits in their state during the last task of ``sizes`` (HLOP's task
    lifecycle): every earlier block added and merged, the last one added; circuits learning
    and projecting wherever they have old rows.  Returns ``model``."""
    names = [n for n, _ in model.projected_layers()]
    lifecycle = TaskLifecycle(model.circuits(), names, sizes=None)
    for block in sizes[:-1]:
        lifecycle.begin(list(block))
        lifecycle.end()
    lifecycle.begin(list(sizes[-1]))
    return model
