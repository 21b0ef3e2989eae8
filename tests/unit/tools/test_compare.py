"""hlop compare: a study of methods x seeds, kept and continued runs, failures, statistics."""

import csv
import json
import math
from pathlib import Path

import pytest
import torch

import hlop.run.experiment
from hlop.loop.continual import TrainingDiverged
from hlop.tools.cli import main
from hlop.tools.paper import PaperValue, paper_result
from hlop.tools.stats import Stats, confidence_interval, mean, sample_std, t975
from hlop.tools.study_tables import AGNOSTIC_FIELDS, CSV_FIELDS

STUDY = ["--tasks", "2", "--timesteps", "2", "--set", "hidden=32", "--set", "train_limit=200"]
STUDY += ["--set", "test_limit=100", "--set", "hlop.sizes=[[8,8,8],[8,8,8]]"]


class FakeTrain:
    """Stands in for experiment.train: writes config.json and a results.json as a run does,
    counts its calls, and raises for the runs in ``fail``."""

    def __init__(self, fail=()):
        self.calls = []
        self.resumed = []
        self.fail = dict(fail)

    def __call__(self, cfg, out_dir, overwrite=False, stream=None, resume=False):
        out = hlop.run.outputs.RunOutputs(out_dir, cfg)
        if not resume:
            out.prepare(overwrite)  # refuses an earlier run unless overwrite, as train does
            out.write_config(cfg)
        self.calls.append((cfg.method, cfg.seed))
        self.resumed.append(resume)
        if (cfg.method, cfg.seed) in self.fail:
            raise self.fail[(cfg.method, cfg.seed)]
        acc = {"baseline": 70.0, "hlop": 90.0, "multitask": 95.0}[cfg.method] + cfg.seed % 10
        res = {
            "status": "complete",
            "acc": acc,
            "bwt": None if cfg.method == "multitask" else -float(cfg.seed % 10),
            "seconds_per_task": [1.0, 2.0],
            "lr": cfg.lr,
        }
        (out.dir / "results.json").write_text(json.dumps(res))
        return res


@pytest.fixture
def fake(monkeypatch):
    f = FakeTrain()
    monkeypatch.setattr(hlop.run.experiment, "train", f)
    return f


def compare(capsys, out_dir, *extra, methods="baseline,hlop", seeds="1,2", bench=()):
    argv = ["compare", *bench, *STUDY, "--methods", methods, "--seeds", seeds]
    code = main([*argv, "--out-dir", str(out_dir), *extra])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, out, err


# ---------------------------------------------------------------------- statistics
def test_mean_std_interval_by_hand():
    values = [70.0, 72.0, 74.0]
    assert mean(values) == 72.0 and sample_std(values) == pytest.approx(2.0)
    half = 4.302653 * 2.0 / math.sqrt(3)  # t_{0.975, 2} s / sqrt(n)
    lo, hi = confidence_interval(values)
    assert (lo, hi) == pytest.approx((72 - half, 72 + half), abs=1e-5)
    assert sample_std([5.0]) is None and confidence_interval([1.0, 2.0]) is None
    s = Stats.of([1.0, 2.0])
    assert s.n == 2 and s.mean == 1.5 and s.std == pytest.approx(math.sqrt(0.5)) and s.ci is None
    assert Stats.of([]) is None


def _t_cdf(q, df, steps=20000):
    """P(T <= q) by Simpson's rule on the density (an independent check of t975)."""
    c = math.exp(math.lgamma((df + 1) / 2) - math.lgamma(df / 2)) / math.sqrt(df * math.pi)
    f = lambda t: c * (1 + t * t / df) ** (-(df + 1) / 2)  # noqa: E731
    h = q / steps
    s = f(0) + f(q) + sum((4 if i % 2 else 2) * f(i * h) for i in range(1, steps))
    return 0.5 + s * h / 3


@pytest.mark.parametrize("df", [1, 2, 3, 4, 9, 30, 31, 60, 200])
def test_t_quantiles(df):
    assert _t_cdf(t975(df), df) == pytest.approx(0.975, abs=2e-6)


