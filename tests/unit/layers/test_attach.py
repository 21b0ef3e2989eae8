"""hlop.HLOP: lateral circuits attached with hooks to any model's Linear and Conv2d layers."""

import copy

import pytest
import torch
import torch.nn.functional as F
from helpers import as_during_task
from torch import nn

import hlop
from hlop import LateralCircuit, NetworkSettings, SpikingMLP
from hlop.core.circuit import CircuitError

SIZES = [[80, 200, 100], [70, 70, 70], [70, 70, 70]]


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def mlp(seed=0, n_in=20, hidden=16, n_out=4):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(n_in, hidden), nn.ReLU(), nn.Linear(hidden, n_out))


@pytest.mark.parametrize("proj_type", ["input", "weight"])
def test_same_updates_as_builtin_hlop_on_spiking_mlp_per_step(proj_type):
    """Per-step layout (``fast = False``): every layer sees the T*B time-major rows in one call.

    The built-in layers learn by default from the weighted rate of those rows (B rows);
    with ``hebbian_on="spikes"`` they learn from all T*B rows, which is what a per-call hook
    sees here, so that is the setting to compare.  Order is the same in both: the circuit
    learns in the layer's forward (built-in: in ``forward`` before the autograd function;
    hooks: the forward pre-hook), the projection acts on the weight gradient in backward,
    and the optimiser steps after.  The copy's own layers have no circuit (plain gradient)."""
    opts_spikes = NetworkSettings(proj_type=proj_type, fast=False, hebbian_on="spikes")
    torch.manual_seed(0)
    builtin = SpikingMLP(hidden=100, settings=opts_spikes)
    as_during_task(builtin, [[40, 60, 30], [20, 20, 20], [20, 20, 20]])
    attached = copy.deepcopy(builtin)
    names = [n for n, _ in builtin.projected_layers()]
    for _, m in attached.projected_layers():
        m.circuit = None
    hl = hlop.HLOP(
        attached, names, lrs=[0.001, 0.01, 0.01], protect_bias=False, unprotected="train"
    )
    for block in [[40, 60, 30], [20, 20, 20]]:
        hl.begin_task(block)
        hl.end_task()
    hl.begin_task([20, 20, 20])
    for (_, m), c in zip(builtin.projected_layers(), hl.circuits.values(), strict=True):
        c.load_state_dict(m.circuit.state_dict())  # the same (random) circuit weights
    assert [c.lr for c in hl.circuits.values()] == [c.lr for c in builtin.circuits()]
    start = [c.weight.clone() for c in builtin.circuits()]
    opts_ = [torch.optim.SGD(m.parameters(), lr=0.5) for m in (builtin, attached)]
    torch.manual_seed(1)
    for _ in range(3):
        x, y = torch.randn(16, 784) * 3.0, torch.randint(0, 10, (16,))
        for model, opt in zip((builtin, attached), opts_, strict=True):
            opt.zero_grad()
            F.cross_entropy(model(x), y).backward()
            opt.step()
        for (name, p), q in zip(builtin.named_parameters(), attached.parameters(), strict=True):
            assert torch.allclose(p, q, atol=1e-6, rtol=1e-5), name
        for a, b in zip(builtin.circuits(), hl.circuits.values(), strict=True):
            assert torch.allclose(a.weight, b.weight, atol=1e-6), a.name
    for a, c in zip(start, builtin.circuits(), strict=True):  # the case exercises learning
        assert c.projecting and not torch.equal(a, c.weight)


def low_rank_inputs(n, dim, rank, seed):
    g = torch.Generator().manual_seed(seed)
    basis = torch.linalg.qr(torch.randn(dim, rank, generator=g))[0].t()
    return torch.randn(n, rank, generator=g) @ basis


