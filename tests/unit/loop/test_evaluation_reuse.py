"""A task's last test is reused for its row of the accuracy matrix only while the weights
are those it was tested on (the model's version)."""

import io

import pytest
import torch
from helpers import TINY_PMNIST

from hlop import SpikingMLP
from hlop.loop import continual as loop
from hlop.run.config import apply_overrides
from hlop.run.experiment import train
from hlop.run.presets import preset


def _run(tmp_path, name, *extra):
    cfg = apply_overrides(preset("pmnist-subset"), [*TINY_PMNIST, *extra])
    return train(cfg, tmp_path / name, stream=io.StringIO())


@pytest.mark.parametrize("extra", [[], ["replay.enabled=true", "method=baseline"]])
def test_last_test_of_a_task_is_reused_only_for_unchanged_weights(tmp_path, monkeypatch, extra):
    calls = []
    evaluate = loop.evaluate

    def counting(model, split, task, *args):
        calls.append(task)
        return evaluate(model, split, task, *args)

    monkeypatch.setattr(loop, "evaluate", counting)
    reused = _run(tmp_path, "reused", *extra)
    n_reused = len(calls)
    # never equal versions: every row evaluated afresh
    monkeypatch.setattr(loop, "model_version", lambda model: object())
    calls.clear()
    fresh = _run(tmp_path, "fresh", *extra)
    assert reused["acc_matrix"] == fresh["acc_matrix"]
    # one epoch per task: each task's row reuses its own last test (replay then retrains
    # and evaluates its row again, with new weights: nothing reused there)
    assert n_reused == len(calls) - 2


def test_model_version_follows_in_place_changes_and_replacements():
    m = SpikingMLP(20, 8, 3)
    v = loop.model_version(m)
    assert loop.model_version(m) == v
    with torch.no_grad():
        m.fc1.weight.add_(1.0)
    assert loop.model_version(m) != v
    v = loop.model_version(m)
    m.add_subspaces([2, 2, 2])  # circuit buffers replaced: an evaluation never reads them
    assert loop.model_version(m) == v
    m.fc2.weight = torch.nn.Parameter(m.fc2.weight.detach().clone())
    assert loop.model_version(m) != v
