"""The built-in networks by configuration name (``model``): the one list of their names."""

from __future__ import annotations

from hlop.models.base import SpikingNetwork
from hlop.models.cnn import SpikingCNN
from hlop.models.mlp import SpikingMLP
from hlop.models.resnet import SpikingResNet18

#: every built-in network by name; each builds itself for a benchmark
#: (:meth:`SpikingNetwork.for_benchmark`)
NETWORKS: dict[str, type[SpikingNetwork]] = {
    "mlp": SpikingMLP,
    "cnn": SpikingCNN,
    "resnet18": SpikingResNet18,
}