def test_responses_to_old_subspace_unchanged_after_end_task():
    model = mlp()
    hl = hlop.HLOP(
        model, sizes=[[8, 10], [4, 4]], lrs=[0.05, 0.05], iterations=20, protect_bias=False
    )
    tasks = [low_rank_inputs(256, 20, 5, seed) for seed in (1, 2)]
    targets = [
        torch.randint(0, 4, (256,), generator=torch.Generator().manual_seed(s)) for s in (3, 4)
    ]
    x0 = tasks[0]
    for task, (x, y) in enumerate(zip(tasks, targets, strict=True)):
        hl.begin_task()
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        if task == 1:
            before = [m.weight.detach().clone() for m in (model[0], model[2])]
            h0 = hl.circuits["0"].weight[:8]
            old_in = x0 @ h0.t() @ h0  # task 0's inputs, in the learnt subspace
            response = model[0](old_in).detach() - model[0].bias.detach()
        for _ in range(30):
            for xb, yb in zip(x.split(32), y.split(32), strict=True):
                opt.zero_grad()
                F.cross_entropy(model(xb), yb).backward()
                opt.step()
        hl.end_task()
    circuit = hl.circuits["0"]
    h = circuit.weight[:8]
    # the first circuit learnt task 0's 5-dimensional input subspace
    assert (x0 - x0 @ h.t() @ h).norm() < 1e-2 * x0.norm()
    # task 1's training moved the weights, but not along the old subspace
    # (exactly as far as the old rows are orthonormal: dW H^T = G H^T (I - H H^T); the input
    # layer's circuit has converged, the hidden layer's to within a percent)
    for m, w0, name, tol in zip((model[0], model[2]), before, "02", (1e-4, 1e-2), strict=True):
        old = hl.circuits[name].weight[: {"0": 8, "2": 10}[name]]  # task 0's rows
        delta = m.weight.detach() - w0
        assert delta.norm() > 1e-2
        assert (delta @ old.t()).norm() <= tol * delta.norm(), name
    # biases are not projected (they train or not, as the user decides); W x is unchanged
    response_after = model[0](old_in).detach() - model[0].bias.detach()
    assert torch.allclose(response_after, response, atol=1e-4)


@pytest.mark.parametrize("stride, padding, dilation", [(2, 1, 1), (2, 2, 2), (1, 0, 2)])
def test_conv_circuit_learns_from_the_layers_own_patches(stride, padding, dilation):
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 4, 3, stride=stride, padding=padding, dilation=dilation)
    model = nn.Sequential(conv, nn.Flatten())
    hl = hlop.HLOP(model, lrs=0.1)
    hl.begin_task([6])
    expected = copy.deepcopy(hl.circuits["0"])
    x = torch.randn(2, 3, 11, 11)
    model(x)
    patches = F.unfold(x, 3, dilation, padding, stride).transpose(1, 2).reshape(-1, 27)
    ones = torch.ones(len(patches), 1)  # the bias's constant input, as a 28th column
    expected.hebbian_update(torch.cat([patches, ones], dim=1))
    assert torch.allclose(hl.circuits["0"].weight, expected.weight, atol=1e-6)


def test_conv_gradient_projected_in_weight_mode():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, stride=2, padding=1), nn.Flatten())
    hl = hlop.HLOP(model, lrs=0.1, iterations=20, protect_bias=False)
    hl.begin_task([6])
    hl.end_task()  # orthonormal rows, as initialised: an exact projector
    hl.begin_task([2])
    out = model(torch.randn(4, 3, 8, 8))
    out.square().sum().backward()
    g = model[0].weight.grad.reshape(4, -1)
    old = hl.circuits["0"].weight[:6]
    assert g.norm() > 0 and (g @ old.t()).norm() <= 1e-5 * g.norm()


def test_per_call_and_averaged_modes_on_a_per_step_loop():
    """A hand-written loop calls the layer once per time step: per-call learns T times from B
    rows; averaged learns once, when backward reaches the weight, from the mean input."""
    steps, batch = 4, 8
    xs = [torch.rand(batch, 20) for _ in range(steps)]
    for mode in ("per-call", "averaged"):
        model = mlp()
        hl = hlop.HLOP(model, ["0"], lrs=0.1, hebbian=mode, protect_bias=False)
        hl.begin_task([5])
        expected = copy.deepcopy(hl.circuits["0"])
        out = sum(model(x) for x in xs)
        if mode == "per-call":
            for x in xs:
                expected.hebbian_update(x)
        else:
            assert torch.equal(hl.circuits["0"].weight, expected.weight)  # nothing yet
            expected.hebbian_update(torch.stack(xs).mean(0))
        out.sum().backward()
        assert torch.allclose(hl.circuits["0"].weight, expected.weight, atol=1e-6), mode


