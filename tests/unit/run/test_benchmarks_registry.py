"""The benchmark registry and the dataset table: rows, loaders' shapes, no silent fallback."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from formats import write_idx, write_mat

from hlop.data import DATASETS, DataError, load_dataset, missing_files_message
from hlop.data.datasets import expected_paths
from hlop.run.config import ConfigError
from hlop.run.presets import BENCHMARKS, build_benchmark, preset

RNG = np.random.default_rng(3)


def images(n: int, shape: tuple[int, ...]) -> np.ndarray:
    return RNG.integers(0, 256, size=(n, *shape), dtype=np.uint8)


def dump(path: Path, obj: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(obj, protocol=2))


def write_dataset(key: str, root: Path, n: int = 10) -> None:
    """Write a tiny copy of dataset ``key`` under ``root`` in its real file format."""
    folder = root / DATASETS[key].folder
    labels = np.arange(n) % 10
    for path in expected_paths(key, root):
        if key in ("mnist", "fashion-mnist"):
            array = images(n, (28, 28)) if "images" in path.name else labels.astype(np.uint8)
            write_idx(path.with_name(path.name + ".gz"), array)
        elif key == "cifar10":
            dump(path, {b"data": images(n, (3072,)), b"labels": list(labels)})
        elif key == "cifar100":
            dump(path, {b"data": images(n, (3072,)), b"fine_labels": list(labels * 10)})
        elif key == "svhn":
            y = (labels + 1).astype(np.float64).reshape(-1, 1)
            write_mat(path, {"X": RNG.integers(0, 256, (32, 32, 3, n), dtype=np.uint8), "y": y})
        elif key == "notmnist":
            dump(path, {"features": images(n, (1, 32, 32)), "labels": labels})
        elif key == "miniimagenet":
            dump(path, {"images": images(100, (84, 84, 3)), "labels": np.arange(100)})
    assert folder.is_dir()


def test_rows() -> None:
    assert list(BENCHMARKS)[0] == "pmnist-subset"
    for name, spec in BENCHMARKS.items():
        assert spec.name == name and spec.summary
        assert set(spec.datasets) <= set(DATASETS), name
        assert (spec.datasets == ()) == name.endswith("-subset"), name
    assert BENCHMARKS["split-mnist"].datasets == ("mnist",)
    assert BENCHMARKS["split-fashion-mnist"].datasets == ("fashion-mnist",)


@pytest.mark.parametrize("key", list(DATASETS))
def test_every_loader_gives_n_c_h_w(tmp_path: Path, key: str) -> None:
    write_dataset(key, tmp_path)
    data = load_dataset(key, tmp_path)
    for split in ("train", "test"):
        x, y = data[split]
        assert x.dtype == np.uint8 and x.ndim == 4 and x.shape[1] in (1, 3), (key, x.shape)
        assert y.dtype == np.int64 and y.shape == (len(x),)


@pytest.mark.parametrize("key", list(DATASETS))
def test_one_missing_files_message(tmp_path: Path, key: str) -> None:
    with pytest.raises(DataError) as info:
        load_dataset(key, tmp_path)
    assert str(info.value) == missing_files_message([key], tmp_path)
    fetch = f"hlop data fetch {key} --data-dir {tmp_path}"
    assert (fetch in str(info.value)) == DATASETS[key].fetchable
    assert DATASETS[key].fmt in str(info.value)


@pytest.mark.parametrize("name", [n for n, s in BENCHMARKS.items() if s.datasets])
def test_no_data_dir_names_every_file_and_fetch_command(name: str) -> None:
    cfg = preset(name)
    with pytest.raises(DataError) as info:
        build_benchmark(cfg)
    message = str(info.value)
    assert "--data-dir D" in message
    for key in BENCHMARKS[name].datasets:
        for path in expected_paths(key, "D"):
            assert str(path) in message
        if DATASETS[key].fetchable:
            assert f"hlop data fetch {key} --data-dir D" in message


def test_split_fashion_mnist_never_reads_the_current_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_dataset("fashion-mnist", tmp_path)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataError, match="--data-dir"):
        build_benchmark(preset("split-fashion-mnist"))
    cfg = preset("split-fashion-mnist")
    cfg.data_dir = str(tmp_path)
    assert len(build_benchmark(cfg).tasks) == 5


def test_split_mnist_subset_needs_no_data_dir() -> None:
    cfg = preset("split-mnist-subset")
    assert cfg.data_dir is None and cfg.tasks == 5 and cfg.model == "cnn"
    bench = build_benchmark(cfg)
    assert len(bench.tasks) == 5 and bench.input_shape == (1, 32, 32) and not bench.shared_head
    assert [len(t.train) for t in bench.tasks] == [1200] * 5


@pytest.mark.parametrize("training", ["dsr", "bptt"])
def test_presets_of_subset_and_full_rows_agree(training) -> None:
    """The embedded split MNIST is the full one's preset, shortened to run in minutes (T=4,
    2 epochs a task, the cosine over them); the paper's values are the full row's."""
    full = preset("split-mnist", training).to_dict()
    subset = preset("split-mnist-subset", training).to_dict()
    quick = {"timesteps": 4, "epochs": 2, "warmup": 0, "t_max": 2}
    assert {k: subset[k] for k in quick} == quick
    assert (full["timesteps"], full["epochs"], full["warmup"], full["t_max"]) == (
        20 if training == "dsr" else 6,
        200,
        5,
        200,
    )
    differ = {"benchmark", *quick}
    assert {k: v for k, v in full.items() if k not in differ} == {
        k: v for k, v in subset.items() if k not in differ
    }


def test_unknown_benchmark_lists_the_choices() -> None:
    with pytest.raises(ConfigError, match="choose one of pmnist-subset, pmnist, "):
        preset("imagenet")
    cfg = preset("pmnist")
    cfg.benchmark = "imagenet"
    with pytest.raises(ConfigError, match="split-mnist-subset"):
        build_benchmark(cfg)


def test_validation_split_replaces_the_test_set_without_touching_it():
    cfg = preset("pmnist-subset")
    cfg.tasks, cfg.validation = 3, 0.1
    bench = build_benchmark(cfg)
    plain = build_benchmark(preset("pmnist-subset"))
    full = plain.tasks[0].train
    for task in bench.tasks:
        assert len(task.test) == 600 and len(task.train) == 5400  # 10% of 6000, the rest
        # every class held out in proportion, and the test images never appear
        assert torch.bincount(task.test.labels, minlength=10).tolist() == [60] * 10
    # the held-out and kept parts partition the training data (same rows, same sums)
    a, b = bench.tasks[0].train, bench.tasks[0].test
    rows = torch.cat([a.images, b.images]).flatten(1).to(torch.int64)
    assert rows.shape[0] == len(full)
    assert torch.equal(rows.sum(0), full.images.flatten(1).to(torch.int64).sum(0))
    assert not any(torch.equal(b.images[0], t) for t in plain.tasks[0].test.images[:50])
    # tasks of one storage share one split: same held-out samples, their own transform
    assert bench.tasks[1].test.images.data_ptr() == bench.tasks[0].test.images.data_ptr()
    x0, _ = bench.tasks[0].test.batch(torch.arange(4))
    x1, _ = bench.tasks[1].test.batch(torch.arange(4))
    assert not torch.equal(x0, x1)
