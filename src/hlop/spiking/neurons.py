"""Spiking neurons trained with DSR (Differentiation on Spike Representation).

Activity tensors are time-major and flattened: ``S * B`` rows, slice ``t`` holds
the ``B`` samples of time step ``t``.  With ``T`` time steps a neuron sees

* the **per-step** layout, ``S = T``: the straightforward computation;
* the **fast** layout, ``S = T + 1``: slices ``0..T-1`` carry the exact per-step
  values and the extra last slice (the *rate slice*) carries a time aggregate of
  them.  Only the rate slice carries gradient.  Because the DSR gradient below
  the output is identical at every time step, the backward pass and the weight
  gradients of all layers can be computed on ``B`` rows instead of ``T * B``,
  with the same result (see :mod:`hlop.layers.projected` and the documentation's page "How
  HLOP works").

LIF (``beta = exp(-dt / tau)``)::

    u_t = beta u_{t-1} + (1 - beta) I_t
    s_t = Vth [u_t >= alpha Vth];  u_t -= s_t;  o_t = s_t / dt

IF::

    u_t = u_{t-1} + I_t;  s_t = Vth [u_t >= alpha Vth];  u_t -= s_t;  o_t = s_t

DSR backward.  With time weights ``w~`` (LIF: ``w_t = exp(-(T - t) dt / tau)``
normalised to sum 1, the weighted firing rate; IF: ``1 / T``, the mean rate),
``r = sum_t w~_t I_t`` and ``g = T sum_t w~_t dL/do_t``::

    dL/dI_t  = g / (tau T)            where 0 < r < Vth tau / dt   (LIF)
    dL/dI_t  = g / T                  where 0 <= r <= Vth          (IF)
    dL/dVth  = dt sum(g where r > Vth tau / dt)   (LIF; IF: sum(g where r > Vth))
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

from hlop.spiking.fast_parts import FastParts, empty_steps, over_time
from hlop.spiking.layout import TimeLayout, time_layout


def time_weights(timesteps: int, tau: float | None, dt: float) -> Tensor:
    """Normalised weights ``w~_t`` of the weighted firing rate (uniform if ``tau`` is None)."""
    if tau is None:
        return torch.full((timesteps,), 1.0 / timesteps)
    w = torch.tensor([math.exp(-(timesteps - t) * dt / tau) for t in range(1, timesteps + 1)])
    return w / w.sum()


def wfr(x: Tensor, timesteps: int, tau: float = 1.0, dt: float = 0.05) -> Tensor:
    """Weighted firing rate ``sum_t w_t x_t / sum_t w_t`` of ``T * B`` time-major rows."""
    w = time_weights(timesteps, tau, dt).to(x)
    return torch.tensordot(w, x.reshape(timesteps, -1, *x.shape[1:]), dims=1)


def mean_rate(x: Tensor, timesteps: int) -> Tensor:
    """Plain firing rate (mean over time) of ``T * B`` time-major rows."""
    return x.reshape(timesteps, -1, *x.shape[1:]).mean(0)


def _spikes(seq: Tensor, v: Tensor, dyn: _Dynamics, out: Tensor) -> None:
    """The exact simulation: spikes of the ``T`` input slices ``seq`` into ``out[:T]``
    (amplitude Vth, / dt for LIF); fused by ``torch.compile`` when the neurons ask for it."""
    steps = dyn.timesteps
    if dyn.compiled:
        beta = math.exp(-dyn.dt / dyn.tau) if dyn.leaky else 1.0
        scale = 1.0 / dyn.dt if dyn.leaky else 1.0
        out[:steps] = _compiled_spike_train()(seq, v, dyn.alpha, beta, scale, dyn.leaky, steps)
        return
    threshold = dyn.alpha * v
    u = torch.zeros_like(seq[0])
    beta = math.exp(-dyn.dt / dyn.tau) if dyn.leaky else 1.0
    scale = 1.0 / dyn.dt if dyn.leaky else 1.0
    for t in range(steps):  # few in-place ops per step: this loop is per-op bound
        if dyn.leaky:
            u.mul_(beta).add_(seq[t], alpha=1.0 - beta)
        else:
            u.add_(seq[t])
        torch.ge(u, threshold, out=out[t])  # 1 where a spike
        u.addcmul_(out[t], v, value=-1.0)  # reset by subtraction: u -= Vth s
    out[:steps].mul_(v * scale)


def _spike_train(
    seq: Tensor, v: Tensor, alpha: float, beta: float, scale: float, leaky: bool, steps: int
) -> Tensor:
    """:func:`_spikes` written without in-place writes, for ``torch.compile`` (the same
    operations in the same order: ``add`` with ``alpha`` and ``addcmul`` as there)."""
    threshold = alpha * v
    u = torch.zeros_like(seq[0])
    spikes = []
    for t in range(steps):
        u = torch.add(u * beta, seq[t], alpha=1.0 - beta) if leaky else u + seq[t]
        s = (u >= threshold).to(u.dtype)
        u = torch.addcmul(u, s, v, value=-1.0)
        spikes.append(s)
    return torch.stack(spikes) * (v * scale)


_COMPILED: dict[str, Callable[..., Tensor]] = {}


def _compiled_spike_train() -> Callable[..., Tensor]:
    """:func:`_spike_train` compiled (once per process; ``torch.compile`` and its compiler
    stack load only here, never in runs that do not ask for it)."""
    if "spike_train" not in _COMPILED:
        _COMPILED["spike_train"] = torch.compile(_spike_train, dynamic=False)
    return _COMPILED["spike_train"]


def _rate_slice(spikes: Tensor, dyn: _Dynamics) -> tuple[Tensor, float]:
    """The fast layout's rate slice of ``T`` spike slices, and ``kappa``: readout neurons
    aggregate with the readout's weights (wfr), others by the mean; the rate slice's
    gradient times ``kappa`` is ``T * wfr(dL/do)`` of the per-step graph."""
    steps = dyn.timesteps
    w = time_weights(steps, dyn.tau if dyn.leaky else None, dyn.dt).to(spikes)
    c = w if dyn.readout else torch.full_like(w, 1.0 / steps)
    return over_time(c, spikes), steps * float((w * c).sum())


def _input_rate(seq: Tensor, dyn: _Dynamics) -> Tensor:
    """``r``: the weighted (LIF) or mean (IF) rate of the ``T`` input slices."""
    w = time_weights(dyn.timesteps, dyn.tau if dyn.leaky else None, dyn.dt).to(seq)
    return over_time(w, seq)


def _dsr_gradient(g: Tensor, rate: Tensor, v: Tensor, dyn: _Dynamics) -> tuple[Tensor, Tensor]:
    """The DSR gradient of one step's input current and of the threshold, from
    ``g = T wfr(dL/do)`` and the input rate ``r`` (module docstring)."""
    steps = dyn.timesteps
    if dyn.leaky:
        upper = v * dyn.tau / dyn.dt
        active = (rate > 0) & (rate < upper)
        step_grad = torch.where(active, g, 0.0) / (dyn.tau * steps)
        grad_vth = dyn.dt * torch.where(rate > upper, g, 0.0).sum()
    else:
        active = (rate >= 0) & (rate <= v)
        step_grad = torch.where(active, g, 0.0) / steps
        grad_vth = torch.where(rate > v, g, 0.0).sum()
    return step_grad, grad_vth


class _DSRFunction(torch.autograd.Function):
    """One DSR neuron layer: exact spike simulation forward, DSR gradient backward."""

    @staticmethod
    def forward(ctx, current: Tensor, vth: Tensor, dyn: _Dynamics, fast: bool) -> Tensor:  # type: ignore[override]
        steps = dyn.timesteps
        slices = steps + 1 if fast else steps
        seq = current.reshape(slices, -1, *current.shape[1:])[:steps]
        out = current.new_empty((slices, *seq.shape[1:]))
        v = vth.detach()
        _spikes(seq, v, dyn, out)
        if fast:
            out[steps], kappa = _rate_slice(out[:steps], dyn)
        else:
            kappa = 1.0
        if ctx.needs_input_grad[0] or ctx.needs_input_grad[1]:  # not when evaluating
            ctx.save_for_backward(_input_rate(seq, dyn), v)
        ctx.dyn, ctx.fast, ctx.kappa, ctx.slices = dyn, fast, kappa, slices
        return out.reshape(-1, *current.shape[1:])

    @staticmethod
    def backward(ctx, grad_out: Tensor):  # type: ignore[override]
        rate, v = ctx.saved_tensors
        dyn: _Dynamics = ctx.dyn
        steps = dyn.timesteps
        grad = grad_out.reshape(ctx.slices, -1, *grad_out.shape[1:])
        if ctx.fast:
            g = ctx.kappa * grad[steps]  # = T * wfr(dL/do) of the per-step graph
        else:
            w = time_weights(steps, dyn.tau if dyn.leaky else None, dyn.dt).to(grad)
            g = steps * torch.tensordot(w, grad, dims=1)
        step_grad, grad_vth = _dsr_gradient(g, rate, v, dyn)
        if ctx.fast:
            # per-step slices carry no gradient; the rate slice of the input is the mean
            # current, whose gradient is T times the (identical) per-step gradient
            grad_in = torch.zeros_like(grad)
            grad_in[steps] = step_grad * steps
        else:
            grad_in = step_grad.unsqueeze(0).expand_as(grad)
        return grad_in.reshape(grad_out.shape), grad_vth.reshape(v.shape), None, None


class _DSRSplitFunction(torch.autograd.Function):
    """The fast layout in two parts (``FastParts``): the spikes of the per-step currents
    (no gradient) and the rate slice, whose gradient goes to the input's rate slice only."""

    @staticmethod
    def forward(ctx, rate_current: Tensor, vth: Tensor, steps: Tensor, dyn: _Dynamics):  # type: ignore[override]
        v = vth.detach()
        spikes = empty_steps(steps)
        _spikes(steps, v, dyn, spikes)
        rate, kappa = _rate_slice(spikes, dyn)
        if ctx.needs_input_grad[0] or ctx.needs_input_grad[1]:
            if steps.stride(0) == 0:  # the same current at every step: its rate is itself
                w = time_weights(dyn.timesteps, dyn.tau if dyn.leaky else None, dyn.dt)
                r = steps[0] * float(w.sum())
            else:
                r = _input_rate(steps, dyn)
            ctx.save_for_backward(r, v)
        ctx.dyn, ctx.kappa = dyn, kappa
        ctx.mark_non_differentiable(spikes)
        ctx.set_materialize_grads(False)  # no zeros of the spikes' size for their no-gradient
        return rate, spikes

    @staticmethod
    def backward(ctx, grad_rate: Tensor, _grad_spikes: Tensor | None):  # type: ignore[override]
        if grad_rate is None:  # the rate slice did not reach the loss
            return None, None, None, None
        rate, v = ctx.saved_tensors
        dyn: _Dynamics = ctx.dyn
        step_grad, grad_vth = _dsr_gradient(ctx.kappa * grad_rate, rate, v, dyn)
        return step_grad * dyn.timesteps, grad_vth.reshape(v.shape), None, None