# ---------------------------------------------------------------------- skip and continue
def test_completed_runs_kept_unfinished_rerun(tmp_path, capsys, fake):
    code, out, _ = compare(capsys, tmp_path)
    assert code == 0 and sorted(fake.calls) == [
        ("baseline", 1),
        ("baseline", 2),
        ("hlop", 1),
        ("hlop", 2),
    ]
    assert {p.name for p in tmp_path.iterdir()} >= {"baseline-s1", "hlop-s2", "summary.md"}
    assert "| hlop | 2/0 | 91.50 ± 0.71 |" in out  # the printed table
    mtime = (tmp_path / "hlop-s1" / "results.json").stat().st_mtime_ns

    fake.calls.clear()
    code, out, _ = compare(capsys, tmp_path)
    assert code == 0 and fake.calls == [] and out.count(", kept\n") == 4
    assert (tmp_path / "hlop-s1" / "results.json").stat().st_mtime_ns == mtime

    # one run stopped mid-way, one never wrote its results: only those continue (resumed)
    res = tmp_path / "hlop-s1" / "results.json"
    res.write_text(json.dumps({**json.loads(res.read_text()), "status": "running"}))
    (tmp_path / "baseline-s2" / "results.json").unlink()
    fake.resumed.clear()
    code, out, _ = compare(capsys, tmp_path)
    assert code == 0 and sorted(fake.calls) == [("baseline", 2), ("hlop", 1)]
    assert fake.resumed == [True, True]
    assert "(unfinished: continued)" in out and out.count(", kept\n") == 2


def test_different_config_named_then_overwrite(tmp_path, capsys, fake):
    assert compare(capsys, tmp_path, seeds="1")[0] == 0
    fake.calls.clear()
    code, _, err = compare(capsys, tmp_path, "--lr", "0.05", seeds="1")
    assert code == 2 and fake.calls == []
    assert "different config (lr)" in err and "--overwrite" in err and "baseline-s1" in err
    code, _, _ = compare(capsys, tmp_path, "--lr", "0.05", "--overwrite", seeds="1")
    assert code == 0 and len(fake.calls) == 2
    assert json.loads((tmp_path / "hlop-s1" / "config.json").read_text())["lr"] == 0.05


def test_flags_and_set_reach_every_run(tmp_path, capsys, fake):
    assert compare(capsys, tmp_path, "--lr", "0.07", "--set", "epochs=3")[0] == 0
    for d in ("baseline-s1", "baseline-s2", "hlop-s1", "hlop-s2"):
        cfg = json.loads((tmp_path / d / "config.json").read_text())
        assert cfg["lr"] == 0.07 and cfg["epochs"] == 3 and cfg["hidden"] == 32
        assert (cfg["method"], f"s{cfg['seed']}") == tuple(d.split("-"))


def test_method_and_seed_only_through_methods_and_seeds(tmp_path, capsys, fake):
    code, _, err = compare(capsys, tmp_path, "--set", "seed=3")
    assert code == 2 and "--methods, --seeds" in err and fake.calls == []
    assert compare(capsys, tmp_path, seeds="1,x")[0] == 2


# ---------------------------------------------------------------------- failures
def test_failed_runs_reported_others_complete(tmp_path, capsys, monkeypatch):
    boom = TrainingDiverged("the loss became nan in task 1")
    fake = FakeTrain(fail={("baseline", 2): boom})
    monkeypatch.setattr(hlop.run.experiment, "train", fake)
    code, out, err = compare(capsys, tmp_path, methods="baseline,nope,hlop")
    assert code == 1 and "3 of 6 runs failed" in err
    assert ("nope", 1) not in fake.calls and len(fake.calls) == 4  # hlop still ran
    md = (tmp_path / "summary.md").read_text()
    assert "| nope | 0/2 |" in md and "failed: unknown method |" in md
    assert "| hlop | 2/0 |" in md
    assert "| baseline | 1/1 | 71.00 |" in md and "failed seed 2: diverged: the loss" in md
    assert "nan" in (tmp_path / "baseline-s2" / "error.txt").read_text()
    rows = {r["method"]: r for r in csv.DictReader((tmp_path / "summary.csv").open())}
    assert rows["nope"]["seeds_failed"] == "2" and rows["hlop"]["seeds_completed"] == "2"
    assert rows["hlop"]["acc_mean"] == "91.5000" and rows["hlop"]["wall_s_mean"] == "3.0"
    # the failed run (results of a failed run: status "failed") runs again next time
    fake.fail.clear()
    fake.calls.clear()
    assert compare(capsys, tmp_path, methods="baseline,nope,hlop")[0] == 1  # nope still fails
    assert fake.calls == [("baseline", 2)]


# ---------------------------------------------------------------------- paper values
def test_paper_values():
    acc, bwt = paper_result("pmnist", "hlop")
    assert acc == PaperValue(95.15, False) and bwt == PaperValue(-1.3, True)
    assert str(acc) == "95.15" and str(bwt) == "~-1.3"
    assert paper_result("pmnist", "hat") == (None, None)  # n.a. in the paper
    assert paper_result("cifar100", "multitask") == (PaperValue(79.7, True), None)
    assert paper_result("pmnist-subset", "hlop") == (None, None)


