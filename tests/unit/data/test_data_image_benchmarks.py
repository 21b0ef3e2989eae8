"""Tests of the image benchmarks: class splits, 5-Datasets and miniImageNet."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from hlop.data import Benchmark
from hlop.data.benchmarks import (
    five_datasets,
    miniimagenet_class_order,
    split_cifar100,
    split_classes,
    split_fashion_mnist,
    split_miniimagenet,
    split_mnist,
)
from hlop.data.transforms import CIFAR_MEAN, CIFAR_STD, IMAGENET_MEAN, IMAGENET_STD, ImageTransform

RNG = np.random.default_rng(5)


def dataset(
    n_per_class: tuple[int, int], num_classes: int, shape: tuple[int, ...], seed: int = 0
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Random uint8 images with ``n_per_class`` (train, test) samples of every class, shuffled."""
    rng = np.random.default_rng(seed)
    result = {}
    for split, n in zip(("train", "test"), n_per_class, strict=True):
        labels = rng.permutation(np.repeat(np.arange(num_classes), n))
        images = rng.integers(0, 256, size=(len(labels), *shape), dtype=np.uint8)
        result[split] = (images, labels)
    return result


def storage_ptr(t: torch.Tensor) -> int:
    return t.untyped_storage().data_ptr()


def normalised(images: np.ndarray, mean: tuple, std: tuple) -> torch.Tensor:
    """Direct computation of (x/255 - mean) / std per channel, in float64."""
    x = torch.from_numpy(images.astype(np.float64) / 255.0)
    m = torch.tensor(mean, dtype=torch.float64).view(-1, 1, 1)
    s = torch.tensor(std, dtype=torch.float64).view(-1, 1, 1)
    return (x - m) / s


@pytest.fixture(scope="module")
def cifar100() -> dict:
    return dataset((4, 2), 100, (3, 32, 32))


# --------------------------------------------------------------------------- CIFAR-100


