"""The CIFAR-100 network: three convolution stages."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from hlop.models.base import SpikingNetwork, conv_norm, init_batchnorm, require_images
from hlop.models.gates import Gate, GatedWeight, GateLayout
from hlop.models.settings import NetworkSettings
from hlop.spiking.fast_parts import FastParts, through


def _flatten(x: Tensor) -> Tensor:
    return x.flatten(1)


class SpikingCNN(SpikingNetwork):
    """The CIFAR-100 network: three ``conv3x3 - BN - LIF - avgpool2`` stages (64, 128, 256).

    Lateral circuits on the three convolutions (N = C_in * 9).  Heads:
    ``Linear(256 * (size / 8)^2, classes)`` per task (multi-head), or one shared head with
    its own circuit; initialised N(0, 0.01).  Batch norm statistics are taken over all
    ``T * B`` rows.
    """

    def __init__(
        self,
        in_channels: int = 3,
        image_size: int = 32,
        num_classes: int = 10,
        *,
        channels: Sequence[int] = (64, 128, 256),
        shared_head: bool = False,
        settings: NetworkSettings | None = None,
    ) -> None:
        super().__init__(settings, shared_head)
        c_in, convs, bns, sns = in_channels, [], [], []
        for c in channels:
            convs.append(self._conv(c_in, c, 3, 1, 1))
            bns.append(nn.BatchNorm2d(c))
            sns.append(self._neuron())
            c_in = c
        self.convs, self.bns, self.sns = (
            nn.ModuleList(convs),
            nn.ModuleList(bns),
            nn.ModuleList(sns),
        )
        self.pool = nn.AvgPool2d(2)
        self.head_features = channels[-1] * (image_size // 2 ** len(channels)) ** 2
        init_batchnorm(self)
        if shared_head:
            self.heads.append(self._make_head(self.head_features, num_classes))
        self._finish(self.convs[0], self.sns[-1])
        if not shared_head:
            self.add_head(num_classes)

    @classmethod
    def for_benchmark(cls, input_shape, num_classes, shared_head, settings, **_) -> SpikingCNN:
        """Square images ``(C, H, H)``."""
        require_images("cnn", input_shape)
        return cls(
            input_shape[0], input_shape[1], num_classes, shared_head=shared_head, settings=settings
        )

    def features(self, x: Tensor) -> Tensor:
        h = self.encode(x)
        for i in range(len(self.convs)):
            if i:
                h = conv_norm(self.convs[i], self.bns[i], h)
            else:
                h = through(self.bns[i], h)
            h = through(self.pool, through(self.sns[i], h))
        return h.map(_flatten) if isinstance(h, FastParts) else h.flatten(1)

    def gated_layers(self) -> GateLayout:
        gates = [
            Gate(f"sns.{i}", sn, conv.out_channels)
            for i, (sn, conv) in enumerate(zip(self.sns, self.convs, strict=True))
        ]
        weights = [
            GatedWeight(f"convs.{i}", conv, (i - 1,) if i else (), (i,))
            for i, conv in enumerate(self.convs)
        ]
        return GateLayout(gates, weights)
