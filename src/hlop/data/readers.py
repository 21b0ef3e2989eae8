"""Parsers of the standard image-dataset files.

Every ``read_*`` function takes the dataset's files (in the order of its row in
:data:`hlop.data.datasets.DATASETS`) and returns ``{"train": (images, labels), "test": (images,
labels)}`` with uint8 images of shape (N, C, H, W) and int64 labels of shape (N,); a file that
is wrong raises :class:`DataError` naming the file, the problem and the fix.
"""

from __future__ import annotations

import codecs
import importlib
import io
import os
import pickle
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from hlop.data.matlab import read_file_bytes, read_mat
from hlop.errors import DataError

Arrays = dict[str, tuple[np.ndarray, np.ndarray]]

CIFAR10_TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR_PIXELS = 3 * 32 * 32


# --------------------------------------------------------------------------- safe pickles


def _numpy_attr(submodule: str, name: str) -> object:
    """``numpy._core.<submodule>.<name>`` (NumPy 2) or ``numpy.core...`` (NumPy 1)."""
    for package in ("numpy._core", "numpy.core"):
        try:
            module = importlib.import_module(f"{package}.{submodule}")
        except ImportError:
            continue
        if hasattr(module, name):
            return getattr(module, name)
    raise ImportError(f"numpy has no {submodule}.{name}")


def _safe_globals() -> dict[tuple[str, str], object]:
    """The only globals a dataset pickle may reference: numpy array reconstruction."""
    allowed: dict[tuple[str, str], object] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): codecs.encode,  # bytes in protocol 0-2 pickles of Python 3
    }
    numpy_names = (("multiarray", "_reconstruct"), ("multiarray", "scalar"))
    numpy_names += (("numeric", "_frombuffer"),)
    for package in ("numpy.core", "numpy._core"):
        for submodule, name in numpy_names:
            allowed[(f"{package}.{submodule}", name)] = _numpy_attr(submodule, name)
    return allowed


class ForbiddenGlobal(pickle.UnpicklingError):
    """A pickle references a class or function outside the allowed numpy/builtin set."""


class SafeUnpickler(pickle.Unpickler):
    """An unpickler that only rebuilds builtins and numpy arrays; any other class is refused."""

    allowed = _safe_globals()

    def find_class(self, module: str, name: str) -> object:
        try:
            return self.allowed[(module, name)]
        except KeyError:
            raise ForbiddenGlobal(
                f"refusing to load {module}.{name}: only numpy arrays and builtin values are "
                "allowed in a dataset pickle"
            ) from None


def safe_unpickle(data: bytes, source: str | os.PathLike[str]) -> object:
    """Unpickle ``data`` with :class:`SafeUnpickler` (Python 2 pickles too, as latin-1)."""
    try:
        return SafeUnpickler(io.BytesIO(data), encoding="latin1").load()
    except ForbiddenGlobal as exc:
        raise DataError(
            f"{source}: {exc}. This is not a plain dataset pickle; replace it with the "
            "original file."
        ) from exc
    except Exception as exc:  # truncated or corrupt data raises many different errors
        reason = exc
    raise DataError(
        f"{source}: cannot be read as a python pickle ({type(reason).__name__}: {reason}). "
        "It is probably corrupt or only partly copied; replace it with an intact copy."
    ) from reason


def load_pickle_dict(data: bytes, source: str | os.PathLike[str]) -> dict[str, object]:
    """Unpickle a dict safely; byte-string keys are decoded so ``b"data"`` reads as ``"data"``."""
    obj = safe_unpickle(data, source)
    if not isinstance(obj, dict):
        raise DataError(
            f"{source}: expected a pickled dict but found {type(obj).__name__}. Replace it "
            "with the original file."
        )
    return {(k.decode("latin1") if isinstance(k, bytes) else k): v for k, v in obj.items()}


def dict_entry(obj: Mapping[str, object], key: str, source: str | os.PathLike[str]) -> object:
    """Return ``obj[key]``; a missing key raises DataError listing the keys present."""
    if key not in obj:
        raise DataError(
            f"{source}: the pickled dict has no {key!r} entry (it has {sorted(map(str, obj))}). "
            "Is this the right file? Replace it with the original one."
        )
    return obj[key]


# --------------------------------------------------------------------------- validation


