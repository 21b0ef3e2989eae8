"""The DSR fast layout carried in two parts: per-step values without autograd, the rate
slice with it.

In the fast layout (:mod:`hlop.spiking.neurons`) an activity tensor holds ``T + 1`` slices of which
only the last, the rate slice, carries gradient.  As one tensor, every operation's autograd
node spans all ``T + 1`` slices: the backward of batch norm, pooling and the neurons runs
over ``T`` slices of zeros, zero gradients of full size are filled, and inputs of every slice
are kept for the backward.  A :class:`FastParts` carries the two parts apart:

* ``steps``: the ``T`` per-step values, ``[T, B, ...]``, computed without autograd (a
  zero-stride view over time when they are the same at every step: the current of the
  static input image);
* ``rate``: the rate slice, ``[B, ...]``, through autograd.

Operations that act on each row alike (a frozen batch norm, pooling, a layer's forward,
sums) give both parts the values they have in the joined tensor; the neurons and the
projected layers take a :class:`FastParts` through their ``forward_parts`` (the neurons make the
rate slice from the per-step spikes, the layers' circuits learn from the per-step rows).  So
the forward values, the circuits' updates and the gradients are those of the joined fast
layout, and the backward of every layer works on ``B`` rows.  One sum is taken in another
order: a neuron whose current is the same at every step (the first layer's) takes that
current as its input rate instead of summing ``T`` weighted copies of it; the rate only
decides where the DSR gradient passes (``0 < r < Vth tau / dt``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn


@dataclass(frozen=True)
class FastParts:
    """Activity in the fast layout, per-step part and rate slice apart (module docstring).

    Attributes:
        steps: ``[T, B, ...]`` per-step values (no autograd).
        rate: ``[B, ...]`` the rate slice (autograd).
        constant: ``steps`` is the same tensor at every step (a view that repeats it).
    """

    steps: Tensor
    rate: Tensor
    constant: bool = False

    @classmethod
    def repeated(cls, x: Tensor, timesteps: int) -> FastParts:
        """The same activity ``x`` at every step, and as the rate slice."""
        steps = x.detach().unsqueeze(0).expand(timesteps, *x.shape)
        return cls(steps, x, constant=True)

    def map_steps(self, fn: Callable[[Tensor], Tensor]) -> Tensor:
        """``fn`` (acting on each row alike) on the per-step part, without autograd; computed
        once when that part is constant."""
        t = self.steps.shape[0]
        with torch.no_grad():
            if self.constant:
                y = fn(self.steps[0])
                return y.unsqueeze(0).expand(t, *y.shape)
            y = fn(self.steps.reshape(-1, *self.steps.shape[2:]))
            return y.view(t, -1, *y.shape[1:])

    def map(self, fn: Callable[[Tensor], Tensor]) -> FastParts:
        """``fn`` (acting on each row alike) on both parts."""
        return FastParts(self.map_steps(fn), fn(self.rate), self.constant)

    def select(self, rows: Tensor) -> FastParts:
        """The samples picked by ``rows`` (a mask or indices over the batch)."""
        return FastParts(self.steps[:, rows], self.rate[rows], self.constant)

    def joined(self) -> Tensor:
        """The one tensor of the fast layout: ``(T + 1) * B`` time-major rows."""
        steps = self.steps.detach().reshape(-1, *self.steps.shape[2:])
        return torch.cat([steps, self.rate])

    def add_(self, other: FastParts) -> FastParts:
        """``self + other``, the per-step part summed into ``self``'s (which must be no other
        value's: a layer's fresh output); one map fewer alive than with ``+``."""
        if self.constant:
            return self + other
        with torch.no_grad():
            self.steps.add_(other.steps)
        return FastParts(self.steps, self.rate + other.rate)

    def __add__(self, other: FastParts) -> FastParts:
        if not isinstance(other, FastParts):
            return NotImplemented
        with torch.no_grad():
            if self.constant and other.constant:
                y = self.steps[0] + other.steps[0]
                steps = y.unsqueeze(0).expand(self.steps.shape[0], *y.shape)
            else:
                steps = self.steps + other.steps
        return FastParts(steps, self.rate + other.rate, self.constant and other.constant)


def over_time(w: Tensor, seq: Tensor) -> Tensor:
    """``sum_t w_t seq[t]`` of ``T`` slices (``torch.tensordot``); slices of images in the
    channels-last format are summed as they lie in memory, not copied first."""
    if seq.dim() == 5 and seq.stride(2) == 1 and seq.shape[2] > 1:  # [T, B, C, H, W], C last
        return torch.tensordot(w, seq.permute(0, 1, 3, 4, 2), dims=1).permute(0, 3, 1, 2)
    return torch.tensordot(w, seq, dims=1)


def empty_steps(steps: Tensor) -> Tensor:
    """An uninitialised ``[T, B, ...]`` tensor like ``steps``, each slice in the memory format
    of ``steps``' slices (channels last stays channels last)."""
    one = steps[0]
    last = one.dim() == 4 and one.is_contiguous(memory_format=torch.channels_last)
    fmt = torch.channels_last if last and not one.is_contiguous() else torch.contiguous_format
    flat = torch.empty(
        (steps.shape[0] * steps.shape[1], *steps.shape[2:]),
        dtype=steps.dtype,
        device=steps.device,
        memory_format=fmt,
    )
    return flat.view(steps.shape)


def through(module: nn.Module, h: Tensor | FastParts) -> Tensor | FastParts:
    """``module(h)``; a :class:`FastParts` goes through the module's ``forward_parts`` when it has
    one (neurons, projected layers), else through the module on each part: modules that act
    on each row alike and are affine in it (frozen batch norm, pooling), whose parameters'
    gradients from the rate slice are those of the per-step graph, as in the joined layout."""
    if not isinstance(h, FastParts):
        return module(h)
    forward_parts = getattr(module, "forward_parts", None)
    if forward_parts is not None:
        return forward_parts(h)
    return h.map(module)


def hooked(model: nn.Module) -> bool:
    """Whether a module under ``model`` (not ``model`` itself) has forward hooks, which expect
    the joined fast layout (GPM's captures, HAT's gates)."""
    return any(m._forward_hooks or m._forward_pre_hooks for m in model.modules() if m is not model)
