"""The containers of a continual benchmark: a task's data split, a task, the union of
several tasks' splits (joint training), and the benchmark (its sequence of tasks)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch


def _is_row_index(index) -> bool:
    """Whether ``index`` is a 1-D tensor of row numbers (what ``index_select`` takes)."""
    return (
        isinstance(index, torch.Tensor)
        and index.dim() == 1
        and index.dtype in (torch.int64, torch.int32)
    )


@dataclass
class DataSplit:
    """One split of one task: shared uint8 images, int64 labels and the task's transform."""

    images: torch.Tensor  #: uint8 storage shared between tasks, shape (N, ...)
    labels: torch.Tensor  #: int64 (N,)
    transform: Callable[[torch.Tensor], torch.Tensor]  #: uint8 batch -> float32 network input

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def batch(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (transformed images, labels) of the samples at ``index``."""
        if _is_row_index(index):  # index_select: the same rows, a fraction of the time
            return self.transform(self.images.index_select(0, index)), self.labels.index_select(
                0, index
            )
        return self.transform(self.images[index]), self.labels[index]

    def class_indices(self) -> dict[int, torch.Tensor]:
        """Return the sample indices of each class present, in ascending class order."""
        return {
            int(cls): torch.nonzero(self.labels == cls).flatten()
            for cls in torch.unique(self.labels)
        }

    def task_ids(self, index: torch.Tensor) -> torch.Tensor | None:
        """The task of each sample at ``index``: None, every sample is the split's own task's
        (a :class:`JointSplit` answers one id per sample)."""
        return None


@dataclass
class Task:
    """A task of a continual-learning benchmark."""

    name: str
    num_classes: int
    train: DataSplit | JointSplit
    test: DataSplit | JointSplit


class JointSplit:
    """The union of several tasks' splits (joint training): sample ``i`` of part ``p`` is
    sample ``offset[p] + i``; it keeps its own task's transform (PMNIST: its permutation)
    and its task id, which picks its head."""

    def __init__(self, parts: Sequence[DataSplit], tasks: Sequence[int]) -> None:
        if len(parts) != len(tasks) or not parts:
            raise ValueError(f"{len(parts)} splits for {len(tasks)} task ids")
        self.parts = list(parts)
        self.tasks = torch.tensor(list(tasks), dtype=torch.int64)
        self.offsets = torch.tensor([0, *np.cumsum([len(p) for p in parts]).tolist()])

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def _locate(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(part, position within the part) of each sample at ``index``."""
        index = torch.as_tensor(index, dtype=torch.int64)
        part = torch.searchsorted(self.offsets[1:], index, right=True)
        return part, index - self.offsets[part]

    def batch(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(transformed images, labels) of the samples at ``index``, each through its own
        task's transform, in the order of ``index``."""
        part, local = self._locate(index)
        x = y = None
        for p in torch.unique(part).tolist():
            mine = part == p
            xp, yp = self.parts[p].batch(local[mine])
            if x is None:
                x = xp.new_empty((len(part), *xp.shape[1:]))
                y = yp.new_empty(len(part))
            x[mine], y[mine] = xp, yp
        if x is None:
            raise ValueError("an empty batch")
        return x, y

    def task_ids(self, index: torch.Tensor) -> torch.Tensor:
        """The task id of each sample at ``index``."""
        return self.tasks[self._locate(index)[0]]

    def class_indices(self) -> dict[int, torch.Tensor]:
        """The (joint) indices of each local class label over all parts."""
        found: dict[int, list[torch.Tensor]] = {}
        for p, split in enumerate(self.parts):
            for cls, idx in split.class_indices().items():
                found.setdefault(cls, []).append(idx + self.offsets[p])
        return {cls: torch.cat(found[cls]) for cls in sorted(found)}


def joint_task(tasks: Sequence[Task], ids: Sequence[int]) -> Task:
    """One task holding every task of ``tasks`` (their ids ``ids``) at once; its
    ``num_classes`` is the widest head's."""
    return Task(
        name="+".join(t.name for t in tasks),
        num_classes=max(t.num_classes for t in tasks),
        train=JointSplit([t.train for t in tasks], ids),
        test=JointSplit([t.test for t in tasks], ids),
    )


@dataclass
class Benchmark:
    """A sequence of tasks learned one after another."""

    name: str
    tasks: list[Task]
    shared_head: bool  #: whether one classifier is shared by all tasks (PMNIST)
    input_shape: tuple[int, ...]  #: shape of one transformed sample, e.g. (784,)
