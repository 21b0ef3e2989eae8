"""hlop.HLOP on the networks people write: every time layout (per step, multi-step
``[T, B, ...]``, flattened, unbatched), biases protected with their weights, and any
optimiser kept orthogonal by projecting its updates."""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import hlop
import hlop.core.optim


@pytest.fixture(autouse=True)
def one_thread():
    torch.set_num_threads(1)  # the conftest fixture restores it


class MultiStepLinear(nn.Linear):
    """A multi-step layer as SpikingJelly's ``layer.Linear(step_mode="m")``: [T, B, N]."""

    step_mode = "m"


class MultiStepConv(nn.Conv2d):
    """A multi-step convolution as SpikingJelly's ``layer.Conv2d(step_mode="m")``: it gets
    [T, B, C, H, W] and runs the convolution on the T * B flattened samples."""

    step_mode = "m"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t, b = x.shape[:2]
        return super().forward(x.flatten(0, 1)).unflatten(0, (t, b))


def learnt_from(layer: nn.Module, x: torch.Tensor, **kw) -> torch.Tensor:
    """The circuit of ``layer`` after one per-call update from input ``x``."""
    hl = hlop.HLOP(nn.Sequential(layer), lrs=0.1, **kw)
    hl.begin_task([3])
    layer(x)
    return next(iter(hl.circuits.values())).weight.clone()


def expected_after(layer: nn.Module, rows: torch.Tensor, **kw) -> torch.Tensor:
    """The same circuit, initialised alike, after one update from ``rows`` given directly."""
    hl = hlop.HLOP(nn.Sequential(copy.deepcopy(layer)), lrs=0.1, **kw)
    torch.manual_seed(0)
    hl.begin_task([3])
    circuit = copy.deepcopy(next(iter(hl.circuits.values())))
    circuit.learning = True
    circuit.hebbian_update(rows)
    return circuit.weight


# ---------------------------------------------------------------- time layouts
@pytest.mark.parametrize("shape", [(5, 6), (4, 5, 6), (2, 4, 5, 6), (6,)], ids=str)
def test_linear_learns_every_row_of_any_layout(shape):
    layer = MultiStepLinear(6, 4, bias=False)
    x = torch.rand(*shape)
    torch.manual_seed(0)
    got = learnt_from(layer, x)
    assert torch.allclose(got, expected_after(layer, x.reshape(-1, 6)), atol=1e-6)


@pytest.mark.parametrize(
    ("layer", "shape"),
    [
        (nn.Conv2d(3, 4, 3, bias=False), (3, 7, 7)),  # unbatched
        (nn.Conv2d(3, 4, 3, bias=False), (2, 3, 7, 7)),  # per step, or T * B flattened
        (MultiStepConv(3, 4, 3, bias=False), (4, 2, 3, 7, 7)),  # multi-step
    ],
    ids=["unbatched", "batch", "multi-step"],
)
def test_conv_learns_every_patch_of_any_layout(layer, shape):
    x = torch.rand(*shape)
    torch.manual_seed(0)
    got = learnt_from(layer, x)
    flat = x.reshape(-1, 3, 7, 7)
    patches = F.unfold(flat, 3).transpose(1, 2).reshape(-1, 27)
    assert torch.allclose(got, expected_after(layer, patches), atol=1e-6)


def test_multi_step_training_runs_and_projects():
    """A multi-step convolution trains end to end (hooks on the [T, B, ...] call) and its
    gradient is projected from the second task on."""
    torch.manual_seed(0)
    conv = MultiStepConv(2, 3, 3, bias=False)
    hl = hlop.HLOP(nn.Sequential(conv), lrs=0.1)
    hl.begin_task([4])
    hl.end_task()  # orthonormal rows, as initialised: an exact projector
    hl.begin_task([2])
    conv.weight.grad = None
    conv(torch.rand(3, 2, 2, 6, 6)).square().sum().backward()
    old = hl.circuits["0"].weight[:4]
    g = conv.weight.grad.reshape(3, -1)
    assert (g @ old.t()).abs().max() < 1e-5 * g.abs().max()


