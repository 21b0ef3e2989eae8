"""The permuted-MNIST network (784-800-800-10 in the paper)."""

from __future__ import annotations

import math

from torch import Tensor

from hlop.errors import ConfigError
from hlop.models.base import SpikingNetwork
from hlop.models.gates import Gate, GatedWeight, GateLayout
from hlop.models.settings import NetworkSettings
from hlop.spiking.fast_parts import through


class SpikingMLP(SpikingNetwork):
    """The permuted-MNIST network: ``784 - 800 - 800 - 10``, no biases, one shared head.

    Lateral circuits on the inputs of fc1, fc2 and the shared classifier (default learning
    rates 0.001, 0.01, 0.01 as in the paper).
    """

    default_lrs = (0.001, 0.01, 0.01)

    def __init__(
        self,
        in_features: int = 784,
        hidden: int = 800,
        num_classes: int = 10,
        settings: NetworkSettings | None = None,
    ) -> None:
        super().__init__(settings, shared_head=True)
        self.fc1 = self._linear(in_features, hidden, circuit=True)
        self.sn1 = self._neuron()
        self.fc2 = self._linear(hidden, hidden, circuit=True)
        self.sn2 = self._neuron()
        self.head_features = hidden
        self.heads.append(self._linear(hidden, num_classes, circuit=True))  # PyTorch's init
        self._finish(self.fc1, self.sn2)

    @classmethod
    def for_benchmark(
        cls, input_shape, num_classes, shared_head, settings, *, hidden: int = 800, **_
    ) -> SpikingMLP:
        """``hidden`` units; one shared head only."""
        if not shared_head:
            raise ConfigError("the mlp model has one shared head; set shared_head=true")
        return cls(math.prod(input_shape), hidden, num_classes, settings)

    def features(self, x: Tensor) -> Tensor:
        h = self.encode(x.flatten(1))
        return through(self.sn2, through(self.fc2, through(self.sn1, h)))

    def gated_layers(self) -> GateLayout:
        gates = [
            Gate("sn1", self.sn1, self.fc1.out_features),
            Gate("sn2", self.sn2, self.fc2.out_features),
        ]
        weights = [GatedWeight("fc1", self.fc1, (), (0,)), GatedWeight("fc2", self.fc2, (0,), (1,))]
        return GateLayout(gates, weights)
