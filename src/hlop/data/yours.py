"""A benchmark from your own data: per-task datasets, class splits of one dataset, or
permutations of one dataset.

Each function returns a :class:`~hlop.data.containers.Benchmark` the harness runs as its
own (every method, seeds, the validation split, resume, compare and report).  Give the harness
a function that builds it, as a benchmark named ``FILE.py:FUNCTION`` (or
``package.module:FUNCTION``), called with the keywords it takes of ``seed``::

    # mydata.py
    import torch
    from hlop.data import class_split

    def cifar_like(seed):
        train = torch.load("train.pt")          # (images, labels)
        test = torch.load("test.pt")
        return class_split(train, test, classes_per_task=2)

    hlop train mydata.py:cifar_like --model nets.py:cnn --method hlop

A split is a pair ``(inputs, labels)`` of tensors (inputs of any sample shape, floating point
or uint8; labels integers, one per sample) or a ``torch.utils.data.Dataset`` whose items are
``(input, label)`` (read once into memory).  Inputs reach the network as float32, as given.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from hlop.data.containers import Benchmark, DataSplit, Task
from hlop.data.streams import task_permutation
from hlop.errors import DataError

Split = tuple[Tensor, Tensor] | torch.utils.data.Dataset


def as_float(x: Tensor) -> Tensor:
    return x.to(torch.float32)


class Permuted:
    """Float inputs flattened, then their features reordered by ``permutation``."""

    def __init__(self, permutation: Tensor) -> None:
        self.permutation = permutation

    def __call__(self, x: Tensor) -> Tensor:
        return x.reshape(x.shape[0], -1).to(torch.float32)[:, self.permutation.to(x.device)]

    def __repr__(self) -> str:
        return f"Permuted(size={self.permutation.numel()})"


def tensors_of(split: Split, what: str) -> tuple[Tensor, Tensor]:
    """``(inputs, labels)`` of a split given as tensors or a Dataset, checked."""
    if isinstance(split, torch.utils.data.Dataset) and not isinstance(split, tuple | list):
        if len(split) == 0:
            raise DataError(f"{what}: the dataset is empty")
        items = [split[i] for i in range(len(split))]
        try:
            x = torch.stack([torch.as_tensor(item[0]) for item in items])
            y = torch.as_tensor([int(item[1]) for item in items])
        except (TypeError, ValueError, IndexError, RuntimeError) as e:
            raise DataError(
                f"{what}: a dataset's items must be (input, label) with inputs of one shape; {e}"
            ) from None
    elif isinstance(split, tuple | list) and len(split) == 2:
        x, y = split
    else:
        raise DataError(
            f"{what}: expected (inputs, labels) tensors or a torch Dataset, got "
            f"{type(split).__name__}"
        )
    if not isinstance(x, Tensor) or not isinstance(y, Tensor):
        raise DataError(f"{what}: inputs and labels must be tensors")
    if not (x.is_floating_point() or x.dtype == torch.uint8):
        raise DataError(f"{what}: inputs must be floating point or uint8, got {x.dtype}")
    if x.dim() < 2:
        raise DataError(f"{what}: inputs must be (samples, ...), got shape {tuple(x.shape)}")
    if y.dim() != 1 or y.is_floating_point() or y.dtype == torch.bool:
        raise DataError(
            f"{what}: labels must be integers, one per sample; got {y.dtype} of shape "
            f"{tuple(y.shape)}"
        )
    if len(x) != len(y):
        raise DataError(f"{what}: {len(x)} inputs but {len(y)} labels")
    if len(y) and int(y.min()) < 0:
        raise DataError(f"{what}: labels must be >= 0, got {int(y.min())}")
    return x, y.to(torch.int64)


def _check_shapes(splits: Sequence[tuple[Tensor, Tensor]], what: str) -> tuple[int, ...]:
    shapes = {tuple(x.shape[1:]) for x, _ in splits}
    if len(shapes) != 1:
        raise DataError(f"{what}: every task's inputs must have one shape, got {sorted(shapes)}")
    return shapes.pop()


def tasks_from(
    tasks: Sequence[tuple[Split, Split]], *, shared_head: bool = False, name: str = "yours"
) -> Benchmark:
    """One task per ``(train, test)`` pair.  Each task's labels are its classes
    ``0 .. C-1`` (every task the same number C); ``shared_head``: one classifier for every
    task (domain-incremental, as permuted MNIST), else a head per task."""
    if not tasks:
        raise DataError(f"{name}: no tasks")
    out, sizes, splits = [], set(), []
    for t, pair in enumerate(tasks):
        if not isinstance(pair, tuple | list) or len(pair) != 2:
            raise DataError(f"{name}: task {t} must be a (train, test) pair")
        train = tensors_of(pair[0], f"{name}: task {t}'s training data")
        test = tensors_of(pair[1], f"{name}: task {t}'s test data")
        splits += [train, test]
        classes = int(max(train[1].max(), test[1].max() if len(test[1]) else 0)) + 1
        sizes.add(classes)
        out.append(
            Task(
                name=f"{name}-{t}",
                num_classes=classes,
                train=DataSplit(*train, as_float),
                test=DataSplit(*test, as_float),
            )
        )
    if len(sizes) != 1:
        raise DataError(f"{name}: every task must have the same number of classes, got {sizes}")
    shape = _check_shapes(splits, name)
    return Benchmark(name=name, tasks=out, shared_head=shared_head, input_shape=shape)


def class_split(
    train: Split,
    test: Split,
    classes_per_task: int | None = None,
    *,
    groups: Sequence[Sequence[int]] | None = None,
    shared_head: bool = False,
    name: str = "yours",
) -> Benchmark:
    """Tasks of one dataset's classes: ``groups`` (the classes of each task, in order) or
    consecutive groups of ``classes_per_task`` of its sorted classes; each task's classes
    are relabelled ``0 .. C-1`` in the group's order (task-incremental: a head per task)."""
    x, y = tensors_of(train, f"{name}: training data")
    xt, yt = tensors_of(test, f"{name}: test data")
    _check_shapes([(x, y), (xt, yt)], name)
    present = sorted(int(c) for c in torch.unique(y))
    if groups is None:
        if classes_per_task is None or classes_per_task < 1:
            raise DataError(f"{name}: give classes_per_task (>= 1) or groups")
        if len(present) % classes_per_task:
            raise DataError(
                f"{name}: {len(present)} classes are not whole tasks of {classes_per_task}"
            )
        groups = [
            present[i : i + classes_per_task] for i in range(0, len(present), classes_per_task)
        ]
    groups = [[int(c) for c in g] for g in groups]
    if len({len(g) for g in groups}) != 1:
        raise DataError(f"{name}: every task must have the same number of classes: {groups}")
    seen = [c for g in groups for c in g]
    if len(seen) != len(set(seen)):
        raise DataError(f"{name}: a class is in two tasks: {groups}")
    missing = sorted(set(seen) - set(present))
    if missing:
        raise DataError(f"{name}: the training data has no samples of classes {missing}")

    def part(inputs: Tensor, labels: Tensor, group: list[int]) -> DataSplit:
        mine = torch.isin(labels, torch.tensor(group))
        relabel = torch.full((int(labels.max()) + 1,), -1, dtype=torch.int64)
        relabel[torch.tensor(group)] = torch.arange(len(group))
        return DataSplit(inputs[mine], relabel[labels[mine]], as_float)

    tasks = [
        Task(f"{name}-{t}", len(g), part(x, y, g), part(xt, yt, g)) for t, g in enumerate(groups)
    ]
    return Benchmark(
        name=name, tasks=tasks, shared_head=shared_head, input_shape=tuple(x.shape[1:])
    )


