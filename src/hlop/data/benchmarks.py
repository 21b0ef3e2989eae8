"""Continual-learning benchmarks built on one shared uint8 copy of the images."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import torch

MNIST_MEAN = 0.1307
MNIST_STD = 0.3081

# Distinct streams of the seed derivation, so task permutations and subsets never collide.
_PERMUTATION_STREAM = 0
_SUBSET_STREAM = 1


@dataclass
class Split:
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


@dataclass
class Task:
    """A task of a continual-learning benchmark."""

    name: str
    num_classes: int
    train: Split
    test: Split


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

    ``mnist`` is the dict of :func:`hlop.data.load_mnist_dir` or
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
                train=Split(*train, transform),
                test=Split(*test, transform),
            )
        )
    return Benchmark(name="pmnist", tasks=tasks, shared_head=True, input_shape=(size,))
