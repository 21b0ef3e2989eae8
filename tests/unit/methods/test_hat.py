"""HAT (hard attention to the task): annealing, gates, gradient blocking, compensation,
regulariser, refusals, and a tiny continual run."""

import math

import pytest
import torch
import torch.nn.functional as F
from helpers import run_state

from hlop import SpikingCNN, SpikingMLP
from hlop.loop.continual import evaluate, run_continual
from hlop.loop.state import Plugin
from hlop.methods import HAT, METHODS, Baseline
from hlop.methods.hat import (
    HATGates,
    annealed_scale,
    attention_regulariser,
    compensation,
)
from hlop.models.resnet import SpikingResNet18
from hlop.models.settings import NetworkSettings
from hlop.run.build import network_settings
from hlop.run.config import Config, ConfigError, apply_overrides, validate
from hlop.run.presets import build_benchmark, preset
from hlop.tools.cli import main

CPU = torch.device("cpu")


def tiny_cnn(training="dsr", channels=(2, 3)):
    torch.manual_seed(0)
    opts = NetworkSettings(timesteps=2, training=training)
    return SpikingCNN(1, 8, 3, channels=channels, shared_head=False, settings=opts)


def hat_run(model, **hat):
    """A RunState and a HAT plugin whose task-0 embeddings are attached to ``model``."""
    cfg = Config()
    run = run_state(cfg, model, None, CPU)
    model.begin_task(0, 3)
    plugin = HAT(**hat)
    plugin.before_task(run)
    return run, plugin


# ---------------------------------------------------------------- annealing and the gates
def test_annealed_scale_follows_the_formula():
    s_max, n = 400.0, 5
    expected = [1 / s_max + (s_max - 1 / s_max) * (b - 1) / (n - 1) for b in range(1, n + 1)]
    assert [annealed_scale(b, n, s_max) for b in range(1, n + 1)] == pytest.approx(expected)
    assert annealed_scale(1, n, s_max) == pytest.approx(1 / 400)
    assert annealed_scale(n, n, s_max) == pytest.approx(400)
    assert annealed_scale(1, 1, s_max) == pytest.approx(1 / 400)  # one batch: no annealing


class ScaleProbe(Plugin):
    """The gates' scale at each batch's after_backward (the s of that batch's forward)."""

    def __init__(self, hat):
        self.hat, self.scales = hat, []

    def after_backward(self, run):
        self.scales.append(self.hat.gates.s)


def test_each_batch_uses_the_annealed_scale():
    torch.set_num_threads(1)
    cfg = apply_overrides(
        preset("split-mnist-subset"),
        ["tasks=1", "timesteps=2", "train_limit=40", "test_limit=10", "batch_size=10", "epochs=2"],
    )
    cfg.method = "hat"
    bench = build_benchmark(cfg)
    torch.manual_seed(0)
    model = SpikingCNN(1, 32, 2, channels=(2, 2), settings=network_settings(cfg))
    hat = HAT(s_max=50.0)
    probe = ScaleProbe(hat)
    run = run_state(cfg, model, bench, CPU)
    run_continual(run, [hat, probe])
    per_epoch = [annealed_scale(b, 4, 50.0) for b in range(1, 5)]
    assert probe.scales == pytest.approx(per_epoch * 2)
    assert hat.gates.s == 50.0  # after training: evaluations at s_max


