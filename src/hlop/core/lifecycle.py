"""HLOP's task lifecycle for a set of lateral circuits, written once.

For each task, every circuit::

    begin(task)     a new block of lateral neurons: the task's size from a schedule, or, with
                    sizes found from the data ("auto"), a generous block whose energy
                    statistics are tracked (LateralCircuit.track_energy); the block learns,
                    and weight updates are projected wherever the circuit has old rows
    ... training: the block learns from the layer's activity (set_learning switches it) ...
    end()           with "auto", the block is cut to the rows the task's activity needs
                    (LateralCircuit.fit_block); learning and projection stop; the circuit's
                    blocks merge into its old subspace

:class:`TaskLifecycle` is used by :class:`hlop.HLOP` (hooks on any model) and by the
command line's HLOP method (:class:`hlop.methods.HLOPPlugin`) alike.  Two choices settle
where the two used to differ:

* projection switches on for each circuit that has old rows (not "from task 1 on"): a
  circuit with none has nothing to project against (the same wherever task 0 kept rows);
* the blocks merge at the end of the task's training, before its evaluation (not after it):
  an evaluation never reads the circuits, so the accuracy matrices are the same, and the
  task's end state is the same whoever drives the circuits.

:func:`check_block_sizes` is the one check of a task's block sizes.
"""

from __future__ import annotations

from collections.abc import Sequence

from hlop.core.choices import per_circuit
from hlop.core.circuit import DEFAULT_THRESHOLD, LateralCircuit
from hlop.errors import CircuitError


def check_block_sizes(
    sizes: Sequence[int],
    names: Sequence[str],
    dims: Sequence[int] | None = None,
    key: str = "block sizes",
) -> list[int]:
    """``sizes`` as a list, if it holds one integer >= 0 per circuit (``names``) and, given
    the circuits' dimensions ``dims``, none above its circuit's; else
    :class:`~hlop.errors.CircuitError` naming the setting ``key`` and the circuit."""
    sizes = list(sizes)
    if len(sizes) != len(names):
        raise CircuitError(
            f"{key} needs {len(names)} value{'s' * (len(names) != 1)} (one per circuit: "
            f"{', '.join(names)}), got {sizes}"
        )
    for name, n in zip(names, sizes, strict=True):
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise CircuitError(f"{key}: the block size of '{name}' must be an integer >= 0: {n!r}")
    for name, n, d in zip(names, sizes, dims or [None] * len(sizes), strict=True):
        if d is not None and n > d:
            raise CircuitError(f"{key}: block of {n} rows above the dimension {d} of '{name}'")
    return sizes


def _per_circuit(value, names: Sequence[str], key: str) -> list:
    values = [value] if value is None or isinstance(value, int | float) else list(value)
    try:
        return per_circuit(values, names, key)
    except ValueError as e:
        raise CircuitError(str(e)) from None


class TaskLifecycle:
    """The tasks of a set of circuits (module docstring).

    Args:
        circuits: the circuits, in a fixed order.
        names: their layers' names (for messages), in the same order.
        sizes: ``"auto"`` (sizes found from each task's activity), one list of block sizes
            per task (the last repeats for later tasks), or None (every :meth:`begin` is
            given its sizes).
        threshold: with ``"auto"``, the share of a task's activity energy that each
            circuit's old rows and new block together hold: one value or one per circuit,
            in (0, 1].
        max_rows: with ``"auto"``, the most rows a circuit's block keeps per task: one value
            or one per circuit (None: the circuit's default,
            :meth:`LateralCircuit.generous_block`).
        prefix: put before the settings' names in messages (``"hlop."``: the run's section).

    Attributes:
        task: tasks begun.
        in_task: between :meth:`begin` and :meth:`end`.
        fitting: the current task's blocks are fitted at :meth:`end`.
        kept: the rows each finished task added to each circuit (after fitting).
    """

    def __init__(
        self,
        circuits: Sequence[LateralCircuit],
        names: Sequence[str],
        *,
        sizes: str | Sequence[Sequence[int]] | None = "auto",
        threshold: float | Sequence[float] = DEFAULT_THRESHOLD,
        max_rows: int | Sequence[int] | None = None,
        prefix: str = "",
    ) -> None:
        self.circuits, self.names = list(circuits), list(names)
        if isinstance(sizes, str) and sizes != "auto":
            raise CircuitError(f"{prefix}sizes must be 'auto', a schedule or None: {sizes!r}")
        self.auto = sizes == "auto"
        self.schedule = None
        if sizes is not None and not self.auto:
            self.schedule = [
                check_block_sizes(s, self.names, key=f"{prefix}sizes[{k}]")
                for k, s in enumerate(sizes)
            ]
        self.thresholds = _per_circuit(threshold, self.names, f"{prefix}threshold")
        if not all(isinstance(t, int | float) and 0 < t <= 1 for t in self.thresholds):
            raise CircuitError(f"{prefix}threshold must be in (0, 1], got {threshold}")
        self.max_rows = _per_circuit(max_rows, self.names, f"{prefix}max_rows")
        if not all(m is None or (isinstance(m, int) and m >= 1) for m in self.max_rows):
            raise CircuitError(f"{prefix}max_rows must be integers >= 1, got {max_rows}")
        self.task = 0
        self.in_task = self.fitting = False
        self.kept: list[list[int]] = []

    def begin(self, sizes: Sequence[int] | None = None) -> list[int]:
        """Add this task's block to every circuit (``sizes``, one per circuit; None: the
        schedule's, or generous blocks to fit with ``"auto"``); the blocks learn, and every
        circuit with old rows projects.  Returns the rows added (a circuit is never
        over-complete)."""
        if self.in_task:
            raise RuntimeError("the previous task has not ended (call end_task)")
        self.fitting = sizes is None and self.auto
        if self.fitting:
            sizes = [
                c.generous_block(bound)
                for c, bound in zip(self.circuits, self.max_rows, strict=True)
            ]
        elif sizes is None:
            if self.schedule is None:
                raise CircuitError("begin_task needs block sizes (or give a size schedule)")
            sizes = self.schedule[min(self.task, len(self.schedule) - 1)]
        sizes = check_block_sizes(sizes, self.names)
        for c in self.circuits:
            if self.fitting or c.tracking:
                c.track_energy(self.fitting)
        added = [c.add_subspace(n) for c, n in zip(self.circuits, sizes, strict=True)]
        for c in self.circuits:
            c.learning = True
            c.projecting = c.old_rows > 0
        self.task += 1
        self.in_task = True
        return added

    def set_learning(self, on: bool) -> None:
        """Switch the new blocks' Hebbian learning (the task's training goes on)."""
        for c in self.circuits:
            c.learning = on

    def end(self, fit: bool | None = None) -> list[int]:
        """Fit the blocks (``fit``; None: if this task's :meth:`begin` chose generous
        blocks), stop learning and projecting, merge every circuit's blocks into its old
        subspace; returns the rows this task kept in each circuit."""
        fit = self.fitting if fit is None else fit
        kept = []
        for c, threshold in zip(self.circuits, self.thresholds, strict=True):
            old = c.old_rows
            if fit:
                c.fit_block(threshold)
            kept.append(c.rows - old)
            c.learning = c.projecting = False
            c.merge()
        self.kept.append(kept)
        self.in_task = self.fitting = False
        return kept
