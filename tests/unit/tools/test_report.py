"""hlop report: figures and report.md from runs and studies; a clear message without matplotlib."""

import csv
import json
import math
import sys

import pytest
import torch

import hlop
from hlop.loop.metrics import forgetting
from hlop.tools import figures, report
from hlop.tools.cli import main
from hlop.tools.study_tables import CSV_FIELDS, RunResult, write_summary

pytest.importorskip("matplotlib")  # in the test extra: skipped only outside CI
np = pytest.importorskip("numpy")

PNG = b"\x89PNG\r\n\x1a\n"
#: pixel sizes (width, height) of the figures of a 3-task run (100 dpi)
MATRIX_PX, CURVES_PX, FORGETTING_PX, CIRCUITS_PX = (525, 295), (600, 360), (480, 320), (640, 500)


def assert_png(path, size):
    """A PNG that decodes to an RGBA image of ``size`` (width, height) pixels."""
    from matplotlib.image import imread

    assert path.read_bytes()[:8] == PNG, path
    image = imread(path)
    assert image.shape == (size[1], size[0], 4), (path, image.shape)
    assert image[..., :3].std() > 0.05  # not blank


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
        "version": hlop.__version__,
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
    assert_png(run / "accuracy_matrix.png", MATRIX_PX)
    assert_png(run / "accuracy_curves.png", CURVES_PX)
    assert_png(run / "forgetting.png", FORGETTING_PX)
    assert_png(run / "circuits.png", CIRCUITS_PX)
    text = (run / "report.md").read_text()
    assert "# pmnist-subset, hlop (complete)" in text and "ACC 86.67%, BWT -1.00%" in text
    assert "![accuracy matrix](accuracy_matrix.png)" in text and "(circuits.png)" in text
    assert "![forgetting per task](forgetting.png)" in text
    assert "Forgetting per task (%): 10.00, 3.00" in text  # from the matrix
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
    assert_png(joint / "accuracy_matrix.png", (525, 205))
    assert_png(joint / "accuracy_curves.png", CURVES_PX)
    assert not (joint / "circuits.png").exists()  # multitask has no circuits
    assert not (joint / "forgetting.png").exists()  # nor forgetting
    assert "BWT n.a. (joint training)" in (joint / "report.md").read_text()
    assert_png(failed / "accuracy_matrix.png", (525, 205))
    assert not (failed / "forgetting.png").exists()  # one task learnt
    assert "The run is failed" in (failed / "report.md").read_text()
    assert "No task finished" in (nothing / "report.md").read_text()
    assert not (nothing / "accuracy_matrix.png").exists()
    assert "No results yet" in (started / "report.md").read_text()


AGNOSTIC = [[90.0, None, None], [60.0, 88.0, None], [40.0, 50.0, 91.0]]


def with_agnostic(res, matrix=AGNOSTIC, bwt=-44.0):
    """``res`` with the task-agnostic keys of a run with a head per task."""
    last = [v for v in matrix[-1] if v is not None]
    return {
        **res,
        "acc_matrix_agnostic": matrix,
        "acc_agnostic": sum(last) / len(last),
        "bwt_agnostic": bwt,
        "forgetting_agnostic": forgetting(matrix, len(last)) if bwt is not None else [],
    }


