"""bf16 weight products: what is rounded and what stays fp32, in layers, circuits and whole
networks; the residual Hebbian form shared with the input projection; the precision keys."""

import pytest
import torch
import torch.nn.functional as F
from helpers import TINY_PMNIST

from hlop import CircuitSettings, NetworkSettings, SpikingMLP
from hlop.core.circuit import LateralCircuit
from hlop.layers.projected import ProjectedConv2d, ProjectedLinear
from hlop.models.testing import as_during_task
from hlop.run.config import ConfigError, apply_overrides, validate
from hlop.run.presets import preset


def _late_task_mlp(precision, proj_type="input"):
    torch.manual_seed(0)
    opts = NetworkSettings(precision=precision, proj_type=proj_type)
    return as_during_task(SpikingMLP(60, 50, 10, settings=opts), [[10, 10, 5], [6, 6, 4]])


def _step(model, x, y):
    model.zero_grad()
    F.cross_entropy(model(x), y).backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def _layer_pair(kind, precision_b):
    torch.manual_seed(1)
    make = {
        "linear": lambda p: ProjectedLinear(30, 20, circuit=LateralCircuit(30), precision=p),
        "conv": lambda p: ProjectedConv2d(3, 8, 3, 1, 1, circuit=LateralCircuit(27), precision=p),
    }[kind]
    a, b = make("fp32"), make(precision_b)
    b.load_state_dict(a.state_dict())
    for layer in (a, b):
        layer.circuit.add_subspace(6)
        layer.circuit.merge()
        layer.circuit.projecting = True
    b.circuit.load_state_dict(a.circuit.state_dict())
    return a, b


@pytest.mark.parametrize("kind", ["linear", "conv"])
@pytest.mark.parametrize("proj_type", ["input", "weight"])
def test_bf16_layer_rounds_only_its_weight_products(kind, proj_type):
    a, b = _layer_pair(kind, "bf16")
    for layer in (a, b):
        layer.proj_type = proj_type
    shape = (16, 30) if kind == "linear" else (4, 3, 6, 6)
    x = (torch.rand(shape) < 0.3).float()  # spikes: exact in bf16
    outs, grads = [], []
    for layer in (a, b):
        xi = x.clone().requires_grad_()
        out = layer(xi)
        out.pow(2).sum().backward()
        outs.append(out.detach())
        grads.append((xi.grad, layer.weight.grad))
    assert outs[1].dtype == torch.float32
    assert not torch.equal(outs[0], outs[1])  # bf16 did run
    assert torch.allclose(outs[1], outs[0], rtol=2e-2, atol=2e-2 * float(outs[0].abs().max()))
    for g32, g16 in zip(grads[0], grads[1], strict=True):
        assert torch.allclose(g16, g32, rtol=3e-2, atol=3e-2 * float(g32.abs().max()))
    # the projection stays exact: the weight gradient has no component in the old subspace
    h = b.circuit.weight
    leak = b.weight.grad.reshape(b.weight.shape[0], -1) @ h.t()
    assert leak.abs().max() < 1e-5 * b.weight.grad.abs().max()


U = 2.0**-8  # bf16's unit roundoff: 8 significant bits


@pytest.mark.parametrize("proj_type", ["input", "weight"])
@pytest.mark.parametrize(("circuits", "bound"), [("fp32", 1e-5), ("bf16", 2.5 * U)])
def test_bf16_network_projection(proj_type, circuits, bound):
    """In a whole network bf16 changes spike patterns (so gradients differ from fp32's), but
    projected gradients stay orthogonal to the old subspace: to fp32 precision with fp32
    circuits, to bf16 rounding with bf16 circuits.  The leak is of order u whatever is
    rounded (here at most 1.6 u; 1.4 u over 40 other seeds): this bound cannot tell rounding
    the projected rows themselves from the intended rounding, which leaks as much;
    test_bf16_circuit_rounds_only_the_old_component does."""
    g = torch.Generator().manual_seed(1)
    x, y = torch.rand(16, 60, generator=g), torch.randint(0, 10, (16,), generator=g)
    torch.manual_seed(0)
    opts = NetworkSettings(
        precision="bf16", proj_type=proj_type, circuit=CircuitSettings(precision=circuits)
    )
    m = as_during_task(SpikingMLP(60, 50, 10, settings=opts), [[10, 10, 5], [6, 6, 4]])
    assert m(x).dtype == torch.float32
    _step(m, x, y)
    for layer in (m.fc1, m.fc2, m.heads[0]):
        assert layer.circuit.precision == circuits
        h = layer.circuit.weight[: layer.circuit.old_rows]
        leak = (layer.weight.grad @ h.t()).abs().max() / layer.weight.grad.abs().max()
        assert leak < bound, layer.name