def test_gate_multiplies_spikes_with_annealed_scale_in_training_and_s_max_otherwise():
    model = tiny_cnn(channels=(3, 2))
    model.begin_task(1, 3)  # two heads
    raw = []
    model.sns[0].register_forward_hook(lambda m, a, o: raw.append(o))  # before the gate
    gates = HATGates(model, model.gated_layers().gates, s_max=2.0)
    model.hat_gates = gates
    gated = []
    model.sns[0].register_forward_hook(lambda m, a, o: gated.append(o))  # after the gate
    g = torch.Generator().manual_seed(1)
    gates.add_task(g, CPU)
    gates.add_task(g, CPU)
    x = torch.randn(4, 1, 8, 8)

    def ratio():
        r, o = raw[-1], gated[-1]
        fired = r != 0
        assert fired.any()
        per_channel = (o / torch.where(fired, r, 1.0)).transpose(0, 1).reshape(3, -1)
        return per_channel, fired.transpose(0, 1).reshape(3, -1)

    def check(e, s):
        per_channel, fired = ratio()
        for c in range(3):
            want = torch.sigmoid(s * e[c]).detach()
            assert torch.allclose(per_channel[c][fired[c]], want.expand(int(fired[c].sum())))

    model.train()
    gates.s = 0.5
    model(x, 1)  # the newest task in training: the annealed scale
    check(gates.embeddings[1][0], 0.5)
    model(x, 0)  # an earlier task: s_max
    check(gates.embeddings[0][0], 2.0)
    model.eval()
    model(x, task=1)  # evaluation: s_max, the task read from the keyword too
    check(gates.embeddings[1][0], 2.0)
    gates.remove()
    model(x, 1)
    assert torch.equal(raw[-1], gated[-1])  # the hooks are off


@pytest.mark.parametrize("layout", ["fast", "steps"])
def test_gate_scales_every_time_slice_of_dsr_layouts(layout):
    model = tiny_cnn()
    model.fast = layout == "fast"
    model.begin_task(1, 3)  # batch norm fixed: the fast layout applies
    _, plugin = hat_run(model, s_max=3.0)
    with torch.no_grad():
        for e in plugin.gates.embeddings[0]:
            e.fill_(-10.0)  # every gate shut
    model.eval()
    out = []
    model.sns[1].register_forward_hook(lambda m, a, o: out.append(o))
    model(torch.randn(2, 1, 8, 8), 0)
    assert model.layout == layout
    assert out[-1].shape[0] == (3 if layout == "fast" else 2) * 2
    assert out[-1].abs().max() < 1e-6  # every slice, the rate slice included


def test_task_agnostic_scores_read_each_head_through_its_own_tasks_gates():
    """``model(x, [tasks])`` under HAT: each head's scores from a forward with its own task's
    gates (one forward per head), side by side; without the gates' flag, a clear refusal."""
    model = tiny_cnn()
    model.begin_task(1, 3)  # two heads
    run, plugin = hat_run(model)
    run.task = 1
    plugin.before_task(run)  # task 1's embeddings
    assert model.features_per_task
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                p.mul_(8)  # weights that spike
        for e in plugin.gates.embeddings[0]:
            e.fill_(10.0)  # task 0 opens every gate
        for e in plugin.gates.embeddings[1]:
            e.fill_(-10.0)  # task 1 shuts every gate: its head sees nothing of the body
        model.heads[1].bias.fill_(0.5)
    model.eval()
    x = torch.rand(4, 1, 8, 8) * 4
    with torch.no_grad():
        both = model(x, [0, 1])
        own = torch.cat([model(x, 0), model(x, 1)], dim=1)
    assert torch.equal(both, own)
    assert both[:, :3].abs().sum() > 0  # task 0's head through task 0's open gates
    assert torch.equal(both[:, 3:], torch.full((4, 3), 0.5))  # task 1's: its bias alone
    model.features_per_task = False
    with pytest.raises(RuntimeError, match="one forward per task"):
        model(x, [0, 1])


def test_gate_scales_ottt_spikes_and_traces():
    model = tiny_cnn("ottt")
    _, plugin = hat_run(model)
    with torch.no_grad():
        plugin.gates.embeddings[0][1].copy_(torch.tensor([-10.0, 10.0, 10.0]))
    out = []
    model.sns[1].register_forward_hook(lambda m, a, o: out.append(o))
    with model.single_steps():
        for _ in range(2):
            model(torch.randn(2, 1, 8, 8) * 5, 0)
    rows = out[-1]  # [spikes; traces]: 4 rows
    assert rows.shape[0] == 4
    assert rows[:, 0].abs().max() < 1e-6


