"""Multitask: joint training on every task's data, each sample through its own head."""

import json
from collections import Counter

import pytest
import torch
from helpers import run_state

from hlop.data import JointSplit, joint_task
from hlop.loop.continual import run_continual
from hlop.loop.metrics import average_accuracy, backward_transfer, forgetting, format_matrix
from hlop.methods import METHODS, Multitask
from hlop.run.build import build_model
from hlop.run.config import apply_overrides
from hlop.run.experiment import train
from hlop.run.presets import build_benchmark, preset

TINY = ["tasks=3", "timesteps=2", "train_limit=32", "test_limit=16", "device=cpu"]
PMNIST = [*TINY, "hidden=32", "hlop.sizes=[[4,4,4],[4,4,4],[4,4,4]]"]
SPLIT = [*TINY, "epochs=1", "batch_size=16"]
BOTH = [("pmnist-subset", PMNIST), ("split-mnist-subset", SPLIT)]  # shared head, multi-head


def config(benchmark, *extra):
    cfg = preset(benchmark)
    apply_overrides(cfg, ["method=multitask", *extra])
    return cfg


def test_registered():
    assert METHODS["multitask"].plugin is Multitask


def test_joint_split_keeps_each_samples_transform_and_task():
    bench = build_benchmark(config("pmnist-subset", *PMNIST))
    joint = joint_task(bench.tasks, [0, 1, 2])
    n = len(bench.tasks[0].train)
    assert len(joint.train) == 3 * n and isinstance(joint.train, JointSplit)
    index = torch.tensor([2 * n + 5, 3, n + 7, 2 * n + 5])
    x, y = joint.train.batch(index)
    assert joint.train.task_ids(index).tolist() == [2, 0, 1, 2]
    for row, (task, i) in enumerate([(2, 5), (0, 3), (1, 7), (2, 5)]):
        xi, yi = bench.tasks[task].train.batch(torch.tensor([i]))
        assert torch.equal(x[row], xi[0]) and y[row] == yi[0]
    assert not torch.equal(x[1], x[2])  # same image index, different permutation
    assert bench.tasks[0].train.task_ids(index) is None  # a plain split: its own task


class RecordHeads:
    """Wraps a training rule's train_batch to count the samples of each task trained."""

    def __init__(self, model):
        self.seen = Counter()
        inner = model.rule.train_batch

        def train_batch(model, x, y, task, check, optimizer=None):
            ids = task.tolist() if isinstance(task, torch.Tensor) else [task] * len(y)
            self.seen.update(ids)
            return inner(model, x, y, task, check, optimizer)

        model.rule.train_batch = train_batch


@pytest.mark.parametrize("benchmark, extra", BOTH)
def test_one_step_trains_every_tasks_data(benchmark, extra):
    torch.set_num_threads(1)
    cfg = config(benchmark, *extra)
    bench = build_benchmark(cfg)
    torch.manual_seed(cfg.seed)
    model = build_model(cfg, bench)
    record = RecordHeads(model)
    run = run_state(cfg, model, bench, torch.device("cpu"))
    run_continual(run, [Multitask()])
    sizes = {k: len(bench.tasks[k].train) * cfg.epochs for k in range(3)}
    assert dict(record.seen) == sizes  # every sample of every task, epochs times
    assert run.stream == [[0, 1, 2]] and len(run.acc_matrix) == 1
    assert len(run.acc_matrix[0]) == 3  # every task, evaluated after the one step
    assert len(model.heads) == (1 if bench.shared_head else 3)


