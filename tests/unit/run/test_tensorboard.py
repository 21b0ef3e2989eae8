"""hlop train --tensorboard: the scalars logged (a fake writer, in CI) and real event files."""

import json
import sys

import pytest
import torch
from helpers import run_state

from hlop.loop.continual import run_continual
from hlop.methods import METHODS
from hlop.run.build import build_model
from hlop.run.config import apply_overrides
from hlop.run.diagnostics import CircuitDiagnostics
from hlop.run.presets import build_benchmark, preset
from hlop.run.tensorboard_log import TensorBoardLog
from hlop.tools.cli import main

TINY = ["tasks=2", "timesteps=2", "train_limit=100", "test_limit=50", "epochs=2"]
TINY += ["hidden=40", "hlop.sizes=[[20,10,5],[20,10,5]]", "diagnostics_samples=32"]


class FakeWriter:
    def __init__(self):
        self.scalars: dict[str, list[tuple[int, float]]] = {}
        self.closed = False

    def add_scalar(self, tag, value, step):
        self.scalars.setdefault(tag, []).append((step, float(value)))

    def flush(self):
        pass

    def close(self):
        self.closed = True


def test_scalars_of_a_run():
    torch.set_num_threads(1)
    cfg = apply_overrides(preset("pmnist-subset"), TINY)
    benchmark = build_benchmark(cfg)
    torch.manual_seed(cfg.seed)
    run = run_state(cfg, build_model(cfg, benchmark), benchmark, torch.device("cpu"))
    writer = FakeWriter()
    run_continual(
        run,
        [METHODS["hlop"].build(cfg.hlop), CircuitDiagnostics(32), TensorBoardLog("unused", writer)],
    )
    s = writer.scalars
    assert [step for step, _ in s["epoch/train_loss"]] == [1, 2, 3, 4]  # global epochs
    assert [step for step, _ in s["accuracy/task0"]] == [0, 1]
    assert [v for _, v in s["accuracy/task1"]] == [run.acc_matrix[1][1]]
    final_acc = (run.acc_matrix[1][0] + run.acc_matrix[1][1]) / 2
    assert s["metrics/acc"][-1] == (1, pytest.approx(final_acc))
    assert s["metrics/bwt"][-1] == (1, pytest.approx(run.acc_matrix[1][0] - run.acc_matrix[0][0]))
    assert s["circuits/fc1/rows"] == [(0, 20.0), (1, 40.0)]
    assert len(s["circuits/heads.0/captured"]) == 2
    assert writer.closed
    assert not [tag for tag in s if "agnostic" in tag]  # one shared head: one matrix


def test_task_agnostic_scalars_of_a_run_with_a_head_per_task():
    torch.set_num_threads(1)
    tiny = ["tasks=2", "timesteps=2", "train_limit=64", "test_limit=40", "epochs=1"]
    cfg = apply_overrides(preset("split-mnist-subset"), [*tiny, "method=baseline"])
    benchmark = build_benchmark(cfg)
    torch.manual_seed(cfg.seed)
    run = run_state(cfg, build_model(cfg, benchmark), benchmark, torch.device("cpu"))
    writer = FakeWriter()
    run_continual(run, [METHODS["baseline"].build(None), TensorBoardLog("unused", writer)])
    s, g = writer.scalars, run.acc_matrix_agnostic
    assert s["accuracy_agnostic/task0"] == [(0, g[0][0]), (1, g[1][0])]
    assert s["accuracy_agnostic/task1"] == [(1, g[1][1])]
    assert s["metrics/acc_agnostic"][-1] == (1, pytest.approx((g[1][0] + g[1][1]) / 2))
    assert s["metrics/bwt_agnostic"][-1] == (1, pytest.approx(g[1][0] - g[0][0]))
    assert s["accuracy/task1"] == [(1, run.acc_matrix[1][1])]


def test_event_files_written(tmp_path, capsys):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    torch.set_num_threads(1)
    out = tmp_path / "run"
    args = [a for t in TINY for a in ("--set", t)]
    assert main(["train", *args, "--tensorboard", "--out-dir", str(out)]) == 0
    events = list((out / "tb").glob("events.out.tfevents.*"))
    assert len(events) == 1 and events[0].stat().st_size > 100
    acc = EventAccumulator(str(out / "tb"))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"epoch/test_acc", "accuracy/task1", "metrics/acc", "metrics/bwt"} <= tags
    assert "circuits/fc2/optimal" in tags
    res = json.loads((out / "results.json").read_text())
    assert acc.Scalars("metrics/acc")[-1].value == pytest.approx(res["acc"], abs=1e-4)
    # --overwrite replaces the earlier event files
    assert main(["train", *args, "--tensorboard", "--out-dir", str(out), "--overwrite"]) == 0
    assert len(list((out / "tb").glob("events.out.tfevents.*"))) == 1


def test_missing_tensorboard_is_a_clear_error(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # the import fails
    out = tmp_path / "run"
    code = main(["train", "--set", "tasks=1", "--tensorboard", "--out-dir", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and "pip install 'hlop[tensorboard]'" in err and "Traceback" not in err
    assert not out.exists()  # refused before anything started
