"""GPM: gradient projection memory (Saha et al., ICLR 2021) on hlop's projected layers.

In hlop, GPM is a lateral circuit whose rows come from an SVD instead of the Hebbian rule.
After task t, for every projected layer l, the representation matrix ``R`` (N x rows) holds
the rows its circuit sees (``layer.presynaptic``: the DSR rate of the layer's input, or
per-step spikes where circuits learn from spikes; unfolded patches for a convolution) on the
first ``n_l`` samples of a seeded permutation of the task's training samples (``gpm.samples``:
one count for every circuit, or one per circuit, as the reference takes 24 / 100 / 100
samples for CIFAR-100's convolutions and 125 for its fully connected layers).  With ``M``
(N x m) the memory so far, the circuit's frozen old rows ``H_old = M^T``::

    task 0 (as the reference code):
        R = U S V^T,   k = #{i : sum_{j<=i} s_j^2 < eps ||R||_F^2}
    later tasks (the paper's Eq. 8-9, as the reference code):
        R_hat = R - M M^T R,   R_hat = U S V^T
        k = the smallest k with  ||M^T R||_F^2 + sum_{i<=k} s_i^2 >= eps ||R||_F^2
    M <- [M, U_k]

Task 0 follows the reference code (``update_GPM`` of its ``main_*.py``:
``r = np.sum(np.cumsum(sval_ratio) < threshold[i]) #+1``), which keeps one basis fewer than
the paper's Eq. 5 (the smallest k reaching eps): the +1 is commented out there; a layer
whose first direction alone reaches eps gets no basis at all.  Later tasks keep the
smallest k reaching eps, in the paper and in the code.  The new bases become old rows of
the circuit, which then projects the layer's weight updates of later tasks exactly as
HLOP's merged circuits do: ``grad_W <- grad_W (I - M M^T)``.  Circuits never learn.

``R R^T`` is accumulated batch by batch (N x N, float64) and its eigendecomposition gives
``U`` and ``s^2``: the same subspace as the SVD, without keeping the rows.

A network of the user's own (``--model FILE.py:FUNCTION``) gets circuits on every
``nn.Linear`` / ``nn.Conv2d`` through :class:`hlop.HLOP`'s hooks, as HLOP's do: ``R`` holds
the rows :meth:`hlop.HLOP.rows` reads of each layer's input (every time step of a multi-step
``[T, B, ...]`` input, a convolution's unfolded patches, a constant 1 where the bias is
protected with the weight), on the same samples; the gradients are projected by the hooks
and every optimiser step by :meth:`hlop.HLOP.protect` (Adam and momentum too).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from hlop.core.choices import per_circuit
from hlop.core.settings import Settings, require
from hlop.errors import ConfigError
from hlop.layers.attach import HLOP
from hlop.loop import distributed
from hlop.loop.state import Plugin, RunState
from hlop.models.external import fit_preset_lists


@dataclass
class GPMSettings(Settings):
    """The ``gpm`` section."""

    # energy threshold eps of each circuit (one value for all, or one per circuit in network
    # order, as hlop.lrs); task t uses min(eps + threshold_step * t, 1)
    thresholds: list[float] = field(default_factory=lambda: [0.97])
    threshold_step: float = 0.0  # CIFAR-100 reference: 0.97 + 0.003 t
    # training samples of each task in each circuit's representation matrix (one value for
    # all, or one per circuit in network order, as thresholds): circuit l sums the rows of
    # the first n_l samples of one seeded permutation
    samples: list[int] = field(default_factory=lambda: [125])

    def check(self) -> None:
        require(
            len(self.thresholds) >= 1 and all(0 < t <= 1 for t in self.thresholds),
            f"gpm.thresholds must be in (0, 1], got {self.thresholds}",
        )
        require(
            self.threshold_step >= 0, f"gpm.threshold_step must be >= 0, got {self.threshold_step}"
        )
        require(
            len(self.samples) >= 1 and all(n >= 1 for n in self.samples),
            f"gpm.samples must be >= 1, got {self.samples}",
        )


def new_bases(cov: Tensor, memory: Tensor, eps: float, first_task: bool | None = None) -> Tensor:
    """The orthonormal bases (N x k) that GPM adds to ``memory`` (N x m, orthonormal
    columns) for a representation with ``cov = R R^T`` (N x N) and threshold ``eps``;
    never more than ``N - m``.

    ``first_task`` (default: whether ``memory`` is empty) picks the reference code's task-0
    count, ``#{i : sum_{j<=i} s_j^2 < eps ||R||^2}``; otherwise the smallest k with
    ``||M^T R||^2 + sum_{i<=k} s_i^2 >= eps ||R||^2`` (see the module docstring)."""
    cov = cov.double()
    n, m = memory.shape
    total = torch.trace(cov)
    if m == n or total <= 0:
        return cov.new_zeros(n, 0)
    residual = cov
    if m:
        mem = memory.to(cov)
        proj = torch.eye(n, dtype=cov.dtype, device=cov.device) - mem @ mem.t()
        residual = proj @ cov @ proj
    explained = total - torch.trace(residual)  # ||M^T R||^2
    values, vectors = torch.linalg.eigh((residual + residual.t()) / 2)
    values, vectors = values.flip(0).clamp_min(0), vectors.flip(1)  # descending s_i^2
    target = eps * total
    if first_task is None:
        first_task = m == 0
    if first_task:  # the reference code: sum(cumsum(ratio) < eps), its "+1" commented out
        k = min(int((explained + values.cumsum(0) < target).sum()), n - m)
    elif explained >= target:
        return cov.new_zeros(n, 0)
    else:  # the smallest k that reaches eps
        k = min(int((explained + values.cumsum(0) < target).sum()) + 1, n - m)
    if k == 0:
        return cov.new_zeros(n, 0)
    u = vectors[:, :k]
    if m:  # orthogonal to M up to rounding already: make it exact
        u = u - mem @ (mem.t() @ u)
    return torch.linalg.qr(u).Q


def representation_covariances(run: RunState, samples: int | Sequence[int]) -> list[Tensor]:
    """``R R^T`` (N x N, float64) of every layer with a circuit, in network order: the rows
    its circuit reads of the layer's input (``model.circuit_inputs()``: a built-in layer's
    ``presynaptic``, :meth:`hlop.HLOP.rows` on a network of the user's own), captured by
    forward hooks in an evaluation pass, on the first ``samples`` (one count for every
    layer, or one per layer) of a random permutation of the current task's training samples
    (seeded by the run's seed and the task)."""
    return representation_statistics(run, samples)[0]


@torch.no_grad()
def representation_statistics(
    run: RunState, samples: int | Sequence[int]
) -> tuple[list[Tensor], list[int]]:
    """:func:`representation_covariances`, and how many activity rows each one sums.

    ``samples`` counts samples, whatever rows each gives (one rate row per sample under
    DSR, every step of a multi-step input, a convolution's patches).  One forward pass over
    the first ``max(samples)`` samples of the permutation, in segments that end where some
    layer's count ends: every sample of a segment counts for the same layers (those whose
    count reaches the segment's end)."""
    model, split = run.model, run.benchmark.tasks[run.task].train
    inputs = model.circuit_inputs()
    wanted = [samples] * len(inputs) if isinstance(samples, int) else [int(n) for n in samples]
    if len(wanted) != len(inputs):
        raise ValueError(f"{len(wanted)} sample counts for {len(inputs)} projected layers")
    g = torch.Generator().manual_seed(run.seed * 1019 + run.task)
    order = torch.randperm(len(split), generator=g)
    wanted = [max(0, min(n, len(order))) for n in wanted]
    covs = [
        torch.zeros(n, n, dtype=torch.float64, device=run.device)
        for n in (c.in_features for c in model.circuits())
    ]
    counts = [0] * len(inputs)
    active = [False] * len(inputs)  # the layers the current segment's samples count for

    def capture(i: int, rows_of):
        def hook(_layer, inputs, _output) -> None:
            if active[i]:
                rows = rows_of(inputs[0]).double()
                covs[i] += rows.t() @ rows
                counts[i] += rows.shape[0]

        return hook

    hooks = [m.register_forward_hook(capture(i, f)) for i, (m, f) in enumerate(inputs)]
    was_training = model.training
    model.eval()
    bounds = sorted({0, *wanted})
    try:
        for start, end in zip(bounds, bounds[1:], strict=False):
            active[:] = [n >= end for n in wanted]
            # several workers: each takes a part of every segment (maybe none of a short one)
            part = distributed.shard(order[start:end])
            for chunk in part.split(run.settings.test_batch_size) if len(part) else ():
                x, _ = split.batch(chunk)
                model(x.to(run.device), run.task)
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    seen = torch.tensor(counts, dtype=torch.float64, device=run.device)
    distributed.sum_tensors([*covs, seen])
    counts = [int(n) for n in seen.tolist()]
    return covs, counts


class GPM(Plugin):
    """Gradient projection memory: from task 1 on, weight updates are projected orthogonally
    to the bases of earlier tasks' representations, held as the circuits' old rows.

    Args: see :class:`GPMSettings`."""

    name = "gpm"
    uses_circuits = True

    def __init__(
        self,
        thresholds: list[float] | None = None,
        threshold_step: float = 0.0,
        samples: int | Sequence[int] | None = None,
    ) -> None:
        thresholds = [0.97] if thresholds is None else list(thresholds)
        samples = [125] if samples is None else samples
        samples = [samples] if isinstance(samples, int) else list(samples)
        self.settings = GPMSettings(thresholds, threshold_step, samples)

    def check(self, run: RunState) -> None:
        if getattr(run.model, "external", False):  # a network of the user's own: hooks
            self._attach(run.model)
        self.thresholds(run)
        self.samples(run)

    def _attach(self, model) -> None:
        """Circuits on every ``nn.Linear`` / ``nn.Conv2d`` of a network of the user's own
        (:class:`hlop.HLOP`'s hooks, biases protected with their weights; the circuits never
        learn).  A per-circuit list of the preset (written for the built-in network) that
        does not fit its circuits gives way to GPM's default, with a warning."""
        model.attach_circuits(lambda net: HLOP(net, sizes=None))
        names = [n for n, _ in model.projected_layers()]
        default = GPMSettings()
        lists = {"thresholds": default.thresholds, "samples": default.samples}
        fit_preset_lists(model, names, self.settings, "gpm", lists)

    def before_task(self, run: RunState) -> None:
        for c in run.model.circuits():
            c.learning = False
            c.projecting = run.task > 0

    def before_epoch(self, run: RunState) -> None:
        if getattr(run.model, "external", False):  # any optimiser keeps old responses
            run.model.protect(run.optimizer)

    def after_training(self, run: RunState) -> None:
        # here, not after the evaluation: the task's representations at the parameters its
        # training reached (evaluation runs without projection and uses no bases)
        for c in run.model.circuits():
            c.projecting = False
        self.add_bases(run)

    def thresholds(self, run: RunState) -> list[float]:
        """eps of every circuit for the current task: ``min(eps + threshold_step * t, 1)``."""
        g = self.settings
        names = [n for n, _ in run.model.projected_layers()]
        try:
            eps = per_circuit(g.thresholds, names, key="gpm.thresholds")
        except ValueError as e:
            raise ConfigError(str(e)) from None
        return [min(e + g.threshold_step * run.task, 1.0) for e in eps]

    def samples(self, run: RunState) -> list[int]:
        """The number of training samples in every circuit's representation matrix."""
        names = [n for n, _ in run.model.projected_layers()]
        try:
            return per_circuit(self.settings.samples, names, key="gpm.samples")
        except ValueError as e:
            raise ConfigError(str(e)) from None

    @torch.no_grad()
    def add_bases(self, run: RunState) -> list[int]:
        """Append the current task's bases to every circuit as frozen old rows; returns the
        number added to each."""
        covs = representation_covariances(run, self.samples(run))
        added = []
        for c, cov, eps in zip(run.model.circuits(), covs, self.thresholds(run), strict=True):
            if c.rows != c.old_rows:
                raise RuntimeError(f"{c.name}: GPM circuits hold no learning block")
            u = new_bases(cov, c.weight.t(), eps, first_task=run.task == 0)
            n = c.add_subspace(u.shape[1])  # capped at the circuit's dimension
            if n:
                c.weight[c.rows - n :] = u[:, :n].t().to(c.weight)
            c.merge()
            added.append(n)
        return added
