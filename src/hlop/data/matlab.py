"""MATLAB v5 ``.mat`` files (SVHN's ``train_32x32.mat`` / ``test_32x32.mat``): the parts of
the format those files use, read without scipy; a file that is wrong raises
:class:`DataError` naming the file, the problem and the fix."""

from __future__ import annotations

import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hlop.errors import DataError


def read_file_bytes(path: Path) -> bytes:
    """Read ``path``; an unreadable file raises DataError."""
    try:
        return path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot read the file ({exc}).") from exc


MAT_HEADER_BYTES = 128
MAT_VERSION_5 = 0x0100
MAT_VERSION_73 = 0x0200
MI_INT8, MI_INT32, MI_UINT32, MI_MATRIX, MI_COMPRESSED = 1, 5, 6, 14, 15

#: MAT data type -> numpy dtype (native order; the file's byte order is applied when read).
MI_DTYPES: dict[int, str] = {
    1: "i1",
    2: "u1",
    3: "i2",
    4: "u2",
    5: "i4",
    6: "u4",
    7: "f4",
    9: "f8",
    12: "i8",
    13: "u8",
}
#: Numeric MATLAB array class -> numpy dtype.
MX_CLASSES: dict[int, str] = {
    6: "f8",
    7: "f4",
    8: "i1",
    9: "u1",
    10: "i2",
    11: "u2",
    12: "i4",
    13: "u4",
    14: "i8",
    15: "u8",
}
MX_COMPLEX_FLAG = 0x0800


@dataclass(frozen=True)
class Element:
    """A MAT data element: its type, its payload and where the next element starts."""

    mtype: int
    payload: memoryview
    end: int


def mat_byte_order(data: bytes, source: str | os.PathLike[str]) -> str:
    """Check the 128-byte MAT header and return the file's byte order ``"<"`` or ``">"``."""
    if len(data) < MAT_HEADER_BYTES:
        raise DataError(
            f"{source}: not a MATLAB file: it has {len(data)} bytes, fewer than the 128-byte "
            "header. It is truncated or not a .mat file; replace it."
        )
    indicator = data[126:128]
    if indicator not in (b"IM", b"MI"):
        raise DataError(
            f"{source}: not a MATLAB v5 MAT-file (no endian indicator 'IM'/'MI' at byte 126). "
            "Replace it with the original .mat file."
        )
    order = "<" if indicator == b"IM" else ">"
    (version,) = struct.unpack(f"{order}H", data[124:126])
    if version == MAT_VERSION_73:
        raise DataError(
            f"{source}: a MATLAB v7.3 (HDF5) file, which this reader does not support. Save it "
            "again in MATLAB with save(..., '-v7') or use the original v5 file."
        )
    if version != MAT_VERSION_5:
        raise DataError(f"{source}: unknown MAT-file version 0x{version:04X} (expected 0x0100).")
    return order


def read_element(
    data: memoryview, pos: int, order: str, source: str | os.PathLike[str], pad: bool = True
) -> Element:
    """Read the data element at ``pos`` (small format included).

    ``pad``: the next element starts at an 8-byte boundary (subelements); top-level elements
    follow each other directly.
    """
    if pos + 8 > len(data):
        raise DataError(
            f"{source}: truncated MAT-file: a data element tag at byte {pos} is cut off. "
            "Replace the file with an intact copy."
        )
    word, size = struct.unpack_from(f"{order}II", data, pos)
    if word >> 16:  # small data element: size and type packed in the first 4 bytes
        mtype, size = word & 0xFFFF, word >> 16
        if size > 4:
            raise DataError(f"{source}: corrupt small data element at byte {pos}.")
        return Element(mtype, data[pos + 4 : pos + 4 + size], pos + 8)
    start, stop = pos + 8, pos + 8 + size
    if stop > len(data):
        raise DataError(
            f"{source}: truncated MAT-file: an element at byte {pos} declares {size} bytes but "
            f"only {len(data) - start} remain. Replace the file with an intact copy."
        )
    end = start + (-(-size // 8) * 8 if pad else size)
    return Element(word, data[start:stop], end)


def element_array(element: Element, order: str, source: str | os.PathLike[str]) -> np.ndarray:
    """The numeric payload of ``element`` as a native-order 1-D array (maybe a read-only view)."""
    if element.mtype not in MI_DTYPES:
        raise DataError(f"{source}: unsupported MAT data type {element.mtype} in a numeric part.")
    dtype = np.dtype(MI_DTYPES[element.mtype]).newbyteorder(order)
    if len(element.payload) % dtype.itemsize:
        raise DataError(f"{source}: a numeric element's size is not a multiple of its type.")
    values = np.frombuffer(element.payload, dtype=dtype)
    return values.astype(dtype.newbyteorder("="), copy=False)


def parse_matrix(
    body: memoryview, order: str, source: str | os.PathLike[str]
) -> tuple[str, np.ndarray] | None:
    """Parse a miMATRIX payload; None for empty or non-numeric (cell, struct, char...) arrays."""
    if not body:
        return None
    flags = read_element(body, 0, order, source)
    dims = read_element(body, flags.end, order, source)
    name = read_element(body, dims.end, order, source)
    flag_words = element_array(flags, order, source)
    variable = bytes(name.payload).decode("latin1")
    mx_class = int(flag_words[0]) & 0xFF
    if mx_class not in MX_CLASSES or int(flag_words[0]) & MX_COMPLEX_FLAG:
        return None
    shape = tuple(int(d) for d in element_array(dims, order, source))
    real = element_array(read_element(body, name.end, order, source), order, source)
    if real.size != int(np.prod(shape, dtype=np.int64)):
        raise DataError(
            f"{source}: variable {variable!r} declares shape {shape} but "
            f"holds {real.size} values. The file is corrupt; replace it."
        )
    values = real.astype(MX_CLASSES[mx_class], copy=False)
    return variable, values.reshape(shape, order="F")


def parse_mat(data: bytes, source: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """Parse the bytes of a MATLAB v5 MAT-file into ``{name: array}``.

    Only real numeric arrays are returned (possibly as read-only views of ``data``); empty,
    complex, sparse, char, cell and struct variables are skipped.
    """
    order = mat_byte_order(data, source)
    data = memoryview(data)
    arrays = {}
    pos = MAT_HEADER_BYTES
    while pos < len(data):
        element = read_element(data, pos, order, source, pad=False)
        pos = element.end
        payload, mtype = element.payload, element.mtype
        if mtype == MI_COMPRESSED:
            try:
                inner = zlib.decompress(payload)
            except zlib.error as exc:
                raise DataError(
                    f"{source}: a compressed variable cannot be decompressed ({exc}). The file "
                    "is corrupt or truncated; replace it with an intact copy."
                ) from exc
            element = read_element(memoryview(inner), 0, order, source, pad=False)
            payload, mtype = element.payload, element.mtype
        if mtype != MI_MATRIX:
            continue
        parsed = parse_matrix(payload, order, source)
        if parsed is not None:
            arrays[parsed[0]] = parsed[1]
    return arrays


def read_mat(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """Read the numeric variables of a MATLAB v5 MAT-file (compressed or not)."""
    path = Path(path)
    return parse_mat(read_file_bytes(path), path)
