"""The README's "Extending hlop" examples, run as written there."""

import io
import re
from pathlib import Path

import torch
from formats import write_idx

import hlop.methods as methods
import hlop.presets as presets
from hlop.config import apply_overrides
from hlop.data import MNIST_FILES, load_embedded_mnist
from hlop.data.tasks import MNIST_PADDED_MEAN, MNIST_PADDED_STD, split_classes
from hlop.experiment import train
from hlop.presets import BenchmarkSpec, build_benchmark, preset

README = Path(__file__).resolve().parents[1] / "README.md"


def extending_examples() -> list[str]:
    text = README.read_text()
    section = text.split("## Extending hlop", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, re.S)


def test_readme_method_example_plugs_into_the_loop(tmp_path, monkeypatch):
    namespace: dict = {}
    exec(extending_examples()[0], namespace)
    plugin = namespace["HeadsOnly"]
    monkeypatch.setitem(methods.METHODS, "heads-only", plugin)
    cfg = apply_overrides(
        preset("pmnist-subset"),
        [
            "method=heads-only",
            "tasks=2",
            "timesteps=2",
            "hidden=32",
            "train_limit=200",
            "hlop.sizes=[[8,8,8],[8,8,8]]",
        ],
    )
    train(cfg, tmp_path / "run", stream=io.StringIO())
    first, second = (
        torch.load(tmp_path / "run" / f"checkpoint_task{k}.pt", weights_only=True)["model"]
        for k in (0, 1)
    )
    assert torch.equal(first["fc1.weight"], second["fc1.weight"])  # frozen in task 1
    assert torch.equal(first["fc2.weight"], second["fc2.weight"])
    assert not torch.equal(first["heads.0.weight"], second["heads.0.weight"])  # trained


def test_readme_benchmark_row_builds_its_tasks(tmp_path, monkeypatch):
    namespace = {
        "BenchmarkSpec": BenchmarkSpec,
        "split_classes": split_classes,
        "MNIST_PADDED_MEAN": MNIST_PADDED_MEAN,
        "MNIST_PADDED_STD": MNIST_PADDED_STD,
        "_cnn_preset": presets._cnn_preset,
    }
    spec = eval(extending_examples()[1], namespace)
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
