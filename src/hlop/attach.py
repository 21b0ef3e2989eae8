"""HLOP on any PyTorch model: lateral circuits attached to its layers with hooks.

::

    hl = hlop.HLOP(model, sizes=[[80, 200, 100], [70, 70, 70]], lrs=[0.001, 0.01, 0.01])
    for task, loader in enumerate(tasks):
        hl.begin_task()                      # add this task's block; project from task 1 on
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        for x, y in loader:
            opt.zero_grad()
            F.cross_entropy(model(x), y).backward()   # gradients projected here
            opt.step()
        hl.end_task()                        # merge the block into the old subspace

Each chosen ``nn.Linear`` / ``nn.Conv2d`` gets a :class:`~hlop.circuit.LateralCircuit` of
dimension N (Linear: ``in_features``; Conv2d: ``C_in k_h k_w``, its unfolded patches with
its own kernel, stride, padding and dilation).  Two hooks per layer:

- a forward pre-hook: while the model trains, the circuit learns from the layer's input
  (Oja's subspace rule, :meth:`LateralCircuit.hebbian_update`), before the layer computes;
- a hook on the weight's gradient: from task 1 on, the gradient is projected in weight mode,
  ``grad_W <- grad_W (I - H_old^T H_old)`` (:func:`hlop.projection.project_weight_grad`,
  the function the built-in projected layers use), before any optimiser sees it.

Hebbian modes (``hebbian``):

- ``"per-call"`` (default): one update at every call of the layer, from that call's rows.  A
  spiking loop that calls the layer once per time step learns from per-step activity.
- ``"averaged"``: the inputs of the training calls between two backward passes are averaged
  (uniform weights) and the circuit learns once, when backward reaches the layer's weight:
  once per optimiser step from the firing rate of the inputs.

The weight-mode projection equals the input mode (``G^T (X - X H^T H)``) for non-spiking
circuits; with spiking lateral neurons (quantised responses) it is the cheap approximation.
The update stays orthogonal to the old subspace for optimisers whose step is a linear
combination of projected gradients (SGD, with momentum, made per task); Adam's elementwise
scaling and weight decay are not projected.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from .choices import per_circuit
from .circuit import LateralCircuit
from .projection import project_weight_grad, unfold_patches

HEBBIAN_MODES = ("per-call", "averaged")
SUPPORTED = (nn.Linear, nn.Conv2d)


class _Attached:
    """One layer with its circuit, its hooks and (averaged mode) the pending input sum."""

    def __init__(self, name: str, layer: nn.Module, circuit: LateralCircuit) -> None:
        self.name, self.layer, self.circuit = name, layer, circuit
        self.handles: list = []
        self.pending: Tensor | None = None
        self.calls = 0

    def rows(self, x: Tensor) -> Tensor:
        """The activity rows (B' x N) the circuit learns from."""
        layer = self.layer
        if isinstance(layer, nn.Linear):
            return x.reshape(-1, layer.in_features)
        if x.dim() == 3:  # an unbatched (C, H, W) input
            x = x.unsqueeze(0)
        pad = layer._reversed_padding_repeated_twice  # F.pad order, also for padding="same"
        return unfold_patches(x, layer.kernel_size, layer.stride, tuple(pad), layer.dilation)


def _check_layer(name: str, layer: nn.Module) -> None:
    if not isinstance(layer, SUPPORTED):
        raise ValueError(
            f"hlop.HLOP: layer '{name}' is a {type(layer).__name__}; only nn.Linear and "
            "nn.Conv2d (and their subclasses) can be given lateral circuits"
        )
    if isinstance(layer, nn.Conv2d):
        if layer.groups != 1:
            raise ValueError(
                f"hlop.HLOP: layer '{name}' is a grouped convolution (groups={layer.groups}); "
                "its weight sees a different input slice per group, which one circuit cannot "
                "project: grouped and depthwise convolutions are not supported"
            )
        if layer.padding_mode != "zeros":
            raise ValueError(
                f"hlop.HLOP: layer '{name}' pads with {layer.padding_mode!r}; only zero "
                "padding is supported"
            )


class HLOP:
    """Lateral circuits on the ``nn.Linear`` and ``nn.Conv2d`` layers of any model.

    Args:
        model: the network (left unchanged but for hooks; :meth:`detach` removes them).
        layers: which layers: None (every ``nn.Linear`` and ``nn.Conv2d``, in
            ``named_modules`` order), a sequence of module names, or a type or tuple of
            types (every such module).  Unsupported layers are refused with a message.
        sizes: the size schedule used by :meth:`begin_task` without arguments: one list of
            block sizes per task (``[[80, 200, 100], [70, 70, 70], ...]``; the last repeats
            for later tasks), or one number per layer (the same block every task).
        lrs: Hebbian learning rate, one value for every layer or one per layer.
        iterations, spiking, spike_scale, spike_steps: see :class:`LateralCircuit`.
        hebbian: ``"per-call"`` or ``"averaged"`` (see the module docstring).

    Attributes:
        names: the layers' names, in circuit order.
        circuits: ``{name: LateralCircuit}``.
        task: the number of tasks begun.
        in_task: between :meth:`begin_task` and :meth:`end_task`.
    """

    def __init__(
        self,
        model: nn.Module,
        layers: Sequence[str] | type | tuple[type, ...] | None = None,
        *,
        sizes: Sequence[int] | Sequence[Sequence[int]] | None = None,
        lrs: float | Sequence[float] = 0.01,
        iterations: int = 5,
        spiking: bool = False,
        spike_scale: float = 20.0,
        spike_steps: int = 1000,
        hebbian: str = "per-call",
    ) -> None:
        if hebbian not in HEBBIAN_MODES:
            raise ValueError(f"hebbian must be one of {HEBBIAN_MODES}, got {hebbian!r}")
        self.model, self.hebbian = model, hebbian
        chosen = self._choose(model, layers)
        if not chosen:
            raise ValueError("hlop.HLOP: no nn.Linear or nn.Conv2d layer to attach to")
        self.names = [name for name, _ in chosen]
        rates = per_circuit([lrs] if isinstance(lrs, int | float) else lrs, self.names, "lrs")
        self.sizes = None if sizes is None else self._schedule(sizes)
        self.task = 0
        self.in_task = False
        self._layers: dict[str, _Attached] = {}
        for (name, layer), lr in zip(chosen, rates, strict=True):
            n = layer.in_features if isinstance(layer, nn.Linear) else (layer.weight[0].numel())
            circuit = LateralCircuit(
                n,
                lr,
                iterations=iterations,
                spiking=spiking,
                spike_scale=spike_scale,
                spike_steps=spike_steps,
                name=name,
            ).to(layer.weight.device)
            self._layers[name] = _Attached(name, layer, circuit)
        self._attach()

    # ------------------------------------------------------------------ structure
    @staticmethod
    def _choose(model: nn.Module, layers) -> list[tuple[str, nn.Module]]:
        modules = dict(model.named_modules())
        if layers is None or isinstance(layers, type | tuple):
            types = SUPPORTED if layers is None else layers
            chosen = [(n, m) for n, m in modules.items() if isinstance(m, types)]
        else:
            if isinstance(layers, str):
                layers = [layers]
            unknown = [n for n in layers if n not in modules]
            if unknown:
                raise ValueError(f"hlop.HLOP: the model has no layer named {unknown}")
            chosen = [(n, modules[n]) for n in layers]
        for name, layer in chosen:
            _check_layer(name, layer)
        return chosen

    def _schedule(self, sizes) -> list[list[int]]:
        sizes = list(sizes)
        per_task = [list(s) for s in sizes] if sizes and not isinstance(sizes[0], int) else [sizes]
        for block in per_task:
            self._check_sizes(block)
        return per_task

    def _check_sizes(self, sizes: Sequence[int]) -> None:
        if len(sizes) != len(self.names):
            raise ValueError(
                f"expected {len(self.names)} block sizes (for {self.names}), got {len(sizes)}"
            )
        for name, n in zip(self.names, sizes, strict=True):
            if isinstance(n, bool) or not isinstance(n, int) or n < 0:
                raise ValueError(f"block size for layer '{name}' must be an integer >= 0: {n!r}")

    @property
    def circuits(self) -> dict[str, LateralCircuit]:
        return {name: a.circuit for name, a in self._layers.items()}

    # ------------------------------------------------------------------ hooks
    def _attach(self) -> None:
        for a in self._layers.values():
            a.handles = [
                a.layer.register_forward_pre_hook(self._forward_hook(a)),
                a.layer.weight.register_hook(self._grad_hook(a)),
            ]

    def _forward_hook(self, a: _Attached):
        def hook(module: nn.Module, args: tuple) -> None:
            if not (module.training and a.circuit.learning):
                return
            x = args[0].detach()
            if self.hebbian == "per-call":
                with torch.no_grad():
                    a.circuit.hebbian_update(a.rows(x))
            elif torch.is_grad_enabled() and module.weight.requires_grad:
                # accumulated until backward reaches the weight (no backward: no update)
                if a.pending is not None and a.pending.shape != x.shape:
                    raise ValueError(
                        f"hlop.HLOP (averaged): layer '{a.name}' got inputs of shape "
                        f"{tuple(x.shape)} and {tuple(a.pending.shape)} before one backward"
                    )
                a.pending = x.clone() if a.pending is None else a.pending.add_(x)
                a.calls += 1

        return hook

    def _grad_hook(self, a: _Attached):
        def hook(grad: Tensor) -> Tensor:
            self._flush(a)
            c = a.circuit
            if c.projecting and c.old_rows:
                return project_weight_grad(grad, c.project)
            return grad

        return hook

    def _flush(self, a: _Attached) -> None:
        if a.pending is None:
            return
        x, a.pending, calls = a.pending, None, a.calls
        a.calls = 0
        if a.circuit.learning:
            with torch.no_grad():
                a.circuit.hebbian_update(a.rows(x / calls))

    def detach(self) -> None:
        """Remove every hook: the model behaves as if HLOP had never been attached."""
        for a in self._layers.values():
            for h in a.handles:
                h.remove()
            a.handles, a.pending, a.calls = [], None, 0

    # ------------------------------------------------------------------ tasks
    def begin_task(self, sizes: Sequence[int] | None = None) -> list[int]:
        """Add a learning block to every circuit (``sizes``, one per layer, or the schedule's
        entry for this task); from the second task on, gradients are projected with the old
        subspace.  Returns the rows added (a circuit never exceeds its dimension)."""
        if self.in_task:
            raise RuntimeError("begin_task: the previous task has not ended (call end_task)")
        if sizes is None:
            if self.sizes is None:
                raise ValueError("begin_task needs block sizes (or give HLOP a size schedule)")
            sizes = self.sizes[min(self.task, len(self.sizes) - 1)]
        sizes = list(sizes)
        self._check_sizes(sizes)
        layers = self._layers.values()
        added = [a.circuit.add_subspace(n) for a, n in zip(layers, sizes, strict=True)]
        for a in self._layers.values():
            a.circuit.learning = True
            a.circuit.projecting = a.circuit.old_rows > 0
        self.task += 1
        self.in_task = True
        return added

    def end_task(self) -> None:
        """Stop learning and merge every circuit's blocks into its old subspace."""
        for a in self._layers.values():
            self._flush(a)
            a.circuit.learning = False
            a.circuit.projecting = False
            a.circuit.merge()
        self.in_task = False

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Tensor]:
        """The circuits' state (weights, momentum, block sizes), the task count and whether a
        task is in progress."""
        state = {"task": torch.tensor(self.task), "in_task": torch.tensor(self.in_task)}
        for name, a in self._layers.items():
            for key, value in a.circuit.state_dict().items():
                state[f"{name}.{key}"] = value
        return state

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        """Restore :meth:`state_dict` (circuits learning and projecting as when saved)."""
        expected = {"task", "in_task"} | {
            f"{n}.{k}" for n, a in self._layers.items() for k in a.circuit.state_dict()
        }
        if set(state) != expected:
            missing, extra = sorted(expected - set(state)), sorted(set(state) - expected)
            raise ValueError(f"hlop.HLOP state does not match: missing {missing}, extra {extra}")
        self.task, self.in_task = int(state["task"]), bool(state["in_task"])
        for name, a in self._layers.items():
            prefix = f"{name}."
            a.circuit.load_state_dict(
                {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
            )
            a.pending, a.calls = None, 0
            a.circuit.learning = self.in_task
            a.circuit.projecting = self.in_task and a.circuit.old_rows > 0

    def __repr__(self) -> str:
        body = "\n".join(f"  {n}: {a.circuit.extra_repr()}" for n, a in self._layers.items())
        return f"HLOP(hebbian={self.hebbian!r}, task={self.task},\n{body}\n)"
