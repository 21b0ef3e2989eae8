"""EWC: elastic weight consolidation (Kirkpatrick et al., PNAS 2017).

After task k, the diagonal empirical Fisher of the task's training data, with the true
labels, at the parameters ``theta_k*`` the task's training reached::

    F_k = mean_n (d log p(y_n | x_n) / d theta)^2        (per-sample gradients)

Later tasks minimise ``CE + (lam / 2) sum_k sum_i F_k,i (theta_i - theta_k,i*)^2``: one
anchor per task (not the online variant).  Its gradient is kept in two tensors per
parameter, exactly::

    sum_k F_k (theta - theta_k*) = F (theta - theta_bar),
    F = sum_k F_k,   theta_bar = sum_k F_k theta_k* / F   (theta_k* where F = 0)

and ``lam F (theta - theta_bar)`` is added to ``.grad`` before each optimiser step
(``after_backward``), so that DSR, BPTT and OTTT (without online update) train with it
unchanged.  SGD on that gradient diverges along parameters with ``lr lam F >= 2 (1 +
momentum)``; with ``penalty="proximal"`` the penalty is instead applied after each optimiser
step as its proximal (implicit) step, stable for every ``lam``::

    theta <- theta_bar + (theta - theta_bar) / (1 + lr lam F)

which for plain SGD is the exact minimiser of ``|u - theta_sgd|^2 / (2 lr) + (lam/2) F (u -
theta_bar)^2``: the same penalty and fixed points, the step differing from the gradient
one by ``O((lr lam F)^2)``.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
from torch import Tensor

from hlop.core.settings import Settings, require, require_choice
from hlop.loop import distributed
from hlop.loop.continual import loss_check
from hlop.loop.optimisation import Optimisation
from hlop.loop.state import Plugin, RunState


@dataclass
class EWCSettings(Settings):
    """The ``ewc`` section."""

    # strength of the penalty (lam / 2) sum F (theta - theta*)^2.  The ANN reference
    # (joansj/hat) uses 5000 with another Fisher scale (docs/comparing.md); SGD on the penalty
    # diverges once lr lam max F >= 2 (the run warns)
    lam: float = 10.0
    samples: int = 500  # training samples of each task whose per-sample gradients give F
    # "gradient": lam F (theta - theta_bar) added to the gradient (stable while lr lam max F <
    # 2 (1 + momentum)); "proximal": the penalty's implicit step after the optimiser's step
    penalty: str = "gradient"

    def check(self) -> None:
        require(self.lam >= 0, f"ewc.lam must be >= 0, got {self.lam}")
        require_choice("ewc.penalty", self.penalty, ("gradient", "proximal"))
        require(self.samples >= 1, f"ewc.samples must be >= 1, got {self.samples}")


def empirical_fisher(run: RunState, samples: int) -> dict[str, Tensor]:
    """Diagonal empirical Fisher of the current task: the mean squared gradient of
    ``-log p(y|x)`` over ``samples`` random training samples (seeded by the run's seed and
    the task), one sample at a time, of every parameter that trains in the task.

    The network is in evaluation mode (batch norm uses its running statistics, circuits do
    not learn) and nothing is projected; the gradient is the training rule's own."""
    model, split = run.model, run.benchmark.tasks[run.task].train
    g = torch.Generator().manual_seed(run.seed * 1013 + run.task)
    index = torch.randperm(len(split), generator=g)[:samples]
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    fisher = {n: torch.zeros_like(p) for n, p in params.items()}
    was_training = model.training
    model.eval()
    check = loss_check(run, 0)
    try:
        for i in distributed.shard(index):  # several workers: each a part, then summed
            x, y = split.batch(i.view(1))
            model.zero_grad(set_to_none=True)
            model.rule.train_batch(model, x.to(run.device), y.to(run.device), run.task, check)
            for n, p in params.items():
                if p.grad is not None:
                    fisher[n] += p.grad.detach() ** 2
    finally:
        model.zero_grad(set_to_none=True)
        model.train(was_training)
    distributed.sum_tensors(fisher.values())
    return {n: f / len(index) for n, f in fisher.items()}


