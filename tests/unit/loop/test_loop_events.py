"""Task lifecycle: what each task trains and freezes, the HLOP plugin's events in the loop,
learning-rate schedules, and bad input at the edges (output directory, checkpoints)."""

import math

import pytest
import torch
from helpers import run_state
from torch import nn

from hlop import SpikingCNN, SpikingMLP
from hlop.errors import CheckpointError
from hlop.loop.continual import evaluate_seen, run_continual, train_epoch
from hlop.loop.state import Plugin
from hlop.methods import ADDONS, METHODS
from hlop.models.settings import NetworkSettings
from hlop.run.build import build_model, load_checkpoint
from hlop.run.config import apply_overrides
from hlop.run.presets import build_benchmark, preset
from hlop.tools.cli import main

TINY = [
    "tasks=2",
    "timesteps=2",
    "hidden=32",
    "train_limit=100",
    "test_limit=50",
    "batch_size=50",
    "hlop.sizes=[[4,4,4],[2,2,2]]",
]


def tiny_run(*extra):
    torch.set_num_threads(1)
    cfg = apply_overrides(preset("pmnist-subset"), [*TINY, *extra])
    bench = build_benchmark(cfg)
    torch.manual_seed(cfg.seed)
    run = run_state(cfg, build_model(cfg, bench), bench, torch.device("cpu"))
    run.generator.manual_seed(cfg.seed)
    return run, cfg


# ---------------------------------------------------------------- freezing
def tiny_cnn(**neuron):
    torch.manual_seed(0)
    opts = NetworkSettings(timesteps=2, neuron=neuron)
    return SpikingCNN(1, 8, 10, channels=(4, 8), shared_head=False, settings=opts)


def weight_matrices(model):
    return {n for n, p in model.named_parameters() if p.dim() > 1}


def test_cnn_later_task_trains_only_weight_matrices():
    model = tiny_cnn()
    model.begin_task(0, 10)
    model.begin_task(1, 10)
    names = {n for n, _ in model.named_parameters()}
    assert {"heads.0.bias", "heads.1.bias", "sns.0.vth", "bns.1.weight", "bns.1.bias"} <= names
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == weight_matrices(model)
    assert trainable == {"convs.0.weight", "convs.1.weight", "heads.0.weight", "heads.1.weight"}
    ids = {id(p) for p in model.trainable_parameters()}
    assert ids == {id(p) for n, p in model.named_parameters() if n in trainable}
    assert len(model.trainable_parameters()) == 4
    # batch norm stays in eval mode with fixed statistics through a training forward
    model.train()
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(bns) == 2 and not any(bn.training for bn in bns)
    stats = {
        k: v.clone() for k, v in model.state_dict().items() if "running" in k or "tracked" in k
    }
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    out = model(torch.rand(4, 1, 8, 8), 1)
    out.sum().backward()
    for k, v in stats.items():
        assert torch.equal(model.state_dict()[k], v), k
    for n, p in model.named_parameters():
        assert (p.grad is not None) == (n in {"convs.0.weight", "convs.1.weight", "heads.1.weight"})
    torch.optim.SGD(model.trainable_parameters(), lr=1.0).step()
    for n, p in model.named_parameters():
        if n not in trainable:
            assert torch.equal(p.detach(), before[n]), n


