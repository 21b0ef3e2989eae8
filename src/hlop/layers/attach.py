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

Each chosen ``nn.Linear`` / ``nn.Conv2d`` gets a :class:`~hlop.core.circuit.LateralCircuit`
of dimension N (Linear: ``in_features``; Conv2d: ``C_in k_h k_w``, its unfolded patches with
its own kernel, stride, padding and dilation), plus one for a bias that trains: a bias is a
weight on a constant input of 1, so the circuit sees each input row with a 1 appended and
the update ``[dW, db]`` is projected as one matrix (old tasks' responses do not move through
the bias either).

Time layouts (:class:`~hlop.spiking.layout.TimeLayout`): a layer may be called once per time
step (``ONLINE``: ``[B, ...]``), once per batch with every step (``STEPS``: multi-step
``[T, B, ...]`` as SpikingJelly's ``step_mode="m"`` layers and Norse take it, or flattened
to ``[T * B, ...]`` by a container), or on one sample (unbatched).  A Linear takes any
leading dimensions (``[..., in_features]``); a Conv2d ``(C, H, W)``, ``(B, C, H, W)`` or
``(T, B, C, H, W)``; any other shape is an error naming the layer.  Every row (every step of
every sample) is one row of the circuit's activity.

The task schedule (blocks, sizes from the data, fitting, projection on and off, merging) is
:class:`hlop.core.lifecycle.TaskLifecycle`, the one the command line's HLOP method uses.

Two hooks per layer:

