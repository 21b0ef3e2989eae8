"""The settings a built-in network is made with (one object for every network)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from hlop.core.choices import (
    FEEDBACK_RULES,
    HEBBIAN_SOURCES,
    HEBBIAN_STRIDES,
    PRECISIONS,
    PROJ_TYPES,
)
from hlop.core.circuit import CircuitSettings
from hlop.spiking.training import TrainingRule, training_rule


@dataclass(frozen=True)
class NetworkSettings:
    """Everything a network is built with besides its shape.

    Attributes:
        timesteps: T, the number of time steps.
        training: the training method: a :class:`TrainingRule` or its name.
        neuron: keyword arguments of the rule's neurons (DSR: ``leaky, vth, vth_bound, tau,
            dt, alpha, train_vth``; BPTT/OTTT: ``tau, vth, surrogate_alpha``).
        feedback: ``"backprop"``, ``"feedback-alignment"`` or ``"sign-symmetric"``.
        proj_type: ``"input"`` or ``"weight"`` projection.
        circuit: the settings of every lateral circuit (:class:`CircuitSettings`; its ``lr``
            is replaced by each circuit's rate, ``lrs``); None: the defaults, with the
            network's ``precision``.
        lrs: Hebbian learning rate: one value for every circuit, or one per circuit in
            network order (body first, then the shared head); None: the network's default.
        hebbian_on: what circuits learn from, ``"wfr"`` or ``"spikes"``; None: the training
            rule's default.
        hebbian_stride: convolutions learn from patches at their own stride (``"layer"``)
            or at stride 1 (``"one"``, the authors' code).
        fast: use the DSR fast path where it applies.
        compile: fuse the DSR neurons' spike loops with ``torch.compile`` (meant for GPUs;
            ``torch.compile`` is not loaded otherwise).
        precision: ``"fp32"`` or ``"bf16"``: the dtype of the projected layers' weight
            products (see :class:`~hlop.layers.projected.ProjectedLayer`).
    """

    timesteps: int = 20
    training: TrainingRule | str = "dsr"
    neuron: Mapping[str, Any] = field(default_factory=dict)
    feedback: str = "backprop"
    proj_type: str = "input"
    circuit: CircuitSettings | None = None
    lrs: Sequence[float] | None = None
    hebbian_on: str | None = None
    hebbian_stride: str = "layer"
    fast: bool = True
    precision: str = "fp32"
    compile: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.training, str):
            object.__setattr__(self, "training", training_rule(self.training))
        if self.feedback not in FEEDBACK_RULES:
            raise ValueError(f"feedback must be one of {FEEDBACK_RULES}, got {self.feedback!r}")
        if self.proj_type not in PROJ_TYPES:
            raise ValueError(f"proj_type must be one of {PROJ_TYPES}, got {self.proj_type!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {tuple(PRECISIONS)}: {self.precision!r}")
        if self.hebbian_on is not None and self.hebbian_on not in HEBBIAN_SOURCES:
            raise ValueError(f"hebbian_on must be one of {HEBBIAN_SOURCES}: {self.hebbian_on!r}")
        if self.hebbian_stride not in HEBBIAN_STRIDES:
            raise ValueError(f"hebbian_stride must be one of {HEBBIAN_STRIDES}")
        if self.circuit is None:
            object.__setattr__(self, "circuit", CircuitSettings(precision=self.precision))

    @property
    def rule(self) -> TrainingRule:
        return self.training  # type: ignore[return-value]

    @property
    def hebbian_source(self) -> str:
        """What the circuits learn from (``hebbian_on``, or the training rule's default)."""
        return self.hebbian_on or self.rule.hebbian_on
