"""HAT: hard attention to the task (Serra et al., ICML 2018), on spiking networks.

Each task ``t`` learns one embedding ``e_t^l`` per gated layer ``l`` (a value per unit, or per
channel of a convolution).  Its gate multiplies the layer's spikes::

    a_t^l = sigmoid(s e_t^l)

The gate is constant over time, so it multiplies every time slice: the per-step rows, the
DSR fast layout's rate slice, OTTT's ``[spikes; traces]``.  The gated layers are every
spiking neuron layer of the network, the readout layer before the classifier included (the
reference gates every hidden layer that feeds the heads); the input layer's input is not
gated.  Training task ``t``, ``s`` is annealed over the ``B`` batches of every epoch::

    s_b = 1/s_max + (s_max - 1/s_max) (b - 1) / (B - 1)        (b = 1..B; B = 1: 1/s_max)

and every evaluation uses ``s = s_max``.  After task ``t`` the cumulative gates are
``a_<=t = max(a_<=t-1, a_t)`` at ``s_max``, not binarised (as the reference).  While task ``t``
trains, a weight joining input unit ``i`` to output unit ``j`` has its gradient multiplied by
``1 - min(a_<=t-1[j], a_<=t-1[i])`` (convolutions: per output and input channel; the first
layer: ``1 - a_<=t-1[j]``); the loss gains the attention regulariser::

    R = c sum_l sum_i a_t,i^l (1 - a_<=t-1,i^l) / sum_l sum_i (1 - a_<=t-1,i^l)

(task 0: ``a_<=-1 = 0``), and the embedding gradients are compensated for the annealing::

    grad_e *= s_max [cosh(clamp(s e, -thr, thr)) + 1] / (s [cosh(e) + 1])

which turns ``d sigmoid(s e) / de = s sigmoid'(s e)`` into ``s_max sigmoid'(e)`` (the paper's
equation and the reference code; the denominator has ``e``, not ``s e``).  After each
optimiser step the embeddings are clamped to ``[-emb_clamp, emb_clamp]`` (the reference: 6).

HAT needs the task at test (one head per task); the classifier heads are per task, so they
are not masked.  The task-agnostic evaluation (:func:`hlop.loop.continual.evaluate_seen`)
reads each seen head's scores through its own task's gates (one forward per head).  OTTT's
online update steps the optimiser inside a batch, where gradients cannot be masked: refused.
Replay steps (``--replay``) are not masked either.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from hlop.core.settings import Settings, require
from hlop.loop.state import Plugin, RunState

if TYPE_CHECKING:
    from hlop.models.base import SpikingNetwork
    from hlop.models.gates import Gate, GateLayout


@dataclass
class HATSettings(Settings):
    """The ``hat`` section; defaults of the reference code."""

    c: float = 0.75  # strength of the attention regulariser (lamb in the reference)
    s_max: float = 400.0  # largest scale of the gates sigmoid(s e): the one used at test
    thr: float = 50.0  # clamp of s e inside cosh in the embedding-gradient compensation
    emb_clamp: float | None = 6.0  # embeddings clamped to +-emb_clamp after each step; None: not

    def check(self) -> None:
        require(self.c >= 0, f"hat.c must be >= 0, got {self.c}")
        require(
            self.s_max >= 1,
            f"hat.s_max must be >= 1 (annealing runs from 1/s_max), got {self.s_max}",
        )
        require(self.thr > 0, f"hat.thr must be > 0, got {self.thr}")
        clamp = self.emb_clamp
        require(clamp is None or clamp > 0, f"hat.emb_clamp must be > 0 or none, got {clamp}")


# ---------------------------------------------------------------------- the math


def annealed_scale(batch: int, batches: int, s_max: float) -> float:
    """``s`` of batch ``batch`` (1..``batches``) of an epoch: 1/s_max up to s_max, linearly."""
    if batches <= 1:
        return 1.0 / s_max
    return 1.0 / s_max + (s_max - 1.0 / s_max) * (batch - 1) / (batches - 1)


def compensation(e: Tensor, s: float, s_max: float, thr: float) -> Tensor:
    """The factor of the embedding gradients:
    ``s_max [cosh(clamp(s e, -thr, thr)) + 1] / (s [cosh(e) + 1])``."""
    return s_max / s * (torch.cosh(torch.clamp(s * e, -thr, thr)) + 1) / (torch.cosh(e) + 1)


def attention_regulariser(
    masks: Sequence[Tensor], cumulative: Sequence[Tensor] | None, c: float
) -> Tensor:
    """``c sum a_t (1 - a_<=t-1) / sum (1 - a_<=t-1)`` over every gate (``cumulative`` None:
    task 0, nothing used yet)."""
    if cumulative is None:
        cumulative = [torch.zeros_like(m) for m in masks]
    free = [1 - p for p in cumulative]
    used = sum((m * f).sum() for m, f in zip(masks, free, strict=True))
    total = sum(f.sum() for f in free)
    return c * used / torch.clamp(total, min=1e-12)  # every unit taken: nothing to regularise


def blocking_factor(out_mask: Tensor, in_mask: Tensor | None, weight_dim: int) -> Tensor:
    """``1 - min(out[j], in[i])`` shaped to broadcast over a weight of ``weight_dim`` dims
    (``(out, in)`` or ``(out, in, kh, kw)``); ``in_mask`` None: ``1 - out[j]``."""
    extra = [1] * (weight_dim - 2)
    out = out_mask.reshape(-1, 1, *extra)
    if in_mask is None:
        return 1 - out
    return 1 - torch.minimum(out, in_mask.reshape(1, -1, *extra))


# ---------------------------------------------------------------------- the gates


class HATGates(nn.Module):
    """The task embeddings of a network's gates, and the hooks that apply them.

    Attached to the network (``model.hat_gates``) so that the embeddings are among its
    parameters: the loop's optimiser trains those that require a gradient (the current
    task's), and checkpoints keep them.  A forward pre-hook on the network reads the task of
    each forward (``forward(x, task)``); a forward hook on every gated neuron layer
    multiplies its output by ``sigmoid(s e)`` of that task, with ``s`` the annealed
    ``s`` for the newest task in training mode and ``s_max`` otherwise.
    :meth:`remove` takes the hooks off.

    Attributes:
        embeddings: one ``ParameterList`` per task, one embedding per gate.
        s: the scale of the newest task while it trains.
        task: the task of the current forward.
    """

    def __init__(self, model: SpikingNetwork, gates: Sequence[Gate], s_max: float) -> None:
        super().__init__()
        self.units = [g.units for g in gates]
        self.s_max = s_max
        self.s = s_max
        self.task = 0
        self.embeddings = nn.ModuleList()
        # no module is stored: the network holds this module
        self._handles = [model.register_forward_pre_hook(self._read_task, with_kwargs=True)]
        for i, g in enumerate(gates):
            self._handles.append(g.neuron.register_forward_hook(self._gate(i)))

    def add_task(self, generator: torch.Generator, device: torch.device) -> nn.ParameterList:
        """Embeddings of a new task, drawn from N(0, 1)."""
        params = nn.ParameterList(
            nn.Parameter(torch.randn(n, generator=generator).to(device)) for n in self.units
        )
        self.embeddings.append(params)
        return params

    def masks(self, task: int, s: float) -> list[Tensor]:
        """``sigmoid(s e)`` of every gate of ``task`` (differentiable in the embeddings)."""
        return [torch.sigmoid(s * e) for e in self.embeddings[task]]

    def remove(self) -> None:
        """Take the hooks off the network and its gated neuron layers."""
        for h in self._handles:
            h.remove()
        self._handles = []

    def _read_task(self, module, args, kwargs) -> None:
        task = kwargs.get("task", args[1] if len(args) > 1 else 0)
        if isinstance(task, list | tuple):  # several heads: one forward per head, read here
            if not module.features_per_task:
                raise RuntimeError("HAT's gates need one forward per task: features_per_task")
            return
        self.task = int(task)
        if not 0 <= self.task < len(self.embeddings):
            raise IndexError(f"HAT has embeddings for {len(self.embeddings)} tasks, not {task}")

    def _gate(self, i: int):
        def hook(neuron: nn.Module, args, out: Tensor) -> Tensor:
            newest = self.task == len(self.embeddings) - 1
            s = self.s if neuron.training and newest else self.s_max
            a = torch.sigmoid(s * self.embeddings[self.task][i])
            return out * a.reshape(1, -1, *[1] * (out.dim() - 2))

        return hook


# ---------------------------------------------------------------------- the plugin


class HAT(Plugin):
    """Hard attention to the task: see the module's docstring.

    Args: see :class:`HATSettings` (``c``, ``s_max``, ``thr``, ``emb_clamp``).

    Attributes:
        gates: the network's :class:`~hlop.methods.hat.HATGates` (from task 0 on).
        topology: where the network's gates are (:meth:`.SpikingNetwork.gated_layers`).
        cumulative: ``a_<=t-1`` of every gate once a task is learnt (None before).
        factors: the gradient factor of every weight of ``topology`` for the next task.
        regulariser: the value of the attention regulariser on the last batch.
    """

    name = "hat"

    def __init__(
        self,
        c: float = 0.75,
        s_max: float = 400.0,
        thr: float = 50.0,
        emb_clamp: float | None = 6.0,
    ) -> None:
        self.settings = HATSettings(c, s_max, thr, emb_clamp)
        self.gates: HATGates | None = None
        self.topology: GateLayout | None = None
        self.cumulative: list[Tensor] | None = None
        self.factors: list[Tensor | None] = []
        self.batches = 1
        self.regulariser = 0.0

    def check(self, run: RunState) -> None:
        """Refuse what HAT cannot run with (before task 0 trains)."""
        model = run.model
        model.gated_layers()  # a network that cannot say where its gates are is refused
        if model.shared_head:
            bench = run.benchmark
            why = "its benchmark shares one" if bench is None or bench.shared_head else ""
            require(
                False,
                "HAT needs a head per task (task-incremental); the network has one shared "
                f"head ({why or 'shared_head=true'})",
            )
        require(
            not model.rule.updates_within_batch,
            "HAT masks the gradients between the backward and the optimiser step; OTTT's "
            "online update (--online-update) steps within the batch: leave it off",
        )

    def state_dict(self) -> dict:
        """The embeddings are the model's (``model.hat_gates``); here how many tasks have
        them, the cumulative gates and the annealing scale."""
        if self.gates is None:
            return {}
        return {
            "tasks": len(self.gates.embeddings),
            "cumulative": self.cumulative,
            "s": self.gates.s,
            "batches": self.batches,
        }

    def load_state_dict(self, state: dict, run: RunState) -> None:
        if not state:
            return
        self.attach(run, state["tasks"])  # the model's saved embeddings are loaded next
        cumulative = state["cumulative"]
        if cumulative is not None:
            self.cumulative = [c.to(run.device) for c in cumulative]
            self.factors = self.blocking_factors(self.cumulative)
        self.gates.s, self.batches = state["s"], state["batches"]

    def attach(self, run: RunState, tasks: int) -> None:
        """Gates on the network (the first time), with embeddings for ``tasks`` tasks."""
        if self.gates is None:
            self.check(run)
            self.topology = run.model.gated_layers()
            self.gates = HATGates(run.model, self.topology.gates, self.settings.s_max)
            run.model.hat_gates = self.gates
            # the body is gated per task: each head's scores from its own task's gates
            run.model.features_per_task = True
        while len(self.gates.embeddings) < tasks:
            g = torch.Generator().manual_seed(run.seed * 7919 + len(self.gates.embeddings))
            self.gates.add_task(g, run.device)

    def before_task(self, run: RunState) -> None:
        self.attach(run, run.task + 1)
        for e in self.gates.embeddings[run.task]:
            e.requires_grad_(True)  # begin_task froze every vector; the task's optimiser follows

    def before_epoch(self, run: RunState) -> None:
        # the first batch needs B before the loop reports it (after_batch keeps it in step)
        split = run.benchmark.tasks[run.task].train
        self.batches = math.ceil(len(split) / run.settings.batch_size)
        self.gates.s = annealed_scale(1, self.batches, self.settings.s_max)

    def after_backward(self, run: RunState) -> None:
        h, gates = self.settings, self.gates
        embeddings = list(gates.embeddings[run.task])
        if h.c > 0:
            reg = attention_regulariser(gates.masks(run.task, gates.s), self.cumulative, h.c)
            reg.backward()
            self.regulariser = reg.item()
        for w, factor in zip(self.topology.weights, self.factors, strict=False):
            if factor is not None and w.layer.weight.grad is not None:
                w.layer.weight.grad.mul_(factor)
        for e in embeddings:
            if e.grad is not None:
                e.grad.mul_(compensation(e.detach(), gates.s, h.s_max, h.thr))

    def after_batch(self, run: RunState, batch: int, batches: int, loss: float, acc: float):
        clamp = self.settings.emb_clamp
        if clamp is not None:
            with torch.no_grad():
                for e in self.gates.embeddings[run.task]:
                    e.clamp_(-clamp, clamp)
        self.batches = batches
        self.gates.s = annealed_scale(min(batch + 1, batches), batches, self.settings.s_max)

    def after_training(self, run: RunState) -> None:
        """The task's gates join the cumulative ones; the next tasks' gradient factors."""
        gates = self.gates
        gates.s = gates.s_max
        for e in gates.embeddings[run.task]:
            e.requires_grad_(False)
        with torch.no_grad():
            masks = gates.masks(run.task, gates.s_max)
        old = self.cumulative or masks
        self.cumulative = [torch.maximum(p, m) for p, m in zip(old, masks, strict=True)]
        self.factors = self.blocking_factors(self.cumulative)

    def blocking_factors(self, cumulative: Sequence[Tensor]) -> list[Tensor]:
        """The gradient factor of every gated weight, from cumulative gates ``cumulative``."""

        def used(ids: tuple[int, ...]) -> Tensor | None:
            if not ids:
                return None
            return torch.stack([cumulative[i] for i in ids]).amax(0)

        return [
            blocking_factor(used(w.outputs), used(w.inputs), w.layer.weight.dim())
            for w in self.topology.weights
        ]