# ---------------------------------------------------------------- gradient blocking
def grads_after_backward(model, plugin, run, x, y):
    model.zero_grad()
    F.cross_entropy(model(x, run.task), y).backward()
    plugin.after_backward(run)
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_conv_gradients_are_blocked_per_channel_by_the_cumulative_masks():
    torch.set_num_threads(1)
    model = tiny_cnn()
    run, plugin = hat_run(model, c=0.0)
    with torch.no_grad():
        for e in plugin.gates.embeddings[0]:
            e.fill_(1.0)  # the current task's gates open
    # hand-set gates of earlier tasks: conv0 channel 0 used; conv1 channels 1 and 2 used
    cumulative = [torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0, 1.0])]
    x, y = torch.randn(6, 1, 8, 8) * 3, torch.tensor([0, 1, 2, 0, 1, 2])
    free = grads_after_backward(model, plugin, run, x, y)
    plugin.cumulative, plugin.factors = cumulative, plugin.blocking_factors(cumulative)
    blocked = grads_after_backward(model, plugin, run, x, y)
    g0, f0 = blocked["convs.0.weight"], free["convs.0.weight"]
    assert torch.equal(g0[0], torch.zeros_like(g0[0]))  # first layer: output mask only
    assert torch.equal(g0[1], f0[1]) and f0[1].abs().sum() > 0
    g1, f1 = blocked["convs.1.weight"], free["convs.1.weight"]
    for o in range(3):
        for i in range(2):
            if o in (1, 2) and i == 0:  # both ends used by an earlier task
                assert torch.equal(g1[o, i], torch.zeros_like(g1[o, i]))
            else:
                assert torch.equal(g1[o, i], f1[o, i]), (o, i)
    assert f1[1:, 0].abs().sum() > 0  # those gradients were not zero to start with
    assert torch.equal(blocked["heads.0.weight"], free["heads.0.weight"])  # heads: per task


def test_linear_gradients_are_blocked_between_used_units(monkeypatch):
    torch.manual_seed(0)
    model = SpikingMLP(6, 4, 3, NetworkSettings(timesteps=2))
    monkeypatch.setattr(HAT, "check", staticmethod(lambda run: None))  # shared head
    run, plugin = hat_run(model, c=0.0)
    with torch.no_grad():
        for e in plugin.gates.embeddings[0]:
            e.fill_(1.0)
    cumulative = [torch.tensor([1.0, 1.0, 0.0, 0.0]), torch.tensor([0.0, 1.0, 0.0, 1.0])]
    plugin.cumulative, plugin.factors = cumulative, plugin.blocking_factors(cumulative)
    x, y = torch.rand(5, 6) * 4, torch.tensor([0, 1, 2, 0, 1])
    g = grads_after_backward(model, plugin, run, x, y)
    zero1 = torch.tensor([1.0, 1.0, 0.0, 0.0]).bool()
    assert torch.equal(g["fc1.weight"][zero1], torch.zeros(2, 6))
    w2 = g["fc2.weight"]
    expect_zero = torch.outer(cumulative[1], cumulative[0]).bool()
    assert torch.equal(w2[expect_zero], torch.zeros(int(expect_zero.sum())))
    assert w2[~expect_zero].abs().sum() > 0


