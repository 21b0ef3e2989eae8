"""Data-parallel training: two worker processes started by torchrun (gloo, one thread each)
train as one process does on the same global batches.

Tolerances.  In float64 (the test worker's ``HLOP_TEST_FLOAT64``) the two runs differ only
by the order of the sums that the all-reduce changes: circuits and weights agree to 1e-10
after whole runs (measured: 1e-13).  In float32, the precision hlop trains in, they start
1e-7 apart, and stay there only until a membrane potential lands within that distance of a
threshold: the spike then flips in one run and not in the other, and from there the runs
are two trajectories (as with another thread count in one process).  The float32 test is
short enough that no spike flips; its tolerance is 1e-5.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import distributed_worker
import pytest
import torch
from helpers import SUPPORT
from torch import nn

import hlop
from hlop.loop import distributed
from hlop.run.config import ConfigError
from hlop.tools.cli import main

# pmnist-subset, 2 tasks of 1000 samples in global batches of 37: 27 batches split 18 / 19
# between the workers, and a last batch of 1 row (worker 0 runs a stand-in of share 0)
MLP = ["--tasks", "2", "--epochs", "1", "--lr", "0.3", "--timesteps", "8", "--batch-size", "37"]
MLP += ["--set", "hidden=100", "--set", "train_limit=1000", "--set", "test_limit=300"]
MLP += ["--set", "hlop.sizes=[[40,40,30],[20,20,20]]"]
# the spiking CNN (batch norm trains in task 0) on split MNIST: 100 samples in batches of
# 33 (parts 16 / 17) and a last one of 1 row
CNN = ["split-mnist-subset", "--tasks", "2", "--epochs", "1", "--timesteps", "2"]
CNN += ["--batch-size", "33", "--lr", "0.05", "--set", "train_limit=100"]
CNN += ["--set", "test_limit=100", "--set", "warmup=0", "--set", "t_max=1"]
CNN += ["--set", "diagnostics_samples=0"]


def torchrun(argv: list[str], workers: int = 2, timeout: float = 600, **env: str):
    """``torchrun --nproc_per_node=workers tests/distributed_worker.py ARGV`` (one thread
    per worker): hlop's command line in every worker; the finished process."""
    child_env = {
        **os.environ,
        "PYTHONPATH": str(Path(hlop.__file__).parents[1]),
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        **env,
    }
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command += [f"--nproc_per_node={workers}", str(SUPPORT / "distributed_worker.py"), *argv]
    return subprocess.run(command, env=child_env, capture_output=True, text=True, timeout=timeout)


def one_process(argv: list, monkeypatch, **env: str) -> None:
    """hlop's command line ``argv`` (with the test hooks) in this process, one thread."""
    torch.set_num_threads(1)  # conftest restores the count
    with monkeypatch.context() as m:
        for key, value in env.items():
            m.setenv(key, value)
        assert distributed_worker.main([str(a) for a in argv]) == 0


def results(directory: Path) -> dict:
    return json.loads((directory / "results.json").read_text())


def compare(one: Path, two: Path, tasks: int, atol: float) -> None:
    """Both workers' states are bit-identical after every task, and equal to the one-process
    run's to ``atol``."""
    for k in range(tasks):
        ref = torch.load(one / f"rank0-task{k}.pt")
        w0, w1 = (torch.load(two / f"rank{r}-task{k}.pt") for r in (0, 1))
        assert set(w0) == set(ref)
        for name, value in ref.items():
            assert torch.equal(w0[name], w1[name]), f"the workers differ in {name} (task {k})"
            diff = (w0[name].double() - value.double()).abs().max().item() if value.numel() else 0
            assert diff <= atol, f"{name} after task {k}: {diff:.3g} from the one-process run"


def check_accuracies(one: Path, two: Path) -> None:
    a, b = results(one), results(two)
    assert b["status"] == "complete" and b["workers"] == 2 and a["workers"] == 1
    assert ("acc_matrix_agnostic" in a) == ("acc_matrix_agnostic" in b)
    for key in ("acc_matrix", "acc_matrix_agnostic"):  # the second: a head per task only
        for row_a, row_b in zip(a.get(key, []), b.get(key, []), strict=True):
            for x, y in zip(row_a, row_b, strict=True):
                assert (x is None and y is None) or abs(x - y) <= 0.5