def test_paper_replay_row_and_approximate_marks():
    """The spec's memory-replay row is the baseline with --replay (no row for another method
    with replay); only HLOP's ACC is read from the paper: every other value is marked."""
    approx = PaperValue(92.5, True), PaperValue(-4.7, True)
    assert paper_result("pmnist", "replay") == approx
    assert paper_result("pmnist", "baseline", replay=True) == approx
    assert paper_result("five-datasets", "baseline", replay=True) == (
        PaperValue(79.7, True),
        PaperValue(-14.6, True),
    )
    assert paper_result("cifar100", "hlop", replay=True) == (None, None)
    assert paper_result("pmnist", "baseline") == (PaperValue(70.6, True), PaperValue(-28.9, True))
    for bench in ("pmnist", "cifar100", "miniimagenet", "five-datasets"):
        for method in ("baseline", "replay", "ewc", "hat", "gpm", "hlop", "multitask"):
            acc, bwt = paper_result(bench, method)
            if acc is not None:
                assert acc.approximate == (method != "hlop"), (bench, method)
                assert str(acc).startswith("~") == acc.approximate
            assert bwt is None or bwt.approximate, (bench, method)


def test_paper_column_beside_ours(tmp_path, capsys, fake):
    code, out, _ = compare(
        capsys, tmp_path, methods="hlop,multitask", seeds="1,2,3", bench=["pmnist"]
    )
    assert code == 0
    assert "| hlop | 3/0 | 92.00 ± 1.00 | [89.52, 94.48] | -2.00 ± 1.00 |" in out
    assert "| 95.15 | ~-1.3 |" in out
    assert "| multitask | 3/0 | 97.00 ± 1.00 |" in out and "| ~96.2 | n.a. |" in out
    rows = {r["method"]: r for r in csv.DictReader((tmp_path / "summary.csv").open())}
    assert rows["hlop"]["paper_acc"] == "95.15" and rows["hlop"]["paper_acc_approximate"] == "False"
    assert rows["hlop"]["paper_bwt_approximate"] == "True" and rows["multitask"]["bwt_mean"] == ""
    assert rows["multitask"]["paper_acc"] == "96.2"
    assert rows["multitask"]["paper_acc_approximate"] == "True"
    assert rows["multitask"]["paper_bwt"] == ""  # n.a.
    assert rows["multitask"]["paper_bwt_approximate"] == "False"


@pytest.mark.parametrize("replay", [False, True])
def test_replay_study_shows_the_paper_replay_row(tmp_path, capsys, fake, replay):
    extra = ["--replay"] if replay else []
    code, out, _ = compare(capsys, tmp_path, *extra, methods="baseline,hlop", bench=["pmnist"])
    assert code == 0
    md = (tmp_path / "summary.md").read_text()
    rows = {r["method"]: r for r in csv.DictReader((tmp_path / "summary.csv").open())}
    base = [line for line in md.splitlines() if line.startswith("| baseline |")][0]
    hlop = [line for line in md.splitlines() if line.startswith("| hlop |")][0]
    if replay:
        assert base.endswith("| ~92.5 | ~-4.7 |  |") and "| n.a. | n.a. |" in hlop
        assert rows["baseline"]["paper_acc"] == "92.5" and rows["hlop"]["paper_acc"] == ""
        assert "Runs of baseline, hlop replay memory (--replay)" in md
    else:
        assert base.endswith("| ~70.6 | ~-28.9 |  |") and "| 95.15 | ~-1.3 |" in hlop
        assert rows["baseline"]["paper_acc"] == "70.6" and "replay memory" not in md
    assert rows["baseline"]["paper_acc_approximate"] == "True"
    assert rows["baseline"]["paper_bwt_approximate"] == "True"
    assert base in out  # the printed table is the file's


class FakeSplitTrain(FakeTrain):
    """FakeTrain with the task-agnostic ACC and BWT of a run with a head per task."""

    def __call__(self, cfg, out_dir, overwrite=False, stream=None, resume=False):
        res = super().__call__(cfg, out_dir, overwrite, stream, resume)
        res["acc_agnostic"] = res["acc"] - 20.0
        res["bwt_agnostic"] = None if res["bwt"] is None else res["bwt"] - 10.0
        (Path(out_dir) / "results.json").write_text(json.dumps(res))
        return res