def test_cumulative_gates_are_the_max_over_all_tasks_and_task_0_still_blocks_in_task_2():
    """Three tasks learnt by hand-set embeddings: ``a_<=t`` is the elementwise max of every
    task's gates (with two tasks, keeping only the newest task's gates would pass)."""
    torch.set_num_threads(1)
    model = tiny_cnn()  # gates: sns.0 (2 channels), sns.1 (3 channels)
    run, plugin = hat_run(model, c=0.0, s_max=400.0)
    # sns.0 (s e = +-400: gates exactly 0 or 1): channel 0 used by task 0 alone before task
    # 2, which opens both; sns.1: graded gates, each task the largest on one channel
    hand = [
        ([1.0, -1.0], [2.0, -1.0, 0.5]),
        ([-1.0, -1.0], [0.0, 1.5, -2.0]),
        ([1.0, 1.0], [-0.5, 0.5, 1.0]),
    ]
    x, y = torch.randn(6, 1, 8, 8) * 3, torch.tensor([0, 1, 2, 0, 1, 2])
    gates, cumulative = [], []
    for task, (e0, e1) in enumerate(hand):
        if task:
            run.task = task
            model.begin_task(task, 3)
            plugin.before_task(run)
        with torch.no_grad():
            plugin.gates.embeddings[task][0].copy_(torch.tensor(e0))
            plugin.gates.embeddings[task][1].copy_(torch.tensor(e1) / 400)
        gates.append([torch.sigmoid(400 * e.detach()) for e in plugin.gates.embeddings[task]])
        if task == 2:
            free = grads_after_backward(model, Plugin(), run, x, y)  # unmasked
            blocked = grads_after_backward(model, plugin, run, x, y)
        plugin.after_training(run)
        cumulative.append([c.clone() for c in plugin.cumulative])
    assert gates[0][0].tolist() == [1.0, 0.0] and gates[1][0].tolist() == [0.0, 0.0]
    for t, got in enumerate(cumulative):
        for i in range(2):
            want = torch.stack([gates[k][i] for k in range(t + 1)]).amax(0)
            assert torch.equal(got[i], want), (t, i)
    maxima = torch.stack([g[1] for g in gates]).argmax(0)
    assert maxima.tolist() == [0, 1, 2]  # every task's gates count in a_<=2
    assert cumulative[2][1][0] == pytest.approx(1 / (1 + math.exp(-2.0)), rel=1e-6)
    # task 2: conv0's channel 0 feeds a unit that only task 0 used: its gradient is blocked
    g0, f0 = blocked["convs.0.weight"], free["convs.0.weight"]
    assert f0[0].abs().sum() > 0 and f0[1].abs().sum() > 0
    assert torch.equal(g0[0], torch.zeros_like(g0[0]))
    assert torch.equal(g0[1], f0[1])  # channel 1: unused by tasks 0 and 1


@pytest.mark.parametrize("clamp", [6.0, 2.5, None])
def test_embeddings_are_clamped_after_each_batch_unless_emb_clamp_is_none(clamp):
    run, plugin = hat_run(tiny_cnn(), emb_clamp=clamp)
    values = [torch.tensor([10.0, -0.5]), torch.tensor([-7.0, 2.0, 3.0])]
    with torch.no_grad():
        for e, v in zip(plugin.gates.embeddings[0], values, strict=True):
            e.copy_(v)
    plugin.after_batch(run, 1, 4, 0.0, 0.0)
    for e, v in zip(plugin.gates.embeddings[0], values, strict=True):
        want = v if clamp is None else v.clamp(-clamp, clamp)
        assert torch.equal(e.detach(), want)
    assert plugin.gates.s == annealed_scale(2, 4, plugin.settings.s_max)  # the next batch's


def test_resnet_residual_stream_is_read_by_every_block_until_a_shortcut():
    model = SpikingResNet18(3, width=2, settings=NetworkSettings(timesteps=2))
    top = model.gated_layers()
    names = [g.name for g in top.gates]
    by_weight = {w.name: w for w in top.weights}
    readers = [names[i] for i in by_weight["stem"].outputs]
    assert readers == ["blocks.0.sn1", "blocks.1.sn1", "blocks.2.sn1"]
    assert by_weight["blocks.1.conv2"].outputs == by_weight["stem"].outputs
    assert [names[i] for i in by_weight["blocks.2.shortcut"].inputs] == ["blocks.2.sn1"]
    last = [names[i] for i in by_weight["blocks.7.conv2"].outputs]
    assert last == ["blocks.7.sn1", "sn"]  # block 7 adds to the stream of block 6's shortcut
    assert by_weight["blocks.6.shortcut"].outputs == by_weight["blocks.7.conv2"].outputs
    assert by_weight["stem"].inputs == ()
    weights = {n for n, p in model.named_parameters() if p.dim() == 4}
    assert {f"{w}.weight" for w in by_weight} == weights  # every convolution is gated
    for g in top.gates:  # units match the channels the neuron sees
        assert g.units in (2, 4, 8, 16)