def test_detach_restores_the_model():
    model, plain = mlp(), mlp()
    hl = hlop.HLOP(model)
    hl.begin_task([4, 4])
    hl.end_task()
    hl.begin_task([2, 2])
    hl.detach()
    for m in model.modules():
        assert not m._forward_pre_hooks and not m._forward_hooks
    for p in model.parameters():
        assert not p._backward_hooks
    x = torch.randn(8, 20)
    for m in (model, plain):
        m(x).square().sum().backward()
    for p, q in zip(model.parameters(), plain.parameters(), strict=True):
        assert torch.equal(p.grad, q.grad)
    weights = [c.weight.clone() for c in hl.circuits.values()]
    model(x)
    assert all(torch.equal(w, c.weight) for w, c in zip(weights, hl.circuits.values(), strict=True))


def test_state_dict_round_trip_and_resume():
    model = mlp()
    hl = hlop.HLOP(model, sizes=[[6, 5], [3, 2]], lrs=0.05)
    hl.begin_task()
    model(torch.randn(8, 20))
    hl.end_task()
    hl.begin_task()
    model(torch.randn(8, 20))
    state = copy.deepcopy(hl.state_dict())
    fresh_model = copy.deepcopy(model)
    fresh = hlop.HLOP(fresh_model, sizes=[[6, 5], [3, 2]], lrs=0.05)
    fresh.load_state_dict(state)
    assert fresh.task == 2 and fresh.in_task
    for a, b in zip(hl.circuits.values(), fresh.circuits.values(), strict=True):
        assert torch.equal(a.weight, b.weight) and a.blocks == b.blocks
        assert a.old_rows == b.old_rows and (b.learning, b.projecting) == (True, True)
    x = torch.randn(8, 20)
    for m in (model, fresh_model):
        m(x).sum().backward()
    for p, q in zip(model.parameters(), fresh_model.parameters(), strict=True):
        assert torch.allclose(p.grad, q.grad)
    fresh.end_task()
    fresh.begin_task()  # the schedule's last entry repeats
    assert [c.rows for c in fresh.circuits.values()] == [12, 9]
    with pytest.raises(ValueError, match="missing"):
        fresh.load_state_dict({"task": torch.tensor(0)})


def test_choice_of_layers_and_refusals():
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.Conv2d(4, 4, 3, groups=2), nn.Conv1d(4, 4, 3), nn.Linear(4, 2)
    )
    with pytest.raises(ValueError, match="'1' is a grouped convolution"):
        hlop.HLOP(model)
    with pytest.raises(ValueError, match="'2' is a Conv1d"):
        hlop.HLOP(model, ["0", "2"])
    with pytest.raises(ValueError, match="no layer named"):
        hlop.HLOP(model, ["fc"])
    hl = hlop.HLOP(model, nn.Linear)
    assert hl.names == ["3"]
    assert hlop.HLOP(model, ["3", "0"]).names == ["3", "0"]
    with pytest.raises(ValueError, match="hebbian"):
        hlop.HLOP(model, ["3"], hebbian="wfr")
    with pytest.raises(ValueError, match="block sizes needs 1 value"):
        hl.begin_task([1, 2])
    with pytest.raises(ValueError, match="1 value or 2"):
        hlop.HLOP(model, ["3", "0"], lrs=[0.1, 0.2, 0.3])


def test_spiking_lateral_neurons_and_options_reach_the_circuits():
    hl = hlop.HLOP(
        mlp(), lrs=[0.1, 0.2], iterations=3, spiking=True, spike_steps=40, protect_bias=False
    )
    c = list(hl.circuits.values())
    assert [x.lr for x in c] == [0.1, 0.2] and c[0].iterations == 3
    assert c[1].spiking and c[1].spike_steps == 40 and c[1].in_features == 16


def test_bad_activity_is_reported_with_the_layer_name():
    model = mlp()
    hl = hlop.HLOP(model)
    hl.begin_task([2, 2])
    with pytest.raises(CircuitError, match="layer '0'"):
        model(torch.full((2, 20), float("nan")))
    assert isinstance(hl.circuits["0"], LateralCircuit)


