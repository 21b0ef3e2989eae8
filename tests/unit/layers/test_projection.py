import pytest
import torch

from hlop import LateralCircuit, ProjectedConv2d, ProjectedLinear
from hlop.layers.projected import FEEDBACK_RULES

RULES = list(FEEDBACK_RULES)


def with_old_block(n: int, k: int, spiking: bool = False) -> LateralCircuit:
    c = LateralCircuit(n, spiking=spiking, spike_scale=20.0, spike_steps=40)
    c.add_subspace(k)
    c.merge()
    c.add_subspace(2)  # a learning block that must play no part in the projection
    c.projecting = True
    return c


def make_linear(rule, mode, circuit):
    torch.manual_seed(0)
    return ProjectedLinear(30, 7, bias=True, circuit=circuit, feedback=rule, proj_type=mode)


def make_conv(rule, mode, circuit, stride=2):
    torch.manual_seed(0)
    return ProjectedConv2d(
        3,
        5,
        3,
        stride=stride,
        padding=1,
        bias=True,
        circuit=circuit,
        feedback=rule,
        proj_type=mode,
    )


def sgd_step_delta(layer, x):
    layer.zero_grad()
    out = layer(x)
    (out * torch.randn_like(out)).sum().backward()
    return -0.1 * layer.weight.grad.reshape(layer.weight.shape[0], -1)


@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("mode", ["input", "weight"])
@pytest.mark.parametrize("kind", ["linear", "conv"])
def test_projected_step_is_orthogonal_to_old_subspace(kind, mode, rule):
    torch.manual_seed(1)
    if kind == "linear":
        circuit = with_old_block(30, 10)
        layer, x = make_linear(rule, mode, circuit), torch.randn(16, 30)
    else:
        circuit = with_old_block(27, 8)
        layer, x = make_conv(rule, mode, circuit), torch.randn(4, 3, 8, 8)
    delta = sgd_step_delta(layer, x)
    old = circuit.weight[: circuit.old_rows]
    assert delta.norm() > 0
    # |dW u| <= 1e-5 |dW| for every unit u in the old span (the worst u: spectral norm)
    assert torch.linalg.matrix_norm(delta @ old.t(), ord=2) <= 1e-5 * delta.norm()


@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("kind", ["linear", "conv"])
def test_input_mode_equals_weight_mode(kind, rule):
    torch.manual_seed(2)
    x = torch.randn(16, 30) if kind == "linear" else torch.randn(4, 3, 8, 8)
    grads = []
    for mode in ("input", "weight"):
        torch.manual_seed(3)
        circuit = with_old_block(30 if kind == "linear" else 27, 6)
        layer = (make_linear if kind == "linear" else make_conv)(rule, mode, circuit)
        torch.manual_seed(4)
        grads.append(sgd_step_delta(layer, x))
    assert torch.allclose(grads[0], grads[1], atol=1e-6)


def test_spiking_lateral_modes_differ_and_input_mode_is_per_row():
    torch.manual_seed(5)
    x = torch.randn(16, 30)
    deltas = {}
    for mode in ("input", "weight"):
        torch.manual_seed(3)
        circuit = with_old_block(30, 6, spiking=True)
        layer = make_linear("backprop", mode, circuit)
        torch.manual_seed(4)
        deltas[mode] = sgd_step_delta(layer, x)
    assert not torch.allclose(deltas["input"], deltas["weight"], atol=1e-6)
    # input mode: grad_W = G^T proj_q(X) with quantised lateral responses
    torch.manual_seed(3)
    circuit = with_old_block(30, 6, spiking=True)
    layer = make_linear("backprop", "input", circuit)
    torch.manual_seed(4)
    out = layer(x)
    g = torch.randn_like(out)
    (out * g).sum().backward()
    assert torch.allclose(layer.weight.grad, g.t() @ circuit.project(x), atol=1e-5)