# ---------------------------------------------------------------- compensation, regulariser
def test_compensation_factor_against_hand_computation():
    e = torch.tensor([0.5, -1.0, 1.0])
    q = compensation(e, 2.0, 400.0, 50.0)
    hand = [400 / 2 * (math.cosh(2 * v) + 1) / (math.cosh(v) + 1) for v in (0.5, -1.0, 1.0)]
    assert q.tolist() == pytest.approx(hand, rel=1e-5)
    q = compensation(torch.tensor([1.0]), 100.0, 400.0, 50.0)  # s e = 100, clamped to 50
    assert q.item() == pytest.approx(400 / 100 * (math.cosh(50) + 1) / (math.cosh(1) + 1), rel=1e-5)


def test_compensated_gradient_is_s_max_times_the_unscaled_sigmoid_slope():
    run, plugin = hat_run(tiny_cnn(), c=0.0, s_max=400.0)
    gates = plugin.gates
    gates.s = 3.0
    e = gates.embeddings[0][0]
    torch.sigmoid(gates.s * e).sum().backward()
    plugin.after_backward(run)
    sig = torch.sigmoid(e.detach())
    assert torch.allclose(e.grad, 400.0 * sig * (1 - sig), rtol=1e-4)


def test_regulariser_value_and_gradient_against_hand_computation():
    e = torch.tensor([0.3, -0.2], requires_grad=True)
    f = torch.tensor([0.1], requires_grad=True)
    s, c = 2.0, 0.75
    masks = [torch.sigmoid(s * e), torch.sigmoid(s * f)]
    cumulative = [torch.tensor([1.0, 0.0]), torch.tensor([0.25])]
    reg = attention_regulariser(masks, cumulative, c)
    a = [1 / (1 + math.exp(-s * v)) for v in (0.3, -0.2, 0.1)]
    den = 0.0 + 1.0 + 0.75
    assert reg.item() == pytest.approx(c * (a[1] * 1.0 + a[2] * 0.75) / den, rel=1e-6)
    reg.backward()
    slope = [s * v * (1 - v) for v in a]
    assert e.grad.tolist() == pytest.approx([0.0, c * slope[1] / den], rel=1e-5)
    assert f.grad.item() == pytest.approx(c * slope[2] * 0.75 / den, rel=1e-5)
    # task 0: every unit is free, the denominator counts them all
    reg0 = attention_regulariser([torch.tensor([0.2, 0.4]), torch.tensor([0.9])], None, 1.0)
    assert reg0.item() == pytest.approx(1.5 / 3)


def test_after_backward_adds_the_regulariser_gradient_to_the_embeddings():
    run, plugin = hat_run(tiny_cnn(), c=0.5, s_max=10.0)
    gates = plugin.gates
    gates.s = 1.0  # compensation 10 (cosh terms cancel at s = 1)
    plugin.after_backward(run)  # nothing else in .grad: the regulariser's gradient alone
    n = sum(gates.units)
    for e in gates.embeddings[0]:
        sig = torch.sigmoid(e.detach())
        assert torch.allclose(e.grad, 10.0 * 0.5 * sig * (1 - sig) / n, rtol=1e-5)
    assert plugin.regulariser == pytest.approx(
        0.5 * sum(torch.sigmoid(e).sum().item() for e in gates.embeddings[0]) / n
    )


# ---------------------------------------------------------------- configuration, refusals
def test_hat_is_a_registered_method_with_validated_settings():
    assert METHODS["hat"].plugin is HAT
    cfg = preset("split-mnist-subset")
    assert (cfg.hat.c, cfg.hat.s_max, cfg.hat.thr) == (0.75, 400.0, 50.0)
    for bad in ["hat.s_max=0.5", "hat.c=-1", "hat.thr=0", "hat.emb_clamp=0"]:
        with pytest.raises(ConfigError, match=bad.split("=")[0]):
            validate(apply_overrides(preset("split-mnist-subset"), [bad]))
    validate(apply_overrides(preset("split-mnist-subset"), ["hat.emb_clamp=none"]))