def test_report_of_a_run_with_the_task_agnostic_matrix(tmp_path):
    run = tmp_path / "run"
    write_run(run, with_agnostic(results(MATRIX)))
    assert main(["report", str(run)]) == 0
    assert_png(run / "accuracy_matrix_agnostic.png", MATRIX_PX)
    assert_png(run / "accuracy_curves_agnostic.png", CURVES_PX)
    text = (run / "report.md").read_text()
    assert "ACC 86.67%, BWT -1.00%" in text  # task-aware, as before
    assert "each task's own head) ACC 60.33%, BWT -44.00%." in text
    assert "Task-agnostic forgetting per task (%): 50.00, 38.00" in text
    assert "![task-agnostic accuracy matrix](accuracy_matrix_agnostic.png)" in text
    aware, agnostic = text.split("## Task-agnostic accuracy matrix (%)")
    assert "| T2 | 80.00 | 88.00 | 92.00 |" in aware and "| T1 | 60.00 | 88.00 |  |" in agnostic
    assert "| T2 | 40.00 | 50.00 | 91.00 |" in agnostic
    plain = tmp_path / "plain"  # one shared head: no task-agnostic figures
    write_run(plain, results(MATRIX))
    assert main(["report", str(plain)]) == 0
    assert (
        not list(plain.glob("*agnostic*")) and "agnostic" not in (plain / "report.md").read_text()
    )


def test_report_of_a_real_split_run_reads_its_results(tmp_path, capsys):
    """results.json of a real split MNIST run round trip: read back, reported with both
    matrices."""
    torch.set_num_threads(1)
    run = tmp_path / "run"
    args = ["split-mnist-subset", "--tasks", "2", "--timesteps", "2", "--epochs", "1"]
    args += ["--set", "train_limit=64", "--set", "test_limit=40", "--set", "diagnostics_samples=0"]
    assert main(["train", *args, "--out-dir", str(run)]) == 0
    capsys.readouterr()
    res = report.read_results(run)
    assert len(res["acc_matrix_agnostic"]) == 2 and res["acc_matrix_agnostic"][0][1] is None
    assert main(["report", str(run)]) == 0
    text = (run / "report.md").read_text()
    assert f"ACC {res['acc_agnostic']:.2f}%" in text
    row = " | ".join(f"{v:.2f}" for v in res["acc_matrix_agnostic"][1])
    assert f"| T1 | {row} |" in text.split("## Task-agnostic accuracy matrix")[1]
    assert_png(run / "accuracy_matrix_agnostic.png", (470, 250))


@pytest.mark.parametrize("summary", [True, False])
def test_study_report_has_task_agnostic_columns_where_runs_have_them(tmp_path, summary):
    out = tmp_path / "study"
    found = []
    for method in ("baseline", "hlop"):
        for seed, shift in ((1, 0.0), (2, 2.0)):
            g = [[v + shift if v is not None else None for v in r] for r in AGNOSTIC]
            res = with_agnostic(results(MATRIX, method=method), g)
            write_run(out / f"{method}-s{seed}", res, {"method": method, "seed": seed})
            found.append(
                RunResult(method, seed, "complete", acc=res["acc"], bwt=res["bwt"],
                          acc_agnostic=res["acc_agnostic"], bwt_agnostic=res["bwt_agnostic"])
            )  # fmt: skip
    if summary:
        write_summary(out, "split-mnist", found)
    assert main(["report", str(out)]) == 0
    assert_png(out / "methods.png", (940, 340))  # two methods, four panels
    text = (out / "report.md").read_text()
    assert "| method | seeds ok/failed | ACC (%) | BWT (%) | agnostic ACC (%) |" in text
    assert "| hlop | 2/0 | 86.67 ± 0.00 | -1.00 ± 0.00 | 61.33 ± 1.41 | -44.00 ± 0.00 |" in text
    assert "Agnostic ACC and BWT: task-agnostic" in text


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
    assert_png(out / "methods.png", (690, 340))  # four methods
    text = (out / "report.md").read_text()
    assert "| hlop | 2/0 | 87.67 ± 1.41 | -1.00 ± 0.00 | n.a. | n.a. |" in text
    assert "| multitask | 2/0 | 91.33 ± 0.47 | n.a. |" in text
    assert "| ewc | 0/1 | n.a. | n.a. |" in text  # summary.csv or the run's missing results
    assert "[hlop-s1](hlop-s1/report.md): complete" in text
    assert "[ewc-s1](ewc-s1/report.md): not started" in text
    assert_png(out / "hlop-s2" / "accuracy_matrix.png", MATRIX_PX)  # each run's report
    assert (out / "ewc-s1" / "report.md").exists()