def test_snntorch_network_per_step_loop():
    """An snnTorch network (Leaky neurons, surrogate gradient, BPTT over a per-step loop)."""
    import snntorch as snn
    from snntorch import surrogate

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1, self.fc2 = nn.Linear(20, 16), nn.Linear(16, 4)
            grad = surrogate.fast_sigmoid()
            self.lif1 = snn.Leaky(beta=0.9, spike_grad=grad)
            self.lif2 = snn.Leaky(beta=0.9, spike_grad=grad)

        def forward(self, x, steps=5):
            mem1, mem2 = self.lif1.init_leaky(), self.lif2.init_leaky()
            total = 0
            for _ in range(steps):
                spk1, mem1 = self.lif1(self.fc1(x), mem1)
                spk2, mem2 = self.lif2(self.fc2(spk1), mem2)
                total = total + mem2
            return total / steps

    torch.manual_seed(0)
    net = Net()
    hl = hlop.HLOP(net, sizes=[4, 4], lrs=0.05, protect_bias=False)
    assert hl.names == ["fc1", "fc2"]
    y = torch.arange(64) % 4
    for task in range(2):
        x = low_rank_inputs(64, 20, 4, seed=task) * 3
        hl.begin_task()
        before = {n: c.weight.clone() for n, c in hl.circuits.items()}
        opt = torch.optim.SGD(net.parameters(), lr=0.1)
        for _ in range(3):
            opt.zero_grad()
            F.cross_entropy(net(x), y).backward()
            opt.step()
        for name, c in hl.circuits.items():  # every circuit learnt (fc2 from per-step spikes)
            assert not torch.equal(before[name], c.weight), name
        hl.end_task()
    hl.begin_task()
    x = low_rank_inputs(64, 20, 4, seed=2) * 3
    grads = {}
    for projected in (True, False):
        if not projected:
            hl.detach()
        net.zero_grad()
        F.cross_entropy(net(x), y).backward()
        grads[projected] = {n: getattr(net, n).weight.grad.clone() for n in hl.names}
    for name, c in hl.circuits.items():
        assert c.old_rows == 8
        expected = hlop.core.projection.project_weight_grad(grads[False][name], c.project)
        assert torch.allclose(grads[True][name], expected, atol=1e-6), name
        assert not torch.allclose(grads[True][name], grads[False][name], atol=1e-3), name


@pytest.mark.parametrize("mode", ["per-call", "averaged"])
def test_evaluation_leaves_the_circuits_unchanged(mode):
    """model.eval() decides: an evaluation forward (with or without gradients, even with a
    backward) neither changes a circuit nor leaves input pending; in averaged mode a forward
    without gradients in training mode learns nothing either (no backward, no update)."""
    model = mlp()
    hl = hlop.HLOP(model, lrs=0.5, hebbian=mode, protect_bias=False)
    hl.begin_task([4, 4])
    before = {n: c.weight.clone() for n, c in hl.circuits.items()}
    x = torch.rand(8, 20)
    model.eval()
    with torch.no_grad():
        model(x)
    model(x).sum().backward()
    for name, c in hl.circuits.items():
        assert torch.equal(before[name], c.weight), name
    hidden = model[1](model[0](x)).detach()  # layer 2's input, computed in eval mode
    model.train()
    if mode == "averaged":
        with torch.no_grad():
            model(torch.rand(8, 20) * 5)
        for name, c in hl.circuits.items():
            assert torch.equal(before[name], c.weight), name
    expected = {n: copy.deepcopy(c) for n, c in hl.circuits.items()}
    expected["0"].hebbian_update(x)
    expected["2"].hebbian_update(hidden)
    model(x).sum().backward()  # only this training call is learnt
    for name, c in hl.circuits.items():
        assert not torch.equal(before[name], c.weight), name  # the case exercises learning
        assert torch.allclose(expected[name].weight, c.weight, atol=1e-6), name
    hl.end_task()
    merged = {n: c.weight.clone() for n, c in hl.circuits.items()}
    model(x).sum().backward()  # between tasks (training mode) nothing learns either
    assert all(torch.equal(merged[n], c.weight) for n, c in hl.circuits.items())


