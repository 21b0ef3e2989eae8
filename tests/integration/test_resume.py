"""Resume: a killed or interrupted run continues to exactly the results of an uninterrupted
one; damaged or foreign state and changed settings are clear errors; --config FILE."""

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
import hlop.run.experiment
from hlop.loop.state import Plugin
from hlop.run.resume import read_state
from hlop.tools.cli import main

TINY = ["--tasks", "3", "--epochs", "2", "--timesteps", "2", "--set", "hidden=32"]
TINY += ["--set", "train_limit=150", "--set", "test_limit=100"]
TINY += ["--set", "hlop.sizes=[[8,8,8],[8,8,8],[8,8,8]]"]
# state.pt writes of a TINY run (checkpoint_every=1, none after a task's last epoch):
# 1 task 0 epoch 1, 2 start of task 1, 3 task 1 epoch 1, 4 start of task 2, 5 task 2 epoch 1,
# 6 complete


def cli(capsys, *argv):
    torch.set_num_threads(1)  # conftest restores the count
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, out, err


def outcome(directory: Path) -> tuple[list, bytes]:
    """The accuracy matrix and the metrics rows of a finished run."""
    res = json.loads((directory / "results.json").read_text())
    assert res["status"] == "complete"
    return res["acc_matrix"], (directory / "metrics.csv").read_bytes()


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted TINY run (HLOP)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("reference") / "run"
    try:
        assert main(["train", *TINY, "--out-dir", str(out)]) == 0
    finally:
        torch.set_num_threads(threads)
    return outcome(out)


# ---------------------------------------------------------------------- real processes
PAUSED_RUN = SUPPORT / "paused_run.py"


