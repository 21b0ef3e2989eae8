"""Your data and your network in the harness: a benchmark function (FILE.py:FUNCTION) with a
factory (--model), from the command line and from Python (hlop.train), with a validation
split; exact resume re-imports both."""

import json
import textwrap

import pytest
import torch

import hlop
from hlop.errors import DataError
from hlop.tools.cli import main

DATA = """
import torch
from hlop.data import class_split

def four_classes(seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(160, 1, 6, 6, generator=g)
    y = torch.arange(160) % 4
    x[:, 0, 0, :] += y.view(-1, 1).float()   # learnable
    return class_split((x[:120], y[:120]), (x[120:], y[120:]), classes_per_task=2)

def not_a_benchmark():
    return [1, 2]
"""

NETS = """
from torch import nn

def mlp(input_shape, num_classes):
    return nn.Sequential(nn.Flatten(), nn.Linear(36, 16), nn.ReLU(), nn.Linear(16, num_classes))
"""


@pytest.fixture
def files(tmp_path):
    (tmp_path / "mydata.py").write_text(textwrap.dedent(DATA))
    (tmp_path / "nets.py").write_text(textwrap.dedent(NETS))
    return tmp_path


SETTINGS = {"timesteps": 1, "batch_size": 16, "diagnostics_samples": 8}


def test_your_data_and_network_from_the_cli_and_from_python(files, capsys):
    out = files / "cli"
    argv = ["train", f"{files}/mydata.py:four_classes", "--model", f"{files}/nets.py:mlp"]
    argv += ["--method", "hlop", "--set", "timesteps=1", "--batch-size", "16"]
    argv += ["--set", "diagnostics_samples=8", "--out-dir", str(out)]
    torch.set_num_threads(1)
    assert main(argv) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["tasks_completed"] == 2 and len(res["acc_matrix_agnostic"]) == 2
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["benchmark"].endswith("mydata.py:four_classes") and cfg["tasks"] == 2
    # the same run from Python gives the same matrix
    again = hlop.train(
        f"{files}/nets.py:mlp",
        f"{files}/mydata.py:four_classes",
        "hlop",
        out_dir=files / "py",
        settings={**SETTINGS, "tasks": 2},
        stream=open(files / "log.txt", "w"),
    )
    assert again["acc_matrix"] == res["acc_matrix"]


def test_validation_split_of_your_data(files):
    res = hlop.train(
        f"{files}/nets.py:mlp",
        f"{files}/mydata.py:four_classes",
        "baseline",
        out_dir=files / "val",
        settings={**SETTINGS, "validation": 0.25},
        stream=open(files / "log.txt", "w"),
    )
    assert res["tasks_completed"] == 2


def test_a_function_that_returns_no_benchmark_is_a_data_error(files):
    with pytest.raises(DataError, match="must return a hlop.data.Benchmark"):
        hlop.train(None, f"{files}/mydata.py:not_a_benchmark", out_dir=files / "bad")
    assert not (files / "bad").exists()  # nothing written


def test_a_function_not_at_the_top_of_a_module_is_refused(files):
    def local(input_shape, num_classes):
        return torch.nn.Linear(4, num_classes)

    with pytest.raises(hlop.HlopError, match="not a function defined at the top"):
        hlop.train(local, "pmnist-subset", out_dir=files / "local")
