"""Tests of the dataset readers on tiny files written in the real formats."""

from __future__ import annotations

import gzip
import pickle
import struct
import sys
import zlib
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
from formats import encode_matrix, mat_element, write_idx, write_mat

from hlop.data import MNIST_FILES, DataError, load_dataset
from hlop.data.matlab import MI_INT8, MI_MATRIX, MI_UINT32, parse_mat, read_mat


def load_cifar10(root: Path) -> dict:
    return load_dataset("cifar10", root)


def load_cifar100(root: Path) -> dict:
    return load_dataset("cifar100", root)


def load_svhn(root: Path) -> dict:
    return load_dataset("svhn", root)


def load_fashion_mnist(root: Path) -> dict:
    return load_dataset("fashion-mnist", root)


def load_notmnist(root: Path) -> dict:
    return load_dataset("notmnist", root)


def load_miniimagenet(root: Path) -> dict:
    return load_dataset("miniimagenet", root)


RNG = np.random.default_rng(11)


def cifar_dict(images: np.ndarray, labels: np.ndarray, label_key: str, str_keys: bool) -> dict:
    """A CIFAR python batch dict (bytes keys, as the original Python 2 files, unless str_keys)."""
    entries = {
        "batch_label": "testing batch 1 of 1",
        "data": images.reshape(len(images), -1),
        label_key: [int(x) for x in labels],
        "filenames": [f"img_{i}.png" for i in range(len(images))],
    }
    if str_keys:
        return entries
    return {key.encode(): value for key, value in entries.items()}


def write_pickle(path: Path, obj: object, protocol: int = 2) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(obj, protocol=protocol))
    return path


def random_images(n: int, shape: tuple[int, ...] = (3, 32, 32)) -> np.ndarray:
    return RNG.integers(0, 256, size=(n, *shape), dtype=np.uint8)


def make_cifar10(root: Path, per_batch: int = 4) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    folder = root / "cifar-10-batches-py"
    parts = []
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        images, labels = random_images(per_batch), RNG.integers(0, 10, per_batch)
        write_pickle(folder / name, cifar_dict(images, labels, "labels", str_keys=False))
        parts.append((images, labels))
    train = (np.concatenate([p[0] for p in parts[:5]]), np.concatenate([p[1] for p in parts[:5]]))
    return {"train": train, "test": parts[5]}


def make_cifar100(root: Path, n: int = 12, str_keys: bool = False, protocol: int = 2) -> dict:
    folder = root / "cifar-100-python"
    result = {}
    for split in ("train", "test"):
        images, labels = random_images(n), RNG.integers(0, 100, n)
        obj = cifar_dict(images, labels, "fine_labels", str_keys)
        write_pickle(folder / split, obj, protocol)
        result[split] = (images, labels)
    return result


def svhn_arrays(n: int, labels: np.ndarray | None = None) -> dict[str, np.ndarray]:
    x = RNG.integers(0, 256, size=(32, 32, 3, n), dtype=np.uint8)
    y = (np.arange(n) % 10 + 1) if labels is None else labels
    return {"X": x, "y": np.asarray(y, dtype=np.float64).reshape(-1, 1)}


def make_svhn(root: Path, compress: bool = True, byte_order: str = "<") -> dict:
    result = {}
    for split, n in (("train", 12), ("test", 5)):
        arrays = svhn_arrays(n)
        write_mat(
            root / "svhn" / f"{split}_32x32.mat",
            arrays,
            compress,
            byte_order=byte_order,
            storage={"y": "u1"},  # as MATLAB stores small integer doubles
        )
        result[split] = arrays
    return result


# --------------------------------------------------------------------------- CIFAR


def test_cifar10_reads_planes_and_concatenates_batches(tmp_path: Path) -> None:
    expected = make_cifar10(tmp_path)
    data = load_cifar10(tmp_path)
    for split in ("train", "test"):
        images, labels = data[split]
        assert images.shape == (len(expected[split][0]), 3, 32, 32) and images.dtype == np.uint8
        assert labels.dtype == np.int64
        np.testing.assert_array_equal(images, expected[split][0])
        np.testing.assert_array_equal(labels, expected[split][1])
    # Row layout: 1024 red values, then green, then blue, each plane row-major.
    row = expected["train"][0][3].reshape(-1)
    assert data["train"][0][3, 1, 2, 5] == row[1024 + 2 * 32 + 5]
    assert len(data["train"][0]) == 20


