"""Weight products in a lower precision, on every machine at the speed it allows.

A bf16 product takes bf16 operands and accumulates in fp32: each product of two bf16
numbers is exact in fp32, so the only rounding is of the operands, of the fp32 sums, and of
the result to bf16.  GPUs and CPUs with AVX-512 (oneDNN's bf16 kernels: AVX512-BF16, AMX,
or fast AVX-512 conversions) run it natively.  On other CPUs (AVX2) torch's bf16 kernels are
emulated: measured on a 2-core AVX2 machine, a linear layer of the PMNIST network 7x and a
3x3 convolution of the CIFAR network 50x slower than fp32.  There :func:`product` computes
the same product from the operands rounded to bf16 with fp32 kernels and rounds the result
to bf16: the same numbers (up to the order of the fp32 sums) at fp32 speed.

This module imports nothing of hlop.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
from torch import Tensor


@functools.cache
def _cpu_multiplies_bf16() -> bool:
    try:  # what torch asks before it gives a bf16 product to oneDNN
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # (a torch without it: the capability decides)
        return torch.backends.cpu.get_cpu_capability().startswith("AVX512")


def native(dtype: torch.dtype, device: torch.device) -> bool:
    """Whether products with ``dtype`` operands run natively on ``device`` (not emulated)."""
    if dtype != torch.bfloat16 or device.type != "cpu":
        return True
    return _cpu_multiplies_bf16()


def _rounded(t: Tensor | None, dtype: torch.dtype) -> Tensor | None:
    return None if t is None else t.to(dtype).float()


def product(fn: Callable[..., Tensor], dtype: torch.dtype, *operands: Tensor | None) -> Tensor:
    """``fn(*operands)`` with every operand (None: left out) in ``dtype``, the result rounded
    to ``dtype`` as the kernel of a ``dtype`` product rounds it.  Natively the result is in
    ``dtype``; where ``dtype`` products are emulated (:func:`native`), ``fn`` runs in fp32 on
    the operands rounded to ``dtype`` and the result stays in fp32, rounded in place (what the
    caller converts it to anyway: no more memory than the fp32 result)."""
    device = next(t.device for t in operands if t is not None)
    if native(dtype, device):
        return fn(*(None if t is None else t.to(dtype) for t in operands))
    out = fn(*(_rounded(t, dtype) for t in operands))
    return out.copy_(out.to(dtype))
