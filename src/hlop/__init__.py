"""hlop: Hebbian Learning based Orthogonal Projection for continual learning of SNNs."""

from .circuit import CircuitError, LateralCircuit
from .networks import SpikingCNN, SpikingMLP, SpikingNetwork, SpikingResNet18
from .neurons import IF, LIF, DSRNeuron, mean_rate, wfr
from .projection import ProjectedConv2d, ProjectedLayer, ProjectedLinear
from .surrogate import SurrogateLIF

__version__ = "0.1.0"

__all__ = [
    "CircuitError",
    "DSRNeuron",
    "IF",
    "LIF",
    "LateralCircuit",
    "ProjectedConv2d",
    "ProjectedLayer",
    "ProjectedLinear",
    "SpikingCNN",
    "SpikingMLP",
    "SpikingNetwork",
    "SpikingResNet18",
    "SurrogateLIF",
    "mean_rate",
    "wfr",
]