@pytest.mark.parametrize(("str_keys", "protocol"), [(False, 2), (True, 4), (True, 5), (False, 0)])
def test_cifar100_pickle_variants(tmp_path: Path, str_keys: bool, protocol: int) -> None:
    expected = make_cifar100(tmp_path, str_keys=str_keys, protocol=protocol)
    data = load_cifar100(tmp_path)
    for split in ("train", "test"):
        np.testing.assert_array_equal(data[split][0], expected[split][0])
        np.testing.assert_array_equal(data[split][1], expected[split][1])


def test_cifar_missing_files_listed_with_fetch_command(tmp_path: Path) -> None:
    make_cifar10(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").unlink()
    (tmp_path / "cifar-10-batches-py" / "test_batch").unlink()
    with pytest.raises(DataError) as info:
        load_cifar10(tmp_path)
    message = str(info.value)
    assert str(tmp_path / "cifar-10-batches-py" / "data_batch_3") in message
    assert str(tmp_path / "cifar-10-batches-py" / "test_batch") in message
    assert f"hlop data fetch cifar10 --data-dir {tmp_path}" in message
    with pytest.raises(DataError, match="hlop data fetch cifar100"):
        load_cifar100(tmp_path)


def test_cifar_truncated_pickle_names_file(tmp_path: Path) -> None:
    make_cifar100(tmp_path)
    path = tmp_path / "cifar-100-python" / "test"
    path.write_bytes(path.read_bytes()[:500])
    with pytest.raises(DataError, match="corrupt") as info:
        load_cifar100(tmp_path)
    assert str(path) in str(info.value)


def test_cifar_wrong_row_size(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-100-python"
    bad = {b"data": np.zeros((4, 3000), np.uint8), b"fine_labels": [0, 1, 2, 3]}
    write_pickle(folder / "train", bad)
    write_pickle(folder / "test", bad)
    with pytest.raises(DataError, match="3072") as info:
        load_cifar100(tmp_path)
    assert str(folder / "train") in str(info.value)


def test_cifar_label_out_of_range(tmp_path: Path) -> None:
    make_cifar100(tmp_path)
    obj = cifar_dict(random_images(3), np.array([5, 100, 7]), "fine_labels", str_keys=False)
    path = write_pickle(tmp_path / "cifar-100-python" / "train", obj)
    with pytest.raises(DataError, match=r"0\.\.99") as info:
        load_cifar100(tmp_path)
    assert str(path) in str(info.value)


def test_cifar_count_mismatch_and_missing_key(tmp_path: Path) -> None:
    make_cifar100(tmp_path)
    obj = cifar_dict(random_images(3), np.array([5, 6]), "fine_labels", str_keys=False)
    write_pickle(tmp_path / "cifar-100-python" / "train", obj)
    with pytest.raises(DataError, match="3 images but 2 labels"):
        load_cifar100(tmp_path)
    obj = cifar_dict(random_images(3), np.array([5, 6, 7]), "labels", str_keys=False)
    write_pickle(tmp_path / "cifar-100-python" / "train", obj)
    with pytest.raises(DataError, match="no 'fine_labels' entry"):
        load_cifar100(tmp_path)


class Payload:
    """Pickles to a call of exec: must never run when a dataset is read."""

    def __reduce__(self) -> tuple:
        return (exec, ("import sys; sys.hlop_pwned = True",))


@pytest.mark.parametrize("evil", [Payload(), OrderedDict(a=1)])
def test_pickle_with_foreign_globals_is_refused(tmp_path: Path, evil: object) -> None:
    make_cifar100(tmp_path)
    obj = {b"data": np.zeros((1, 3072), np.uint8), b"fine_labels": [1], b"extra": evil}
    path = write_pickle(tmp_path / "cifar-100-python" / "train", obj)
    with pytest.raises(DataError, match="refusing to load") as info:
        load_cifar100(tmp_path)
    assert str(path) in str(info.value)
    assert not hasattr(sys, "hlop_pwned")


def test_pickle_that_is_not_a_dict(tmp_path: Path) -> None:
    make_cifar100(tmp_path)
    write_pickle(tmp_path / "cifar-100-python" / "test", [1, 2, 3])
    with pytest.raises(DataError, match="expected a pickled dict but found list"):
        load_cifar100(tmp_path)


# --------------------------------------------------------------------------- MAT v5


@pytest.mark.parametrize("compress", [True, False])
@pytest.mark.parametrize("byte_order", ["<", ">"])
def test_mat_round_trip(tmp_path: Path, compress: bool, byte_order: str) -> None:
    arrays = {
        "X": RNG.integers(0, 256, size=(4, 3, 2, 5), dtype=np.uint8),
        "y": np.arange(6, dtype=np.float64).reshape(3, 2) / 4,
        "i16": np.array([[-3, 7, 300]], dtype=np.int16),
        "f32": np.linspace(0, 1, 12, dtype=np.float32).reshape(4, 3),
        "i64": np.array([[2**40], [-5]], dtype=np.int64),
        "tiny": np.array([[1, 2, 3]], dtype=np.uint8),  # small data element format
        "row": np.arange(5, dtype=np.int32),  # 1-D: written as 1 x 5
    }
    path = write_mat(tmp_path / "a.mat", arrays, compress, byte_order=byte_order)
    raw = path.read_bytes()
    assert raw.startswith(b"MATLAB 5.0 MAT-file")
    assert raw[126:128] == (b"IM" if byte_order == "<" else b"MI")
    result = read_mat(path)
    assert set(result) == set(arrays)
    for name, array in arrays.items():
        expected = array.reshape(1, -1) if array.ndim == 1 else array
        assert result[name].dtype == array.dtype, name
        np.testing.assert_array_equal(result[name], expected)


def test_mat_column_major_layout(tmp_path: Path) -> None:
    """The values are stored column-major: the first index varies fastest."""
    array = np.arange(6, dtype=np.uint8).reshape(2, 3)
    raw = write_mat(tmp_path / "m.mat", {"a": array}, compress=False).read_bytes()
    assert bytes([0, 3, 1, 4, 2, 5]) in raw
    assert bytes([0, 1, 2, 3, 4, 5]) not in raw


def test_mat_storage_type_differs_from_class(tmp_path: Path) -> None:
    y = np.array([[1.0], [10.0], [3.0]])
    path = write_mat(tmp_path / "s.mat", {"y": y}, storage={"y": "u1"})
    stored = zlib.decompress(path.read_bytes()[136:])
    assert stored.count(bytes([1, 10, 3])) == 1  # the values are kept as single bytes
    result = read_mat(path)["y"]
    assert result.dtype == np.float64
    np.testing.assert_array_equal(result, y)


def test_mat_skips_non_numeric_and_empty_variables(tmp_path: Path) -> None:
    order = "<"
    char_body = b"".join(
        [
            mat_element(MI_UINT32, struct.pack("<II", 4, 0), order),  # mxCHAR_CLASS
            mat_element(5, np.array([1, 2], "<i4").tobytes(), order),
            mat_element(MI_INT8, b"txt", order),
            mat_element(4, "hi".encode("utf-16-le"), order),
        ]
    )
    elements = [
        mat_element(MI_MATRIX, char_body, order, small=False),
        mat_element(MI_MATRIX, b"", order, small=False),  # an empty placeholder
        encode_matrix("keep", np.array([[7, 8]], np.uint8), order, np.dtype("u1")),
    ]
    header = b"MATLAB 5.0 MAT-file".ljust(116, b" ") + b"\0" * 8 + struct.pack("<HH", 0x100, 0x4D49)
    result = parse_mat(header + b"".join(elements), "x.mat")
    assert list(result) == ["keep"]
    np.testing.assert_array_equal(result["keep"], [[7, 8]])


def test_mat_errors_name_the_file(tmp_path: Path) -> None:
    path = write_mat(tmp_path / "t.mat", {"X": np.zeros((8, 8), np.uint8)}, compress=False)
    good = path.read_bytes()
    cases = {
        "short.mat": (good[:100], "fewer than the 128-byte header"),
        "trunc.mat": (good[:-20], "truncated"),
        "noindicator.mat": (good[:126] + b"XX" + good[128:], "not a MATLAB v5"),
        "v73.mat": (good[:124] + struct.pack("<H", 0x0200) + good[126:], "v7.3"),
    }
    compressed = write_mat(tmp_path / "c.mat", {"X": np.zeros((8, 8), np.uint8)}).read_bytes()
    corrupt = bytearray(compressed)
    corrupt[140:150] = b"\xff" * 10
    cases["zlib.mat"] = (bytes(corrupt), "cannot be decompressed")
    cases["ztrunc.mat"] = (compressed[:136] + compressed[136:-6], "truncated")
    for name, (content, problem) in cases.items():
        bad = tmp_path / name
        bad.write_bytes(content)
        with pytest.raises(DataError, match=problem) as info:
            read_mat(bad)
        assert str(bad) in str(info.value), name


def test_mat_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="cannot read"):
        read_mat(tmp_path / "absent.mat")


# --------------------------------------------------------------------------- SVHN


@pytest.mark.parametrize(("compress", "byte_order"), [(True, "<"), (False, "<"), (False, ">")])
def test_svhn(tmp_path: Path, compress: bool, byte_order: str) -> None:
    expected = make_svhn(tmp_path, compress, byte_order)
    data = load_svhn(tmp_path)
    for split in ("train", "test"):
        images, labels = data[split]
        x = expected[split]["X"]
        assert images.shape == (x.shape[3], 3, 32, 32) and images.dtype == np.uint8
        np.testing.assert_array_equal(images, x.transpose(3, 2, 0, 1))
        assert images[2, 1, 5, 9] == x[5, 9, 1, 2]  # X(h, w, c, n) -> images[n, c, h, w]
        np.testing.assert_array_equal(labels, expected[split]["y"].ravel() % 10)
        assert labels.dtype == np.int64
    assert data["train"][1][9] == 0  # label 10 is digit 0


def test_svhn_errors(tmp_path: Path) -> None:
    make_svhn(tmp_path)
    train = tmp_path / "svhn" / "train_32x32.mat"
    write_mat(train, svhn_arrays(3, labels=[1, 11, 2]))
    with pytest.raises(DataError, match=r"1\.\.10") as info:
        load_svhn(tmp_path)
    assert str(train) in str(info.value)
    write_mat(train, {"X": np.zeros((32, 32, 1, 2), np.uint8), "y": np.ones((2, 1))})
    with pytest.raises(DataError, match="32 x 32 x 3 x N"):
        load_svhn(tmp_path)
    write_mat(train, {"X": np.zeros((32, 32, 3, 2), np.uint8)})
    with pytest.raises(DataError, match="no numeric variable 'y'"):
        load_svhn(tmp_path)
    write_mat(train, {"X": np.zeros((32, 32, 3, 2), np.uint8), "y": np.ones((3, 1))})
    with pytest.raises(DataError, match="2 images but 3 labels"):
        load_svhn(tmp_path)
    train.unlink()
    with pytest.raises(DataError) as info:
        load_svhn(tmp_path)
    assert str(train) in str(info.value) and "hlop data fetch svhn" in str(info.value)


# --------------------------------------------------------------------------- FashionMNIST


def write_idx_dir(directory: Path, gz: bool) -> dict:
    data = {}
    for split, n in (("train", 20), ("test", 10)):
        data[split] = (RNG.integers(0, 256, (n, 28, 28), dtype=np.uint8), np.arange(n) % 10)
    for (split, kind), name in MNIST_FILES.items():
        array = data[split][0] if kind == "images" else data[split][1].astype(np.uint8)
        write_idx(directory / f"{name}{'.gz' if gz else ''}", array)
    return data


def test_fashion_mnist_from_root(tmp_path: Path) -> None:
    expected = write_idx_dir(tmp_path / "fashion-mnist", gz=False)
    data = load_fashion_mnist(tmp_path)
    for split in ("train", "test"):
        assert data[split][0].shape == (len(expected[split][0]), 1, 28, 28)
        np.testing.assert_array_equal(data[split][0][:, 0], expected[split][0])
        np.testing.assert_array_equal(data[split][1], expected[split][1])


def test_fashion_mnist_missing_is_not_read_elsewhere(tmp_path: Path) -> None:
    with pytest.raises(DataError) as info:
        load_fashion_mnist(tmp_path)
    message = str(info.value)
    assert str(tmp_path / "fashion-mnist" / "train-images-idx3-ubyte") in message
    assert f"hlop data fetch fashion-mnist --data-dir {tmp_path}" in message
    assert "dataset-fashion-mnist" in message
    (tmp_path / "fashion-mnist").mkdir()
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte"):
        load_fashion_mnist(tmp_path)


def test_fashion_mnist_corrupt_gz_names_file(tmp_path: Path) -> None:
    write_idx_dir(tmp_path / "fashion-mnist", gz=True)
    path = tmp_path / "fashion-mnist" / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(b"\0" * 100)[:-8])
    with pytest.raises(DataError) as info:
        load_fashion_mnist(tmp_path)
    assert str(path) in str(info.value)


