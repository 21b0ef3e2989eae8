"""HLOP: Hebbian learning based orthogonal projection (the paper's method)."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..choices import HEBBIAN_SOURCES, HEBBIAN_STRIDES, PRECISIONS, PROJ_TYPES, per_circuit
from ..circuit import DEFAULT_THRESHOLD
from ..continual import Plugin, RunState
from ..errors import ConfigError
from ..settings import Settings, require, require_choice


@dataclass
class HLOPSettings(Settings):
    """The ``hlop`` section: the lateral circuits (read when the network is built, for
    every method that uses circuits) and HLOP's schedule of them."""

    lrs: list[float] = field(default_factory=lambda: [0.001, 0.01, 0.01])
    iterations: int = 5
    # block sizes added to each circuit before each task (one list per task), or "auto": a
    # block of max_rows learns while the task trains and keeps the fewest rows that bring
    # what the circuit holds to `threshold` of the task's activity energy
    sizes: list[list[int]] | str = field(default_factory=list)
    # one value for every circuit, or one per circuit in network order (GPM-style
    # [0.9, 0.95, 0.97]: deeper layers keep more of their activity)
    threshold: float | list[float] = DEFAULT_THRESHOLD
    max_rows: list[int] = field(default_factory=list)  # auto: per task; []: a quarter of N
    start_epochs: int = 0  # epochs of each task before the circuits start learning
    hebbian_on: str = "wfr"  # what circuits learn from: "wfr" (rate over time) or "spikes"
    # convolutions learn from patches at their own stride ("layer") or at stride 1 ("one",
    # as the authors' code does); projection always uses the layer's own patches
    hebbian_stride: str = "layer"
    spiking: bool = False
    spike_scale: float = 20.0
    spike_steps: int = 1000
    proj_type: str = "input"
    # the old block's products (residual of the update, projection): "auto" (as the
    # network's precision), "fp32" or "bf16"; H and its update stay fp32
    precision: str = "auto"

    def check(self) -> None:
        require(
            self.iterations >= 0 and self.start_epochs >= 0,
            "hlop.iterations and start_epochs must be >= 0",
        )
        require_choice("hlop.hebbian_on", self.hebbian_on, HEBBIAN_SOURCES)
        require_choice("hlop.hebbian_stride", self.hebbian_stride, HEBBIAN_STRIDES)
        require_choice("hlop.proj_type", self.proj_type, PROJ_TYPES)
        require_choice("hlop.precision", self.precision, ("auto", *PRECISIONS))
        require(
            not (self.spiking and self.proj_type == "weight"),
            "spiking lateral neurons (hlop.spiking, --lateral-spiking) quantise activity "
            "rows, which only the input projection has: use hlop.proj_type=input "
            "(--proj-type input)",
        )
        require(
            self.spike_scale > 0 and self.spike_steps >= 1,
            "hlop.spike_scale and spike_steps must be > 0",
        )
        require(all(lr > 0 for lr in self.lrs), f"hlop.lrs must all be > 0, got {self.lrs}")
        require(
            self.sizes == "auto" or not isinstance(self.sizes, str),
            f"hlop.sizes must be auto or one list of block sizes per task, got {self.sizes!r}",
        )
        require(
            all(0 < t <= 1 for t in self.thresholds),
            f"hlop.threshold must be in (0, 1] (one value or one per circuit), got "
            f"{self.threshold}",
        )
        require(all(m >= 1 for m in self.max_rows), f"hlop.max_rows must be >= 1: {self.max_rows}")
        for k, sizes in enumerate([] if self.auto else self.sizes):
            require(all(s >= 0 for s in sizes), f"hlop.sizes[{k}] must be >= 0, got {sizes}")

    @property
    def auto(self) -> bool:
        return self.sizes == "auto"

    @property
    def thresholds(self) -> list[float]:
        t = self.threshold
        return [t] if isinstance(t, int | float) else list(t)


class HLOPPlugin(Plugin):
    """Each task adds a block of lateral neurons to every circuit (``sizes[task]``); they
    learn from the layer's input while the task trains (from epoch ``start_epochs`` on);
    from task 1 on, weight updates are projected orthogonally to the merged old subspace.
    After the task's evaluation the circuits merge.

    Takes the whole ``hlop`` section (:class:`HLOPSettings`); the circuits' own settings
    (rates, iterations, ...) are given to them when the network is built."""

    name = "hlop"
    uses_circuits = True

    def __init__(self, **settings) -> None:
        self.settings = HLOPSettings(**settings)

    def check(self, run: RunState) -> None:
        names = [n for n, _ in run.model.projected_layers()]
        try:
            if self.settings.max_rows:
                per_circuit(self.settings.max_rows, names, "hlop.max_rows")
            per_circuit(self.settings.thresholds, names, "hlop.threshold")
        except ValueError as e:
            raise ConfigError(str(e)) from None
        if self.settings.auto:
            return
        sizes, tasks = self.settings.sizes, run.cfg.tasks
        require(
            len(sizes) >= tasks,
            f"hlop.sizes lists {len(sizes)} tasks but the run has {tasks}: one list per task",
        )
        dims = [m.circuit.in_features for _, m in run.model.projected_layers()]
        for k, row in enumerate(sizes[:tasks]):
            require(
                len(row) == len(dims),
                f"hlop.sizes[{k}] needs {len(dims)} values (one per circuit), got {row}",
            )
            for s, d in zip(row, dims, strict=True):
                require(
                    s <= d, f"hlop.sizes[{k}]: block of {s} rows above the layer's dimension {d}"
                )

    def block_bounds(self, run: RunState) -> list[int | None]:
        """With sizes "auto": the rows each circuit's block may keep this task (None: the
        circuit's default, :meth:`LateralCircuit.generous_block`)."""
        names = [n for n, _ in run.model.projected_layers()]
        return per_circuit(self.settings.max_rows or [None], names, "hlop.max_rows")

    def before_task(self, run: RunState) -> None:
        auto = self.settings.auto
        if auto:
            sizes = [
                c.generous_block(bound)
                for c, bound in zip(run.model.circuits(), self.block_bounds(run), strict=True)
            ]
        else:
            sizes = self.settings.sizes[run.task]
        for c in run.model.circuits():
            if auto or c.tracking:
                c.track_energy(auto)
        run.model.add_subspaces(sizes)
        for c in run.model.circuits():
            c.projecting = run.task > 0

    def before_epoch(self, run: RunState) -> None:
        learning = run.epoch >= self.settings.start_epochs
        for c in run.model.circuits():
            c.learning = learning

    def after_training(self, run: RunState) -> None:
        names = [n for n, _ in run.model.projected_layers()]
        thresholds = per_circuit(self.settings.thresholds, names, "hlop.threshold")
        for c, threshold in zip(run.model.circuits(), thresholds, strict=True):
            if self.settings.auto:
                c.fit_block(threshold)
            c.learning = False
            c.projecting = False

    def after_evaluation(self, run: RunState) -> None:
        run.circuit_blocks.append([c.rows - c.old_rows for c in run.model.circuits()])
        run.model.merge_circuits()
