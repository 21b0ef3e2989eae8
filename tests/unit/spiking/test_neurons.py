import math

import pytest
import torch

from hlop import IF, LIF, mean_rate, wfr
from hlop.spiking.neurons import time_weights


def lif_by_hand(currents, vth=0.3, tau=1.0, dt=0.05, alpha=0.3):
    beta = math.exp(-dt / tau)
    u, out = 0.0, []
    for i in currents:
        u = beta * u + (1 - beta) * i
        s = vth if u >= alpha * vth else 0.0
        u -= s
        out.append(s / dt)
    return out


def test_lif_forward_hand_computed_train():
    # constant current 2: (1 - beta) * 2 = 0.0975 >= 0.09 spikes at step 1, then the
    # potential is negative and climbs back above alpha * Vth = 0.09 at step 4
    assert lif_by_hand([2.0] * 4) == pytest.approx([6.0, 0.0, 0.0, 6.0])
    cur = torch.tensor([[2.0, 0.5, 7.0, -1.0]]).repeat(6, 1)  # T=6, B=1, 4 neurons
    sn = LIF(6)
    out = sn(cur)
    for j in range(4):
        expected = lif_by_hand(cur[:, j].tolist())
        assert out[:, j].tolist() == pytest.approx(expected, abs=1e-5)
    assert out[:4, 0].tolist() == pytest.approx([6.0, 0.0, 0.0, 6.0])


def test_if_forward_hand_computed_train():
    sn = IF(5, vth=1.0, alpha=0.5)
    cur = torch.tensor([[0.3], [0.3], [0.3], [0.3], [0.3]])
    # u: 0.3, 0.6 -> spike (0.6 >= 0.5) -> -0.4, -0.1, 0.2, 0.5 -> spike
    assert sn(cur).flatten().tolist() == [0.0, 1.0, 0.0, 0.0, 1.0]


@pytest.mark.parametrize("leaky", [True, False])
def test_dsr_backward_equals_spec_formula(leaky):
    torch.manual_seed(0)
    t, b, n = 7, 3, 50
    tau, dt = 1.0, 0.05
    sn = LIF(t) if leaky else IF(t)
    cur = (torch.randn(t * b, n) * 2.0 + torch.linspace(-2.0, 10.0, n)).requires_grad_()
    upstream = torch.randn(t * b, n)
    (sn(cur) * upstream).sum().backward()

    w = time_weights(t, tau if leaky else None, dt).reshape(t, 1, 1)
    r = (w * cur.detach().reshape(t, b, n)).sum(0)
    g = t * (w * upstream.reshape(t, b, n)).sum(0)
    vth = sn.vth.item()
    if leaky:
        upper = vth * tau / dt
        per_step = torch.where((r > 0) & (r < upper), g / (tau * t), 0.0)
        dvth = dt * torch.where(r > upper, g, 0.0).sum()
    else:
        per_step = torch.where((r >= 0) & (r <= vth), g / t, 0.0)
        dvth = torch.where(r > vth, g, 0.0).sum()
    assert torch.allclose(cur.grad, per_step.repeat(t, 1), atol=1e-6)
    assert dvth.abs() > 0  # the case exercises the threshold gradient
    assert sn.vth.grad.item() == pytest.approx(dvth.item(), rel=1e-5)


def test_threshold_clamped_to_bound():
    sn = LIF(3, vth_bound=5e-4)
    with torch.no_grad():
        sn.vth.fill_(-1.0)
    sn(torch.zeros(3, 2))
    assert sn.vth.item() == pytest.approx(5e-4)


def test_rates():
    x = torch.arange(6.0).reshape(3, 2)  # T=3, B=1, 2 features
    assert torch.equal(mean_rate(x, 3), torch.tensor([[2.0, 3.0]]))
    w = [math.exp(-(3 - i) * 0.05) for i in (1, 2, 3)]
    expected = sum(wi * xi for wi, xi in zip(w, [0.0, 2.0, 4.0], strict=True)) / sum(w)
    assert wfr(x, 3)[0, 0].item() == pytest.approx(expected)


def test_bad_timesteps():
    with pytest.raises(ValueError, match="timesteps"):
        LIF(0)
