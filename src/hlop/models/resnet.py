"""The spiking ResNet-18 of miniImageNet and 5-Datasets (pre-activation blocks)."""

from __future__ import annotations

from torch import Tensor, nn

from hlop.core.choices import STEMS
from hlop.models.base import SpikingNetwork, conv_norm, init_batchnorm, require_images
from hlop.models.gates import Gate, GatedWeight, GateLayout
from hlop.models.settings import NetworkSettings
from hlop.spiking.fast_parts import FastParts, through
from hlop.spiking.neurons import SpikingNeuron


def _spatial_mean(x: Tensor) -> Tensor:
    return x.mean(dim=(2, 3))


class PreActBlock(nn.Module):
    """Pre-activation spiking residual block::

    out = LIF(BN1(x)); identity = x, or a 1x1 strided conv of out
    return conv2(LIF(BN2(conv1(out)))) + identity
    """

    def __init__(self, net: SpikingNetwork, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.bn1, self.sn1 = nn.BatchNorm2d(c_in), net._neuron()
        self.conv1 = net._conv(c_in, c_out, 3, stride, 1)
        self.bn2, self.sn2 = nn.BatchNorm2d(c_out), net._neuron()
        self.conv2 = net._conv(c_out, c_out, 3, 1, 1)
        # registered after conv1 and conv2: circuits in the order [conv1, conv2, shortcut]
        self.shortcut = (
            net._conv(c_in, c_out, 1, stride, 0) if stride != 1 or c_in != c_out else None
        )

    def forward(self, x: Tensor) -> Tensor:
        out = through(self.sn1, through(self.bn1, x))
        identity = x if self.shortcut is None else through(self.shortcut, out)
        h = through(self.conv2, through(self.sn2, conv_norm(self.conv1, self.bn2, out)))
        return h.add_(identity) if isinstance(h, FastParts) else h + identity


class SpikingResNet18(SpikingNetwork):
    """Pre-activation spiking ResNet-18 (blocks [2, 2, 2, 2], widths w, 2w, 4w, 8w).

    Stem: 3x3 stride 1 (``stem="3x3"``, 32x32 inputs) or 5x5 stride 2 (``"5x5"``,
    miniImageNet).  Head: BN, LIF, global average pooling, ``Linear(8w, classes)`` per task
    (or one shared head with its own circuit: the domain-incremental setting), initialised
    N(0, 0.01).  A lateral circuit on every convolution: stem, then each block's conv1,
    conv2 and shortcut.
    """

    def __init__(
        self,
        num_classes: int = 10,
        *,
        width: int = 20,
        stem: str = "3x3",
        in_channels: int = 3,
        shared_head: bool = False,
        settings: NetworkSettings | None = None,
    ) -> None:
        super().__init__(settings, shared_head)
        if stem not in STEMS:
            raise ValueError(f"stem must be one of {STEMS}, got {stem!r}")
        k, s = (3, 1) if stem == "3x3" else (5, 2)
        self.stem = self._conv(in_channels, width, k, s, k // 2)
        blocks, c_in = [], width
        for stage, c in enumerate((width, 2 * width, 4 * width, 8 * width)):
            for b in range(2):
                stride = 2 if stage > 0 and b == 0 else 1
                blocks.append(PreActBlock(self, c_in, c, stride))
                c_in = c
        self.blocks = nn.Sequential(*blocks)
        self.bn, self.sn = nn.BatchNorm2d(c_in), self._neuron()
        self.head_features = c_in
        init_batchnorm(self)
        if shared_head:
            self.heads.append(self._make_head(c_in, num_classes))
        self._finish(self.stem, self.sn)
        if not shared_head:
            self.add_head(num_classes)

    @classmethod
    def for_benchmark(
        cls,
        input_shape,
        num_classes,
        shared_head,
        settings,
        *,
        width: int = 20,
        stem: str = "3x3",
        **_,
    ) -> SpikingResNet18:
        """Images ``(C, H, W)``; base ``width`` and ``stem``."""
        require_images("resnet18", input_shape)
        return cls(
            num_classes,
            width=width,
            stem=stem,
            in_channels=input_shape[0],
            shared_head=shared_head,
            settings=settings,
        )

    def features(self, x: Tensor) -> Tensor:
        h = through(self.sn, through(self.bn, self.blocks(self.encode(x))))
        return h.map(_spatial_mean) if isinstance(h, FastParts) else _spatial_mean(h)

    def gated_layers(self) -> GateLayout:
        """Pre-activation blocks: conv1 reads sn1 and feeds sn2; conv2 (and the shortcut)
        write the residual stream, which every later block's sn1 reads until a shortcut
        starts a new stream, and the final sn reads the last one."""
        gates: list[Gate] = []
        weights: list[GatedWeight] = []

        def gate(name: str, neuron: SpikingNeuron, units: int) -> int:
            gates.append(Gate(name, neuron, units))
            return len(gates) - 1

        def close(writers, readers) -> None:
            weights.extend(GatedWeight(n, m, i, tuple(readers)) for n, m, i in writers)

        writers: list[tuple[str, nn.Module, tuple[int, ...]]] = [("stem", self.stem, ())]
        readers: list[int] = []
        for b, block in enumerate(self.blocks):
            g1 = gate(f"blocks.{b}.sn1", block.sn1, block.bn1.num_features)
            g2 = gate(f"blocks.{b}.sn2", block.sn2, block.bn2.num_features)
            readers.append(g1)
            weights.append(GatedWeight(f"blocks.{b}.conv1", block.conv1, (g1,), (g2,)))
            if block.shortcut is not None:  # the block's output is a new stream
                close(writers, readers)
                writers, readers = [(f"blocks.{b}.shortcut", block.shortcut, (g1,))], []
            writers.append((f"blocks.{b}.conv2", block.conv2, (g2,)))
        readers.append(gate("sn", self.sn, self.bn.num_features))
        close(writers, readers)
        return GateLayout(gates, weights)