class _Dynamics:
    __slots__ = ("timesteps", "tau", "dt", "alpha", "leaky", "readout", "compiled")

    def __init__(self, timesteps, tau, dt, alpha, leaky, readout, compiled=False):
        self.timesteps, self.tau, self.dt = timesteps, tau, dt
        self.alpha, self.leaky, self.readout = alpha, leaky, readout
        self.compiled = compiled


class SpikingNeuron(nn.Module):
    """Base of every spiking neuron layer: its time steps, readout rate, layout and state.

    A layer is simulated over ``timesteps`` steps.  Its **layout** says how its input rows
    are organised, and is changed only through the validating setter (a network sets it
    for all its layers at once, when it changes):

    * ``STEPS``: ``T * B`` time-major rows, the whole simulation in one call;
    * ``FAST``: the DSR fast layout, ``T + 1`` slices (DSR neurons only);
    * ``ONLINE``: one time step per call, the state kept between calls until
      :meth:`reset` (OTTT training; surrogate neurons only).

    Attributes:
        readout: True for the last neuron layer before the (linear) readout.
        train_vth: whether the layer's threshold (if it has one) is trained in task 0.
    """

    LAYOUTS: tuple[TimeLayout, ...] = (TimeLayout.STEPS,)
    uniform_rate = True  # the readout rate is the plain mean over time (else weighted)

    def __init__(self, timesteps: int) -> None:
        super().__init__()
        if isinstance(timesteps, bool) or not isinstance(timesteps, int) or timesteps < 1:
            raise ValueError(f"timesteps must be an integer >= 1, got {timesteps!r}")
        self.timesteps = timesteps
        self.readout = False
        self.train_vth = False
        self._layout = TimeLayout.STEPS

    @property
    def layout(self) -> TimeLayout:
        return self._layout

    @layout.setter
    def layout(self, value: str | TimeLayout) -> None:
        self._layout = time_layout(value, self.LAYOUTS, type(self).__name__)

    def time_weights(self) -> Tensor:
        """Normalised weights of the readout rate over the ``T`` steps."""
        return torch.full((self.timesteps,), 1.0 / self.timesteps)

    def rate(self, x: Tensor) -> Tensor:
        """The readout of ``T * B`` time-major rows: mean over time, or weighted (wfr)."""
        seq = x.reshape(self.timesteps, -1, *x.shape[1:])
        if self.uniform_rate:
            return seq.mean(0)
        return torch.tensordot(self.time_weights().to(x), seq, dims=1)

    def reset(self) -> None:
        """Forget the state kept between online calls (stateless layers: nothing)."""


