"""hlop report: figures and report.md from runs and studies; a clear message without matplotlib."""

import csv
import json
import sys

import pytest
import torch

from hlop.cli import main
from hlop.study_tables import CSV_FIELDS, RunResult, write_summary

pytest.importorskip("matplotlib")  # in the test extra: skipped only outside CI

PNG = b"\x89PNG\r\n\x1a\n"


def assert_png(path, min_bytes=3000, max_bytes=400_000):
    data = path.read_bytes()
    assert data[:8] == PNG, path
    assert min_bytes < len(data) < max_bytes, (path, len(data))


def results(matrix, method="hlop", status="complete", bwt=-1.0, diagnostics=None, tasks=3):
    """A results.json as hlop train writes it (experiment.summarise)."""
    learnt = sum(v is not None for v in matrix[-1]) if matrix else 0
    return {
        "benchmark": "pmnist-subset",
        "method": method,
        "status": status,
        "tasks_completed": learnt,
        "task_names": [f"permutation {k}" for k in range(tasks)],
        "acc_matrix": matrix,
        "evaluated_on": "test",
        "acc": sum(v for v in matrix[-1] if v is not None) / learnt if matrix else None,
        "bwt": bwt if matrix else None,
        "forgetting": [1.0] * (learnt - 1) if bwt is not None and matrix else [],
        "seconds_per_task": [1.0] * len(matrix),
        "circuit_sizes": [20, 10, 5],
        "circuit_diagnostics": diagnostics or [],
        "version": "0.1.0",
    }


def diagnostics(tasks):
    layer = {"rows": 20, "old_rows": 20, "orthonormality_error": 1e-3}
    return [
        {
            "task": k,
            "samples": 256,
            "seconds": 0.5,
            "layers": {n: {**layer, "captured": 0.8, "optimal": 0.9} for n in ("fc1", "fc2")},
        }
        for k in range(tasks)
    ]


def write_run(path, res, cfg=None):
    path.mkdir(parents=True)
    config = {"benchmark": "pmnist-subset", "method": res["method"], "seed": 1, **(cfg or {})}
    (path / "config.json").write_text(json.dumps(config))
    (path / "results.json").write_text(json.dumps(res))


MATRIX = [[90.0, None, None], [85.0, 91.0, None], [80.0, 88.0, 92.0]]


def test_report_of_a_run_with_diagnostics(tmp_path, capsys):
    run = tmp_path / "run"
    write_run(run, results(MATRIX, diagnostics=diagnostics(3)))
    assert main(["report", str(run)]) == 0
    for name in ("accuracy_matrix.png", "accuracy_curves.png", "circuits.png"):
        assert_png(run / name)
    text = (run / "report.md").read_text()
    assert "# pmnist-subset, hlop (complete)" in text and "ACC 86.67%, BWT -1.00%" in text
    assert "![accuracy matrix](accuracy_matrix.png)" in text and "(circuits.png)" in text
    assert "| T2 | 80.00 | 88.00 | 92.00 |" in text
    assert "| 2 | fc2 | 20 | 20 | 1.00e-03 | 0.8000 | 0.9000 |" in text
    assert str(run / "report.md") in capsys.readouterr().out


def test_report_of_multitask_and_of_failed_runs(tmp_path):
    joint = tmp_path / "joint"
    write_run(joint, results([[90.0, 91.0, 92.0]], method="multitask", bwt=None))
    failed = tmp_path / "failed"
    write_run(failed, results(MATRIX[:1], status="failed", bwt=0.0))
    nothing = tmp_path / "nothing"  # failed in its first task
    write_run(nothing, results([], status="failed"))
    started = tmp_path / "started"  # config.json only
    started.mkdir()
    (started / "config.json").write_text(json.dumps({"benchmark": "pmnist", "method": "ewc"}))
    assert main(["report", str(joint), str(failed), str(nothing), str(started)]) == 0
    assert_png(joint / "accuracy_matrix.png")
    assert_png(joint / "accuracy_curves.png")
    assert not (joint / "circuits.png").exists()  # multitask has no circuits
    assert "BWT n.a. (joint training)" in (joint / "report.md").read_text()
    assert_png(failed / "accuracy_matrix.png")
    assert "The run is failed" in (failed / "report.md").read_text()
    assert "No task finished" in (nothing / "report.md").read_text()
    assert not (nothing / "accuracy_matrix.png").exists()
    assert "No results yet" in (started / "report.md").read_text()


