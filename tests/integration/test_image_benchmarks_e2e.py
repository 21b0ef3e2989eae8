"""End to end on tiny files written in the real formats (2 tasks, few samples, T=2)."""

import io
import json
import pickle

import numpy as np
import pytest
import torch
from formats import write_idx, write_mat

from hlop.loop.continual import evaluate
from hlop.run.build import load_checkpoint
from hlop.run.config import ConfigError, apply_overrides
from hlop.run.experiment import train
from hlop.run.presets import build_benchmark, preset

RNG = np.random.default_rng(5)
QUICK = ["tasks=2", "epochs=1", "timesteps=2", "batch_size=8"]

pytestmark = pytest.mark.slow


def images(n, shape=(3, 32, 32)):
    return RNG.integers(0, 256, size=(n, *shape), dtype=np.uint8)


def dump(path, obj):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(obj, protocol=2))


def write_cifar100(root):
    for split, n in (("train", 200), ("test", 100)):
        labels = [i % 100 for i in range(n)]
        dump(
            root / "cifar-100-python" / split,
            {b"data": images(n).reshape(n, -1), b"fine_labels": labels},
        )


def write_five_datasets(root):
    for name, n in [(f"data_batch_{i}", 10) for i in range(1, 6)] + [("test_batch", 10)]:
        labels = [i % 10 for i in range(n)]
        dump(
            root / "cifar-10-batches-py" / name,
            {b"data": images(n).reshape(n, -1), b"labels": labels},
        )
    for folder in ("mnist", "fashion-mnist"):
        for prefix, n in (("train", 20), ("t10k", 10)):
            write_idx(root / folder / f"{prefix}-images-idx3-ubyte.gz", images(n, (28, 28)))
            write_idx(
                root / folder / f"{prefix}-labels-idx1-ubyte", (np.arange(n) % 10).astype(np.uint8)
            )
    for split, n in (("train", 20), ("test", 10)):
        x = RNG.integers(0, 256, size=(32, 32, 3, n), dtype=np.uint8)
        y = (np.arange(n) % 10 + 1).astype(np.float64).reshape(-1, 1)
        write_mat(root / "svhn" / f"{split}_32x32.mat", {"X": x, "y": y})
        dump(
            root / "notmnist" / f"notmnist_{split}.pkl",
            {"features": images(n, (1, 32, 32)), "labels": np.arange(n) % 10},
        )


def write_miniimagenet(root):
    for split in ("train", "test"):
        dump(
            root / "miniimagenet" / f"{split}.pkl",
            {
                "images": RNG.integers(0, 256, (100, 84, 84, 3), dtype=np.uint8),
                "labels": np.arange(100),
            },
        )


WRITERS = {
    "cifar100": write_cifar100,
    "five-datasets": write_five_datasets,
    "five-datasets-domain": write_five_datasets,
    "miniimagenet": write_miniimagenet,
}


@pytest.mark.parametrize(
    "benchmark, extra",
    [(b, []) for b in WRITERS]
    + [("cifar100", ["feedback=sign-symmetric"]), ("cifar100", ["hlop.proj_type=input"])],
)
def test_benchmark_end_to_end_on_fixtures(benchmark, extra, tmp_path):
    torch.set_num_threads(1)
    WRITERS[benchmark](tmp_path / "data")
    cfg = apply_overrides(preset(benchmark), [*QUICK, f"data_dir={tmp_path / 'data'}", *extra])
    if benchmark == "cifar100":
        apply_overrides(cfg, ["hlop.sizes=[[6,10,10],[2,2,2]]"])
    out = tmp_path / "run"
    res = train(cfg, out, stream=io.StringIO())
    assert res["tasks_completed"] == 2 and len(res["acc_matrix"][1]) == 2
    model, ckpt = load_checkpoint(out / "checkpoint_task1.pt")
    domain = benchmark == "five-datasets-domain"
    assert len(model.heads) == (1 if domain else 2)
    assert model.circuit_sizes() == res["circuit_sizes"]
    if benchmark.startswith("five-datasets"):
        # ResNet-18 with the paper's per-task sizes, capped at each circuit's dimension
        assert res["circuit_sizes"][0] == 12 and len(res["circuit_sizes"]) == 20 + domain
        assert res["circuit_sizes"][6] == 200  # blocks.2.conv2 (N = 40 * 9): 100 + 100
        assert res["circuit_sizes"][7] == 12  # blocks.2.shortcut (N = 20): 6 + 6
    bench = build_benchmark(cfg)
    for a, t in zip(res["acc_matrix"][1], bench.tasks[:2], strict=True):
        correct = a * len(t.test) / 100  # a whole number of the task's test samples
        assert len(t.test) > 0 and abs(correct - round(correct)) < 1e-6
    row = [evaluate(model, t.test, j, 8, "cpu") for j, t in enumerate(bench.tasks[:2])]
    assert row == pytest.approx(res["acc_matrix"][1])
    assert json.loads((out / "config.json").read_text())["benchmark"] == benchmark


@pytest.mark.parametrize("method", ["baseline", "hlop", "ewc", "gpm", "hat", "multitask"])
def test_every_method_on_a_convolutional_fixture(method, tmp_path):
    torch.set_num_threads(1)
    write_cifar100(tmp_path / "data")
    cfg = apply_overrides(
        preset("cifar100"),
        [*QUICK, f"data_dir={tmp_path / 'data'}", f"method={method}", "ewc.samples=8"],
    )
    apply_overrides(cfg, ["hlop.sizes=[[6,10,10],[2,2,2]]", "gpm.samples=8"])
    res = train(cfg, tmp_path / "run", stream=io.StringIO())
    assert res["status"] == "complete" and res["tasks_completed"] == 2
    if method == "multitask":  # one joint step: one row, BWT undefined
        assert len(res["acc_matrix"]) == 1 and res["bwt"] is None
    else:
        assert len(res["acc_matrix"]) == 2 and res["bwt"] is not None


def test_hat_refuses_a_shared_head(tmp_path):
    write_five_datasets(tmp_path / "data")
    cfg = apply_overrides(
        preset("five-datasets-domain"), [*QUICK, f"data_dir={tmp_path / 'data'}", "method=hat"]
    )
    with pytest.raises(ConfigError, match="HAT needs a head per task"):
        train(cfg, tmp_path / "run", stream=io.StringIO())
