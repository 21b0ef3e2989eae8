import math

import pytest
import torch

from hlop import CircuitError, LateralCircuit


def largest_principal_angle(h: torch.Tensor, u: torch.Tensor) -> float:
    """Largest principal angle (degrees) between span(h rows) and span(u columns)."""
    qh, _ = torch.linalg.qr(h.t())
    s = torch.linalg.svdvals(u.t() @ qh)
    return math.degrees(math.acos(min(1.0, s.min().item())))


@pytest.mark.slow
def test_learns_principal_subspace_then_next_block_with_old_frozen():
    torch.manual_seed(0)
    n = 40
    basis, _ = torch.linalg.qr(torch.randn(n, n))
    std = torch.tensor([3.0, 2.7, 2.4, 2.1, 1.2, 1.0, 0.8] + [0.1] * (n - 7))

    def sample(b=256):
        return (torch.randn(b, n) * std) @ basis.t()

    c = LateralCircuit(n, lr=0.01)
    c.learning = True
    c.add_subspace(4)
    for lr, steps in [(0.01, 200), (0.001, 300)]:
        c.lr = lr
        for _ in range(steps):
            c.hebbian_update(sample())
    assert largest_principal_angle(c.weight, basis[:, :4]) < 3.0

    old = c.weight.clone()
    c.merge()
    assert c.old_rows == 4 and c.blocks == [4]
    c.add_subspace(3)
    for lr, steps in [(0.05, 300), (0.005, 300)]:
        c.lr = lr
        for _ in range(steps):
            c.hebbian_update(sample())
    assert torch.equal(c.weight[:4], old)  # bit-identical
    assert largest_principal_angle(c.weight[4:], basis[:, 4:7]) < 3.0
    assert c.blocks == [4, 3]


def test_add_subspace_orthogonal_rows_and_cap_with_warning():
    c = LateralCircuit(10, name="fc1")
    assert c.add_subspace(0) == 0 and c.rows == 0
    c.add_subspace(6)
    h = c.weight
    assert torch.allclose(h @ h.t(), torch.eye(6), atol=1e-5)
    with pytest.warns(UserWarning, match="fc1.*only 4 fit"):
        added = c.add_subspace(7)
    assert added == 4 and c.rows == 10 and c.blocks == [6, 4]
    with pytest.warns(UserWarning):
        assert c.add_subspace(1) == 0
    assert c.rows == 10


@pytest.mark.parametrize("bad", [-1, 2.5, "3", True])
def test_bad_block_size(bad):
    c = LateralCircuit(8, name="layer.x")
    with pytest.raises(CircuitError, match="layer.x"):
        c.add_subspace(bad)
    assert c.rows == 0


def test_bad_activity_leaves_circuit_unchanged():
    torch.manual_seed(0)
    c = LateralCircuit(8, name="fc2")
    c.add_subspace(3)
    before = (c.weight.clone(), c.velocity.clone())
    with pytest.raises(CircuitError, match="fc2.*shape"):
        c.hebbian_update(torch.randn(5, 7))
    x = torch.randn(5, 8)
    x[2, 3] = float("nan")
    with pytest.raises(CircuitError, match="fc2.*NaN or inf"):
        c.hebbian_update(x)
    x[2, 3] = float("inf")
    with pytest.raises(CircuitError, match="fc2"):
        c.hebbian_update(x)
    assert torch.equal(c.weight, before[0]) and torch.equal(c.velocity, before[1])


def test_update_matches_rule_by_hand():
    torch.manual_seed(1)
    c = LateralCircuit(6, lr=0.1, iterations=1)
    c.add_subspace(2)
    c.merge()
    c.add_subspace(2)
    h0 = c.weight.clone()
    x = torch.randn(9, 6)
    c.hebbian_update(x)
    y = x @ h0.t()
    dh = (y.t() @ (x - y @ h0) / 9).clamp(-10, 10)
    expected = h0.clone()
    expected[2:] += 0.1 * 0.1 * dh[2:]  # momentum 0.9 from zero: 0.1 * dH
    assert torch.allclose(c.weight, expected, atol=1e-6)
    assert torch.equal(c.weight[:2], h0[:2])


def test_projection_removes_old_subspace_only():
    torch.manual_seed(2)
    c = LateralCircuit(12)
    c.add_subspace(4)
    x = torch.randn(5, 12)
    assert torch.equal(c.project(x), x)  # nothing merged yet: no projection
    c.merge()
    c.add_subspace(3)
    p = c.project(x)
    assert (p @ c.weight[:4].t()).abs().max() < 1e-5
    # the new block plays no part in the projection
    h = c.weight[:4]
    assert torch.allclose(p, x - x @ h.t() @ h, atol=1e-6)


