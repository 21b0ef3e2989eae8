"""hlop: Hebbian Learning based Orthogonal Projection for continual learning of SNNs.

The public names below are loaded on first use (PEP 562), so ``import hlop.core.circuit``
does not import the networks, the training rules or the rest of the package.
"""

from __future__ import annotations

import importlib
import warnings
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = [
    "BPTT",
    "DSR",
    "OTTT",
    "CircuitError",
    "CircuitSettings",
    "HlopError",
    "DSRNeuron",
    "HLOP",
    "IF",
    "LIF",
    "LateralCircuit",
    "NetworkSettings",
    "ProjectedConv2d",
    "ProjectedLayer",
    "ProjectedLinear",
    "SpikingCNN",
    "SpikingMLP",
    "SpikingNetwork",
    "SpikingNeuron",
    "SpikingResNet18",
    "SurrogateLIF",
    "TaskLifecycle",
    "TimeLayout",
    "TrainingRule",
    "mean_rate",
    "train",
    "training_rule",
    "wfr",
]

# Public name -> the submodule (relative to this package) that defines it.
_LAZY: dict[str, str] = {
    "HLOP": "layers.attach",
    "LateralCircuit": "core.circuit",
    "CircuitSettings": "core.circuit",
    "TaskLifecycle": "core.lifecycle",
    "CircuitError": "errors",
    "HlopError": "errors",
    "NetworkSettings": "models.settings",
    "SpikingCNN": "models.cnn",
    "SpikingMLP": "models.mlp",
    "SpikingNetwork": "models.base",
    "SpikingResNet18": "models.resnet",
    "IF": "spiking.neurons",
    "LIF": "spiking.neurons",
    "DSRNeuron": "spiking.neurons",
    "SpikingNeuron": "spiking.neurons",
    "mean_rate": "spiking.neurons",
    "wfr": "spiking.neurons",
    "TimeLayout": "spiking.layout",
    "ProjectedConv2d": "layers.projected",
    "ProjectedLayer": "layers.projected",
    "ProjectedLinear": "layers.projected",
    "SurrogateLIF": "spiking.surrogate",
    "BPTT": "spiking.training",
    "DSR": "spiking.training",
    "OTTT": "spiking.training",
    "TrainingRule": "spiking.training",
    "training_rule": "spiking.training",
    "train": "run.api",
}

#: names of earlier releases -> (the name now, its module): still resolved, with a warning
_RENAMED: dict[str, tuple[str, str]] = {
    "NetworkOptions": ("NetworkSettings", "models.settings"),
    "CircuitOptions": ("CircuitSettings", "core.circuit"),
}

if TYPE_CHECKING:
    from hlop.core.circuit import CircuitSettings, LateralCircuit
    from hlop.core.lifecycle import TaskLifecycle
    from hlop.errors import CircuitError, HlopError
    from hlop.layers.attach import HLOP
    from hlop.layers.projected import ProjectedConv2d, ProjectedLayer, ProjectedLinear
    from hlop.models.base import SpikingNetwork
    from hlop.models.cnn import SpikingCNN
    from hlop.models.mlp import SpikingMLP
    from hlop.models.resnet import SpikingResNet18
    from hlop.models.settings import NetworkSettings
    from hlop.run.api import train
    from hlop.spiking.layout import TimeLayout
    from hlop.spiking.neurons import IF, LIF, DSRNeuron, SpikingNeuron, mean_rate, wfr
    from hlop.spiking.surrogate import SurrogateLIF
    from hlop.spiking.training import BPTT, DSR, OTTT, TrainingRule, training_rule


def __getattr__(name: str) -> Any:
    """Import the submodule that defines a public name on first access, and cache it."""
    module = _LAZY.get(name)
    if module is None and name in _RENAMED:
        new, module = _RENAMED[name]
        warnings.warn(
            f"hlop.{name} is now hlop.{new} (one word, Settings, for every component's "
            "settings); the old name will be removed",
            DeprecationWarning,
            stacklevel=2,
        )
        return getattr(importlib.import_module(f".{module}", __name__), new)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