def test_cnn_task_zero_trains_everything_and_updates_statistics():
    model = tiny_cnn()
    model.begin_task(0, 10)
    assert all(p.requires_grad for p in model.parameters())
    model.train()
    assert all(m.training for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    mean = model.bns[0].running_mean.clone()
    model(torch.rand(4, 1, 8, 8), 0)
    assert not torch.equal(model.bns[0].running_mean, mean)


def test_mlp_freezing_and_untrained_thresholds():
    torch.manual_seed(0)
    model = SpikingMLP(784, 16, 10, NetworkSettings(timesteps=2))
    model.begin_task(0, 10)
    assert {n for n, p in model.named_parameters() if p.requires_grad} == {
        "fc1.weight",
        "fc2.weight",
        "heads.0.weight",
        "sn1.vth",
        "sn2.vth",
    }
    model.begin_task(1, 10)
    assert {n for n, p in model.named_parameters() if p.requires_grad} == weight_matrices(model)
    assert len(model.heads) == 1  # the shared head
    fixed = SpikingMLP(784, 16, 10, NetworkSettings(timesteps=2, neuron={"train_vth": False}))
    fixed.begin_task(0, 10)
    assert {n for n, p in fixed.named_parameters() if p.requires_grad} == weight_matrices(fixed)
    cnn = tiny_cnn(train_vth=False)
    cnn.begin_task(0, 10)
    frozen = {n for n, p in cnn.named_parameters() if not p.requires_grad}
    assert frozen == {"sns.0.vth", "sns.1.vth"}


@pytest.mark.parametrize("train_vth", [False, True])
def test_train_vth_false_keeps_thresholds_through_training(train_vth):
    run, cfg = tiny_run("tasks=1", f"neuron.train_vth={str(train_vth).lower()}", "lr=0.5")
    model = run.model
    with torch.no_grad():  # some rates above Vth tau / dt: thresholds get a gradient
        model.fc1.weight.mul_(4.0)
        model.fc2.weight.mul_(4.0)
    model.begin_task(0, 10)
    initial = [n.vth.item() for n in model.neurons()]
    assert initial == [pytest.approx(0.3)] * 2
    optimizer = cfg.optimisation().make_optimizer(model.trainable_parameters())
    w = model.fc2.weight.detach().clone()
    train_epoch(run, optimizer, [])
    assert not torch.equal(w, model.fc2.weight)  # the task trained
    vth = [n.vth.item() for n in model.neurons()]
    if train_vth:
        assert any(
            abs(v - v0) > 1e-4 for v, v0 in zip(vth, initial, strict=True)
        )  # the control: they train
    else:
        assert vth == initial


# ---------------------------------------------------------------- the HLOP plugin in the loop
class Recorder(Plugin):
    """Records every event with the circuits' state at that moment."""

    def __init__(self, events, tag=""):
        self.events, self.tag = events, tag

    def snap(self, run):
        cs = run.model.circuits()
        return {
            "rows": [c.rows for c in cs],
            "old": [c.old_rows for c in cs],
            "learning": {c.learning for c in cs},
            "projecting": {c.projecting for c in cs},
            "weights": [c.weight.clone() for c in cs],
        }

    def add(self, name, run, **kw):
        self.events.append((self.tag + name, run.task, run.epoch, self.snap(run), kw))

    def before_task(self, run):
        self.add("before_task", run)

    def before_epoch(self, run):
        self.add("before_epoch", run)

    def after_batch(self, run, batch, batches, loss, acc):
        self.add("after_batch", run, batch=batch)

    def after_epoch(self, run, row):
        self.add("after_epoch", run)

    def after_training(self, run):
        self.add("after_training", run)

    def after_evaluation(self, run):
        self.add("after_evaluation", run)

    def after_task(self, run):
        self.add("after_task", run)

    def after_run(self, run, status):
        self.add("after_run", run, status=status)


def record_begin_task(model, events):
    begin = model.begin_task

    def wrapped(task, classes):
        events.append(("begin_task", task, None, None, {}))
        begin(task, classes)

    model.begin_task = wrapped


def test_hlop_plugin_lifecycle_and_event_order():
    run, cfg = tiny_run("epochs=2", "hlop.start_epochs=1")
    events = []
    record_begin_task(run.model, events)
    hlop_plugin = METHODS["hlop"].build(cfg.hlop)
    run_continual(run, [Recorder(events, "pre:"), hlop_plugin, Recorder(events)])
    names = [e[0] for e in events if not e[0].startswith("pre:")]
    epoch = ["before_epoch", "after_batch", "after_batch", "after_epoch"]
    task = ["begin_task", "before_task", *epoch, *epoch]
    task += ["after_training", "after_evaluation", "after_task"]
    assert names == [*task, *task, "after_run"]
    assert [e[4] for e in events if e[0] == "after_run"] == [{"status": "complete"}]

    post = {(e[0], e[1], e[2]): e[3] for e in events if e[3] is not None}
    # before_task: a block of hlop.sizes[task] rows; projection from task 1 on
    assert post[("pre:before_task", 0, 0)]["rows"] == [0, 0, 0]
    assert post[("before_task", 0, 0)]["rows"] == [4, 4, 4]
    assert post[("before_task", 0, 0)]["projecting"] == {False}
    assert post[("pre:before_task", 1, 1)]["rows"] == [4, 4, 4]
    assert post[("before_task", 1, 1)]["rows"] == [6, 6, 6]
    assert post[("before_task", 1, 1)]["old"] == [4, 4, 4]
    assert post[("before_task", 1, 1)]["projecting"] == {True}
    for k in (0, 1):
        # learning only from epoch start_epochs = 1: circuits unchanged through epoch 0
        assert post[("before_epoch", k, 0)]["learning"] == {False}
        assert post[("before_epoch", k, 1)]["learning"] == {True}
        w0, w1 = post[("before_epoch", k, 0)]["weights"], post[("after_epoch", k, 0)]["weights"]
        assert all(torch.equal(a, b) for a, b in zip(w0, w1, strict=True))
        w0, w1 = post[("before_epoch", k, 1)]["weights"], post[("after_epoch", k, 1)]["weights"]
        assert not any(torch.equal(a, b) for a, b in zip(w0, w1, strict=True))
        # after training: neither learning nor projecting, and merged (the lifecycle's end)
        assert post[("pre:after_training", k, 1)]["learning"] == {True}
        before = post[("pre:after_training", k, 1)]
        assert before["old"] != before["rows"]
        after = post[("after_training", k, 1)]
        assert after["learning"] == after["projecting"] == {False}
        assert after["old"] == after["rows"] == ([4] * 3 if k == 0 else [6] * 3)
    assert len(run.acc_matrix) == 2 and len(run.acc_matrix[1]) == 2


class Boom(Plugin):
    def after_epoch(self, run, row):
        if run.task == 1:
            raise RuntimeError("boom")


def test_after_run_failed_when_a_plugin_raises():
    run, cfg = tiny_run()
    events = []
    with pytest.raises(RuntimeError, match="boom"):
        run_continual(run, [METHODS["hlop"].build(cfg.hlop), Boom(), Recorder(events)])
    statuses = [e[4]["status"] for e in events if e[0] == "after_run"]
    assert statuses == ["failed"]
    assert [e[0] for e in events][-2:] == ["after_batch", "after_run"]  # no after_epoch of task 1
    assert len(run.acc_matrix) == 1


# ---------------------------------------------------------------- learning-rate schedules
def lrs(cfg, epochs):
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=cfg.lr)
    sched = cfg.optimisation().make_scheduler(opt)
    out = []
    for _ in range(epochs):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_cosine_schedule_with_warmup_by_hand():
    cfg = apply_overrides(preset("pmnist-subset"), ["scheduler=cosine", "warmup=2", "t_max=6"])
    cfg.lr = 0.2
    # warmup (e + 1) / 2, then 0.5 (1 + cos(pi (e - 2) / 4)): 1, 0.8536, 0.5, 0.1464, 0
    factors = [0.5, 1.0, 1.0, 0.8535533905932737, 0.5, 0.14644660940672627, 0.0]
    assert lrs(cfg, 7) == pytest.approx([0.2 * f for f in factors], abs=1e-12)
    assert factors[3] == pytest.approx(0.5 * (1 + math.cos(math.pi / 4)))