def test_report_of_a_finished_tiny_run(tmp_path, capsys):
    torch.set_num_threads(1)
    run = tmp_path / "run"
    args = ["--tasks", "2", "--timesteps", "2", "--set", "train_limit=100"]
    args += ["--set", "test_limit=50", "--set", "diagnostics_samples=32"]
    assert main(["train", *args, "--out-dir", str(run)]) == 0
    capsys.readouterr()
    assert main(["report", str(run)]) == 0
    assert_png(run / "accuracy_matrix.png", (470, 250))
    assert_png(run / "accuracy_curves.png", CURVES_PX)
    assert_png(run / "forgetting.png", (440, 320))
    assert_png(run / "circuits.png", (960, 500))
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


# ---------------------------------------------------------------------- what is drawn
def test_accuracy_range_spans_the_data_with_a_margin():
    assert figures.accuracy_range([94.2, 96.9, None, 95.0]) == (93.0, 98.0)  # a PMNIST run
    assert figures.accuracy_range([80.0, 92.0]) == (78.0, 94.0)  # margin: a tenth of 12
    assert figures.accuracy_range([50.0]) == (49.0, 51.0)  # at least half a point
    assert figures.accuracy_range([99.6, 100.0]) == (99.0, 100.0)  # within 0-100
    assert figures.accuracy_range([0.2, 3.0]) == (0.0, 4.0)
    assert figures.accuracy_range([35.7, 97.0]) == (0.0, 100.0)  # over half of 0-100
    assert figures.accuracy_range([None, math.nan]) == (0.0, 100.0)


PMNIST_LIKE = [
    [96.9, None, None, None],
    [96.5, 96.8, None, None],
    [96.0, 96.2, 96.7, None],
    [94.2, 95.8, 96.1, 96.6],
]


@pytest.mark.parametrize("matrix", [MATRIX, PMNIST_LIKE])
def test_matrix_figure_draws_the_matrix_on_its_own_colour_scale(tmp_path, matrix):
    fig = figures.plot_matrix(results(matrix, tasks=len(matrix)), tmp_path / "m.png")
    ax = fig.axes[0]
    (image,) = ax.images
    drawn = np.ma.filled(image.get_array().astype(float), np.nan)
    want = np.array([[np.nan if v is None else v for v in r] for r in matrix])
    assert np.array_equal(drawn, want, equal_nan=True)  # row i: after step i, column j: task j
    values = [v for r in matrix for v in r]
    assert image.get_clim() == figures.accuracy_range(values)
    lo, hi = image.get_clim()
    assert lo <= min(v for v in values if v) and hi - lo <= 20  # not 0-100: colours differ
    labels = {(t.get_position(), t.get_text()) for t in ax.texts}
    cells = {((j, i), f"{v:.1f}") for i, r in enumerate(matrix) for j, v in enumerate(r) if v}
    assert labels == cells
    assert [t.get_text() for t in ax.get_yticklabels()] == [f"T{i}" for i in range(len(matrix))]
    assert ax.get_ylim()[0] > ax.get_ylim()[1]  # row 0 at the top


def test_curves_figure_draws_each_task_from_the_step_that_learnt_it(tmp_path):
    fig = figures.plot_curves(results(PMNIST_LIKE, tasks=4), tmp_path / "c.png")
    ax = fig.axes[0]
    assert [line.get_label() for line in ax.lines] == ["T0", "T1", "T2", "T3"]
    for j, line in enumerate(ax.lines):
        assert list(line.get_xdata()) == list(range(j, 4))
        assert list(line.get_ydata()) == [PMNIST_LIKE[i][j] for i in range(j, 4)]
    assert ax.get_ylim() == (93.0, 98.0)
    wide = [[97.0, None], [35.7, 97.5]]  # a baseline that forgets: 0-100
    assert figures.plot_curves(results(wide, tasks=2), tmp_path / "w.png").axes[0].get_ylim() == (
        0.0,
        100.0,
    )


