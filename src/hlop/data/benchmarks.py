"""The benchmarks' builders: permuted MNIST and the class splits of one or several image
data sets, each built on one shared uint8 copy of the images."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
import torch

from hlop.data.containers import Benchmark, DataSplit, Task
from hlop.data.streams import (
    stratified_subset,
    task_permutation,
)
from hlop.data.transforms import (
    CIFAR_MEAN,
    CIFAR_STD,
    FASHION_MNIST_MEAN,
    FASHION_MNIST_STD,
    IMAGENET_MEAN,
    IMAGENET_STD,
    MINIIMAGENET_SIZE,
    MNIST_MEAN,
    MNIST_PADDED_MEAN,
    MNIST_PADDED_STD,
    MNIST_STD,
    NOTMNIST_MEAN,
    NOTMNIST_STD,
    SVHN_MEAN,
    SVHN_STD,
    ImageTransform,
    PermutedTransform,
)

ImageData = Mapping[str, tuple[np.ndarray, np.ndarray]]


def _check_positive_int(value: object, name: str, optional: bool = False) -> None:
    if optional and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        kind = "None or a positive integer" if optional else "a positive integer"
        raise ValueError(f"{name} must be {kind}, got {value!r}")


def _shared_split_tensors(
    split: tuple[np.ndarray, np.ndarray], limit: int | None, seed: int, name: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Turn one (images, labels) pair into the uint8/int64 tensors shared by all tasks."""
    images, labels = (np.asarray(a) for a in split)
    if images.ndim < 2 or labels.ndim != 1 or len(images) != len(labels):
        raise ValueError(
            f"mnist[{name!r}] must be (images [N, H, W], labels [N]); got shapes "
            f"{images.shape} and {labels.shape}"
        )
    if images.dtype != np.uint8:
        raise ValueError(f"mnist[{name!r}] images must be uint8, got {images.dtype}")
    index = stratified_subset(labels, limit, seed)
    if index is not None:
        images, labels = images[index], labels[index]
    images = np.ascontiguousarray(images)
    if not images.flags.writeable:  # torch.from_numpy needs a writeable buffer
        images = images.copy()
    return torch.from_numpy(images), torch.from_numpy(labels.astype(np.int64))


def permuted_mnist(
    mnist: Mapping[str, tuple[np.ndarray, np.ndarray]],
    n_tasks: int = 10,
    seed: int = 2022,
    train_limit: int | None = None,
    test_limit: int | None = None,
) -> Benchmark:
    """Permuted MNIST: ``n_tasks`` tasks, each with its own fixed pixel permutation.

    ``mnist`` is the dict of ``load_dataset("mnist", root)`` or
    :func:`hlop.data.load_embedded_mnist`. All tasks share one uint8 copy of the images; the
    per-task transform normalises, flattens and permutes each batch. ``train_limit`` and
    ``test_limit`` keep a deterministic class-stratified subset of that many samples (the same
    subset for every task).
    """
    _check_positive_int(n_tasks, "n_tasks")
    _check_positive_int(train_limit, "train_limit", optional=True)
    _check_positive_int(test_limit, "test_limit", optional=True)
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    missing = {"train", "test"} - set(mnist)
    if missing:
        raise ValueError(f"mnist must have 'train' and 'test' entries; missing {sorted(missing)}")
    train = _shared_split_tensors(mnist["train"], train_limit, seed, "train")
    test = _shared_split_tensors(mnist["test"], test_limit, seed, "test")
    size = int(np.prod(train[0].shape[1:]))
    if int(np.prod(test[0].shape[1:])) != size:
        raise ValueError("train and test images must have the same size")
    tasks = []
    for task in range(n_tasks):
        transform = PermutedTransform(task_permutation(seed, task, size), MNIST_MEAN, MNIST_STD)
        tasks.append(
            Task(
                name=f"pmnist-{task}",
                num_classes=10,
                train=DataSplit(*train, transform),
                test=DataSplit(*test, transform),
            )
        )
    return Benchmark(name="pmnist", tasks=tasks, shared_head=True, input_shape=(size,))