def test_split_cifar100_tasks_and_labels(cifar100: dict) -> None:
    bench = split_cifar100(cifar100)
    assert isinstance(bench, Benchmark) and bench.name == "cifar100"
    assert not bench.shared_head and bench.input_shape == (3, 32, 32)
    assert [t.name for t in bench.tasks] == [f"cifar100-{i}" for i in range(10)]
    for split in ("train", "test"):
        images, labels = cifar100[split]
        for t, task in enumerate(bench.tasks):
            assert task.num_classes == 10
            part = getattr(task, split)
            index = np.flatnonzero(labels // 10 == t)  # data order kept within a task
            assert part.images.dtype == torch.uint8 and part.labels.dtype == torch.int64
            np.testing.assert_array_equal(part.images.numpy(), images[index])
            np.testing.assert_array_equal(part.labels.numpy(), labels[index] % 10)


def test_split_cifar100_one_shared_uint8_copy(cifar100: dict) -> None:
    bench = split_cifar100(cifar100)
    for split in ("train", "test"):
        parts = [getattr(task, split) for task in bench.tasks]
        assert len({storage_ptr(p.images) for p in parts}) == 1
        assert len({storage_ptr(p.labels) for p in parts}) == 1
        total = sum(p.images.numel() for p in parts)
        assert parts[0].images.untyped_storage().nbytes() == total  # one copy, no float data


def test_split_cifar100_normalisation(cifar100: dict) -> None:
    bench = split_cifar100(cifar100)
    task = bench.tasks[3]
    x, y = task.train.batch(torch.tensor([0, 5, 7]))
    assert x.dtype == torch.float32 and x.shape == (3, 3, 32, 32)
    raw = task.train.images[[0, 5, 7]].numpy()
    expected = normalised(raw, CIFAR_MEAN, CIFAR_STD)
    torch.testing.assert_close(x.double(), expected, atol=1e-5, rtol=1e-5)
    mean = np.array([125.3, 123.0, 113.9]) / 255
    std = np.array([63.0, 62.1, 66.7]) / 255
    direct = (raw[1, 2, 4, 6] / 255 - mean[2]) / std[2]
    assert abs(float(x[1, 2, 4, 6]) - direct) < 1e-5
    assert y.tolist() == task.train.labels[[0, 5, 7]].tolist()


def test_split_cifar100_limits_stratified_and_deterministic(cifar100: dict) -> None:
    a = split_cifar100(cifar100, train_limit=20, test_limit=10)
    b = split_cifar100(cifar100, train_limit=20, test_limit=10)
    for ta, tb in zip(a.tasks, b.tasks, strict=True):
        assert len(ta.train) == 20 and len(ta.test) == 10
        assert np.bincount(ta.train.labels.numpy(), minlength=10).tolist() == [2] * 10
        assert np.bincount(ta.test.labels.numpy(), minlength=10).tolist() == [1] * 10
        assert torch.equal(ta.train.images, tb.train.images)
    c = split_cifar100(cifar100, seed=3, train_limit=20)
    assert any(
        not torch.equal(ta.train.images, tc.train.images)
        for ta, tc in zip(a.tasks, c.tasks, strict=True)
    )
    full = split_cifar100(cifar100, train_limit=10**6)
    assert len(full.tasks[0].train) == 40


# --------------------------------------------------------------------------- 5-Datasets


@pytest.fixture(scope="module")
def five() -> dict:
    return {
        "cifar10": dataset((3, 2), 10, (3, 32, 32), 1),
        "mnist": dataset((3, 2), 10, (28, 28), 2),  # N x H x W is accepted too
        "svhn": dataset((3, 2), 10, (3, 32, 32), 3),
        "fashion_mnist": dataset((3, 2), 10, (1, 28, 28), 4),  # as load_dataset gives it
        "notmnist": dataset((3, 2), 10, (1, 32, 32), 5),
    }


def test_five_datasets_structure(five: dict) -> None:
    bench = five_datasets(**five)
    assert bench.name == "five-datasets" and not bench.shared_head
    assert bench.input_shape == (3, 32, 32)
    assert [t.name for t in bench.tasks] == [
        "cifar10",
        "mnist",
        "svhn",
        "fashion-mnist",
        "notmnist",
    ]
    keys = ["cifar10", "mnist", "svhn", "fashion_mnist", "notmnist"]
    for task, key in zip(bench.tasks, keys, strict=True):
        assert task.num_classes == 10
        np.testing.assert_array_equal(task.train.labels.numpy(), five[key]["train"][1])
        x, _ = task.test.batch(torch.arange(4))
        assert x.shape == (4, 3, 32, 32) and x.dtype == torch.float32
        # No copy without a limit: the caller's uint8 array is the storage.
        assert storage_ptr(task.train.images) == five[key]["train"][0].ctypes.data
    domain = five_datasets(**five, shared_head=True)
    assert domain.shared_head and domain.name == "five-datasets-domain"
    assert [t.name for t in domain.tasks] == [t.name for t in bench.tasks]


@pytest.mark.parametrize(
    ("index", "key", "mean", "std"),
    [(1, "mnist", 0.1, 0.2752), (3, "fashion_mnist", 0.2190, 0.3318)],
)
def test_five_datasets_padding_and_channels(
    five: dict, index: int, key: str, mean: float, std: float
) -> None:
    task = five_datasets(**five).tasks[index]
    x, _ = task.train.batch(torch.tensor([2]))
    raw = five[key]["train"][0][2].reshape(28, 28)
    border = (0.0 - mean) / std  # padded pixels are zeros before normalisation
    for c in range(3):
        torch.testing.assert_close(x[0, c], x[0, 0])
    assert torch.allclose(x[0, :, :2, :], torch.tensor(border))
    assert torch.allclose(x[0, :, :, -2:], torch.tensor(border))
    inner = (raw.astype(np.float64) / 255 - mean) / std
    np.testing.assert_allclose(x[0, 1, 2:30, 2:30].numpy(), inner, atol=1e-5)


def test_five_datasets_svhn_and_notmnist_normalisation(five: dict) -> None:
    bench = five_datasets(**five)
    x, _ = bench.tasks[2].train.batch(torch.tensor([0, 1]))
    raw = five["svhn"]["train"][0][:2]
    expected = normalised(raw, (0.4377, 0.4438, 0.4728), (0.198, 0.201, 0.197))
    torch.testing.assert_close(x.double(), expected, atol=1e-5, rtol=1e-5)
    x, _ = bench.tasks[4].train.batch(torch.tensor([3]))
    raw = five["notmnist"]["train"][0][3]
    expected = normalised(raw, (0.4254,), (0.4501,))
    for c in range(3):
        torch.testing.assert_close(x[0, c : c + 1].double(), expected, atol=1e-5, rtol=1e-5)


def test_five_datasets_limits(five: dict) -> None:
    bench = five_datasets(**five, train_limit=10, test_limit=10)
    for task in bench.tasks:
        assert len(task.train) == 10
        assert np.bincount(task.train.labels.numpy(), minlength=10).tolist() == [1] * 10
        assert len(task.test) == 10


def test_five_datasets_rejects_wrong_sizes(five: dict) -> None:
    bad = dict(five, notmnist=dataset((1, 1), 10, (1, 28, 28)))
    with pytest.raises(ValueError, match="notmnist"):
        five_datasets(**bad)


# --------------------------------------------------------------------------- miniImageNet


@pytest.fixture(scope="module")
def mini32() -> dict:
    return dataset((2, 1), 100, (3, 32, 32), 7)


def test_miniimagenet_class_groups_match_the_reference() -> None:
    # the reference: np.random.seed(2022); np.split(np.random.permutation(100), 20)
    order = miniimagenet_class_order(2022)
    assert order[:15] == [79, 76, 83, 5, 35, 57, 22, 96, 67, 58, 93, 3, 69, 60, 39]
    assert sorted(order) == list(range(100))


def test_miniimagenet_class_split_deterministic(mini32: dict) -> None:
    order = miniimagenet_class_order(2022)
    assert sorted(order) == list(range(100)) and order != list(range(100))
    assert miniimagenet_class_order(2022) == order
    assert miniimagenet_class_order(1) != order
    bench = split_miniimagenet(mini32)
    assert bench.name == "miniimagenet" and len(bench.tasks) == 20 and not bench.shared_head
    assert bench.input_shape == (3, 84, 84)
    labels = mini32["train"][1]
    for t, task in enumerate(bench.tasks):
        assert task.name == f"miniimagenet-{t}" and task.num_classes == 5
        group = order[5 * t : 5 * t + 5]
        index = np.flatnonzero(np.isin(labels, group))
        np.testing.assert_array_equal(task.train.images.numpy(), mini32["train"][0][index])
        local = [group.index(int(c)) for c in labels[index]]
        assert task.train.labels.tolist() == local
    other = split_miniimagenet(mini32, seed=7)
    assert not torch.equal(other.tasks[0].train.images, bench.tasks[0].train.images)


def test_miniimagenet_resize_up_and_down() -> None:
    for side in (32, 100):
        data = dataset((1, 1), 100, (3, side, side), side)
        task = split_miniimagenet(data).tasks[0]
        x, _ = task.train.batch(torch.tensor([0, 1]))
        assert x.shape == (2, 3, 84, 84)
        raw = task.train.images[:2].double() / 255
        resized = F.interpolate(
            raw, size=(84, 84), mode="bilinear", align_corners=False, antialias=side > 84
        )
        mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float64).view(-1, 1, 1)
        std = torch.tensor(IMAGENET_STD, dtype=torch.float64).view(-1, 1, 1)
        torch.testing.assert_close(x.double(), (resized - mean) / std, atol=1e-4, rtol=1e-4)


