"""The task-agnostic (class-incremental) accuracy matrix beside the task-aware one: hand-computed
scores, the row a step records (and replay rewrites), the runs that record it and those that
do not (one shared head)."""

import json

import pytest
import torch
from helpers import (
    FIXED_AGNOSTIC,
    FIXED_AWARE,
    FIXED_LABELS,
    FIXED_TABLE,
    FIXED_WIDTHS,
    fixed_scores_run,
)

import hlop.run.experiment
from hlop.loop.continual import evaluate, evaluate_among, evaluate_seen
from hlop.loop.state import AccuracyRow, Plugin
from hlop.run.build import load_checkpoint
from hlop.run.config import apply_overrides
from hlop.run.experiment import train
from hlop.run.presets import build_benchmark, preset

CPU = torch.device("cpu")
SPLIT = ["tasks=2", "timesteps=2", "train_limit=64", "test_limit=40", "epochs=1"]
SPLIT += ["batch_size=32", "test_batch_size=16", "diagnostics_samples=0"]
PMNIST = ["tasks=2", "timesteps=2", "hidden=32", "train_limit=64", "test_limit=40"]
PMNIST += ["hlop.sizes=[[4,4,4],[4,4,4]]"]


def rows_of(run):
    for k in range(len(run.stream)):
        run.task = k
        run.record_row(evaluate_seen(run))
    return run.acc_matrix, run.acc_matrix_agnostic


# ---------------------------------------------------------------- hand-computed scores
@pytest.mark.parametrize("batch_size", [1, 3, 64])
def test_both_matrices_of_hand_computed_scores(batch_size):
    """Every head is right on its own task's samples but for one (task-aware 75 / 100 / 100),
    while the heads of other tasks outscore it on more and more samples as they are seen
    (tests/support/helpers.py marks each sample)."""
    aware, agnostic = rows_of(fixed_scores_run(batch_size))
    assert aware == FIXED_AWARE
    assert agnostic == FIXED_AGNOSTIC


def test_the_true_class_is_offset_by_the_classes_of_the_heads_before_its_own():
    run = fixed_scores_run()
    model, tasks = run.model, run.benchmark.tasks
    # task 2's samples among heads of 2 and 3 classes: label y is column 5 + y
    assert evaluate_among(model, tasks[2].test, [0, 1, 2], FIXED_WIDTHS, 2, 4, CPU) == (100, 50)
    # the heads in another order: the offsets follow the order, the figures stay
    assert evaluate_among(model, tasks[2].test, [2, 0, 1], [2, 2, 3], 0, 4, CPU) == (100, 50)
    assert evaluate_among(model, tasks[1].test, [1, 0], [3, 2], 0, 4, CPU) == (100, 75)
    # task 0 alone: its own head, the two figures the same
    assert evaluate_among(model, tasks[0].test, [0], [2], 0, 4, CPU) == (75, 75)
    with pytest.raises(ValueError, match="gave 5 scores; their tasks have 4 classes"):
        evaluate_among(model, tasks[1].test, [1, 0], [2, 2], 0, 4, CPU)


def test_agnostic_is_never_above_aware_and_counts_by_hand():
    """A sample right over every seen head is right over its own: the agnostic count is the
    aware one less the samples whose argmax lies in another head (counted from the table)."""
    table, offsets = torch.tensor(FIXED_TABLE), [0, 2, 5]
    aware, agnostic = rows_of(fixed_scores_run())
    code = 0
    for j, labels in enumerate(FIXED_LABELS):
        for k in range(j, 3):
            seen = table[code : code + len(labels), : offsets[k] + FIXED_WIDTHS[k]]
            y = torch.tensor(labels) + offsets[j]
            expected = 100.0 * float((seen.argmax(1) == y).float().mean())
            assert agnostic[k][j] == expected <= aware[k][j]
        code += len(labels)


def test_without_a_head_per_task_only_the_task_aware_row():
    run = fixed_scores_run()
    run.acc_matrix_agnostic = None  # as for a shared head (the loop leaves it None)
    row = evaluate_seen(run)
    assert row == AccuracyRow([75.0], None)
    run.record_row(row)
    assert run.acc_matrix == [[75.0]] and run.acc_matrix_agnostic is None


def test_a_row_is_appended_or_replaced_in_both_matrices():
    run = fixed_scores_run()
    run.record_row(AccuracyRow([1.0], [2.0]))
    run.record_row(AccuracyRow([3.0], [4.0]))  # the same step again (replay): replaced
    assert run.acc_matrix == [[3.0]] and run.acc_matrix_agnostic == [[4.0]]
    run.task = 1
    run.record_row(AccuracyRow([5.0, 6.0], [7.0, 8.0]))
    assert run.acc_matrix_agnostic == [[4.0], [7.0, 8.0]]
    with pytest.raises(ValueError, match="row is missing"):
        run.record_row(AccuracyRow([5.0, 6.0]))
    run.task = 3
    with pytest.raises(ValueError, match="row 3 of an accuracy matrix of 2 rows"):
        run.record_row(AccuracyRow([0.0] * 4, [0.0] * 4))