def test_spiking_quantisation():
    c = LateralCircuit(3, spiking=True, spike_scale=2.0, spike_steps=4)
    y = c.respond(torch.tensor([[0.3, 1.0, 9.0]]), torch.eye(3))
    # s * round(T clamp(y) / s) / T with s=2, T=4: steps of 0.5, clamped to [-2, 2]
    assert torch.equal(y, torch.tensor([[0.5, 1.0, 2.0]]))


def test_state_dict_loads_into_fresh_circuit():
    torch.manual_seed(3)
    c = LateralCircuit(10, lr=0.05)
    c.add_subspace(3)
    c.hebbian_update(torch.randn(4, 10))
    c.merge()
    c.add_subspace(2)
    fresh = LateralCircuit(10, lr=0.05)
    fresh.load_state_dict(c.state_dict())
    assert fresh.blocks == [3, 2] and fresh.old_rows == 3 and fresh.rows == 5
    assert torch.equal(fresh.weight, c.weight) and torch.equal(fresh.velocity, c.velocity)
    x = torch.randn(2, 10)
    assert torch.equal(fresh.project(x), c.project(x))


@pytest.mark.parametrize("rows", [5, 50])
def test_covariance_form_equals_batch_form(rows):
    """Many rows (conv patches) use C = X^T X / B; the update is the same rule."""
    torch.manual_seed(4)
    c = LateralCircuit(12, lr=0.05, iterations=3)
    c.add_subspace(3)
    c.merge()
    c.add_subspace(4)
    h0, x = c.weight.clone(), torch.randn(rows, 12)
    c.hebbian_update(x)
    h, v = h0.clone(), torch.zeros_like(h0)
    for _ in range(3):  # the rule written out on the batch
        y = x @ h.t()
        dh = (y.t() @ (x - y @ h) / rows).clamp(-10, 10)
        v[3:] = 0.9 * v[3:] + 0.1 * dh[3:]
        h[3:] += 0.05 * v[3:]
    assert torch.allclose(c.weight, h, atol=1e-5)


@pytest.mark.parametrize("spiking", [False, True])
def test_residual_form_equals_all_rows_form(spiking):
    """The update computes the frozen rows' reconstruction once per batch (residual form);
    it is the rule written out on all rows, to float rounding, and returns the projection."""
    torch.manual_seed(5)
    c = LateralCircuit(40, lr=0.02, iterations=5, spiking=spiking, spike_scale=4.0)
    c.add_subspace(25)
    c.merge()
    c.add_subspace(6)
    c.velocity.normal_(0.0, 0.1)  # a momentum carried over from earlier batches
    h, v = c.weight.clone(), c.velocity.clone()
    x = torch.rand(16, 40)
    resid = c.hebbian_update(x)
    for _ in range(5):  # every row's response and reconstruction at every iteration
        y = c.respond(x, h)
        dh = (y.t() @ (x - y @ h) / 16).clamp(-10, 10)
        v[25:] = 0.9 * v[25:] + 0.1 * dh[25:]
        h[25:] += 0.02 * v[25:]
    assert torch.allclose(c.weight, h, atol=1e-6, rtol=0)
    assert torch.allclose(c.velocity, v, atol=1e-5, rtol=0)
    assert torch.equal(c.weight[:25], h[:25])
    assert torch.equal(resid, c.project(x))


def test_update_returns_no_residual_before_old_rows_exist():
    c = LateralCircuit(8)
    c.add_subspace(3)
    assert c.hebbian_update(torch.rand(4, 8)) is None


def test_bf16_circuit_projects_to_bf16_accuracy_and_keeps_fp32_weights():
    torch.manual_seed(6)
    ref, c = LateralCircuit(64), LateralCircuit(64, precision="bf16")
    ref.add_subspace(20)
    ref.merge()
    c.load_state_dict(ref.state_dict())
    x = torch.rand(32, 64)
    exact, got = ref.project(x), c.project(x)
    assert got.dtype == torch.float32 and c.weight.dtype == torch.float32
    assert not torch.equal(got, exact)
    assert (got - exact).abs().max() < 2e-2 * x.abs().max()
    leak = (got @ c.weight.t()).abs().max()  # what is left in the old subspace
    assert 1e-6 < leak < 2e-2 * (x @ c.weight.t()).abs().max()
    with pytest.raises(ValueError, match="precision"):
        LateralCircuit(4, precision="fp16")
