"""The command line: bad input gives a clear message and an exit code, never a traceback."""

import gzip
import io
import json
import re
import warnings

import pytest
import torch
from formats import write_idx

import hlop.core.precision
import hlop.run.experiment
from hlop.loop.state import Plugin
from hlop.methods import METHODS
from hlop.run.config import apply_overrides
from hlop.run.experiment import train
from hlop.run.presets import preset
from hlop.tools.cli import main

TINY = ["--tasks", "2", "--timesteps", "2", "--set", "train_limit=200", "--set", "test_limit=100"]


def run_cli(capsys, *argv):
    torch.set_num_threads(1)  # 2 shared cores: more threads only contend (conftest restores)
    code = main(list(argv))
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, out, err


def test_train_embedded_end_to_end(tmp_path, capsys):
    out_dir = tmp_path / "run"
    code, out, err = run_cli(capsys, "train", *TINY, "--out-dir", str(out_dir))
    assert code == 0, err
    assert "accuracy matrix" in out and "ACC" in out and "BWT" in out
    res = json.loads((out_dir / "results.json").read_text())
    assert res["benchmark"] == "pmnist-subset" and res["tasks_completed"] == 2
    cfg = json.loads((out_dir / "config.json").read_text())
    assert cfg["timesteps"] == 2 and cfg["train_limit"] == 200


def test_existing_out_dir_refused_unless_overwrite(tmp_path, capsys):
    out_dir = tmp_path / "run"
    assert run_cli(capsys, "train", *TINY, "--tasks", "1", "--out-dir", str(out_dir))[0] == 0
    before = (out_dir / "results.json").read_text()
    code, _, err = run_cli(capsys, "train", *TINY, "--tasks", "1", "--out-dir", str(out_dir))
    assert code == 2 and "already holds a run" in err and "--overwrite" in err
    assert (out_dir / "results.json").read_text() == before
    args = ("train", *TINY, "--tasks", "1", "--out-dir", str(out_dir), "--overwrite")
    assert run_cli(capsys, *args)[0] == 0


@pytest.mark.parametrize(
    "args, message",
    [
        (["--set", "hlop.nope=3"], "error: unknown configuration key 'hlop.nope'; valid keys:"),
        (["--set", "lr"], "error: --set expects key=value, got 'lr'"),
        (["--lr", "-0.1"], "error: lr must be > 0, got -0.1"),
        (["--tasks", "0"], "error: tasks must be >= 1, got 0"),
        (["--batch-size", "0"], "error: batch_size must be >= 1, got 0"),
        (["--set", "epochs=two"], "error: epochs: cannot read 'two' as int"),
        (
            ["--set", "hlop.sizes=[[900,10,10],[1,1,1]]"],
            "error: hlop.sizes[0]: block of 900 rows above the dimension 784 of 'fc1'",
        ),
        (
            ["--set", "hlop.sizes=[[-1,10,10],[1,1,1]]"],
            "error: hlop.sizes[0]: the block size of 'fc1' must be an integer >= 0: -1",
        ),
        (
            ["--set", "hlop.sizes=[[10,10]]"],
            "error: hlop.sizes lists 1 tasks but the run has 2: one list per task",
        ),
        (
            ["--set", "hlop.sizes=[[10,10],[1,1]]"],
            "error: hlop.sizes[0] needs 3 values (one per circuit: fc1, fc2, heads.0), got "
            "[10, 10]",
        ),
        (["--set", "neuron=3"], "error: neuron is a section; set one of its keys, e.g. neuron."),
    ],
)
def test_bad_config_refused_before_training(tmp_path, capsys, args, message):
    out_dir = tmp_path / "run"
    code, out, err = run_cli(capsys, "train", *TINY, *args, "--out-dir", str(out_dir))
    assert code == 2
    assert message in err
    # one error, not the unknown-key message whose list of keys names every setting
    assert err.count("error:") == 1
    if "unknown configuration key" not in message:
        assert "unknown configuration key" not in err and "valid keys" not in err
    assert not out_dir.exists()  # nothing started