def _bf16_circuit_pair(n: int, k: int) -> tuple[LateralCircuit, LateralCircuit]:
    """An fp32 circuit and its bf16 twin with the same ``k`` orthonormal old rows."""
    torch.manual_seed(4)
    ref, c = LateralCircuit(n), LateralCircuit(n, precision="bf16")
    ref.add_subspace(k)
    ref.merge()
    c.load_state_dict(ref.state_dict())
    return ref, c


def test_bf16_circuit_rounds_only_the_old_component():
    """A bf16 circuit rounds the operands of ``Y = X H^T`` and ``Y H`` (fp32 accumulation,
    results rounded) and subtracts from the fp32 ``X``.  To first order in u, with rounding
    errors d (each at most u relative) and ``H~ = H + E``, ``y = x H^T``, for a row x::

        P~(x) = x - [(x + dx) H~^T + dy] H~ - dz
        leak:  P~(x) H^T = -dx H^T - x E^T - dy - y E H^T - dz H^T
               |.| <= u [(1 + sqrt k) |x| + (2 + sqrt k) |y|]
        off the old subspace: (P~(x) - P(x)) (I - H^T H) = -(y E + dz) (I - H^T H)
               |.| <= u (1 + sqrt k) |y|

    so for x orthogonal to the old subspace (y = 0) the error off it is second order,
    ``<= u^2 (1 + sqrt k)^2 |x|`` (measured: 60 times below), where rounding x itself
    before the projection, or its result, leaves about u |x| there (measured: 9.8 to 14
    times the bound, on every row).  The leak is of order u either way."""
    torch.set_num_threads(1)
    n, k = 64, 4
    ref, c = _bf16_circuit_pair(n, k)
    h = ref.weight
    x = torch.rand(16, n, generator=torch.Generator().manual_seed(5))
    norm, old = x.norm(dim=1), (x @ h.t()).norm(dim=1)
    got, exact = c.project(x), ref.project(x)
    assert not torch.equal(got, exact)  # bf16 did run
    leak = (got @ h.t()).norm(dim=1)
    assert (leak <= U * ((1 + k**0.5) * norm + (2 + k**0.5) * old)).all()
    off = ref.project(got - exact).norm(dim=1)
    assert (off <= U * (1 + k**0.5) * old).all()
    orth = exact  # rows orthogonal to the old subspace (to fp32 precision)
    off = ref.project(c.project(orth) - orth).norm(dim=1)
    assert (off <= U**2 * (1 + k**0.5) ** 2 * orth.norm(dim=1)).all()


def test_bf16_circuit_layer_keeps_the_projected_rows_in_fp32():
    """Input mode with a bf16 circuit: the weight gradient ``g^T P~(x)`` takes the circuit's
    projection unrounded, so for rows orthogonal to the old subspace it differs from the
    fp32 circuit's off the subspace by ``sum_b |g_b| u^2 (1 + sqrt k)^2 |x_b|`` at most."""
    torch.set_num_threads(1)
    n, k = 64, 4
    ref, c = _bf16_circuit_pair(n, k)
    layers = []
    for circuit in (ref, c):
        torch.manual_seed(6)
        layer = ProjectedLinear(n, 20, circuit=circuit, precision="bf16")
        circuit.projecting = True
        layers.append(layer)
    x = ref.project(torch.rand(16, n, generator=torch.Generator().manual_seed(7)))
    for layer in layers:
        layer(x).pow(2).sum().backward()
    g = 2 * layers[0](x).detach()  # the output gradient, the same for both
    diff = ref.project(layers[1].weight.grad - layers[0].weight.grad).norm(dim=1)
    bound = U**2 * (1 + k**0.5) ** 2 * (g.abs().t() @ x.norm(dim=1))
    assert (diff <= bound).all()
    assert diff.max() > 0  # the circuit did round