def test_averaged_mode_takes_a_multi_step_call_as_its_steps():
    """One [T, B, N] call learns what T per-step calls of [B, N] learn (their mean)."""
    x = torch.rand(4, 5, 6)
    circuits = []
    for multi in (True, False):
        torch.manual_seed(0)
        layer = MultiStepLinear(6, 3, bias=False) if multi else nn.Linear(6, 3, bias=False)
        hl = hlop.HLOP(nn.Sequential(layer), lrs=0.1, hebbian="averaged")
        hl.begin_task([2])
        out = layer(x) if multi else torch.stack([layer(step) for step in x])
        out.sum().backward()
        circuits.append(hl.circuits["0"].weight)
    assert torch.allclose(*circuits, atol=1e-6)


@pytest.mark.parametrize(
    ("layer", "x", "message"),
    [
        (
            nn.Linear(6, 4),
            torch.rand(5, 7),
            r"'0' \(Linear\) got an input of shape \(5, 7\); "
            r"it reads \(\.\.\., N\) with N = 6",
        ),
        (
            nn.Conv2d(3, 4, 3),
            torch.rand(5, 7, 7),
            r"'0' \(Conv2d\) got an input of shape "
            r"\(5, 7, 7\); it reads \(C, H, W\), \(B, C, H, W\) or \(T, B, C, H, W\) with C = 3",
        ),
    ],  # fmt: skip
    ids=["linear", "conv"],
)
def test_unreadable_shape_names_the_layer_and_the_shapes_it_reads(layer, x, message):
    hl = hlop.HLOP(nn.Sequential(layer))
    hl.begin_task([2])
    with pytest.raises(ValueError, match=message):
        hl._layers["0"].rows(x)


# ---------------------------------------------------------------- biases, any optimiser
def old_subspace(hl: hlop.HLOP, name: str, rows: torch.Tensor) -> None:
    """Task 0 done, with the circuit's old rows an exact orthonormal basis of ``rows``'s span
    (what a converged circuit holds), and task 1 begun."""
    basis = torch.linalg.svd(rows, full_matrices=False)
    rank = int((basis.S > 1e-5 * basis.S[0]).sum())
    hl.begin_task([rank] + [0] * (len(hl.names) - 1))
    with torch.no_grad():
        hl.circuits[name].weight.copy_(basis.Vh[:rank])
    hl.end_task()
    hl.begin_task([0] * len(hl.names))


def linear_case():
    torch.manual_seed(1)
    layer = nn.Linear(8, 5)
    old = torch.rand(40, 3) @ torch.rand(3, 8)  # task 0's inputs: a 3-d subspace
    new = torch.rand(40, 8)
    return layer, old, new


def conv_case():
    torch.manual_seed(1)
    layer = nn.Conv2d(3, 4, 3)
    old = torch.rand(6, 3, 1, 1).expand(6, 3, 6, 6).contiguous()  # constant images: rank 3
    new = torch.rand(6, 3, 6, 6)
    return layer, old, new


def train_later_task(layer, hl, old, new, optimizer, protect="auto", steps=5) -> bool:
    rows = hl._layers["0"].rows(old)  # with the bias's constant when it is protected
    old_subspace(hl, "0", rows)
    projected = hl.protect(optimizer, protect)
    for _ in range(steps):
        optimizer.zero_grad()
        layer(new).square().mean().backward()
        optimizer.step()
    return projected


@pytest.mark.parametrize("case", [linear_case, conv_case], ids=["linear", "conv"])
def test_biases_protected_old_responses_unchanged(case):
    layer, old, new = case()
    model = nn.Sequential(layer)
    hl = hlop.HLOP(model)
    assert hl.circuits["0"].in_features == layer.weight[0].numel() + 1  # the constant input
    before_w, before_out = layer.weight.detach().clone(), layer(old).detach()
    sgd = torch.optim.SGD(layer.parameters(), lr=0.5)
    assert not train_later_task(layer, hl, old, new, sgd)  # plain SGD: gradients suffice
    assert (layer.weight - before_w).abs().max() > 1e-2  # the layer learnt task 1
    torch.testing.assert_close(layer(old), before_out, atol=1e-5, rtol=0)


@pytest.mark.parametrize("case", [linear_case, conv_case], ids=["linear", "conv"])
def test_unprotected_biases_move_old_responses(case):
    """The control: with biases left free the same training moves old responses."""
    layer, old, new = case()
    hl = hlop.HLOP(nn.Sequential(layer), protect_bias=False, unprotected="train")
    before = layer(old).detach()
    train_later_task(layer, hl, old, new, torch.optim.SGD(layer.parameters(), lr=0.5))
    assert (layer(old) - before).abs().max() > 1e-2


