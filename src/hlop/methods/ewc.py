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
unchanged.
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor

from .. import distributed
from ..continual import Plugin, RunState, loss_check


def empirical_fisher(run: RunState, samples: int) -> dict[str, Tensor]:
    """Diagonal empirical Fisher of the current task: the mean squared gradient of
    ``-log p(y|x)`` over ``samples`` random training samples (seeded by the run's seed and
    the task), one sample at a time, of every parameter that trains in the task.

    The network is in evaluation mode (batch norm uses its running statistics, circuits do
    not learn) and nothing is projected; the gradient is the training rule's own."""
    model, split = run.model, run.benchmark.tasks[run.task].train
    g = torch.Generator().manual_seed(run.cfg.seed * 1013 + run.task)
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


def warn_if_unstable(cfg, fisher_max: float) -> None:
    """Warn when SGD on the penalty alone would diverge: along a parameter with Fisher F the
    step multiplies ``theta - theta_bar`` by ``1 - lr lam F`` (with momentum beta, stable
    while ``lr lam F < 2 (1 + beta)``)."""
    if cfg.optimizer != "sgd" or cfg.ewc.lam == 0:
        return
    lr = cfg.lr if cfg.lr_later is None else cfg.lr_later
    product, bound = lr * cfg.ewc.lam * fisher_max, 2 * (1 + cfg.momentum)
    if product >= bound:
        warnings.warn(
            f"ewc: lr * ewc.lam * max F = {product:.3g} >= {bound:.3g}: SGD on the penalty "
            f"oscillates and diverges along the most important parameters; lower ewc.lam "
            f"below {bound / (lr * fisher_max):.3g}",
            stacklevel=2,
        )


class EWC(Plugin):
    """Elastic weight consolidation: a quadratic penalty that holds each parameter near its
    values after earlier tasks, in proportion to its Fisher information (``ewc.lam``,
    ``ewc.samples``).  Circuits are never used.

    Attributes:
        fisher: parameter name -> ``F``, the sum of the finished tasks' Fishers.
        anchor: parameter name -> ``theta_bar``, their Fisher-weighted anchors.
    """

    name = "ewc"

    def __init__(self) -> None:
        self.fisher: dict[str, Tensor] = {}
        self.anchor: dict[str, Tensor] = {}

    def state_dict(self) -> dict:
        return {"fisher": dict(self.fisher), "anchor": dict(self.anchor)}

    def load_state_dict(self, state: dict, run: RunState) -> None:
        self.fisher = {n: f.to(run.device) for n, f in state.get("fisher", {}).items()}
        self.anchor = {n: a.to(run.device) for n, a in state.get("anchor", {}).items()}

    def after_backward(self, run: RunState) -> None:
        lam = run.cfg.ewc.lam
        for n, p in run.model.named_parameters():
            # only what trains now; heads of other tasks get no gradient and stay as they are
            if n in self.fisher and p.requires_grad and p.grad is not None:
                p.grad.add_(self.fisher[n] * (p.detach() - self.anchor[n]), alpha=lam)

    def after_training(self, run: RunState) -> None:
        # here, not after the evaluation: the parameters the task's training reached, and the
        # estimate counts in the task's time (with --replay, before its retraining)
        self.consolidate(run.model, empirical_fisher(run, run.cfg.ewc.samples))
        warn_if_unstable(run.cfg, max(float(f.max()) for f in self.fisher.values()))

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

    def penalty(self, model: torch.nn.Module, lam: float) -> Tensor:
        """``(lam / 2) sum F (theta - theta_bar)^2``: the penalty of the sum over tasks up to
        a constant (the same gradient); differentiable."""
        terms = [
            (self.fisher[n] * (p - self.anchor[n]) ** 2).sum()
            for n, p in model.named_parameters()
            if n in self.fisher
        ]
        return 0.5 * lam * torch.stack(terms).sum() if terms else torch.zeros(())
