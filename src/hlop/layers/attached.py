"""One layer of any model with its lateral circuit, as :class:`hlop.HLOP` attaches it: the
activity rows its circuit reads (every time step of every sample, with the bias's constant
1), the joint projection of ``[dW, db]``, and the checks of what a circuit can be given."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from hlop.core import optim
from hlop.core.circuit import LateralCircuit
from hlop.core.projection import unfold_patches

HEBBIAN_MODES = ("per-call", "averaged")
SUPPORTED = (nn.Linear, nn.Conv2d)


class AttachedLayer:
    """One layer with its circuit, its hooks and (averaged mode) the pending input sum.

    ``bias``: the layer's bias is protected with its weight (the circuit's last input is
    the constant 1)."""

    def __init__(self, name: str, layer: nn.Module, circuit: LateralCircuit, bias: bool) -> None:
        self.name, self.layer, self.circuit, self.bias = name, layer, circuit, bias
        self.handles: list = []
        self.pending: Tensor | None = None
        self.calls = 0
        self.accumulated: set[str] = set()  # of weight and bias, in the current backward

    def params(self) -> list[Tensor]:
        """The parameters the circuit protects: the weight, and the bias if protected."""
        return [self.layer.weight, self.layer.bias] if self.bias else [self.layer.weight]

    def multi_step(self, x: Tensor) -> bool:
        """Whether ``x`` is a multi-step input ``[T, B, ...]``."""
        if isinstance(self.layer, nn.Linear):
            return x.dim() >= 3 and getattr(self.layer, "step_mode", None) == "m"
        return x.dim() == 5

    def check(self, x: Tensor) -> None:
        """Refuse an input whose layout this layer's circuit cannot read, with its shape."""
        layer = self.layer
        if isinstance(layer, nn.Linear):
            ok, accepted = x.dim() >= 1 and x.shape[-1] == layer.in_features, "(..., N)"
            n = f"N = {layer.in_features}"
        else:
            ok = x.dim() in (3, 4, 5) and x.shape[-3] == layer.in_channels
            accepted, n = "(C, H, W), (B, C, H, W) or (T, B, C, H, W)", f"C = {layer.in_channels}"
        if not ok:
            raise ValueError(
                f"hlop.HLOP: layer '{self.name}' ({type(layer).__name__}) got an input of shape "
                f"{tuple(x.shape)}; it reads {accepted} with {n}"
            )

    def rows(self, x: Tensor) -> Tensor:
        """The activity rows (B' x N, or N + 1 with the bias's constant) the circuit learns
        from: every leading dimension (time, batch) becomes rows."""
        self.check(x)
        layer = self.layer
        if isinstance(layer, nn.Linear):
            rows = x.reshape(-1, layer.in_features)
        else:
            x = x.reshape(-1, *x.shape[-3:])  # (C, H, W) and (T, B, C, H, W) as (B', C, H, W)
            pad = layer._reversed_padding_repeated_twice  # F.pad order, also padding="same"
            rows = unfold_patches(x, layer.kernel_size, layer.stride, tuple(pad), layer.dilation)
        if self.bias:
            rows = torch.cat([rows, rows.new_ones(rows.shape[0], 1)], dim=1)
        return rows

    def flat_update(self, tensors: list[Tensor]) -> Tensor:
        """``[W, b]`` (or gradients, or changes, of them) as one C_out x N(+1) matrix."""
        w = tensors[0].reshape(tensors[0].shape[0], -1)
        return torch.cat([w, tensors[1].reshape(-1, 1)], dim=1) if self.bias else w

    def project_in_place(self, tensors: list[Tensor]) -> None:
        """Project ``tensors`` (shaped as :meth:`params`) jointly with the old subspace."""
        flat = self.circuit.project(self.flat_update(tensors))
        n = tensors[0][0].numel()
        tensors[0].copy_(flat[:, :n].reshape(tensors[0].shape))
        if self.bias:
            tensors[1].copy_(flat[:, n])


def plain_sgd(optimizer: torch.optim.Optimizer) -> bool:
    """Whether every step of ``optimizer`` is ``-lr * grad`` (torch's or hlop's SGD with no
    momentum, weight decay, Nesterov or maximisation)."""
    if not isinstance(optimizer, torch.optim.SGD | optim.SGD):
        return False
    return all(
        g.get("momentum", 0) == 0
        and g.get("weight_decay", 0) == 0
        and not g.get("nesterov", False)
        and not g.get("maximize", False)
        for g in optimizer.param_groups
    )


def check_layer(name: str, layer: nn.Module) -> None:
    if not isinstance(layer, SUPPORTED):
        raise ValueError(
            f"hlop.HLOP: layer '{name}' is a {type(layer).__name__}; only nn.Linear and "
            "nn.Conv2d (and their subclasses) can be given lateral circuits"
        )
    if isinstance(layer, nn.Conv2d):
        if layer.groups != 1:
            raise ValueError(
                f"hlop.HLOP: layer '{name}' is a grouped convolution (groups={layer.groups}); "
                "its weight sees a different input slice per group, which one circuit cannot "
                "project: grouped and depthwise convolutions are not supported"
            )
        if layer.padding_mode != "zeros":
            raise ValueError(
                f"hlop.HLOP: layer '{name}' pads with {layer.padding_mode!r}; only zero "
                "padding is supported"
            )
