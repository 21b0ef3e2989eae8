"""The seams between config, network, rule and layers: options reach the built model, every
rule's weight gradient is orthogonal to the old subspace, the fast path's fallbacks."""

import pytest
import torch
from helpers import as_during_task, net_settings, run_state, step_gradients

from hlop import SpikingMLP
from hlop.core.circuit import CircuitSettings
from hlop.loop.continual import train_epoch
from hlop.run.build import build_model
from hlop.run.config import apply_overrides
from hlop.run.presets import build_benchmark, preset
from hlop.spiking.neurons import DSRNeuron
from hlop.spiking.surrogate import SurrogateLIF

TINY = [
    "hidden=16",
    "timesteps=3",
    "train_limit=30",
    "test_limit=10",
    "tasks=2",
    "batch_size=10",
    "hlop.sizes=[[4,4,4],[2,2,2]]",
]


def built(training="dsr", *extra):
    torch.set_num_threads(1)  # the conftest fixture restores it
    cfg = apply_overrides(preset("pmnist-subset", training), [*TINY, *extra])
    torch.manual_seed(0)
    return cfg, build_model(cfg, build_benchmark(cfg))


def layers(model):
    layers = model.projected_layers()
    assert [n for n, _ in layers] == ["fc1", "fc2", "heads.0"]
    return [m for _, m in layers]


# ---------------------------------------------------------------- options reach the model
def test_spiking_circuit_options_reach_every_circuit():
    _, model = built("dsr", "hlop.spiking=true", "hlop.spike_scale=7.5", "hlop.spike_steps=40")
    circuits = model.circuits()
    assert len(circuits) == 3
    for c in circuits:
        assert (c.spiking, c.spike_scale, c.spike_steps) == (True, 7.5, 40)
    _, plain = built("dsr")
    assert [(c.spiking, c.spike_scale, c.spike_steps) for c in plain.circuits()] == [
        (False, 20.0, 1000)
    ] * 3


def test_circuit_learning_settings_reach_every_circuit():
    _, model = built("dsr", "hlop.lrs=[0.1,0.2,0.3]", "hlop.iterations=2")
    assert [c.lr for c in model.circuits()] == [0.1, 0.2, 0.3]
    assert [c.iterations for c in model.circuits()] == [2, 2, 2]
    _, model = built("dsr", "hlop.lrs=[0.25]")
    assert [c.lr for c in model.circuits()] == [0.25] * 3


@pytest.mark.parametrize("feedback", ["backprop", "feedback-alignment", "sign-symmetric"])
def test_feedback_rule_reaches_every_projected_layer(feedback):
    _, model = built("dsr", f"feedback={feedback}")
    state = model.state_dict()
    for m in layers(model):
        assert m.feedback == feedback
        key = f"{m.name}.feedback_weight"
        if feedback == "feedback-alignment":
            fb = state[key]
            assert fb.shape == m.weight.shape and not fb.requires_grad
            assert not torch.equal(fb, m.weight.detach())  # its own random matrix
            assert m._feedback_matrix() is m.feedback_weight
            assert all(p is not m.feedback_weight for p in model.parameters())  # not trained
        else:
            assert key not in state and m.feedback_weight is None
            if feedback == "sign-symmetric":
                expected = torch.sign(m.weight.detach()) / m.in_features**0.5
                assert torch.allclose(m._feedback_matrix(), expected)
            else:
                assert m._feedback_matrix() is None


def test_feedback_alignment_matrix_is_fixed_by_training_and_saved():
    cfg, model = built("dsr", "feedback=feedback-alignment", "lr=0.5")
    before = {k: v.clone() for k, v in model.state_dict().items() if "feedback_weight" in k}
    assert len(before) == 3
    run = run_state(cfg, model, build_benchmark(cfg), torch.device("cpu"))
    model.begin_task(0, 10)
    opt = torch.optim.SGD(model.trainable_parameters(), lr=cfg.lr)
    w = model.fc1.weight.detach().clone()
    train_epoch(run, opt, [])
    assert not torch.equal(w, model.fc1.weight)  # weights trained
    for k, v in before.items():
        assert torch.equal(model.state_dict()[k], v)


@pytest.mark.parametrize("hebbian_on", ["wfr", "spikes"])
def test_hebbian_source_reaches_every_projected_layer(hebbian_on):
    _, model = built("dsr", f"hlop.hebbian_on={hebbian_on}")
    assert [m.hebbian_on for m in layers(model)] == [hebbian_on] * 3


@pytest.mark.parametrize(
    "training, neuron", [("dsr", DSRNeuron), ("bptt", SurrogateLIF), ("ottt", SurrogateLIF)]
)
def test_training_method_builds_its_neurons(training, neuron):
    cfg, model = built(training, "surrogate.tau=3.0", "neuron.vth=0.4")
    neurons = model.neurons()
    assert len(neurons) == 2 and all(type(n) is neuron for n in neurons)
    assert model.rule.name == training
    for n in neurons:
        assert n.timesteps == 3
        if neuron is SurrogateLIF:
            assert n.tau == 3.0
        else:
            assert n.vth.item() == pytest.approx(0.4)
    # the preset's Hebbian source of the method (BPTT/OTTT learn from per-step spikes)
    assert {m.hebbian_on for m in layers(model)} == {"wfr" if training == "dsr" else "spikes"}


class CountingSGD(torch.optim.SGD):
    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.steps = 0

    def step(self, closure=None):
        self.steps += 1
        return super().step(closure)


