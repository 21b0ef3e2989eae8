"""hlop: Hebbian Learning based Orthogonal Projection for continual learning of SNNs.

The public names below are loaded on first use (PEP 562), so ``import hlop.circuit``
does not import the networks, the training rules or the rest of the package.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

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

# Public name -> the submodule (relative to this package) that defines it.
_LAZY: dict[str, str] = {
    "HLOP": "attach",
    "LateralCircuit": "circuit",
    "CircuitError": "errors",
    "HlopError": "errors",
    "CircuitOptions": "networks",
    "NetworkOptions": "networks",
    "SpikingCNN": "networks",
    "SpikingMLP": "networks",
    "SpikingNetwork": "networks",
    "SpikingResNet18": "networks",
    "IF": "neurons",
    "LIF": "neurons",
    "DSRNeuron": "neurons",
    "SpikingNeuron": "neurons",
    "mean_rate": "neurons",
    "wfr": "neurons",
    "ProjectedConv2d": "projection",
    "ProjectedLayer": "projection",
    "ProjectedLinear": "projection",
    "SurrogateLIF": "surrogate",
    "BPTT": "training",
    "DSR": "training",
    "OTTT": "training",
    "TrainingRule": "training",
    "training_rule": "training",
}

if TYPE_CHECKING:
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


def __getattr__(name: str) -> Any:
    """Import the submodule that defines a public name on first access, and cache it."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
