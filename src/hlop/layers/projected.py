"""Projected layers: the forward is unchanged, the weight gradient is orthogonalised.

For ``y = x W^T`` every training rule updates ``dW ∝ -G^T a`` with ``a`` the
presynaptic activity.  A projected layer computes its weight gradient from the
projection of that activity onto the orthogonal complement of its lateral
circuit's old subspace::

    input mode:   grad_W = G^T (X - X H^T H)                (activity rows projected)
    weight mode:  grad_W = (G^T X) (I - H^T H)              (flattened gradient projected)

A convolution's presynaptic activity is each unfolded input patch (C_in k k values,
with the layer's own kernel, stride, padding and dilation).  The gradient passed to
earlier layers is ``G B`` with ``B = W`` (backprop), a fixed random matrix
(feedback alignment) or ``sign(W) * scale`` (sign symmetry); projection never
changes it.

Time layouts (:class:`~hlop.spiking.layout.TimeLayout`): ``STATIC`` and ``STEPS`` (ordinary
rows); ``FAST``, the DSR fast path (see
:mod:`hlop.spiking.neurons`): ``T + 1`` slices of which only the last, the rate slice,
carries gradient, so the backward and the projection use ``B`` rows instead of
``T * B``; ``ONLINE`` (OTTT): the input stacks ``[spikes; traces]``, the forward
uses the spikes and the weight update the (projected) traces.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hlop.core.choices import (
    FEEDBACK_RULES,
    HEBBIAN_SOURCES,
    HEBBIAN_STRIDES,
    PRECISIONS,
    PROJ_TYPES,
    Feedback,
    HebbianSource,
    ProjType,
)
from hlop.core.circuit import LateralCircuit
from hlop.core.precision import product
from hlop.core.projection import project_weight_grad, unfold_patches
from hlop.spiking.fast_parts import FastParts, over_time
from hlop.spiking.layout import TimeLayout, time_layout


class _ProjectedFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, feedback, layer, circuit, layout, projected):  # type: ignore[override]
        ctx.layer, ctx.circuit, ctx.layout, ctx.x_shape = layer, circuit, layout, x.shape
        ctx.projected = projected  # the activity rows' projection, when already computed
        ctx.x_dtype = x.dtype
        ctx.has_bias = bias is not None
        if layout == TimeLayout.FAST:  # only the rate slice (the last B rows) will carry gradient
            active = x[-(x.shape[0] // (layer.timesteps + 1)) :].clone()  # keep B rows, not all
        elif (
            layout == TimeLayout.ONLINE
        ):  # rows [spikes; traces]: forward on spikes, update from traces
            n = x.shape[0] // 2
            x, active = x[:n], x[n:]
        else:  # STATIC or STEPS: every row is a sample or a time step of one
            active = x
        ctx.save_for_backward(active, weight, feedback)
        dt = layer.compute_dtype
        if dt is None or dt == x.dtype:
            return layer._op(x, weight, bias)
        return product(layer._op, dt, x, weight, bias).to(x.dtype)

    @staticmethod
    def backward(ctx, grad_out):  # type: ignore[override]
        xa, weight, feedback = ctx.saved_tensors
        layer: ProjectedLayer = ctx.layer
        circuit: LateralCircuit | None = ctx.circuit
        n = xa.shape[0]
        g = grad_out[-n:] if ctx.layout == TimeLayout.FAST else grad_out
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            b = feedback if feedback is not None else weight
            dt = layer.compute_dtype
            if dt is None:  # (under autocast the gradient may be bf16: the product follows)
                gx = layer._grad_input(g, b.to(g.dtype), xa.shape)
            else:
                gx = product(lambda g, b: layer._grad_input(g, b, xa.shape), dt, g, b)
            gx = gx.to(ctx.x_dtype)
            if ctx.layout not in (TimeLayout.FAST, TimeLayout.ONLINE):
                grad_x = gx
            else:  # the other rows carry no gradient
                grad_x = gx.new_zeros(ctx.x_shape)
                if ctx.layout == TimeLayout.FAST:
                    grad_x[-n:] = gx
                else:
                    grad_x[:n] = gx
        if ctx.needs_input_grad[1]:
            project = circuit.project if circuit is not None else None
            grad_w = layer._grad_weight(g, xa, project, ctx.projected)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = g.sum(dim=[d for d in range(g.dim()) if d != 1])
        return grad_x, grad_w, grad_b, None, None, None, None, None


class ProjectedLayer(nn.Module):
    """Shared behaviour of :class:`ProjectedLinear` and :class:`ProjectedConv2d`.

    Everything is fixed at construction except the layout, which a network changes for
    all its layers at once (through the validating setter) when its time layout changes.
    The keyword arguments below are shared by both layer types.

    Keyword Args:
        circuit: the layer's :class:`LateralCircuit` or None.
        feedback: error-propagation rule, one of ``FEEDBACK_RULES``.
        proj_type: ``"input"`` or ``"weight"`` (``PROJ_TYPES``).
        timesteps: T when the input holds ``T * B`` time-major rows of a spiking network;
            None when every row is a sample.
        hebbian_on: what the circuit learns from when the rows are time steps: ``"wfr"``
            (the rate over time, weighted by ``rate_weights``) or ``"spikes"`` (every
            per-step row); ``HEBBIAN_SOURCES``.
        rate_weights: normalised time weights of that rate (default: uniform).
        precision: ``"fp32"`` or ``"bf16"`` (``PRECISIONS``): the dtype of the layer's weight
            products (forward, input gradient, unprojected weight gradient); the output,
            the circuit and every product with projected rows stay fp32.

    Layouts (``LAYOUTS``, :class:`~hlop.spiking.layout.TimeLayout`): ``STATIC`` (every row
    a sample), ``STEPS`` (``T * B`` time-major rows), ``FAST`` (the DSR fast layout, ``T + 1``
    slices), ``ONLINE`` (OTTT: ``[spikes; traces]``, the trace drives the weight update and
    the circuit).
    """

    LAYOUTS = (TimeLayout.STATIC, TimeLayout.STEPS, TimeLayout.FAST, TimeLayout.ONLINE)
    weight: Tensor
    bias: Tensor | None

    def _init_projection(
        self,
        circuit: LateralCircuit | None,
        feedback: str,
        proj_type: str,
        timesteps: int | None,
        hebbian_on: str,
        rate_weights: Tensor | None,
        precision: str,
    ) -> None:
        _check_choice("feedback", feedback, FEEDBACK_RULES)
        _check_choice("precision", precision, tuple(PRECISIONS))
        _check_choice("proj_type", proj_type, PROJ_TYPES)
        _check_choice("hebbian_on", hebbian_on, HEBBIAN_SOURCES)
        if timesteps is not None and (isinstance(timesteps, bool) or timesteps < 1):
            raise ValueError(f"timesteps must be None or >= 1, got {timesteps!r}")
        if rate_weights is not None and (timesteps is None or rate_weights.numel() != timesteps):
            raise ValueError("rate_weights needs timesteps and one weight per time step")
        self.circuit = circuit
        self.feedback = feedback
        self.proj_type = proj_type
        self.timesteps = timesteps
        self.hebbian_on = hebbian_on
        self.precision = precision
        if rate_weights is None and timesteps is not None:
            rate_weights = torch.full((timesteps,), 1.0 / timesteps)
        self.rate_weights = rate_weights
        self.name = ""
        self._layout = TimeLayout.STATIC if timesteps is None else TimeLayout.STEPS
        if feedback == "feedback-alignment":
            fb = torch.empty_like(self.weight)
            nn.init.kaiming_uniform_(fb, a=math.sqrt(5))
            self.register_buffer("feedback_weight", fb)
        else:
            self.feedback_weight = None

    @property
    def layout(self) -> TimeLayout:
        return self._layout

    @property
    def compute_dtype(self) -> torch.dtype | None:
        """The dtype of the weight products (forward, input and weight gradients), or None for
        the input's.  Circuits, their projections and the layer's output stay fp32."""
        return PRECISIONS[self.precision]

    @layout.setter
    def layout(self, value: str | TimeLayout) -> None:
        value = time_layout(value, self.LAYOUTS, self._where())
        if value in (TimeLayout.STEPS, TimeLayout.FAST) and self.timesteps is None:
            raise ValueError(f"{self._where()}: layout {value.value!r} needs timesteps")
        self._layout = value

    # subclasses: _op, _check, _grad_input, _activity_rows, _hebbian_rows, _grad_rows,
    # _plain_grad_weight, _ss_scale

    def _feedback_matrix(self) -> Tensor | None:
        if self.feedback == "feedback-alignment":
            return self.feedback_weight
        if self.feedback == "sign-symmetric":
            return torch.sign(self.weight.detach()) * self._ss_scale()
        return None

    def _grad_weight(self, g: Tensor, x: Tensor, project, projected: Tensor | None) -> Tensor:
        shape = self.weight.shape
        projecting = project is not None and self.circuit.projecting and self.circuit.old_rows
        if projecting and self.proj_type == "input":
            # the projected rows' product stays in fp32: rounding them would put back a
            # component in the old subspace
            if projected is None:
                projected = project(self._activity_rows(x))
            gw = self._grad_rows(g).to(projected.dtype).t() @ projected
            return gw.reshape(shape).to(self.weight.dtype)
        dt = self.compute_dtype
        if dt is None:
            gw = self._plain_grad_weight(g, x.to(g.dtype))
        else:
            gw = product(self._plain_grad_weight, dt, g, x)
        gw = gw.to(self.weight.dtype)
        # weight mode: the projection of the (rounded) gradient is exact in fp32
        return project_weight_grad(gw, project) if projecting else gw

    def _where(self) -> str:
        return f"layer '{self.name}'" if self.name else f"{type(self).__name__}"

    def _hebbian_rows(self, x: Tensor) -> Tensor:
        return self._activity_rows(x)

    def _learns_from_activity_rows(self) -> bool:
        """True when the circuit learns from exactly the rows whose projection the
        input-mode weight update takes (then the update's residual is that projection)."""
        static, steps = TimeLayout.STATIC, TimeLayout.STEPS
        return self.layout == static or (self.layout == steps and self.hebbian_on == "spikes")

    def presynaptic(self, x: Tensor) -> Tensor:
        """The activity rows (B' x N) this layer's circuit learns from."""
        if self.layout in (TimeLayout.STEPS, TimeLayout.FAST):
            t = self.timesteps
            slices = t + 1 if self.layout == TimeLayout.FAST else t
            x = self._from_steps(x.reshape(slices, -1, *x.shape[1:])[:t])
        return self._hebbian_rows(x)  # ONLINE (OTTT): spikes and traces alike

    def _from_steps(self, seq: Tensor) -> Tensor:
        """What the circuit learns from, of the ``T`` per-step slices ``seq``: their rate
        (``hebbian_on="wfr"``) or every slice's rows (``"spikes"``)."""
        if self.hebbian_on == "wfr":
            return over_time(self.rate_weights.to(seq), seq)
        return seq.reshape(-1, *seq.shape[2:])

    def _learn(self, rows: Callable[[], Tensor]) -> Tensor | None:
        """One Hebbian update of the circuit (while it learns, in training) from ``rows()``;
        its residual, if it computed one."""
        circuit = self.circuit
        if circuit is None or not circuit.learning or not self.training:
            return None
        with torch.no_grad():
            return circuit.hebbian_update(rows())

    def _forward_op(self, x: Tensor, affine: tuple[Tensor, Tensor] | None = None) -> Tensor:
        """The layer's forward in its precision, without the autograd function; with
        ``affine = (scale, shift)`` (one value per output unit or channel), the output
        times ``scale`` plus ``shift``, folded into the weight and bias."""
        weight, bias = self.weight, self.bias
        if affine is not None:
            scale, shift = affine
            weight = weight * scale.view(-1, *[1] * (weight.dim() - 1))
            bias = shift if bias is None else bias * scale + shift
        dt = self.compute_dtype
        if dt is None or dt == x.dtype:
            return self._op(x, weight, bias)
        return product(self._op, dt, x, weight, bias).to(x.dtype)

    def forward_parts(
        self, h: FastParts, steps: bool = True, affine: tuple[Tensor, Tensor] | None = None
    ) -> FastParts | Tensor:
        """The fast layout in two parts (``FastParts``): the circuit learns from the
        per-step part as in the joined layout, the per-step outputs are computed without
        autograd, and the rate slice goes through the projected update on its ``B`` rows
        (what the joined layout's backward uses).  ``steps=False``: only the rate slice's
        output (a readout head).  ``affine``: see ``_forward_op``; for the per-step
        outputs only (the caller applies it to the rate slice)."""
        self._check(h.rate)
        if self.layout != TimeLayout.FAST:
            raise ValueError(f"{self._where()}: activity in two parts needs the fast layout")
        self._learn(lambda: self._hebbian_rows(self._from_steps(h.steps)))
        rate = _ProjectedFunction.apply(
            h.rate,
            self.weight,
            self.bias,
            self._feedback_matrix(),
            self,
            self.circuit,
            TimeLayout.STATIC,  # every row of the rate slice carries gradient
            None,
        )
        if not steps:
            return rate
        return FastParts(h.map_steps(lambda x: self._forward_op(x, affine)), rate, h.constant)

    def forward(self, x: Tensor) -> Tensor:
        self._check(x)
        residual = self._learn(lambda: self.presynaptic(x.detach()))
        projected = None
        if self.proj_type == "input" and self._learns_from_activity_rows():
            projected = residual  # X - Y_old H_old of these very rows: computed once
        circuit = self.circuit
        return _ProjectedFunction.apply(
            x,
            self.weight,
            self.bias,
            self._feedback_matrix(),
            self,
            circuit,
            self.layout,
            projected,
        )


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")


class ProjectedLinear(ProjectedLayer, nn.Linear):
    """``nn.Linear`` whose weight gradient is projected by its lateral circuit.

    Args:
        circuit: a :class:`LateralCircuit` of dimension ``in_features`` (or None).
        feedback: ``"backprop"``, ``"feedback-alignment"`` or ``"sign-symmetric"``.
        proj_type: ``"input"`` or ``"weight"`` (identical for a non-spiking circuit).
        timesteps, hebbian_on, rate_weights, precision: see :class:`ProjectedLayer`.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        *,
        circuit: LateralCircuit | None = None,
        feedback: Feedback = "backprop",
        proj_type: ProjType = "input",
        timesteps: int | None = None,
        hebbian_on: HebbianSource = "wfr",
        rate_weights: Tensor | None = None,
        precision: str = "fp32",
    ) -> None:
        super().__init__(in_features, out_features, bias)
        if circuit is not None and circuit.in_features != in_features:
            raise ValueError(
                f"circuit dimension {circuit.in_features} != in_features {in_features}"
            )
        self._init_projection(
            circuit, feedback, proj_type, timesteps, hebbian_on, rate_weights, precision
        )

    def _check(self, x: Tensor) -> None:
        if x.dim() != 2 or x.shape[1] != self.in_features:
            raise ValueError(
                f"{self._where()}: expected input of shape (rows, {self.in_features}), "
                f"got {tuple(x.shape)}"
            )

    def _op(self, x, weight, bias):
        return F.linear(x, weight, bias)

    def _grad_input(self, g, b, x_shape):
        return g @ b

    def _activity_rows(self, x):
        return x

    def _grad_rows(self, g):
        return g

    def _plain_grad_weight(self, g, x):
        return g.t() @ x

    def _ss_scale(self) -> float:
        return 1.0 / math.sqrt(self.in_features)


class ProjectedConv2d(ProjectedLayer, nn.Conv2d):
    """``nn.Conv2d`` whose weight gradient is projected by its lateral circuit.

    The circuit's dimension is ``C_in * k_h * k_w``; it projects the patches the
    convolution actually sees (its own kernel, stride, padding, dilation) and learns from
    them too (``hebbian_stride="layer"``), or from the patches at stride 1
    (``hebbian_stride="one"``: what the authors' code does for strided convolutions).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size,
        stride=1,
        padding=0,
        dilation=1,
        bias: bool = True,
        *,
        circuit: LateralCircuit | None = None,
        feedback: Feedback = "backprop",
        proj_type: ProjType = "input",
        timesteps: int | None = None,
        hebbian_on: HebbianSource = "wfr",
        rate_weights: Tensor | None = None,
        hebbian_stride: str = "layer",
        precision: str = "fp32",
    ) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, 1, bias)
        if isinstance(self.padding, str):
            raise ValueError("ProjectedConv2d needs explicit integer padding")
        n = in_channels * self.kernel_size[0] * self.kernel_size[1]
        if circuit is not None and circuit.in_features != n:
            raise ValueError(f"circuit dimension {circuit.in_features} != C_in*k*k = {n}")
        _check_choice("hebbian_stride", hebbian_stride, HEBBIAN_STRIDES)
        self.hebbian_stride = hebbian_stride
        self._init_projection(
            circuit, feedback, proj_type, timesteps, hebbian_on, rate_weights, precision
        )

    def _check(self, x: Tensor) -> None:
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"{self._where()}: expected input of shape (rows, {self.in_channels}, H, W), "
                f"got {tuple(x.shape)}"
            )

    def _op(self, x, weight, bias):
        return F.conv2d(x, weight, bias, self.stride, self.padding, self.dilation)

    def _grad_input(self, g, b, x_shape):
        return torch.nn.grad.conv2d_input(x_shape, b, g, self.stride, self.padding, self.dilation)

    def _hebbian_rows(self, x):
        return self._activity_rows(x, (1, 1) if self.hebbian_stride == "one" else None)

    def _learns_from_activity_rows(self) -> bool:
        same_stride = self.hebbian_stride == "layer" or self.stride == (1, 1)
        return same_stride and super()._learns_from_activity_rows()

    def _activity_rows(self, x, stride=None):
        """Unfolded patches (B * L x C_in k k), ordered as the weight's flattened columns.

        See :func:`unfold_patches`; ``stride`` replaces the layer's own."""
        ph, pw = self.padding
        stride = self.stride if stride is None else stride
        return unfold_patches(x, self.kernel_size, stride, (pw, pw, ph, ph), self.dilation)

    def _grad_rows(self, g):
        return g.flatten(2).transpose(1, 2).reshape(-1, g.shape[1])

    def _plain_grad_weight(self, g, x):
        # one memory format for both (B rows: cheap): torch 2.13's CPU weight gradient
        # crashed on a channels-last input with a gradient in the other format
        return torch.nn.grad.conv2d_weight(
            x.contiguous(),
            self.weight.shape,
            g.contiguous(),
            self.stride,
            self.padding,
            self.dilation,
        )

    def _ss_scale(self) -> float:
        k = self.kernel_size[0] * self.kernel_size[1]
        return math.sqrt(2.0 / (k * self.out_channels))