# --------------------------------------------------------------------------- notMNIST


def make_notmnist(root: Path, n: int = 6) -> dict:
    result = {}
    for split in ("train", "test"):
        features, labels = random_images(n, (1, 32, 32)), np.arange(n) % 10
        obj = {"features": features, "labels": labels.astype(np.uint8)}
        write_pickle(root / "notmnist" / f"notmnist_{split}.pkl", obj, protocol=4)
        result[split] = (features, labels)
    return result


def test_notmnist(tmp_path: Path) -> None:
    expected = make_notmnist(tmp_path)
    data = load_notmnist(tmp_path)
    for split in ("train", "test"):
        assert data[split][0].shape == (6, 1, 32, 32) and data[split][1].dtype == np.int64
        np.testing.assert_array_equal(data[split][0], expected[split][0])
        np.testing.assert_array_equal(data[split][1], expected[split][1])


def test_notmnist_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError) as info:
        load_notmnist(tmp_path)
    message = str(info.value)
    assert str(tmp_path / "notmnist" / "notmnist_train.pkl") in message
    assert str(tmp_path / "notmnist" / "notmnist_test.pkl") in message
    assert "hlop data fetch" not in message and "'features'" in message
    make_notmnist(tmp_path)
    path = tmp_path / "notmnist" / "notmnist_train.pkl"
    write_pickle(path, {"features": random_images(2, (1, 28, 28)), "labels": [0, 1]})
    with pytest.raises(DataError, match=r"N x 1x32x32") as info:
        load_notmnist(tmp_path)
    assert str(path) in str(info.value)
    write_pickle(path, {"features": random_images(2, (1, 32, 32)), "labels": [0, 10]})
    with pytest.raises(DataError, match=r"0\.\.9"):
        load_notmnist(tmp_path)
    write_pickle(path, {"features": np.full((2, 1, 32, 32), 0.5), "labels": [0, 1]})
    with pytest.raises(DataError, match="uint8"):
        load_notmnist(tmp_path)