# ---------------------------------------------------------------- real runs
def split_config(*extra):
    return apply_overrides(preset("split-mnist-subset"), [*SPLIT, *extra])


def test_a_split_run_records_both_matrices_as_its_final_model_scores(tmp_path):
    """results.json of split MNIST: the task-aware matrix as each task's own head gives it,
    the task-agnostic one as the argmax over both heads of the final model (its last row,
    recomputed here from the checkpoint), and their metrics."""
    torch.set_num_threads(1)
    res = train(split_config(), tmp_path / "run")
    saved = json.loads((tmp_path / "run" / "results.json").read_text())
    assert saved["acc_matrix_agnostic"] == res["acc_matrix_agnostic"]
    aware, agnostic = res["acc_matrix"], res["acc_matrix_agnostic"]
    assert len(agnostic) == 2 and agnostic[0][1] is None and agnostic[0][0] == aware[0][0]
    model, _ = load_checkpoint(tmp_path / "run" / "checkpoint_task1.pt")
    model.eval()
    tasks = build_benchmark(split_config()).tasks
    mine, among = [], []
    with torch.no_grad():
        for j in range(2):
            x, y = tasks[j].test.batch(torch.arange(len(tasks[j].test)))
            scores = torch.cat([model(x, 0), model(x, 1)], dim=1)  # each head alone
            mine.append(100.0 * float((scores[:, 2 * j : 2 * j + 2].argmax(1) == y).float().mean()))
            among.append(100.0 * float((scores.argmax(1) == y + 2 * j).float().mean()))
    assert aware[1] == pytest.approx(mine) and agnostic[1] == pytest.approx(among)
    assert aware[1] == [evaluate(model, t.test, j, 16, CPU) for j, t in enumerate(tasks[:2])]
    assert agnostic[1] != aware[1]  # two tasks' heads compete
    assert res["acc_agnostic"] == pytest.approx(sum(agnostic[1]) / 2)
    assert res["bwt_agnostic"] == pytest.approx(agnostic[1][0] - agnostic[0][0])
    assert res["forgetting_agnostic"] == [pytest.approx(agnostic[0][0] - agnostic[1][0])]


def test_a_shared_head_run_records_the_task_aware_matrix_alone(tmp_path):
    """Permuted MNIST (one head): results.json has no task-agnostic keys (the matrices would
    be equal), the same keys as before the task-agnostic matrix existed."""
    torch.set_num_threads(1)
    res = train(apply_overrides(preset("pmnist-subset"), PMNIST), tmp_path / "run")
    saved = json.loads((tmp_path / "run" / "results.json").read_text())
    assert not [k for k in saved if k.endswith("_agnostic")]
    assert list(saved) == [
        "benchmark", "method", "status", "tasks_completed", "task_names", "acc_matrix",
        "evaluated_on", "acc", "bwt", "forgetting", "seconds_per_task", "circuit_sizes",
        "circuit_blocks", "circuit_diagnostics", "workers", "version",
    ]  # fmt: skip
    ckpt = torch.load(tmp_path / "run" / "checkpoint_task1.pt", weights_only=True)
    assert ckpt["acc_matrix"] == [r[: i + 1] for i, r in enumerate(res["acc_matrix"])]
    assert ckpt["acc_matrix_agnostic"] is None


class RowProbe(Plugin):
    """After replay: both rows of the step, and a fresh evaluation."""

    def __init__(self):
        self.rows = []

    def after_evaluation(self, run):
        fresh = evaluate_seen(run)
        self.rows.append((run.acc_matrix[-1], run.acc_matrix_agnostic[-1], fresh))


def test_replay_rewrites_both_rows_and_multitask_has_one_joint_row(tmp_path, monkeypatch):
    torch.set_num_threads(1)
    probe = RowProbe()
    plugins = hlop.run.experiment.method_plugins
    monkeypatch.setattr(hlop.run.experiment, "method_plugins", lambda c: [*plugins(c), probe])
    extra = ["method=baseline", "replay.enabled=true", "replay.memory_size=5", "replay.lr=0.5"]
    res = train(split_config(*extra), tmp_path / "replay")
    for k, (aware, agnostic, fresh) in enumerate(probe.rows):
        assert fresh == AccuracyRow(aware, agnostic)  # the rows after replay
        assert res["acc_matrix"][k][: k + 1] == aware
        assert res["acc_matrix_agnostic"][k][: k + 1] == agnostic
    monkeypatch.undo()
    joint = train(split_config("method=multitask"), tmp_path / "joint")
    assert len(joint["acc_matrix_agnostic"]) == 1 and None not in joint["acc_matrix_agnostic"][0]
    assert joint["bwt_agnostic"] is None and joint["forgetting_agnostic"] == []
    assert joint["acc_agnostic"] == pytest.approx(sum(joint["acc_matrix_agnostic"][0]) / 2)