def test_missing_data_names_files_and_fetch_command(tmp_path, capsys):
    code, _, err = run_cli(capsys, "train", "pmnist", "--out-dir", str(tmp_path / "r"))
    assert code == 2 and "--data-dir" in err and "hlop data fetch mnist" in err
    assert "D/mnist/t10k-labels-idx1-ubyte (or t10k-labels-idx1-ubyte.gz)" in err
    code, _, err = run_cli(
        capsys, "train", "pmnist", "--data-dir", str(tmp_path), "--out-dir", str(tmp_path / "r")
    )
    assert code == 2
    assert "train-images-idx3-ubyte" in err and "hlop data fetch mnist" in err


def write_mnist(root, n=20, corrupt=None):
    d = root / "mnist"
    d.mkdir(parents=True)
    g = torch.Generator().manual_seed(0)
    for prefix, count in (("train", n), ("t10k", n)):
        images = torch.randint(0, 256, (count, 28, 28), generator=g, dtype=torch.uint8).numpy()
        labels = (torch.arange(count) % 10).to(torch.uint8).numpy()
        write_idx(d / f"{prefix}-images-idx3-ubyte.gz", images)
        write_idx(d / f"{prefix}-labels-idx1-ubyte", labels)
    if corrupt:
        path = d / corrupt
        path.write_bytes(path.read_bytes()[:-7])  # truncated
    return d


def test_full_pmnist_from_data_dir_in_idx_files(tmp_path, capsys):
    write_mnist(tmp_path / "data")
    args = ["train", "pmnist", "--data-dir", str(tmp_path / "data"), "--tasks", "2"]
    code, _, err = run_cli(capsys, *args, "--timesteps", "2", "--out-dir", str(tmp_path / "r"))
    assert code == 0, err
    assert json.loads((tmp_path / "r" / "results.json").read_text())["benchmark"] == "pmnist"


def test_truncated_idx_names_the_file(tmp_path, capsys):
    write_mnist(tmp_path / "data", corrupt="t10k-labels-idx1-ubyte")
    code, _, err = run_cli(
        capsys,
        "train",
        "pmnist",
        "--data-dir",
        str(tmp_path / "data"),
        "--out-dir",
        str(tmp_path / "r"),
    )
    assert code == 2 and "t10k-labels-idx1-ubyte" in err


def test_corrupt_gzip_names_the_file(tmp_path, capsys):
    d = write_mnist(tmp_path / "data")
    (d / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(b"x" * 100)[:30])
    code, _, err = run_cli(
        capsys,
        "train",
        "pmnist",
        "--data-dir",
        str(tmp_path / "data"),
        "--out-dir",
        str(tmp_path / "r"),
    )
    assert code == 2 and "train-images-idx3-ubyte.gz" in err


class Poison(Plugin):
    """Puts ``value`` into a weight in task 1 (as a diverging learning rate would)."""

    def __init__(self, layer: str, value: float) -> None:
        self.layer, self.value = layer, value

    def before_epoch(self, run):
        if run.task == 1:
            with torch.no_grad():
                run.model.get_parameter(self.layer).fill_(self.value)


@pytest.mark.parametrize(
    "layer, value, message",
    [
        ("heads.0.weight", float("inf"), "loss became nan in task 1"),
        # NaN currents never reach the threshold: silent neurons, finite loss, NaN weights
        ("fc2.weight", float("nan"), "fc2.weight became NaN or infinite in task 1"),
    ],
)
def test_divergence_stops_and_keeps_completed_tasks(
    tmp_path, capsys, monkeypatch, layer, value, message
):
    poison = Poison(layer, value)
    monkeypatch.setattr(
        hlop.run.experiment, "method_plugins", lambda cfg: [METHODS["hlop"].build(cfg.hlop), poison]
    )
    out_dir = tmp_path / "run"
    # 10 batches in task 0: enough to learn well above chance (10%) before the poison
    args = ("train", *TINY, "--batch-size", "20", "--out-dir", str(out_dir))
    code, _, err = run_cli(capsys, *args)
    assert code == 1
    assert message in err and "completed tasks are kept" in err
    res = json.loads((out_dir / "results.json").read_text())
    assert res["status"] == "failed" and res["tasks_completed"] == 1
    assert len(res["acc_matrix"]) == 1 and res["acc_matrix"][0][0] > 30
    assert (out_dir / "checkpoint_task0.pt").exists()
    assert not (out_dir / "checkpoint_task1.pt").exists()


