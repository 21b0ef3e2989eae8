"""Tests of IDX reading, MNIST folder loading and the embedded subset."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
from formats import encode_idx, write_idx
from helpers import REPO

from hlop.data import MNIST_FILES, DataError, load_dataset, load_embedded_mnist, read_idx


def tiny_mnist(n_train: int = 20, n_test: int = 10, seed: int = 0) -> dict:
    """Random MNIST-shaped arrays with every class present."""
    rng = np.random.default_rng(seed)
    result = {}
    for split, n in (("train", n_train), ("test", n_test)):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = (np.arange(n) % 10).astype(np.uint8)
        result[split] = (images, labels)
    return result


def write_mnist_dir(directory: Path, data: dict, gz: bool = False) -> None:
    """Write ``data`` as the four MNIST IDX files of ``directory``."""
    suffix = ".gz" if gz else ""
    for (split, kind), name in MNIST_FILES.items():
        array = data[split][0 if kind == "images" else 1]
        write_idx(directory / f"{name}{suffix}", array)


@pytest.mark.parametrize("suffix", ["", ".gz"])
@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64])
def test_round_trip(tmp_path: Path, suffix: str, dtype: type) -> None:
    array = (np.arange(2 * 3 * 4) - 5).reshape(2, 3, 4).astype(dtype)
    path = write_idx(tmp_path / f"a-idx3-ubyte{suffix}", array)
    assert (path.read_bytes()[:2] == b"\x1f\x8b") == (suffix == ".gz")
    result = read_idx(path)
    assert result.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(result, array)


def test_header_is_big_endian(tmp_path: Path) -> None:
    path = write_idx(tmp_path / "x", np.array([1, 258], dtype=np.int16))
    assert path.read_bytes() == bytes([0, 0, 0x0B, 1, 0, 0, 0, 2, 0, 1, 1, 2])


def test_gzip_detected_by_magic_not_suffix(tmp_path: Path) -> None:
    array = np.arange(10, dtype=np.uint8)
    path = tmp_path / "no-suffix"
    path.write_bytes(gzip.compress(encode_idx(array)))
    np.testing.assert_array_equal(read_idx(path), array)


def test_wrong_magic(tmp_path: Path) -> None:
    path = tmp_path / "bad"
    path.write_bytes(b"\x01\x02\x08\x01" + b"\x00" * 8)
    with pytest.raises(DataError, match="magic") as info:
        read_idx(path)
    assert str(path) in str(info.value)


def test_unknown_type_code(tmp_path: Path) -> None:
    path = tmp_path / "bad"
    path.write_bytes(bytes([0, 0, 0x07, 1, 0, 0, 0, 1, 0]))
    with pytest.raises(DataError, match="magic"):
        read_idx(path)


@pytest.mark.parametrize("delta", [-1, 3])
def test_wrong_length(tmp_path: Path, delta: int) -> None:
    data = encode_idx(np.zeros((3, 4), dtype=np.uint8))
    path = tmp_path / "t10k-labels-idx1-ubyte"
    path.write_bytes(data[:delta] if delta < 0 else data + b"\x00" * delta)
    with pytest.raises(DataError) as info:
        read_idx(path)
    message = str(info.value)
    assert str(path) in message
    assert f"should have {len(data)} bytes" in message
    assert f"has {len(data) + delta}" in message
    assert ("truncated" if delta < 0 else "too long") in message


def test_truncated_header(tmp_path: Path) -> None:
    path = tmp_path / "h"
    path.write_bytes(bytes([0, 0, 8, 3, 0, 0]))
    with pytest.raises(DataError, match="header") as info:
        read_idx(path)
    assert str(path) in str(info.value)


def test_corrupt_gzip(tmp_path: Path) -> None:
    data = gzip.compress(encode_idx(np.zeros(100, dtype=np.uint8)))
    path = tmp_path / "x.gz"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="gzip") as info:
        read_idx(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("gz", [False, True])
def test_load_mnist_dir(tmp_path: Path, gz: bool) -> None:
    data = tiny_mnist()
    write_mnist_dir(tmp_path / "mnist", data, gz=gz)
    loaded = load_dataset("mnist", tmp_path)
    assert set(loaded) == {"train", "test"}
    for split in ("train", "test"):
        images, labels = loaded[split]
        assert images.dtype == np.uint8 and images.shape == (len(data[split][0]), 1, 28, 28)
        assert labels.dtype == np.int64
        np.testing.assert_array_equal(images[:, 0], data[split][0])
        np.testing.assert_array_equal(labels, data[split][1])


def test_load_mnist_dir_missing_files(tmp_path: Path) -> None:
    folder = tmp_path / "mnist"
    folder.mkdir()
    data = tiny_mnist()
    write_idx(folder / "train-images-idx3-ubyte", data["train"][0])
    with pytest.raises(DataError) as info:
        load_dataset("mnist", tmp_path)
    message = str(info.value)
    assert str(folder) in message
    for name in MNIST_FILES.values():
        present = name == "train-images-idx3-ubyte"
        assert (f"{folder / name} (or {name}.gz){' (present)' if present else ''}\n") in message
    assert f"hlop data fetch mnist --data-dir {tmp_path}" in message


def test_fashion_mnist_reads_its_own_folder(tmp_path: Path) -> None:
    write_mnist_dir(tmp_path / "mnist", tiny_mnist())
    with pytest.raises(DataError, match=r"FashionMNIST \(fashion-mnist\)") as info:
        load_dataset("fashion-mnist", tmp_path)
    assert f"hlop data fetch fashion-mnist --data-dir {tmp_path}" in str(info.value)


def test_label_out_of_range(tmp_path: Path) -> None:
    data = tiny_mnist()
    labels = data["test"][1].copy()
    labels[3] = 10
    data["test"] = (data["test"][0], labels)
    write_mnist_dir(tmp_path / "mnist", data)
    with pytest.raises(DataError, match=r"0\.\.9") as info:
        load_dataset("mnist", tmp_path)
    assert str(tmp_path / "mnist" / "t10k-labels-idx1-ubyte") in str(info.value)


def test_count_mismatch(tmp_path: Path) -> None:
    data = tiny_mnist()
    data["train"] = (data["train"][0], data["train"][1][:-1])
    write_mnist_dir(tmp_path / "mnist", data)
    with pytest.raises(DataError, match="counts must be equal") as info:
        load_dataset("mnist", tmp_path)
    assert str(tmp_path / "mnist" / "train-labels-idx1-ubyte") in str(info.value)
    assert str(tmp_path / "mnist" / "train-images-idx3-ubyte") in str(info.value)


def test_images_must_be_3d(tmp_path: Path) -> None:
    data = tiny_mnist()
    data["train"] = (data["train"][0].reshape(20, 784), data["train"][1])
    write_mnist_dir(tmp_path / "mnist", data)
    with pytest.raises(DataError, match="3-D") as info:
        load_dataset("mnist", tmp_path)
    assert str(tmp_path / "mnist" / "train-images-idx3-ubyte") in str(info.value)


def test_labels_must_be_1d(tmp_path: Path) -> None:
    data = tiny_mnist()
    data["test"] = (data["test"][0], data["test"][1].reshape(5, 2))
    write_mnist_dir(tmp_path / "mnist", data)
    with pytest.raises(DataError, match="1-D") as info:
        load_dataset("mnist", tmp_path)
    assert str(tmp_path / "mnist" / "t10k-labels-idx1-ubyte") in str(info.value)


def test_embedded_subset() -> None:
    mnist = load_embedded_mnist()
    for split, per_class in (("train", 600), ("test", 100)):
        images, labels = mnist[split]
        assert images.dtype == np.uint8
        assert images.shape == (10 * per_class, 1, 28, 28)
        assert labels.dtype == np.int64 and labels.shape == (10 * per_class,)
        np.testing.assert_array_equal(np.bincount(labels, minlength=10), [per_class] * 10)
        assert images.max() == 255 and images.min() == 0
    # Classes are interleaved (original file order), not grouped.
    assert len(np.unique(mnist["train"][1][:50])) > 1


def test_embedded_subset_file_size() -> None:
    path = REPO / "src" / "hlop" / "data" / "mnist_subset.npz"
    assert path.stat().st_size <= 2 * 1024 * 1024
