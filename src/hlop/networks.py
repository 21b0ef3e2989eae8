"""Spiking networks assembled from projected layers, lateral circuits and DSR neurons.

Every network derives from :class:`SpikingNetwork`, which owns what is common:
the time layout (per-step or DSR fast path), the list of projected layers and their
circuits, the size schedule operations (``add_subspaces``, ``merge_circuits``), the
classifier heads, and the readout.  A network only writes its layers and its
``features`` method.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from .circuit import LateralCircuit
from .neurons import DSRNeuron
from .projection import Feedback, ProjectedConv2d, ProjectedLayer, ProjectedLinear, ProjType
from .surrogate import SurrogateLIF

TRAINING_METHODS = ("dsr", "bptt", "ottt")
# network mode -> row layout of the projected layers that see spikes
LAYOUTS = {"steps": "rows", "fast": "fast", "online": "trace"}


class SpikingNetwork(nn.Module):
    """Base of the spiking networks.

    Subclasses build their layers, then call :meth:`_finish`, and implement
    ``features(x) -> Tensor`` returning the activity (time-major rows) fed to the head.
    The first projected layer sees the static input image, which is the same at every
    time step: in the fast path its product is computed once.

    Attributes:
        timesteps: T.
        training_method: ``"dsr"``, ``"bptt"`` or ``"ottt"`` (the neurons and time layout).
        fast: use the DSR fast path (see :mod:`hlop.neurons`).
        hebbian_on: what circuits learn from: ``"wfr"`` (the time aggregate) or ``"spikes"``
            (per-step activity); OTTT circuits learn from each step's spikes and traces.
        shared_head: one classifier for all tasks (with its own circuit) or one head per task.
    """

    def __init__(
        self,
        timesteps: int,
        shared_head: bool,
        feedback: Feedback,
        proj_type: ProjType,
        training: str = "dsr",
        circuit: dict | None = None,
    ):
        super().__init__()
        self.circuit_options = dict(circuit or {})
        if training not in TRAINING_METHODS:
            raise ValueError(f"training must be one of {TRAINING_METHODS}, got {training!r}")
        self.training_method = training
        self.timesteps = timesteps
        self.shared_head = shared_head
        self.feedback = feedback
        self.proj_type = proj_type
        self.fast = True
        self.hebbian_on = "wfr" if training == "dsr" else "spikes"
        self.consolidated = False  # after task 0: batch-norm statistics stay fixed
        self.heads = nn.ModuleList()

    def train(self, mode: bool = True) -> SpikingNetwork:
        super().train(mode)
        if mode and self.consolidated:
            for m in self.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
        return self

    # ------------------------------------------------------------------ structure
    def _neuron(self, **kwargs) -> DSRNeuron | SurrogateLIF:
        """A layer of the network's neurons: DSR for ``dsr``, surrogate LIF for BPTT/OTTT."""
        if self.training_method == "dsr":
            return DSRNeuron(self.timesteps, **kwargs)
        return SurrogateLIF(self.timesteps, **kwargs)

    def _finish(self, input_layer: ProjectedLayer, readout_neuron: nn.Module) -> None:
        self._input_layer = [input_layer]  # a list: not registered twice as a submodule
        self._readout_neuron = [readout_neuron]
        readout_neuron.readout = True
        self._name_layers()

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

    def neurons(self) -> list[nn.Module]:
        return [m for m in self.modules() if isinstance(m, DSRNeuron | SurrogateLIF)]

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

    # ------------------------------------------------------------------ layers
    def _circuit(self, n: int, lr: float | None) -> LateralCircuit | None:
        return None if lr is None else LateralCircuit(n, lr, **self.circuit_options)

    def _linear(
        self, n_in: int, n_out: int, lr: float | None, bias: bool = False
    ) -> ProjectedLinear:
        """A projected linear layer (with a circuit of learning rate ``lr`` unless None)."""
        return ProjectedLinear(
            n_in,
            n_out,
            bias=bias,
            circuit=self._circuit(n_in, lr),
            feedback=self.feedback,
            proj_type=self.proj_type,
        )

    def _conv(
        self, c_in: int, c_out: int, k: int, stride: int, padding: int, lr: float | None
    ) -> ProjectedConv2d:
        """A projected convolution without bias, Kaiming-normal (fan_out) initialised."""
        conv = ProjectedConv2d(
            c_in,
            c_out,
            k,
            stride,
            padding,
            bias=False,
            circuit=self._circuit(c_in * k * k, lr),
            feedback=self.feedback,
            proj_type=self.proj_type,
        )
        nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
        return conv

    def _make_head(self, in_features: int, num_classes: int, lr: float | None) -> ProjectedLinear:
        return self._linear(in_features, num_classes, lr, bias=not self.shared_head)

    def add_head(self, num_classes: int) -> None:
        """Add a classifier head for a new task (multi-head networks only)."""
        if self.shared_head:
            raise RuntimeError("this network has one shared head; add_head is for multi-head")
        head = self._make_head(self.head_features, num_classes, None)
        nn.init.normal_(head.weight, 0.0, 0.01)
        nn.init.zeros_(head.bias)
        self.heads.append(head.to(next(self.parameters()).device))
        self._name_layers()

    # ------------------------------------------------------------------ time layout
    def _mode(self, step: int | None) -> str:
        """``"online"`` (one OTTT step), ``"fast"`` (DSR fast path) or ``"steps"``."""
        if step is not None:
            if self.training_method != "ottt":
                raise ValueError("single-step forward (step=...) is for OTTT training only")
            return "online"
        if self.training_method != "dsr" or not self.fast:
            return "steps"
        if any(
            isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training for m in self.modules()
        ):
            return "steps"  # batch statistics over T*B rows: not time-aggregatable
        spiking_input_mode = any(
            m.circuit.spiking and m.proj_type == "input" and m.circuit.projecting
            for _, m in self.projected_layers()
        )
        return "steps" if spiking_input_mode else "fast"

    def _configure(self, mode: str, step: int | None) -> None:
        t = self.timesteps
        weights = self._readout_neuron[0].time_weights()
        for m in self.modules():
            if isinstance(m, DSRNeuron):
                m.fast = mode == "fast"
                m.timesteps = t
            elif isinstance(m, SurrogateLIF):
                m.online = mode == "online"
                m.step = step or 0
                m.timesteps = t
            elif isinstance(m, ProjectedLayer):
                static = mode != "steps" and m is self._input_layer[0]
                m.layout = "rows" if static else LAYOUTS[mode]
                m.timesteps = None if static else t
                m.rate_weights = weights
                m.hebbian_on = self.hebbian_on

    def encode(self, x: Tensor, mode: str) -> Tensor:
        """Input layer on the static image: once (fast path, OTTT step) or at every step."""
        layer = self._input_layer[0]
        t = self.timesteps
        if mode == "online":
            return layer(x)
        if mode == "fast":
            return layer(x).repeat(t + 1, *([1] * (x.dim() - 1)))
        return layer(x.repeat(t, *([1] * (x.dim() - 1))))

    def forward(self, x: Tensor, task: int = 0, step: int | None = None) -> Tensor:
        """Class scores (B x classes): the readout rate of the per-step head outputs.

        With ``step=t`` (OTTT training) one time step is simulated and its scores returned.
        """
        mode = self._mode(step)
        self._configure(mode, step)
        h = self.features(x, mode)
        head = self.heads[0 if self.shared_head else task]
        out = head(h)
        if mode == "online":
            return out
        if mode == "fast":
            return out[-x.shape[0] :]  # the rate slice is already the wfr readout
        return self._readout_neuron[0].rate(out)

    def features(self, x: Tensor, mode: str) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError


class SpikingMLP(SpikingNetwork):
    """The permuted-MNIST network: ``784 - 800 - 800 - 10``, no biases.

    Neurons: DSR LIF (``training="dsr"``, keyword ``neuron`` passed to :class:`DSRNeuron`)
    or surrogate-gradient LIF for ``"bptt"`` / ``"ottt"`` (to :class:`SurrogateLIF`).

    Lateral circuits on the inputs of fc1, fc2 and the shared classifier, with
    learning rates ``circuit_lrs`` (paper: 0.001, 0.01, 0.01).
    """

    def __init__(
        self,
        in_features: int = 784,
        hidden: int = 800,
        num_classes: int = 10,
        *,
        timesteps: int = 20,
        neuron: dict | None = None,
        circuit_lrs: Sequence[float] = (0.001, 0.01, 0.01),
        circuit: dict | None = None,
        feedback: Feedback = "backprop",
        proj_type: ProjType = "input",
        training: str = "dsr",
    ) -> None:
        super().__init__(timesteps, True, feedback, proj_type, training, circuit)
        if len(circuit_lrs) != 3:
            raise ValueError(f"circuit_lrs needs 3 values (fc1, fc2, head), got {circuit_lrs}")
        neuron = dict(neuron or {})
        self.fc1 = self._linear(in_features, hidden, circuit_lrs[0])
        self.sn1 = self._neuron(**neuron)
        self.fc2 = self._linear(hidden, hidden, circuit_lrs[1])
        self.sn2 = self._neuron(**neuron)
        self.head_features = hidden
        self.heads.append(self._make_head(hidden, num_classes, circuit_lrs[2]))
        self._finish(self.fc1, self.sn2)

    def features(self, x: Tensor, mode: str) -> Tensor:
        h = self.encode(x.flatten(1), mode)
        return self.sn2(self.fc2(self.sn1(h)))


