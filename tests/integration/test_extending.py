"""The examples of the documentation's "Extending hlop" page, run as written there."""

import json
import re
from pathlib import Path

import torch
from formats import write_idx
from helpers import REPO

import hlop.methods as methods
import hlop.run.presets as presets
from hlop.data import MNIST_FILES, load_embedded_mnist
from hlop.data.benchmarks import split_classes
from hlop.data.transforms import MNIST_PADDED_MEAN, MNIST_PADDED_STD
from hlop.run.presets import BenchmarkSpec, build_benchmark, preset
from hlop.tools.cli import main

PAGE = REPO / "docs" / "extending.md"


def extending_examples() -> list[str]:
    return re.findall(r"```python\n(.*?)```", PAGE.read_text(), re.S)


def registered_page_method(monkeypatch) -> None:
    """The page's method file and its registry line, as written there."""
    method_file, registry_line = extending_examples()[:2]
    namespace: dict = {"Method": methods.Method}
    exec(method_file, namespace)
    name, _, entry = registry_line.strip().rstrip(",").partition(": ")
    monkeypatch.setitem(methods.METHODS, eval(name), eval(entry, namespace))


def weight_change(run: Path, name: str) -> float:
    first, second = (
        torch.load(run / f"checkpoint_task{k}.pt", weights_only=True)["model"][name] for k in (0, 1)
    )
    return float((second - first).norm())


def test_documented_method_with_a_setting_runs_from_the_command_line(tmp_path, monkeypatch, capsys):
    registered_page_method(monkeypatch)
    torch.set_num_threads(1)
    tiny = ["--tasks", "2", "--timesteps", "2", "--batch-size", "10", "--set", "hidden=32",
            "--set", "train_limit=100", "--set", "test_limit=20",
            "--set", "hlop.sizes=[[8,8,8],[8,8,8]]"]  # fmt: skip
    assert main(["train", "--method", "l2", *tiny, "--show-config"]) == 0
    assert json.loads(capsys.readouterr().out)["l2"] == {"lam": 0.01}
    assert main(["train", "--method", "l2", *tiny, "--set", "l2.lam=-1"]) == 2
    assert "l2.lam must be >= 0, got -1.0" in capsys.readouterr().err
    changes = {}
    for lam in (0, 5):
        out = tmp_path / f"lam{lam}"
        argv = ["train", "--method", "l2", *tiny, "--set", f"l2.lam={lam}", "--out-dir", str(out)]
        assert main(argv) == 0
        assert json.loads((out / "config.json").read_text())["l2"]["lam"] == lam
        changes[lam] = weight_change(out, "fc1.weight")
    # the anchor holds the weights: task 1 moves them much less than without it
    assert 0 < changes[5] < 0.5 * changes[0], changes


def test_documented_benchmark_row_builds_its_tasks(tmp_path, monkeypatch):
    namespace = {
        "BenchmarkSpec": BenchmarkSpec,
        "split_classes": split_classes,
        "MNIST_PADDED_MEAN": MNIST_PADDED_MEAN,
        "MNIST_PADDED_STD": MNIST_PADDED_STD,
        "_cnn_preset": presets._cnn_preset,
    }
    spec = eval(extending_examples()[2], namespace)
    monkeypatch.setitem(presets.BENCHMARKS, spec.name, spec)
    mnist = load_embedded_mnist()  # written as the IDX files of a data root
    names = list(MNIST_FILES.values())
    for (images, labels), (image_file, label_file) in zip(
        (mnist["train"], mnist["test"]), (names[:2], names[2:]), strict=True
    ):
        write_idx(tmp_path / "mnist" / image_file, images[:, 0])
        write_idx(tmp_path / "mnist" / label_file, labels.astype("uint8"))
    cfg = preset("split-mnist-2")
    cfg.data_dir = str(tmp_path)
    assert cfg.tasks == 2 and cfg.model == "cnn" and len(cfg.hlop.sizes) == 2
    bench = build_benchmark(cfg)
    assert [t.num_classes for t in bench.tasks] == [5, 5]
    assert bench.input_shape == (1, 32, 32)
    assert set(bench.tasks[1].train.labels.tolist()) == {0, 1, 2, 3, 4}
    assert len(bench.tasks[0].train) + len(bench.tasks[1].train) == len(mnist["train"][1])