def test_task_agnostic_columns_where_the_runs_have_them(tmp_path, capsys, monkeypatch, fake):
    """Runs with a head per task: the task-agnostic ACC and BWT over seeds (mean ± std, 95%
    CI) beside the task-aware ones, in summary.csv, the table and the run lines; a study of
    one shared head keeps the columns it had."""
    code, out, _ = compare(capsys, tmp_path / "shared", seeds="1,2,3")
    header = next(csv.reader((tmp_path / "shared" / "summary.csv").open()))
    assert code == 0 and tuple(header) == CSV_FIELDS and "agnostic ACC" not in out
    monkeypatch.setattr(hlop.run.experiment, "train", FakeSplitTrain())
    code, out, _ = compare(capsys, tmp_path / "split", methods="baseline,multitask", seeds="1,2,3")
    assert code == 0
    header = next(csv.reader((tmp_path / "split" / "summary.csv").open()))
    at = header.index("bwt_ci95_high") + 1
    assert tuple(header[at : at + len(AGNOSTIC_FIELDS)]) == AGNOSTIC_FIELDS
    assert [f for f in header if f not in AGNOSTIC_FIELDS] == list(CSV_FIELDS)
    rows = {r["method"]: r for r in csv.DictReader((tmp_path / "split" / "summary.csv").open())}
    base = rows["baseline"]  # ACC 71, 72, 73 -> 51, 52, 53; BWT -1, -2, -3 -> -11, -12, -13
    assert float(base["acc_agnostic_mean"]) == 52.0 and float(base["acc_agnostic_std"]) == 1.0
    half = 4.302653 / math.sqrt(3)  # t_{0.975, 2} s / sqrt(n), s = 1
    assert float(base["acc_agnostic_ci95_low"]) == pytest.approx(52 - half, abs=1e-4)
    assert float(base["bwt_agnostic_mean"]) == -12.0
    assert float(base["bwt_agnostic_ci95_high"]) == pytest.approx(-12 + half, abs=1e-4)
    assert rows["multitask"]["acc_agnostic_mean"] == "77.0000"  # 97, 98, 99 - 20
    assert rows["multitask"]["bwt_agnostic_mean"] == ""  # joint training: undefined
    md = (tmp_path / "split" / "summary.md").read_text()
    assert "| agnostic ACC (%) | agnostic ACC 95% CI | agnostic BWT (%) |" in md
    assert (
        "| baseline | 3/0 | 72.00 ± 1.00 | [69.52, 74.48] | -2.00 ± 1.00 | [-4.48, 0.48] "
        "| 52.00 ± 1.00 | [49.52, 54.48] | -12.00 ± 1.00 | [-14.48, -9.52] |" in md
    )
    assert "| multitask | 3/0 | 97.00 ± 1.00 | [94.52, 99.48] | n.a. | n.a. | 77.00 ± 1.00 |" in md
    assert "- baseline, seed 2: ACC 72.00, BWT -2.00, task-agnostic ACC 52.00, BWT -12.00" in md
    assert "Agnostic ACC and BWT: task-agnostic (class-incremental)" in md


# ---------------------------------------------------------------------- real runs
@pytest.mark.slow
def test_tiny_study_end_to_end(tmp_path, capsys, monkeypatch):
    torch.set_num_threads(1)
    calls = []
    real = hlop.run.experiment.train

    def counting(cfg, *a, **kw):
        calls.append((cfg.method, cfg.seed))
        return real(cfg, *a, **kw)

    monkeypatch.setattr(hlop.run.experiment, "train", counting)
    args = ["--device", "cpu"]
    code, out, _ = compare(capsys, tmp_path, *args, methods="baseline,multitask")
    assert code == 0 and len(calls) == 4
    res = json.loads((tmp_path / "multitask-s1" / "results.json").read_text())
    assert res["status"] == "complete" and res["bwt"] is None and len(res["acc_matrix"]) == 1
    assert "| multitask | 2/0 |" in out
    calls.clear()
    assert compare(capsys, tmp_path, *args, methods="baseline,multitask")[0] == 0 and calls == []
    (tmp_path / "baseline-s1" / "results.json").unlink()
    assert compare(capsys, tmp_path, *args, methods="baseline,multitask")[0] == 0
    assert calls == [("baseline", 1)]


def test_replay_is_a_study_method_the_baseline_with_replay():
    from hlop.run.config import Config
    from hlop.tools.compare import known, run_config

    base = Config()
    cfg = run_config(base, "replay", 3)
    assert (cfg.method, cfg.seed, cfg.replay.enabled) == ("baseline", 3, True)
    assert run_config(base, "ewc", 3).replay.enabled is False and not base.replay.enabled
    assert known("replay") and known("hlop") and not known("nope")