def test_per_sample_heads_match_each_tasks_own_head():
    torch.set_num_threads(1)
    cfg = config("split-mnist-subset", *SPLIT)
    bench = build_benchmark(cfg)
    model = build_model(cfg, bench)
    model.add_head(2)
    model.add_head(2)
    for head in model.heads:  # distinct heads, so that a wrong route shows
        torch.nn.init.normal_(head.weight, 0.0, 1.0)
    model.eval()
    joint = joint_task(bench.tasks[:3], [0, 1, 2])
    n = len(bench.tasks[0].train)
    index = torch.tensor([0, n + 1, 2 * n + 2, 3, 2 * n + 4, n + 5])
    x, _ = joint.train.batch(index)
    ids = joint.train.task_ids(index)
    with torch.no_grad():
        routed = model(x, ids)
        for j in range(3):
            assert torch.allclose(routed[ids == j], model(x[ids == j], j), atol=1e-6)
    # gradients reach each head from its own samples only
    model.train()
    model.zero_grad()
    torch.nn.functional.cross_entropy(model(x[:2], ids[:2]), torch.tensor([0, 1])).backward()
    assert model.heads[0].weight.grad.abs().sum() > 0
    assert model.heads[1].weight.grad.abs().sum() > 0
    assert model.heads[2].weight.grad is None or model.heads[2].weight.grad.abs().sum() == 0


@pytest.mark.parametrize("fast", [True, False])
def test_a_list_of_tasks_gives_their_heads_side_by_side_from_one_pass(fast):
    """``model(x, [tasks])``, the task-agnostic evaluation's scores, is each head's own scores
    in the list's order, bit for bit, with the body run once (DSR's fast layout and steps)."""
    torch.set_num_threads(1)
    cfg = config("split-mnist-subset", *SPLIT)
    bench = build_benchmark(cfg)
    torch.manual_seed(0)
    model = build_model(cfg, bench)
    model.fast = fast
    model.add_head(2)
    model.add_head(3)  # a head of another width
    for head in model.heads:
        torch.nn.init.normal_(head.weight, 0.0, 1.0)
    model.eval()
    x, _ = bench.tasks[0].test.batch(torch.arange(6))
    calls = []
    model.features = lambda x, inner=model.features: calls.append(1) or inner(x)
    with torch.no_grad():
        each = [model(x, j) for j in range(3)]
        calls.clear()
        side_by_side = model(x, [2, 0, 1])
    assert len(calls) == 1  # one pass of the body for every head
    assert side_by_side.shape == (6, 7)
    assert torch.equal(side_by_side, torch.cat([each[2], each[0], each[1]], dim=1))
    shared = build_model(
        config("pmnist-subset", *PMNIST), build_benchmark(config("pmnist-subset", *PMNIST))
    )
    assert model.task_heads and not shared.task_heads
    with pytest.raises(ValueError, match="one shared head"):
        shared(torch.rand(2, 784), [0, 1])


@pytest.mark.parametrize("benchmark, extra", BOTH)
def test_results_one_row_bwt_null(tmp_path, benchmark, extra):
    torch.set_num_threads(1)
    res = train(config(benchmark, *extra), tmp_path / "run")
    assert res["status"] == "complete" and res["tasks_completed"] == 3
    assert len(res["acc_matrix"]) == 1 and None not in res["acc_matrix"][0]
    assert res["acc"] == pytest.approx(sum(res["acc_matrix"][0]) / 3)
    assert res["bwt"] is None and res["forgetting"] == []
    saved = json.loads((tmp_path / "run" / "results.json").read_text())
    assert saved["bwt"] is None and saved["acc"] == res["acc"]
    assert "T2" in format_matrix(res["acc_matrix"])


def test_metrics_of_one_joint_row():
    row = [[90.0, 80.0, 70.0]]
    assert average_accuracy(row, learnt=3) == pytest.approx(80.0)
    assert backward_transfer(row, learnt=3) is None and forgetting(row, learnt=3) == []
    assert average_accuracy(row) == 90.0 and backward_transfer(row) == 0.0  # task 0 only
    text = format_matrix(row)
    assert "T2" in text and "70.00" in text and len(text.splitlines()) == 2
    with pytest.raises(ValueError, match="cannot have learnt 4"):
        average_accuracy(row, learnt=4)