def test_step_schedule_by_hand():
    cfg = apply_overrides(preset("pmnist-subset"), ["step_size=2", "gamma=0.5", "lr=0.4"])
    assert cfg.scheduler == "step"
    assert lrs(cfg, 6) == pytest.approx([0.4, 0.4, 0.2, 0.2, 0.1, 0.1], abs=1e-12)


# ---------------------------------------------------------------- bad input at the edges
CLI_TINY = [
    "--timesteps",
    "2",
    "--set",
    "hidden=16",
    "--set",
    "train_limit=30",
    "--set",
    "test_limit=10",
    "--set",
    "batch_size=30",
    "--set",
    "hlop.sizes=[[2,2,2],[1,1,1]]",
]


def cli(capsys, *argv):
    torch.set_num_threads(1)
    code = main(list(argv))
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, err


def test_out_dir_naming_a_file_is_refused(tmp_path, capsys):
    f = tmp_path / "taken"
    f.write_text("mine")
    code, err = cli(capsys, "train", "--tasks", "1", *CLI_TINY, "--out-dir", str(f))
    assert code == 2 and f"--out-dir {f} is a file, not a directory" in err
    assert f.read_text() == "mine"


def test_wrong_number_of_circuit_learning_rates(tmp_path, capsys):
    out = tmp_path / "r"
    code, err = cli(capsys, "train", "--tasks", "1", *CLI_TINY, "--set", "hlop.lrs=[1,2]",
                    "--out-dir", str(out))  # fmt: skip
    assert code == 2
    assert "hlop.lrs needs 1 value or 3 (one per circuit: fc1, fc2, heads.0), got 2" in err
    assert not out.exists()


