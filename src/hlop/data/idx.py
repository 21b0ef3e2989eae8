"""Reading IDX files (the format of the MNIST distribution files)."""

from __future__ import annotations

import gzip
import os
import secrets
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from hlop.errors import DataError

GZIP_MAGIC = b"\x1f\x8b"

#: IDX type code -> big-endian numpy dtype of the payload.
IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

#: The four files of an MNIST-style dataset, keyed by (split, kind).
MNIST_FILES: dict[tuple[str, str], str] = {
    ("train", "images"): "train-images-idx3-ubyte",
    ("train", "labels"): "train-labels-idx1-ubyte",
    ("test", "images"): "t10k-images-idx3-ubyte",
    ("test", "labels"): "t10k-labels-idx1-ubyte",
}

NUM_CLASSES = 10


def is_gzip(data: bytes) -> bool:
    """Return True when ``data`` starts with the gzip magic bytes."""
    return data[:2] == GZIP_MAGIC


def gunzip(data: bytes, source: str | os.PathLike[str]) -> bytes:
    """Decompress gzip ``data``; a corrupt stream raises DataError naming ``source``."""
    try:
        return gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(
            f"{source}: the file looks gzip-compressed but cannot be decompressed ({exc}). "
            "It is probably corrupt or was only partly downloaded; delete it and fetch it again."
        ) from exc


def decompress_if_gzip(data: bytes, source: str | os.PathLike[str]) -> bytes:
    """Return ``data`` decompressed when it is gzip, unchanged otherwise."""
    return gunzip(data, source) if is_gzip(data) else data


def parse_idx(data: bytes, source: str | os.PathLike[str]) -> np.ndarray:
    """Parse the (uncompressed) bytes of an IDX file into a native-endian array."""
    hint = "Delete it and fetch it again, or replace it with an intact copy."
    if len(data) < 4:
        raise DataError(
            f"{source}: not an IDX file: it has only {len(data)} bytes, fewer than the "
            f"4-byte header. {hint}"
        )
    if data[0] != 0 or data[1] != 0 or data[2] not in IDX_DTYPES:
        codes = ", ".join(f"0x{code:02X}" for code in IDX_DTYPES)
        raise DataError(
            f"{source}: not an IDX file: bad magic number 0x{data[:4].hex().upper()} (expected "
            f"two zero bytes, then a type code among {codes}, then the number of dimensions). "
            f"{hint}"
        )
    dtype = IDX_DTYPES[data[2]]
    ndim = data[3]
    if ndim == 0:
        raise DataError(f"{source}: IDX header declares 0 dimensions. {hint}")
    header_size = 4 + 4 * ndim
    if len(data) < header_size:
        raise DataError(
            f"{source}: IDX header is truncated: {ndim} dimensions need {header_size} header "
            f"bytes but the file has {len(data)}. {hint}"
        )
    shape = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    expected = header_size + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(data) != expected:
        problem = "truncated" if len(data) < expected else "too long"
        raise DataError(
            f"{source}: IDX file is {problem}: header declares shape {shape} of "
            f"{dtype.newbyteorder('=').name}, so the file should have {expected} bytes, but it "
            f"has {len(data)}. {hint}"
        )
    array = np.frombuffer(data, dtype=dtype, offset=header_size).reshape(shape)
    return array.astype(dtype.newbyteorder("="))


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an IDX file, raw or gzip-compressed (detected by its magic bytes)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot read the file ({exc}).") from exc
    return parse_idx(decompress_if_gzip(data, path), path)


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder, then rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp_name = path.parent / f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    # O_EXCL: never reuse an existing file; mode 0o666 lets the umask decide the permissions.
    fd = os.open(tmp_name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        tmp_name.unlink(missing_ok=True)
        raise


def check_split(
    images: np.ndarray,
    labels: np.ndarray,
    image_source: str | os.PathLike[str],
    label_source: str | os.PathLike[str],
) -> tuple[np.ndarray, np.ndarray]:
    """Validate one split and return (images uint8 [N,H,W], labels int64 [N])."""
    if images.ndim != 3:
        raise DataError(
            f"{image_source}: expected a 3-D image array (count, height, width) but the file "
            f"holds shape {images.shape}. Is this an image file? Replace it with the right file."
        )
    if images.dtype != np.uint8:
        raise DataError(
            f"{image_source}: expected uint8 pixels but the file holds {images.dtype}. "
            "Replace it with the original image file."
        )
    if labels.ndim != 1:
        raise DataError(
            f"{label_source}: expected a 1-D label array but the file holds shape "
            f"{labels.shape}. Is this a label file? Replace it with the right file."
        )
    if labels.dtype.kind not in "iu":
        raise DataError(
            f"{label_source}: expected integer labels but the file holds {labels.dtype}. "
            "Replace it with the original label file."
        )
    if len(images) != len(labels):
        raise DataError(
            f"{label_source}: holds {len(labels)} labels but {image_source} holds "
            f"{len(images)} images; the counts must be equal. The two files do not belong "
            "together or one is damaged; fetch both again."
        )
    labels = labels.astype(np.int64)
    if labels.size and (labels.min() < 0 or labels.max() >= NUM_CLASSES):
        raise DataError(
            f"{label_source}: labels must lie in 0..{NUM_CLASSES - 1} but range from "
            f"{labels.min()} to {labels.max()}. The file is damaged or not a digit-label file; "
            "fetch it again."
        )
    return images, labels


def read_mnist(paths: Sequence[Path]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Read the four MNIST-style IDX files (raw or gzip), in the order of :data:`MNIST_FILES`.

    Returns ``{"train": (images, labels), "test": (images, labels)}`` with uint8 images of
    shape (N, 1, 28, 28) and int64 labels of shape (N,).
    """
    train_images, train_labels, test_images, test_labels = paths
    result = {}
    for split, image_path, label_path in (
        ("train", train_images, train_labels),
        ("test", test_images, test_labels),
    ):
        images, labels = check_split(
            read_idx(image_path), read_idx(label_path), image_path, label_path
        )
        result[split] = (images[:, None], labels)
    return result