def test_miniimagenet_84_not_resized() -> None:
    data = dataset((1, 1), 100, (3, 84, 84), 9)
    task = split_miniimagenet(data, train_limit=5).tasks[2]
    assert len(task.train) == 5
    x, _ = task.train.batch(torch.arange(2))
    expected = normalised(task.train.images[:2].numpy(), IMAGENET_MEAN, IMAGENET_STD)
    torch.testing.assert_close(x.double(), expected, atol=1e-5, rtol=1e-5)


# --------------------------------------------------------------------------- generic splits


@pytest.mark.parametrize(
    ("builder", "name", "mean", "std"),
    [
        (split_fashion_mnist, "split-fashion-mnist", 0.2190, 0.3318),
        (split_mnist, "split-mnist", 0.1, 0.2752),
    ],
)
def test_split_fashion_mnist_and_mnist(builder, name: str, mean: float, std: float) -> None:
    data = dataset((4, 2), 10, (28, 28), 11)
    bench = builder(data, train_limit=4)
    assert bench.name == name and len(bench.tasks) == 5 and bench.input_shape == (1, 32, 32)
    labels = data["train"][1]
    for t, task in enumerate(bench.tasks):
        assert task.num_classes == 2 and len(task.train) == 4
        assert task.train.labels.tolist().count(0) == 2 == task.train.labels.tolist().count(1)
        originals = {tuple(img.ravel()) for img in data["train"][0][labels // 2 == t]}
        assert all(tuple(img.ravel()) in originals for img in task.train.images.numpy())
    x, _ = bench.tasks[1].test.batch(torch.arange(3))
    assert x.shape == (3, 1, 32, 32)
    assert torch.allclose(x[:, :, 0, :], torch.tensor((0.0 - mean) / std))
    raw = bench.tasks[1].test.images[:3].numpy().astype(np.float64)
    np.testing.assert_allclose(x[:, :, 2:30, 2:30].numpy(), (raw / 255 - mean) / std, atol=1e-5)


def test_split_classes_custom_order_and_channels() -> None:
    data = dataset((2, 1), 6, (1, 8, 8), 12)
    bench = split_classes(
        data, 3, "toy", (0.5,), (0.25,), channels=3, class_order=[5, 0, 3, 1, 2, 4]
    )
    assert [t.name for t in bench.tasks] == ["toy-0", "toy-1"]
    assert bench.input_shape == (3, 8, 8)
    labels = data["train"][1]
    first = bench.tasks[0].train
    np.testing.assert_array_equal(
        first.labels.numpy(), [[5, 0, 3].index(c) for c in labels if c in (5, 0, 3)]
    )
    x, _ = first.batch(torch.arange(2))
    assert x.shape == (2, 3, 8, 8)
    torch.testing.assert_close(x[:, 2], x[:, 0])


def test_split_classes_errors() -> None:
    data = dataset((2, 1), 6, (1, 8, 8), 13)
    with pytest.raises(ValueError, match="cannot be split"):
        split_classes(data, 4, "toy", (0.5,), (0.25,))
    with pytest.raises(ValueError, match="belong to no task"):
        split_classes(data, 2, "toy", (0.5,), (0.25,), class_order=[0, 1, 2, 3])
    with pytest.raises(ValueError, match="repeat"):
        split_classes(data, 2, "toy", (0.5,), (0.25,), class_order=[0, 1, 1, 3, 4, 5])
    floats = {k: (v[0].astype(np.float32), v[1]) for k, v in data.items()}
    with pytest.raises(ValueError, match="uint8"):
        split_classes(floats, 2, "toy", (0.5,), (0.25,))
    with pytest.raises(ValueError, match="normalisation values"):
        split_classes(data, 2, "toy", (0.5, 0.5, 0.5), (0.2, 0.2, 0.2))
    with pytest.raises(ValueError, match="train_limit"):
        split_classes(data, 2, "toy", (0.5,), (0.25,), train_limit=0)
    with pytest.raises(ValueError, match="no training samples"):
        split_classes(data, 2, "toy", (0.5,), (0.25,), class_order=range(8))


def test_image_transform_antialias_when_downsampling() -> None:
    images = torch.randint(0, 256, (2, 3, 168, 168), dtype=torch.uint8)
    transform = ImageTransform((0.0,), (1.0,), size=84)
    expected = F.interpolate(
        images.float() / 255, size=(84, 84), mode="bilinear", align_corners=False, antialias=True
    )
    torch.testing.assert_close(transform(images), expected)
    plain = F.interpolate(images.float() / 255, size=(84, 84), mode="bilinear", align_corners=False)
    assert not torch.allclose(transform(images), plain)
    assert transform.output_shape((3, 168, 168)) == (3, 84, 84)
    with pytest.raises(ValueError):
        ImageTransform((0.5, 0.5), (0.1,))
