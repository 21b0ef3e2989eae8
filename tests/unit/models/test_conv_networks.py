import pytest
import torch
from helpers import later_task, net_settings, step_gradients

from hlop.models.cnn import SpikingCNN
from hlop.models.resnet import SpikingResNet18


@pytest.mark.parametrize("proj_type", ["input", "weight"])
@pytest.mark.parametrize("arch", ["cnn", "resnet"])
def test_conv_fast_path_equals_per_step_path(arch, proj_type):
    torch.set_num_threads(1)
    torch.manual_seed(0)
    if arch == "cnn":
        model = SpikingCNN(
            channels=(8, 16, 32), settings=net_settings(timesteps=5, proj_type=proj_type)
        )
    else:
        model = SpikingResNet18(width=4, settings=net_settings(timesteps=5, proj_type=proj_type))
    later_task(model)
    x, y = torch.randn(6, 3, 32, 32) * 2, torch.randint(0, 10, (6,))
    out_s, g_s, _ = step_gradients(model, x, y, fast=False)
    out_f, g_f, _ = step_gradients(model, x, y, fast=True)
    assert torch.allclose(out_f, out_s, atol=1e-5)
    # task 0's head and every weight matrix of the body (task 1's new head is not used)
    weights = {n for n, p in model.named_parameters() if p.dim() > 1}
    assert set(g_s) == weights - {"heads.1.weight"}
    for name, gs in g_s.items():
        assert gs.abs().max() > 0, name
        # float32 sums in another order; see test_network for the tolerance argument
        assert (g_f[name] - gs).abs().max() <= 5e-5 * gs.abs().max(), name


def test_batchnorm_in_training_mode_uses_per_step_path():
    model = SpikingCNN(channels=(4, 4, 4), settings=net_settings(timesteps=3))
    model.train()
    assert model.rule.layout(model) == "steps"  # batch statistics over T*B rows
    model.begin_task(1, 10)
    assert model.rule.layout(model) == "fast"
    assert all(not m.training for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))


def test_cnn_circuits_and_heads():
    model = SpikingCNN(settings=net_settings(timesteps=2))
    assert [c.in_features for c in model.circuits()] == [27, 576, 1152]
    assert model.head_features == 4096 and len(model.heads) == 1
    head = model.heads[0]
    assert head.bias is not None and head.circuit is None
    assert head.weight.std() < 0.02 and torch.all(head.bias == 0)
    model.add_head(10)
    x = torch.randn(2, 3, 32, 32)
    assert model(x, task=1).shape == (2, 10)
    one_channel = SpikingCNN(1, 32, settings=net_settings(timesteps=2))
    assert one_channel.circuits()[0].in_features == 9


@pytest.mark.parametrize("stem, size", [("3x3", 32), ("5x5", 84)])
def test_resnet_output_shapes(stem, size):
    torch.manual_seed(0)
    model = SpikingResNet18(5, stem=stem, settings=net_settings(timesteps=2))
    model.eval()
    assert model(torch.randn(2, 3, size, size)).shape == (2, 5)
    dims = [c.in_features for c in model.circuits()]
    assert len(dims) == 20  # stem, 8 blocks x (conv1, conv2), 3 shortcuts
    assert dims[0] == (27 if stem == "3x3" else 75)
    # block3 (first of stage 2): conv1 on 20 channels, conv2 on 40, shortcut 1x1 on 20
    names = [n for n, _ in model.projected_layers()]
    assert names[5:8] == ["blocks.2.conv1", "blocks.2.conv2", "blocks.2.shortcut"]
    assert dims[5:8] == [180, 360, 20]


def test_strided_convolution_circuit_learns_from_its_own_patches():
    model = SpikingResNet18(stem="5x5", settings=net_settings(timesteps=2))
    # T * B = 2 * 2 time-major rows: the circuit learns from the rate of each of 2 samples
    rows = model.stem.presynaptic(torch.randn(2 * 2, 3, 84, 84))
    assert rows.shape == (2 * 42 * 42, 75)  # stride 2: 42 x 42 positions, not 84 x 84


def test_domain_incremental_shared_head_has_a_circuit():
    model = SpikingResNet18(shared_head=True, settings=net_settings(timesteps=2))
    assert model.heads[0].circuit.in_features == 160 and model.heads[0].bias is None
    assert len(model.circuits()) == 21
    with pytest.raises(RuntimeError, match="shared head"):
        model.add_head(10)


@pytest.mark.slow
def test_conv_circuit_learns_principal_subspace_of_its_patches():
    """Images whose 3x3 patches (stride 3) mostly vary along 3 directions: the circuit of a
    strided conv, learning from the layer's own forward passes, finds that subspace."""
    from hlop import LateralCircuit, ProjectedConv2d

    torch.manual_seed(0)
    n = 2 * 9
    basis, _ = torch.linalg.qr(torch.randn(n, n))
    scales = torch.tensor([3.0, 2.5, 2.0] + [0.1] * (n - 3))
    # the stride-3 patches of a 2-channel 3x3 kernel tile the image: place sampled patches
    patches = (torch.randn(64 * 16, n) * scales) @ basis.t()
    x = patches.reshape(64, 4, 4, 2, 3, 3).permute(0, 3, 1, 4, 2, 5).reshape(64, 2, 12, 12)
    circuit = LateralCircuit(n, lr=0.01)
    circuit.add_subspace(3)
    circuit.learning = True
    conv = ProjectedConv2d(2, 4, 3, stride=3, circuit=circuit)
    conv.train()
    for lr, steps in [(0.01, 150), (0.002, 150)]:
        circuit.lr = lr
        for _ in range(steps):
            conv(x)
    rows = conv.presynaptic(x)
    assert torch.allclose(rows, patches)  # the circuit sees exactly the stride-3 patches
    cov = rows.t() @ rows / len(rows)
    top = torch.linalg.eigh(cov).eigenvectors[:, -3:]  # principal subspace of the patches seen
    q, _ = torch.linalg.qr(circuit.weight.t())
    cos = torch.linalg.svdvals(top.t() @ q).min().clamp(max=1.0)
    assert torch.rad2deg(torch.arccos(cos)) < 3.0