def warn_if_unstable(optimisation: Optimisation, step: int, lam: float, fisher_max: float) -> None:
    """Warn when SGD on the penalty alone would diverge: along a parameter with Fisher F the
    step multiplies ``theta - theta_bar`` by ``1 - lr lam F`` (with momentum beta, stable
    while ``lr lam F < 2 (1 + beta)``) at the learning rate of the steps after ``step``."""
    if optimisation.optimizer != "sgd" or lam == 0:
        return
    lr = optimisation.step_lr(step + 1)
    product, bound = lr * lam * fisher_max, 2 * (1 + optimisation.momentum)
    if product >= bound:
        warnings.warn(
            f"ewc: lr * ewc.lam * max F = {product:.3g} >= {bound:.3g}: SGD on the penalty "
            f"oscillates and diverges along the most important parameters; lower ewc.lam "
            f"below {bound / (lr * fisher_max):.3g}",
            stacklevel=2,
        )


class EWC(Plugin):
    """Elastic weight consolidation: a quadratic penalty that holds each parameter near its
    values after earlier tasks, in proportion to its Fisher information.  Circuits are never
    used.

    Args:
        lam: the penalty's strength.
        samples: training samples of each task whose per-sample gradients give its Fisher.

    Attributes:
        fisher: parameter name -> ``F``, the sum of the finished tasks' Fishers.
        anchor: parameter name -> ``theta_bar``, their Fisher-weighted anchors.
    """

    name = "ewc"

    def __init__(self, lam: float = 10.0, samples: int = 500, penalty: str = "gradient") -> None:
        self.settings = EWCSettings(lam, samples, penalty)
        self.settings.check()
        self.fisher: dict[str, Tensor] = {}
        self.anchor: dict[str, Tensor] = {}

    def check(self, run: RunState) -> None:
        require(
            not run.model.rule.updates_within_batch,
            "ewc adds its penalty's gradient before each optimiser step, which OTTT's online "
            "update (an optimiser step at every time step) bypasses: drop --online-update",
        )

    def state_dict(self) -> dict:
        return {"fisher": dict(self.fisher), "anchor": dict(self.anchor)}

    def load_state_dict(self, state: dict, run: RunState) -> None:
        self.fisher = {n: f.to(run.device) for n, f in state.get("fisher", {}).items()}
        self.anchor = {n: a.to(run.device) for n, a in state.get("anchor", {}).items()}

    def after_backward(self, run: RunState) -> None:
        if self.settings.penalty != "gradient":
            return
        lam = self.settings.lam
        for n, p in run.model.named_parameters():
            # only what trains now; heads of other tasks get no gradient and stay as they are
            if n in self.fisher and p.requires_grad and p.grad is not None:
                p.grad.add_(self.fisher[n] * (p.detach() - self.anchor[n]), alpha=lam)

    @torch.no_grad()
    def after_batch(self, run: RunState, batch: int, batches: int, loss: float, acc: float):
        if self.settings.penalty != "proximal" or not self.fisher:
            return
        lrs = {id(p): g["lr"] for g in run.optimizer.param_groups for p in g["params"]}
        for n, p in run.model.named_parameters():
            # only what this step moved (heads of other tasks get no gradient)
            if n in self.fisher and p.requires_grad and p.grad is not None:
                shrink = 1 + (lrs[id(p)] * self.settings.lam) * self.fisher[n]
                p.sub_(self.anchor[n]).div_(shrink).add_(self.anchor[n])

    def after_training(self, run: RunState) -> None:
        # here, not after the evaluation: the parameters the task's training reached, and the
        # estimate counts in the task's time (with --replay, before its retraining)
        self.consolidate(run.model, empirical_fisher(run, self.settings.samples))
        fisher_max = max(float(f.max()) for f in self.fisher.values())
        if self.settings.penalty == "gradient":
            warn_if_unstable(run.optimisation, run.task, self.settings.lam, fisher_max)

    @torch.no_grad()
    def consolidate(self, model: torch.nn.Module, fisher: dict[str, Tensor]) -> None:
        """Add a finished task's Fisher ``fisher``, anchored at the model's parameters."""
        params = dict(model.named_parameters())
        for n, f in fisher.items():
            theta = params[n].detach().clone()
            if n not in self.fisher:
                self.fisher[n], self.anchor[n] = f.clone(), theta
                continue
            total = self.fisher[n] + f
            weighted = self.fisher[n] * self.anchor[n] + f * theta
            self.anchor[n] = torch.where(total > 0, weighted / total.clamp_min(1e-30), theta)
            self.fisher[n] = total
