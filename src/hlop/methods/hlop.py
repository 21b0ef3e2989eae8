"""HLOP: Hebbian learning based orthogonal projection (the paper's method)."""

from __future__ import annotations

from dataclasses import dataclass, field

from hlop.core.choices import HEBBIAN_SOURCES, HEBBIAN_STRIDES, PRECISIONS, PROJ_TYPES
from hlop.core.circuit import DEFAULT_THRESHOLD, DEFAULTS, USER_MODEL_THRESHOLD, CircuitSettings
from hlop.core.lifecycle import TaskLifecycle, check_block_sizes
from hlop.core.settings import Settings, require, require_choice
from hlop.errors import CircuitError, ConfigError
from hlop.layers.attach import HLOP
from hlop.loop.state import Plugin, RunState
from hlop.models.external import fit_preset_lists


@dataclass
class HLOPSettings(Settings):
    """The ``hlop`` section: the lateral circuits (read when the network is built, for
    every method that uses circuits) and HLOP's schedule of them."""

    # the circuits' settings (hlop.core.circuit.CircuitSettings: defaults and checks); lrs:
    # one rate for every circuit or one per circuit (the paper's PMNIST rates by default)
    lrs: list[float] = field(default_factory=lambda: [0.001, 0.01, 0.01])
    iterations: int = DEFAULTS.iterations
    # block sizes added to each circuit before each task (one list per task), or "auto": a
    # block of max_rows learns while the task trains and keeps the fewest rows that bring
    # what the circuit holds to `threshold` of the task's activity energy
    sizes: list[list[int]] | str = field(default_factory=list)
    # one value for every circuit, or one per circuit in network order (GPM-style
    # [0.9, 0.95, 0.97]: deeper layers keep more of their activity); None: the network's
    # default, 0.9 for the built-in networks, 0.95 for a network of your own (--model)
    threshold: float | list[float] | None = None
    max_rows: list[int] = field(
        default_factory=list
    )  # auto: per task; []: N / 4, at least min(N, 128)
    start_epochs: int = 0  # epochs of each task before the circuits start learning
    hebbian_on: str = "wfr"  # what circuits learn from: "wfr" (rate over time) or "spikes"
    # convolutions learn from patches at their own stride ("layer") or at stride 1 ("one",
    # as the authors' code does); projection always uses the layer's own patches
    hebbian_stride: str = "layer"
    spiking: bool = DEFAULTS.spiking
    spike_scale: float = DEFAULTS.spike_scale
    spike_steps: int = DEFAULTS.spike_steps
    proj_type: str = "input"
    # the old block's products (residual of the update, projection): "auto" (as the
    # network's precision), "fp32" or "bf16"; H and its update stay fp32
    precision: str = "auto"

    def check(self) -> None:
        for lr in self.lrs or [DEFAULTS.lr]:  # the circuits check their own settings
            try:
                CircuitSettings(
                    lr=lr,
                    iterations=self.iterations,
                    spiking=self.spiking,
                    spike_scale=self.spike_scale,
                    spike_steps=self.spike_steps,
                )
            except CircuitError as e:
                key = "lrs (each rate)" if str(e).startswith("lr ") else ""
                raise ConfigError(f"hlop.{key}{str(e)[2:] if key else e}") from None
        require(self.start_epochs >= 0, f"hlop.start_epochs must be >= 0: {self.start_epochs}")
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
            self.sizes == "auto" or not isinstance(self.sizes, str),
            f"hlop.sizes must be auto or one list of block sizes per task, got {self.sizes!r}",
        )
        require(
            all(0 < t <= 1 for t in self.thresholds),
            f"hlop.threshold must be in (0, 1] (one value or one per circuit), got "
            f"{self.threshold}",
        )
        require(all(m >= 1 for m in self.max_rows), f"hlop.max_rows must be >= 1: {self.max_rows}")

    @property
    def auto(self) -> bool:
        return self.sizes == "auto"

    @property
    def thresholds(self) -> list[float]:
        t = DEFAULT_THRESHOLD if self.threshold is None else self.threshold
        return [t] if isinstance(t, int | float) else list(t)


