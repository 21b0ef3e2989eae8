"""hlop: Hebbian Learning based Orthogonal Projection for continual learning of SNNs."""

from .attach import HLOP
from .circuit import LateralCircuit
from .errors import CircuitError, HlopError
from .networks import (
    CircuitOptions,
    NetworkOptions,
    SpikingCNN,
    SpikingMLP,
    SpikingNetwork,
    SpikingResNet18,
)
from .neurons import IF, LIF, DSRNeuron, SpikingNeuron, mean_rate, wfr
from .projection import ProjectedConv2d, ProjectedLayer, ProjectedLinear
from .surrogate import SurrogateLIF
from .training import BPTT, DSR, OTTT, TrainingRule, training_rule

__version__ = "0.1.0"

__all__ = [
    "BPTT",
    "DSR",
    "OTTT",
    "CircuitError",
    "CircuitOptions",
    "HlopError",
    "DSRNeuron",
    "HLOP",
    "IF",
    "LIF",
    "LateralCircuit",
    "NetworkOptions",
    "ProjectedConv2d",
    "ProjectedLayer",
    "ProjectedLinear",
    "SpikingCNN",
    "SpikingMLP",
    "SpikingNetwork",
    "SpikingNeuron",
    "SpikingResNet18",
    "SurrogateLIF",
    "TrainingRule",
    "mean_rate",
    "training_rule",
    "wfr",
]
