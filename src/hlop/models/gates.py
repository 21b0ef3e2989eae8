"""Where HAT's task gates sit in a network: the neuron layers they scale and the weight
layers between them (:meth:`hlop.SpikingNetwork.gated_layers`)."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from hlop.spiking.neurons import SpikingNeuron


@dataclass(frozen=True)
class Gate:
    """A neuron layer whose spikes a task-specific gate can scale (HAT): its name in the
    network, the layer, its units (or channels)."""

    name: str
    neuron: SpikingNeuron
    units: int


@dataclass(frozen=True)
class GatedWeight:
    """A weight layer between gates: the gates whose spikes it reads (none: the network's
    input) and the gates that read its output (through batch norm, pooling, the residual
    stream); its output unit ``j`` is used by a task if any of those gates uses ``j``."""

    name: str
    layer: nn.Module
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]


@dataclass(frozen=True)
class GateLayout:
    """Where a network's gates are, and which gates each weight layer connects
    (:meth:`.SpikingNetwork.gated_layers`)."""

    gates: list[Gate]
    weights: list[GatedWeight]
