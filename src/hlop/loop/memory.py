"""The process's memory around a run: oneDNN's kernel caches, and the C heap's policy.

What each measure saves is measured by ``benchmarks/run_memory.py`` (docs/performance.md,
"Memory"):

* oneDNN (bf16 matrix products and convolutions on the CPU) keeps a compiled kernel for
  every operand shape it meets (1024 in its own cache and 1024 in ideep's by default), and
  the circuits' products change shape every task.  :func:`bound_kernel_caches` keeps 32 of
  each.
* glibc's allocator keeps the pages of freed tensors, and tensors of changing sizes leave
  its heap fragmented: :func:`release_freed_memory` gives them back at task boundaries.
* Left to itself glibc also gives memory back *during* a step, whenever the top of the heap
  is free, and takes it again for the next tensor (page faults at every step), and gives
  every tensor above 32 MiB pages of its own, returned when it is freed (the convolutional
  networks' per-step feature maps: 100-340 MiB each, faulted in again at every step).
  :func:`tune_allocator` serves tensors up to 1 GiB from the heap and keeps up to 1 GiB of
  free heap between the trims at task boundaries: no more memory than the step's peak,
  which the heap reaches anyway.

The first two and the last are process-wide: the command line (:func:`hlop.tools.cli.main`) sets
them; a program that calls :func:`hlop.run.experiment.train` itself chooses whether to.
"""

from __future__ import annotations

import ctypes
import functools
import os

#: environment variable -> value set by :func:`bound_kernel_caches`
KERNEL_CACHES = {"ONEDNN_PRIMITIVE_CACHE_CAPACITY": "32", "LRU_CACHE_CAPACITY": "32"}

# glibc's mallopt parameters (malloc.h) and the values tune_allocator gives them
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
TRIM_THRESHOLD = 1 << 30  # free heap kept at its top before glibc returns it
MMAP_THRESHOLD = 1 << 30  # larger allocations get pages of their own


def bound_kernel_caches() -> None:
    """Set :data:`KERNEL_CACHES` where the environment does not (its values win).  oneDNN
    reads them when it first runs, so call this before the process's first bf16 product or
    convolution."""
    for name, value in KERNEL_CACHES.items():
        os.environ.setdefault(name, value)


@functools.cache
def _libc():
    try:
        lib = ctypes.CDLL(None)
        lib.malloc_trim, lib.mallopt  # noqa: B018 - glibc only
    except (AttributeError, OSError):
        return None
    return lib


@functools.cache
def tune_allocator() -> bool:
    """Set glibc's trim and mmap thresholds (:data:`TRIM_THRESHOLD`, :data:`MMAP_THRESHOLD`)
    once per process, unless the environment sets them (``MALLOC_TRIM_THRESHOLD_``,
    ``MALLOC_MMAP_THRESHOLD_``); False where the C library is not glibc."""
    lib = _libc()
    if lib is None:
        return False
    if "MALLOC_TRIM_THRESHOLD_" not in os.environ:
        lib.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    if "MALLOC_MMAP_THRESHOLD_" not in os.environ:
        lib.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)
    return True


def release_freed_memory() -> None:
    """Give the C heap's free pages back to the operating system (glibc's ``malloc_trim``;
    nothing elsewhere).  The continual loop calls it at the start of each step and after
    the step's evaluation, when the step's tensors are gone."""
    lib = _libc()
    if lib is not None:
        lib.malloc_trim(0)