def test_precision_flag_validated():
    cfg = apply_overrides(preset("pmnist-subset"), ["precision=fp16"])
    with pytest.raises(ConfigError, match="precision must be one of"):
        validate(cfg)


def test_projected_residual_shared_for_static_rows(monkeypatch):
    """The input layer (static image rows) projects with the residual its Hebbian update
    computed: one projection of those rows per batch, not two."""
    m = _late_task_mlp("fp32")
    m.train()
    calls = []
    project = type(m.fc1.circuit).project

    def counting(self, x):
        calls.append(self.name)
        return project(self, x)

    monkeypatch.setattr(type(m.fc1.circuit), "project", counting)
    _step(m, torch.rand(8, 60), torch.randint(0, 10, (8,)))
    assert calls.count("fc1") == 1
    assert calls.count("fc2") == 2  # Hebbian rows (wfr) differ from the projected (rate) rows


@pytest.mark.parametrize(
    ("extra", "layers", "circuits"),
    [
        ([], "fp32", "fp32"),
        (["precision=bf16"], "bf16", "bf16"),  # hlop.precision=auto follows
        (["precision=bf16", "hlop.precision=fp32"], "bf16", "fp32"),
        (["hlop.precision=bf16"], "fp32", "bf16"),
    ],
)
def test_precision_keys_reach_layers_and_circuits(extra, layers, circuits):
    from hlop.run.build import build_model
    from hlop.run.presets import build_benchmark

    cfg = apply_overrides(preset("pmnist-subset"), [*TINY_PMNIST, *extra])
    validate(cfg)
    model = build_model(cfg, build_benchmark(cfg))
    assert {layer.precision for _, layer in model.projected_layers()} == {layers}
    assert {c.precision for c in model.circuits()} == {circuits}


@pytest.mark.parametrize("training", ["dsr", "bptt", "ottt"])
@pytest.mark.parametrize("arch", ["mlp", "cnn", "resnet"])
def test_bf16_every_network_and_training_method(arch, training):
    """One training batch of every network with every training method in bf16: finite
    scores and gradients, products in bf16, projection exact with fp32 circuits."""
    from hlop.models.cnn import SpikingCNN
    from hlop.models.resnet import SpikingResNet18
    from hlop.spiking.training import training_rule

    torch.manual_seed(0)
    opts = NetworkSettings(
        timesteps=3,
        training=training_rule(training),
        precision="bf16",
        proj_type="weight" if arch != "mlp" else "input",
        circuit=CircuitSettings(precision="fp32"),
    )
    if arch == "mlp":
        model, x = SpikingMLP(48, 32, 10, settings=opts), torch.rand(6, 48)
    elif arch == "cnn":
        model, x = SpikingCNN(channels=(4, 8, 8), settings=opts), torch.randn(6, 3, 32, 32)
    else:
        model, x = SpikingResNet18(width=4, settings=opts), torch.randn(6, 3, 32, 32)
    old = [min(4, c.in_features // 2) for c in model.circuits()]
    with torch.no_grad():
        for c, k in zip(model.circuits(), old, strict=True):
            c.add_subspace(k)
            c.weight.copy_(torch.linalg.qr(c.weight.t())[0].t())
            c.merge()
            c.projecting = True
    model.train()
    model.begin_task(1, 10)
    y = torch.randint(0, 10, (6,))
    out, _ = model.rule.train_batch(model, x, y, 0, lambda loss: None)
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    for name, layer in model.projected_layers():
        g = layer.weight.grad
        assert g is not None and torch.isfinite(g).all(), name
        h = layer.circuit.weight[: layer.circuit.old_rows]
        flat = g.reshape(g.shape[0], -1)
        assert (flat @ h.t()).abs().max() <= 1e-5 * flat.abs().max() + 1e-12, name
