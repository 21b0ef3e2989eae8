"""BPTT and OTTT neurons against direct computations on tiny networks."""

import math

import pytest
import torch

from hlop import LateralCircuit, ProjectedLinear
from hlop.spiking.surrogate import SurrogateLIF


def sg_grad(x, alpha=4.0):
    s = 1 / (1 + math.exp(-alpha * x))
    return alpha * s * (1 - s)


def test_bptt_gradient_equals_unrolled_hand_computation():
    torch.manual_seed(0)
    t_steps, tau, vth = 4, 2.0, 1.0
    w = torch.randn(3, 2, requires_grad=True)
    x = torch.tensor([[1.5, 0.2]]).repeat(t_steps, 1) + torch.randn(t_steps, 2) * 0.5
    c = torch.tensor([0.7, -1.2, 0.4])
    sn = SurrogateLIF(t_steps, tau=tau, vth=vth)
    current = x @ w.t()  # (T, 3): one sample
    out = sn(current).reshape(t_steps, 3).mean(0)
    (out * c).sum().backward()

    # direct: forward in floats, then reverse-mode by hand through time
    decay = 1 - 1 / tau
    cur = current.detach().tolist()
    v, pre = [0.0] * 3, []
    for t in range(t_steps):
        p = [v[i] * decay + cur[t][i] for i in range(3)]
        s = [1.0 if p[i] >= vth else 0.0 for i in range(3)]
        v = [p[i] - vth * s[i] for i in range(3)]  # the reset does not carry gradient
        pre.append(p)
    d_cur = [[0.0] * 3 for _ in range(t_steps)]
    carry = [0.0] * 3  # dL/dv_t, passed back to step t-1 through v_t = v_{t-1} decay + ...
    for t in reversed(range(t_steps)):
        for i in range(3):
            dv = c[i].item() / t_steps * sg_grad(pre[t][i] - vth) + carry[i]
            d_cur[t][i] = dv
            carry[i] = dv * decay
    expected = torch.tensor(d_cur).t() @ x  # dL/dW = sum_t dL/dI_t x_t^T
    assert torch.allclose(w.grad, expected, atol=1e-5)


def test_ottt_trace_and_spikes_by_hand():
    sn = SurrogateLIF(3, tau=2.0, vth=1.0)
    sn.layout = "online"
    outs = []
    for current in [1.2, 0.5, 1.0]:
        outs.append(sn(torch.tensor([[current]])).flatten().tolist())
    # v: 1.2 -> spike, 0.2; 0.1 + 0.5 = 0.6; 0.3 + 1.0 = 1.3 -> spike
    spikes = [o[0] for o in outs]
    traces = [o[1] for o in outs]
    assert spikes == [1.0, 0.0, 1.0]
    assert traces == pytest.approx([1.0, 0.5, 1.25])  # a_t = a_{t-1} / 2 + s_t


def test_ottt_membrane_is_detached_between_steps():
    sn = SurrogateLIF(2)
    sn.layout = "online"
    x0 = torch.tensor([[0.9]], requires_grad=True)
    sn(x0)
    out = sn(torch.tensor([[0.9]], requires_grad=True))
    out[:1].sum().backward()
    assert x0.grad is None  # no gradient through v_{t-1}


@pytest.mark.parametrize("projecting", [False, True])
def test_trace_layout_uses_trace_for_weight_update(projecting):
    torch.manual_seed(1)
    c = LateralCircuit(5)
    c.add_subspace(2)
    c.merge()
    c.projecting = projecting
    layer = ProjectedLinear(5, 3, bias=False, circuit=c)
    layer.layout = "online"
    spikes = (torch.rand(4, 5) > 0.5).float().requires_grad_()
    traces = torch.rand(4, 5)
    out = layer(torch.cat([spikes, traces]))
    assert torch.allclose(out, spikes @ layer.weight.t())  # forward on the spikes only
    g = torch.randn_like(out)
    (out * g).sum().backward()
    activity = c.project(traces) if projecting else traces
    assert torch.allclose(layer.weight.grad, g.t() @ activity, atol=1e-6)
    assert torch.allclose(spikes.grad, g @ layer.weight, atol=1e-6)