@pytest.mark.parametrize("online", [True, False])
def test_ottt_online_update_steps_every_time_step(online):
    torch.set_num_threads(1)
    extra = ["online_update=true"] if online else []
    cfg, model = built("ottt", *extra)
    assert model.rule.online_update is online and model.rule.updates_within_batch is online
    run = run_state(cfg, model, build_benchmark(cfg), torch.device("cpu"))
    model.begin_task(0, 10)
    opt = CountingSGD(model.trainable_parameters(), lr=0.1)
    train_epoch(run, opt, [])
    batches = 3  # 30 samples in batches of 10
    assert opt.steps == batches * (cfg.timesteps if online else 1)
    # and one batch through the rule directly
    opt.steps = 0
    x, y = run.benchmark.tasks[0].train.batch(torch.arange(10))
    model.rule.train_batch(model, x, y, 0, lambda loss: None, opt)
    assert opt.steps == (3 if online else 0)


# ---------------------------------------------------------------- orthogonal weight updates
@pytest.mark.parametrize("proj_type", ["input", "weight"])
@pytest.mark.parametrize("training", ["dsr", "bptt", "ottt"])
def test_weight_gradient_is_orthogonal_to_the_old_subspace(training, proj_type):
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = SpikingMLP(
        784, 64, 10, net_settings(timesteps=3, training=training, proj_type=proj_type)
    )
    as_during_task(model, [[20, 20, 20], [5, 5, 5]])
    model.begin_task(1, 10)
    model.train()
    with torch.no_grad():  # enough activity in every layer for non-zero gradients
        model.fc1.weight.mul_(3.0)
        model.fc2.weight.mul_(3.0)
    x = torch.rand(16, 784)
    y = torch.arange(16) % 10
    model.zero_grad()
    model.rule.train_batch(model, x, y, 1, lambda loss: None)
    for _, m in model.projected_layers():
        g = m.weight.grad
        h_old = m.circuit.weight[: m.circuit.old_rows]
        assert h_old.shape[0] == 20
        g_norm = torch.linalg.matrix_norm(g, 2)
        assert g_norm > 0, f"{m.name}: the gradient must not vanish"
        leak = torch.linalg.matrix_norm(g @ h_old.t(), 2)
        assert leak <= 1e-5 * g_norm, (m.name, float(leak), float(g_norm))
    # without projection the same gradient has a large component in the old subspace
    for c in model.circuits():
        c.projecting = c.learning = False
    model.zero_grad()
    model.rule.train_batch(model, x, y, 1, lambda loss: None)
    g, h_old = model.fc2.weight.grad, model.fc2.circuit.weight[:20]
    assert torch.linalg.matrix_norm(g @ h_old.t(), 2) > 1e-2 * torch.linalg.matrix_norm(g, 2)


# ---------------------------------------------------------------- the fast path's fallbacks
def dsr_model(spiking, proj_type, hebbian_on="wfr", sizes=([6, 6, 6], [3, 3, 3])):
    torch.set_num_threads(1)
    torch.manual_seed(0)
    circuit = CircuitSettings(spiking=spiking, spike_scale=5.0, spike_steps=8)
    opts = net_settings(timesteps=3, proj_type=proj_type, circuit=circuit, hebbian_on=hebbian_on)
    return as_during_task(SpikingMLP(784, 32, 10, opts), [list(s) for s in sizes])


def test_spiking_input_projection_falls_back_to_per_step_rows():
    model = dsr_model(spiking=True, proj_type="input")
    model.train()
    assert model.rule.layout(model) == "steps"
    model(torch.rand(4, 784))
    assert model.layout == "steps"
    assert {m.layout for m in layers(model)} == {"steps"}


@pytest.mark.parametrize(
    "spiking, proj_type, projecting",
    [(True, "weight", True), (False, "input", True), (True, "input", False)],
)
def test_fast_path_where_it_gives_the_same_gradient(spiking, proj_type, projecting):
    model = dsr_model(spiking=spiking, proj_type=proj_type)
    for c in model.circuits():
        c.projecting = projecting
    model.train()
    assert model.rule.layout(model) == "fast"
    model(torch.rand(4, 784))
    assert model.layout == "fast"
    assert [m.layout for m in layers(model)] == ["static", "fast", "fast"]
    model.fast = False
    assert model.rule.layout(model) == "steps"


def test_fast_path_learns_from_per_step_spikes_as_the_per_step_path():
    model = dsr_model(spiking=False, proj_type="input", hebbian_on="spikes")
    with torch.no_grad():  # spikes in both hidden layers
        model.fc1.weight.mul_(3.0)
        model.fc2.weight.mul_(3.0)
    model.train()
    torch.manual_seed(1)
    x, y = torch.rand(8, 784), torch.randint(0, 10, (8,))
    before = [c.weight.clone() for c in model.circuits()]
    _, _, fast = step_gradients(model, x, y, fast=True)
    assert model.layout == "fast"
    _, _, steps = step_gradients(model, x, y, fast=False)
    assert model.layout == "steps"
    for a, b, c0 in zip(fast, steps, before, strict=True):
        assert (a - c0).abs().max() > 1e-4  # the circuits learnt
        assert (a - b).abs().max() <= 1e-6
    # learning from the rate instead gives another update: the source matters
    for m in layers(model):
        m.hebbian_on = "wfr"
    _, _, wfr = step_gradients(model, x, y, fast=True)
    assert (wfr[1] - fast[1]).abs().max() > 1e-4 and (wfr[2] - fast[2]).abs().max() > 1e-4
