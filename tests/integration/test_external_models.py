"""A network of the user's own through the whole harness: ``hlop train --model FILE.py:FUNCTION``
with every method that runs on any model, resume after a kill, ``hlop compare`` and
``hlop report``."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers import SUPPORT

import hlop
from hlop.errors import CheckpointError
from hlop.loop.continual import evaluate
from hlop.models.external import ExternalModel
from hlop.run.build import load_checkpoint
from hlop.run.config import Config
from hlop.run.presets import build_benchmark
from hlop.tools.cli import main

NETS = """
from torch import nn

def mlp(input_shape, num_classes):
    n = 1
    for d in input_shape:
        n *= d
    return nn.Sequential(nn.Flatten(), nn.Linear(n, 24), nn.ReLU(), nn.Linear(24, num_classes))
"""
TINY = ["--tasks", "2", "--epochs", "2", "--set", "train_limit=120", "--set", "test_limit=60"]


@pytest.fixture
def nets(tmp_path):
    path = tmp_path / "nets.py"
    path.write_text(NETS)
    return f"{path}:mlp"


def cli(capsys, *argv):
    torch.set_num_threads(1)  # conftest restores the count
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err, err
    return code, out, err


def results(directory: Path) -> dict:
    return json.loads((directory / "results.json").read_text())


@pytest.mark.parametrize(
    ("benchmark", "method"),
    [
        ("pmnist-subset", ["--method", "baseline"]),
        ("pmnist-subset", ["--method", "hlop"]),
        ("pmnist-subset", ["--method", "ewc"]),
        ("pmnist-subset", ["--method", "gpm"]),
        ("pmnist-subset", ["--method", "baseline", "--replay"]),
        ("pmnist-subset", ["--method", "multitask"]),
        ("split-mnist-subset", ["--method", "hlop"]),
    ],
)
def test_every_method_that_runs_on_any_model(tmp_path, capsys, nets, benchmark, method):
    out = tmp_path / "run"
    extra = ["--set", "warmup=0", "--set", "t_max=2"] if benchmark.startswith("split") else []
    code, _, err = cli(capsys, "train", benchmark, "--model", nets, *method, *TINY, *extra,
                       "--out-dir", out)  # fmt: skip
    assert code == 0, err
    res = results(out)
    assert res["status"] == "complete" and res["tasks_completed"] == 2
    assert json.loads((out / "config.json").read_text())["model"] == nets
    if "hlop" in method or "gpm" in method:
        # circuits on both Linear layers (and their biases), found from the data
        assert len(res["circuit_sizes"]) == 2 and all(n > 0 for n in res["circuit_sizes"])
        # the preset's per-layer values (the built-in network's) gave way before the run
        assert "the preset's values for another network were replaced" not in err
        saved = json.loads((out / "config.json").read_text())
        assert saved["hlop"]["sizes"] == "auto" and saved["gpm"]["thresholds"] == [0.97]
        # and measured after each task, by the user's layer names
        entries = res["circuit_diagnostics"]
        assert [e["task"] for e in entries] == [0, 1]
        assert list(entries[-1]["layers"]) == ["1", "3"]
        last = entries[-1]["layers"].values()
        assert [d["rows"] for d in last] == res["circuit_sizes"]
    if "gpm" in method:  # not the pmnist-subset preset's 3 thresholds for 3 layers
        assert json.loads((out / "config.json").read_text())["gpm"]["samples"] == [125]
        ck = [
            torch.load(out / f"checkpoint_task{k}.pt", weights_only=True)["model"] for k in (0, 1)
        ]
        for i, layer in enumerate(("1", "3")):
            h0 = ck[0][f"lateral.{i}.weight"]
            w = [
                torch.cat([c[f"net.{layer}.weight"], c[f"net.{layer}.bias"][:, None]], 1)
                for c in ck
            ]
            assert 1 <= h0.shape[0] and (w[1] - w[0]).abs().max() > 1e-4  # task 1 trains it
            # task 1's change of [W, b] is orthogonal to task 0's bases
            assert ((w[1] - w[0]) @ h0.t()).abs().max() < 1e-5


def test_hat_needs_the_built_in_networks(tmp_path, capsys, nets):
    code, _, err = cli(capsys, "train", "split-mnist-subset", "--model", nets, "--method",
                       "hat", *TINY, "--out-dir", tmp_path / "run")  # fmt: skip
    assert code == 2
    assert "HAT gates" in err
    assert not (tmp_path / "run").exists()  # refused before anything is written


def test_a_wrong_output_is_refused_before_anything_is_written(tmp_path, capsys):
    path = tmp_path / "bad.py"
    path.write_text("from torch import nn\ndef f(input_shape):\n    return nn.Flatten()\n")
    code, _, err = cli(capsys, "train", "--model", f"{path}:f", *TINY, "--out-dir",
                       tmp_path / "run")  # fmt: skip
    assert code == 2 and "it must return scores (2, 10)" in err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("method", ["hlop", "gpm"])
def test_killed_run_of_a_user_model_resumes_to_identical_results(tmp_path, capsys, nets, method):
    argv = ["train", "--model", nets, "--method", method, *TINY]
    reference = tmp_path / "reference"
    assert cli(capsys, *argv, "--out-dir", reference)[0] == 0
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(Path(hlop.__file__).parents[1]),
           "OMP_NUM_THREADS": "1"}  # fmt: skip
    # paused after the 3rd state.pt (task 1, after its first epoch), then killed
    child = [sys.executable, str(SUPPORT / "paused_run.py"), "after", "state.pt", "3"]
    proc = subprocess.Popen([*child, *argv, "--out-dir", str(out)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    end = time.monotonic() + 300
    while not (out / ".paused").exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < end, "the run never reached the pause"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    code, stdout, err = cli(capsys, "train", "--resume", out)
    assert code == 0, err
    assert "resuming" in stdout
    assert results(out)["acc_matrix"] == results(reference)["acc_matrix"]
    # and the very weights and circuits (GPM: task 0's bases, task 1 trained after them)
    a = torch.load(reference / "checkpoint_task1.pt", weights_only=True)["model"]
    b = torch.load(out / "checkpoint_task1.pt", weights_only=True)["model"]
    assert a.keys() == b.keys() and any(k.startswith("lateral.") for k in a)
    for name, value in a.items():
        assert torch.equal(value, b[name]), name


def test_compare_and_report_a_user_model(tmp_path, capsys, nets):
    pytest.importorskip("matplotlib")
    out = tmp_path / "study"
    study = ["--methods", "baseline,hlop", "--seeds", "1,2", "--out-dir", out]
    code, _, err = cli(capsys, "compare", "pmnist-subset", "--model", nets, *TINY, *study)
    assert code == 0, err
    assert (out / "summary.csv").is_file() and len(list(out.glob("*-s*"))) == 4
    assert cli(capsys, "report", out)[0] == 0
    assert (out / "hlop-s1" / "accuracy_matrix.png").is_file()


@pytest.mark.parametrize("method", ["hlop", "gpm"])
def test_checkpoint_of_a_user_model_loads_with_its_circuits(tmp_path, capsys, nets, method):
    out = tmp_path / "run"
    argv = ["train", "--model", nets, "--method", method, *TINY, "--set", "lr=0.3"]
    assert cli(capsys, *argv, "--out-dir", out)[0] == 0
    res = results(out)
    m = res["acc_matrix"]
    assert min(m[0][0], m[1][1]) > 30  # well above chance (10%): a network that learnt
    for k in (0, 1):
        model, ckpt = load_checkpoint(out / f"checkpoint_task{k}.pt")
        assert isinstance(model, ExternalModel) and ckpt["task"] == k
        assert model.consolidated == (k > 0)
        # the circuits as the run left them, on the user's layers, with their hooks
        layers = dict(model.projected_layers())
        assert list(layers) == ["1", "3"] and layers["3"] is model.net[3]
        if k == 1:
            assert model.circuit_sizes() == res["circuit_sizes"]
        saved = torch.load(out / f"checkpoint_task{k}.pt", weights_only=True)["model"]
        for i, c in enumerate(model.circuits()):
            assert c.rows > 0 and torch.equal(c.weight, saved[f"lateral.{i}.weight"])
        # and the accuracies of row k of the run's matrix
        benchmark = build_benchmark(Config.from_dict(ckpt["config"]))
        for t in range(k + 1):
            assert evaluate(model, benchmark.tasks[t].test, t, 64, "cpu") == m[k][t]


def test_checkpoint_whose_factory_moved(tmp_path, capsys, nets):
    out = tmp_path / "run"
    assert cli(capsys, "train", "--model", nets, *TINY, "--out-dir", out)[0] == 0
    checkpoint = out / "checkpoint_task1.pt"
    path = Path(nets.rpartition(":")[0])
    moved = path.rename(tmp_path / "moved.py")
    with pytest.raises(CheckpointError, match=r"built by .*nets\.py:mlp .*no such file.*factory="):
        load_checkpoint(checkpoint)
    model, _ = load_checkpoint(checkpoint, factory=f"{moved}:mlp")
    assert model.circuit_sizes() == results(out)["circuit_sizes"]
    with pytest.raises(CheckpointError, match=r"moved\.py:nothing.*has no function 'nothing'"):
        load_checkpoint(checkpoint, factory=f"{moved}:nothing")
    moved.write_text(NETS.replace("24", "25"))  # another network: the weights do not fit
    with pytest.raises(CheckpointError, match="does not fit the checkpoint"):
        load_checkpoint(checkpoint, factory=f"{moved}:mlp")