def test_averaged_mode_learns_pending_input_at_end_task():
    """Averaged mode: training calls not yet followed by a backward are learnt once, from
    their mean, by end_task (before the merge); nothing carries into the next task."""
    model = mlp()
    hl = hlop.HLOP(model, ["0"], lrs=0.1, hebbian="averaged", protect_bias=False)
    hl.begin_task([5])
    expected = copy.deepcopy(hl.circuits["0"])
    xs = [torch.rand(8, 20) for _ in range(3)]
    for x in xs:
        model(x)  # e.g. a last forward whose loss is only logged
    assert torch.equal(hl.circuits["0"].weight, expected.weight)  # pending, not learnt
    hl.end_task()
    expected.hebbian_update(torch.stack(xs).mean(0))
    expected.merge()
    assert torch.allclose(hl.circuits["0"].weight, expected.weight, atol=1e-6)
    hl.begin_task([2])
    learnt = copy.deepcopy(hl.circuits["0"])
    x = torch.rand(8, 20)
    model(x).sum().backward()  # learns from x alone: no input of task 0 left pending
    learnt.hebbian_update(x)
    assert torch.allclose(hl.circuits["0"].weight, learnt.weight, atol=1e-6)


def test_begin_task_twice_is_refused_without_adding_blocks():
    """A second begin_task before end_task (also after loading a mid-task state) raises and
    leaves the circuits, the task count and the task in progress as they were."""
    model = mlp()
    hl = hlop.HLOP(model, sizes=[[4, 3], [2, 2]])
    assert hl.begin_task() == [4, 3]
    blocks = [list(c.blocks) for c in hl.circuits.values()]
    for sizes in (None, [2, 2]):
        with pytest.raises(RuntimeError, match="has not ended"):
            hl.begin_task(sizes)
    assert [list(c.blocks) for c in hl.circuits.values()] == blocks
    assert [c.rows for c in hl.circuits.values()] == [4, 3]
    assert hl.task == 1 and hl.in_task
    fresh = hlop.HLOP(copy.deepcopy(model), sizes=[[4, 3], [2, 2]])
    fresh.load_state_dict(hl.state_dict())
    with pytest.raises(RuntimeError, match="has not ended"):
        fresh.begin_task()
    assert [c.rows for c in fresh.circuits.values()] == [4, 3] and fresh.task == 1
    hl.end_task()
    assert hl.begin_task() == [2, 2] and hl.task == 2


@pytest.mark.parametrize(
    ("kernel", "dilation", "pad"),
    [(3, 1, (1, 1, 1, 1)), (4, 1, (1, 2, 1, 2)), (2, 3, (1, 2, 1, 2))],
    ids=["k3", "k4-asymmetric", "k2-dilated"],
)
@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")
def test_conv_padding_same_learns_and_projects_as_explicit_padding(kernel, dilation, pad):
    """padding="same" (also asymmetric: an odd total pads one more after) gives the circuit
    the conv's own patches, so the same circuits and projected gradients as the equivalent
    explicit zero padding (nn.ZeroPad2d before an unpadded conv)."""
    torch.manual_seed(0)
    same = nn.Conv2d(3, 4, kernel, padding="same", dilation=dilation)
    explicit = nn.Conv2d(3, 4, kernel, dilation=dilation)
    explicit.load_state_dict(same.state_dict())
    models = [(same, nn.Sequential(same)), (explicit, nn.Sequential(nn.ZeroPad2d(pad), explicit))]
    x, x2 = torch.randn(2, 3, 7, 7), torch.randn(4, 3, 7, 7)
    assert torch.equal(models[0][1](x), models[1][1](x))  # ``pad`` is what "same" means
    circuits, grads = [], []
    for conv, model in models:
        hl = hlop.HLOP(model, lrs=0.1)
        torch.manual_seed(1)  # the same new blocks in both
        hl.begin_task([6])
        model(x)  # learns (per call) from the patches
        hl.end_task()
        hl.begin_task([3])
        model(x2).square().sum().backward()  # learns, and the gradient is projected
        (circuit,) = hl.circuits.values()
        assert circuit.projecting and circuit.old_rows == 6
        circuits.append(circuit.weight)
        grads.append(conv.weight.grad)
    assert torch.allclose(circuits[0], circuits[1], atol=1e-6)
    assert torch.allclose(grads[0], grads[1], atol=1e-5)
