"""Writers of the dataset file formats, for tests only: IDX and MATLAB v5 MAT-files.

Tests write tiny fixtures in the real formats with these and read them back with the
package's readers.
"""

from __future__ import annotations

import gzip
import os
import struct
import zlib
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from hlop.data.idx import IDX_DTYPES
from hlop.data.matlab import (
    MAT_VERSION_5,
    MI_COMPRESSED,
    MI_DTYPES,
    MI_INT8,
    MI_INT32,
    MI_MATRIX,
    MI_UINT32,
    MX_CLASSES,
)


def idx_type_code(dtype: np.dtype) -> int:
    """Return the IDX type code of ``dtype``; unsupported dtypes raise ValueError."""
    native = np.dtype(dtype).newbyteorder("=")
    for code, idx_dtype in IDX_DTYPES.items():
        if idx_dtype.newbyteorder("=") == native:
            return code
    raise ValueError(f"dtype {native} cannot be stored in an IDX file")


def encode_idx(array: np.ndarray) -> bytes:
    """Return the uncompressed IDX bytes of ``array``."""
    array = np.asarray(array)
    if array.ndim == 0 or array.ndim > 255:
        raise ValueError(f"an IDX array needs 1 to 255 dimensions, got {array.ndim}")
    code = idx_type_code(array.dtype)
    header = bytes([0, 0, code, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    return header + np.ascontiguousarray(array, dtype=IDX_DTYPES[code]).tobytes()


def write_idx(path: str | os.PathLike[str], array: np.ndarray) -> Path:
    """Write ``array`` as an IDX file, gzip-compressed when ``path`` ends with ``.gz``."""
    path = Path(path)
    data = encode_idx(array)
    if path.suffix == ".gz":
        data = gzip.compress(data, mtime=0)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def mat_element(mtype: int, payload: bytes, order: str, small: bool = True) -> bytes:
    """Encode a data element, in the small format when ``small`` and it fits in 4 bytes."""
    if small and len(payload) <= 4:
        return struct.pack(f"{order}I", len(payload) << 16 | mtype) + payload.ljust(4, b"\0")
    padding = b"\0" * (-len(payload) % 8)
    return struct.pack(f"{order}II", mtype, len(payload)) + payload + padding


def mx_class_of(dtype: np.dtype) -> int:
    """The MATLAB class of numpy ``dtype``; unsupported dtypes raise ValueError."""
    for mx_class, name in MX_CLASSES.items():
        if np.dtype(name) == np.dtype(dtype).newbyteorder("="):
            return mx_class
    raise ValueError(f"cannot store dtype {dtype} in a MAT-file; use a numeric dtype")


def mi_type_of(dtype: np.dtype) -> int:
    """The MAT data type that stores numpy ``dtype``."""
    for mtype, name in MI_DTYPES.items():
        if np.dtype(name) == np.dtype(dtype).newbyteorder("="):
            return mtype
    raise ValueError(f"no MAT data type stores dtype {dtype}")


def encode_matrix(name: str, array: np.ndarray, order: str, storage: np.dtype) -> bytes:
    """Encode ``array`` as a miMATRIX element whose values are stored as ``storage``."""
    array = np.asarray(array)
    shape = array.shape if array.ndim >= 2 else (1, array.size)
    values = array.reshape(shape).ravel(order="F").astype(np.dtype(storage).newbyteorder(order))
    body = b"".join(
        [
            mat_element(MI_UINT32, struct.pack(f"{order}II", mx_class_of(array.dtype), 0), order),
            mat_element(MI_INT32, np.asarray(shape, dtype=f"{order}i4").tobytes(), order),
            mat_element(MI_INT8, name.encode("ascii"), order),
            mat_element(mi_type_of(storage), values.tobytes(), order),
        ]
    )
    return mat_element(MI_MATRIX, body, order, small=False)


def write_mat(
    path: str | os.PathLike[str],
    arrays: Mapping[str, np.ndarray],
    compress: bool = True,
    *,
    byte_order: str = "<",
    storage: Mapping[str, np.dtype | str] | None = None,
) -> Path:
    """Write numeric ``arrays`` as a MATLAB v5 MAT-file (each variable zlib-compressed or not).

    ``storage`` optionally stores a variable's values in a smaller type than its class, as
    MATLAB does (e.g. a double array of small integers stored as uint8). 1-D arrays are
    written as 1 x N rows.
    """
    text = b"MATLAB 5.0 MAT-file, Platform: hlop, written by the hlop tests"
    header = text.ljust(116, b" ") + b"\0" * 8
    header += struct.pack(f"{byte_order}HH", MAT_VERSION_5, 0x4D49)
    parts = [header]
    for name, array in arrays.items():
        array = np.asarray(array)
        kind = (storage or {}).get(name, array.dtype)
        element = encode_matrix(name, array, byte_order, np.dtype(kind))
        if compress:  # a compressed element is not padded
            packed = zlib.compress(element)
            element = struct.pack(f"{byte_order}II", MI_COMPRESSED, len(packed)) + packed
        parts.append(element)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"".join(parts))
    return path