# --------------------------------------------------------------------------- image benchmarks


#: Normalisation constants of the paper's image benchmarks (see the spec's protocols).
def _image_arrays(data: ImageData, split: str, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Validate ``data[split]`` as uint8 images (N, C, H, W) or (N, H, W) and labels (N,)."""
    if split not in data:
        raise ValueError(f"{name} data must have 'train' and 'test' entries; missing {split!r}")
    images, labels = (np.asarray(a) for a in data[split])
    if images.ndim == 3:
        images = images[:, None]  # a view: (N, H, W) -> (N, 1, H, W)
    if images.ndim != 4 or labels.ndim != 1 or len(images) != len(labels):
        raise ValueError(
            f"{name}[{split!r}] must be (images [N, C, H, W] or [N, H, W], labels [N]); got "
            f"shapes {images.shape} and {labels.shape}"
        )
    if images.dtype != np.uint8:
        raise ValueError(f"{name}[{split!r}] images must be uint8, got {images.dtype}")
    if labels.dtype.kind not in "iu":
        raise ValueError(f"{name}[{split!r}] labels must be integers, got {labels.dtype}")
    return images, labels.astype(np.int64)


def _class_groups(
    labels: np.ndarray, classes_per_task: int, class_order: Sequence[int] | None
) -> list[list[int]]:
    """Split ``class_order`` (default: the sorted classes of ``labels``) into task groups."""
    order = np.unique(labels) if class_order is None else np.asarray(class_order, dtype=np.int64)
    if len(set(order.tolist())) != len(order):
        raise ValueError(f"class_order must not repeat classes: {order.tolist()}")
    if len(order) == 0 or len(order) % classes_per_task:
        raise ValueError(
            f"{len(order)} classes cannot be split into tasks of {classes_per_task} classes"
        )
    return [
        order[i : i + classes_per_task].tolist() for i in range(0, len(order), classes_per_task)
    ]


def _task_positions(
    labels: np.ndarray, groups: list[list[int]], limit: int | None, seed: int, name: str
) -> tuple[list[np.ndarray], np.ndarray]:
    """Per task: the sample indices (data order, limited); and the local label of each class."""
    lookup = np.full(int(max(max(g) for g in groups)) + 1, -1, dtype=np.int64)
    local = np.zeros_like(lookup)
    for task, group in enumerate(groups):
        lookup[group] = task
        local[group] = np.arange(len(group))
    if labels.size and (
        labels.min() < 0 or labels.max() >= len(lookup) or lookup[labels].min() < 0
    ):
        raise ValueError(f"{name}: some labels belong to no task; check class_order")
    positions = []
    for task in range(len(groups)):
        index = np.flatnonzero(lookup[labels] == task)
        subset = stratified_subset(labels[index], limit, seed)
        positions.append(index if subset is None else index[subset])
    return positions, local


def _shared_task_splits(
    images: np.ndarray,
    labels: np.ndarray,
    groups: list[list[int]],
    transform: Callable[[torch.Tensor], torch.Tensor],
    limit: int | None,
    seed: int,
    name: str,
) -> list[DataSplit]:
    """One split per task: uint8 views into a single task-ordered copy of ``images``."""
    positions, local = _task_positions(labels, groups, limit, seed, name)
    order = np.concatenate(positions)
    if np.array_equal(order, np.arange(len(labels))):
        gathered = np.ascontiguousarray(images)  # already task-ordered: no copy
        if not gathered.flags.writeable:
            gathered = gathered.copy()
    else:
        gathered = images[order]
    storage = torch.from_numpy(gathered)
    targets = torch.from_numpy(local[labels[order]])
    bounds = np.cumsum([0] + [len(p) for p in positions])
    return [
        DataSplit(storage[start:stop], targets[start:stop], transform)
        for start, stop in zip(bounds[:-1], bounds[1:], strict=True)
    ]


def _check_common(seed: object, train_limit: object, test_limit: object) -> None:
    _check_positive_int(train_limit, "train_limit", optional=True)
    _check_positive_int(test_limit, "test_limit", optional=True)
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")


def _class_split_tasks(
    data: ImageData,
    dataset: str,
    groups: list[list[int]],
    names: Sequence[str],
    transform: ImageTransform,
    seed: int,
    train_limit: int | None,
    test_limit: int | None,
) -> tuple[list[Task], tuple[int, ...]]:
    """Build one task per class group of one dataset; also return the transformed shape."""
    train = _image_arrays(data, "train", dataset)
    test = _image_arrays(data, "test", dataset)
    shape = train[0].shape[1:]
    if shape != test[0].shape[1:]:
        raise ValueError(
            f"{dataset}: train and test images differ in shape: {shape} and {test[0].shape[1:]}"
        )
    if transform.mean.shape[0] not in (1, shape[0]):
        raise ValueError(
            f"{dataset}: {transform.mean.shape[0]} normalisation values for {shape[0]} channels"
        )
    train_splits = _shared_task_splits(*train, groups, transform, train_limit, seed, dataset)
    test_splits = _shared_task_splits(*test, groups, transform, test_limit, seed, dataset)
    for task_name, split in zip(names, train_splits, strict=True):
        if len(split) == 0:
            raise ValueError(f"task {task_name} has no training samples")
    tasks = [
        Task(name=task_name, num_classes=len(group), train=tr, test=te)
        for task_name, group, tr, te in zip(names, groups, train_splits, test_splits, strict=True)
    ]
    return tasks, transform.output_shape(shape)


def split_classes(
    data: ImageData,
    classes_per_task: int,
    name: str,
    mean: Sequence[float],
    std: Sequence[float],
    *,
    pad: int = 0,
    channels: int | None = None,
    size: int | None = None,
    class_order: Sequence[int] | None = None,
    seed: int = 2022,
    train_limit: int | None = None,
    test_limit: int | None = None,
    shared_head: bool = False,
) -> Benchmark:
    """Split one image dataset into tasks of ``classes_per_task`` classes each.

    Task ``t`` holds the classes ``class_order[t*k:(t+1)*k]`` (default: the sorted classes of
    the training labels), relabelled 0..k-1 in that order; tasks are named ``name-t``. The
    images are kept as one task-ordered uint8 copy (each task's split is a view into it) and
    the transform pads by ``pad`` zero pixels, scales to [0, 1], resizes to ``size``,
    normalises with ``mean``/``std`` and repeats to ``channels``. ``train_limit`` and
    ``test_limit`` keep at most that many samples per task, class-stratified and
    deterministic under ``seed``.
    """
    _check_positive_int(classes_per_task, "classes_per_task")
    _check_common(seed, train_limit, test_limit)
    train_labels = _image_arrays(data, "train", name)[1]
    groups = _class_groups(train_labels, classes_per_task, class_order)
    transform = ImageTransform(mean, std, pad=pad, channels=channels, size=size)
    names = [f"{name}-{task}" for task in range(len(groups))]
    tasks, shape = _class_split_tasks(
        data, name, groups, names, transform, seed, train_limit, test_limit
    )
    return Benchmark(name=name, tasks=tasks, shared_head=shared_head, input_shape=shape)


def split_cifar100(
    cifar100: ImageData,
    seed: int = 2022,
    train_limit: int | None = None,
    test_limit: int | None = None,
) -> Benchmark:
    """10-split CIFAR-100: task = label // 10, local label = label % 10, one head per task."""
    return split_classes(
        cifar100,
        10,
        "cifar100",
        CIFAR_MEAN,
        CIFAR_STD,
        class_order=range(100),
        seed=seed,
        train_limit=train_limit,
        test_limit=test_limit,
    )


#: The 5-Datasets tasks in order: (task name, mean, std, padding).
FIVE_DATASETS: tuple[tuple[str, tuple[float, ...], tuple[float, ...], int], ...] = (
    ("cifar10", CIFAR_MEAN, CIFAR_STD, 0),
    ("mnist", MNIST_PADDED_MEAN, MNIST_PADDED_STD, 2),
    ("svhn", SVHN_MEAN, SVHN_STD, 0),
    ("fashion-mnist", FASHION_MNIST_MEAN, FASHION_MNIST_STD, 2),
    ("notmnist", NOTMNIST_MEAN, NOTMNIST_STD, 0),
)


def five_datasets(
    cifar10: ImageData,
    mnist: ImageData,
    svhn: ImageData,
    fashion_mnist: ImageData,
    notmnist: ImageData,
    *,
    seed: int = 2022,
    train_limit: int | None = None,
    test_limit: int | None = None,
    shared_head: bool = False,
) -> Benchmark:
    """5-Datasets: CIFAR-10, MNIST, SVHN, FashionMNIST, notMNIST, each a 10-class task.

    Every input is 3 x 32 x 32: MNIST and FashionMNIST are padded by 2 zero pixels, grey
    datasets repeated to 3 channels. ``shared_head=True`` gives the domain-incremental variant
    (same tasks, one shared 10-way head). Each dataset keeps its own uint8 storage.
    """
    _check_common(seed, train_limit, test_limit)
    tasks = []
    for (task_name, mean, std, pad), data in zip(
        FIVE_DATASETS, (cifar10, mnist, svhn, fashion_mnist, notmnist), strict=True
    ):
        transform = ImageTransform(mean, std, pad=pad, channels=3)
        new, shape = _class_split_tasks(
            data,
            task_name,
            [list(range(10))],
            [task_name],
            transform,
            seed,
            train_limit,
            test_limit,
        )
        if shape != (3, 32, 32):
            raise ValueError(f"{task_name} images give inputs of shape {shape}, not (3, 32, 32)")
        tasks += new
    name = "five-datasets-domain" if shared_head else "five-datasets"
    return Benchmark(name=name, tasks=tasks, shared_head=shared_head, input_shape=(3, 32, 32))


def miniimagenet_class_order(seed: int, num_classes: int = 100) -> list[int]:
    """The seeded shuffle of the miniImageNet classes that defines the 20 tasks.

    The reference code seeds NumPy's global generator and draws ``permutation(100)``;
    a ``RandomState`` of the same seed draws the same permutation without touching global
    state, so task ``t`` holds the same classes as in the paper.
    """
    return np.random.RandomState(seed).permutation(num_classes).tolist()


def split_miniimagenet(
    mini: ImageData,
    seed: int = 2022,
    train_limit: int | None = None,
    test_limit: int | None = None,
    size: int = MINIIMAGENET_SIZE,
) -> Benchmark:
    """20-split miniImageNet: the 100 classes shuffled under ``seed``, 20 tasks of 5 classes.

    Images are resized to ``size`` x ``size`` (unless already that size) and normalised with
    the ImageNet mean/std.
    """
    _check_common(seed, train_limit, test_limit)
    return split_classes(
        mini,
        5,
        "miniimagenet",
        IMAGENET_MEAN,
        IMAGENET_STD,
        size=size,
        class_order=miniimagenet_class_order(seed),
        seed=seed,
        train_limit=train_limit,
        test_limit=test_limit,
    )


def split_mnist(
    mnist: ImageData,
    seed: int = 2022,
    train_limit: int | None = None,
    test_limit: int | None = None,
) -> Benchmark:
    """Split MNIST: 5 tasks of 2 digits, 1 x 32 x 32 (padded by 2), one head per task."""
    return split_classes(
        mnist,
        2,
        "split-mnist",
        MNIST_PADDED_MEAN,
        MNIST_PADDED_STD,
        pad=2,
        seed=seed,
        train_limit=train_limit,
        test_limit=test_limit,
    )


def split_fashion_mnist(
    fashion_mnist: ImageData,
    seed: int = 2022,
    train_limit: int | None = None,
    test_limit: int | None = None,
) -> Benchmark:
    """Split FashionMNIST: 5 tasks of 2 classes, 1 x 32 x 32 (padded by 2), one head per task."""
    return split_classes(
        fashion_mnist,
        2,
        "split-fashion-mnist",
        FASHION_MNIST_MEAN,
        FASHION_MNIST_STD,
        pad=2,
        seed=seed,
        train_limit=train_limit,
        test_limit=test_limit,
    )