def train_both(tmp_path: Path, monkeypatch, args: list[str], **env: str) -> tuple[Path, Path]:
    """The run in one process and with two workers; their dump directories."""
    for d in ("one", "two", "dump-one", "dump-two"):
        (tmp_path / d).mkdir()
    one_process(
        ["train", *args, "--out-dir", tmp_path / "one" / "run"],
        monkeypatch,
        HLOP_TEST_DUMP=str(tmp_path / "dump-one"),
        **env,
    )
    proc = torchrun(
        ["train", *args, "--out-dir", str(tmp_path / "two" / "run")],
        HLOP_TEST_DUMP=str(tmp_path / "dump-two"),
        **env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    assert sum(line.startswith("accuracy matrix") for line in lines) == 1  # worker 0 reports
    assert [p.name for p in (tmp_path / "two").iterdir()] == ["run"]  # one output directory
    return tmp_path / "one" / "run", tmp_path / "two" / "run"


# ---------------------------------------------------------------------- one process
def test_one_process_is_untouched():
    """Not started by torchrun: every helper is the identity, nothing is reduced."""
    assert not distributed.launched() and not distributed.is_distributed()
    assert (distributed.rank(), distributed.world_size(), distributed.label()) == (0, 1, "")
    t = torch.arange(5)
    assert distributed.reduce_hebbian(t) is t and distributed.shard(t) is t
    index, share = distributed.shard_batch(t)
    assert index is t and share == 1.0
    assert distributed.sum_over_workers(3) == 3 and distributed.sum_over_workers(1, 2.5) == (1, 2.5)
    p = nn.Parameter(torch.ones(2))
    p.grad = torch.ones(2)
    grad = p.grad
    distributed.average_gradients([p], 0.5)
    assert p.grad is grad and torch.equal(grad, torch.ones(2))
    model = nn.Sequential(nn.BatchNorm2d(2))
    assert type(distributed.synchronise_batchnorm(model)[0]) is nn.BatchNorm2d
    assert distributed.broadcast_object({"a": 1}) == {"a": 1}


def test_timeout_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv(distributed.TIMEOUT_VARIABLE, "90")
    assert distributed.timeout().total_seconds() == 90
    monkeypatch.setenv(distributed.TIMEOUT_VARIABLE, "soon")
    with pytest.raises(ConfigError, match="HLOP_DIST_TIMEOUT must be a number of seconds"):
        distributed.timeout()


def test_batch_size_is_the_global_batch_in_help(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "the global batch, split across the workers under torchrun" in help_text


def test_compare_is_refused_under_torchrun(monkeypatch, capsys):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    assert main(["compare", "--methods", "baseline", "--out-dir", "unused"]) == 2
    assert "hlop compare runs in one process" in capsys.readouterr().err


# ---------------------------------------------------------------------- two workers
# (torchrun and two worker processes: slow, as the end-to-end trainings)
@pytest.mark.slow
def test_collectives_of_two_workers():
    """Batch norm, Hebbian updates, gradients and setup failures across two real workers
    equal the computation on the global batch (tests/distributed_checks.py)."""
    argv = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    argv.append(str(SUPPORT / "distributed_checks.py"))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert proc.stdout.count("checks passed") == 2


@pytest.mark.slow
@pytest.mark.parametrize("args", [pytest.param(MLP, id="mlp"), pytest.param(CNN, id="cnn")])
def test_two_workers_train_as_one_process(tmp_path, monkeypatch, args):
    """float64: the workers' circuits are bit-identical after each task, and equal (1e-10)
    with the weights to those of one process on the same global batches."""
    one, two = train_both(tmp_path, monkeypatch, args, HLOP_TEST_FLOAT64="1")
    compare(tmp_path / "dump-one", tmp_path / "dump-two", tasks=2, atol=1e-10)
    check_accuracies(one, two)
    assert sorted(p.name for p in two.iterdir()) == sorted(p.name for p in one.iterdir())


@pytest.mark.slow
def test_two_workers_in_float32(tmp_path, monkeypatch):
    one, two = train_both(tmp_path, monkeypatch, MLP)
    compare(tmp_path / "dump-one", tmp_path / "dump-two", tasks=2, atol=1e-5)
    check_accuracies(one, two)


@pytest.mark.slow
@pytest.mark.parametrize(
    "extra",
    [
        pytest.param(["--training", "ottt", "--online-update", "--timesteps", "4"], id="ottt"),
        pytest.param(["--method", "ewc", "--lr", "0.05", "--set", "ewc.samples=101"], id="ewc"),
        pytest.param(["--method", "gpm"], id="gpm"),
        pytest.param(["--replay", "--set", "replay.memory_size=10"], id="replay"),
        pytest.param(["--method", "multitask"], id="multitask"),
    ],
)
def test_methods_with_two_workers(tmp_path, monkeypatch, extra):
    """What methods learn from data (EWC's Fisher, GPM's bases, replay, joint training,
    OTTT's per-step optimiser steps) is the same with two workers (float64)."""
    one, two = train_both(tmp_path, monkeypatch, [*MLP, *extra], HLOP_TEST_FLOAT64="1")
    tasks = 1 if "multitask" in extra else 2
    compare(tmp_path / "dump-one", tmp_path / "dump-two", tasks=tasks, atol=1e-10)
    check_accuracies(one, two)


@pytest.mark.slow
def test_a_failing_worker_stops_the_others_and_the_run_resumes(tmp_path):
    """Worker 1 fails in task 2: worker 0 stops at once with a message saying why, the
    saved state continues (torchrun --resume) to the results of an uninterrupted run."""
    reference = torchrun(["train", *MLP, "--out-dir", str(tmp_path / "reference")])
    assert reference.returncode == 0, reference.stderr[-3000:]
    run = tmp_path / "run"
    failed = torchrun(["train", *MLP, "--out-dir", str(run)], HLOP_TEST_FAIL="1:1:3")
    assert failed.returncode != 0
    assert "worker 1 fails on purpose" in failed.stderr
    assert "hlop: [worker 0/2] stopped" in failed.stderr  # a lost worker, or torchrun's SIGTERM
    assert results(run)["status"] in ("failed", "interrupted")
    resumed = torchrun(["train", "--resume", str(run)])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming" in resumed.stdout
    assert results(run)["acc_matrix"] == results(tmp_path / "reference")["acc_matrix"]
    csv = (run / "metrics.csv").read_text()
    assert csv == (tmp_path / "reference" / "metrics.csv").read_text()
