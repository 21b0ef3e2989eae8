"""The choice lists of hlop's settings, declared once (the CLI, the settings' checks and the
code that implements each choice read them here), and :func:`per_circuit`.

This module imports nothing of hlop, so every other module can use it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, TypeVar, get_args

import torch

T = TypeVar("T")

#: dtype of the weight products by precision name (None: the operands' own dtype)
PRECISIONS: dict[str, torch.dtype | None] = {"fp32": None, "bf16": torch.bfloat16}

Feedback = Literal["backprop", "feedback-alignment", "sign-symmetric"]
ProjType = Literal["input", "weight"]
HebbianSource = Literal["wfr", "spikes"]
#: how errors reach earlier layers
FEEDBACK_RULES: tuple[str, ...] = get_args(Feedback)
#: what is projected: the layer's input rows, or its weight gradient
PROJ_TYPES: tuple[str, ...] = get_args(ProjType)
#: what circuits learn from: the rate over time (weighted firing rate) or per-step spikes
HEBBIAN_SOURCES: tuple[str, ...] = get_args(HebbianSource)
#: convolutions' circuits learn from patches at the layer's own stride, or at stride 1
HEBBIAN_STRIDES: tuple[str, ...] = ("layer", "one")
#: how spiking networks are trained (:mod:`hlop.spiking.training`)
TRAINING_RULES: tuple[str, ...] = ("dsr", "bptt", "ottt")
#: ResNet-18 stems: 3x3 stride 1 (32x32 inputs), or 5x5 stride 2 (miniImageNet)
STEMS: tuple[str, ...] = ("3x3", "5x5")
#: optimisers (:func:`hlop.loop.continual.make_optimizer`)
OPTIMIZERS: tuple[str, ...] = ("sgd", "adam")
#: learning-rate schedules: step decay, or cosine with linear warmup
SCHEDULERS: tuple[str, ...] = ("step", "cosine")


def per_circuit(values: Sequence[T], names: Sequence[str], key: str) -> list[T]:
    """One value for every circuit, or one per circuit (in ``names`` order); a list of
    another length raises ValueError naming the setting ``key`` and the circuits."""
    values = list(values)
    if len(values) == 1:
        return values * len(names)
    if len(values) != len(names):
        raise ValueError(
            f"{key} needs 1 value or {len(names)} (one per circuit: {', '.join(names)}), "
            f"got {len(values)}: {values}"
        )
    return values