def test_load_checkpoint_refuses_other_files(tmp_path):
    text = tmp_path / "notes.pt"
    text.write_text("not a checkpoint\n")
    with pytest.raises(CheckpointError, match="cannot be read as an hlop checkpoint"):
        load_checkpoint(text)
    listed = tmp_path / "list.pt"
    torch.save([1, 2, 3], listed)
    with pytest.raises(CheckpointError, match="is not an hlop checkpoint"):
        load_checkpoint(listed)
    partial = tmp_path / "partial.pt"
    torch.save({"model": {}}, partial)
    with pytest.raises(CheckpointError, match=r"missing entries: config, task"):
        load_checkpoint(partial)
    with pytest.raises(CheckpointError, match="no such checkpoint file"):
        load_checkpoint(tmp_path / "absent.pt")


def test_overwrite_removes_stale_checkpoints(tmp_path, capsys):
    out = tmp_path / "r"
    assert cli(capsys, "train", "--tasks", "2", *CLI_TINY, "--out-dir", str(out))[0] == 0
    assert sorted(p.name for p in out.glob("checkpoint_task*.pt")) == [
        "checkpoint_task0.pt",
        "checkpoint_task1.pt",
    ]
    args = ("train", "--tasks", "1", *CLI_TINY, "--out-dir", str(out), "--overwrite")
    assert cli(capsys, *args)[0] == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "checkpoint_task0.pt",
        "config.json",
        "metrics.csv",
        "results.json",
        "state.pt",
    ]
    model, ckpt = load_checkpoint(out / "checkpoint_task0.pt")
    assert ckpt["config"]["tasks"] == 1
    rows = (out / "metrics.csv").read_text().strip().splitlines()
    assert len(rows) == 2  # header + the one epoch of the new run, none of the old one


# ---------------------------------------------------------------- replay rewrites the row
class RowProbe(Plugin):
    """At after_evaluation: the row in the matrix and a fresh evaluation of every seen task."""

    def __init__(self):
        self.rows = []

    def after_evaluation(self, run):
        self.rows.append((list(run.acc_matrix[-1]), evaluate_seen(run).aware))


@pytest.mark.parametrize("method", ["hlop", "baseline"])
def test_replay_row_is_the_evaluation_after_replay(method):
    run, cfg = tiny_run(
        "replay.enabled=true",
        "replay.memory_size=3",
        "replay.batch_size=5",
        "replay.lr=0.5",
        "replay.epochs=2",
    )
    before, after, replay = RowProbe(), RowProbe(), ADDONS["replay"].build(cfg.replay)
    plugin = METHODS[method].build(getattr(cfg, method, None))
    run_continual(run, [plugin, before, replay, after])
    assert [len(m) for m in replay.memory] == [30, 30]  # 3 per class of each task
    # task 0: no replay, the row stands; task 1: replay changed the network and the row
    assert before.rows[0][0] == after.rows[0][0] == after.rows[0][1]
    pre, post = before.rows[1], after.rows[1]
    assert pre[0] == pre[1]  # the loop's row before replay is the plain evaluation
    assert post[0] == post[1]  # after replay the row is the re-evaluation...
    assert post[0] != pre[0]  # ...which differs from the row before replay
    assert run.acc_matrix[1] == post[0]
