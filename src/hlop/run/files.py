"""Files a run writes and reads: atomic replacement, JSON objects.

This module imports nothing of hlop but its errors.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import torch

from hlop.errors import CheckpointError


def write_atomic(path: str | Path, write: Callable[[IO[bytes]], None]) -> None:
    """Write ``path`` through ``write(file)`` into a temporary file of the same directory,
    flushed and synced, that then replaces ``path``: a reader (or a run killed at any
    moment) sees the old file or the new one, never a part."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def save_atomic(obj: Any, path: str | Path) -> None:
    """``torch.save(obj)`` to ``path`` through :func:`write_atomic`."""
    write_atomic(path, lambda f: torch.save(obj, f))


def load_saved(path: str | Path, device: Any, what: str, hint: str) -> Any:
    """What ``torch.save`` wrote to ``path``, read with ``weights_only=True`` onto
    ``device``; a missing or unreadable file raises :class:`CheckpointError` naming ``what``
    it should have been, with ``hint`` on what to pass instead."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such {what} file; {hint}")
    try:
        return torch.load(path, map_location=device, weights_only=True)
    except Exception as e:  # pickle, zip or torch errors: damaged, or not ours
        raise CheckpointError(
            f"{path} cannot be read as an hlop {what} ({type(e).__name__}): the file is "
            f"damaged or was not written by hlop train; {hint}"
        ) from None


def write_json(path: str | Path, data: Any) -> None:
    """``data`` as indented JSON in ``path``, through :func:`write_atomic`."""
    text = json.dumps(data, indent=2) + "\n"
    write_atomic(path, lambda f: f.write(text.encode()))


def read_json_dict(path: str | Path) -> dict | None:
    """The JSON object in ``path``; None when it is missing, unreadable or not an object."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
