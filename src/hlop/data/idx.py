"""Reading and writing IDX files (the format of the MNIST distribution files)."""

from __future__ import annotations

import gzip
import os
import secrets
import zlib
from pathlib import Path

import numpy as np

from hlop.data.errors import DataError

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


def idx_type_code(dtype: np.dtype) -> int:
    """Return the IDX type code of ``dtype``; unsupported dtypes raise ValueError."""
    native = np.dtype(dtype).newbyteorder("=")
    for code, idx_dtype in IDX_DTYPES.items():
        if idx_dtype.newbyteorder("=") == native:
            return code
    raise ValueError(
        f"dtype {native} cannot be stored in an IDX file; "
        "use uint8, int8, int16, int32, float32 or float64"
    )


def encode_idx(array: np.ndarray) -> bytes:
    """Return the uncompressed IDX bytes of ``array``."""
    array = np.asarray(array)
    if array.ndim == 0 or array.ndim > 255:
        raise ValueError(f"an IDX array needs 1 to 255 dimensions, got {array.ndim}")
    code = idx_type_code(array.dtype)
    header = bytes([0, 0, code, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    return header + np.ascontiguousarray(array, dtype=IDX_DTYPES[code]).tobytes()


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


def write_idx(path: str | os.PathLike[str], array: np.ndarray) -> Path:
    """Write ``array`` as an IDX file, gzip-compressed when ``path`` ends with ``.gz``."""
    path = Path(path)
    data = encode_idx(array)
    if path.suffix == ".gz":
        data = gzip.compress(data, mtime=0)
    write_bytes_atomic(path, data)
    return path


def find_dataset_file(directory: Path, name: str) -> Path | None:
    """Return ``directory/name`` or ``directory/name.gz`` (raw preferred), or None."""
    for candidate in (directory / name, directory / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def missing_files_message(directory: Path, missing: list[str], name: str, fetch_key: str) -> str:
    """Explain which dataset files are missing and how to obtain them."""
    listing = "\n".join(f"  - {file} (or {file}.gz)" for file in missing)
    return (
        f"{name} files are missing from {directory}:\n{listing}\n"
        f"Run `hlop data fetch {fetch_key} --data-dir {directory.parent}` to download them, "
        f"or place the files (raw or gzip-compressed) in {directory} yourself."
    )


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


def load_mnist_dir(
    directory: str | os.PathLike[str], name: str = "MNIST", *, fetch_key: str | None = None
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Load the four MNIST-style IDX files of ``directory`` (each raw or ``.gz``).

    Returns ``{"train": (images, labels), "test": (images, labels)}`` with uint8 images of
    shape (N, 28, 28) and int64 labels of shape (N,). ``name`` is used in messages and
    ``fetch_key`` (default ``name.lower()``) in the suggested ``hlop data fetch`` command, so
    the same loader serves FashionMNIST with a different folder.
    """
    directory = Path(directory)
    found: dict[tuple[str, str], Path] = {}
    missing: list[str] = []
    for key, file in MNIST_FILES.items():
        path = find_dataset_file(directory, file)
        if path is None:
            missing.append(file)
        else:
            found[key] = path
    if missing:
        key = fetch_key if fetch_key is not None else name.lower()
        raise DataError(missing_files_message(directory, missing, name, key))
    result = {}
    for split in ("train", "test"):
        image_path, label_path = found[(split, "images")], found[(split, "labels")]
        result[split] = check_split(
            read_idx(image_path), read_idx(label_path), image_path, label_path
        )
    return result
