"""Spiking networks assembled from projected layers, lateral circuits and spiking neurons.

Every network takes one :class:`NetworkOptions` and derives from :class:`SpikingNetwork`,
which owns what is common: the training rule (neurons, time layout), the projected
layers and their circuits, the size schedule operations (``add_subspaces``,
``merge_circuits``), task preparation (``begin_task``), the classifier heads and the
readout.  A network only writes its layers and its ``features`` method.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from .choices import (
    FEEDBACK_RULES,
    HEBBIAN_SOURCES,
    HEBBIAN_STRIDES,
    PRECISIONS,
    PROJ_TYPES,
    STEMS,
    per_circuit,
)
from .circuit import LateralCircuit
from .errors import ConfigError
from .neurons import SpikingNeuron
from .projection import ProjectedConv2d, ProjectedLayer, ProjectedLinear
from .split import Split, hooked, through
from .training import TrainingRule, training_rule

# network time layout -> layout of the projected layers that see spikes
_LAYER_LAYOUTS = {"steps": "steps", "fast": "fast", "online": "trace"}


@dataclass(frozen=True)
class CircuitOptions:
    """The lateral circuits of a network.

    Attributes:
        lrs: Hebbian learning rate: one value for every circuit, or one per circuit in
            network order (body first, then the shared head); None: the network's default.
        iterations, spiking, spike_scale, spike_steps: see :class:`LateralCircuit`.
        precision: of the old block's products (:class:`LateralCircuit`); None: the
            network's precision.
        hebbian_on: ``"wfr"`` or ``"spikes"``; None: the training rule's default.
        hebbian_stride: convolutions learn from patches at their own stride (``"layer"``)
            or at stride 1 (``"one"``, the authors' code).
    """

    lrs: Sequence[float] | None = None
    iterations: int = 5
    spiking: bool = False
    spike_scale: float = 20.0
    spike_steps: int = 1000
    hebbian_on: str | None = None
    hebbian_stride: str = "layer"
    precision: str | None = None

    def __post_init__(self) -> None:
        if self.hebbian_on is not None and self.hebbian_on not in HEBBIAN_SOURCES:
            raise ValueError(f"hebbian_on must be one of {HEBBIAN_SOURCES}: {self.hebbian_on!r}")
        if self.hebbian_stride not in HEBBIAN_STRIDES:
            raise ValueError(f"hebbian_stride must be one of {HEBBIAN_STRIDES}")


@dataclass(frozen=True)
class NetworkOptions:
    """Everything a network is built with besides its shape (one object for every network).

    Attributes:
        timesteps: T.
        training: the training method: a :class:`TrainingRule` or its name.
        neuron: keyword arguments of the rule's neurons (DSR: ``leaky, vth, vth_bound, tau,
            dt, alpha, train_vth``; BPTT/OTTT: ``tau, vth, surrogate_alpha``).
        feedback: ``"backprop"``, ``"feedback-alignment"`` or ``"sign-symmetric"``.
        proj_type: ``"input"`` or ``"weight"`` projection.
        circuit: the lateral circuits.
        fast: use the DSR fast path where it applies.
        compile: fuse the DSR neurons' spike loops with ``torch.compile`` (meant for GPUs;
            ``torch.compile`` is not loaded otherwise).
        precision: ``"fp32"`` or ``"bf16"``: the dtype of the projected layers' weight
            products (see :class:`~hlop.projection.ProjectedLayer`).
    """

    timesteps: int = 20
    training: TrainingRule | str = "dsr"
    neuron: Mapping[str, Any] = field(default_factory=dict)
    feedback: str = "backprop"
    proj_type: str = "input"
    circuit: CircuitOptions = field(default_factory=CircuitOptions)
    fast: bool = True
    precision: str = "fp32"
    compile: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.training, str):
            object.__setattr__(self, "training", training_rule(self.training))
        if self.feedback not in FEEDBACK_RULES:
            raise ValueError(f"feedback must be one of {FEEDBACK_RULES}, got {self.feedback!r}")
        if self.proj_type not in PROJ_TYPES:
            raise ValueError(f"proj_type must be one of {PROJ_TYPES}, got {self.proj_type!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {tuple(PRECISIONS)}: {self.precision!r}")

    @property
    def rule(self) -> TrainingRule:
        return self.training  # type: ignore[return-value]

    @property
    def hebbian_on(self) -> str:
        return self.circuit.hebbian_on or self.rule.hebbian_on


@dataclass(frozen=True)
class Gate:
    """A neuron layer whose spikes a task-specific gate can scale (HAT): its name in the
    network, the layer, its units (or channels)."""

    name: str
    neuron: SpikingNeuron
    units: int


@dataclass(frozen=True)
class GatedWeight:
    """A weight layer between gates: the gates whose spikes it reads (none: the network's
    input) and the gates that read its output (through batch norm, pooling, the residual
    stream); its output unit ``j`` is used by a task if any of those gates uses ``j``."""

    name: str
    layer: nn.Module
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]


@dataclass(frozen=True)
class GateLayout:
    """Where a network's gates are, and which gates each weight layer connects
    (:meth:`SpikingNetwork.gated_layers`)."""

    gates: list[Gate]
    weights: list[GatedWeight]


class SpikingNetwork(nn.Module):
    """Base of the spiking networks.

    Subclasses build their layers with :meth:`_neuron`, :meth:`_linear` and :meth:`_conv`,
    then call :meth:`_finish`, and implement ``features(x) -> Tensor`` returning the activity
    (time-major rows) fed to the head.  The first projected layer sees the static input
    image, which is the same at every time step: it is computed once when it can be.

    Attributes:
        options: the :class:`NetworkOptions` it was built with.
        rule: the training rule (``options.training``).
        timesteps: T.
        fast: use the DSR fast path where it applies (see :mod:`hlop.neurons`).
        shared_head: one classifier for all tasks (with its own circuit) or one head per task.
    """

    default_lrs: Sequence[float] = (0.01,)

    def __init__(self, options: NetworkOptions | None, shared_head: bool) -> None:
        super().__init__()
        self.options = options = options or NetworkOptions()
        self.rule = options.rule
        self.timesteps = options.timesteps
        self.fast = options.fast
        self.shared_head = shared_head
        self.consolidated = False  # after task 0: batch-norm statistics stay fixed
        self.heads = nn.ModuleList()
        self._time_weights = self.rule.neuron(self.timesteps, options.neuron).time_weights()
        self._layout = "steps"
        self._single_steps = False
        #: carry the fast layout in two parts (:mod:`hlop.split`) where no hook expects it
        #: joined: the same values and gradients, the backward on ``B`` rows
        self.split_fast = True
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
        neuron = self.rule.neuron(self.timesteps, self.options.neuron)
        if self.options.compile:
            if not hasattr(neuron, "compiled"):
                raise ConfigError(
                    f"compile fuses the spike loops of DSR neurons; the {self.rule.name} "
                    "rule's neurons have none to fuse: leave compile off"
                )
            neuron.compiled = True
        return neuron

    def _circuit(self, n: int) -> LateralCircuit:
        c = self.options.circuit
        return LateralCircuit(
            n,
            c.lrs[0] if c.lrs else self.default_lrs[0],  # final rates are set by _finish
            iterations=c.iterations,
            spiking=c.spiking,
            spike_scale=c.spike_scale,
            spike_steps=c.spike_steps,
            precision=c.precision or self.options.precision,
        )

    def _layer_options(self) -> dict[str, Any]:
        o = self.options
        return {
            "feedback": o.feedback,
            "proj_type": o.proj_type,
            "timesteps": self.timesteps,
            "hebbian_on": o.hebbian_on,
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
            **self._layer_options(),
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
            hebbian_stride=self.options.circuit.hebbian_stride,
            **self._layer_options(),
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
        lrs = self.options.circuit.lrs or self.default_lrs
        rates = per_circuit(lrs, [n for n, _ in layers], "hlop.lrs")
        for (_, m), lr in zip(layers, rates, strict=True):
            m.circuit.lr = lr
        self.set_layout("steps")

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

    def neurons(self) -> list[SpikingNeuron]:
        return [m for m in self.modules() if isinstance(m, SpikingNeuron)]

    def add_subspaces(self, sizes: Sequence[int]) -> list[int]:
        """Add one block to every circuit (sizes in :meth:`projected_layers` order)."""
        layers = self.projected_layers()
        if len(sizes) != len(layers):
            names = [n for n, _ in layers]
            raise ValueError(f"expected {len(layers)} block sizes (for {names}), got {len(sizes)}")
        for (name, _), n in zip(layers, sizes, strict=True):
            if isinstance(n, bool) or not isinstance(n, int) or n < 0:
                raise ValueError(f"block size for layer '{name}' must be an integer >= 0: {n!r}")
        return [m.circuit.add_subspace(n) for (_, m), n in zip(layers, sizes, strict=True)]

    def merge_circuits(self) -> None:
        for c in self.circuits():
            c.merge()

    def circuit_sizes(self) -> list[int]:
        return [c.rows for c in self.circuits()]

    # ------------------------------------------------------------------ tasks
    def add_head(self, num_classes: int) -> None:
        """Add a classifier head for a new task (multi-head networks only)."""
        if self.shared_head:
            raise RuntimeError("this network has one shared head; add_head is for multi-head")
        head = self._make_head(self.head_features, num_classes)
        self.heads.append(head.to(next(self.parameters()).device))
        self._name_layers()
        head.layout = _LAYER_LAYOUTS[self._layout]

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
    def layout(self) -> str:
        """The time layout: ``"steps"``, ``"fast"`` (DSR fast path) or ``"online"`` (OTTT)."""
        return self._layout

    def set_layout(self, layout: str) -> None:
        """Set the time layout of every neuron and projected layer (validated by each)."""
        if layout not in _LAYER_LAYOUTS:
            raise ValueError(f"layout must be one of {tuple(_LAYER_LAYOUTS)}, got {layout!r}")
        for m in self.neurons():
            m.layout = layout
        for _, m in self.named_modules():
            if isinstance(m, ProjectedLayer):
                static = layout != "steps" and m is self._input_layer[0]
                m.layout = "static" if static else _LAYER_LAYOUTS[layout]
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
        if self._layout == "online":
            return layer(x)
        if self._layout == "fast":
            if self.split_fast and not hooked(self):  # in two parts (hlop.split)
                if self.channels_last and x.dim() == 4:
                    x = x.contiguous(memory_format=torch.channels_last)
                return Split.repeated(layer(x), t)
            return layer(x).repeat(t + 1, *([1] * (x.dim() - 1)))
        return layer(x.repeat(t, *([1] * (x.dim() - 1))))

    def forward(self, x: Tensor, task: int | Tensor = 0) -> Tensor:
        """Class scores (B x classes): the readout rate of the per-step head outputs, or,
        inside :meth:`single_steps`, the scores of one time step.

        ``task``: the task whose head reads out, or one task id per sample (joint training:
        each sample through its own task's head; scores of a narrower head are padded with
        -inf)."""
        layout = "online" if self._single_steps else self.rule.layout(self)
        if layout != self._layout:
            self.set_layout(layout)
        h = self.features(x)
        if isinstance(h, Split):  # the readout of the fast layout is the rate slice

            def read(j: int, mine: Tensor | None) -> Tensor:
                part = h if mine is None else h.select(mine)
                return self.heads[j].forward_split(part, steps=False)

            return self._task_scores(read, task, h.rate)

        def read(j: int, mine: Tensor | None) -> Tensor:
            if mine is None:
                return self._readout(self.heads[j](h), x.shape[0])
            # rows are time-major slices of the B samples (T, T + 1 or [spikes; traces])
            rows = mine.repeat(h.shape[0] // x.shape[0])
            return self._readout(self.heads[j](h[rows]), int(mine.sum()))

        return self._task_scores(read, task, h)

    def _task_scores(
        self, read: Callable[[int, Tensor | None], Tensor], task: int | Tensor, like: Tensor
    ) -> Tensor:
        """Scores from ``read(head, samples)`` (``samples`` a mask, or ``None`` for all): one
        head for all samples, or each sample through its task's head, scores of a narrower head
        padded with -inf (``like``: a tensor of the scores' device and dtype)."""
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
        if self._layout == "online":
            return out
        if self._layout == "fast":
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
    def from_config(
        cls,
        cfg: Any,
        input_shape: Sequence[int],
        num_classes: int,
        shared_head: bool,
        options: NetworkOptions,
    ) -> SpikingNetwork:  # pragma: no cover - abstract
        """The network of a run (``cfg``: a :class:`hlop.config.Config`; its own keys) for
        inputs of ``input_shape`` and ``num_classes`` classes per task."""
        raise NotImplementedError


class SpikingMLP(SpikingNetwork):
    """The permuted-MNIST network: ``784 - 800 - 800 - 10``, no biases, one shared head.

    Lateral circuits on the inputs of fc1, fc2 and the shared classifier (default learning
    rates 0.001, 0.01, 0.01 as in the paper).
    """

    default_lrs = (0.001, 0.01, 0.01)

    def __init__(
        self,
        in_features: int = 784,
        hidden: int = 800,
        num_classes: int = 10,
        options: NetworkOptions | None = None,
    ) -> None:
        super().__init__(options, shared_head=True)
        self.fc1 = self._linear(in_features, hidden, circuit=True)
        self.sn1 = self._neuron()
        self.fc2 = self._linear(hidden, hidden, circuit=True)
        self.sn2 = self._neuron()
        self.head_features = hidden
        self.heads.append(self._linear(hidden, num_classes, circuit=True))  # PyTorch's init
        self._finish(self.fc1, self.sn2)

    @classmethod
    def from_config(cls, cfg, input_shape, num_classes, shared_head, options) -> SpikingMLP:
        """``hidden`` units; one shared head only."""
        if not shared_head:
            raise ConfigError("the mlp model has one shared head; set shared_head=true")
        return cls(math.prod(input_shape), cfg.hidden, num_classes, options)

    def features(self, x: Tensor) -> Tensor:
        h = self.encode(x.flatten(1))
        return through(self.sn2, through(self.fc2, through(self.sn1, h)))

    def gated_layers(self) -> GateLayout:
        gates = [
            Gate("sn1", self.sn1, self.fc1.out_features),
            Gate("sn2", self.sn2, self.fc2.out_features),
        ]
        weights = [GatedWeight("fc1", self.fc1, (), (0,)), GatedWeight("fc2", self.fc2, (0,), (1,))]
        return GateLayout(gates, weights)


def _init_batchnorm(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class SpikingCNN(SpikingNetwork):
    """The CIFAR-100 network: three ``conv3x3 - BN - LIF - avgpool2`` stages (64, 128, 256).

    Lateral circuits on the three convolutions (N = C_in * 9).  Heads:
    ``Linear(256 * (size / 8)^2, classes)`` per task (multi-head), or one shared head with
    its own circuit; initialised N(0, 0.01).  Batch norm statistics are taken over all
    ``T * B`` rows.
    """

    def __init__(
        self,
        in_channels: int = 3,
        image_size: int = 32,
        num_classes: int = 10,
        *,
        channels: Sequence[int] = (64, 128, 256),
        shared_head: bool = False,
        options: NetworkOptions | None = None,
    ) -> None:
        super().__init__(options, shared_head)
        c_in, convs, bns, sns = in_channels, [], [], []
        for c in channels:
            convs.append(self._conv(c_in, c, 3, 1, 1))
            bns.append(nn.BatchNorm2d(c))
            sns.append(self._neuron())
            c_in = c
        self.convs, self.bns, self.sns = (
            nn.ModuleList(convs),
            nn.ModuleList(bns),
            nn.ModuleList(sns),
        )
        self.pool = nn.AvgPool2d(2)
        self.head_features = channels[-1] * (image_size // 2 ** len(channels)) ** 2
        _init_batchnorm(self)
        if shared_head:
            self.heads.append(self._make_head(self.head_features, num_classes))
        self._finish(self.convs[0], self.sns[-1])
        if not shared_head:
            self.add_head(num_classes)

    @classmethod
    def from_config(cls, cfg, input_shape, num_classes, shared_head, options) -> SpikingCNN:
        """Square images ``(C, H, H)``."""
        _require_images("cnn", input_shape)
        return cls(
            input_shape[0], input_shape[1], num_classes, shared_head=shared_head, options=options
        )

    def features(self, x: Tensor) -> Tensor:
        h = self.encode(x)
        for i in range(len(self.convs)):
            if i:
                h = _conv_norm(self.convs[i], self.bns[i], h)
            else:
                h = through(self.bns[i], h)
            h = through(self.pool, through(self.sns[i], h))
        return h.map(_flatten) if isinstance(h, Split) else h.flatten(1)

    def gated_layers(self) -> GateLayout:
        gates = [
            Gate(f"sns.{i}", sn, conv.out_channels)
            for i, (sn, conv) in enumerate(zip(self.sns, self.convs, strict=True))
        ]
        weights = [
            GatedWeight(f"convs.{i}", conv, (i - 1,) if i else (), (i,))
            for i, conv in enumerate(self.convs)
        ]
        return GateLayout(gates, weights)


class PreActBlock(nn.Module):
    """Pre-activation spiking residual block::

    out = LIF(BN1(x)); identity = x, or a 1x1 strided conv of out
    return conv2(LIF(BN2(conv1(out)))) + identity
    """

    def __init__(self, net: SpikingNetwork, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.bn1, self.sn1 = nn.BatchNorm2d(c_in), net._neuron()
        self.conv1 = net._conv(c_in, c_out, 3, stride, 1)
        self.bn2, self.sn2 = nn.BatchNorm2d(c_out), net._neuron()
        self.conv2 = net._conv(c_out, c_out, 3, 1, 1)
        # registered after conv1 and conv2: circuits in the order [conv1, conv2, shortcut]
        self.shortcut = (
            net._conv(c_in, c_out, 1, stride, 0) if stride != 1 or c_in != c_out else None
        )

    def forward(self, x: Tensor) -> Tensor:
        out = through(self.sn1, through(self.bn1, x))
        identity = x if self.shortcut is None else through(self.shortcut, out)
        h = through(self.conv2, through(self.sn2, _conv_norm(self.conv1, self.bn2, out)))
        return h.add_(identity) if isinstance(h, Split) else h + identity


class SpikingResNet18(SpikingNetwork):
    """Pre-activation spiking ResNet-18 (blocks [2, 2, 2, 2], widths w, 2w, 4w, 8w).

    Stem: 3x3 stride 1 (``stem="3x3"``, 32x32 inputs) or 5x5 stride 2 (``"5x5"``,
    miniImageNet).  Head: BN, LIF, global average pooling, ``Linear(8w, classes)`` per task
    (or one shared head with its own circuit: the domain-incremental setting), initialised
    N(0, 0.01).  A lateral circuit on every convolution: stem, then each block's conv1,
    conv2 and shortcut.
    """

    def __init__(
        self,
        num_classes: int = 10,
        *,
        width: int = 20,
        stem: str = "3x3",
        in_channels: int = 3,
        shared_head: bool = False,
        options: NetworkOptions | None = None,
    ) -> None:
        super().__init__(options, shared_head)
        if stem not in STEMS:
            raise ValueError(f"stem must be one of {STEMS}, got {stem!r}")
        k, s = (3, 1) if stem == "3x3" else (5, 2)
        self.stem = self._conv(in_channels, width, k, s, k // 2)
        blocks, c_in = [], width
        for stage, c in enumerate((width, 2 * width, 4 * width, 8 * width)):
            for b in range(2):
                stride = 2 if stage > 0 and b == 0 else 1
                blocks.append(PreActBlock(self, c_in, c, stride))
                c_in = c
        self.blocks = nn.Sequential(*blocks)
        self.bn, self.sn = nn.BatchNorm2d(c_in), self._neuron()
        self.head_features = c_in
        _init_batchnorm(self)
        if shared_head:
            self.heads.append(self._make_head(c_in, num_classes))
        self._finish(self.stem, self.sn)
        if not shared_head:
            self.add_head(num_classes)

    @classmethod
    def from_config(cls, cfg, input_shape, num_classes, shared_head, options) -> SpikingResNet18:
        """Images ``(C, H, W)``; base ``width`` and ``stem``."""
        _require_images("resnet18", input_shape)
        return cls(
            num_classes,
            width=cfg.width,
            stem=cfg.stem,
            in_channels=input_shape[0],
            shared_head=shared_head,
            options=options,
        )

    def features(self, x: Tensor) -> Tensor:
        h = through(self.sn, through(self.bn, self.blocks(self.encode(x))))
        return h.map(_spatial_mean) if isinstance(h, Split) else _spatial_mean(h)

    def gated_layers(self) -> GateLayout:
        """Pre-activation blocks: conv1 reads sn1 and feeds sn2; conv2 (and the shortcut)
        write the residual stream, which every later block's sn1 reads until a shortcut
        starts a new stream, and the final sn reads the last one."""
        gates: list[Gate] = []
        weights: list[GatedWeight] = []

        def gate(name: str, neuron: SpikingNeuron, units: int) -> int:
            gates.append(Gate(name, neuron, units))
            return len(gates) - 1

        def close(writers, readers) -> None:
            weights.extend(GatedWeight(n, m, i, tuple(readers)) for n, m, i in writers)

        writers: list[tuple[str, nn.Module, tuple[int, ...]]] = [("stem", self.stem, ())]
        readers: list[int] = []
        for b, block in enumerate(self.blocks):
            g1 = gate(f"blocks.{b}.sn1", block.sn1, block.bn1.num_features)
            g2 = gate(f"blocks.{b}.sn2", block.sn2, block.bn2.num_features)
            readers.append(g1)
            weights.append(GatedWeight(f"blocks.{b}.conv1", block.conv1, (g1,), (g2,)))
            if block.shortcut is not None:  # the block's output is a new stream
                close(writers, readers)
                writers, readers = [(f"blocks.{b}.shortcut", block.shortcut, (g1,))], []
            writers.append((f"blocks.{b}.conv2", block.conv2, (g2,)))
        readers.append(gate("sn", self.sn, self.bn.num_features))
        close(writers, readers)
        return GateLayout(gates, weights)


def _conv_norm(layer: ProjectedLayer, norm: nn.BatchNorm2d, h: Tensor | Split) -> Tensor | Split:
    """``norm(layer(h))``; in two parts (:mod:`hlop.split`) with ``norm`` fixed, the per-step
    part in one pass: the normalisation folded into the layer's weights (the same function,
    its products rounded in another order)."""
    if not isinstance(h, Split) or norm.training or norm.running_var is None:
        return through(norm, through(layer, h))
    with torch.no_grad():
        scale = torch.rsqrt(norm.running_var + norm.eps)
        if norm.weight is not None:
            scale = scale * norm.weight
        shift = -norm.running_mean * scale
        if norm.bias is not None:
            shift = shift + norm.bias
    out = layer.forward_split(h, affine=(scale, shift))
    return Split(out.steps, norm(out.rate), out.constant)


def _flatten(x: Tensor) -> Tensor:
    return x.flatten(1)


def _spatial_mean(x: Tensor) -> Tensor:
    return x.mean(dim=(2, 3))


def _require_images(model: str, shape: Sequence[int]) -> None:
    if len(shape) != 3:
        raise ConfigError(
            f"model {model} needs images (C, H, W); the benchmark's inputs are {tuple(shape)}"
        )


#: The networks by configuration name (``model``), and the one list of their names; each
#: builds itself from a run's configuration (:meth:`SpikingNetwork.from_config`).
NETWORKS: dict[str, type[SpikingNetwork]] = {
    "mlp": SpikingMLP,
    "cnn": SpikingCNN,
    "resnet18": SpikingResNet18,
}
