"""bf16 weight products where the CPU has none (:mod:`hlop.core.precision`): fp32 kernels on
bf16-rounded operands, results rounded to bf16, give what the bf16 kernels give.

Both paths run on any machine (torch's bf16 kernels are emulated, slowly, where the CPU has
no bf16 instructions): the tests switch between them and compare on small operands.
"""

import pytest
import torch
import torch.nn.functional as F
from helpers import network, step_gradients
from torch.utils._python_dispatch import TorchDispatchMode

import hlop.core.precision
from hlop.core.circuit import LateralCircuit
from hlop.core.precision import native, product
from hlop.layers.projected import ProjectedConv2d, ProjectedLinear

BF16 = torch.bfloat16
PRODUCTS = {"mm", "addmm", "bmm", "convolution", "convolution_backward"}


class _Bf16Products(TorchDispatchMode):
    """Counts the products (aten matrix products and convolutions) given bf16 tensors."""

    def __init__(self):
        super().__init__()
        self.bf16, self.all = 0, 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.overloadpacket.__name__ in PRODUCTS:
            self.all += 1
            flat = [*args, *(kwargs or {}).values()]
            self.bf16 += any(isinstance(a, torch.Tensor) and a.dtype == BF16 for a in flat)
        return func(*args, **(kwargs or {}))


def _ulp(t: torch.Tensor) -> torch.Tensor:
    """One bf16 unit in the last place of each entry (8 significant bits)."""
    return torch.exp2(torch.floor(torch.log2(t.float().abs().clamp_min(1e-30))) - 7)


def _operands(shapes, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=g) for s in shapes]


CONV = dict(stride=2, padding=1)
OPS = {
    "linear": (F.linear, [(24, 40), (16, 40), (16,)]),
    "matmul": (torch.matmul, [(24, 40), (40, 16)]),
    "conv2d": (lambda x, w, b: F.conv2d(x, w, b, **CONV), [(2, 5, 9, 9), (6, 5, 3, 3), (6,)]),
    "conv2d_input": (
        lambda g, w: torch.nn.grad.conv2d_input((2, 5, 9, 9), w, g, **CONV),
        [(2, 6, 5, 5), (6, 5, 3, 3)],
    ),
    "conv2d_weight": (
        lambda x, g: torch.nn.grad.conv2d_weight(x, (6, 5, 3, 3), g, **CONV),
        [(2, 5, 9, 9), (2, 6, 5, 5)],
    ),
}


def test_bf16_is_native_where_torch_gives_it_to_onednn_and_on_every_other_device():
    expected = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    assert native(BF16, torch.device("cpu")) is expected
    assert native(BF16, torch.device("meta")) and native(BF16, torch.device("cuda"))
    assert native(torch.float32, torch.device("cpu"))


@pytest.mark.parametrize("op", list(OPS))
def test_emulated_product_gives_the_bf16_product(monkeypatch, op):
    """The bf16 product: exact products of the rounded operands, summed, rounded once
    (float64 sums here; fp32 sums, in any order, differ in at most a few roundings)."""
    fn, shapes = OPS[op]
    operands = _operands(shapes)
    seen = []

    def spy(*args):
        seen.append({a.dtype for a in args if a is not None})
        return fn(*args)

    results = {}
    for is_native in (True, False):
        monkeypatch.setattr(hlop.core.precision, "_cpu_multiplies_bf16", lambda v=is_native: v)
        results[is_native] = product(spy, BF16, *operands)
    assert seen == [{BF16}, {torch.float32}]  # emulated: fp32 kernels
    assert results[True].dtype == BF16 and results[False].dtype == torch.float32
    assert torch.equal(results[False], results[False].to(BF16).float())  # rounded to bf16
    exact = fn(*(t.to(BF16).double() for t in operands)).to(BF16).float()
    emulated = results[False].float()
    differ = exact != emulated  # only where the order of the fp32 sums decides a rounding
    assert differ.float().mean() < 0.01, op
    assert torch.all((exact - emulated).abs()[differ] <= _ulp(exact)[differ]), op
    # the operands are rounded: unrounded ones give another result in many entries
    unrounded = fn(*operands).to(BF16).float()
    assert (unrounded != exact).float().mean() > 0.05, op
    if op in ("linear", "matmul", "conv2d"):  # torch's bf16 kernels sum in fp32 too
        assert torch.equal(results[True].float(), exact), op