# --------------------------------------------------------------------------- miniImageNet


def test_miniimagenet_channels_first(tmp_path: Path) -> None:
    train = RNG.integers(0, 256, (5, 84, 84, 3), dtype=np.uint8)
    test = [RNG.integers(0, 256, (84, 84, 3), dtype=np.uint8) for _ in range(3)]  # a list
    write_pickle(
        tmp_path / "miniimagenet" / "train.pkl", {"images": train, "labels": [0, 99, 5, 5, 1]}
    )
    write_pickle(tmp_path / "miniimagenet" / "test.pkl", {"images": test, "labels": np.arange(3)})
    data = load_miniimagenet(tmp_path)
    assert data["train"][0].shape == (5, 3, 84, 84) and data["train"][0].flags.c_contiguous
    np.testing.assert_array_equal(data["train"][0], train.transpose(0, 3, 1, 2))
    assert data["train"][0][1, 2, 10, 20] == train[1, 10, 20, 2]
    np.testing.assert_array_equal(data["test"][0], np.stack(test).transpose(0, 3, 1, 2))
    np.testing.assert_array_equal(data["train"][1], [0, 99, 5, 5, 1])


def test_miniimagenet_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no stable public download") as info:
        load_miniimagenet(tmp_path)
    assert str(tmp_path / "miniimagenet" / "train.pkl") in str(info.value)
    folder = tmp_path / "miniimagenet"
    ok = {"images": RNG.integers(0, 256, (2, 8, 8, 3), dtype=np.uint8), "labels": [1, 2]}
    write_pickle(folder / "test.pkl", ok)
    write_pickle(
        folder / "train.pkl", {"images": np.zeros((2, 8, 8, 1), np.uint8), "labels": [1, 2]}
    )
    with pytest.raises(DataError, match="N x H x W x 3") as info:
        load_miniimagenet(tmp_path)
    assert str(folder / "train.pkl") in str(info.value)
    write_pickle(folder / "train.pkl", {"images": ok["images"], "labels": [1, 100]})
    with pytest.raises(DataError, match=r"0\.\.99"):
        load_miniimagenet(tmp_path)
    write_pickle(folder / "train.pkl", {"pictures": ok["images"], "labels": [1, 2]})
    with pytest.raises(DataError, match="no 'images' entry"):
        load_miniimagenet(tmp_path)
