"""hlop train --tensorboard: the scalars logged (a fake writer, in CI) and real event files."""

import json
import sys

import pytest
import torch
from helpers import REPO, run_state

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


@pytest.mark.parametrize("method", ["baseline", pytest.param("hlop", marks=pytest.mark.slow)])
def test_event_files_of_a_user_model(tmp_path, capsys, method):
    """``hlop train --model examples/models.py:ann --tensorboard``: the accuracy matrix, ACC
    and BWT, the epochs' curves and (HLOP) the circuits of the user's layers, as in
    results.json."""
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    torch.set_num_threads(1)
    out = tmp_path / "run"
    model = f"{REPO / 'examples' / 'models.py'}:ann"
    tiny = ["train_limit=64", "test_limit=64", "batch_size=32", "diagnostics_samples=32"]
    args = ["--model", model, "--method", method, "--tasks", "2"]
    args += [a for t in tiny for a in ("--set", t)]
    assert main(["train", "pmnist-subset", *args, "--tensorboard", "--out-dir", str(out)]) == 0
    capsys.readouterr()
    acc = EventAccumulator(str(out / "tb"))
    acc.Reload()
    res = json.loads((out / "results.json").read_text())
    m = res["acc_matrix"]
    assert len({m[0][0], m[1][0], m[1][1]}) == 3  # distinct entries: a mix-up would show

    def scalars(tag):
        return [(e.step, e.value) for e in acc.Scalars(tag)]

    assert scalars("accuracy/task0") == [(0, pytest.approx(m[0][0])), (1, pytest.approx(m[1][0]))]
    assert scalars("accuracy/task1") == [(1, pytest.approx(m[1][1]))]
    assert scalars("metrics/acc")[-1] == (1, pytest.approx(res["acc"]))
    assert scalars("metrics/bwt")[-1] == (1, pytest.approx(res["bwt"]))
    assert scalars("epoch/test_acc") == [(1, pytest.approx(m[0][0])), (2, pytest.approx(m[1][1]))]
    circuits = {tag for tag in acc.Tags()["scalars"] if tag.startswith("circuits/")}
    if method == "baseline":
        assert not circuits
    else:  # the circuits of the network's own layers (nn.Sequential's 1, 3, 5), by name
        rows = [scalars(f"circuits/{layer}/rows")[-1] for layer in ("1", "3", "5")]
        assert rows == [(1, n) for n in res["circuit_sizes"]]
    assert not [tag for tag in acc.Tags()["scalars"] if "agnostic" in tag]  # one shared head


def test_missing_tensorboard_is_a_clear_error(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # the import fails
    out = tmp_path / "run"
    code = main(["train", "--set", "tasks=1", "--tensorboard", "--out-dir", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and "pip install 'hlop[tensorboard]'" in err and "Traceback" not in err
    assert not out.exists()  # refused before anything started