def study(tmp_path, summary: bool):
    out = tmp_path / "study"
    found = []
    for method, bwt in (("hlop", -1.0), ("baseline", -20.0), ("multitask", None)):
        for seed, shift in ((1, 0.0), (2, 2.0)):
            m = [[v + shift if v is not None else None for v in r] for r in MATRIX]
            if method == "multitask":
                m = [[90.0 + shift, 91.0, 92.0]]
            res = results(m, method=method, bwt=bwt)
            write_run(out / f"{method}-s{seed}", res, {"method": method, "seed": seed})
            found.append(RunResult(method, seed, "complete", acc=res["acc"], bwt=res["bwt"]))
    failed = out / "ewc-s1"  # a failed run: config, no results
    failed.mkdir()
    (failed / "config.json").write_text(json.dumps({"benchmark": "pmnist-subset"}))
    found.append(RunResult("ewc", 1, "failed", "diverged: the loss became nan"))
    if summary:
        write_summary(out, "pmnist-subset", found)
    return out


@pytest.mark.parametrize("summary", [True, False])
def test_report_of_a_study(tmp_path, summary):
    out = study(tmp_path, summary)
    if summary:
        assert next(csv.DictReader((out / "summary.csv").open()))["method"] == "hlop"
        assert set(next(csv.DictReader((out / "summary.csv").open()))) == set(CSV_FIELDS)
    assert main(["report", str(out)]) == 0
    assert_png(out / "methods.png")
    text = (out / "report.md").read_text()
    assert "| hlop | 2/0 | 87.67 ± 1.41 | -1.00 ± 0.00 |" in text
    assert "| multitask | 2/0 | 91.33 ± 0.47 | n.a. |" in text
    assert "| ewc | 0/1 | n.a. | n.a. |" in text  # summary.csv or the run's missing results
    assert "[hlop-s1](hlop-s1/report.md): complete" in text
    assert "[ewc-s1](ewc-s1/report.md): not started" in text
    assert_png(out / "hlop-s2" / "accuracy_matrix.png")  # each run gets its report
    assert (out / "ewc-s1" / "report.md").exists()


def test_report_of_a_finished_tiny_run(tmp_path, capsys):
    torch.set_num_threads(1)
    run = tmp_path / "run"
    args = ["--tasks", "2", "--timesteps", "2", "--set", "train_limit=100"]
    args += ["--set", "test_limit=50", "--set", "diagnostics_samples=32"]
    assert main(["train", *args, "--out-dir", str(run)]) == 0
    capsys.readouterr()
    assert main(["report", str(run)]) == 0
    for name in ("accuracy_matrix.png", "accuracy_curves.png", "circuits.png"):
        assert_png(run / name)
    text = (run / "report.md").read_text()
    assert "| 1 | heads.0 |" in text and "## Circuits" in text


def test_bad_paths_and_missing_matplotlib(tmp_path, capsys, monkeypatch):
    assert main(["report", str(tmp_path / "nope")]) == 2
    assert "no such directory" in capsys.readouterr().err
    assert main(["report", str(tmp_path)]) == 2
    assert "neither a run" in capsys.readouterr().err
    run = tmp_path / "run"
    write_run(run, results(MATRIX))
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib fails
    assert main(["report", str(run)]) == 2
    err = capsys.readouterr().err
    assert "matplotlib" in err and "pip install 'hlop[plot]'" in err and "Traceback" not in err
    assert not (run / "report.md").exists()  # nothing written
