"""Continual-learning benchmarks built on one shared uint8 copy of the images."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

MNIST_MEAN = 0.1307
MNIST_STD = 0.3081

# Distinct streams of the seed derivation, so task permutations and subsets never collide.
_PERMUTATION_STREAM = 0
_SUBSET_STREAM = 1
_VALIDATION_STREAM = 3


@dataclass
class DataSplit:
    """One split of one task: shared uint8 images, int64 labels and the task's transform."""

    images: torch.Tensor  # uint8 storage shared between tasks, shape (N, ...)
    labels: torch.Tensor  # int64 (N,)
    transform: Callable[[torch.Tensor], torch.Tensor]  # uint8 batch -> float32 network input

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def batch(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (transformed images, labels) of the samples at ``index``."""
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
    shared_head: bool  # True: one classifier shared by all tasks (PMNIST)
    input_shape: tuple[int, ...]  # shape of one transformed sample, e.g. (784,)


class PermutedTransform:
    """uint8 images -> x/255, normalised, flattened, then pixels reordered by ``permutation``."""

    def __init__(self, permutation: torch.Tensor, mean: float, std: float) -> None:
        self.permutation = permutation
        self.mean = mean
        self.std = std

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        flat = images.reshape(images.shape[0], -1).to(torch.float32)
        normalised = (flat / 255.0 - self.mean) / self.std
        return normalised[:, self.permutation.to(images.device)]

    def __repr__(self) -> str:
        return (
            f"PermutedTransform(size={self.permutation.numel()}, mean={self.mean}, std={self.std})"
        )


def derive_seed(seed: int, stream: int, index: int) -> int:
    """Mix (seed, stream, index) into a 64-bit generator seed."""
    state = np.random.SeedSequence([seed, stream, index]).generate_state(1, dtype=np.uint64)
    return int(state[0])


def task_permutation(seed: int, task: int, size: int) -> torch.Tensor:
    """The fixed pixel permutation of ``task`` under ``seed``."""
    generator = torch.Generator().manual_seed(derive_seed(seed, _PERMUTATION_STREAM, task))
    return torch.randperm(size, generator=generator)


def stratified_counts(class_counts: np.ndarray, limit: int) -> np.ndarray:
    """Split ``limit`` over classes in proportion to ``class_counts`` (largest remainders)."""
    total = int(class_counts.sum())
    quotas = class_counts * limit / total
    counts = np.floor(quotas).astype(np.int64)
    order = np.argsort(-(quotas - counts), kind="stable")
    counts[order[: limit - int(counts.sum())]] += 1
    return counts


def stratified_subset(labels: np.ndarray, limit: int | None, seed: int) -> np.ndarray | None:
    """Sorted indices of a class-stratified random subset of ``limit`` samples.

    None when no limit applies (``limit`` is None or not below the number of samples).
    """
    if limit is None or limit >= len(labels):
        return None
    classes, class_counts = np.unique(labels, return_counts=True)
    rng = np.random.default_rng(derive_seed(seed, _SUBSET_STREAM, len(labels)))
    chosen = [
        rng.choice(np.flatnonzero(labels == cls), size=count, replace=False)
        for cls, count in zip(classes, stratified_counts(class_counts, limit), strict=True)
    ]
    return np.sort(np.concatenate(chosen))


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
CIFAR_MEAN = (125.3 / 255, 123.0 / 255, 113.9 / 255)
CIFAR_STD = (63.0 / 255, 62.1 / 255, 66.7 / 255)
MNIST_PADDED_MEAN = (0.1,)  # MNIST statistics over 32 x 32 images padded by 2
MNIST_PADDED_STD = (0.2752,)
SVHN_MEAN = (0.4377, 0.4438, 0.4728)
SVHN_STD = (0.198, 0.201, 0.197)
FASHION_MNIST_MEAN = (0.2190,)  # also over padded 32 x 32 images
FASHION_MNIST_STD = (0.3318,)
NOTMNIST_MEAN = (0.4254,)
NOTMNIST_STD = (0.4501,)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
MINIIMAGENET_SIZE = 84

ImageData = Mapping[str, tuple[np.ndarray, np.ndarray]]


class ImageTransform:
    """uint8 (B, C, H, W) -> float32: zero-pad, x/255, resize, normalise, repeat channels.

    Padding adds ``pad`` zero pixels on every side (before normalisation, as an image
    library would); ``size`` resizes to ``size`` x ``size`` bilinearly (antialiased when
    downsampling, untouched when already that size); ``channels`` repeats a single channel
    (after normalisation) that many times.
    """

    def __init__(
        self,
        mean: Sequence[float],
        std: Sequence[float],
        pad: int = 0,
        channels: int | None = None,
        size: int | None = None,
    ) -> None:
        if len(mean) != len(std) or not mean or min(std) <= 0:
            raise ValueError(f"mean and std must have the same length and std > 0: {mean}, {std}")
        self.mean = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)
        self.pad = pad
        self.channels = channels
        self.size = size

    def output_shape(self, shape: Sequence[int]) -> tuple[int, ...]:
        """The shape of one transformed sample given the stored (C, H, W) ``shape``."""
        c, h, w = shape
        h, w = (
            (self.size, self.size)
            if self.size is not None
            else (h + 2 * self.pad, w + 2 * self.pad)
        )
        return (self.channels if self.channels and c == 1 else c, h, w)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        x = images.to(torch.float32)
        if x.ndim == 3:
            x = x.unsqueeze(1)
        if self.pad:
            x = torch.nn.functional.pad(x, (self.pad,) * 4)
        x = x / 255.0
        if self.size is not None and tuple(x.shape[-2:]) != (self.size, self.size):
            down = x.shape[-2] > self.size or x.shape[-1] > self.size
            x = torch.nn.functional.interpolate(
                x, size=(self.size, self.size), mode="bilinear", align_corners=False, antialias=down
            )
        x = (x - self.mean.to(x.device)) / self.std.to(x.device)
        if self.channels is not None and x.shape[1] == 1:
            x = x.repeat(1, self.channels, 1, 1)
        return x

    def __repr__(self) -> str:
        mean, std = self.mean.flatten().tolist(), self.std.flatten().tolist()
        return (
            f"ImageTransform(mean={mean}, std={std}, pad={self.pad}, channels={self.channels}, "
            f"size={self.size})"
        )


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


def with_validation(benchmark: Benchmark, fraction: float, seed: int) -> Benchmark:
    """The benchmark with ``fraction`` of each task's training data held out as its
    validation set, which replaces the test set (for hyperparameter searches: the test set
    is never seen).  Class-stratified and seeded; tasks that share one image storage (the
    permutations of PMNIST) share one split of it."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"the validation fraction must be in (0, 1), got {fraction}")
    parts: dict[tuple[int, int], tuple[torch.Tensor, ...]] = {}
    tasks = []
    for task in benchmark.tasks:
        train = task.train
        key = (id(train.images), id(train.labels))
        if key not in parts:
            labels = train.labels.numpy()
            count = max(1, round(fraction * len(labels)))
            held = stratified_subset(labels, count, derive_seed(seed, _VALIDATION_STREAM, 0))
            rest = np.setdiff1d(np.arange(len(labels)), held)
            keep, out = torch.from_numpy(rest), torch.from_numpy(held)
            parts[key] = (
                train.images[keep],
                train.labels[keep],
                train.images[out],
                train.labels[out],
            )
        xt, yt, xv, yv = parts[key]
        tasks.append(
            Task(
                task.name,
                task.num_classes,
                DataSplit(xt, yt, train.transform),
                DataSplit(xv, yv, train.transform),
            )
        )
    return Benchmark(benchmark.name, tasks, benchmark.shared_head, benchmark.input_shape)
