"""What the benchmarks need of hlop, from this commit's package and from an older commit's.

The step benchmarks run one configuration on the code of two commits (the older one on
``PYTHONPATH=OLD/src``), and the package was laid out by layer since then: each helper here
takes the names where they are now, or where an older package had them.
"""

from __future__ import annotations

import importlib
from typing import Any


def first(*places: str) -> Any:
    """The first of ``module:name`` places that imports."""
    for place in places:
        module, _, name = place.partition(":")
        try:
            return getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError):
            continue
    raise ImportError(f"none of {places} imports")


def network_kwargs(
    *, lrs=None, hebbian_stride: str = "layer", hebbian_on=None, **fields: Any
) -> dict[str, Any]:
    """The keyword a built-in network takes its settings with (``settings=``; ``options=``
    in older packages), holding ``fields`` (timesteps, proj_type, precision, fast, ...)
    and the circuits' ``lrs`` and ``hebbian_stride``."""
    settings = first("hlop.models.settings:NetworkSettings") if _new() else None
    if settings is not None:
        extra = {"lrs": None if lrs is None else tuple(lrs), "hebbian_stride": hebbian_stride}
        if hebbian_on is not None:
            extra["hebbian_on"] = hebbian_on
        return {"settings": settings(**fields, **extra)}
    options = first("hlop.networks:NetworkOptions")
    circuit = first("hlop.networks:CircuitOptions")(
        lrs=None if lrs is None else tuple(lrs),
        hebbian_stride=hebbian_stride,
        hebbian_on=hebbian_on,
    )
    return {"options": options(**fields, circuit=circuit)}


def _new() -> bool:
    try:
        importlib.import_module("hlop.models.settings")
    except ImportError:
        return False
    return True


def as_during_task(model, sizes):
    return first("hlop.models.testing:as_during_task", "hlop.testing:as_during_task")(model, sizes)


def memory():
    """The process's memory policy module (``bound_kernel_caches``, ``tune_allocator``)."""
    for name in ("hlop.loop.memory", "hlop.memory"):
        try:
            return importlib.import_module(name)
        except ImportError:
            continue
    raise ImportError("no memory module")


def pmnist_sizes(tasks: int):
    return first(
        "hlop.run.presets:pmnist_sizes", "hlop.presets:pmnist_sizes", "hlop.benchmarks:pmnist_sizes"
    )(tasks)
