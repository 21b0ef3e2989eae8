"""SGD and Adam as ``torch.optim`` computes them, without importing torch.compile.

``torch.optim``'s optimisers import ``torch._dynamo`` (and with it sympy) the first time a
parameter group is added or a step is taken, to keep their methods out of compiled graphs:
resident memory spent on a compiler hlop never calls. These two classes are
``torch.optim.Optimizer`` subclasses (learning-rate schedulers, step hooks and state dicts
work as with torch's): they call the base class's bookkeeping without its lazy import and do
the update of torch's single-tensor (for-loop) implementations, operation for operation, so
a run gives the same parameters bit for bit as with ``torch.optim.SGD`` /
``torch.optim.Adam`` on the CPU (``tests/test_optim.py``), and their state dicts load into
each other.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch

__all__ = ["SGD", "Adam"]

_Base = torch.optim.Optimizer


def _unwrapped(method: Callable) -> Callable:
    """``method`` without torch's ``_disable_dynamo`` wrapper (where it has one)."""
    return getattr(method, "__wrapped__", method)


_add_param_group = _unwrapped(_Base.add_param_group)
_zero_grad = _unwrapped(_Base.zero_grad)
_state_dict = _unwrapped(_Base.state_dict)
_load_state_dict = _unwrapped(_Base.load_state_dict)


class _Optimizer(_Base):
    """The base class's methods, called without the import of ``torch._dynamo``."""

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        _add_param_group(self, param_group)

    def zero_grad(self, set_to_none: bool = True) -> None:
        _zero_grad(self, set_to_none)

    def state_dict(self) -> dict[str, Any]:
        return _state_dict(self)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        _load_state_dict(self, state_dict)

    def _closure_loss(self, closure: Callable[[], float] | None) -> float | None:
        if closure is None:
            return None
        with torch.enable_grad():
            return closure()


class SGD(_Optimizer):
    """Stochastic gradient descent with momentum, dampening, Nesterov momentum and L2
    weight decay: ``torch.optim.SGD``'s update and defaults."""

    def __init__(
        self,
        params: Iterable,
        lr: float = 1e-3,
        momentum: float = 0.0,
        dampening: float = 0.0,
        weight_decay: float = 0.0,
        nesterov: bool = False,
    ) -> None:
        if lr < 0 or momentum < 0 or weight_decay < 0:
            raise ValueError(
                f"SGD needs lr, momentum and weight_decay >= 0, got lr={lr}, "
                f"momentum={momentum}, weight_decay={weight_decay}"
            )
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("Nesterov momentum needs momentum > 0 and dampening 0")
        defaults = dict(
            lr=lr,
            momentum=momentum,
            dampening=dampening,
            weight_decay=weight_decay,
            nesterov=nesterov,
        )
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        loss = self._closure_loss(closure)
        for group in self.param_groups:
            lr, momentum, dampening = group["lr"], group["momentum"], group["dampening"]
            weight_decay, nesterov = group["weight_decay"], group["nesterov"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad
                if weight_decay != 0:
                    grad = grad.add(p, alpha=weight_decay)
                if momentum != 0:
                    state = self.state[p]
                    buf = state.get("momentum_buffer")
                    if buf is None:
                        buf = state["momentum_buffer"] = grad.detach().clone()
                    else:
                        buf.mul_(momentum).add_(grad, alpha=1 - dampening)
                    grad = grad.add(buf, alpha=momentum) if nesterov else buf
                p.add_(grad, alpha=-lr)
        return loss


class Adam(_Optimizer):
    """Adam (Kingma and Ba) with L2 weight decay added to the gradient:
    ``torch.optim.Adam``'s update and defaults (no AMSGrad)."""

    def __init__(
        self,
        params: Iterable,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
    ) -> None:
        if lr < 0 or eps < 0 or weight_decay < 0:
            raise ValueError(
                f"Adam needs lr, eps and weight_decay >= 0, got lr={lr}, eps={eps}, "
                f"weight_decay={weight_decay}"
            )
        if not all(0.0 <= b < 1.0 for b in betas):
            raise ValueError(f"Adam needs betas in [0, 1), got {betas}")
        super().__init__(
            params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay)
        )

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        loss = self._closure_loss(closure)
        for group in self.param_groups:
            lr, (beta1, beta2) = group["lr"], group["betas"]
            eps, weight_decay = group["eps"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError("Adam does not take sparse gradients")
                state = self.state[p]
                if not state:
                    # torch keeps the step count as a float32 scalar on the CPU
                    state["step"] = torch.tensor(0.0, dtype=torch.float32)
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                grad, exp_avg, exp_avg_sq = p.grad, state["exp_avg"], state["exp_avg_sq"]
                state["step"] += 1
                if weight_decay != 0:
                    grad = grad.add(p, alpha=weight_decay)
                exp_avg.lerp_(grad, 1 - beta1)
                exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                step = state["step"].item()
                step_size = lr / (1 - beta1**step)
                bias_correction2_sqrt = (1 - beta2**step) ** 0.5
                denom = (exp_avg_sq.sqrt() / bias_correction2_sqrt).add_(eps)
                p.addcdiv_(exp_avg, denom, value=-step_size)
        return loss