class HLOPPlugin(Plugin):
    """HLOP's task lifecycle (:class:`hlop.core.lifecycle.TaskLifecycle`) on the model's
    circuits: each task adds a block of lateral neurons to every circuit (``sizes[task]``,
    or sizes found from the data); they learn from the layer's input while the task trains
    (from epoch ``start_epochs`` on); from task 1 on, weight updates are projected
    orthogonally to the merged old subspace.  After the task's training the blocks are
    fitted (``"auto"``) and merged.

    Takes the whole ``hlop`` section (:class:`HLOPSettings`); the circuits' own settings
    (rates, iterations, ...) are given to them when the network is built."""

    name = "hlop"
    uses_circuits = True

    def __init__(self, **settings) -> None:
        self.settings = HLOPSettings(**settings)
        self.lifecycle: TaskLifecycle | None = None

    def _lifecycle(self, run: RunState) -> TaskLifecycle:
        """The lifecycle of the model's circuits (made once; it keeps no state a resumed run
        would need: the circuits carry theirs)."""
        if self.lifecycle is None:
            s = self.settings
            names = [n for n, _ in run.model.projected_layers()]
            self.lifecycle = TaskLifecycle(
                run.model.circuits(),
                names,
                sizes="auto" if s.auto else None,
                threshold=s.thresholds,
                max_rows=s.max_rows or self.default_bound(run),
                prefix="hlop.",
            )
        return self.lifecycle

    @staticmethod
    def default_bound(run: RunState) -> list[int] | None:
        """The most rows a block keeps when ``hlop.max_rows`` is empty: for a network of the
        user's own, every row still free (as :class:`hlop.HLOP`); for the built-in
        networks, the circuits' own bound (:attr:`.LateralCircuit.block_bound`)."""
        if getattr(run.model, "external", False):
            return [c.in_features for c in run.model.circuits()]
        return None

    def _attach(self, model) -> None:
        """Circuits on every ``nn.Linear`` / ``nn.Conv2d`` of a network of the user's own
        (:class:`hlop.HLOP`'s hooks).  A per-circuit list of the preset (written for the
        built-in network) that does not fit its circuits gives way to a value for every
        circuit, with a warning that says how to set it."""
        s = self.settings
        names = [n for n, _ in HLOP._choose(model.net, None)]
        sizes = []
        if not s.auto and any(len(row) != len(names) for row in s.sizes):
            sizes.append("hlop.sizes (the built-in network's schedule) -> auto")
            s.sizes = "auto"
        defaults = {"lrs": [DEFAULTS.lr], "threshold": USER_MODEL_THRESHOLD, "max_rows": []}
        fit_preset_lists(model, names, s, "hlop", defaults, also=sizes)
        if s.threshold is None:  # hlop.HLOP's default for any network
            s.threshold = USER_MODEL_THRESHOLD
        model.attach_circuits(
            lambda net: HLOP(
                net,
                sizes=None,
                lrs=s.lrs,
                iterations=s.iterations,
                spiking=s.spiking,
                spike_scale=s.spike_scale,
                spike_steps=s.spike_steps,
                unprotected=None,  # the run's model handles them, for every method
            )
        )

    def check(self, run: RunState) -> None:
        if getattr(run.model, "external", False):  # a network of the user's own: hooks
            self._attach(run.model)
        try:
            lifecycle = self._lifecycle(run)
        except CircuitError as e:  # a setting of the run's hlop section
            raise ConfigError(str(e)) from None
        if self.settings.auto:
            return
        sizes, tasks = self.settings.sizes, run.tasks
        require(
            len(sizes) >= tasks,
            f"hlop.sizes lists {len(sizes)} tasks but the run has {tasks}: one list per task",
        )
        dims = [c.in_features for c in lifecycle.circuits]
        for k, row in enumerate(sizes[:tasks]):
            try:
                check_block_sizes(row, lifecycle.names, dims, key=f"hlop.sizes[{k}]")
            except CircuitError as e:
                raise ConfigError(str(e)) from None

    def before_task(self, run: RunState) -> None:
        lifecycle = self._lifecycle(run)
        lifecycle.begin(None if self.settings.auto else self.settings.sizes[run.task])

    def before_epoch(self, run: RunState) -> None:
        self._lifecycle(run).set_learning(run.epoch >= self.settings.start_epochs)
        if getattr(run.model, "external", False):  # any optimiser keeps old responses
            run.model.protect(run.optimizer)

    def after_training(self, run: RunState) -> None:
        # fit as the settings say: a step resumed inside did not run this begin
        run.circuit_blocks.append(self._lifecycle(run).end(fit=self.settings.auto))