def test_shared_head_benchmark_is_refused(tmp_path, capsys):
    torch.set_num_threads(1)
    argv = ["train", "pmnist-subset", "--method", "hat", "--tasks", "1"]
    assert main([*argv, "--out-dir", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "HAT needs a head per task (task-incremental); the network has one shared head" in err
    assert "(its benchmark shares one)" in err
    assert not (tmp_path / "r").exists()  # refused before anything was written


def test_ottt_online_update_is_refused(tmp_path, capsys):
    torch.set_num_threads(1)
    argv = ["train", "split-mnist-subset", "--method", "hat", "--training", "ottt"]
    argv += ["--online-update", "--tasks", "1", "--out-dir", str(tmp_path / "r")]
    assert main(argv) == 2
    assert "online update (--online-update)" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


# ---------------------------------------------------------------- a tiny continual run
class Snapshot(Plugin):
    """After task 0: the weights, and HAT's gradient factors of task 1 (if ``hat``); after
    every task: the task-0 scores of a fixed batch."""

    def __init__(self, x, hat=None):
        self.x, self.hat, self.weights, self.factors, self.scores = x, hat, None, None, []

    def after_task(self, run):
        if run.task == 0:
            self.weights = {n: p.detach().clone() for n, p in run.model.named_parameters()}
            self.factors = list(self.hat.factors) if self.hat else None
        run.model.eval()
        with torch.no_grad():
            self.scores.append(run.model(self.x, 0))


def tiny_split_mnist(method_plugin, training="dsr"):
    torch.set_num_threads(1)
    cfg = apply_overrides(
        preset("split-mnist-subset", training),
        ["tasks=2", "timesteps=2", "train_limit=200", "test_limit=100", "batch_size=20",
         "epochs=2", "lr=0.05", "scheduler=step", "hat.s_max=100"],
    )  # fmt: skip
    bench = build_benchmark(cfg)
    torch.manual_seed(cfg.seed)
    model = SpikingCNN(1, 32, 2, channels=(6, 12), settings=network_settings(cfg))
    run = run_state(cfg, model, bench, CPU)
    run.generator.manual_seed(cfg.seed)
    hat = method_plugin if isinstance(method_plugin, HAT) else None
    probe = Snapshot(bench.tasks[0].test.batch(torch.arange(50))[0], hat)
    run_continual(run, [method_plugin, probe])
    return run, probe


@pytest.mark.slow
@pytest.mark.parametrize("training", ["dsr", "bptt"])
def test_hat_keeps_task_0_where_fine_tuning_forgets(training):
    hat = HAT()
    run, probe = tiny_split_mnist(hat, training)
    acc = run.acc_matrix
    assert acc[0][0] > 80  # task 0 was learnt...
    assert acc[1][1] > 60  # ...and so was task 1, in the space left
    # weights joining units that task 0 uses did not move at all
    for w, factor in zip(hat.topology.weights, probe.factors, strict=True):
        name = f"{w.name}.weight"
        frozen = (factor == 0).expand_as(w.layer.weight)
        assert frozen.any() and not frozen.all(), name
        before = probe.weights[name]
        assert torch.equal(w.layer.weight[frozen], before[frozen]), name
        assert not torch.equal(w.layer.weight[~frozen], before[~frozen]), name
    hat_drift = (probe.scores[1] - probe.scores[0]).abs().max().item()
    assert abs(acc[1][0] - acc[0][0]) <= 2.0
    base_run, base_probe = tiny_split_mnist(Baseline(), training)
    base_drift = (base_probe.scores[1] - base_probe.scores[0]).abs().max().item()
    assert hat_drift <= 0.01 * base_drift  # without the blocking: about 0.15 (dsr)
    assert evaluate(run.model, run.benchmark.tasks[0].test, 0, 64, CPU) == acc[1][0]
