"""Lateral circuits: lateral neurons that learn the principal subspace of old tasks' activity.

A circuit of one layer holds lateral weights ``H`` (M x N) arranged in row blocks.
Lateral neurons receive ``y = H x`` and feed back ``-H^T y``.  Rows learn with
Oja's subspace rule (Hebbian / anti-Hebbian), run ``iterations`` times per batch::

    Y    = X H^T                 # all rows, old and new
    Xhat = Y H
    dH   = clip(Y^T (X - Xhat) / B, -10, 10)
    Mom[new]  = 0.9 Mom[new] + 0.1 dH[new]
    H[new]   += lr Mom[new]      # frozen (old) rows never change

so the new rows learn the principal subspace of the residual activity that the old
rows do not explain.  After a task :meth:`.LateralCircuit.merge` freezes every row
into the *old* block, which defines the projection used for weight updates::

    project(X) = X - (X H_old^T) H_old

With spiking lateral neurons, ``Y`` is quantised as spike counts of ``T_l`` steps
with scale ``s``: ``Y_q = s round(T_l clamp(Y, -s, s) / s) / T_l`` (update and projection).

Block sizes found from the data (:meth:`.LateralCircuit.track_energy`,
:meth:`.LateralCircuit.fit_block`): while a generous new block learns, the circuit keeps
running averages (factor :data:`ENERGY_DECAY` per batch) of its own activity's energy::

    E      = |X|^2 / B                     all of the activity
    E_old  = (|X|^2 - |R|^2) / B           what the old rows hold (R = project(X))
    S      = Y_new^T Y_new / B             the new lateral neurons' responses to R

After the task the block is replaced by an orthonormal basis of its span outside the old
rows, ordered by the residual energy ``S`` holds along each direction (``lambda_1 >=
lambda_2 >= ...``, :meth:`.LateralCircuit.fit_block`), and cut to the fewest rows k with
``E_old + lambda_1 + ... + lambda_k >= threshold E``.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from hlop.core.choices import PRECISIONS
from hlop.core.precision import product
from hlop.errors import CircuitError

#: per-batch factor of the running energy averages (:meth:`.LateralCircuit.track_energy`)
ENERGY_DECAY = 0.95

#: default share of a task's activity energy that sizes found from the data hold
#: (:meth:`.LateralCircuit.fit_block`): on the PMNIST subset, 0.9 gave ACC 88.31 / BWT -1.01
#: with 800 lateral neurons, 0.95 86.47 / -1.73 with 1539 and 0.97 81.23 / -7.04 with 1744
#: (docs/method.md, "Sizes from the data")
DEFAULT_THRESHOLD = 0.9

#: the default of ``hlop.HLOP`` and of a network of your own in the harness (``--model``),
#: whose blocks may take every free row (the threshold alone sizes them) and whose training
#: may be far less gentle than the paper's plain SGD.  3 permuted-MNIST tasks of the
#: embedded subset, 1 epoch each (docs/your-network.md): a SpikingJelly CNN with biases under
#: SGD with momentum 0.9 and lr 0.1 gave BWT -19.1 at 0.9, -1.6 at 0.95 (ACC 76.0) and -2.5 at 0.97
#: (ACC 70.9); SpikingJelly's model-zoo MNISTNet under Adam BWT -1.0 at 0.95 (ACC 53.5) and
#: -1.4 at 0.97 (ACC 48.9, below the baseline's 51.0: too little room left to learn)
USER_MODEL_THRESHOLD = 0.95

#: a generous block holds at least this many rows (or the whole circuit, if smaller) even
#: where a quarter of the circuit's dimension is fewer: a circuit of a few inputs (the first
#: convolution of a 1-channel image: 9 and a bias) may need most of them for one task
SMALL_BLOCK_ROWS = 128


@dataclass(frozen=True)
class CircuitSettings:
    """The settings of one lateral circuit, with their defaults (written here only) and their
    checks, which run when the settings are made: a :class:`LateralCircuit`, the built-in
    networks, :class:`hlop.HLOP` and the run's ``hlop`` section all take them from here.

    Attributes:
        lr: learning rate of the Hebbian update (> 0).
        iterations: Hebbian iterations per batch (>= 0).
        momentum: momentum of the Hebbian update, in [0, 1).
        clip: the update is clipped to [-clip, clip] (> 0).
        spiking: quantise the lateral responses as spike counts.
        spike_scale: s (> 0) of the spiking lateral neurons.
        spike_steps: T_l (>= 1) of the spiking lateral neurons.
        precision: ``"fp32"``, or ``"bf16"``: the old block's products (the residual of the
            update and the projection) take bf16 operands with fp32 results; ``H``, its
            update and the spiking quantisation stay fp32 (a spiking circuit stays fp32).

    A wrong value raises :class:`~hlop.errors.CircuitError` (a ``ValueError``) naming the
    setting, e.g. ``CircuitSettings(lr=-1)``: "lr must be > 0, got -1".
    """

    lr: float = 0.01
    iterations: int = 5
    momentum: float = 0.9
    clip: float = 10.0
    spiking: bool = False
    spike_scale: float = 20.0
    spike_steps: int = 1000
    precision: str = "fp32"

    def __post_init__(self) -> None:
        def need(ok: bool, name: str, rule: str) -> None:
            if not ok:
                raise CircuitError(f"{name} must be {rule}, got {getattr(self, name)!r}")

        def number(name: str) -> bool:
            v = getattr(self, name)
            return isinstance(v, int | float) and not isinstance(v, bool)

        def integer(name: str) -> bool:
            v = getattr(self, name)
            return isinstance(v, int) and not isinstance(v, bool)

        need(number("lr") and self.lr > 0, "lr", "> 0")
        need(integer("iterations") and self.iterations >= 0, "iterations", "an integer >= 0")
        need(number("momentum") and 0 <= self.momentum < 1, "momentum", "in [0, 1)")
        need(number("clip") and self.clip > 0, "clip", "> 0")
        need(isinstance(self.spiking, bool), "spiking", "True or False")
        need(number("spike_scale") and self.spike_scale > 0, "spike_scale", "> 0")
        need(integer("spike_steps") and self.spike_steps >= 1, "spike_steps", "an integer >= 1")
        need(self.precision in PRECISIONS, "precision", f"one of {', '.join(PRECISIONS)}")


#: every circuit setting at its default
DEFAULTS = CircuitSettings()


class LateralCircuit(nn.Module):
    """The lateral neurons of one projected layer.

    The keyword arguments ``lr``, ``iterations``, ``momentum``, ``clip``, ``spiking``,
    ``spike_scale``, ``spike_steps`` and ``precision`` are the circuit's
    :class:`CircuitSettings` (their defaults and checks); a wrong value raises
    :class:`~hlop.errors.CircuitError` naming the setting (and the layer).
    :meth:`from_settings` takes them as one object.

    Args:
        in_features: N, the dimension of the presynaptic activity (conv: C_in * k * k).
        name: the layer's name, used in error messages and warnings.

    Attributes:
        reducer: None, or a function applied to each Hebbian update ``dH`` before its clip
            and momentum: data-parallel training sets the average over the workers' batches
            (``hlop.loop.distributed.reduce_hebbian``), so that every worker's circuit stays
            the same.
        learning: when True, :meth:`hebbian_update` is run on each training batch by the layer.
        projecting: when True, the layer projects its weight updates with the old block.
    """

    def __init__(
        self,
        in_features: int,
        lr: float = DEFAULTS.lr,
        *,
        iterations: int = DEFAULTS.iterations,
        momentum: float = DEFAULTS.momentum,
        clip: float = DEFAULTS.clip,
        spiking: bool = DEFAULTS.spiking,
        spike_scale: float = DEFAULTS.spike_scale,
        spike_steps: int = DEFAULTS.spike_steps,
        precision: str = DEFAULTS.precision,
        name: str = "",
    ) -> None:
        super().__init__()
        if isinstance(in_features, bool) or not isinstance(in_features, int) or in_features < 1:
            raise CircuitError(f"in_features must be an integer >= 1, got {in_features!r}")
        where = f"lateral circuit of layer '{name}': " if name else ""
        try:
            settings = CircuitSettings(
                lr, iterations, momentum, clip, spiking, spike_scale, spike_steps, precision
            )
        except CircuitError as e:
            raise CircuitError(f"{where}{e}") from None
        self.in_features = in_features
        self.lr, self.iterations = settings.lr, settings.iterations
        self.momentum, self.clip = settings.momentum, settings.clip
        self.spiking, self.spike_scale = settings.spiking, settings.spike_scale
        self.spike_steps, self.precision = settings.spike_steps, settings.precision
        self.name = name
        self.learning = False
        self.projecting = False
        self.reducer: Callable[[Tensor], Tensor] | None = None
        self.tracking = False  # running energy averages (track_energy)
        self.register_buffer("weight", torch.zeros(0, in_features))
        self.register_buffer("velocity", torch.zeros(0, in_features))
        # block sizes and the number of frozen (merged, old) rows are state, saved with H
        self.register_buffer("block_sizes", torch.zeros(0, dtype=torch.long))
        self.register_buffer("frozen_rows", torch.zeros((), dtype=torch.long))

    @classmethod
    def from_settings(
        cls, in_features: int, settings: CircuitSettings, name: str = ""
    ) -> LateralCircuit:
        """A circuit of dimension ``in_features`` with ``settings``."""
        return cls(in_features, name=name, **dataclasses.asdict(settings))

    @property
    def settings(self) -> CircuitSettings:
        """The circuit's current settings."""
        return CircuitSettings(
            self.lr,
            self.iterations,
            self.momentum,
            self.clip,
            self.spiking,
            self.spike_scale,
            self.spike_steps,
            self.precision,
        )

    # ------------------------------------------------------------------ structure
    @property
    def rows(self) -> int:
        """M, the number of lateral neurons."""
        return self.weight.shape[0]

    @property
    def old_rows(self) -> int:
        """Rows in the merged, frozen block used for projection."""
        return int(self.frozen_rows)

    @property
    def blocks(self) -> list[int]:
        return [int(b) for b in self.block_sizes]

    def _where(self) -> str:
        return f"lateral circuit of layer '{self.name}'" if self.name else "lateral circuit"

    def add_subspace(self, n: int) -> int:
        """Append ``n`` orthogonally initialised rows as a new, learning block.

        The circuit is capped at ``in_features`` rows (never an over-complete H): rows
        beyond it are not added, with a warning.  Returns the number of rows added.
        """
        if isinstance(n, bool) or not isinstance(n, int):
            raise CircuitError(f"{self._where()}: block size must be an integer, got {n!r}")
        if n < 0:
            raise CircuitError(f"{self._where()}: block size must be >= 0, got {n}")
        room = self.in_features - self.rows
        if n > room:
            warnings.warn(
                f"{self._where()}: {n} new rows requested but only {room} fit in dimension "
                f"{self.in_features}; adding {room} (a circuit is never over-complete)",
                stacklevel=2,
            )
            n = room
        if n == 0:
            return 0
        if self.tracking:  # statistics of the new block start afresh
            self.block_energy = self.block_energy.new_zeros(n, n)
            self.energy.zero_()
        new = torch.empty(n, self.in_features, dtype=self.weight.dtype)
        nn.init.orthogonal_(new)
        self.weight = torch.cat([self.weight, new.to(self.weight.device)])
        self.velocity = torch.cat([self.velocity, torch.zeros_like(new).to(self.weight.device)])
        self.block_sizes = torch.cat(
            [self.block_sizes, torch.tensor([n], device=self.block_sizes.device)]
        )
        return n

    def merge(self) -> None:
        """Freeze every row into one old block (after a task)."""
        self.block_sizes = self.block_sizes.new_tensor([self.rows] if self.rows else [])
        self.frozen_rows = self.frozen_rows.new_tensor(self.rows)

    # ------------------------------------------------------------------ dynamics
    def respond(self, x: Tensor, h: Tensor) -> Tensor:
        """Lateral responses ``Y = X h^T`` (quantised as spike counts if spiking)."""
        y = x @ h.t()
        if self.spiking:
            s, steps = self.spike_scale, self.spike_steps
            y = torch.round(torch.clamp(y, -s, s) * (steps / s)) * (s / steps)
        return y

    def check(self, x: Tensor) -> None:
        """Raise :class:`CircuitError` unless ``x`` is finite with ``in_features`` columns."""
        if x.dim() != 2 or x.shape[1] != self.in_features:
            raise CircuitError(
                f"{self._where()}: expected activity of shape (batch, {self.in_features}), "
                f"got {tuple(x.shape)}"
            )
        if not torch.isfinite(x.sum()):  # NaN and inf reach the sum (one pass, no mask)
            raise CircuitError(
                f"{self._where()}: activity contains NaN or inf; the circuit was not updated "
                "(check the learning rate or the input normalisation)"
            )

    @torch.no_grad()
    def hebbian_update(self, x: Tensor, iterations: int | None = None) -> Tensor | None:
        """Run the subspace rule on a batch of activity ``x`` (B x N); old rows stay frozen.

        Residual form: the frozen rows' reconstruction ``Y_old H_old`` is the same at every
        iteration, so it is removed once per batch and the iterations touch only the new
        block (the rule above, with ``X - Y H = R - Y_new H_new`` and ``R = X - Y_old H_old``)::

            R = project(X);   per iteration:  Y_new = X H_new^T,  dH = Y_new^T (R - Y_new H_new) / B

        Returns ``R`` (the input-mode projection of ``x``, which a layer projecting the same
        rows can reuse) when old rows exist and it was computed, else None."""
        self.check(x)
        k = self.old_rows
        if self.rows == k:
            return None
        x = x.to(self.weight.dtype)
        h, b = self.weight, x.shape[0]
        new = h[k:]  # a view: updated in place below
        iterations = self.iterations if iterations is None else iterations
        if not self.spiking and b > x.shape[1]:
            # with many more rows than dimensions (unfolded conv patches), C = X^T X / B once
            # beats B-row products per iteration: dH = H_new C - (H_new C H^T) H
            cov = x.t() @ x / b
            for _ in range(iterations):
                p = new @ cov
                self._step(p - (p @ h.t()) @ h, k)
            if self.tracking:
                old, a = h[:k], new - (new @ h[:k].t()) @ h[:k]
                total = torch.trace(cov)
                self._track(total, (old @ cov).mul_(old).sum(), a @ cov @ a.t())
            return None
        resid = self.project(x)
        for _ in range(iterations):
            y = self.respond(x, new)
            self._step(y.t() @ (resid - y @ new) / b, k)
        if self.tracking:
            y, total = resid @ new.t(), x.square().sum() / b
            self._track(total, total - resid.square().sum() / b, y.t() @ y / b)
        return resid if k else None

    # ------------------------------------------------------------------ sizes from the data
    @property
    def block_bound(self) -> int:
        """The rows of a generous block when none is given (a quarter of ``in_features``, and
        at least :data:`~hlop.core.circuit.SMALL_BLOCK_ROWS`, or ``in_features`` if fewer)."""
        return max(self.in_features // 4, min(self.in_features, SMALL_BLOCK_ROWS))

    def generous_block(self, bound: int | None = None) -> int:
        """The rows of a block that :meth:`fit_block` will cut to size: ``bound`` (None:
        :attr:`block_bound`), no more than fit in the circuit."""
        bound = self.block_bound if bound is None else bound
        return min(bound, self.in_features - self.rows)

    def track_energy(self, on: bool = True) -> None:
        """Keep (or stop keeping) the running energy averages of the module's docstring while
        the circuit learns; they are buffers (saved and restored with the circuit) from the
        first call on."""
        if on and "energy" not in self._buffers:
            m = self.rows - self.old_rows
            self.register_buffer("energy", self.weight.new_zeros(2))
            self.register_buffer("block_energy", self.weight.new_zeros(m, m))
        self.tracking = on

    @torch.no_grad()
    def _track(self, total: Tensor, old: Tensor, s: Tensor) -> None:
        stats = torch.cat([total.reshape(1), old.reshape(1), s.reshape(-1)])
        if self.reducer is not None:  # several workers: the statistics of the global batch
            stats = self.reducer(stats)
        d = ENERGY_DECAY
        self.energy.mul_(d).add_(stats[:2], alpha=1 - d)
        self.block_energy.mul_(d).add_(stats[2:].view_as(self.block_energy), alpha=1 - d)

    @torch.no_grad()
    def fit_block(self, threshold: float) -> int:
        """Replace the newest (learning) block by an orthonormal basis of its span outside the
        old rows, ordered by residual energy, and keep the fewest of those directions that
        bring what the old rows and the kept ones hold to ``threshold`` of the activity's
        energy (module docstring); returns the rows kept.  A circuit that tracked nothing
        keeps its block as it is.

        The block's rows ``A`` (their components along the old rows removed) need not have
        converged to orthonormal rows: with ``G = A A^T`` and the tracked ``S``, the
        generalised eigenproblem ``S v = lambda G v`` (``v^T G v = 1``) gives the rows
        ``v^T A``, orthonormal and orthogonal to the old ones, each holding the residual
        energy ``lambda``.  Without it, a block cut from a partly converged one keeps
        components along old rows, and the frozen circuit stops being a projection."""
        k, m = self.old_rows, self.rows - self.old_rows
        if m == 0 or not self.tracking or float(self.energy[0]) <= 0:
            return m
        if not 0 < threshold <= 1:
            raise CircuitError(f"{self._where()}: threshold must be in (0, 1], got {threshold}")
        a = self.weight[k:].double()
        if k:  # outside the old rows' span (an orthonormal basis of it: they are learnt)
            q = torch.linalg.qr(self.weight[:k].double().t()).Q
            a = a - (a @ q) @ q.t()
        d, u = torch.linalg.eigh(a @ a.t())
        # the directions the block really spans outside the old rows: one whose length is
        # under 1% of the longest is (numerically) inside the old span, and not kept
        span = d > d.max().clamp_min(1e-300) * 1e-4
        whiten = u[:, span] / d[span].sqrt()  # whiten^T G whiten = I
        s = self.block_energy.double()
        values, vectors = torch.linalg.eigh(whiten.t() @ ((s + s.t()) / 2) @ whiten)
        values, vectors = values.flip(0).clamp_min(0), vectors.flip(1)
        total, old_energy = (float(e) for e in self.energy)
        short = threshold * total - old_energy  # energy the new rows must add
        n = values.numel()
        keep = 0 if short <= 0 else min(int((values.cumsum(0) < short).sum()) + 1, n)
        basis = (whiten @ vectors[:, :keep]).t()  # keep x m: rows of the new block
        self.weight = torch.cat([self.weight[:k], (basis @ a).to(self.weight.dtype)])
        velocity = basis.to(self.velocity.dtype) @ self.velocity[k:]
        self.velocity = torch.cat([self.velocity[:k], velocity])
        sizes = self.block_sizes[:-1] if keep == 0 else self.block_sizes.clone()
        if keep:
            sizes[-1] = keep
        self.block_sizes = sizes
        self.block_energy = self.block_energy.new_zeros(keep, keep)
        return keep

    def _step(self, dh: Tensor, k: int) -> None:
        """Clip the new rows' update, then momentum and learning rate (old rows frozen); a
        :attr:`reducer` first (several workers: the update of the global batch)."""
        if self.reducer is not None:
            dh = self.reducer(dh)
        dh.clamp_(-self.clip, self.clip)
        self.velocity[k:].mul_(self.momentum).add_(dh, alpha=1.0 - self.momentum)
        self.weight[k:].add_(self.velocity[k:], alpha=self.lr)

    def project(self, x: Tensor) -> Tensor:
        """``x - (x H_old^T) H_old``: remove the component of x in the old subspace."""
        k = self.old_rows
        if k == 0:
            return x
        if self.precision == "bf16" and not self.spiking:
            dt, h = PRECISIONS["bf16"], self.weight[:k]
            y = product(lambda x, h: x @ h.t(), dt, x, h)
            return x - product(torch.matmul, dt, y, h).to(x.dtype)
        h = self.weight[:k].to(x.dtype)
        return x - self.respond(x, h) @ h

    # ------------------------------------------------------------------ state
    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # block sizes are part of the state: take the saved shapes, no size schedule replay
        if prefix + "energy" in state_dict and "energy" not in self._buffers:
            self.track_energy()  # the saved circuit kept energy averages
            self.tracking = False  # the owner switches tracking on again
        for name in ("weight", "velocity", "block_sizes", "block_energy"):
            key = prefix + name
            if key in state_dict and name in self._buffers:
                cur = getattr(self, name)
                setattr(self, name, cur.new_empty(state_dict[key].shape))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, rows={self.rows}, old={self.old_rows}, "
            f"blocks={self.blocks}, lr={self.lr}, spiking={self.spiking}"
        )