def permuted(
    train: Split, test: Split, tasks: int = 10, *, seed: int = 0, name: str = "yours"
) -> Benchmark:
    """``tasks`` tasks of one dataset, each with its own fixed permutation of the (flattened)
    input features (task 0 permuted too, as hlop's permuted MNIST); one shared head."""
    if tasks < 1:
        raise DataError(f"{name}: tasks must be >= 1, got {tasks}")
    x, y = tensors_of(train, f"{name}: training data")
    xt, yt = tensors_of(test, f"{name}: test data")
    _check_shapes([(x, y), (xt, yt)], name)
    size = int(torch.tensor(x.shape[1:]).prod())
    classes = int(max(y.max(), yt.max())) + 1
    out = []
    for t in range(tasks):
        transform = Permuted(task_permutation(seed, t, size))
        out.append(
            Task(f"{name}-{t}", classes, DataSplit(x, y, transform), DataSplit(xt, yt, transform))
        )
    return Benchmark(name=name, tasks=out, shared_head=True, input_shape=(size,))


def call_with_keywords(factory: Callable[..., Any], available: dict[str, Any]) -> Any:
    """``factory`` called with the keywords of ``available`` that it takes."""
    import inspect

    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return factory()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return factory(**available)
    return factory(**{k: v for k, v in available.items() if k in params})
