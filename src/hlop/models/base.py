"""The base of the built-in spiking networks.

Every network takes one :class:`~hlop.models.settings.NetworkSettings` and derives from
:class:`SpikingNetwork`, which owns what is common: the training rule (neurons, time
layout), the projected layers and their circuits (their task schedule is
:class:`hlop.core.lifecycle.TaskLifecycle`'s), task preparation (``begin_task``), the
classifier heads and the readout.  A network only writes its layers and its ``features`` method.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from hlop.core.choices import per_circuit
from hlop.core.circuit import LateralCircuit
from hlop.core.lifecycle import check_block_sizes
from hlop.errors import ConfigError
from hlop.layers.projected import ProjectedConv2d, ProjectedLayer, ProjectedLinear
from hlop.models.gates import GateLayout
from hlop.models.settings import NetworkSettings
from hlop.spiking.fast_parts import FastParts, hooked, through
from hlop.spiking.layout import TimeLayout, time_layout
from hlop.spiking.neurons import SpikingNeuron

#: the layouts a network runs in (its neurons' layout; the projected layers take the same,
#: but for the input layer, which sees the static image outside STEPS)
NETWORK_LAYOUTS = (TimeLayout.STEPS, TimeLayout.FAST, TimeLayout.ONLINE)


class SpikingNetwork(nn.Module):
    """Base of the spiking networks.

    Subclasses build their layers with ``_neuron``, ``_linear`` and ``_conv``, then call
    ``_finish``, and implement ``features(x) -> Tensor`` returning the activity
    (time-major rows) fed to the head.  The first projected layer sees the static input
    image, which is the same at every time step: it is computed once when it can be.

    Attributes:
        settings: the :class:`~hlop.models.settings.NetworkSettings` it was built with.
        rule: the training rule (``settings.training``).
        timesteps: T, the number of time steps.
        fast: use the DSR fast path where it applies (see :mod:`hlop.spiking.neurons`).
        shared_head: one classifier for all tasks (with its own circuit) or one head per task.
        features_per_task: the features depend on the task (a method's per-task gates, HAT's):
            the scores of several heads (``forward(x, [heads])``) then take one forward per
            head instead of one pass of the body read by every head.
    """

    default_lrs: Sequence[float] = (0.01,)

    def __init__(self, settings: NetworkSettings | None, shared_head: bool) -> None:
        super().__init__()
        self.settings = settings = settings or NetworkSettings()
        self.rule = settings.rule
        self.timesteps = settings.timesteps
        self.fast = settings.fast
        self.shared_head = shared_head
        self.features_per_task = False
        self.consolidated = False  # after task 0: batch-norm statistics stay fixed
        self.heads = nn.ModuleList()
        self._time_weights = self.rule.neuron(self.timesteps, settings.neuron).time_weights()
        self._layout = TimeLayout.STEPS
        self._single_steps = False
        #: carry the fast layout in two parts (``FastParts``) where no hook expects it
        #: joined: the same values and gradients, the backward on ``B`` rows
        self.fast_in_parts = True
        #: with it, images and feature maps in the channels-last memory format (faster
        #: convolutions on CPUs; their sums in another order)
        self.channels_last = True

    def train(self, mode: bool = True) -> SpikingNetwork:
        super().train(mode)
        if mode and self.consolidated:
            for m in self.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
        return self

    # ------------------------------------------------------------------ structure
    def _neuron(self) -> SpikingNeuron:
        """A layer of the network's neurons (the training rule's kind)."""
        neuron = self.rule.neuron(self.timesteps, self.settings.neuron)
        if self.settings.compile:
            if not hasattr(neuron, "compiled"):
                raise ConfigError(
                    f"compile fuses the spike loops of DSR neurons; the {self.rule.name} "
                    "rule's neurons have none to fuse: leave compile off"
                )
            neuron.compiled = True
        return neuron

    def _circuit(self, n: int) -> LateralCircuit:
        s = self.settings
        lr = s.lrs[0] if s.lrs else self.default_lrs[0]  # final rates are set by _finish
        return LateralCircuit.from_settings(n, dataclasses.replace(s.circuit, lr=lr))

    def _layer_settings(self) -> dict[str, Any]:
        o = self.settings
        return {
            "feedback": o.feedback,
            "proj_type": o.proj_type,
            "timesteps": self.timesteps,
            "hebbian_on": o.hebbian_source,
            "rate_weights": self._time_weights,
            "precision": o.precision,
        }

    def _linear(self, n_in: int, n_out: int, circuit: bool, bias: bool = False) -> ProjectedLinear:
        """A projected linear layer (with a lateral circuit if ``circuit``)."""
        return ProjectedLinear(
            n_in,
            n_out,
            bias=bias,
            circuit=self._circuit(n_in) if circuit else None,
            **self._layer_settings(),
        )

    def _conv(self, c_in: int, c_out: int, k: int, stride: int, padding: int) -> ProjectedConv2d:
        """A projected convolution with a circuit, no bias, Kaiming-normal (fan_out) init."""
        conv = ProjectedConv2d(
            c_in,
            c_out,
            k,
            stride,
            padding,
            bias=False,
            circuit=self._circuit(c_in * k * k),
            hebbian_stride=self.settings.hebbian_stride,
            **self._layer_settings(),
        )
        nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
        return conv

    def _make_head(self, in_features: int, num_classes: int) -> ProjectedLinear:
        """A classifier head: shared (a circuit, no bias) or per task (bias, no circuit);
        initialised N(0, 0.01), bias 0."""
        shared = self.shared_head
        head = self._linear(in_features, num_classes, circuit=shared, bias=not shared)
        nn.init.normal_(head.weight, 0.0, 0.01)
        if head.bias is not None:
            nn.init.zeros_(head.bias)
        return head

    def _finish(self, input_layer: ProjectedLayer, readout_neuron: SpikingNeuron) -> None:
        """Call once every layer is built: names, readout, circuit learning rates."""
        self._input_layer = [input_layer]  # a list: not registered twice as a submodule
        self._readout_neuron = [readout_neuron]
        readout_neuron.readout = True
        self._name_layers()
        layers = self.projected_layers()
        lrs = self.settings.lrs or self.default_lrs
        rates = per_circuit(lrs, [n for n, _ in layers], "hlop.lrs")
        for (_, m), lr in zip(layers, rates, strict=True):
            m.circuit.lr = lr
        self.set_layout(TimeLayout.STEPS)

    def _name_layers(self) -> None:
        for name, m in self.named_modules():
            if isinstance(m, ProjectedLayer):
                m.name = name
                if m.circuit is not None:
                    m.circuit.name = name

    def projected_layers(self) -> list[tuple[str, ProjectedLayer]]:
        """The layers whose weight updates are projected (those with a circuit), in order."""
        layers = [
            (n, m)
            for n, m in self.named_modules()
            if isinstance(m, ProjectedLayer) and m.circuit is not None
        ]
        # body first, then the heads (registered first by the base class)
        return sorted(layers, key=lambda item: item[0].startswith("heads."))

    def circuits(self) -> list[LateralCircuit]:
        return [m.circuit for _, m in self.projected_layers()]

    def circuit_inputs(self) -> list[tuple[ProjectedLayer, Callable[[Tensor], Tensor]]]:
        """Every projected layer (:meth:`projected_layers` order) with the function giving
        the activity rows its circuit reads of the layer's input (``layer.presynaptic``)."""
        return [(m, m.presynaptic) for _, m in self.projected_layers()]

    def neurons(self) -> list[SpikingNeuron]:
        return [m for m in self.modules() if isinstance(m, SpikingNeuron)]

    def add_subspaces(self, sizes: Sequence[int]) -> list[int]:
        """Add one block to every circuit (sizes in :meth:`projected_layers` order)."""
        layers = self.projected_layers()
        sizes = check_block_sizes(sizes, [n for n, _ in layers])
        return [m.circuit.add_subspace(n) for (_, m), n in zip(layers, sizes, strict=True)]

    def circuit_sizes(self) -> list[int]:
        return [c.rows for c in self.circuits()]

    # ------------------------------------------------------------------ tasks
    @property
    def task_heads(self) -> bool:
        """Whether each task has its own head (task-incremental); a task-agnostic evaluation
        reads the scores of every seen head at once (``forward(x, [heads])``)."""
        return not self.shared_head

    def add_head(self, num_classes: int) -> None:
        """Add a classifier head for a new task (multi-head networks only)."""
        if self.shared_head:
            raise RuntimeError("this network has one shared head; add_head is for multi-head")
        head = self._make_head(self.head_features, num_classes)
        self.heads.append(head.to(next(self.parameters()).device))
        self._name_layers()
        head.layout = self._layout

    def begin_task(self, task: int, num_classes: int) -> None:
        """Prepare task ``task``: add its head (multi-head); from task 1 on, freeze all but the
        weight matrices (biases, thresholds, batch-norm affine and statistics).  In task 0
        everything trains except thresholds built with ``train_vth=False``."""
        if not self.shared_head:
            while len(self.heads) <= task:
                self.add_head(num_classes)
        self.consolidated = task > 0
        fixed = {id(n.vth) for n in self.neurons() if hasattr(n, "vth") and not n.train_vth}
        for p in self.parameters():
            p.requires_grad_(p.dim() > 1 or (task == 0 and id(p) not in fixed))
        self.train(self.training)

    def trainable_parameters(self) -> list[nn.Parameter]:
        """The parameters that the current task trains (see :meth:`begin_task`)."""
        return [p for p in self.parameters() if p.requires_grad]

    # ------------------------------------------------------------------ time layout
    def batchnorm_training(self) -> bool:
        """True while a batch-norm layer takes batch statistics (task 0 in training mode)."""
        return any(
            isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training for m in self.modules()
        )

    def spiking_input_projection(self) -> bool:
        """True while a spiking circuit projects activity rows (input mode)."""
        return any(
            m.circuit.spiking and m.proj_type == "input" and m.circuit.projecting
            for _, m in self.projected_layers()
        )

    @property
    def layout(self) -> TimeLayout:
        """The time layout, ``STEPS``, ``FAST`` (DSR fast path) or ``ONLINE`` (OTTT)."""
        return self._layout

    def set_layout(self, layout: str | TimeLayout) -> None:
        """Set the time layout of every neuron and projected layer (validated by each); the
        input layer sees the static image (``STATIC``) outside ``STEPS``."""
        layout = time_layout(layout, NETWORK_LAYOUTS, type(self).__name__)
        for m in self.neurons():
            m.layout = layout
        for _, m in self.named_modules():
            if isinstance(m, ProjectedLayer):
                static = layout != TimeLayout.STEPS and m is self._input_layer[0]
                m.layout = TimeLayout.STATIC if static else layout
        self._layout = layout

    def reset_state(self) -> None:
        """Clear the state that neurons keep between single-step calls."""
        for m in self.neurons():
            m.reset()

    @contextlib.contextmanager
    def single_steps(self) -> Iterator[None]:
        """Within the block, each forward call simulates one time step (OTTT training) and
        returns that step's scores; neuron state is reset on entry and on exit."""
        self.reset_state()
        self._single_steps = True
        try:
            yield
        finally:
            self._single_steps = False
            self.reset_state()

    def encode(self, x: Tensor) -> Tensor:
        """Input layer on the static image: once (fast path, single step) or at every step."""
        layer = self._input_layer[0]
        t = self.timesteps
        if self._layout == TimeLayout.ONLINE:
            return layer(x)
        if self._layout == TimeLayout.FAST:
            if self.fast_in_parts and not hooked(self):  # in two parts (hlop.spiking.fast_parts)
                if self.channels_last and x.dim() == 4:
                    x = x.contiguous(memory_format=torch.channels_last)
                return FastParts.repeated(layer(x), t)
            return layer(x).repeat(t + 1, *([1] * (x.dim() - 1)))
        return layer(x.repeat(t, *([1] * (x.dim() - 1))))

    def forward(self, x: Tensor, task: int | Tensor | Sequence[int] = 0) -> Tensor:
        """Class scores (B x classes): the readout rate of the per-step head outputs, or,
        inside :meth:`single_steps`, the scores of one time step.

        ``task``: the task whose head reads out; one task id per sample (a tensor; joint
        training: each sample through its own task's head, scores of a narrower head padded
        with -inf); or a list of tasks (a head per task only): the scores of each of their
        heads, concatenated in that order (B x the sum of their classes; a task-agnostic
        evaluation), from one pass of the body unless ``features_per_task``."""
        if isinstance(task, list | tuple):
            if self.shared_head:
                raise ValueError("one shared head: there are no heads of tasks to concatenate")
            if self.features_per_task:  # each head on the features of its own task
                return torch.cat([self(x, t) for t in task], dim=1)
        layout = TimeLayout.ONLINE if self._single_steps else self.rule.layout(self)
        if layout != self._layout:
            self.set_layout(layout)
        h = self.features(x)
        if isinstance(h, FastParts):  # the readout of the fast layout is the rate slice

            def read(j: int, mine: Tensor | None) -> Tensor:
                part = h if mine is None else h.select(mine)
                return self.heads[j].forward_parts(part, steps=False)

            return self._task_scores(read, task, h.rate)

        def read(j: int, mine: Tensor | None) -> Tensor:
            if mine is None:
                return self._readout(self.heads[j](h), x.shape[0])
            # rows are time-major slices of the B samples (T, T + 1 or [spikes; traces])
            rows = mine.repeat(h.shape[0] // x.shape[0])
            return self._readout(self.heads[j](h[rows]), int(mine.sum()))

        return self._task_scores(read, task, h)

    def _task_scores(
        self,
        read: Callable[[int, Tensor | None], Tensor],
        task: int | Tensor | Sequence[int],
        like: Tensor,
    ) -> Tensor:
        """Scores from ``read(head, samples)`` (``samples`` a mask, or ``None`` for all): one
        head for all samples, each sample through its task's head (scores of a narrower head
        padded with -inf; ``like``: a tensor of the scores' device and dtype), or every head
        of a list of tasks for all samples, concatenated."""
        if isinstance(task, list | tuple):
            return torch.cat([read(j, None) for j in task], dim=1)
        if self.shared_head or not isinstance(task, Tensor):
            return read(0 if self.shared_head else task, None)
        task = task.to(like.device)
        present = task.unique().tolist()
        width = max(self.heads[j].out_features for j in present)
        scores = like.new_full((task.shape[0], width), float("-inf"))
        for j in present:
            mine = task == j
            out = read(j, mine)
            scores[mine, : out.shape[1]] = out
        return scores

    def _readout(self, out: Tensor, batch: int) -> Tensor:
        """Scores of ``batch`` samples from a head's output rows in the current layout."""
        if self._layout == TimeLayout.ONLINE:
            return out
        if self._layout == TimeLayout.FAST:
            return out[-batch:]  # the rate slice is already the wfr readout
        return self._readout_neuron[0].rate(out)

    def features(self, x: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def gated_layers(self) -> GateLayout:
        """The neuron layers a task's gates scale and the weight layers between them (the
        classifier heads left out: one per task).  A network that HAT should run on says
        where they are."""
        raise ConfigError(f"{type(self).__name__} does not say where its gated layers are")

    @classmethod
    def for_benchmark(
        cls,
        input_shape: Sequence[int],
        num_classes: int,
        shared_head: bool,
        settings: NetworkSettings,
        **architecture: Any,
    ) -> SpikingNetwork:  # pragma: no cover - abstract
        """The network for inputs of ``input_shape`` and ``num_classes`` classes per task;
        ``architecture``: the run's architecture keys (``hidden``, ``width``, ``stem``), of
        which each network takes those it has."""
        raise NotImplementedError


def conv_norm(
    layer: ProjectedLayer, norm: nn.BatchNorm2d, h: Tensor | FastParts
) -> Tensor | FastParts:
    """``norm(layer(h))``; in two parts (``FastParts``) with ``norm`` fixed, the per-step
    part in one pass: the normalisation folded into the layer's weights (the same function,
    its products rounded in another order)."""
    if not isinstance(h, FastParts) or norm.training or norm.running_var is None:
        return through(norm, through(layer, h))
    with torch.no_grad():
        scale = torch.rsqrt(norm.running_var + norm.eps)
        if norm.weight is not None:
            scale = scale * norm.weight
        shift = -norm.running_mean * scale
        if norm.bias is not None:
            shift = shift + norm.bias
    out = layer.forward_parts(h, affine=(scale, shift))
    return FastParts(out.steps, norm(out.rate), out.constant)


def init_batchnorm(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def require_images(model: str, shape: Sequence[int]) -> None:
    """Refuse inputs that are not images ``(C, H, W)``, naming ``model``."""
    if len(shape) != 3:
        raise ConfigError(
            f"model {model} needs images (C, H, W); the benchmark's inputs are {tuple(shape)}"
        )
