import pytest
import torch
from helpers import as_during_task, step_gradients

from hlop import NetworkSettings, SpikingMLP
from hlop.layers.projected import FEEDBACK_RULES


def task2_model(feedback="backprop", proj_type="input", seed=0, **kw):
    """The PMNIST network as during task 2: two merged blocks' worth old, one learning."""
    torch.manual_seed(seed)
    m = SpikingMLP(settings=NetworkSettings(feedback=feedback, proj_type=proj_type, **kw))
    return as_during_task(m, [[80, 200, 100], [70] * 3, [70] * 3])


@pytest.mark.parametrize("feedback", FEEDBACK_RULES)
@pytest.mark.parametrize("proj_type", ["input", "weight"])
def test_fast_path_equals_per_step_path(feedback, proj_type):
    m = task2_model(feedback, proj_type)
    with torch.no_grad():  # drive some sn2 rates past Vth tau / dt: a non-zero Vth gradient
        m.fc2.weight.mul_(4.0)
    torch.manual_seed(1)
    x = torch.randn(32, 784) * 3.0
    y = torch.randint(0, 10, (32,))
    out_s, g_s, c_s = step_gradients(m, x, y, fast=False)
    out_f, g_f, c_f = step_gradients(m, x, y, fast=True)
    assert torch.allclose(out_f, out_s, rtol=1e-5, atol=1e-5)
    assert set(g_f) == {"fc1.weight", "fc2.weight", "heads.0.weight", "sn1.vth", "sn2.vth"}
    for name, gs in g_s.items():
        assert gs.abs().max() > 0, f"{name}: the case must exercise every gradient"
        # The two paths add the same float32 terms in a different order (time sum before
        # or after the matmul; ~T*800 terms): agreement to ~1e-5 of the gradient's scale.
        scale = gs.abs().max()
        assert (g_f[name] - gs).abs().max() <= 2e-5 * scale, name
    for a, b in zip(c_f, c_s, strict=True):
        assert torch.allclose(a, b, atol=1e-5)


def test_save_and_load_into_fresh_model():
    m = task2_model()
    m.train()
    x = torch.randn(16, 784)
    m(x)  # one circuit update so that the state is not the initial one
    m.eval()
    expected = m(x)
    torch.manual_seed(123)
    fresh = SpikingMLP()
    fresh.load_state_dict(m.state_dict())
    fresh.eval()
    assert fresh.circuit_sizes() == m.circuit_sizes() == [80 + 140, 200 + 140, 100 + 140]
    assert [c.blocks for c in fresh.circuits()] == [[150, 70], [270, 70], [170, 70]]
    assert [c.old_rows for c in fresh.circuits()] == [150, 270, 170]
    assert torch.equal(fresh(x), expected)


def test_circuits_learn_only_when_training_and_learning():
    m = task2_model()
    before = [c.weight.clone() for c in m.circuits()]
    m.eval()
    m(torch.randn(4, 784))
    assert all(torch.equal(a, c.weight) for a, c in zip(before, m.circuits(), strict=True))
    m.train()
    for c in m.circuits():
        c.learning = False
    m(torch.randn(4, 784))
    assert all(torch.equal(a, c.weight) for a, c in zip(before, m.circuits(), strict=True))
    for c in m.circuits():
        c.learning = True
    m(torch.randn(4, 784))
    for a, c in zip(before, m.circuits(), strict=True):
        k = c.old_rows
        assert torch.equal(a[:k], c.weight[:k]) and not torch.equal(a[k:], c.weight[k:])


def test_add_subspaces_validates():
    m = SpikingMLP()
    with pytest.raises(ValueError, match="needs 3 values"):
        m.add_subspaces([1, 2])
    with pytest.raises(ValueError, match="heads.0"):
        m.add_subspaces([1, 2, -3])
    assert m.circuit_sizes() == [0, 0, 0]


def test_wrong_input_size_names_layer():
    m = SpikingMLP()
    with pytest.raises(ValueError, match="fc1"):
        m(torch.randn(2, 783))
