"""Tests of the permuted-MNIST benchmark."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hlop.data import Benchmark, DataSplit, Task, load_embedded_mnist, permuted_mnist
from hlop.data.streams import task_permutation


@pytest.fixture(scope="module")
def mnist() -> dict:
    return load_embedded_mnist()


def tiny(n_train: int = 60, n_test: int = 30) -> dict:
    rng = np.random.default_rng(3)
    return {
        split: (
            rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8),
            np.arange(n, dtype=np.int64) % 10,
        )
        for split, n in (("train", n_train), ("test", n_test))
    }


def test_structure(mnist: dict) -> None:
    bench = permuted_mnist(mnist, n_tasks=3)
    assert isinstance(bench, Benchmark)
    assert bench.name == "pmnist" and bench.shared_head and bench.input_shape == (784,)
    assert [task.name for task in bench.tasks] == ["pmnist-0", "pmnist-1", "pmnist-2"]
    for task in bench.tasks:
        assert isinstance(task, Task) and task.num_classes == 10
        assert isinstance(task.train, DataSplit) and len(task.train) == 6000
        assert len(task.test) == 1000
        assert task.train.images.dtype == torch.uint8
        assert task.train.labels.dtype == torch.int64
        x, y = task.train.batch(torch.arange(8))
        assert x.shape == (8, 784) and x.dtype == torch.float32
        assert y.shape == (8,) and y.dtype == torch.int64


def test_one_shared_uint8_storage(mnist: dict) -> None:
    bench = permuted_mnist(mnist, n_tasks=4, train_limit=50, test_limit=20)
    for split in ("train", "test"):
        splits = [getattr(task, split) for task in bench.tasks]
        assert len({s.images.data_ptr() for s in splits}) == 1
        assert len({s.labels.data_ptr() for s in splits}) == 1
        assert all(s.images.dtype == torch.uint8 for s in splits)
    full = permuted_mnist(mnist, n_tasks=2)
    assert full.tasks[0].train.images.data_ptr() == full.tasks[1].train.images.data_ptr()
    # Without a limit the caller's numpy array itself is used, not a copy.
    assert full.tasks[0].train.images.data_ptr() == mnist["train"][0].ctypes.data


def test_permutations_differ_and_are_deterministic() -> None:
    data = tiny()
    a = permuted_mnist(data, n_tasks=5, seed=7)
    b = permuted_mnist(data, n_tasks=5, seed=7)
    c = permuted_mnist(data, n_tasks=5, seed=8)
    sample = torch.arange(4)
    outputs_a = [task.train.batch(sample)[0] for task in a.tasks]
    outputs_b = [task.train.batch(sample)[0] for task in b.tasks]
    outputs_c = [task.train.batch(sample)[0] for task in c.tasks]
    raw = data["train"][0][:4].reshape(4, -1)
    for i in range(5):
        torch.testing.assert_close(outputs_a[i], outputs_b[i], rtol=0, atol=0)
        assert not torch.equal(outputs_a[i], outputs_c[i])
        # Task 0 is permuted too: sorting recovers the unpermuted row, the order differs.
        unpermuted = (torch.from_numpy(raw).float() / 255 - 0.1307) / 0.3081
        assert not torch.allclose(outputs_a[i], unpermuted)
        torch.testing.assert_close(outputs_a[i].sort(dim=1).values, unpermuted.sort(dim=1).values)
        for j in range(i):
            assert not torch.equal(outputs_a[i], outputs_a[j])


def test_transform_matches_direct_computation() -> None:
    data = tiny()
    bench = permuted_mnist(data, n_tasks=3, seed=11)
    images = data["train"][0]
    index = torch.tensor([0, 5, 17])
    # A ramp image reveals the permutation: pixel p has value p % 256.
    probe = torch.arange(784).reshape(1, 28, 28) % 256
    for task in bench.tasks:
        x, y = task.train.batch(index)
        perm = task.train.transform.permutation
        assert torch.equal(perm, task_permutation(11, int(task.name.split("-")[1]), 784))
        assert sorted(perm.tolist()) == list(range(784))
        ramp = task.train.transform(probe.to(torch.uint8))
        torch.testing.assert_close(ramp[0], ((perm % 256).float() / 255 - 0.1307) / 0.3081)
        for row, i in enumerate(index.tolist()):
            flat = images[i].reshape(-1).astype(np.float64)
            expected = ((flat / 255.0 - 0.1307) / 0.3081)[perm.numpy()]
            np.testing.assert_allclose(x[row].numpy(), expected, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(y, torch.from_numpy(data["train"][1])[index])
        # The test split uses the same permutation.
        assert task.test.transform is task.train.transform


def test_limits_are_stratified_and_deterministic(mnist: dict) -> None:
    bench = permuted_mnist(mnist, n_tasks=2, train_limit=100, test_limit=50)
    train, test = bench.tasks[0].train, bench.tasks[0].test
    assert len(train) == 100 and len(test) == 50
    assert torch.bincount(train.labels, minlength=10).tolist() == [10] * 10
    assert torch.bincount(test.labels, minlength=10).tolist() == [5] * 10
    again = permuted_mnist(mnist, n_tasks=2, train_limit=100, test_limit=50)
    assert torch.equal(again.tasks[0].train.images, train.images)
    assert torch.equal(bench.tasks[1].train.labels, train.labels)
    # The subset consists of real samples of the source data.
    source_images = torch.from_numpy(mnist["train"][0]).reshape(6000, -1)
    first = train.images[0].reshape(1, -1)
    assert bool((source_images == first).all(dim=1).any())


def test_limit_with_uneven_classes() -> None:
    labels = np.array([0] * 30 + [1] * 10 + [2] * 20, dtype=np.int64)
    images = np.zeros((60, 28, 28), dtype=np.uint8)
    data = {"train": (images, labels), "test": (images[:6], labels[:6])}
    bench = permuted_mnist(data, n_tasks=1, train_limit=12)
    assert torch.bincount(bench.tasks[0].train.labels).tolist() == [6, 2, 4]


def test_limit_above_size_keeps_everything() -> None:
    bench = permuted_mnist(tiny(), n_tasks=1, train_limit=10_000)
    assert len(bench.tasks[0].train) == 60


def test_class_indices() -> None:
    bench = permuted_mnist(tiny(), n_tasks=1)
    split = bench.tasks[0].train
    indices = split.class_indices()
    assert sorted(indices) == list(range(10))
    for cls, idx in indices.items():
        assert idx.dtype == torch.int64
        assert bool((split.labels[idx] == cls).all())
    assert sum(len(idx) for idx in indices.values()) == len(split)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"n_tasks": 0},
        {"n_tasks": -1},
        {"n_tasks": 2.0},
        {"train_limit": 0},
        {"train_limit": -5},
        {"test_limit": 1.5},
        {"test_limit": "10"},
        {"train_limit": True},
        {"seed": -1},
    ],
)
def test_invalid_arguments(kwargs: dict) -> None:
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        permuted_mnist(tiny(), **kwargs)


def test_invalid_mnist_dict() -> None:
    with pytest.raises(ValueError, match="test"):
        permuted_mnist({"train": tiny()["train"]})


def test_batches_are_the_rows_of_the_index(mnist: dict) -> None:
    """A batch of a 1-D integer index (index_select) is the batch of the same rows by
    indexing, bit for bit; other indices (a mask) are taken by indexing."""
    split = permuted_mnist(mnist, n_tasks=2).tasks[1].train
    index = torch.randperm(len(split), generator=torch.Generator().manual_seed(0))[:70]
    want_x = split.transform(split.images[index])
    for i in (index, index.to(torch.int32)):
        x, y = split.batch(i)
        assert torch.equal(x, want_x) and torch.equal(y, split.labels[index])
    mask = torch.zeros(len(split), dtype=torch.bool)
    mask[index] = True
    x, y = split.batch(mask)
    assert torch.equal(x, split.transform(split.images[mask]))
    assert torch.equal(y, split.labels[mask])
    flat = split.images[index].reshape(len(index), -1).to(torch.float32)
    pixels = (flat / 255.0 - split.transform.mean) / split.transform.std
    assert torch.equal(want_x, pixels[:, split.transform.permutation])
    stored = split.images[index].to(torch.float32)  # float images are left as they are
    kept = stored.clone()
    assert torch.equal(split.transform(stored), want_x) and torch.equal(stored, kept)
