"""Fidelity to the method: the circuit's update by hand (clip, momentum, spiking quantisation),
the domain-incremental head, stride-1 Hebbian patches of strided convolutions, and the
spiking-lateral / weight-projection combination refused or switched."""

import copy

import pytest
import torch
import torch.nn.functional as F

from hlop import SpikingResNet18
from hlop.core.circuit import LateralCircuit
from hlop.layers.projected import ProjectedConv2d
from hlop.models.settings import NetworkSettings
from hlop.run.config import Config, ConfigError, apply_overrides, validate
from hlop.tools.cli import _parser, main, resolve_config


# ---------------------------------------------------------------- the Hebbian update by hand
def quantise(y, s, steps):
    return s * torch.round(steps * torch.clamp(y, -s, s) / s) / steps


def hand_update(h, vel, x, k, lr, clip, iterations, momentum=0.9, q=None):
    """The spec's update in float64, row by row: returns H, Mom and whether a value clipped."""
    h, vel, x = h.double().clone(), vel.double().clone(), x.double()
    clipped = False
    for _ in range(iterations):
        y = x @ h.t()
        if q is not None:
            y = quantise(y, *q)
        dh = y.t() @ (x - y @ h) / x.shape[0]
        dh[:k] = 0.0
        clipped |= bool((dh.abs() > clip).any())
        dh = dh.clamp(-clip, clip)
        vel[k:] = momentum * vel[k:] + (1 - momentum) * dh[k:]
        h[k:] = h[k:] + lr * vel[k:]
    return h, vel, clipped


def circuit_in_task1(n=6, **kw):
    torch.manual_seed(0)
    c = LateralCircuit(n, **kw)
    c.add_subspace(2)
    c.merge()
    c.add_subspace(2)
    return c


@pytest.mark.parametrize("batch", [4, 12])  # rows < N (row products) and > N (covariance)
def test_clipped_update_equals_the_hand_computation(batch):
    c = circuit_in_task1(lr=0.5, iterations=2, clip=0.01)
    torch.manual_seed(1)
    x = torch.randn(batch, 6) * 2.0
    h0, v0 = c.weight.clone(), c.velocity.clone()
    h, vel, clipped = hand_update(h0, v0, x, k=2, lr=0.5, clip=0.01, iterations=2)
    assert clipped  # the case exercises the clip
    _, _, unclipped_clipped = hand_update(h0, v0, x, k=2, lr=0.5, clip=10.0, iterations=2)
    h_free, _, _ = hand_update(h0, v0, x, k=2, lr=0.5, clip=10.0, iterations=2)
    assert not unclipped_clipped and (h_free - h).abs().max() > 1e-3  # the clip matters
    c.hebbian_update(x)
    assert torch.allclose(c.weight.double(), h, atol=1e-6)
    assert torch.allclose(c.velocity.double(), vel, atol=1e-7)
    assert torch.equal(c.weight[:2], h0[:2]) and torch.equal(c.velocity[:2], v0[:2])
    # from zero momentum two steps move H by lr (0.19 dH_1 + 0.1 dH_2): at most 0.29 lr clip
    assert (c.weight[2:] - h0[2:]).abs().max() <= 0.5 * 0.29 * 0.01 + 1e-7


def test_spiking_update_equals_the_hand_computation_with_quantised_responses():
    c = circuit_in_task1(lr=0.2, iterations=2, spiking=True, spike_scale=1.5, spike_steps=4)
    torch.manual_seed(2)
    x = torch.randn(5, 6)
    h0, v0 = c.weight.clone(), c.velocity.clone()
    y0 = x.double() @ h0.double().t()
    assert (y0.abs() > 1.5).any()  # some responses saturate at the scale
    assert (quantise(y0, 1.5, 4) - y0).abs().max() > 0.05  # and quantisation is coarse
    h, vel, _ = hand_update(h0, v0, x, k=2, lr=0.2, clip=10.0, iterations=2, q=(1.5, 4))
    h_plain, _, _ = hand_update(h0, v0, x, k=2, lr=0.2, clip=10.0, iterations=2)
    assert (h - h_plain).abs().max() > 1e-3  # quantisation changes the update
    c.hebbian_update(x)
    assert torch.allclose(c.weight.double(), h, atol=1e-6)
    assert torch.allclose(c.velocity.double(), vel, atol=1e-6)
    assert torch.equal(c.weight[:2], h0[:2])
    # the projection quantises the old block's responses too
    xp = torch.randn(3, 6)
    hk = c.weight[:2].double()
    expected = xp.double() - quantise(xp.double() @ hk.t(), 1.5, 4) @ hk
    assert torch.allclose(c.project(xp).double(), expected, atol=1e-6)


