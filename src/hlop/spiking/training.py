"""Training methods of spiking networks: one rule object per method.

A rule owns everything that differs between DSR, BPTT and OTTT: the neurons it builds,
the time layout of a forward pass, the forward and backward of one training batch, and
its preset values.  Nothing else asks which method is running.

* :class:`DSR` (differentiation on spike representation; the paper's default): DSR LIF/IF
  neurons, T = 20, circuits learn from the weighted firing rate; the fast path computes
  the backward on time-aggregated rows (see :mod:`hlop.spiking.neurons`).
* :class:`BPTT`: surrogate-gradient LIF, T = 6, backprop through time over ``T * B`` rows;
  circuits learn from per-step spikes.
* :class:`OTTT` (online training through time): surrogate LIF, T = 6; one forward and one
  backward per time step, weight updates from presynaptic traces; ``online_update`` steps
  the optimiser at every time step.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor

from hlop.core.choices import TRAINING_RULES
from hlop.spiking.layout import TimeLayout
from hlop.spiking.neurons import DSRNeuron, SpikingNeuron
from hlop.spiking.surrogate import SurrogateLIF


class SpikingNetwork(Protocol):
    """What a rule reads of the network it trains (:class:`hlop.SpikingNetwork` has it)."""

    fast: bool
    timesteps: int

    def __call__(self, x: Tensor, task: int | Tensor) -> Tensor: ...

    def batchnorm_training(self) -> bool: ...

    def spiking_input_projection(self) -> bool: ...

    def single_steps(self) -> AbstractContextManager[None]: ...


LossCheck = Callable[[Tensor], None]


class TrainingRule:
    """How a spiking network is simulated and trained (override what differs)."""

    name = ""
    #: T of the paper's presets
    timesteps = 20
    #: what lateral circuits learn from by default
    hebbian_on = "wfr"
    #: True when the rule steps the optimiser itself
    updates_within_batch = False

    def neuron(self, timesteps: int, params: Mapping[str, Any]) -> SpikingNeuron:
        """A layer of this method's neurons."""
        raise NotImplementedError

    #: the run's configuration section that holds this rule's neuron settings
    neuron_section = "surrogate"

    def neuron_params(self, section: Mapping[str, Any]) -> dict[str, Any]:
        """Keyword arguments of :meth:`neuron` from the values of its settings section
        (:attr:`neuron_section`)."""
        return {"tau": section["tau"], "vth": section["vth"], "surrogate_alpha": section["alpha"]}

    def layout(self, model: SpikingNetwork) -> TimeLayout:
        """The network's time layout for its next (multi-step) forward."""
        return TimeLayout.STEPS

    def train_batch(
        self,
        model: SpikingNetwork,
        x: Tensor,
        y: Tensor,
        task: int | Tensor,
        check: LossCheck,
        optimizer: torch.optim.Optimizer | None = None,
    ) -> tuple[Tensor, float]:
        """Forward and backward of one batch (gradients accumulate); (scores, loss).
        ``task``: the head, or one task id per sample (joint training)."""
        out = model(x, task)
        loss = F.cross_entropy(out, y)
        check(loss)
        loss.backward()
        return out.detach(), loss.item()

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class DSR(TrainingRule):
    """DSR LIF (``leaky``) or IF neurons; the fast path whenever it gives the same gradient."""

    name = "dsr"

    def neuron(self, timesteps: int, params: Mapping[str, Any]) -> SpikingNeuron:
        return DSRNeuron(timesteps, **params)

    neuron_section = "neuron"

    def neuron_params(self, section: Mapping[str, Any]) -> dict[str, Any]:
        return dict(section)

    def layout(self, model: SpikingNetwork) -> TimeLayout:
        if not model.fast or model.batchnorm_training():
            return TimeLayout.STEPS  # batch statistics over T * B rows: not time-aggregatable
        if model.spiking_input_projection():
            return TimeLayout.STEPS  # quantised projection of rows: not linear in time
        return TimeLayout.FAST


class BPTT(TrainingRule):
    """Surrogate-gradient LIF, backprop through time."""

    name = "bptt"
    timesteps = 6
    hebbian_on = "spikes"

    def neuron(self, timesteps: int, params: Mapping[str, Any]) -> SpikingNeuron:
        return SurrogateLIF(timesteps, **params)


class OTTT(BPTT):
    """Online training through time: a forward and a backward at every step (loss CE / T).

    Args:
        online_update: an optimiser step at every time step instead of once per batch.
    """

    name = "ottt"

    def __init__(self, online_update: bool = False) -> None:
        self.online_update = online_update
        self.updates_within_batch = online_update

    def train_batch(self, model, x, y, task, check, optimizer=None):
        steps, total, loss_sum = model.timesteps, 0.0, 0.0
        online = self.online_update and optimizer is not None
        with model.single_steps():
            for t in range(steps):
                if online and t > 0:
                    optimizer.zero_grad(set_to_none=True)
                out = model(x, task)
                loss = F.cross_entropy(out, y) / steps
                check(loss)
                loss.backward()
                if online:
                    optimizer.step()
                total = total + out.detach()
                loss_sum += loss.item()
        return total / steps, loss_sum

    def __repr__(self) -> str:
        return f"OTTT(online_update={self.online_update})"


#: The rule of every training method, by its name in ``hlop.core.choices.TRAINING_RULES``.
RULES: dict[str, type[TrainingRule]] = {"dsr": DSR, "bptt": BPTT, "ottt": OTTT}


def training_rule(name: str, *, online_update: bool = False) -> TrainingRule:
    """The rule object of training method ``name``."""
    if name not in RULES:
        raise ValueError(f"training must be one of {TRAINING_RULES}, got {name!r}")
    if online_update and name != "ottt":
        raise ValueError("online_update applies to OTTT training only (--training ottt)")
    return OTTT(online_update) if name == "ottt" else RULES[name]()