@pytest.mark.parametrize("matrix", [MATRIX, PMNIST_LIKE])
def test_forgetting_figure_bars_are_the_metric(tmp_path, matrix):
    res = results(matrix, tasks=len(matrix))
    fig = figures.plot_forgetting(res, tmp_path / "f.png")
    ax = fig.axes[0]
    want = forgetting(matrix, len(matrix))
    assert [b.get_height() for b in ax.patches] == pytest.approx(want, abs=1e-12)
    assert [b.get_x() + b.get_width() / 2 for b in ax.patches] == list(range(len(want)))
    assert [t.get_text() for t in ax.get_xticklabels()] == [f"T{j}" for j in range(len(want))]
    assert figures.run_forgetting(res) == want
    assert figures.run_forgetting(results([[90.0, 91.0, 92.0]], bwt=None)) == []  # joint


def test_study_report_shows_the_paper_values_marked(tmp_path):
    for replay in (False, True):
        out = tmp_path / f"replay-{replay}"
        for method in ("baseline", "hlop"):
            cfg = {"benchmark": "pmnist", "replay": {"enabled": replay}}
            write_run(out / f"{method}-s1", results(MATRIX, method=method), cfg)
        assert main(["report", str(out)]) == 0
        lines = (out / "report.md").read_text().splitlines()
        base = next(line for line in lines if line.startswith("| baseline |"))
        hlop = next(line for line in lines if line.startswith("| hlop |"))
        if replay:  # the paper's memory replay: the baseline with --replay
            assert base.endswith("| ~92.5 | ~-4.7 |") and hlop.endswith("| n.a. | n.a. |")
        else:
            assert base.endswith("| ~70.6 | ~-28.9 |") and hlop.endswith("| 95.15 | ~-1.3 |")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"acc_matrix": [[90.0]], "status": "comp', "is corrupt: not JSON"),
        ("[1, 2]", "not a results file: expected a JSON object"),
        ('{"acc_matrix": [90.0, 80.0]}', "acc_matrix must be a list of rows of accuracies"),
        ('{"acc_matrix": [["90"]]}', "acc_matrix must be a list of rows of accuracies"),
        (
            '{"acc_matrix": [[90.0]], "acc_matrix_agnostic": [[true]]}',
            "acc_matrix_agnostic must be a list of rows of accuracies",
        ),
        (
            '{"acc_matrix": [[90.0]], "acc_matrix_agnostic": {"T0": 90.0}}',
            "acc_matrix_agnostic must be a list of rows of accuracies",
        ),
        (
            '{"acc_matrix": [[90.0]], "acc_matrix_agnostic": [[90.0], [80.0, 70.0]]}',
            "acc_matrix_agnostic has 2 rows but acc_matrix 1",
        ),
    ],
)
def test_broken_results_are_named_and_nothing_is_written(tmp_path, capsys, content, message):
    good, bad = tmp_path / "good", tmp_path / "bad"
    write_run(good, results(MATRIX))
    write_run(bad, results(MATRIX))
    (bad / "results.json").write_text(content)
    assert main(["report", str(good), str(bad)]) == 2
    err = capsys.readouterr().err
    assert message in err and str(bad / "results.json") in err and "Traceback" not in err
    assert not (good / "report.md").exists() and not (bad / "report.md").exists()
    # inside a study too
    study = tmp_path / "study"
    write_run(study / "hlop-s1", results(MATRIX))
    write_run(study / "hlop-s2", results(MATRIX))
    (study / "hlop-s2" / "results.json").write_text(content)
    assert main(["report", str(study)]) == 2
    assert message in capsys.readouterr().err
    assert not (study / "report.md").exists()