def start(out: Path, when: str, write: int) -> subprocess.Popen:
    """``hlop train TINY`` in a child process (one thread), paused ``when`` ("before" or
    "after") the ``write``-th state.pt replaces the previous one (tests/paused_run.py)."""
    child_env = {
        **os.environ,
        "PYTHONPATH": str(Path(hlop.__file__).parents[1]),
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
    }
    pause = [str(PAUSED_RUN), when, "state.pt", str(write)]
    argv = [sys.executable, *pause, "train", *TINY, "--out-dir", str(out)]
    return subprocess.Popen(argv, env=child_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def wait_for_pause(proc: subprocess.Popen, out: Path, timeout: float = 600) -> None:
    """Until the child sits in the test pause of an atomic write (it wrote ``.paused``)."""
    end = time.monotonic() + timeout
    while not (out / ".paused").exists():
        if proc.poll() is not None:
            raise AssertionError(f"the run ended first: {proc.communicate()}")
        if time.monotonic() > end:
            proc.kill()
            raise AssertionError("the run never reached the pause")
        time.sleep(0.05)


KILL_POINTS = [
    # (pause before or after the replace, state.pt write, where the saved state continues)
    pytest.param("after", 3, (1, 1), id="mid-task"),
    pytest.param("after", 2, (1, 0), id="after-task-0", marks=pytest.mark.slow),
    pytest.param("before", 3, (1, 0), id="during-write", marks=pytest.mark.slow),
]


@pytest.mark.parametrize(("hook", "write", "point"), KILL_POINTS)
def test_killed_run_resumes_to_identical_results(tmp_path, capsys, reference, hook, write, point):
    out = tmp_path / "run"
    proc = start(out, hook, write)
    wait_for_pause(proc, out)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    state = read_state(out / "state.pt")  # the last good state: readable
    assert (state["task"], state["epoch"]) == point
    if hook == "before":
        assert (out / ".state.pt.tmp").exists()  # the new state was never put in place
    code, stdout, err = cli(capsys, "train", "--resume", out)
    assert code == 0, err
    assert "resuming" in stdout
    assert outcome(out) == reference


@pytest.mark.parametrize(
    ("signum", "code"),
    [(signal.SIGINT, 130), pytest.param(signal.SIGTERM, 143, marks=pytest.mark.slow)],
)
def test_signal_saves_state_and_exits_with_resume_command(
    tmp_path, capsys, reference, signum, code
):
    out = tmp_path / "run"
    # the signal arrives while the state after task 1's first epoch is being written
    proc = start(out, "before", 3)
    wait_for_pause(proc, out)
    proc.send_signal(signum)
    stdout, stderr = proc.communicate(timeout=600)
    stderr = stderr.decode()
    assert proc.returncode == code, stderr
    assert "Traceback" not in stderr
    assert f"hlop train --resume {out}" in stderr
    assert signal.Signals(signum).name in stderr
    state = read_state(out / "state.pt")  # the interrupted write was completed on the way out
    assert (state["task"], state["epoch"]) == (1, 1)
    assert json.loads((out / "results.json").read_text())["status"] == "interrupted"
    assert cli(capsys, "train", "--resume", out)[0] == 0
    assert outcome(out) == reference


# ---------------------------------------------------------------------- plugin state
class Stop(Plugin):
    """Raises KeyboardInterrupt (as Ctrl-C would) once, before epoch ``epoch`` of ``task``."""

    name = "stop"

    def __init__(self, task, epoch):
        self.at, self.fired = (task, epoch), False

    def before_epoch(self, run):
        if (run.task, run.epoch) == self.at and not self.fired:
            self.fired = True
            raise KeyboardInterrupt


def interrupted(monkeypatch, capsys, out, argv, task=1, epoch=1):
    """Run ``argv`` in ``out`` until a KeyboardInterrupt before (task, epoch)."""
    stop = Stop(task, epoch)
    plugins = hlop.run.experiment.method_plugins
    with monkeypatch.context() as m:
        m.setattr(hlop.run.experiment, "method_plugins", lambda cfg: [*plugins(cfg), stop])
        code, _, err = cli(capsys, "train", *argv, "--out-dir", out)
    assert stop.fired and code == 130, err
    assert f"hlop train --resume {out}" in err
    return err


METHODS = [
    pytest.param(["--method", "ewc", "--set", "ewc.samples=30"], (1, 1), id="ewc"),
    pytest.param(["--method", "baseline", "--replay"], (1, 1), id="replay"),
    # sizes found from the data: the circuits' energy averages and tracking switch resume
    pytest.param(["--set", "hlop.sizes=auto", "--set", "hlop.threshold=0.5"], (1, 1), id="auto"),
    pytest.param(["--method", "gpm"], (1, 1), id="gpm", marks=pytest.mark.slow),
    pytest.param(["--method", "multitask"], (0, 1), id="multitask", marks=pytest.mark.slow),
]


@pytest.mark.parametrize(("method", "point"), METHODS)
def test_plugin_state_resumes_exactly(tmp_path, capsys, monkeypatch, method, point):
    # checkpoint_every=0: the epoch's state is only in memory when the interruption comes
    argv = [*TINY, *method, "--checkpoint-every", "0"]
    assert cli(capsys, "train", *argv, "--out-dir", tmp_path / "ref")[0] == 0
    out = tmp_path / "run"
    interrupted(monkeypatch, capsys, out, argv, *point)
    state = read_state(out / "state.pt")
    assert (state["task"], state["epoch"]) == point
    if "ewc" in method:
        assert state["plugins"]["ewc"]["fisher"]  # task 0's Fisher
    if "--replay" in method:
        assert len(state["plugins"]["replay"]["memory"]) == 2
    assert cli(capsys, "train", "--resume", out)[0] == 0
    ref = tmp_path / "ref"
    assert outcome(out) == outcome(ref)
    blocks = [
        json.loads((d / "results.json").read_text())["circuit_blocks"]
        for d in (out, tmp_path / "ref")
    ]
    assert blocks[0] == blocks[1]


# momentum and a cosine schedule with warmup: the step's optimiser and scheduler states
# matter when a run resumes inside a task.  The lr factors of the 3 epochs are 1, 1, 0.5: a
# scheduler started afresh at epoch 2 gives 1 there (the restored optimiser holds epoch 1's
# lr, so a schedule whose factors 1 and 2 are equal would not tell)
MID_TASK = [*TINY, "--tasks", "2", "--epochs", "3", "--set", "momentum=0.9"]
MID_TASK += ["--set", "scheduler=cosine", "--set", "warmup=1", "--set", "t_max=3"]
MID_TASK += ["--set", "diagnostics_samples=32"]


def everything(directory: Path) -> tuple[dict, bytes]:
    """results.json without its timings, and metrics.csv, of a finished run."""
    res = json.loads((directory / "results.json").read_text())
    assert res["status"] == "complete"
    del res["seconds_per_task"]
    for entry in res["circuit_diagnostics"]:
        del entry["seconds"]
    return res, (directory / "metrics.csv").read_bytes()


def test_resume_inside_a_task_continues_optimiser_scheduler_and_diagnostics(
    tmp_path, capsys, monkeypatch
):
    """Resuming after epoch 1 of 3 of task 1 (momentum, cosine warmup, circuit diagnostics)
    gives every result of the uninterrupted run: the momentum buffers, the schedule's epoch
    and task 0's circuit diagnostics come back from state.pt."""
    assert cli(capsys, "train", *MID_TASK, "--out-dir", tmp_path / "ref")[0] == 0
    reference = everything(tmp_path / "ref")
    assert [d["task"] for d in reference[0]["circuit_diagnostics"]] == [0, 1]
    out = tmp_path / "run"
    interrupted(monkeypatch, capsys, out, MID_TASK)
    state = read_state(out / "state.pt")
    assert (state["task"], state["epoch"]) == (1, 1)
    assert state["optimizer"]["state"]  # momentum buffers
    assert state["scheduler"]["last_epoch"] == 1
    assert cli(capsys, "train", "--resume", out)[0] == 0
    assert everything(out) == reference


@pytest.mark.slow
def test_hat_resumes_exactly(tmp_path, capsys, monkeypatch):
    argv = ["split-mnist-subset", "--method", "hat", "--tasks", "2", "--epochs", "2"]
    argv += ["--timesteps", "2", "--set", "train_limit=100", "--set", "test_limit=50"]
    argv += ["--batch-size", "20"]
    assert cli(capsys, "train", *argv, "--out-dir", tmp_path / "ref")[0] == 0
    out = tmp_path / "run"
    interrupted(monkeypatch, capsys, out, argv)
    state = read_state(out / "state.pt")
    hat = state["plugins"]["hat"]
    assert hat["tasks"] == 2 and len(hat["cumulative"]) > 0
    assert any(k.startswith("hat_gates.embeddings.1.") for k in state["model"])
    assert cli(capsys, "train", "--resume", out)[0] == 0
    assert outcome(out) == outcome(tmp_path / "ref")


SPLIT = ["split-mnist-subset", "--tasks", "2", "--epochs", "2", "--timesteps", "2"]
SPLIT += ["--set", "train_limit=64", "--set", "test_limit=40", "--batch-size", "32"]
SPLIT += ["--set", "diagnostics_samples=0"]


def test_task_agnostic_matrix_resumes_and_older_states_still_load(tmp_path, capsys, monkeypatch):
    """Split MNIST stopped after epoch 1 of task 1 continues to both matrices of the
    uninterrupted run; a state saved before hlop recorded the task-agnostic matrix (no entry)
    still resumes: the task-aware matrix is the same, the task-agnostic one not recorded (its
    first row cannot be evaluated again)."""
    assert cli(capsys, "train", *SPLIT, "--out-dir", tmp_path / "ref")[0] == 0
    ref = json.loads((tmp_path / "ref" / "results.json").read_text())
    assert len(ref["acc_matrix_agnostic"]) == 2
    for name, older in (("run", False), ("older", True)):
        out = tmp_path / name
        interrupted(monkeypatch, capsys, out, SPLIT)
        state = read_state(out / "state.pt")
        assert state["acc_matrix_agnostic"] == [ref["acc_matrix_agnostic"][0][:1]]
        if older:
            del state["acc_matrix_agnostic"]
            torch.save(state, out / "state.pt")
        assert cli(capsys, "train", "--resume", out)[0] == 0
        res = json.loads((out / "results.json").read_text())
        assert res["acc_matrix"] == ref["acc_matrix"]
        if older:
            assert not [k for k in res if k.endswith("_agnostic")]
        else:
            for key in ("acc_matrix_agnostic", "acc_agnostic", "bwt_agnostic"):
                assert res[key] == ref[key], key


# ---------------------------------------------------------------------- refusals
@pytest.fixture
def stopped(tmp_path, capsys, monkeypatch):
    """A TINY run interrupted in task 1 (the state continues after its first epoch)."""
    out = tmp_path / "run"
    interrupted(monkeypatch, capsys, out, [*TINY, "--tasks", "2"])
    return out


def test_changed_setting_is_named_neutral_ones_allowed(stopped, capsys):
    code, _, err = cli(capsys, "train", "--resume", stopped, "--lr", "0.5", "--set", "seed=3")
    assert code == 2
    assert "lr (0.1 -> 0.5)" in err and "seed (2022 -> 3)" in err
    assert "state.pt" not in err  # refused before anything is read or written
    code, _, err = cli(
        capsys, "train", "--resume", stopped, "--device", "cpu", "--checkpoint-every", "2"
    )
    assert code == 0, err
    assert json.loads((stopped / "results.json").read_text())["status"] == "complete"


def test_damaged_and_foreign_state_are_clear_errors(stopped, capsys):
    state = stopped / "state.pt"
    data = state.read_bytes()
    state.write_bytes(data[: len(data) // 2])
    code, _, err = cli(capsys, "train", "--resume", stopped)
    assert code == 2 and "damaged" in err and "state.pt" in err
    torch.save({"model": {}}, state)
    code, _, err = cli(capsys, "train", "--resume", stopped)
    assert code == 2 and "is not an hlop resume state" in err
    state.write_bytes(b"not a checkpoint at all")
    assert cli(capsys, "train", "--resume", stopped)[0] == 2
    code, _, err = cli(capsys, "train", "--resume", stopped.parent / "nothing")
    assert code == 2 and "no hlop run there" in err


def test_resume_refuses_other_output_options(stopped, capsys):
    for extra in (["--overwrite"], ["--out-dir", stopped.parent / "x"], ["pmnist"]):
        code, _, err = cli(capsys, "train", "--resume", stopped, *extra)
        assert code == 2, extra


def test_state_and_checkpoints_load_weights_only(stopped):
    state = torch.load(stopped / "state.pt", weights_only=True)
    assert state["format"] == "hlop-state" and state["rng"]["torch"].dtype == torch.uint8
    assert state["optimizer"] is not None and state["heads"] == 1  # pmnist: one shared head
    ckpt = torch.load(stopped / "checkpoint_task0.pt", weights_only=True)
    assert ckpt["task"] == 0


# ---------------------------------------------------------------------- --config FILE
def test_config_file_round_trip_and_overrides(tmp_path, capsys):
    code, shown, _ = cli(capsys, "train", "split-mnist-subset", "--lr", "0.2", "--show-config")
    assert code == 0
    path = tmp_path / "config.json"
    path.write_text(shown)
    code, again, _ = cli(capsys, "train", "--config", path, "--show-config")
    assert code == 0 and json.loads(again) == json.loads(shown)
    code, again, _ = cli(capsys, "train", "split-mnist-subset", "--config", path, "--show-config")
    assert code == 0 and json.loads(again) == json.loads(shown)
    code, changed, _ = cli(
        capsys, "train", "--config", path, "--epochs", "3", "--set", "hlop.iterations=2",
        "--show-config",
    )  # fmt: skip
    changed = json.loads(changed)
    assert changed["epochs"] == 3 and changed["hlop"]["iterations"] == 2
    assert {**changed, "epochs": None, "hlop": None} == {
        **json.loads(shown),
        "epochs": None,
        "hlop": None,
    }
    code, _, err = cli(capsys, "train", "pmnist-subset", "--config", path, "--show-config")
    assert code == 2 and "split-mnist-subset" in err


def test_config_file_written_by_a_run_reproduces_it(stopped, capsys):
    code, shown, _ = cli(capsys, "train", "--config", stopped / "config.json", "--show-config")
    assert code == 0
    assert json.loads(shown) == json.loads((stopped / "config.json").read_text())


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ({"lr": 0.1, "hlop": {"sizez": []}}, "unknown configuration key 'hlop.sizez'"),
        ({"epochs": "many"}, "epochs: cannot read 'many'"),
        ({"epochs": 0}, "epochs must be >= 1"),
        ([1, 2], "expected an object"),
        ("{not json", "is not a JSON configuration"),
    ],
)
def test_config_file_errors_name_the_key(tmp_path, capsys, content, message):
    path = tmp_path / "c.json"
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    code, _, err = cli(capsys, "train", "--config", path, "--show-config")
    assert code == 2 and message in err
    code, _, err = cli(capsys, "train", "--config", tmp_path / "absent.json")
    assert code == 2 and "absent.json" in err


def test_compare_continues_an_interrupted_run(tmp_path, capsys, monkeypatch, reference):
    study = ["compare", *TINY, "--methods", "hlop", "--seeds", "2022", "--out-dir", tmp_path]
    stop = Stop(1, 1)
    plugins = hlop.run.experiment.method_plugins
    with monkeypatch.context() as m:
        m.setattr(hlop.run.experiment, "method_plugins", lambda cfg: [*plugins(cfg), stop])
        code, _, err = cli(capsys, *study)
    assert code == 130 and "rerun the same hlop compare" in err
    run = tmp_path / "hlop-s2022"
    assert f"hlop train --resume {run}" in err
    code, out, err = cli(capsys, *study)
    assert code == 0, err
    assert "(unfinished: continued)" in out
    assert outcome(run) == reference


def test_interrupted_again_before_an_epoch_keeps_the_saved_state(stopped, capsys, monkeypatch):
    before = read_state(stopped / "state.pt")
    err = interrupted(monkeypatch, capsys, stopped, ["--resume", stopped], task=1, epoch=1)
    assert "continues after epoch 1 of task 2" in err
    after = read_state(stopped / "state.pt")
    assert (after["task"], after["epoch"]) == (before["task"], before["epoch"]) == (1, 1)
    assert cli(capsys, "train", "--resume", stopped)[0] == 0
