"""LIF neurons with a surrogate spike derivative, for BPTT and OTTT training.

Dynamics (no input decay, soft reset, threshold ``Vth``)::

    v_t = v_{t-1} (1 - 1/tau) + x_t
    s_t = H(v_t - Vth)                 backward: d s / d v = a sig(a (v - Vth)) (1 - sig(...))
    v_t = v_t - Vth s_t                (the reset is detached from the graph)

BPTT backpropagates through every ``v_{t-1}``.  OTTT (online training through time)
detaches ``v_{t-1}`` and keeps a presynaptic trace ``a_t = (1 - 1/tau) a_{t-1} + s_t``
that the next layer uses, instead of ``s_t``, for its weight update.

In the ``ONLINE`` layout (OTTT training) a forward call is one time step: the input is
the current of ``B`` samples and the output stacks ``[s_t; a_t]`` (``2 B`` rows, the trace
detached).  The state is kept between calls and cleared by ``reset()`` only.  In the
``STEPS`` layout a call takes ``T * B`` time-major rows (BPTT, or evaluation of an OTTT
network: the dynamics are the same).
"""

from __future__ import annotations

import torch
from torch import Tensor

from hlop.spiking.layout import TimeLayout
from hlop.spiking.neurons import SpikingNeuron


class SigmoidSurrogateSpike(torch.autograd.Function):
    """Heaviside forward; derivative of ``sigmoid(alpha x)`` backward."""

    @staticmethod
    def forward(ctx, x: Tensor, alpha: float) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(x)
        ctx.alpha = alpha
        return (x >= 0).to(x)

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        (x,) = ctx.saved_tensors
        sg = torch.sigmoid(ctx.alpha * x)
        return grad * ctx.alpha * sg * (1 - sg), None


class SurrogateLIF(SpikingNeuron):
    """LIF neurons for BPTT / OTTT (tau 2, Vth 1, sigmoid(4) surrogate by default).

    Layouts (:class:`~hlop.spiking.layout.TimeLayout`): ``STEPS`` (``T * B`` time-major
    rows: BPTT, and evaluation of any network) and ``ONLINE`` (OTTT training: one time step
    per call; the output stacks ``[s_t; a_t]``, ``2 B`` rows with the trace detached, which a
    projected layer in the ``ONLINE`` layout reads).  The online state is cleared only by
    :meth:`reset`.
    """

    LAYOUTS = (TimeLayout.STEPS, TimeLayout.ONLINE)

    def __init__(
        self,
        timesteps: int = 6,
        *,
        tau: float = 2.0,
        vth: float = 1.0,
        surrogate_alpha: float = 4.0,
    ) -> None:
        super().__init__(timesteps)
        if tau <= 0 or vth <= 0:
            raise ValueError(f"tau and vth must be > 0, got tau={tau}, vth={vth}")
        self.tau, self.vth = tau, vth
        self.surrogate_alpha = surrogate_alpha
        self._v: Tensor | None = None
        self._trace: Tensor | None = None

    def reset(self) -> None:
        """Forget the membrane potential and the trace kept between online calls."""
        self._v = self._trace = None

    def _fire(self, v: Tensor) -> Tensor:
        return SigmoidSurrogateSpike.apply(v - self.vth, self.surrogate_alpha)

    def forward(self, x: Tensor) -> Tensor:
        decay = 1.0 - 1.0 / self.tau
        if self.layout == TimeLayout.ONLINE:
            if self._v is None:
                self._v = torch.zeros_like(x)
                self._trace = torch.zeros_like(x)
            elif self._v.shape != x.shape:
                raise ValueError(
                    f"online step of {tuple(x.shape)} after steps of {tuple(self._v.shape)}: "
                    "call reset() before a new batch"
                )
            v = self._v.detach() * decay + x
            spike = self._fire(v)
            self._v = v - spike.detach() * self.vth
            with torch.no_grad():
                self._trace = self._trace * decay + spike
            return torch.cat([spike, self._trace])
        seq = x.reshape(self.timesteps, -1, *x.shape[1:])
        v = torch.zeros_like(seq[0])
        out = []
        for t in range(self.timesteps):
            v = v * decay + seq[t]
            spike = self._fire(v)
            v = v - spike.detach() * self.vth
            out.append(spike)
        return torch.cat(out)

    def extra_repr(self) -> str:
        return f"T={self.timesteps}, tau={self.tau}, vth={self.vth}, layout={self.layout}"