def as_labels(values: object, source: str | os.PathLike[str]) -> np.ndarray:
    """Turn ``values`` (list or array of integers, or integral floats) into int64 (N,)."""
    try:
        labels = np.asarray(values)
    except (ValueError, TypeError) as exc:
        raise DataError(f"{source}: the labels are not an array ({exc}).") from exc
    if labels.ndim == 2 and 1 in labels.shape:
        labels = labels.reshape(-1)
    if labels.ndim != 1:
        raise DataError(
            f"{source}: expected a 1-D label array but found shape {labels.shape}. Replace the "
            "file with the original one."
        )
    if labels.dtype.kind == "f" and np.all(np.isfinite(labels)) and np.all(labels == labels // 1):
        return labels.astype(np.int64)
    if labels.dtype.kind not in "iu":
        raise DataError(
            f"{source}: expected integer labels but found {labels.dtype}. Replace the file "
            "with the original one."
        )
    return labels.astype(np.int64)


def as_images(values: object, source: str | os.PathLike[str]) -> np.ndarray:
    """Turn ``values`` (an array, or a list of equal-shape arrays) into a uint8 array."""
    try:
        images = np.asarray(values)
    except (ValueError, TypeError) as exc:
        raise DataError(
            f"{source}: the images are not an array of equal-shape images ({exc})."
        ) from exc
    if images.dtype == np.uint8:
        return images
    fits = not images.size or (images.min() >= 0 and images.max() <= 255)
    if images.dtype.kind in "iu" and fits:
        return images.astype(np.uint8)  # lossless: every value fits in 0..255
    raise DataError(
        f"{source}: expected uint8 pixels (0..255) but found {images.dtype} values that do not "
        "all fit. Convert the images to uint8 or replace the file with the original one."
    )


def check_image_split(
    images: np.ndarray,
    labels: np.ndarray,
    num_classes: int,
    source: str | os.PathLike[str],
    shape: tuple[int | None, ...] = (None, None, None),
) -> tuple[np.ndarray, np.ndarray]:
    """Validate uint8 images (N, C, H, W) and int64 labels (N,) in ``0..num_classes-1``.

    ``shape`` gives the expected (C, H, W); None entries are not checked.
    """
    expected = "x".join("?" if s is None else str(s) for s in shape)
    wrong = images.ndim != 4 or any(
        s is not None and s != d for s, d in zip(shape, images.shape[1:], strict=True)
    )
    if wrong:
        raise DataError(
            f"{source}: expected images of shape N x {expected} (count, channels, height, width)"
            f" but found {images.shape}. The file is not in the expected format; replace it."
        )
    if images.dtype != np.uint8:
        raise DataError(f"{source}: expected uint8 images but found {images.dtype}.")
    if labels.ndim != 1 or len(labels) != len(images):
        raise DataError(
            f"{source}: holds {len(images)} images but {len(labels)} labels; the counts must be "
            "equal. The file is damaged or was assembled wrongly; replace it."
        )
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise DataError(
            f"{source}: labels must lie in 0..{num_classes - 1} but range from {labels.min()} "
            f"to {labels.max()}. The file is damaged or belongs to another dataset; replace it."
        )
    return images, labels.astype(np.int64)


# --------------------------------------------------------------------------- CIFAR


def parse_cifar_batch(
    data: bytes, source: str | os.PathLike[str], label_key: str, num_classes: int
) -> tuple[np.ndarray, np.ndarray]:
    """Parse one CIFAR python pickle into images (N, 3, 32, 32) and labels (N,)."""
    obj = load_pickle_dict(data, source)
    raw = as_images(dict_entry(obj, "data", source), source)
    labels = as_labels(dict_entry(obj, label_key, source), source)
    if raw.ndim != 2 or raw.shape[1] != CIFAR_PIXELS:
        raise DataError(
            f"{source}: 'data' must have shape N x {CIFAR_PIXELS} (R, G and B planes of 32 x 32)"
            f" but has shape {raw.shape}. Replace the file with the original one."
        )
    images = raw.reshape(len(raw), 3, 32, 32)
    return check_image_split(images, labels, num_classes, source, (3, 32, 32))


def read_cifar_batches(
    paths: list[Path], label_key: str, num_classes: int
) -> tuple[np.ndarray, np.ndarray]:
    """Read and concatenate CIFAR batch files."""
    parts = [
        parse_cifar_batch(read_file_bytes(path), path, label_key, num_classes) for path in paths
    ]
    if len(parts) == 1:
        return parts[0]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def read_cifar10(paths: Sequence[Path]) -> Arrays:
    """Read CIFAR-10 (python version): five training batches, then the test batch."""
    n_train = len(CIFAR10_TRAIN_FILES)
    return {
        "train": read_cifar_batches(list(paths[:n_train]), "labels", 10),
        "test": read_cifar_batches(list(paths[n_train:]), "labels", 10),
    }


def read_cifar100(paths: Sequence[Path]) -> Arrays:
    """Read CIFAR-100 (python version, fine labels) from its train and test files."""
    train, test = paths
    return {
        "train": read_cifar_batches([train], "fine_labels", 100),
        "test": read_cifar_batches([test], "fine_labels", 100),
    }


# --------------------------------------------------------------------------- SVHN


def parse_svhn(
    arrays: Mapping[str, np.ndarray], source: str | os.PathLike[str]
) -> tuple[np.ndarray, np.ndarray]:
    """Turn the X (32x32x3xN) and y (Nx1, 1..10) variables of an SVHN file into one split."""
    for key in ("X", "y"):
        if key not in arrays:
            raise DataError(
                f"{source}: the MAT-file has no numeric variable {key!r} (it has "
                f"{sorted(arrays)}). Is this an SVHN cropped-digits file? Replace it."
            )
    x = arrays["X"]
    if x.ndim != 4 or x.shape[:3] != (32, 32, 3):
        raise DataError(
            f"{source}: X must have shape 32 x 32 x 3 x N but has {x.shape}. Replace the file "
            "with the original train_32x32.mat/test_32x32.mat."
        )
    if x.dtype != np.uint8:
        raise DataError(f"{source}: X must hold uint8 pixels but holds {x.dtype}.")
    labels = as_labels(arrays["y"], f"{source} (variable y)")
    if labels.size and (labels.min() < 1 or labels.max() > 10):
        raise DataError(
            f"{source}: SVHN labels must lie in 1..10 (10 is digit 0) but range from "
            f"{labels.min()} to {labels.max()}. Replace the file with the original one."
        )
    images = np.ascontiguousarray(x.transpose(3, 2, 0, 1))
    return check_image_split(images, labels % 10, 10, source, (3, 32, 32))


def read_svhn(paths: Sequence[Path]) -> Arrays:
    """Read SVHN cropped digits from train_32x32.mat and test_32x32.mat; label 10 -> 0."""
    train, test = paths
    return {"train": parse_svhn(read_mat(train), train), "test": parse_svhn(read_mat(test), test)}


# --------------------------------------------------------------------------- pickled sets


def read_pickled_split(
    path: Path,
    image_key: str,
    num_classes: int,
    channels_last: bool,
    shape: tuple[int | None, ...] = (None, None, None),
) -> tuple[np.ndarray, np.ndarray]:
    """Read a pickled ``{image_key: images, "labels": labels}`` dict as (N, C, H, W) uint8."""
    obj = load_pickle_dict(read_file_bytes(path), path)
    images = as_images(dict_entry(obj, image_key, path), path)
    labels = as_labels(dict_entry(obj, "labels", path), path)
    if channels_last:
        if images.ndim != 4 or images.shape[3] != 3:
            raise DataError(
                f"{path}: {image_key!r} must have shape N x H x W x 3 but has {images.shape}. "
                "Replace the file with one in that format."
            )
        images = np.ascontiguousarray(images.transpose(0, 3, 1, 2))
    elif images.ndim == 3:
        images = images[:, None]
    return check_image_split(images, labels, num_classes, path, shape)


def read_notmnist(paths: Sequence[Path]) -> Arrays:
    """Read the notMNIST pickles as (N, 1, 32, 32)."""
    train, test = paths
    return {
        "train": read_pickled_split(train, "features", 10, False, (1, 32, 32)),
        "test": read_pickled_split(test, "features", 10, False, (1, 32, 32)),
    }


def read_miniimagenet(paths: Sequence[Path]) -> Arrays:
    """Read the miniImageNet pickles (images N x H x W x 3) as (N, 3, H, W)."""
    train, test = paths
    return {
        "train": read_pickled_split(train, "images", 100, True, (3, None, None)),
        "test": read_pickled_split(test, "images", 100, True, (3, None, None)),
    }
