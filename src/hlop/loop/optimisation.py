"""The optimiser and learning-rate schedule of every step of the continual loop.

Each step gets a fresh optimiser over the parameters it trains and a fresh scheduler,
stepped once per epoch.  :class:`Optimisation` holds their settings and makes both; it is
the loop's component (the run builds it from its configuration's keys of the same names).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from hlop.core import optim
from hlop.core.choices import OPTIMIZERS, SCHEDULERS
from hlop.core.settings import Settings, require, require_choice


@dataclass
class Optimisation(Settings):
    """SGD or Adam, and a step-decay or cosine (with linear warmup) schedule.

    Attributes:
        optimizer: ``"sgd"`` or ``"adam"`` (hlop's, which step as torch's do:
            ``hlop.core.optim``).
        lr: learning rate of the first step.
        lr_later: learning rate of every later step (None: ``lr``).
        momentum: SGD's momentum.
        weight_decay: weight decay of both optimisers.
        scheduler: ``"step"`` (``gamma`` every ``step_size`` epochs) or ``"cosine"``
            (``warmup`` epochs of linear warmup, then a half cosine to epoch ``t_max``).
    """

    optimizer: str = "sgd"
    lr: float = 0.1
    lr_later: float | None = None
    momentum: float = 0.0
    weight_decay: float = 0.0
    scheduler: str = "step"
    step_size: int = 100
    gamma: float = 0.1
    warmup: int = 0
    t_max: int = 200

    def check(self) -> None:
        require_choice("optimizer", self.optimizer, OPTIMIZERS)
        require_choice("scheduler", self.scheduler, SCHEDULERS)
        require(self.lr > 0, f"lr must be > 0, got {self.lr}")
        require(
            self.lr_later is None or self.lr_later > 0, f"lr_later must be > 0, got {self.lr_later}"
        )
        require(
            self.momentum >= 0 and self.weight_decay >= 0, "momentum and weight_decay must be >= 0"
        )
        require(self.step_size >= 1 and self.gamma > 0, "step_size must be >= 1 and gamma > 0")
        require(0 <= self.warmup < self.t_max, "warmup must be >= 0 and < t_max")

    def step_lr(self, step: int) -> float:
        """The learning rate of step ``step`` (``lr`` for the first, then ``lr_later``)."""
        return self.lr if step == 0 or self.lr_later is None else self.lr_later

    def make_optimizer(
        self, params: Sequence[torch.nn.Parameter], step: int = 0, lr: float | None = None
    ) -> torch.optim.Optimizer:
        """A fresh optimiser over ``params`` at step ``step``'s learning rate (or ``lr``)."""
        lr = self.step_lr(step) if lr is None else lr
        if self.optimizer == "adam":
            return optim.Adam(params, lr=lr, weight_decay=self.weight_decay)
        return optim.SGD(params, lr=lr, momentum=self.momentum, weight_decay=self.weight_decay)

    def make_scheduler(self, optimizer: torch.optim.Optimizer):
        """A fresh scheduler of ``optimizer``, stepped once per epoch."""
        if self.scheduler == "cosine":
            warmup, t_max = self.warmup, self.t_max

            def factor(e: int) -> float:
                if e < warmup:
                    return (e + 1) / warmup
                return 0.5 * (1 + math.cos(math.pi * (e - warmup) / (t_max - warmup)))

            return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return torch.optim.lr_scheduler.StepLR(optimizer, self.step_size, self.gamma)
