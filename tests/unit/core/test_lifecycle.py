"""HLOP's task lifecycle (hlop.core.lifecycle): the one schedule of blocks, learning,
projection, fitting and merging, used by hlop.HLOP and by the command line's method."""

import pytest
import torch
from torch import nn

import hlop
from hlop.core.circuit import CircuitSettings, LateralCircuit
from hlop.core.lifecycle import TaskLifecycle, check_block_sizes
from hlop.errors import CircuitError
from hlop.methods import HLOPPlugin


def circuits(*dims):
    torch.manual_seed(0)
    return [LateralCircuit(d, 0.05, name=f"c{i}") for i, d in enumerate(dims)]


def flags(cs):
    return [(c.rows, c.old_rows, c.learning, c.projecting) for c in cs]


def test_schedule_blocks_learn_then_merge_and_project_from_the_second_task():
    cs = circuits(8, 6)
    life = TaskLifecycle(cs, ["a", "b"], sizes=[[3, 2], [1, 0]])
    assert life.begin() == [3, 2]
    assert flags(cs) == [(3, 0, True, False), (2, 0, True, False)]  # nothing to project yet
    assert life.end() == [3, 2]
    assert flags(cs) == [(3, 3, False, False), (2, 2, False, False)]
    assert life.begin() == [1, 0]
    assert flags(cs) == [(4, 3, True, True), (2, 2, True, True)]
    life.set_learning(False)
    assert [c.learning for c in cs] == [False, False]
    life.end()
    assert life.begin() == [1, 0]  # the last entry repeats
    assert life.kept == [[3, 2], [1, 0]] and life.task == 3 and life.in_task


def test_projection_only_where_old_rows_exist():
    cs = circuits(8, 6)
    life = TaskLifecycle(cs, ["a", "b"], sizes=None)
    life.begin([2, 0])
    life.end()
    life.begin([1, 1])
    assert [c.projecting for c in cs] == [True, False]


def test_auto_sizes_take_generous_blocks_fit_them_and_track_energy():
    cs = circuits(16, 8)
    life = TaskLifecycle(cs, ["a", "b"], threshold=[0.5, 0.99], max_rows=[6, None])
    assert life.begin() == [6, 8]  # max_rows, or the default bound (all of a small circuit)
    assert life.fitting and all(c.tracking for c in cs)
    x = torch.randn(64, 16) @ torch.diag(torch.tensor([9.0, 1.0] + [0.01] * 14))
    for _ in range(50):
        cs[0].hebbian_update(x)
        cs[1].hebbian_update(torch.randn(64, 8))
    kept = life.end()
    assert kept[0] == 1  # one direction holds half the energy
    assert cs[0].rows == cs[0].old_rows == 1 and not life.fitting
    with pytest.raises(RuntimeError, match="previous task has not ended"):
        life.begin()
        life.begin()


def test_block_sizes_are_checked_once_with_the_setting_and_the_circuit_named():
    with pytest.raises(CircuitError, match=r"hlop.sizes\[1\] needs 2 values \(one per circuit"):
        check_block_sizes([1], ["a", "b"], key="hlop.sizes[1]")
    with pytest.raises(CircuitError, match="the block size of 'b' must be an integer >= 0: -1"):
        check_block_sizes([1, -1], ["a", "b"])
    with pytest.raises(CircuitError, match="block of 9 rows above the dimension 8 of 'a'"):
        check_block_sizes([9, 1], ["a", "b"], [8, 8])
    with pytest.raises(CircuitError, match="integer"):
        check_block_sizes([True, 1], ["a", "b"])
    with pytest.raises(CircuitError, match="threshold must be in"):
        TaskLifecycle(circuits(4), ["a"], threshold=1.5)
    with pytest.raises(CircuitError, match="max_rows needs 1 value or 1"):
        TaskLifecycle(circuits(4), ["a"], max_rows=[1, 2])


def test_hlop_and_the_cli_method_both_run_the_lifecycle(monkeypatch):
    """hlop.HLOP and HLOPPlugin hold a TaskLifecycle and call its begin and end: a change of
    the schedule reaches both."""
    calls = []
    begin, end = TaskLifecycle.begin, TaskLifecycle.end
    monkeypatch.setattr(TaskLifecycle, "begin", lambda s, *a: calls.append("begin") or begin(s, *a))
    monkeypatch.setattr(
        TaskLifecycle, "end", lambda s, *a, **k: calls.append("end") or end(s, *a, **k)
    )
    model = nn.Sequential(nn.Linear(6, 4), nn.ReLU(), nn.Linear(4, 3))
    hl = hlop.HLOP(model, sizes=[[2, 2]])
    hl.begin_task()
    hl.end_task()
    assert calls == ["begin", "end"] and isinstance(hl.lifecycle, TaskLifecycle)

    class Run:  # what the plugin reads of the loop's state
        task, epoch, tasks, circuit_blocks = 0, 0, 1, []

    run = Run()
    run.model = hlop.SpikingMLP(6, 4, 3, hlop.NetworkSettings(timesteps=2))
    plugin = HLOPPlugin(sizes=[[2, 2, 2]])
    plugin.check(run)
    plugin.before_task(run)
    plugin.before_epoch(run)
    plugin.after_training(run)
    assert calls == ["begin", "end"] * 2 and run.circuit_blocks == [[2, 2, 2]]
    assert [c.old_rows for c in run.model.circuits()] == [2, 2, 2]


def test_circuit_settings_are_checked_where_the_circuit_is_made():
    with pytest.raises(CircuitError, match="lateral circuit of layer '0': lr must be > 0, got -1"):
        hlop.HLOP(nn.Sequential(nn.Linear(4, 3)), lrs=-1)
    for bad, match in [
        ({"iterations": -1}, "iterations must be an integer >= 0"),
        ({"momentum": 1.0}, r"momentum must be in \[0, 1\)"),
        ({"clip": 0}, "clip must be > 0"),
        ({"spike_scale": 0}, "spike_scale must be > 0"),
        ({"spike_steps": 0}, "spike_steps must be an integer >= 1"),
        ({"precision": "fp16"}, "precision must be one of fp32, bf16"),
    ]:
        with pytest.raises(CircuitError, match=match):
            CircuitSettings(**bad)
        with pytest.raises(CircuitError, match=match):
            LateralCircuit(4, **bad)
    c = LateralCircuit.from_settings(5, CircuitSettings(lr=0.2, iterations=2), name="x")
    assert c.settings == CircuitSettings(lr=0.2, iterations=2) and c.name == "x"
    # the run's hlop section takes its defaults and checks from the circuit's
    from hlop.errors import ConfigError
    from hlop.methods import HLOPSettings

    assert HLOPSettings().iterations == CircuitSettings().iterations
    with pytest.raises(ConfigError, match=r"hlop.lrs \(each rate\) must be > 0"):
        HLOPSettings(lrs=[0.1, -1.0])
    with pytest.raises(ConfigError, match="hlop.spike_steps must be an integer >= 1"):
        HLOPSettings(spike_steps=0)