OPTIMIZERS = {
    "adam": lambda p: torch.optim.Adam(p, lr=0.05),
    "adamw": lambda p: torch.optim.AdamW(p, lr=0.05, weight_decay=0.5),
    "nesterov": lambda p: torch.optim.SGD(p, lr=0.2, momentum=0.9, nesterov=True),
    "hlop-adam": lambda p: hlop.core.optim.Adam(p, lr=0.05),
}


@pytest.mark.parametrize("name", list(OPTIMIZERS))
@pytest.mark.parametrize("case", [linear_case, conv_case], ids=["linear", "conv"])
def test_any_optimiser_keeps_old_responses(case, name):
    layer, old, new = case()
    hl = hlop.HLOP(nn.Sequential(layer))
    before_w, before_out = layer.weight.detach().clone(), layer(old).detach()
    assert train_later_task(layer, hl, old, new, OPTIMIZERS[name](layer.parameters()))
    assert (layer.weight - before_w).abs().max() > 1e-2
    torch.testing.assert_close(layer(old), before_out, atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", ["adam", "adamw"])
def test_without_update_projection_adam_moves_old_responses(name):
    """The control: projected gradients alone do not keep Adam's and AdamW's steps
    orthogonal."""
    layer, old, new = linear_case()
    hl = hlop.HLOP(nn.Sequential(layer))
    before = layer(old).detach()
    optimizer = OPTIMIZERS[name](layer.parameters())
    assert not train_later_task(layer, hl, old, new, optimizer, protect="off")
    assert (layer(old) - before).abs().max() > 1e-3


def test_protect_refuses_an_unknown_mode_and_detach_removes_its_hooks():
    layer, old, new = linear_case()
    hl = hlop.HLOP(nn.Sequential(layer))
    optimizer = torch.optim.Adam(layer.parameters(), lr=0.05)
    with pytest.raises(ValueError, match="updates must be"):
        hl.protect(optimizer, "sometimes")
    assert hl.protect(optimizer)
    hl.detach()
    assert not optimizer._optimizer_step_pre_hooks and not optimizer._optimizer_step_post_hooks


# ---------------------------------------------------------------- diagnostics
def test_diagnostics_measure_what_the_old_subspace_holds():
    layer, old, new = linear_case()
    model = nn.Sequential(layer)
    hl = hlop.HLOP(model)
    old_subspace(hl, "0", hl._layers["0"].rows(old))  # rank 4: 3 input dims and the bias's 1
    circuit = copy.deepcopy(hl.circuits["0"].state_dict())
    model.train()
    d = hl.diagnostics([old[:20], old[20:]])["0"]
    assert (d["rows"], d["old_rows"], d["activity_rows"]) == (4, 4, 40)
    assert d["orthonormality_error"] < 1e-6
    assert d["captured"] == pytest.approx(1.0, abs=1e-9)  # old inputs: all in the subspace
    assert d["optimal"] == pytest.approx(1.0, abs=1e-9)
    other = hl.diagnostics(new)["0"]
    assert other["captured"] < other["optimal"] < 1.0  # random inputs: the best 4 dims do more
    few = hl.diagnostics(new[:15])["0"]  # 15 rows < 4 per lateral neuron: no optimal
    assert few["optimal"] is None and few["activity_rows"] == 15
    assert model.training  # restored
    after = hl.circuits["0"].state_dict()
    assert all(torch.equal(v, after[k]) for k, v in circuit.items())  # nothing learnt


def test_diagnostics_of_a_multi_step_spiking_forward():
    """A forward callable (here: a reset before each batch, as SpikingJelly's reset_net) and
    [T, B, ...] inputs: T x B rows per batch."""
    conv = MultiStepConv(2, 3, 3, bias=False)
    hl = hlop.HLOP(nn.Sequential(conv))
    hl.begin_task([2])
    resets = []
    d = hl.diagnostics(
        [torch.rand(4, 2, 2, 5, 5)] * 3, forward=lambda m, x: resets.append(1) or m(x)
    )["0"]
    assert resets == [1, 1, 1]
    assert d["activity_rows"] == 3 * 4 * 2 * 9  # batches x T x B x patches
    assert d["optimal"] is not None and 0 <= d["captured"] <= d["optimal"] + 1e-9