@pytest.mark.parametrize(
    "name, folder", [("notmnist", "notmnist"), ("miniimagenet", "miniimagenet")]
)
def test_data_fetch_without_download_explains_placement(tmp_path, capsys, name, folder):
    code, out, err = run_cli(capsys, "data", "fetch", name, "--data-dir", str(tmp_path))
    assert code == 2 and "cannot be downloaded" in err
    assert str(tmp_path / folder) in err and "To get them" in err
    assert not (tmp_path / folder).exists()


def test_split_benchmarks_without_data_dir_name_files_and_fetch(tmp_path, capsys):
    for benchmark, key in (("split-mnist", "mnist"), ("split-fashion-mnist", "fashion-mnist")):
        code, _, err = run_cli(capsys, "train", benchmark, "--out-dir", str(tmp_path / "r"))
        assert code == 2 and "--data-dir" in err
        assert f"D/{key}/train-images-idx3-ubyte" in err
        assert f"hlop data fetch {key} --data-dir D" in err
        assert not (tmp_path / "r").exists()


def test_show_config(capsys):
    code, out, _ = run_cli(capsys, "train", "pmnist", "--lr", "0.05", "--show-config")
    cfg = json.loads(out)
    assert code == 0 and cfg["lr"] == 0.05 and cfg["hlop"]["sizes"][9] == [10, 10, 10]


class FakeTerminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_bar_on_terminal_plain_lines_otherwise(tmp_path):
    torch.set_num_threads(1)
    cfg = apply_overrides(
        preset("pmnist-subset"), ["tasks=1", "timesteps=2", "train_limit=300", "epochs=2"]
    )
    term, plain = FakeTerminal(), io.StringIO()
    train(cfg, tmp_path / "a", stream=term)
    train(cfg, tmp_path / "b", stream=plain)
    bar = term.getvalue()
    # tqdm: redrawn in place, with the batch count, elapsed<remaining (ETA) and rate
    assert "\r" in bar and "task 1/1:" in bar and "10/10 [" in bar
    assert re.search(r"\[\d\d:\d\d<\d\d:\d\d, +[\d.]+ ?(batch/s|s/batch)", bar)
    assert "epoch 2/2 loss" in bar  # the running loss in the bar's postfix
    text = plain.getvalue()
    assert "\r" not in text and "batch/s" not in text and "<" not in text
    assert "task 1/1 epoch 1/2: train loss" in text and "task 1/1 epoch 2/2: train loss" in text
    assert "after task 1: accuracies" in text
    for line in ("task 1/1 epoch 2/2: train loss", "after task 1: accuracies"):
        assert line in bar  # the log lines reach the terminal too, between redraws


def test_capped_circuit_warns_in_one_line(tmp_path, capsys):
    # split-mnist-subset's first conv has N=9; the preset adds 6 then 2 per task: task 2 caps
    args = ["train", "split-mnist-subset", "--tasks", "3", "--timesteps", "2", "--epochs", "1"]
    args += ["--set", "train_limit=20", "--set", "test_limit=10", "--set", "diagnostics_samples=0"]
    code, out, err = run_cli(capsys, *args, "--out-dir", str(tmp_path / "r"))
    assert code == 0, err
    lines = [line for line in err.splitlines() if "warning" in line]
    assert lines, err
    for line in lines:
        assert line.startswith("hlop: warning: lateral circuit of layer '")
        assert "only 1 fit in dimension 9" in line or "only 0 fit" in line
    assert ".py" not in err and "UserWarning" not in err and "warnings.warn" not in err
    assert all(line.startswith("hlop: warning: ") for line in err.splitlines())


@pytest.mark.parametrize("native", [False, True])
def test_bf16_warns_where_the_cpu_emulates_it(monkeypatch, native):
    monkeypatch.setattr(hlop.core.precision, "_cpu_multiplies_bf16", lambda: native)
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX2")
    cpu = torch.device("cpu")
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        hlop.run.experiment.warn_if_bf16_is_emulated("bf16", cpu)
        hlop.run.experiment.warn_if_bf16_is_emulated("fp32", cpu)  # fp32: never
        hlop.run.experiment.warn_if_bf16_is_emulated("bf16", torch.device("meta"))  # not a CPU
    assert [str(w.message).split(":")[0] for w in seen] == (
        [] if native else ["--precision bf16 on a CPU without bf16 products (AVX2)"]
    )