def test_emulated_product_of_bf16_or_float64_operands(monkeypatch):
    monkeypatch.setattr(hlop.core.precision, "_cpu_multiplies_bf16", lambda: False)
    x, w = _operands([(8, 12), (12, 4)])
    seen = []

    def spy(a, b):
        seen.append((a.dtype, b.dtype))
        return a @ b

    for dtype in (BF16, torch.float64):
        out = product(spy, BF16, x.to(dtype), w)
        assert out.dtype == torch.float32 and torch.equal(out, out.to(BF16).float())
    assert seen == [(torch.float32, torch.float32)] * 2


@pytest.mark.parametrize("kind", ["linear", "conv"])
@pytest.mark.parametrize("proj_type", ["input", "weight"])
def test_bf16_layer_emulated_as_native(monkeypatch, kind, proj_type):
    """A projecting bf16 layer with a bf16 circuit: output, input and weight gradients of
    the emulated products are those of the bf16 kernels (up to the order of fp32 sums)."""
    torch.manual_seed(1)
    if kind == "linear":
        layer = ProjectedLinear(30, 20, circuit=LateralCircuit(30, precision="bf16"))
        x = (torch.rand(16, 30) < 0.3).float()
    else:
        layer = ProjectedConv2d(3, 8, 3, 1, 1, circuit=LateralCircuit(27, precision="bf16"))
        x = (torch.rand(4, 3, 6, 6) < 0.3).float()
    layer.precision, layer.proj_type = "bf16", proj_type
    layer.circuit.add_subspace(6)
    layer.circuit.merge()
    layer.circuit.projecting = True
    results = []
    for is_native in (True, False):
        monkeypatch.setattr(hlop.core.precision, "_cpu_multiplies_bf16", lambda v=is_native: v)
        xi = x.clone().requires_grad_()
        layer.zero_grad()
        with _Bf16Products() as products:
            out = layer(xi)
            out.pow(2).sum().backward()
        results.append((out.detach(), xi.grad, layer.weight.grad.clone()))
        # emulated: no bf16 kernel runs (every product of the layer goes through product())
        assert (products.bf16 >= 3) if is_native else (products.bf16 == 0), products.bf16
    for name, a, b in zip(("output", "input grad", "weight grad"), *results, strict=True):
        assert a.dtype == b.dtype == torch.float32
        # (torch's emulated bf16 convolution gradients round partial sums to bf16: within
        # a few bf16 roundings of the emulated products here, not equal)
        assert torch.allclose(a, b, rtol=1e-2, atol=1e-2 * float(a.abs().max())), name


@pytest.mark.parametrize("arch", ["mlp", "cnn", "resnet"])
@pytest.mark.parametrize("fast_in_parts", [False, True])
def test_bf16_network_step_runs_no_bf16_kernel_where_emulated(monkeypatch, arch, fast_in_parts):
    """A whole training step of each network (fast layout, joined or in two parts; later
    task: circuits project and learn) in bf16 with bf16 circuits, products emulated: every
    product runs in fp32, so none is left to torch's slow bf16 kernels."""
    model, x, y = network(arch, precision="bf16", proj_type="weight")
    model.fast_in_parts = fast_in_parts
    assert {c.precision for c in model.circuits()} == {"bf16"}
    monkeypatch.setattr(hlop.core.precision, "_cpu_multiplies_bf16", lambda: False)
    with _Bf16Products() as products:
        out, grads, _ = step_gradients(model, x, y, fast=True)
    assert products.all >= 10 and products.bf16 == 0
    assert out.dtype == torch.float32 and all(g.abs().max() > 0 for g in grads.values())
