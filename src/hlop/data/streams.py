"""Seeded, collision-free random streams of a benchmark: task permutations, class-stratified
subsets, and the validation split held out of each task's training data."""

from __future__ import annotations

import numpy as np
import torch

from hlop.data.containers import Benchmark, DataSplit, Task

# Distinct streams of the seed derivation, so task permutations and subsets never collide.
_PERMUTATION_STREAM = 0
_SUBSET_STREAM = 1
_VALIDATION_STREAM = 3


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