def test_gradient_to_earlier_layers_is_unchanged_by_projection():
    torch.manual_seed(6)
    x = torch.randn(8, 30, requires_grad=True)
    circuit = with_old_block(30, 10)
    layer = make_linear("backprop", "input", circuit)
    out = layer(x)
    g = torch.randn_like(out)
    (out * g).sum().backward()
    assert torch.allclose(x.grad, g @ layer.weight, atol=1e-6)


@pytest.mark.parametrize("kind", ["linear", "conv"])
def test_feedback_rules_grad_input(kind):
    torch.manual_seed(7)
    for rule in RULES:
        if kind == "linear":
            layer = make_linear(rule, "input", None)
            x = torch.randn(8, 30, requires_grad=True)
        else:
            layer = make_conv(rule, "input", None)
            x = torch.randn(2, 3, 8, 8, requires_grad=True)
        out = layer(x)
        g = torch.randn_like(out)
        (out * g).sum().backward()
        w = layer.weight.detach()
        if rule == "backprop":
            b = w
        elif rule == "feedback-alignment":
            b = layer.feedback_weight
            assert not torch.equal(b, w)
            assert "feedback_weight" in layer.state_dict()
        else:
            fan = 30 if kind == "linear" else None
            scale = fan**-0.5 if kind == "linear" else (2.0 / (9 * 5)) ** 0.5
            b = torch.sign(w) * scale
        if kind == "linear":
            expected = g @ b
        else:
            expected = torch.nn.grad.conv2d_input(x.shape, b, g, stride=2, padding=1)
        assert torch.allclose(x.grad, expected, atol=1e-5), rule
        # the weight gradient is the ordinary one whatever the rule
        xd = x.detach()
        if kind == "linear":
            assert torch.allclose(layer.weight.grad, g.t() @ xd, atol=1e-5)
        else:
            gw = torch.nn.grad.conv2d_weight(xd, w.shape, g, stride=2, padding=1)
            assert torch.allclose(layer.weight.grad, gw, atol=1e-5)


def test_conv_circuit_learns_from_strided_patches():
    circuit = LateralCircuit(27, name="conv")
    layer = make_conv("backprop", "input", circuit, stride=2)
    x = torch.randn(2, 3, 8, 8)
    rows = layer.presynaptic(x)
    assert rows.shape == (2 * 4 * 4, 27)  # stride-2 output positions, not stride-1
    patches = torch.nn.functional.unfold(x, 3, padding=1, stride=2)
    assert torch.equal(rows[:16], patches[0].t())


def test_wrong_feature_size_names_the_layer():
    layer = ProjectedLinear(10, 3, circuit=LateralCircuit(10))
    layer.name = "fc2"
    with pytest.raises(ValueError, match="fc2.*10"):
        layer(torch.randn(4, 11))
    conv = ProjectedConv2d(3, 4, 3, padding=1)
    conv.name = "block1.conv1"
    with pytest.raises(ValueError, match="block1.conv1"):
        conv(torch.randn(2, 4, 8, 8))


def test_unknown_rule_or_mode_refused():
    with pytest.raises(ValueError, match="feedback"):
        ProjectedLinear(4, 2, feedback="hebb")
    with pytest.raises(ValueError, match="proj_type"):
        ProjectedLinear(4, 2, proj_type="both")
    with pytest.raises(ValueError, match="circuit dimension"):
        ProjectedLinear(4, 2, circuit=LateralCircuit(5))


@pytest.mark.parametrize("stride, padding, dilation", [(1, 1, 1), (2, 1, 1), (2, 0, 2), (1, 2, 2)])
def test_conv_patches_equal_unfold(stride, padding, dilation):
    conv = ProjectedConv2d(3, 4, 3, stride=stride, padding=padding, dilation=dilation)
    x = torch.randn(2, 3, 9, 9)
    patches = torch.nn.functional.unfold(x, 3, dilation, padding, stride)
    assert torch.equal(conv._activity_rows(x), patches.transpose(1, 2).reshape(-1, 27))