def _init_batchnorm(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class SpikingCNN(SpikingNetwork):
    """The CIFAR-100 network: three ``conv3x3 - BN - LIF - avgpool2`` stages (64, 128, 256).

    Lateral circuits on the three convolutions (N = C_in * 9), learning rate ``circuit_lr``.
    Heads: ``Linear(256 * (size / 8)^2, classes)`` per task (multi-head), or one shared head
    with its own circuit.  Batch norm statistics are taken over all ``T * B`` rows.
    """

    def __init__(
        self,
        in_channels: int = 3,
        image_size: int = 32,
        num_classes: int = 10,
        *,
        channels: Sequence[int] = (64, 128, 256),
        timesteps: int = 20,
        neuron: dict | None = None,
        circuit_lr: float = 0.01,
        circuit: dict | None = None,
        feedback: Feedback = "backprop",
        proj_type: ProjType = "input",
        training: str = "dsr",
        shared_head: bool = False,
    ) -> None:
        super().__init__(timesteps, shared_head, feedback, proj_type, training, circuit)
        neuron = dict(neuron or {})
        c_in, convs, bns, sns = in_channels, [], [], []
        for c in channels:
            convs.append(self._conv(c_in, c, 3, 1, 1, circuit_lr))
            bns.append(nn.BatchNorm2d(c))
            sns.append(self._neuron(**neuron))
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
            self.heads.append(self._make_head(self.head_features, num_classes, circuit_lr))
        self._finish(self.convs[0], self.sns[-1])
        if not shared_head:
            self.add_head(num_classes)

    def features(self, x: Tensor, mode: str) -> Tensor:
        h = self.encode(x, mode)
        for i in range(len(self.convs)):
            if i:
                h = self.convs[i](h)
            h = self.pool(self.sns[i](self.bns[i](h)))
        return h.flatten(1)


class PreActBlock(nn.Module):
    """Pre-activation spiking residual block::

    out = LIF(BN1(x)); identity = x, or a 1x1 strided conv of out
    return conv2(LIF(BN2(conv1(out)))) + identity
    """

    def __init__(self, net: SpikingNetwork, c_in: int, c_out: int, stride: int, lr, neuron):
        super().__init__()
        self.bn1, self.sn1 = nn.BatchNorm2d(c_in), net._neuron(**neuron)
        self.conv1 = net._conv(c_in, c_out, 3, stride, 1, lr)
        self.bn2, self.sn2 = nn.BatchNorm2d(c_out), net._neuron(**neuron)
        self.conv2 = net._conv(c_out, c_out, 3, 1, 1, lr)
        # registered after conv1 and conv2: circuits in the order [conv1, conv2, shortcut]
        self.shortcut = (
            net._conv(c_in, c_out, 1, stride, 0, lr) if stride != 1 or c_in != c_out else None
        )

    def forward(self, x: Tensor) -> Tensor:
        out = self.sn1(self.bn1(x))
        identity = x if self.shortcut is None else self.shortcut(out)
        return self.conv2(self.sn2(self.bn2(self.conv1(out)))) + identity


class SpikingResNet18(SpikingNetwork):
    """Pre-activation spiking ResNet-18 (blocks [2, 2, 2, 2], widths w, 2w, 4w, 8w).

    Stem: 3x3 stride 1 (``stem="3x3"``, 32x32 inputs) or 5x5 stride 2 (``"5x5"``,
    miniImageNet).  Head: BN, LIF, global average pooling, ``Linear(8w, classes)`` per task
    (or one shared head with its own circuit: the domain-incremental setting).  A lateral
    circuit on every convolution: stem, then each block's conv1, conv2 and shortcut.
    """

    def __init__(
        self,
        num_classes: int = 10,
        *,
        width: int = 20,
        stem: str = "3x3",
        in_channels: int = 3,
        timesteps: int = 20,
        neuron: dict | None = None,
        circuit_lr: float = 0.01,
        circuit: dict | None = None,
        feedback: Feedback = "backprop",
        proj_type: ProjType = "input",
        training: str = "dsr",
        shared_head: bool = False,
    ) -> None:
        super().__init__(timesteps, shared_head, feedback, proj_type, training, circuit)
        if stem not in ("3x3", "5x5"):
            raise ValueError(f"stem must be '3x3' or '5x5', got {stem!r}")
        neuron = dict(neuron or {})
        k, s = (3, 1) if stem == "3x3" else (5, 2)
        self.stem = self._conv(in_channels, width, k, s, k // 2, circuit_lr)
        blocks, c_in = [], width
        for stage, c in enumerate((width, 2 * width, 4 * width, 8 * width)):
            for b in range(2):
                stride = 2 if stage > 0 and b == 0 else 1
                blocks.append(PreActBlock(self, c_in, c, stride, circuit_lr, neuron))
                c_in = c
        self.blocks = nn.Sequential(*blocks)
        self.bn, self.sn = nn.BatchNorm2d(c_in), self._neuron(**neuron)
        self.head_features = c_in
        _init_batchnorm(self)
        if shared_head:
            self.heads.append(self._make_head(c_in, num_classes, circuit_lr))
        self._finish(self.stem, self.sn)
        if not shared_head:
            self.add_head(num_classes)

    def features(self, x: Tensor, mode: str) -> Tensor:
        h = self.blocks(self.encode(x, mode))
        return self.sn(self.bn(h)).mean(dim=(2, 3))


def as_during_task(model: SpikingNetwork, sizes: Sequence[Sequence[int]]) -> SpikingNetwork:
    """Put the circuits in their state during the last task of ``sizes`` (for benchmarks and
    tests): every earlier block added and merged, the last one added; circuits learning and,
    after task 0, projecting."""
    for k, block in enumerate(sizes):
        if k:
            model.merge_circuits()
        model.add_subspaces(list(block))
    for c in model.circuits():
        c.learning = True
        c.projecting = len(sizes) > 1
    return model