# ---------------------------------------------------------------- the domain-incremental head
def test_domain_incremental_resnet_shared_head_init():
    torch.manual_seed(0)
    net = SpikingResNet18(10, width=8, shared_head=True, settings=NetworkSettings(timesteps=2))
    assert len(net.heads) == 1
    head = net.heads[0]
    assert head.in_features == 64 and head.bias is None
    assert head.circuit is not None and head.circuit.in_features == 64
    assert [n for n, _ in net.projected_layers()][-1] == "heads.0"
    w = head.weight.detach()
    assert 0.008 < w.std().item() < 0.012  # N(0, 0.01); PyTorch's default would be ~0.07
    assert abs(w.mean().item()) < 0.003
    with pytest.raises(RuntimeError, match="shared head"):
        net.add_head(10)


# ---------------------------------------------------------------- stride-1 Hebbian patches
def strided_conv(circuit):
    torch.manual_seed(0)
    return ProjectedConv2d(2, 3, 3, stride=2, padding=1, bias=False, circuit=circuit,
                           hebbian_stride="one")  # fmt: skip


def test_strided_conv_learns_from_stride_one_patches():
    conv = strided_conv(LateralCircuit(18, lr=0.1, iterations=1))
    conv.circuit.add_subspace(3)
    x = torch.randn(2, 2, 7, 7)
    rows = conv.presynaptic(x)
    unfolded = F.unfold(x, 3, padding=1, stride=1).transpose(1, 2).reshape(-1, 18)
    assert rows.shape == (2 * 49, 18) and torch.equal(rows, unfolded)
    reference = copy.deepcopy(conv.circuit)
    reference.hebbian_update(unfolded)
    conv.circuit.learning = True
    conv.train()
    out = conv(x)
    assert out.shape == (2, 3, 4, 4)  # the layer itself convolves at stride 2
    assert torch.equal(conv.circuit.weight, reference.weight)
    layer_rows = F.unfold(x, 3, padding=1, stride=2).transpose(1, 2).reshape(-1, 18)
    other = copy.deepcopy(conv.circuit)
    other.hebbian_update(layer_rows)
    assert not torch.allclose(other.weight, conv.circuit.weight)  # the stride matters


def test_strided_conv_projects_with_its_own_stride_two_patches():
    conv = strided_conv(LateralCircuit(18))
    conv.circuit.add_subspace(5)
    conv.circuit.merge()
    conv.circuit.projecting = True
    x = torch.randn(2, 2, 7, 7)
    g = torch.randn(2, 3, 4, 4)
    conv.train()
    conv(x).backward(g)
    patches = F.unfold(x, 3, padding=1, stride=2).transpose(1, 2).reshape(-1, 18)
    h = conv.circuit.weight
    projected = patches - (patches @ h.t()) @ h
    g_rows = g.flatten(2).transpose(1, 2).reshape(-1, 3)
    expected = (g_rows.t() @ projected).reshape(conv.weight.shape)
    assert torch.allclose(conv.weight.grad, expected, atol=1e-5)
    plain = (g_rows.t() @ patches).reshape(conv.weight.shape)
    assert not torch.allclose(conv.weight.grad, plain, atol=1e-3)
    gw = conv.weight.grad.reshape(3, 18)
    assert (gw @ h.t()).abs().max() <= 1e-5 * gw.abs().max()


# ---------------------------------------------------------------- spiking lateral + weight mode
def test_validate_refuses_spiking_lateral_neurons_with_weight_projection():
    cfg = apply_overrides(Config(), ["hlop.sizes=[[1,1,1]]", "tasks=1"])
    validate(cfg)
    apply_overrides(cfg, ["hlop.spiking=true", "hlop.proj_type=weight"])
    with pytest.raises(ConfigError, match=r"hlop\.proj_type=input"):
        validate(cfg)


@pytest.mark.parametrize(
    "args", [["--set", "hlop.proj_type=weight"], ["--proj-type", "weight"]], ids=["set", "flag"]
)
def test_cli_refuses_explicit_weight_projection_with_spiking_lateral(tmp_path, capsys, args):
    code = main(["train", "--lateral-spiking", *args, "--out-dir", str(tmp_path / "r")])
    _, err = capsys.readouterr()
    assert code == 2 and "hlop.proj_type" in err and "spiking lateral neurons" in err
    assert not (tmp_path / "r").exists()


def test_weight_mode_preset_switches_to_input_with_a_note():
    notes = []
    args = _parser().parse_args(["train", "cifar100", "--lateral-spiking"])
    cfg = resolve_config(args, log=notes.append)
    assert cfg.hlop.spiking and cfg.hlop.proj_type == "input"
    assert len(notes) == 1 and "hlop.proj_type=input" in notes[0]
    notes.clear()
    cfg = resolve_config(_parser().parse_args(["train", "cifar100"]), log=notes.append)
    assert cfg.hlop.proj_type == "weight" and notes == []  # the preset's mode otherwise