- a forward pre-hook: while the model trains, the circuit learns from the layer's input
  (Oja's subspace rule, :meth:`.LateralCircuit.hebbian_update`), before the layer computes;
- a hook on the weight's gradient: from task 1 on, the gradient is projected in weight mode,
  ``grad_W <- grad_W (I - H_old^T H_old)`` (:func:`hlop.core.projection.project_weight_grad`,
  as the built-in projected layers do; the input mode for non-spiking circuits), before any
  optimiser sees it (with a bias: ``[grad_W, grad_b]`` once both are accumulated).

Hebbian modes (``hebbian``):

- ``"per-call"`` (default): one update at every call of the layer, from that call's rows.  A
  spiking loop that calls the layer once per time step learns from per-step activity.
- ``"averaged"``: the inputs of the training calls between two backward passes are averaged
  (uniform weights) and the circuit learns once, when backward reaches the layer's weight:
  once per optimiser step from the firing rate of the inputs.  A multi-step call
  (``[T, B, ...]``: a Conv2d's 5-d input, or a Linear with SpikingJelly's
  ``step_mode == "m"``) counts as its T steps: its rate over time.

Projected gradients keep old tasks' responses only when the optimiser's step is a linear
combination of them: plain SGD.  Adam's elementwise scaling, weight decay, Nesterov or a
momentum buffer carried over from an earlier task move the weights in the old subspace.
:meth:`.HLOP.protect` makes any optimiser exact: after each ``optimizer.step()`` the change of
every protected weight (and bias) is projected, ``W <- W_before + dW (I - H_old^T H_old)``,
for a copy of those parameters and one projection per step.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Sequence

import torch
from torch import Tensor, nn

from hlop.core.choices import per_circuit
from hlop.core.circuit import DEFAULTS, USER_MODEL_THRESHOLD, LateralCircuit
from hlop.core.lifecycle import TaskLifecycle
from hlop.core.projection import project_weight_grad
from hlop.core.subspace import measure
from hlop.layers.attached import HEBBIAN_MODES, SUPPORTED, AttachedLayer, check_layer, plain_sgd
from hlop.layers.unprotected import Fixing, check_choice, find_unprotected, message


class HLOP:
    """Lateral circuits on the ``nn.Linear`` and ``nn.Conv2d`` layers of any model.

    Args:
        model: the network (left unchanged but for hooks; :meth:`detach` removes them).
        layers: which layers: None (every ``nn.Linear`` and ``nn.Conv2d``, in
            ``named_modules`` order), a sequence of module names, or a type or tuple of
            types (every such module).  Unsupported layers are refused with a message.
        sizes: the size schedule used by :meth:`begin_task` without arguments: ``"auto"``
            (the default: found from each task's activity, see ``threshold``), one list of
            block sizes per task (``[[80, 200, 100], [70, 70, 70], ...]``; the last repeats
            for later tasks), or one number per layer (the same block every task).
        threshold: with ``sizes="auto"``, the share of a task's activity energy that each
            circuit's old rows and new block together hold: a generous block
            (``max_rows``) learns while the task trains, then
            :meth:`LateralCircuit.fit_block` keeps the fewest orthonormal directions of its
            span that reach it (default 0.95,
            :data:`~hlop.core.circuit.USER_MODEL_THRESHOLD`); one value or one per layer.
        max_rows: with ``sizes="auto"``, the most rows a layer's block may keep per task:
            one value or one per layer; None: every row still free (the threshold alone
            decides; a smaller bound is cheaper: the block's Hebbian updates cost its rows).
        lrs: Hebbian learning rate, one value for every layer or one per layer.
        iterations, spiking, spike_scale, spike_steps: see :class:`LateralCircuit`.
        hebbian: ``"per-call"`` or ``"averaged"`` (see the module docstring).
        protect_bias: protect the biases that train with their weights (the circuit sees
            the input with a constant 1 appended); False leaves biases free.
        unprotected: what to do with the trainable parameters and norm statistics that no
            circuit protects (:mod:`hlop.layers.unprotected`; listed in ``unprotected_found``
            and named in a warning): ``"fix"`` (the default) stops them training from the
            second task on and norms keep the first task's statistics; ``"train"`` lets
            them train; None leaves them to the caller, without a warning.

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
        sizes: str | Sequence[int] | Sequence[Sequence[int]] | None = "auto",
        threshold: float | Sequence[float] = USER_MODEL_THRESHOLD,
        max_rows: int | Sequence[int] | None = None,
        lrs: float | Sequence[float] = DEFAULTS.lr,
        iterations: int = DEFAULTS.iterations,
        spiking: bool = DEFAULTS.spiking,
        spike_scale: float = DEFAULTS.spike_scale,
        spike_steps: int = DEFAULTS.spike_steps,
        hebbian: str = "per-call",
        protect_bias: bool = True,
        unprotected: str | None = "fix",
    ) -> None:
        if unprotected is not None:
            check_choice(unprotected, "hlop.HLOP: unprotected")
        if hebbian not in HEBBIAN_MODES:
            raise ValueError(f"hebbian must be one of {HEBBIAN_MODES}, got {hebbian!r}")
        self.model, self.hebbian = model, hebbian
        chosen = self._choose(model, layers)
        if not chosen:
            raise ValueError("hlop.HLOP: no nn.Linear or nn.Conv2d layer to attach to")
        self.names = [name for name, _ in chosen]
        rates = per_circuit([lrs] if isinstance(lrs, int | float) else lrs, self.names, "lrs")
        self._layers: dict[str, AttachedLayer] = {}
        for (name, layer), lr in zip(chosen, rates, strict=True):
            n = layer.in_features if isinstance(layer, nn.Linear) else (layer.weight[0].numel())
            bias = protect_bias and layer.bias is not None and layer.bias.requires_grad
            circuit = LateralCircuit(
                n + bias,
                lr,
                iterations=iterations,
                spiking=spiking,
                spike_scale=spike_scale,
                spike_steps=spike_steps,
                name=name,
            ).to(layer.weight.device)
            self._layers[name] = AttachedLayer(name, layer, circuit, bias)
        if isinstance(sizes, Sequence) and not isinstance(sizes, str):
            sizes = list(sizes)
            if sizes and not isinstance(sizes[0], Sequence):
                sizes = [sizes]  # one number per layer: the same block every task
        #: the task schedule of the circuits (:class:`hlop.core.lifecycle.TaskLifecycle`)
        self.lifecycle = TaskLifecycle(
            self.circuits.values(),
            self.names,
            sizes=sizes,
            threshold=threshold,
            # None: the whole free dimension (the threshold alone sizes each block)
            max_rows=[c.in_features for c in self.circuits.values()]
            if max_rows is None
            else max_rows,
        )
        self.threshold = threshold
        self._optimizers: list = []  # hook handles of protect()
        self._attach()
        #: what no circuit protects (:class:`hlop.layers.unprotected.Unprotected`)
        self.unprotected_found = find_unprotected(
            model, [p for a in self._layers.values() for p in a.params()]
        )
        self.unprotected = unprotected
        self._fixing = Fixing()
        if unprotected is not None and self.unprotected_found:
            warnings.warn(
                "hlop.HLOP: "
                + message(self.unprotected_found, unprotected, "hlop.HLOP(..., unprotected={!r})"),
                stacklevel=2,
            )

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
            check_layer(name, layer)
        return chosen

    @property
    def layers(self) -> dict[str, nn.Module]:
        """The protected layers by name, in circuit order."""
        return {name: a.layer for name, a in self._layers.items()}

    @property
    def circuits(self) -> dict[str, LateralCircuit]:
        return {name: a.circuit for name, a in self._layers.items()}

    def rows(self, name: str, x: Tensor) -> Tensor:
        """The activity rows the circuit of layer ``name`` reads of the layer's input ``x``
        (``AttachedLayer.rows``: every step of every sample, a convolution's unfolded
        patches, the constant 1 of a protected bias)."""
        if name not in self._layers:
            raise KeyError(f"hlop.HLOP: no circuit on a layer named {name!r}")
        return self._layers[name].rows(x)

    # ------------------------------------------------------------------ hooks
    def _attach(self) -> None:
        for a in self._layers.values():
            a.handles = [a.layer.register_forward_pre_hook(self._forward_hook(a))]
            if a.bias:  # [grad_W, grad_b] projected together once both are accumulated
                a.handles += [
                    p.register_post_accumulate_grad_hook(self._accumulated_hook(a, key))
                    for p, key in zip(a.params(), ("weight", "bias"), strict=True)
                ]
            else:
                a.handles.append(a.layer.weight.register_hook(self._grad_hook(a)))

    def _forward_hook(self, a: AttachedLayer):
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
                if a.multi_step(x):  # T steps in one call: their mean, T calls' weight
                    a.check(x)
                    steps, x = x.shape[0], x.mean(0)
                else:
                    steps = 1
                a.pending = x * steps if a.pending is None else a.pending.add_(x, alpha=steps)
                a.calls += steps

        return hook

    def _accumulated_hook(self, a: AttachedLayer, key: str):
        def hook(param: Tensor) -> None:
            a.accumulated.add(key)
            if len(a.accumulated) < 2:
                return
            a.accumulated.clear()
            self._flush(a)
            c = a.circuit
            if c.projecting and c.old_rows:
                with torch.no_grad():
                    a.project_in_place([p.grad for p in a.params()])

        return hook

    def _grad_hook(self, a: AttachedLayer):
        def hook(grad: Tensor) -> Tensor:
            self._flush(a)
            c = a.circuit
            if c.projecting and c.old_rows:
                return project_weight_grad(grad, c.project)
            return grad

        return hook

    def _flush(self, a: AttachedLayer) -> None:
        if a.pending is None:
            return
        x, a.pending, calls = a.pending, None, a.calls
        a.calls = 0
        if a.circuit.learning:
            with torch.no_grad():
                a.circuit.hebbian_update(a.rows(x / calls))

    def detach(self) -> None:
        """Remove every hook (the optimisers' of :meth:`protect` too): the model behaves as if
        HLOP had never been attached."""
        for a in self._layers.values():
            for h in a.handles:
                h.remove()
            a.handles, a.pending, a.calls = [], None, 0
            a.accumulated.clear()
        for h in self._optimizers:
            h.remove()
        self._optimizers = []
        self._fixing.release()

    # ------------------------------------------------------------------ optimisers
    def protect(self, optimizer: torch.optim.Optimizer, updates: str = "auto") -> bool:
        """Keep old tasks' responses under any optimiser: after each ``optimizer.step()``,
        the change of every protected weight (and bias) is projected with the old subspace
        (while a task from the second on trains).

        ``updates``: ``"auto"`` (on unless ``optimizer`` is plain SGD: no momentum, weight
        decay or Nesterov, whose step is already the projected gradient), ``"on"`` or
        ``"off"``.  Returns whether the updates are projected.  Costs a copy of the
        protected parameters and one projection per step."""
        if updates not in ("auto", "on", "off"):
            raise ValueError(f"updates must be 'auto', 'on' or 'off', got {updates!r}")
        if updates == "auto":
            updates = "off" if plain_sgd(optimizer) else "on"
        if updates == "off":
            return False
        before: dict[str, list[Tensor]] = {}

        def snapshot(opt, args, kwargs) -> None:
            before.clear()
            for name, a in self._layers.items():
                if a.circuit.projecting and a.circuit.old_rows:
                    before[name] = [p.detach().clone() for p in a.params()]

        @torch.no_grad()
        def project(opt, args, kwargs) -> None:
            for name, old in before.items():
                a = self._layers[name]
                params = a.params()
                change = [p - o for p, o in zip(params, old, strict=True)]
                a.project_in_place(change)
                for p, o, d in zip(params, old, change, strict=True):
                    p.copy_(o + d)
            before.clear()

        self._optimizers += [
            optimizer.register_step_pre_hook(snapshot),
            optimizer.register_step_post_hook(project),
        ]
        return True

    # ------------------------------------------------------------------ tasks
    def begin_task(self, sizes: Sequence[int] | None = None) -> list[int]:
        """Add a learning block to every circuit (``sizes``, one per layer, or the schedule's
        entry for this task); from the second task on, gradients are projected with the old
        subspace.  Returns the rows added (a circuit never exceeds its dimension).  From the
        second task on, with ``unprotected="fix"``, what no circuit protects stops training."""
        if self.unprotected == "fix" and self.task >= 1:
            self._fixing.fix(self.model, self.unprotected_found)
        try:
            return self.lifecycle.begin(sizes)
        except RuntimeError as e:
            raise RuntimeError(f"begin_task: {e}") from None

    def end_task(self) -> None:
        """Stop learning and merge every circuit's blocks into its old subspace (with
        ``sizes="auto"`` each block first keeps the rows its task's activity needs)."""
        for a in self._layers.values():
            self._flush(a)
        self.lifecycle.end()

    # the lifecycle's state, read as HLOP's
    @property
    def task(self) -> int:
        """The number of tasks begun."""
        return self.lifecycle.task

    @property
    def in_task(self) -> bool:
        """Between :meth:`begin_task` and :meth:`end_task`."""
        return self.lifecycle.in_task

    @property
    def fitting(self) -> bool:
        """The current task's blocks are fitted at :meth:`end_task`."""
        return self.lifecycle.fitting

    @property
    def auto(self) -> bool:
        return self.lifecycle.auto

    @property
    def sizes(self) -> list[list[int]] | None:
        """The size schedule (None with ``"auto"`` or none given)."""
        return self.lifecycle.schedule

    @property
    def thresholds(self) -> list[float]:
        return self.lifecycle.thresholds

    @property
    def max_rows(self) -> list[int]:
        """The most rows each layer's block may keep per task with ``"auto"``."""
        return list(self.lifecycle.max_rows)

    @property
    def chosen_sizes(self) -> list[list[int]]:
        """The rows each finished task added to each circuit (after fitting)."""
        return self.lifecycle.kept

    # ------------------------------------------------------------------ diagnostics
    @torch.no_grad()
    def diagnostics(
        self,
        inputs: Tensor | Iterable,
        forward: Callable[[nn.Module, object], object] | None = None,
    ) -> dict[str, dict]:
        """How well each circuit holds the activity that ``inputs`` cause, per layer:
        ``rows``, ``old_rows``, ``orthonormality_error``, ``captured`` (the share of the
        activity energy in the circuit's subspace), ``optimal`` (the most any subspace of as
        many dimensions holds; reported from 4 activity rows per lateral neuron on) and
        ``activity_rows`` (:func:`hlop.core.subspace.measure`).

        ``inputs``: a batch, or an iterable of batches (a data loader's inputs);
        ``forward(model, batch)`` runs the model on a batch (default ``model(batch)``; a
        spiking model that needs its state reset, e.g. SpikingJelly's
        ``functional.reset_net``, does it here).  The model runs in evaluation mode without
        gradients: the circuits do not learn and nothing else changes."""
        batches = [inputs] if isinstance(inputs, Tensor) else inputs
        run = forward or (lambda model, batch: model(batch))
        covs: dict[str, Tensor] = {}
        counts = dict.fromkeys(self._layers, 0)

        def capture(a: AttachedLayer):
            def hook(module: nn.Module, args: tuple) -> None:
                rows = a.rows(args[0].detach()).double()
                cov = rows.t() @ rows
                covs[a.name] = cov if a.name not in covs else covs[a.name].add_(cov)
                counts[a.name] += rows.shape[0]

            return hook

        handles = [a.layer.register_forward_pre_hook(capture(a)) for a in self._layers.values()]
        was_training = self.model.training
        self.model.eval()
        try:
            for batch in batches:
                run(self.model, batch)
        finally:
            for h in handles:
                h.remove()
            self.model.train(was_training)
        out = {}
        for name, a in self._layers.items():
            c = a.circuit
            if name not in covs:
                raise ValueError(f"hlop.HLOP.diagnostics: layer '{name}' was not called")
            out[name] = measure(c.weight, c.old_rows, covs[name], counts[name])
        return out

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Tensor]:
        """The circuits' state (weights, momentum, block sizes), the task count and whether a
        task is in progress."""
        state = {
            "task": torch.tensor(self.task),
            "in_task": torch.tensor(self.in_task),
            "fitting": torch.tensor(self.fitting),
        }
        for name, a in self._layers.items():
            for key, value in a.circuit.state_dict().items():
                state[f"{name}.{key}"] = value
        return state

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        """Restore :meth:`state_dict` (circuits learning and projecting as when saved)."""
        expected = {"task", "in_task"} | {
            f"{n}.{k}"
            for n, a in self._layers.items()
            for k in a.circuit.state_dict()
            if k not in ("energy", "block_energy")
        }
        optional = {"fitting"} | {
            f"{n}.{k}" for n in self._layers for k in ("energy", "block_energy")
        }
        missing, extra = sorted(expected - set(state)), sorted(set(state) - expected - optional)
        if missing or extra:
            raise ValueError(f"hlop.HLOP state does not match: missing {missing}, extra {extra}")
        lifecycle = self.lifecycle
        lifecycle.task, lifecycle.in_task = int(state["task"]), bool(state["in_task"])
        lifecycle.fitting = bool(state.get("fitting", False))
        for name, a in self._layers.items():
            prefix = f"{name}."
            a.circuit.load_state_dict(
                {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
            )
            a.pending, a.calls = None, 0
            a.circuit.tracking = self.fitting
            a.circuit.learning = self.in_task
            a.circuit.projecting = self.in_task and a.circuit.old_rows > 0

    def __repr__(self) -> str:
        body = "\n".join(f"  {n}: {a.circuit.extra_repr()}" for n, a in self._layers.items())
        return f"HLOP(hebbian={self.hebbian!r}, task={self.task},\n{body}\n)"