class DSRNeuron(SpikingNeuron):
    """A layer of DSR-trained LIF (``leaky=True``) or IF neurons with a trainable threshold.

    Args:
        timesteps: T, time steps of the simulation.
        vth: initial threshold (a trainable scalar), clamped to ``>= vth_bound`` every forward.
        tau: LIF time constant.
        dt: step length.
        alpha: threshold fraction to spike at.
        train_vth: train the threshold in task 0 (it is frozen in later tasks anyway).

    Layouts: ``STEPS`` and ``FAST`` (input and output of ``T + 1`` slices).
    """

    LAYOUTS = (TimeLayout.STEPS, TimeLayout.FAST)

    def __init__(
        self,
        timesteps: int = 20,
        *,
        leaky: bool = True,
        vth: float = 0.3,
        vth_bound: float = 5e-4,
        tau: float = 1.0,
        dt: float = 0.05,
        alpha: float = 0.3,
        train_vth: bool = True,
    ) -> None:
        super().__init__(timesteps)
        self.leaky, self.tau, self.dt, self.alpha = leaky, tau, dt, alpha
        self.uniform_rate = not leaky
        self.vth_bound, self.train_vth = vth_bound, train_vth
        self.vth = nn.Parameter(torch.tensor(float(vth)), requires_grad=train_vth)
        #: simulate with the spike loop fused by ``torch.compile`` (the same operations, up
        #: to a contracted multiply-add; meant for GPUs, where the loop's per-step kernels
        #: cost most: on this project's 2-core CPU it was 2x slower than the eager loop)
        self.compiled = False

    def forward(self, current: Tensor) -> Tensor:
        with torch.no_grad():
            self.vth.clamp_(min=self.vth_bound)
        return _DSRFunction.apply(
            current, self.vth, self._dynamics(), self.layout == TimeLayout.FAST
        )

    def forward_parts(self, h: FastParts) -> FastParts:
        """The fast layout in two parts (``FastParts``): same values and gradient."""
        with torch.no_grad():
            self.vth.clamp_(min=self.vth_bound)
        rate, spikes = _DSRSplitFunction.apply(h.rate, self.vth, h.steps, self._dynamics())
        return FastParts(spikes, rate)

    def _dynamics(self) -> _Dynamics:
        return _Dynamics(
            self.timesteps, self.tau, self.dt, self.alpha, self.leaky, self.readout, self.compiled
        )

    def time_weights(self) -> Tensor:
        """Normalised weights of this neuron type's readout rate over the T steps."""
        return time_weights(self.timesteps, self.tau if self.leaky else None, self.dt)

    def extra_repr(self) -> str:
        kind = "LIF" if self.leaky else "IF"
        return f"{kind}, T={self.timesteps}, tau={self.tau}, dt={self.dt}, alpha={self.alpha}"


def LIF(timesteps: int = 20, **kwargs) -> DSRNeuron:  # noqa: N802 (a neuron model's name)
    """DSR leaky integrate-and-fire neurons (the paper's default)."""
    return DSRNeuron(timesteps, leaky=True, **kwargs)


def IF(timesteps: int = 20, **kwargs) -> DSRNeuron:  # noqa: N802
    """DSR integrate-and-fire neurons (no leak, output s)."""
    return DSRNeuron(timesteps, leaky=False, **kwargs)
