"""End to end on the embedded MNIST subset at small scale (a few tasks and samples, T=4)."""

import csv
import io
import json

import pytest
import torch
from helpers import SMALL_PMNIST

from hlop.loop.continual import evaluate
from hlop.run.build import load_checkpoint
from hlop.run.config import Config, apply_overrides
from hlop.run.experiment import train
from hlop.run.presets import build_benchmark, preset

pytestmark = pytest.mark.slow

SMALL = ["timesteps=4", *SMALL_PMNIST]


def small_config(method: str, *extra: str):
    cfg = preset("pmnist-subset")
    return apply_overrides(cfg, [*SMALL, f"method={method}", *extra])


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    torch.set_num_threads(1)
    out = {}
    for method in ("hlop", "baseline"):
        d = tmp_path_factory.mktemp(method)
        out[method] = (d, train(small_config(method), d, stream=io.StringIO()))
    return out


def test_hlop_forgets_far_less_than_baseline(runs):
    hlop, base = runs["hlop"][1], runs["baseline"][1]
    assert hlop["acc"] > 70 and base["acc"] > 60  # both learn (chance is 10%)
    assert base["bwt"] < -5.0  # fine-tuning forgets
    assert hlop["bwt"] - base["bwt"] > 5.0  # HLOP protects old tasks
    assert hlop["acc"] > base["acc"]


def test_outputs_written(runs):
    d, res = runs["hlop"]
    saved = json.loads((d / "results.json").read_text())
    assert saved["status"] == "complete" and saved["tasks_completed"] == 3
    assert saved["task_names"] == ["pmnist-0", "pmnist-1", "pmnist-2"]
    assert saved["acc_matrix"][0][1:] == [None, None] and len(saved["acc_matrix"][2]) == 3
    assert saved["acc"] == pytest.approx(sum(saved["acc_matrix"][2]) / 3)
    assert len(saved["forgetting"]) == 2 and len(saved["seconds_per_task"]) == 3
    assert saved["circuit_sizes"] == [200, 200, 140]  # fc2: 100 + 50 + 50 = its N
    cfg = json.loads((d / "config.json").read_text())
    assert cfg["method"] == "hlop" and cfg["hlop"]["lrs"] == [0.01, 0.05, 0.05]
    rows = list(csv.DictReader((d / "metrics.csv").open()))
    assert len(rows) == 3 * 4
    assert set(rows[0]) == {"task", "epoch", "train_loss", "train_acc", "test_acc"}
    assert [(r["task"], r["epoch"]) for r in rows[:5]] == [
        ("0", "1"),
        ("0", "2"),
        ("0", "3"),
        ("0", "4"),
        ("1", "1"),
    ]
    assert sorted(p.name for p in d.glob("checkpoint_task*.pt")) == [
        f"checkpoint_task{k}.pt" for k in range(3)
    ]


def test_checkpoint_reload_reproduces_last_row(runs):
    d, res = runs["hlop"]
    model, ckpt = load_checkpoint(d / "checkpoint_task2.pt")
    raw = torch.load(d / "checkpoint_task2.pt", weights_only=True)  # plain, safe format
    assert raw["task"] == 2
    bench = build_benchmark(Config.from_dict(ckpt["config"]))
    row = [evaluate(model, t.test, j, 64, "cpu") for j, t in enumerate(bench.tasks[:3])]
    assert row == pytest.approx(res["acc_matrix"][2])
    assert [c.blocks for c in model.circuits()] == [[200], [200], [140]]


def test_same_seed_same_results(runs, tmp_path):
    again = train(small_config("baseline"), tmp_path / "again", stream=io.StringIO())
    assert again["acc_matrix"] == runs["baseline"][1]["acc_matrix"]
